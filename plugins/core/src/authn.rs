//! The jwt-identity decision: from a request's head to "forward with these
//! identity headers", "answer this", or "wait for the issuer's keys"; plus
//! the JWKS fetch schedule (periodic refresh, rate-limited refetch on an
//! unknown `kid`). The host performs the I/O and feeds results back.

use crate::cache::TokenCache;
use crate::identity::{identity_headers, HEADER_PREFIX, SCOPE};
use crate::jwks::KeySet;
use crate::jwt::{self, Limits, Rejection, TrustStore};
use crate::metadata;
use crate::path::{self, RequestTarget};
use crate::policy::{Policy, Route, Unmatched};
use crate::proof::{self, ProofKey};
use crate::response::{self, LocalResponse};
use crate::scopes;
use crate::signature::SignatureCheck;
use std::rc::Rc;

/// What a request carries that matters for authentication.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, query included, as received.
    pub path: &'a str,
    /// `authorization`.
    pub authorization: Option<&'a str>,
    /// The configured `identity.token_header`, if any.
    pub token_header: Option<&'a str>,
}

/// Identity headers of a verified token, shared between cache and requests.
pub type IdentityHeaders = Rc<Vec<(String, String)>>;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Remove inbound identity headers (see [`Authenticator::strips`]), set these, forward.
    Forward {
        /// Headers to set; empty for an anonymous request on a public route.
        set: IdentityHeaders,
        /// Also remove `authorization`.
        remove_authorization: bool,
        /// Also remove the configured `identity.token_header`.
        remove_token_header: bool,
        /// Replace `:path` with this: the normalised path the route was
        /// matched on, without the token query parameter.
        path: Option<String>,
    },
    /// Answer locally.
    Respond(LocalResponse),
    /// Hold the request until this issuer's keys arrive, then decide again.
    Wait {
        /// Issuer index.
        issuer: usize,
    },
}

/// Why the outcome is what it is, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A verified token; `cached` when the cache answered.
    Allowed {
        /// Served from the verified-token cache.
        cached: bool,
    },
    /// No token on a public route.
    Anonymous,
    /// The metadata document was served.
    Metadata,
    /// No token on a protected route.
    MissingToken,
    /// The token was refused.
    Rejected(Rejection),
    /// Keys are not there; waiting or failing with 503.
    KeysPending,
    /// A valid token without every scope its route needs (403).
    InsufficientScope,
    /// The path cannot be normalised unambiguously (400).
    InvalidPath,
    /// No route matches and `unmatched` is `deny` (403).
    NoRoute,
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// Why.
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Default)]
struct JwksSchedule {
    in_flight: bool,
    failed: bool,
    refetch_wanted: bool,
    last_attempt_ms: Option<u64>,
    /// When a token's unknown `kid` last caused a refetch (the rate limit).
    last_refetch_ms: Option<u64>,
    next_refresh_ms: u64,
}

/// A JWKS fetch to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksFetch {
    /// Issuer index.
    pub issuer: usize,
    /// Envoy cluster.
    pub cluster: String,
    /// `:authority` of the request.
    pub authority: String,
    /// `:path` of the request.
    pub path: String,
    /// Timeout in milliseconds.
    pub timeout_ms: u64,
}

/// The jwt-identity state of one VM: policy, keys, cache and fetch schedule.
pub struct Authenticator {
    policy: Policy,
    trust: TrustStore,
    cache: TokenCache<IdentityHeaders>,
    schedule: Vec<JwksSchedule>,
    anonymous: IdentityHeaders,
    /// Key of the `x-agentward-proof` added to verified identities.
    proof: Option<ProofKey>,
}

/// Retry delay after a failed JWKS fetch when no keys are loaded.
const RETRY_MS: u64 = 2_000;

impl Authenticator {
    /// Builds the state for a validated policy.
    pub fn new(policy: Policy) -> Authenticator {
        let limits = Limits {
            max_token_bytes: policy.identity.max_token_bytes,
            max_header_bytes: policy.identity.max_header_bytes,
        };
        let trust =
            TrustStore::new(policy.issuers.clone(), policy.clock_skew_seconds).with_limits(limits);
        let cache = TokenCache::new(policy.identity.cache_max_entries);
        let schedule = vec![JwksSchedule::default(); policy.issuers.len()];
        Authenticator {
            policy,
            trust,
            cache,
            schedule,
            anonymous: Rc::new(Vec::new()),
            proof: None,
        }
    }

