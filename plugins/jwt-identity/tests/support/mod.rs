//! What the scenarios share: the built plugin, keys and tokens minted with
//! jwt-simple, policies, and small request helpers over host-test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use host_test::{Action, HeaderMap, Host, HostOptions, HttpCall, HttpContext};
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration as StdDuration, UNIX_EPOCH};

/// The host clock at the start of every test (Unix seconds).
pub const NOW: u64 = 1_750_000_000;
/// The main issuer: ES256, RS256 and EdDSA, inline JWKS.
pub const ISS: &str = "https://idp.example.com/";
/// A second issuer: ES256 only, `typ` must be `at+jwt`.
pub const STRICT_ISS: &str = "https://strict.example.com/";
/// The protected resource, also the audience.
pub const RESOURCE: &str = "https://api.example.com";
/// The JWKS cluster of the fetched-keys policy.
pub const CLUSTER: &str = "idp";

// ---------------------------------------------------------------- the plugin

fn wasm_path() -> PathBuf {
    let dir = std::env::var_os("AGENTWARD_WASM_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm32-wasip1/release"),
        PathBuf::from,
    );
    dir.join("jwt_identity.wasm")
}

/// Loads the built plugin with the host clock at [`NOW`]. `None` (the test
/// skips) when it is not built, except under CI, where that fails.
pub fn load(verify_signature: bool) -> Option<Host> {
    load_with(HostOptions {
        verify_signature,
        ..HostOptions::default()
    })
}

/// Like [`load`], with options (shared data for several worker VMs).
pub fn load_with(options: HostOptions) -> Option<Host> {
    let wasm = wasm_path();
    if !wasm.exists() {
        let build = "cargo build --release --target wasm32-wasip1 -p jwt-identity";
        if std::env::var_os("CI").is_some() {
            panic!("{} is not built (run `{build}`)", wasm.display());
        }
        eprintln!("skipped: {} is not built (run `{build}`)", wasm.display());
        return None;
    }
    let options = HostOptions {
        start_time: UNIX_EPOCH + StdDuration::from_secs(NOW),
        ..options
    };
    Some(Host::load(&wasm, options).unwrap())
}

/// The plugin, configured with `policy` (which it must accept).
pub fn configured(policy: &Value, verify_signature: bool) -> Option<Host> {
    let host = load(verify_signature)?;
    assert_eq!(
        host.configure(policy.to_string()),
        Ok(true),
        "{:?}",
        host.logs()
    );
    Some(host)
}

/// The plugin did not trap.
pub fn assert_healthy(host: &Host) {
    assert!(!host.is_broken(), "trapped: {:?}", host.trap_message());
}

/// A counter's value (0 when the plugin never defined it).
pub fn count(host: &Host, name: &str) -> u64 {
    // A cached request's counts are published on the VM's next tick.
    if matches!(name, "agentward.jwt.allowed" | "agentward.jwt.cache_hit") {
        let _ = host.tick();
    }
    host.metric(name).map_or(0, |m| m.value)
}

// ---------------------------------------------------------------- keys, JWKS

/// One key of each kind the main issuer accepts.
pub struct Keys {
    pub es: ES256KeyPair,
    pub rs: RS256KeyPair,
    pub ed: Ed25519KeyPair,
}

/// The test keys, made once per test binary (RSA generation is slow).
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        es: ES256KeyPair::generate().with_key_id("es"),
        rs: RS256KeyPair::generate(2048).unwrap().with_key_id("rs"),
        ed: Ed25519KeyPair::generate().with_key_id("ed"),
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK of an ES256 key.
pub fn es_jwk(key: &ES256KeyPair) -> Value {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
        "kid": key.key_id().clone().unwrap(),
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    })
}

/// The public JWK of an RS256 key.
pub fn rs_jwk(key: &RS256KeyPair) -> Value {
    let c = key.public_key().to_components();
    json!({
        "kty": "RSA", "use": "sig", "alg": "RS256",
        "kid": key.key_id().clone().unwrap(),
        "n": b64(&c.n), "e": b64(&c.e),
    })
}

/// The public JWK of an Ed25519 key.
pub fn ed_jwk(key: &Ed25519KeyPair) -> Value {
    json!({
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
        "kid": key.key_id().clone().unwrap(),
        "x": b64(&key.public_key().to_bytes()),
    })
}

/// A JWKS document.
pub fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

// ---------------------------------------------------------------- tokens

/// Claims of a valid token of the main issuer (with the scopes of every
/// route of [`policy`]), with `extra` merged in; a `null` in `extra`
/// removes that claim.
pub fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "iss": ISS, "aud": RESOURCE, "sub": "alice", "azp": "stock-agent",
        "scope": "portfolio:read trade", "iat": NOW, "exp": NOW + 300,
    });
    for (name, value) in extra.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// Exactly these claims, as jwt-simple takes them (registered claims in
