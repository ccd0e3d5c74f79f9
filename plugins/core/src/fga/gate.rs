//! scope-fga's decisions on one request, sans-IO ([`Gate`]): from a
//! request's head to "go on", "answer this" or "ask the FGA service and
//! feed its answer back", and, for routes whose responses are cut (RAG
//! `filter`), from the response body to the body the agent gets. A host
//! reads the request, carries out the [`Step`]s and [`BodyStep`]s, and
//! counts the [`Verdict`]; it decides nothing.
//!
//! The order of a decision: the path must be in normal form (jwt-identity
//! puts it so; anything else could match another route than the upstream
//! serves); a route with an `fga` rule needs a proven identity
//! ([`crate::identity::ReceivedIdentity::verify`]); its scopes, then its
//! checks (the decision cache first, then the service) decide.

use super::check::DecisionCache;
use super::filter::{FilterPlan, FilterRun};
use super::mcp::{hidden_named_get, hidden_tool_call, ListKind, ListRun, Visibility};
use super::rule::Authorization;
use super::service::FgaService;
use super::FgaRule;
use crate::bytes;
use crate::cache::{TokenCache, TokenKey};
use crate::identity::ReceivedIdentity;
use crate::mcp::{self as mcp_rpc, McpHeaders};
use crate::path;
use crate::placeholder::Facts;
use crate::policy::McpRoute;
use crate::policy::Named;
use crate::policy::{Policy, PolicyError};
use crate::proof::{ChecksProofs, ProofKey, ProofVerifier};
use crate::response::{self, LocalResponse};
use crate::shared_cache::SharedCache;
use crate::step::{Answer, BodyStep, Edits, Step};
use serde_json::Value;
use std::cell::RefCell;
use std::sync::Arc;

/// What a request carries that matters to scope-fga.
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
    /// `Mcp-Method` and `Mcp-Name` (MCP 2026-07-28), as received.
    pub mcp: McpHeaders<'a>,
}

/// Why a decision is what it is: one counter each ([`Verdict::metric`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No `fga` rule on the request's route (or no route): untouched.
    NotGuarded,
    /// Every check allowed (from the cache or the service's answers).
    Allowed,
    /// The FGA service is asked.
    FgaCall,
    /// A check denied: 403 naming the relation.
    Denied,
    /// The token lacks the rule's scopes: 403 `insufficient_scope`.
    InsufficientScope,
    /// The FGA service did not answer usably: 503.
    Unavailable,
    /// No proven identity: 401 (or 503 without a proof key).
    NoIdentity,
    /// The request cannot be checked (a path not in normal form, a value
    /// that cannot stand in a tuple, an MCP body that is no JSON-RPC
    /// request or disagrees with its headers): 400.
    Invalid,
    /// An MCP request: decided on its body.
    BodyRead,
}

impl Verdict {
    /// Verdicts with a counter, in a stable order.
    pub const COUNTED: [Verdict; 9] = [
        Verdict::NotGuarded,
        Verdict::Allowed,
        Verdict::FgaCall,
        Verdict::Denied,
        Verdict::InsufficientScope,
        Verdict::Unavailable,
        Verdict::NoIdentity,
        Verdict::Invalid,
        Verdict::BodyRead,
    ];

    /// The counter's name (`agentward.fga.allowed`, …).
    pub fn metric(self) -> &'static str {
        match self {
            Verdict::NotGuarded => "agentward.fga.not_guarded",
            Verdict::Allowed => "agentward.fga.allowed",
            Verdict::FgaCall => "agentward.fga.fga_call",
            Verdict::Denied => "agentward.fga.denied",
            Verdict::InsufficientScope => "agentward.fga.insufficient_scope",
            Verdict::Unavailable => "agentward.fga.unavailable",
            Verdict::NoIdentity => "agentward.fga.no_identity",
            Verdict::Invalid => "agentward.fga.invalid",
            Verdict::BodyRead => "agentward.fga.body_read",
        }
    }

    /// The verdict of an answer the gateway sends itself.
    fn of_answer(answer: &LocalResponse) -> Verdict {
        match answer.status {
            401 => Verdict::NoIdentity,
            403 if answer.body.contains("\"insufficient_scope\"") => Verdict::InsufficientScope,
            403 => Verdict::Denied,
            503 => Verdict::Unavailable,
            _ => Verdict::Invalid,
        }
    }
}

/// What to do with the request, why, and what to keep for later.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do now.
    pub step: Step,
    /// Why (for metrics).
    pub verdict: Verdict,
    /// The checks waiting for the answer to `step`'s call; give them back
    /// to [`Gate::answered`].
    pub pending: Option<Pending>,
    /// When the request goes on: its response is to be cut
    /// ([`Gate::filter_response`]).
    pub response: Option<ResponsePlan>,
    /// When `step` reads the body: what to decide on it with
    /// ([`Gate::decide_body`]).
    pub body: Option<BodyPlan>,
}

impl Decision {
    fn new(step: Step, verdict: Verdict) -> Decision {
        Decision {
            step,
            verdict,
            pending: None,
            response: None,
            body: None,
        }
    }

    fn respond(answer: LocalResponse) -> Decision {
        let verdict = Verdict::of_answer(&answer);
        Decision::new(Step::Respond(answer), verdict)
    }
}

/// A request's checks between a call and its answer: the run in
/// progress, then the runs after it (an MCP route's rule, then the tool's).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    authorization: Authorization,
    next: Vec<Authorization>,
    response: Option<ResponsePlan>,
    memo: Option<Memo>,
}

/// How a request's response is cut, decided while its identity was at hand.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponsePlan {
    /// A route's RAG `filter`.
    Items {
        /// The route (index in the policy).
        route: usize,
        /// Who is checked.
        plan: FilterPlan,
    },
    /// An MCP list (`tools/list`, …) on an MCP route.
    List {
        /// The route.
        route: usize,
        /// The list asked for.
        kind: ListKind,
        /// Who asked.
        caller: Caller,
    },
}

/// The cutting of one response body, between calls.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseRun {
    /// Items of a RAG answer.
    Items(FilterRun),
    /// Entries of an MCP list.
    List(ListRun),
}

/// What the identity proof said about the caller, kept past the headers
/// (the body and the response are decided later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    sub: String,
    issuer: String,
    agent: Option<String>,
    granted: String,
    params: Vec<(String, String)>,
}

