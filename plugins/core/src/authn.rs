//! The jwt-identity decision: from a request's head to a [`Step`]: go on
//! with these identity headers, answer this, or hold until the issuer's
//! keys arrive; plus the JWKS fetches ([`Callout`]s, on core's
//! [`Schedule`]) whose [`Answer`]s the host feeds back.

use crate::bearer;
use crate::cache::TokenCache;
use crate::identity::{identity_headers, HEADER_PREFIX, SCOPE};
use crate::jwks::{KeySet, Schedule};
use crate::jwt::{self, Limits, Rejection, TrustStore};
use crate::metadata;
use crate::path::{self, RequestTarget};
use crate::policy::{Policy, Route, Unmatched};
use crate::proof::{self, ProofKey};
use crate::response::{self, LocalResponse};
use crate::scopes;
use crate::signature::SignatureCheck;
use crate::step::{Answer, Callout, Edits, SharedHeaders, Step};
use std::sync::Arc;

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

/// Why the step is what it is, for metrics and logs.
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
    /// What to do: [`Step::Continue`] with the identity headers, the
    /// token's removal and the `:path` rewrite (the inbound identity headers
    /// are the host's to strip, see [`Authenticator::strips`]);
    /// [`Step::Respond`]; or [`Step::Hold`] until the issuer's keys arrive.
    pub step: Step,
    /// Why.
    pub verdict: Verdict,
    /// The issuer whose keys a [`Step::Hold`] waits for.
    pub waits_for: Option<usize>,
    /// What the identity proof of an allowed request is bound to (the
    /// [`proof::signature_part`] of its token), for the host to leave in
    /// the request's [`proof::BINDING`] property, where the filters after
    /// jwt-identity check the proof even when the token was removed.
    pub binding: Option<Arc<str>>,
}

/// A verified token as the cache keeps it.
#[derive(Debug, Clone)]
struct Verified {
    headers: SharedHeaders,
    binding: Option<Arc<str>>,
}

impl Decision {
    fn respond(answer: LocalResponse, verdict: Verdict) -> Decision {
        Decision {
            step: Step::Respond(answer),
            verdict,
            waits_for: None,
            binding: None,
        }
    }
}

/// The largest JWKS answer read; a larger one counts as a failed fetch.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A JWKS fetch to perform; its [`Answer`] goes to
/// [`Authenticator::jwks_fetched`] with the same issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksFetch {
    /// Issuer index.
    pub issuer: usize,
    /// The call.
    pub call: Callout,
}

