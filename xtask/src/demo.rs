//! `cargo xtask demo`: the stock-trade agent calls the API through Envoy with
//! the plugin chain (`envoy/chain.yaml`: jwt-identity → token-exchange), with
//! the IdP stand-in serving the keys, the broker's OAuth provider (npm
//! oidc-provider) and the agentward vault (SQLite in `.demo/`). Logs, the
//! rendered configs and the vault's database go to `.demo/`; everything
//! started here stops when the demo ends. The steps themselves are in
//! examples/stock-trade/agent.py.
//!
//! `cargo xtask demo --spin`: the same steps through the Spin components
//! instead of Envoy: one app, jwt-identity → scope-fga → ciba-hold →
//! token-exchange on policies/stock-trade-spin.json, served by
//! `host-test serve` on the gateway's port.

use crate::stack::{self, Service};
use crate::{build, root, setup, Result};
use std::collections::HashMap;
use std::time::Duration;

pub fn run(spin: bool) -> Result {
    setup::run(setup::Extras::default())?;
    build::run()?; // the plugins and the vault
    let dir = root().join(".demo");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    let listener = stack::port_or_free(stack::LISTENER)?;
    let admin = stack::port_or_free(stack::ADMIN)?;
    let upstream_port = stack::port_or_free(stack::UPSTREAM)?;
    let idp_port = stack::port_or_free(stack::IDP)?;
    let provider_port = stack::port_or_free(stack::PROVIDER)?;
    let vault_port = stack::port_or_free(stack::VAULT)?;
    let ready = Duration::from_secs(30);
    let ports = HashMap::from([
        (stack::LISTENER, listener),
        (stack::ADMIN, admin),
        (stack::UPSTREAM, upstream_port),
        (stack::IDP, idp_port),
        (stack::PROVIDER, provider_port),
        (stack::VAULT, vault_port),
    ]);

    let mut idp = Service::spawn(
        "idp",
        stack::python("examples/stock-trade/idp.py").args([
            "serve",
            "--port",
            &idp_port.to_string(),
        ]),
        &dir,
    )?;
    idp.wait_ready(idp_port, "/healthz", ready)?;

    // The broker's OAuth provider: the vault is its client, redirecting back
    // to the vault's callback.
    let provider_config = format!(
        r#"{{"port": {provider_port}, "vault": {{"redirect_uris": ["http://127.0.0.1:{vault_port}/connect/callback"]}}}}"#
    );
    let mut provider = Service::spawn(
        "provider",
        stack::node("examples/stock-trade/provider/provider.mjs")
            .env("PROVIDER_CONFIG", provider_config),
        &dir,
    )?;
    provider.wait_ready(provider_port, "/healthz", ready)?;

    let provider_url = format!("http://127.0.0.1:{provider_port}");
    let mut upstream = Service::spawn(
        "upstream",
        stack::python("examples/stock-trade/upstream.py").args([
            "--port",
            &upstream_port.to_string(),
            "--provider",
            &provider_url,
        ]),
        &dir,
    )?;
    upstream.wait_ready(upstream_port, "/healthz", ready)?;

    // The vault: a fresh SQLite database and key each run, so the user starts unlinked.
    for name in [
        "vault.db",
        "vault.db-wal",
        "vault.db-shm",
        "vault.db-journal",
    ] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let vault_config = dir.join("vault.toml");
    let shipped = root().join("examples/stock-trade/vault.toml");
    let text =
        std::fs::read_to_string(&shipped).map_err(|e| format!("{}: {e}", shipped.display()))?;
    std::fs::write(&vault_config, stack::render_urls(&text, &ports)).map_err(|e| e.to_string())?;
    let database = format!("sqlite://{}", dir.join("vault.db").display());
    let mut vault = Service::spawn(
        "vault",
        std::process::Command::new(root().join("target/debug/agentward-vault"))
            .arg("--config")
            .arg(&vault_config)
            .args(["--database-url", &database])
            .env("AGENTWARD_VAULT_KEY", format!("k1:{}", random_key()?))
            .env("AGENTWARD_VAULT_FGA_PRESHARED_KEYS", stack::DEMO_FGA_KEY.1),
        &dir,
    )?;
    vault.wait_ready(vault_port, "/healthz", ready)?;

    // Fine-grained authorization against the vault's FGA API: a store
    // seeded from policies/stock-trade-rag.fga, its id in the gateway's policy.
    let seeded = stack::python("examples/stock-trade/research.py")
        .args([
            "seed",
            "--vault",
            &format!("http://127.0.0.1:{vault_port}"),
            "--key",
            stack::DEMO_FGA_KEY.1,
        ])
        .output()
        .map_err(|e| format!("research.py seed: {e}"))?;
    if !seeded.status.success() {
        return Err(format!(
            "seeding the FGA store failed: {}",
            String::from_utf8_lossy(&seeded.stderr)
        ));
    }
    let store = String::from_utf8_lossy(&seeded.stdout).trim().to_string();
    let gateways = if spin {
        spin_gateway(&dir, &ports, &store, ready)?
    } else {
        envoy_gateways(&dir, &ports, &store, ready)?
    };
    let Gateways {
        approval_listener,
        fga_listener,
        services: gateways,
    } = gateways;
    if spin {
        println!(
            "\n[demo] gateway   http://localhost:{listener}  (host-test serve, Spin components: jwt-identity → scope-fga → ciba-hold → token-exchange, policies/stock-trade-spin.json, FGA store {store})"
        );
    } else {
        println!(
            "\n[demo] gateway   http://localhost:{listener}  (Envoy {}, envoy/chain.yaml: jwt_identity.wasm → token_exchange.wasm)",
            setup::envoy_version()?
        );
    }
    println!(
        "[demo] upstream  http://127.0.0.1:{upstream_port}  (examples/stock-trade/upstream.py)"
    );
    println!("[demo] idp       http://127.0.0.1:{idp_port}  (examples/stock-trade/idp.py)");
    println!("[demo] broker    {provider_url}  (the broker's OAuth provider, npm oidc-provider)");
    println!(
        "[demo] vault     http://127.0.0.1:{vault_port}  (agentward-vault, SQLite .demo/vault.db)"
    );
    if !spin {
        println!(
            "[demo] approvals http://127.0.0.1:{approval_listener}  (envoy/ciba-hold.yaml: jwt_identity.wasm → ciba_hold.wasm, the vault as CIBA authority; MCP tool calls on /trading/mcp)"
        );
        println!(
            "[demo] research  http://127.0.0.1:{fga_listener}  (envoy/scope-fga.yaml: jwt_identity.wasm → scope_fga.wasm, the vault's FGA API, store {store})"
        );
    }
    println!(
        "[demo] playground http://127.0.0.1:{vault_port}/playground/  (try the policy in a browser while the demo runs; no server behind it)"
    );
    println!("[demo] logs and configs in .demo/\n");
    let agent = crate::run_visible(stack::python("examples/stock-trade/agent.py").args([
        "--gateway",
        &format!("http://localhost:{listener}"),
        "--idp",
        &format!("http://127.0.0.1:{idp_port}"),
        "--approval-gateway",
        &format!("http://127.0.0.1:{approval_listener}"),
        "--vault-log",
        &vault.log.display().to_string(),
    ]));
    let research = crate::run_visible(stack::python("examples/stock-trade/research.py").args([
        "run",
        "--gateway",
        &format!("http://127.0.0.1:{fga_listener}"),
        "--idp",
        &format!("http://127.0.0.1:{idp_port}"),
        "--resource",
        &format!("http://localhost:{listener}"),
    ]));
    drop((gateways, vault, upstream, provider, idp));
    agent
        .and(research)
        .map_err(|_| "the demo did not go as expected; see above and .demo/*.log".to_string())
}