impl Caller {
    fn facts<'a>(
        &'a self,
        params: &'a [(&'a str, &'a str)],
        body: Option<&'a Value>,
        tool: Option<&'a str>,
    ) -> Facts<'a> {
        Facts {
            body,
            params,
            sub: &self.sub,
            issuer: &self.issuer,
            agent: self.agent.as_deref(),
            tool,
        }
    }

    fn params(&self) -> Vec<(&str, &str)> {
        self.params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// An MCP request whose body is being read: its route, its caller, and
/// the `Mcp-Method` / `Mcp-Name` headers it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyPlan {
    route: usize,
    caller: Caller,
    method: Option<String>,
    name: Option<String>,
    max_bytes: usize,
}

/// scope-fga's policy, its FGA service, jwt-identity's proof key, and this
/// instance's memory of allowed requests.
pub struct Gate {
    policy: Policy,
    service: FgaService,
    proofs: ProofVerifier,
    memory: RefCell<TokenCache<Arc<Remembered>>>,
}

/// What an instance (an Envoy VM) remembers of a request allowed in the
/// headers phase on a route that is not MCP, by the identity's binding,
/// the method and the path as received: the identity headers whose proof
/// was checked (and the key it was checked under), and how the response
/// is cut. A request with the same binding, method, path and identity
/// headers is the same decision: it skips the proof's MAC, the checks'
/// digests and the shared data read. It holds until the earliest of the
/// decisions it was made from expires, as the decision cache would.
#[derive(Debug)]
struct Remembered {
    proof_key: ProofKey,
    identity: [Option<Box<str>>; 8],
    response: Option<ResponsePlan>,
}

impl Remembered {
    /// Whether a request with these identity headers is the one
    /// remembered: the very headers whose proof was checked, under the key
    /// held now.
    fn serves(&self, key: Option<ProofKey>, identity: &ReceivedIdentity<'_>) -> bool {
        key == Some(self.proof_key)
            && self
                .identity
                .iter()
                .zip(identity.values())
                .all(|(kept, now)| bytes::eq_opt(kept.as_deref(), *now))
    }
}

/// What to remember of a request once it is allowed (see [`Remembered`]).
#[derive(Debug, Clone, PartialEq)]
struct Memo {
    key: TokenKey,
    proof_key: ProofKey,
    identity: [Option<Box<str>>; 8],
}

impl ChecksProofs for Gate {
    fn proofs(&self) -> &ProofVerifier {
        &self.proofs
    }
}

