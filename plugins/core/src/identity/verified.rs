//! The one reader of the identity contract: what a filter after jwt-identity
//! (token-exchange now; scope-fga, ciba-hold next) learns about who the
//! user and the agent are. It trusts the `x-agentward-*` headers only as far
//! as their `x-agentward-proof` covers them (see [`crate::proof`]): for this
//! very bearer token, under the key jwt-identity keeps.

use super::{claim_value, BadClaim, ACT, AGENT, CLAIMS, ISSUER, PRINCIPAL, SCOPE, SUB};
use crate::proof::{ProofKey, PROOF};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// The identity headers of a request as it arrives: claimed, not yet
/// proven. Read them in one pass over the request's headers with
/// [`ReceivedIdentity::HEADERS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceivedIdentity<'a> {
    values: [Option<&'a str>; 8],
}

impl<'a> ReceivedIdentity<'a> {
    /// The headers of the contract, in the order of
    /// [`ReceivedIdentity::from_values`]: the seven a proof covers, then
    /// the proof.
    pub const HEADERS: [&'static str; 8] =
        [SUB, AGENT, ACT, SCOPE, ISSUER, CLAIMS, PRINCIPAL, PROOF];

    /// The values of [`ReceivedIdentity::HEADERS`], in that order.
    pub fn from_values(values: [Option<&'a str>; 8]) -> ReceivedIdentity<'a> {
        ReceivedIdentity { values }
    }

    /// Looks each header up by name (one lookup per header).
    pub fn from_headers(header: impl Fn(&str) -> Option<&'a str>) -> ReceivedIdentity<'a> {
        ReceivedIdentity {
            values: Self::HEADERS.map(header),
        }
    }

    /// The value of one of [`ReceivedIdentity::HEADERS`], as received.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let i = Self::HEADERS.iter().position(|n| *n == name)?;
        self.values[i]
    }

    /// The values of [`ReceivedIdentity::HEADERS`], as received.
    pub fn values(&self) -> &[Option<&'a str>; 8] {
        &self.values
    }

    /// `x-agentward-sub` as received (unproven).
    pub fn sub(&self) -> Option<&'a str> {
        self.values[0]
    }

    /// `x-agentward-issuer` as received (unproven).
    pub fn issuer(&self) -> Option<&'a str> {
        self.values[4]
    }

    /// `x-agentward-proof` as received.
    pub fn proof(&self) -> Option<&'a str> {
        self.values[7]
    }

    /// Whether the request carries none of the headers: no identity was
    /// claimed (jwt-identity sets none for an anonymous request on a
    /// public route).
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// The identity, if the proof covers these headers and the bearer
    /// token `bearer` under `key`. Nothing of the token itself is read:
    /// only jwt-identity, which verified the token, can make the proof.
    pub fn verify(&self, key: &ProofKey, bearer: &str) -> Result<VerifiedIdentity<'a>, Unproven> {
        let proof = self.proof().ok_or(Unproven)?;
        if !key.check(proof, |name| self.header(name), bearer) {
            return Err(Unproven);
        }
        let [sub, agent, act, scope, issuer, claims, principal, _] = self.values;
        // jwt-identity sets an issuer, and a principal that agrees with
        // `sub`, on every identity it proves; a proof over anything else is
        // not one of its. (Without the principal header, `sub` tells.)
        let principal = match (principal, sub) {
            (Some("user") | None, Some(_)) => Principal::User,
            (Some("agent") | None, None) => Principal::Agent,
            _ => return Err(Unproven),
        };
        Ok(VerifiedIdentity {
            principal,
            sub,
            issuer: issuer.ok_or(Unproven)?,
            agent,
            act,
            scope,
            claims,
            proof,
        })
    }
}

/// The identity headers carry no valid proof for the bearer token: a
/// client wrote them, they belong to another token, or the key differs.
/// Answer with [`crate::proof::unproven`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unproven;

/// Whose identity a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A user's (`sub`), through an agent maybe.
    User,
    /// Only an agent's own (a client-credentials token without `sub`).
    Agent,
}

/// The identity jwt-identity verified, as its proof covers it. Values
/// borrow from the request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedIdentity<'a> {
    /// Whose identity it is.
    pub principal: Principal,
    /// The user (`sub`); `None` for an agent's own identity.
    pub sub: Option<&'a str>,
    /// The issuer (`iss`): `sub` is unique only within it.
    pub issuer: &'a str,
    /// The agent (`azp`, else `client_id`), if the token names one.
    pub agent: Option<&'a str>,
    act: Option<&'a str>,
    scope: Option<&'a str>,
    claims: Option<&'a str>,
    /// The proof that was checked.
    pub proof: &'a str,
}

