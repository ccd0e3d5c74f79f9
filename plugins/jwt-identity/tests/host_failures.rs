//! Layer-2 scenarios of a host in trouble: hostcalls answering statuses the
//! SDK's wrappers do not expect (a panic there would kill the VM, and every
//! later request would get 503), and JWKS answers over the size limit.
//!
//! Build the plugin first:
//! `cargo build --release --target wasm32-wasip1 -p jwt-identity`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The shared support module serves the scenarios too: not all of it is used here.
#![allow(dead_code)]

mod support;

use host_test::Status;
use jwt_simple::prelude::ES256KeyPair;
use serde_json::json;
use support::*;

/// A status the SDK's wrappers expect from none of these calls.
const UNEXPECTED: Status = Status::InternalFailure;
const CLOCK: &str = "proxy_get_current_time_nanoseconds";

#[test]
fn a_clock_the_host_cannot_read_answers_503_and_the_next_request_is_served() {
    let Some(host) = configured(&policy(), true) else {
        return;
    };
    let token = es256(&keys().es, &claims(json!({})));
    host.fail_hostcall(CLOCK, UNEXPECTED);
    let req = get_with_token(&host, &token);
    let (status, headers, body) = answered(&req);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(body["reason"], "clock_unavailable");
    assert!(headers.get("retry-after").is_some());
    assert_healthy(&host);
    // A tick without a clock does not trap either.
    host.tick().unwrap();
    assert_healthy(&host);
    host.restore_hostcall(CLOCK);
    let next = get_with_token(&host, &token);
    assert_eq!(forwarded(&next).get("x-agentward-sub"), Some("alice"));
    assert_healthy(&host);
}

#[test]
fn a_held_request_whose_clock_fails_gets_503_on_the_next_tick() {
    let Some(host) = configured(&fetched_policy(), true) else {
        return;
    };
    let _call = jwks_call(&host);
    let token = es256(&keys().es, &claims(json!({})));
    let req = get_with_token(&host, &token);
    assert_held(&req);
    host.fail_hostcall(CLOCK, UNEXPECTED);
    host.tick().unwrap();
    let (status, _, body) = answered(&req);
    assert_eq!(
        (status, &body["reason"]),
        (503, &json!("clock_unavailable"))
    );
    assert_healthy(&host);
}

#[test]
fn a_host_refusing_metrics_ticks_and_verify_signature_still_verifies() {
    let Some(host) = load(true) else {
        return;
    };
    for name in [
        "proxy_define_metric",
        "proxy_increment_metric",
        "proxy_set_tick_period_milliseconds",
        "proxy_call_foreign_function",
    ] {
        host.fail_hostcall(name, UNEXPECTED);
    }
    assert_eq!(host.configure(policy().to_string()), Ok(true));
    let req = get_with_token(&host, &es256(&keys().es, &claims(json!({}))));
    assert_eq!(forwarded(&req).get("x-agentward-sub"), Some("alice"));
    assert_healthy(&host);
}

#[test]
fn a_jwks_answer_the_host_cannot_read_is_a_failed_fetch() {
    let Some(host) = configured(&fetched_policy(), true) else {
        return;
    };
    let key = ES256KeyPair::generate().with_key_id("k1");
    let call = jwks_call(&host);
    let req = get_with_token(&host, &es256(&key, &claims(json!({}))));
    assert_held(&req);
    host.fail_hostcall("proxy_get_header_map_value", UNEXPECTED);
    host.fail_hostcall("proxy_get_buffer_bytes", UNEXPECTED);
    answer_jwks(&host, &call, &jwks(&[es_jwk(&key)]));
    assert_jwks_unavailable(&req);
    assert_eq!(count(&host, "agentward.jwt.jwks_fetch_failed"), 1);
    assert_healthy(&host);
}

#[test]
fn an_oversized_jwks_answer_is_not_read_and_counts_as_a_failed_fetch() {
    let Some(host) = configured(&fetched_policy(), true) else {
        return;
    };
    let key = ES256KeyPair::generate().with_key_id("k1");
    let call = jwks_call(&host);
    let req = get_with_token(&host, &es256(&key, &claims(json!({}))));
    assert_held(&req);
    let mut document = jwks(&[es_jwk(&key)]);
    document["padding"] = json!("x".repeat(256 * 1024));
    answer_jwks(&host, &call, &document);
    assert_jwks_unavailable(&req);
    assert_eq!(count(&host, "agentward.jwt.jwks_fetch_failed"), 1);
    assert_eq!(count(&host, "agentward.jwt.jwks_fetch_ok"), 0);
    assert!(host.logged("limit"), "{:?}", host.logs());
    assert_healthy(&host);
}
