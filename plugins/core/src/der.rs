//! The little DER that Envoy's `verify_signature` needs: SubjectPublicKeyInfo
//! for JWKS keys and ECDSA signatures as `SEQUENCE { INTEGER r, INTEGER s }`.

use crate::jwks::PublicKey;

const EC_P256_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const EC_P384_PREFIX: &[u8] = &[
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];
const ED25519_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// `SEQUENCE { OID rsaEncryption, NULL }`.
const RSA_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// DER SubjectPublicKeyInfo of a key.
pub fn spki(key: &PublicKey) -> Vec<u8> {
    match key {
        PublicKey::P256(point) => [EC_P256_PREFIX, point].concat(),
        PublicKey::P384(point) => [EC_P384_PREFIX, point].concat(),
        PublicKey::Ed25519(x) => [ED25519_PREFIX, x].concat(),
        PublicKey::Rsa { n, e } => {
            let rsa_key = tlv(0x30, &[integer(n), integer(e)].concat());
            let bits = tlv(0x03, &[&[0u8][..], &rsa_key].concat());
            tlv(0x30, &[RSA_ALGORITHM, &bits].concat())
        }
    }
}

/// Turns a JWS ECDSA signature (`r || s`, fixed width) into DER with minimal
/// integers, as BoringSSL expects. `None` if the length is odd or zero.
pub fn ecdsa_signature(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(tlv(0x30, &[integer(r), integer(s)].concat()))
}

/// A DER INTEGER from unsigned big-endian bytes: leading zeros stripped, one
/// zero added back when the high bit is set.
fn integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().take_while(|b| **b == 0).count();
    let digits = &bytes[start..];
    let mut body = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(digits);
    tlv(0x02, &body)
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(tag);
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal() {
        assert_eq!(integer(&[0, 0, 0x01]), vec![0x02, 0x01, 0x01]);
        assert_eq!(integer(&[0, 0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[0, 0]), vec![0x02, 0x01, 0x00]);
    }

    #[test]
    fn ecdsa_signature_with_high_bit_and_leading_zero() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a pad byte
        raw[33] = 0x01; // s starts with a zero byte that must go
        let der = ecdsa_signature(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        let s_at = 2 + 2 + 33;
        assert_eq!(&der[s_at..s_at + 3], &[0x02, 31, 0x01]);
        assert!(ecdsa_signature(&[1, 2, 3]).is_none());
    }

    #[test]
    fn rsa_spki_has_long_form_lengths() {
        let n = vec![0xc0; 256];
        let der = spki(&PublicKey::Rsa {
            n,
            e: vec![1, 0, 1],
        });
        assert_eq!(&der[..2], &[0x30, 0x82]);
        assert_eq!(der.len(), 294);
    }
}
