//! Connect tickets: short-lived, HMAC-signed, single-purpose links that let a
//! user start account linking without presenting a bearer token (a browser
//! opening a link an agent showed them). A ticket names the user (issuer
//! and subject), the
//! connection and its expiry, and opens nothing but `GET /connect/{connection}`.
//! Each ticket carries a random nonce and is redeemed once: the store records
//! [`Ticket::id`] (a hash of the MAC, never the ticket) until the expiry.

use crate::subject::User;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const PURPOSE: &str = "connect";

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The user's issuer; tickets issued before users were keyed by issuer
    /// have none and are refused.
    #[serde(default)]
    iss: String,
    sub: String,
    conn: String,
    exp: i64,
    purpose: String,
    /// A random nonce, so two tickets for the same user, connection and
    /// second differ (each is spent on its own). Absent from tickets issued
    /// before single use.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    jti: String,
}

/// An authentic, current ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The user it was issued to.
    pub user: User,
    /// Unix time it expires at.
    pub expires_at: i64,
    /// Identifies the ticket for single use: hex SHA-256 of its MAC. Not a
    /// secret and not enough to rebuild the ticket.
    pub id: String,
}

/// Why a ticket was refused (no secrets inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketError {
    /// Not a ticket, or the signature does not match.
    Invalid,
    /// Past its expiry.
    Expired,
    /// Issued for another connection or purpose.
    WrongConnection,
}

/// Signs and checks connect tickets.
#[derive(Clone)]
pub struct TicketSigner {
    secret: [u8; 32],
    ttl_seconds: i64,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketSigner {{ ttl_seconds: {} }}", self.ttl_seconds)
    }
}

impl TicketSigner {
    /// A signer with the given secret and ticket lifetime.
    pub fn new(secret: [u8; 32], ttl_seconds: u64) -> TicketSigner {
        TicketSigner {
            secret,
            ttl_seconds: i64::try_from(ttl_seconds).unwrap_or(600),
        }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        self.mac_for(b"agentward-vault ticket v1.", payload)
    }

