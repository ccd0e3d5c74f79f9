//! Foreign functions (`proxy_call_foreign_function`): Envoy's
//! `verify_signature`, done natively with the RustCrypto crates.
//!
//! Its semantics mirror Envoy 1.40 over BoringSSL (`EVP_DigestVerify`):
//! - the arguments and result are protobuf messages, hand-coded here;
//! - exactly one of `public_key` (DER SubjectPublicKeyInfo) and
//!   `public_key_pem` must be set, else `BadArgument`; an unparsable
//!   message is `BadArgument` too;
//! - hashes are sha1/sha224/sha256/sha384/sha512, named case-insensitively;
//! - ECDSA (P-256, P-384) takes strict DER `SEQUENCE{r, s}` and accepts
//!   high-S; RSA is PKCS#1 v1.5 only;
//! - a signature that does not verify, an unknown hash or an unusable key
//!   still answers `Ok`, with `result` absent (false) and Envoy's error text.

use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs1v15::Pkcs1v15Sign;
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use spki::der::asn1::ObjectIdentifier;
use spki::der::{Decode, Tagged};
use spki::SubjectPublicKeyInfoRef;

use crate::abi::Status;

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// Envoy's verifier accepts RSA keys up to BoringSSL's limit, not the `rsa`
/// crate's default of 4096 bits.
const RSA_MAX_BITS: usize = 16384;

/// The name of the one foreign function this host offers.
pub const VERIFY_SIGNATURE: &str = "verify_signature";

/// Runs the foreign function `name`; `NotFound` for a function the host
/// does not offer (or has switched off).
pub(crate) fn call(name: &str, arguments: &[u8], verify_enabled: bool) -> Result<Vec<u8>, Status> {
    match name {
        VERIFY_SIGNATURE if verify_enabled => {
            let arguments =
                VerifySignatureArguments::decode(arguments).ok_or(Status::BadArgument)?;
            verify_signature(&arguments).map(|result| result.encode())
        }
        _ => Err(Status::NotFound),
    }
}

/// `envoy.source.extensions.common.wasm.VerifySignatureArguments`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifySignatureArguments {
    /// Field 1: `sha1`, `sha224`, `sha256`, `sha384` or `sha512`.
    pub hash_function: String,
    /// Field 2: the key as DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// Field 3: the signature (DER for ECDSA, the raw block for RSA).
    pub signature: Vec<u8>,
    /// Field 4: the signed bytes.
    pub text: Vec<u8>,
    /// Field 5: the key as a PEM `PUBLIC KEY` block.
    pub public_key_pem: String,
}

/// `envoy.source.extensions.common.wasm.VerifySignatureResult`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifySignatureResult {
    /// Field 1: true when the signature verifies.
    pub result: bool,
    /// Field 2: why it did not.
    pub error: String,
}

impl VerifySignatureArguments {
    /// The protobuf encoding (what a plugin sends).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, self.hash_function.as_bytes());
        put_bytes(&mut out, 2, &self.public_key);
        put_bytes(&mut out, 3, &self.signature);
        put_bytes(&mut out, 4, &self.text);
        put_bytes(&mut out, 5, self.public_key_pem.as_bytes());
        out
    }

    /// Parses the protobuf encoding; `None` when it is malformed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut arguments = Self::default();
        for field in Fields(bytes) {
            match field? {
                (1, Value::Bytes(value)) => arguments.hash_function = utf8(value)?,
                (2, Value::Bytes(value)) => arguments.public_key = value.to_vec(),
                (3, Value::Bytes(value)) => arguments.signature = value.to_vec(),
                (4, Value::Bytes(value)) => arguments.text = value.to_vec(),
                (5, Value::Bytes(value)) => arguments.public_key_pem = utf8(value)?,
                // Like protobuf's own parser, a field with an unexpected
                // wire type is kept as unknown, not an error.
                _ => {}
            }
        }
        Some(arguments)
    }
}

