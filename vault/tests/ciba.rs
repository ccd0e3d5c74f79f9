//! The vault as a CIBA authority, over HTTP against the real binary: every
//! error of `/bc-authorize` and of the CIBA grant, the approval page (CSRF,
//! escaping, a GET never decides), long-poll, the signed webhook, the
//! token's claims against the JWKS, and the audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ciba_support;
mod support;

use ciba_support::*;
use jwt_simple::prelude::*;
use support::*;

#[tokio::test]
async fn discovery_and_jwks_describe_the_ciba_authority() {
    let c = CibaVault::start("ciba-discovery").await;
    let meta: serde_json::Value = c
        .http
        .get(format!("{}/.well-known/openid-configuration", c.vault.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = &c.vault.url;
    assert_eq!(meta["issuer"], format!("{url}/"));
    assert_eq!(
        meta["backchannel_authentication_endpoint"],
        format!("{url}/bc-authorize")
    );
    assert_eq!(meta["token_endpoint"], format!("{url}/oauth/token"));
    assert_eq!(
        meta["introspection_endpoint"],
        format!("{url}/oauth/introspect")
    );
    assert_eq!(meta["jwks_uri"], format!("{url}/.well-known/jwks.json"));
    assert_eq!(
        meta["backchannel_token_delivery_modes_supported"],
        serde_json::json!(["poll"])
    );
    assert_eq!(meta["backchannel_user_code_parameter_supported"], false);
    assert_eq!(
        meta["authorization_details_types_supported"],
        serde_json::json!([DETAILS_TYPE])
    );
    let jwks: serde_json::Value = c
        .http
        .get(format!("{url}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");
}

#[tokio::test]
async fn bc_authorize_refuses_every_bad_request_with_the_error_the_spec_names() {
    let c = CibaVault::start("ciba-errors").await;
    let url = &c.vault.url;
    let too_long = "x".repeat(65);
    let big_details = format!(
        r#"[{{"type":"{DETAILS_TYPE}","pad":"{}"}}]"#,
        "y".repeat(5000)
    );
    let forged = c.issuer.token("alice", "agent").replace('.', "x.");
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (alice_params(&[("scope", "")]), 400, "invalid_request"),
        (alice_params(&[("scope", "trade")]), 400, "invalid_scope"),
        (
            alice_params(&[("scope", "openid admin")]),
            400,
            "invalid_scope",
        ),
        (alice_params(&[("login_hint", "")]), 400, "invalid_request"),
        (
            alice_params(&[("id_token_hint", "x.y.z")]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[("login_hint", ""), ("id_token_hint", &forged)]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[("login_hint_token", "x")]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[("user_code", "1234")]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[(
                "login_hint",
                r#"{"format":"iss_sub","iss":"https://evil/","sub":"alice"}"#,
            )]),
            400,
            "unknown_user_id",
        ),
        (
            alice_params(&[("login_hint", r#"{"format":"email","email":"a@b"}"#)]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[("binding_message", "")]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[("binding_message", "<b>Buy</b>")]),
            400,
            "invalid_binding_message",
        ),
        (
            alice_params(&[("binding_message", &too_long)]),
            400,
            "invalid_binding_message",
        ),
        (
            alice_params(&[("requested_expiry", "0")]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[("requested_expiry", "601")]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[("requested_expiry", "soon")]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[("authorization_details", "{")]),
            400,
            "invalid_authorization_details",
        ),
        (
            alice_params(&[("authorization_details", r#"[{"type":"payment"}]"#)]),
            400,
            "invalid_authorization_details",
        ),
        (
            alice_params(&[("authorization_details", &big_details)]),
            400,
            "invalid_authorization_details",
        ),
        (
            alice_params(&[("audience", "https://elsewhere")]),
            400,
            "invalid_request",
        ),
        (
            alice_params(&[("request_digest", "has spaces")]),
            400,
            "invalid_request",
        ),
    ];
    for (params, status, error) in cases {
        let (got, body) = json(bc_authorize(&c.http, url, &params).send().await.unwrap()).await;
        assert_eq!(
            (got, body["error"].as_str().unwrap_or("")),
            (status, error),
            "{params:?}: {body}"
        );
        assert!(body["error_description"].is_string(), "{body}");
    }
    // A repeated parameter.
    let mut repeated = alice_params(&[]);
    repeated.push(("scope", "openid"));
    let (got, body) = json(bc_authorize(&c.http, url, &repeated).send().await.unwrap()).await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (400, "invalid_request")
    );
    // Client authentication, as at /oauth/token.
    let (got, body) = json(
        c.http
            .post(format!("{url}/bc-authorize"))
            .form(&alice_params(&[]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (401, "invalid_client")
    );
    let (got, body) = json(
        c.http
            .post(format!("{url}/bc-authorize"))
            .basic_auth(GATEWAY_ID, Some("wrong"))
            .form(&alice_params(&[]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (401, "invalid_client")
    );
    // An authenticated client that is not a CIBA client.
    let (got, body) = json(
        c.http
            .post(format!("{url}/bc-authorize"))
            .basic_auth(AUDITOR_ID, Some(AUDITOR_SECRET))
            .form(&alice_params(&[]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (got, body["error"].as_str().unwrap()),
        (400, "unauthorized_client")
    );
    // A user token as id_token_hint names the user.
    let hint = c.issuer.token("alice", "agent");
    let r = bc_authorize(
        &c.http,
        url,
        &alice_params(&[("login_hint", ""), ("id_token_hint", &hint)]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    // None of it was stored for the refused ones: one notification.
    let n = c.phone().next().await;
    assert_eq!(n.json["user"]["sub"], "alice");
}

#[tokio::test]
async fn too_many_waiting_requests_for_one_user_are_access_denied() {
    let c = CibaVault::start_with("ciba-cap", Some(0), "max_pending_per_user = 2").await;
    start_request(&c, &[]).await;
    start_request(&c, &[]).await;
    let (status, body) = json(
        bc_authorize(&c.http, &c.vault.url, &alice_params(&[]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "access_denied"),
        "{body}"
    );
    // Another user is not held up by alice's.
    let bob = alice_params(&[("login_hint", "bob")]);
    assert_eq!(
        bc_authorize(&c.http, &c.vault.url, &bob)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

fn verify_token(jwks: &serde_json::Value, token: &str) -> JWTClaims<serde_json::Value> {
    use base64::Engine as _;
    let key = &jwks["keys"][0];
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut point = vec![4u8];
    point.extend(b64.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(b64.decode(key["y"].as_str().unwrap()).unwrap());
    let public = ES256PublicKey::from_bytes(&point).unwrap();
    let options = VerificationOptions {
        allowed_audiences: Some(HashSet::from_strings(&[RESOURCE])),
        ..Default::default()
    };
    public
        .verify_token::<serde_json::Value>(token, Some(options))
        .unwrap()
}

#[tokio::test]
async fn an_approved_request_yields_one_token_naming_user_client_details_and_digest() {
    let c = CibaVault::start("ciba-approve").await;
    let id = start_request(&c, &[]).await;
    assert!(id.len() >= 43, "≥ 256 bits: {id}");
    let (status, body) = poll(&c, &id, None).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "authorization_pending")
    );

    let (link, note) = approval_link(&c).await;
    assert_eq!(note["binding_message"], "Buy 50 ACME");
    assert_eq!(note["client_id"], GATEWAY_ID);
    assert_eq!(note["agent_id"], "trading-agent");
    assert_eq!(
        note["user"],
        serde_json::json!({"iss": ISSUER, "sub": "alice"})
    );
    assert_eq!(note["authorization_details"][0]["ticker"], "ACME");
    assert!(!link.contains(&id), "the link is not the auth_req_id");

    let page = ApprovalPage::open(&c.http, &link).await;
    assert_eq!(page.status, 200);
    for shown in [
        "Buy 50 ACME",
        "trading-agent",
        "alice",
        ISSUER,
        "ACME",
        "<dt>qty</dt><dd>50</dd>",
        "Approve",
        "Deny",
    ] {
        assert!(page.html.contains(shown), "{shown} not on {}", page.html);
    }
    let (status, html) = page.press(&c.http, "approve").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("You approved"), "{html}");

    // The long-poll returns at once: the decision is already stored.
    let (status, answer) = poll(&c, &id, Some(5)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["authorization_details"][0]["qty"], 50);
    let jwks: serde_json::Value = c
        .http
        .get(format!("{}/.well-known/jwks.json", c.vault.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = verify_token(&jwks, answer["access_token"].as_str().unwrap());
    assert_eq!(
        claims.issuer.as_deref(),
        Some(format!("{}/", c.vault.url).as_str())
    );
    assert_eq!(claims.subject.as_deref(), Some("alice"));
    assert!(claims.jwt_id.is_some());
    let custom = &claims.custom;
    assert_eq!(
        custom["sub_id"],
        serde_json::json!({"format": "iss_sub", "iss": ISSUER, "sub": "alice"})
    );
    assert_eq!(custom["azp"], GATEWAY_ID);
    assert_eq!(custom["client_id"], GATEWAY_ID);
    assert_eq!(custom["agent_id"], "trading-agent");
    assert_eq!(custom["request_digest"], "sha-256:3q2-7w");
    assert_eq!(custom["binding_message"], "Buy 50 ACME");
    assert_eq!(custom["authorization_details"][0]["side"], "buy");

    // Issued once: a replay, even with a long-poll, is invalid_grant.
    let (status, body) = poll(&c, &id, Some(2)).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "invalid_grant")
    );
    // The link decides nothing any more.
    let (status, html) = page.press(&c.http, "deny").await;
    assert_eq!(status, 409, "{html}");

    // The API that receives the token introspects it (RFC 7662): the first
    // answer uses it up ("token used" in the audit trail), the same token
    // again is inactive, and so is anything that is not this vault's token.
    let token = answer["access_token"].as_str().unwrap();
    let introspect = |token: String, auth: bool| {
        let mut r = c
            .http
            .post(format!("{}/oauth/introspect", c.vault.url))
            .form(&[("token", token)]);
        if auth {
            r = r.basic_auth(GATEWAY_ID, Some(GATEWAY_SECRET));
        }
        async move {
            let r = r.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (status, body) = introspect(token.to_string(), false).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (status, body) = introspect(forged, true).await;
    assert_eq!((status, body), (200, serde_json::json!({"active": false})));
    let (status, body) = introspect(token.to_string(), true).await;
    assert_eq!(
        (status, body["active"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["client_id"], GATEWAY_ID);
    assert_eq!(body["agent_id"], "trading-agent");
    assert_eq!(body["request_digest"], "sha-256:3q2-7w");
    assert_eq!(body["authorization_details"][0]["ticker"], "ACME");
    let (_, body) = introspect(token.to_string(), true).await;
    assert_eq!(body, serde_json::json!({"active": false}), "used once");

    // The audit trail, as alice reads it.
    let alice = c.issuer.token_for("alice", "agent", &c.vault.url);
    let mut outcomes = Vec::new();
    for _ in 0..50 {
        let rows: serde_json::Value = c
            .http
            .get(format!("{}/audit?connection=ciba", c.vault.url))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        outcomes = rows["entries"]
            .as_array()
            .or(rows.as_array())
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        if outcomes.len() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for step in [
        "ciba_requested",
        "ciba_notified",
        "ciba_approved",
        "ciba_token_issued",
        "ciba_replayed",
        "ciba_token_used",
    ] {
        assert!(
            outcomes.iter().any(|o| o == step),
            "{step} not in {outcomes:?}"
        );
    }
    let metrics = c
        .http
        .get(format!("{}/metrics", c.vault.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("agentward_vault_ciba_total{event=\"requested\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentward_vault_ciba_total{event=\"token_issued\"} 1"),
        "{metrics}"
    );
    // No secret in the database or the log.
    let log = c.log();
    let token = answer["access_token"].as_str().unwrap();
    let ticket = link.split("ticket=").nth(1).unwrap();
    let db = std::fs::read(c.dir.join("vault.db")).unwrap_or_default();
    let wal = std::fs::read(c.dir.join("vault.db-wal")).unwrap_or_default();
    for secret in [id.as_str(), token, ticket, GATEWAY_SECRET, HOOK_SECRET] {
        assert!(!log.contains(secret), "log holds a secret");
        let bytes = secret.as_bytes();
        for file in [&db, &wal] {
            assert!(
                !file.windows(bytes.len()).any(|w| w == bytes),
                "database holds a secret"
            );
        }
    }
}

#[tokio::test]
async fn polling_faster_than_the_interval_gets_slow_down_and_a_longer_interval() {
    let c = CibaVault::start("ciba-slow").await;
    let id = start_request(&c, &[]).await;
    let (_, first) = poll(&c, &id, None).await;
    assert_eq!(first["error"], "authorization_pending");
    let (status, second) = poll(&c, &id, None).await;
    assert_eq!(
        (status, second["error"].as_str().unwrap()),
        (400, "slow_down")
    );
    // The interval is now 6 s: a poll 1.5 s later is still too fast.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (_, third) = poll(&c, &id, None).await;
    assert_eq!(third["error"], "slow_down", "{third}");
}

#[tokio::test]
async fn a_denied_request_answers_access_denied() {
    let c = CibaVault::start("ciba-deny").await;
    let id = start_request(&c, &[]).await;
    decide_next(&c, "deny").await;
    let (status, body) = poll(&c, &id, None).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "access_denied")
    );
}

#[tokio::test]
async fn an_expired_request_answers_expired_token_and_its_page_decides_nothing() {
    let c = CibaVault::start("ciba-expiry").await;
    let id = start_request(&c, &[("requested_expiry", "1")]).await;
    let (link, _) = approval_link(&c).await;
    let page = ApprovalPage::open(&c.http, &link).await;
    assert_eq!(page.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) = poll(&c, &id, None).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "expired_token")
    );
    let (status, html) = page.press(&c.http, "approve").await;
    assert_eq!(status, 410, "{html}");
    let (status, body) = poll(&c, &id, None).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "expired_token")
    );
    assert_eq!(ApprovalPage::open(&c.http, &link).await.status, 410);
}

#[tokio::test]
async fn another_client_cannot_use_the_auth_req_id_and_a_forged_one_is_invalid_grant() {
    let c = CibaVault::start("ciba-other").await;
    let id = start_request(&c, &[]).await;
    decide_next(&c, "approve").await;
    let other = poll_as(&c.http, &c.vault.url, (OTHER_ID, OTHER_SECRET), &id, None);
    let (status, body) = json(other.send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "invalid_grant"),
        "{body}"
    );
    let (status, body) = poll(&c, "A".repeat(43).as_str(), None).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "invalid_grant")
    );
    let (status, body) = poll(&c, "short", None).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "invalid_grant")
    );
    let (status, body) = poll(&c, &id, Some(99)).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "invalid_request"),
        "wait above the bound"
    );
    // Wrong client credentials at the token endpoint.
    let wrong = poll_as(&c.http, &c.vault.url, (GATEWAY_ID, "nope"), &id, None);
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    // The owner still gets its token.
    let (status, body) = poll(&c, &id, None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn only_the_pages_form_in_the_users_browser_decides() {
    let c = CibaVault::start("ciba-csrf").await;
    let id = start_request(&c, &[]).await;
    let (link, _) = approval_link(&c).await;
    // Opening the link (twice, as a preview and the user) decides nothing.
    let preview = ApprovalPage::open(&c.http, &link).await;
    let page = ApprovalPage::open(&c.http, &link).await;
    assert_eq!((preview.status, page.status), (200, 200));
    // The page's path alone (the `approval_url` an MCP client shows) sends
    // the user to their device and has no form; a made-up ticket is refused.
    let bare = link.split('?').next().unwrap().to_string();
    let r = c.http.get(&bare).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("sent to you") && !html.contains("<form"),
        "{html}"
    );
    let r = c
        .http
        .get(format!("{bare}?ticket={}", "A".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, body) = poll(&c, &id, None).await;
    assert_eq!(body["error"], "authorization_pending");

    let forged = "A".repeat(43);
    for (csrf, cookie, site) in [
        (page.csrf_token.as_str(), None, None),
        (forged.as_str(), Some(page.cookie.as_str()), None),
        (
            preview.csrf_token.as_str(),
            Some(page.cookie.as_str()),
            None,
        ),
        (
            page.csrf_token.as_str(),
            Some(page.cookie.as_str()),
            Some("cross-site"),
        ),
    ] {
        let (status, html) = page.post(&c.http, csrf, cookie, "approve", site).await;
        assert_eq!(status, 403, "{html}");
    }
    // The gateway's credentials and the auth_req_id decide nothing either.
    let r = c
        .http
        .post(&page.action)
        .basic_auth(GATEWAY_ID, Some(GATEWAY_SECRET))
        .form(&[
            ("ticket", id.as_str()),
            ("csrf_token", ""),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, body) = poll(&c, &id, None).await;
    assert_eq!(body["error"], "authorization_pending", "still undecided");

    let (status, html) = page.press(&c.http, "approve").await;
    assert_eq!(status, 200, "{html}");
    let (status, _) = page.press(&c.http, "approve").await;
    assert_eq!(status, 409, "the link decides once");
    let (status, body) = poll(&c, &id, None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn html_in_details_and_agent_shows_as_text() {
    let c = CibaVault::start("ciba-xss").await;
    let details = format!(
        r#"[{{"type":"{DETAILS_TYPE}","note":"<script>alert('x')</script>","<img src=x>":"\"><b>"}}]"#
    );
    start_request(
        &c,
        &[
            ("authorization_details", &details),
            ("agent_id", "<svg onload=alert(1)>"),
        ],
    )
    .await;
    let (link, _) = approval_link(&c).await;
    let page = ApprovalPage::open(&c.http, &link).await;
    assert_eq!(page.status, 200);
    for raw in ["<script>", "<img", "<svg", "\"><b>"] {
        assert!(!page.html.contains(raw), "{raw} unescaped in {}", page.html);
    }
    assert!(page
        .html
        .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(page.html.contains("&lt;svg onload=alert(1)&gt;"));
    assert!(page.html.contains("&quot;&gt;&lt;b&gt;"));
    let r = c.http.get(&link).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn a_long_poll_returns_when_the_user_decides() {
    let c = CibaVault::start("ciba-longpoll").await;
    let id = start_request(&c, &[]).await;
    let http = c.http.clone();
    let url = c.vault.url.clone();
    let id2 = id.clone();
    let held = tokio::spawn(async move {
        json(
            poll_as(&http, &url, (GATEWAY_ID, GATEWAY_SECRET), &id2, Some(15))
                .send()
                .await
                .unwrap(),
        )
        .await
    });
    decide_next(&c, "approve").await;
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 200, "the held poll answers the token: {body}");
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn webhook_notifications_are_signed_and_retried() {
    let c = CibaVault::start_with("ciba-webhook", Some(1), "").await;
    start_request(&c, &[]).await;
    let n = c.phone().next().await;
    assert_eq!(
        *c.phone().attempts.lock().unwrap(),
        2,
        "the failed delivery was retried"
    );
    let expected = {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
        mac.update(&n.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256={hex}")
    };
    assert_eq!(n.signature.as_deref(), Some(expected.as_str()));
    assert_eq!(n.json["type"], "ciba_approval_requested");
    assert!(n.json["approval_url"]
        .as_str()
        .unwrap()
        .contains("/ciba/approve?ticket="));
    assert!(n.json["expires_at"].is_i64());
}

#[tokio::test]
async fn the_log_notifier_prints_the_link_for_development_and_no_secret() {
    let c = CibaVault::start_with("ciba-log", None, "").await;
    let id = start_request(&c, &[]).await;
    let mut link = None;
    for _ in 0..50 {
        let log = c.log();
        if let Some(line) = log.lines().find(|l| l.contains("log notifier")) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            link = v["fields"]["approval_url"].as_str().map(str::to_string);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let link = link.expect("the link is logged");
    let page = ApprovalPage::open(&c.http, &link).await;
    page.press(&c.http, "approve").await;
    let (status, answer) = poll(&c, &id, None).await;
    assert_eq!(status, 200, "{answer}");
    let log = c.log();
    for secret in [
        id.as_str(),
        answer["access_token"].as_str().unwrap(),
        GATEWAY_SECRET,
    ] {
        assert!(!log.contains(secret), "log holds a secret");
    }
}

#[tokio::test]
async fn a_bad_ciba_section_stops_the_vault_naming_the_field() {
    let issuer = TestIssuer::start().await;
    let dir = temp_dir("ciba-bad-config");
    for (section, field) in [
        ("[ciba]\nclients = [\"nobody\"]\n", "ciba.clients: `nobody`"),
        (
            "[ciba]\nclients = [\"gateway\"]\nmax_wait_seconds = 60\n",
            "ciba.max_wait_seconds",
        ),
        (
            "[ciba]\nclients = [\"gateway\"]\n[ciba.webhook]\nurl = \"http://127.0.0.1:9/\"\n",
            "ciba.webhook.secret",
        ),
    ] {
        let (code, log) = VaultProcess::start_expecting_exit(
            VaultSettings {
                port: free_port(),
                database_url: format!("sqlite://{}", dir.join("vault.db").display()),
                database_schema: None,
                dir: &dir,
                jwks_url: &issuer.jwks_url,
                upstream_url: "http://127.0.0.1:9",
                refresh_margin: 30,
                name: "vault",
                ca_file: None,
            },
            "",
            section,
        )
        .await;
        assert_eq!(code, Some(2), "{log}");
        assert!(log.contains(field), "{field} not in {log}");
    }
}
