//! Encryption at rest for upstream tokens: AES-256-GCM, a random 96-bit nonce
//! per sealed value, and additional authenticated data that binds a
//! ciphertext to its row (issuer and subject of the user, connection,
//! purpose), so a ciphertext copied into another row does not open.
//!
//! Keys carry ids. New values are sealed with the current key; the key id is
//! stored beside the ciphertext so older rows keep opening after a rotation
//! for as long as their key stays in the keyring.

use crate::subject::User;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;

const NONCE_LEN: usize = 12;

/// A value sealed by [`Keyring::seal`]: the key id and `nonce || ciphertext+tag`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the key that sealed the value.
    pub key_id: String,
    /// The 12-byte nonce followed by the ciphertext and its 16-byte tag.
    pub blob: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealed {{ key_id: {:?}, {} bytes }}",
            self.key_id,
            self.blob.len()
        )
    }
}

/// Why a keyring could not be built or a value could not be opened. Carries no
/// key or plaintext material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// No key was configured.
    NoKeys,
    /// A key entry is malformed (the message names the entry, never the key).
    BadKey(String),
    /// The value names a key id that is not in the keyring.
    UnknownKey(String),
    /// Authentication failed: wrong key, wrong row binding, or tampering.
    Unauthentic,
    /// The randomness source failed.
    Rng,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::NoKeys => write!(
                f,
                "no encryption key configured (set AGENTWARD_VAULT_KEY or key_file)"
            ),
            SealError::BadKey(what) => write!(f, "bad encryption key entry: {what}"),
            SealError::UnknownKey(id) => write!(f, "sealed value names unknown key id {id:?}"),
            SealError::Unauthentic => write!(f, "sealed value failed authentication"),
            SealError::Rng => write!(f, "random number generator failed"),
        }
    }
}

impl std::error::Error for SealError {}

/// The set of data-encryption keys, one of them current.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
    ticket_secret: [u8; 32],
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        write!(
            f,
            "Keyring {{ current: {:?}, ids: {:?} }}",
            self.current, ids
        )
    }
}

impl Keyring {
    /// Parses keys written as `id:base64` (or a bare base64 key, id `default`),
    /// separated by commas or newlines; `#` starts a comment. The first entry
    /// is the current key.
    pub fn parse(text: &str) -> Result<Keyring, SealError> {
        let mut entries = Vec::new();
        for raw in text.split([',', '\n']) {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (id, b64) = match line.split_once(':') {
                Some((id, b64)) => (id.trim().to_string(), b64.trim()),
                None => ("default".to_string(), line),
            };
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(SealError::BadKey(format!(
                    "key id {id:?} must be [A-Za-z0-9._-]+"
                )));
            }
            let bytes = STANDARD
                .decode(b64)
                .map_err(|_| SealError::BadKey(format!("key {id:?} is not base64")))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| SealError::BadKey(format!("key {id:?} must decode to 32 bytes")))?;
            entries.push((id, key));
        }
        Keyring::from_keys(entries)
    }

    /// Builds a keyring from `(id, key)` pairs; the first is current.
    pub fn from_keys(entries: Vec<(String, [u8; 32])>) -> Result<Keyring, SealError> {
        let (current, current_key) = entries.first().cloned().ok_or(SealError::NoKeys)?;
        let mut keys = HashMap::new();
        for (id, key) in entries {
            if keys.contains_key(&id) {
                return Err(SealError::BadKey(format!("key id {id:?} appears twice")));
            }
            keys.insert(id, Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)));
        }
        let ticket_secret = derive(&current_key, b"agentward-vault connect-ticket v1");
        Ok(Keyring {
            current,
            keys,
            ticket_secret,
        })
    }

    /// Id of the key new values are sealed with.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// A secret derived from the current key: it MACs the connect page's CSRF
    /// token and the linking-flow cookie.
    pub fn ticket_secret(&self) -> &[u8; 32] {
        &self.ticket_secret
    }

    /// Seals `plaintext` with the current key under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SealError> {
        let cipher = self.keys.get(&self.current).ok_or(SealError::NoKeys)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| SealError::Rng)?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError::Unauthentic)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(Sealed {
            key_id: self.current.clone(),
            blob,
        })
    }

    /// Opens a sealed value; fails unless key, nonce, ciphertext and `aad` all match.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let cipher = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.blob.len() < NONCE_LEN {
            return Err(SealError::Unauthentic);
        }
        let (nonce, ct) = sealed.blob.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| SealError::Unauthentic)
    }

    /// Opens a sealed UTF-8 string (tokens are ASCII).
    pub fn open_string(&self, sealed: &Sealed, aad: &[u8]) -> Result<String, SealError> {
        String::from_utf8(self.open(sealed, aad)?).map_err(|_| SealError::Unauthentic)
    }
}

/// The AAD that binds a sealed value to one purpose and one row: the user
/// (issuer and subject) and the connection, or for a pending flow's PKCE
/// verifier its `state`, user and connection. A ciphertext copied into
/// another user's row (even one with the same `sub` at another issuer)
/// does not open.
pub fn row_aad(purpose: &str, parts: &[&str]) -> Vec<u8> {
    // Length-prefixed so that no choice of values can collide with another row.
    let mut aad = format!("agentward-vault/v2|{purpose}");
    for part in parts {
        aad.push_str(&format!("|{}:{part}", part.len()));
    }
    aad.into_bytes()
}