    /// Sets the key of the identity proof (see [`crate::proof`]); a new key
    /// drops the verified-token cache, whose proofs were made with the old one.
    pub fn set_proof_key(&mut self, key: ProofKey) {
        if self.proof != Some(key) {
            self.proof = Some(key);
            self.cache.clear();
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether an inbound header must be removed before identity is set:
    /// every `x-agentward-*` header and every `claim_to_headers` target,
    /// whatever the case and whether words are separated by `-`, `_` or `.`
    /// (CGI, WSGI and PHP read `x_agentward_sub` as `x-agentward-sub`).
    pub fn strips(&self, name: &str) -> bool {
        let name = name.as_bytes();
        let prefix = HEADER_PREFIX.as_bytes();
        name.get(..prefix.len())
            .is_some_and(|start| folded(start).eq(prefix.iter().copied()))
            || self
                .policy
                .identity
                .claim_to_headers
                .iter()
                .any(|c| folded(c.header.as_bytes()).eq(folded(name)))
    }

    /// Decides a request at `now_ms` (Unix milliseconds).
    pub fn decide(
        &mut self,
        head: &RequestHead<'_>,
        now_ms: u64,
        check: &dyn SignatureCheck,
    ) -> Decision {
        let target = match path::normalize(head.path) {
            Ok(target) => target,
            Err(why) => {
                return Decision {
                    outcome: Outcome::Respond(response::invalid_request(
                        "invalid_path",
                        why.description(),
                    )),
                    verdict: Verdict::InvalidPath,
                }
            }
        };
        if let Some(answer) = metadata::answer(&self.policy, head.method, &target.path) {
            return Decision {
                outcome: Outcome::Respond(answer),
                verdict: Verdict::Metadata,
            };
        }
        let route = self.policy.route(head.method, &target.path);
        let public = match route {
            Some(route) => route.public,
            None => match self.policy.unmatched {
                Unmatched::Deny => {
                    return Decision {
                        outcome: Outcome::Respond(response::access_denied(
                            "no_route",
                            "no route of the policy matches this request",
                        )),
                        verdict: Verdict::NoRoute,
                    }
                }
                Unmatched::Authenticated => false,
                Unmatched::Public => true,
            },
        };
        let upstream = Upstream::of(&self.policy, route, head.path, &target);
        let Some(token) = self.token(head) else {
            return if public {
                self.forward(self.anonymous.clone(), upstream, Verdict::Anonymous)
            } else {
                Decision {
                    outcome: Outcome::Respond(response::missing_token(&self.policy.resource)),
                    verdict: Verdict::MissingToken,
                }
            };
        };
        let now = now_ms / 1000;
        let key = self.cache.key(&[token]);
        if let Some(headers) = self.cache.get(&key, now) {
            return self.allow(route, headers, upstream, true);
        }
        match jwt::verify(token, &self.trust, now, check) {
            Ok(v) => {
                let client_credentials = self
                    .policy
                    .issuers
                    .get(v.issuer)
                    .is_some_and(|i| i.client_credentials);
                let extra = &self.policy.identity.claim_to_headers;
                let headers = match identity_headers(&v.claims, extra, client_credentials) {
                    Ok(mut headers) => {
                        if let Some(proof_key) = &self.proof {
                            proof::seal(proof_key, &mut headers, token);
                        }
                        Rc::new(headers)
                    }
                    Err(bad) => {
                        let answer = response::bad_claim(&self.policy.resource, &bad.description());
                        return Decision {
                            outcome: Outcome::Respond(answer),
                            verdict: Verdict::Rejected(Rejection::BadClaim),
                        };
                    }
                };
                let until = v.exp.saturating_add(self.policy.clock_skew_seconds);
                self.cache.insert(key, until, headers.clone());
                self.allow(route, headers, upstream, false)
            }
            Err(Rejection::KeysUnavailable(issuer)) => self.keys_pending(issuer),
            Err(Rejection::UnknownKid) => {
                // The issuer's keys are loaded and lack this kid: refuse now
                // (holding would let anyone with a made-up kid pin requests),
                // and refetch in the background in case the key is new.
                let issuer = jwt::peek_issuer_and_kid(token)
                    .and_then(|(iss, _)| self.trust.issuers().position(|i| i.issuer == iss));
                if let Some(i) = issuer {
                    self.want_refetch(i, now_ms);
                }
                self.reject(Rejection::UnknownKid)
            }
            Err(why) => self.reject(why),
        }
    }

    /// Forwards a verified identity if it holds every scope the request's
    /// route needs (checked per request: a cached token may call any route).
    fn allow(
        &self,
        route: Option<&Route>,
        headers: IdentityHeaders,
        upstream: Upstream,
        cached: bool,
    ) -> Decision {
        let required = route.map_or(&[][..], |r| r.scopes.as_slice());
        if !required.is_empty() {
            let granted = headers
                .iter()
                .find(|(name, _)| name == SCOPE)
                .map_or("", |(_, value)| value.as_str());
            let missing = scopes::missing(required, granted);
            if !missing.is_empty() {
                let answer =
                    response::insufficient_scope(&self.policy.resource, required, &missing);
                return Decision {
                    outcome: Outcome::Respond(answer),
                    verdict: Verdict::InsufficientScope,
                };
            }
        }
        self.forward(headers, upstream, Verdict::Allowed { cached })
    }

    fn token<'a>(&self, head: &RequestHead<'a>) -> Option<&'a str> {
        let from_authorization = head.authorization.and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let from_header = head.token_header.map(str::trim);
        let from_query = self
            .policy
            .identity
            .token_query_param
            .as_deref()
            .and_then(|param| query_param(head.path, param));
        from_authorization
            .or(from_header)
            .or(from_query)
            .filter(|t| !t.is_empty())
    }

