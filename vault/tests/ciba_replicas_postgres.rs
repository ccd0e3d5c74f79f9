//! Two vault processes on one PostgreSQL schema as one CIBA authority: they
//! sign with one key, a decision taken at replica A answers a long-poll
//! held by replica B (the `NOTIFY` reaches B), and a token is issued once
//! however many polls race on both, as a link decides once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ciba_support;
mod support;

use ciba_support::*;
use sha2::{Digest as _, Sha256};
use std::time::Duration;
use support::*;

async fn reachable_postgres() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("AGENTWARD_VAULT_TEST_DATABASE_URL") {
        Ok(url) => vec![url],
        Err(_) => vec![
            "postgres://postgres@127.0.0.1:5432/test".into(),
            "postgres://root@127.0.0.1:5432/test".into(),
        ],
    };
    for url in &candidates {
        if sqlx::PgPool::connect(url).await.is_ok() {
            return Some(url.clone());
        }
    }
    eprintln!("SKIPPED: no PostgreSQL answers at {candidates:?}");
    None
}

/// Waits (bounded) until `log` holds a line with every one of `parts`.
async fn log_line(log: &std::path::Path, parts: &[&str]) {
    for _ in 0..150 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no log line with {parts:?} in {}", log.display());
}

fn request_hash(auth_req_id: &str) -> String {
    Sha256::digest(auth_req_id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_are_one_ciba_authority() {
    let Some(database_url) = reachable_postgres().await else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("vault_ciba_{}_{nanos}", std::process::id());
    let dir = temp_dir("ciba-replicas");
    let issuer = TestIssuer::start().await;
    let phone = Phone::start(0).await;
    let tables = ciba_tables(Some(&phone.url), "");
    let start = |name| {
        VaultProcess::start_with(
            VaultSettings {
                port: free_port(),
                database_url: database_url.clone(),
                database_schema: Some(schema.clone()),
                dir: &dir,
                jwks_url: &issuer.jwks_url,
                upstream_url: "http://127.0.0.1:9",
                refresh_margin: 30,
                name,
                ca_file: None,
            },
            "",
            &tables,
        )
    };
    let (a, b) = tokio::join!(start("vault-a"), start("vault-b"));
    let http = http();
    let jwks = |url: String| {
        let http = http.clone();
        async move {
            http.get(format!("{url}/.well-known/jwks.json"))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        jwks(a.url.clone()).await,
        jwks(b.url.clone()).await,
        "one signing key for both"
    );

    // Asked at A; B holds the gateway's long-poll; the user decides at A.
    let ask = |vault: &str| {
        let http = http.clone();
        let url = vault.to_string();
        async move {
            let (status, body) = json(
                bc_authorize(&http, &url, &alice_params(&[]))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["auth_req_id"].as_str().unwrap().to_string()
        }
    };
    let id = ask(&a.url).await;
    let held = {
        let (http, url, id) = (http.clone(), b.url.clone(), id.clone());
        tokio::spawn(async move {
            json(
                poll_as(&http, &url, (GATEWAY_ID, GATEWAY_SECRET), &id, Some(15))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        })
    };
    let hash = request_hash(&id);
    log_line(&b.log, &["CIBA long-poll waiting", &hash]).await;
    let link = phone.next().await.json["approval_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(link.starts_with(&a.url));
    let page = ApprovalPage::open(&http, &link).await;
    let (status, html) = page.press(&http, "approve").await;
    assert_eq!(status, 200, "{html}");
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 200, "B's held poll answers the token: {body}");
    log_line(&b.log, &["CIBA decision notice", &hash]).await;
    let (status, body) = json(
        poll_as(&http, &a.url, (GATEWAY_ID, GATEWAY_SECRET), &id, None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "invalid_grant")
    );

    // A second request: its page posted at both replicas at once decides
    // once; polls racing on both get one token.
    let id = ask(&b.url).await;
    let link = phone.next().await.json["approval_url"]
        .as_str()
        .unwrap()
        .to_string();
    let page = ApprovalPage::open(&http, &link).await;
    let at_b = ApprovalPage {
        action: format!("{}/ciba/approve", b.url),
        ..page.clone()
    };
    let at_a = ApprovalPage {
        action: format!("{}/ciba/approve", a.url),
        ..page.clone()
    };
    let (ra, rb) = tokio::join!(at_a.press(&http, "approve"), at_b.press(&http, "approve"));
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{ra:?} {rb:?}");
    let mut polls = Vec::new();
    for i in 0..8 {
        let url = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let (http, id) = (http.clone(), id.clone());
        polls.push(tokio::spawn(async move {
            json(
                poll_as(&http, &url, (GATEWAY_ID, GATEWAY_SECRET), &id, None)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }));
    }
    let mut issued = 0;
    for p in polls {
        let (status, body) = p.await.unwrap();
        match status {
            200 => issued += 1,
            _ => assert_eq!(body["error"], "invalid_grant", "{body}"),
        }
    }
    assert_eq!(issued, 1, "one token across both replicas");
}
