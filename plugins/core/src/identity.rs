//! The verified identity, as the headers later plugins and upstreams trust.

use crate::jwt::Rejection;
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

/// Deepest `act` nesting followed; deeper chains are refused.
const MAX_ACT_DEPTH: usize = 8;

/// The identity headers of verified claims, in a stable order. Fails with
/// [`Rejection::BadClaim`] when an identity value could not travel safely
/// in a header (control characters) or the `act` chain is malformed.
pub fn identity_headers(
    claims: &Map<String, Value>,
    extra: &[ClaimToHeader],
) -> Result<Vec<(String, String)>, Rejection> {
    let mut out = Vec::with_capacity(6 + extra.len());
    let mut push = |name: &str, value: String| -> Result<(), Rejection> {
        if !header_safe(&value) {
            return Err(Rejection::BadClaim);
        }
        out.push((name.to_string(), value));
        Ok(())
    };
    if let Some(Value::String(sub)) = claims.get("sub") {
        push(SUB, sub.clone())?;
    }
    let agent = claims.get("azp").or_else(|| claims.get("client_id"));
    if let Some(Value::String(agent)) = agent {
        push(AGENT, agent.clone())?;
    }
    let chain = act_chain(claims)?;
    if !chain.is_empty() {
        push(ACT, chain.join(","))?;
    }
    if let Some(scope) = scopes(claims) {
        push(SCOPE, scope)?;
    }
    if let Some(Value::String(iss)) = claims.get("iss") {
        push(ISSUER, iss.clone())?;
    }
    let json = Value::Object(claims.clone()).to_string();
    push(CLAIMS, URL_SAFE_NO_PAD.encode(json))?;
    for mapping in extra {
        // A claim that cannot travel in a header is left out, not the request.
        if let Some(value) = claim_value(claims, &mapping.claim).filter(|v| header_safe(v)) {
            out.push((mapping.header.clone(), value));
        }
    }
    Ok(out)
}

/// The `act` chain's subjects, outermost (current actor) first.
fn act_chain(claims: &Map<String, Value>) -> Result<Vec<String>, Rejection> {
    let mut chain = Vec::new();
    let mut act = claims.get("act");
    while let Some(value) = act {
        let Value::Object(actor) = value else {
            return Err(Rejection::BadClaim);
        };
        if chain.len() == MAX_ACT_DEPTH {
            return Err(Rejection::BadClaim);
        }
        match actor.get("sub") {
            Some(Value::String(sub)) if !sub.contains(',') => chain.push(sub.clone()),
            _ => return Err(Rejection::BadClaim),
        }
        act = actor.get("act");
    }
    Ok(chain)
}

/// Granted scopes from `scope` (RFC 8693 / RFC 9068) or `scp`, space-separated.
pub fn scopes(claims: &Map<String, Value>) -> Option<String> {
    let value = claims.get("scope").or_else(|| claims.get("scp"))?;
    match value {
        Value::String(s) => Some(s.split_whitespace().collect::<Vec<_>>().join(" ")),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

/// A claim by dotted path, rendered for a header: strings as they are,
/// numbers and booleans as JSON, arrays comma-joined, objects as JSON.
pub fn claim_value(claims: &Map<String, Value>, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    })
}

fn header_safe(value: &str) -> bool {
    value.len() <= 8192 && !value.chars().any(|c| c.is_control())
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

    #[test]
    fn user_agent_chain_and_scopes() {
        let c = claims(json!({
            "iss": "https://idp/", "sub": "alice", "azp": "stock-agent",
            "scope": "portfolio:read  trade",
            "act": {"sub": "stock-agent", "act": {"sub": "planner"}}
        }));
        let h = identity_headers(&c, &[]).unwrap();
        assert_eq!(get(&h, SUB), Some("alice"));
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
        let h = identity_headers(&c, &[]).unwrap();
        assert_eq!(get(&h, AGENT), Some("cli"));
        assert_eq!(get(&h, SCOPE), Some("a b"));
        assert_eq!(get(&h, ACT), None);
    }

    #[test]
    fn control_characters_in_identity_are_refused() {
        let c = claims(json!({"sub": "alice\r\nx-agentward-sub: root"}));
        assert_eq!(identity_headers(&c, &[]), Err(Rejection::BadClaim));
    }

    #[test]
    fn malformed_act_is_refused() {
        let c = claims(json!({"sub": "a", "act": "agent"}));
        assert_eq!(identity_headers(&c, &[]), Err(Rejection::BadClaim));
        let c = claims(json!({"sub": "a", "act": {"client_id": "x"}}));
        assert_eq!(identity_headers(&c, &[]), Err(Rejection::BadClaim));
    }

    #[test]
    fn claim_paths_reach_nested_values_and_join_arrays() {
        let c = claims(json!({"org": {"id": 42, "teams": ["x", "y"]}, "admin": true}));
        assert_eq!(claim_value(&c, "org.id").as_deref(), Some("42"));
        assert_eq!(claim_value(&c, "org.teams").as_deref(), Some("x,y"));
        assert_eq!(claim_value(&c, "admin").as_deref(), Some("true"));
        assert_eq!(claim_value(&c, "org.missing"), None);
        let extra = [ClaimToHeader {
            claim: "org.teams".into(),
            header: "x-teams".into(),
        }];
        let h = identity_headers(&c, &extra).unwrap();
        assert_eq!(get(&h, "x-teams"), Some("x,y"));
    }
}
