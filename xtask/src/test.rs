//! `cargo xtask test`: the whole suite, as CI runs it. Every check runs even
//! after an earlier one failed (except when setup fails), then a summary says
//! what passed; any failure makes the exit status non-zero.

use crate::{build, cargo, root, run_visible, setup, venv_bin, Result};
use std::process::Command;
use std::time::{Duration, Instant};

struct Outcome {
    name: &'static str,
    result: std::result::Result<(), String>,
    took: Duration,
}

#[derive(Default)]
struct Report {
    outcomes: Vec<Outcome>,
}

impl Report {
    fn check(&mut self, name: &'static str, f: impl FnOnce() -> Result) -> bool {
        println!("\n[test] ── {name} ──");
        let started = Instant::now();
        let result = f();
        let ok = result.is_ok();
        self.outcomes.push(Outcome {
            name,
            result,
            took: started.elapsed(),
        });
        ok
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        self.outcomes.push(Outcome {
            name,
            result: Err(format!("skipped: {why}")),
            took: Duration::ZERO,
        });
    }

    fn finish(self) -> Result {
        println!("\n[test] summary");
        let mut failed = Vec::new();
        for o in &self.outcomes {
            let (mark, detail) = match &o.result {
                Ok(()) => ("ok  ", String::new()),
                Err(e) => {
                    failed.push(o.name);
                    ("FAIL", format!("  {}", e.lines().next().unwrap_or("")))
                }
            };
            println!(
                "  {mark}  {:<20} {:>6.1}s{detail}",
                o.name,
                o.took.as_secs_f64()
            );
        }
        let total: f64 = self.outcomes.iter().map(|o| o.took.as_secs_f64()).sum();
        if failed.is_empty() {
            println!(
                "[test] all {} checks passed in {total:.0}s",
                self.outcomes.len()
            );
            Ok(())
        } else {
            Err(format!("failed: {}", failed.join(", ")))
        }
    }
}

pub fn run() -> Result {
    let mut report = Report::default();
    if !report.check("setup", || setup::run(setup::Extras::default())) {
        return report.finish();
    }
    let built = report.check("build", || build::run().map(|_| ()));
    // Every test binary runs even after one fails, so one run names every
    // failure.
    report.check("cargo test", || {
        run_visible(cargo().args(["test", "--workspace", "--no-fail-fast"]))
    });
    // The shipped policies' tests (`host-test test`), through the real
    // plugins; JUnit in target/policy-tests.xml for CI systems.
    if built {
        report.check("policy tests", policy_tests);
    } else {
        report.skip("policy tests", "the build failed");
    }
    report.check("cargo fmt --check", || {
        run_visible(cargo().args(["fmt", "--all", "--check"]))
    });
    report.check("cargo clippy", || {
        run_visible(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    });
    // The plugins as Envoy loads them: `disallowed-methods` (clippy.toml)
    // refuses the SDK's panicking hostcalls in code built for wasm32 only.
    report.check("cargo clippy wasm32", || {
        run_visible(cargo().args([
            "clippy",
            "--target",
            "wasm32-wasip1",
            "-p",
            "jwt-identity",
            "-p",
            "token-exchange",
            "-p",
            "ciba-hold",
            "-p",
            "scope-fga",
            "-p",
            "identity-fga",
            "-p",
            "agentward-envoy",
            "--",
            "-D",
            "warnings",
        ]))
    });
    if built {
        report.check("e2e (pytest)", || {
            run_visible(
                Command::new(venv_bin("python"))
                    .args(["-m", "pytest", "tests/e2e", "-q", "-p", "no:cacheprovider"])
                    .current_dir(root()),
            )
        });
    } else {
        report.skip("e2e (pytest)", "the build failed");
    }
    report.finish()
}

/// `host-test test policies/*.tests.yaml`.
fn policy_tests() -> Result {
    let mut files: Vec<String> = std::fs::read_dir(root().join("policies"))
        .map_err(|e| format!("cannot list policies/: {e}"))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tests.yaml"))
        .map(|name| format!("policies/{name}"))
        .collect();
    files.sort();
    run_visible(
        Command::new(root().join("target/debug/host-test"))
            .arg("test")
            .args(&files)
            .args(["--junit", "target/policy-tests.xml"])
            .current_dir(root()),
    )
}
