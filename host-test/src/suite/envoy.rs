//! The plugins of an Envoy deployment: the wasm HTTP filters of its config,
//! in order, each checked to carry the test file's policy inline.

use serde_json::Value;
use std::path::Path;

const WASM_FILTER: &str = "envoy.filters.http.wasm";

/// The plugin names of `envoy`'s first HTTP filter chain that holds wasm
/// filters, in order; an error names each filter whose inline
/// configuration is not `policy`.
pub fn plugins(envoy: &Path, policy: &Value) -> Result<Vec<String>, Vec<String>> {
    let shown = envoy.display();
    let text = std::fs::read_to_string(envoy)
        .map_err(|e| vec![format!("cannot read the Envoy config {shown}: {e}")])?;
    let config: Value =
        serde_norway::from_str(&text).map_err(|e| vec![format!("{shown}: not YAML: {e}")])?;
    let Some(filters) = first_wasm_chain(&config) else {
        return Err(vec![format!("{shown}: no envoy.filters.http.wasm filter")]);
    };
    let mut plugins = Vec::new();
    let mut problems = Vec::new();
    for (index, filter) in filters.iter().enumerate() {
        let config = &filter["typed_config"]["config"];
        let file = config["vm_config"]["code"]["local"]["filename"]
            .as_str()
            .unwrap_or_default();
        let Some(name) = Path::new(file).file_stem().and_then(|s| s.to_str()) else {
            problems.push(format!(
                "{shown}: wasm filter {index} names no local .wasm file"
            ));
            continue;
        };
        let name = name.replace('_', "-");
        let inline = config["configuration"]["value"]
            .as_str()
            .and_then(|v| serde_json::from_str::<Value>(v).ok());
        if inline.as_ref().map(without_schema) != Some(without_schema(policy)) {
            problems.push(format!(
                "{shown}: the {name} filter's inline configuration is not the test file's policy"
            ));
        }
        plugins.push(name);
    }
    if problems.is_empty() {
        Ok(plugins)
    } else {
        Err(problems)
    }
}

/// The wasm filters of the first `http_filters` list that has any.
fn first_wasm_chain(value: &Value) -> Option<Vec<&Value>> {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(filters)) = map.get("http_filters") {
                let wasm: Vec<&Value> = filters
                    .iter()
                    .filter(|f| f["name"].as_str() == Some(WASM_FILTER))
                    .collect();
                if !wasm.is_empty() {
                    return Some(wasm);
                }
            }
            map.values().find_map(first_wasm_chain)
        }
        Value::Array(items) => items.iter().find_map(first_wasm_chain),
        _ => None,
    }
}

/// A policy without its `$schema` hint (the parser ignores it).
fn without_schema(policy: &Value) -> Value {
    let mut policy = policy.clone();
    if let Some(map) = policy.as_object_mut() {
        map.remove("$schema");
    }
    policy
}
