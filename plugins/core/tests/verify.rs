//! Token verification end to end in core: real signatures from jwt-simple,
//! every refusal reason, both the pure path and a host verifier that declines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::jwks::{Jwk, KeySet};
use agentward_core::jwt::{verify, Rejection, TrustStore};
use agentward_core::policy::{Algorithm, Policy};
use agentward_core::signature::{PureRust, SignatureCheck};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::json;
use std::cell::Cell;

const ISS: &str = "https://idp.example.com/";
const AUD: &str = "https://api.example.com";

struct Keys {
    es: ES256KeyPair,
    ed: Ed25519KeyPair,
}

fn keys() -> Keys {
    Keys {
        es: ES256KeyPair::generate().with_key_id("es1"),
        ed: Ed25519KeyPair::generate().with_key_id("ed1"),
    }
}

fn jwks(k: &Keys) -> serde_json::Value {
    let p = k.es.public_key().public_key().to_bytes_uncompressed();
    let ed = k.ed.public_key().to_bytes();
    json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "es1", "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": URL_SAFE_NO_PAD.encode(ed)}
    ]})
}

fn trust(k: &Keys, extra: serde_json::Value) -> TrustStore {
    let mut issuer = json!({"issuer": ISS, "audiences": [AUD], "jwks": jwks(k)});
    for (key, v) in extra.as_object().unwrap() {
        issuer[key] = v.clone();
    }
    let p = Policy::parse(
        json!({"resource": AUD, "issuers": [issuer]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    TrustStore::new(p.issuers, p.clock_skew_seconds)
}

fn now() -> u64 {
    Clock::now_since_epoch().as_secs()
}

fn claims() -> JWTClaims<serde_json::Value> {
    Claims::with_custom_claims(json!({"azp": "stock-agent"}), Duration::from_secs(300))
        .with_issuer(ISS)
        .with_audience(AUD)
        .with_subject("alice")
}

fn forge(header: serde_json::Value, payload: serde_json::Value) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}

fn payload(exp_offset: i64) -> serde_json::Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": (now() as i64 + exp_offset)})
}

#[test]
fn es256_and_eddsa_tokens_verify() {
    let k = keys();
    let t = trust(&k, json!({}));
    let es = k.es.sign(claims()).unwrap();
    let v = verify(&es, &t, now(), &PureRust).unwrap();
    assert_eq!(v.claims["sub"], "alice");
    assert_eq!(v.claims["azp"], "stock-agent");
    let ed = k.ed.sign(claims()).unwrap();
    assert!(verify(&ed, &t, now(), &PureRust).is_ok());
}

#[test]
fn expiry_honours_the_leeway() {
    let k = keys();
    let t = trust(&k, json!({}));
    let c = Claims::with_custom_claims(json!({}), Duration::from_secs(60))
        .with_issuer(ISS)
        .with_audience(AUD);
    let token = k.es.sign(c).unwrap();
    assert!(verify(&token, &t, now() + 60 + 29, &PureRust).is_ok());
    assert_eq!(
        verify(&token, &t, now() + 60 + 31, &PureRust),
        Err(Rejection::Expired)
    );
}

#[test]
fn not_yet_valid_is_refused() {
    let k = keys();
    let t = trust(&k, json!({}));
    let c = claims().invalid_before(Clock::now_since_epoch() + Duration::from_secs(120));
    let token = k.es.sign(c).unwrap();
    assert_eq!(
        verify(&token, &t, now(), &PureRust),
        Err(Rejection::NotYetValid)
    );
}

#[test]
fn wrong_audience_and_issuer_are_refused() {
    let k = keys();
    let t = trust(&k, json!({}));
    let c = claims().with_audience("https://other");
    assert_eq!(
        verify(&k.es.sign(c).unwrap(), &t, now(), &PureRust),
        Err(Rejection::WrongAudience)
    );
    let c = claims().with_issuer("https://evil/");
    assert_eq!(
        verify(&k.es.sign(c).unwrap(), &t, now(), &PureRust),
        Err(Rejection::UnknownIssuer)
    );
    let c = claims().with_audiences(HashSet::from_iter([AUD.to_string(), "x".to_string()]));
    assert!(verify(&k.es.sign(c).unwrap(), &t, now(), &PureRust).is_ok());
}

#[test]
fn alg_outside_the_allow_list_is_refused() {
    let k = keys();
    let t = trust(&k, json!({"algorithms": ["ES256"]}));
    assert_eq!(
        verify(&k.ed.sign(claims()).unwrap(), &t, now(), &PureRust),
        Err(Rejection::AlgNotAllowed)
    );
    for alg in ["none", "HS256", "PS256"] {
        let token = forge(json!({"alg": alg, "kid": "es1"}), payload(300));
        assert_eq!(
            verify(&token, &t, now(), &PureRust),
            Err(Rejection::AlgNotAllowed),
            "{alg}"
        );
    }
}

#[test]
fn crit_header_is_refused() {
    let k = keys();
    let t = trust(&k, json!({}));
    let token = forge(
        json!({"alg": "ES256", "kid": "es1", "crit": ["exp"]}),
        payload(300),
    );
    assert_eq!(
        verify(&token, &t, now(), &PureRust),
        Err(Rejection::CritUnsupported)
    );
}

#[test]
fn bad_signature_and_unknown_kid() {
    let k = keys();
    let t = trust(&k, json!({}));
    let token = forge(json!({"alg": "ES256", "kid": "es1"}), payload(300));
    assert_eq!(
        verify(&token, &t, now(), &PureRust),
        Err(Rejection::BadSignature)
    );
    let other = ES256KeyPair::generate().with_key_id("es1");
    assert_eq!(
        verify(&other.sign(claims()).unwrap(), &t, now(), &PureRust),
        Err(Rejection::BadSignature)
    );
    let unknown = ES256KeyPair::generate().with_key_id("es9");
    assert_eq!(
        verify(&unknown.sign(claims()).unwrap(), &t, now(), &PureRust),
        Err(Rejection::UnknownKid)
    );
}

#[test]
fn sizes_shapes_and_claim_types() {
    let k = keys();
    let t = trust(&k, json!({}));
    assert_eq!(
        verify(&"a".repeat(9000), &t, now(), &PureRust),
        Err(Rejection::TooLarge)
    );
    let big_header = forge(json!({"alg": "ES256", "x": "y".repeat(2000)}), payload(300));
    assert_eq!(
        verify(&big_header, &t, now(), &PureRust),
        Err(Rejection::TooLarge)
    );
    for bad in ["", "abc", "a.b", "a.b.c.d", "!!.??.##"] {
        assert_eq!(
            verify(bad, &t, now(), &PureRust),
            Err(Rejection::Malformed),
            "{bad}"
        );
    }
    let mut p = payload(300);
    p.as_object_mut().unwrap().remove("exp");
    let token = k.es.sign(Claims::with_custom_claims(
        p.clone(),
        Duration::from_secs(1),
    ));
    let _ = token; // jwt-simple always sets exp; forge instead
    let no_exp = forge(json!({"alg": "ES256", "kid": "es1"}), p);
    // The signature is checked before claims: a forged token is a bad signature.
    assert_eq!(
        verify(&no_exp, &t, now(), &PureRust),
        Err(Rejection::BadSignature)
    );
    let mut p = payload(300);
    p["exp"] = json!("soon");
    let bad_type = forge(json!({"alg": "ES256", "kid": "es1"}), p);
    assert_eq!(
        verify(&bad_type, &t, now(), &PureRust),
        Err(Rejection::BadClaim)
    );
}

#[test]
fn typ_is_checked_when_configured() {
    let k = keys();
    let t = trust(&k, json!({"typ": "at+jwt"}));
    // jwt-simple writes typ "JWT".
    assert_eq!(
        verify(&k.es.sign(claims()).unwrap(), &t, now(), &PureRust),
        Err(Rejection::WrongTyp)
    );
    let t = trust(&k, json!({}));
    let token = forge(
        json!({"alg": "ES256", "kid": "es1", "typ": "JOSE+json"}),
        payload(300),
    );
    assert_eq!(
        verify(&token, &t, now(), &PureRust),
        Err(Rejection::WrongTyp)
    );
}

#[test]
fn missing_keys_are_reported_for_the_issuer() {
    let k = keys();
    let p = Policy::parse(
        json!({"resource": AUD, "issuers": [{"issuer": ISS, "audiences": [AUD],
            "jwks_uri": "http://idp/jwks", "jwks_cluster": "idp"}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let mut t = TrustStore::new(p.issuers, 30);
    let token = k.es.sign(claims()).unwrap();
    assert_eq!(
        verify(&token, &t, now(), &PureRust),
        Err(Rejection::KeysUnavailable(0))
    );
    t.set_keys(0, KeySet::parse(jwks(&k).to_string().as_bytes()).unwrap());
    assert!(verify(&token, &t, now(), &PureRust).is_ok());
}

/// A host verifier that declines everything: verification must fall back.
struct Declines(Cell<u32>);

impl SignatureCheck for Declines {
    fn check(&self, _: Algorithm, _: &Jwk, _: &[u8], _: &[u8]) -> Option<bool> {
        self.0.set(self.0.get() + 1);
        None
    }
}

/// A host verifier with the opposite opinion: its answer is final.
struct Refuses;

impl SignatureCheck for Refuses {
    fn check(&self, _: Algorithm, _: &Jwk, _: &[u8], _: &[u8]) -> Option<bool> {
        Some(false)
    }
}

#[test]
fn host_verifier_is_asked_first_and_falls_back() {
    let k = keys();
    let t = trust(&k, json!({}));
    let token = k.es.sign(claims()).unwrap();
    let host = Declines(Cell::new(0));
    assert!(verify(&token, &t, now(), &host).is_ok());
    assert_eq!(host.0.get(), 1);
    assert_eq!(
        verify(&token, &t, now(), &Refuses),
        Err(Rejection::BadSignature)
    );
}
