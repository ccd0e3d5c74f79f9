//! RAG filtering: a route's `filter` cuts the items of a JSON response
//! (search results, retrieved documents) to those the principal may see,
//! before the agent gets them.
//!
//! ```json
//! "filter": {"items": "results", "id": "id", "object": "document:{id}", "relation": "viewer"}
//! ```
//!
//! Every item's id fills `object`; the relation is checked for the user
//! (and the agent, when the rule's principal says so) with one batch of
//! checks per `batch_limit`; an item stays only when every check allows
//! it, in its order. A body that is not JSON, names a key twice, is larger
//! than the bound, has no array at `items`, or an item without a usable id,
//! fails closed (502): nothing of it reaches the agent.

use super::check::{Check, CheckRun, DecisionCache, Next};
use super::rule::{FgaRule, Refusal};
use super::service::FgaService;
use super::tuple::{check_id_value, is_name, TupleKey, MAX_OBJECT_BYTES, MAX_RELATION_BYTES};
use crate::approval::canonical::{parse_strict, BodyError};
use crate::placeholder::Facts;
use crate::response::LocalResponse;
use crate::step::{Answer, BodyStep};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

/// Which items of a response are checked, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResultFilter {
    /// Dotted path of the array of items in the response (`results`,
    /// `data.hits`); empty: the response is the array.
    pub items: String,
    /// Dotted path of an item's id (a string or an integer) in the item.
    pub id: String,
    /// The object checked for an item: a literal type, then `{id}`
    /// (`document:{id}`).
    pub object: ObjectPattern,
    /// The relation the principal needs on an item (`viewer`).
    pub relation: String,
    /// The largest response read (502 beyond).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most items in a response (502 beyond).
    #[serde(default = "default_max_items")]
    pub max_items: usize,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_items() -> usize {
    1000
}

/// Largest `max_body_bytes`.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Largest `max_items`.
pub const MAX_ITEMS: usize = 10_000;

/// `type:…{id}…`: the object an item's id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPattern {
    prefix: String,
    suffix: String,
}

impl ObjectPattern {
    /// Parses `document:{id}`: a literal type and `:`, then exactly one
    /// `{id}`, with text around it free of `:#@*` and space.
    pub fn parse(source: &str) -> Result<ObjectPattern, String> {
        let shape = "a literal type, `:` and one `{id}` (`document:{id}`)";
        let (prefix, suffix) = source.split_once("{id}").ok_or(shape)?;
        let (kind, rest) = prefix.split_once(':').ok_or(shape)?;
        let text_ok = |t: &str| {
            !t.chars()
                .any(|c| c.is_whitespace() || c.is_control() || ":#@*{}".contains(c))
        };
        if !is_name(kind, 254) || !text_ok(rest) || !text_ok(suffix) {
            return Err(shape.into());
        }
        Ok(ObjectPattern {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        })
    }

    /// The object for an id, when the id can stand in one.
    pub fn object(&self, id: &str) -> Option<String> {
        check_id_value(id).ok()?;
        let object = format!("{}{id}{}", self.prefix, self.suffix);
        (object.len() <= MAX_OBJECT_BYTES).then_some(object)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for ObjectPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ObjectPattern".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The object an item's id names: a literal type, `:`, and one `{id}` (`document:{id}`).",
            "type": "string",
            "pattern": r"^[^:#@*\s{}]+:[^:#@*\s{}]*\{id\}[^:#@*\s{}]*$",
        })
    }
}

impl<'de> Deserialize<'de> for ObjectPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ObjectPattern, D::Error> {
        crate::policy::parsed_str(d, ObjectPattern::parse)
    }
}

fn path_ok(path: &str, empty_ok: bool) -> bool {
    (empty_ok && path.is_empty()) || (!path.is_empty() && !path.split('.').any(str::is_empty))
}

/// Follows a dotted path of object keys (an empty path is the value).
fn at_path<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.')
        .try_fold(value, |v, key| v.as_object()?.get(key))
}

fn at_path_mut<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.')
        .try_fold(value, |v, key| v.as_object_mut()?.get_mut(key))
}

impl ResultFilter {
    /// Checks what the types cannot; errors name the field under `filter`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !path_ok(&self.items, true) {
            return Err((
                "items",
                "a dotted path of keys (`results`, `data.hits`), or empty for the whole response"
                    .into(),
            ));
        }
        if !path_ok(&self.id, false) {
            return Err((
                "id",
                "a dotted path of keys in an item (`id`, `meta.doc_id`)".into(),
            ));
        }
        if !is_name(&self.relation, MAX_RELATION_BYTES) {
            return Err((
                "relation",
                "a relation name: 1 to 50 bytes without `:#@*` or space".into(),
            ));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_BYTES {
            return Err(("max_body_bytes", format!("from 1 to {MAX_BODY_BYTES}")));
        }
        if self.max_items == 0 || self.max_items > MAX_ITEMS {
            return Err(("max_items", format!("from 1 to {MAX_ITEMS}")));
        }
        Ok(())
    }
}

