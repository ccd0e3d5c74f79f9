//! The identity proof: what lets a filter after jwt-identity trust the
//! identity headers without verifying the bearer token again, and without
//! trusting that the chain in front of it is the one the operator meant.
//!
//! jwt-identity keeps one random key per Envoy (in proxy-wasm shared data,
//! which every VM with the same `vm_id` reads) and adds `x-agentward-proof`:
//! a MAC under that key over the identity headers it set and the signature
//! of the bearer token it verified. A later filter recomputes the MAC from
//! the request as it arrives: identity headers that a client wrote, or that
//! belong to another bearer token, do not match. Nobody outside the process
//! knows the key, so nobody can make a proof for headers of their choosing.
//!
//! The MAC is the 128-bit SipHash-2-4 under a 128-bit key. SipHash is a
//! keyed PRF built as a MAC for short messages; a forgery takes the key or a
//! 2^-128 guess per request, and each guess is a request to the gateway. It
//! is computed once per verified token (the proof is cached with the other
//! identity headers) and, in token-exchange, once per token and VM; over the
//! ~1 KB of identity headers it costs a fraction of HMAC-SHA-256 in wasm.

use crate::identity::{
    ReceivedIdentity, VerifiedIdentity, ACT, AGENT, CLAIMS, ISSUER, PRINCIPAL, SCOPE, SUB,
};
use crate::response::{quoted, resource_metadata_url, LocalResponse};
use crate::shared_cache::SharedCache;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use siphasher::sip128::{Hasher128, SipHasher24};
use std::cell::Cell;
use std::hash::Hasher;

/// The header that carries the proof.
pub const PROOF: &str = "x-agentward-proof";

/// The per-request property in which jwt-identity leaves the binding of the
/// identity it proved: the [`signature_part`] of the bearer token the proof
/// covers. A later filter checks the proof against it, so the proof holds
/// on routes where jwt-identity removed the token before the request went
/// on. In Envoy it is the filter state `wasm.agentward_binding` of that one
/// stream: only a wasm filter in the chain can set it, never a client, and
/// it dies with the request, so identity headers and a proof replayed from
/// an upstream's logs prove nothing without the token.
pub const BINDING: &str = "agentward_binding";

/// The shared-data key under which the proof key is kept. Shared data is
/// namespaced by `vm_id`: every filter that checks proofs must be configured
/// with jwt-identity's `vm_id`.
pub const KEY_NAME: &str = "agentward.proof_key";

/// The identity headers a proof covers, in the order they are MACed. An
/// absent header is MACed as absent, so adding one breaks the proof too.
pub const COVERED: [&str; 7] = [SUB, AGENT, ACT, SCOPE, ISSUER, CLAIMS, PRINCIPAL];

/// What a proof's MAC input starts with (the format's version).
const DOMAIN: &[u8] = b"agentward identity proof v1";

/// Length of a proof: 16 bytes, base64url without padding.
const PROOF_LEN: usize = 22;

/// The key proofs are made and checked with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProofKey([u8; 16]);

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKey(..)")
    }
}

impl ProofKey {
    /// A fresh random key (the host's `random_get` in a wasm VM).
    pub fn generate() -> ProofKey {
        let (a, b) = crate::cache::random_secret();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        ProofKey(bytes)
    }

    /// The key stored as `bytes` (exactly 16), as [`ProofKey::to_bytes`] wrote it.
    pub fn from_bytes(bytes: &[u8]) -> Option<ProofKey> {
        bytes.try_into().ok().map(ProofKey)
    }

    /// The key as stored in shared data.
    pub fn to_bytes(&self) -> [u8; 16] {
        self.0
    }

    /// The proof for the identity headers (`header` looks one up by name)
    /// of the bearer token `token`.
    pub fn prove<'a>(&self, header: impl Fn(&str) -> Option<&'a str>, token: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(header, token))
    }

    /// Whether `proof` is the proof for these identity headers and this
    /// bearer token. Compares in constant time.
    pub fn check<'a>(
        &self,
        proof: &str,
        header: impl Fn(&str) -> Option<&'a str>,
        token: &str,
    ) -> bool {
        proof.len() == PROOF_LEN && same(proof.as_bytes(), self.prove(header, token).as_bytes())
    }

    fn mac<'a>(&self, header: impl Fn(&str) -> Option<&'a str>, token: &str) -> [u8; 16] {
        let (k0, k1) = self.0.split_at(8);
        let word = |b: &[u8]| b.try_into().map_or(0, u64::from_le_bytes);
        let mut h = SipHasher24::new_with_keys(word(k0), word(k1));
        h.write(DOMAIN);
        let mut part = |bytes: Option<&[u8]>| match bytes {
            None => h.write_u8(0),
            Some(bytes) => {
                h.write_u8(1);
                h.write(&(bytes.len() as u64).to_le_bytes());
                h.write(bytes);
            }
        };
        for name in COVERED {
            part(header(name).map(str::as_bytes));
        }
        part(Some(signature_part(token).as_bytes()));
        h.finish128().as_bytes()
    }
}

