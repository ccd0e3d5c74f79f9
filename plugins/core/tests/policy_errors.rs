//! A policy's errors name the field they are at. `Policy::parse` finds the
//! field by walking the document to the error's position (it no longer wraps
//! the deserializer in `serde_path_to_error`, see `policy/json_path.rs`);
//! here both name the field of every wrong value and unknown field of the
//! shipped policies, pretty-printed and compact, and must agree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::Policy;
use serde_json::{json, Value};
use std::path::Path;

/// Every value in the document, by JSON pointer.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                pointers(v, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// The variants of `policy` to try: each value replaced by one of another
/// kind, each string by strings its parsers refuse, and each object given an
/// unknown field.
fn broken(policy: &Value) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    pointers(policy, String::new(), &mut all);
    let stand_ins = [
        json!(true),
        json!(7),
        json!(-1),
        json!(1.5),
        json!("x"),
        json!([]),
        json!([1]),
        json!({}),
        json!(null),
    ];
    let mut out = Vec::new();
    for pointer in &all {
        for stand_in in &stand_ins {
            let mut v = policy.clone();
            let slot = v.pointer_mut(pointer).unwrap();
            if std::mem::discriminant(slot) != std::mem::discriminant(stand_in) {
                *slot = stand_in.clone();
                out.push((pointer.clone(), v));
            }
        }
        if policy.pointer(pointer).is_some_and(Value::is_string) {
            for text in ["", "x", "none", "/a/{", "{nope}"] {
                let mut v = policy.clone();
                *v.pointer_mut(pointer).unwrap() = json!(text);
                out.push((pointer.clone(), v));
            }
        }
        let mut v = policy.clone();
        if let Some(map) = v.pointer_mut(pointer).and_then(Value::as_object_mut) {
            map.insert("zz_unknown".into(), json!(1));
            out.push((pointer.clone(), v));
        }
    }
    out
}

#[test]
fn every_deserialisation_error_names_the_field_serde_path_to_error_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut compared = 0;
    for name in [
        "stock-trade.json",
        "stock-trade-chain.json",
        "stock-trade-approval.json",
        "stock-trade-spin.json",
    ] {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        let policy: Value = serde_json::from_str(&text).unwrap();
        for (pointer, variant) in broken(&policy) {
            for bytes in [
                serde_json::to_vec_pretty(&variant).unwrap(),
                serde_json::to_vec(&variant).unwrap(),
            ] {
                let mut de = serde_json::Deserializer::from_slice(&bytes);
                let Err(expected) = serde_path_to_error::deserialize::<_, Policy>(&mut de) else {
                    continue; // wrong only for `validate`, which names its own fields
                };
                let expected = match expected.path().to_string() {
                    p if p == "." => "(document)".to_string(),
                    p => p,
                };
                let got = Policy::parse(&bytes).unwrap_err();
                // serde_json reports where an enum's object did not close
                // after its variant: inside what was read, a field or two
                // deeper than the enum serde_path_to_error names.
                let deeper = got.message == "expected value"
                    && (got.field.starts_with(&format!("{expected}."))
                        || got.field.starts_with(&format!("{expected}[")));
                if deeper {
                    continue;
                }
                assert_eq!(
                    got.field,
                    expected,
                    "{name}, {pointer} = {}: {}",
                    variant.pointer(&pointer).unwrap(),
                    got.message
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 1000, "only {compared} errors compared");
}
