//! `host-test test` as a user runs it: the shipped policy tests pass through
//! the real plugins; the same tests against a broken policy (a scope
//! removed, a route reordered, an approval threshold raised) fail, each
//! naming what differs; JUnit XML comes out for CI. Skips (and says so)
//! until the plugins are built (`cargo xtask build`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn built() -> bool {
    let dir = root().join("target/wasm32-wasip1/release");
    let all = ["jwt_identity", "scope_fga", "ciba_hold", "token_exchange"]
        .iter()
        .all(|p| dir.join(format!("{p}.wasm")).exists());
    if !all {
        assert!(
            std::env::var_os("CI").is_none(),
            "the plugins are not built (`cargo xtask build`)"
        );
        eprintln!("skipped: the plugins are not built");
    }
    all
}

/// Runs `host-test test`: exit code and standard output.
fn run(files: &[&Path], extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_host-test"))
        .arg("test")
        .args(files)
        .args(["--wasm-dir"])
        .arg(root().join("target/wasm32-wasip1/release"))
        .args(extra)
        .output()
        .expect("host-test runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tests.yaml"))
        .collect();
    files.sort();
    files
}

/// A scratch folder holding `policy` (edited by `edit`) and its tests, run
/// through `plugins` (not the Envoy config, which carries the unedited
/// policy).
fn broken_copy(
    name: &str,
    policy: &str,
    tests: &str,
    plugins: &str,
    edit: impl Fn(&str) -> String,
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "agentward-policy-tests-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(root().join("policies").join(policy)).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(dir.join(policy), edited).unwrap();
    std::fs::copy(
        root().join("policies/agentward.schema.json"),
        dir.join("agentward.schema.json"),
    )
    .unwrap();
    let cases = std::fs::read_to_string(root().join("policies").join(tests)).unwrap();
    let cases: Vec<String> = cases
        .lines()
        .map(|line| match line.starts_with("envoy: ") {
            true => format!("plugins: {plugins}"),
            false => line.to_string(),
        })
        .collect();
    std::fs::write(dir.join(tests), cases.join("\n")).unwrap();
    dir.join(tests)
}

