//! The verified identity, as the headers later plugins and upstreams trust:
//! jwt-identity writes them ([`identity_headers`]), every later filter reads
//! them back through [`ReceivedIdentity::verify`].

mod verified;

pub use verified::{Principal, ReceivedIdentity, Unproven, VerifiedIdentity};

use crate::identity_value::is_fit;
use crate::policy::ClaimToHeader;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// Prefix of every header agentward sets; inbound ones are always removed.
pub const HEADER_PREFIX: &str = "x-agentward-";
/// The user (`sub`).
pub const SUB: &str = "x-agentward-sub";
/// The agent (`azp`, else `client_id`).
pub const AGENT: &str = "x-agentward-agent";
/// The delegation chain (`act`, RFC 8693), outermost actor first.
pub const ACT: &str = "x-agentward-act";
/// Granted scopes, space-separated.
pub const SCOPE: &str = "x-agentward-scope";
/// The verified claims, base64url JSON.
pub const CLAIMS: &str = "x-agentward-claims";
/// The issuer.
pub const ISSUER: &str = "x-agentward-issuer";

/// Whose identity a request carries: a user's (through an agent, maybe),
/// or, for a client-credentials token without `sub`, only the agent's.
pub const PRINCIPAL: &str = "x-agentward-principal";

/// Deepest `act` nesting followed; deeper chains are refused.
const MAX_ACT_DEPTH: usize = 8;

/// Longest value forwarded in one header.
const MAX_VALUE_BYTES: usize = 8192;

/// A verified token whose identity cannot be forwarded: which claim (a
/// name or a dotted path, never its value) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadClaim {
    /// The claim, e.g. `sub`, `act.act.sub`, `scope`, `org.id`.
    pub claim: String,
    /// What is wrong.
    pub problem: ClaimProblem,
}

/// What is wrong with a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimProblem {
    /// No `sub`, and the issuer does not take client-credentials tokens.
    MissingSub,
    /// Neither `sub` nor an agent (`azp`, `client_id`): the token names nobody.
    NoIdentity,
    /// A comma, a control or format character, a line separator, surrounding
    /// whitespace, or an empty identity (see [`crate::identity_value::is_fit`]).
    Unfit,
    /// An object or a nested list, which has no header form.
    NotScalar,
    /// Longer than a header value may be.
    TooLong,
    /// Not the shape the claim has (an `act` that is no object, too deep).
    Malformed,
}

impl BadClaim {
    fn new(claim: impl Into<String>, problem: ClaimProblem) -> BadClaim {
        BadClaim {
            claim: claim.into(),
            problem,
        }
    }

    /// A sentence for `error_description`: it names the claim and never
    /// repeats its value.
    pub fn description(&self) -> String {
        let claim = &self.claim;
        match self.problem {
            ClaimProblem::MissingSub => format!(
                "the token has no `{claim}` claim (the user), and its issuer does not accept client-credentials tokens"
            ),
            ClaimProblem::NoIdentity => {
                "the token names neither a user (`sub`) nor a client (`azp` or `client_id`)".into()
            }
            ClaimProblem::Unfit => format!(
                "the token's `{claim}` claim is empty or holds a comma, a control or invisible format character, a line separator or surrounding whitespace: it cannot be forwarded as an identity"
            ),
            ClaimProblem::NotScalar => format!(
                "the token's `{claim}` claim is an object or a nested list, which cannot be forwarded in a header"
            ),
            ClaimProblem::TooLong => format!("the token's `{claim}` claim is too long to forward"),
            ClaimProblem::Malformed => format!("the token's `{claim}` claim is malformed"),
        }
    }
}

