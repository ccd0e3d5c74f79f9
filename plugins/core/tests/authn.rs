//! The jwt-identity decision: metadata, missing tokens, public routes, the
//! cache, waiting for keys, refetch on unknown `kid` and its rate limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::authn::{Authenticator, RequestHead, Verdict};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::jwt::Rejection;
use agentward_core::proof::ProofKey;
use agentward_core::signature::PureRust;
use agentward_core::step::{Answer, Edits, Step};
use agentward_core::Policy;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::json;

const ISS: &str = "https://idp.example.com/";
const AUD: &str = "https://api.example.com";

fn jwks(k: &ES256KeyPair, kid: &str) -> String {
    let p = k.public_key().public_key().to_bytes_uncompressed();
    json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])}]})
    .to_string()
}

fn policy() -> Policy {
    Policy::parse(policy_json().as_bytes()).unwrap()
}

fn policy_json() -> String {
    json!({
        "resource": AUD,
        "authorization_servers": [ISS],
        "issuers": [{"issuer": ISS, "audiences": [AUD],
            "jwks_uri": "https://idp.example.com/jwks.json", "jwks_cluster": "idp",
            "jwks_min_refetch_seconds": 30}],
        "identity": {"claim_to_headers": [{"claim": "org", "header": "x-org"}],
            "token_query_param": "access_token"},
        "routes": [{"match": {"path_prefix": "/prices"}, "public": true},
                   {"match": {"path": "/portfolio"}, "scopes": ["portfolio:read"]}],
        "unmatched": "authenticated"
    })
    .to_string()
}

fn token(k: &ES256KeyPair) -> String {
    let c = Claims::with_custom_claims(
        json!({"azp": "agent", "org": "acme", "scope": "portfolio:read"}),
        Duration::from_secs(300),
    )
    .with_issuer(ISS)
    .with_audience(AUD)
    .with_subject("alice");
    k.sign(c).unwrap()
}

fn now_ms() -> u64 {
    Clock::now_since_epoch().as_millis()
}

fn ok(body: &[u8]) -> Answer {
    Answer::Response {
        status: 200,
        headers: Vec::new(),
        body: body.to_vec(),
    }
}

fn head<'a>(path: &'a str, authorization: Option<&'a str>) -> RequestHead<'a> {
    RequestHead {
        method: "GET",
        path,
        authorization,
        token_header: None,
    }
}

fn loaded(k: &ES256KeyPair) -> Authenticator {
    let mut a = Authenticator::new(policy());
    let due = a.fetches_due(now_ms());
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].call.authority, "idp.example.com");
    assert_eq!(due[0].call.path, "/jwks.json");
    assert_eq!(due[0].call.max_answer_bytes, 256 * 1024);
    assert!(a.jwks_fetched(0, &ok(jwks(k, "k1").as_bytes()), now_ms()));
    a
}

#[test]
fn metadata_is_served_for_the_resource_and_suffixed_paths() {
    let mut a = Authenticator::new(policy());
    for (path, resource) in [
        ("/.well-known/oauth-protected-resource", AUD.to_string()),
        (
            "/.well-known/oauth-protected-resource/mcp",
            format!("{AUD}/mcp"),
        ),
    ] {
        let d = a.decide(&head(path, None), now_ms(), &PureRust);
        let Step::Respond(r) = d.step else {
            panic!("{d:?}")
        };
        assert_eq!(r.status, 200);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["resource"], resource);
        assert_eq!(body["authorization_servers"], json!([ISS]));
        assert_eq!(body["scopes_supported"], json!(["portfolio:read"]));
        assert_eq!(body["bearer_methods_supported"], json!(["header", "query"]));
    }
}

#[test]
fn missing_token_gets_a_challenge_with_resource_metadata() {
    let mut a = Authenticator::new(policy());
    let d = a.decide(&head("/portfolio", None), now_ms(), &PureRust);
    assert_eq!(d.verdict, Verdict::MissingToken);
    let Step::Respond(r) = d.step else { panic!() };
    assert_eq!(r.status, 401);
    let challenge = &r
        .headers
        .iter()
        .find(|(n, _)| n == "www-authenticate")
        .unwrap()
        .1;
    assert_eq!(
        challenge,
        &format!("Bearer realm=\"{AUD}\", resource_metadata=\"{AUD}/.well-known/oauth-protected-resource\"")
    );
    // A non-bearer scheme counts as no token.
    let d = a.decide(&head("/portfolio", Some("Basic YTpi")), now_ms(), &PureRust);
    assert_eq!(d.verdict, Verdict::MissingToken);
}