#[test]
fn every_shipped_policy_has_tests_and_they_pass() {
    if !built() {
        return;
    }
    let files = shipped();
    for policy in [
        "stock-trade",
        "stock-trade-chain",
        "stock-trade-approval",
        "stock-trade-spin",
    ] {
        assert!(
            files
                .iter()
                .any(|f| f.ends_with(format!("{policy}.tests.yaml"))),
            "policies/{policy}.json has no tests"
        );
    }
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let junit =
        std::env::temp_dir().join(format!("agentward-policy-tests-{}.xml", std::process::id()));
    let (code, out) = run(&refs, &["--junit", junit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 0 failed, 0 file(s) not run"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), files.len(), "{xml}");
    assert!(xml.contains("failures=\"0\""), "{xml}");
    std::fs::remove_file(junit).ok();
}

#[test]
fn a_removed_scope_fails_the_tests_and_names_the_case() {
    if !built() {
        return;
    }
    // /trades asks for `portfolio:read` instead of `trade`.
    let tests = broken_copy(
        "scope",
        "stock-trade.json",
        "stock-trade.tests.yaml",
        "[jwt-identity]",
        |p| {
            p.replace(
            r#"{"match": {"methods": ["POST"], "path": "/trades"}, "scopes": ["trade"]}"#,
            r#"{"match": {"methods": ["POST"], "path": "/trades"}, "scopes": ["portfolio:read"]}"#,
        )
        },
    );
    let (code, out) = run(&[&tests], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("a trade with only portfolio:read is 403"),
        "{out}"
    );
    assert!(out.contains("status: expected 403, got 200"), "{out}");
    std::fs::remove_dir_all(tests.parent().unwrap()).ok();
}

#[test]
fn a_reordered_route_fails_the_tests() {
    if !built() {
        return;
    }
    // The public `/prices` prefix widened to `/` and moved first: it now
    // matches every request before the routes that ask for scopes.
    let tests = broken_copy(
        "order",
        "stock-trade.json",
        "stock-trade.tests.yaml",
        "[jwt-identity]",
        |p| {
            let public =
                r#"{"match": {"methods": ["GET"], "path_prefix": "/prices"}, "public": true},"#;
            let portfolio = r#"{"match": {"methods": ["GET"], "path": "/portfolio"}, "scopes": ["portfolio:read"]},"#;
            p.replace(public, "").replace(
                portfolio,
                &format!(
                    "{}\n    {portfolio}",
                    r#"{"match": {"methods": ["GET"], "path_prefix": "/"}, "public": true},"#
                ),
            )
        },
    );
    let (code, out) = run(&[&tests], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("the portfolio without a token is 401"),
        "{out}"
    );
    std::fs::remove_dir_all(tests.parent().unwrap()).ok();
}

#[test]
fn a_raised_approval_threshold_fails_the_tests() {
    if !built() {
        return;
    }
    let tests = broken_copy(
        "approval",
        "stock-trade-approval.json",
        "stock-trade-approval.tests.yaml",
        "[jwt-identity, ciba-hold]",
        |p| p.replacen(r#""gt": 10"#, r#""gt": 100"#, 1),
    );
    let (code, out) = run(&[&tests], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("binding_message: expected \"Buy 50 ACME\", got no approval request"),
        "{out}"
    );
    std::fs::remove_dir_all(tests.parent().unwrap()).ok();
}

#[test]
fn a_test_file_that_breaks_its_schema_is_refused_with_the_field() {
    let dir = std::env::temp_dir().join(format!(
        "agentward-policy-tests-{}-schema",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.tests.yaml");
    std::fs::write(
        &file,
        "policy: p.json\ncases:\n  - name: x\n    request: {path: /a}\n    expect: {status: \"two hundred\"}\n",
    )
    .unwrap();
    let (code, out) = run(&[&file], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("/cases/0/expect/status"), "{out}");
    let (code, out) = run(&[], &[]);
    assert_eq!(code, 2, "{out}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_literal_token_verifies_with_the_jwks_the_file_gives() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jwt_simple::prelude::*;
    if !built() {
        return;
    }
    let key = ES256KeyPair::generate().with_key_id("ci-key");
    let point = key.public_key().public_key().to_bytes_uncompressed();
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "ci-key",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    let claims = || {
        Claims::with_custom_claims(
            serde_json::json!({"scope": "portfolio:read"}),
            Duration::from_mins(5),
        )
        .with_issuer("https://idp.stock-trade.example/")
        .with_audience("http://localhost:10000")
        .with_subject("carol")
    };
    let token = key.sign(claims()).unwrap();
    let stranger = ES256KeyPair::generate()
        .with_key_id("ci-key")
        .sign(claims())
        .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "agentward-policy-tests-{}-token",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root().join("policies/stock-trade.json"),
        dir.join("stock-trade.json"),
    )
    .unwrap();
    let suite = serde_json::json!({
        "policy": "stock-trade.json",
        "plugins": ["jwt-identity"],
        "jwks": [jwk],
        "cases": [
            {"name": "carol's own token", "request": {"path": "/portfolio"},
             "caller": {"token": token},
             "expect": {"status": 200, "upstream": {"headers": {"x-agentward-sub": "carol"}}}},
            {"name": "a token from a key the JWKS does not hold", "request": {"path": "/portfolio"},
             "caller": {"token": stranger},
             "expect": {"status": 401, "error": "invalid_token", "upstream": false}}
        ]
    });
    // JSON this time: the runner reads either.
    let file = dir.join("token.tests.json");
    std::fs::write(&file, suite.to_string()).unwrap();
    let (code, out) = run(&[&file], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_envoy_config_that_carries_another_policy_is_refused() {
    if !built() {
        return;
    }
    // The tests say "what envoy/chain.yaml loads"; a copy of it whose
    // jwt-identity filter carries an edited policy is not that.
    let dir = std::env::temp_dir().join(format!(
        "agentward-policy-tests-{}-envoy",
        std::process::id()
    ));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::create_dir_all(dir.join("envoy")).unwrap();
    let envoy = std::fs::read_to_string(root().join("envoy/chain.yaml")).unwrap();
    let edited = envoy.replacen(r#"["portfolio:read"]"#, r#"["portfolio:write"]"#, 1);
    assert_ne!(edited, envoy);
    std::fs::write(dir.join("envoy/chain.yaml"), edited).unwrap();
    for file in [
        "stock-trade-chain.json",
        "stock-trade-chain.tests.yaml",
        "agentward.schema.json",
    ] {
        std::fs::copy(
            root().join("policies").join(file),
            dir.join("policies").join(file),
        )
        .unwrap();
    }
    let (code, out) = run(&[&dir.join("policies/stock-trade-chain.tests.yaml")], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "the jwt-identity filter's inline configuration is not the test file's policy"
        ),
        "{out}"
    );
    assert!(!out.contains("token-exchange filter's"), "{out}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn compiled_plugins_are_kept_on_disk_and_reused() {
    if !built() {
        return;
    }
    let cache =
        std::env::temp_dir().join(format!("agentward-host-test-cache-{}", std::process::id()));
    let file = root().join("policies/stock-trade-approval.tests.yaml");
    let run_with_cache = || {
        let out = Command::new(env!("CARGO_BIN_EXE_host-test"))
            .arg("test")
            .arg(&file)
            .arg("--wasm-dir")
            .arg(root().join("target/wasm32-wasip1/release"))
            .env("HOST_TEST_CACHE", &cache)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    run_with_cache();
    let kept: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 2, "jwt-identity and ciba-hold: {kept:?}");
    assert!(
        kept.iter()
            .all(|p| p.extension().is_some_and(|e| e == "cwasm")),
        "{kept:?}"
    );
    // A file that is not a module wasmtime wrote is compiled over, not run.
    std::fs::write(&kept[0], b"not a module").unwrap();
    run_with_cache();
    assert!(std::fs::read(&kept[0]).unwrap().len() > 1000);
    std::fs::remove_dir_all(cache).ok();
}
