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
//!
//! On an MCP route whose tools have approval rules, every POST's body is
//! read (its `content-length` removed while the headers are held, so the
//! body can be rewritten): it must be one JSON-RPC request agreeing with
//! `Mcp-Method` / `Mcp-Name` (`-32020`, HTTP 400); a `tools/call` of a tool
//! with a rule is decided on its `arguments` (as `body.`) and answered in
//! the client's protocol ([`super::mcp`]): `input_required` with the handle
//! as `requestState` (2026-07-28), or `-32042` with the handle kept in
//! shared data under the call's digest (2025-11-25). A retry is checked
//! like a deferred one and goes on without the gateway's `requestState`
//! and `inputResponses` entry ([`Decision::body`]).

use super::canonical::{parse_strict, BodyError};
use super::client::{Backchannel, Pending, Polled};
use super::digest::{DigestBody, DigestInput, RequestDigest};
use super::field::Facts;
use super::handle::{self, HandleError, HandleKey};
use super::mcp::{self as forms, PendingForm};
use super::rule::{approval_pending, Mode, Refusal, RequestBody, APPROVAL_HEADER};
use super::Authority;
use crate::identity::{Principal, ReceivedIdentity};
use crate::mcp::{self as mcp_rpc, McpHeaders};
use crate::path;
use crate::policy::{Policy, PolicyError};
use crate::proof::{ChecksProofs, ProofVerifier};
use crate::response::{self, LocalResponse};
use crate::shared_cache::{NoSharedCache, SharedCache};
use crate::step::{Answer, BodyStep, Edits, Step};
use serde_json::Value;

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
    /// `Mcp-Method` and `Mcp-Name` (MCP 2026-07-28), as received.
    pub mcp: McpHeaders<'a>,
    /// `MCP-Protocol-Version`: which form an MCP client is answered in.
    pub protocol_version: Option<&'a str>,
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
    /// An MCP request's body is being read.
    McpReading(Box<McpReading>),
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
        mcp: Option<Box<McpCall>>,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct McpReading {
    route: usize,
    params: Vec<(String, String)>,
    path: String,
    query: Option<String>,
    /// None for an agent's own token: refused only if a call needs approval.
    sub: Option<String>,
    issuer: String,
    agent: Option<String>,
    form: PendingForm,
    method_header: Option<String>,
    name_header: Option<String>,
    max_bytes: usize,
}

/// A tool call waiting on the authority: how its client is answered.
#[derive(Debug, Clone, PartialEq)]
struct McpCall {
    /// The JSON-RPC `id` (`null` when the call had none).
    id: Value,
    form: PendingForm,
    /// The filled binding message, shown in the elicitation.
    message: String,
    /// The body without the gateway's `requestState` / `inputResponses`
    /// entry, when it carried them.
    stripped: Option<Vec<u8>>,
    /// 2025-11-25: the shared-data key the handle is (to be) kept under.
    remembered: Option<String>,
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
    mcp: Option<Box<McpCall>>,
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
    /// With [`Step::Continue`]: the request body to send instead of the one
    /// read (an MCP retry without the gateway's fields; `content-length`
    /// was removed while the headers were held).
    pub body: Option<Vec<u8>>,
    /// A write to the VM's shared data (see [`Remember`]).
    pub remember: Option<Remember>,
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
    /// A write to the VM's shared data (see [`Remember`]).
    pub remember: Option<Remember>,
}

/// A write the host makes to its shared data (every worker's): a 2025-11-25
/// tool call's pending approval kept under its digest for the retry, or
/// forgotten (`value` empty) once decided. Losing one only means a new
/// approval is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remember {
    /// The key ([`forms::remembered_key`]).
    pub key: String,
    /// The sealed handle; empty to forget.
    pub value: Vec<u8>,
}

impl Remember {
    fn forget(key: Option<&String>) -> Option<Remember> {
        key.map(|key| Remember {
            key: key.clone(),
            value: Vec::new(),
        })
    }
}

impl Decision {
    fn respond(answer: LocalResponse, verdict: Verdict) -> Decision {
        Decision {
            step: Step::Respond(answer),
            verdict,
            wait: None,
            body: None,
            remember: None,
        }
    }

