//! `cargo xtask bench --instructions N`: what each gateway configuration
//! costs in CPU instructions per request, counted by valgrind's callgrind.
//! Unlike req/s on a shared machine, the count is the same from run to run
//! (within 0.1% here), so a change of a few percent in a plugin shows.
//!
//! Each configuration's Envoy (one worker) runs under callgrind, is warmed up
//! (JIT tiers, connections), then its counters are zeroed, N requests are
//! sent one after another on one keep-alive connection, and the counters are
//! dumped. The count is user-space work of the whole Envoy process: HTTP
//! parsing, the filters, the upstream call; the kernel's share (sockets) is
//! not in it. So a ratio of counts is harsher than the ratio of req/s it
//! stands for: the same kernel cost sits on both sides of a real one.

use super::{
    gateway, render_envoy, start_upstream, vault, Material, Setup, Tokens, PATH, RATIOS, WORKERS,
};
use crate::stack::{self, Service};
use crate::Result;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Requests before the counters are zeroed.
const WARM_UP: usize = 500;

/// Measures every configuration, prints the table and the ratios.
pub fn run(
    setups: &[&Setup],
    material: &Material,
    vault_stack: Option<&vault::Stack>,
    dir: &Path,
    requests: usize,
) -> Result {
    // The count reads answers by `content-length`: a filtered (chunked)
    // RAG answer is measured in req/s and latency only.
    let (setups, skipped): (Vec<&Setup>, Vec<&Setup>) =
        setups.iter().copied().partition(|s| s.path == PATH);
    for s in skipped {
        println!(
            "[bench] {}: not counted in instructions (req/s only)",
            s.name
        );
    }
    let setups = setups.as_slice();
    let (_upstream, upstream_port) = start_upstream(dir, None)?;
    let envoy = stack::envoy_binary()?;
    println!(
        "[bench] starting {} Envoys under callgrind (a minute or more each)",
        setups.len()
    );
    let mut gateways = Vec::new();
    for s in setups.iter().copied() {
        let (ports, config) = gateway(s, material, vault_stack, upstream_port)?;
        let rendered = render_envoy(s.name, s.config, &ports, config, dir)?;
        let out = dir.join(format!("{}.callgrind", s.name));
        let service = Service::spawn(
            s.name,
            &mut under_callgrind(&envoy, &rendered, ports[&stack::ADMIN], &out),
            dir,
        )?;
        gateways.push((s, ports, service, out));
    }
    let tokens: Vec<String> = std::fs::read_to_string(&material.tokens_file)
        .map_err(|e| format!("{}: {e}", material.tokens_file.display()))?
        .lines()
        .map(str::to_string)
        .collect();

    let mut counts: HashMap<&str, f64> = HashMap::new();
    for (s, ports, service, out) in &mut gateways {
        service.wait_ready(ports[&stack::ADMIN], "/ready", Duration::from_secs(900))?;
        let port = ports[&stack::LISTENER];
        if matches!(
            s.key,
            super::Key::Exchange | super::Key::Fga | super::Key::FgaUncached
        ) {
            prime(s.name, port, s.path, &material.token)?;
        }
        let pick = |i: usize| match s.tokens {
            Tokens::Repeated => material.token.as_str(),
            Tokens::Fresh => tokens[i % tokens.len().max(1)].as_str(),
        };
        let started = Instant::now();
        settle(s.name, port, pick(0))?;
        send(port, WARM_UP, |i| pick(i + 1)).map_err(|e| format!("{}: warm-up: {e}", s.name))?;
        // V8 moves hot functions to optimised code on background threads,
        // which callgrind runs one at a time: let them finish, and warm up
        // again, so the count is of optimised code and repeats run to run.
        std::thread::sleep(Duration::from_secs(3));
        send(port, WARM_UP, |i| pick(i + 1)).map_err(|e| format!("{}: warm-up: {e}", s.name))?;
        control(service.pid(), "-z")?;
        send(port, requests, |i| pick(WARM_UP + 1 + i)).map_err(|e| format!("{}: {e}", s.name))?;
        control(service.pid(), "-d")?;
        let total = dumped_total(out, service.pid())?;
        let per_request = total as f64 / requests as f64;
        println!(
            "[bench] {:<24} {per_request:>10.0} instructions per request ({requests} requests, {:.0}s)",
            s.name,
            started.elapsed().as_secs_f64()
        );
        counts.insert(s.name, per_request);
    }
    drop(gateways);

    println!(
        "\nconfiguration            instructions/request   over bare   (callgrind, {requests} requests, {WORKERS} worker)"
    );
    let bare = counts.get("bare").copied();
    for s in setups {
        let n = counts[s.name];
        let over = bare
            .filter(|_| s.name != "bare")
            .map(|b| format!("{:+.0}", n - b))
            .unwrap_or_default();
        println!("{:<24} {n:>21.0} {over:>11}", s.name);
    }
    println!("\nratios of instructions (fewer is faster; harsher than req/s, see above):");
    for (a, b, target) in RATIOS {
        let (Some(x), Some(y)) = (counts.get(a), counts.get(b)) else {
            continue;
        };
        let target = target
            .map(|t| format!("   target ≥ {t:.2}×: {}", vault::verdict(y / x >= t)))
            .unwrap_or_default();
        println!("  {:<44} {:.3}{target}", format!("{a} vs {b}"), y / x);
    }
    Ok(())
}