/// their fields, the rest flattened in).
fn jwt_claims(claims: &Value) -> JWTClaims<Value> {
    serde_json::from_value(claims.clone()).unwrap()
}

/// An ES256 token (header `{"typ":"JWT","alg":"ES256","kid":…}`).
pub fn es256(key: &ES256KeyPair, claims: &Value) -> String {
    key.sign(jwt_claims(claims)).unwrap()
}

/// An ES256 token with `typ` set.
pub fn es256_typ(key: &ES256KeyPair, typ: &str, claims: &Value) -> String {
    let opts = HeaderOptions {
        signature_type: Some(typ.to_string()),
        ..HeaderOptions::default()
    };
    key.sign_with_options(jwt_claims(claims), &opts).unwrap()
}

/// An RS256 token.
pub fn rs256(key: &RS256KeyPair, claims: &Value) -> String {
    key.sign(jwt_claims(claims)).unwrap()
}

/// An EdDSA token.
pub fn eddsa(key: &Ed25519KeyPair, claims: &Value) -> String {
    key.sign(jwt_claims(claims)).unwrap()
}

/// An HS256 token (symmetric: never acceptable).
pub fn hs256(claims: &Value) -> String {
    HS256Key::generate()
        .with_key_id("es")
        .authenticate(jwt_claims(claims))
        .unwrap()
}

/// base64url without padding, as JWS parts are.
pub fn encode_b64(bytes: &[u8]) -> String {
    b64(bytes)
}

/// Decodes a base64url JWS part.
pub fn decode_b64(part: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(part).unwrap()
}

