//! The run's test key: callers' claims signed with it (ES256), and its
//! public JWK served as the issuer's JWKS. It is made fresh for each run
//! and never leaves the process.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::{ECDSAP256PublicKeyLike, ES256KeyPair};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Map, Value};

/// The `kid` the test key is served under.
pub const KID: &str = "agentward-test";

/// An ES256 key made for one run.
pub struct TestKey {
    signing: SigningKey,
    jwk: Value,
}

impl TestKey {
    /// A fresh key.
    pub fn generate() -> Result<TestKey, String> {
        let pair = ES256KeyPair::generate();
        let point = pair.public_key().public_key().to_bytes_uncompressed();
        if point.len() != 65 {
            return Err("the test key's public point is not uncompressed P-256".into());
        }
        let signing = SigningKey::from_slice(&pair.to_bytes())
            .map_err(|e| format!("the test key does not load: {e}"))?;
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KID,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Ok(TestKey { signing, jwk })
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A compact JWS of `claims`, with `iss`, `aud`, `iat` and `exp` (now +
    /// 5 minutes) added unless given.
    pub fn sign(
        &self,
        claims: &Map<String, Value>,
        issuer: &str,
        audience: &str,
        now: u64,
    ) -> String {
        let mut claims = claims.clone();
        let defaults = [
            ("iss", json!(issuer)),
            ("aud", json!(audience)),
            ("iat", json!(now)),
            ("exp", json!(now + 300)),
        ];
        for (name, value) in defaults {
            claims.entry(name).or_insert(value);
        }
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": KID});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_with_the_served_key() {
        let key = TestKey::generate().unwrap();
        let mut claims = Map::new();
        claims.insert("sub".into(), json!("alice"));
        claims.insert("exp".into(), json!(1_000_500));
        let token = key.sign(&claims, "https://idp/", "https://api", 1_000_000);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["iss"], "https://idp/");
        assert_eq!(payload["aud"], "https://api");
        assert_eq!(payload["exp"], 1_000_500, "a given claim is kept");
        let x = URL_SAFE_NO_PAD
            .decode(key.jwk()["x"].as_str().unwrap())
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode(key.jwk()["y"].as_str().unwrap())
            .unwrap();
        let mut point = vec![4u8];
        point.extend(x);
        point.extend(y);
        let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        use p256::ecdsa::signature::Verifier;
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(verifying.verify(input.as_bytes(), &sig).is_ok());
    }
}