/// Why a response cannot be filtered: answered 502, never passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfilterable {
    /// Larger than `max_body_bytes`.
    TooLarge,
    /// Not JSON, or a key twice in one object.
    NotJson,
    /// No array at `items`.
    NoItems,
    /// More than `max_items` items.
    TooManyItems,
    /// An item without an id at `id` that can stand in an object.
    BadId,
}

impl Unfilterable {
    /// The answer: 502 with a reason; nothing of the upstream's body.
    pub fn response(self) -> LocalResponse {
        let (reason, description) = match self {
            Unfilterable::TooLarge => (
                "fga_filter_too_large",
                "the upstream's answer is larger than the gateway reads to filter it",
            ),
            Unfilterable::NotJson => (
                "fga_filter_not_json",
                "the upstream's answer is not JSON the gateway can filter",
            ),
            Unfilterable::NoItems => (
                "fga_filter_shape",
                "the upstream's answer has no list of items where the policy says",
            ),
            Unfilterable::TooManyItems => (
                "fga_filter_too_many_items",
                "the upstream's answer has more items than the gateway checks",
            ),
            Unfilterable::BadId => (
                "fga_filter_item_id",
                "an item of the upstream's answer has no id the gateway can check",
            ),
        };
        LocalResponse::json(
            502,
            json!({"error": "bad_gateway", "reason": reason, "error_description": description}),
        )
    }
}

/// What a request's rule says about filtering its response, decided while
/// the request's identity is at hand: who is checked, with which
/// contextual tuples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPlan {
    users: Vec<String>,
    contextual: Vec<TupleKey>,
}

impl FilterPlan {
    /// A plan for these FGA users (`user:alice`, `agent:bot`).
    pub fn new(users: Vec<String>, contextual: Vec<TupleKey>) -> FilterPlan {
        FilterPlan { users, contextual }
    }
}

impl FgaRule {
    /// The plan for filtering this request's response, when the rule has
    /// a `filter`.
    pub fn filter_plan(
        &self,
        service: &FgaService,
        facts: &Facts<'_>,
    ) -> Result<Option<FilterPlan>, Refusal> {
        if self.filter.is_none() {
            return Ok(None);
        }
        let users = self
            .principals(service, facts)?
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        Ok(Some(FilterPlan::new(users, self.contextual(facts)?)))
    }
}

/// Filtering of one response body: read, checked, rewritten.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterRun {
    document: Value,
    items_at: String,
    users: usize,
    items: usize,
    run: CheckRun,
}

impl ResultFilter {
    /// Reads a response body and prepares its checks (`users` checks per
    /// item, item by item).
    pub fn start(&self, plan: &FilterPlan, body: &[u8]) -> Result<FilterRun, Unfilterable> {
        if body.len() > self.max_body_bytes {
            return Err(Unfilterable::TooLarge);
        }
        let document = parse_strict(body).map_err(|e| match e {
            BodyError::NotJson | BodyError::DuplicateKey => Unfilterable::NotJson,
        })?;
        let items = at_path(&document, &self.items)
            .and_then(Value::as_array)
            .ok_or(Unfilterable::NoItems)?;
        if items.len() > self.max_items {
            return Err(Unfilterable::TooManyItems);
        }
        let mut checks = Vec::with_capacity(items.len() * plan.users.len());
        for item in items {
            let id = match at_path(item, &self.id) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                _ => return Err(Unfilterable::BadId),
            };
            let object = self.object.object(&id).ok_or(Unfilterable::BadId)?;
            for user in &plan.users {
                checks.push(Check {
                    tuple: TupleKey {
                        user: user.clone(),
                        relation: self.relation.clone(),
                        object: object.clone(),
                    },
                    contextual: plan.contextual.clone(),
                });
            }
        }
        Ok(FilterRun {
            items: items.len(),
            document,
            items_at: self.items.clone(),
            users: plan.users.len(),
            run: CheckRun::new(checks, false),
        })
    }
}

impl FilterRun {
    /// The next step: a call for the next batch, or the filtered body.
    pub fn step(
        &mut self,
        service: &FgaService,
        cache: &dyn DecisionCache,
        now_ms: u64,
    ) -> BodyStep {
        match self.run.next(service, cache, now_ms) {
            Next::Call(call) => BodyStep::Call(call),
            Next::Done => match self.filtered() {
                Some(body) => BodyStep::Replace(body),
                None => BodyStep::Respond(Unfilterable::NoItems.response()),
            },
        }
    }

