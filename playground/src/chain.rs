//! One request through the plugins' decisions, in chain order, the way the
//! Spin components carry them out, but synchronously and against a
//! [`Scenario`] instead of servers: jwt-identity, scope-fga, ciba-hold,
//! token-exchange, then the upstream's answer back through scope-fga's
//! filter. Time is simulated, so a held approval's polls run at once.

use agentward_core::approval::gate::{self as approval, Remember};
use agentward_core::approval::rule::APPROVAL_HEADER;
use agentward_core::authn::{self, Authenticator};
use agentward_core::exchange::{self, Exchanger};
use agentward_core::fga::gate::{self as fga, ResponsePlan};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::mcp::McpHeaders;
use agentward_core::policy::{Policy, PolicyError};
use agentward_core::proof::{ProofKey, KEY_NAME};
use agentward_core::response::{self, body_too_large, LocalResponse};
use agentward_core::scenario::{Decision, Exchange, Scenario};
use agentward_core::shared_cache::{MemoryCache, SharedCache};
use agentward_core::signature::PureRust;
use agentward_core::step::{Answer, BodyStep, Callout, Edits, Step};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The plugins, in the order a deployment chains them.
pub const PLUGINS: [&str; 4] = ["jwt-identity", "scope-fga", "ciba-hold", "token-exchange"];

/// The most steps one plugin takes on one request (polls included) before
/// the playground gives up on it.
const MAX_STEPS: usize = 1_000;

/// What to run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The policy document.
    pub policy: Value,
    /// The plugins in the chain, in order (default: all four).
    #[serde(default = "all_plugins")]
    pub plugins: Vec<String>,
    /// The agent's request.
    pub request: Request,
    /// Served as every issuer's JWKS and added to inline ones: the page's
    /// test key.
    #[serde(default)]
    pub jwks: Option<Value>,
    /// Tuples that hold (`user relation object`); every other check is
    /// denied.
    #[serde(default)]
    pub fga: Vec<String>,
    /// The user's decision on an approval request.
    #[serde(default)]
    pub approval: Option<Decision>,
    /// The vault's answer to a token exchange.
    #[serde(default)]
    pub exchange: Option<Exchange>,
    /// The upstream's answer.
    #[serde(default)]
    pub upstream: Upstream,
    /// Now, in milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// 16 random bytes for the chain's proof key (hex); without them a
    /// fixed key.
    #[serde(default)]
    pub proof_key: Option<String>,
}

fn all_plugins() -> Vec<String> {
    PLUGINS.iter().map(|p| p.to_string()).collect()
}

/// A request.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `:method`.
    pub method: String,
    /// `:path`, query included.
    pub path: String,
    /// Headers; names are taken in lower case.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body.
    #[serde(default)]
    pub body: String,
}

/// The upstream's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Its status.
    #[serde(default = "ok")]
    pub status: u16,
    /// Its headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Its body.
    #[serde(default)]
    pub body: String,
}

fn ok() -> u16 {
    200
}

impl Default for Upstream {
    fn default() -> Upstream {
        Upstream {
            status: 200,
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            body: "{}".into(),
        }
    }
}

/// What came out.
#[derive(Debug, Default, Serialize)]
pub struct Output {
    /// What is wrong with the policy or the input; nothing else is set then.
    pub errors: Vec<Problem>,
    /// Each plugin's decision, in the order they ran.
    pub plugins: Vec<PluginStep>,
    /// The request as the upstream got it; `None`: it never got there.
    pub upstream: Option<Request>,
    /// The answer the agent gets.
    pub response: Option<Response>,
    /// Every callout, as `cluster METHOD path`.
    pub callouts: Vec<String>,
    /// The approval request's binding message.
    pub binding_message: Option<String>,
    /// Callouts the scenario had no answer for.
    pub unanswered: Vec<String>,
}

/// A problem with the policy (its field) or the input.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Where: the policy's field (`routes[0].scopes`), or `input`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Who found it: `policy` (the shared parser) or a plugin's name.
    pub by: String,
}