/// A JSON value as a base64url JWS part.
pub fn encode_json(value: &Value) -> String {
    b64(value.to_string().as_bytes())
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An ES256 token with a hand-made JOSE header (jwt-simple cannot emit
/// `crit`), validly signed.
pub fn es256_raw(key: &ES256KeyPair, header: &Value, claims: &Value) -> String {
    es256_raw_text(key, &header.to_string(), &claims.to_string())
}

/// An ES256 token over exactly this header and payload text (which need
/// not be JSON a serializer would write: duplicate members), validly signed.
pub fn es256_raw_text(key: &ES256KeyPair, header: &str, payload: &str) -> String {
    use p256::ecdsa::signature::Signer;
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signing_key: &p256::ecdsa::SigningKey = key.key_pair().as_ref();
    let signature: p256::ecdsa::Signature = signing_key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

/// The payload of a token, decoded.
pub fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

// ---------------------------------------------------------------- policies

/// Inline keys: the main issuer takes all three algorithms; the strict one
/// takes ES256 only (its JWKS also holds the RSA key) and wants `at+jwt`.
pub fn policy() -> Value {
    let k = keys();
    json!({
        "resource": RESOURCE,
        "authorization_servers": [ISS],
        "issuers": [
            {
                "issuer": ISS,
                "audiences": [RESOURCE],
                "algorithms": ["ES256", "RS256", "EdDSA"],
                "jwks": jwks(&[es_jwk(&k.es), rs_jwk(&k.rs), ed_jwk(&k.ed)]),
            },
            {
                "issuer": STRICT_ISS,
                "audiences": [RESOURCE],
                "algorithms": ["ES256"],
                "typ": "at+jwt",
                "jwks": jwks(&[es_jwk(&k.es), rs_jwk(&k.rs)]),
            }
        ],
        "clock_skew_seconds": 30,
        "identity": {
            "claim_to_headers": [
                {"claim": "org.id", "header": "x-org-id"},
                {"claim": "roles", "header": "x-roles"}
            ]
        },
        "routes": [
            {"match": {"path_prefix": "/public"}, "public": true},
            {"match": {"methods": ["GET"], "path": "/portfolio"}, "scopes": ["portfolio:read"]},
            {"match": {"methods": ["POST"], "path": "/trades"}, "scopes": ["trade"]}
        ]
    })
}

/// One issuer whose keys come from `jwks_uri` through cluster [`CLUSTER`]:
/// fetch timeout 2 s, refresh every 60 s, refetch at most every 30 s; no
/// routes, every request needs a token (`unmatched: authenticated`).
pub fn fetched_policy() -> Value {
    json!({
        "resource": RESOURCE,
        "issuers": [{
            "issuer": ISS,
            "audiences": [RESOURCE],
            "jwks_uri": "https://idp.example.com/.well-known/jwks.json",
            "jwks_cluster": CLUSTER,
            "jwks_timeout_ms": 2000,
            "jwks_refresh_seconds": 60,
            "jwks_min_refetch_seconds": 30
        }],
        "clock_skew_seconds": 30,
        "unmatched": "authenticated"
    })
}

// ---------------------------------------------------------------- requests

/// Sends request headers (end of stream) and returns the context.
pub fn request(host: &Host, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpContext {
    let req = host.http_context().unwrap();
    let mut all = vec![(":method", method), (":path", path), (":authority", "api")];
    all.extend_from_slice(headers);
    req.request_headers(&all, true).unwrap();
    req
}

/// `GET /portfolio` with `Authorization: Bearer <token>`.
pub fn get_with_token(host: &Host, token: &str) -> HttpContext {
    let bearer = format!("Bearer {token}");
    request(host, "GET", "/portfolio", &[("authorization", &bearer)])
}

/// The request went upstream: its headers as sent.
pub fn forwarded(req: &HttpContext) -> HeaderMap {
    let record = req.record();
    assert!(
        record.sent_upstream(),
        "not forwarded: {:?}",
        record.local_response.map(|r| (r.status, r.body_text()))
    );
    record.request_headers
}

/// The request is held (its headers callback paused, nothing answered).
pub fn assert_held(req: &HttpContext) {
    let record = req.record();
    assert_eq!(
        record.last_action(host_test::Callback::RequestHeaders),
        Some(Action::Pause)
    );
    assert!(record.is_paused(), "not held");
    assert!(
        record.local_response.is_none(),
        "answered: {:?}",
        record.local_response
    );
}

/// The local answer: status, headers, JSON body.
pub fn answered(req: &HttpContext) -> (u32, HeaderMap, Value) {
    let record = req.record();
    assert!(!record.sent_upstream(), "sent upstream");
    let answer = record.local_response.expect("a local answer");
    let body = serde_json::from_slice(&answer.body).unwrap();
    (answer.status, answer.headers, body)
}

/// Asserts a `401 invalid_token` with this reason, and that the answer
/// does not echo `token`.
pub fn assert_invalid_token(req: &HttpContext, reason: &str, token: &str) {
    let (status, headers, body) = answered(req);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    let challenge = headers.get("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains(&format!("realm=\"{RESOURCE}\"")),
        "{challenge}"
    );
    let answer = req.record().local_response.unwrap();
    let text = format!("{} {:?}", answer.body_text(), answer.headers);
    assert!(!text.contains(token), "the answer echoes the token: {text}");
    if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() > 16) {
        assert!(!text.contains(signature), "the answer echoes the signature");
    }
}

/// Asserts a `503 jwks_unavailable`.
pub fn assert_jwks_unavailable(req: &HttpContext) {
    let (status, headers, body) = answered(req);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert_eq!(body["reason"], "jwks_unavailable", "{body}");
    assert!(headers.get("retry-after").is_some());
}

/// The `x-agentward-*` headers and `claim_to_headers` targets a request
/// went upstream with, sorted: what both signature paths must agree on.
pub fn identity_of(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .pairs()
        .iter()
        .filter(|(n, _)| n.starts_with("x-agentward-") || n == "x-org-id" || n == "x-roles")
        .cloned()
        .collect();
    out.sort();
    out
}

/// The verified claims forwarded in `x-agentward-claims`.
pub fn forwarded_claims(headers: &HeaderMap) -> Value {
    let encoded = headers.get("x-agentward-claims").unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap()
}

// ---------------------------------------------------------------- JWKS callouts

/// The one pending JWKS callout (the plugin starts fetches on configure
/// and on ticks: tick once if none is pending yet).
pub fn jwks_call(host: &Host) -> HttpCall {
    if host.pending_http_calls().is_empty() {
        host.tick().unwrap();
    }
    let pending = host.pending_http_calls();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let call = pending[0].clone();
    assert_eq!(call.cluster, CLUSTER);
    assert_eq!(call.header(":method"), Some("GET"));
    assert_eq!(call.header(":path"), Some("/.well-known/jwks.json"));
    assert_eq!(call.header(":authority"), Some("idp.example.com"));
    call
}

/// Answers a JWKS callout with 200 and this document.
pub fn answer_jwks(host: &Host, call: &HttpCall, document: &Value) {
    let body = document.to_string();
    let headers = [("content-type", "application/json")];
    host.answer_http_call(call.token, 200, &headers, body.as_bytes())
        .unwrap();
}

/// Moves the host clock and runs one tick.
pub fn advance_and_tick(host: &Host, by: StdDuration) {
    host.advance(by);
    host.tick().unwrap();
}