impl VerifySignatureResult {
    /// The protobuf encoding (proto3: default values are left out).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.result {
            out.extend_from_slice(&[1 << 3, 1]);
        }
        put_bytes(&mut out, 2, self.error.as_bytes());
        out
    }

    /// Parses the protobuf encoding; `None` when it is malformed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut result = Self::default();
        for field in Fields(bytes) {
            match field? {
                (1, Value::Varint(value)) => result.result = value != 0,
                (2, Value::Bytes(value)) => result.error = utf8(value)?,
                _ => {}
            }
        }
        Some(result)
    }

    fn failed(error: impl Into<String>) -> Self {
        Self {
            result: false,
            error: error.into(),
        }
    }
}

/// Verifies as Envoy's `verify_signature` does; `Err` only where Envoy
/// returns a non-Ok status (no key, or both encodings of it).
pub fn verify_signature(
    arguments: &VerifySignatureArguments,
) -> Result<VerifySignatureResult, Status> {
    let key_der = match (
        arguments.public_key.is_empty(),
        arguments.public_key_pem.is_empty(),
    ) {
        (false, true) => Some(arguments.public_key.clone()),
        (true, false) => pem_public_key(&arguments.public_key_pem),
        _ => return Err(Status::BadArgument),
    };
    let Some(hash) = Hash::named(&arguments.hash_function) else {
        return Ok(VerifySignatureResult::failed(format!(
            "{} is not supported.",
            arguments.hash_function
        )));
    };
    let Some(key) = key_der.as_deref().and_then(PublicKey::from_spki) else {
        return Ok(VerifySignatureResult::failed(
            "Failed to initialize digest verify.",
        ));
    };
    let digest = hash.digest(&arguments.text);
    if key.verify(hash, &digest, &arguments.signature) {
        Ok(VerifySignatureResult {
            result: true,
            error: String::new(),
        })
    } else {
        Ok(VerifySignatureResult::failed(
            "Failed to verify digest. Error code: 0",
        ))
    }
}

#[derive(Clone, Copy)]
enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn named(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sha1" => Hash::Sha1,
            "sha224" => Hash::Sha224,
            "sha256" => Hash::Sha256,
            "sha384" => Hash::Sha384,
            "sha512" => Hash::Sha512,
            _ => return None,
        })
    }

    fn digest(self, text: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(text).to_vec(),
            Hash::Sha224 => Sha224::digest(text).to_vec(),
            Hash::Sha256 => Sha256::digest(text).to_vec(),
            Hash::Sha384 => Sha384::digest(text).to_vec(),
            Hash::Sha512 => Sha512::digest(text).to_vec(),
        }
    }

    fn pkcs1v15(self) -> Pkcs1v15Sign {
        match self {
            Hash::Sha1 => Pkcs1v15Sign::new::<Sha1>(),
            Hash::Sha224 => Pkcs1v15Sign::new::<Sha224>(),
            Hash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
            Hash::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
            Hash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
        }
    }
}

enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

impl PublicKey {
    /// Parses DER SubjectPublicKeyInfo; `None` for anything BoringSSL would
    /// not verify with a digest (Ed25519, other curves, malformed keys).
    fn from_spki(der: &[u8]) -> Option<Self> {
        let spki = SubjectPublicKeyInfoRef::from_der(der).ok()?;
        let key_bytes = spki.subject_public_key.as_bytes()?;
        let algorithm = spki.algorithm;
        if algorithm.oid == EC_PUBLIC_KEY {
            let curve = algorithm.parameters_oid().ok()?;
            if curve == P256 {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                    .ok()
                    .map(PublicKey::P256)
            } else if curve == P384 {
                p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                    .ok()
                    .map(PublicKey::P384)
            } else {
                None
            }
        } else if algorithm.oid == RSA_ENCRYPTION {
            // BoringSSL insists on NULL parameters for rsaEncryption.
            let parameters = algorithm.parameters?;
            if parameters.tag() != spki::der::Tag::Null || !parameters.value().is_empty() {
                return None;
            }
            let key = rsa::pkcs1::RsaPublicKey::from_der(key_bytes).ok()?;
            rsa::RsaPublicKey::new_with_max_size(
                rsa::BigUint::from_bytes_be(key.modulus.as_bytes()),
                rsa::BigUint::from_bytes_be(key.public_exponent.as_bytes()),
                RSA_MAX_BITS,
            )
            .ok()
            .map(PublicKey::Rsa)
        } else {
            None
        }
    }