    fn mac_for(&self, domain: &[u8], payload: &str) -> Hmac<Sha256> {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable_key_length(),
        };
        mac.update(domain);
        mac.update(payload.as_bytes());
        mac
    }

    /// The cookie that binds a linking flow to the browser that started it
    /// (RFC 9700 §4.7.1, RFC 6749 §10.12): the callback completes only in a
    /// browser that holds it, so nobody can get another person's browser to
    /// finish a flow they started (and so link that person's upstream
    /// account to their own user). The name comes from the flow's `state`,
    /// so flows in several tabs do not clash; the value is a MAC of it that
    /// only the vault can make.
    pub fn browser_binding(&self, state: &str) -> (String, String) {
        let value = self.binding_mac(state).finalize().into_bytes();
        (binding_cookie_name(state), B64.encode(value))
    }

    fn binding_mac(&self, state: &str) -> Hmac<Sha256> {
        self.mac_for(b"agentward-vault browser-binding v1.", state)
    }

    /// Whether a `Cookie` header carries the binding of `state`.
    pub fn browser_bound(&self, cookie_header: Option<&str>, state: &str) -> bool {
        let name = binding_cookie_name(state);
        let Some(value) = cookie_header.and_then(|header| {
            header
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find_map(|(n, v)| (n == name).then_some(v))
        }) else {
            return false;
        };
        B64.decode(value)
            .is_ok_and(|tag| self.binding_mac(state).verify_slice(&tag).is_ok())
    }

    /// A ticket for `user` to link `connection`, valid from `now`.
    pub fn issue(&self, user: &User, connection: &str, now: i64) -> String {
        let mut nonce = [0u8; 12];
        // Without randomness the ticket is still authentic and single-use;
        // it only equals another issued in the same second.
        let jti = match getrandom::getrandom(&mut nonce) {
            Ok(()) => B64.encode(nonce),
            Err(_) => String::new(),
        };
        let claims = Claims {
            iss: user.issuer.clone(),
            sub: user.sub.clone(),
            conn: connection.into(),
            exp: now + self.ttl_seconds,
            purpose: PURPOSE.into(),
            jti,
        };
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let sig = B64.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// The ticket, if it is authentic, current and for `connection`. Whether
    /// it was already used is the store's to say (`Store::spend_ticket`).
    pub fn verify(&self, ticket: &str, connection: &str, now: i64) -> Result<Ticket, TicketError> {
        let (payload, sig) = ticket.split_once('.').ok_or(TicketError::Invalid)?;
        let sig = B64.decode(sig).map_err(|_| TicketError::Invalid)?;
        self.mac(payload)
            .verify_slice(&sig)
            .map_err(|_| TicketError::Invalid)?;
        let bytes = B64.decode(payload).map_err(|_| TicketError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| TicketError::Invalid)?;
        if claims.iss.is_empty() {
            return Err(TicketError::Invalid);
        }
        if claims.purpose != PURPOSE || claims.conn != connection {
            return Err(TicketError::WrongConnection);
        }
        if claims.exp < now {
            return Err(TicketError::Expired);
        }
        Ok(Ticket {
            user: User {
                issuer: claims.iss,
                sub: claims.sub,
            },
            expires_at: claims.exp,
            id: hex(&Sha256::digest(&sig)),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// `agentward_link_` and a hash of the `state`: a cookie per flow.
fn binding_cookie_name(state: &str) -> String {
    let digest = Sha256::digest(state.as_bytes());
    format!("agentward_link_{}", B64.encode(&digest[..9]))
}

fn unreachable_key_length() -> ! {
    // HMAC accepts keys of every length; this exists only to avoid a panic path.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User::new("https://idp/", "alice")
    }

    #[test]
    fn ticket_names_user_and_connection() {
        let s = TicketSigner::new([3; 32], 600);
        let t = s.issue(&alice(), "google", 1000);
        let ticket = s.verify(&t, "google", 1500).unwrap();
        assert_eq!((&ticket.user, ticket.expires_at), (&alice(), 1600));
        assert_eq!(ticket.id.len(), 64);
        assert!(!t.contains(&ticket.id), "the id is not part of the ticket");
        assert_eq!(
            s.verify(&t, "slack", 1500),
            Err(TicketError::WrongConnection)
        );
        assert_eq!(s.verify(&t, "google", 1601), Err(TicketError::Expired));
    }

    #[test]
    fn tickets_issued_in_the_same_second_are_distinct() {
        let s = TicketSigner::new([3; 32], 600);
        let (a, b) = (
            s.issue(&alice(), "google", 1000),
            s.issue(&alice(), "google", 1000),
        );
        assert_ne!(a, b);
        let id = |t: &str| s.verify(t, "google", 1000).unwrap().id;
        assert_ne!(id(&a), id(&b));
        assert_eq!(id(&a), id(&a), "the id is stable");
    }

    #[test]
    fn ticket_without_nonce_still_verifies() {
        // Issued before single use: no `jti`.
        let s = TicketSigner::new([3; 32], 600);
        let payload = B64.encode(
            br#"{"iss":"https://idp/","sub":"alice","conn":"google","exp":1600,"purpose":"connect"}"#,
        );
        let sig = B64.encode(s.mac(&payload).finalize().into_bytes());
        let ticket = s
            .verify(&format!("{payload}.{sig}"), "google", 1000)
            .unwrap();
        assert_eq!(ticket.user, alice());
    }

    #[test]
    fn ticket_without_issuer_is_invalid() {
        // Issued before users were keyed by issuer: whose `sub` is unknown.
        let s = TicketSigner::new([3; 32], 600);
        let payload =
            B64.encode(br#"{"sub":"alice","conn":"google","exp":1600,"purpose":"connect"}"#);
        let sig = B64.encode(s.mac(&payload).finalize().into_bytes());
        assert_eq!(
            s.verify(&format!("{payload}.{sig}"), "google", 1000),
            Err(TicketError::Invalid)
        );
    }

    #[test]
    fn browser_binding_is_per_flow_and_only_the_vault_can_make_it() {
        let s = TicketSigner::new([3; 32], 600);
        let (name, value) = s.browser_binding("state-a");
        assert!(name.starts_with("agentward_link_"));
        assert_ne!(name, s.browser_binding("state-b").0, "a cookie per flow");
        let cookie = format!("other=1; {name}={value}; x=y");
        assert!(s.browser_bound(Some(&cookie), "state-a"));
        assert!(!s.browser_bound(None, "state-a"));
        assert!(!s.browser_bound(Some("other=1"), "state-a"));
        // Another flow's cookie, or one made without the vault's key.
        let (b_name, b_value) = s.browser_binding("state-b");
        assert!(!s.browser_bound(Some(&format!("{name}={b_value}")), "state-a"));
        assert!(!s.browser_bound(Some(&format!("{b_name}={b_value}")), "state-a"));
        let forged = TicketSigner::new([4; 32], 600).browser_binding("state-a").1;
        assert!(!s.browser_bound(Some(&format!("{name}={forged}")), "state-a"));
        assert!(!s.browser_bound(Some(&format!("{name}=not base64!")), "state-a"));
    }

    #[test]
    fn forged_or_foreign_ticket_is_invalid() {
        let s = TicketSigner::new([3; 32], 600);
        let other = TicketSigner::new([4; 32], 600);
        let t = other.issue(&alice(), "google", 1000);
        assert_eq!(s.verify(&t, "google", 1000), Err(TicketError::Invalid));
        let (payload, sig) = s
            .issue(&alice(), "google", 1000)
            .split_once('.')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap();
        let evil =
            B64.encode(br#"{"sub":"mallory","conn":"google","exp":9999,"purpose":"connect"}"#);
        assert_eq!(
            s.verify(&format!("{evil}.{sig}"), "google", 1000),
            Err(TicketError::Invalid)
        );
        assert_eq!(
            s.verify(&payload, "google", 1000),
            Err(TicketError::Invalid)
        );
    }
}
