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
use super::mcp::{hidden_tool_call, ListKind, ListRun, Visibility};
use super::rule::Authorization;
use super::service::FgaService;
use super::FgaRule;
use crate::identity::ReceivedIdentity;
use crate::mcp::{self as mcp_rpc, McpHeaders};
use crate::path;
use crate::placeholder::{Facts, Root};
use crate::policy::McpRoute;
use crate::policy::{Policy, PolicyError};
use crate::proof::{self, ProofKey};
use crate::response::{self, LocalResponse};
use crate::shared_cache::SharedCache;
use crate::step::{Answer, BodyStep, Edits, Step};
use serde_json::Value;

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

/// scope-fga's policy, its FGA service, and jwt-identity's proof key.
pub struct Gate {
    policy: Policy,
    service: FgaService,
    proof_key: Option<ProofKey>,
}

impl Gate {
    /// The gate for a validated policy; `env` reads the environment the
    /// preshared key may come from. Fails naming the field when there is
    /// no `fga` section, its key cannot be read, or a rule needs what this
    /// build does not do yet (a check that reads the request body).
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
        for (i, route) in policy.routes.iter().enumerate() {
            let Some(rule) = &route.fga else { continue };
            let reads_body = rule
                .checks
                .iter()
                .chain(&rule.contextual_tuples)
                .position(|t| t.fields().any(|f| f.root == Root::Body));
            if let Some(j) = reads_body {
                return Err(PolicyError {
                    field: format!("routes[{i}].fga"),
                    message: format!(
                        "check or contextual tuple {j} reads the request body, which scope-fga does not read yet on routes; refusing to start rather than guess"
                    ),
                });
            }
        }
        Ok(Gate {
            policy,
            service,
            proof_key: None,
        })
    }

    /// The FGA service the checks go to.
    pub fn service(&self) -> &FgaService {
        &self.service
    }

    /// Reads jwt-identity's proof key from the shared cache now (a host
    /// does at start); whether there is one.
    pub fn read_proof_key(&mut self, cache: &impl SharedCache) -> bool {
        read_proof_key(&mut self.proof_key, cache, true).is_some()
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
        let Some(key) = read_proof_key(&mut self.proof_key, cache, false) else {
            return Decision::respond(proof::key_missing());
        };
        let proven = head.identity.verify(&key, bearer).or_else(|unproven| {
            // The key read at start may have lost the race to be the one.
            match read_proof_key(&mut self.proof_key, cache, true) {
                Some(newer) if newer != key => head.identity.verify(&newer, bearer),
                _ => Err(unproven),
            }
        });
        let Ok(identity) = proven else {
            return Decision::respond(proof::unproven(&self.policy.resource));
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
        self.decided(step, authorization, Vec::new(), response)
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
        let mut runs = runs.into_iter();
        let Some(mut first) = runs.next() else {
            let mut d = Decision::new(Step::Continue(Edits::none()), Verdict::Allowed);
            d.response = response;
            return d;
        };
        let step = first.step(&self.service, decisions, now_ms);
        self.continued(step, first, runs.collect(), response, decisions, now_ms)
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
        } = pending;
        let step = authorization.answered(&self.service, answer, decisions, now_ms);
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

    /// Whether an entry of an MCP list is shown to `caller`: a tool the
    /// policy lists needs its scopes and its rule's checks that need no
    /// arguments; an unlisted tool is shown only with `unlisted_tools:
    /// allow`. Prompts and resources have no rules: shown.
    fn visibility(
        &self,
        mcp: &McpRoute,
        kind: ListKind,
        caller: &Caller,
        params: &[(&str, &str)],
        name: &str,
    ) -> Visibility {
        if kind != ListKind::Tools {
            return Visibility::Shown;
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

fn read_proof_key(
    known: &mut Option<ProofKey>,
    cache: &impl SharedCache,
    reread: bool,
) -> Option<ProofKey> {
    match *known {
        Some(key) if !reread => Some(key),
        before => {
            let key = cache
                .get(proof::KEY_NAME)
                .and_then(|bytes| ProofKey::from_bytes(&bytes))
                .or(before);
            *known = key;
            key
        }
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
    fn a_policy_without_the_service_or_with_body_checks_is_refused_naming_the_field() {
        let base = json!({
            "resource": "https://api.example.com",
            "issuers": [{"issuer": "https://idp.example.com/", "audiences": ["https://api.example.com"],
                         "jwks_uri": "https://idp.example.com/jwks.json", "jwks_cluster": "idp"}],
        });
        let p = Policy::parse(base.to_string().as_bytes()).unwrap();
        assert_eq!(Gate::new(p, |_| None).err().unwrap().field, "fga");
        let mut v = base.clone();
        v["fga"] = json!({"cluster": "vault", "store_id": "S1"});
        v["routes"] = json!([{"match": {"path": "/a"},
            "fga": {"checks": [{"relation": "owner", "object": "account:{body.account}"}]}}]);
        let p = Policy::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(Gate::new(p, |_| None).err().unwrap().field, "routes[0].fga");
    }
}