    fn forward(&self, set: IdentityHeaders, upstream: Upstream, verdict: Verdict) -> Decision {
        Decision {
            outcome: Outcome::Forward {
                set,
                remove_authorization: upstream.remove_authorization,
                remove_token_header: upstream.remove_token_header,
                path: upstream.path,
            },
            verdict,
        }
    }

    fn reject(&self, why: Rejection) -> Decision {
        Decision {
            outcome: Outcome::Respond(response::invalid_token(&self.policy.resource, why)),
            verdict: Verdict::Rejected(why),
        }
    }

    fn keys_pending(&self, issuer: usize) -> Decision {
        let failed = self
            .schedule
            .get(issuer)
            .is_some_and(|s| s.failed && !s.in_flight);
        let outcome = if failed {
            Outcome::Respond(response::unavailable(
                "jwks_unavailable",
                "the token issuer's signing keys could not be fetched",
            ))
        } else {
            Outcome::Wait { issuer }
        };
        Decision {
            outcome,
            verdict: Verdict::KeysPending,
        }
    }

    /// Asks for a refetch of an issuer's keys because a token named an
    /// unknown `kid`, at most once per `jwks_min_refetch_seconds`.
    fn want_refetch(&mut self, issuer: usize, now_ms: u64) {
        let Some(min_ms) = self
            .policy
            .issuers
            .get(issuer)
            .filter(|i| i.jwks_uri.is_some())
            .map(|i| i.jwks_min_refetch_seconds.saturating_mul(1000))
        else {
            return;
        };
        let Some(s) = self.schedule.get_mut(issuer) else {
            return;
        };
        if s.in_flight || s.refetch_wanted {
            return;
        }
        if s.last_refetch_ms
            .is_none_or(|last| now_ms >= last.saturating_add(min_ms))
        {
            s.refetch_wanted = true;
            s.last_refetch_ms = Some(now_ms);
        }
    }

    /// The JWKS fetches to start now; they are marked in flight.
    pub fn fetches_due(&mut self, now_ms: u64) -> Vec<JwksFetch> {
        let mut due = Vec::new();
        for (i, issuer) in self.policy.issuers.iter().enumerate() {
            let (Some(uri), Some(cluster)) = (&issuer.jwks_uri, &issuer.jwks_cluster) else {
                continue;
            };
            let Some(s) = self.schedule.get_mut(i) else {
                continue;
            };
            if s.in_flight {
                continue;
            }
            let has_keys = self.trust.keys(i).is_some();
            let start = if !has_keys {
                s.last_attempt_ms
                    .is_none_or(|last| now_ms >= last.saturating_add(RETRY_MS))
                    || s.refetch_wanted
            } else {
                s.refetch_wanted || now_ms >= s.next_refresh_ms
            };
            if start {
                s.in_flight = true;
                s.refetch_wanted = false;
                s.last_attempt_ms = Some(now_ms);
                let (authority, path) = split_uri(uri);
                due.push(JwksFetch {
                    issuer: i,
                    cluster: cluster.clone(),
                    authority: authority.to_string(),
                    path: path.to_string(),
                    timeout_ms: issuer.jwks_timeout_ms,
                });
            }
        }
        due
    }

