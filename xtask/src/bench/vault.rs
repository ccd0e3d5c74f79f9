//! The vault side of `cargo xtask bench`: the real `agentward-vault` (release
//! build, SQLite) with its `stocktrade` connection at a real OpenID provider
//! (npm `oidc-provider`, vault/tests/peers/oidc-upstream.mjs), alice's account
//! linked once without a browser (envoy/bench/exchange.py), then used by the
//! token-exchange gateway configuration and measured on its own POSTing
//! `/oauth/token` while the upstream token is cached: throughput with wrk
//! (closed loop, as fast as it answers), latency at the target rate with a
//! paced open-loop load (`paced.rs`), one window of each per round.

use super::paced::{self, Paced};
use super::{median, pinned, Sample};
use crate::stack::{self, Service};
use crate::{cargo, root, run_quiet, run_visible, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The vault cluster's port in envoy/bench/token-exchange.yaml, mapped to the
/// bench vault's port when the config is rendered.
pub const CONVENTIONAL_PORT: u16 = 8787;

/// How long the provider's access tokens live: the vault serves the cached
/// one for the whole bench, so no exchange spends the refresh token.
const ACCESS_TOKEN_TTL: u64 = 3600;

/// Data-encryption key of the bench vault (its database is thrown away).
const KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// wrk connections against the vault.
const CONNECTIONS: u32 = 8;

/// Targets (issue #3): the p99 is taken at the target rate, offered open loop.
pub const TARGET_RPS: f64 = 5000.0;
pub const TARGET_P99_MS: f64 = 2.0;

/// Pause between a saturated window and the next paced one.
const SETTLE: Duration = Duration::from_secs(1);

/// What one vault run measured, a sample of each kind per round.
pub struct Runs {
    /// wrk windows: as many exchanges as the vault answers.
    pub saturated: Vec<Sample>,
    /// Paced windows at [`TARGET_RPS`].
    pub paced: Vec<Paced>,
    /// Paced windows of `GET /healthz` (one trivial database query): what
    /// this machine and the load generator add to any answer, same moment.
    pub floor: Vec<Paced>,
}

const PEERS: &str = "vault/tests/peers";
const HELPER: &str = "envoy/bench/exchange.py";

/// Builds the vault in release (a fair throughput figure) and returns the binary.
pub fn build() -> Result<PathBuf> {
    if !root().join("vault/Cargo.toml").exists() {
        return Err("the vault crate is missing: cannot bench the token exchange".into());
    }
    println!("[bench] building agentward-vault in release (cargo build --release -p agentward-vault; minutes the first time)");
    run_visible(cargo().args(["build", "--release", "-p", "agentward-vault"]))?;
    Ok(root().join("target/release/agentward-vault"))
}

/// The provider and the vault, running, with alice's account linked.
pub struct Stack {
    pub port: u16,
    /// The bench policy with the `vault` section and a `connection` on GET /portfolio.
    pub policy: String,
    lua: PathBuf,
    /// The same request as raw HTTP/1.1 bytes, for the paced windows.
    raw: Vec<u8>,
    vault: Service,
    // Dropped (killed) after the vault.
    _provider: Service,
}

impl Stack {
    pub fn start(
        binary: &Path,
        dir: &Path,
        cpu: Option<u32>,
        provider_cpu: Option<u32>,
    ) -> Result<Stack> {
        let peers = root().join(PEERS);
        if !peers.join("node_modules/oidc-provider").exists() {
            println!("[bench] npm install in {PEERS} (oidc-provider)");
            run_quiet(Command::new("npm").arg("install").current_dir(&peers))?;
        }
        let port = stack::free_port()?;
        let provider_port = stack::free_port()?;
        let provider_url = format!("http://127.0.0.1:{provider_port}");

        for stale in ["vault.db", "vault.db-wal", "vault.db-shm"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        run_quiet(stack::python(HELPER).args([
            "prepare",
            "--dir",
            &dir.display().to_string(),
            "--vault-port",
            &port.to_string(),
            "--peer-url",
            &provider_url,
        ]))?;

        let peer_config = format!(
            r#"{{"port":{provider_port},"client_id":"vault","client_secret":"vault-secret","redirect_uris":["http://127.0.0.1:{port}/connect/callback"],"access_token_ttl":{ACCESS_TOKEN_TTL}}}"#
        );
        let mut node = Command::new("node");
        node.arg(peers.join("oidc-upstream.mjs"))
            .env("PEER_CONFIG", peer_config);
        let mut provider = Service::spawn("oidc-provider", &mut pinned(node, provider_cpu), dir)?;
        provider.wait_ready(
            provider_port,
            "/.well-known/openid-configuration",
            Duration::from_secs(30),
        )?;

        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(dir.join("vault.toml"))
            .env("AGENTWARD_VAULT_KEY", KEY)
            .env("RUST_LOG", "warn");
        let mut vault = Service::spawn("vault", &mut pinned(command, cpu), dir)?;
        vault.wait_ready(port, "/healthz", Duration::from_secs(30))?;

        let linked = run_quiet(stack::python(HELPER).args([
            "link",
            "--dir",
            &dir.display().to_string(),
            "--vault",
            &format!("http://127.0.0.1:{port}"),
        ]))
        .map_err(|e| format!("{e}\nsee {}", vault.log.display()))?;
        println!(
            "[bench] vault on :{port}, oidc-provider on :{provider_port}: {}",
            linked.trim()
        );

        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        Ok(Stack {
            port,
            policy: read("exchange-policy.json")?,
            lua: dir.join("vault-exchange.lua"),
            raw: std::fs::read(dir.join("vault-exchange.http"))
                .map_err(|e| format!("vault-exchange.http: {e}"))?,
            vault,
            _provider: provider,
        })
    }

    /// One wrk window of token exchanges.
    fn window(&self, seconds: u32, cpu: Option<u32>) -> Result<Sample> {
        let url = format!("http://127.0.0.1:{}/oauth/token", self.port);
        super::wrk_script(&self.lua, &url, CONNECTIONS, seconds, cpu)
    }

    /// One paced window of `raw` at the target rate.
    fn paced_window(&self, raw: &[u8], seconds: u32, cpu: Option<u32>) -> Result<Paced> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        paced::run(
            addr,
            raw,
            TARGET_RPS as u32,
            CONNECTIONS,
            Duration::from_secs(u64::from(seconds)),
            cpu,
        )
        .map_err(|e| format!("paced load against the vault: {e}"))
    }

    /// A warm-up, then `rounds` rounds of one wrk window and one paced window.
    pub fn measure(&self, rounds: usize, seconds: u32, cpu: Option<u32>) -> Result<Runs> {
        let before = self.counters();
        let warm = self.window(1, cpu)?;
        if warm.failed > 0 {
            return Err(format!(
                "vault: {} of {} warm-up exchanges failed; see {}",
                warm.failed,
                warm.requests,
                self.vault.log.display()
            ));
        }
        let healthz = format!(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        );
        let mut runs = Runs {
            saturated: Vec::new(),
            paced: Vec::new(),
            floor: Vec::new(),
        };
        let mut line = format!(
            "[bench] vault /oauth/token, req/s | p99 ms at {TARGET_RPS:.0}/s | /healthz p99 ms:"
        );
        for _ in 0..rounds {
            let s = self.window(seconds, cpu)?;
            // Let the audit writer drain what the saturated window queued.
            std::thread::sleep(SETTLE);
            let p = self.paced_window(&self.raw, seconds, cpu)?;
            let f = self.paced_window(healthz.as_bytes(), seconds, cpu)?;
            line.push_str(&format!(" {:.0}|{:.2}|{:.2}", s.rps, p.p99_ms, f.p99_ms));
            runs.saturated.push(s);
            runs.paced.push(p);
            runs.floor.push(f);
        }
        println!("{line}");
        let after = self.counters();
        let count = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        let delta = |k: &str| count(&after, k).saturating_sub(count(&before, k));
        let requests: u64 = runs.saturated.iter().map(|s| s.requests).sum::<u64>()
            + runs.paced.iter().map(|p| p.requests).sum::<u64>()
            + warm.requests;
        println!(
            "[bench] vault outcomes during the run: issued_cached {}, issued_refreshed {}, upstream refreshes {} ({requests} requests sent)",
            delta("exchanges.issued_cached"),
            delta("exchanges.issued_refreshed"),
            delta("refreshes.ok"),
        );
        Ok(runs)
    }

    /// The vault's counters from `/metrics`, as `exchanges.<outcome>` and `refreshes.<result>`.
    fn counters(&self) -> HashMap<String, u64> {
        let Ok((_, text)) = stack::http_get(self.port, "/metrics") else {
            return HashMap::new();
        };
        read_metrics(&text)
    }
}

/// Reads the counters of Prometheus text we care about.
fn read_metrics(text: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        for (metric, short) in [
            ("agentward_vault_exchanges_total{", "exchanges"),
            ("agentward_vault_refreshes_total{", "refreshes"),
        ] {
            if let Some(labels) = series.strip_prefix(metric) {
                if let Some(label) = labels.split('"').nth(1) {
                    out.insert(format!("{short}.{label}"), value as u64);
                }
            }
        }
    }
    out
}

