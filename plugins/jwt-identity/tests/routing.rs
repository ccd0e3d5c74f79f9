//! Layer-2 scenarios on what reaches the upstream, through the real
//! `jwt_identity.wasm`: the path routes are matched on (and that the
//! upstream is sent that path), HEAD, requests no route matches, the user's
//! token, and identity headers spelled with underscores.
//!
//! Build the plugin first: `cargo build --release --target wasm32-wasip1 -p jwt-identity`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod support;

use serde_json::{json, Value};
use support::*;

/// The stock-trade routes: public GET prices, GET portfolio, POST trades,
/// a connection route and a route that asks for the token.
fn routed_policy() -> Value {
    let mut p = policy();
    p["identity"]["token_header"] = json!("x-access-token");
    p["identity"]["token_query_param"] = json!("access_token");
    p["routes"] = json!([
        {"match": {"methods": ["GET"], "path_prefix": "/prices"}, "public": true},
        {"match": {"methods": ["GET"], "path": "/portfolio"}, "scopes": ["portfolio:read"]},
        {"match": {"methods": ["POST"], "path": "/trades"}, "scopes": ["trade"]},
        {"match": {"methods": ["GET"], "path": "/broker/portfolio"}, "exchange": {"connection": "stocktrade"}},
        {"match": {"methods": ["GET"], "path": "/legacy"}, "forward_token": true}
    ]);
    p["vault"] = json!({"cluster": "vault", "client_id": "gateway", "client_secret": "s"});
    p
}

/// The same routes in a policy the plugin before `unmatched` and
/// `forward_token` also reads: public prices, everything else authenticated.
fn old_style_policy() -> Value {
    let mut p = policy();
    p["routes"] = json!([
        {"match": {"methods": ["GET"], "path_prefix": "/prices"}, "public": true},
        {"match": {"methods": ["GET"], "path": "/portfolio"}},
        {"match": {"methods": ["POST"], "path": "/trades"}}
    ]);
    p
}

fn token() -> String {
    es256(&keys().es, &claims(json!({})))
}

fn bearer_request(
    host: &host_test::Host,
    method: &str,
    path: &str,
    token: &str,
) -> host_test::HttpContext {
    let bearer = format!("Bearer {token}");
    request(host, method, path, &[("authorization", &bearer)])
}

// ================================================================ #10.6 path normalisation

#[test]
fn a_dot_segment_cannot_climb_out_of_a_public_prefix_without_a_token() {
    let Some(host) = configured(&old_style_policy(), true) else {
        return;
    };
    for path in [
        "/prices/../portfolio",
        "/prices/%2E%2E/portfolio",
        "/prices/%2e%2e/portfolio",
        "/prices/./../portfolio",
    ] {
        let req = request(&host, "GET", path, &[]);
        let (status, _, body) = answered(&req);
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["reason"], "missing_token", "{path}");
    }
    assert_healthy(&host);
}

#[test]
fn the_upstream_is_sent_the_normal_path_the_route_was_matched_on() {
    let Some(host) = configured(&old_style_policy(), true) else {
        return;
    };
    let t = token();
    for path in [
        "//trades",
        "/%74rades",
        "/x/../trades",
        "/./trades",
        "/%74%72ades",
    ] {
        let h = forwarded(&bearer_request(&host, "POST", path, &t));
        assert_eq!(h.get(":path"), Some("/trades"), "{path}");
        assert_eq!(h.get("x-agentward-sub"), Some("alice"), "{path}");
    }
    let h = forwarded(&bearer_request(&host, "POST", "/x/..//trades?q=%2F", &t));
    assert_eq!(
        h.get(":path"),
        Some("/trades?q=%2F"),
        "the query is kept as sent"
    );
    assert_healthy(&host);
}

