//! What reaches the upstream: the path routes are matched on, requests no
//! route matches, the user's token, and inbound identity headers whatever
//! their spelling.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::authn::{Authenticator, Decision, RequestHead, Verdict};
use agentward_core::signature::PureRust;
use agentward_core::step::Step;
use agentward_core::Policy;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

const ISS: &str = "https://idp.example.com/";
const AUD: &str = "https://api.example.com";

fn key() -> &'static ES256KeyPair {
    static KEY: OnceLock<ES256KeyPair> = OnceLock::new();
    KEY.get_or_init(|| ES256KeyPair::generate().with_key_id("k1"))
}

fn policy(extra: Value) -> Policy {
    let p = key().public_key().public_key().to_bytes_uncompressed();
    let mut v = json!({
        "resource": AUD,
        "issuers": [{"issuer": ISS, "audiences": [AUD],
            "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
                "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])}]}}],
        "identity": {"token_header": "x-access-token", "token_query_param": "access_token",
            "claim_to_headers": [{"claim": "org", "header": "x-org"}]},
        "vault": {"cluster": "vault", "client_id": "gateway", "client_secret": "s"},
        "routes": [
            {"match": {"methods": ["GET"], "path_prefix": "/prices"}, "public": true},
            {"match": {"methods": ["GET"], "path": "/portfolio"}},
            {"match": {"methods": ["POST"], "path": "/trades"}},
            {"match": {"methods": ["GET"], "path": "/broker/portfolio"}, "exchange": {"connection": "stocktrade"}},
            {"match": {"methods": ["GET"], "path": "/legacy"}, "forward_token": true}
        ]
    });
    for (k, value) in extra.as_object().unwrap() {
        v[k] = value.clone();
    }
    Policy::parse(v.to_string().as_bytes()).unwrap()
}

fn token() -> String {
    let c = Claims::with_custom_claims(json!({"azp": "agent"}), Duration::from_secs(300))
        .with_issuer(ISS)
        .with_audience(AUD)
        .with_subject("alice");
    key().sign(c).unwrap()
}

fn decide(a: &mut Authenticator, method: &str, path: &str, bearer: Option<&str>) -> Decision {
    let authorization = bearer.map(|t| format!("Bearer {t}"));
    let head = RequestHead {
        method,
        path,
        authorization: authorization.as_deref(),
        token_header: None,
    };
    a.decide(&head, Clock::now_since_epoch().as_millis(), &PureRust)
}

/// The forwarded request: (remove_authorization, remove_token_header, new :path, identity set).
fn forwarded(d: Decision) -> (bool, bool, Option<String>, bool) {
    match d.step {
        Step::Continue(edits) => {
            let removes = |name: &str| edits.remove.iter().any(|n| n == name);
            (
                removes("authorization"),
                removes("x-access-token"),
                edits.set_one.map(|(name, path)| {
                    assert_eq!(name, ":path");
                    path
                }),
                !edits.set.is_empty(),
            )
        }
        other => panic!("not forwarded: {other:?}"),
    }
}

fn answered(d: &Decision) -> (u32, Value) {
    match &d.step {
        Step::Respond(r) => (r.status, serde_json::from_str(&r.body).unwrap()),
        other => panic!("not answered: {other:?}"),
    }
}

#[test]
fn a_dot_segment_cannot_climb_out_of_a_public_prefix() {
    let mut a = Authenticator::new(policy(json!({})));
    for path in [
        "/prices/../portfolio",
        "/prices/%2E%2E/portfolio",
        "/prices/./../portfolio",
    ] {
        let d = decide(&mut a, "GET", path, None);
        assert_eq!(d.verdict, Verdict::MissingToken, "{path}");
    }
}

#[test]
fn bypass_spellings_match_the_route_and_the_upstream_gets_the_normal_path() {
    let mut a = Authenticator::new(policy(json!({})));
    let t = token();
    for path in [
        "//trades",
        "/%74rades",
        "/x/../trades",
        "/./trades",
        "/%74rades/",
    ] {
        let (_, _, new_path, identity) = forwarded(decide(&mut a, "POST", path, Some(&t)));
        assert!(identity, "{path}");
        let expected = if path.ends_with("s/") {
            "/trades/"
        } else {
            "/trades"
        };
        assert_eq!(new_path.as_deref(), Some(expected), "{path}");
    }
    let (_, _, new_path, _) = forwarded(decide(&mut a, "POST", "/trades", Some(&t)));
    assert_eq!(new_path, None, "a normal path is left alone");
}

#[test]
fn ambiguous_paths_are_refused_with_400_invalid_request() {
    let mut a = Authenticator::new(policy(json!({"unmatched": "public"})));
    for path in [
        "/trades%2Fx",
        "/trades%2fx",
        "/trades%5Cx",
        "/trades\\x",
        "/trades%00",
        "/t%zz",
    ] {
        let d = decide(&mut a, "GET", path, Some(&token()));
        assert_eq!(d.verdict, Verdict::InvalidPath, "{path}");
        let (status, body) = answered(&d);
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_request");
        assert!(body["error_description"].as_str().unwrap().len() > 10);
    }
}

#[test]
fn head_is_decided_as_get() {
    let mut a = Authenticator::new(policy(json!({})));
    assert_eq!(
        decide(&mut a, "HEAD", "/prices/ACME", None).verdict,
        Verdict::Anonymous
    );
    assert_eq!(
        decide(&mut a, "HEAD", "/portfolio", None).verdict,
        Verdict::MissingToken
    );
    let (remove, _, _, _) = forwarded(decide(&mut a, "HEAD", "/broker/portfolio", Some(&token())));
    assert!(
        !remove,
        "HEAD on a connection route keeps the token for token-exchange"
    );
}

#[test]
fn unmatched_requests_are_denied_by_default_with_403() {
    let mut a = Authenticator::new(policy(json!({})));
    for (method, path) in [
        ("GET", "/admin"),
        ("DELETE", "/portfolio"),
        ("GET", "/trades"),
    ] {
        let d = decide(&mut a, method, path, Some(&token()));
        assert_eq!(d.verdict, Verdict::NoRoute, "{method} {path}");
        let (status, body) = answered(&d);
        assert_eq!(status, 403);
        assert_eq!(body["error"], "access_denied");
        assert_eq!(
            body["error_description"],
            "no route of the policy matches this request"
        );
    }
    let d = decide(&mut a, "GET", "/.well-known/oauth-protected-resource", None);
    assert_eq!(d.verdict, Verdict::Metadata, "the metadata is still served");
}

#[test]
fn unmatched_authenticated_and_public_behave_as_named() {
    let mut a = Authenticator::new(policy(json!({"unmatched": "authenticated"})));
    assert_eq!(
        decide(&mut a, "GET", "/admin", None).verdict,
        Verdict::MissingToken
    );
    let (remove, _, _, identity) = forwarded(decide(&mut a, "GET", "/admin", Some(&token())));
    assert!(remove && identity);
    let mut a = Authenticator::new(policy(json!({"unmatched": "public"})));
    assert_eq!(
        decide(&mut a, "GET", "/admin", None).verdict,
        Verdict::Anonymous
    );
}

#[test]
fn the_token_goes_upstream_only_where_the_route_asks() {
    let mut a = Authenticator::new(policy(json!({})));
    let t = token();
    let cases = [
        ("GET", "/portfolio", true, true),
        ("POST", "/trades", true, true),
        ("GET", "/prices/ACME", true, true),
        ("GET", "/legacy", false, false),
        // token-exchange replaces Authorization on a connection route.
        ("GET", "/broker/portfolio", false, true),
    ];
    for (method, path, remove_authorization, remove_token_header) in cases {
        let (ra, rt, _, _) = forwarded(decide(&mut a, method, path, Some(&t)));
        assert_eq!(
            (ra, rt),
            (remove_authorization, remove_token_header),
            "{path}"
        );
    }
    // Anonymous on a public route: whatever Authorization carries is removed too.
    let (ra, rt, _, _) = forwarded(decide(&mut a, "GET", "/prices/ACME", None));
    assert!(ra && rt);
}

#[test]
fn the_query_token_leaves_the_path_unless_the_route_forwards_it() {
    let mut a = Authenticator::new(policy(json!({})));
    let t = token();
    let path = format!("/portfolio?x=1&access_token={t}&y=%2F");
    let (_, _, new_path, identity) = forwarded(decide(&mut a, "GET", &path, None));
    assert!(identity);
    assert_eq!(new_path.as_deref(), Some("/portfolio?x=1&y=%2F"));
    let path = format!("//portfolio?access_token={t}");
    let (_, _, new_path, _) = forwarded(decide(&mut a, "GET", &path, None));
    assert_eq!(new_path.as_deref(), Some("/portfolio"));
    let path = format!("/legacy?access_token={t}");
    let (_, _, new_path, _) = forwarded(decide(&mut a, "GET", &path, None));
    assert_eq!(new_path, None);
}

#[test]
fn identity_headers_are_stripped_whatever_the_separator_and_case() {
    let a = Authenticator::new(policy(json!({})));
    for name in [
        "x-agentward-sub",
        "x_agentward_sub",
        "X_AgentWard_Sub",
        "x.agentward.sub",
        "x-agentward_anything",
        "x-org",
        "x_org",
        "X_ORG",
    ] {
        assert!(a.strips(name), "{name}");
    }
    for name in [
        "x-agentwardsub",
        "x-agentwar",
        "authorization",
        "x-organisation",
        "é-agentward-sub",
    ] {
        assert!(!a.strips(name), "{name}");
    }
}