impl Gate {
    /// The gate for a validated policy; `env` reads the environment the
    /// preshared key may come from. Fails naming the field when there is
    /// no `fga` section or its key cannot be read.
    pub fn new(
        mut policy: Policy,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Gate, PolicyError> {
        let Some(mut service) = policy.fga.take() else {
            return Err(PolicyError {
                field: "fga".into(),
                message: "the scope-fga plugin needs the `fga` section (its FGA service)".into(),
            });
        };
        service.resolve_key(env)?;
        Ok(Gate {
            memory: RefCell::new(TokenCache::new(policy.identity.cache_max_entries)),
            policy,
            service,
            proofs: ProofVerifier::new(),
        })
    }

    /// The FGA service the checks go to.
    pub fn service(&self) -> &FgaService {
        &self.service
    }

    /// Reads jwt-identity's proof key from the shared cache now (a host
    /// does at start); whether there is one.
    pub fn read_proof_key(&mut self, cache: &impl SharedCache) -> bool {
        self.proofs.read_key(cache)
    }

    /// Decides a request from its head. `cache` holds jwt-identity's proof
    /// key, `decisions` the cached FGA decisions; `now_ms` is the host's
    /// clock (Unix milliseconds).
    pub fn decide(
        &mut self,
        head: &RequestHead<'_>,
        cache: &impl SharedCache,
        decisions: &dyn DecisionCache,
        now_ms: u64,
    ) -> Decision {
        let memo_key = self.memo_key(head, now_ms);
        if let Some(key) = &memo_key {
            if let Some(kept) = self.memory.borrow_mut().get(key, now_ms) {
                if kept.serves(self.proofs.key(), &head.identity) {
                    let mut d = Decision::new(Step::Continue(Edits::none()), Verdict::Allowed);
                    d.response = kept.response.clone();
                    return d;
                }
            }
        }
        let path = match path::normalize(head.path) {
            // Matching another path than the upstream gets would let
            // `//documents/7` or `/x/../documents/7` skip the rule.
            Ok(target) if target.was_normal() => target.path,
            Ok(_) => return Decision::respond(response::invalid_request(
                "invalid_path",
                "the request path is not in normal form (jwt-identity must run before scope-fga)",
            )),
            Err(why) => {
                return Decision::respond(response::invalid_request(
                    "invalid_path",
                    why.description(),
                ))
            }
        };
        let Some(matched) = self.policy.matched(head.method, &path) else {
            return Decision::new(Step::Continue(Edits::none()), Verdict::NotGuarded);
        };
        let route = &self.policy.routes[matched.index];
        // An MCP endpoint's POSTs are JSON-RPC: the body says which tool.
        let mcp = route.mcp.is_some() && head.method == "POST" && !route.public;
        if route.fga.is_none() && !mcp {
            return Decision::new(Step::Continue(Edits::none()), Verdict::NotGuarded);
        }
        let (Some(bearer), false) = (head.bearer, head.identity.is_empty()) else {
            return Decision::respond(response::missing_token(&self.policy.resource));
        };
        let identity = match self.proofs.verify(&head.identity, Some(bearer), cache) {
            Ok(identity) => identity,
            Err(e) => return Decision::respond(e.response(&self.policy.resource)),
        };
        let granted: Vec<&str> = identity.scopes().collect();
        let caller = Caller {
            sub: identity.sub.unwrap_or_default().to_string(),
            issuer: identity.issuer.to_string(),
            agent: identity.agent.map(str::to_string),
            granted: granted.join(" "),
            params: matched
                .params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        };
        let rule = self.policy.routes[matched.index].fga.as_ref();
        if mcp {
            if let Some(refusal) =
                rule.and_then(|r| r.scope_refusal(&self.policy.resource, &caller.granted))
            {
                return Decision::respond(refusal);
            }
            let mcp_headers = head.mcp;
            let decided_name = match mcp_headers.decoded_name() {
                Ok(name) => name.map(|n| n.into_owned()),
                Err(mismatch) => return Decision::respond(mismatch.response(None)),
            };
            let max_bytes = self.body_bound(matched.index);
            let mut d = Decision::new(
                Step::ReadBody {
                    edits: Edits::none(),
                    max_bytes,
                },
                Verdict::BodyRead,
            );
            d.body = Some(BodyPlan {
                route: matched.index,
                caller,
                method: mcp_headers.method.map(|m| m.trim().to_string()),
                name: decided_name,
                max_bytes,
            });
            return d;
        }
        let Some(rule) = rule else {
            return Decision::new(Step::Continue(Edits::none()), Verdict::NotGuarded);
        };
        if rule.reads_body() {
            // Scopes while the headers are held; the checks at the body's end.
            if let Some(refusal) = rule.scope_refusal(&self.policy.resource, &caller.granted) {
                return Decision::respond(refusal);
            }
            let max_bytes = rule.max_body_bytes;
            let mut d = Decision::new(
                Step::ReadBody {
                    edits: Edits::none(),
                    max_bytes,
                },
                Verdict::BodyRead,
            );
            d.body = Some(BodyPlan {
                route: matched.index,
                caller,
                method: None,
                name: None,
                max_bytes,
            });
            return d;
        }
        let params = caller.params();
        let facts = caller.facts(&params, None, None);
        let mut authorization = match rule.authorize(
            &self.service,
            &self.policy.resource,
            &facts,
            &caller.granted,
        ) {
            Ok(a) => a,
            Err(answer) => return Decision::respond(answer),
        };
        let response = match rule.filter_plan(&self.service, &facts) {
            Ok(plan) => plan.map(|plan| ResponsePlan::Items {
                route: matched.index,
                plan,
            }),
            Err(refusal) => return Decision::respond(refusal.response()),
        };
        let step = authorization.step(&self.service, decisions, now_ms);
        let memo = match (memo_key, self.proofs.key()) {
            (Some(key), Some(proof_key)) => Some(Memo {
                key,
                proof_key,
                identity: head.identity.values().map(|v| v.map(Box::from)),
            }),
            _ => None,
        };
        match (&step, memo) {
            (Step::Continue(_), Some(memo)) => {
                self.remember(memo, &authorization, &response, now_ms);
                self.decided(step, authorization, Vec::new(), response)
            }
            (Step::Call(_), memo) => {
                let mut d = self.decided(step, authorization, Vec::new(), response);
                if let Some(pending) = &mut d.pending {
                    pending.memo = memo;
                }
                d
            }
            _ => self.decided(step, authorization, Vec::new(), response),
        }
    }

    /// The memory's key for a request (its binding, method and path as
    /// received); `None` when nothing is remembered (no binding, no
    /// decision cache, or no clock).
    fn memo_key(&self, head: &RequestHead<'_>, now_ms: u64) -> Option<TokenKey> {
        let bearer = head.bearer?;
        if self.service.cache_seconds == 0 || now_ms == 0 {
            return None;
        }
        Some(self.memory.borrow().key(&[bearer, head.method, head.path]))
    }

    /// Remembers an allowed request until its earliest decision expires
    /// (at most `cache_seconds` from now).
    fn remember(
        &self,
        memo: Memo,
        authorization: &Authorization,
        response: &Option<ResponsePlan>,
        now_ms: u64,
    ) {
        let ttl = now_ms.saturating_add(self.service.cache_seconds.saturating_mul(1000));
        let until = authorization.valid_until().min(ttl);
        if until <= now_ms {
            return;
        }
        let kept = Remembered {
            proof_key: memo.proof_key,
            identity: memo.identity,
            response: response.clone(),
        };
        self.memory
            .borrow_mut()
            .insert(memo.key, until - 1, Arc::new(kept));
    }

    /// The largest MCP request body read on a route: MCP's bound, or a
    /// tool rule's `max_body_bytes` when larger.
    fn body_bound(&self, route: usize) -> usize {
        let tools = self.policy.routes[route]
            .mcp
            .iter()
            .flat_map(|m| m.tools.0.values());
        tools
            .filter_map(|t| t.fga.as_ref().map(|r| r.max_body_bytes))
            .fold(mcp_rpc::MAX_BODY_BYTES, usize::max)
    }

    /// Decides an MCP request on its whole body (see [`Decision::body`]):
    /// the body must be one JSON-RPC request whose method and name agree
    /// with the `Mcp-Method` and `Mcp-Name` headers (JSON-RPC `-32020`,
    /// HTTP 400 otherwise); a `tools/call` needs the tool's scopes and
    /// checks (and the route's checks), a tool the policy does not list
    /// (with `unlisted_tools: deny`) is answered as unknown (`-32602`), as
    /// in the lists; a list's answer is cut ([`Decision::response`]).
    /// The decision's [`Step`] is for the body: `Continue` keeps it.
    pub fn decide_body(
        &self,
        plan: &BodyPlan,
        body: &[u8],
        decisions: &dyn DecisionCache,
        now_ms: u64,
    ) -> Decision {
        match self.policy.routes.get(plan.route) {
            Some(route) if route.mcp.is_none() => {
                return self.decide_route_body(route, plan, body, decisions, now_ms)
            }
            _ => {}
        }
        let message = match mcp_rpc::read_message(body, plan.max_bytes) {
            Ok(m) => m,
            Err(refusal) => return Decision::respond(refusal.response()),
        };
        let headers = McpHeaders {
            method: plan.method.as_deref(),
            name: plan.name.as_deref(),
        };
        if let Err(mismatch) = headers.agree_with(&message) {
            return Decision::respond(mismatch.response(message.id.as_ref()));
        }
        let Some(route) = self.policy.routes.get(plan.route) else {
            return Decision::new(Step::Continue(Edits::none()), Verdict::NotGuarded);
        };
        let params = plan.caller.params();
        let route_rule = route.fga.as_ref();
        let mut runs = Vec::new();
        if let Some(rule) = route_rule {
            let facts = plan.caller.facts(&params, None, None);
            match rule.authorize(
                &self.service,
                &self.policy.resource,
                &facts,
                &plan.caller.granted,
            ) {
                Ok(a) => runs.push(a),
                Err(answer) => return Decision::respond(answer),
            }
        }
        let mut response = None;
        if let Some(kind) = ListKind::of_method(&message.method) {
            response = Some(ResponsePlan::List {
                route: plan.route,
                kind,
                caller: plan.caller.clone(),
            });
        }
        if let (Some(tool), Some(mcp)) = (message.tool(), route.mcp.as_ref()) {
            match self.tool_call(mcp, tool, plan, &params, body, message.id.as_ref()) {
                Ok(Some(a)) => runs.push(a),
                Ok(None) => {}
                Err(answer) => return Decision::respond(answer),
            }
        }
        let named = match message.method.as_str() {
            "prompts/get" => Some(Named::Prompt),
            "resources/read" => Some(Named::Resource),
            _ => None,
        };
        if let (Some(kind), Some(key), Some(mcp)) =
            (named, message.name.as_deref(), route.mcp.as_ref())
        {
            match self.named_get(mcp, kind, key, plan, &params, message.id.as_ref()) {
                Ok(Some(a)) => runs.push(a),
                Ok(None) => {}
                Err(answer) => return Decision::respond(answer),
            }
        }
        let mut runs = runs.into_iter();
        let Some(mut first) = runs.next() else {
            let mut d = Decision::new(Step::Continue(Edits::none()), Verdict::Allowed);
            d.response = response;
            return d;
        };
        let step = first.step(&self.service, decisions, now_ms);
        self.continued(step, first, runs.collect(), response, decisions, now_ms)
    }

    /// A route's checks that read the request body, on the whole body:
    /// one JSON document (400 `fga_body_not_json` otherwise; a key given
    /// twice too, as a placeholder could read either), then the checks
    /// with it as `body`.
    fn decide_route_body(
        &self,
        route: &crate::policy::Route,
        plan: &BodyPlan,
        body: &[u8],
        decisions: &dyn DecisionCache,
        now_ms: u64,
    ) -> Decision {
        let Some(rule) = route.fga.as_ref() else {
            return Decision::new(Step::Continue(Edits::none()), Verdict::NotGuarded);
        };
        let Ok(value) = crate::approval::canonical::parse_strict(body) else {
            return Decision::respond(response::invalid_request(
                "fga_body_not_json",
                "this route's authorization checks read the request body, which must be one JSON document (no key given twice)",
            ));
        };
        let params = plan.caller.params();
        let facts = plan.caller.facts(&params, Some(&value), None);
        let mut authorization = match rule.authorize(
            &self.service,
            &self.policy.resource,
            &facts,
            &plan.caller.granted,
        ) {
            Ok(a) => a,
            Err(answer) => return Decision::respond(answer),
        };
        let response = match rule.filter_plan(&self.service, &facts) {
            Ok(filter) => filter.map(|plan_of_items| ResponsePlan::Items {
                route: plan.route,
                plan: plan_of_items,
            }),
            Err(refusal) => return Decision::respond(refusal.response()),
        };
        let step = authorization.step(&self.service, decisions, now_ms);
        self.decided(step, authorization, Vec::new(), response)
    }

    /// A `tools/call` of `tool`: its scopes, then its rule's checks (with
    /// the call's `arguments` as `body`).
    fn tool_call(
        &self,
        mcp: &McpRoute,
        tool: &str,
        plan: &BodyPlan,
        params: &[(&str, &str)],
        body: &[u8],
        id: Option<&Value>,
    ) -> Result<Option<Authorization>, LocalResponse> {
        let scopes = mcp.tool_scopes(tool).map_err(|_| hidden_tool_call(id))?;
        let missing = crate::scopes::missing(scopes, &plan.caller.granted);
        if !missing.is_empty() {
            return Err(response::insufficient_scope(
                &self.policy.resource,
                scopes,
                &missing,
            ));
        }
        let Some(rule) = mcp.tools.0.get(tool).and_then(|t| t.fga.as_ref()) else {
            return Ok(None);
        };
        let arguments = if rule.reads_body() {
            let whole = crate::approval::canonical::parse_strict(body)
                .map_err(|_| mcp_rpc::BodyRefusal::NotJson.response())?;
            whole
                .get("params")
                .and_then(|p| p.get("arguments"))
                .cloned()
        } else {
            None
        };
        let facts = plan.caller.facts(params, arguments.as_ref(), Some(tool));
        rule.authorize(
            &self.service,
            &self.policy.resource,
            &facts,
            &plan.caller.granted,
        )
        .map(Some)
    }

    /// A `prompts/get` or `resources/read`: a prompt or resource the
    /// policy does not let through (unlisted with `deny`) is answered as
    /// the server answers for one it does not have; then its scopes and
    /// its rule's checks.
    fn named_get(
        &self,
        mcp: &McpRoute,
        kind: Named,
        key: &str,
        plan: &BodyPlan,
        params: &[(&str, &str)],
        id: Option<&Value>,
    ) -> Result<Option<Authorization>, LocalResponse> {
        let entry = mcp
            .entry(kind, key)
            .map_err(|_| hidden_named_get(kind, id))?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let missing = crate::scopes::missing(&entry.scopes, &plan.caller.granted);
        if !missing.is_empty() {
            return Err(response::insufficient_scope(
                &self.policy.resource,
                &entry.scopes,
                &missing,
            ));
        }
        let Some(rule) = &entry.fga else {
            return Ok(None);
        };
        let facts = plan.caller.facts(params, None, None);
        rule.authorize(
            &self.service,
            &self.policy.resource,
            &facts,
            &plan.caller.granted,
        )
        .map(Some)
    }

    /// Decides on the FGA service's answer to the call a [`Decision`]
    /// asked for (`answer`: [`Answer::Failed`] when the call could not
    /// even be made).
    pub fn answered(
        &self,
        pending: Pending,
        answer: &Answer,
        decisions: &mut dyn DecisionCache,
        now_ms: u64,
    ) -> Decision {
        let Pending {
            mut authorization,
            next,
            response,
            memo,
        } = pending;
        let step = authorization.answered(&self.service, answer, decisions, now_ms);
        if let (Step::Continue(_), Some(memo), true) = (&step, memo, next.is_empty()) {
            self.remember(memo, &authorization, &response, now_ms);
        }
        let mut decision = self.continued(step, authorization, next, response, &*decisions, now_ms);
        if matches!(decision.step, Step::Continue(_)) {
            decision.verdict = Verdict::Allowed;
        }
        decision
    }

    /// After one run's step: a call waits, a denial answers, an allowance
    /// starts the next run (if any).
    fn continued(
        &self,
        mut step: Step,
        mut authorization: Authorization,
        next: Vec<Authorization>,
        response: Option<ResponsePlan>,
        decisions: &dyn DecisionCache,
        now_ms: u64,
    ) -> Decision {
        let mut next = next.into_iter();
        loop {
            if !matches!(step, Step::Continue(_)) {
                return self.decided(step, authorization, next.collect(), response);
            }
            match next.next() {
                None => return self.decided(step, authorization, Vec::new(), response),
                Some(mut following) => {
                    step = following.step(&self.service, decisions, now_ms);
                    authorization = following;
                }
            }
        }
    }

    fn decided(
        &self,
        step: Step,
        authorization: Authorization,
        next: Vec<Authorization>,
        response: Option<ResponsePlan>,
    ) -> Decision {
        match step {
            Step::Call(call) => Decision {
                step: Step::Call(call),
                verdict: Verdict::FgaCall,
                pending: Some(Pending {
                    authorization,
                    next,
                    response,
                    memo: None,
                }),
                response: None,
                body: None,
            },
            Step::Respond(answer) => Decision::respond(answer),
            other => Decision {
                step: other,
                verdict: Verdict::Allowed,
                pending: None,
                response,
                body: None,
            },
        }
    }

    /// The largest response body read for a plan (beyond it the response
    /// is not passed on: see [`Gate::too_large`]).
    pub fn response_bound(&self, plan: &ResponsePlan) -> usize {
        match plan {
            ResponsePlan::Items { route, .. } => {
                self.filter_of(*route).map_or(0, |f| f.max_body_bytes)
            }
            ResponsePlan::List { .. } => super::mcp::MAX_LIST_BYTES,
        }
    }

    fn filter_of(&self, route: usize) -> Option<&super::ResultFilter> {
        self.policy.routes.get(route)?.fga.as_ref()?.filter.as_ref()
    }

    /// Starts cutting a response body read to its end (`event_stream`:
    /// its `content-type` is `text/event-stream`): the first step, and
    /// the run to feed answers to while the step is a call.
    pub fn filter_response(
        &self,
        plan: &ResponsePlan,
        event_stream: bool,
        body: &[u8],
        decisions: &dyn DecisionCache,
        now_ms: u64,
    ) -> (BodyStep, Option<ResponseRun>) {
        let started = match plan {
            ResponsePlan::Items { route, plan } => {
                let Some(filter) = self.filter_of(*route) else {
                    return (BodyStep::Keep, None);
                };
                filter.start(plan, body).map(ResponseRun::Items)
            }
            ResponsePlan::List {
                route,
                kind,
                caller,
            } => {
                let Some(mcp) = self.policy.routes.get(*route).and_then(|r| r.mcp.as_ref()) else {
                    return (BodyStep::Keep, None);
                };
                let params = caller.params();
                let visible = |name: &str| self.visibility(mcp, *kind, caller, &params, name);
                ListRun::start(*kind, body, event_stream, visible).map(ResponseRun::List)
            }
        };
        match started {
            Ok(mut run) => {
                let step = match &mut run {
                    ResponseRun::Items(r) => r.step(&self.service, decisions, now_ms),
                    ResponseRun::List(r) => r.step(&self.service, decisions, now_ms),
                };
                let run = matches!(step, BodyStep::Call(_)).then_some(run);
                (step, run)
            }
            Err(why) => (BodyStep::Respond(why.response()), None),
        }
    }

    /// Whether an entry of an MCP list is shown to `caller`: a tool (a
    /// prompt, a resource) the policy lists needs its scopes and its
    /// rule's checks that need no arguments; an unlisted one is shown
    /// only with `unlisted_tools` (`unlisted_prompts`,
    /// `unlisted_resources`) `allow`.
    fn visibility(
        &self,
        mcp: &McpRoute,
        kind: ListKind,
        caller: &Caller,
        params: &[(&str, &str)],
        name: &str,
    ) -> Visibility {
        let named = match kind {
            ListKind::Tools => None,
            ListKind::Prompts => Some(Named::Prompt),
            ListKind::Resources => Some(Named::Resource),
        };
        if let Some(named) = named {
            let entry = match mcp.entry(named, name) {
                Err(_) => return Visibility::Hidden,
                Ok(None) => return Visibility::Shown,
                Ok(Some(entry)) => entry,
            };
            if !crate::scopes::missing(&entry.scopes, &caller.granted).is_empty() {
                return Visibility::Hidden;
            }
            return match &entry.fga {
                None => Visibility::Shown,
                Some(rule) => {
                    let facts = caller.facts(params, None, None);
                    FgaRule::list_visibility(rule, &self.service, &facts, &caller.granted)
                }
            };
        }
        let Ok(scopes) = mcp.tool_scopes(name) else {
            return Visibility::Hidden;
        };
        if !crate::scopes::missing(scopes, &caller.granted).is_empty() {
            return Visibility::Hidden;
        }
        match mcp.tools.0.get(name).and_then(|t| t.fga.as_ref()) {
            None => Visibility::Shown,
            Some(rule) => {
                let facts = caller.facts(params, None, Some(name));
                FgaRule::list_visibility(rule, &self.service, &facts, &caller.granted)
            }
        }
    }

    /// Feeds the answer to a response run's call; the next step.
    pub fn response_answered(
        &self,
        run: &mut ResponseRun,
        answer: &Answer,
        decisions: &mut dyn DecisionCache,
        now_ms: u64,
    ) -> BodyStep {
        match run {
            ResponseRun::Items(r) => r.answered(&self.service, answer, decisions, now_ms),
            ResponseRun::List(r) => r.answered(&self.service, answer, decisions, now_ms),
        }
    }

    /// What the agent gets for a response larger than the plan's bound.
    pub fn too_large(&self) -> LocalResponse {
        super::Unfilterable::TooLarge.response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::identity_headers;
    use crate::proof::{seal, KEY_NAME};
    use crate::shared_cache::MemoryCache;
    use serde_json::{json, Value};
    use std::collections::HashMap;

    const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    fn key() -> ProofKey {
        ProofKey::from_bytes(&[7; 16]).unwrap()
    }

    fn cache() -> MemoryCache {
        let mut c = MemoryCache::new();
        c.set(KEY_NAME, &key().to_bytes());
        c
    }

    fn gate(routes: Value) -> Gate {
        let policy = json!({
            "resource": "https://api.example.com",
            "issuers": [{"issuer": "https://idp.example.com/", "audiences": ["https://api.example.com"],
                         "jwks_uri": "https://idp.example.com/jwks.json", "jwks_cluster": "idp"}],
            "routes": routes,
            "fga": {"cluster": "vault", "store_id": "01STORE", "preshared_key": "k"},
        });
        Gate::new(
            Policy::parse(policy.to_string().as_bytes()).unwrap(),
            |_| None,
        )
        .unwrap()
    }

    fn documents() -> Gate {
        gate(json!([
            {"match": {"methods": ["GET"], "path": "/documents/{id}"},
             "fga": {"scopes": {"all": ["docs:read"]},
                     "checks": [{"relation": "viewer", "object": "document:{path.id}"}]}},
            {"match": {"methods": ["POST"], "path": "/rag/search"},
             "fga": {"principal": "both",
                     "filter": {"items": "results", "id": "id", "object": "document:{id}", "relation": "viewer"}}},
            {"match": {"path": "/open"}}
        ]))
    }

    /// jwt-identity's headers for `claims`, sealed for TOKEN.
    fn headers(claims: Value) -> Vec<(String, String)> {
        let mut h = identity_headers(claims.as_object().unwrap(), &[], false).unwrap();
        seal(&key(), &mut h, TOKEN);
        h
    }

    fn alice() -> Vec<(String, String)> {
        headers(
            json!({"iss": "https://idp.example.com/", "sub": "alice", "azp": "bot",
                       "scope": "docs:read"}),
        )
    }

    fn decide(g: &mut Gate, method: &str, path: &str, h: &[(String, String)]) -> Decision {
        let identity = ReceivedIdentity::from_headers(|name| {
            h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        });
        let head = RequestHead {
            method,
            path,
            bearer: Some(TOKEN),
            identity,
            mcp: McpHeaders::default(),
        };
        g.decide(&head, &cache(), &HashMap::<String, Vec<u8>>::new(), 0)
    }

    fn ok(body: Value) -> Answer {
        Answer::Response {
            status: 200,
            headers: vec![],
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn a_guarded_route_asks_then_allows_and_unguarded_routes_pass() {
        let mut g = documents();
        let d = decide(&mut g, "GET", "/documents/7", &alice());
        assert_eq!(d.verdict, Verdict::FgaCall);
        let Step::Call(call) = &d.step else { panic!() };
        assert_eq!(call.path, "/stores/01STORE/check");
        let mut decisions = HashMap::<String, Vec<u8>>::new();
        let after = g.answered(
            d.pending.unwrap(),
            &ok(json!({"allowed": true})),
            &mut decisions,
            0,
        );
        assert_eq!(after.step, Step::Continue(Edits::none()));
        assert_eq!(after.verdict, Verdict::Allowed);
        // Now cached: no call.
        let identity = alice();
        let r = ReceivedIdentity::from_headers(|name| {
            identity
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        });
        let head = RequestHead {
            method: "GET",
            path: "/documents/7",
            bearer: Some(TOKEN),
            identity: r,
            mcp: McpHeaders::default(),
        };
        let again = g.decide(&head, &cache(), &decisions, 1);
        assert_eq!(again.verdict, Verdict::Allowed);

        let open = decide(&mut g, "GET", "/open", &[]);
        assert_eq!(open.verdict, Verdict::NotGuarded);
    }

    fn decide_at(
        g: &mut Gate,
        path: &str,
        h: &[(String, String)],
        decisions: &HashMap<String, Vec<u8>>,
        now_ms: u64,
    ) -> Decision {
        let identity = ReceivedIdentity::from_headers(|name| {
            h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        });
        let head = RequestHead {
            method: "GET",
            path,
            bearer: Some(TOKEN),
            identity,
            mcp: McpHeaders::default(),
        };
        g.decide(&head, &cache(), decisions, now_ms)
    }

    #[test]
    fn an_allowed_request_is_remembered_per_vm_until_its_decision_expires() {
        let mut g = documents();
        let mut shared = HashMap::<String, Vec<u8>>::new();
        let t0 = 1_000_000;
        let d = decide_at(&mut g, "/documents/7", &alice(), &shared, t0);
        let allowed = g.answered(
            d.pending.unwrap(),
            &ok(json!({"allowed": true})),
            &mut shared,
            t0,
        );
        assert_eq!(allowed.verdict, Verdict::Allowed);
        // Remembered: allowed without the shared cache, the proof or a call.
        let none = HashMap::new();
        let again = decide_at(&mut g, "/documents/7", &alice(), &none, t0 + 9_999);
        assert_eq!(again.verdict, Verdict::Allowed);
        // Another path is another decision.
        let other = decide_at(&mut g, "/documents/8", &alice(), &none, t0 + 1);
        assert_eq!(other.verdict, Verdict::FgaCall);
        // Headers changed under the same proof: not the request remembered,
        // and its proof fails.
        let mut forged = alice();
        for (n, v) in &mut forged {
            if n == crate::identity::SCOPE {
                *v = "docs:read docs:write".into();
            }
        }
        let d = decide_at(&mut g, "/documents/7", &forged, &none, t0 + 1);
        assert_eq!(d.verdict, Verdict::NoIdentity);
        // Expired with the decision (cache_seconds 10): asked again.
        let late = decide_at(&mut g, "/documents/7", &alice(), &none, t0 + 10_000);
        assert_eq!(late.verdict, Verdict::FgaCall);
    }

    #[test]
    fn a_decision_from_the_shared_cache_is_remembered_no_longer_than_it_holds() {
        let mut g = documents();
        let mut shared = HashMap::<String, Vec<u8>>::new();
        let t0 = 1_000_000;
        let d = decide_at(&mut g, "/documents/7", &alice(), &shared, t0);
        g.answered(
            d.pending.unwrap(),
            &ok(json!({"allowed": true})),
            &mut shared,
            t0,
        );
        // Another VM: decided from the shared cache 5 s later.
        let mut other = documents();
        let d = decide_at(&mut other, "/documents/7", &alice(), &shared, t0 + 5_000);
        assert_eq!(d.verdict, Verdict::Allowed);
        let none = HashMap::new();
        let d = decide_at(&mut other, "/documents/7", &alice(), &none, t0 + 9_999);
        assert_eq!(d.verdict, Verdict::Allowed);
        let d = decide_at(&mut other, "/documents/7", &alice(), &none, t0 + 10_000);
        assert_eq!(d.verdict, Verdict::FgaCall);
    }

    #[test]
    fn denials_and_uncached_decisions_are_not_remembered() {
        let mut g = documents();
        let mut shared = HashMap::<String, Vec<u8>>::new();
        let t0 = 1_000_000;
        let d = decide_at(&mut g, "/documents/7", &alice(), &shared, t0);
        let denied = g.answered(
            d.pending.unwrap(),
            &ok(json!({"allowed": false})),
            &mut shared,
            t0,
        );
        assert_eq!(denied.verdict, Verdict::Denied);
        let none = HashMap::new();
        let d = decide_at(&mut g, "/documents/7", &alice(), &none, t0 + 1);
        assert_eq!(d.verdict, Verdict::FgaCall);
        // No clock: nothing is remembered, nothing is served from memory.
        let d = decide_at(&mut g, "/documents/7", &alice(), &shared, 0);
        assert_eq!(d.verdict, Verdict::FgaCall);
    }

    fn mcp_gate() -> Gate {
        gate(json!([
            {"match": {"methods": ["POST"], "path": "/mcp"},
             "mcp": {
                "tools": {},
                "prompts": {
                    "brief": {"scopes": ["docs:read"]},
                    "secret": {"fga": {"checks": [{"relation": "viewer", "object": "prompt:secret"}]}},
                    "admin": {"scopes": ["admin"]}
                },
                "unlisted_prompts": "deny",
                "resources": {"notes://nvda": {"scopes": ["admin"]}}
             }}
        ]))
    }

    fn mcp_body(g: &mut Gate, message: Value) -> Decision {
        let d = decide(g, "POST", "/mcp", &alice());
        assert_eq!(d.verdict, Verdict::BodyRead);
        let plan = d.body.unwrap();
        g.decide_body(&plan, message.to_string().as_bytes(), &HashMap::new(), 1)
    }

    #[test]
    fn prompts_and_resources_are_listed_and_got_by_their_rules() {
        let mut g = mcp_gate();
        let list = mcp_body(
            &mut g,
            json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/list"}),
        );
        assert_eq!(list.verdict, Verdict::Allowed);
        let plan = list.response.unwrap();
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"prompts": [
            {"name": "brief"}, {"name": "secret"}, {"name": "admin"}, {"name": "other"}]}});
        let none = HashMap::<String, Vec<u8>>::new();
        let (step, run) = g.filter_response(&plan, false, answer.to_string().as_bytes(), &none, 1);
        let BodyStep::Call(call) = step else {
            panic!("{step:?}")
        };
        let sent: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(sent["tuple_key"]["object"], "prompt:secret");
        let mut run = run.unwrap();
        let mut shared = HashMap::new();
        let step = g.response_answered(&mut run, &ok(json!({"allowed": false})), &mut shared, 1);
        let BodyStep::Replace(body) = step else {
            panic!("{step:?}")
        };
        let cut: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(cut["result"]["prompts"], json!([{"name": "brief"}]));

        // Getting one: unlisted (deny) is unknown, the checks are made,
        // missing scopes get the step-up challenge.
        let get = |g: &mut Gate, name: &str| {
            mcp_body(
                g,
                json!({"jsonrpc": "2.0", "id": 2, "method": "prompts/get", "params": {"name": name}}),
            )
        };
        let Step::Respond(unknown) = get(&mut g, "other").step else {
            panic!()
        };
        assert!(unknown.body.contains("-32602") && !unknown.body.contains("other"));
        let secret = get(&mut g, "secret");
        assert_eq!(secret.verdict, Verdict::FgaCall);
        let denied = g.answered(
            secret.pending.unwrap(),
            &ok(json!({"allowed": false})),
            &mut shared,
            1,
        );
        assert_eq!(denied.verdict, Verdict::Denied);
        assert_eq!(get(&mut g, "admin").verdict, Verdict::InsufficientScope);
        assert_eq!(get(&mut g, "brief").verdict, Verdict::Allowed);

        // Resources: listed by URI; unlisted ones pass by default.
        let read = |g: &mut Gate, uri: &str| {
            mcp_body(
                g,
                json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": uri}}),
            )
        };
        assert_eq!(
            read(&mut g, "notes://nvda").verdict,
            Verdict::InsufficientScope
        );
        assert_eq!(read(&mut g, "notes://other").verdict, Verdict::Allowed);
        let list = mcp_body(
            &mut g,
            json!({"jsonrpc": "2.0", "id": 4, "method": "resources/list"}),
        );
        let answer = json!({"jsonrpc": "2.0", "id": 4, "result": {"resources": [
            {"uri": "notes://nvda", "name": "n"}, {"uri": "notes://other", "name": "o"}]}});
        let (step, _) = g.filter_response(
            &list.response.unwrap(),
            false,
            answer.to_string().as_bytes(),
            &none,
            1,
        );
        let BodyStep::Replace(body) = step else {
            panic!("{step:?}")
        };
        let cut: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            cut["result"]["resources"],
            json!([{"uri": "notes://other", "name": "o"}])
        );
    }

