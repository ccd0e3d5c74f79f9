//! MCP lists cut to what the user and the agent may use: the result of
//! `tools/list` (`prompts/list`, `resources/list`) keeps only the entries
//! the caller's visibility says are shown, or whose checks all allow; a
//! tool so hidden is refused at `tools/call` as an unknown tool is. The
//! answer may be plain JSON or `text/event-stream` ([`super::sse`]).
//!
//! A tool's visibility comes from its rule ([`FgaRule::list_visibility`]):
//! hidden when the token lacks its scopes or when a check that needs no
//! call arguments denies; checks that read the arguments wait for the call.

use super::check::{Check, CheckRun, DecisionCache, Next};
use super::filter::Unfilterable;
use super::rule::FgaRule;
use super::service::FgaService;
use super::sse;
use crate::approval::canonical::parse_strict;
use crate::placeholder::{Facts, Root};
use crate::policy::Named;
use crate::response::LocalResponse;
use crate::step::{Answer, BodyStep};
use serde_json::Value;

/// A list method whose result is filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`: `result.tools[*].name`.
    Tools,
    /// `prompts/list`: `result.prompts[*].name`.
    Prompts,
    /// `resources/list`: `result.resources[*].uri`.
    Resources,
}

impl ListKind {
    /// The list a JSON-RPC method asks for, if it is one.
    pub fn of_method(method: &str) -> Option<ListKind> {
        match method {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            _ => None,
        }
    }

    fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
        }
    }

    fn name_field(self) -> &'static str {
        match self {
            ListKind::Resources => "uri",
            _ => "name",
        }
    }
}

/// Whether an entry of a list is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Shown.
    Shown,
    /// Left out.
    Hidden,
    /// Shown when every one of these checks allows.
    Checks(Vec<Check>),
}

impl FgaRule {
    /// Whether a tool this rule guards is listed for a caller: `facts`
    /// names the tool (no body), `granted` is the token's scopes.
    pub fn list_visibility(
        &self,
        service: &FgaService,
        facts: &Facts<'_>,
        granted: &str,
    ) -> Visibility {
        if self.scope_refusal("", granted).is_some() {
            return Visibility::Hidden;
        }
        let without_body = |t: &super::tuple::TupleTemplate| {
            !t.fields()
                .any(|f| matches!(f.root, Root::Body | Root::Path))
        };
        match self.checks_for(service, facts, without_body) {
            Ok((checks, _)) if checks.is_empty() => Visibility::Shown,
            Ok((checks, _)) => Visibility::Checks(checks),
            Err(_) => Visibility::Hidden,
        }
    }
}

/// The answer to a `tools/call` of a tool the caller's list leaves out:
/// what a server answers for a tool it does not have (JSON-RPC `-32602`),
/// so a hidden tool is not told apart from a missing one.
pub fn hidden_tool_call(id: Option<&Value>) -> LocalResponse {
    crate::mcp::json_rpc_error(200, id, crate::mcp::INVALID_PARAMS, "Unknown tool")
}

/// The answer to a `prompts/get` or `resources/read` of one the caller
/// may not get: what a server answers for a prompt it does not have
/// (`-32602`) or a resource it cannot find (`-32002`).
pub fn hidden_named_get(kind: Named, id: Option<&Value>) -> LocalResponse {
    match kind {
        Named::Prompt => {
            crate::mcp::json_rpc_error(200, id, crate::mcp::INVALID_PARAMS, "Unknown prompt")
        }
        Named::Resource => {
            crate::mcp::json_rpc_error(200, id, RESOURCE_NOT_FOUND, "Resource not found")
        }
    }
}

/// MCP's JSON-RPC error for a resource that is not there.
pub const RESOURCE_NOT_FOUND: i64 = -32002;

/// Where the list sits in the answer.
#[derive(Debug, Clone, PartialEq)]
enum Framing {
    Json(Value),
    /// The stream, and the events holding a list (index, parsed message).
    Events(sse::Stream, Vec<(usize, Value)>),
}

