//! Interop: npm `openid-client` (a CIBA client nobody here wrote) completes
//! a grant against the vault, the approval taken through the page's form;
//! a second run is denied and the library reports `access_denied`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ciba_support;
mod support;

use ciba_support::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

/// Runs the client; `decide` is pressed on the page once it has started.
async fn run_client(c: &CibaVault, decision: &str) -> serde_json::Value {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    assert!(
        peers.join("node_modules/openid-client").exists(),
        "run `npm ci` in {} first",
        peers.display()
    );
    let config = serde_json::json!({
        "vault_url": c.vault.url,
        "client_id": GATEWAY_ID,
        "client_secret": GATEWAY_SECRET,
        "parameters": {
            "scope": "openid trade",
            "login_hint": serde_json::json!({"format": "iss_sub", "iss": ISSUER, "sub": "alice"}).to_string(),
            "binding_message": "Buy 50 ACME",
            "authorization_details": format!(r#"[{{"type":"{DETAILS_TYPE}","ticker":"ACME","qty":50}}]"#),
        },
    });
    let mut child = Command::new("node")
        .arg("ciba-client.mjs")
        .current_dir(&peers)
        .env("CIBA_CLIENT_CONFIG", config.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("a started line").unwrap()).unwrap();
    assert_eq!(first["started"], true, "{first}");
    assert_eq!(first["interval"], 1, "{first}");
    decide_next(c, decision).await;
    let last = tokio::task::spawn_blocking(move || {
        let line = lines.next().expect("a result line").unwrap();
        let _ = child.wait();
        line
    })
    .await
    .unwrap();
    serde_json::from_str(&last).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_completes_a_ciba_grant_and_sees_a_denial() {
    let c = CibaVault::start("ciba-openid-client").await;
    let result = run_client(&c, "approve").await;
    assert_eq!(result["token_type"], "bearer", "{result}");
    assert!(
        result["access_token"].as_str().unwrap().split('.').count() == 3,
        "{result}"
    );
    assert_eq!(
        result["authorization_details"][0]["ticker"], "ACME",
        "{result}"
    );
    let denied = run_client(&c, "deny").await;
    assert_eq!(denied["error"], "access_denied", "{denied}");
}
