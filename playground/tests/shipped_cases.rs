//! The playground decides as the real plugins do: every case of the shipped
//! policy tests (`policies/*.tests.yaml`, which `host-test test` runs
//! through the real `.wasm` files) runs through the playground's chain
//! and must come out the same: status, error, bodies, the headers the
//! client and the upstream see, the callouts and the binding message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_playground::chain::{self, Input, Output, Request, Upstream};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

struct Key {
    signing: SigningKey,
    jwk: Value,
}

impl Key {
    fn new() -> Key {
        let signing = SigningKey::from_slice(&[42; 32]).unwrap();
        let point = signing.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": "playground-test", "x": URL_SAFE_NO_PAD.encode(&bytes[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&bytes[33..65])});
        Key { signing, jwk }
    }

    fn sign(&self, claims: &Map<String, Value>, iss: &str, aud: &str, now: u64) -> String {
        let mut claims = claims.clone();
        for (name, value) in [
            ("iss", json!(iss)),
            ("aud", json!(aud)),
            ("iat", json!(now)),
            ("exp", json!(now + 300)),
        ] {
            claims.entry(name).or_insert(value);
        }
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "playground-test"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// The plugins a test file runs, in order.
fn plugins(file: &Value) -> Vec<String> {
    if let Some(list) = file["plugins"].as_array() {
        return list
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
    }
    let Some(envoy) = file["envoy"].as_str() else {
        return chain::PLUGINS.iter().map(|p| p.to_string()).collect();
    };
    // The Envoy config's wasm filters, in its order.
    let text = std::fs::read_to_string(policies().join(envoy)).unwrap();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("filename:"))
        .filter_map(|f| f.trim().rsplit('/').next()?.strip_suffix(".wasm"))
        .map(|name| name.replace('_', "-"))
        .collect()
}

fn body_text(body: &Value) -> String {
    match body {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn header<'a>(
    headers: impl IntoIterator<Item = (&'a String, &'a String)>,
    name: &str,
) -> Option<String> {
    headers
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn same_body(expected: &Value, got: &str) -> bool {
    match expected {
        Value::String(text) => text == got,
        _ => serde_json::from_str::<Value>(got).ok().as_ref() == Some(expected),
    }
}

/// Every way `output` differs from `expect`.
fn compare(expect: &Value, output: &Output) -> Vec<String> {
    let mut failures: Vec<String> = output.errors.iter().map(|e| format!("{e:?}")).collect();
    failures.extend(output.unanswered.iter().cloned());
    let Some(response) = &output.response else {
        failures.push("no response".into());
        return failures;
    };
    if let Some(status) = expect["status"].as_u64() {
        if status != u64::from(response.status) {
            failures.push(format!(
                "status: expected {status}, got {} (by {})",
                response.status, response.by
            ));
        }
    }
    let body: Option<Value> = serde_json::from_str(&response.body).ok();
    match &expect["error"] {
        Value::Null => {}
        Value::Number(code) => {
            let got = body.as_ref().map(|b| b["error"]["code"].clone());
            if got != Some(Value::Number(code.clone())) {
                failures.push(format!("error: expected {code}, got {got:?}"));
            }
        }
        error => {
            let got = body.as_ref().map(|b| b["error"].clone());
            if got.as_ref() != Some(error) {
                failures.push(format!("error: expected {error}, got {got:?}"));
            }
        }
    }
    if let Some(headers) = expect["headers"].as_object() {
        for (name, want) in headers {
            let have = header(response.headers.iter().map(|(n, v)| (n, v)), name);
            if have.as_deref() != want.as_str() {
                failures.push(format!("header {name}: expected {want}, got {have:?}"));
            }
        }
    }
    if !expect["body"].is_null() && !same_body(&expect["body"], &response.body) {
        failures.push(format!(
            "body: expected {}, got {}",
            expect["body"], response.body
        ));
    }
    match (&expect["upstream"], &output.upstream) {
        (Value::Bool(false), Some(_)) => failures.push("the upstream was reached".into()),
        (Value::Bool(true) | Value::Object(_), None) => failures.push(format!(
            "the upstream was not reached ({} answered)",
            response.by
        )),
        (Value::Object(want), Some(seen)) => {
            for (name, value) in want
                .get("headers")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let have = header(&seen.headers, name);
                if have.as_deref() != value.as_str() {
                    failures.push(format!(
                        "upstream header {name}: expected {value}, got {have:?}"
                    ));
                }
            }
            if let Some(body) = want.get("body") {
                if !same_body(body, &seen.body) {
                    failures.push(format!("upstream body: expected {body}, got {}", seen.body));
                }
            }
        }
        _ => {}
    }
    if let Some(callouts) = expect["callouts"].as_array() {
        let want: Vec<&str> = callouts.iter().filter_map(Value::as_str).collect();
        if want != output.callouts {
            failures.push(format!(
                "callouts: expected {want:?}, got {:?}",
                output.callouts
            ));
        }
    }
    if let Some(message) = expect["binding_message"].as_str() {
        if output.binding_message.as_deref() != Some(message) {
            failures.push(format!(
                "binding message: expected {message:?}, got {:?}",
                output.binding_message
            ));
        }
    }
    failures
}

#[test]
fn every_shipped_policy_case_decides_as_the_plugins_do() {
    let (ran, failures) = run_shipped(|_| {});
    assert!(ran >= 25, "{ran} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_scope_removed_from_the_policy_fails_the_cases() {
    // The trade route's scope gone: the 403 insufficient_scope case fails.
    let (_, failures) = run_shipped(|policy| {
        for route in policy["routes"].as_array_mut().unwrap() {
            if route["match"]["path"] == "/trades" {
                route.as_object_mut().unwrap().remove("scopes");
            }
        }
    });
    assert!(
        failures.iter().any(|f| f.contains("insufficient_scope")),
        "{failures:?}"
    );
}

/// Runs every shipped case, with the policy changed by `edit`: how many
/// ran, and every failure.
fn run_shipped(edit: impl Fn(&mut Value)) -> (usize, Vec<String>) {
    let key = Key::new();
    let now = 1_790_000_000;
    let mut files: Vec<PathBuf> = std::fs::read_dir(policies())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tests.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the shipped policy tests: {files:?}");
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in &files {
        let file: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut policy: Value = serde_json::from_str(
            &std::fs::read_to_string(policies().join(file["policy"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        edit(&mut policy);
        let issuer = policy["issuers"][0]["issuer"].as_str().unwrap().to_string();
        let audience = policy["issuers"][0]["audiences"][0]
            .as_str()
            .unwrap()
            .to_string();
        let mut keys = vec![key.jwk.clone()];
        keys.extend(file["jwks"].as_array().cloned().unwrap_or_default());
        for case in file["cases"].as_array().unwrap() {
            let request = &case["request"];
            let mut headers: std::collections::BTreeMap<String, String> =
                serde_json::from_value(request["headers"].clone()).unwrap_or_default();
            let token = match &case["caller"] {
                Value::Null => None,
                caller if caller["token"].is_string() => caller["token"].as_str().map(String::from),
                caller => {
                    let (iss, aud) = match caller["issuer"].as_str() {
                        None => (issuer.clone(), audience.clone()),
                        Some(wanted) => {
                            let found = policy["issuers"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .find(|i| i["issuer"] == wanted)
                                .unwrap();
                            (
                                wanted.to_string(),
                                found["audiences"][0].as_str().unwrap().to_string(),
                            )
                        }
                    };
                    Some(key.sign(caller["claims"].as_object().unwrap(), &iss, &aud, now))
                }
            };
            if let Some(token) = token {
                headers.insert("authorization".into(), format!("Bearer {token}"));
            }
            let upstream = &case["upstream"];
            let input = Input {
                policy: policy.clone(),
                plugins: plugins(&file),
                request: Request {
                    method: request["method"].as_str().unwrap_or("GET").into(),
                    path: request["path"].as_str().unwrap().into(),
                    headers,
                    body: body_text(&request["body"]),
                },
                jwks: Some(json!({ "keys": keys })),
                fga: serde_json::from_value(case["fga"].clone()).unwrap_or_default(),
                approval: serde_json::from_value(case["approval"].clone()).unwrap_or_default(),
                exchange: serde_json::from_value(case["exchange"].clone()).unwrap_or_default(),
                upstream: if upstream.is_null() {
                    Upstream::default()
                } else {
                    Upstream {
                        status: upstream["status"].as_u64().map_or(200, |s| s as u16),
                        headers: serde_json::from_value(upstream["headers"].clone())
                            .unwrap_or_default(),
                        body: body_text(&upstream["body"]),
                    }
                },
                now_ms: now * 1000,
                proof_key: None,
            };
            let output = chain::run(input);
            ran += 1;
            for failure in compare(&case["expect"], &output) {
                failures.push(format!("{}: {}: {failure}", path.display(), case["name"]));
            }
        }
    }
    (ran, failures)
}

#[test]
fn a_broken_policy_names_the_field_and_runs_nothing() {
    let policy = json!({"resource": "http://localhost", "issuers": [], "routes": [{"match": {"path": "/a"}, "scopes": 7}]});
    let problems = chain::validate(&policy, &["jwt-identity".to_string()]);
    assert!(!problems.is_empty());
    assert!(problems[0].field.starts_with("routes[0]"), "{problems:?}");
    let out = agentward_playground::run(
        &json!({
            "policy": policy, "request": {"method": "GET", "path": "/a"}, "now_ms": 0
        })
        .to_string(),
    );
    let out: Value = serde_json::from_str(&out).unwrap();
    assert!(out["errors"][0]["field"]
        .as_str()
        .unwrap()
        .starts_with("routes[0]"));
    assert!(out["response"].is_null());
}
