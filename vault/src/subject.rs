//! Verification of subject tokens (the user's JWT, passed by the gateway in a
//! token exchange or by the user as a bearer token) with `agentward-core`'s
//! verifier, plus the I/O it leaves to its host: fetching each issuer's JWKS
//! over HTTP when core's schedule (`agentward_core::jwks::Schedule`, the
//! plugins' too) says so: the first keys, periodic refreshes, a
//! rate-limited refetch on an unknown `kid`.

use agentward_core::cache::TokenCache;
use agentward_core::jwks::{KeySet, Schedule};
use agentward_core::jwt::{self, Rejection, TrustStore};
use agentward_core::policy::Issuer;
use agentward_core::signature::PureRust;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A user as the vault keys them: the issuer and the `sub` it names. A
/// `sub` is unique only within its issuer (OpenID Connect Core §2), so two
/// trusted issuers may name two different people alike: links, pending
/// flows, connect tickets, sealed tokens' AAD, caches and audit rows are
/// all keyed by both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User {
    /// `iss` of the user's tokens.
    pub issuer: String,
    /// `sub`, as that issuer names the user.
    pub sub: String,
}

impl User {
    /// The user `sub` of `issuer`.
    pub fn new(issuer: impl Into<String>, sub: impl Into<String>) -> User {
        User {
            issuer: issuer.into(),
            sub: sub.into(),
        }
    }
}

/// The verified user behind a subject token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `sub`.
    pub sub: String,
    /// The agent the token was issued to: `azp`, else `client_id`.
    pub agent: Option<String>,
    /// `iss`.
    pub issuer: String,
}

impl Subject {
    /// The user, as the vault keys them.
    pub fn user(&self) -> User {
        User::new(self.issuer.clone(), self.sub.clone())
    }
}

/// Why a subject token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectError {
    /// The token is invalid: short code and a fixed sentence, no token text.
    Rejected {
        /// e.g. `expired`, `bad_signature`.
        code: &'static str,
        /// A sentence for `error_description`.
        description: &'static str,
    },
    /// The issuer's keys could not be fetched.
    KeysUnavailable,
}

/// Why a JWKS fetch is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Keys missing or stale.
    Due,
    /// A token named a `kid` the loaded keys lack.
    UnknownKid,
}

/// Largest JWKS document read from a `jwks_uri`.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Most verified subject tokens kept (first in, first out beyond it).
pub const VERIFIED_CACHE_ENTRIES: usize = 10_000;

/// A verified subject token, as cached.
#[derive(Debug)]
struct VerifiedSubject {
    subject: Subject,
    /// Index of its issuer, whose keys are kept fresh on a cache hit too.
    issuer: usize,
}

/// Verified subject tokens by keyed hash (`TokenCache::key`), each until
/// its `exp` + clock skew.
/// `generation` moves whenever the cache is cleared (an issuer's keys
/// changed), so a verification that raced a key change is not cached.
#[derive(Debug)]
struct VerifiedCache {
    generation: u64,
    tokens: TokenCache<Arc<VerifiedSubject>>,
}

