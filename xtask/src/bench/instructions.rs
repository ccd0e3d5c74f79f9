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

/// A configuration counted again with one wasm file swapped
/// (`--variant CONFIG:FILE=PATH`): what a change to a plugin costs or saves,
/// side by side with the plugin as built, in one run.
#[derive(Debug, Clone)]
pub struct Variant {
    /// The configuration it copies (a `--only` name).
    config: String,
    /// The wasm file it replaces (`scope_fga.wasm`).
    file: String,
    /// The wasm file put in its place.
    path: PathBuf,
}

impl Variant {
    /// Reads `CONFIG:FILE=PATH`.
    pub fn parse(text: &str) -> Result<Variant> {
        let usage = || format!("--variant {text}: expected CONFIG:FILE=PATH");
        let (config, rest) = text.split_once(':').ok_or_else(usage)?;
        let (file, path) = rest.split_once('=').ok_or_else(usage)?;
        if config.is_empty() || !file.ends_with(".wasm") || path.is_empty() {
            return Err(usage());
        }
        let path = std::path::absolute(path).map_err(|e| format!("--variant {path}: {e}"))?;
        if !path.is_file() {
            return Err(format!("--variant: no file {}", path.display()));
        }
        Ok(Variant {
            config: config.to_string(),
            file: file.to_string(),
            path,
        })
    }

    /// The name it is printed under: the configuration and the new file's stem.
    fn name(&self) -> String {
        let stem = self.path.file_stem().and_then(|s| s.to_str());
        format!("{}+{}", self.config, stem.unwrap_or("variant"))
    }
}

