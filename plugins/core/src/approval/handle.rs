//! The deferred approval handle (`approval_id`, and an MCP `requestState`):
//! what an agent gets back while the user has not decided, and retries with.
//! Any worker of any gateway replica checks it without shared state: it is
//! sealed under a key every replica is configured with.
//!
//! It carries the authority's `auth_req_id`, the request digest, a hash of
//! the user, issuer and agent, and its expiry, under HMAC-SHA-256. The
//! `auth_req_id` is **encrypted** in it: the authority only answers it to
//! the gateway's client credentials, so the agent could not poll with it
//! anyway, but the handle travels through agents, MCP clients and their
//! logs, and the id is the authority's secret for this request. The cipher
//! is HMAC-SHA-256 in counter mode under a random 128-bit nonce
//! (encrypt-then-MAC, keys for encryption and MAC derived apart from the
//! configured key): a PRF in counter mode, so no second crypto crate lands
//! in the `.wasm`.
//!
//! Used once: the authority issues an approval's token once (the vault's
//! single issuance is the guard across workers and replicas); a replayed
//! handle gets the authority's `invalid_grant`.

use super::digest::RequestDigest;
use crate::proof::same;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const NONCE: usize = 16;
const WHO: usize = 16;
const MAC: usize = 32;
const FIXED: usize = 1 + 8 + NONCE + 32 + WHO + 2;
/// Longest handle accepted, in characters (an `auth_req_id` of up to ~500 bytes).
pub const MAX_HANDLE_CHARS: usize = 1024;

/// The key handles are sealed with: 32 bytes, the same on every replica.
#[derive(Clone, PartialEq, Eq)]
pub struct HandleKey {
    mac: [u8; 32],
    enc: [u8; 32],
}

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(..)")
    }
}

/// Why a handle is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// Not a handle (bad encoding, length or version).
    Malformed,
    /// The MAC does not check: altered, or sealed under another key.
    Tampered,
    /// Past its expiry.
    Expired,
    /// Issued to another user or agent.
    OtherPrincipal,
    /// Issued for another request (a changed amount, path, ...).
    OtherRequest,
}

impl HandleError {
    /// A short code for answers and metrics.
    pub fn code(self) -> &'static str {
        match self {
            HandleError::Malformed => "approval_id_malformed",
            HandleError::Tampered => "approval_id_invalid",
            HandleError::Expired => "approval_expired",
            HandleError::OtherPrincipal => "approval_other_principal",
            HandleError::OtherRequest => "approval_other_request",
        }
    }

    /// The answer to a retry with this handle: 403 `expired_token` for an
    /// expired one, else 403 `access_denied` with the code as `reason`.
    pub fn response(self) -> crate::response::LocalResponse {
        match self {
            HandleError::Expired => crate::response::LocalResponse::json(
                403,
                serde_json::json!({
                    "error": "expired_token",
                    "reason": self.code(),
                    "error_description": self.description(),
                }),
            ),
            _ => crate::response::access_denied(self.code(), self.description()),
        }
    }

    /// A description for the agent.
    pub fn description(self) -> &'static str {
        match self {
            HandleError::Malformed => "the approval id is not one this gateway issued",
            HandleError::Tampered => "the approval id does not verify",
            HandleError::Expired => "the approval id has expired; send the request again for a new approval",
            HandleError::OtherPrincipal => "the approval id was issued to another user or agent",
            HandleError::OtherRequest => {
                "the approval id was issued for another request: retry exactly the request that was approved"
            }
        }
    }
}

/// A handle's content, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The authority's request id.
    pub auth_req_id: String,
    /// When the approval request expires, in Unix seconds.
    pub expires_at: u64,
}

