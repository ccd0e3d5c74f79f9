//! `host-test test`: policy tests. A test file names a policy, the chain of
//! plugins it is deployed in and cases; each case's request goes through
//! the real plugin `.wasm` files (fresh VMs per case, on one shared-data
//! store, filter state carried from one plugin to the next as Envoy does),
//! the plugins' dependencies are answered from the case, and what comes out
//! is compared with what the case expects.

mod caller;
mod callouts;
mod envoy;
pub mod file;
pub mod report;
mod spin;

use crate::{
    HeaderMap, Host, HostOptions, HttpContext, HttpRecord, LocalResponse, SharedData, StreamType,
};
use callouts::Responder;
pub use file::{Case, Suite};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest a request may be held, in simulated seconds (an approval's
/// longest expiry is a week; a case's approval answers at the first poll).
const MAX_HELD_SECONDS: u32 = 3_600;

/// What came of one case.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The status the client gets.
    pub status: u16,
    /// The headers the client gets.
    pub headers: HeaderMap,
    /// The body the client gets.
    pub body: Vec<u8>,
    /// The plugin that answered instead of the upstream, if one did.
    pub answered_by: Option<String>,
    /// What the upstream saw, if the request reached it.
    pub upstream: Option<(HeaderMap, Vec<u8>)>,
    /// The callouts, as `cluster METHOD path`.
    pub callouts: Vec<String>,
    /// The binding message of the approval request, if one was made.
    pub binding_message: Option<String>,
    /// What went wrong driving the plugins (a trap, a callout with no
    /// answer in the case, a request held forever): always a failure.
    pub problems: Vec<String>,
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Each way the outcome differs from what was expected; empty: passed.
    pub failures: Vec<String>,
    /// How long it took.
    pub elapsed: Duration,
    /// What came out, when the chain ran to an answer.
    pub outcome: Option<Outcome>,
}

/// A test file made ready: the policy read, the plugins found, the test key
/// made.
pub struct Runner {
    suite: Suite,
    policy: Vec<u8>,
    plugins: Vec<(String, PathBuf)>,
    environment: BTreeMap<String, String>,
    key: caller::TestKey,
    jwks_clusters: HashSet<String>,
    issuers: Vec<(String, String)>,
    authority: String,
}