    fn verify(&self, hash: Hash, digest: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::P256(key) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|signature| key.verify_prehash(digest, &signature).is_ok()),
            PublicKey::P384(key) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|signature| key.verify_prehash(digest, &signature).is_ok()),
            PublicKey::Rsa(key) => key.verify(hash.pkcs1v15(), digest, signature).is_ok(),
        }
    }
}

/// The DER inside the first `PUBLIC KEY` PEM block, as `PEM_read_bio_PUBKEY`
/// finds it (other blocks and text around it are skipped).
fn pem_public_key(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let body = &pem[start..];
    let body = &body[..body.find(END)?];
    let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .ok()
}

fn utf8(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field; proto3 leaves empty ones out.
fn put_bytes(out: &mut Vec<u8>, field: u64, value: &[u8]) {
    if value.is_empty() {
        return;
    }
    put_varint(out, field << 3 | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterates over the (field number, value) pairs of a protobuf message;
/// yields `None` once, then stops, when the message is malformed.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken)
    }

    fn field(&mut self) -> Option<(u64, Value<'a>)> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            _ => return None,
        };
        match key >> 3 {
            0 => None,
            field => Some((field, value)),
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u64, Value<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_none() {
            self.0 = &[];
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_and_skip_unknown_fields() {
        let arguments = VerifySignatureArguments {
            hash_function: "sha256".into(),
            public_key: vec![1; 200],
            signature: vec![2, 3],
            text: b"text".to_vec(),
            public_key_pem: String::new(),
        };
        let mut bytes = arguments.encode();
        // Unknown fields, and a known one with another wire type, are ignored.
        bytes.extend_from_slice(&[9 << 3, 0x96, 0x01, 10 << 3 | 5, 0, 0, 0, 0, 2 << 3, 1]);
        assert_eq!(VerifySignatureArguments::decode(&bytes), Some(arguments));
    }

    #[test]
    fn malformed_arguments_do_not_parse() {
        // Length runs past the end.
        assert_eq!(
            VerifySignatureArguments::decode(&[1 << 3 | 2, 5, b'a']),
            None
        );
        // A bad wire type (6).
        assert_eq!(VerifySignatureArguments::decode(&[2 << 3 | 6, 1]), None);
        // Invalid UTF-8 in a string field.
        assert_eq!(
            VerifySignatureArguments::decode(&[1 << 3 | 2, 1, 0xff]),
            None
        );
    }

    #[test]
    fn result_encoding_leaves_out_defaults() {
        let ok = VerifySignatureResult {
            result: true,
            error: String::new(),
        };
        assert_eq!(ok.encode(), vec![0x08, 0x01]);
        let failed = VerifySignatureResult::failed("no");
        assert_eq!(failed.encode(), vec![0x12, 0x02, b'n', b'o']);
        assert_eq!(
            VerifySignatureResult::decode(&failed.encode()),
            Some(failed)
        );
        assert_eq!(
            VerifySignatureResult::decode(&[]),
            Some(VerifySignatureResult::default())
        );
    }

    #[test]
    fn a_key_is_required_once() {
        let mut arguments = VerifySignatureArguments {
            hash_function: "sha256".into(),
            ..Default::default()
        };
        assert_eq!(verify_signature(&arguments), Err(Status::BadArgument));
        arguments.public_key = vec![0x30];
        arguments.public_key_pem = "-----BEGIN PUBLIC KEY-----".into();
        assert_eq!(verify_signature(&arguments), Err(Status::BadArgument));
    }

    #[test]
    fn unknown_or_disabled_function_is_not_found() {
        assert_eq!(call("sign", &[], true), Err(Status::NotFound));
        assert_eq!(call(VERIFY_SIGNATURE, &[], false), Err(Status::NotFound));
        assert_eq!(
            call(VERIFY_SIGNATURE, &[0xff], true),
            Err(Status::BadArgument)
        );
    }
}
