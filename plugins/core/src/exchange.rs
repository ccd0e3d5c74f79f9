//! token-exchange's decisions, sans-IO: from a request's head to "go on with
//! the upstream token in `Authorization`", "answer this", or "ask the vault
//! and feed its answer back" ([`Exchanger`]); the messages of the exchange
//! itself are in [`vault`]. A host reads the request, carries out the
//! [`Step`], and counts the [`Verdict`]; it decides nothing.
//!
//! The order of a decision: the path must be in normal form; a route with
//! a connection names the target; the request must carry a bearer token and
//! `x-agentward-sub`; this instance's own memory of that bearer token (the
//! identity headers and proof it checked) answers first; otherwise the
//! identity is proven ([`crate::identity::ReceivedIdentity::verify`]), then
//! the [`SharedCache`] (all workers, or a Spin key-value store) answers, and
//! only then the vault is asked.

pub mod vault;

pub use vault::{
    read_answer, token_request, unavailable, ExchangeResult, ExchangeTarget, UpstreamToken,
    ACCESS_TOKEN_TYPE, AUTH0_FEDERATED_TOKEN_TYPE, GRANT_AUTH0_FEDERATED, GRANT_TOKEN_EXCHANGE,
    MAX_ANSWER_BYTES,
};

use crate::bearer;
use crate::cache::{TokenCache, TokenKey};
use crate::clock::TickClock;
use crate::identity::{ReceivedIdentity, VerifiedIdentity};
use crate::path;
use crate::policy::{Policy, PolicyError, VaultClient};
use crate::proof::{self, ChecksProofs, ProofVerifier};
use crate::response::{self, LocalResponse};
use crate::shared_cache::SharedCache;
use crate::step::{Answer, Edits, SharedHeaders, Step};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a request carries that matters for the exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, as received.
    pub path: &'a str,
    /// `authorization`.
    pub authorization: Option<&'a str>,
    /// The identity headers, as received.
    pub identity: ReceivedIdentity<'a>,
}

/// Why a decision is what it is: one counter each (see [`Verdict::metric`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No connection on the request's route (or no route): untouched.
    NotExchanged,
    /// Served from this instance's memory or the shared cache.
    CacheHit,
    /// The vault is asked.
    VaultCall,
    /// The vault answered with a token.
    VaultOk,
    /// The vault refused (the user must link the account, or the gateway's
    /// credentials are wrong).
    Refused,
    /// The vault is down, slow or answered nonsense.
    VaultUnavailable,
    /// No bearer token or no user, an unproven identity, or no proof key.
    NoIdentity,
    /// The path is not in normal form (400).
    InvalidPath,
    /// The host's clock cannot be read (503).
    ClockUnavailable,
}

impl Verdict {
    /// The verdicts that have a counter.
    pub const COUNTED: [Verdict; 6] = [
        Verdict::CacheHit,
        Verdict::VaultCall,
        Verdict::VaultOk,
        Verdict::Refused,
        Verdict::VaultUnavailable,
        Verdict::NoIdentity,
    ];

    /// The counter this verdict adds to (`agentward.exchange.…`), if any.
    pub fn metric(self) -> Option<&'static str> {
        Some(match self {
            Verdict::CacheHit => "agentward.exchange.cache_hit",
            Verdict::VaultCall => "agentward.exchange.vault_call",
            Verdict::VaultOk => "agentward.exchange.vault_ok",
            Verdict::Refused => "agentward.exchange.refused",
            Verdict::VaultUnavailable => "agentward.exchange.vault_unavailable",
            Verdict::NoIdentity => "agentward.exchange.no_identity",
            Verdict::NotExchanged | Verdict::InvalidPath | Verdict::ClockUnavailable => {
                return None
            }
        })
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do.
    pub step: Step,
    /// Why.
    pub verdict: Verdict,
    /// With a [`Step::Call`]: what to hand back to [`Exchanger::on_answer`]
    /// with the call's answer.
    pub pending: Option<Pending>,
    /// A line for the host's log (warning level); never holds a token.
    pub warning: Option<String>,
}

impl Decision {
    fn new(step: Step, verdict: Verdict) -> Decision {
        Decision {
            step,
            verdict,
            pending: None,
            warning: None,
        }
    }

