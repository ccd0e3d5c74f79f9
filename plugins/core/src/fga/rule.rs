//! A route's (or an MCP tool's) `fga` sub-object, and the decision on one
//! request: required scopes first (403 `insufficient_scope` with the
//! step-up challenge), then relationship checks for the user, the agent or
//! both, every one of which must allow.
//!
//! ```json
//! "fga": {
//!   "scopes": {"all": ["docs:read"]},
//!   "principal": "both",
//!   "checks": [{"relation": "viewer", "object": "document:{path.id}"},
//!              {"user": "agent:{agent}", "relation": "can_use", "object": "tool:{tool}"}],
//!   "contextual_tuples": [{"user": "agent:{agent}", "relation": "acts_for", "object": "user:{sub}"}],
//!   "filter": {"items": "results", "id": "id", "object": "document:{id}", "relation": "viewer"}
//! }
//! ```
//!
//! A check without `user` is made for the rule's `principal`: `user` (the
//! service's `user`, `user:{sub}`), `agent` (`agent:{agent}`) or `both`
//! (dual authorization: the company may limit an employee's agent where
//! the employee may act). Placeholders read path parameters, the JSON body
//! (an MCP call's `arguments`), `sub`, `issuer`, `agent` and `tool`.

use super::check::{Check, CheckRun, DecisionCache, Next};
use super::filter::ResultFilter;
use super::service::FgaService;
use super::tuple::{fill_user, TupleKey, TupleTemplate};
use crate::placeholder::{Facts, FillError, Root};
use crate::policy::PolicyError;
use crate::response::{access_denied, insufficient_scope, invalid_request, LocalResponse};
use crate::step::{Answer, Edits, Step};
use serde::Deserialize;
use serde_json::json;

/// Relationship checks and required scopes of a route or an MCP tool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FgaRule {
    /// Scopes the token needs: `{"all": […]}` or `{"any": […]}`.
    #[serde(default)]
    pub scopes: Option<ScopeRule>,
    /// Whom checks without a `user` are made for.
    #[serde(default)]
    pub principal: Principal,
    /// Tuples that must all be allowed.
    #[serde(default)]
    pub checks: Vec<TupleTemplate>,
    /// Tuples sent with every check as OpenFGA `contextual_tuples`.
    #[serde(default)]
    pub contextual_tuples: Vec<TupleTemplate>,
    /// Cut the JSON response's items to what the principal may see (RAG).
    #[serde(default)]
    pub filter: Option<ResultFilter>,
    /// The largest request body read when a check reads the body (413 beyond).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

/// Largest `max_body_bytes`.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most `checks` and `contextual_tuples` (OpenFGA: 100 contextual tuples).
pub const MAX_TUPLES: usize = 100;

/// Required scopes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ScopeRule {
    /// Every one.
    All(Vec<String>),
    /// At least one.
    Any(Vec<String>),
}

impl ScopeRule {
    /// The scopes listed.
    pub fn listed(&self) -> &[String] {
        match self {
            ScopeRule::All(s) | ScopeRule::Any(s) => s,
        }
    }

    /// The scopes the granted ones (space-separated) lack; empty when the
    /// rule is met. For `any`, all of them when none is granted.
    pub fn missing<'a>(&'a self, granted: &str) -> Vec<&'a str> {
        match self {
            ScopeRule::All(need) => crate::scopes::missing(need, granted),
            ScopeRule::Any(need) => {
                let missing = crate::scopes::missing(need, granted);
                if missing.len() < need.len() {
                    Vec::new()
                } else {
                    missing
                }
            }
        }
    }
}

/// Whom a rule's checks are made for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Principal {
    /// The user (`sub`).
    #[default]
    User,
    /// The agent (`azp`/`client_id`).
    Agent,
    /// Both, each must be allowed.
    Both,
}

