//! `cargo xtask bench`: what each gateway configuration costs, measured so
//! that this machine's swings in speed cancel out (DESIGN.md, "Facts measured
//! here"). Every configuration's Envoy runs at once, one worker each, pinned
//! to core 1; wrk (and the static upstream) run on core 0. Short wrk windows
//! alternate between configurations in rotating order for several rounds;
//! ratios are taken within a round (measured at nearly the same moment) and
//! reported as median (min–max).
//!
//! The token-exchange configuration and the vault's own exchange throughput
//! need the real vault with an account linked at a real OpenID provider:
//! bench/vault.rs starts those (only when `--only` selects one of them).

mod ciba;
mod fga;
mod instructions;
mod paced;
mod spin;
mod vault;

use crate::stack::{self, Service};
use crate::{build, root, run_quiet, setup, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// How a configuration is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tokens {
    /// One token, the same on every request.
    Repeated,
    /// A different token on every request (cycling through many), so no
    /// verified-token cache ever hits.
    Fresh,
}

/// A benchmarked configuration: a config of envoy/, how it gets its key, and
/// how it is loaded. Add new ones here.
struct Setup {
    name: &'static str,
    config: &'static str,
    key: Key,
    tokens: Tokens,
    /// The path requested (GET).
    path: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// The config verifies nothing.
    None,
    /// The bench JWKS goes into `local_jwks` (native `jwt_authn`).
    LocalJwks,
    /// The bench policy (with the JWKS inline) is the plugin configuration.
    Policy,
    /// The bench policy plus a `vault` section and a `connection` on the
    /// route is every plugin's configuration; needs the bench vault.
    Exchange,
    /// The bench policy plus an `fga` section and a check on the route
    /// (envoy/bench/fga.py prepare); the FGA stand-in allows, once: later
    /// requests are decided from scope-fga's shared-data cache.
    Fga,
    /// The same policy with no decision cache (`cache_seconds` 0): every
    /// filtered response is checked at the FGA stand-in.
    FgaUncached,
}

const SETUPS: &[Setup] = &[
    Setup {
        name: "bare",
        config: "envoy/bench/bare.yaml",
        key: Key::None,
        tokens: Tokens::Repeated,
        path: PATH,
    },
    Setup {
        name: "native",
        config: "envoy/bench/jwt-authn.yaml",
        key: Key::LocalJwks,
        tokens: Tokens::Fresh,
        path: PATH,
    },
    Setup {
        name: "native-cache",
        config: "envoy/bench/jwt-authn-cache.yaml",
        key: Key::LocalJwks,
        tokens: Tokens::Repeated,
        path: PATH,
    },
    Setup {
        name: "jwt-identity-fresh",
        config: "envoy/jwt-identity.yaml",
        key: Key::Policy,
        tokens: Tokens::Fresh,
        path: PATH,
    },
    Setup {
        name: "jwt-identity-repeated",
        config: "envoy/jwt-identity.yaml",
        key: Key::Policy,
        tokens: Tokens::Repeated,
        path: PATH,
    },
    // jwt-identity → token-exchange, the upstream token in the shared-data
    // cache after the first request's exchange.
    Setup {
        name: "token-exchange-warm",
        config: "envoy/bench/token-exchange.yaml",
        key: Key::Exchange,
        tokens: Tokens::Repeated,
        path: PATH,
    },
    // jwt-identity → scope-fga, the decision in the shared-data cache after
    // the first request's check.
    Setup {
        name: "scope-fga-cached",
        config: "envoy/bench/scope-fga.yaml",
        key: Key::Fga,
        tokens: Tokens::Repeated,
        path: PATH,
    },
    // The same gateway as one filter (identity_fga.wasm): one context and
    // one read of the request for the two.
    Setup {
        name: "identity-fga-cached",
        config: "envoy/bench/identity-fga.yaml",
        key: Key::Fga,
        tokens: Tokens::Repeated,
        path: PATH,
    },
    // RAG filtering of a 50-item answer (envoy/bench/upstream.yaml's
    // /research/ routes), against the same answer on a route without a
    // filter, through the same chain: the items' decisions cached after
    // the first request, then none cached (one batch-check per request at
    // the FGA stand-in, which allows the even-numbered notes).
    Setup {
        name: "rag-unfiltered",
        config: "envoy/bench/scope-fga.yaml",
        key: Key::Fga,
        tokens: Tokens::Repeated,
        path: RAG_UNFILTERED,
    },
    Setup {
        name: "rag-filtered",
        config: "envoy/bench/scope-fga.yaml",
        key: Key::Fga,
        tokens: Tokens::Repeated,
        path: RAG_FILTERED,
    },
    Setup {
        name: "rag-filtered-uncached",
        config: "envoy/bench/scope-fga.yaml",
        key: Key::FgaUncached,
        tokens: Tokens::Repeated,
        path: RAG_FILTERED,
    },
];