/// The gateways the agent and the research steps go through.
struct Gateways {
    approval_listener: u16,
    fga_listener: u16,
    /// Killed when dropped.
    services: Vec<Service>,
}

/// Three Envoys: envoy/chain.yaml on the listener, envoy/ciba-hold.yaml and
/// envoy/scope-fga.yaml (with the seeded `store`) on ports of their own.
fn envoy_gateways(
    dir: &std::path::Path,
    ports: &HashMap<u16, u16>,
    store: &str,
    ready: Duration,
) -> Result<Gateways> {
    let listener = ports[&stack::LISTENER];
    let admin = ports[&stack::ADMIN];
    let shipped = root().join("envoy/chain.yaml");
    let template =
        std::fs::read_to_string(&shipped).map_err(|e| format!("{}: {e}", shipped.display()))?;
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, stack::render(&template, ports, None)).map_err(|e| e.to_string())?;
    let mut envoy = Service::spawn("envoy", &mut stack::envoy(&config, admin, 1), dir)?;
    envoy.wait_ready(admin, "/ready", ready)?;

    // The gateway with human approval (jwt-identity → ciba-hold), in front of
    // the same API for the same resource: rendered with the chain's ports,
    // then given a listener and admin port of its own.
    let approval_listener = stack::free_port()?;
    let approval_admin = stack::free_port()?;
    let shipped = root().join("envoy/ciba-hold.yaml");
    let template =
        std::fs::read_to_string(&shipped).map_err(|e| format!("{}: {e}", shipped.display()))?;
    let text = stack::render(&template, ports, None)
        .replace(
            &format!("port_value: {listener} }}"),
            &format!("port_value: {approval_listener} }}"),
        )
        .replace(
            &format!("port_value: {admin} }}"),
            &format!("port_value: {approval_admin} }}"),
        );
    let approval_config = dir.join("envoy-approval.yaml");
    std::fs::write(&approval_config, text).map_err(|e| e.to_string())?;
    let mut approval_envoy = Service::spawn(
        "envoy-approval",
        &mut stack::envoy(&approval_config, approval_admin, 1),
        dir,
    )?;
    approval_envoy.wait_ready(approval_admin, "/ready", ready)?;

    let fga_listener = stack::free_port()?;
    let fga_admin = stack::free_port()?;
    let shipped = root().join("envoy/scope-fga.yaml");
    let template =
        std::fs::read_to_string(&shipped).map_err(|e| format!("{}: {e}", shipped.display()))?;
    let text = stack::render(&template, ports, None)
        .replace(
            &format!("port_value: {listener} }}"),
            &format!("port_value: {fga_listener} }}"),
        )
        .replace(
            &format!("port_value: {admin} }}"),
            &format!("port_value: {fga_admin} }}"),
        )
        .replace("01STOREFROMTHEDEMO000000000", store);
    let fga_config = dir.join("envoy-fga.yaml");
    std::fs::write(&fga_config, text).map_err(|e| e.to_string())?;
    let mut fga_envoy = Service::spawn(
        "envoy-fga",
        &mut stack::envoy(&fga_config, fga_admin, 1),
        dir,
    )?;
    fga_envoy.wait_ready(fga_admin, "/ready", ready)?;

    Ok(Gateways {
        approval_listener,
        fga_listener,
        services: vec![fga_envoy, approval_envoy, envoy],
    })
}