#[test]
fn paths_that_cannot_be_normalised_unambiguously_get_400_invalid_request() {
    let Some(host) = configured(&old_style_policy(), true) else {
        return;
    };
    let t = token();
    for path in [
        "/prices%2F..%2Fportfolio",
        "/trades%2Fx",
        "/trades%2fx",
        "/prices/..%5Cportfolio",
        "/prices\\..\\portfolio",
        "/trades%00",
        "/tr%zzades",
    ] {
        for token in [None, Some(t.as_str())] {
            let req = match token {
                Some(t) => bearer_request(&host, "GET", path, t),
                None => request(&host, "GET", path, &[]),
            };
            let (status, headers, body) = answered(&req);
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["error"], "invalid_request", "{path}");
            assert!(body["error_description"].as_str().is_some(), "{path}");
            assert_eq!(headers.get("content-type"), Some("application/json"));
            assert!(!body.to_string().contains(&t), "never echoes the token");
        }
    }
    assert_eq!(count(&host, "agentward.jwt.rejected.invalid_path"), 14);
    assert_healthy(&host);
}

// ================================================================ #14.3 HEAD and unmatched requests

#[test]
fn head_matches_wherever_get_does() {
    let Some(host) = configured(&old_style_policy(), true) else {
        return;
    };
    // HEAD on a public GET route is public, as GET is.
    let req = request(&host, "HEAD", "/prices/ACME", &[]);
    forwarded(&req);
    let Some(host) = configured(&routed_policy(), true) else {
        return;
    };
    // HEAD on a connection route keeps Authorization for token-exchange.
    let h = forwarded(&bearer_request(
        &host,
        "HEAD",
        "/broker/portfolio",
        &token(),
    ));
    assert!(h.get("authorization").is_some());
    assert_healthy(&host);
}

#[test]
fn requests_no_route_matches_get_403_access_denied_by_default() {
    let Some(host) = configured(&old_style_policy(), true) else {
        return;
    };
    let t = token();
    for (method, path) in [
        ("GET", "/admin"),
        ("DELETE", "/portfolio"),
        ("GET", "/trades"),
        ("HEAD", "/trades"),
        ("GET", "/TRADES"),
    ] {
        let req = bearer_request(&host, method, path, &t);
        let (status, _, body) = answered(&req);
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"], "access_denied");
        assert_eq!(
            body["error_description"],
            "no route of the policy matches this request"
        );
    }
    assert_eq!(count(&host, "agentward.jwt.rejected.no_route"), 5);
    // The metadata is still served.
    let req = request(&host, "GET", "/.well-known/oauth-protected-resource", &[]);
    assert_eq!(answered(&req).0, 200);
    assert_healthy(&host);
}

#[test]
fn unmatched_authenticated_and_public_are_what_they_say() {
    let mut p = routed_policy();
    p["unmatched"] = json!("authenticated");
    let Some(host) = configured(&p, true) else {
        return;
    };
    assert_eq!(answered(&request(&host, "GET", "/admin", &[])).0, 401);
    let h = forwarded(&bearer_request(&host, "GET", "/admin", &token()));
    assert_eq!(h.get("x-agentward-sub"), Some("alice"));
    assert_eq!(h.get("authorization"), None);
    p["unmatched"] = json!("public");
    let Some(host) = configured(&p, true) else {
        return;
    };
    forwarded(&request(&host, "GET", "/admin", &[]));
    assert_healthy(&host);
}

// ================================================================ #14.2 / #10.8 the user's token

#[test]
fn the_users_bearer_token_does_not_reach_an_upstream_that_did_not_ask_for_it() {
    let Some(host) = configured(&old_style_policy(), true) else {
        return;
    };
    let t = token();
    for (method, path) in [
        ("GET", "/portfolio"),
        ("POST", "/trades"),
        ("GET", "/prices/ACME"),
    ] {
        let h = forwarded(&bearer_request(&host, method, path, &t));
        assert_eq!(h.get("authorization"), None, "{path}");
        assert_eq!(h.get("x-agentward-sub"), Some("alice"), "{path}");
    }
    // A cached verdict removes it too.
    let h = forwarded(&bearer_request(&host, "GET", "/portfolio", &t));
    assert_eq!(h.get("authorization"), None);
    assert!(count(&host, "agentward.jwt.cache_hit") >= 1);
    assert_healthy(&host);
}