impl Runner {
    /// Reads the suite's policy, finds each plugin's `.wasm` in `wasm_dir`
    /// and checks that every plugin starts with the policy.
    pub fn new(suite: Suite, wasm_dir: &Path) -> Result<Runner, Vec<String>> {
        let policy_path = suite.policy_path();
        let text = std::fs::read(&policy_path).map_err(|e| {
            vec![format!(
                "cannot read the policy {}: {e}",
                policy_path.display()
            )]
        })?;
        let mut policy: Value = serde_json::from_slice(&text)
            .map_err(|e| vec![format!("{}: not JSON: {e}", policy_path.display())])?;
        // The deployment's order, from the policy as the file has it.
        let chain = suite.chain(&policy)?;
        let key = caller::TestKey::generate().map_err(|e| vec![e])?;
        let mut jwks_clusters = HashSet::new();
        let mut issuers = Vec::new();
        if let Some(list) = policy["issuers"].as_array_mut() {
            for issuer in list {
                let name = issuer["issuer"].as_str().unwrap_or_default().to_string();
                let audience = issuer["audiences"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                issuers.push((name, audience));
                if let Some(cluster) = issuer["jwks_cluster"].as_str() {
                    jwks_clusters.insert(cluster.to_string());
                }
                // An inline JWKS gets the test key too.
                let inline = issuer.get_mut("jwks").and_then(|jwks| jwks.get_mut("keys"));
                if let Some(keys) = inline.and_then(Value::as_array_mut) {
                    keys.push(key.jwk().clone());
                }
            }
        }
        let authority = policy["resource"]
            .as_str()
            .and_then(|r| r.split("://").nth(1))
            .and_then(|r| r.split('/').next())
            .unwrap_or("localhost")
            .to_string();
        let mut environment = test_environment(&policy);
        environment.extend(suite.env.clone());
        let policy = policy.to_string().into_bytes();
        let plugins: Vec<(String, PathBuf)> = chain
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    wasm_dir.join(format!("{}.wasm", name.replace('-', "_"))),
                )
            })
            .collect();
        let missing: Vec<String> = plugins
            .iter()
            .filter(|(_, path)| !path.is_file())
            .map(|(name, path)| {
                format!(
                    "{name}: {} is not built (cargo xtask build)",
                    path.display()
                )
            })
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        // Compile the plugins at once, one thread each (the validation
        // and every case reuse them).
        std::thread::scope(|scope| {
            for (_, path) in &plugins {
                scope.spawn(move || Host::compile(path));
            }
        });
        let check = crate::validate::Validation {
            plugins: plugins.iter().map(|(_, path)| path.clone()).collect(),
            environment: environment.clone(),
        };
        let findings: Vec<String> = check
            .check(&policy)
            .into_iter()
            .map(|f| format!("{}: {f}", policy_path.display()))
            .collect();
        if !findings.is_empty() {
            return Err(findings);
        }
        Ok(Runner {
            suite,
            policy,
            plugins,
            environment,
            key,
            jwks_clusters,
            issuers,
            authority,
        })
    }

    /// The suite this runner runs.
    pub fn suite(&self) -> &Suite {
        &self.suite
    }

    /// Runs every case.
    pub fn run(&self) -> Vec<CaseResult> {
        self.suite
            .cases
            .iter()
            .map(|case| {
                let started = Instant::now();
                let (failures, outcome) = match self.outcome(case) {
                    Ok(outcome) => (report::compare(case, &outcome), Some(outcome)),
                    Err(e) => (vec![e], None),
                };
                CaseResult {
                    name: case.name.clone(),
                    failures,
                    elapsed: started.elapsed(),
                    outcome,
                }
            })
            .collect()
    }

    /// Runs one case through the chain and tells what came out.
    pub fn outcome(&self, case: &Case) -> Result<Outcome, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let shared = SharedData::new();
        let mut hosts = Vec::new();
        for (name, path) in &self.plugins {
            let options = HostOptions {
                vm_id: "agentward".into(),
                shared_data: shared.clone(),
                environment: self.environment.clone(),
                start_time: UNIX_EPOCH + Duration::from_secs(now),
                ..HostOptions::default()
            };
            let host = Host::load(path, options).map_err(|e| format!("{name}: {e}"))?;
            match host.configure(self.policy.clone()) {
                Ok(true) => hosts.push((name.as_str(), host)),
                Ok(false) => return Err(format!("{name} refused the policy")),
                Err(e) => return Err(format!("{name}: {e}")),
            }
        }
        let jwks = serde_json::json!({
            "keys": std::iter::once(self.key.jwk().clone())
                .chain(self.suite.jwks.iter().cloned())
                .collect::<Vec<_>>()
        });
        let mut responder = Responder::new(case, self.jwks_clusters.clone(), jwks);
        let mut chain = Chain {
            hosts: &hosts,
            responder: &mut responder,
            problems: Vec::new(),
        };
        let request = self.request(case, now)?;
        let result = chain.run(request, case);
        let problems = chain.problems;
        let (status, headers, body, answered_by, upstream) = result?;
        let mut problems = problems;
        problems.extend(responder.scenario.unanswered.iter().cloned());
        Ok(Outcome {
            status,
            headers,
            body,
            answered_by,
            upstream,
            callouts: responder.scenario.callouts.clone(),
            binding_message: responder.scenario.binding_message.clone(),
            problems,
        })
    }

    /// The request's headers and body as the client sends them.
    fn request(&self, case: &Case, now: u64) -> Result<Message, String> {
        let r = &case.request;
        let mut headers = vec![
            (":method".to_string(), r.method.clone()),
            (":path".to_string(), r.path.clone()),
            (":authority".to_string(), self.authority.clone()),
            (":scheme".to_string(), "http".to_string()),
        ];
        for (name, value) in &r.headers {
            let name = name.to_ascii_lowercase();
            match headers
                .iter_mut()
                .find(|(n, _)| *n == name && n.starts_with(':'))
            {
                Some(pseudo) => pseudo.1 = value.clone(),
                None => headers.push((name, value.clone())),
            }
        }
        let token = match &case.caller {
            None => None,
            Some(file::Caller::Token { token }) => Some(token.clone()),
            Some(file::Caller::Claims { claims, issuer }) => {
                let (iss, aud) = match issuer {
                    None => self.issuers.first(),
                    Some(wanted) => self.issuers.iter().find(|(name, _)| name == wanted),
                }
                .ok_or_else(|| match issuer {
                    Some(wanted) => {
                        format!("caller.issuer {wanted} is not one of the policy's issuers")
                    }
                    None => "the policy has no issuer to sign the caller's claims for".into(),
                })?;
                Some(self.key.sign(claims, iss, aud, now))
            }
        };
        if let Some(token) = token {
            headers.push(("authorization".into(), format!("Bearer {token}")));
        }
        let body = file::body_bytes(&r.body);
        if !body.is_empty() {
            headers.push(("content-length".into(), body.len().to_string()));
        }
        Ok((headers, body))
    }
}

