//! `host-test validate`: a policy document checked the way a deployment
//! would meet it: against the policy's JSON Schema
//! (`policies/agentward.schema.json`, every violation with its path), then
//! by the real plugin `.wasm` files, each configured with it as Envoy would
//! at start-up (in chain order, on one shared-data store): a plugin that
//! refuses to start gives the error it logs, which names the field.

use crate::{Host, HostOptions, LogLevel, SharedData};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The policy's JSON Schema, as shipped.
pub const SCHEMA: &str = include_str!("../../policies/agentward.schema.json");

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Who found it: `json`, `schema` or a plugin's file name.
    pub by: String,
    /// Where: a JSON pointer (`/routes/0/scopes`) or the plugin's field
    /// (`routes[0].scopes`); empty when the whole document is at fault.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}: {}", self.by, self.message)
        } else {
            write!(f, "{}: {}: {}", self.by, self.at, self.message)
        }
    }
}

/// What to check a policy with.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    /// Plugin `.wasm` files, in chain order.
    pub plugins: Vec<PathBuf>,
    /// The VMs' environment (`client_secret_env` and the like).
    pub environment: BTreeMap<String, String>,
}

impl Validation {
    /// Every problem with `policy` (JSON text); none: it is valid.
    pub fn check(&self, policy: &[u8]) -> Vec<Finding> {
        let document: Value = match serde_json::from_slice(policy) {
            Ok(v) => v,
            Err(e) => {
                return vec![Finding {
                    by: "json".into(),
                    at: String::new(),
                    message: format!("not JSON: {e}"),
                }]
            }
        };
        let mut findings = schema_findings(&document);
        let shared = SharedData::new();
        for path in &self.plugins {
            let by = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let options = HostOptions {
                vm_id: "agentward".into(),
                shared_data: shared.clone(),
                environment: self.environment.clone(),
                ..HostOptions::default()
            };
            let refused = |message: String| Finding {
                by: by.clone(),
                at: String::new(),
                message,
            };
            let host = match Host::load(path, options) {
                Ok(host) => host,
                Err(e) => {
                    findings.push(refused(format!("cannot load: {e}")));
                    continue;
                }
            };
            match host.configure(policy) {
                Ok(true) => {}
                Ok(false) => {
                    let errors: Vec<String> = host
                        .logs()
                        .into_iter()
                        .filter(|l| matches!(l.level, LogLevel::Error | LogLevel::Critical))
                        .map(|l| l.message)
                        .collect();
                    if errors.is_empty() {
                        findings.push(refused("refuses to start (it logged no error)".into()));
                    }
                    findings.extend(errors.into_iter().map(|m| plugin_finding(&by, &m)));
                }
                Err(e) => findings.push(refused(format!("failed at start-up: {e}"))),
            }
        }
        findings
    }
}

/// A plugin's start-up error, `agentward: invalid policy at `F`: M`, split
/// into its field and message.
fn plugin_finding(by: &str, logged: &str) -> Finding {
    let text = logged.strip_prefix("agentward: ").unwrap_or(logged);
    let (at, message) = text
        .strip_prefix("invalid policy at `")
        .and_then(|rest| rest.split_once("`: "))
        .map(|(at, m)| (at.to_string(), m.to_string()))
        .unwrap_or_else(|| (String::new(), text.to_string()));
    Finding {
        by: by.to_string(),
        at,
        message,
    }
}

fn schema_findings(document: &Value) -> Vec<Finding> {
    let finding = |at: String, message: String| Finding {
        by: "schema".into(),
        at,
        message,
    };
    match schema_violations(SCHEMA, document) {
        Ok(found) => found.into_iter().map(|(at, m)| finding(at, m)).collect(),
        Err(e) => vec![finding(
            String::new(),
            format!("the shipped schema does not load: {e}"),
        )],
    }
}

/// Every violation of `schema` (JSON text) by `document`, as (JSON pointer,
/// message without the value at fault); `Err` when the schema does not load.
pub(crate) fn schema_violations(
    schema: &str,
    document: &Value,
) -> Result<Vec<(String, String)>, String> {
    let validator = serde_json::from_str::<Value>(schema)
        .map_err(|e| e.to_string())
        .and_then(|s| jsonschema::validator_for(&s).map_err(|e| e.to_string()))?;
    Ok(validator
        .iter_errors(document)
        .map(|e| {
            let message = without_instance(&e.to_string(), &e.instance().to_string());
            (e.instance_path().to_string(), message)
        })
        .collect())
}

/// A schema message without the value it is about (`"x" is not of type
/// "array"` → `the value is not of type "array"`): the value may be a
/// secret (`client_secret`) or a whole section; the path says where it is.
fn without_instance(message: &str, instance: &str) -> String {
    match message.strip_prefix(instance) {
        Some(rest) => format!("the value{rest}"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_error_splits_into_field_and_message() {
        let f = plugin_finding(
            "scope_fga.wasm",
            "agentward: invalid policy at `routes[0].scopes`: must not be empty",
        );
        assert_eq!(f.at, "routes[0].scopes");
        assert_eq!(f.message, "must not be empty");
        assert_eq!(
            f.to_string(),
            "scope_fga.wasm: routes[0].scopes: must not be empty"
        );
        let f = plugin_finding("x.wasm", "agentward: proof key missing");
        assert_eq!(
            (f.at.as_str(), f.message.as_str()),
            ("", "proof key missing")
        );
    }

    #[test]
    fn the_schema_names_each_violation_by_its_path() {
        let found = schema_findings(&serde_json::json!({"resource": 5}));
        assert!(!found.is_empty());
        assert!(found.iter().all(|f| f.by == "schema"), "{found:?}");
        assert!(found.iter().any(|f| f.at == "/resource"), "{found:?}");
        let secret =
            schema_findings(&serde_json::json!({"approval": {"client_secret": ["TOPSECRET"]}}));
        assert!(!secret.is_empty());
        assert!(
            secret.iter().all(|f| !f.message.contains("TOPSECRET")),
            "{secret:?}"
        );
    }
}