    #[test]
    fn denials_scopes_forgeries_and_odd_paths_are_answered() {
        let mut g = documents();
        let d = decide(&mut g, "GET", "/documents/7", &alice());
        let denied = g.answered(
            d.pending.unwrap(),
            &ok(json!({"allowed": false})),
            &mut NoCacheMut,
            0,
        );
        assert_eq!(denied.verdict, Verdict::Denied);

        let no_scope = headers(json!({"iss": "https://idp.example.com/", "sub": "alice"}));
        let d = decide(&mut g, "GET", "/documents/7", &no_scope);
        assert_eq!(d.verdict, Verdict::InsufficientScope);

        let mut forged = alice();
        for (n, v) in forged.iter_mut() {
            if n == "x-agentward-sub" {
                *v = "bob".into();
            }
        }
        assert_eq!(
            decide(&mut g, "GET", "/documents/7", &forged).verdict,
            Verdict::NoIdentity
        );
        for path in ["//documents/7", "/x/../documents/7", "/documents/%2e%2e/7"] {
            let d = decide(&mut g, "GET", path, &alice());
            assert_eq!(d.verdict, Verdict::Invalid, "{path}");
        }
    }

    struct NoCacheMut;
    impl DecisionCache for NoCacheMut {
        fn get(&self, _: &str) -> Option<Vec<u8>> {
            None
        }
        fn set(&mut self, _: &str, _: &[u8]) -> bool {
            false
        }
    }

