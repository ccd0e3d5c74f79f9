//! `cargo xtask bench --only spin`: the Spin components in their runner
//! (`host-test serve`, one fresh instance per request and component)
//! against a direct call to the upstream (Envoy's `direct_response`, the
//! same upstream the Envoy configurations proxy to), the instantiation cost
//! per request (the runner's `HOST_TEST_SERVE_TIMING` log), and the
//! components' sizes. The runners are pinned to the gateways' core, wrk and
//! the upstream to the other; windows alternate between configurations.

use super::{median, parse_wrk, pinned, print_table_header, start_upstream, Material, Pinning};
use crate::stack::{self, Service};
use crate::{build, root, run_quiet, Result};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `--only` name.
pub const NAME: &str = "spin";

/// The size target of a component, bytes (issue #13: 400 KB).
const SIZE_TARGET: u64 = 400 * 1000;

/// One configuration: what serves it and what wrk asks.
struct Config {
    name: &'static str,
    /// The path asked for.
    path: &'static str,
    /// Whether the bench token goes along.
    token: bool,
}

const DIRECT: Config = Config {
    name: "direct",
    path: "/portfolio",
    token: true,
};
/// jwt-identity alone, the bench policy (inline JWKS): one ES256 token,
/// verified on every request (an instance keeps nothing).
const IDENTITY: Config = Config {
    name: "spin-jwt-identity",
    path: "/portfolio",
    token: true,
};
/// The four components on policies/stock-trade-spin.json, a public route:
/// four instances, four policy parses and four hops, no callout.
const CHAIN_PUBLIC: Config = Config {
    name: "spin-chain-public",
    path: "/prices/ACME",
    token: false,
};