/// `*_env` names the policy uses, with test values: 32 random bytes
/// (base64url) for keys, a fixed string for secrets.
fn test_environment(policy: &Value) -> BTreeMap<String, String> {
    let mut names = Vec::new();
    collect_env_names(policy, &mut names);
    names
        .into_iter()
        .map(|(field, name)| {
            let value = if field.contains("key") {
                test_key_bytes()
            } else {
                "agentward-test-secret".to_string()
            };
            (name, value)
        })
        .collect()
}

fn collect_env_names(value: &Value, names: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (field, v) in map {
                match v.as_str() {
                    Some(name) if field.ends_with("_env") => {
                        names.push((field.clone(), name.to_string()))
                    }
                    _ => collect_env_names(v, names),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_env_names(v, names)),
        _ => {}
    }
}

/// 32 bytes, base64url, from a key made for the run.
fn test_key_bytes() -> String {
    use base64::Engine;
    let bytes = jwt_simple::prelude::HS256Key::generate().to_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..32.min(bytes.len())])
}

/// Headers (pseudo-headers included) and body.
type Message = (Vec<(String, String)>, Vec<u8>);

/// Status, headers and body the client gets, the plugin that answered, and
/// what the upstream saw.
type Answer = (
    u16,
    HeaderMap,
    Vec<u8>,
    Option<String>,
    Option<(HeaderMap, Vec<u8>)>,
);

/// One request through the plugins, then the upstream's answer back.
struct Chain<'a> {
    hosts: &'a [(&'a str, Host)],
    responder: &'a mut Responder,
    problems: Vec<String>,
}

