//! Relationship checks against an OpenFGA-compatible API, sans-IO: a
//! [`CheckRun`] holds the checks one decision needs, answers what it can
//! from the decision cache, and asks for the rest as [`Callout`]s, one at
//! a time: `POST /stores/{id}/check` for one check, `/batch-check` for
//! more, split to the service's batch limit. Anything but a well-formed
//! answer to every check asked is a [`Failure`]: never a guess.

use super::service::FgaService;
use super::tuple::TupleKey;
use crate::response::{unavailable, LocalResponse};
use crate::step::{Answer, Callout};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// One check: may `tuple.user` have `tuple.relation` on `tuple.object`,
/// given these contextual tuples?
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Check {
    /// The tuple asked about.
    pub tuple: TupleKey,
    /// Tuples taken as written for this check only (OpenFGA
    /// `contextual_tuples`).
    pub contextual: Vec<TupleKey>,
}

/// Decisions shared beyond one request (Envoy shared data, a Spin
/// key-value store, a map in tests): bytes by key. The same shape as the
/// token-exchange cache's store, so one host type serves both.
pub trait DecisionCache {
    /// The value under `key`; `None` when absent or unreadable.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores `value` under `key`; false when the host refused.
    fn set(&mut self, key: &str, value: &[u8]) -> bool;
}

/// No cache: every decision is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

impl DecisionCache for NoCache {
    fn get(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn set(&mut self, _: &str, _: &[u8]) -> bool {
        false
    }
}

impl DecisionCache for std::collections::HashMap<String, Vec<u8>> {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        std::collections::HashMap::get(self, key).cloned()
    }
    fn set(&mut self, key: &str, value: &[u8]) -> bool {
        self.insert(key.to_string(), value.to_vec());
        true
    }
}

/// Where a check's decision is cached: a slot among `cache_entries`
/// (so shared data stays bounded) and the digest of the whole check
/// (service, store, model, tuple, contextual tuples) the slot must hold.
fn cache_slot(service: &FgaService, check: &Check) -> (String, String) {
    let mut h = Sha256::new();
    let mut part = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    part(&service.cluster);
    part(service.authority());
    part(&service.store_id);
    part(service.authorization_model_id.as_deref().unwrap_or(""));
    for t in std::iter::once(&check.tuple).chain(&check.contextual) {
        part(&t.user);
        part(&t.relation);
        part(&t.object);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let slot = u64::from_be_bytes(first) % service.cache_entries.max(1) as u64;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(digest.len() * 2);
    for b in digest.iter() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 15)]));
    }
    (format!("agentward.fga.{slot}"), hex)
}

/// The cached decision on `check` and until when it holds (Unix ms).
fn cached(
    service: &FgaService,
    cache: &dyn DecisionCache,
    check: &Check,
    now_ms: u64,
) -> Option<(bool, u64)> {
    // No clock (0): no cached decision can be known to be fresh.
    if service.cache_seconds == 0 || now_ms == 0 {
        return None;
    }
    let (key, digest) = cache_slot(service, check);
    let bytes = cache.get(&key)?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut parts = text.split(' ');
    let (d, allowed, until) = (parts.next()?, parts.next()?, parts.next()?);
    let until = until.parse::<u64>().ok()?;
    if d != digest || until <= now_ms {
        return None;
    }
    match allowed {
        "1" => Some((true, until)),
        "0" => Some((false, until)),
        _ => None,
    }
}

fn remember(
    service: &FgaService,
    cache: &mut dyn DecisionCache,
    check: &Check,
    allowed: bool,
    now_ms: u64,
) {
    if service.cache_seconds == 0 {
        return;
    }
    let (key, digest) = cache_slot(service, check);
    let until = now_ms.saturating_add(service.cache_seconds * 1000);
    let value = format!("{digest} {} {until}", u8::from(allowed));
    // A host that refuses only costs a call next time.
    let _ = cache.set(&key, value.as_bytes());
}

/// Why the FGA service gave no usable decision: the request is answered
/// 503, never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer (unreachable, timed out, reset) or a body over the bound.
    Unreachable,
    /// An answer with another status than 200.
    Status(u16),
    /// A 200 that is not the answer asked for, or an error for a check.
    Garbage,
}