#[test]
fn public_route_passes_without_token_but_verifies_a_sent_one() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = loaded(&k);
    let d = a.decide(&head("/prices/ACME", None), now_ms(), &PureRust);
    assert_eq!(d.verdict, Verdict::Anonymous);
    let d = a.decide(
        &head("/prices/ACME", Some("Bearer x.y.z")),
        now_ms(),
        &PureRust,
    );
    assert_eq!(d.verdict, Verdict::Rejected(Rejection::Malformed));
}

#[test]
fn verified_token_is_cached_and_sets_identity() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = loaded(&k);
    let t = format!("Bearer {}", token(&k));
    let d = a.decide(&head("/portfolio", Some(&t)), now_ms(), &PureRust);
    assert_eq!(d.verdict, Verdict::Allowed { cached: false });
    let Step::Continue(Edits { set, .. }) = d.step else {
        panic!()
    };
    let get = |n: &str| set.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
    assert_eq!(get("x-agentward-sub").as_deref(), Some("alice"));
    assert_eq!(get("x-agentward-agent").as_deref(), Some("agent"));
    assert_eq!(get("x-org").as_deref(), Some("acme"));
    let d = a.decide(&head("/portfolio", Some(&t)), now_ms(), &PureRust);
    assert_eq!(d.verdict, Verdict::Allowed { cached: true });
    // The same token in the query parameter.
    let path = format!("/portfolio?access_token={}", token(&k));
    let d = a.decide(&head(&path, None), now_ms(), &PureRust);
    assert!(matches!(d.verdict, Verdict::Allowed { .. }));
    assert!(a.strips("x-agentward-anything") && a.strips("x-org") && !a.strips("x-other"));
    assert!(
        a.strips("x-agentward-approval"),
        "no approval rule: nobody reads it"
    );
}

#[test]
fn a_deferred_retrys_approval_id_goes_on_to_ciba_hold_only_where_approvals_exist() {
    let mut v: serde_json::Value = serde_json::from_str(&policy_json()).unwrap();
    v["routes"][1]["approval"] = json!({"binding_message": "Read portfolio"});
    v["approval"] = json!({"cluster": "vault", "client_id": "g", "client_secret": "s"});
    let a = Authenticator::new(Policy::parse(v.to_string().as_bytes()).unwrap());
    assert!(!a.strips("x-agentward-approval"));
    // Other spellings and every other identity header are still removed.
    for name in [
        "x_agentward_approval",
        "X-Agentward-Approval-Token",
        "x-agentward-sub",
    ] {
        assert!(a.strips(name), "{name}");
    }
}

#[test]
fn requests_wait_for_the_first_jwks_then_503_if_it_fails() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = Authenticator::new(policy());
    let t = format!("Bearer {}", token(&k));
    let d = a.decide(&head("/portfolio", Some(&t)), now_ms(), &PureRust);
    assert!(matches!(d.step, Step::Hold { until_ms } if until_ms > now_ms()));
    assert_eq!(d.waits_for, Some(0));
    assert_eq!(a.fetches_due(now_ms()).len(), 1);
    assert!(a.fetches_due(now_ms()).is_empty(), "one fetch at a time");
    assert!(!a.jwks_fetched(0, &Answer::Failed, now_ms()));
    let d = a.decide(&head("/portfolio", Some(&t)), now_ms(), &PureRust);
    let Step::Respond(r) = d.step else { panic!() };
    assert_eq!(r.status, 503);
    assert!(r.body.contains("jwks_unavailable"));
    // The retry comes after a pause, not at once.
    assert!(a.fetches_due(now_ms()).is_empty());
    assert_eq!(a.fetches_due(now_ms() + 2_500).len(), 1);
}