impl Chain<'_> {
    fn run(&mut self, request: Message, case: &Case) -> Result<Answer, String> {
        let (mut headers, mut body) = request;
        let mut contexts: Vec<HttpContext> = Vec::new();
        let mut state: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (index, (name, host)) in self.hosts.iter().enumerate() {
            for (path, value) in &state {
                host.set_property(path, value.clone());
            }
            let req = host.http_context().map_err(|e| format!("{name}: {e}"))?;
            contexts.push(req.clone());
            let record = self.deliver(index, &req, StreamType::Request, &(headers, body))?;
            if let Some(local) = record.local_response {
                finish(&contexts);
                return Ok(local_answer(local, name));
            }
            if !record.sent_upstream() {
                return Err(format!(
                    "{name} neither passed the request on nor answered it"
                ));
            }
            headers = record.request_headers.pairs().to_vec();
            body = record.request_body;
            state = host.properties();
        }
        let seen = (HeaderMap::from_pairs(&headers), body);
        // The upstream answers; the response goes back through the plugins.
        let upstream = case.upstream.clone().unwrap_or(file::Upstream {
            status: 200,
            headers: BTreeMap::new(),
            body: None,
        });
        let mut response: Vec<(String, String)> =
            vec![(":status".into(), upstream.status.to_string())];
        let mut body = file::body_bytes(&upstream.body);
        if !upstream
            .headers
            .keys()
            .any(|n| n.eq_ignore_ascii_case("content-type"))
            && !body.is_empty()
        {
            response.push(("content-type".into(), "application/json".into()));
        }
        response.extend(
            upstream
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone())),
        );
        if !body.is_empty() {
            response.push(("content-length".into(), body.len().to_string()));
        }
        for (index, req) in contexts.iter().enumerate().rev() {
            let name = self.hosts[index].0;
            let record = self.deliver(index, req, StreamType::Response, &(response, body))?;
            if let Some(local) = record.local_response {
                finish(&contexts);
                let (status, headers, body, by, _) = local_answer(local, name);
                return Ok((status, headers, body, by, Some(seen)));
            }
            response = record.response_headers.pairs().to_vec();
            body = record.response_body;
        }
        finish(&contexts);
        let headers = HeaderMap::from_pairs(&response);
        let status = headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, headers, body, None, Some(seen)))
    }

    /// Gives the plugin at `index` a message on `stream`: the headers, then
    /// the body once they have passed (Envoy withholds it while they are
    /// held); what the plugin made of it.
    fn deliver(
        &mut self,
        index: usize,
        req: &HttpContext,
        stream: StreamType,
        (headers, body): &Message,
    ) -> Result<HttpRecord, String> {
        let name = self.hosts[index].0;
        let fail = |e: crate::Error| format!("{name}: {e}");
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let ends = body.is_empty();
        match stream {
            StreamType::Request => req.request_headers(&pairs, ends),
            StreamType::Response => req.response_headers(&pairs, ends),
        }
        .map_err(fail)?;
        self.settle(index, req, stream)?;
        if !ends && req.record().local_response.is_none() {
            match stream {
                StreamType::Request => req.request_body(body, true),
                StreamType::Response => req.response_body(body, true),
            }
            .map_err(fail)?;
            self.settle(index, req, stream)?;
        }
        Ok(req.record())
    }

    /// Answers callouts and lets simulated time pass until the plugin at
    /// `index` lets the direction go or answers.
    fn settle(
        &mut self,
        index: usize,
        req: &HttpContext,
        stream: StreamType,
    ) -> Result<(), String> {
        let (name, host) = &self.hosts[index];
        for _ in 0..MAX_HELD_SECONDS {
            let record = req.record();
            if record.local_response.is_some() || !record.is_held(stream) {
                return Ok(());
            }
            if self.responder.answer_pending(host) {
                continue;
            }
            for (_, each) in self.hosts {
                each.advance(Duration::from_secs(1));
            }
            host.tick().map_err(|e| format!("{name}: {e}"))?;
        }
        self.problems.push(format!(
            "{name} still holds the request after {MAX_HELD_SECONDS} simulated seconds"
        ));
        Err(format!("{name} held the request and never let it go"))
    }
}

fn local_answer(local: LocalResponse, by: &str) -> Answer {
    let status = u16::try_from(local.status).unwrap_or(0);
    (
        status,
        local.headers,
        local.body,
        Some(by.to_string()),
        None,
    )
}

fn finish(contexts: &[HttpContext]) {
    for req in contexts {
        // A context a trap broke has nothing left to finish.
        let _ = req.finish();
    }
}
