//! Signature verification, behind one trait so each host can bring its
//! fastest verifier: Envoy's BoringSSL through the `verify_signature` foreign
//! function, or pure Rust (jwt-simple) anywhere.

use crate::jwks::{Jwk, PublicKey};
use crate::policy::Algorithm;

/// Verifies one JWS signature over `signing_input` (`header.payload`).
pub trait SignatureCheck {
    /// `Some(valid)` when checked; `None` when this verifier cannot check this
    /// algorithm (the caller then falls back to [`PureRust`]).
    fn check(
        &self,
        alg: Algorithm,
        key: &Jwk,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Option<bool>;
}

/// Pure-Rust verification of the signature alone (over `header.payload`),
/// with the crates jwt-simple is built on: p256, p384, ed25519-compact and
/// superboring (RSA). Works on every host. Verifying the signature alone,
/// rather than a whole token through a JWT library that re-parses its
/// claims, keeps the answers identical to the host path's.
pub struct PureRust;

impl SignatureCheck for PureRust {
    fn check(&self, alg: Algorithm, key: &Jwk, text: &[u8], signature: &[u8]) -> Option<bool> {
        Some(pure_verify(alg, &key.key, text, signature).unwrap_or(false))
    }
}

fn pure_verify(alg: Algorithm, key: &PublicKey, text: &[u8], signature: &[u8]) -> Option<bool> {
    use p256::ecdsa::signature::Verifier as _;
    Some(match (alg, key) {
        (Algorithm::ES256, PublicKey::P256(point)) => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).ok()?;
            let sig = p256::ecdsa::Signature::from_slice(signature).ok()?;
            key.verify(text, &sig).is_ok()
        }
        (Algorithm::ES384, PublicKey::P384(point)) => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).ok()?;
            let sig = p384::ecdsa::Signature::from_slice(signature).ok()?;
            key.verify(text, &sig).is_ok()
        }
        (Algorithm::EdDSA, PublicKey::Ed25519(x)) => {
            let key = ed25519_compact::PublicKey::from_slice(x).ok()?;
            let sig = ed25519_compact::Signature::from_slice(signature).ok()?;
            key.verify(text, &sig).is_ok()
        }
        (alg, PublicKey::Rsa { n, e }) => rsa_verify(alg, n, e, text, signature)?,
        _ => false,
    })
}

fn rsa_verify(alg: Algorithm, n: &[u8], e: &[u8], text: &[u8], signature: &[u8]) -> Option<bool> {
    use superboring::{bn::BigNum, hash::MessageDigest, pkey::PKey, rsa::Padding, rsa::Rsa};
    let (digest, padding) = match alg {
        Algorithm::RS256 => (MessageDigest::sha256(), Padding::PKCS1),
        Algorithm::RS384 => (MessageDigest::sha384(), Padding::PKCS1),
        Algorithm::RS512 => (MessageDigest::sha512(), Padding::PKCS1),
        Algorithm::PS256 => (MessageDigest::sha256(), Padding::PKCS1_PSS),
        Algorithm::PS384 => (MessageDigest::sha384(), Padding::PKCS1_PSS),
        Algorithm::PS512 => (MessageDigest::sha512(), Padding::PKCS1_PSS),
        _ => return Some(false),
    };
    let rsa = Rsa::from_public_components(BigNum::from_slice(n).ok()?, BigNum::from_slice(e).ok()?)
        .ok()?;
    let pkey = PKey::from_rsa(rsa).ok()?;
    let mut verifier = superboring::sign::Verifier::new(digest, &pkey).ok()?;
    verifier.set_rsa_padding(padding).ok()?;
    verifier.update(text).ok()?;
    verifier.verify(signature).ok()
}

/// Envoy's `verify_signature` foreign function: which algorithms it can take
/// (ECDSA and RSA PKCS#1 v1.5 only) and the hash it needs.
pub fn foreign_hash(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::ES256 | Algorithm::RS256 => Some("sha256"),
        Algorithm::ES384 | Algorithm::RS384 => Some("sha384"),
        Algorithm::RS512 => Some("sha512"),
        _ => None,
    }
}

/// Encodes `VerifySignatureArguments { hash_function = 1; public_key = 2 (DER);
/// signature = 3; text = 4 }` for Envoy's foreign function. ECDSA signatures
/// are converted to DER. `None` when the algorithm cannot go through Envoy.
pub fn foreign_arguments(
    alg: Algorithm,
    key: &Jwk,
    text: &[u8],
    signature: &[u8],
) -> Option<Vec<u8>> {
    let hash = foreign_hash(alg)?;
    let der_signature;
    let signature = match key.key {
        PublicKey::P256(_) | PublicKey::P384(_) => {
            der_signature = crate::der::ecdsa_signature(signature)?;
            &der_signature[..]
        }
        PublicKey::Rsa { .. } => signature,
        PublicKey::Ed25519(_) => return None,
    };
    let mut out = Vec::with_capacity(text.len() + signature.len() + key.spki_der.len() + 24);
    field(&mut out, 1, hash.as_bytes());
    field(&mut out, 2, &key.spki_der);
    field(&mut out, 3, signature);
    field(&mut out, 4, text);
    Some(out)
}

/// Reads `VerifySignatureResult { bool result = 1; string error = 2; }`:
/// an absent `result` means false.
pub fn foreign_result(bytes: &[u8]) -> bool {
    let mut i = 0;
    let mut result = false;
    while i < bytes.len() {
        let Some((tag, n)) = varint(&bytes[i..]) else {
            return false;
        };
        i += n;
        match tag & 7 {
            0 => {
                let Some((v, n)) = varint(&bytes[i..]) else {
                    return false;
                };
                i += n;
                if tag >> 3 == 1 {
                    result = v != 0;
                }
            }
            2 => {
                let Some((len, n)) = varint(&bytes[i..]) else {
                    return false;
                };
                i = i.saturating_add(n).saturating_add(len as usize);
            }
            _ => return false,
        }
    }
    result
}

fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(out, number << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_true_false_and_absent() {
        assert!(foreign_result(&[0x08, 0x01]));
        assert!(!foreign_result(&[0x08, 0x00]));
        assert!(!foreign_result(&[0x12, 0x03, b'b', b'a', b'd']));
        assert!(!foreign_result(&[]));
        assert!(!foreign_result(&[0x12, 0x7f]));
    }

    #[test]
    fn arguments_are_length_delimited_fields() {
        let key = Jwk {
            kid: None,
            alg: None,
            key: PublicKey::Rsa {
                n: vec![0xc1; 256],
                e: vec![1, 0, 1],
            },
            spki_der: vec![9; 3],
        };
        let out = foreign_arguments(Algorithm::RS256, &key, b"hi", &[7; 2]).unwrap();
        assert_eq!(
            out,
            [
                &[0x0a, 6][..],
                b"sha256",
                &[0x12, 3, 9, 9, 9],
                &[0x1a, 2, 7, 7],
                &[0x22, 2],
                b"hi"
            ]
            .concat()
        );
        assert!(foreign_arguments(Algorithm::PS256, &key, b"hi", &[7; 2]).is_none());
    }
}