/// One Spin app on the listener: jwt-identity → scope-fga → ciba-hold →
/// token-exchange in `host-test serve`, on policies/stock-trade-spin.json
/// with the seeded `store`; approvals and research go through it too.
fn spin_gateway(
    dir: &std::path::Path,
    ports: &HashMap<u16, u16>,
    store: &str,
    ready: Duration,
) -> Result<Gateways> {
    let listener = ports[&stack::LISTENER];
    let shipped = root().join("policies/stock-trade-spin.json");
    let text =
        std::fs::read_to_string(&shipped).map_err(|e| format!("{}: {e}", shipped.display()))?;
    let policy = stack::render(&text, ports, None).replace("01STOREFROMTHEDEMO000000000", store);
    let policy_file = dir.join("spin-policy.json");
    std::fs::write(&policy_file, policy).map_err(|e| e.to_string())?;
    let local = |port: u16| format!("http://127.0.0.1:{}", ports[&port]);
    let mut cmd = std::process::Command::new(root().join("target/debug/host-test"));
    cmd.arg("serve");
    for component in build::SPIN_COMPONENTS {
        let path = build::spin_path(component);
        cmd.args(["--component", &format!("{component}={}", path.display())]);
    }
    cmd.arg("--policy").arg(&policy_file);
    for (name, value) in [
        ("cluster_idp".to_string(), local(stack::IDP)),
        ("cluster_vault".to_string(), local(stack::VAULT)),
        (
            stack::DEMO_VAULT_CLIENT_SECRET.0.to_ascii_lowercase(),
            stack::DEMO_VAULT_CLIENT_SECRET.1.to_string(),
        ),
        (
            stack::DEMO_FGA_KEY.0.to_ascii_lowercase(),
            stack::DEMO_FGA_KEY.1.to_string(),
        ),
        (
            stack::DEMO_APPROVAL_HANDLE_KEY.0.to_ascii_lowercase(),
            stack::DEMO_APPROVAL_HANDLE_KEY.1.to_string(),
        ),
    ] {
        cmd.args(["--var", &format!("{name}={value}")]);
    }
    cmd.args(["--upstream", &local(stack::UPSTREAM)]);
    cmd.args(["--listen", &format!("127.0.0.1:{listener}")]);
    // As `spin up` would: each component reaches only the manifest's hosts.
    let manifest = root().join(SPIN_MANIFEST);
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let text = stack::render_urls(&text, ports);
    let defaults = variable_defaults(&text);
    for (component, hosts) in allowed_outbound_hosts(&text) {
        for host in hosts {
            let host = resolve(&host, &defaults)?;
            cmd.args(["--allow-outbound", &format!("{component}={host}")]);
        }
    }
    let mut spin = Service::spawn("spin", &mut cmd, dir)?;
    spin.wait_ready(listener, "/prices/ACME", ready)?;
    Ok(Gateways {
        approval_listener: listener,
        fga_listener: listener,
        services: vec![spin],
    })
}

