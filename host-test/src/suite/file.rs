//! The test file: YAML or JSON, checked against
//! `policies/agentward.tests.schema.json`, then read into these types.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The test file's JSON Schema, as shipped.
pub const SCHEMA: &str = include_str!("../../../policies/agentward.tests.schema.json");

/// The plugins, in the order of a full deployment (DESIGN.md).
pub const CHAIN: [&str; 4] = ["jwt-identity", "scope-fga", "ciba-hold", "token-exchange"];

/// A test file: a policy, the chain it is deployed in, and cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The editor's schema hint; not used.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// The policy document, relative to the test file.
    pub policy: PathBuf,
    /// The plugins the request goes through, in deployment order (all
    /// four when neither this nor `envoy` is given).
    #[serde(default)]
    pub plugins: Option<Vec<String>>,
    /// An Envoy config, relative to the test file: the plugins are its
    /// wasm filters, in its order, and each one's inline configuration
    /// must be the policy.
    #[serde(default)]
    pub envoy: Option<PathBuf>,
    /// A Spin manifest, relative to the test file: the plugins are its
    /// components from the public route along their `next` variables.
    #[serde(default)]
    pub spin: Option<PathBuf>,
    /// The VMs' environment; `*_env` names the policy uses get test
    /// values unless given here.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// More JWKs the JWKS answer holds (for literal `token` callers).
    #[serde(default)]
    pub jwks: Vec<Value>,
    /// The cases, run in order, each on fresh plugin VMs.
    pub cases: Vec<Case>,
    /// Where the file was read from (set by [`Suite::load`]).
    #[serde(skip)]
    pub path: PathBuf,
}

/// One request and what must come of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows, as one line.
    pub name: String,
    /// The request as the client sends it.
    pub request: Request,
    /// Who calls: claims the runner signs, or a literal token. None: no
    /// `Authorization` header.
    #[serde(default)]
    pub caller: Option<Caller>,
    /// The FGA tuples that hold (`user relation object`); every other
    /// check is denied.
    #[serde(default)]
    pub fga: Vec<String>,
    /// How the user decides when an approval is asked.
    #[serde(default)]
    pub approval: Option<Decision>,
    /// The vault's answer to a token exchange.
    #[serde(default)]
    pub exchange: Option<Exchange>,
    /// The upstream's answer, when the request reaches it.
    #[serde(default)]
    pub upstream: Option<Upstream>,
    /// What must come out.
    pub expect: Expect,
}

/// A request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The method (GET).
    #[serde(default = "get")]
    pub method: String,
    /// The path, with any query.
    pub path: String,
    /// More headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body: a string as it is, anything else as JSON.
    #[serde(default)]
    pub body: Option<Value>,
}

fn get() -> String {
    "GET".into()
}

/// Who calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Caller {
    /// Claims the runner signs with its test key, for `issuer` (the
    /// policy's first issuer when absent). `iss`, `aud` (the issuer's first
    /// audience), `iat` and `exp` (5 minutes) are added unless given.
    Claims {
        /// The token's claims.
        claims: Map<String, Value>,
        /// Which of the policy's issuers signs.
        #[serde(default)]
        issuer: Option<String>,
    },
    /// A token sent as it is.
    Token {
        /// The bearer token.
        token: String,
    },
}

pub use agentward_core::scenario::{Decision, Exchange};

/// The upstream's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Its status (200).
    #[serde(default = "ok")]
    pub status: u16,
    /// Its headers (`content-type: application/json` unless given).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Its body: a string as it is, anything else as JSON.
    #[serde(default)]
    pub body: Option<Value>,
}

fn ok() -> u16 {
    200
}

/// What must come out. Only what is named is compared.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status the client gets.
    #[serde(default)]
    pub status: Option<u16>,
    /// The error: a string is the OAuth `error`, a number the JSON-RPC
    /// `error.code`.
    #[serde(default)]
    pub error: Option<Value>,
    /// Headers the client gets (null: absent).
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// The body the client gets (JSON compared as JSON).
    #[serde(default)]
    pub body: Option<Value>,
    /// What reaches the upstream; `false`: nothing does.
    #[serde(default)]
    pub upstream: Option<Seen>,
    /// The callouts made, in order, as `cluster METHOD path`.
    #[serde(default)]
    pub callouts: Option<Vec<String>>,
    /// The binding message the approval request shows the user.
    #[serde(default)]
    pub binding_message: Option<String>,
}

/// What the upstream is expected to see.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Seen {
    /// `false`: the request must not reach it; `true`: it must.
    Reached(bool),
    /// It must, with these headers (null: absent) and this body.
    Request {
        /// Headers the upstream sees (null: absent).
        #[serde(default)]
        headers: BTreeMap<String, Option<String>>,
        /// The body the upstream sees.
        #[serde(default)]
        body: Option<Value>,
    },
}

impl Suite {
    /// Reads a test file (`.json` as JSON, anything else as YAML) and
    /// checks it against the schema; errors name the field.
    pub fn load(path: &Path) -> Result<Suite, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        let is_json = path.extension().is_some_and(|e| e == "json");
        let value: Value = if is_json {
            serde_json::from_str(&text).map_err(|e| vec![format!("not JSON: {e}")])?
        } else {
            serde_norway::from_str(&text).map_err(|e| vec![format!("not YAML: {e}")])?
        };
        let problems = schema_problems(&value);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut suite: Suite = serde_path_to_error::deserialize(&value)
            .map_err(|e| vec![format!("{}: {}", e.path(), e.inner())])?;
        suite.path = path.to_path_buf();
        let given = [
            suite.plugins.is_some(),
            suite.envoy.is_some(),
            suite.spin.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(vec!["give one of `plugins`, `envoy` and `spin`".to_string()]);
        }
        Ok(suite)
    }

    /// A path the file names, relative to the file.
    pub fn beside(&self, name: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) => dir.join(name),
            None => name.to_path_buf(),
        }
    }

    /// The policy's path.
    pub fn policy_path(&self) -> PathBuf {
        self.beside(&self.policy)
    }

    /// The plugins, in order: `plugins`, or the `envoy` config's wasm
    /// filters (each checked to carry `policy` inline), or the `spin`
    /// manifest's chain, or all four.
    pub fn chain(&self, policy: &Value) -> Result<Vec<String>, Vec<String>> {
        let chain = match (&self.plugins, &self.envoy, &self.spin) {
            (Some(plugins), _, _) => plugins.clone(),
            (None, Some(envoy), _) => super::envoy::plugins(&self.beside(envoy), policy)?,
            (None, None, Some(spin)) => super::spin::plugins(&self.beside(spin))?,
            (None, None, None) => CHAIN.iter().map(|p| p.to_string()).collect(),
        };
        match chain.iter().find(|p| !CHAIN.contains(&p.as_str())) {
            Some(unknown) => Err(vec![format!(
                "unknown plugin {unknown} (one of {})",
                CHAIN.join(", ")
            )]),
            None => Ok(chain),
        }
    }
}

fn schema_problems(document: &Value) -> Vec<String> {
    match crate::validate::schema_violations(SCHEMA, document) {
        Ok(found) => found
            .into_iter()
            .map(|(at, m)| format!("{at}: {m}"))
            .collect(),
        Err(e) => vec![format!("the shipped test schema does not load: {e}")],
    }
}

/// A body from the file: a string as it is, anything else as JSON.
pub fn body_bytes(body: &Option<Value>) -> Vec<u8> {
    match body {
        None => Vec::new(),
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    }
}