/// The identity headers of verified claims, in a stable order. Every
/// identity value (`sub`, `iss`, the agent, each `act` subject, each scope,
/// each `claim_to_headers` value) must be fit to travel
/// ([`crate::identity_value::is_fit`]), or the token is refused. A token
/// without `sub` is refused unless `client_credentials` (its issuer's
/// setting) lets it through as the agent's own identity: then no
/// `x-agentward-sub`, and `x-agentward-principal: agent`.
pub fn identity_headers(
    claims: &Map<String, Value>,
    extra: &[ClaimToHeader],
    client_credentials: bool,
) -> Result<Vec<(String, String)>, BadClaim> {
    let mut out = Vec::with_capacity(7 + extra.len());
    let mut push = |name: &str, claim: &str, value: String| -> Result<(), BadClaim> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(BadClaim::new(claim, ClaimProblem::TooLong));
        }
        out.push((name.to_string(), value));
        Ok(())
    };
    let sub = identity(claims, "sub")?;
    let agent = match identity(claims, "azp")? {
        Some(azp) => Some(azp),
        None => identity(claims, "client_id")?,
    };
    match (sub, &agent) {
        (Some(sub), _) => {
            push(SUB, "sub", sub.to_string())?;
            push(PRINCIPAL, "sub", "user".into())?;
        }
        (None, _) if !client_credentials => {
            return Err(BadClaim::new("sub", ClaimProblem::MissingSub))
        }
        (None, None) => return Err(BadClaim::new("sub", ClaimProblem::NoIdentity)),
        (None, Some(_)) => push(PRINCIPAL, "sub", "agent".into())?,
    }
    if let Some(agent) = agent {
        let claim = if claims.contains_key("azp") {
            "azp"
        } else {
            "client_id"
        };
        push(AGENT, claim, agent.to_string())?;
    }
    let chain = act_chain(claims)?;
    if !chain.is_empty() {
        push(ACT, "act", chain.join(","))?;
    }
    if let Some(scope) = scopes(claims)? {
        push(SCOPE, "scope", scope)?;
    }
    if let Some(iss) = identity(claims, "iss")? {
        push(ISSUER, "iss", iss.to_string())?;
    }
    let json = Value::Object(claims.clone()).to_string();
    push(CLAIMS, "(all claims)", URL_SAFE_NO_PAD.encode(json))?;
    for mapping in extra {
        if let Some(value) = claim_value(claims, &mapping.claim)? {
            push(&mapping.header, &mapping.claim, value)?;
        }
    }
    Ok(out)
}

/// A string identity claim, if present: it must be non-empty and fit.
fn identity<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, BadClaim> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && is_fit(s) => Ok(Some(s.as_str())),
        Some(Value::String(_)) => Err(BadClaim::new(name, ClaimProblem::Unfit)),
        Some(_) => Err(BadClaim::new(name, ClaimProblem::Malformed)),
    }
}

/// The `act` chain's subjects, outermost (current actor) first.
fn act_chain(claims: &Map<String, Value>) -> Result<Vec<String>, BadClaim> {
    let mut chain = Vec::new();
    let mut path = String::from("act");
    let mut act = claims.get("act");
    while let Some(value) = act {
        let Value::Object(actor) = value else {
            return Err(BadClaim::new(path, ClaimProblem::Malformed));
        };
        if chain.len() == MAX_ACT_DEPTH {
            return Err(BadClaim::new("act", ClaimProblem::Malformed));
        }
        match actor.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() && is_fit(sub) => chain.push(sub.clone()),
            Some(Value::String(_)) => {
                return Err(BadClaim::new(format!("{path}.sub"), ClaimProblem::Unfit))
            }
            _ => {
                return Err(BadClaim::new(
                    format!("{path}.sub"),
                    ClaimProblem::Malformed,
                ))
            }
        }
        act = actor.get("act");
        path.push_str(".act");
    }
    Ok(chain)
}

