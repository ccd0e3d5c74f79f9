//! `cargo xtask build`: the wasm plugins (release, `wasm32-wasip1`) and the
//! vault, each when its crate exists.

mod callbacks;
pub mod optimize;

use crate::{cargo, root, run_visible, Result};
use std::path::PathBuf;

/// Plugin crates in chain order (`identity-fga` is jwt-identity and
/// scope-fga in one filter); a missing crate is skipped.
pub const PLUGINS: &[&str] = &[
    "jwt-identity",
    "scope-fga",
    "identity-fga",
    "ciba-hold",
    "token-exchange",
];

pub const WASM_TARGET: &str = "wasm32-wasip1";

/// Where a plugin's `.wasm` lands: `target/wasm32-wasip1/release/<crate_name>.wasm`.
pub fn wasm_path(plugin: &str) -> PathBuf {
    root()
        .join("target")
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{}.wasm", plugin.replace('-', "_")))
}

/// The plugin crates present in this checkout.
pub fn present_plugins() -> Vec<&'static str> {
    PLUGINS
        .iter()
        .copied()
        .filter(|p| root().join("plugins").join(p).join("Cargo.toml").exists())
        .collect()
}

/// Builds the plugins, the Spin components, the host-test probe, the
/// native programs (the vault, `host-test serve`) and the playground;
/// returns the plugins' `.wasm` files.
pub fn run() -> Result<Vec<PathBuf>> {
    let wasm = plugins()?;
    spin()?;
    probe()?;
    natives()?;
    crate::playground::run()?;
    Ok(wasm)
}

/// The Spin components (`plugins/spin/<plugin>/`), in chain order.
pub const SPIN_COMPONENTS: &[&str] = &["jwt-identity", "scope-fga", "ciba-hold", "token-exchange"];

pub const SPIN_TARGET: &str = "wasm32-wasip2";

/// The Spin components' cargo profile (Cargo.toml: release at `opt-level = "z"`).
pub const SPIN_PROFILE: &str = "spin";

/// Where a Spin component lands: `target/wasm32-wasip2/spin/spin_<plugin>.wasm`.
pub fn spin_path(plugin: &str) -> PathBuf {
    root()
        .join("target")
        .join(SPIN_TARGET)
        .join(SPIN_PROFILE)
        .join(format!("spin_{}.wasm", plugin.replace('-', "_")))
}

/// Builds the Spin components (profile `spin`: release at `opt-level =
/// "z"`, `wasm32-wasip2`), shrinks each with `wasm-opt -Oz` (when binaryen
/// is installed: `cargo xtask setup`) and prints their sizes. Their runner,
/// `host-test serve`, comes from [`natives`].
pub fn spin() -> Result {
    println!("[build] Spin components: {}", SPIN_COMPONENTS.join(", "));
    let mut cmd = cargo();
    cmd.args(["build", "--profile", SPIN_PROFILE, "--target", SPIN_TARGET]);
    for p in SPIN_COMPONENTS {
        cmd.args(["-p", &format!("spin-{p}")]);
    }
    run_visible(&mut cmd)?;
    let wasm_opt = optimize::available();
    if !wasm_opt {
        println!(
            "[build] wasm-opt not found (binaryen: cargo xtask setup): components left as built"
        );
    }
    for p in SPIN_COMPONENTS {
        let path = spin_path(p);
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("{} was not produced: {e}", path.display()))?
            .len();
        let shown = path.strip_prefix(root()).unwrap_or(&path).display();
        if wasm_opt {
            let (before, after) = optimize::component(&path)?;
            println!(
                "[build] {shown:<40} {:>7.1} KiB (wasm-opt -Oz; {:.1} KiB before)",
                after as f64 / 1024.0,
                before as f64 / 1024.0
            );
        } else {
            println!("[build] {shown:<40} {:>7.1} KiB", size as f64 / 1024.0);
        }
    }
    Ok(())
}

/// Builds the probe plugin that host-test's own tests load (its own workspace).
pub fn probe() -> Result {
    let manifest = root().join("host-test/tests/probe/Cargo.toml");
    if manifest.exists() {
        println!("[build] host-test probe plugin");
        run_visible(
            cargo()
                .args([
                    "build",
                    "--release",
                    "--target",
                    WASM_TARGET,
                    "--manifest-path",
                ])
                .arg(&manifest),
        )?;
    }
    Ok(())
}

/// Builds the native programs, `agentward-vault` and `host-test` (the
/// Spin components' runner), with everything `cargo test --workspace`
/// needs, in one `cargo test --workspace --no-run`.
///
/// Not `cargo build -p …`: a build of some packages resolves other
/// features for the dependencies they share with the tests (serde, tokio,
/// wasmtime's…), so the `cargo test` after it compiled wasmtime and most of
/// the tree a second time: 17 of CI's minutes. The dev profile optimises
/// dependencies anyway; `cargo build --release -p agentward-vault` for a
/// deployment.
pub fn natives() -> Result {
    println!("[build] agentward-vault, host-test and the workspace's tests (cargo test --workspace --no-run)");
    run_visible(cargo().args(["test", "--workspace", "--no-run"]))
}

/// Builds the plugins that exist and returns their `.wasm` files.
pub fn plugins() -> Result<Vec<PathBuf>> {
    let plugins = present_plugins();
    if !plugins.is_empty() {
        println!("[build] wasm plugins: {}", plugins.join(", "));
        let mut cmd = cargo();
        cmd.args(["build", "--release", "--target", WASM_TARGET]);
        for p in &plugins {
            cmd.args(["-p", p]);
        }
        run_visible(&mut cmd)?;
    }
    let mut wasm = Vec::new();
    for p in plugins {
        let path = wasm_path(p);
        unexport_unused_callbacks(&path)?;
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("{} was not produced: {e}", path.display()))?
            .len();
        println!(
            "[build] {:<40} {:>7.1} KiB",
            path.strip_prefix(root()).unwrap_or(&path).display(),
            size as f64 / 1024.0
        );
        wasm.push(path);
    }
    Ok(wasm)
}

/// Rewrites a plugin's module without the proxy-wasm callbacks it does not
/// implement (see [`callbacks`]); Envoy then skips those calls.
fn unexport_unused_callbacks(path: &std::path::Path) -> Result {
    let module = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(pruned) = callbacks::prune(&module).map_err(|e| format!("{}: {e}", path.display()))?
    else {
        return Ok(());
    };
    // A new file, not a write through cargo's hard link into deps/.
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, pruned.module)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "[build] {}: unexported {} proxy-wasm callbacks it does not implement",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default(),
        pruned.removed.len(),
    );
    Ok(())
}
