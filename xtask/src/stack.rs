//! Running the pieces for the demo and the bench: rendering the shipped Envoy
//! configs with other ports (and policies), child processes that die with us,
//! and readiness checks. The rendering rules are those of
//! tests/e2e/stack.py: conventional ports are listener 10000, admin 9901,
//! upstream 8080, idp 8081 (`port_value: N` and `localhost:N`),
//! `address: 0.0.0.0` becomes `127.0.0.1`, `filename: target/…` becomes
//! absolute, and a policy replaces each `google.protobuf.StringValue` block.

use crate::{root, venv_bin, Result};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const LISTENER: u16 = 10000;
pub const ADMIN: u16 = 9901;
pub const UPSTREAM: u16 = 8080;
pub const IDP: u16 = 8081;
/// The broker's OAuth provider (examples/stock-trade/provider).
pub const PROVIDER: u16 = 8082;
/// The agentward vault (examples/stock-trade/vault.toml).
pub const VAULT: u16 = 8787;

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// `preferred` if it is free, else any free port.
pub fn port_or_free(preferred: u16) -> Result<u16> {
    if TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        Ok(preferred)
    } else {
        free_port()
    }
}

/// A shipped config with the conventional ports mapped to `ports` and, if
/// given, `policy` (JSON text) as every plugin's configuration.
pub fn render(config: &str, ports: &HashMap<u16, u16>, policy: Option<&str>) -> String {
    let mut text = match policy {
        Some(policy) => replace_policies(config, policy),
        None => config.to_string(),
    };
    for prefix in ["port_value: ", "localhost:"] {
        text = replace_ports(&text, prefix, ports);
    }
    let target = format!("filename: {}/target/", root().display());
    text.replace("address: 0.0.0.0", "address: 127.0.0.1")
        .replace("filename: target/", &target)
}

/// A config that names services by URL (examples/stock-trade/vault.toml)
/// with the conventional ports in `127.0.0.1:N` and `localhost:N` mapped to
/// `ports`.
pub fn render_urls(text: &str, ports: &HashMap<u16, u16>) -> String {
    let mut text = text.to_string();
    for prefix in ["127.0.0.1:", "localhost:"] {
        text = replace_ports(&text, prefix, ports);
    }
    text
}

/// `node script`: a script of an npm project installed by setup (its imports
/// resolve from the script's folder, whatever the working directory).
pub fn node(script: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(root().join(script));
    cmd
}