impl Failure {
    /// The answer: 503 `temporarily_unavailable` with a reason; what the
    /// service said is not passed on.
    pub fn response(self) -> LocalResponse {
        match self {
            Failure::Unreachable => unavailable(
                "fga_unavailable",
                "the authorization service did not answer; retry shortly",
            ),
            Failure::Status(_) => unavailable(
                "fga_error",
                "the authorization service refused the check; retry shortly",
            ),
            Failure::Garbage => unavailable(
                "fga_bad_answer",
                "the authorization service gave an answer the gateway cannot read",
            ),
        }
    }
}

/// The checks of one decision and their answers so far. Equal checks are
/// asked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    unique: Vec<Check>,
    allowed: Vec<Option<bool>>,
    /// For each check given, its index in `unique`.
    order: Vec<usize>,
    in_flight: Vec<usize>,
    stop_at_denial: bool,
    /// The cache is read once, at the first step.
    cache_read: bool,
    /// When the earliest decision taken expires (Unix ms; `u64::MAX`
    /// while none is).
    valid_until: u64,
}

/// What a run needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Make this call; feed its answer to [`CheckRun::answered`].
    Call(Callout),
    /// Every check needed is decided.
    Done,
}

/// The largest FGA answer read (a batch of 1000 answers fits).
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

impl CheckRun {
    /// A run over `checks`. With `stop_at_denial`, the first denial ends
    /// it (a request needs every check); otherwise every check is asked
    /// (filtering needs each answer).
    pub fn new(checks: Vec<Check>, stop_at_denial: bool) -> CheckRun {
        let mut unique: Vec<Check> = Vec::new();
        let mut order = Vec::with_capacity(checks.len());
        let mut seen = std::collections::HashMap::new();
        for check in checks {
            let at = *seen.entry(check.clone()).or_insert_with(|| {
                unique.push(check);
                unique.len() - 1
            });
            order.push(at);
        }
        CheckRun {
            allowed: vec![None; unique.len()],
            unique,
            order,
            in_flight: Vec::new(),
            stop_at_denial,
            cache_read: false,
            valid_until: u64::MAX,
        }
    }

    /// How many checks were given.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no check was given.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The answer for the `i`-th check given, once known.
    pub fn allowed(&self, i: usize) -> Option<bool> {
        self.order.get(i).and_then(|&u| self.allowed[u])
    }

    /// Until when (Unix ms) every decision this run took holds, as the
    /// decision cache would serve it: the earliest expiry among them
    /// (`u64::MAX` when it took none).
    pub fn valid_until(&self) -> u64 {
        self.valid_until
    }

    /// The first check given that was denied.
    pub fn first_denied(&self) -> Option<usize> {
        (0..self.order.len()).find(|&i| self.allowed(i) == Some(false))
    }

    fn finished(&self) -> bool {
        (self.stop_at_denial && self.allowed.contains(&Some(false)))
            || self.allowed.iter().all(Option::is_some)
    }

    /// Takes what the cache knows, then asks for the next batch of the
    /// rest, or says the run is done.
    pub fn next(&mut self, service: &FgaService, cache: &dyn DecisionCache, now_ms: u64) -> Next {
        if !self.cache_read {
            self.cache_read = true;
            for (u, check) in self.unique.iter().enumerate() {
                if let Some((allowed, until)) = cached(service, cache, check, now_ms) {
                    self.allowed[u] = Some(allowed);
                    self.valid_until = self.valid_until.min(until);
                }
            }
        }
        if self.finished() {
            self.in_flight.clear();
            return Next::Done;
        }
        self.in_flight = (0..self.unique.len())
            .filter(|&u| self.allowed[u].is_none())
            .take(service.batch_limit.max(1))
            .collect();
        Next::Call(self.callout(service))
    }

    fn callout(&self, service: &FgaService) -> Callout {
        let model = service.authorization_model_id.as_deref();
        let (path, mut body) = match self.in_flight.as_slice() {
            [one] => (
                format!("/stores/{}/check", service.store_id),
                check_body(&self.unique[*one]),
            ),
            many => {
                let checks: Vec<Value> = many
                    .iter()
                    .map(|&u| {
                        let mut item = check_body(&self.unique[u]);
                        item.insert("correlation_id".into(), Value::String(correlation_id(u)));
                        Value::Object(item)
                    })
                    .collect();
                let mut body = Map::new();
                body.insert("checks".into(), Value::Array(checks));
                (format!("/stores/{}/batch-check", service.store_id), body)
            }
        };
        if let Some(model) = model {
            body.insert("authorization_model_id".into(), json!(model));
        }
        let mut call = Callout::post(
            &service.cluster,
            service.authority(),
            &path,
            "application/json",
            Value::Object(body).to_string().into_bytes(),
        )
        .header("accept", "application/json")
        .timeout_ms(service.timeout_ms)
        .max_answer_bytes(MAX_ANSWER_BYTES);
        if !service.preshared_key.is_empty() {
            call = call.header(
                "authorization",
                &format!("Bearer {}", service.preshared_key.expose()),
            );
        }
        call
    }