/// Filtering of one list answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRun {
    kind: ListKind,
    framing: Framing,
    /// Per entry, in order over every list: shown, hidden, or which
    /// checks (a range in the run).
    entries: Vec<Entry>,
    run: CheckRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Shown,
    Hidden,
    Checks(usize, usize),
}

/// The largest list answer read.
pub const MAX_LIST_BYTES: usize = 4 * 1024 * 1024;

/// The list entries of a JSON-RPC message, when it is a result with one.
fn entries_of(message: &Value, kind: ListKind) -> Option<&Vec<Value>> {
    message.get("result")?.get(kind.key())?.as_array()
}

impl ListRun {
    /// Reads a list answer (`event_stream`: `content-type` is
    /// `text/event-stream`) and prepares the checks; `visible` decides each
    /// entry by its name (a tool's or prompt's name, a resource's URI).
    pub fn start(
        kind: ListKind,
        body: &[u8],
        event_stream: bool,
        visible: impl Fn(&str) -> Visibility,
    ) -> Result<ListRun, Unfilterable> {
        if body.len() > MAX_LIST_BYTES {
            return Err(Unfilterable::TooLarge);
        }
        let mut messages: Vec<Value> = Vec::new();
        let framing = if event_stream {
            let stream = sse::parse(body).ok_or(Unfilterable::NotJson)?;
            let mut lists = Vec::new();
            for (i, event) in stream.events.iter().enumerate() {
                // An event without data (a priming event with only an id) has no message.
                let Some(data) = event.data().filter(|d| !d.trim().is_empty()) else {
                    continue;
                };
                let message = parse_strict(data.as_bytes()).map_err(|_| Unfilterable::NotJson)?;
                // A JSON-RPC batch could carry a list past the filter.
                if !message.is_object() {
                    return Err(Unfilterable::NoItems);
                }
                if entries_of(&message, kind).is_some() {
                    lists.push((i, message));
                }
            }
            messages.extend(lists.iter().map(|(_, m)| m.clone()));
            Framing::Events(stream, lists)
        } else {
            let message = parse_strict(body).map_err(|_| Unfilterable::NotJson)?;
            if !message.is_object() {
                return Err(Unfilterable::NoItems);
            }
            messages.push(message.clone());
            Framing::Json(message)
        };
        let mut entries = Vec::new();
        let mut checks = Vec::new();
        let mut any_list = false;
        for message in &messages {
            let Some(list) = entries_of(message, kind) else {
                continue;
            };
            any_list = true;
            for entry in list {
                let name = entry
                    .get(kind.name_field())
                    .and_then(Value::as_str)
                    .ok_or(Unfilterable::BadId)?;
                entries.push(match visible(name) {
                    Visibility::Shown => Entry::Shown,
                    Visibility::Hidden => Entry::Hidden,
                    Visibility::Checks(c) if c.is_empty() => Entry::Shown,
                    Visibility::Checks(c) => {
                        let from = checks.len();
                        checks.extend(c);
                        Entry::Checks(from, checks.len())
                    }
                });
            }
        }
        // A JSON-RPC error, or a stream of notifications only, has no list:
        // it passes as it is. A result without the list is not an answer
        // to the list asked for.
        if !any_list {
            let is_result = messages.iter().any(|m| m.get("result").is_some());
            if is_result {
                return Err(Unfilterable::NoItems);
            }
        }
        Ok(ListRun {
            kind,
            framing,
            entries,
            run: CheckRun::new(checks, false),
        })
    }

    /// The next step: a call for the next batch of checks, or the body
    /// with the list cut.
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

    /// Feeds the answer to the call [`ListRun::step`] asked for; an
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