    fn respond(answer: LocalResponse, verdict: Verdict) -> Decision {
        Decision::new(Step::Respond(answer), verdict)
    }

    fn warn(mut self, warning: String) -> Decision {
        self.warning = Some(warning);
        self
    }
}

/// An exchange waiting for the vault's answer: what the host keeps for the
/// request meanwhile. Serialisable, so a host may keep it anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Index of the route in the policy.
    route: usize,
    /// The shared-cache key of the user's upstream token.
    cache_key: String,
    /// This instance's key for the bearer token and target.
    local_key: TokenKey,
    /// The proven issuer.
    issuer: String,
    /// The proven user.
    subject: String,
    /// The proof that was checked.
    proof: String,
}

/// What an instance remembers of one bearer token's exchange for one
/// target: whose token it is (from the identity headers its proof covered),
/// that proof, and the `Authorization` to send. A repeated request then
/// skips the MAC, hashing the shared key and reading the shared cache.
#[derive(Debug)]
struct Remembered {
    issuer: String,
    subject: String,
    proof: String,
    authorization: SharedHeaders,
}

impl Remembered {
    /// Whether a request with these identity headers may be served: the
    /// proof checked for this entry, and headers that name its user. (The
    /// entry is found by the bearer token's signature, which that proof
    /// names.) Otherwise the request's proof is checked in full.
    fn serves(&self, identity: &ReceivedIdentity<'_>) -> bool {
        identity.sub() == Some(self.subject.as_str())
            && identity.issuer() == Some(self.issuer.as_str())
            && identity
                .proof()
                .is_some_and(|p| proof::same(p.as_bytes(), self.proof.as_bytes()))
    }
}

/// The token-exchange state of one instance (an Envoy VM, a Spin
/// instance): the policy's routes and vault, this instance's memory of
/// exchanges, its clock and the proof key.
pub struct Exchanger {
    policy: Policy,
    vault: VaultClient,
    /// Each route's target (by index in `policy.routes`).
    targets: Vec<Option<ExchangeTarget>>,
    /// Exchanges by bearer token and target, bounded by
    /// `identity.cache_max_entries`.
    local: TokenCache<Arc<Remembered>>,
    clock: TickClock,
    /// jwt-identity's proof key, once read from the shared cache.
    proofs: ProofVerifier,
}

impl ChecksProofs for Exchanger {
    fn proofs(&self) -> &ProofVerifier {
        &self.proofs
    }
}

impl Exchanger {
    /// How often a host should call [`Exchanger::tick`]: expiries are
    /// checked against the last tick's time plus this.
    pub const TICK_SECONDS: u64 = 1;