impl Principal {
    fn user(self) -> bool {
        matches!(self, Principal::User | Principal::Both)
    }
    fn agent(self) -> bool {
        matches!(self, Principal::Agent | Principal::Both)
    }
}

/// A request the rule cannot check: answered, never forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The rule checks the user and the identity has none (an agent's own token).
    NoUser,
    /// The rule checks the agent and the token names none.
    NoAgent,
    /// A placeholder of the request is absent or cannot stand in a tuple.
    Fill(FillError),
}

impl Refusal {
    /// The answer: 403 for a missing principal, 400 naming the placeholder
    /// (never the request's value) otherwise.
    pub fn response(&self) -> LocalResponse {
        match self {
            Refusal::NoUser => access_denied(
                "fga_no_user",
                "this route checks the user's relationships and the token names no user",
            ),
            Refusal::NoAgent => access_denied(
                "fga_no_agent",
                "this route checks the agent's relationships and the token names no agent",
            ),
            Refusal::Fill(f) => invalid_request(
                "fga_check_input",
                &format!(
                    "the authorization check cannot be made from this request: `{}`: {}",
                    f.field, f.why
                ),
            ),
        }
    }
}

/// Who a check was made for, to name in a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Label {
    who: String,
    relation: String,
}

/// One request's checks, from the first step to the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    run: CheckRun,
    labels: Vec<Label>,
}

impl FgaRule {
    /// Whether a check reads the request body (then it is decided at the
    /// end of the body).
    pub fn reads_body(&self) -> bool {
        self.checks
            .iter()
            .chain(&self.contextual_tuples)
            .flat_map(TupleTemplate::fields)
            .any(|f| f.root == Root::Body)
    }

