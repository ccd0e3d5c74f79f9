//! Two vault processes on one PostgreSQL database serve the same user, and
//! concurrent exchanges across both refresh upstream exactly once; an unlink
//! at one reaches the other's cache at once; a connect link confirmed at
//! both at once starts linking once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;
use support::*;

const TTL: u64 = 8;
const MARGIN: u64 = 3;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_postgres() {
    let Some(database_url) = reachable_postgres().await else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("vault_e2e_{}_{nanos}", std::process::id());
    let dir = temp_dir("replicas");
    let issuer = TestIssuer::start().await;
    let (port_a, port_b) = (free_port(), free_port());
    let redirects = [port_a, port_b].map(|p| format!("http://127.0.0.1:{p}/connect/callback"));
    let mut upstream = Upstream::start(&redirects, TTL);
    let start = |port, name| {
        VaultProcess::start(VaultSettings {
            port,
            database_url: database_url.clone(),
            database_schema: Some(schema.clone()),
            dir: &dir,
            jwks_url: &issuer.jwks_url,
            upstream_url: &upstream.url,
            refresh_margin: MARGIN,
            name,
            ca_file: None,
        })
    };
    let (a, b) = tokio::join!(start(port_a, "vault-a"), start(port_b, "vault-b"));
    let http = http();
    let alice = issuer.token("alice", "agent-a");

    // Linked through replica A, served by replica B.
    let (r, _) = link_account(
        &http,
        http.get(format!("{}/connect/stocktrade", a.url))
            .bearer_auth(issuer.token_for("alice", "agent-a", &a.url)),
        "alice-up",
    )
    .await;
    assert_eq!(r.status(), 200);
    let (status, body) = json(rfc8693(&http, &b.url, &alice).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.grants("refresh_token").await, 0);

    tokio::time::sleep(Duration::from_secs(TTL - MARGIN + 1)).await;

    // 25 exchanges on each replica at once: one upstream refresh in all.
    let mut handles = Vec::new();
    for i in 0..50 {
        let vault = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let req = if i % 4 < 2 {
            rfc8693(&http, &vault, &alice)
        } else {
            auth0(&http, &vault, &alice)
        };
        handles.push(tokio::spawn(async move {
            json(req.send().await.unwrap()).await
        }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    for h in handles {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 200, "{body}");
        tokens.insert(body["access_token"].as_str().unwrap().to_string());
    }
    assert_eq!(tokens.len(), 1, "every caller got the one refreshed token");
    assert_ne!(
        tokens.first().map(String::as_str),
        body["access_token"].as_str()
    );
    assert_eq!(
        upstream.grants("refresh_token").await,
        1,
        "replicas spent the refresh token once"
    );
    assert_eq!(upstream.refused("refresh_token").await, 0);

    // Unlinked at replica A: replica B drops its cached copy on A's notice,
    // well before its cache's own few seconds run out.
    let ivan = issuer.token("ivan", "agent-i");
    let (r, _) = link_account(
        &http,
        http.get(format!("{}/connect/stocktrade", a.url))
            .bearer_auth(issuer.token_for("ivan", "agent-i", &a.url)),
        "ivan-up",
    )
    .await;
    assert_eq!(r.status(), 200);
    for vault in [&a.url, &b.url] {
        let (status, body) = json(rfc8693(&http, vault, &ivan).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
    }
    let r = http
        .delete(format!("{}/connections/stocktrade", a.url))
        .bearer_auth(issuer.token_for("ivan", "agent-i", &a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let unlinked = std::time::Instant::now();
    loop {
        let (status, body) = json(rfc8693(&http, &b.url, &ivan).send().await.unwrap()).await;
        if status == 400 {
            assert!(body["connect_url"].is_string(), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            unlinked.elapsed() < Duration::from_secs(2),
            "replica B still serves an unlinked account after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Upstream down and the cached token stale: 503, link kept intact.
    upstream.stop();
    tokio::time::sleep(Duration::from_secs(TTL - MARGIN + 1)).await;
    let (status, body) = json(rfc8693(&http, &b.url, &alice).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );

    // A connect link confirmed at both replicas at once starts linking once.
    for user in ["dave", "erin", "frank", "grace", "heidi"] {
        let token = issuer.token(user, "agent-d");
        let (status, body) = json(rfc8693(&http, &a.url, &token).send().await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        let link = body["connect_url"].as_str().unwrap().to_string();
        let page = Confirmation::read(http.get(&link).send().await.unwrap(), String::new()).await;
        let path = page.action.strip_prefix(&a.url).unwrap().to_string();
        let confirms: Vec<_> = (0..6)
            .map(|i| {
                let url = format!("{}{path}", if i % 2 == 0 { &a.url } else { &b.url });
                let request = Confirmation {
                    action: url,
                    ..page.clone()
                }
                .submit(&http, "allow");
                tokio::spawn(async move { request.send().await.unwrap() })
            })
            .collect();
        let mut statuses = Vec::new();
        for confirm in confirms {
            let r = confirm.await.unwrap();
            let status = r.status().as_u16();
            if status == 401 {
                let (_, body) = json(r).await;
                assert_eq!(
                    body["error_description"],
                    "the connect link was already used; ask for a new one"
                );
            }
            statuses.push(status);
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [303, 401, 401, 401, 401, 401], "{user}");
    }

    drop((a, b));
    let admin = sqlx::PgPool::connect(&database_url).await.unwrap();
    let broken: i64 = sqlx::query_scalar(&format!(
        "SELECT broken FROM \"{schema}\".links WHERE sub = 'alice'"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(broken, 0, "an unreachable upstream does not break the link");
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
