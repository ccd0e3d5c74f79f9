//! The plugins' dependencies, answered from the case: the issuer's JWKS,
//! OpenFGA checks, the CIBA authority and the vault's token exchange. No
//! server is needed; every callout is recorded as `cluster METHOD path`.

use super::file::{Case, Decision};
use crate::{Host, HttpCall};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashSet};

const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";
const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// Answers a case's callouts.
pub struct Responder {
    /// Clusters that serve a JWKS.
    pub jwks_clusters: HashSet<String>,
    /// The JWKS they serve.
    pub jwks: Value,
    tuples: BTreeSet<(String, String, String)>,
    approval: Option<Decision>,
    exchange: Option<super::file::Exchange>,
    /// Every callout, as `cluster METHOD path`.
    pub callouts: Vec<String>,
    /// The binding message of the last approval request.
    pub binding_message: Option<String>,
    /// Callouts the case has no answer for.
    pub unanswered: Vec<String>,
    asked: u32,
}

impl Responder {
    /// A responder for `case`.
    pub fn new(case: &Case, jwks_clusters: HashSet<String>, jwks: Value) -> Responder {
        let tuples = case
            .fga
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
        Responder {
            jwks_clusters,
            jwks,
            tuples,
            approval: case.approval,
            exchange: case.exchange.clone(),
            callouts: Vec::new(),
            binding_message: None,
            unanswered: Vec::new(),
            asked: 0,
        }
    }

    /// Answers every pending callout of `host`; whether there was any.
    pub fn answer_pending(&mut self, host: &Host) -> bool {
        let pending = host.pending_http_calls();
        for call in &pending {
            let (status, body) = self.answer(call);
            let answered = match status {
                Some(status) => host.answer_http_call(call.token, status, &JSON, body.as_bytes()),
                None => host.fail_http_call(call.token),
            };
            if let Err(e) = answered {
                self.unanswered
                    .push(format!("{}: {e}", self.callouts.len()));
            }
        }
        !pending.is_empty()
    }

    /// The answer to one callout; `None` status: fail it (reset).
    fn answer(&mut self, call: &HttpCall) -> (Option<u16>, String) {
        let method = call.header(":method").unwrap_or("GET");
        let path = call.header(":path").unwrap_or("/");
        let bare = path.split('?').next().unwrap_or(path);
        let line = format!("{} {method} {bare}", call.cluster);
        self.callouts.push(line.clone());
        if self.jwks_clusters.contains(&call.cluster) && method == "GET" {
            return (Some(200), self.jwks.to_string());
        }
        if bare.starts_with("/stores/")
            && (bare.ends_with("/check") || bare.ends_with("/batch-check"))
        {
            return self.fga(call, &line);
        }
        if bare.ends_with("/bc-authorize") {
            let form = form(&call.body);
            self.binding_message = form.get("binding_message").cloned();
            if self.approval.is_none() {
                return self.unexpected(
                    &line,
                    "an approval was asked and the case gives no `approval`",
                );
            }
            self.asked += 1;
            let answer = json!({
                "auth_req_id": format!("agentward-test-{}", self.asked),
                "expires_in": 300,
                "interval": 1,
            });
            return (Some(200), answer.to_string());
        }
        let form = form(&call.body);
        match form.get("grant_type").map(String::as_str) {
            Some(CIBA_GRANT) => self.ciba_token(&line),
            Some(grant) if grant.contains("token-exchange") => self.exchange(&line),
            _ => self.unexpected(&line, "the case has no answer for this callout"),
        }
    }

    fn unexpected(&mut self, line: &str, why: &str) -> (Option<u16>, String) {
        self.unanswered.push(format!("{line}: {why}"));
        (None, String::new())
    }

    /// `/check` or `/batch-check`: allowed when the case lists the tuple.
    fn fga(&mut self, call: &HttpCall, line: &str) -> (Option<u16>, String) {
        let Ok(body) = serde_json::from_slice::<Value>(&call.body) else {
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
        (Some(200), answer.to_string())
    }

    /// A poll of the CIBA token endpoint, answered as the user decided.
    fn ciba_token(&mut self, line: &str) -> (Option<u16>, String) {
        let error = |code: &str| (Some(400), json!({ "error": code }).to_string());
        match self.approval {
            Some(Decision::Approved) => (
                Some(200),
                json!({"access_token": "agentward-test-approval", "token_type": "Bearer",
                       "expires_in": 300})
                .to_string(),
            ),
            Some(Decision::Denied) => error("access_denied"),
            Some(Decision::Expired) => error("expired_token"),
            Some(Decision::Pending) => error("authorization_pending"),
            None => self.unexpected(
                line,
                "an approval was polled and the case gives no `approval`",
            ),
        }
    }

    /// A token exchange, answered with the case's `exchange`.
    fn exchange(&mut self, line: &str) -> (Option<u16>, String) {
        let Some(exchange) = self.exchange.clone() else {
            return self.unexpected(
                line,
                "a token exchange was asked and the case gives no `exchange`",
            );
        };
        if let Some(error) = exchange.error {
            let status = exchange.status.unwrap_or(400);
            return (Some(status), json!({ "error": error }).to_string());
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
        (Some(200), answer.to_string())
    }
}

/// An `application/x-www-form-urlencoded` body.
fn form(body: &[u8]) -> std::collections::HashMap<String, String> {
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
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
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
}