/// The RAG routes of the FGA bench policy (envoy/bench/fga.py prepare).
const RAG_FILTERED: &str = "/research/search";
const RAG_UNFILTERED: &str = "/research/all";

/// `--only` name of the vault's own exchange throughput (not a gateway).
const VAULT: &str = "vault";

/// The ratios printed last: (measured, against, target: at least this).
const RATIOS: &[(&str, &str, Option<f64>)] = &[
    ("native", "bare", None),
    ("native-cache", "bare", None),
    ("jwt-identity-fresh", "bare", None),
    ("jwt-identity-repeated", "bare", None),
    ("jwt-identity-fresh", "native", None),
    ("jwt-identity-repeated", "native-cache", None),
    ("token-exchange-warm", "jwt-identity-repeated", Some(0.9)),
    ("scope-fga-cached", "jwt-identity-repeated", Some(0.9)),
    ("identity-fga-cached", "jwt-identity-repeated", Some(0.9)),
    ("rag-filtered", "rag-unfiltered", None),
    ("rag-filtered-uncached", "rag-unfiltered", None),
];

/// Envoy workers per gateway (`--concurrency`).
const WORKERS: u64 = 1;

const AUDIENCE: &str = "https://api.stock-trade.example";
const PATH: &str = "/portfolio";

pub struct Options {
    rounds: usize,
    window_secs: u32,
    tokens: usize,
    /// Only these configurations (all when empty).
    only: Vec<String>,
    /// Count instructions per request over this many requests (callgrind)
    /// instead of measuring req/s; 0: off.
    instructions: usize,
    /// Configurations added beside the ones measured, each with one wasm
    /// file swapped (`--variant`); counted with `--instructions` only.
    variants: Vec<instructions::Variant>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            rounds: 8,
            window_secs: 2,
            tokens: 60_000,
            only: Vec::new(),
            instructions: 0,
            variants: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = |v: &str| {
                v.parse::<usize>()
                    .map_err(|_| format!("{flag}: not a number: {v}"))
            };
            match flag.as_str() {
                "--rounds" => o.rounds = number(value)?.max(1),
                "--window" => o.window_secs = number(value)?.max(1) as u32,
                "--tokens" => o.tokens = number(value)?.max(100),
                "--only" => o.only = value.split(',').map(str::to_string).collect(),
                "--instructions" => o.instructions = number(value)?.max(1),
                "--variant" => o.variants.push(instructions::Variant::parse(value)?),
                _ => return Err(format!("unknown bench option {flag}")),
            }
        }
        if !o.variants.is_empty() && o.instructions == 0 {
            return Err("--variant is counted with --instructions N only".into());
        }
        Ok(o)
    }
}

/// One wrk window.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    failed: u64,
}

/// ciba-hold's figures (`--only` these names): approve → resumed latency
/// with long-poll and with plain polling, and requests held at once on one
/// worker; measured by bench/approval.py with real processes.
const APPROVAL: &[&str] = &["approval-longpoll", "approval-polling", "approval-held"];

