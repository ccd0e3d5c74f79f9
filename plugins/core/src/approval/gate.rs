//! ciba-hold's decisions, sans-IO: from a request to "go on", "answer
//! this", "read the body first", "ask the authority and come back", or
//! "hold until the next poll" ([`Gate`]). A host reads the request, carries
//! out the [`Step`] or [`BodyStep`], keeps the [`Wait`] it is handed with
//! the request, and counts the [`Verdict`]; it decides nothing.
//!
//! A request on a route with an `approval` rule goes: identity (proven, a
//! user) → the body is read (the digest covers it, and rules read it) →
//! the rule says whether an approval is needed → a deferred retry's handle
//! is opened and polled once, or `/bc-authorize` is asked → deferred: 202
//! with the sealed handle; hold: polls (long-polls) until approved (go on),
//! denied (403), expired (403) or the authority fails (503).
//!
//! The approval token goes to the upstream in `token_header` only while the
//! request's headers are still held: a request that ended with its headers
//! (no body). A request with a body has passed its headers on before the
//! body is read (DESIGN.md traps 1 and 2), so it goes on without the token.

use super::client::{Backchannel, Pending, Polled};
use super::digest::{DigestInput, RequestDigest};
use super::field::Facts;
use super::handle::{self, HandleKey};
use super::rule::{approval_pending, Mode, Refusal, RequestBody, APPROVAL_HEADER};
use super::Authority;
use crate::identity::{Principal, ReceivedIdentity};
use crate::path;
use crate::policy::{Policy, PolicyError};
use crate::proof::{self, ProofKey};
use crate::response::{self, LocalResponse};
use crate::shared_cache::SharedCache;
use crate::step::{Answer, BodyStep, Edits, Step};

/// What a request carries that matters for an approval.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, as received.
    pub path: &'a str,
    /// What the identity's proof is bound to: the binding jwt-identity left
    /// on the request, or the bearer token of `Authorization` (see
    /// [`crate::proof::BINDING`]).
    pub bearer: Option<&'a str>,
    /// The identity headers, as received.
    pub identity: ReceivedIdentity<'a>,
    /// `x-agentward-approval`: a deferred retry's approval id.
    pub approval_id: Option<&'a str>,
}

/// Why a decision is what it is: one counter each (see [`Verdict::metric`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No approval rule on the route, or the rule's `when` does not hold.
    NotNeeded,
    /// The body is being read to decide.
    Reading,
    /// The authority was asked (`/bc-authorize`).
    Asked,
    /// Still waiting for the user (a poll is due or under way).
    Waiting,
    /// Deferred: 202 `approval_pending` (first answer or a retry too early).
    Pending,
    /// A deferred retry's approval id checked; the authority is polled once.
    Retried,
    /// The user approved: the request goes on.
    Approved,
    /// The user denied (403 `access_denied`).
    Denied,
    /// The user did not decide in time (403 `expired_token`).
    Expired,
    /// The approval was already used (403, a replay).
    Used,
    /// A retry's approval id was refused (altered, another request or user).
    HandleRefused,
    /// The request cannot be decided safely (400, 413).
    InvalidRequest,
    /// The authority is down, refused the gateway or answered garbage (503).
    AuthorityUnavailable,
    /// No proven user identity (401, 403, 503 without a proof key).
    NoIdentity,
}

impl Verdict {
    /// The verdicts that have a counter.
    pub const COUNTED: [Verdict; 12] = [
        Verdict::Asked,
        Verdict::Pending,
        Verdict::Retried,
        Verdict::Approved,
        Verdict::Denied,
        Verdict::Expired,
        Verdict::Used,
        Verdict::HandleRefused,
        Verdict::InvalidRequest,
        Verdict::AuthorityUnavailable,
        Verdict::NoIdentity,
        Verdict::NotNeeded,
    ];

    /// The counter this verdict adds to (`agentward.approval.…`), if any.
    pub fn metric(self) -> Option<&'static str> {
        Some(match self {
            Verdict::Asked => "agentward.approval.asked",
            Verdict::Pending => "agentward.approval.pending",
            Verdict::Retried => "agentward.approval.retried",
            Verdict::Approved => "agentward.approval.approved",
            Verdict::Denied => "agentward.approval.denied",
            Verdict::Expired => "agentward.approval.expired",
            Verdict::Used => "agentward.approval.used",
            Verdict::HandleRefused => "agentward.approval.handle_refused",
            Verdict::InvalidRequest => "agentward.approval.invalid_request",
            Verdict::AuthorityUnavailable => "agentward.approval.authority_unavailable",
            Verdict::NoIdentity => "agentward.approval.no_identity",
            Verdict::NotNeeded => "agentward.approval.not_needed",
            Verdict::Reading | Verdict::Waiting => return None,
        })
    }

    /// The verdict of a refusal the CIBA client or a handle produced.
    fn of(answer: &LocalResponse) -> Verdict {
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        let field = |name: &str| body.get(name).and_then(|v| v.as_str()).unwrap_or_default();
        match (answer.status, field("error"), field("reason")) {
            (503, _, _) => Verdict::AuthorityUnavailable,
            (_, _, "approval_used") => Verdict::Used,
            (_, _, reason)
                if reason.starts_with("approval_id")
                    || reason.ends_with("_principal")
                    || reason.ends_with("_request") =>
            {
                Verdict::HandleRefused
            }
            (_, "expired_token", _) => Verdict::Expired,
            (403, _, _) => Verdict::Denied,
            _ => Verdict::InvalidRequest,
        }
    }
}