    fn step(step: Step, verdict: Verdict, wait: Option<Wait>) -> Decision {
        Decision {
            step,
            verdict,
            wait,
            body: None,
            remember: None,
        }
    }

    fn refused(answer: LocalResponse) -> Decision {
        let verdict = Verdict::of(&answer);
        Decision::respond(answer, verdict)
    }

    /// A refusal of a tool call, in JSON-RPC; its pending approval forgotten.
    fn refused_call(answer: LocalResponse, call: &McpCall) -> Decision {
        let verdict = Verdict::of(&answer);
        let mut d = Decision::respond(forms::refusal(&call.id, &answer), verdict);
        d.remember = Remember::forget(call.remembered.as_ref());
        d
    }
}

impl BodyDecision {
    fn respond(answer: LocalResponse, verdict: Verdict) -> BodyDecision {
        BodyDecision {
            step: BodyStep::Respond(answer),
            verdict,
            wait: None,
            remember: None,
        }
    }

    fn step(step: BodyStep, verdict: Verdict, wait: Option<Wait>) -> BodyDecision {
        BodyDecision {
            step,
            verdict,
            wait,
            remember: None,
        }
    }
}

/// ciba-hold's state for one instance (an Envoy VM): the policy, the
/// authority, the handle key and jwt-identity's proof key.
pub struct Gate {
    policy: Policy,
    authority: Authority,
    handle_key: Option<HandleKey>,
    proofs: ProofVerifier,
}

