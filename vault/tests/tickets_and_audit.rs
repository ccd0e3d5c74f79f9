//! The vault binary over HTTP, without an upstream (nothing here reaches
//! it): connect links are confirmed once, and the audit trail is read back
//! by its users (with tokens for the vault) and by an audit reader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use agentward_vault::store::Store;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use std::time::Duration;
use support::*;

fn challenges(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_links_open_once_and_the_audit_trail_is_read_by_its_owners() {
    let dir = temp_dir("tickets-audit");
    let issuer = TestIssuer::start().await;
    let port = free_port();
    let db = dir.join("vault.db");
    let mut vault = VaultProcess::start(VaultSettings {
        port,
        database_url: format!("sqlite://{}", db.display()),
        database_schema: None,
        dir: &dir,
        jwks_url: &issuer.jwks_url,
        // Never contacted: a connect link answers with a redirect to it.
        upstream_url: "http://127.0.0.1:9",
        refresh_margin: 3,
        name: "vault",
        ca_file: None,
    })
    .await;
    let url = vault.url.clone();
    let http = http();
    let alice_at_api = issuer.token("alice", "agent-a");
    let bob = issuer.token("bob", "agent-b");
    // Alice's own token for the vault (its audience is the vault's URL).
    let alice = issuer.token_for("alice", "agent-a", &url);

    // Not linked: three exchanges, three connect links.
    let mut links = Vec::new();
    for token in [&alice_at_api, &alice_at_api, &bob] {
        let (status, body) = json(rfc8693(&http, &url, token).send().await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        links.push(body["connect_url"].as_str().unwrap().to_string());
    }
    assert_ne!(links[0], links[1], "each link is a ticket of its own");

    // Opening a link shows the confirmation page (as often as it is
    // opened); its form starts linking once; after that the link is refused.
    let page = Confirmation::read(http.get(&links[0]).send().await.unwrap(), String::new()).await;
    assert_eq!(http.get(&links[0]).send().await.unwrap().status(), 200);
    let first = page.submit(&http, "allow").send().await.unwrap();
    assert_eq!(first.status(), 303);
    assert!(first.headers()[LOCATION]
        .to_str()
        .unwrap()
        .starts_with("http://127.0.0.1:9/auth?"));
    let again = http.get(&links[0]).send().await.unwrap();
    assert_eq!(again.headers()[CACHE_CONTROL], "no-store");
    assert!(again.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let (status, body) = json(again).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    assert_eq!(
        body["error_description"],
        "the connect link was already used; ask for a new one"
    );
    // Alice's other link still works once.
    let page = Confirmation::read(http.get(&links[1]).send().await.unwrap(), String::new()).await;
    assert_eq!(
        page.submit(&http, "allow").send().await.unwrap().status(),
        303
    );
    assert_eq!(json(http.get(&links[1]).send().await.unwrap()).await.0, 401);
    assert_eq!(
        json(page.submit(&http, "allow").send().await.unwrap())
            .await
            .0,
        401
    );

    // A forged ticket is refused as invalid and spends nothing.
    let (base, ticket) = links[2].split_once("?ticket=").unwrap();
    let flipped = if ticket.ends_with('A') { 'B' } else { 'A' };
    let forged = format!("{base}?ticket={}{flipped}", &ticket[..ticket.len() - 1]);
    for _ in 0..2 {
        let (status, body) = json(http.get(&forged).send().await.unwrap()).await;
        assert_eq!(status, 401);
        assert_eq!(body["error_description"], "the connect link is not valid");
    }
    let local = Store::connect(&format!("sqlite://{}", db.display()), None)
        .await
        .unwrap();
    let Store::Sqlite(pool) = &local else {
        panic!("sqlite")
    };
    let (stored, spent): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), SUM(spent) FROM connect_tickets")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (stored, spent),
        (3, 2),
        "three tickets, the two confirmed spent"
    );
    // Bob's genuine link was not spent by the forgeries.
    assert_eq!(http.get(&links[2]).send().await.unwrap().status(), 200);

    // The audit trail: the three exchanges, once the writer has caught up.
    let audit = |query: &str| http.get(format!("{url}/audit{query}"));
    let as_auditor = |query: &str| audit(query).basic_auth(AUDITOR_ID, Some(AUDITOR_SECRET));
    let mut all = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = json(as_auditor("").send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        all = body;
        if all["entries"].as_array().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entries = all["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{all}");
    assert_eq!(
        entries
            .iter()
            .map(|e| e["sub"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["bob", "alice", "alice"],
        "newest first"
    );
    assert_eq!(
        entries[0],
        serde_json::json!({"at": entries[0]["at"], "issuer": ISSUER, "sub": "bob",
            "agent": "agent-b", "connection": "stocktrade", "outcome": "not_linked"})
    );

    // A user reads their own rows, and only those.
    let r = audit("").bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    let (status, body) = json(r).await;
    assert_eq!(status, 200, "{body}");
    let own = body["entries"].as_array().unwrap();
    assert_eq!(own.len(), 2);
    assert!(own
        .iter()
        .all(|e| e["sub"] == "alice" && e["agent"] == "agent-a"));
    let (status, body) = json(
        audit("?sub=alice&limit=1")
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["entries"].as_array().unwrap().len()),
        (200, 1)
    );
    let (status, body) = json(audit("?sub=bob").bearer_auth(&alice).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("access_denied")),
        "{body}"
    );

    // The audit reader sees everyone's rows and filters them.
    let count = |body: &serde_json::Value| body["entries"].as_array().unwrap().len();
    let (_, body) = json(as_auditor("?sub=bob").send().await.unwrap()).await;
    assert_eq!(count(&body), 1);
    let (_, body) = json(
        as_auditor("?connection=stocktrade&limit=2")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(count(&body), 2);
    let (_, body) = json(as_auditor("?since=99999999999").send().await.unwrap()).await;
    assert_eq!(count(&body), 0);

    // Bad parameters: 400 naming the parameter.
    for (query, name) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=many", "limit"),
        ("?since=yesterday", "since"),
    ] {
        let (status, body) = json(audit(query).bearer_auth(&alice).send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{query}: {body}"
        );
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with(name),
            "{query}: {body}"
        );
    }

    // A client that is no audit reader: 403.
    let (status, body) = json(
        audit("")
            .basic_auth(GATEWAY_ID, Some(GATEWAY_SECRET))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("access_denied"))
    );
    assert!(body.get("entries").is_none());

    // Anyone else: 401 with both challenges.
    let forged_user = format!("{}x", &alice[..alice.len() - 1]);
    for request in [
        audit(""),
        audit("").bearer_auth(&forged_user),
        // A token for the API, not for the vault.
        audit("").bearer_auth(&alice_at_api),
        audit("").basic_auth(GATEWAY_ID, Some("wrong")),
        audit("").basic_auth(AUDITOR_ID, Some("wrong")),
        audit("").header("authorization", "Token abc"),
    ] {
        let r = request.send().await.unwrap();
        let offered = challenges(&r);
        assert!(
            offered.iter().any(|c| c.starts_with("Bearer"))
                && offered.iter().any(|c| c.starts_with("Basic")),
            "{offered:?}"
        );
        let (status, body) = json(r).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["error"].is_string() && body.get("entries").is_none());
    }

    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("agentward_vault_audit_purged_total 0"));

    // No ticket is stored or logged.
    vault.stop();
    local.close().await;
    let mut haystacks = vec![vault.log.clone()];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("vault.db") {
            haystacks.push(path);
        }
    }
    for path in &haystacks {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        for link in &links {
            let ticket = link.split_once("?ticket=").unwrap().1;
            assert!(
                !bytes.windows(ticket.len()).any(|w| w == ticket.as_bytes()),
                "a ticket was found in {}",
                path.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