/// The jwt-identity state of one VM: policy, keys, cache and fetch schedule.
pub struct Authenticator {
    policy: Policy,
    trust: TrustStore,
    cache: TokenCache<Verified>,
    schedule: Vec<Schedule>,
    anonymous: SharedHeaders,
    /// Key of the `x-agentward-proof` added to verified identities.
    proof: Option<ProofKey>,
    /// A route has an approval rule: the agent's `x-agentward-approval`
    /// (a deferred retry's approval id) goes on to ciba-hold, which reads
    /// and removes it.
    approvals: bool,
}

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
        let schedule = policy.issuers.iter().map(Schedule::of).collect();
        let approvals = policy.routes.iter().any(|r| r.approval.is_some());
        Authenticator {
            approvals,
            policy,
            trust,
            cache,
            schedule,
            anonymous: Arc::new(Vec::new()),
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
    /// (CGI, WSGI and PHP read `x_agentward_sub` as `x-agentward-sub`);
    /// but `x-agentward-approval`, spelled so, when a route has an approval
    /// rule (ciba-hold reads it and removes it from every request).
    pub fn strips(&self, name: &str) -> bool {
        if self.approvals && name == crate::approval::rule::APPROVAL_HEADER {
            return false;
        }
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
                return Decision::respond(
                    response::invalid_request("invalid_path", why.description()),
                    Verdict::InvalidPath,
                )
            }
        };
        if let Some(answer) = metadata::answer(&self.policy, head.method, &target.path) {
            return Decision::respond(answer, Verdict::Metadata);
        }
        let route = self.policy.route(head.method, &target.path);
        let public = match route {
            Some(route) => route.public,
            None => match self.policy.unmatched {
                Unmatched::Deny => {
                    return Decision::respond(
                        response::access_denied(
                            "no_route",
                            "no route of the policy matches this request",
                        ),
                        Verdict::NoRoute,
                    )
                }
                Unmatched::Authenticated => false,
                Unmatched::Public => true,
            },
        };
        let upstream = Upstream::of(&self.policy, route, head.path, &target);
        let no_token = |this: &Self, upstream| {
            if public {
                this.forward(this.anonymous.clone(), upstream, Verdict::Anonymous)
            } else {
                Decision::respond(
                    response::missing_token(&this.policy.resource),
                    Verdict::MissingToken,
                )
            }
        };
        let Some(token) = self.token_unchecked(head) else {
            return no_token(self, upstream);
        };
        let now = now_ms / 1000;
        let key = self.cache.key(&[token]);
        if let Some(verified) = self.cache.get(&key, now) {
            // Only tokens that passed the check below are cached.
            return self.allow(route, verified, upstream, true);
        }
        let (token, key) = if self.token_checked(head, token) {
            (token, key)
        } else {
            // Not a bearer token in `Authorization`: as if none came there.
            match self.token_from(head, bearer::token) {
                Some(token) => (token, self.cache.key(&[token])),
                None => return no_token(self, upstream),
            }
        };
        match jwt::verify(token, &self.trust, now, check) {
            Ok(v) => {
                let client_credentials = self
                    .policy
                    .issuers
                    .get(v.issuer)
                    .is_some_and(|i| i.client_credentials);
                let extra = &self.policy.identity.claim_to_headers;
                let verified = match identity_headers(&v.claims, extra, client_credentials) {
                    Ok(mut headers) => {
                        if let Some(proof_key) = &self.proof {
                            proof::seal(proof_key, &mut headers, token);
                        }
                        Verified {
                            headers: Arc::new(headers),
                            binding: self.proof.map(|_| Arc::from(proof::signature_part(token))),
                        }
                    }
                    Err(bad) => {
                        let answer = response::bad_claim(&self.policy.resource, &bad.description());
                        return Decision::respond(answer, Verdict::Rejected(Rejection::BadClaim));
                    }
                };
                let until = v.exp.saturating_add(self.policy.clock_skew_seconds);
                self.cache.insert(key, until, verified.clone());
                self.allow(route, verified, upstream, false)
            }
            Err(Rejection::KeysUnavailable(issuer)) => self.keys_pending(issuer, now_ms),
            Err(Rejection::UnknownKid) => {
                // The issuer's keys are loaded and lack this kid: refuse now
                // (holding would let anyone with a made-up kid pin requests),
                // and refetch in the background in case the key is new.
                let issuer = jwt::peek_issuer_and_kid(token)
                    .and_then(|(iss, _)| self.trust.issuers().position(|i| i.issuer == iss));
                let fetched = issuer.filter(|i| {
                    self.policy
                        .issuers
                        .get(*i)
                        .is_some_and(|i| i.jwks_uri.is_some())
                });
                if let Some(s) = fetched.and_then(|i| self.schedule.get_mut(i)) {
                    s.unknown_kid(now_ms);
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
        verified: Verified,
        upstream: Upstream,
        cached: bool,
    ) -> Decision {
        let Verified { headers, binding } = verified;
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
                return Decision::respond(answer, Verdict::InsufficientScope);
            }
        }
        Decision {
            binding,
            ..self.forward(headers, upstream, Verdict::Allowed { cached })
        }
    }

    /// The request's token, where [`Authenticator::token_checked`] tells
    /// whether it is one.
    fn token_unchecked<'a>(&self, head: &RequestHead<'a>) -> Option<&'a str> {
        self.token_from(head, bearer::credential)
    }

    /// The request's token: from `Authorization` as `read` reads it, else
    /// the token header, else the query parameter.
    fn token_from<'a>(
        &self,
        head: &RequestHead<'a>,
        read: fn(&str) -> Option<&str>,
    ) -> Option<&'a str> {
        let from_authorization = head.authorization.and_then(read);
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

    /// Whether `token`, from [`Authenticator::token_unchecked`], is a
    /// token: one from `Authorization` must be a bearer token68 (RFC 6750).
    fn token_checked(&self, head: &RequestHead<'_>, token: &str) -> bool {
        let from_authorization = head.authorization.and_then(bearer::credential);
        from_authorization != Some(token) || bearer::is_token68(token)
    }

    fn forward(&self, set: SharedHeaders, upstream: Upstream, verdict: Verdict) -> Decision {
        let mut edits = Edits {
            set,
            ..Edits::none()
        };
        if upstream.remove_authorization {
            edits.remove.push("authorization".into());
        }
        if upstream.remove_token_header {
            if let Some(name) = &self.policy.identity.token_header {
                edits.remove.push(name.clone().into());
            }
        }
        edits.set_one = upstream.path.map(|path| (":path", path));
        Decision {
            step: Step::Continue(edits),
            verdict,
            waits_for: None,
            binding: None,
        }
    }

    fn reject(&self, why: Rejection) -> Decision {
        Decision::respond(
            response::invalid_token(&self.policy.resource, why),
            Verdict::Rejected(why),
        )
    }

    /// Holds the request until the issuer's keys arrive or its fetch's
    /// timeout (plus a second for the answer to be handled) passes; a
    /// failed fetch with none under way is a 503 at once.
    fn keys_pending(&self, issuer: usize, now_ms: u64) -> Decision {
        let failed = self.schedule.get(issuer).is_some_and(Schedule::failed);
        if failed {
            return Decision::respond(
                response::unavailable(
                    "jwks_unavailable",
                    "the token issuer's signing keys could not be fetched",
                ),
                Verdict::KeysPending,
            );
        }
        Decision {
            step: Step::Hold {
                until_ms: now_ms.saturating_add(self.wait_limit_ms(issuer) + 1_000),
            },
            verdict: Verdict::KeysPending,
            waits_for: Some(issuer),
            binding: None,
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
            if s.due(now_ms, self.trust.keys(i).is_some()) {
                s.start(now_ms);
                let (authority, path) = split_uri(uri);
                let call = Callout::get(cluster, authority, path, "application/json")
                    .timeout_ms(issuer.jwks_timeout_ms)
                    .max_answer_bytes(MAX_JWKS_BYTES);
                due.push(JwksFetch { issuer: i, call });
            }
        }
        due
    }

    /// The JWKS fetches a host that fetches within the request (Spin: an
    /// instance per request, nothing in the background) makes before it
    /// decides again: the keys a held request waits for, or the refetch an
    /// unknown kid was granted (at most every `jwks_min_refetch_seconds`).
    /// Empty: the decision stands.
    pub fn fetches_for(&mut self, decision: &Decision, now_ms: u64) -> Vec<JwksFetch> {
        let wanted = match (&decision.step, decision.waits_for, decision.verdict) {
            (Step::Hold { .. }, Some(issuer), _) => Some(issuer),
            (_, _, Verdict::Rejected(Rejection::UnknownKid)) => None,
            _ => return Vec::new(),
        };
        let mut due = self.fetches_due(now_ms);
        due.retain(|f| wanted.is_none_or(|issuer| f.issuer == issuer));
        due
    }

    /// Feeds a fetch's answer back. Returns whether the issuer now has keys.
    /// Only a 200 with a usable key set counts; anything else (a failure, a
    /// bad document, an answer over [`MAX_JWKS_BYTES`]) keeps the previous
    /// keys.
    pub fn jwks_fetched(&mut self, issuer: usize, answer: &Answer, now_ms: u64) -> bool {
        let parsed = match answer {
            Answer::Response {
                status: 200, body, ..
            } => KeySet::parse(body).ok(),
            _ => None,
        };
        let ok = parsed.is_some();
        if let Some(keys) = parsed {
            if self.trust.keys(issuer) != Some(&keys) {
                // A key may have been withdrawn: tokens it signed must verify again.
                self.cache.clear();
                self.trust.set_keys(issuer, keys);
            }
        }
        if let Some(s) = self.schedule.get_mut(issuer) {
            s.finished(ok, now_ms);
        }
        self.trust.keys(issuer).is_some()
    }

    /// Where a host with a key-value store keeps `issuer`'s fetched key set
    /// between requests (Spin: a fresh instance per request): named by the
    /// issuer and its `jwks_uri`, so another policy's keys never answer.
    /// `None` for an issuer without a `jwks_uri`.
    pub fn jwks_store_key(&self, issuer: usize) -> Option<String> {
        use sha2::{Digest, Sha256};
        let issuer = self.policy.issuers.get(issuer)?;
        let uri = issuer.jwks_uri.as_deref()?;
        let digest = Sha256::new()
            .chain_update(issuer.issuer.as_bytes())
            .chain_update([0])
            .chain_update(uri.as_bytes())
            .finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("agentward.jwks.{hex}"))
    }

    /// A JWKS fetch's answer as [`Authenticator::jwks_restored`] reads it
    /// back (when it was fetched, then the document), if it is worth keeping:
    /// a 200 whose body is a usable key set.
    pub fn jwks_kept(answer: &Answer, fetched_ms: u64) -> Option<Vec<u8>> {
        let Answer::Response {
            status: 200, body, ..
        } = answer
        else {
            return None;
        };
        KeySet::parse(body).ok()?;
        let mut kept = fetched_ms.to_le_bytes().to_vec();
        kept.extend_from_slice(body);
        Some(kept)
    }

    /// Loads a key set kept by an earlier request ([`Authenticator::jwks_kept`]),
    /// unless it is `jwks_refresh_seconds` old or more (then it is fetched
    /// again, as the refresh schedule would). Whether the issuer now has keys.
    pub fn jwks_restored(&mut self, issuer: usize, kept: &[u8], now_ms: u64) -> bool {
        let Some((stamp, body)) = kept.split_first_chunk::<8>() else {
            return false;
        };
        let fetched_ms = u64::from_le_bytes(*stamp);
        let Some(refresh_ms) = self
            .policy
            .issuers
            .get(issuer)
            .map(|i| i.jwks_refresh_seconds.saturating_mul(1000))
        else {
            return false;
        };
        if fetched_ms > now_ms || now_ms - fetched_ms >= refresh_ms {
            return false;
        }
        let Ok(keys) = KeySet::parse(body) else {
            return false;
        };
        self.trust.set_keys(issuer, keys);
        if let Some(s) = self.schedule.get_mut(issuer) {
            s.restored(fetched_ms);
        }
        true
    }

    /// Loads each issuer's key set that earlier requests kept in a host's
    /// store (under [`Authenticator::jwks_store_key`]), as
    /// [`Authenticator::jwks_restored`] does for one.
    pub fn restore_kept(&mut self, store: &impl crate::shared_cache::SharedCache, now_ms: u64) {
        for issuer in 0..self.policy.issuers.len() {
            if let Some(kept) = self.jwks_store_key(issuer).and_then(|k| store.get(&k)) {
                self.jwks_restored(issuer, &kept, now_ms);
            }
        }
    }

    /// Whether a fetch for this issuer is under way.
    pub fn fetch_in_flight(&self, issuer: usize) -> bool {
        self.schedule.get(issuer).is_some_and(Schedule::in_flight)
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
    /// `Authorization` also stays for an `exchange` route, where
    /// token-exchange replaces it. The token query parameter leaves the
    /// path, and a path that was not normal is replaced by its normal form.
    fn of(
        policy: &Policy,
        route: Option<&Route>,
        raw: &str,
        target: &RequestTarget<'_>,
    ) -> Upstream {
        let forward = route.is_some_and(|r| r.forward_token);
        let exchange = route.is_some_and(|r| r.exchange.is_some());
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