pub fn run(options: Options) -> Result {
    let approvals: Vec<&str> = APPROVAL
        .iter()
        .copied()
        .filter(|n| options.only.iter().any(|o| o == n))
        .collect();
    if !approvals.is_empty() {
        if approvals.len() != options.only.len() {
            return Err(format!(
                "run {} on their own (--only {})",
                APPROVAL.join(", "),
                approvals.join(",")
            ));
        }
        setup::run(setup::Extras::default())?;
        build::run()?; // the plugins and the vault
        return crate::run_visible(
            stack::python("xtask/src/bench/approval.py").args(["--only", &approvals.join(",")]),
        );
    }
    if options.only.iter().any(|o| o == spin::NAME) {
        if options.only.len() != 1 {
            return Err(format!(
                "run {} on its own (--only {})",
                spin::NAME,
                spin::NAME
            ));
        }
        setup::run(setup::Extras {
            wrk: true,
            valgrind: false,
        })?;
        let dir = root().join("target/bench");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // One repeated token is all it sends.
        let material = bench_material(&dir, 100)?;
        return spin::run(options.rounds, options.window_secs, &material, &dir);
    }
    let selected = |name: &str| options.only.is_empty() || options.only.iter().any(|o| o == name);
    let setups: Vec<&Setup> = SETUPS.iter().filter(|s| selected(s.name)).collect();
    // The vault's own figures are req/s and latency only.
    let vault_bench = selected(VAULT) && options.instructions == 0;
    let fga_bench = selected(fga::NAME) && options.instructions == 0;
    let ciba_bench = selected(ciba::NAME) && options.instructions == 0;
    if setups.is_empty() && !vault_bench {
        if fga_bench || ciba_bench {
            // The vault's FGA API or CIBA endpoint alone: no gateway.
            let pin = Pinning::detect();
            if fga_bench {
                fga::run(options.rounds, options.window_secs, &pin)?;
            }
            if ciba_bench {
                setup::run(setup::Extras {
                    wrk: true,
                    valgrind: false,
                })?;
                ciba::run(options.rounds, options.window_secs, &pin)?;
            }
            return Ok(());
        }
        let names: Vec<&str> = SETUPS
            .iter()
            .map(|s| s.name)
            .chain([VAULT, fga::NAME, ciba::NAME, spin::NAME])
            .chain(APPROVAL.iter().copied())
            .collect();
        return Err(format!(
            "--only names none of the configurations: {}",
            names.join(", ")
        ));
    }
    let needs_vault = vault_bench || setups.iter().any(|s| s.key == Key::Exchange);

    setup::run(setup::Extras {
        wrk: options.instructions == 0,
        valgrind: options.instructions > 0,
    })?;
    build::plugins()?;
    let vault_binary = if needs_vault {
        Some(vault::build()?)
    } else {
        None
    };
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut material = bench_material(&dir, options.tokens)?;
    // The FGA stand-in scope-fga asks once (its decisions are then cached).
    let _fga_stub = if setups
        .iter()
        .any(|s| matches!(s.key, Key::Fga | Key::FgaUncached))
    {
        let port = stack::free_port()?;
        let mut stub = Service::spawn(
            "fga-stub",
            stack::python("envoy/bench/fga.py").args(["serve", "--port", &port.to_string()]),
            &dir,
        )?;
        stub.wait_ready(port, "/healthz", Duration::from_secs(30))?;
        material.fga_port = port;
        Some(stub)
    } else {
        None
    };
    let pin = Pinning::detect();

    let vault_stack = match &vault_binary {
        Some(binary) => Some(vault::Stack::start(binary, &dir, pin.gateways, pin.load)?),
        None => None,
    };

    if options.instructions > 0 {
        return instructions::run(
            &setups,
            &material,
            vault_stack.as_ref(),
            &dir,
            options.instructions,
            &options.variants,
        );
    }
    let mut samples: HashMap<&str, Vec<Sample>> = HashMap::new();
    if !setups.is_empty() {
        measure_gateways(
            &options,
            &setups,
            &material,
            vault_stack.as_ref(),
            &pin,
            &dir,
            &mut samples,
        )?;
    }
    if let Some(stack) = vault_stack.as_ref().filter(|_| vault_bench) {
        println!();
        let runs = stack.measure(options.rounds, options.window_secs, pin.load)?;
        if setups.is_empty() {
            print_table_header();
        }
        vault::report(&runs);
    }
    drop(vault_stack);
    if fga_bench {
        println!();
        fga::run(options.rounds, options.window_secs, &pin)?;
    }
    if ciba_bench {
        println!();
        ciba::run(options.rounds, options.window_secs, &pin)?;
    }

    if setups.is_empty() {
        return Ok(());
    }
    println!("\nratios, median of {} rounds (min–max):", options.rounds);
    for (a, b, target) in RATIOS {
        let (Some(xs), Some(ys)) = (samples.get(a), samples.get(b)) else {
            continue;
        };
        let ratios = xs.iter().zip(ys).map(|(x, y)| x.rps / y.rps).collect();
        let (med, min, max) = median(ratios);
        let target = target
            .map(|t| format!("   target ≥ {t:.2}×: {}", vault::verdict(med >= t)))
            .unwrap_or_default();
        println!(
            "  {:<44} {med:.2} ({min:.2}–{max:.2}){target}",
            format!("{a} vs {b}")
        );
    }
    Ok(())
}

