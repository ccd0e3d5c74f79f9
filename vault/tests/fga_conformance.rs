//! Conformance with OpenFGA, judged by real peers: every `policies/*.fga.yaml`
//! through the real `fga` CLI (`fga model test`, an embedded OpenFGA) and
//! through this vault's API must give the same answers, and the Python
//! `openfga-sdk` client and the `fga` CLI work against the vault unchanged.
//! One Python process (`tests/fga/peer.py`) does all three, against one vault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;
use support::*;

const FGA_KEY: &str = "conformance-key";

#[tokio::test]
async fn policies_answer_as_openfga_does_and_the_sdk_and_cli_work_unchanged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join(".tools/venv/bin");
    assert!(
        venv.join("fga").exists() && venv.join("python").exists(),
        "run `cargo xtask setup` first (the fga CLI and openfga-sdk in .tools/venv)"
    );
    let dir = temp_dir("fga-conformance");
    let vault = VaultProcess::start_with_env(
        VaultSettings {
            port: free_port(),
            database_url: format!("sqlite://{}", dir.join("vault.db").display()),
            database_schema: None,
            dir: &dir,
            jwks_url: "http://127.0.0.1:9/jwks.json",
            upstream_url: "http://127.0.0.1:9",
            refresh_margin: 5,
            name: "vault",
            ca_file: None,
        },
        "",
        "",
        &[("AGENTWARD_VAULT_FGA_PRESHARED_KEYS", FGA_KEY)],
    )
    .await;
    // Another folder of `.fga.yaml` files (e.g. OpenFGA's own samples) can
    // be run instead of `policies/`.
    let policies = std::env::var_os("AGENTWARD_VAULT_FGA_TESTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("policies"));
    let vault_url = vault.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("python"))
            .arg(root.join("vault/tests/fga/peer.py"))
            .arg(&vault_url)
            .arg(FGA_KEY)
            .arg(&policies)
            .arg(venv.join("fga"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
}