/// 32 random bytes, base64: the vault's data-encryption key for this run.
fn random_key() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    Ok(out)
}

/// The Spin app the demo's `--spin` form runs.
const SPIN_MANIFEST: &str = "examples/stock-trade/spin.toml";

/// Each `[component.NAME]` table's `allowed_outbound_hosts` in a Spin
/// manifest, read from the plain form the shipped one uses (one quoted
/// string per array element, `#` comments), in table order.
fn allowed_outbound_hosts(manifest: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut component: Option<String> = None;
    let mut in_array = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(table) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            component = table
                .strip_prefix("component.")
                .filter(|name| !name.contains('.'))
                .map(str::to_string);
            in_array = false;
            continue;
        }
        let Some(name) = &component else { continue };
        if let Some(rest) = line.strip_prefix("allowed_outbound_hosts") {
            in_array = rest.trim_start().starts_with('=');
            out.push((name.clone(), Vec::new()));
        }
        if in_array {
            if let Some((_, hosts)) = out.last_mut() {
                hosts.extend(line.split('"').skip(1).step_by(2).map(str::to_string));
            }
            if line.ends_with(']') {
                in_array = false;
            }
        }
    }
    out
}

/// The `[variables]` of a Spin manifest that have a `default` (the plain
/// `name = { default = "…" }` form the shipped one uses).
fn variable_defaults(manifest: &str) -> HashMap<String, String> {
    let mut defaults = HashMap::new();
    let mut in_variables = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            in_variables = line == "[variables]";
            continue;
        }
        let Some((name, value)) = line.split_once('=').filter(|_| in_variables) else {
            continue;
        };
        let value = value.trim();
        if let Some(rest) = value.split("default").nth(1) {
            if let Some(default) = rest.split('"').nth(1) {
                defaults.insert(name.trim().to_string(), default.to_string());
            }
        }
    }
    defaults
}

/// A manifest string with each `{{ name }}` replaced by that application
/// variable, as Spin resolves `allowed_outbound_hosts` when it prepares a
/// component; a variable without a value is an error, as there.
fn resolve(template: &str, variables: &HashMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            return Err(format!("{template:?}: an unclosed `{{{{`"));
        };
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + end].trim();
        let value = variables
            .get(name)
            .ok_or_else(|| format!("{template:?}: the variable `{name}` has no value"))?;
        out.push_str(value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_manifests_allowed_hosts_are_read() {
        let text = std::fs::read_to_string(root().join(SPIN_MANIFEST)).unwrap();
        let defaults = variable_defaults(&text);
        let hosts: HashMap<String, Vec<String>> = allowed_outbound_hosts(&text)
            .into_iter()
            .map(|(name, hosts)| {
                let hosts = hosts.iter().map(|h| resolve(h, &defaults).unwrap());
                (name, hosts.collect())
            })
            .collect();
        assert_eq!(
            hosts["jwt-identity"],
            ["http://scope-fga.spin.internal", "http://127.0.0.1:8081"]
        );
        assert_eq!(
            hosts["token-exchange"],
            ["http://127.0.0.1:8787", "http://127.0.0.1:8080"]
        );
        assert_eq!(hosts.len(), 4);
    }

    #[test]
    fn templates_resolve_from_the_application_variables() {
        let vars = HashMap::from([("vault_origin".to_string(), "https://v.example".to_string())]);
        assert_eq!(
            resolve("{{ vault_origin }}", &vars).unwrap(),
            "https://v.example"
        );
        assert_eq!(
            resolve("{{vault_origin}}:8443", &vars).unwrap(),
            "https://v.example:8443"
        );
        assert_eq!(
            resolve("http://a.spin.internal", &vars).unwrap(),
            "http://a.spin.internal"
        );
        assert!(resolve("{{ idp_origin }}", &vars)
            .unwrap_err()
            .contains("`idp_origin`"));
        assert!(resolve("{{ vault_origin", &vars).is_err());
    }
}