/// The first request, which fills the exchange cache. Under callgrind the
/// first callout can outlast the policy's vault timeout (the vault answers,
/// Envoy is slow to read it): a few tries, as an agent would.
fn prime(name: &str, port: u16, path: &str, token: &str) -> Result {
    let mut last = String::new();
    for _ in 0..5 {
        match vault::prime(port, path, token) {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => last = format!("{status}: {}", body.trim()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Err(format!("{name}: the first request answered {last}"))
}

/// Waits for the first request to go through: under callgrind on a busy
/// machine, the first one (V8 compiling the module, the upstream connection)
/// can outlast the route timeout. A few tries, then the error.
fn settle(name: &str, port: u16, token: &str) -> Result {
    let mut last = String::new();
    for _ in 0..5 {
        match send(port, 1, |_| token) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    Err(format!("{name}: warm-up: {last}"))
}

/// Envoy under callgrind, dumping to `<out>.<pid>.<n>`.
fn under_callgrind(envoy: &Path, config: &Path, base_id: u16, out: &Path) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}.%p", out.display()))
        // V8 writes the code it runs: callgrind must see every change.
        .arg("--smc-check=all-non-file")
        .arg(envoy)
        .arg("-c")
        .arg(config)
        .args(["--base-id", &base_id.to_string()])
        .args(["--concurrency", &WORKERS.to_string()])
        .args(["--log-level", "warn"]);
    cmd
}

/// `callgrind_control <flag> <pid>`: `-z` zeroes the counters, `-d` dumps.
fn control(pid: u32, flag: &str) -> Result {
    let status = Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control {flag} {pid}: {status}"))
    }
}

/// The `totals:` of the first dump of process `pid`, waiting for it.
fn dumped_total(out: &Path, pid: u32) -> Result<u64> {
    let file = PathBuf::from(format!("{}.{pid}.1", out.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if let Some(total) = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
        {
            return Ok(total);
        }
        if Instant::now() > deadline {
            return Err(format!("no callgrind totals in {}", file.display()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `n` GETs one after another on one keep-alive connection, the
/// bearer token of request `i` being `token(i)`; fails on any non-2xx.
fn send<'a>(port: u16, n: usize, token: impl Fn(usize) -> &'a str) -> Result {
    let io = |e: std::io::Error| format!("127.0.0.1:{port}: {e}");
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(io)?;
    let mut writer = stream.try_clone().map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    for i in 0..n {
        let request = format!(
            "GET {PATH} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {}\r\n\r\n",
            token(i)
        );
        writer.write_all(request.as_bytes()).map_err(io)?;
        line.clear();
        reader.read_line(&mut line).map_err(io)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = None;
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(io)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.ok_or("a response without content-length")?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(io)?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "request {i} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
    }
    Ok(())
}