    /// Feeds the answer to the call [`FilterRun::step`] asked for; an
    /// unusable answer is 503.
    pub fn answered(
        &mut self,
        service: &FgaService,
        answer: &Answer,
        cache: &mut dyn DecisionCache,
        now_ms: u64,
    ) -> BodyStep {
        match self.run.answered(service, answer, cache, now_ms) {
            Ok(()) => self.step(service, cache, now_ms),
            Err(failure) => BodyStep::Respond(failure.response()),
        }
    }

    /// Which items stay (every check of the item allowed), once all are
    /// answered.
    pub fn kept(&self) -> Option<Vec<bool>> {
        (0..self.items)
            .map(|i| {
                // No principal to check: nothing is shown.
                (0..self.users).try_fold(self.users > 0, |all, j| {
                    Some(all && self.run.allowed(i * self.users + j)?)
                })
            })
            .collect()
    }

    fn filtered(&mut self) -> Option<Vec<u8>> {
        let kept = self.kept()?;
        let items = at_path_mut(&mut self.document, &self.items_at)?.as_array_mut()?;
        let mut keep = kept.into_iter();
        items.retain(|_| keep.next().unwrap_or(false));
        serde_json::to_vec(&self.document).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::tests::{ok, service};
    use super::super::check::NoCache;
    use super::*;
    use crate::step::Callout;

    fn filter(v: Value) -> ResultFilter {
        let f: ResultFilter = serde_json::from_value(v).unwrap();
        f.validate().unwrap();
        f
    }

    fn rag() -> ResultFilter {
        filter(
            json!({"items": "results", "id": "id", "object": "document:{id}", "relation": "viewer"}),
        )
    }

    /// Answers every check of a call: allowed when `may(user, object)`.
    fn answer(call: &Callout, may: impl Fn(&str, &str) -> bool) -> Answer {
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        let verdict = |c: &Value| {
            may(
                c["tuple_key"]["user"].as_str().unwrap(),
                c["tuple_key"]["object"].as_str().unwrap(),
            )
        };
        match body["checks"].as_array() {
            None => ok(json!({ "allowed": verdict(&body) })),
            Some(checks) => {
                let result: serde_json::Map<String, Value> = checks
                    .iter()
                    .map(|c| {
                        (
                            c["correlation_id"].as_str().unwrap().to_string(),
                            json!({ "allowed": verdict(c) }),
                        )
                    })
                    .collect();
                ok(json!({ "result": result }))
            }
        }
    }

    fn run_to_end(run: &mut FilterRun, may: impl Fn(&str, &str) -> bool) -> (BodyStep, usize) {
        let s = service();
        let mut calls = 0;
        let mut step = run.step(&s, &NoCache, 0);
        while let BodyStep::Call(call) = &step {
            calls += 1;
            let a = answer(call, &may);
            step = run.answered(&s, &a, &mut NoCache, 0);
        }
        (step, calls)
    }

    #[test]
    fn ten_results_of_which_the_user_may_see_four_give_exactly_those_four_in_order() {
        let results: Vec<Value> = (0..10)
            .map(|i| json!({"id": format!("n{i}"), "title": format!("note {i}"), "score": 1.0 - i as f64 / 10.0}))
            .collect();
        let body = json!({"query": "research", "results": results, "took_ms": 3}).to_string();
        let plan = FilterPlan::new(vec!["user:alice".into()], vec![]);
        let mut run = rag().start(&plan, body.as_bytes()).unwrap();
        let allowed = ["document:n1", "document:n4", "document:n5", "document:n9"];
        let (step, calls) = run_to_end(&mut run, |u, o| u == "user:alice" && allowed.contains(&o));
        assert_eq!(calls, 5, "10 checks in batches of 2");
        let BodyStep::Replace(out) = step else {
            panic!("{step:?}")
        };
        let out: Value = serde_json::from_slice(&out).unwrap();
        let ids: Vec<&str> = out["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["n1", "n4", "n5", "n9"]);
        assert_eq!(out["query"], "research");
        assert_eq!(out["took_ms"], 3);
        assert_eq!(out["results"][0]["title"], "note 1");
    }

    #[test]
    fn with_both_principals_an_item_stays_only_when_both_may_see_it() {
        let body = json!({"data": {"hits": [{"meta": {"doc": 1}}, {"meta": {"doc": 2}}, {"meta": {"doc": 3}}]}});
        let f = filter(
            json!({"items": "data.hits", "id": "meta.doc", "object": "doc:{id}", "relation": "viewer"}),
        );
        let plan = FilterPlan::new(vec!["user:alice".into(), "agent:bot".into()], vec![]);
        let mut run = f.start(&plan, body.to_string().as_bytes()).unwrap();
        let (step, _) = run_to_end(&mut run, |u, o| match u {
            "user:alice" => o != "doc:3",
            "agent:bot" => o != "doc:1",
            _ => false,
        });
        let BodyStep::Replace(out) = step else {
            panic!()
        };
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out, json!({"data": {"hits": [{"meta": {"doc": 2}}]}}));
    }

    #[test]
    fn a_top_level_array_and_an_empty_list_work() {
        let f = filter(
            json!({"items": "", "id": "id", "object": "document:{id}", "relation": "viewer"}),
        );
        let plan = FilterPlan::new(vec!["user:alice".into()], vec![]);
        let mut run = f.start(&plan, br#"[{"id": "a"}, {"id": "b"}]"#).unwrap();
        let (step, _) = run_to_end(&mut run, |_, o| o == "document:b");
        assert_eq!(step, BodyStep::Replace(br#"[{"id":"b"}]"#.to_vec()));
        let mut empty = rag().start(&plan, br#"{"results": []}"#).unwrap();
        let (step, calls) = run_to_end(&mut empty, |_, _| true);
        assert_eq!(
            (step, calls),
            (BodyStep::Replace(br#"{"results":[]}"#.to_vec()), 0)
        );
    }

    #[test]
    fn a_plan_with_no_principal_shows_nothing() {
        let plan = FilterPlan::new(vec![], vec![]);
        let mut run = rag().start(&plan, br#"{"results": [{"id": 1}]}"#).unwrap();
        let (step, calls) = run_to_end(&mut run, |_, _| true);
        assert_eq!(
            (step, calls),
            (BodyStep::Replace(br#"{"results":[]}"#.to_vec()), 0)
        );
    }

    #[test]
    fn bodies_that_cannot_be_filtered_fail_closed() {
        let plan = FilterPlan::new(vec!["user:alice".into()], vec![]);
        let mut small = rag();
        small.max_body_bytes = 64;
        small.max_items = 2;
        for (body, why) in [
            (&b"<html>"[..], Unfilterable::NotJson),
            (
                br#"{"results": [], "results": [{"id": "x"}]}"#,
                Unfilterable::NotJson,
            ),
            (br#"{"results": {"id": "x"}}"#, Unfilterable::NoItems),
            (br#"{"items": []}"#, Unfilterable::NoItems),
            (br#"{"results": [{"name": "x"}]}"#, Unfilterable::BadId),
            (br#"{"results": [{"id": "a#b"}]}"#, Unfilterable::BadId),
            (br#"{"results": [{"id": 1.5}]}"#, Unfilterable::BadId),
            (br#"{"results": [{"id": null}]}"#, Unfilterable::BadId),
            (
                br#"{"results": [{"id": 1}, {"id": 2}, {"id": 3}]}"#,
                Unfilterable::TooManyItems,
            ),
            (&[b' '; 65][..], Unfilterable::TooLarge),
        ] {
            assert_eq!(
                small.start(&plan, body).unwrap_err(),
                why,
                "{}",
                String::from_utf8_lossy(body)
            );
            let answer = why.response();
            assert_eq!(answer.status, 502);
        }
    }

    #[test]
    fn an_fga_failure_mid_way_answers_503_and_passes_nothing_on() {
        let s = service();
        let plan = FilterPlan::new(vec!["user:alice".into()], vec![]);
        let body = br#"{"results": [{"id": 1}, {"id": 2}, {"id": 3}]}"#;
        let mut run = rag().start(&plan, body).unwrap();
        let BodyStep::Call(call) = run.step(&s, &NoCache, 0) else {
            panic!()
        };
        let first = answer(&call, |_, _| true);
        let BodyStep::Call(_) = run.answered(&s, &first, &mut NoCache, 0) else {
            panic!()
        };
        let step = run.answered(&s, &Answer::Failed, &mut NoCache, 0);
        let BodyStep::Respond(r) = step else { panic!() };
        assert_eq!(r.status, 503);
    }

    #[test]
    fn object_patterns_keep_the_type_literal() {
        let p = ObjectPattern::parse("document:{id}").unwrap();
        assert_eq!(p.object("7").as_deref(), Some("document:7"));
        assert_eq!(p.object("7#owner"), None);
        assert_eq!(
            ObjectPattern::parse("doc:v1-{id}-x")
                .unwrap()
                .object("a")
                .as_deref(),
            Some("doc:v1-a-x")
        );
        for bad in [
            "{id}",
            "document:",
            "document:{id}{id}",
            "doc ument:{id}",
            "document:{id}#x",
            "document:{ID}",
        ] {
            assert!(ObjectPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