/// Appends the proof to identity headers as jwt-identity sets them, for
/// the bearer token they were verified from (of two headers with one name,
/// the later counts, as it does when both are set on a request).
pub fn seal(key: &ProofKey, headers: &mut Vec<(String, String)>, token: &str) {
    let proof = key.prove(
        |name| {
            headers
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        },
        token,
    );
    headers.push((PROOF.to_string(), proof));
}

/// The part of a bearer token a proof names: a JWS's signature (it tells
/// verified tokens apart: two tokens with one signature would need a hash
/// collision), or the whole token when it has no dots.
pub fn signature_part(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(_, s)| s)
}

/// Equality that takes as long whatever the bytes are (lengths are public).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// jwt-identity's proof key as a filter after it holds it (scope-fga,
/// ciba-hold, token-exchange): read from the shared cache at start, read
/// again while there is none, and once more when a proof fails under the
/// one held (two VMs that start at once may both write one, and the first
/// read may have lost that race). The one place a later filter verifies
/// the identity headers.
#[derive(Debug, Default)]
pub struct ProofVerifier {
    key: Cell<Option<ProofKey>>,
}

/// A filter that trusts jwt-identity's headers only as far as their proof
/// goes: it holds a [`ProofVerifier`] (read at its start by the host).
pub trait ChecksProofs {
    /// The filter's verifier.
    fn proofs(&self) -> &ProofVerifier;
}

/// Why an identity is not proven, with its answer ([`NotProven::response`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotProven {
    /// No proof key in the shared cache: jwt-identity is not in front
    /// with this filter's `vm_id` (503).
    KeyMissing,
    /// No bearer binding, no proof, or a proof that does not cover these
    /// headers and this binding (401).
    Unproven,
}

impl NotProven {
    /// The answer: [`key_missing`] or [`unproven`] (`resource` is the
    /// policy's, for the challenge).
    pub fn response(self, resource: &str) -> LocalResponse {
        match self {
            NotProven::KeyMissing => key_missing(),
            NotProven::Unproven => unproven(resource),
        }
    }
}

impl ProofVerifier {
    /// A verifier that holds no key yet.
    pub fn new() -> ProofVerifier {
        ProofVerifier::default()
    }

    /// Reads the key from the shared cache now (a host does at start, so
    /// a cache that fails later still has it); whether one is held. A
    /// cache without a readable key keeps the one held.
    pub fn read_key(&self, cache: &impl SharedCache) -> bool {
        if let Some(key) = cache
            .get(KEY_NAME)
            .and_then(|bytes| ProofKey::from_bytes(&bytes))
        {
            self.key.set(Some(key));
        }
        self.has_key()
    }

    /// Whether a key is held.
    pub fn has_key(&self) -> bool {
        self.key.get().is_some()
    }

    /// The key held, if any.
    pub fn key(&self) -> Option<ProofKey> {
        self.key.get()
    }

    /// The identity the headers name, if their proof covers them and
    /// `binding` (the bearer token's [`signature_part`], or the token)
    /// under jwt-identity's key. `cache` is read for the key while none
    /// is held, and once more when the proof fails under the one held.
    pub fn verify<'a>(
        &self,
        identity: &ReceivedIdentity<'a>,
        binding: Option<&str>,
        cache: &impl SharedCache,
    ) -> Result<VerifiedIdentity<'a>, NotProven> {
        let key = match self.key.get() {
            Some(key) => key,
            None if self.read_key(cache) => self.key.get().ok_or(NotProven::KeyMissing)?,
            None => return Err(NotProven::KeyMissing),
        };
        let binding = binding.ok_or(NotProven::Unproven)?;
        identity.verify(&key, binding).or_else(|_| {
            self.read_key(cache);
            match self.key.get() {
                Some(newer) if newer != key => identity
                    .verify(&newer, binding)
                    .map_err(|_| NotProven::Unproven),
                _ => Err(NotProven::Unproven),
            }
        })
    }
}

/// 401 for a request whose identity headers carry no valid proof for its
/// bearer token: a client wrote them, or they belong to another token.
pub fn unproven(resource: &str) -> LocalResponse {
    let challenge = format!(
        "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"identity_unproven\", resource_metadata=\"{}\"",
        quoted(resource),
        quoted(&resource_metadata_url(resource))
    );
    LocalResponse::json(
        401,
        json!({
            "error": "invalid_token",
            "reason": "identity_unproven",
            "error_description": "the identity headers carry no valid x-agentward-proof for this bearer token: jwt-identity must verify the token in front of this filter",
        }),
    )
    .with_header("www-authenticate", challenge)
}

