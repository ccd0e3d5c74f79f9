//! Connect links through the real vault binary, without an upstream (the
//! links end in a redirect to it, never followed): opening a link shows who
//! gets linked and spends nothing; only the page's own form, posted from
//! the browser that opened it, spends the ticket; a link names nobody; the
//! user-facing endpoints take only tokens issued for the vault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use agentward_vault::store::Store;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use support::*;

/// A vault on a fresh SQLite file whose upstream is never reached.
async fn start(name: &str) -> (TestIssuer, VaultProcess, TempDir) {
    let dir = temp_dir(name);
    let issuer = TestIssuer::start().await;
    let vault = VaultProcess::start(VaultSettings {
        port: free_port(),
        database_url: format!("sqlite://{}", dir.join("vault.db").display()),
        database_schema: None,
        dir: &dir,
        jwks_url: &issuer.jwks_url,
        upstream_url: "http://127.0.0.1:9",
        refresh_margin: 3,
        name: "vault",
        ca_file: None,
    })
    .await;
    (issuer, vault, dir)
}

/// The connect link the vault hands out for an unlinked user.
async fn connect_link(vault: &VaultProcess, subject_token: &str) -> String {
    let http = http();
    let (status, body) = json(
        rfc8693(&http, &vault.url, subject_token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    body["connect_url"].as_str().unwrap().to_string()
}

async fn count(dir: &std::path::Path, table: &str) -> i64 {
    let store = Store::connect(
        &format!("sqlite://{}", dir.join("vault.db").display()),
        None,
    )
    .await
    .unwrap();
    let Store::Sqlite(pool) = &store else {
        panic!("sqlite")
    };
    let n = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap();
    store.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_sent_to_another_persons_browser_shows_whose_account_and_links_nothing_on_get() {
    let (issuer, vault, dir) = start("confirm-other-browser").await;
    // Mallory's agent gets a link for mallory and sends it to alice.
    let link = connect_link(&vault, &issuer.token("mallory", "agent-m")).await;
    // Alice's browser: no cookie, no token.
    let alices_browser = http();
    let r = alices_browser.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200, "a page, not a redirect to the provider");
    assert!(r.headers().get(LOCATION).is_none());
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(header("content-type").starts_with("text/html"));
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(
        header("content-security-policy"),
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    );
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let set_cookie = header("set-cookie");
    assert!(
        set_cookie.contains("; HttpOnly") && set_cookie.contains("; SameSite=Strict"),
        "{set_cookie}"
    );
    let page = Confirmation::read(r, String::new()).await;
    for shown in [
        "mallory",
        ISSUER,
        "agent-m",
        "stocktrade",
        "Continue",
        "Cancel",
    ] {
        assert!(page.html.contains(shown), "{shown} is not on the page");
    }
    assert_eq!(
        count(&dir, "link_states").await,
        0,
        "opening the link started no linking flow"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_connect_link_twice_leaves_it_usable_and_the_form_spends_it_once() {
    let (issuer, vault, dir) = start("confirm-twice").await;
    let link = connect_link(&vault, &issuer.token("alice", "agent-a")).await;
    let http = http();
    // A link preview bot, then the user.
    assert_eq!(http.get(&link).send().await.unwrap().status(), 200);
    let page = Confirmation::read(http.get(&link).send().await.unwrap(), String::new()).await;
    let r = page.submit(&http, "allow").send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()[LOCATION]
        .to_str()
        .unwrap()
        .starts_with("http://127.0.0.1:9/auth?"));
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    assert_eq!(count(&dir, "link_states").await, 1);

    // Spent: the page and the form are refused from now on.
    let again = http.get(&link).send().await.unwrap();
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
    let (status, body) = json(page.submit(&http, "allow").send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(count(&dir, "link_states").await, 1, "no second flow");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_without_or_with_a_wrong_csrf_token_is_refused_and_spends_nothing() {
    let (issuer, vault, dir) = start("confirm-csrf").await;
    let alice = issuer.token("alice", "agent-a");
    let link = connect_link(&vault, &alice).await;
    let other = connect_link(&vault, &alice).await;
    let http = http();
    let page = Confirmation::read(http.get(&link).send().await.unwrap(), String::new()).await;
    // The other link's page, in the same browser (its cookie carried over).
    let other_page =
        Confirmation::read(http.get(&other).send().await.unwrap(), page.cookie.clone()).await;
    let forged = format!("{}A", &page.csrf_token[..page.csrf_token.len() - 1]);
    let forged = if forged == page.csrf_token {
        format!("{}B", &page.csrf_token[..page.csrf_token.len() - 1])
    } else {
        forged
    };
    let attempts = [
        // A cross-site form: the browser sends no SameSite=Strict cookie.
        page.post(&http, &page.csrf_token, None, "allow"),
        page.post(&http, "", Some(&page.cookie), "allow"),
        page.post(&http, &forged, Some(&page.cookie), "allow"),
        page.post(
            &http,
            &other_page.csrf_token,
            Some(&other_page.cookie),
            "allow",
        ),
        page.post(
            &http,
            &page.csrf_token,
            Some("agentward_confirm=bm90LXRoZS1jb29raWU"),
            "allow",
        ),
        page.post(&http, &page.csrf_token, None, "cancel"),
    ];
    for attempt in attempts {
        let (status, body) = json(attempt.send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("access_denied")),
            "{body}"
        );
    }
    assert_eq!(count(&dir, "link_states").await, 0);
    // Nothing was spent: the genuine form still goes on, once.
    let r = page.submit(&http, "allow").send().await.unwrap();
    assert_eq!(r.status(), 303);
    // The other page's Cancel spends its ticket and links nothing.
    let r = other_page.submit(&http, "cancel").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Nothing was linked"));
    assert_eq!(json(http.get(&other).send().await.unwrap()).await.0, 401);
    assert_eq!(count(&dir, "link_states").await, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_url_names_no_user() {
    let (issuer, vault, dir) = start("confirm-opaque").await;
    let sub = "alice.wonderland@example.com";
    let link = connect_link(&vault, &issuer.token(sub, "agent-a")).await;
    let ticket = link.split_once("?ticket=").unwrap().1;
    assert!(ticket.len() >= 22, "at least 128 random bits: {ticket}");
    let mut decoded: Vec<Vec<u8>> = vec![link.as_bytes().to_vec()];
    for part in link.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        for engine in [&URL_SAFE_NO_PAD, &STANDARD_NO_PAD] {
            // Every alignment, in case the user sits inside a longer value.
            for skip in 0..4.min(part.len()) {
                let mut bytes = part.as_bytes()[skip..].to_vec();
                while !bytes.is_empty() {
                    if let Ok(d) = engine.decode(&bytes) {
                        decoded.push(d);
                        break;
                    }
                    bytes.pop();
                }
            }
        }
    }
    for bytes in &decoded {
        for needle in ["alice", "wonderland", "example.com", "idp.agentward"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "the link names the user ({needle}): {link}"
            );
        }
    }
    // What the page shows comes from the vault's own record.
    let page = Confirmation::read(http().get(&link).send().await.unwrap(), String::new()).await;
    assert!(page.html.contains(sub));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_the_api_audience_is_refused_at_audit_unlink_and_connect() {
    let (issuer, vault, dir) = start("confirm-audience").await;
    let http = http();
    let url = &vault.url;
    let for_the_api = issuer.token("alice", "agent-a");
    let for_the_vault = issuer.token_for("alice", "agent-a", url);
    let audit = || http.get(format!("{url}/audit"));
    let unlink = || http.delete(format!("{url}/connections/stocktrade"));
    let connect = || http.get(format!("{url}/connect/stocktrade"));
    for request in [audit(), unlink(), connect()] {
        let (status, body) = json(request.bearer_auth(&for_the_api).send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "{body}"
        );
    }
    assert_eq!(
        audit()
            .bearer_auth(&for_the_vault)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, body) = json(unlink().bearer_auth(&for_the_vault).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let r = connect().bearer_auth(&for_the_vault).send().await.unwrap();
    assert_eq!(
        r.status(),
        302,
        "a bearer token for the vault starts linking"
    );
    // The token exchange keeps the API's audience, and only it.
    connect_link(&vault, &for_the_api).await;
    let (status, body) = json(rfc8693(&http, url, &for_the_vault).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirmation_page_escapes_html_in_the_user_and_agent() {
    let (issuer, vault, dir) = start("confirm-escape").await;
    let sub = "<script>alert('sub')</script>&co";
    let agent = "\"><img src=x onerror=alert(1)>";
    let link = connect_link(&vault, &issuer.token(sub, agent)).await;
    let page = Confirmation::read(http().get(&link).send().await.unwrap(), String::new()).await;
    assert!(!page.html.contains("<script>alert"), "{}", page.html);
    assert!(!page.html.contains("<img src=x"), "{}", page.html);
    assert!(page
        .html
        .contains("&lt;script&gt;alert(&#39;sub&#39;)&lt;/script&gt;&amp;co"));
    assert!(page
        .html
        .contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    let _ = std::fs::remove_dir_all(&dir);
}