/// Trusted issuers and their keys, fetched and refreshed on demand.
#[derive(Debug)]
pub struct SubjectVerifier {
    trust: RwLock<TrustStore>,
    issuers: Vec<Issuer>,
    /// Each issuer's fetch schedule; held across a fetch, so one runs at a time.
    fetches: Mutex<Vec<Schedule>>,
    /// The origin of the schedules' monotonic milliseconds.
    started: Instant,
    http: reqwest::Client,
    clock_skew_seconds: u64,
    verified: std::sync::Mutex<VerifiedCache>,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl SubjectVerifier {
    /// Issuers as in the policy document (`issuers` array).
    pub fn new(
        issuers: Vec<Issuer>,
        clock_skew_seconds: u64,
        http: reqwest::Client,
    ) -> SubjectVerifier {
        let fetches = Mutex::new(issuers.iter().map(Schedule::of).collect());
        SubjectVerifier {
            trust: RwLock::new(TrustStore::new(issuers.clone(), clock_skew_seconds)),
            issuers,
            fetches,
            started: Instant::now(),
            http,
            clock_skew_seconds,
            verified: std::sync::Mutex::new(VerifiedCache {
                generation: 0,
                tokens: TokenCache::new(VERIFIED_CACHE_ENTRIES),
            }),
        }
    }

    fn verified_cache(&self) -> std::sync::MutexGuard<'_, VerifiedCache> {
        self.verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Parses the configured issuers (TOML values) into core's `Issuer`s.
    pub fn parse_issuers(values: &[serde_json::Value]) -> Result<Vec<Issuer>, String> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_value::<Issuer>(v.clone())
                    .map_err(|e| format!("issuers[{i}]: {e}"))
            })
            .collect()
    }

    /// Fetches every issuer's JWKS that is missing or stale (best effort).
    pub async fn refresh_stale(&self) {
        for index in 0..self.issuers.len() {
            self.fetch(index, Want::Due).await;
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn has_keys(&self, index: usize) -> bool {
        self.trust
            .read()
            .is_ok_and(|trust| trust.keys(index).is_some())
    }

    /// Fetches issuer `index`'s JWKS if the schedule says so; an unknown
    /// `kid` asks for an early refetch, rate-limited by
    /// `jwks_min_refetch_seconds`.
    async fn fetch(&self, index: usize, want: Want) {
        let Some(issuer) = self.issuers.get(index) else {
            return;
        };
        let Some(uri) = issuer.jwks_uri.as_deref() else {
            return;
        };
        let mut fetches = self.fetches.lock().await;
        let Some(schedule) = fetches.get_mut(index) else {
            return;
        };
        let now = self.now_ms();
        if want == Want::UnknownKid {
            schedule.unknown_kid(now);
        }
        if !schedule.due(now, self.has_keys(index)) {
            return;
        }
        schedule.start(now);
        let timeout = Duration::from_millis(issuer.jwks_timeout_ms.max(100));
        let fetched = async {
            let response = self
                .http
                .get(uri)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| crate::upstream::error_chain(&e))?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status().as_u16()));
            }
            let body = crate::upstream::read_capped(response, MAX_JWKS_BYTES)
                .await
                .map_err(|e| match e {
                    crate::upstream::BodyError::TooLarge => {
                        format!("JWKS too large (over {MAX_JWKS_BYTES} bytes)")
                    }
                    crate::upstream::BodyError::Read(e) => crate::upstream::error_chain(&e),
                })?;
            KeySet::parse(&body).map_err(|e| format!("not a usable JWKS: {e}"))
        }
        .await;
        schedule.finished(fetched.is_ok(), self.now_ms());
        match fetched {
            Ok(keys) => {
                let changed = match self.trust.write() {
                    Ok(mut trust) => {
                        let changed = trust.keys(index) != Some(&keys);
                        if changed {
                            trust.set_keys(index, keys);
                        }
                        changed
                    }
                    Err(_) => false,
                };
                if changed {
                    // A token verified with a key that is gone must be
                    // verified again.
                    let mut cache = self.verified_cache();
                    cache.tokens.clear();
                    cache.generation += 1;
                }
                tracing::debug!(issuer = %issuer.issuer, "fetched JWKS");
            }
            Err(cause) => {
                tracing::warn!(issuer = %issuer.issuer, %cause, "JWKS fetch failed; keeping previous keys")
            }
        }
    }

    fn check(&self, token: &str) -> Result<jwt::Verified, Rejection> {
        match self.trust.read() {
            Ok(trust) => jwt::verify(token, &trust, now_unix(), &PureRust),
            Err(_) => Err(Rejection::KeysUnavailable(0)),
        }
    }

    fn issuer_index(&self, token: &str) -> Option<usize> {
        let (iss, _kid) = jwt::peek_issuer_and_kid(token)?;
        self.issuers.iter().position(|i| i.issuer == iss)
    }

    /// Verifies a subject token; fetches keys when they are missing, stale, or
    /// lack the token's `kid`.
    ///
    /// A token verified earlier is answered from a cache until it expires
    /// (plus the clock skew) or its issuer's keys change.
    pub async fn verify(&self, token: &str) -> Result<Subject, SubjectError> {
        let key = self.verified_cache().tokens.key(&[token]);
        let cached = self.verified_cache().tokens.get(&key, now_unix());
        if let Some(hit) = cached {
            // Keep the keys as fresh as an uncached verification would; a
            // refetch that changes them empties the cache.
            self.fetch(hit.issuer, Want::Due).await;
            let still = self.verified_cache().tokens.get(&key, now_unix());
            if let Some(hit) = still {
                return Ok(hit.subject.clone());
            }
        }
        let generation = self.verified_cache().generation;
        if let Some(index) = self.issuer_index(token) {
            self.fetch(index, Want::Due).await;
        }
        let verified = match self.check(token) {
            Err(Rejection::UnknownKid) => {
                if let Some(index) = self.issuer_index(token) {
                    self.fetch(index, Want::UnknownKid).await;
                }
                self.check(token)
            }
            other => other,
        };
        let verified = match verified {
            Ok(v) => v,
            Err(Rejection::KeysUnavailable(_)) => return Err(SubjectError::KeysUnavailable),
            Err(r) => {
                return Err(SubjectError::Rejected {
                    code: r.code(),
                    description: r.description(),
                })
            }
        };
        let text = |name: &str| {
            verified
                .claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let sub = text("sub")
            .filter(|s| !s.is_empty())
            .ok_or(SubjectError::Rejected {
                code: "missing_sub",
                description: "the token names no subject (sub)",
            })?;
        // Users are keyed by issuer too: never by an issuer left blank.
        let issuer = self
            .issuers
            .get(verified.issuer)
            .map(|i| i.issuer.clone())
            .filter(|i| !i.is_empty())
            .ok_or(SubjectError::Rejected {
                code: "untrusted_issuer",
                description: "the token's issuer is not trusted",
            })?;
        let subject = Subject {
            sub,
            agent: text("azp").or_else(|| text("client_id")),
            issuer,
        };
        let mut cache = self.verified_cache();
        if cache.generation == generation {
            let valid_until = verified.exp.saturating_add(self.clock_skew_seconds);
            cache.tokens.insert(
                key,
                valid_until,
                Arc::new(VerifiedSubject {
                    subject: subject.clone(),
                    issuer: verified.issuer,
                }),
            );
        }
        Ok(subject)
    }
}
