//! The key that signs CIBA access tokens (ES256) and its JWKS.
//!
//! From `ciba.signing_key_file` (PKCS#8 PEM) when set; else the vault
//! generates one the first time and stores it sealed (AES-256-GCM under the
//! data-encryption key) in the database: the replicas all offer theirs and
//! all use the one stored first. A key sealed under an older
//! data-encryption key is sealed anew under the current one at start-up.

use super::CibaConfig;
use crate::seal::{row_aad, Keyring};
use crate::store::Store;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jwt_simple::prelude::*;
use sha2::{Digest as _, Sha256};

/// Signs the tokens the vault issues on approval.
pub struct Signer {
    key: ES256KeyPair,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

/// The AAD of the sealed signing key.
fn key_aad(kid: &str) -> Vec<u8> {
    row_aad("ciba_signing_key", &[kid])
}

/// The `kid` of a key: base64url of the first 16 bytes of the SHA-256 of
/// its uncompressed public point.
fn kid_of(key: &ES256KeyPair) -> String {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    B64.encode(&Sha256::digest(&point)[..16])
}

impl Signer {
    /// The configured key, or the one stored in the database (made and
    /// stored first when there is none).
    pub async fn load(
        config: &CibaConfig,
        store: &Store,
        keys: &Keyring,
    ) -> Result<Signer, String> {
        if let Some(path) = &config.signing_key_file {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                format!("ciba.signing_key_file: cannot read {}: {e}", path.display())
            })?;
            let key = ES256KeyPair::from_pem(&pem).map_err(|_| {
                "ciba.signing_key_file: not a PKCS#8 PEM P-256 private key".to_string()
            })?;
            return Ok(Signer::new(key));
        }
        let storage = |e: crate::store::StoreError| format!("ciba signing key: {e}");
        if store.ciba_signing_key().await.map_err(storage)?.is_none() {
            let key = ES256KeyPair::generate();
            let kid = kid_of(&key);
            let sealed = keys
                .seal(&key.to_bytes(), &key_aad(&kid))
                .map_err(|e| format!("ciba signing key: {e}"))?;
            store
                .offer_ciba_signing_key(&kid, &sealed, crate::app::unix_now())
                .await
                .map_err(storage)?;
        }
        let (kid, sealed) = store
            .ciba_signing_key()
            .await
            .map_err(storage)?
            .ok_or("ciba signing key: not stored")?;
        let raw = keys.open(&sealed, &key_aad(&kid)).map_err(|e| {
            format!(
                "ciba signing key: cannot open it (sealed under key id {:?}; put that key in the keyring): {e}",
                sealed.key_id
            )
        })?;
        let key = ES256KeyPair::from_bytes(&raw)
            .map_err(|_| "ciba signing key: the stored key is not a P-256 key".to_string())?;
        if sealed.key_id != keys.current_id() {
            let resealed = keys
                .seal(&raw, &key_aad(&kid))
                .map_err(|e| format!("ciba signing key: {e}"))?;
            match store.reseal_ciba_signing_key(&sealed, &resealed).await {
                Ok(_) => tracing::info!(key_id = keys.current_id(), "CIBA signing key sealed anew"),
                Err(e) => tracing::warn!(error = %e, "cannot seal the CIBA signing key anew"),
            }
        }
        Ok(Signer::new(key))
    }

    fn new(key: ES256KeyPair) -> Signer {
        let kid = kid_of(&key);
        Signer {
            key: key.with_key_id(&kid),
            kid,
        }
    }

    /// The key's id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document: the one public key.
    pub fn jwks(&self) -> serde_json::Value {
        let point = self.key.public_key().public_key().to_bytes_uncompressed();
        let (x, y) = match (point.get(1..33), point.get(33..65)) {
            (Some(x), Some(y)) => (B64.encode(x), B64.encode(y)),
            _ => (String::new(), String::new()),
        };
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": self.kid, "x": x, "y": y,
        }]})
    }

    /// Signs `claims` as an RFC 9068 access token (`typ: at+jwt`).
    pub fn sign(&self, claims: JWTClaims<AccessClaims>) -> Result<String, String> {
        let options = HeaderOptions {
            signature_type: Some("at+jwt".into()),
            ..Default::default()
        };
        self.key
            .sign_with_options(claims, &options)
            .map_err(|e| format!("cannot sign a CIBA token: {e}"))
    }
}

impl Signer {
    /// The claims of a token this key signed for `issuer`, if its signature,
    /// type and times hold (a minute's leeway).
    pub fn verify(&self, token: &str, issuer: &str) -> Result<JWTClaims<AccessClaims>, String> {
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from_strings(&[issuer])),
            time_tolerance: Some(Duration::from_secs(60)),
            max_token_length: Some(16 * 1024),
            ..Default::default()
        };
        self.key
            .public_key()
            .verify_token::<AccessClaims>(token, Some(options))
            .map_err(|e| format!("not a token of this vault: {e}"))
    }
}

/// The claims of a CIBA access token beside `iss`, `sub`, `aud`, `jti`,
/// `iat`, `nbf`, `exp`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user as an RFC 9493 `iss_sub` subject identifier (their issuer
    /// and `sub`; `iss` is the vault).
    pub sub_id: serde_json::Value,
    /// The client that asked and polled.
    pub client_id: String,
    /// The same, as OpenID names the authorised party.
    pub azp: String,
    /// The agent the client asked for, when it said.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub agent_id: Option<String>,
    /// The granted scope.
    pub scope: String,
    /// The binding message the user saw.
    pub binding_message: String,
    /// The approved RFC 9396 `authorization_details`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub authorization_details: Option<serde_json::Value>,
    /// The digest of the request the gateway holds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_digest: Option<String>,
    /// When the user approved.
    pub auth_time: i64,
}
