//! `cargo xtask schema [--check]`: the policy's JSON Schema, generated from
//! agentward-core's policy types (feature `schema`), into
//! `policies/agentward.schema.json`; `--check` only compares and fails when
//! the file is stale. xtask stays std-only: the generator is core's
//! `policy_schema` example.

use crate::{cargo, root, run_quiet, Result};

/// Where the schema is shipped, from the repository root.
pub const SCHEMA_FILE: &str = "policies/agentward.schema.json";

pub fn run(args: &[String]) -> Result {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => return Err("usage: cargo xtask schema [--check]".into()),
    };
    let generated = run_quiet(cargo().args([
        "run",
        "--quiet",
        "-p",
        "agentward-core",
        "--features",
        "schema",
        "--example",
        "policy_schema",
    ]))?;
    let path = root().join(SCHEMA_FILE);
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    if shipped == generated {
        println!("[schema] {SCHEMA_FILE} is up to date");
        return Ok(());
    }
    if check {
        return Err(format!(
            "{SCHEMA_FILE} is stale: run `cargo xtask schema` and commit it"
        ));
    }
    std::fs::write(&path, generated).map_err(|e| format!("cannot write {SCHEMA_FILE}: {e}"))?;
    println!("[schema] wrote {SCHEMA_FILE}");
    Ok(())
}