    fn kept(&self) -> Option<Vec<bool>> {
        self.entries
            .iter()
            .map(|e| match *e {
                Entry::Shown => Some(true),
                Entry::Hidden => Some(false),
                Entry::Checks(from, to) => {
                    (from..to).try_fold(true, |all, i| Some(all && self.run.allowed(i)?))
                }
            })
            .collect()
    }

    fn filtered(&mut self) -> Option<Vec<u8>> {
        let kept = self.kept()?;
        let mut keep = kept.into_iter();
        let kind = self.kind;
        let mut cut = |message: &mut Value| {
            if let Some(list) = message
                .get_mut("result")
                .and_then(|r| r.get_mut(kind.key()))
                .and_then(Value::as_array_mut)
            {
                list.retain(|_| keep.next().unwrap_or(false));
            }
        };
        match &mut self.framing {
            Framing::Json(message) => {
                cut(message);
                serde_json::to_vec(message).ok()
            }
            Framing::Events(stream, lists) => {
                for (i, message) in lists.iter_mut() {
                    cut(message);
                    let data = serde_json::to_string(message).ok()?;
                    stream.events.get_mut(*i)?.set_data(&data);
                }
                Some(stream.to_bytes())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::tests::{check, ok, service};
    use super::super::check::NoCache;
    use super::*;
    use serde_json::json;

    fn tools(names: &[&str]) -> Value {
        let tools: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "description": format!("the {n} tool"), "inputSchema": {"type": "object"}}))
            .collect();
        json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools, "nextCursor": "c2"}})
    }

    fn names(message: &Value) -> Vec<String> {
        entries_of(message, ListKind::Tools)
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn finish(run: &mut ListRun, may: impl Fn(&str) -> bool) -> BodyStep {
        let s = service();
        let mut step = run.step(&s, &NoCache, 0);
        while let BodyStep::Call(call) = &step {
            let body: Value = serde_json::from_slice(&call.body).unwrap();
            let answer = match body["checks"].as_array() {
                None => ok(json!({"allowed": may(body["tuple_key"]["object"].as_str().unwrap())})),
                Some(items) => {
                    let result: serde_json::Map<String, Value> = items
                        .iter()
                        .map(|c| {
                            (
                                c["correlation_id"].as_str().unwrap().to_string(),
                                json!({"allowed": may(c["tuple_key"]["object"].as_str().unwrap())}),
                            )
                        })
                        .collect();
                    ok(json!({ "result": result }))
                }
            };
            step = run.answered(&s, &answer, &mut NoCache, 0);
        }
        step
    }

    fn by_policy(name: &str) -> Visibility {
        match name {
            "get_quote" => Visibility::Shown,
            "drop_tables" => Visibility::Hidden,
            other => Visibility::Checks(vec![check("agent:bot", &format!("tool:{other}"))]),
        }
    }

    #[test]
    fn a_json_tools_list_keeps_shown_and_allowed_tools_in_order() {
        let body = tools(&["get_quote", "place_order", "drop_tables", "cancel_order"]).to_string();
        let mut run = ListRun::start(ListKind::Tools, body.as_bytes(), false, by_policy).unwrap();
        let BodyStep::Replace(out) = finish(&mut run, |o| o == "tool:place_order") else {
            panic!()
        };
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(names(&out), ["get_quote", "place_order"]);
        assert_eq!(out["result"]["nextCursor"], "c2");
        assert_eq!(out["id"], 1);
    }

    #[test]
    fn an_event_stream_list_is_cut_and_reframed() {
        let list = tools(&["get_quote", "place_order", "cancel_order"]).to_string();
        let body = format!(
            "id: 0\ndata:\n\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{}}}}\n\nevent: message\nid: 7\ndata: {list}\n\n"
        );
        let mut run = ListRun::start(ListKind::Tools, body.as_bytes(), true, by_policy).unwrap();
        let BodyStep::Replace(out) = finish(&mut run, |o| o == "tool:cancel_order") else {
            panic!()
        };
        let stream = sse::parse(&out).unwrap();
        assert_eq!(stream.events.len(), 3);
        assert_eq!(stream.events[0].data().as_deref(), Some(""));
        assert!(stream.events[1]
            .data()
            .unwrap()
            .contains("notifications/progress"));
        let message: Value = serde_json::from_str(&stream.events[2].data().unwrap()).unwrap();
        assert_eq!(names(&message), ["get_quote", "cancel_order"]);
        assert!(String::from_utf8(out).unwrap().contains("id: 7\n"));
    }

    #[test]
    fn errors_pass_and_bad_lists_fail_closed() {
        let error = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "m"}})
            .to_string();
        let mut run = ListRun::start(ListKind::Tools, error.as_bytes(), false, by_policy).unwrap();
        let BodyStep::Replace(out) = finish(&mut run, |_| true) else {
            panic!()
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap()["error"]["code"],
            -32601
        );
        for (body, sse) in [
            (&b"not json"[..], false),
            (br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, false),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"title":"x"}]}}"#,
                false,
            ),
            (b"data: {nope\n\n", true),
            (
                br#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"drop_tables"}]}}]"#,
                false,
            ),
            (
                b"data: [{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}]\n\n",
                true,
            ),
        ] {
            let e = ListRun::start(ListKind::Tools, body, sse, by_policy).unwrap_err();
            assert_eq!(
                e.response().status,
                502,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn resources_are_named_by_uri() {
        let body = json!({"jsonrpc": "2.0", "id": 2, "result": {"resources": [
            {"uri": "file:///a", "name": "a"}, {"uri": "file:///b", "name": "b"}]}})
        .to_string();
        let mut run = ListRun::start(ListKind::Resources, body.as_bytes(), false, |uri| {
            if uri == "file:///b" {
                Visibility::Shown
            } else {
                Visibility::Hidden
            }
        })
        .unwrap();
        let BodyStep::Replace(out) = finish(&mut run, |_| true) else {
            panic!()
        };
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out["result"]["resources"],
            json!([{"uri": "file:///b", "name": "b"}])
        );
        assert_eq!(ListKind::of_method("prompts/list"), Some(ListKind::Prompts));
        assert_eq!(ListKind::of_method("tools/call"), None);
    }

    #[test]
    fn a_tools_visibility_follows_its_rule_without_reading_arguments() {
        let s = service();
        let rule: FgaRule = serde_json::from_value(json!({
            "scopes": {"all": ["trade"]},
            "principal": "both",
            "checks": [{"relation": "can_use", "object": "tool:{tool}"},
                       {"relation": "owner", "object": "account:{body.account}"}]
        }))
        .unwrap();
        let facts = Facts {
            tool: Some("place_order"),
            ..Facts::for_tests()
        };
        assert_eq!(rule.list_visibility(&s, &facts, "read"), Visibility::Hidden);
        let Visibility::Checks(checks) = rule.list_visibility(&s, &facts, "trade") else {
            panic!()
        };
        let asked: Vec<(&str, &str)> = checks
            .iter()
            .map(|c| (c.tuple.user.as_str(), c.tuple.object.as_str()))
            .collect();
        assert_eq!(
            asked,
            [
                ("user:alice", "tool:place_order"),
                ("agent:trading-agent", "tool:place_order")
            ]
        );
        let no_agent = Facts {
            agent: None,
            ..facts
        };
        assert_eq!(
            rule.list_visibility(&s, &no_agent, "trade"),
            Visibility::Hidden
        );
        let open: FgaRule = serde_json::from_value(json!({})).unwrap();
        assert_eq!(open.list_visibility(&s, &facts, ""), Visibility::Shown);
        let refused = hidden_tool_call(Some(&json!(9)));
        assert_eq!(refused.status, 200);
        assert!(refused.body.contains("-32602") && refused.body.contains("\"id\":9"));
    }
}