    #[test]
    fn rag_results_are_cut_for_the_user_and_the_agent() {
        let mut g = documents();
        let d = decide(&mut g, "POST", "/rag/search", &alice());
        assert_eq!(d.step, Step::Continue(Edits::none()));
        let plan = d.response.unwrap();
        assert_eq!(g.response_bound(&plan), 1024 * 1024);
        let body = json!({"results": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}).to_string();
        let (step, run) = g.filter_response(&plan, false, body.as_bytes(), &NoCacheMut, 0);
        let BodyStep::Call(call) = step else { panic!() };
        let sent: Value = serde_json::from_slice(&call.body).unwrap();
        let result: serde_json::Map<String, Value> = sent["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let user = c["tuple_key"]["user"].as_str().unwrap();
                let object = c["tuple_key"]["object"].as_str().unwrap();
                // alice sees a and b; the agent sees b and c.
                let allowed = match user {
                    "user:alice" => object != "document:c",
                    _ => object != "document:a",
                };
                (
                    c["correlation_id"].as_str().unwrap().to_string(),
                    json!({ "allowed": allowed }),
                )
            })
            .collect();
        let mut run = run.unwrap();
        let step = g.response_answered(
            &mut run,
            &ok(json!({ "result": result })),
            &mut NoCacheMut,
            0,
        );
        let BodyStep::Replace(out) = step else {
            panic!("{step:?}")
        };
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["results"], json!([{"id": "b"}]));
        let (bad, _) = g.filter_response(&plan, false, b"<html>", &NoCacheMut, 0);
        assert!(matches!(bad, BodyStep::Respond(r) if r.status == 502));
    }

    #[test]
    fn a_policy_without_the_service_is_refused_naming_the_field() {
        let base = json!({
            "resource": "https://api.example.com",
            "issuers": [{"issuer": "https://idp.example.com/", "audiences": ["https://api.example.com"],
                         "jwks_uri": "https://idp.example.com/jwks.json", "jwks_cluster": "idp"}],
        });
        let p = Policy::parse(base.to_string().as_bytes()).unwrap();
        assert_eq!(Gate::new(p, |_| None).err().unwrap().field, "fga");
    }

    fn transfers() -> Gate {
        gate(json!([
            {"match": {"methods": ["POST"], "path": "/transfers"},
             "fga": {"scopes": {"all": ["docs:read"]},
                     "checks": [{"relation": "owner", "object": "account:{body.from.account}"}],
                     "max_body_bytes": 1024}}
        ]))
    }

    fn body_plan(g: &mut Gate, h: &[(String, String)]) -> Decision {
        let identity = ReceivedIdentity::from_headers(|name| {
            h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        });
        let head = RequestHead {
            method: "POST",
            path: "/transfers",
            bearer: Some(TOKEN),
            identity,
            mcp: McpHeaders::default(),
        };
        g.decide(&head, &cache(), &HashMap::<String, Vec<u8>>::new(), 1)
    }

    #[test]
    fn a_route_check_on_the_body_is_decided_at_the_bodys_end() {
        let mut g = transfers();
        let d = body_plan(&mut g, &alice());
        assert_eq!(d.verdict, Verdict::BodyRead);
        assert_eq!(
            d.step,
            Step::ReadBody {
                edits: Edits::none(),
                max_bytes: 1024
            }
        );
        let plan = d.body.unwrap();
        let none = HashMap::<String, Vec<u8>>::new();
        let body = br#"{"from": {"account": "a1"}, "amount": 5}"#;
        let d = g.decide_body(&plan, body, &none, 1);
        assert_eq!(d.verdict, Verdict::FgaCall);
        let Step::Call(call) = &d.step else { panic!() };
        let sent: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(sent["tuple_key"]["object"], "account:a1");
        assert_eq!(sent["tuple_key"]["user"], "user:alice");
        let mut shared = HashMap::new();
        let after = g.answered(
            d.pending.unwrap(),
            &ok(json!({"allowed": true})),
            &mut shared,
            1,
        );
        assert_eq!(after.verdict, Verdict::Allowed);
        // Not remembered by path: another body is another decision.
        let other = br#"{"from": {"account": "a2"}}"#;
        assert_eq!(
            g.decide_body(&plan, other, &none, 2).verdict,
            Verdict::FgaCall
        );
    }

    #[test]
    fn a_route_body_that_cannot_be_checked_is_refused() {
        let mut g = transfers();
        let plan = body_plan(&mut g, &alice()).body.unwrap();
        let none = HashMap::<String, Vec<u8>>::new();
        for body in [
            &b"not json"[..],
            b"",
            br#"{"from": {"account": "a1"}, "from": {}}"#,
        ] {
            let d = g.decide_body(&plan, body, &none, 1);
            assert_eq!(
                d.verdict,
                Verdict::Invalid,
                "{}",
                String::from_utf8_lossy(body)
            );
            let Step::Respond(answer) = &d.step else {
                panic!()
            };
            assert_eq!(answer.status, 400);
            assert!(answer.body.contains("fga_body_not_json"));
        }
        // The field absent, or a value that would change the tuple.
        for body in [&br#"{"to": 1}"#[..], br#"{"from": {"account": "a#b"}}"#] {
            let d = g.decide_body(&plan, body, &none, 1);
            let Step::Respond(answer) = &d.step else {
                panic!()
            };
            assert_eq!(answer.status, 400, "{}", answer.body);
            assert!(answer.body.contains("body.from.account"), "{}", answer.body);
            assert!(!answer.body.contains("a#b"));
        }
        // Scopes are decided while the headers are held: no body is read.
        let mut g = transfers();
        let bob = headers(json!({"iss": "https://idp.example.com/", "sub": "bob", "scope": "x"}));
        let d = body_plan(&mut g, &bob);
        assert_eq!(d.verdict, Verdict::InsufficientScope);
    }
}
