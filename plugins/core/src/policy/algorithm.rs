//! The JWS algorithms an issuer may allow (RFC 8725 §3.1): asymmetric ones
//! only, so `none` and HMAC (a public key used as a shared secret) cannot be
//! named at all.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// JWS algorithms that may be allowed; symmetric ones and `none` cannot be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Every algorithm that may be allowed, in the order the docs list them.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::EdDSA,
    ];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Parses a JOSE name; `none` and HMAC algorithms are never accepted.
    pub fn from_name(name: &str) -> Option<Self> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::parsed_str(deserializer, allowed)
    }
}

/// The algorithm of an allow-list entry, or why it is refused.
fn allowed(name: &str) -> Result<Algorithm, String> {
    if let Some(alg) = Algorithm::from_name(name) {
        return Ok(alg);
    }
    let why = if name.eq_ignore_ascii_case("none") {
        "unsigned tokens are never accepted"
    } else if name.starts_with("HS") {
        "symmetric algorithms cannot be verified with an issuer's public keys"
    } else {
        "expected one of ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA"
    };
    Err(format!("algorithm `{name}` is not allowed: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_hmac_or_none_never_parse() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        for name in ["none", "HS256", "HS512", "es256", ""] {
            assert_eq!(Algorithm::from_name(name), None, "{name}");
        }
    }
}