    /// The exchanger for a validated policy; `env` reads the environment
    /// the vault's client secret may come from. Fails naming the field
    /// when there is no `vault` or its secret cannot be read.
    pub fn new(
        mut policy: Policy,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Exchanger, PolicyError> {
        let Some(mut vault) = policy.vault.take() else {
            return Err(PolicyError {
                field: "vault".into(),
                message: "the token-exchange plugin needs the `vault` section".into(),
            });
        };
        vault.resolve_secret(env)?;
        let targets = policy.routes.iter().map(ExchangeTarget::of).collect();
        Ok(Exchanger {
            local: TokenCache::new(policy.identity.cache_max_entries),
            policy,
            vault,
            targets,
            clock: TickClock::new(Self::TICK_SECONDS),
            proofs: ProofVerifier::new(),
        })
    }

    /// Reads jwt-identity's proof key from the shared cache now (a host
    /// does at start, so a cache that fails later still has the key);
    /// whether there is one. Requests read it too while there is none.
    pub fn read_proof_key(&mut self, cache: &impl SharedCache) -> bool {
        self.proofs.read_key(cache)
    }

    /// On the host's tick: `now` is its clock (Unix seconds).
    pub fn tick(&self, now: u64) {
        self.clock.tick(now);
    }

    /// Decides a request. `clock` reads the host's clock (Unix seconds,
    /// `None` when it cannot): called only when the tick's time is not
    /// enough. The shared cache holds the users' upstream tokens and
    /// jwt-identity's proof key.
    pub fn decide(
        &mut self,
        head: &RequestHead<'_>,
        clock: impl FnOnce() -> Option<u64>,
        cache: &mut impl SharedCache,
    ) -> Decision {
        let path = match path::normalize(head.path) {
            // Matching a path other than the one the upstream gets would let
            // `//broker/portfolio` skip the exchange: jwt-identity (or Envoy's
            // normalize_path and merge_slashes) puts it in normal form first.
            Ok(target) if target.was_normal() => target.path,
            Ok(_) => {
                let answer = response::invalid_request(
                    "invalid_path",
                    "the request path is not in normal form (jwt-identity must run before token-exchange)",
                );
                return Decision::respond(answer, Verdict::InvalidPath);
            }
            Err(why) => {
                let answer = response::invalid_request("invalid_path", why.description());
                return Decision::respond(answer, Verdict::InvalidPath);
            }
        };
        let route = self.policy.route_index(head.method, &path);
        let Some((route, target)) = route.and_then(|i| Some((i, self.targets.get(i)?.as_ref()?)))
        else {
            return Decision::new(Step::Continue(Edits::none()), Verdict::NotExchanged);
        };
        // Read unchecked for the lookup of this instance's memory, which
        // holds only tokens that passed `bearer::is_token68` below.
        let bearer = head.authorization.and_then(bearer::credential);
        let (Some(subject), Some(bearer)) = (head.identity.sub(), bearer) else {
            let answer = response::missing_token(&self.policy.resource);
            return Decision::respond(answer, Verdict::NoIdentity);
        };
        // A clock that cannot be read before the first tick gives 0: no
        // expiry can be checked, so the request fails closed.
        let now = self.clock.now(|| clock().unwrap_or(0));
        if now == 0 {
            return Decision::respond(response::clock_unavailable(), Verdict::ClockUnavailable);
        }
        let local_key = target.local_key(&self.local, bearer);
        if let Some(entry) = self.local.get(&local_key, now) {
            if entry.serves(&head.identity) {
                let edits = authorization_edits(&entry.authorization);
                return Decision::new(Step::Continue(edits), Verdict::CacheHit);
            }
        }
        if !bearer::is_token68(bearer) {
            let answer = response::missing_token(&self.policy.resource);
            return Decision::respond(answer, Verdict::NoIdentity);
        }
        let identity = match self.proofs.verify(&head.identity, Some(bearer), cache) {
            Ok(identity) => identity,
            Err(e) => {
                let answer = e.response(&self.policy.resource);
                return Decision::respond(answer, Verdict::NoIdentity);
            }
        };
        let cache_key = target.cache_key(identity.issuer, subject);
        let margin = self.vault.expiry_margin_seconds;
        let shared = cache
            .get(&cache_key)
            .and_then(|bytes| serde_json::from_slice::<UpstreamToken>(&bytes).ok())
            .filter(|token| token.usable(now, margin));
        if let Some(token) = shared {
            let authorization = self.remember(local_key, &identity, subject, &token);
            return Decision::new(
                Step::Continue(authorization_edits(&authorization)),
                Verdict::CacheHit,
            );
        }
        let call = token_request(&self.vault, target, bearer);
        Decision {
            pending: Some(Pending {
                route,
                cache_key,
                local_key,
                issuer: identity.issuer.to_string(),
                subject: subject.to_string(),
                proof: identity.proof.to_string(),
            }),
            ..Decision::new(Step::Call(call), Verdict::VaultCall)
        }
    }

    /// Decides on the vault's answer to the call a [`Decision`] asked for
    /// (`answer`: [`Answer::Failed`] when the call could not even be made).
    /// `now` is the host's clock (Unix seconds, `None` when it cannot be
    /// read). A token is capped to `max_cache_seconds`, written to the
    /// shared cache and remembered here, and goes upstream.
    pub fn on_answer(
        &mut self,
        pending: Pending,
        answer: Answer,
        now: Option<u64>,
        cache: &mut impl SharedCache,
    ) -> Decision {
        let connection = match self.targets.get(pending.route) {
            Some(Some(target)) => target.connection.as_str(),
            _ => {
                let answer = unavailable("the exchange's route is gone");
                return Decision::respond(answer, Verdict::VaultUnavailable);
            }
        };
        let Some(now) = now.filter(|now| *now > 0) else {
            return Decision::respond(response::clock_unavailable(), Verdict::VaultUnavailable);
        };
        let (status, body) = match &answer {
            Answer::Response { status, body, .. } => (Some(u32::from(*status)), body.as_slice()),
            Answer::Failed => (None, &[][..]),
            Answer::TooLarge { size, .. } => {
                // Never read: an answer this big is not a token response.
                let warning = format!(
                    "agentward: vault answer for connection `{connection}` is {size} bytes, over the {MAX_ANSWER_BYTES}-byte limit"
                );
                let answer = unavailable("the vault's answer was too large");
                return Decision::respond(answer, Verdict::VaultUnavailable).warn(warning);
            }
        };
        match read_answer(status, body, now, connection) {
            ExchangeResult::Token(mut token) => {
                token.cap_lifetime(now, &self.vault);
                if let Ok(json) = serde_json::to_vec(&token) {
                    // A lost race with another worker only costs a later exchange.
                    cache.set(&pending.cache_key, &json);
                }
                let authorization = authorization_header(&token);
                let until = valid_until(&token, self.vault.expiry_margin_seconds);
                let remembered = Remembered {
                    issuer: pending.issuer,
                    subject: pending.subject,
                    proof: pending.proof,
                    authorization: authorization.clone(),
                };
                self.local
                    .insert(pending.local_key, until, Arc::new(remembered));
                let edits = authorization_edits(&authorization);
                Decision::new(Step::Continue(edits), Verdict::VaultOk)
            }
            ExchangeResult::Refuse(refusal) => {
                let verdict = if refusal.status == 503 {
                    Verdict::VaultUnavailable
                } else {
                    Verdict::Refused
                };
                let failed = refusal.status >= 500;
                let decision = Decision::respond(refusal, verdict);
                if !failed {
                    return decision;
                }
                let status = status.map_or("none".to_string(), |s| s.to_string());
                decision.warn(format!(
                    "agentward: token exchange for connection `{connection}` failed: vault status {status}"
                ))
            }
        }
    }

    /// Remembers an upstream token from the shared cache for this bearer
    /// token and target; the `Authorization` to send.
    fn remember(
        &mut self,
        key: TokenKey,
        identity: &VerifiedIdentity<'_>,
        subject: &str,
        token: &UpstreamToken,
    ) -> SharedHeaders {
        let authorization = authorization_header(token);
        let until = valid_until(token, self.vault.expiry_margin_seconds);
        let remembered = Remembered {
            issuer: identity.issuer.to_string(),
            subject: subject.to_string(),
            proof: identity.proof.to_string(),
            authorization: authorization.clone(),
        };
        self.local.insert(key, until, Arc::new(remembered));
        authorization
    }
}

/// `Authorization: Bearer <upstream token>`, shared by the memory and the
/// requests it serves.
fn authorization_header(token: &UpstreamToken) -> SharedHeaders {
    let value = bearer::header_value(&token.access_token);
    Arc::new(vec![("authorization".to_string(), value)])
}

fn authorization_edits(authorization: &SharedHeaders) -> Edits {
    Edits {
        set: authorization.clone(),
        ..Edits::default()
    }
}

/// Until when (Unix seconds) this instance may serve a token: as long as
/// [`UpstreamToken::usable`] holds with `margin`.
fn valid_until(token: &UpstreamToken, margin: u64) -> u64 {
    token.expires_at.saturating_sub(margin.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_from_memory_exactly_while_usable_with_the_margin() {
        let token = UpstreamToken {
            access_token: "up".into(),
            expires_at: 1000,
        };
        let until = valid_until(&token, 30);
        assert!(token.usable(until, 30) && !token.usable(until + 1, 30));
    }

    #[test]
    fn only_the_counted_verdicts_have_metrics() {
        for v in Verdict::COUNTED {
            assert!(v.metric().unwrap().starts_with("agentward.exchange."));
        }
        for v in [
            Verdict::NotExchanged,
            Verdict::InvalidPath,
            Verdict::ClockUnavailable,
        ] {
            assert_eq!(v.metric(), None);
        }
    }
}
