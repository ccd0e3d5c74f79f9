"""Running the real thing for the end-to-end tests: Envoy with the real
`.wasm`, started from the shipped configs in envoy/.

Configs are never forked: a test renders a shipped config with its own ports
and, where it needs one, its own policy. The rules (mirrored in
xtask/src/stack.rs, which the demo and the bench use):

* the conventional ports of the shipped configs, `port_value: N` and
  `localhost:N` (the policy's resource and audience), are replaced by the
  ports given for them: listener 10000, admin 9901, upstream 8080, idp 8081;
* `address: 0.0.0.0` becomes `127.0.0.1`;
* `filename: target/...` becomes absolute;
* a policy, when given, replaces each `google.protobuf.StringValue` block.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
ENVOY = ROOT / ".tools/venv/bin/envoy"
ENVOY_DIR = ROOT / "envoy"
JWT_IDENTITY_CONFIG = ENVOY_DIR / "jwt-identity.yaml"
CHAIN_CONFIG = ENVOY_DIR / "chain.yaml"
WASM_DIR = ROOT / "target/wasm32-wasip1/release"

# envoy/chain.yaml reads the vault client secret from Envoy's environment
# (`vault.client_secret_env`); the demo's is examples/stock-trade/vault.toml's.
VAULT_SECRET_ENV = "AGENTWARD_VAULT_CLIENT_SECRET"
DEMO_VAULT_SECRET = "gateway-demo-secret"
# envoy/ciba-hold.yaml reads the key of deferred approval ids there too
# (`approval.handle_key_env`: base64url of 32 bytes, the same on every replica).
APPROVAL_KEY_ENV = "AGENTWARD_APPROVAL_HANDLE_KEY"
DEMO_APPROVAL_KEY = base64.urlsafe_b64encode(b"agentward demo approval id key!!").decode().rstrip("=")
# envoy/scope-fga.yaml reads the FGA preshared key the same way
# (`fga.preshared_key_env`); the demo's vault is started with it.
FGA_KEY_ENV = "AGENTWARD_FGA_KEY"
DEMO_FGA_KEY = "fga-demo-key"
ENVOY_ENV = dict(
    os.environ,
    **{VAULT_SECRET_ENV: DEMO_VAULT_SECRET, APPROVAL_KEY_ENV: DEMO_APPROVAL_KEY, FGA_KEY_ENV: DEMO_FGA_KEY},
)

CONVENTIONAL_PORTS = {"listener": 10000, "admin": 9901, "upstream": 8080, "idp": 8081, "provider": 8082, "vault": 8787}

_STRING_VALUE = "google.protobuf.StringValue"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _policy_blocks(lines: list[str]):
    """Yields (start, end, indent) of each policy block: the lines after a
    `value: |` that follows a StringValue `@type`."""
    i = 0
    while i < len(lines):
        if lines[i].strip() == "value: |" and i > 0 and _STRING_VALUE in lines[i - 1]:
            indent = len(lines[i]) - len(lines[i].lstrip())
            end = i + 1
            while end < len(lines) and (
                not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
            ):
                end += 1
            while end > i + 1 and not lines[end - 1].strip():
                end -= 1
            yield i + 1, end, indent
            i = end
        else:
            i += 1


def policy_file(path: Path) -> dict:
    """A shipped policy document without its `$schema` (a pointer for
    editors, which the inline copies in the Envoy configs leave out)."""
    policy = json.loads(path.read_text())
    policy.pop("$schema", None)
    return policy


def embedded_policies(config: str) -> list[dict]:
    """The policy documents inside a config, in order."""
    lines = config.split("\n")
    return [json.loads("\n".join(lines[s:e])) for s, e, _ in _policy_blocks(lines)]


def render(config: str, ports: dict[str, int], policy: dict | None = None) -> str:
    """A shipped config with these ports (by role, see CONVENTIONAL_PORTS)
    and, if given, this policy."""
    if policy is not None:
        lines = config.split("\n")
        for start, end, indent in reversed(list(_policy_blocks(lines))):
            pad = " " * (indent + 2)
            lines[start:end] = [pad + line for line in json.dumps(policy, indent=2).split("\n")]
        config = "\n".join(lines)
    by_conventional = {CONVENTIONAL_PORTS[role]: port for role, port in ports.items()}

    def port(m: re.Match) -> str:
        return m.group(1) + str(by_conventional.get(int(m.group(2)), m.group(2)))

    config = re.sub(r"(port_value: |localhost:)(\d+)", port, config)
    config = config.replace("address: 0.0.0.0", "address: 127.0.0.1")
    return config.replace("filename: target/", f"filename: {ROOT}/target/")


def validate(config: str, path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`envoy --mode validate` on a rendered config (written to `path`), with
    the demo's vault client secret in its environment unless `env` is given."""
    path.write_text(config)
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--base-id", str(free_port())],
        cwd=ROOT,
        env=ENVOY_ENV if env is None else env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Envoy:
    """One Envoy process on a rendered config; `start()` waits for /ready."""

    def __init__(self, name: str, config: str, workdir: Path, ports: dict[str, int], concurrency: int = 1):
        self.name = name
        self.ports = ports
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.config_path.write_text(config)
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['listener']}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}"

    def start(self, timeout: float = 60) -> "Envoy":
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [
                str(ENVOY),
                "-c", str(self.config_path),
                "--base-id", str(self.ports["admin"]),
                "--concurrency", str(self.concurrency),
                "--log-level", "info",
                "--component-log-level", "wasm:debug",
            ],
            cwd=ROOT,
            env=ENVOY_ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EnvoyExited(self)
            try:
                if requests.get(self.admin + "/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"envoy {self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stats(self) -> dict[str, int]:
        """Counters and gauges from the admin /stats, by name."""
        text = requests.get(self.admin + "/stats", timeout=5).text
        stats = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                stats[name] = int(value)
        return stats

    def counter(self, name: str) -> int:
        """A plugin counter such as `agentward.jwt.allowed` (Envoy shows it
        as `wasmcustom.agentward.jwt.allowed`); 0 before it is first used."""
        return next((v for k, v in self.stats().items() if k == name or k.endswith("." + name)), 0)


class EnvoyExited(RuntimeError):
    def __init__(self, envoy: Envoy):
        self.envoy = envoy
        self.returncode = envoy.process.returncode
        super().__init__(f"envoy {envoy.name} exited with {self.returncode}:\n{envoy.log_tail()}")


def shipped_configs() -> list[Path]:
    return sorted(p for p in ENVOY_DIR.rglob("*.yaml"))


def default_ports(**given: int) -> dict[str, int]:
    ports = {"listener": free_port(), "admin": free_port()}
    ports.update(given)
    return ports


def decode_claims_header(value: str) -> dict:
    """`x-agentward-claims`: base64url (no padding) of the claims JSON."""
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


# The Spin build: wasi:http components run by `host-test serve` (the
# wasmtime runner in host-test/), built by `cargo xtask build`.
HOST_TEST = ROOT / "target/debug/host-test"
SPIN_WASM_DIR = ROOT / "target/wasm32-wasip2/spin"
SPIN_MANIFEST = ROOT / "examples/stock-trade/spin.toml"


def spin_allowed_outbound(components: list[str], ports: dict[str, int], variables: dict[str, str]) -> dict[str, list[str]]:
    """Each component's `allowed_outbound_hosts` as the shipped manifest
    grants them, for this chain: the clusters its manifest section names
    (`cluster_idp`, `cluster_vault`; `test_spin_manifest.py` checks that
    the manifest allows each), at the address this test gives them, and the
    chain's own next hop (a test chain may skip components)."""
    manifest = tomllib.loads(SPIN_MANIFEST.read_text())
    allowed = {}
    for i, name in enumerate(components):
        declared = manifest["component"][name].get("variables", {})
        hosts = [variables[v] for v in declared if v.startswith("cluster_") and v in variables]
        nxt = f"http://{components[i + 1]}.spin.internal" if i + 1 < len(components) else f"http://127.0.0.1:{ports['upstream']}"
        allowed[name] = hosts + [nxt]
    return allowed


class Spin:
    """The Spin components of a chain, served by `host-test serve` on a
    rendered policy; the same interface as Envoy where it makes sense
    (`url`, `start`, `stop`, `log`). A Spin host has no counters."""

    counts = False

    def __init__(
        self,
        name: str,
        components: list[str],
        policy: dict,
        workdir: Path,
        ports: dict[str, int],
        variables: dict[str, str] | None = None,
        allowed_outbound: dict[str, list[str]] | None = None,
    ):
        self.name = name
        self.ports = ports
        self.components = components
        self.variables = dict(variables or {})
        # As Spin: each component reaches only what its manifest section allows.
        self.allowed_outbound = (
            allowed_outbound if allowed_outbound is not None else spin_allowed_outbound(components, ports, self.variables)
        )
        self.policy_path = workdir / f"{name}.spin-policy.json"
        self.log_path = workdir / f"{name}.spin.log"
        self.policy_path.write_text(json.dumps(policy))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['listener']}"

    def command(self) -> list[str]:
        cmd = [str(HOST_TEST), "serve", "--policy", str(self.policy_path)]
        for component in self.components:
            cmd += ["--component", f"{component}={SPIN_WASM_DIR / ('spin_' + component.replace('-', '_') + '.wasm')}"]
        cmd += ["--upstream", f"http://127.0.0.1:{self.ports['upstream']}"]
        cmd += ["--listen", f"127.0.0.1:{self.ports['listener']}"]
        for name, value in self.variables.items():
            cmd += ["--var", f"{name}={value}"]
        for name, hosts in self.allowed_outbound.items():
            for host in hosts:
                cmd += ["--allow-outbound", f"{name}={host}"]
        return cmd

    def start(self, timeout: float = 60) -> "Spin":
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.command(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"host-test serve {self.name} exited:\n{self.log()}")
            if "listening on" in self.log():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"host-test serve {self.name} not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def counter(self, name: str) -> int:
        raise NotImplementedError("a Spin host has no counters")