/// The gateway configurations side by side: start them all, warm up, then
/// interleaved wrk windows; prints the rounds, the table and the plugins'
/// counters, and leaves the samples for the ratios.
fn measure_gateways<'a>(
    options: &Options,
    setups: &[&'a Setup],
    material: &Material,
    vault_stack: Option<&vault::Stack>,
    pin: &Pinning,
    dir: &Path,
    samples: &mut HashMap<&'a str, Vec<Sample>>,
) -> Result {
    let (upstream, upstream_port) = start_upstream(dir, pin.load)?;
    let mut gateways = Vec::new();
    for s in setups.iter().copied() {
        let (ports, config) = gateway(s, material, vault_stack, upstream_port)?;
        let service = start_envoy(s.name, s.config, &ports, config, dir, pin.gateways)?;
        gateways.push((s, ports, service));
    }
    // Where each configuration's next window starts in the token file, so
    // fresh tokens stay fresh across windows (and past the warm-up).
    let mut offsets: HashMap<&str, u64> = HashMap::new();
    for (s, ports, service) in &mut gateways {
        service.wait_ready(ports[&stack::ADMIN], "/ready", Duration::from_secs(60))?;
        if matches!(s.key, Key::Exchange | Key::Fga | Key::FgaUncached) {
            // One request first: exactly one exchange (check) fills the cache.
            let (status, body) = vault::prime(ports[&stack::LISTENER], s.path, &material.token)
                .map_err(|e| format!("{}: first request: {e}", s.name))?;
            if status != 200 {
                return Err(format!(
                    "{}: the first request answered {status}: {}; see {}",
                    s.name,
                    body.trim(),
                    service.log.display()
                ));
            }
        }
        // Warm up (JIT, connections) and check the configuration answers 200.
        let warm = wrk(material, s, ports[&stack::LISTENER], 1, 0, pin.load)?;
        if warm.failed > 0 || warm.requests == 0 {
            return Err(format!(
                "{}: {} of {} warm-up requests failed; see {}",
                s.name,
                warm.failed,
                warm.requests,
                service.log.display()
            ));
        }
        offsets.insert(s.name, warm.requests + 64);
    }
    if let Some(load) = load_average() {
        if load > 1.5 {
            println!("[bench] load average {load:.1} before the run: other work competes for the cores, expect noise");
        }
    }
    println!(
        "[bench] {} configurations, {} rounds of {}s windows, wrk -t1 -c32{}",
        setups.len(),
        options.rounds,
        options.window_secs,
        pin.describe()
    );

    for round in 0..options.rounds {
        let mut line = format!("[bench] round {}/{}:", round + 1, options.rounds);
        for i in 0..gateways.len() {
            let (s, ports, _) = &gateways[(i + round) % gateways.len()];
            let offset = offsets.entry(s.name).or_insert(0);
            let sample = wrk(
                material,
                s,
                ports[&stack::LISTENER],
                options.window_secs,
                *offset,
                pin.load,
            )?;
            *offset += sample.requests + 64;
            line.push_str(&format!(" {} {:.0}", s.name, sample.rps));
            samples.entry(s.name).or_default().push(sample);
        }
        println!("{line}");
    }

    println!();
    print_table_header();
    for s in setups {
        let runs = &samples[s.name];
        let med = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect()).0;
        let failed: u64 = runs.iter().map(|r| r.failed).sum();
        println!(
            "{:<24} {:>10.0} {:>9.2} {:>9.2} {:>8}",
            s.name,
            med(|r| r.rps),
            med(|r| r.p50_ms),
            med(|r| r.p99_ms),
            failed
        );
    }
    for (s, ports, _) in &gateways {
        let stat = |name: &str| envoy_counter(ports[&stack::ADMIN], name);
        if matches!(s.key, Key::Policy | Key::Exchange) {
            let (hit, miss) = (
                stat("agentward.jwt.cache_hit"),
                stat("agentward.jwt.cache_miss"),
            );
            let (foreign, pure) = (
                stat("agentward.jwt.verify_foreign"),
                stat("agentward.jwt.verify_pure"),
            );
            println!("{:<24} cache hits {hit}, misses {miss}; verify_foreign {foreign}, verify_pure {pure}", s.name);
        }
        if s.key == Key::Exchange {
            let calls = stat("agentward.exchange.vault_call");
            let hits = stat("agentward.exchange.cache_hit");
            let total = stat("http.gateway.downstream_rq_total");
            let per_request = calls as f64 / total.max(1) as f64;
            // One exchange per worker fills the shared cache; the rest hit it.
            println!(
                "{:<24} exchange cache hits {hits}; vault calls {calls} for {total} requests: {per_request:.1e} vault calls per request, target 0 (≤ 1 per worker): {}",
                s.name,
                vault::verdict(total > 0 && calls <= WORKERS)
            );
        }
        if s.path == RAG_FILTERED {
            // Round trips to the FGA service (its cluster is `vault`).
            let calls = stat("cluster.vault.upstream_rq_total");
            let total = stat("http.gateway.downstream_rq_total");
            let (filtered, refused) = (
                stat("agentward.fga.filtered"),
                stat("agentward.fga.filter_refused"),
            );
            println!(
                "{:<24} {filtered} responses cut (50 items to 25), {refused} refused; {calls} FGA calls for {total} requests: {:.3} per request",
                s.name,
                calls as f64 / total.max(1) as f64
            );
        }
    }
    let p50 = |name: &str| {
        samples
            .get(name)
            .map(|r| median(r.iter().map(|x| x.p50_ms).collect()).0)
    };
    let p99 = |name: &str| {
        samples
            .get(name)
            .map(|r| median(r.iter().map(|x| x.p99_ms).collect()).0)
    };
    for filtered in ["rag-filtered", "rag-filtered-uncached"] {
        if let (Some(a50), Some(b50), Some(a99), Some(b99)) = (
            p50(filtered),
            p50("rag-unfiltered"),
            p99(filtered),
            p99("rag-unfiltered"),
        ) {
            println!(
                "{filtered:<24} added latency against rag-unfiltered (medians of rounds): p50 {:+.2} ms, p99 {:+.2} ms",
                a50 - b50,
                a99 - b99
            );
        }
    }
    drop(gateways);
    drop(upstream);
    Ok(())
}