/// Measures every configuration, prints the table and the ratios.
pub fn run(
    setups: &[&Setup],
    material: &Material,
    vault_stack: Option<&vault::Stack>,
    dir: &Path,
    requests: usize,
    variants: &[Variant],
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
    // Each variant: its configuration again, under its own name, with the
    // file swapped in the rendered Envoy config.
    let mut setups = setups;
    let mut swaps: HashMap<&str, &Variant> = HashMap::new();
    for v in variants {
        let Some(base) = setups.iter().find(|s| s.name == v.config) else {
            return Err(format!(
                "--variant {}: {} is not among the configurations counted (--only)",
                v.name(),
                v.config
            ));
        };
        let name: &'static str = Box::leak(v.name().into_boxed_str());
        let copy: &'static Setup = Box::leak(Box::new(Setup { name, ..**base }));
        setups.push(copy);
        swaps.insert(name, v);
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
        if let Some(v) = swaps.get(s.name) {
            swap(&rendered, v)?;
        }
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
    let mut dumps: HashMap<&str, Dump> = HashMap::new();
    // Every Envoy ready first: one still starting (compiling the plugins
    // under callgrind) would take the CPU from the one being warmed up,
    // whose V8 then has not finished optimising when the count starts.
    for (_, ports, service, _) in &mut gateways {
        service.wait_ready(ports[&stack::ADMIN], "/ready", Duration::from_secs(900))?;
    }
    for (s, ports, service, out) in &mut gateways {
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
        let dump = dumped(out, service.pid())?;
        let per_request = dump.total as f64 / requests as f64;
        println!(
            "[bench] {:<24} {per_request:>10.0} instructions per request ({requests} requests, {:.0}s)",
            s.name,
            started.elapsed().as_secs_f64()
        );
        counts.insert(s.name, per_request);
        dumps.insert(s.name, dump);
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
    // Envoy's binary is stripped: where the work ran is as far as
    // callgrind can tell, and enough to tell host work from wasm work.
    println!("\nwhere it ran, per request:  Envoy | V8 builtins | compiled wasm | libc");
    for s in setups {
        let d = dumps[s.name];
        let per = |n: u64| n as f64 / requests as f64;
        println!(
            "{:<24} {:>9.0} | {:>11.0} | {:>13.0} | {:>6.0}",
            s.name,
            per(d.envoy),
            per(d.builtins),
            per(d.wasm),
            per(d.libc)
        );
    }
    for v in variants {
        let name = v.name();
        if let (Some(n), Some(base)) = (counts.get(name.as_str()), counts.get(v.config.as_str())) {
            println!(
                "  {name}: {:+.0} instructions per request against {}",
                n - base,
                v.config
            );
        }
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

/// Puts `v.path` in place of the plugin file `v.file` in a rendered config.
fn swap(rendered: &Path, v: &Variant) -> Result {
    let io = |e: std::io::Error| format!("{}: {e}", rendered.display());
    let text = std::fs::read_to_string(rendered).map_err(io)?;
    let plugin = v.file.trim_end_matches(".wasm").replace('_', "-");
    let built = crate::build::wasm_path(&plugin).display().to_string();
    if !text.contains(&built) {
        return Err(format!(
            "--variant {}: {built} is not in {}",
            v.name(),
            v.config
        ));
    }
    std::fs::write(
        rendered,
        text.replace(&built, &v.path.display().to_string()),
    )
    .map_err(io)
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

/// A dump's instructions, in all and by where they ran.
#[derive(Debug, Default, Clone, Copy)]
struct Dump {
    total: u64,
    /// In Envoy's binary (HTTP, the proxy-wasm host, V8's runtime).
    envoy: u64,
    /// In V8's builtins (call wrappers, stubs): unnamed code that lies just
    /// past Envoy's own, where V8 keeps its embedded builtins.
    builtins: u64,
    /// In code V8 generated at run time, far from Envoy's binary: the
    /// plugins' wasm, compiled.
    wasm: u64,
    /// In libc (memory, strings).
    libc: u64,
}

/// The first dump of process `pid`, waiting for it.
fn dumped(out: &Path, pid: u32) -> Result<Dump> {
    let file = PathBuf::from(format!("{}.{pid}.1", out.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if let Some(total) = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
        {
            return Ok(Dump {
                total,
                ..by_object(&text)
            });
        }
        if Instant::now() > deadline {
            return Err(format!("no callgrind totals in {}", file.display()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sums a callgrind dump's own (exclusive) costs by object file: each cost
/// line counts for the last `fn=` above it, except the line after a
/// `calls=`, which is the called function's inclusive cost. Envoy's binary
/// is stripped: its functions and the unnamed ones are named by address,
/// which tells V8's builtins (next to Envoy's code) from compiled wasm.
fn by_object(text: &str) -> Dump {
    let mut objects: HashMap<&str, &str> = HashMap::new();
    let mut functions: HashMap<&str, &str> = HashMap::new();
    let mut costs: HashMap<(&str, &str), u64> = HashMap::new();
    let (mut object, mut function) = ("", "");
    let mut after_call = false;
    // `(id) name` the first time an id is used, `(id)` after.
    fn named<'a>(table: &mut HashMap<&'a str, &'a str>, spec: &'a str) -> &'a str {
        match spec.split_once(") ") {
            Some((id, name)) => table.entry(id).or_insert(name),
            None => table
                .get(spec.trim_end_matches(')'))
                .copied()
                .unwrap_or(spec),
        }
    }
    for line in text.lines() {
        if let Some(spec) = line.strip_prefix("ob=") {
            object = named(&mut objects, spec);
        } else if let Some(spec) = line.strip_prefix("fn=") {
            function = named(&mut functions, spec);
        } else if let Some(spec) = line.strip_prefix("cob=") {
            named(&mut objects, spec);
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            named(&mut functions, spec);
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if std::mem::take(&mut after_call) {
                continue;
            }
            let cost: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            *costs.entry((object, function)).or_default() += cost;
        }
    }
    let address = |f: &str| {
        let hex = f.strip_prefix("0x")?;
        let end = hex
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(hex.len());
        u64::from_str_radix(&hex[..end], 16).ok()
    };
    let is_envoy = |o: &str| o.ends_with("/envoy");
    let envoy_end = costs
        .keys()
        .filter(|(o, _)| is_envoy(o))
        .filter_map(|(_, f)| address(f))
        .max()
        .unwrap_or(0);
    let mut dump = Dump::default();
    for ((o, f), cost) in costs {
        let slot = if is_envoy(o) {
            &mut dump.envoy
        } else if o.contains("/libc.") {
            &mut dump.libc
        } else if o != "???" {
            continue;
        } else if address(f).is_some_and(|a| a <= envoy_end + BUILTINS_SPAN) {
            &mut dump.builtins
        } else {
            &mut dump.wasm
        };
        *slot += cost;
    }
    dump
}

/// How far past Envoy's last function V8's embedded builtins may lie.
const BUILTINS_SPAN: u64 = 256 << 20;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_go_to_their_object_and_calls_are_not_counted_twice() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n\
            ob=(1) /opt/envoy/bin/envoy\nfn=(1) 0x0000000000001000\n0 100\n+1 20\n\
            cob=(2) ???\ncfn=(2) 0x0000000000002000\ncalls=1 0\n0 5000\n\
            ob=(2)\nfn=(2)\n* 7\n-2 3\n\
            fn=(4) 0x00002aa6cfc08e80'2\n0 9\n\
            ob=(3) /usr/lib/x86_64-linux-gnu/libc.so.6\nfn=(3) memcpy\n0 40\n\
            ob=(1)\nfn=(1)\n0 1\ntotals: 180\n";
        let d = by_object(dump);
        assert_eq!((d.envoy, d.builtins, d.wasm, d.libc), (121, 10, 9, 40));
    }

    #[test]
    fn a_variant_names_its_configuration_and_file() {
        let file = std::env::current_exe().unwrap();
        let text = format!("scope-fga-cached:scope_fga.wasm={}", file.display());
        let v = Variant::parse(&text).unwrap();
        assert_eq!(
            (v.config.as_str(), v.file.as_str()),
            ("scope-fga-cached", "scope_fga.wasm")
        );
        let stem = file.file_stem().unwrap().to_str().unwrap();
        assert_eq!(v.name(), format!("scope-fga-cached+{stem}"));
        for bad in [
            "scope-fga-cached",
            "x:scope_fga=y",
            ":a.wasm=b",
            "x:a.wasm=/no/such/file",
        ] {
            assert!(Variant::parse(bad).is_err(), "{bad}");
        }
    }
}
