//! The request digest: what an approval is bound to. SHA-256 over the
//! method, the normalised path, the query (its `&`-separated parameters
//! sorted, empty ones dropped), the body in canonical JSON (or its bytes
//! when it is not JSON), the user, the user's issuer and the agent, each
//! length-prefixed after a version label. The gateway sends it to the
//! authority as `request_digest` (the vault copies it into the approval
//! token) and a deferred approval's handle carries it: a retry whose amount,
//! user or agent differs has another digest.

use super::canonical::{canonical, Unsupported};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

const LABEL: &[u8] = b"agentward request digest v1";

/// A request's body as the digest reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DigestBody<'a> {
    /// No body (or an empty one).
    Empty,
    /// A JSON body, digested in canonical form (key order and whitespace
    /// do not count).
    Json(&'a Value),
    /// Another body, digested as sent.
    Bytes(&'a [u8]),
}

/// What the digest covers.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    /// `:method`.
    pub method: &'a str,
    /// The normalised path, without its query ([`crate::path::normalize`]).
    pub path: &'a str,
    /// The query, without its `?`.
    pub query: Option<&'a str>,
    /// The body.
    pub body: DigestBody<'a>,
    /// The user.
    pub sub: &'a str,
    /// The user's issuer.
    pub issuer: &'a str,
    /// The agent, when the token names one.
    pub agent: Option<&'a str>,
}

/// A request digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestDigest(pub [u8; 32]);

impl std::fmt::Debug for RequestDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_param())
    }
}

impl RequestDigest {
    /// The digest of a request; a JSON body with a number canonical JSON
    /// cannot write is [`Unsupported`].
    pub fn of(input: &DigestInput<'_>) -> Result<RequestDigest, Unsupported> {
        let mut h = Sha256::new();
        let mut part = |tag: u8, bytes: Option<&[u8]>| match bytes {
            None => h.update([tag, 0]),
            Some(bytes) => {
                h.update([tag, 1]);
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            }
        };
        part(b'L', Some(LABEL));
        part(b'M', Some(input.method.as_bytes()));
        part(b'P', Some(input.path.as_bytes()));
        part(
            b'Q',
            input.query.map(sorted_query).as_deref().map(str::as_bytes),
        );
        match input.body {
            DigestBody::Empty => part(b'B', None),
            DigestBody::Json(value) => part(b'J', Some(canonical(value)?.as_bytes())),
            DigestBody::Bytes([]) => part(b'B', None),
            DigestBody::Bytes(bytes) => part(b'B', Some(bytes)),
        }
        part(b'S', Some(input.sub.as_bytes()));
        part(b'I', Some(input.issuer.as_bytes()));
        part(b'A', input.agent.map(str::as_bytes));
        Ok(RequestDigest(h.finalize().into()))
    }

    /// As sent in `request_digest`: `sha-256:` and the base64url digest.
    pub fn to_param(&self) -> String {
        format!("sha-256:{}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

/// The query's parameters sorted, empty ones dropped (`b=2&&a=1` → `a=1&b=2`);
/// encodings are kept as sent.
fn sorted_query(query: &str) -> String {
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort_unstable();
    params.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::canonical::parse_strict;

    fn digest(method: &str, target: &str, body: &str, sub: &str, agent: Option<&str>) -> String {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let value = parse_strict(body.as_bytes()).ok();
        let body = match &value {
            Some(v) => DigestBody::Json(v),
            None => DigestBody::Bytes(body.as_bytes()),
        };
        RequestDigest::of(&DigestInput {
            method,
            path,
            query,
            body,
            sub,
            issuer: "https://idp/",
            agent,
        })
        .unwrap()
        .to_param()
    }

    const ORDER: &str = r#"{"ticker": "ACME", "qty": 50, "amount": 1500}"#;

    #[test]
    fn key_order_and_whitespace_do_not_count() {
        let a = digest("POST", "/trades", ORDER, "alice", Some("agent"));
        let b = digest(
            "POST",
            "/trades",
            r#"{"amount":1500,"qty":50.0,"ticker":"ACME"}"#,
            "alice",
            Some("agent"),
        );
        assert_eq!(a, b);
        assert!(a.starts_with("sha-256:") && a.len() == 8 + 43, "{a}");
    }

    #[test]
    fn a_changed_amount_is_another_digest() {
        let a = digest("POST", "/trades", ORDER, "alice", Some("agent"));
        let changed = ORDER.replace("1500", "1501");
        assert_ne!(
            a,
            digest("POST", "/trades", &changed, "alice", Some("agent"))
        );
    }

    #[test]
    fn method_path_query_user_and_agent_count() {
        let a = digest("POST", "/trades?x=1&y=2", ORDER, "alice", Some("agent"));
        for other in [
            digest("PUT", "/trades?x=1&y=2", ORDER, "alice", Some("agent")),
            digest("POST", "/trade?x=1&y=2", ORDER, "alice", Some("agent")),
            digest("POST", "/trades?x=1&y=3", ORDER, "alice", Some("agent")),
            digest("POST", "/trades", ORDER, "alice", Some("agent")),
            digest("POST", "/trades?x=1&y=2", ORDER, "bob", Some("agent")),
            digest("POST", "/trades?x=1&y=2", ORDER, "alice", Some("other")),
            digest("POST", "/trades?x=1&y=2", ORDER, "alice", None),
            digest("POST", "/trades?x=1&y=2", "", "alice", Some("agent")),
        ] {
            assert_ne!(a, other);
        }
        // Parameter order and empty parameters do not count.
        assert_eq!(
            a,
            digest("POST", "/trades?y=2&&x=1", ORDER, "alice", Some("agent"))
        );
    }

    #[test]
    fn fields_cannot_be_shifted_between_parts() {
        assert_ne!(
            digest("GET", "/a", "", "alice", Some("b")),
            digest("GET", "/a", "", "aliceb", None)
        );
        // A JSON body and the same text sent as bytes differ by tag only
        // when the text is not JSON; an empty body is one thing.
        assert_eq!(
            digest("GET", "/a", "", "alice", None),
            RequestDigest::of(&DigestInput {
                method: "GET",
                path: "/a",
                query: None,
                body: DigestBody::Empty,
                sub: "alice",
                issuer: "https://idp/",
                agent: None
            })
            .unwrap()
            .to_param()
        );
    }
}
