//! JSON Web Key Sets (RFC 7517): the issuer's public keys, kept both as raw
//! components (for the pure-Rust verifier) and as DER SubjectPublicKeyInfo
//! (for Envoy's BoringSSL `verify_signature`).

use crate::der;
use crate::policy::Algorithm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use std::fmt;

pub mod schedule;
pub use schedule::Schedule;

/// Most keys a JWKS may hold; more is refused (a fetch is untrusted input).
pub const MAX_KEYS: usize = 64;

/// An issuer's usable signing keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    /// Keys in document order.
    pub keys: Vec<Jwk>,
}

/// One public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`, if the key has one.
    pub kid: Option<String>,
    /// `alg`, if the key is pinned to one algorithm.
    pub alg: Option<Algorithm>,
    /// The key material.
    pub key: PublicKey,
    /// DER SubjectPublicKeyInfo of the key.
    pub spki_der: Vec<u8>,
}

/// Key material by key type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// NIST P-256: uncompressed SEC1 point `04 || x || y`.
    P256(Vec<u8>),
    /// NIST P-384: uncompressed SEC1 point.
    P384(Vec<u8>),
    /// RSA modulus and exponent, big-endian.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// Ed25519 public key.
    Ed25519(Vec<u8>),
}

/// Why a JWKS could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksError(pub String);

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JwksError {}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document. Keys for encryption, of unknown types or for
    /// algorithms we never accept are skipped; a set left without a usable
    /// signing key, or a key that is malformed, is an error.
    pub fn parse(json: &[u8]) -> Result<KeySet, JwksError> {
        let raw: RawSet = serde_json::from_slice(json)
            .map_err(|_| JwksError("not a JWKS document (`{\"keys\": [...]}`)".into()))?;
        if raw.keys.len() > MAX_KEYS {
            return Err(JwksError(format!("more than {MAX_KEYS} keys")));
        }
        let mut keys = Vec::new();
        for (i, value) in raw.keys.into_iter().enumerate() {
            let key: RawKey = serde_json::from_value(value)
                .map_err(|_| JwksError(format!("keys[{i}]: not a JWK")))?;
            if key.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let alg = match key.alg.as_deref() {
                None => None,
                Some(name) => match Algorithm::from_name(name) {
                    Some(alg) => Some(alg),
                    None => continue,
                },
            };
            let Some(public) = parse_key(&key).map_err(|m| JwksError(format!("keys[{i}]: {m}")))?
            else {
                continue;
            };
            if let Some(alg) = alg {
                if !fits(alg, &public) {
                    return Err(JwksError(format!(
                        "keys[{i}]: `alg` {alg} does not fit the key type"
                    )));
                }
            }
            let spki_der = der::spki(&public);
            keys.push(Jwk {
                kid: key.kid,
                alg,
                key: public,
                spki_der,
            });
        }
        if keys.is_empty() {
            return Err(JwksError("no usable signing key".into()));
        }
        Ok(KeySet { keys })
    }

    /// Keys that may verify `alg`, restricted to `kid` when the token names one.
    pub fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| {
            kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
                && k.alg.is_none_or(|a| a == alg)
                && fits(alg, &k.key)
        })
    }

    /// Whether a key with this `kid` exists.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Whether `alg` can be verified with `key`.
pub fn fits(alg: Algorithm, key: &PublicKey) -> bool {
    use Algorithm::*;
    matches!(
        (alg, key),
        (ES256, PublicKey::P256(_))
            | (ES384, PublicKey::P384(_))
            | (
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512,
                PublicKey::Rsa { .. }
            )
            | (EdDSA, PublicKey::Ed25519(_))
    )
}

fn b64(field: &str, value: &Option<String>) -> Result<Vec<u8>, String> {
    let value = value.as_deref().ok_or(format!("missing `{field}`"))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("`{field}` is not base64url"))
}

fn parse_key(key: &RawKey) -> Result<Option<PublicKey>, String> {
    match key.kty.as_str() {
        "EC" => {
            let (size, p256) = match key.crv.as_deref() {
                Some("P-256") => (32, true),
                Some("P-384") => (48, false),
                _ => return Ok(None),
            };
            let x = b64("x", &key.x)?;
            let y = b64("y", &key.y)?;
            if x.len() != size || y.len() != size {
                return Err("EC coordinates have the wrong length".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(Some(if p256 {
                PublicKey::P256(point)
            } else {
                PublicKey::P384(point)
            }))
        }
        "RSA" => {
            let n = strip_zeros(b64("n", &key.n)?);
            let e = strip_zeros(b64("e", &key.e)?);
            if n.len() < 256 {
                return Err("RSA keys shorter than 2048 bits are refused".into());
            }
            if n.len() > 1024 || e.is_empty() || e.len() > 8 {
                return Err("RSA key out of bounds".into());
            }
            Ok(Some(PublicKey::Rsa { n, e }))
        }
        "OKP" => match key.crv.as_deref() {
            Some("Ed25519") => {
                let x = b64("x", &key.x)?;
                if x.len() != 32 {
                    return Err("Ed25519 key has the wrong length".into());
                }
                Ok(Some(PublicKey::Ed25519(x)))
            }
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256: &str = r#"{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn p256_key_parses_with_its_spki() {
        let set = KeySet::parse(format!(r#"{{"keys":[{P256}]}}"#).as_bytes()).unwrap();
        let k = &set.keys[0];
        assert_eq!(k.kid.as_deref(), Some("k1"));
        assert!(matches!(k.key, PublicKey::P256(ref p) if p.len() == 65));
        assert_eq!(k.spki_der.len(), 91);
        assert_eq!(set.candidates(Algorithm::ES256, Some("k1")).count(), 1);
        assert_eq!(set.candidates(Algorithm::ES256, Some("k2")).count(), 0);
        assert_eq!(set.candidates(Algorithm::RS256, None).count(), 0);
    }

    #[test]
    fn encryption_and_symmetric_keys_are_skipped() {
        let doc = format!(
            r#"{{"keys":[{{"kty":"oct","k":"AAAA"}},{{"kty":"EC","use":"enc","crv":"P-256","x":"","y":""}},{P256}]}}"#
        );
        assert_eq!(KeySet::parse(doc.as_bytes()).unwrap().keys.len(), 1);
    }

    #[test]
    fn short_rsa_key_is_refused() {
        let doc = r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#;
        assert!(KeySet::parse(doc.as_bytes())
            .unwrap_err()
            .0
            .contains("2048"));
    }

    #[test]
    fn empty_or_garbage_sets_are_errors() {
        assert!(KeySet::parse(br#"{"keys":[]}"#).is_err());
        assert!(KeySet::parse(b"<html>").is_err());
    }

    #[test]
    fn mismatched_alg_is_refused() {
        let doc = P256.replace("\"kid\"", "\"alg\":\"RS256\",\"kid\"");
        assert!(KeySet::parse(format!(r#"{{"keys":[{doc}]}}"#).as_bytes()).is_err());
    }
}