/// Granted scopes from `scope` (RFC 8693 / RFC 9068: space-separated) or
/// `scp` (a list, or a string), joined with single spaces. Each scope must
/// be fit, and a list item must not hold a space (it would read as two).
pub fn scopes(claims: &Map<String, Value>) -> Result<Option<String>, BadClaim> {
    let (name, value) = match (claims.get("scope"), claims.get("scp")) {
        (Some(v), _) => ("scope", v),
        (None, Some(v)) => ("scp", v),
        (None, None) => return Ok(None),
    };
    let unfit = || BadClaim::new(name, ClaimProblem::Unfit);
    let items: Vec<&str> = match value {
        Value::String(s) => s.split(' ').filter(|i| !i.is_empty()).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|i| !i.is_empty())
            .map(|i| if i.contains(' ') { Err(unfit()) } else { Ok(i) })
            .collect::<Result<_, _>>()?,
        _ => return Ok(None),
    };
    if !items.iter().all(|i| is_fit(i)) {
        return Err(unfit());
    }
    Ok(Some(items.join(" ")))
}

/// A claim by dotted path, rendered for a header: strings as they are (if
/// fit), numbers and booleans as JSON, lists of those comma-joined. `None`
/// when absent or null; objects and nested lists have no header form.
pub fn claim_value(claims: &Map<String, Value>, path: &str) -> Result<Option<String>, BadClaim> {
    let mut parts = path.split('.');
    let mut value = parts.next().and_then(|p| claims.get(p));
    for part in parts {
        value = value.and_then(Value::as_object).and_then(|o| o.get(part));
    }
    let scalar = |v: &Value| -> Result<String, BadClaim> {
        match v {
            Value::String(s) if is_fit(s) => Ok(s.clone()),
            Value::String(_) => Err(BadClaim::new(path, ClaimProblem::Unfit)),
            Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
            _ => Err(BadClaim::new(path, ClaimProblem::NotScalar)),
        }
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(
            items
                .iter()
                .map(scalar)
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
        )),
        Some(v) => scalar(v).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn refused(c: Value, extra: &[ClaimToHeader]) -> BadClaim {
        identity_headers(&claims(c), extra, false).unwrap_err()
    }

    #[test]
    fn user_agent_chain_and_scopes() {
        let c = claims(json!({
            "iss": "https://idp/", "sub": "alice", "azp": "stock-agent",
            "scope": "portfolio:read  trade",
            "act": {"sub": "stock-agent", "act": {"sub": "planner"}}
        }));
        let h = identity_headers(&c, &[], false).unwrap();
        assert_eq!(get(&h, SUB), Some("alice"));
        assert_eq!(get(&h, PRINCIPAL), Some("user"));
        assert_eq!(get(&h, AGENT), Some("stock-agent"));
        assert_eq!(get(&h, ACT), Some("stock-agent,planner"));
        assert_eq!(get(&h, SCOPE), Some("portfolio:read trade"));
        let decoded = URL_SAFE_NO_PAD.decode(get(&h, CLAIMS).unwrap()).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).unwrap()["sub"],
            "alice"
        );
    }

    #[test]
    fn client_id_and_scp_array_are_fallbacks() {
        let c = claims(json!({"sub": "bob", "client_id": "cli", "scp": ["a", "b"]}));
        let h = identity_headers(&c, &[], false).unwrap();
        assert_eq!(get(&h, AGENT), Some("cli"));
        assert_eq!(get(&h, SCOPE), Some("a b"));
        assert_eq!(get(&h, ACT), None);
    }

    #[test]
    fn control_characters_in_identity_are_refused() {
        let e = refused(json!({"sub": "alice\r\nx-agentward-sub: root"}), &[]);
        assert_eq!(e, BadClaim::new("sub", ClaimProblem::Unfit));
    }

    #[test]
    fn every_identity_value_is_refused_naming_its_claim() {
        let cases = [
            (json!({"sub": "alice,root"}), "sub"),
            (json!({"sub": "alice\u{2028}root"}), "sub"),
            (json!({"sub": " alice"}), "sub"),
            (json!({"sub": ""}), "sub"),
            (json!({"sub": "a", "iss": "https://idp/,x"}), "iss"),
            (json!({"sub": "a", "azp": "agent\u{200B}"}), "azp"),
            (json!({"sub": "a", "client_id": "cli,ent"}), "client_id"),
            (
                json!({"sub": "a", "act": {"sub": "x", "act": {"sub": "y\u{85}"}}}),
                "act.act.sub",
            ),
            (
                json!({"sub": "a", "act": {"sub": "agent,planner"}}),
                "act.sub",
            ),
            (json!({"sub": "a", "scope": "read wr,ite"}), "scope"),
            (json!({"sub": "a", "scope": "read\twrite"}), "scope"),
            (json!({"sub": "a", "scp": ["read", "write all"]}), "scp"),
            (json!({"sub": "a", "scp": ["re\u{2029}ad"]}), "scp"),
        ];
        for (c, claim) in cases {
            let e = refused(c.clone(), &[]);
            assert_eq!(e.claim, claim, "{c}");
            assert_eq!(e.problem, ClaimProblem::Unfit, "{c}");
            assert!(e.description().contains(&format!("`{claim}`")));
        }
    }

    #[test]
    fn claim_to_headers_values_are_checked_item_by_item() {
        let extra = [ClaimToHeader {
            claim: "org.teams".into(),
            header: "x-teams".into(),
        }];
        let ok = json!({"sub": "a", "org": {"teams": ["x", "y z", 7]}});
        let h = identity_headers(&claims(ok), &extra, false).unwrap();
        assert_eq!(get(&h, "x-teams"), Some("x,y z,7"));
        let e = refused(json!({"sub": "a", "org": {"teams": ["x", "y,z"]}}), &extra);
        assert_eq!(e, BadClaim::new("org.teams", ClaimProblem::Unfit));
        let e = refused(json!({"sub": "a", "org": {"teams": [{"id": 1}]}}), &extra);
        assert_eq!(e, BadClaim::new("org.teams", ClaimProblem::NotScalar));
        let e = refused(
            json!({"sub": "a", "org": {"teams": {"a": 1, "b": 2}}}),
            &extra,
        );
        assert_eq!(e.problem, ClaimProblem::NotScalar);
    }

    #[test]
    fn a_token_without_sub_is_an_agent_only_at_a_client_credentials_issuer() {
        let c = claims(json!({"iss": "https://idp/", "azp": "batch-agent"}));
        let e = identity_headers(&c, &[], false).unwrap_err();
        assert_eq!(e, BadClaim::new("sub", ClaimProblem::MissingSub));
        assert!(e.description().contains("`sub`"));
        let h = identity_headers(&c, &[], true).unwrap();
        assert_eq!(get(&h, SUB), None);
        assert_eq!(get(&h, PRINCIPAL), Some("agent"));
        assert_eq!(get(&h, AGENT), Some("batch-agent"));
        // Nobody at all is refused even there.
        let c = claims(json!({"iss": "https://idp/"}));
        let e = identity_headers(&c, &[], true).unwrap_err();
        assert_eq!(e.problem, ClaimProblem::NoIdentity);
        // A user token at that issuer stays a user's.
        let c = claims(json!({"sub": "alice", "azp": "batch-agent"}));
        let h = identity_headers(&c, &[], true).unwrap();
        assert_eq!(get(&h, PRINCIPAL), Some("user"));
    }

    #[test]
    fn malformed_act_is_refused() {
        let e = refused(json!({"sub": "a", "act": "agent"}), &[]);
        assert_eq!(e, BadClaim::new("act", ClaimProblem::Malformed));
        let e = refused(json!({"sub": "a", "act": {"client_id": "x"}}), &[]);
        assert_eq!(e, BadClaim::new("act.sub", ClaimProblem::Malformed));
    }

    #[test]
    fn claim_paths_reach_nested_values_and_join_arrays() {
        let c = claims(json!({"org": {"id": 42, "teams": ["x", "y"]}, "admin": true}));
        assert_eq!(claim_value(&c, "org.id").unwrap().as_deref(), Some("42"));
        assert_eq!(
            claim_value(&c, "org.teams").unwrap().as_deref(),
            Some("x,y")
        );
        assert_eq!(claim_value(&c, "admin").unwrap().as_deref(), Some("true"));
        assert_eq!(claim_value(&c, "org.missing").unwrap(), None);
        assert_eq!(claim_value(&c, "admin.x").unwrap(), None);
    }
}
