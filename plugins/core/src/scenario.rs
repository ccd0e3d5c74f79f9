//! A gateway's dependencies answered from a written scenario instead of
//! servers: the issuer's JWKS, OpenFGA checks, the CIBA authority and the
//! vault's token exchange. Policy tests (`host-test test`) and the browser
//! playground both run the plugins' decisions against one; every callout is
//! recorded as `cluster METHOD path`.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};

const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";

/// The user's decision on an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Approves at the first poll.
    Approved,
    /// Denies (`access_denied`).
    Denied,
    /// Lets it expire (`expired_token`).
    Expired,
    /// Never decides (`authorization_pending`).
    Pending,
}

/// The vault's answer to a token exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    /// The upstream access token handed out.
    #[serde(default)]
    pub access_token: Option<String>,
    /// Its lifetime.
    #[serde(default = "five_minutes")]
    pub expires_in: u64,
    /// An OAuth error instead (`invalid_grant`, `consent_required`…).
    #[serde(default)]
    pub error: Option<String>,
    /// The HTTP status of that error (400).
    #[serde(default)]
    pub status: Option<u16>,
}

fn five_minutes() -> u64 {
    300
}

/// Answers callouts from a scenario and records them.
#[derive(Debug, Default)]
pub struct Scenario {
    /// Clusters that serve a JWKS.
    pub jwks_clusters: HashSet<String>,
    /// The JWKS they serve.
    pub jwks: Value,
    tuples: BTreeSet<(String, String, String)>,
    approval: Option<Decision>,
    exchange: Option<Exchange>,
    /// Every callout, as `cluster METHOD path`.
    pub callouts: Vec<String>,
    /// The binding message of the last approval request.
    pub binding_message: Option<String>,
    /// Callouts the scenario has no answer for, and why.
    pub unanswered: Vec<String>,
    asked: u32,
}

impl Scenario {
    /// A scenario where the tuples `fga` (`user relation object`) hold and
    /// no other, the user decides `approval` and the vault answers
    /// `exchange`.
    pub fn new(
        fga: &[String],
        approval: Option<Decision>,
        exchange: Option<Exchange>,
        jwks_clusters: HashSet<String>,
        jwks: Value,
    ) -> Scenario {
        let tuples = fga
            .iter()
            .filter_map(|t| {
                let mut parts = t.split_whitespace();
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                ))
            })
            .collect();
        Scenario {
            jwks_clusters,
            jwks,
            tuples,
            approval,
            exchange,
            ..Scenario::default()
        }
    }

    /// The answer to one callout (a JSON body); `None`: fail it (reset).
    pub fn answer(
        &mut self,
        cluster: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Option<(u16, String)> {
        let bare = path.split('?').next().unwrap_or(path);
        let line = format!("{cluster} {method} {bare}");
        self.callouts.push(line.clone());
        if self.jwks_clusters.contains(cluster) && method == "GET" {
            return Some((200, self.jwks.to_string()));
        }
        if bare.starts_with("/stores/")
            && (bare.ends_with("/check") || bare.ends_with("/batch-check"))
        {
            return self.fga(body, &line);
        }
        let form = form(body);
        if bare.ends_with("/bc-authorize") {
            self.binding_message = form.get("binding_message").cloned();
            if self.approval.is_none() {
                return self.unexpected(&line, "an approval was asked and no approval is given");
            }
            self.asked += 1;
            let answer = json!({
                "auth_req_id": format!("agentward-test-{}", self.asked),
                "expires_in": 300,
                "interval": 1,
            });
            return Some((200, answer.to_string()));
        }
        match form.get("grant_type").map(String::as_str) {
            Some(CIBA_GRANT) => self.ciba_token(&line),
            Some(grant) if grant.contains("token-exchange") => self.exchange(&line),
            _ => self.unexpected(&line, "there is no answer for this callout"),
        }
    }

    fn unexpected(&mut self, line: &str, why: &str) -> Option<(u16, String)> {
        self.unanswered.push(format!("{line}: {why}"));
        None
    }

    /// `/check` or `/batch-check`: allowed when the scenario lists the tuple.
    fn fga(&mut self, body: &[u8], line: &str) -> Option<(u16, String)> {
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return self.unexpected(line, "the FGA check is not JSON");
        };
        let allowed = |check: &Value| {
            let key = &check["tuple_key"];
            let part = |name: &str| key[name].as_str().unwrap_or_default().to_string();
            self.tuples
                .contains(&(part("user"), part("relation"), part("object")))
        };
        let answer = match body["checks"].as_array() {
            None => json!({ "allowed": allowed(&body) }),
            Some(checks) => {
                let result: Map<String, Value> = checks
                    .iter()
                    .map(|c| {
                        let id = c["correlation_id"].as_str().unwrap_or_default().to_string();
                        (id, json!({ "allowed": allowed(c) }))
                    })
                    .collect();
                json!({ "result": result })
            }
        };
        Some((200, answer.to_string()))
    }

    /// A poll of the CIBA token endpoint, answered as the user decided.
    fn ciba_token(&mut self, line: &str) -> Option<(u16, String)> {
        let error = |code: &str| Some((400, json!({ "error": code }).to_string()));
        match self.approval {
            Some(Decision::Approved) => Some((
                200,
                json!({"access_token": "agentward-test-approval", "token_type": "Bearer",
                       "expires_in": 300})
                .to_string(),
            )),
            Some(Decision::Denied) => error("access_denied"),
            Some(Decision::Expired) => error("expired_token"),
            Some(Decision::Pending) => error("authorization_pending"),
            None => self.unexpected(line, "an approval was polled and no approval is given"),
        }
    }

    /// A token exchange, answered with the scenario's `exchange`.
    fn exchange(&mut self, line: &str) -> Option<(u16, String)> {
        let Some(exchange) = self.exchange.clone() else {
            return self.unexpected(line, "a token exchange was asked and no exchange is given");
        };
        if let Some(error) = exchange.error {
            let status = exchange.status.unwrap_or(400);
            return Some((status, json!({ "error": error }).to_string()));
        }
        let token = exchange
            .access_token
            .unwrap_or_else(|| "agentward-test-upstream-token".into());
        let answer = json!({
            "access_token": token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": exchange.expires_in,
        });
        Some((200, answer.to_string()))
    }
}

/// An `application/x-www-form-urlencoded` body.
fn form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((decode(name), decode(value)))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent() {
        let f = form(b"binding_message=Buy+50+ACME&grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&bad=%zz");
        assert_eq!(f["binding_message"], "Buy 50 ACME");
        assert_eq!(f["grant_type"], CIBA_GRANT);
        assert_eq!(f["bad"], "%zz");
    }

    #[test]
    fn checks_hold_only_for_listed_tuples() {
        let mut s = Scenario::new(
            &["user:alice viewer doc:1".into()],
            None,
            None,
            HashSet::new(),
            Value::Null,
        );
        let batch = br#"{"checks":[{"tuple_key":{"user":"user:alice","relation":"viewer","object":"doc:1"},"correlation_id":"a"},{"tuple_key":{"user":"user:alice","relation":"viewer","object":"doc:2"},"correlation_id":"b"}]}"#;
        let (status, body) = s
            .answer("fga", "POST", "/stores/s/batch-check", batch)
            .unwrap();
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["result"]["a"]["allowed"], true);
        assert_eq!(body["result"]["b"]["allowed"], false);
        assert_eq!(s.callouts, ["fga POST /stores/s/batch-check"]);
        assert!(s.answer("vault", "POST", "/x", b"").is_none());
        assert_eq!(s.unanswered.len(), 1);
    }
}