#[test]
fn unknown_kid_refetches_once_then_is_rate_limited() {
    let k1 = ES256KeyPair::generate().with_key_id("k1");
    let k2 = ES256KeyPair::generate().with_key_id("k2");
    let t0 = now_ms();
    let mut a = loaded(&k1);
    let t = format!("Bearer {}", token(&k2));
    // The keys are loaded and lack k2: refused at once, refetched behind.
    let d = a.decide(&head("/portfolio", Some(&t)), t0, &PureRust);
    assert_eq!(d.verdict, Verdict::Rejected(Rejection::UnknownKid));
    assert_eq!(a.fetches_due(t0).len(), 1);
    // The rotated set arrives: the token now passes.
    assert!(a.jwks_fetched(0, &ok(jwks(&k2, "k2").as_bytes()), t0));
    let d = a.decide(&head("/portfolio", Some(&t)), t0, &PureRust);
    assert_eq!(d.verdict, Verdict::Allowed { cached: false });
    // Another unknown kid within the refetch window is refused at once.
    let k3 = ES256KeyPair::generate().with_key_id("k3");
    let t3 = format!("Bearer {}", token(&k3));
    let d = a.decide(&head("/portfolio", Some(&t3)), t0 + 1_000, &PureRust);
    assert_eq!(d.verdict, Verdict::Rejected(Rejection::UnknownKid));
    assert!(a.fetches_due(t0 + 1_000).is_empty());
    // After the window, one more refetch is allowed; the token is still refused.
    let d = a.decide(&head("/portfolio", Some(&t3)), t0 + 31_000, &PureRust);
    assert_eq!(d.verdict, Verdict::Rejected(Rejection::UnknownKid));
    assert_eq!(a.fetches_due(t0 + 31_000).len(), 1);
}

#[test]
fn a_token_is_checked_against_the_scopes_of_each_route_even_from_the_cache() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = loaded(&k);
    let c = Claims::with_custom_claims(json!({"azp": "agent"}), Duration::from_secs(300))
        .with_issuer(ISS)
        .with_audience(AUD)
        .with_subject("alice");
    let t = format!("Bearer {}", k.sign(c).unwrap());
    // No route (`unmatched: authenticated`): a token is enough.
    let d = a.decide(&head("/other", Some(&t)), now_ms(), &PureRust);
    assert_eq!(d.verdict, Verdict::Allowed { cached: false });
    // /portfolio needs portfolio:read, which the cached token lacks.
    let d = a.decide(&head("/portfolio", Some(&t)), now_ms(), &PureRust);
    assert_eq!(d.verdict, Verdict::InsufficientScope);
    let Step::Respond(r) = d.step else { panic!() };
    assert_eq!(r.status, 403);
    assert!(r.body.contains("portfolio:read"));
}

#[test]
fn a_bad_jwks_document_keeps_the_old_keys() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = loaded(&k);
    assert!(a.jwks_fetched(0, &ok(b"<html>oops</html>"), now_ms()));
    let t = format!("Bearer {}", token(&k));
    let d = a.decide(&head("/portfolio", Some(&t)), now_ms(), &PureRust);
    assert_eq!(d.verdict, Verdict::Allowed { cached: false });
}

#[test]
fn a_refresh_keeps_the_cache_unless_keys_change() {
    let k1 = ES256KeyPair::generate().with_key_id("k1");
    let mut a = loaded(&k1);
    let t = format!("Bearer {}", token(&k1));
    a.decide(&head("/portfolio", Some(&t)), now_ms(), &PureRust);
    // Same keys at the periodic refresh: still cached.
    let later = now_ms() + 601_000;
    assert_eq!(a.fetches_due(later).len(), 1);
    a.jwks_fetched(0, &ok(jwks(&k1, "k1").as_bytes()), later);
    let d = a.decide(&head("/portfolio", Some(&t)), now_ms(), &PureRust);
    assert_eq!(d.verdict, Verdict::Allowed { cached: true });
    // k1 withdrawn: its tokens are no longer accepted from the cache.
    let k2 = ES256KeyPair::generate().with_key_id("k2");
    a.jwks_fetched(0, &ok(jwks(&k2, "k2").as_bytes()), later);
    let d = a.decide(&head("/portfolio", Some(&t)), now_ms() + 1_000, &PureRust);
    assert!(
        matches!(
            d.verdict,
            Verdict::KeysPending | Verdict::Rejected(Rejection::UnknownKid)
        ),
        "{d:?}"
    );
}

