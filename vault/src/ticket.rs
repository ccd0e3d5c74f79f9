//! Connect tickets and the browser-side checks around them.
//!
//! A ticket is an opaque random string (256 bits): it names nobody. The
//! vault stores only its SHA-256 ([`ticket_id`]) beside what it stands for
//! (issuer, user, connection, agent, expiry, spent; see
//! `store::ConnectTicket`), so neither the link nor the database holds a
//! usable ticket, and a ticket is spent once, on every replica.
//!
//! [`TicketSigner`] MACs, under a key derived from the vault's current key,
//! the two values a browser hands back: the CSRF token of the confirmation
//! form (bound to the ticket and to a cookie the page set) and the cookie
//! that binds a linking flow to the browser that started it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

/// Random bytes in a ticket.
pub const TICKET_BYTES: usize = 32;

/// The cookie the confirmation page sets; its form's CSRF token is bound to
/// it.
pub const CONFIRM_COOKIE: &str = "agentward_confirm";

/// A new ticket and its id (what the store keeps), or why randomness failed.
pub fn new_ticket() -> Result<(String, String), String> {
    let mut bytes = [0u8; TICKET_BYTES];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness for a ticket: {e}"))?;
    let ticket = B64.encode(bytes);
    let id = ticket_id(&ticket);
    Ok((ticket, id))
}

/// A random value for the [`CONFIRM_COOKIE`].
pub fn new_cookie_value() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness for a cookie: {e}"))?;
    Ok(B64.encode(bytes))
}

/// The id a ticket is stored under: hex SHA-256 of the ticket. Not enough
/// to rebuild it.
pub fn ticket_id(ticket: &str) -> String {
    hex(&Sha256::digest(ticket.as_bytes()))
}

/// Whether `ticket` has the shape of one (before any lookup).
pub fn well_formed(ticket: &str) -> bool {
    ticket.len() == B64.encode([0u8; TICKET_BYTES]).len()
        && ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(n, v)| (n == name).then_some(v))
}

/// MACs what the vault hands a browser to give back.
#[derive(Clone)]
pub struct TicketSigner {
    secret: [u8; 32],
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSigner")
    }
}

impl TicketSigner {
    /// A signer with the given secret.
    pub fn new(secret: [u8; 32]) -> TicketSigner {
        TicketSigner { secret }
    }

    fn mac_for(&self, domain: &[u8], parts: &[&str]) -> Hmac<Sha256> {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable_key_length(),
        };
        mac.update(domain);
        for part in parts {
            // Length-prefixed, so no two splits of one string collide.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The CSRF token of the confirmation form for ticket `ticket_id` in the
    /// browser holding `cookie` (the [`CONFIRM_COOKIE`] value): only the
    /// vault can make it, and it is good only with that ticket and cookie.
    pub fn csrf_token(&self, ticket_id: &str, cookie: &str) -> String {
        let mac = self.mac_for(b"agentward-vault confirm v1.", &[ticket_id, cookie]);
        B64.encode(mac.finalize().into_bytes())
    }

    /// Whether `token` is the CSRF token for `ticket_id` and `cookie`
    /// (constant time).
    pub fn csrf_ok(&self, ticket_id: &str, cookie: &str, token: &str) -> bool {
        if cookie.is_empty() {
            return false;
        }
        B64.decode(token).is_ok_and(|tag| {
            self.mac_for(b"agentward-vault confirm v1.", &[ticket_id, cookie])
                .verify_slice(&tag)
                .is_ok()
        })
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
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable_key_length(),
        };
        mac.update(b"agentward-vault browser-binding v1.");
        mac.update(state.as_bytes());
        mac
    }

    /// Whether a `Cookie` header carries the binding of `state`.
    pub fn browser_bound(&self, cookie_header: Option<&str>, state: &str) -> bool {
        let Some(value) = cookie(cookie_header, &binding_cookie_name(state)) else {
            return false;
        };
        B64.decode(value)
            .is_ok_and(|tag| self.binding_mac(state).verify_slice(&tag).is_ok())
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

    #[test]
    fn tickets_are_random_well_formed_and_stored_by_hash() {
        let (a, id) = new_ticket().unwrap();
        let (b, _) = new_ticket().unwrap();
        assert_ne!(a, b);
        assert!(well_formed(&a) && a.len() == 43);
        assert_eq!(id, ticket_id(&a));
        assert_eq!(id.len(), 64);
        assert!(!id.contains(&a) && !a.contains(&id));
        for bad in ["", "short", &format!("{a}x"), &a.replace(&a[..1], "+")] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn csrf_token_is_bound_to_ticket_cookie_and_key() {
        let s = TicketSigner::new([3; 32]);
        let token = s.csrf_token("ticket-1", "cookie-1");
        assert!(s.csrf_ok("ticket-1", "cookie-1", &token));
        assert!(!s.csrf_ok("ticket-2", "cookie-1", &token));
        assert!(!s.csrf_ok("ticket-1", "cookie-2", &token));
        assert!(!s.csrf_ok("ticket-1", "", &s.csrf_token("ticket-1", "")));
        assert!(!s.csrf_ok("ticket-1", "cookie-1", ""));
        assert!(!s.csrf_ok("ticket-1", "cookie-1", "not base64!"));
        let foreign = TicketSigner::new([4; 32]).csrf_token("ticket-1", "cookie-1");
        assert!(!s.csrf_ok("ticket-1", "cookie-1", &foreign));
        // The parts are length-prefixed: moving the boundary changes the MAC.
        assert!(!s.csrf_ok("ticket-1c", "ookie-1", &token));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let header = Some("a=1; agentward_confirm=xyz; agentward_confirm_x=no");
        assert_eq!(cookie(header, CONFIRM_COOKIE), Some("xyz"));
        assert_eq!(cookie(header, "b"), None);
        assert_eq!(cookie(None, "a"), None);
    }

    #[test]
    fn browser_binding_is_per_flow_and_unforgeable() {
        let s = TicketSigner::new([3; 32]);
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
        let forged = TicketSigner::new([4; 32]).browser_binding("state-a").1;
        assert!(!s.browser_bound(Some(&format!("{name}={forged}")), "state-a"));
        assert!(!s.browser_bound(Some(&format!("{name}=not base64!")), "state-a"));
    }
}