    /// Checks the rule; `at` is its field path, `has_param` says whether
    /// the route's path template captures a parameter, `tool` whether the
    /// rule belongs to an MCP tool (so `{tool}` has a value).
    pub fn validate(
        &self,
        at: &str,
        has_param: impl Fn(&str) -> bool,
        tool: bool,
    ) -> Result<(), PolicyError> {
        let error = |field: String, message: String| PolicyError {
            field: format!("{at}.{field}"),
            message,
        };
        if let Some(scopes) = &self.scopes {
            let kind = match scopes {
                ScopeRule::All(_) => "all",
                ScopeRule::Any(_) => "any",
            };
            if scopes.listed().is_empty() {
                return Err(error(format!("scopes.{kind}"), "at least one scope".into()));
            }
            if let Some(j) = scopes
                .listed()
                .iter()
                .position(|s| !crate::scopes::is_scope_token(s))
            {
                return Err(error(
                    format!("scopes.{kind}[{j}]"),
                    "a scope token (RFC 6749 §3.3): printable ASCII without space, `\"` or `\\`"
                        .into(),
                ));
            }
        }
        if self.checks.len() > MAX_TUPLES {
            return Err(error("checks".into(), format!("at most {MAX_TUPLES}")));
        }
        if self.contextual_tuples.len() > MAX_TUPLES {
            return Err(error(
                "contextual_tuples".into(),
                format!("at most {MAX_TUPLES}"),
            ));
        }
        for (list, tuples, needs_user) in [
            ("checks", &self.checks, false),
            ("contextual_tuples", &self.contextual_tuples, true),
        ] {
            for (i, tuple) in tuples.iter().enumerate() {
                tuple
                    .validate(needs_user)
                    .map_err(|(f, m)| error(format!("{list}[{i}].{f}"), m))?;
                for field in tuple.fields() {
                    let bad = match field.root {
                        Root::Path => {
                            let p = field.path.first().map(String::as_str).unwrap_or_default();
                            (!has_param(p)).then(|| {
                                format!("`{field}`: the route's path template has no `{{{p}}}`")
                            })
                        }
                        Root::Tool if !tool => {
                            Some(format!("`{field}`: only an MCP tool's rule has a tool"))
                        }
                        _ => None,
                    };
                    if let Some(message) = bad {
                        return Err(error(format!("{list}[{i}]"), message));
                    }
                }
            }
        }
        if let Some(filter) = &self.filter {
            filter
                .validate()
                .map_err(|(f, m)| error(format!("filter.{f}"), m))?;
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_BYTES {
            return Err(error(
                "max_body_bytes".into(),
                format!("from 1 to {MAX_BODY_BYTES}"),
            ));
        }
        Ok(())
    }

    /// The principals checks without `user` are made for, as FGA users
    /// (`user:alice`, `agent:bot`), with what to call them in a denial.
    pub fn principals(
        &self,
        service: &FgaService,
        facts: &Facts<'_>,
    ) -> Result<Vec<(String, &'static str)>, Refusal> {
        let mut out = Vec::new();
        if self.principal.user() {
            if facts.sub.is_empty() {
                return Err(Refusal::NoUser);
            }
            out.push((
                fill_user(&service.user, facts).map_err(Refusal::Fill)?,
                "user",
            ));
        }
        if self.principal.agent() {
            if facts.agent.is_none_or(str::is_empty) {
                return Err(Refusal::NoAgent);
            }
            out.push((
                fill_user(&service.agent, facts).map_err(Refusal::Fill)?,
                "agent",
            ));
        }
        Ok(out)
    }

    /// The contextual tuples for a request.
    pub fn contextual(&self, facts: &Facts<'_>) -> Result<Vec<TupleKey>, Refusal> {
        self.contextual_tuples
            .iter()
            .map(|t| t.fill(facts, None).map_err(Refusal::Fill))
            .collect()
    }

    /// The scope decision: `Some(403)` when the token lacks what
    /// `scopes` asks; `resource` is the policy's (for the challenge).
    pub fn scope_refusal(&self, resource: &str, granted: &str) -> Option<LocalResponse> {
        let scopes = self.scopes.as_ref()?;
        let missing = scopes.missing(granted);
        (!missing.is_empty()).then(|| insufficient_scope(resource, scopes.listed(), &missing))
    }

    /// Starts the decision on a request: scopes, then the checks filled
    /// from `facts`; `granted` is the token's scopes (`x-agentward-scope`).
    pub fn authorize(
        &self,
        service: &FgaService,
        resource: &str,
        facts: &Facts<'_>,
        granted: &str,
    ) -> Result<Authorization, LocalResponse> {
        if let Some(refusal) = self.scope_refusal(resource, granted) {
            return Err(refusal);
        }
        let (checks, labels) = self
            .checks_for(service, facts, |_| true)
            .map_err(|r| r.response())?;
        Ok(Authorization {
            run: CheckRun::new(checks, true),
            labels,
        })
    }

    /// The checks of this rule for a request, keeping only those `keep`
    /// lets through (listing MCP tools keeps those that need no body).
    pub(crate) fn checks_for(
        &self,
        service: &FgaService,
        facts: &Facts<'_>,
        keep: impl Fn(&TupleTemplate) -> bool,
    ) -> Result<(Vec<Check>, Vec<Label>), Refusal> {
        let kept: Vec<&TupleTemplate> = self.checks.iter().filter(|t| keep(t)).collect();
        let needs_principal = kept.iter().any(|t| t.user.is_none());
        let principals = if needs_principal {
            self.principals(service, facts)?
        } else {
            Vec::new()
        };
        let contextual = if kept.is_empty() {
            Vec::new()
        } else {
            self.contextual(facts)?
        };
        let mut checks = Vec::new();
        let mut labels = Vec::new();
        for template in kept {
            let users: Vec<(Option<&str>, String)> = match &template.user {
                Some(user) => {
                    let kind = user
                        .pieces()
                        .next()
                        .and_then(|p| match p {
                            crate::placeholder::Piece::Text(t) => t.split(':').next(),
                            crate::placeholder::Piece::Field(_) => None,
                        })
                        .unwrap_or("user");
                    vec![(None, kind.to_string())]
                }
                None => principals
                    .iter()
                    .map(|(u, who)| (Some(u.as_str()), (*who).to_string()))
                    .collect(),
            };
            for (user, who) in users {
                let tuple = template.fill(facts, user).map_err(Refusal::Fill)?;
                labels.push(Label {
                    who,
                    relation: tuple.relation.clone(),
                });
                checks.push(Check {
                    tuple,
                    contextual: contextual.clone(),
                });
            }
        }
        Ok((checks, labels))
    }
}

impl Authorization {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.run.is_empty()
    }