/// [`row_aad`] of a link's token: `purpose` of `user` at `connection`.
pub fn link_aad(purpose: &str, user: &User, connection: &str) -> Vec<u8> {
    row_aad(purpose, &[&user.issuer, &user.sub, connection])
}

/// The AAD of schema 1 (users by `sub` alone), only to open rows once
/// while upgrading them (see `store::upgrade`).
pub(crate) fn link_aad_v1(purpose: &str, sub: &str, connection: &str) -> Vec<u8> {
    format!(
        "agentward-vault/v1|{purpose}|{}:{sub}|{}:{connection}",
        sub.len(),
        connection.len()
    )
    .into_bytes()
}

fn derive(key: &[u8; 32], label: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0u8; 32], // unreachable: HMAC takes keys of any length
    };
    mac.update(label);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &[(&str, u8)]) -> Keyring {
        Keyring::from_keys(
            spec.iter()
                .map(|(id, b)| (id.to_string(), [*b; 32]))
                .collect(),
        )
        .unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn sealed_value_round_trips() {
        let k = ring(&[("k1", 1)]);
        let aad = link_aad(
            "refresh_token",
            &User::new("https://idp/", "alice"),
            "google",
        );
        let s = k
            .seal(b"secret-refresh", &aad)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(s.key_id, "k1");
        assert!(!s.blob.windows(6).any(|w| w == b"secret"));
        assert_eq!(k.open(&s, &aad), Ok(b"secret-refresh".to_vec()));
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let k = ring(&[("k1", 1)]);
        let a = k.seal(b"x", b"aad").unwrap_or_else(|e| unreachable!("{e}"));
        let b = k.seal(b"x", b"aad").unwrap_or_else(|e| unreachable!("{e}"));
        assert_ne!(a.blob[..NONCE_LEN], b.blob[..NONCE_LEN]);
    }

    #[test]
    fn wrong_aad_fails_to_open() {
        let k = ring(&[("k1", 1)]);
        let alice = User::new("https://idp-a/", "alice");
        let s = k
            .seal(b"tok", &link_aad("refresh_token", &alice, "google"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        for (purpose, user, connection) in [
            (
                "refresh_token",
                User::new("https://idp-a/", "mallory"),
                "google",
            ),
            (
                "refresh_token",
                User::new("https://idp-b/", "alice"),
                "google",
            ),
            ("refresh_token", alice.clone(), "slack"),
            ("access_token", alice.clone(), "google"),
        ] {
            assert_eq!(
                k.open(&s, &link_aad(purpose, &user, connection)),
                Err(SealError::Unauthentic),
                "{purpose} {user:?} {connection}"
            );
        }
        // Values cannot shift between the issuer and the subject.
        assert_ne!(
            link_aad("refresh_token", &User::new("a|1:b", "c"), "d"),
            link_aad("refresh_token", &User::new("a", "b|1:c"), "d")
        );
        // Nor does a value sealed under schema 1's AAD open under schema 2's.
        let v1 = k
            .seal(b"tok", &link_aad_v1("refresh_token", "alice", "google"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            k.open(&v1, &link_aad("refresh_token", &alice, "google")),
            Err(SealError::Unauthentic)
        );
    }

    #[test]
    fn tampered_ciphertext_fails_to_open() {
        let k = ring(&[("k1", 1)]);
        let mut s = k
            .seal(b"tok", b"aad")
            .unwrap_or_else(|e| unreachable!("{e}"));
        let last = s.blob.len() - 1;
        s.blob[last] ^= 1;
        assert_eq!(k.open(&s, b"aad"), Err(SealError::Unauthentic));
    }

    #[test]
    fn rotated_keyring_seals_with_new_key_and_opens_old_rows() {
        let old = ring(&[("k1", 1)]);
        let old_row = old
            .seal(b"old", b"aad")
            .unwrap_or_else(|e| unreachable!("{e}"));
        let rotated = ring(&[("k2", 2), ("k1", 1)]);
        let new_row = rotated
            .seal(b"new", b"aad")
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(new_row.key_id, "k2");
        assert_eq!(rotated.open(&old_row, b"aad"), Ok(b"old".to_vec()));
        assert_eq!(rotated.open(&new_row, b"aad"), Ok(b"new".to_vec()));
        // A keyring that dropped k1 names the missing key instead of guessing.
        let retired = ring(&[("k2", 2)]);
        assert_eq!(
            retired.open(&old_row, b"aad"),
            Err(SealError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn keys_parse_from_env_and_file_syntax() {
        let b64 = STANDARD.encode([7u8; 32]);
        let k = Keyring::parse(&format!("# keys\nk2:{b64}\nk1:{b64}\n"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(k.current_id(), "k2");
        let k = Keyring::parse(&b64).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(k.current_id(), "default");
        assert!(matches!(
            Keyring::parse("k1:AAAA"),
            Err(SealError::BadKey(_))
        ));
        assert!(matches!(Keyring::parse(""), Err(SealError::NoKeys)));
        let err = Keyring::parse(&format!("k1:{}", STANDARD.encode([1u8; 16]))).err();
        assert!(format!("{err:?}").contains("32 bytes"));
    }
}
