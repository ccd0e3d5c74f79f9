//! Smoke tests of the real `jwt_identity.wasm`. They skip (and say so) until
//! it is built: `cargo build --release --target wasm32-wasip1 -p jwt-identity`.

use std::path::PathBuf;

use host_test::{Action, Host, HostOptions};

fn plugin() -> Option<Host> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = root.join("target/wasm32-wasip1/release/jwt_identity.wasm");
    if !wasm.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is not built (`cargo xtask build`)",
            wasm.display()
        );
        eprintln!("skipped: {} is not built", wasm.display());
        return None;
    }
    Host::load(&wasm, HostOptions::default()).ok()
}

fn policy() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/stock-trade.json");
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn policy_that_does_not_parse_is_refused() {
    let Some(host) = plugin() else { return };
    assert_eq!(host.configure("not json"), Ok(false));
}

#[test]
fn request_without_a_token_is_answered_401_locally() {
    let Some(host) = plugin() else { return };
    assert_eq!(host.configure(policy()), Ok(true));
    let req = host.http_context().unwrap();
    let headers = [
        (":method", "GET"),
        (":path", "/portfolio"),
        (":authority", "api"),
    ];
    assert_eq!(req.request_headers(&headers, true), Ok(Action::Pause));
    let record = req.record();
    let answer = record.local_response.clone().unwrap();
    assert_eq!(answer.status, 401);
    assert!(answer.headers.get("www-authenticate").is_some());
    assert!(!record.sent_upstream());
    req.finish().unwrap();
    assert!(!host.is_broken());
}