    /// Reads the answer to the call [`CheckRun::next`] asked for, and
    /// caches its decisions.
    pub fn answered(
        &mut self,
        service: &FgaService,
        answer: &Answer,
        cache: &mut dyn DecisionCache,
        now_ms: u64,
    ) -> Result<(), Failure> {
        let asked = std::mem::take(&mut self.in_flight);
        if asked.is_empty() {
            return Err(Failure::Garbage);
        }
        let body = match answer {
            Answer::Response {
                status: 200, body, ..
            } => body,
            Answer::Response { status, .. } => return Err(Failure::Status(*status)),
            Answer::TooLarge { .. } | Answer::Failed => return Err(Failure::Unreachable),
        };
        let value: Value = serde_json::from_slice(body).map_err(|_| Failure::Garbage)?;
        let decisions: Vec<bool> = match asked.as_slice() {
            [_] => vec![allowed_of(&value).ok_or(Failure::Garbage)?],
            many => {
                let result = value
                    .get("result")
                    .and_then(Value::as_object)
                    .ok_or(Failure::Garbage)?;
                if result.len() != many.len() {
                    return Err(Failure::Garbage);
                }
                many.iter()
                    .map(|&u| {
                        result
                            .get(&correlation_id(u))
                            .and_then(allowed_of)
                            .ok_or(Failure::Garbage)
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let until = now_ms.saturating_add(service.cache_seconds.saturating_mul(1000));
        self.valid_until = self.valid_until.min(until);
        for (&u, allowed) in asked.iter().zip(decisions) {
            self.allowed[u] = Some(allowed);
            remember(service, cache, &self.unique[u], allowed, now_ms);
        }
        Ok(())
    }
}

/// `{"allowed": true|false}` (an `error` member or anything else: none).
fn allowed_of(v: &Value) -> Option<bool> {
    if v.get("error").is_some() {
        return None;
    }
    v.get("allowed").and_then(Value::as_bool)
}

fn correlation_id(u: usize) -> String {
    format!("c{u}")
}

fn check_body(check: &Check) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("tuple_key".into(), json!(check.tuple));
    if !check.contextual.is_empty() {
        body.insert(
            "contextual_tuples".into(),
            json!({ "tuple_keys": check.contextual }),
        );
    }
    body
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn service() -> FgaService {
        let s: FgaService = serde_json::from_value(json!({
            "cluster": "vault", "authority": "vault.local",
            "store_id": "01STORE", "authorization_model_id": "01MODEL",
            "preshared_key": "k3y", "batch_limit": 2
        }))
        .unwrap();
        s.validate().unwrap();
        s
    }

    pub(crate) fn check(user: &str, object: &str) -> Check {
        Check {
            tuple: TupleKey {
                user: user.into(),
                relation: "viewer".into(),
                object: object.into(),
            },
            contextual: Vec::new(),
        }
    }

    pub(crate) fn ok(body: Value) -> Answer {
        Answer::Response {
            status: 200,
            headers: vec![],
            body: body.to_string().into_bytes(),
        }
    }

    fn body_of(call: &Callout) -> Value {
        serde_json::from_slice(&call.body).unwrap()
    }

    #[test]
    fn one_check_goes_to_check_with_the_key_and_the_model() {
        let s = service();
        let mut c = check("user:alice", "document:1");
        c.contextual.push(TupleKey {
            user: "agent:bot".into(),
            relation: "acts_for".into(),
            object: "user:alice".into(),
        });
        let mut run = CheckRun::new(vec![c], true);
        let Next::Call(call) = run.next(&s, &NoCache, 0) else {
            panic!("a call")
        };
        assert_eq!(call.path, "/stores/01STORE/check");
        assert_eq!(
            (call.cluster.as_str(), call.authority.as_str()),
            ("vault", "vault.local")
        );
        assert!(call
            .headers
            .contains(&("authorization".into(), "Bearer k3y".into())));
        assert_eq!(
            body_of(&call),
            json!({"tuple_key": {"user": "user:alice", "relation": "viewer", "object": "document:1"},
                   "contextual_tuples": {"tuple_keys": [{"user": "agent:bot", "relation": "acts_for", "object": "user:alice"}]},
                   "authorization_model_id": "01MODEL"})
        );
        run.answered(
            &s,
            &ok(json!({"allowed": true, "resolution": ""})),
            &mut NoCache,
            0,
        )
        .unwrap();
        assert_eq!(run.allowed(0), Some(true));
        assert_eq!(run.next(&s, &NoCache, 0), Next::Done);
    }

    #[test]
    fn many_checks_are_batched_to_the_limit_with_correlation_ids() {
        let s = service();
        let checks: Vec<Check> = (0..5)
            .map(|i| check("user:alice", &format!("document:{}", i % 4)))
            .collect();
        let mut run = CheckRun::new(checks, false);
        let mut calls = 0;
        while let Next::Call(call) = run.next(&s, &NoCache, 0) {
            calls += 1;
            let body = body_of(&call);
            let items = body["checks"].as_array().cloned().unwrap_or_default();
            let result: Map<String, Value> = if items.is_empty() {
                assert_eq!(call.path, "/stores/01STORE/check");
                let even = body["tuple_key"]["object"] == "document:2";
                return_single(&mut run, &s, even);
                continue;
            } else {
                assert_eq!(call.path, "/stores/01STORE/batch-check");
                assert!(items.len() <= 2);
                assert_eq!(body["authorization_model_id"], "01MODEL");
                items
                    .iter()
                    .map(|item| {
                        let id = item["correlation_id"].as_str().unwrap().to_string();
                        let object = item["tuple_key"]["object"].as_str().unwrap();
                        let even = object.ends_with('0') || object.ends_with('2');
                        (id, json!({"allowed": even}))
                    })
                    .collect()
            };
            run.answered(&s, &ok(json!({ "result": result })), &mut NoCache, 0)
                .unwrap();
        }
        assert_eq!(calls, 2, "4 distinct checks, 2 per batch");
        let answers: Vec<_> = (0..5).map(|i| run.allowed(i)).collect();
        assert_eq!(
            answers,
            [Some(true), Some(false), Some(true), Some(false), Some(true)]
        );
    }

    fn return_single(run: &mut CheckRun, s: &FgaService, allowed: bool) {
        run.answered(s, &ok(json!({ "allowed": allowed })), &mut NoCache, 0)
            .unwrap();
    }

    #[test]
    fn a_denial_ends_a_run_that_needs_every_check() {
        let s = service();
        let checks = (0..6)
            .map(|i| check("user:a", &format!("document:{i}")))
            .collect();
        let mut run = CheckRun::new(checks, true);
        let Next::Call(_) = run.next(&s, &NoCache, 0) else {
            panic!()
        };
        run.answered(
            &s,
            &ok(json!({"result": {"c0": {"allowed": true}, "c1": {"allowed": false}}})),
            &mut NoCache,
            0,
        )
        .unwrap();
        assert_eq!(run.next(&s, &NoCache, 0), Next::Done);
        assert_eq!(run.first_denied(), Some(1));
    }

    #[test]
    fn garbage_errors_and_silence_are_failures() {
        let s = service();
        let two = || {
            let mut run = CheckRun::new(
                vec![check("user:a", "document:1"), check("user:a", "document:2")],
                true,
            );
            let _ = run.next(&s, &NoCache, 0);
            run
        };
        for (answer, failure) in [
            (Answer::Failed, Failure::Unreachable),
            (
                Answer::TooLarge {
                    status: 200,
                    size: 1 << 20,
                },
                Failure::Unreachable,
            ),
            (
                Answer::Response {
                    status: 500,
                    headers: vec![],
                    body: vec![],
                },
                Failure::Status(500),
            ),
            (
                Answer::Response {
                    status: 400,
                    headers: vec![],
                    body: b"{}".to_vec(),
                },
                Failure::Status(400),
            ),
            (
                Answer::Response {
                    status: 200,
                    headers: vec![],
                    body: b"<html>".to_vec(),
                },
                Failure::Garbage,
            ),
            (ok(json!({"allowed": true})), Failure::Garbage),
            (
                ok(json!({"result": {"c0": {"allowed": true}}})),
                Failure::Garbage,
            ),
            (
                ok(json!({"result": {"c0": {"allowed": true}, "c1": {"allowed": "yes"}}})),
                Failure::Garbage,
            ),
            (
                ok(json!({"result": {"c0": {"allowed": true},
                    "c1": {"error": {"input_error": "validation_error", "message": "m"}}}})),
                Failure::Garbage,
            ),
            (
                ok(json!({"result": {"c0": {"allowed": true}, "cX": {"allowed": true}}})),
                Failure::Garbage,
            ),
        ] {
            assert_eq!(
                two().answered(&s, &answer, &mut NoCache, 0),
                Err(failure),
                "{answer:?}"
            );
            assert_eq!(failure.response().status, 503);
        }
        let mut single = CheckRun::new(vec![check("user:a", "document:1")], true);
        let _ = single.next(&s, &NoCache, 0);
        assert_eq!(
            single.answered(&s, &ok(json!({"allowed": 1})), &mut NoCache, 0),
            Err(Failure::Garbage)
        );
    }

    #[test]
    fn decisions_are_cached_for_the_whole_check_and_expire() {
        let s = service();
        let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
        let mut run = CheckRun::new(vec![check("user:alice", "document:1")], true);
        let Next::Call(_) = run.next(&s, &cache, 1_000) else {
            panic!()
        };
        run.answered(&s, &ok(json!({"allowed": true})), &mut cache, 1_000)
            .unwrap();
        assert_eq!(cache.len(), 1);
        assert!(!cache
            .values()
            .any(|v| String::from_utf8_lossy(v).contains("alice")));

        let mut again = CheckRun::new(vec![check("user:alice", "document:1")], true);
        assert_eq!(again.next(&s, &cache, 10_999), Next::Done);
        assert_eq!(again.allowed(0), Some(true));
        // After cache_seconds (10 s) the service is asked again.
        let mut later = CheckRun::new(vec![check("user:alice", "document:1")], true);
        assert!(matches!(later.next(&s, &cache, 11_000), Next::Call(_)));
        // Another user, another object, other contextual tuples: not served.
        let mut with_context = check("user:alice", "document:1");
        with_context
            .contextual
            .push(check("user:x", "group:y").tuple);
        for other in [
            check("user:mallory", "document:1"),
            check("user:alice", "document:2"),
            with_context,
        ] {
            let mut run = CheckRun::new(vec![other], true);
            assert!(matches!(run.next(&s, &cache, 2_000), Next::Call(_)));
        }
        // Another model or store: not served either.
        for (field, value) in [
            ("authorization_model_id", "01OTHER"),
            ("store_id", "01OTHER"),
        ] {
            let mut v = json!({"cluster": "vault", "authority": "vault.local",
                "store_id": "01STORE", "authorization_model_id": "01MODEL"});
            v[field] = json!(value);
            let other: FgaService = serde_json::from_value(v).unwrap();
            let mut run = CheckRun::new(vec![check("user:alice", "document:1")], true);
            assert!(
                matches!(run.next(&other, &cache, 2_000), Next::Call(_)),
                "{field}"
            );
        }
    }

    #[test]
    fn a_slot_taken_by_another_check_is_a_miss_and_zero_seconds_disables() {
        let mut s = service();
        s.cache_entries = 1;
        let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
        for (object, allowed) in [("document:1", true), ("document:2", false)] {
            let mut run = CheckRun::new(vec![check("user:a", object)], true);
            let _ = run.next(&s, &cache, 0);
            run.answered(&s, &ok(json!({ "allowed": allowed })), &mut cache, 0)
                .unwrap();
        }
        assert_eq!(cache.len(), 1);
        let mut first = CheckRun::new(vec![check("user:a", "document:1")], true);
        assert!(matches!(first.next(&s, &cache, 1), Next::Call(_)));
        let mut second = CheckRun::new(vec![check("user:a", "document:2")], true);
        assert_eq!(second.next(&s, &cache, 1), Next::Done);
        assert_eq!(second.allowed(0), Some(false));

        s.cache_seconds = 0;
        let mut none: HashMap<String, Vec<u8>> = HashMap::new();
        let mut run = CheckRun::new(vec![check("user:a", "document:1")], true);
        let _ = run.next(&s, &none, 0);
        run.answered(&s, &ok(json!({"allowed": true})), &mut none, 0)
            .unwrap();
        assert!(none.is_empty());
    }
}