#[test]
fn a_jwks_fetch_is_a_bounded_callout_and_only_a_usable_200_counts() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = Authenticator::new(policy());
    let due = a.fetches_due(now_ms());
    let call = &due[0].call;
    assert_eq!(
        (call.cluster.as_str(), call.method, call.timeout_ms),
        ("idp", "GET", 5_000)
    );
    // An answer over the bound is never read: a failed fetch, retried later.
    let too_large = Answer::TooLarge {
        status: 200,
        size: 300_000,
    };
    assert!(!a.jwks_fetched(0, &too_large, now_ms()));
    assert!(a.fetches_due(now_ms()).is_empty());
    let later = now_ms() + 2_500;
    assert_eq!(a.fetches_due(later).len(), 1);
    // A 404 carrying a valid key set is not a key set either.
    let not_found = Answer::Response {
        status: 404,
        headers: Vec::new(),
        body: jwks(&k, "k1").into_bytes(),
    };
    assert!(!a.jwks_fetched(0, &not_found, later));
    assert_eq!(a.fetches_due(later + 2_500).len(), 1);
    assert!(a.jwks_fetched(0, &ok(jwks(&k, "k1").as_bytes()), later + 2_500));
}

#[test]
fn a_verified_request_goes_on_with_identity_set_and_the_token_removed() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = loaded(&k);
    let t = format!("Bearer {}", token(&k));
    let d = a.decide(&head("/portfolio", Some(&t)), now_ms(), &PureRust);
    let Step::Continue(edits) = d.step else {
        panic!("{d:?}")
    };
    assert_eq!(edits.remove, ["authorization"]);
    assert_eq!(edits.set_one, None);
    assert!(edits
        .set
        .iter()
        .any(|(n, v)| n == "x-agentward-sub" && v == "alice"));
    assert_eq!(d.waits_for, None);
    // The token query parameter leaves the path.
    let path = format!("/portfolio?access_token={}&x=1", token(&k));
    let d = a.decide(&head(&path, None), now_ms(), &PureRust);
    let Step::Continue(edits) = d.step else {
        panic!("{d:?}")
    };
    assert_eq!(edits.set_one, Some((":path", "/portfolio?x=1".to_string())));
}

#[test]
fn authorization_is_read_by_the_one_bearer_parser() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = loaded(&k);
    let t = token(&k);
    for value in [format!("bearer   {t}"), format!("  BEARER\t{t} ")] {
        let d = a.decide(&head("/portfolio", Some(&value)), now_ms(), &PureRust);
        assert!(matches!(d.verdict, Verdict::Allowed { .. }), "{value:?}");
    }
    // Not a bearer credential: as if no token came.
    for value in [format!("Bearer {t} x"), format!("Basic {t}")] {
        let d = a.decide(&head("/portfolio", Some(&value)), now_ms(), &PureRust);
        assert_eq!(d.verdict, Verdict::MissingToken, "{value:?}");
    }
}

#[test]
fn the_binding_is_what_the_proof_covers_so_a_later_filter_can_check_it_without_the_token() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = loaded(&k);
    let t = token(&k);
    let bearer = format!("Bearer {t}");
    let h = head("/portfolio", Some(&bearer));
    // No proof key, nothing to bind.
    assert_eq!(a.decide(&h, now_ms(), &PureRust).binding, None);
    let key = ProofKey::from_bytes(&[9; 16]).unwrap();
    a.set_proof_key(key);
    for cached in [false, true] {
        let d = a.decide(&h, now_ms(), &PureRust);
        assert_eq!(d.verdict, Verdict::Allowed { cached });
        let Step::Continue(edits) = d.step else {
            panic!("{d:?}")
        };
        let binding = d.binding.unwrap();
        assert_eq!(&*binding, t.rsplit_once('.').unwrap().1);
        // The identity headers as a later filter receives them (the token removed).
        let header = |name: &str| {
            edits
                .set
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let received = ReceivedIdentity::from_headers(header);
        assert_eq!(received.verify(&key, &binding).unwrap().sub, Some("alice"));
        // Another token's binding does not prove these headers.
        assert!(received.verify(&key, "c2lnbmF0dXJl").is_err());
    }
    // A refused request binds nothing.
    let d = a.decide(
        &head("/portfolio", Some("Bearer x.y.z")),
        now_ms(),
        &PureRust,
    );
    assert_eq!(d.binding, None);
}

#[test]
fn a_malformed_bearer_is_no_token_even_when_cached_tokens_are_read_unchecked() {
    let k = ES256KeyPair::generate().with_key_id("k1");
    let mut a = loaded(&k);
    let t = token(&k);
    let good = format!("Bearer {t}");
    assert!(matches!(
        a.decide(&head("/portfolio", Some(&good)), now_ms(), &PureRust)
            .verdict,
        Verdict::Allowed { cached: false }
    ));
    // The cached token with a character token68 lacks is another string:
    // not in the cache, then not a bearer token.
    for bad in [
        format!("Bearer {t}\u{1}"),
        format!("Bearer {t} x"),
        format!("Bearer é{t}"),
    ] {
        let d = a.decide(&head("/portfolio", Some(&bad)), now_ms(), &PureRust);
        assert_eq!(d.verdict, Verdict::MissingToken, "{bad:?}");
    }
}