/// The static upstream every gateway forwards to, and its port.
fn start_upstream(dir: &Path, cpu: Option<u32>) -> Result<(Service, u16)> {
    let upstream_port = stack::free_port()?;
    let upstream_admin = stack::free_port()?;
    let upstream_ports = HashMap::from([
        (stack::UPSTREAM, upstream_port),
        (stack::ADMIN, upstream_admin),
    ]);
    let mut upstream = start_envoy(
        "upstream",
        "envoy/bench/upstream.yaml",
        &upstream_ports,
        None,
        dir,
        cpu,
    )?;
    upstream.wait_ready(upstream_admin, "/ready", Duration::from_secs(60))?;
    Ok((upstream, upstream_port))
}

/// A gateway's ports (fresh ones for its listener, admin and IdP) and what
/// its rendered config carries.
fn gateway<'a>(
    s: &Setup,
    material: &'a Material,
    vault_stack: Option<&'a vault::Stack>,
    upstream_port: u16,
) -> Result<(HashMap<u16, u16>, Option<Configuration<'a>>)> {
    let mut ports = HashMap::from([
        (stack::LISTENER, stack::free_port()?),
        (stack::ADMIN, stack::free_port()?),
        (stack::UPSTREAM, upstream_port),
        (stack::IDP, stack::free_port()?),
    ]);
    let config = match (s.key, vault_stack) {
        (Key::Exchange, Some(v)) => {
            ports.insert(vault::CONVENTIONAL_PORT, v.port);
            Some(Configuration::Policy(&v.policy))
        }
        (Key::Exchange, None) => return Err(format!("{}: needs the vault", s.name)),
        (Key::Fga, _) => {
            ports.insert(vault::CONVENTIONAL_PORT, material.fga_port);
            Some(Configuration::Policy(&material.fga_policy))
        }
        (Key::FgaUncached, _) => {
            ports.insert(vault::CONVENTIONAL_PORT, material.fga_port);
            Some(Configuration::Policy(&material.fga_policy_uncached))
        }
        (Key::Policy, _) => Some(Configuration::Policy(&material.policy)),
        (Key::LocalJwks, _) => Some(Configuration::LocalJwks(&material.jwks)),
        (Key::None, _) => None,
    };
    Ok((ports, config))
}