impl ChecksProofs for Gate {
    fn proofs(&self) -> &ProofVerifier {
        &self.proofs
    }
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
            proofs: ProofVerifier::new(),
        })
    }

    /// The CIBA authority's settings.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Reads jwt-identity's proof key from the shared cache; whether there
    /// is one.
    pub fn read_proof_key(&mut self, cache: &impl SharedCache) -> bool {
        self.proofs.read_key(cache)
    }

    /// Whether jwt-identity's proof key is known.
    pub fn has_proof_key(&self) -> bool {
        self.proofs.has_key()
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
        let pass = |verdict| Decision::step(Step::Continue(self.strip()), verdict, None);
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
        let mcp_tools = head.method == "POST" && route.has_tool_approvals();
        let rule = route.approval.as_ref();
        if rule.is_none() && !mcp_tools {
            return pass(Verdict::NotNeeded);
        }
        // The key is read at start and on tick (the plugin's), not here.
        let identity = match self
            .proofs
            .verify(&head.identity, head.bearer, &NoSharedCache)
        {
            Ok(identity) => identity,
            Err(e) => {
                return Decision::respond(e.response(&self.policy.resource), Verdict::NoIdentity)
            }
        };
        let user = match (identity.principal, identity.sub) {
            (Principal::User, Some(sub)) => Some(sub),
            _ => None,
        };
        let params: Vec<(String, String)> = matched
            .params
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        if mcp_tools {
            // Decided from the headers (read the body, rewrite it if need
            // be: `content-length` goes now, trap 2); checked against the
            // body once read.
            let name = match head.mcp.decoded_name() {
                Ok(name) => name.map(|n| n.into_owned()),
                Err(mismatch) => {
                    return Decision::respond(mismatch.response(None), Verdict::InvalidRequest)
                }
            };
            let max_bytes = self.mcp_body_bound(matched.index);
            let reading = McpReading {
                route: matched.index,
                params,
                path: target.path.to_string(),
                query: target.query.map(str::to_string),
                sub: user.map(str::to_string),
                issuer: identity.issuer.to_string(),
                agent: identity.agent.map(str::to_string),
                form: PendingForm::for_version(head.protocol_version),
                method_header: head.mcp.method.map(|m| m.trim().to_string()),
                name_header: name,
                max_bytes,
            };
            return Decision::step(
                Step::ReadBody {
                    edits: self.strip().removing("content-length"),
                    max_bytes,
                },
                Verdict::Reading,
                Some(Wait {
                    stage: Stage::McpReading(Box::new(reading)),
                }),
            );
        }
        let Some(rule) = rule else {
            return pass(Verdict::NotNeeded);
        };
        let Some(sub) = user else {
            return Decision::respond(needs_user(), Verdict::NoIdentity);
        };
        let reading = Reading {
            route: matched.index,
            params,
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
        Decision::step(
            Step::ReadBody {
                edits: self.strip(),
                max_bytes: rule.max_body_bytes,
            },
            Verdict::Reading,
            Some(Wait {
                stage: Stage::Reading(Box::new(reading)),
            }),
        )
    }

    /// The largest MCP request body read on a route: MCP's bound, or a
    /// tool rule's `max_body_bytes` when larger.
    fn mcp_body_bound(&self, route: usize) -> usize {
        self.policy
            .routes
            .get(route)
            .and_then(|r| r.mcp.as_ref())
            .iter()
            .flat_map(|m| m.tools.0.values())
            .filter_map(|t| t.approval.as_ref().map(|r| r.max_body_bytes))
            .fold(mcp_rpc::MAX_BODY_BYTES, usize::max)
    }

    /// Decides on the whole body (empty for a request that ended with its
    /// headers; `headers_held` then, and only then, the approval token can
    /// still be added). `remembered` is the VM's shared data, where
    /// 2025-11-25 tool calls' pending approvals are kept.
    pub fn on_body(
        &self,
        wait: Wait,
        body: &[u8],
        headers_held: bool,
        now_ms: u64,
        remembered: &impl SharedCache,
    ) -> BodyDecision {
        let r = match wait.stage {
            Stage::Reading(r) => r,
            Stage::McpReading(r) => return self.on_mcp_body(&r, body, now_ms, remembered),
            _ => return BodyDecision::respond(out_of_order(), Verdict::AuthorityUnavailable),
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
            Ok(None) => return BodyDecision::step(BodyStep::Keep, Verdict::NotNeeded, None),
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
            return self.retry(id, &digest, &who, headers_held, None, now_ms);
        }
        self.ask(
            &needed,
            &r.sub,
            &r.issuer,
            r.agent.as_deref(),
            rule.expiry_seconds,
            Asking {
                mode: rule.mode,
                digest,
                who,
                headers_held,
                mcp: None,
            },
        )
    }

    /// `/bc-authorize` for what `needed` describes.
    fn ask(
        &self,
        needed: &super::rule::Needed,
        sub: &str,
        issuer: &str,
        agent: Option<&str>,
        expiry_seconds: u64,
        asking: Asking,
    ) -> BodyDecision {
        let call = self.authority.bc_authorize(&Backchannel {
            binding_message: &needed.binding_message,
            authorization_details: needed.authorization_details.as_ref(),
            sub,
            issuer,
            agent,
            digest: &asking.digest,
            expiry_seconds,
        });
        BodyDecision::step(
            BodyStep::Call(call),
            Verdict::Asked,
            Some(Wait {
                stage: Stage::Asking(Box::new(asking)),
            }),
        )
    }

    /// A retry with handle `id`: checked against the request, then the
    /// authority polled once.
    fn retry(
        &self,
        id: &str,
        digest: &RequestDigest,
        who: &[u8; 16],
        headers_held: bool,
        mcp: Option<Box<McpCall>>,
        now_ms: u64,
    ) -> BodyDecision {
        let Some(key) = &self.handle_key else {
            return BodyDecision::respond(no_handle_key(), Verdict::AuthorityUnavailable);
        };
        let opened = match key.open(id, digest, who, now_ms / 1_000) {
            Ok(opened) => opened,
            Err(e) => {
                let answer = match &mcp {
                    Some(call) => forms::refusal(&call.id, &e.response()),
                    None => e.response(),
                };
                let mut d = BodyDecision::respond(answer, Verdict::HandleRefused);
                d.remember = Remember::forget(mcp.as_ref().and_then(|c| c.remembered.as_ref()));
                return d;
            }
        };
        let mut pending = Pending::resumed(opened, super::client::DEFAULT_INTERVAL_SECONDS, now_ms);
        let call = self.authority.poll_once(&mut pending, now_ms);
        BodyDecision::step(
            BodyStep::Call(call),
            Verdict::Retried,
            Some(Wait {
                stage: Stage::Retrying {
                    pending,
                    handle: id.to_string(),
                    headers_held,
                    mcp,
                },
            }),
        )
    }

    /// An MCP request's whole body: see the module's documentation.
    fn on_mcp_body(
        &self,
        r: &McpReading,
        body: &[u8],
        now_ms: u64,
        remembered: &impl SharedCache,
    ) -> BodyDecision {
        let invalid =
            |answer: LocalResponse| BodyDecision::respond(answer, Verdict::InvalidRequest);
        let message = match mcp_rpc::read_message(body, r.max_bytes) {
            Ok(message) => message,
            Err(refusal) => return invalid(refusal.response()),
        };
        let headers = McpHeaders {
            method: r.method_header.as_deref(),
            name: r.name_header.as_deref(),
        };
        if let Err(mismatch) = headers.agree_with(&message) {
            return invalid(mismatch.response(message.id.as_ref()));
        }
        let keep = BodyDecision::step(BodyStep::Keep, Verdict::NotNeeded, None);
        let Some(tool) = message.tool() else {
            return keep;
        };
        let rule = self
            .policy
            .routes
            .get(r.route)
            .and_then(|route| route.mcp.as_ref())
            .and_then(|mcp| mcp.tools.0.get(tool))
            .and_then(|t| t.approval.as_ref());
        let Some(rule) = rule else {
            return keep;
        };
        let id = message.id.clone().unwrap_or(Value::Null);
        let refuse = |answer: LocalResponse, verdict| {
            BodyDecision::respond(forms::refusal(&id, &answer), verdict)
        };
        if body.len() > rule.max_body_bytes {
            return refuse(Refusal::TooLarge.response(), Verdict::InvalidRequest);
        }
        let mut whole = match parse_strict(body) {
            Ok(whole) => whole,
            Err(BodyError::DuplicateKey) => {
                return refuse(
                    Refusal::Body(BodyError::DuplicateKey).response(),
                    Verdict::InvalidRequest,
                )
            }
            Err(BodyError::NotJson) => return invalid(mcp_rpc::BodyRefusal::NotJson.response()),
        };
        if forms::declined(&whole).is_some() {
            return refuse(
                response::access_denied(
                    "approval_declined",
                    "the user declined to open the approval page; the call was not made",
                ),
                Verdict::Denied,
            );
        }
        let retry = forms::strip_retry(&mut whole);
        let stripped = match retry.changed {
            true => match serde_json::to_vec(&whole) {
                Ok(bytes) => Some(bytes),
                Err(_) => return refuse(out_of_order(), Verdict::AuthorityUnavailable),
            },
            false => None,
        };
        let params: Vec<(&str, &str)> = r
            .params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let facts = Facts {
            body: forms::arguments(&whole),
            params: &params,
            sub: r.sub.as_deref().unwrap_or_default(),
            issuer: &r.issuer,
            agent: r.agent.as_deref(),
            tool: Some(tool),
        };
        let needed = match rule.evaluate(&facts) {
            Ok(Some(needed)) => needed,
            Ok(None) => {
                let step = stripped.map_or(BodyStep::Keep, BodyStep::Replace);
                return BodyDecision::step(step, Verdict::NotNeeded, None);
            }
            Err(refusal) => return refuse(refusal.response(), Verdict::InvalidRequest),
        };
        let Some(sub) = r.sub.as_deref() else {
            return refuse(needs_user(), Verdict::NoIdentity);
        };
        let view = forms::digest_view(&whole);
        let Ok(digest) = RequestDigest::of(&DigestInput {
            method: "POST",
            path: &r.path,
            query: r.query.as_deref(),
            body: DigestBody::Json(&view),
            sub,
            issuer: &r.issuer,
            agent: r.agent.as_deref(),
        }) else {
            return refuse(Refusal::Number.response(), Verdict::InvalidRequest);
        };
        let who = handle::principal(&r.issuer, sub, r.agent.as_deref());
        let mut call = Box::new(McpCall {
            id: id.clone(),
            form: r.form,
            message: needed.binding_message.clone(),
            stripped,
            remembered: None,
        });
        if let Some(state) = retry.request_state {
            return self.retry(&state, &digest, &who, false, Some(call), now_ms);
        }
        let mut forget = None;
        if r.form == PendingForm::UrlElicitationError {
            let key = forms::remembered_key(&digest);
            let handle = remembered
                .get(&key)
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .filter(|h| !h.is_empty());
            call.remembered = Some(key);
            if let (Some(handle), Some(handle_key)) = (handle, &self.handle_key) {
                match handle_key.open(&handle, &digest, &who, now_ms / 1_000) {
                    // Expired: the retry is told so (and forgotten); the
                    // next call asks again.
                    Ok(_) | Err(HandleError::Expired) => {
                        return self.retry(&handle, &digest, &who, false, Some(call), now_ms)
                    }
                    // Not one of ours after all: ask anew.
                    Err(_) => forget = Remember::forget(call.remembered.as_ref()),
                }
            }
        }
        let mut d = self.ask(
            &needed,
            sub,
            &r.issuer,
            r.agent.as_deref(),
            rule.expiry_seconds,
            Asking {
                mode: Mode::Deferred,
                digest,
                who,
                headers_held: false,
                mcp: Some(call),
            },
        );
        d.remember = forget;
        d
    }

    /// The answer that tells an MCP client the approval is pending.
    fn mcp_pending(&self, call: &McpCall, handle: &str) -> Decision {
        let url = self.authority.approval_url.as_deref().unwrap_or_default();
        let message = format!("Approve this action on your device: {}", call.message);
        let mut d = match call.form {
            PendingForm::InputRequired => Decision::respond(
                forms::input_required(&call.id, handle, url, &message),
                Verdict::Pending,
            ),
            PendingForm::UrlElicitationError => Decision::respond(
                forms::url_elicitation_required(
                    &call.id,
                    url,
                    &message,
                    &forms::elicitation_id(handle),
                ),
                Verdict::Pending,
            ),
        };
        d.remember = call.remembered.as_ref().map(|key| Remember {
            key: key.clone(),
            value: handle.as_bytes().to_vec(),
        });
        d
    }

    /// Decides on a callout's answer at `now_ms`.
    pub fn on_answer(&self, wait: Wait, answer: &Answer, now_ms: u64) -> Decision {
        match wait.stage {
            Stage::Reading(_) | Stage::McpReading(_) => {
                Decision::respond(out_of_order(), Verdict::AuthorityUnavailable)
            }
            Stage::Asking(asking) => {
                let mut pending = match self.authority.started(answer, now_ms) {
                    Ok(pending) => pending,
                    Err(refused) => {
                        return match &asking.mcp {
                            Some(call) => Decision::refused_call(refused, call),
                            None => Decision::refused(refused),
                        }
                    }
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
                        if let Some(call) = &asking.mcp {
                            return self.mcp_pending(call, &handle);
                        }
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
                mcp,
            } => match (self.authority.polled(&mut pending, answer), mcp) {
                (Polled::Approved(_), Some(call)) => {
                    let call = *call;
                    let mut d =
                        Decision::step(Step::Continue(Edits::none()), Verdict::Approved, None);
                    d.body = call.stripped;
                    d.remember = Remember::forget(call.remembered.as_ref());
                    d
                }
                (Polled::Approved(token), None) => Decision::step(
                    Step::Continue(if headers_held {
                        self.authority.approved_edits(token)
                    } else {
                        Edits::none()
                    }),
                    Verdict::Approved,
                    None,
                ),
                (Polled::Pending, Some(call)) => self.mcp_pending(&call, &handle),
                (Polled::Pending, None) => Decision::respond(
                    approval_pending(
                        &handle,
                        pending.expires_in(now_ms),
                        pending.interval_ms / 1_000,
                    ),
                    Verdict::Pending,
                ),
                (Polled::Refused(refused), Some(call)) => Decision::refused_call(refused, &call),
                (Polled::Refused(refused), None) => Decision::refused(refused),
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
            // After a body phase the headers went on: nothing to edit.
            Step::Continue(edits) => Decision::step(
                Step::Continue(if headers_held { edits } else { Edits::none() }),
                Verdict::Approved,
                None,
            ),
            Step::Respond(answer) => Decision::refused(answer),
            step => Decision::step(
                step,
                Verdict::Waiting,
                Some(Wait {
                    stage: Stage::Polling {
                        pending,
                        headers_held,
                    },
                }),
            ),
        }
    }
}

fn needs_user() -> LocalResponse {
    response::access_denied(
        "approval_needs_user",
        "this request needs a user's approval, and the token names no user",
    )
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