#[test]
fn a_kept_key_set_serves_the_next_instance_until_its_refresh_is_due() {
    // Spin: each request is a fresh instance; the keys one fetched are kept
    // in the key-value store and load in the next without a fetch.
    let k = ES256KeyPair::generate().with_key_id("k1");
    let t0 = now_ms();
    let first = Authenticator::new(policy());
    let key = first.jwks_store_key(0).unwrap();
    assert!(
        key.starts_with("agentward.jwks.") && key.len() < 64,
        "{key}"
    );
    let kept = Authenticator::jwks_kept(&ok(jwks(&k, "k1").as_bytes()), t0).unwrap();
    // Only a usable 200 is kept.
    assert!(Authenticator::jwks_kept(&ok(b"<html>"), t0).is_none());
    assert!(Authenticator::jwks_kept(&Answer::Failed, t0).is_none());

    // As a host restores it: from its store, under the key's name.
    let mut store = agentward_core::shared_cache::MemoryCache::new();
    agentward_core::shared_cache::SharedCache::set(&mut store, &key, &kept);
    let mut next = Authenticator::new(policy());
    next.restore_kept(&store, t0 + 1_000);
    assert!(
        next.fetches_due(t0 + 1_000).is_empty(),
        "no fetch: the keys are fresh"
    );
    let t = format!("Bearer {}", token(&k));
    let d = next.decide(&head("/portfolio", Some(&t)), t0 + 1_000, &PureRust);
    assert!(
        matches!(d.verdict, Verdict::Allowed { .. }),
        "{:?}",
        d.verdict
    );

    // A token signed by a key they lack: 401, and a refetch only once
    // jwks_min_refetch_seconds (30) have passed since they were fetched,
    // whichever instance fetched them.
    let k2 = ES256KeyPair::generate().with_key_id("k2");
    let t2 = format!("Bearer {}", token(&k2));
    let d = next.decide(&head("/portfolio", Some(&t2)), t0 + 2_000, &PureRust);
    assert!(matches!(d.step, Step::Respond(_)));
    assert!(next.fetches_for(&d, t0 + 2_000).is_empty(), "rate-limited");
    let mut later = Authenticator::new(policy());
    assert!(later.jwks_restored(0, &kept, t0 + 31_000));
    let d = later.decide(&head("/portfolio", Some(&t2)), t0 + 31_000, &PureRust);
    assert_eq!(
        later.fetches_for(&d, t0 + 31_000).len(),
        1,
        "the new key is fetched"
    );
    // An allowed request fetches nothing; one held for keys fetches them.
    let d = next.decide(&head("/portfolio", Some(&t)), t0 + 3_000, &PureRust);
    assert!(next.fetches_for(&d, t0 + 3_000).is_empty());
    let mut empty = Authenticator::new(policy());
    let d = empty.decide(&head("/portfolio", Some(&t)), t0, &PureRust);
    assert_eq!(d.waits_for, Some(0));
    assert_eq!(empty.fetches_for(&d, t0).len(), 1);

    // From the refresh period on (default ten minutes), they are fetched again.
    let mut late = Authenticator::new(policy());
    assert!(!late.jwks_restored(0, &kept, t0 + 600_000));
    assert_eq!(late.fetches_due(t0 + 600_000).len(), 1);
    // A stamp from the future, a short or garbled entry: not used.
    let mut odd = Authenticator::new(policy());
    assert!(!odd.jwks_restored(0, &kept, t0 - 1));
    assert!(!odd.jwks_restored(0, b"short", t0));
    let mut garbled = t0.to_le_bytes().to_vec();
    garbled.extend_from_slice(b"<html>");
    assert!(!odd.jwks_restored(0, &garbled, t0));
    assert!(!odd.jwks_restored(7, &kept, t0));

    // Another issuer or JWKS URI: another entry.
    let other = policy_json().replace("jwks.json", "other-jwks.json");
    let other = Authenticator::new(Policy::parse(other.as_bytes()).unwrap());
    assert_ne!(other.jwks_store_key(0), first.jwks_store_key(0));
}