fn replace_ports(text: &str, prefix: &str, ports: &HashMap<u16, u16>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let (before, after) = rest.split_at(at + prefix.len());
        out.push_str(before);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match after[..digits]
            .parse::<u16>()
            .ok()
            .and_then(|p| ports.get(&p))
        {
            Some(port) => out.push_str(&port.to_string()),
            None => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn replace_policies(config: &str, policy: &str) -> String {
    let lines: Vec<&str> = config.split('\n').collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        out.push(line.to_string());
        i += 1;
        let is_block = line.trim() == "value: |"
            && i >= 2
            && lines[i - 2].contains("google.protobuf.StringValue");
        if !is_block {
            continue;
        }
        let indent = indent_of(line);
        let mut end = i;
        while end < lines.len() && (lines[end].trim().is_empty() || indent_of(lines[end]) > indent)
        {
            end += 1;
        }
        while end > i && lines[end - 1].trim().is_empty() {
            end -= 1;
        }
        let pad = " ".repeat(indent + 2);
        out.extend(policy.trim_end().lines().map(|l| format!("{pad}{l}")));
        i = end;
    }
    out.join("\n")
}

/// A child process that is killed when dropped; its output goes to a log file.
pub struct Service {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Service {
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Result<Service> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Service {
            name: name.to_string(),
            log,
            child,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `GET path` on `port` answers 200.
    pub fn wait_ready(&mut self, port: u16, path: &str, timeout: Duration) -> Result {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before it was ready; see {}\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log, 15)
                ));
            }
            if matches!(http_get(port, path), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not ready after {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The demo's vault client secret (examples/stock-trade/vault.toml), which
/// envoy/chain.yaml reads from Envoy's environment, never from its config.
pub const DEMO_VAULT_CLIENT_SECRET: (&str, &str) =
    ("AGENTWARD_VAULT_CLIENT_SECRET", "gateway-demo-secret");

/// envoy/scope-fga.yaml's FGA preshared key (`fga.preshared_key_env`); the
/// demo's vault is started with it (`AGENTWARD_VAULT_FGA_PRESHARED_KEYS`).
pub const DEMO_FGA_KEY: (&str, &str) = ("AGENTWARD_FGA_KEY", "fga-demo-key");

/// The demo's key of deferred approval ids (envoy/ciba-hold.yaml's
/// `approval.handle_key_env`: base64url of 32 bytes; a deployment draws its
/// own, the same on every replica).
pub const DEMO_APPROVAL_HANDLE_KEY: (&str, &str) = (
    "AGENTWARD_APPROVAL_HANDLE_KEY",
    "YWdlbnR3YXJkIGRlbW8gYXBwcm92YWwgaWQga2V5ISE",
);

/// `envoy -c config` with a base id of its own so several run side by side,
/// and the demo's vault client secret and approval id key in its environment.
pub fn envoy(config: &Path, base_id: u16, concurrency: u32) -> Command {
    let mut cmd = Command::new(venv_bin("envoy"));
    let (name, value) = DEMO_VAULT_CLIENT_SECRET;
    cmd.env(name, value);
    let (name, value) = DEMO_APPROVAL_HANDLE_KEY;
    cmd.env(name, value);
    let (name, value) = DEMO_FGA_KEY;
    cmd.env(name, value);
    cmd.arg("-c")
        .arg(config)
        .args(["--base-id", &base_id.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--log-level", "info"]);
    cmd
}

/// The Envoy binary itself (the venv's `envoy` is a Python launcher, which
/// valgrind would measure instead).
pub fn envoy_binary() -> Result<PathBuf> {
    let lib = root().join(".tools/venv/lib");
    let entries = std::fs::read_dir(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no envoy binary under {}; run cargo xtask setup",
                lib.display()
            )
        })
}

/// A Python script of the project, run with the venv's interpreter.
pub fn python(script: &str) -> Command {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(root().join(script));
    cmd
}

/// A minimal `GET` on 127.0.0.1: status and body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_with(port, path, &[])
}

/// A minimal `GET` on 127.0.0.1 with extra headers: status and body.
pub fn http_get_with(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{extra}connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Puts `jwks` (JSON on one line) into every `local_jwks.inline_string` of a
/// config: the native `jwt_authn` configs of the bench.
pub fn with_local_jwks(config: &str, jwks: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut after_local_jwks = false;
    for line in config.split('\n') {
        match line.trim_start().strip_prefix("inline_string: ") {
            Some(_) if after_local_jwks => {
                let indent = &line[..indent_of(line)];
                out.push(format!("{indent}inline_string: '{}'", jwks.trim()));
            }
            _ => out.push(line.to_string()),
        }
        after_local_jwks = line.trim() == "local_jwks:";
    }
    out.join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
      socket_address: { address: 0.0.0.0, port_value: 10000 }
                configuration:
                  \"@type\": type.googleapis.com/google.protobuf.StringValue
                  value: |
                    {
                      \"resource\": \"http://localhost:10000\"
                    }
          - name: envoy.filters.http.router
              filename: target/wasm32-wasip1/release/x.wasm
            socket_address: { address: 127.0.0.1, port_value: 8080 }";

    #[test]
    fn ports_are_mapped_in_one_pass() {
        // 10000 → 8080 must not then be mapped again by the 8080 rule.
        let ports = HashMap::from([(10000, 8080), (8080, 8081), (9901, 19901)]);
        let out = render(CONFIG, &ports, None);
        assert!(out.contains("port_value: 19901"));
        assert!(out.contains("address: 127.0.0.1, port_value: 8080 }\n"));
        assert!(out.contains("\"http://localhost:8080\""));
        assert!(out.ends_with("port_value: 8081 }"));
        assert!(!out.contains("0.0.0.0"));
        assert!(out.contains(&format!("filename: {}/target/", root().display())));
    }

    #[test]
    fn policy_block_is_replaced_at_its_indentation() {
        let out = render(CONFIG, &HashMap::new(), Some("{\n  \"a\": 1\n}\n"));
        assert!(out.contains("value: |\n                    {\n                      \"a\": 1\n                    }\n          - name: envoy.filters.http.router"), "{out}");
        assert!(!out.contains("resource"));
    }

    #[test]
    fn urls_are_mapped() {
        let ports = HashMap::from([(8787, 18787), (8082, 18082), (10000, 11000)]);
        let text = "listen = \"127.0.0.1:8787\"\nauthorize_url = \"http://127.0.0.1:8082/auth\"\naudiences = [\"http://localhost:10000\"]\njwks = \"http://127.0.0.1:8081/\"";
        assert_eq!(
            render_urls(text, &ports),
            "listen = \"127.0.0.1:18787\"\nauthorize_url = \"http://127.0.0.1:18082/auth\"\naudiences = [\"http://localhost:11000\"]\njwks = \"http://127.0.0.1:8081/\""
        );
    }

    #[test]
    fn local_jwks_is_replaced() {
        let config = "local_jwks:\n  inline_string: '{\"keys\":[]}'\nother:\n  inline_string: 'x'";
        let out = with_local_jwks(config, "{\"keys\":[1]}\n");
        assert_eq!(
            out,
            "local_jwks:\n  inline_string: '{\"keys\":[1]}'\nother:\n  inline_string: 'x'"
        );
    }
}