/// The hash of who an approval is for (issuer, user, agent).
pub fn principal(issuer: &str, sub: &str, agent: Option<&str>) -> [u8; WHO] {
    let mut h = Sha256::new();
    h.update(b"agentward approval principal v1");
    for part in [Some(issuer), Some(sub), agent] {
        match part {
            None => h.update([0]),
            Some(s) => {
                h.update([1]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    let full: [u8; 32] = h.finalize().into();
    let mut out = [0u8; WHO];
    out.copy_from_slice(&full[..WHO]);
    out
}

/// HMAC-SHA-256 (RFC 2104) over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

impl HandleKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<HandleKey> {
        if bytes.len() != 32 {
            return None;
        }
        Some(HandleKey {
            mac: hmac_sha256(bytes, &[b"agentward approval handle mac"]),
            enc: hmac_sha256(bytes, &[b"agentward approval handle enc"]),
        })
    }

    /// The key written as base64url (padding optional) of 32 bytes.
    pub fn from_base64(text: &str) -> Option<HandleKey> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .ok()?;
        HandleKey::from_bytes(&bytes)
    }

    fn keystream_xor(&self, nonce: &[u8], data: &mut [u8]) {
        for (counter, chunk) in data.chunks_mut(32).enumerate() {
            let block = hmac_sha256(&self.enc, &[nonce, &(counter as u32).to_be_bytes()]);
            for (d, k) in chunk.iter_mut().zip(block) {
                *d ^= k;
            }
        }
    }

    /// Seals a handle for `auth_req_id`, bound to the request's digest and
    /// principal, good until `expires_at` (Unix seconds). `nonce` must be
    /// random ([`crate::approval::random_nonce`]).
    pub fn seal(
        &self,
        auth_req_id: &str,
        digest: &RequestDigest,
        who: &[u8; WHO],
        expires_at: u64,
        nonce: [u8; NONCE],
    ) -> String {
        let mut id = auth_req_id.as_bytes().to_vec();
        id.truncate(u16::MAX as usize);
        self.keystream_xor(&nonce, &mut id);
        let mut out = Vec::with_capacity(FIXED + id.len() + MAC);
        out.push(VERSION);
        out.extend_from_slice(&expires_at.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&digest.0);
        out.extend_from_slice(who);
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(&id);
        let mac = hmac_sha256(&self.mac, &[&out]);
        out.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Checks a handle against the retried request (its digest and
    /// principal) at `now` (Unix seconds); the MAC first, so nothing of a
    /// forged handle is looked at.
    pub fn open(
        &self,
        handle: &str,
        digest: &RequestDigest,
        who: &[u8; WHO],
        now: u64,
    ) -> Result<Opened, HandleError> {
        if handle.len() > MAX_HANDLE_CHARS {
            return Err(HandleError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(handle)
            .map_err(|_| HandleError::Malformed)?;
        if bytes.len() < FIXED + MAC || bytes[0] != VERSION {
            return Err(HandleError::Malformed);
        }
        let (body, mac) = bytes.split_at(bytes.len() - MAC);
        if !same(mac, &hmac_sha256(&self.mac, &[body])) {
            return Err(HandleError::Tampered);
        }
        let field = |from: usize, len: usize| body.get(from..from + len).unwrap_or_default();
        let expires_at =
            u64::from_be_bytes(field(1, 8).try_into().map_err(|_| HandleError::Malformed)?);
        let nonce = field(9, NONCE);
        let sealed_digest = field(9 + NONCE, 32);
        let sealed_who = field(9 + NONCE + 32, WHO);
        let id_len = u16::from_be_bytes(
            field(FIXED - 2, 2)
                .try_into()
                .map_err(|_| HandleError::Malformed)?,
        ) as usize;
        if body.len() != FIXED + id_len {
            return Err(HandleError::Malformed);
        }
        if now >= expires_at {
            return Err(HandleError::Expired);
        }
        if !same(sealed_who, who) {
            return Err(HandleError::OtherPrincipal);
        }
        if !same(sealed_digest, &digest.0) {
            return Err(HandleError::OtherRequest);
        }
        let mut id = field(FIXED, id_len).to_vec();
        self.keystream_xor(nonce, &mut id);
        let auth_req_id = String::from_utf8(id).map_err(|_| HandleError::Malformed)?;
        Ok(Opened {
            auth_req_id,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "V2hhdCBhIHNlY3JldCBhdXRoX3JlcV9pZCB0aGlzIGlz";

    fn key() -> HandleKey {
        HandleKey::from_bytes(&[9; 32]).unwrap()
    }

    fn alice() -> [u8; WHO] {
        principal("https://idp/", "alice", Some("trading-agent"))
    }

    fn seal() -> String {
        key().seal(ID, &RequestDigest([1; 32]), &alice(), 1_000, [5; NONCE])
    }

    #[test]
    fn a_handle_opens_for_its_request_and_hides_the_auth_req_id() {
        let handle = seal();
        assert_eq!(
            key().open(&handle, &RequestDigest([1; 32]), &alice(), 999),
            Ok(Opened {
                auth_req_id: ID.into(),
                expires_at: 1_000
            })
        );
        let raw = URL_SAFE_NO_PAD.decode(&handle).unwrap();
        assert!(!raw.windows(ID.len()).any(|w| w == ID.as_bytes()));
        assert!(!handle.contains(ID));
        // Another nonce, another handle for the same content.
        let other = key().seal(ID, &RequestDigest([1; 32]), &alice(), 1_000, [6; NONCE]);
        assert_ne!(handle, other);
    }

    #[test]
    fn tampering_anywhere_is_refused() {
        let raw = URL_SAFE_NO_PAD.decode(seal()).unwrap();
        for i in 0..raw.len() {
            let mut t = raw.clone();
            t[i] ^= 1;
            let e = key()
                .open(
                    &URL_SAFE_NO_PAD.encode(&t),
                    &RequestDigest([1; 32]),
                    &alice(),
                    0,
                )
                .unwrap_err();
            assert!(
                matches!(e, HandleError::Tampered | HandleError::Malformed),
                "byte {i}: {e:?}"
            );
        }
        let other_key = HandleKey::from_bytes(&[8; 32]).unwrap();
        assert_eq!(
            other_key.open(&seal(), &RequestDigest([1; 32]), &alice(), 0),
            Err(HandleError::Tampered)
        );
    }

    #[test]
    fn other_user_agent_request_and_expiry_are_refused() {
        let h = seal();
        let d = RequestDigest([1; 32]);
        for who in [
            principal("https://idp/", "bob", Some("trading-agent")),
            principal("https://idp/", "alice", Some("other-agent")),
            principal("https://idp/", "alice", None),
            principal("https://other-idp/", "alice", Some("trading-agent")),
        ] {
            assert_eq!(
                key().open(&h, &d, &who, 0),
                Err(HandleError::OtherPrincipal)
            );
        }
        assert_eq!(
            key().open(&h, &RequestDigest([2; 32]), &alice(), 0),
            Err(HandleError::OtherRequest)
        );
        assert_eq!(
            key().open(&h, &d, &alice(), 1_000),
            Err(HandleError::Expired)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let d = RequestDigest([1; 32]);
        for bad in ["", "!!", "AAAA", &"A".repeat(MAX_HANDLE_CHARS + 1)] {
            assert_eq!(
                key().open(bad, &d, &alice(), 0),
                Err(HandleError::Malformed),
                "{bad}"
            );
        }
        for e in [
            HandleError::Malformed,
            HandleError::Tampered,
            HandleError::Expired,
            HandleError::OtherPrincipal,
            HandleError::OtherRequest,
        ] {
            assert!(!e.code().is_empty() && !e.description().is_empty());
            let answer = e.response();
            assert_eq!(answer.status, 403);
            let want = if e == HandleError::Expired {
                "expired_token"
            } else {
                "access_denied"
            };
            assert!(answer.body.contains(want), "{e:?}");
        }
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn keys_come_from_32_bytes() {
        assert!(HandleKey::from_bytes(&[0; 31]).is_none());
        let text = URL_SAFE_NO_PAD.encode([3u8; 32]);
        assert_eq!(
            HandleKey::from_base64(&text),
            HandleKey::from_bytes(&[3; 32])
        );
        assert_eq!(
            HandleKey::from_base64(&format!("{text}=")),
            HandleKey::from_bytes(&[3; 32])
        );
        assert!(HandleKey::from_base64("short").is_none());
        assert_eq!(format!("{:?}", key()), "HandleKey(..)");
    }
}