#[test]
fn the_token_goes_on_where_the_route_forwards_it_or_exchanges_it() {
    let Some(host) = configured(&routed_policy(), true) else {
        return;
    };
    let t = token();
    let bearer = format!("Bearer {t}");
    let h = forwarded(&bearer_request(&host, "GET", "/legacy", &t));
    assert_eq!(h.get("authorization"), Some(bearer.as_str()));
    let h = forwarded(&bearer_request(&host, "GET", "/broker/portfolio", &t));
    assert_eq!(h.get("authorization"), Some(bearer.as_str()));
    let h = forwarded(&request(&host, "GET", "/legacy", &[("x-access-token", &t)]));
    assert_eq!(h.get("x-access-token"), Some(t.as_str()));
    assert_healthy(&host);
}

#[test]
fn the_token_header_and_query_parameter_are_removed_before_the_upstream() {
    let Some(host) = configured(&routed_policy(), true) else {
        return;
    };
    let t = token();
    let h = forwarded(&request(
        &host,
        "GET",
        "/portfolio",
        &[("x-access-token", &t)],
    ));
    assert_eq!(h.get("x-access-token"), None);
    assert_eq!(h.get("x-agentward-sub"), Some("alice"));
    let path = format!("/portfolio?x=1&access_token={t}&y=2");
    let h = forwarded(&request(&host, "GET", &path, &[]));
    assert_eq!(h.get(":path"), Some("/portfolio?x=1&y=2"));
    assert_eq!(h.get("x-agentward-sub"), Some("alice"));
    // Sent alongside a header token, the parameter is removed as well.
    let path = format!("/broker/portfolio?access_token={t}");
    let h = forwarded(&bearer_request(&host, "GET", &path, &t));
    assert_eq!(h.get(":path"), Some("/broker/portfolio"));
    // Where the route forwards the token, the path stays as sent.
    let path = format!("/legacy?access_token={t}");
    let h = forwarded(&request(&host, "GET", &path, &[]));
    assert_eq!(h.get(":path"), Some(path.as_str()));
    assert_healthy(&host);
}

#[test]
fn query_token_is_stripped_from_path_on_the_old_style_policy_too() {
    let mut p = old_style_policy();
    p["identity"]["token_query_param"] = json!("access_token");
    let Some(host) = configured(&p, true) else {
        return;
    };
    let t = token();
    let path = format!("/portfolio?access_token={t}");
    let h = forwarded(&request(&host, "GET", &path, &[]));
    assert_eq!(h.get(":path"), Some("/portfolio"));
    assert_healthy(&host);
}

#[test]
fn remove_authorization_is_refused_naming_forward_token() {
    let mut p = routed_policy();
    p["identity"]["remove_authorization"] = json!(true);
    let Some(host) = load(true) else {
        return;
    };
    assert_ne!(host.configure(p.to_string()), Ok(true));
    assert!(
        host.logged("identity.remove_authorization"),
        "{:?}",
        host.logs()
    );
    assert!(host.logged("forward_token"), "{:?}", host.logs());
}

// ================================================================ #14.1 underscores

#[test]
fn identity_headers_spelled_with_underscores_or_any_case_are_removed() {
    let Some(host) = configured(&old_style_policy(), true) else {
        return;
    };
    let spoofed = [
        ("x_agentward_sub", "root"),
        ("X_AgentWard_Sub", "root"),
        ("x-agentward_scope", "admin"),
        ("x.agentward.agent", "evil"),
        ("x_org_id", "evil-corp"),
    ];
    // Protected route with a token, and a public route without one.
    let bearer = format!("Bearer {}", token());
    let mut with_token = spoofed.to_vec();
    with_token.push(("authorization", &bearer));
    for (path, headers) in [
        ("/portfolio", &with_token[..]),
        ("/prices/ACME", &spoofed[..]),
    ] {
        let h = forwarded(&request(&host, "GET", path, headers));
        for (name, _) in spoofed {
            assert_eq!(h.get(name), None, "{path}: {name} reached the upstream");
        }
    }
    assert_healthy(&host);
}