fn print_table_header() {
    println!(
        "{:<24} {:>10} {:>9} {:>9} {:>8}",
        "configuration", "req/s", "p50 ms", "p99 ms", "non-2xx"
    );
}

/// What a rendered config carries besides its ports.
#[derive(Clone, Copy)]
enum Configuration<'a> {
    /// This policy (JSON) is every plugin's configuration.
    Policy(&'a str),
    /// This JWKS goes into `local_jwks` (native `jwt_authn`).
    LocalJwks(&'a str),
}

/// The one-minute load average (Linux).
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Median, min and max.
fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mid = v.len() / 2;
    let med = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    (med, v[0], v[v.len() - 1])
}

/// Keys, tokens and the policy for the bench, in `target/bench/`; minted
/// again when older than 12 hours (the tokens live a day) or too few.
struct Material {
    jwks: String,
    policy: String,
    /// The bench policy with scope-fga's check, and the FGA stand-in's port.
    fga_policy: String,
    /// The same without a decision cache.
    fga_policy_uncached: String,
    fga_port: u16,
    tokens_file: PathBuf,
    token: String,
    lua: PathBuf,
}

fn bench_material(dir: &Path, count: usize) -> Result<Material> {
    let tokens_file = dir.join("tokens.txt");
    let fresh_enough = std::fs::metadata(&tokens_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < Duration::from_secs(12 * 3600));
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    if !fresh_enough || lines(&tokens_file) < count || !dir.join("policy.json").exists() {
        println!("[bench] minting {count} ES256 tokens");
        run_quiet(
            stack::python("examples/stock-trade/idp.py").args([
                "bench-tokens",
                "--out",
                &dir.display().to_string(),
                "--count",
                &count.to_string(),
                "--aud",
                AUDIENCE,
                "--policy",
                &root()
                    .join("policies/stock-trade.json")
                    .display()
                    .to_string(),
            ]),
        )?;
    }
    let read =
        |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let tokens = read("tokens.txt")?;
    let token = tokens.lines().next().unwrap_or_default().to_string();
    let lua = dir.join("fresh-tokens.lua");
    std::fs::write(&lua, FRESH_TOKENS_LUA).map_err(|e| e.to_string())?;
    run_quiet(stack::python("envoy/bench/fga.py").args([
        "prepare",
        "--dir",
        &dir.display().to_string(),
    ]))?;
    Ok(Material {
        jwks: read("jwks.json")?,
        policy: read("policy.json")?,
        fga_policy: read("fga-policy.json")?,
        fga_policy_uncached: read("fga-policy-uncached.json")?,
        fga_port: 0,
        tokens_file,
        token,
        lua,
    })
}

/// wrk script: a different token on every request, cycling through the file
/// given as the first argument from the offset given as the second.
const FRESH_TOKENS_LUA: &str = r#"local tokens = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  i = tonumber(args[2] or "0") % #tokens
end
function request()
  i = i % #tokens + 1
  return wrk.format("GET", "/portfolio", {["authorization"] = "Bearer " .. tokens[i]})
end
"#;

fn start_envoy(
    name: &str,
    config: &str,
    ports: &HashMap<u16, u16>,
    with: Option<Configuration>,
    dir: &Path,
    cpu: Option<u32>,
) -> Result<Service> {
    let path = render_envoy(name, config, ports, with, dir)?;
    let envoy = stack::envoy(&path, ports[&stack::ADMIN], WORKERS as u32);
    Service::spawn(name, &mut pinned(envoy, cpu), dir)
}

/// Writes `config` with these ports (and policy or JWKS) to `<dir>/<name>.yaml`.
fn render_envoy(
    name: &str,
    config: &str,
    ports: &HashMap<u16, u16>,
    with: Option<Configuration>,
    dir: &Path,
) -> Result<PathBuf> {
    let template =
        std::fs::read_to_string(root().join(config)).map_err(|e| format!("{config}: {e}"))?;
    let rendered = match with {
        Some(Configuration::Policy(policy)) => stack::render(&template, ports, Some(policy)),
        Some(Configuration::LocalJwks(jwks)) => {
            stack::with_local_jwks(&stack::render(&template, ports, None), jwks)
        }
        None => stack::render(&template, ports, None),
    };
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, rendered).map_err(|e| e.to_string())?;
    Ok(path)
}