    /// Feeds a fetch result back: `Some(body)` for a 200 answer, `None` for
    /// a failure. Returns whether the issuer now has keys. Bad documents keep
    /// the previous keys.
    pub fn jwks_fetched(&mut self, issuer: usize, body: Option<&[u8]>, now_ms: u64) -> bool {
        let refresh_ms = self
            .policy
            .issuers
            .get(issuer)
            .map_or(600_000, |i| i.jwks_refresh_seconds.saturating_mul(1000));
        let parsed = body.and_then(|b| KeySet::parse(b).ok());
        let ok = parsed.is_some();
        if let Some(keys) = parsed {
            if self.trust.keys(issuer) != Some(&keys) {
                // A key may have been withdrawn: tokens it signed must verify again.
                self.cache.clear();
                self.trust.set_keys(issuer, keys);
            }
        }
        if let Some(s) = self.schedule.get_mut(issuer) {
            s.in_flight = false;
            s.failed = !ok;
            s.next_refresh_ms = if ok {
                now_ms.saturating_add(refresh_ms)
            } else {
                now_ms.saturating_add(RETRY_MS)
            };
        }
        self.trust.keys(issuer).is_some()
    }

    /// Whether a fetch for this issuer is under way.
    pub fn fetch_in_flight(&self, issuer: usize) -> bool {
        self.schedule.get(issuer).is_some_and(|s| s.in_flight)
    }

    /// The 503 sent to a request whose wait for keys ran out.
    pub fn wait_timed_out(&self) -> LocalResponse {
        response::unavailable(
            "jwks_unavailable",
            "the token issuer's signing keys could not be fetched in time",
        )
    }

    /// The timeout of an issuer's fetch, which also bounds a request's wait.
    pub fn wait_limit_ms(&self, issuer: usize) -> u64 {
        self.policy
            .issuers
            .get(issuer)
            .map_or(5_000, |i| i.jwks_timeout_ms)
    }
}

/// A header name's bytes, lower case, with `_` and `.` read as `-`.
fn folded(name: &[u8]) -> impl Iterator<Item = u8> + '_ {
    name.iter().map(|b| match b {
        b'_' | b'.' => b'-',
        b => b.to_ascii_lowercase(),
    })
}

/// What of the user's token goes upstream, and on which `:path`.
struct Upstream {
    remove_authorization: bool,
    remove_token_header: bool,
    path: Option<String>,
}

impl Upstream {
    /// The token goes on only where the route asks (`forward_token`);
    /// `Authorization` also stays for a `connection` route, where
    /// token-exchange replaces it. The token query parameter leaves the
    /// path, and a path that was not normal is replaced by its normal form.
    fn of(
        policy: &Policy,
        route: Option<&Route>,
        raw: &str,
        target: &RequestTarget<'_>,
    ) -> Upstream {
        let forward = route.is_some_and(|r| r.forward_token);
        let exchange = route.is_some_and(|r| r.connection.is_some());
        let query = match (&policy.identity.token_query_param, target.query) {
            (Some(param), Some(query)) if !forward => path::without_query_param(query, param),
            _ => None,
        };
        let path = if target.was_normal() && query.is_none() {
            None
        } else {
            let query = query.as_deref().or(target.query).filter(|q| !q.is_empty());
            let path = match query {
                Some(q) => format!("{}?{q}", target.path),
                None => target.path.to_string(),
            };
            (path != raw).then_some(path)
        };
        Upstream {
            remove_authorization: !forward && !exchange,
            remove_token_header: !forward,
            path,
        }
    }
}

/// Splits an absolute URL into authority and path (`/` when it has none).
fn split_uri(uri: &str) -> (&str, &str) {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    }
}

fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