    /// Until when (Unix ms) the decisions taken so far hold
    /// ([`CheckRun::valid_until`]).
    pub fn valid_until(&self) -> u64 {
        self.run.valid_until()
    }

    /// The next step: continue when every check allows (from the cache or
    /// answers), 403 at the first denial, else the call to make.
    pub fn step(&mut self, service: &FgaService, cache: &dyn DecisionCache, now_ms: u64) -> Step {
        match self.run.next(service, cache, now_ms) {
            Next::Call(call) => Step::Call(call),
            Next::Done => match self.run.first_denied() {
                None => Step::Continue(Edits::none()),
                Some(i) => Step::Respond(self.denied(i)),
            },
        }
    }

    /// Feeds the answer to the call [`Authorization::step`] asked for and
    /// takes the next step; an unusable answer is 503.
    pub fn answered(
        &mut self,
        service: &FgaService,
        answer: &Answer,
        cache: &mut dyn DecisionCache,
        now_ms: u64,
    ) -> Step {
        match self.run.answered(service, answer, cache, now_ms) {
            Ok(()) => self.step(service, cache, now_ms),
            Err(failure) => Step::Respond(failure.response()),
        }
    }

    /// 403 naming the relation that failed and whose it was; never the
    /// ids in the tuple.
    fn denied(&self, i: usize) -> LocalResponse {
        let label = self.labels.get(i).cloned().unwrap_or(Label {
            who: "user".into(),
            relation: String::new(),
        });
        LocalResponse::json(
            403,
            json!({
                "error": "access_denied",
                "reason": "fga_denied",
                "error_description": format!(
                    "the {} lacks the `{}` relation this request needs",
                    label.who, label.relation
                ),
                "relation": label.relation,
                "principal": label.who,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::tests::{ok, service};
    use super::super::check::NoCache;
    use super::*;
    use crate::step::Callout;
    use serde_json::{json, Value};

    pub(crate) fn rule(v: Value) -> Result<FgaRule, PolicyError> {
        let r: FgaRule = serde_path_to_error::deserialize(v).map_err(|e| PolicyError {
            field: format!("routes[0].fga.{}", e.path()),
            message: e.to_string(),
        })?;
        r.validate("routes[0].fga", |p| p == "id", false)?;
        Ok(r)
    }

    fn call_body(step: &Step) -> Value {
        match step {
            Step::Call(Callout { body, .. }) => serde_json::from_slice(body).unwrap(),
            other => panic!("expected a call, got {other:?}"),
        }
    }

    fn facts() -> Facts<'static> {
        Facts {
            params: &[("id", "7")],
            ..Facts::for_tests()
        }
    }

    #[test]
    fn the_user_is_checked_and_an_allowed_request_continues() {
        let s = service();
        let r = rule(json!({"checks": [{"relation": "viewer", "object": "document:{path.id}"}]}))
            .unwrap();
        assert!(!r.reads_body());
        let mut a = r.authorize(&s, "https://api", &facts(), "").unwrap();
        let step = a.step(&s, &NoCache, 0);
        assert_eq!(
            call_body(&step)["tuple_key"],
            json!({"user": "user:alice", "relation": "viewer", "object": "document:7"})
        );
        assert_eq!(
            a.answered(&s, &ok(json!({"allowed": true})), &mut NoCache, 0),
            Step::Continue(Edits::none())
        );
    }

    #[test]
    fn a_denial_names_the_relation_and_the_principal_not_the_ids() {
        let s = service();
        let r = rule(json!({"principal": "both",
            "checks": [{"relation": "viewer", "object": "document:{path.id}"}]}))
        .unwrap();
        let mut a = r.authorize(&s, "https://api", &facts(), "").unwrap();
        let body = call_body(&a.step(&s, &NoCache, 0));
        let users: Vec<&str> = body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["tuple_key"]["user"].as_str().unwrap())
            .collect();
        assert_eq!(users, ["user:alice", "agent:trading-agent"]);
        // The user may, the agent may not: dual authorization denies.
        let step = a.answered(
            &s,
            &ok(json!({"result": {"c0": {"allowed": true}, "c1": {"allowed": false}}})),
            &mut NoCache,
            0,
        );
        let Step::Respond(answer) = step else {
            panic!("{step:?}")
        };
        assert_eq!(answer.status, 403);
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["reason"], "fga_denied");
        assert_eq!(body["relation"], "viewer");
        assert_eq!(body["principal"], "agent");
        assert!(!answer.body.contains("alice") && !answer.body.contains("document:7"));
    }

    #[test]
    fn missing_scopes_answer_the_step_up_challenge_before_any_check() {
        let s = service();
        let r = rule(json!({"scopes": {"all": ["docs:read", "docs:write"]},
            "checks": [{"relation": "viewer", "object": "document:{path.id}"}]}))
        .unwrap();
        let answer = r
            .authorize(&s, "https://api", &facts(), "docs:read")
            .unwrap_err();
        assert_eq!(answer.status, 403);
        let challenge = &answer
            .headers
            .iter()
            .find(|(n, _)| n == "www-authenticate")
            .unwrap()
            .1;
        assert!(challenge.contains("error=\"insufficient_scope\""));
        assert!(challenge.contains("scope=\"docs:read docs:write\""));
        assert!(r
            .authorize(&s, "https://api", &facts(), "docs:write docs:read")
            .is_ok());

        let any = rule(json!({"scopes": {"any": ["a", "b"]}})).unwrap();
        assert!(any.authorize(&s, "https://api", &facts(), "b").is_ok());
        assert!(any.authorize(&s, "https://api", &facts(), "c").is_err());
        let mut none = any.authorize(&s, "https://api", &facts(), "a").unwrap();
        assert!(none.is_empty());
        assert_eq!(none.step(&s, &NoCache, 0), Step::Continue(Edits::none()));
    }

    #[test]
    fn explicit_users_contextual_tuples_and_the_body() {
        let s = service();
        let r: FgaRule = serde_json::from_value(json!({
            "checks": [{"user": "agent:{agent}", "relation": "can_use", "object": "tool:{tool}"},
                       {"relation": "owner", "object": "account:{body.account}"}],
            "contextual_tuples": [{"user": "agent:{agent}", "relation": "acts_for", "object": "user:{sub}"}]
        }))
        .unwrap();
        r.validate("mcp.tools.buy.fga", |_| false, true).unwrap();
        assert!(r.reads_body());
        let body = json!({"account": "acc-1"});
        let f = Facts {
            body: Some(&body),
            tool: Some("buy"),
            ..Facts::for_tests()
        };
        let mut a = r.authorize(&s, "https://api", &f, "").unwrap();
        let sent = call_body(&a.step(&s, &NoCache, 0));
        assert_eq!(
            sent["checks"][0]["tuple_key"],
            json!({"user": "agent:trading-agent", "relation": "can_use", "object": "tool:buy"})
        );
        assert_eq!(
            sent["checks"][1]["tuple_key"],
            json!({"user": "user:alice", "relation": "owner", "object": "account:acc-1"})
        );
        assert_eq!(
            sent["checks"][1]["contextual_tuples"]["tuple_keys"][0],
            json!({"user": "agent:trading-agent", "relation": "acts_for", "object": "user:alice"})
        );
        let step = a.answered(
            &s,
            &ok(json!({"result": {"c0": {"allowed": false}, "c1": {"allowed": true}}})),
            &mut NoCache,
            0,
        );
        let Step::Respond(answer) = step else {
            panic!()
        };
        assert!(answer.body.contains("can_use") && answer.body.contains("\"agent\""));
    }

    #[test]
    fn users_of_several_issuers_are_told_apart_by_the_user_template() {
        let mut s = service();
        s.user = crate::placeholder::Template::parse("user:{issuer}|{sub}").unwrap();
        s.validate().unwrap();
        let r = rule(json!({"checks": [{"relation": "viewer", "object": "document:{path.id}"}]}))
            .unwrap();
        let mut a = r.authorize(&s, "https://api", &facts(), "").unwrap();
        assert_eq!(
            call_body(&a.step(&s, &NoCache, 0))["tuple_key"]["user"],
            "user:https://idp.example.com/|alice"
        );
    }

    #[test]
    fn requests_that_cannot_be_checked_are_refused() {
        let s = service();
        let r = rule(json!({"principal": "agent",
            "checks": [{"relation": "viewer", "object": "document:{path.id}"}]}))
        .unwrap();
        let no_agent = Facts {
            agent: None,
            ..facts()
        };
        let e = r.authorize(&s, "https://api", &no_agent, "").unwrap_err();
        assert_eq!(e.status, 403);
        assert!(e.body.contains("fga_no_agent"));
        let r = rule(json!({"checks": [{"relation": "viewer", "object": "document:{path.id}"}]}))
            .unwrap();
        let agent_only = Facts { sub: "", ..facts() };
        assert!(r
            .authorize(&s, "https://api", &agent_only, "")
            .unwrap_err()
            .body
            .contains("fga_no_user"));
        let sneaky = Facts {
            params: &[("id", "7#owner")],
            ..facts()
        };
        let e = r.authorize(&s, "https://api", &sneaky, "").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.body.contains("path.id") && !e.body.contains("7#owner"));
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (v, field) in [
            (json!({"scopes": {"all": []}}), "routes[0].fga.scopes.all"),
            (
                json!({"scopes": {"any": ["a b"]}}),
                "routes[0].fga.scopes.any[0]",
            ),
            (
                json!({"checks": [{"relation": "viewer", "object": "document:{path.nope}"}]}),
                "routes[0].fga.checks[0]",
            ),
            (
                json!({"checks": [{"relation": "viewer", "object": "{path.id}"}]}),
                "routes[0].fga.checks[0].object",
            ),
            (
                json!({"checks": [{"relation": "view er", "object": "document:1"}]}),
                "routes[0].fga.checks[0].relation",
            ),
            (
                json!({"checks": [{"relation": "can_use", "object": "tool:{tool}"}]}),
                "routes[0].fga.checks[0]",
            ),
            (
                json!({"contextual_tuples": [{"relation": "r", "object": "user:{sub}"}]}),
                "routes[0].fga.contextual_tuples[0].user",
            ),
            (json!({"max_body_bytes": 0}), "routes[0].fga.max_body_bytes"),
            (
                json!({"filter": {"items": "results", "id": "id", "object": "doc", "relation": "viewer"}}),
                "routes[0].fga.filter.object",
            ),
        ] {
            assert_eq!(rule(v.clone()).unwrap_err().field, field, "{v}");
        }
        for v in [
            json!({"checks": [{"relation": "viewer", "object": "document:{secret}"}]}),
            json!({"principal": "nobody"}),
            json!({"scopes": ["a"]}),
            json!({"check": []}),
        ] {
            assert!(rule(v.clone()).is_err(), "{v}");
        }
    }
}