/// A request between two steps: what the host keeps for it (with the
/// request's context) and hands back with the body, a callout's answer or
/// the end of a hold. Holds no borrowed data.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    stage: Stage,
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// The body is being read.
    Reading(Box<Reading>),
    /// `/bc-authorize` is under way.
    Asking(Box<Asking>),
    /// Hold mode: waiting for the user, polling.
    Polling {
        pending: Pending,
        headers_held: bool,
    },
    /// A deferred retry's one poll.
    Retrying {
        pending: Pending,
        handle: String,
        headers_held: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Reading {
    route: usize,
    params: Vec<(String, String)>,
    method: String,
    path: String,
    query: Option<String>,
    sub: String,
    issuer: String,
    agent: Option<String>,
    approval_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Asking {
    mode: Mode,
    digest: RequestDigest,
    who: [u8; 16],
    headers_held: bool,
}

/// One decision in the headers phase, on an answer or at a hold's end.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do.
    pub step: Step,
    /// Why.
    pub verdict: Verdict,
    /// What to keep with the request for the next decision (with
    /// [`Step::ReadBody`], [`Step::Call`] and [`Step::Hold`]).
    pub wait: Option<Wait>,
}

/// One decision on a body read to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyDecision {
    /// What to do.
    pub step: BodyStep,
    /// Why.
    pub verdict: Verdict,
    /// With [`BodyStep::Call`]: what to keep for the answer.
    pub wait: Option<Wait>,
}

impl Decision {
    fn respond(answer: LocalResponse, verdict: Verdict) -> Decision {
        Decision {
            step: Step::Respond(answer),
            verdict,
            wait: None,
        }
    }

    fn refused(answer: LocalResponse) -> Decision {
        let verdict = Verdict::of(&answer);
        Decision::respond(answer, verdict)
    }
}

impl BodyDecision {
    fn respond(answer: LocalResponse, verdict: Verdict) -> BodyDecision {
        BodyDecision {
            step: BodyStep::Respond(answer),
            verdict,
            wait: None,
        }
    }
}

/// ciba-hold's state for one instance (an Envoy VM): the policy, the
/// authority, the handle key and jwt-identity's proof key.
pub struct Gate {
    policy: Policy,
    authority: Authority,
    handle_key: Option<HandleKey>,
    proof_key: Option<ProofKey>,
}