/// Prints the vault's figures against their targets.
pub fn report(runs: &Runs) {
    let saturated = &runs.saturated;
    let rps = median(saturated.iter().map(|s| s.rps).collect());
    let p99 = median(saturated.iter().map(|s| s.p99_ms).collect());
    let p50 = median(saturated.iter().map(|s| s.p50_ms).collect());
    let failed: u64 = saturated.iter().map(|s| s.failed).sum();
    println!(
        "{:<24} {:>10.0} {:>9.2} {:>9.2} {:>8}   (POST /oauth/token, wrk -t1 -c{CONNECTIONS}: saturated)",
        "vault", rps.0, p50.0, p99.0, failed
    );
    let paced = &runs.paced;
    let paced_rps = median(paced.iter().map(|p| p.rps).collect());
    let paced_p50 = median(paced.iter().map(|p| p.p50_ms).collect());
    let paced_p99 = median(paced.iter().map(|p| p.p99_ms).collect());
    let paced_max = median(paced.iter().map(|p| p.max_ms).collect());
    let paced_failed: u64 = paced.iter().map(|p| p.failed).sum();
    println!(
        "{:<24} {:>10.0} {:>9.2} {:>9.2} {:>8}   (paced at {TARGET_RPS:.0}/s over {CONNECTIONS} connections, open loop; max {:.2} ms)",
        "vault paced", paced_rps.0, paced_p50.0, paced_p99.0, paced_failed, paced_max.0
    );
    println!(
        "  vault exchange throughput {:.0}/s ({:.0}–{:.0}), target ≥ {TARGET_RPS:.0}/s: {}",
        rps.0,
        rps.1,
        rps.2,
        verdict(rps.0 >= TARGET_RPS)
    );
    let kept_rate = paced_rps.0 >= TARGET_RPS * 0.98 && paced_failed == 0;
    println!(
        "  vault exchange p99 at {TARGET_RPS:.0}/s {:.2} ms ({:.2}–{:.2}), target ≤ {TARGET_P99_MS:.0} ms: {}",
        paced_p99.0,
        paced_p99.1,
        paced_p99.2,
        verdict(kept_rate && paced_p99.0 <= TARGET_P99_MS)
    );
    let floor = median(runs.floor.iter().map(|p| p.p99_ms).collect());
    println!(
        "  (GET /healthz paced the same way, p99 {:.2} ms ({:.2}–{:.2}): the machine's floor; saturated exchanges, p99 {:.2} ms ({:.2}–{:.2}): queueing at full load)",
        floor.0, floor.1, floor.2, p99.0, p99.1, p99.2
    );
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "target not met"
    }
}

/// One `GET path` with a bearer token: the first request through the
/// token-exchange gateway, so exactly one exchange fills the cache (wrk's
/// concurrent first requests would each miss it). Status and body.
pub fn prime(port: u16, path: &str, token: &str) -> std::io::Result<(u16, String)> {
    let bearer = format!("Bearer {token}");
    crate::stack::http_get_with(port, path, &[("authorization", &bearer)])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_counters_are_read() {
        let text = "# TYPE agentward_vault_exchanges_total counter\n\
agentward_vault_exchanges_total{outcome=\"issued_cached\"} 42\n\
agentward_vault_refreshes_total{result=\"ok\"} 1\n\
agentward_vault_links_total{event=\"linked\"} 1\n";
        let m = read_metrics(text);
        assert_eq!(m["exchanges.issued_cached"], 42);
        assert_eq!(m["refreshes.ok"], 1);
        assert_eq!(m.len(), 2);
    }
}
