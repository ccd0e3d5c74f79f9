//! End to end: the real vault binary over HTTP, a real OpenID provider
//! (oidc-provider) as the upstream, ES256 user tokens with a JWKS over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use agentward_vault::store::Store;
use agentward_vault::subject::User;
use std::time::Duration;
use support::*;

const TTL: u64 = 8;
const MARGIN: u64 = 3;

async fn wait_for_expiry() {
    tokio::time::sleep(Duration::from_secs(TTL - MARGIN + 1)).await;
}

fn connect_url_of(body: &serde_json::Value) -> String {
    body["connect_url"]
        .as_str()
        .expect("connect_url")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_vault_end_to_end_on_sqlite() {
    let dir = temp_dir("e2e");
    let issuer = TestIssuer::start().await;
    let port = free_port();
    let vault_url = format!("http://127.0.0.1:{port}");
    let upstream = Upstream::start(&[format!("{vault_url}/connect/callback")], TTL);
    let db = dir.join("vault.db");
    let mut vault = VaultProcess::start(VaultSettings {
        port,
        database_url: format!("sqlite://{}", db.display()),
        database_schema: None,
        dir: &dir,
        jwks_url: &issuer.jwks_url,
        upstream_url: &upstream.url,
        refresh_margin: MARGIN,
        name: "vault",
        ca_file: None,
    })
    .await;
    let http = http();
    let alice = issuer.token("alice", "agent-a");
    let bob = issuer.token("bob", "agent-b");
    let carol = issuer.token("carol", "agent-c");
    let mut subject_tokens = vec![alice.clone(), bob.clone(), carol.clone()];

    // Wrong client credentials.
    let r = http
        .post(format!("{vault_url}/oauth/token"))
        .basic_auth(GATEWAY_ID, Some("wrong"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &alice),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"agentward-vault\""
    );
    let (status, body) = json(r).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // A forged subject token is refused without echoing it.
    let forged = format!("{}x", &alice[..alice.len() - 1]);
    let (status, body) = json(rfc8693(&http, &vault_url, &forged).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert!(!body.to_string().contains(&forged[..40]));

    // Not linked yet: the error carries a connect link for the user.
    let (status, body) = json(rfc8693(&http, &vault_url, &alice).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "federated_connection_refresh_token_not_found"
    );
    let connect_url = connect_url_of(&body);
    assert!(
        connect_url.starts_with(&format!("{vault_url}/connect/stocktrade?ticket=")),
        "{connect_url}"
    );

    // Alice links through the ticket link (no bearer), bob and carol with their bearer token.
    let (r, callback) = link_account(&http, http.get(&connect_url), "alice-up").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let replay = http.get(callback).send().await.unwrap();
    assert_eq!(json(replay).await.0, 400, "a state is single-use");
    let (status, body) = json(http.get(&connect_url).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "a connect link is single-use: {body}"
    );

    // Mallory starts a flow and gets alice's browser to finish it (she logs
    // in at the provider): without the binding cookie her browser never
    // got, the callback refuses, and mallory's user links nothing.
    let mallory = issuer.token("mallory", "agent-m");
    let started = http
        .get(format!("{vault_url}/connect/stocktrade"))
        .bearer_auth(issuer.token_for("mallory", "agent-m", &vault_url))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 302);
    let binding = started.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        binding.starts_with("agentward_link_")
            && binding.contains("; Path=/connect/callback;")
            && binding.contains("; HttpOnly; SameSite=Lax"),
        "{binding}"
    );
    let authorize = started.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let (r, _) = link_account(&http, http.get(&authorize), "alice-up").await;
    let (status, body) = json(r).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("another browser"),
        "{body}"
    );
    let (_, body) = json(rfc8693(&http, &vault_url, &mallory).send().await.unwrap()).await;
    assert_eq!(
        body["error"],
        "federated_connection_refresh_token_not_found"
    );
    subject_tokens.push(mallory);
    // (Their tokens for the vault itself: its user endpoints take no other.)
    for (user, account) in [("bob", "bob-up"), ("carol", "carol-up")] {
        let start = http
            .get(format!("{vault_url}/connect/stocktrade"))
            .bearer_auth(issuer.token_for(user, "agent-b", &vault_url));
        let (r, _) = link_account(&http, start, account).await;
        assert_eq!(r.status(), 200);
    }
    let unauthenticated = http
        .get(format!("{vault_url}/connect/stocktrade"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(unauthenticated).await.0, 401);
    assert_eq!(upstream.grants("authorization_code").await, 3);

    // Both dialects answer with the cached upstream token; no upstream call.
    let (status, first) = json(rfc8693(&http, &vault_url, &alice).send().await.unwrap()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(first["token_type"], "Bearer");
    assert!(first["expires_in"].as_i64().unwrap() > MARGIN as i64);
    let alice_token = first["access_token"].as_str().unwrap().to_string();
    let me: serde_json::Value = http
        .get(format!("{}/me", upstream.url))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["sub"], "alice-up", "the token is alice's upstream token");
    let (status, second) = json(auth0(&http, &vault_url, &alice).send().await.unwrap()).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["issued_token_type"],
        "http://auth0.com/oauth/token-type/federated-connection-access-token"
    );
    assert_eq!(second["access_token"], alice_token.as_str());
    assert_eq!(
        upstream.grants("refresh_token").await,
        0,
        "cache hits make no upstream call"
    );

    // Carol revokes the vault's access at the upstream.
    upstream.revoke("carol-up").await;
    let local = Store::connect(&format!("sqlite://{}", db.display()), None)
        .await
        .unwrap();
    let alice_before = local
        .find_link(&User::new(ISSUER, "alice"), "stocktrade")
        .await
        .unwrap()
        .unwrap();

    wait_for_expiry().await;

    // Expired: alice refreshes once; 50 concurrent first exchanges for bob refresh once; carol's refresh is refused.
    let (status, refreshed) = json(rfc8693(&http, &vault_url, &alice).send().await.unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_ne!(refreshed["access_token"], alice_token.as_str());
    let bobs = futures_join_all((0..50).map(|i| {
        let req = if i % 2 == 0 {
            rfc8693(&http, &vault_url, &bob)
        } else {
            auth0(&http, &vault_url, &bob)
        };
        async move { json(req.send().await.unwrap()).await }
    }))
    .await;
    let first_bob = bobs[0].1["access_token"].clone();
    for (status, body) in &bobs {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["access_token"], first_bob);
    }
    assert_eq!(
        upstream.grants("refresh_token").await,
        2,
        "one refresh for alice, one for 50 bob exchanges"
    );

    let (status, body) = json(rfc8693(&http, &vault_url, &carol).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("federated_connection_refresh_token_not_found"))
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("reconnect"));
    let carol_connect = connect_url_of(&body);
    assert!(
        local
            .find_link(&User::new(ISSUER, "carol"), "stocktrade")
            .await
            .unwrap()
            .unwrap()
            .broken,
        "row kept, flagged"
    );
    let (status, _) = json(rfc8693(&http, &vault_url, &carol).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(
        upstream.refused("refresh_token").await,
        1,
        "a broken link is not retried upstream"
    );

    // The rotated refresh token replaced the old one.
    let alice_after = local
        .find_link(&User::new(ISSUER, "alice"), "stocktrade")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(alice_after.refresh, alice_before.refresh);
    assert_eq!(alice_after.version, alice_before.version + 1);

    // The next refresh spends the rotated token (the provider refuses reuse of the old one).
    wait_for_expiry().await;
    let (status, body) = json(auth0(&http, &vault_url, &alice).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.grants("refresh_token").await, 3);
    assert_eq!(upstream.refused("refresh_token").await, 1);

    // Carol reconnects through the link from the error, and exchanges again.
    let (r, _) = link_account(&http, http.get(&carol_connect), "carol-up").await;
    assert_eq!(r.status(), 200);
    let (status, body) = json(rfc8693(&http, &vault_url, &carol).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");

    // Bob unlinks: the vault forgets the link and revokes the refresh token
    // at the provider (RFC 7009), which ends the grant behind it.
    assert_eq!(upstream.live_grants("bob-up").await, 1);
    let r = http
        .delete(format!("{vault_url}/connections/stocktrade"))
        .bearer_auth(issuer.token_for("bob", "agent-b", &vault_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) = json(rfc8693(&http, &vault_url, &bob).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("federated_connection_refresh_token_not_found"))
    );
    assert_eq!(upstream.live_grants("bob-up").await, 0);
    assert_eq!(
        upstream.live_grants("alice-up").await,
        1,
        "others keep theirs"
    );

    // Metrics and audit.
    let metrics = http
        .get(format!("{vault_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "agentward_vault_exchanges_total{outcome=\"issued_refreshed\"} 3",
        "agentward_vault_exchanges_total{outcome=\"refresh_refused\"} 1",
        "agentward_vault_exchanges_total{outcome=\"link_broken\"} 1",
        "agentward_vault_refreshes_total{result=\"ok\"} 3",
        "agentward_vault_refreshes_total{result=\"refused\"} 1",
        "agentward_vault_links_total{event=\"linked\"} 4",
        "agentward_vault_links_total{event=\"unlinked\"} 1",
        "agentward_vault_links_total{event=\"revoked\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let audit = local.recent_audit(500).await.unwrap();
    assert!(audit.iter().any(|e| e.sub == "bob"
        && e.agent.as_deref() == Some("agent-b")
        && e.outcome == "issued_cached"));
    assert!(audit
        .iter()
        .any(|e| e.sub == "carol" && e.outcome == "refresh_refused"));
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.sub == "bob" && e.outcome.starts_with("issued"))
            .count(),
        50
    );

    // No token value anywhere at rest or in the logs.
    vault.stop();
    local.close().await;
    let stats = upstream.stats().await;
    let mut secrets: Vec<String> = stats["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert!(
        secrets.len() >= 9,
        "tokens recorded by the provider: {}",
        secrets.len()
    );
    secrets.append(&mut subject_tokens);
    secrets.push(GATEWAY_SECRET.to_string());
    let mut haystacks = vec![vault.log.clone()];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("vault.db")
        {
            haystacks.push(path);
        }
    }
    assert!(haystacks.len() >= 2);
    let log = std::fs::read_to_string(&vault.log).unwrap();
    assert!(log.contains("token exchange"), "the log records exchanges");
    for path in &haystacks {
        // WAL side files may vanish at the last close; what is gone holds nothing.
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a token value was found in {}",
                path.display()
            );
        }
    }

    // Key rotation: with k2 first, `--rekey` seals every row anew, after
    // which k1 is no longer in use and a keyring of k2 alone suffices.
    let new_key = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let rekey = |keys: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentward-vault"))
            .arg("--config")
            .arg(dir.join("vault.toml"))
            .arg("--rekey")
            .env("AGENTWARD_VAULT_KEY", keys)
            .env("AGENTWARD_VAULT_CLIENT_GATEWAY_SECRET", GATEWAY_SECRET)
            .env("AGENTWARD_VAULT_CLIENT_AUDITOR_SECRET", AUDITOR_SECRET)
            .env(
                "AGENTWARD_VAULT_CONNECTION_STOCKTRADE_CLIENT_SECRET",
                "vault-secret",
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let first = rekey(&format!("{new_key},{KEY}"));
    assert!(first.contains("2 link(s) sealed anew"), "{first}");
    assert!(first.trim_end().ends_with("key ids in use: k2"), "{first}");
    let second = rekey(new_key);
    assert!(
        second.contains("0 link(s) sealed anew, 0 changed meanwhile"),
        "{second}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// The provider serves HTTPS with a certificate from a private CA: the vault
/// that names the CA in `ca_file` links and exchanges; the one that does not
/// refuses the handshake, so the code never reaches the provider and nothing
/// is linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_trusted_through_ca_file_only() {
    let dir = temp_dir("tls");
    let ca = TestCa::generate(&dir);
    let issuer = TestIssuer::start().await;
    let ports = [free_port(), free_port()];
    let redirects = ports.map(|p| format!("http://127.0.0.1:{p}/connect/callback"));
    let upstream = Upstream::start_with(&redirects, TTL, Some(&ca));
    assert!(upstream.url.starts_with("https://"), "{}", upstream.url);
    let settings = |port: u16, name: &'static str| VaultSettings {
        port,
        database_url: format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
        database_schema: None,
        dir: &dir,
        jwks_url: &issuer.jwks_url,
        upstream_url: &upstream.url,
        refresh_margin: MARGIN,
        name,
        ca_file: None,
    };
    let trusting = VaultProcess::start(VaultSettings {
        ca_file: Some(&ca.ca_file),
        ..settings(ports[0], "trusting")
    })
    .await;
    let blind = VaultProcess::start(settings(ports[1], "blind")).await;
    let browser = ca.client();
    let alice = issuer.token("alice", "agent-a");

    let link = browser
        .get(format!("{}/connect/stocktrade", trusting.url))
        .bearer_auth(issuer.token_for("alice", "agent-a", &trusting.url));
    let (r, _) = link_account(&browser, link, "alice-up").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let (status, body) = json(
        rfc8693(&browser, &trusting.url, &alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.grants("authorization_code").await, 1);

    let link = browser
        .get(format!("{}/connect/stocktrade", blind.url))
        .bearer_auth(issuer.token_for("alice", "agent-a", &blind.url));
    let (r, _) = link_account(&browser, link, "alice-up").await;
    let (status, body) = json(r).await;
    assert!(status >= 500, "{status} {body}");
    assert_eq!(
        upstream.grants("authorization_code").await,
        1,
        "no code was redeemed through an unverified connection"
    );
    let (status, body) = json(rfc8693(&browser, &blind.url, &alice).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("federated_connection_refresh_token_not_found")),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
