//! `cargo xtask playground`: the policy playground as plain static files in
//! `target/playground/`: `agentward-playground` built for the browser
//! (`wasm32-unknown-unknown`, profile `browser`) and shrunk with
//! `wasm-opt -Oz`, its JavaScript glue from the `wasm-bindgen` CLI (the
//! version the crate pins, installed by `cargo xtask setup`), and the page
//! (`playground/www/`). The vault serves the folder at `/playground/`
//! (`playground_dir`); any static host can too.

use crate::{cargo, root, run_quiet, run_visible, Result};
use std::path::PathBuf;
use std::process::Command;

/// The `wasm-bindgen` CLI must equal the crate the playground links.
pub const WASM_BINDGEN_VERSION: &str = "0.2.130";

const TARGET: &str = "wasm32-unknown-unknown";

/// Where the page is written.
pub fn out_dir() -> PathBuf {
    root().join("target/playground")
}

/// The project-local `wasm-bindgen` (`cargo xtask setup` installs it).
pub fn wasm_bindgen() -> PathBuf {
    root().join(".tools/cargo/bin/wasm-bindgen")
}

/// Builds the page into [`out_dir`] and prints its weight.
pub fn run() -> Result {
    println!("[playground] agentward-playground for {TARGET}");
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--profile",
        "browser",
        "--target",
        TARGET,
        "-p",
        "agentward-playground",
    ]);
    run_visible(&mut cmd)?;
    let built = root().join(format!("target/{TARGET}/browser/agentward_playground.wasm"));
    let out = out_dir();
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let bindgen = wasm_bindgen();
    if !bindgen.exists() {
        return Err(format!(
            "{} is missing: run `cargo xtask setup`",
            bindgen.display()
        ));
    }
    // wasm-opt before wasm-bindgen: Debian's binaryen (108) breaks the
    // externref table wasm-bindgen's glue fills at start-up.
    let module = if crate::build::optimize::available() {
        let shrunk = root().join(format!(
            "target/{TARGET}/browser/agentward_playground.opt.wasm"
        ));
        run_quiet(
            Command::new("wasm-opt")
                .args(crate::build::optimize::WASM_OPT_ARGS)
                .arg(&built)
                .arg("-o")
                .arg(&shrunk),
        )?;
        shrunk
    } else {
        println!(
            "[playground] wasm-opt not found (binaryen: cargo xtask setup): module left as built"
        );
        built
    };
    run_quiet(
        Command::new(&bindgen)
            .args([
                "--target",
                "web",
                "--no-typescript",
                "--out-name",
                "agentward_playground",
                "--out-dir",
            ])
            .arg(&out)
            .arg(&module),
    )?;
    for file in ["index.html", "app.js", "style.css"] {
        let from = root().join("playground/www").join(file);
        std::fs::copy(&from, out.join(file)).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    let (mut total, mut gzipped) = (0, 0);
    for file in [
        "index.html",
        "app.js",
        "style.css",
        "agentward_playground.js",
        "agentward_playground_bg.wasm",
    ] {
        let path = out.join(file);
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        let packed = gzip(&path);
        total += size;
        gzipped += packed.unwrap_or(0);
        let packed = packed.map_or(String::new(), |p| format!(" ({:.1} KiB as .gz)", kib(p)));
        println!("[playground] {file:<30} {:>7.1} KiB{packed}", kib(size));
    }
    println!(
        "[playground] page weight {:.1} KiB ({:.1} KiB gzipped) in {} (served by the vault at /playground/)",
        kib(total),
        kib(gzipped),
        out.strip_prefix(root()).unwrap_or(&out).display()
    );
    Ok(())
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

/// Writes `{path}.gz` (`gzip -9`; the vault sends it to browsers that
/// accept gzip) and returns its size, when gzip is there.
fn gzip(path: &std::path::Path) -> Option<u64> {
    let out = Command::new("gzip").arg("-9c").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut packed = path.as_os_str().to_owned();
    packed.push(".gz");
    std::fs::write(&packed, &out.stdout).ok()?;
    Some(out.stdout.len() as u64)
}