impl<'a> VerifiedIdentity<'a> {
    /// The delegation chain (`act`, RFC 8693), outermost (current) actor first.
    pub fn actors(&self) -> impl Iterator<Item = &'a str> {
        self.act.into_iter().flat_map(|a| a.split(','))
    }

    /// The granted scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &'a str> {
        self.scope.into_iter().flat_map(|s| s.split(' '))
    }

    /// Whether `scope` is granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// Every verified claim (decoded from `x-agentward-claims`).
    pub fn claims(&self) -> Option<Map<String, Value>> {
        let json = URL_SAFE_NO_PAD.decode(self.claims?).ok()?;
        match serde_json::from_slice(&json).ok()? {
            Value::Object(claims) => Some(claims),
            _ => None,
        }
    }

    /// A claim by dotted path, rendered as `claim_to_headers` renders it.
    /// Read it here, not from a `claim_to_headers` target header: the proof
    /// does not cover those, it covers the claims they are copied from.
    pub fn claim(&self, path: &str) -> Result<Option<String>, BadClaim> {
        match self.claims() {
            Some(claims) => claim_value(&claims, path),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::identity_headers;
    use crate::policy::ClaimToHeader;
    use crate::proof::seal;
    use serde_json::json;

    const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    fn key() -> ProofKey {
        ProofKey::from_bytes(&[5; 16]).unwrap()
    }

    /// The headers jwt-identity sets for `claims` verified from `token`, proof included.
    fn written(claims: Value, client_credentials: bool, token: &str) -> Vec<(String, String)> {
        let extra = [ClaimToHeader {
            claim: "org.id".into(),
            header: "x-org".into(),
        }];
        let claims = claims.as_object().unwrap().clone();
        let mut headers = identity_headers(&claims, &extra, client_credentials).unwrap();
        seal(&key(), &mut headers, token);
        headers
    }

    fn received(headers: &[(String, String)]) -> ReceivedIdentity<'_> {
        ReceivedIdentity::from_headers(|name| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        })
    }

    #[test]
    fn what_jwt_identity_writes_reads_back_whole() {
        let headers = written(
            json!({"iss": "https://idp/", "sub": "alice", "azp": "stock-agent",
                   "scope": "portfolio:read trade", "org": {"id": 42},
                   "act": {"sub": "stock-agent", "act": {"sub": "planner"}}}),
            false,
            TOKEN,
        );
        let id = received(&headers).verify(&key(), TOKEN).unwrap();
        assert_eq!(id.principal, Principal::User);
        assert_eq!(id.sub, Some("alice"));
        assert_eq!(id.issuer, "https://idp/");
        assert_eq!(id.agent, Some("stock-agent"));
        assert_eq!(id.actors().collect::<Vec<_>>(), ["stock-agent", "planner"]);
        assert_eq!(id.scopes().collect::<Vec<_>>(), ["portfolio:read", "trade"]);
        assert!(id.has_scope("trade") && !id.has_scope("portfolio"));
        assert_eq!(id.claims().unwrap()["sub"], "alice");
        assert_eq!(id.claim("org.id").unwrap().as_deref(), Some("42"));
        assert_eq!(id.claim("org.missing").unwrap(), None);
    }

    #[test]
    fn an_agents_own_identity_reads_back_without_a_user() {
        let headers = written(
            json!({"iss": "https://idp/", "client_id": "batch"}),
            true,
            TOKEN,
        );
        let id = received(&headers).verify(&key(), TOKEN).unwrap();
        assert_eq!(id.principal, Principal::Agent);
        assert_eq!(id.sub, None);
        assert_eq!(id.agent, Some("batch"));
        assert_eq!(id.actors().count(), 0);
        assert_eq!(id.scopes().count(), 0);
    }

    #[test]
    fn forged_changed_or_foreign_identities_are_unproven() {
        let headers = written(
            json!({"iss": "https://idp/", "sub": "alice", "azp": "a"}),
            false,
            TOKEN,
        );
        let good = received(&headers);
        assert!(good.verify(&key(), TOKEN).is_ok());
        // Another token, another key, no proof at all.
        assert_eq!(good.verify(&key(), "x.y.b3RoZXI"), Err(Unproven));
        let other = ProofKey::from_bytes(&[6; 16]).unwrap();
        assert_eq!(good.verify(&other, TOKEN), Err(Unproven));
        let mut values = good.values;
        values[7] = None;
        assert_eq!(
            ReceivedIdentity::from_values(values).verify(&key(), TOKEN),
            Err(Unproven)
        );
        // Any covered header changed, added or removed.
        for i in 0..7 {
            let mut changed = good.values;
            changed[i] = Some("mallory");
            let r = ReceivedIdentity::from_values(changed);
            assert_eq!(r.verify(&key(), TOKEN), Err(Unproven), "{i}");
            let mut removed = good.values;
            if removed[i].take().is_some() {
                let r = ReceivedIdentity::from_values(removed);
                assert_eq!(r.verify(&key(), TOKEN), Err(Unproven), "{i} removed");
            }
        }
        // A tampered proof.
        let mut proof = good.proof().unwrap().to_string();
        proof.replace_range(..1, if proof.starts_with('A') { "B" } else { "A" });
        let mut tampered = good.values;
        tampered[7] = Some(&proof);
        assert_eq!(
            ReceivedIdentity::from_values(tampered).verify(&key(), TOKEN),
            Err(Unproven)
        );
    }

    #[test]
    fn a_proven_identity_without_issuer_or_with_a_contradicting_principal_is_refused() {
        // Proofs made over headers jwt-identity never writes.
        let cases: [&[(&str, &str)]; 3] = [
            &[(SUB, "bob"), (PRINCIPAL, "user")],
            &[(SUB, "bob"), (ISSUER, "https://idp/"), (PRINCIPAL, "agent")],
            &[(ISSUER, "https://idp/"), (PRINCIPAL, "user")],
        ];
        for pairs in cases {
            let mut headers: Vec<(String, String)> = pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            seal(&key(), &mut headers, TOKEN);
            assert_eq!(
                received(&headers).verify(&key(), TOKEN),
                Err(Unproven),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn nothing_received_is_an_empty_identity() {
        let none = ReceivedIdentity::from_headers(|_| None);
        assert!(none.is_empty());
        assert_eq!(none.verify(&key(), TOKEN), Err(Unproven));
        let some = ReceivedIdentity::from_headers(|n| (n == SUB).then_some("alice"));
        assert!(!some.is_empty());
        assert_eq!(some.sub(), Some("alice"));
        assert_eq!(some.header(AGENT), None);
        assert_eq!(some.header("x-other"), None);
    }
}
