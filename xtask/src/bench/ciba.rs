//! `cargo xtask bench --only vault-ciba`: `POST /bc-authorize` requests/s on
//! the real vault (release build, SQLite) as a CIBA authority (issue #11).
//! wrk (closed loop, 8 connections) posts the gateway's authenticated
//! requests, each for another user (`login_hint` u0 … u99999, so no user
//! reaches `max_pending_per_user`), with a binding message and
//! `authorization_details`: per request the vault authenticates the client,
//! checks the parameters, draws two 256-bit secrets, stores the request and
//! its audit row, and hands the notification to the log notifier (logged
//! at `info`, so not written at the bench's `warn`). Every answer must be
//! 200; anything else fails the bench.

use super::{median, pinned, wrk_script, Pinning, Sample};
use crate::stack::{self, Service};
use crate::{root, Result};
use std::process::Command;
use std::time::Duration;

/// `--only` name.
pub const NAME: &str = "vault-ciba";

const KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const CONNECTIONS: u32 = 8;

/// wrk script: the gateway's `/bc-authorize` form for a different user each
/// time (HTTP Basic `gateway:bench-secret`).
const LUA: &str = r#"local i = 0
function request()
  i = (i + 1) % 100000
  local body = "scope=openid%20trade&login_hint=u" .. i ..
    "&binding_message=Buy%2050%20ACME&agent_id=bench-agent" ..
    "&authorization_details=%5B%7B%22type%22%3A%22stock_trade%22%2C%22ticker%22%3A%22ACME%22%2C%22qty%22%3A50%7D%5D"
  return wrk.format("POST", "/bc-authorize", {
    ["content-type"] = "application/x-www-form-urlencoded",
    ["authorization"] = "Basic Z2F0ZXdheTpiZW5jaC1zZWNyZXQ=",
  }, body)
end
"#;

/// Runs the windows and prints the figures.
pub fn run(rounds: usize, window_secs: u32, pin: &Pinning) -> Result {
    let binary = super::vault::build()?;
    let dir = root().join("target/bench-ciba");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for stale in ["ciba.db", "ciba.db-wal", "ciba.db-shm"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let port = stack::free_port()?;
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
database_url = "sqlite://{db}"

[[issuers]]
issuer = "https://idp.bench.example/"
audiences = ["https://api.bench.example"]
algorithms = ["ES256"]
jwks_uri = "http://127.0.0.1:9/jwks.json"

[[clients]]
client_id = "gateway"
client_secret = "bench-secret"

[ciba]
clients = ["gateway"]
scopes = ["openid", "trade"]
authorization_details_types = ["stock_trade"]
max_pending_per_user = 1000
"#,
        db = dir.join("ciba.db").display()
    );
    let config_path = dir.join("vault-ciba.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let lua = dir.join("bc-authorize.lua");
    std::fs::write(&lua, LUA).map_err(|e| e.to_string())?;

    let mut command = Command::new(&binary);
    command
        .arg("--config")
        .arg(&config_path)
        .env("AGENTWARD_VAULT_KEY", KEY)
        .env("RUST_LOG", "warn");
    let mut vault = Service::spawn("vault-ciba", &mut pinned(command, pin.gateways), &dir)?;
    vault.wait_ready(port, "/healthz", Duration::from_secs(30))?;
    println!(
        "[bench] vault-ciba: POST /bc-authorize, {rounds} windows of {window_secs}s, wrk -t1 -c{CONNECTIONS} (vault on :{port})"
    );
    let url = format!("http://127.0.0.1:{port}");
    let window = |seconds: u32| -> Result<Sample> {
        let sample = wrk_script(&lua, &url, CONNECTIONS, seconds, pin.load)?;
        if sample.failed > 0 {
            return Err(format!(
                "vault-ciba: {} of {} answers were not 200; see {}",
                sample.failed,
                sample.requests,
                vault.log.display()
            ));
        }
        Ok(sample)
    };
    window(1)?; // warm-up
    let mut samples = Vec::new();
    for round in 1..=rounds {
        let s = window(window_secs)?;
        println!(
            "[bench] round {round}/{rounds}: vault-ciba {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            s.rps, s.p50_ms, s.p99_ms
        );
        samples.push(s);
    }
    let (rps, min, max) = median(samples.iter().map(|s| s.rps).collect());
    let (p50, _, _) = median(samples.iter().map(|s| s.p50_ms).collect());
    let (p99, _, _) = median(samples.iter().map(|s| s.p99_ms).collect());
    let requests: u64 = samples.iter().map(|s| s.requests).sum();
    println!(
        "\nvault POST /bc-authorize (SQLite)  {rps:.0} req/s ({min:.0}–{max:.0}), p50 {p50:.2} ms, p99 {p99:.2} ms, {requests} requests, all 200"
    );
    drop(vault);
    Ok(())
}
