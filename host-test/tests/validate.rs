//! `host-test validate` as a user runs it: the shipped policies with the
//! plugins their deployments load are valid; a broken one is refused with
//! every problem named by its field, by the schema and by the real plugin.
//! Skips (and says so) until the plugins are built (`cargo xtask build`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wasm(plugin: &str) -> Option<PathBuf> {
    let path = root().join(format!(
        "target/wasm32-wasip1/release/{}.wasm",
        plugin.replace('-', "_")
    ));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is not built (`cargo xtask build`)",
        path.display()
    );
    eprintln!("skipped: {} is not built", path.display());
    None
}

/// Runs `host-test validate`: exit code and standard output.
fn validate(policy: &Path, plugins: &[&str]) -> Option<(i32, String)> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-test"));
    cmd.arg("validate").arg("--policy").arg(policy);
    for p in plugins {
        cmd.arg("--wasm").arg(wasm(p)?);
    }
    cmd.args(["--env", "AGENTWARD_VAULT_CLIENT_SECRET=s3cret"]);
    // base64url of 32 bytes, as ciba-hold's `handle_key_env` wants.
    cmd.args([
        "--env",
        "AGENTWARD_APPROVAL_HANDLE_KEY=YWdlbnR3YXJkIGRlbW8gYXBwcm92YWwgaWQga2V5ISE",
    ]);
    let out = cmd.output().ok()?;
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[test]
fn the_shipped_policies_are_valid_for_the_plugins_their_deployments_load() {
    for (policy, plugins) in [
        ("stock-trade.json", &["jwt-identity"][..]),
        (
            "stock-trade-chain.json",
            &["jwt-identity", "token-exchange"],
        ),
        ("stock-trade-approval.json", &["jwt-identity", "ciba-hold"]),
    ] {
        let Some((code, out)) = validate(&root().join("policies").join(policy), plugins) else {
            return;
        };
        assert_eq!(code, 0, "{policy}: {out}");
        assert!(
            out.contains(&format!("{policy}: valid (schema, {}", plugins.len())),
            "{out}"
        );
    }
}

#[test]
fn a_broken_policy_is_refused_naming_each_field() {
    let text = std::fs::read_to_string(root().join("policies/stock-trade-approval.json")).unwrap();
    let mut policy: Value = serde_json::from_str(&text).unwrap();
    policy["routes"][1]["scopes"] = serde_json::json!("portfolio:read");
    policy["approval"]["client_auth"] = serde_json::json!("private_key_jwt");
    policy["approval"]["client_secret"] = serde_json::json!("TOPSECRET-4711");
    let dir = std::env::temp_dir().join(format!("host-test-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.json");
    std::fs::write(&broken, policy.to_string()).unwrap();

    let Some((code, out)) = validate(&broken, &["jwt-identity", "ciba-hold"]) else {
        return;
    };
    assert_eq!(code, 1, "{out}");
    // The schema names every violation; a plugin, the first its parser
    // meets. No value is echoed (the secret below is in a broken section).
    for expected in [
        "schema: /routes/1/scopes: the value is not of type \"array\"",
        "schema: /approval: the value is not valid",
        "jwt_identity.wasm: approval.client_auth: unknown variant `private_key_jwt`",
        "ciba_hold.wasm: approval.client_auth: unknown variant `private_key_jwt`",
        ": 4 problem(s)",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    assert!(!out.contains("TOPSECRET"), "{out}");
    // Not JSON at all: one finding, exit 1.
    std::fs::write(&broken, "{").unwrap();
    let (code, out) = validate(&broken, &[]).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("json: not JSON"), "{out}");
    // A usage error is 2.
    let code = Command::new(env!("CARGO_BIN_EXE_host-test"))
        .args(["validate", "--wasm"])
        .status()
        .unwrap()
        .code();
    assert_eq!(code, Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