/// 503 when no proof key is in shared data: jwt-identity has not started
/// with this filter's `vm_id`, so no identity can be checked.
pub fn key_missing() -> LocalResponse {
    crate::response::unavailable(
        "proof_key_missing",
        "no identity proof key: jwt-identity must run in front of this filter, configured with the same vm_id",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    fn alice(name: &str) -> Option<&'static str> {
        match name {
            SUB => Some("alice"),
            ISSUER => Some("https://idp/"),
            SCOPE => Some("portfolio:read"),
            CLAIMS => Some("eyJzdWIiOiJhbGljZSJ9"),
            _ => None,
        }
    }

    fn key() -> ProofKey {
        ProofKey::from_bytes(&[7; 16]).unwrap()
    }

    #[test]
    fn a_proof_checks_for_its_headers_and_token() {
        let proof = key().prove(alice, TOKEN);
        assert_eq!(proof.len(), PROOF_LEN);
        assert!(key().check(&proof, alice, TOKEN));
        // Deterministic under one key.
        assert_eq!(proof, key().prove(alice, TOKEN));
    }

    #[test]
    fn the_proof_binds_the_tokens_signature_only() {
        let proof = key().prove(alice, TOKEN);
        assert!(!key().check(
            &proof,
            alice,
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.b3RoZXI"
        ));
        assert!(!key().check(&proof, alice, "opaque"));
        // The signature names the token: header and payload add nothing.
        assert!(key().check(&proof, alice, "x.y.c2lnbmF0dXJl"));
    }

    #[test]
    fn any_changed_added_or_removed_header_breaks_it() {
        let proof = key().prove(alice, TOKEN);
        for name in COVERED {
            let changed = |n: &str| {
                if n == name {
                    Some("mallory")
                } else {
                    alice(n)
                }
            };
            assert!(!key().check(&proof, changed, TOKEN), "{name} changed");
            let removed = |n: &str| if n == name { None } else { alice(n) };
            if alice(name).is_some() {
                assert!(!key().check(&proof, removed, TOKEN), "{name} removed");
            }
        }
        // Absent and empty differ.
        let empty = |n: &str| if n == AGENT { Some("") } else { alice(n) };
        assert!(!key().check(&proof, empty, TOKEN));
    }

    #[test]
    fn order_and_boundaries_count() {
        // Values moved between headers, or split differently, differ.
        let a = |n: &str| match n {
            SUB => Some("ab"),
            AGENT => Some("c"),
            _ => None,
        };
        let b = |n: &str| match n {
            SUB => Some("a"),
            AGENT => Some("bc"),
            _ => None,
        };
        let swapped = |n: &str| match n {
            SUB => Some("c"),
            AGENT => Some("ab"),
            _ => None,
        };
        let pa = key().prove(a, TOKEN);
        assert_ne!(pa, key().prove(b, TOKEN));
        assert_ne!(pa, key().prove(swapped, TOKEN));
    }

    #[test]
    fn tampered_proofs_and_other_keys_fail() {
        let proof = key().prove(alice, TOKEN);
        let mut tampered = proof.clone().into_bytes();
        tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
        assert!(!key().check(std::str::from_utf8(&tampered).unwrap(), alice, TOKEN));
        assert!(!key().check("", alice, TOKEN));
        assert!(!key().check(&format!("{proof}A"), alice, TOKEN));
        let other = ProofKey::from_bytes(&[8; 16]).unwrap();
        assert!(!other.check(&proof, alice, TOKEN));
        assert_ne!(ProofKey::generate(), ProofKey::generate());
    }

    #[test]
    fn seal_appends_the_proof_of_the_headers_it_is_given() {
        let mut headers: Vec<(String, String)> = COVERED
            .iter()
            .filter_map(|n| alice(n).map(|v| (n.to_string(), v.to_string())))
            .collect();
        seal(&key(), &mut headers, TOKEN);
        let (name, proof) = headers.last().unwrap();
        assert_eq!(name, PROOF);
        assert_eq!(proof, &key().prove(alice, TOKEN));
    }

    #[test]
    fn keys_round_trip_and_wrong_lengths_are_refused() {
        let k = ProofKey::generate();
        assert_eq!(ProofKey::from_bytes(&k.to_bytes()), Some(k));
        assert_eq!(ProofKey::from_bytes(&[0; 15]), None);
        assert_eq!(ProofKey::from_bytes(&[0; 32]), None);
        assert_eq!(format!("{k:?}"), "ProofKey(..)");
    }

    #[test]
    fn refusals_name_the_fix_and_echo_nothing() {
        let r = unproven("https://api.example.com");
        assert_eq!(r.status, 401);
        assert!(r.body.contains("\"invalid_token\"") && r.body.contains("jwt-identity"));
        let r = key_missing();
        assert_eq!(r.status, 503);
        assert!(r.body.contains("vm_id"));
    }
}