pub fn run(rounds: usize, window_secs: u32, material: &Material, dir: &Path) -> Result {
    build::spin()?;
    build::natives()?;
    let pin = Pinning::detect();
    let (upstream, upstream_port) = start_upstream(dir, pin.load)?;
    let upstream_url = format!("http://127.0.0.1:{upstream_port}");

    let identity_policy = dir.join("spin-identity-policy.json");
    std::fs::write(&identity_policy, &material.policy).map_err(|e| e.to_string())?;
    let chain_policy = dir.join("spin-chain-policy.json");
    let shipped = root().join("policies/stock-trade-spin.json");
    std::fs::copy(&shipped, &chain_policy).map_err(|e| format!("{}: {e}", shipped.display()))?;

    let mut served = Vec::new();
    for (config, components, policy) in [
        (&IDENTITY, &build::SPIN_COMPONENTS[..1], &identity_policy),
        (&CHAIN_PUBLIC, build::SPIN_COMPONENTS, &chain_policy),
    ] {
        let port = stack::free_port()?;
        let mut cmd = Command::new(root().join("target/debug/host-test"));
        cmd.arg("serve").env("HOST_TEST_SERVE_TIMING", "1");
        for c in components {
            cmd.args([
                "--component",
                &format!("{c}={}", build::spin_path(c).display()),
            ]);
        }
        cmd.arg("--policy").arg(policy);
        // The chain's secrets: placeholders (the public route needs none).
        for var in [
            "agentward_vault_client_secret=bench",
            "agentward_fga_key=bench",
            "agentward_approval_handle_key=YWdlbnR3YXJkIGRlbW8gYXBwcm92YWwgaWQga2V5ISE",
        ] {
            cmd.args(["--var", var]);
        }
        cmd.args(["--upstream", &upstream_url]);
        cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
        // As Spin runs the manifest: each component reaches only its next
        // hop (these requests make no callouts), so the figures include
        // the allow-list check every outgoing request pays.
        for (i, c) in components.iter().enumerate() {
            let next = components.get(i + 1).map_or(upstream_url.clone(), |n| {
                format!("http://{n}.spin.internal")
            });
            cmd.args(["--allow-outbound", &format!("{c}={next}")]);
        }
        let mut service = Service::spawn(config.name, &mut pinned(cmd, pin.gateways), dir)?;
        service.wait_ready(port, "/prices/ACME", Duration::from_secs(60))?;
        served.push((config, port, service));
    }
    let mut all: Vec<(&Config, u16)> = vec![(&DIRECT, upstream_port)];
    all.extend(served.iter().map(|(c, port, _)| (*c, *port)));

    for (config, port) in &all {
        let warm = wrk(material, config, *port, 1, pin.load)?;
        if warm.failed > 0 || warm.requests == 0 {
            return Err(format!(
                "{}: {} of {} warm-up requests failed; see {}",
                config.name,
                warm.failed,
                warm.requests,
                dir.display()
            ));
        }
    }
    println!(
        "[bench] Spin: {} configurations, {rounds} rounds of {window_secs}s windows, wrk -t1 -c8{}",
        all.len(),
        pin.describe().replace("Envoys", "host-test serve")
    );
    let mut samples: HashMap<&str, Vec<super::Sample>> = HashMap::new();
    for round in 0..rounds {
        let mut line = format!("[bench] round {}/{rounds}:", round + 1);
        for i in 0..all.len() {
            let (config, port) = all[(i + round) % all.len()];
            let sample = wrk(material, config, port, window_secs, pin.load)?;
            line.push_str(&format!(" {} {:.0}", config.name, sample.rps));
            samples.entry(config.name).or_default().push(sample);
        }
        println!("{line}");
    }
    println!();
    print_table_header();
    for (config, _) in &all {
        let runs = &samples[config.name];
        let med = |f: fn(&super::Sample) -> f64| median(runs.iter().map(f).collect()).0;
        let failed: u64 = runs.iter().map(|r| r.failed).sum();
        println!(
            "{:<24} {:>10.0} {:>9.2} {:>9.2} {:>8}",
            config.name,
            med(|r| r.rps),
            med(|r| r.p50_ms),
            med(|r| r.p99_ms),
            failed
        );
    }
    println!("\nratios, median of {rounds} rounds (min–max):");
    for (config, _, _) in &served {
        let (Some(xs), Some(ys)) = (samples.get(config.name), samples.get(DIRECT.name)) else {
            continue;
        };
        let (med, min, max) = median(xs.iter().zip(ys).map(|(x, y)| x.rps / y.rps).collect());
        println!(
            "  {:<44} {med:.3} ({min:.3}–{max:.3})",
            format!("{} vs {}", config.name, DIRECT.name)
        );
    }
    println!("\ninstantiation per request and component (host-test serve's log):");
    for (config, _, service) in &served {
        let text = std::fs::read_to_string(&service.log).unwrap_or_default();
        let micros: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("host-test serve: instantiated in "))
            .filter_map(|l| l.trim_end_matches(" µs").parse().ok())
            .collect();
        let count = micros.len();
        let mut sorted = micros.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let p90 = sorted.get(count * 9 / 10).copied().unwrap_or(f64::NAN);
        let (med, min, _) = median(micros);
        println!(
            "  {:<24} median {med:.0} µs, p90 {p90:.0} µs, min {min:.0} µs over {count} instantiations",
            config.name
        );
    }
    println!("\ncomponent sizes (target ≤ 400 KB):");
    for c in build::SPIN_COMPONENTS {
        let path = build::spin_path(c);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "  {:<40} {:>9} bytes ({:.1} KiB): {}",
            path.strip_prefix(root()).unwrap_or(&path).display(),
            size,
            size as f64 / 1024.0,
            super::vault::verdict(size <= SIZE_TARGET)
        );
    }
    drop(served);
    drop(upstream);
    Ok(())
}

/// One wrk window on a configuration (8 connections: every request is a
/// fresh instance per component, and the runner's core is the limit).
fn wrk(
    material: &Material,
    config: &Config,
    port: u16,
    seconds: u32,
    cpu: Option<u32>,
) -> Result<super::Sample> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c8", &format!("-d{seconds}s"), "--latency"]);
    if config.token {
        cmd.args(["-H", &format!("authorization: Bearer {}", material.token)]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{}", config.path));
    let out = run_quiet(&mut pinned(cmd, cpu))?;
    parse_wrk(&out).ok_or_else(|| format!("cannot read wrk's output:\n{out}"))
}