impl Gate {
    /// The gate for a validated policy; `env` reads the VM's environment
    /// (the client secret, the handle key). Fails naming the field.
    pub fn new(
        mut policy: Policy,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Gate, PolicyError> {
        let Some(mut authority) = policy.approval.take() else {
            return Err(PolicyError {
                field: "approval".into(),
                message: "the ciba-hold plugin needs the `approval` section (the CIBA authority)"
                    .into(),
            });
        };
        authority.resolve_secret("approval", &env)?;
        let handle_key = authority.handle_key("approval", &env)?;
        Ok(Gate {
            policy,
            authority,
            handle_key,
            proof_key: None,
        })
    }

    /// The CIBA authority's settings.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Reads jwt-identity's proof key from the shared cache; whether there
    /// is one.
    pub fn read_proof_key(&mut self, cache: &impl SharedCache) -> bool {
        if let Some(key) = cache
            .get(proof::KEY_NAME)
            .and_then(|b| ProofKey::from_bytes(&b))
        {
            self.proof_key = Some(key);
        }
        self.proof_key.is_some()
    }

    /// Whether jwt-identity's proof key is known.
    pub fn has_proof_key(&self) -> bool {
        self.proof_key.is_some()
    }

    /// The edits every request gets: a client must not bring its own
    /// approval token header (or the approval id) to the upstream.
    fn strip(&self) -> Edits {
        let mut edits = Edits::none().removing(APPROVAL_HEADER);
        if let Some(header) = &self.authority.token_header {
            edits = edits.removing(header.clone());
        }
        edits
    }

    /// Decides a request from its head.
    pub fn decide(&self, head: &RequestHead<'_>) -> Decision {
        let pass = |verdict| Decision {
            step: Step::Continue(self.strip()),
            verdict,
            wait: None,
        };
        let target = match path::normalize(head.path) {
            Ok(target) if target.was_normal() => target,
            Ok(_) => {
                return Decision::respond(
                    response::invalid_request(
                        "invalid_path",
                        "the request path is not in normal form (jwt-identity must run before ciba-hold)",
                    ),
                    Verdict::InvalidRequest,
                )
            }
            Err(why) => {
                return Decision::respond(
                    response::invalid_request("invalid_path", why.description()),
                    Verdict::InvalidRequest,
                )
            }
        };
        let Some(matched) = self.policy.matched(head.method, &target.path) else {
            return pass(Verdict::NotNeeded);
        };
        let route = &self.policy.routes[matched.index];
        let Some(rule) = &route.approval else {
            return pass(Verdict::NotNeeded);
        };
        let Some(key) = self.proof_key else {
            return Decision::respond(proof::key_missing(), Verdict::NoIdentity);
        };
        let unproven =
            || Decision::respond(proof::unproven(&self.policy.resource), Verdict::NoIdentity);
        let Some(bearer) = head.bearer else {
            return unproven();
        };
        let Ok(identity) = head.identity.verify(&key, bearer) else {
            return unproven();
        };
        let (Principal::User, Some(sub)) = (identity.principal, identity.sub) else {
            return Decision::respond(
                response::access_denied(
                    "approval_needs_user",
                    "this request needs a user's approval, and the token names no user",
                ),
                Verdict::NoIdentity,
            );
        };
        let reading = Reading {
            route: matched.index,
            params: matched
                .params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            method: head.method.to_string(),
            path: target.path.to_string(),
            query: target.query.map(str::to_string),
            sub: sub.to_string(),
            issuer: identity.issuer.to_string(),
            agent: identity.agent.map(str::to_string),
            approval_id: head
                .approval_id
                .filter(|_| rule.mode == Mode::Deferred)
                .map(str::to_string),
        };
        Decision {
            step: Step::ReadBody {
                edits: self.strip(),
                max_bytes: rule.max_body_bytes,
            },
            verdict: Verdict::Reading,
            wait: Some(Wait {
                stage: Stage::Reading(Box::new(reading)),
            }),
        }
    }

    /// Decides on the whole body (empty for a request that ended with its
    /// headers; `headers_held` then, and only then, the approval token can
    /// still be added).
    pub fn on_body(
        &self,
        wait: Wait,
        body: &[u8],
        headers_held: bool,
        now_ms: u64,
    ) -> BodyDecision {
        let Stage::Reading(r) = wait.stage else {
            return BodyDecision::respond(out_of_order(), Verdict::AuthorityUnavailable);
        };
        let Some(rule) = self
            .policy
            .routes
            .get(r.route)
            .and_then(|route| route.approval.as_ref())
        else {
            return BodyDecision::respond(out_of_order(), Verdict::AuthorityUnavailable);
        };
        let refuse =
            |refusal: Refusal| BodyDecision::respond(refusal.response(), Verdict::InvalidRequest);
        let read = match RequestBody::read(body, rule.max_body_bytes, rule.reads_body()) {
            Ok(read) => read,
            Err(refusal) => return refuse(refusal),
        };
        let params: Vec<(&str, &str)> = r
            .params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let facts = Facts {
            body: read.json(),
            params: &params,
            sub: &r.sub,
            issuer: &r.issuer,
            agent: r.agent.as_deref(),
            tool: None,
        };
        let needed = match rule.evaluate(&facts) {
            Ok(Some(needed)) => needed,
            Ok(None) => {
                return BodyDecision {
                    step: BodyStep::Keep,
                    verdict: Verdict::NotNeeded,
                    wait: None,
                }
            }
            Err(refusal) => return refuse(refusal),
        };
        let Ok(digest) = RequestDigest::of(&DigestInput {
            method: &r.method,
            path: &r.path,
            query: r.query.as_deref(),
            body: read.digest_body(body),
            sub: &r.sub,
            issuer: &r.issuer,
            agent: r.agent.as_deref(),
        }) else {
            return refuse(Refusal::Number);
        };
        let who = handle::principal(&r.issuer, &r.sub, r.agent.as_deref());
        if let Some(id) = &r.approval_id {
            let Some(key) = &self.handle_key else {
                return BodyDecision::respond(no_handle_key(), Verdict::AuthorityUnavailable);
            };
            let opened = match key.open(id, &digest, &who, now_ms / 1_000) {
                Ok(opened) => opened,
                Err(e) => return BodyDecision::respond(e.response(), Verdict::HandleRefused),
            };
            let mut pending =
                Pending::resumed(opened, super::client::DEFAULT_INTERVAL_SECONDS, now_ms);
            let call = self.authority.poll_once(&mut pending, now_ms);
            return BodyDecision {
                step: BodyStep::Call(call),
                verdict: Verdict::Retried,
                wait: Some(Wait {
                    stage: Stage::Retrying {
                        pending,
                        handle: id.clone(),
                        headers_held,
                    },
                }),
            };
        }
        let call = self.authority.bc_authorize(&Backchannel {
            binding_message: &needed.binding_message,
            authorization_details: needed.authorization_details.as_ref(),
            sub: &r.sub,
            issuer: &r.issuer,
            agent: r.agent.as_deref(),
            digest: &digest,
            expiry_seconds: rule.expiry_seconds,
        });
        BodyDecision {
            step: BodyStep::Call(call),
            verdict: Verdict::Asked,
            wait: Some(Wait {
                stage: Stage::Asking(Box::new(Asking {
                    mode: rule.mode,
                    digest,
                    who,
                    headers_held,
                })),
            }),
        }
    }

    /// Decides on a callout's answer at `now_ms`.
    pub fn on_answer(&self, wait: Wait, answer: &Answer, now_ms: u64) -> Decision {
        match wait.stage {
            Stage::Reading(_) => Decision::respond(out_of_order(), Verdict::AuthorityUnavailable),
            Stage::Asking(asking) => {
                let mut pending = match self.authority.started(answer, now_ms) {
                    Ok(pending) => pending,
                    Err(refused) => return Decision::refused(refused),
                };
                match asking.mode {
                    Mode::Deferred => {
                        let Some(key) = &self.handle_key else {
                            return Decision::respond(
                                no_handle_key(),
                                Verdict::AuthorityUnavailable,
                            );
                        };
                        let handle = key.seal(
                            pending.auth_req_id.expose(),
                            &asking.digest,
                            &asking.who,
                            pending.expires_at_ms / 1_000,
                            super::random_nonce(),
                        );
                        Decision::respond(
                            approval_pending(
                                &handle,
                                pending.expires_in(now_ms),
                                pending.interval_ms / 1_000,
                            ),
                            Verdict::Pending,
                        )
                    }
                    Mode::Hold => {
                        let step = self.authority.next(&mut pending, now_ms);
                        self.polling(step, pending, asking.headers_held)
                    }
                }
            }
            Stage::Polling {
                mut pending,
                headers_held,
            } => {
                let step = self.authority.after_poll(&mut pending, answer, now_ms);
                self.polling(step, pending, headers_held)
            }
            Stage::Retrying {
                mut pending,
                handle,
                headers_held,
            } => match self.authority.polled(&mut pending, answer) {
                Polled::Approved(token) => Decision {
                    step: Step::Continue(if headers_held {
                        self.authority.approved_edits(token)
                    } else {
                        Edits::none()
                    }),
                    verdict: Verdict::Approved,
                    wait: None,
                },
                Polled::Pending => Decision::respond(
                    approval_pending(
                        &handle,
                        pending.expires_in(now_ms),
                        pending.interval_ms / 1_000,
                    ),
                    Verdict::Pending,
                ),
                Polled::Refused(refused) => Decision::refused(refused),
            },
        }
    }

    /// Decides when a hold ([`Step::Hold`]) ends at `now_ms`.
    pub fn wake(&self, wait: Wait, now_ms: u64) -> Decision {
        match wait.stage {
            Stage::Polling {
                mut pending,
                headers_held,
            } => {
                let step = self.authority.next(&mut pending, now_ms);
                self.polling(step, pending, headers_held)
            }
            _ => Decision::respond(out_of_order(), Verdict::AuthorityUnavailable),
        }
    }

    fn polling(&self, step: Step, pending: Pending, headers_held: bool) -> Decision {
        match step {
            Step::Continue(edits) => Decision {
                // After a body phase the headers went on: nothing to edit.
                step: Step::Continue(if headers_held { edits } else { Edits::none() }),
                verdict: Verdict::Approved,
                wait: None,
            },
            Step::Respond(answer) => Decision::refused(answer),
            step => Decision {
                step,
                verdict: Verdict::Waiting,
                wait: Some(Wait {
                    stage: Stage::Polling {
                        pending,
                        headers_held,
                    },
                }),
            },
        }
    }
}

fn out_of_order() -> LocalResponse {
    response::unavailable(
        "approval_state",
        "the gateway lost track of this request's approval",
    )
}

fn no_handle_key() -> LocalResponse {
    response::unavailable(
        "approval_handle_key_missing",
        "deferred approvals need `approval.handle_key_env`",
    )
}