/// One plugin's decision.
#[derive(Debug, Default, Serialize)]
pub struct PluginStep {
    /// Its name.
    pub plugin: String,
    /// Its verdict, as its metrics name it.
    pub verdict: String,
    /// `continue` (the request goes on) or `answered`.
    pub outcome: String,
    /// Headers it set on the request.
    pub set: Vec<(String, String)>,
    /// Headers it removed.
    pub removed: Vec<String>,
    /// The callouts it made.
    pub callouts: Vec<String>,
    /// What it did to the upstream's answer (`kept`, `cut`, `answered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// The answer the agent gets.
#[derive(Debug, Serialize)]
pub struct Response {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// Who answered: a plugin's name, or `upstream`.
    pub by: String,
}

impl Response {
    fn local(answer: &LocalResponse, by: &str) -> Response {
        Response {
            status: u16::try_from(answer.status).unwrap_or(500),
            headers: answer.headers.clone(),
            body: answer.body.clone(),
            by: by.to_string(),
        }
    }
}

/// The policy's problems as the `plugins` (names from [`PLUGINS`]) would
/// meet them at start-up.
pub fn validate(policy: &Value, plugins: &[String]) -> Vec<Problem> {
    let text = policy.to_string();
    let parsed = match Policy::parse(text.as_bytes()) {
        Ok(parsed) => parsed,
        Err(e) => return vec![problem(e, "policy")],
    };
    let mut problems = Vec::new();
    for plugin in plugins {
        let refused = match plugin.as_str() {
            "scope-fga" => fga::Gate::new(parsed.clone(), secret).err(),
            "ciba-hold" => approval::Gate::new(parsed.clone(), secret).err(),
            "token-exchange" => Exchanger::new(parsed.clone(), secret).err(),
            _ => None,
        };
        problems.extend(refused.map(|e| problem(e, plugin)));
    }
    problems
}

fn problem(e: PolicyError, by: &str) -> Problem {
    Problem {
        field: e.field,
        message: e.message,
        by: by.to_string(),
    }
}

/// Every `*_env` secret the policy names: 32 bytes, base64url (a key as
/// well as a client secret); nothing real is in the page.
fn secret(_name: &str) -> Option<String> {
    Some("cGxheWdyb3VuZC1wbGF5Z3JvdW5kLXBsYXlncm91bmQ".into())
}

/// Runs `input`.
pub fn run(input: Input) -> Output {
    let mut policy = input.policy.clone();
    let mut jwks_clusters = HashSet::new();
    let page_keys: Vec<Value> = input
        .jwks
        .as_ref()
        .and_then(|jwks| jwks["keys"].as_array().cloned())
        .unwrap_or_default();
    if let Some(issuers) = policy["issuers"].as_array_mut() {
        for issuer in issuers {
            if let Some(cluster) = issuer["jwks_cluster"].as_str() {
                jwks_clusters.insert(cluster.to_string());
            }
            let inline = issuer.get_mut("jwks").and_then(|jwks| jwks.get_mut("keys"));
            if let Some(keys) = inline.and_then(Value::as_array_mut) {
                keys.extend(page_keys.iter().cloned());
            }
        }
    }
    if let Some(unknown) = input
        .plugins
        .iter()
        .find(|p| !PLUGINS.contains(&p.as_str()))
    {
        return input_error(format!(
            "unknown plugin `{unknown}` (one of {})",
            PLUGINS.join(", ")
        ));
    }
    let errors = validate(&policy, &input.plugins);
    if !errors.is_empty() {
        return Output {
            errors,
            ..Output::default()
        };
    }
    let Ok(parsed) = Policy::parse(policy.to_string().as_bytes()) else {
        return input_error("the policy no longer parses".into());
    };
    let jwks = serde_json::json!({ "keys": page_keys });
    let scenario = Scenario::new(
        &input.fga,
        input.approval,
        input.exchange.clone(),
        jwks_clusters,
        jwks,
    );
    let key = input
        .proof_key
        .as_deref()
        .and_then(hex)
        .and_then(|bytes| ProofKey::from_bytes(&bytes))
        .unwrap_or_else(|| ProofKey::from_bytes(&[7; 16]).unwrap_or_else(ProofKey::generate));
    let mut chain = Chain {
        policy: parsed,
        key,
        scenario,
        now_ms: input.now_ms,
        head: Head::of(&input.request),
        body: input.request.body.clone().into_bytes(),
        binding: None,
        plan: None,
        output: Output::default(),
    };
    chain.run(&input.plugins, &input.upstream);
    let mut output = chain.output;
    output.callouts = chain.scenario.callouts;
    output.binding_message = chain.scenario.binding_message;
    output.unanswered = chain.scenario.unanswered;
    output
}

fn input_error(message: String) -> Output {
    Output {
        errors: vec![Problem {
            field: "input".into(),
            message,
            by: "playground".into(),
        }],
        ..Output::default()
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

/// A request's head as it goes along the chain.
#[derive(Debug, Clone)]
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn of(request: &Request) -> Head {
        Head {
            method: request.method.to_ascii_uppercase(),
            path: request.path.clone(),
            headers: request
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Makes `edits`, and tells the step what was set and removed.
    fn apply(&mut self, edits: &Edits, step: &mut PluginStep) {
        let applied = edits.apply(&mut self.headers, &mut self.path, str::to_string);
        step.removed.extend(applied.removed);
        step.set.extend(applied.set);
    }
}

/// The chain's state while a request goes along it.
struct Chain {
    policy: Policy,
    key: ProofKey,
    scenario: Scenario,
    now_ms: u64,
    head: Head,
    body: Vec<u8>,
    /// What jwt-identity hands the others (Envoy: filter state).
    binding: Option<String>,
    /// scope-fga's plan for the upstream's answer.
    plan: Option<(fga::Gate, ResponsePlan)>,
    output: Output,
}

/// Where a plugin left the request.
enum Went {
    On,
    Answered(LocalResponse),
}

impl Chain {
    fn run(&mut self, plugins: &[String], upstream: &Upstream) {
        for plugin in plugins {
            let mut step = PluginStep {
                plugin: plugin.clone(),
                ..PluginStep::default()
            };
            let before = self.scenario.callouts.len();
            let went = match plugin.as_str() {
                "jwt-identity" => self.jwt_identity(&mut step),
                "scope-fga" => self.scope_fga(&mut step),
                "ciba-hold" => self.ciba_hold(&mut step),
                _ => self.token_exchange(&mut step),
            };
            step.callouts = self.scenario.callouts[before..].to_vec();
            match went {
                Went::On => {
                    step.outcome = "continue".into();
                    self.output.plugins.push(step);
                }
                Went::Answered(answer) => {
                    step.outcome = "answered".into();
                    self.output.response = Some(Response::local(&answer, plugin));
                    self.output.plugins.push(step);
                    return;
                }
            }
        }
        let sent = Request {
            method: self.head.method.clone(),
            path: self.head.path.clone(),
            headers: self.head.headers.iter().cloned().collect(),
            body: String::from_utf8_lossy(&self.body).into_owned(),
        };
        self.output.upstream = Some(sent);
        let mut response = Response {
            status: upstream.status,
            headers: upstream
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: upstream.body.clone(),
            by: "upstream".into(),
        };
        if let Some((gate, plan)) = self.plan.take() {
            self.filter(&gate, &plan, &mut response);
        }
        self.output.response = Some(response);
    }

    /// Answers a callout from the scenario.
    fn call(&mut self, callout: &Callout) -> Answer {
        let answered = self.scenario.answer(
            &callout.cluster,
            callout.method,
            &callout.path,
            &callout.body,
        );
        match answered {
            None => Answer::Failed,
            Some((status, body)) if body.len() > callout.max_answer_bytes => Answer::TooLarge {
                status,
                size: body.len(),
            },
            Some((status, body)) => Answer::Response {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.into_bytes(),
            },
        }
    }

    fn proof_keys(&self) -> MemoryCache {
        let mut keys = MemoryCache::new();
        keys.set(KEY_NAME, &self.key.to_bytes());
        keys
    }

    fn jwt_identity(&mut self, step: &mut PluginStep) -> Went {
        let mut auth = Authenticator::new(self.policy.clone());
        auth.set_proof_key(self.key);
        let head = self.head.clone();
        let token_header = auth.policy().identity.token_header.clone();
        let request = authn::RequestHead {
            method: &head.method,
            path: &head.path,
            authorization: head.header("authorization"),
            token_header: token_header.as_deref().and_then(|name| head.header(name)),
        };
        let mut decision = auth.decide(&request, self.now_ms, &PureRust);
        if let (Step::Hold { .. }, Some(issuer)) = (&decision.step, decision.waits_for) {
            for fetch in auth.fetches_due(self.now_ms) {
                if fetch.issuer == issuer {
                    let answer = self.call(&fetch.call);
                    auth.jwks_fetched(fetch.issuer, &answer, self.now_ms);
                }
            }
            decision = auth.decide(&request, self.now_ms, &PureRust);
        }
        step.verdict = verdict(&decision.verdict);
        match decision.step {
            Step::Continue(edits) => {
                for (name, _) in head.headers.iter().filter(|(n, _)| auth.strips(n)) {
                    step.removed.push(name.clone());
                }
                self.head.headers.retain(|(name, _)| !auth.strips(name));
                self.head.apply(&edits, step);
                self.binding = decision.binding.map(|b| b.to_string());
                Went::On
            }
            Step::Respond(answer) => Went::Answered(answer),
            Step::Hold { .. } => Went::Answered(auth.wait_timed_out()),
            Step::Call(_) | Step::ReadBody { .. } => Went::Answered(lost("jwt-identity")),
        }
    }

    fn scope_fga(&mut self, step: &mut PluginStep) -> Went {
        let mut gate = match fga::Gate::new(self.policy.clone(), secret) {
            Ok(gate) => gate,
            Err(_) => return Went::Answered(not_configured()),
        };
        let keys = self.proof_keys();
        gate.read_proof_key(&keys);
        let mut decisions: HashMap<String, Vec<u8>> = HashMap::new();
        let head = self.head.clone();
        let request = fga::RequestHead {
            method: &head.method,
            path: &head.path,
            bearer: self.binding.as_deref(),
            identity: ReceivedIdentity::from_headers(|name| head.header(name)),
            mcp: McpHeaders::read(|name| head.header(name)),
        };
        let decision = gate.decide(&request, &keys, &decisions, self.now_ms);
        let mut decision = self.fga_checked(&gate, decision, &mut decisions);
        step.verdict = verdict(&decision.verdict);
        let plan = match decision.step {
            Step::Continue(edits) => {
                self.head.apply(&edits, step);
                decision.response
            }
            Step::Respond(answer) => return Went::Answered(answer),
            Step::ReadBody { edits, max_bytes } => {
                self.head.apply(&edits, step);
                if self.body.len() > max_bytes {
                    return Went::Answered(body_too_large(max_bytes));
                }
                let Some(plan) = decision.body.take() else {
                    return Went::Answered(lost("scope-fga"));
                };
                let body = self.body.clone();
                let decided = gate.decide_body(&plan, &body, &decisions, self.now_ms);
                let decided = self.fga_checked(&gate, decided, &mut decisions);
                step.verdict = verdict(&decided.verdict);
                match decided.step {
                    Step::Continue(_) => decided.response,
                    Step::Respond(answer) => return Went::Answered(answer),
                    _ => return Went::Answered(lost("scope-fga")),
                }
            }
            Step::Call(_) | Step::Hold { .. } => return Went::Answered(lost("scope-fga")),
        };
        self.plan = plan.map(|plan| (gate, plan));
        Went::On
    }

    /// Makes the checks a scope-fga decision asks for.
    fn fga_checked(
        &mut self,
        gate: &fga::Gate,
        mut decision: fga::Decision,
        decisions: &mut HashMap<String, Vec<u8>>,
    ) -> fga::Decision {
        for _ in 0..MAX_STEPS {
            let Step::Call(callout) = &decision.step else {
                return decision;
            };
            let Some(pending) = decision.pending.take() else {
                return decision;
            };
            let answer = self.call(&callout.clone());
            decision = gate.answered(pending, &answer, decisions, self.now_ms);
        }
        decision
    }

    /// scope-fga's cut of the upstream's answer (RAG items, MCP lists).
    fn filter(&mut self, gate: &fga::Gate, plan: &ResponsePlan, response: &mut Response) {
        let before = self.scenario.callouts.len();
        let what = self.cut(gate, plan, response);
        let made = self.scenario.callouts[before..].to_vec();
        if let Some(step) = self
            .output
            .plugins
            .iter_mut()
            .find(|s| s.plugin == "scope-fga")
        {
            step.callouts.extend(made);
            step.response = Some(what.into());
        }
    }

    fn cut(
        &mut self,
        gate: &fga::Gate,
        plan: &ResponsePlan,
        response: &mut Response,
    ) -> &'static str {
        // Only a success carries the items; an error passes as it came.
        if !(200..=299).contains(&response.status) || response.body.is_empty() {
            return "kept";
        }
        if response.body.len() > gate.response_bound(plan) {
            *response = Response::local(&gate.too_large(), "scope-fga");
            return "answered";
        }
        let event_stream = response.headers.iter().any(|(n, v)| {
            n == "content-type"
                && v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
        });
        let mut decisions: HashMap<String, Vec<u8>> = HashMap::new();
        let body = response.body.clone().into_bytes();
        let (mut step, run) =
            gate.filter_response(plan, event_stream, &body, &decisions, self.now_ms);
        if let Some(mut run) = run {
            for _ in 0..MAX_STEPS {
                let BodyStep::Call(callout) = &step else {
                    break;
                };
                let answer = self.call(&callout.clone());
                step = gate.response_answered(&mut run, &answer, &mut decisions, self.now_ms);
            }
        }
        match step {
            BodyStep::Keep => "kept",
            BodyStep::Replace(body) => {
                response.body = String::from_utf8_lossy(&body).into_owned();
                response.headers.retain(|(n, _)| n != "content-length");
                "cut"
            }
            BodyStep::Respond(answer) => {
                *response = Response::local(&answer, "scope-fga");
                "answered"
            }
            BodyStep::Call(_) => {
                *response = Response::local(&lost("scope-fga"), "scope-fga");
                "answered"
            }
        }
    }

    fn ciba_hold(&mut self, step: &mut PluginStep) -> Went {
        let mut gate = match approval::Gate::new(self.policy.clone(), secret) {
            Ok(gate) => gate,
            Err(_) => return Went::Answered(not_configured()),
        };
        let mut keys = self.proof_keys();
        gate.read_proof_key(&keys);
        let head = self.head.clone();
        let decision = gate.decide(&approval::RequestHead {
            method: &head.method,
            path: &head.path,
            bearer: self.binding.as_deref(),
            identity: ReceivedIdentity::from_headers(|name| head.header(name)),
            approval_id: head.header(APPROVAL_HEADER),
            mcp: McpHeaders::read(|name| head.header(name)),
            protocol_version: head.header("mcp-protocol-version"),
        });
        step.verdict = verdict(&decision.verdict);
        let (edits, max_bytes, wait) = match (decision.step, decision.wait) {
            (Step::Continue(edits), _) => {
                self.head.apply(&edits, step);
                return Went::On;
            }
            (Step::Respond(answer), _) => return Went::Answered(answer),
            (Step::ReadBody { edits, max_bytes }, Some(wait)) => (edits, max_bytes, wait),
            _ => return Went::Answered(lost("ciba-hold")),
        };
        self.head.apply(&edits, step);
        if self.body.len() > max_bytes {
            return Went::Answered(body_too_large(max_bytes));
        }
        let body = self.body.clone();
        let decided = gate.on_body(wait, &body, true, self.now_ms, &keys);
        keep(&mut keys, decided.remember);
        step.verdict = verdict(&decided.verdict);
        let mut decision = match (decided.step, decided.wait) {
            (BodyStep::Keep, _) => return Went::On,
            (BodyStep::Replace(new), _) => {
                self.body = new;
                return Went::On;
            }
            (BodyStep::Respond(answer), _) => return Went::Answered(answer),
            (BodyStep::Call(callout), Some(wait)) => {
                let answer = self.call(&callout);
                gate.on_answer(wait, &answer, self.now_ms)
            }
            _ => return Went::Answered(lost("ciba-hold")),
        };
        for _ in 0..MAX_STEPS {
            keep(&mut keys, decision.remember.take());
            step.verdict = verdict(&decision.verdict);
            decision = match (decision.step, decision.wait) {
                (Step::Continue(edits), _) => {
                    self.head.apply(&edits, step);
                    if let Some(body) = decision.body {
                        self.body = body;
                    }
                    return Went::On;
                }
                (Step::Respond(answer), _) => return Went::Answered(answer),
                (Step::Call(callout), Some(wait)) => {
                    let answer = self.call(&callout);
                    gate.on_answer(wait, &answer, self.now_ms)
                }
                (Step::Hold { until_ms }, Some(wait)) => {
                    // Simulated time: the poll is due now.
                    self.now_ms = self.now_ms.max(until_ms);
                    gate.wake(wait, self.now_ms)
                }
                _ => return Went::Answered(lost("ciba-hold")),
            };
        }
        Went::Answered(lost("ciba-hold"))
    }

    fn token_exchange(&mut self, step: &mut PluginStep) -> Went {
        let mut exchanger = match Exchanger::new(self.policy.clone(), secret) {
            Ok(exchanger) => exchanger,
            Err(_) => return Went::Answered(not_configured()),
        };
        let mut cache = self.proof_keys();
        exchanger.read_proof_key(&cache);
        let head = self.head.clone();
        let request = exchange::RequestHead {
            method: &head.method,
            path: &head.path,
            authorization: head.header("authorization"),
            identity: ReceivedIdentity::from_headers(|name| head.header(name)),
        };
        let seconds = self.now_ms / 1000;
        let mut decision = exchanger.decide(&request, || Some(seconds), &mut cache);
        if let (Step::Call(callout), Some(pending)) = (&decision.step, decision.pending.clone()) {
            let answer = self.call(&callout.clone());
            decision = exchanger.on_answer(pending, answer, Some(seconds), &mut cache);
        }
        step.verdict = verdict(&decision.verdict);
        match decision.step {
            Step::Continue(edits) => {
                self.head.apply(&edits, step);
                Went::On
            }
            Step::Respond(answer) => Went::Answered(answer),
            _ => Went::Answered(lost("token-exchange")),
        }
    }
}

/// A pending MCP approval kept for the client's retry (one request here).
fn keep(keys: &mut MemoryCache, write: Option<Remember>) {
    if let Some(write) = write {
        keys.set(&write.key, &write.value);
    }
}

fn verdict(verdict: &impl std::fmt::Debug) -> String {
    let text = format!("{verdict:?}");
    text.split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn not_configured() -> LocalResponse {
    response::unavailable("not_configured", "the gateway has no valid policy")
}

/// A step the plugin never takes at this point.
fn lost(plugin: &str) -> LocalResponse {
    response::unavailable(
        "unsupported_step",
        &format!("{plugin} decided a step it never takes here"),
    )
}