fn pinned(cmd: Command, cpu: Option<u32>) -> Command {
    let Some(cpu) = cpu else { return cmd };
    let mut taskset = Command::new("taskset");
    taskset
        .args(["-c", &cpu.to_string()])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => taskset.env(name, value),
            None => taskset.env_remove(name),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        taskset.current_dir(dir);
    }
    taskset
}

/// Which cores the gateways and the load generator get (none on one core or
/// without taskset).
struct Pinning {
    gateways: Option<u32>,
    load: Option<u32>,
}

impl Pinning {
    fn detect() -> Pinning {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let taskset = Command::new("taskset").arg("-V").output().is_ok();
        if cores >= 2 && taskset {
            Pinning {
                gateways: Some(1),
                load: Some(0),
            }
        } else {
            Pinning {
                gateways: None,
                load: None,
            }
        }
    }

    fn describe(&self) -> String {
        match (self.gateways, self.load) {
            (Some(g), Some(l)) => format!(", Envoys on core {g}, wrk and upstream on core {l}"),
            _ => ", unpinned".into(),
        }
    }
}

fn wrk(
    m: &Material,
    s: &Setup,
    port: u16,
    seconds: u32,
    offset: u64,
    cpu: Option<u32>,
) -> Result<Sample> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"]);
    let url = format!("http://127.0.0.1:{port}{}", s.path);
    match s.tokens {
        Tokens::Repeated => {
            cmd.args(["-H", &format!("authorization: Bearer {}", m.token), &url]);
        }
        Tokens::Fresh => {
            cmd.arg("-s")
                .arg(&m.lua)
                .arg(&url)
                .arg("--")
                .arg(&m.tokens_file)
                .arg(offset.to_string());
        }
    }
    let out = run_quiet(&mut pinned(cmd, cpu))?;
    parse_wrk(&out).ok_or_else(|| format!("cannot read wrk's output:\n{out}"))
}

/// One wrk window of `seconds` on one thread against `url`, its requests
/// made by the `lua` script.
fn wrk_script(
    lua: &Path,
    url: &str,
    connections: u32,
    seconds: u32,
    cpu: Option<u32>,
) -> Result<Sample> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
        "-s",
    ])
    .arg(lua)
    .arg(url);
    let out = run_quiet(&mut pinned(cmd, cpu))?;
    parse_wrk(&out).ok_or_else(|| format!("cannot read wrk's output:\n{out}"))
}

fn parse_wrk(out: &str) -> Option<Sample> {
    let mut sample = Sample {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        requests: 0,
        failed: 0,
    };
    for line in out.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => sample.rps = v.parse().ok()?,
            (Some("50%"), Some(v)) => sample.p50_ms = millis(v)?,
            (Some("99%"), Some(v)) => sample.p99_ms = millis(v)?,
            (Some(n), Some("requests")) => sample.requests = n.parse().ok()?,
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            sample.failed = n.trim().parse().ok()?;
        }
    }
    (sample.rps > 0.0).then_some(sample)
}

fn millis(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// A counter from an Envoy's admin /stats: a plugin's (`wasmcustom.<name>`)
/// or Envoy's own (`http.gateway.downstream_rq_total`).
fn envoy_counter(admin: u16, name: &str) -> u64 {
    let Ok((_, body)) = stack::http_get(admin, &format!("/stats?filter={name}")) else {
        return 0;
    };
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .find(|(k, _)| k.ends_with(name))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const WRK: &str = "Running 2s test @ http://127.0.0.1:10000/portfolio
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  300.00us   9.80ms   90.00%
    Req/Sec    21.07k     1.20k   23.00k    80.00%
  Latency Distribution
     50%    1.45ms
     75%    1.60ms
     90%    1.80ms
     99%  850.00us
  41953 requests in 2.00s, 5.20MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  20976.50
Transfer/sec:      2.60MB";

    #[test]
    fn wrk_output_is_read() {
        let s = parse_wrk(WRK).unwrap();
        assert_eq!(s.rps, 20976.5);
        assert_eq!(s.p50_ms, 1.45);
        assert_eq!(s.p99_ms, 0.85);
        assert_eq!(s.requests, 41953);
        assert_eq!(s.failed, 12);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }
}
