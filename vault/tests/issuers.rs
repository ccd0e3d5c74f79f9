//! Two trusted issuers may name the same `sub` for two different people
//! (OpenID Connect Core §2: a `sub` is unique only within its issuer). The
//! vault keys every user by (issuer, subject): the same `sub` from another
//! issuer is someone else, for exchanges, unlinking and the audit trail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;
use support::*;

const NOT_LINKED: &str = "federated_connection_refresh_token_not_found";

fn unlink(http: &reqwest::Client, vault: &str, token: &str) -> reqwest::RequestBuilder {
    http.delete(format!("{vault}/connections/stocktrade"))
        .bearer_auth(token)
}

/// Every audit row `token`'s user reads, once the writer has written at
/// least `at_least` of them.
async fn own_audit_rows(
    http: &reqwest::Client,
    vault: &str,
    token: &str,
    at_least: usize,
) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for _ in 0..100 {
        let r = http
            .get(format!("{vault}/audit"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let (status, body) = json(r).await;
        assert_eq!(status, 200, "{body}");
        rows = body["entries"].as_array().unwrap().clone();
        if rows.len() >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_sub_from_another_issuer_is_another_user() {
    let dir = temp_dir("issuers");
    let idp_a = TestIssuer::start().await;
    let idp_b = TestIssuer::start_as(OTHER_ISSUER).await;
    let port = free_port();
    let vault_url = format!("http://127.0.0.1:{port}");
    let upstream = Upstream::start(&[format!("{vault_url}/connect/callback")], 3600);
    let mut vault = VaultProcess::start_with(
        VaultSettings {
            port,
            database_url: format!("sqlite://{}", dir.join("vault.db").display()),
            database_schema: None,
            dir: &dir,
            jwks_url: &idp_a.jwks_url,
            upstream_url: &upstream.url,
            refresh_margin: 3,
            name: "vault",
            ca_file: None,
        },
        "",
        &idp_b.config(),
    )
    .await;
    let http = http();
    let alice_a = idp_a.token("alice", "agent-a");
    let alice_b = idp_b.token("alice", "agent-b");
    // Their tokens for the vault itself, for its user endpoints.
    let alice_a_at_vault = idp_a.token_for("alice", "agent-a", &vault_url);
    let alice_b_at_vault = idp_b.token_for("alice", "agent-b", &vault_url);

    // alice at issuer A links her broker account and is served.
    let (r, _) = link_account(
        &http,
        http.get(format!("{vault_url}/connect/stocktrade"))
            .bearer_auth(&alice_a_at_vault),
        "alice-up",
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let (status, body) = json(rfc8693(&http, &vault_url, &alice_a).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let token_a = body["access_token"].as_str().unwrap().to_string();

    // "alice" at issuer B is not her: no token (neither from the in-memory
    // cache A's exchange just filled, nor from the database), in either
    // dialect, but a connect link of her own.
    for request in [
        rfc8693(&http, &vault_url, &alice_b),
        auth0(&http, &vault_url, &alice_b),
    ] {
        let (status, body) = json(request.send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(NOT_LINKED)),
            "{body}"
        );
        assert!(body.get("access_token").is_none(), "{body}");
        assert!(!body.to_string().contains(&token_a));
    }
    let (_, body) = json(rfc8693(&http, &vault_url, &alice_b).send().await.unwrap()).await;
    let connect_b = body["connect_url"].as_str().unwrap().to_string();

    // B's alice cannot unlink A's alice.
    let (status, body) = json(
        unlink(&http, &vault_url, &alice_b_at_vault)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = json(rfc8693(&http, &vault_url, &alice_a).send().await.unwrap()).await;
    assert_eq!(status, 200, "A's link survives: {body}");

    // B's alice links her own account through her connect link: each is
    // served their own token.
    let (r, _) = link_account(&http, http.get(&connect_b), "alice-b-up").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let (status, body) = json(rfc8693(&http, &vault_url, &alice_b).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["access_token"].as_str().unwrap(), token_a);
    let (_, body) = json(rfc8693(&http, &vault_url, &alice_a).send().await.unwrap()).await;
    assert_eq!(body["access_token"].as_str().unwrap(), token_a);

    // Each reads only their own audit rows, which name their issuer.
    // A: linked + 3 exchanges; B: 3 refused exchanges + linked + 1 served.
    let rows_a = own_audit_rows(&http, &vault_url, &alice_a_at_vault, 4).await;
    let rows_b = own_audit_rows(&http, &vault_url, &alice_b_at_vault, 5).await;
    assert_eq!(
        (rows_a.len(), rows_b.len()),
        (4, 5),
        "{rows_a:?} {rows_b:?}"
    );
    assert!(rows_a
        .iter()
        .all(|e| e["issuer"] == ISSUER && e["sub"] == "alice"));
    assert!(rows_b
        .iter()
        .all(|e| e["issuer"] == OTHER_ISSUER && e["sub"] == "alice"));
    let (status, body) = json(
        http.get(format!("{vault_url}/audit?issuer={ISSUER}"))
            .bearer_auth(&alice_b_at_vault)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("access_denied")),
        "{body}"
    );
    // The audit reader filters by issuer and subject.
    let as_auditor = |query: &str| {
        http.get(format!("{vault_url}/audit{query}"))
            .basic_auth(AUDITOR_ID, Some(AUDITOR_SECRET))
    };
    let query = serde_urlencoded::to_string([("issuer", OTHER_ISSUER), ("sub", "alice")]).unwrap();
    let (status, body) = json(as_auditor(&format!("?{query}")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"].as_array().unwrap().len(), 5, "{body}");
    let (_, body) = json(as_auditor("?sub=alice").send().await.unwrap()).await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 9, "{body}");

    // B's unlink removes B's link only.
    assert_eq!(
        unlink(&http, &vault_url, &alice_b_at_vault)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (status, body) = json(rfc8693(&http, &vault_url, &alice_b).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some(NOT_LINKED)),
        "{body}"
    );
    let (status, body) = json(rfc8693(&http, &vault_url, &alice_a).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"].as_str().unwrap(), token_a);

    vault.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
