//! The agentward policy playground: the plugins' decisions from
//! `agentward-core`, compiled for the browser (`wasm32-unknown-unknown`,
//! `wasm-bindgen`). The page (`playground/www/`) calls [`run`] and
//! [`validate`] with JSON text and reads JSON text back; nothing leaves
//! the page.

pub mod chain;

use wasm_bindgen::prelude::wasm_bindgen;

/// Runs one request through the chain: `input` is a [`chain::Input`] as
/// JSON; the answer is a [`chain::Output`] as JSON.
#[wasm_bindgen]
pub fn run(input: &str) -> String {
    let output = match serde_json::from_str::<chain::Input>(input) {
        Ok(input) => chain::run(input),
        Err(e) => chain::Output {
            errors: vec![chain::Problem {
                field: "input".into(),
                message: e.to_string(),
                by: "playground".into(),
            }],
            ..chain::Output::default()
        },
    };
    serde_json::to_string(&output).unwrap_or_else(|_| "{}".into())
}

/// Checks a policy (JSON text) as the plugins (a JSON list of names, all
/// four when empty) would at start-up: a JSON list of problems, each with
/// the field it is at; `[]` when it is valid.
#[wasm_bindgen]
pub fn validate(policy: &str, plugins: &str) -> String {
    let plugins: Vec<String> = serde_json::from_str(plugins)
        .ok()
        .filter(|p: &Vec<String>| !p.is_empty())
        .unwrap_or_else(|| chain::PLUGINS.iter().map(|p| p.to_string()).collect());
    let problems = match serde_json::from_str::<serde_json::Value>(policy) {
        Ok(policy) => chain::validate(&policy, &plugins),
        Err(e) => vec![chain::Problem {
            field: String::new(),
            message: format!("not JSON: {e}"),
            by: "json".into(),
        }],
    };
    serde_json::to_string(&problems).unwrap_or_else(|_| "[]".into())
}

/// The policy the page starts with: the stock-trade example, all four
/// plugins' sections (`policies/stock-trade-spin.json`).
#[wasm_bindgen]
pub fn example_policy() -> String {
    include_str!("../../policies/stock-trade-spin.json").to_string()
}
