//! Telling the user that an agent asks for their approval.
//!
//! A [`Notifier`] makes one delivery attempt; [`deliver`] runs in a
//! background task (`/bc-authorize` never waits for it), retries with
//! exponential back-off and writes the outcome to the audit trail
//! (`ciba_notified` or `ciba_notify_failed`).
//!
//! [`Webhook`] POSTs JSON, signed with `X-Agentward-Signature:
//! sha256=<hex HMAC-SHA256 of the body>` under `ciba.webhook.secret`, to the
//! user's channel (a push service, a chat bot …). [`LogNotifier`] (no
//! webhook configured) writes the approval link to the vault's log at
//! `info`, for development: whoever reads that log can approve.

use super::WebhookConfig;
use crate::app::Vault;
use crate::subject::User;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-agentward-signature";

/// What the user is told. Holds the approval link: never logged by
/// `Debug`.
#[derive(Clone, Serialize)]
pub struct Notification {
    /// Always `ciba_approval_requested`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The client that asks (the gateway).
    pub client_id: String,
    /// The agent it asks for, when it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// For whom: the user's issuer and subject.
    pub user: NotifiedUser,
    /// What to confirm.
    pub binding_message: String,
    /// The details of the action (RFC 9396), when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<serde_json::Value>,
    /// The page where the user approves or denies.
    pub approval_url: String,
    /// Unix time the request expires at.
    pub expires_at: i64,
}

/// The user in a notification.
#[derive(Debug, Clone, Serialize)]
pub struct NotifiedUser {
    /// Their issuer.
    pub iss: String,
    /// Their `sub` there.
    pub sub: String,
}

impl std::fmt::Debug for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("client_id", &self.client_id)
            .field("user", &self.user)
            .field("binding_message", &self.binding_message)
            .field("approval_url", &"[redacted]")
            .finish()
    }
}

/// One delivery attempt.
pub type Attempt<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// A channel to the user.
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// Tries once to deliver `notification`; the error says why (no secret).
    fn send<'a>(&'a self, notification: &'a Notification) -> Attempt<'a>;
    /// Attempts before giving up.
    fn attempts(&self) -> u32;
    /// Its name in logs (`webhook`, `log`).
    fn name(&self) -> &'static str;
}

/// Writes the approval link to the log (development).
#[derive(Debug)]
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn send<'a>(&'a self, n: &'a Notification) -> Attempt<'a> {
        Box::pin(async move {
            tracing::info!(
                client_id = %n.client_id,
                issuer = %n.user.iss,
                sub = %n.user.sub,
                binding_message = %n.binding_message,
                approval_url = %n.approval_url,
                "CIBA approval requested (log notifier, for development: this link approves)"
            );
            Ok(())
        })
    }

    fn attempts(&self) -> u32 {
        1
    }

    fn name(&self) -> &'static str {
        "log"
    }
}

/// POSTs signed JSON to `ciba.webhook.url`.
pub struct Webhook {
    url: String,
    secret: Vec<u8>,
    attempts: u32,
    timeout: Duration,
    http: reqwest::Client,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .fold(String::from("sha256="), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

impl Webhook {
    /// From the configuration (the secret resolved).
    pub fn new(config: &WebhookConfig, http: reqwest::Client) -> Result<Webhook, String> {
        let secret = config
            .secret
            .as_ref()
            .filter(|s| !s.is_empty())
            .ok_or("ciba.webhook.secret: missing")?;
        Ok(Webhook {
            url: config.url.clone(),
            secret: secret.expose().as_bytes().to_vec(),
            attempts: config.attempts,
            timeout: Duration::from_secs(config.timeout_seconds),
            http,
        })
    }
}

impl Notifier for Webhook {
    fn send<'a>(&'a self, n: &'a Notification) -> Attempt<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(n).map_err(|e| e.to_string())?;
            let response = self
                .http
                .post(&self.url)
                .timeout(self.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature(&self.secret, &body))
                .body(body)
                .send()
                .await
                .map_err(|e| crate::upstream::error_chain(&e))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", response.status().as_u16()))
            }
        })
    }

    fn attempts(&self) -> u32 {
        self.attempts
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}

/// The pause before attempt `n` (1-based, after the first): 1 s, 2 s, 4 s …
/// at most 60 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Delivers in the background, retrying; audits the outcome.
pub fn deliver(vault: Arc<Vault>, notifier: Arc<dyn Notifier>, n: Notification, agent: String) {
    tokio::spawn(async move {
        let user = User::new(n.user.iss.clone(), n.user.sub.clone());
        let attempts = notifier.attempts().max(1);
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff(attempt - 1)).await;
            }
            match notifier.send(&n).await {
                Ok(()) => {
                    vault.metrics.ciba("notified");
                    vault
                        .audit(Some(&user), Some(&agent), Some("ciba"), "ciba_notified")
                        .await;
                    return;
                }
                Err(why) => tracing::warn!(
                    notifier = notifier.name(),
                    attempt,
                    attempts,
                    %why,
                    "CIBA notification not delivered"
                ),
            }
        }
        vault.metrics.ciba("notify_failed");
        vault
            .audit(
                Some(&user),
                Some(&agent),
                Some("ciba"),
                "ciba_notify_failed",
            )
            .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }

    #[test]
    fn debug_of_a_notification_hides_the_link() {
        let n = Notification {
            kind: "ciba_approval_requested",
            client_id: "gw".into(),
            agent_id: None,
            user: NotifiedUser {
                iss: "https://i/".into(),
                sub: "alice".into(),
            },
            binding_message: "Buy 5".into(),
            authorization_details: None,
            approval_url: "https://vault/ciba/approve?ticket=SECRET".into(),
            expires_at: 0,
        };
        assert!(!format!("{n:?}").contains("SECRET"));
    }
}
