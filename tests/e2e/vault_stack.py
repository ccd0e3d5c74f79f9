"""The token vault's side of the end-to-end tests: the broker's OAuth provider
(examples/stock-trade/provider, npm oidc-provider, a node process), the
agentward vault (target/debug/agentward-vault, one or more processes on SQLite
or PostgreSQL), the broker API (examples/stock-trade/upstream.py in process,
checking tokens at the provider) and Envoy on envoy/chain.yaml, optionally
through a tap in front of each vault that notes the shape of the gateway's
token requests (which exchange dialect).

Like stack.py it never forks a shipped file: examples/stock-trade/vault.toml
is rendered with this run's ports (`127.0.0.1:N` and `localhost:N`, by the
roles of stack.CONVENTIONAL_PORTS), and the command line overrides the
database and the refresh margin.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import requests

from stack import (
    CHAIN_CONFIG,
    CONVENTIONAL_PORTS,
    DEMO_VAULT_SECRET,
    ROOT,
    Envoy,
    Spin,
    embedded_policies,
    free_port,
    policy_file,
    render,
)

PROVIDER_DIR = ROOT / "examples/stock-trade/provider"
VAULT_BIN = ROOT / "target/debug/agentward-vault"
VAULT_CONFIG = ROOT / "examples/stock-trade/vault.toml"
CHAIN_POLICY = ROOT / "policies/stock-trade-chain.json"
POSTGRES_URLS = ("postgres://postgres@127.0.0.1:5432/test", "postgres://root@127.0.0.1:5432/test")

# The shipped demo secrets (examples/stock-trade/vault.toml, the policy and
# provider.mjs defaults).
GATEWAY_CLIENT = ("gateway", "gateway-demo-secret")


def missing_pieces() -> list[str]:
    """What must be built or installed before these tests can run."""
    missing = []
    if not VAULT_BIN.exists():
        missing.append(f"{VAULT_BIN.relative_to(ROOT)} (cargo xtask build)")
    if not (PROVIDER_DIR / "node_modules/oidc-provider").exists():
        missing.append(f"{(PROVIDER_DIR / 'node_modules').relative_to(ROOT)} (cargo xtask setup)")
    return missing


def render_ports(text: str, ports: dict[str, int]) -> str:
    """`127.0.0.1:N`, `localhost:N` and `port_value: N` with N a conventional
    port of a role in `ports` become that role's port."""
    by_conventional = {CONVENTIONAL_PORTS[role]: port for role, port in ports.items()}

    def port(m: re.Match) -> str:
        return m.group(1) + str(by_conventional.get(int(m.group(2)), m.group(2)))

    return re.sub(r"(127\.0\.0\.1:|localhost:|port_value: )(\d+)", port, text)


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({process.returncode}):\n{_tail(log)}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen | None) -> None:
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Provider:
    """The broker's OAuth provider (oidc-provider), with its test hooks on:
    /admin/stats lists every token it issued."""

    def __init__(self, workdir: Path, redirect_uris: list[str], access_token_ttl: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "provider.log"
        config = {
            "port": self.port,
            "vault": {"redirect_uris": redirect_uris},
            "access_token_ttl": access_token_ttl,
            "record_tokens": True,
        }
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                ["node", "provider.mjs"],
                cwd=PROVIDER_DIR,
                env=dict(os.environ, PROVIDER_CONFIG=json.dumps(config)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_http(self.url + "/healthz", self.process, self.log_path)

    def stats(self) -> dict:
        return requests.get(self.url + "/admin/stats", timeout=5).json()

    def grants(self, grant_type: str) -> int:
        return self.stats()["grants"].get(grant_type, 0)

    def refused(self, grant_type: str) -> int:
        return self.stats()["refused"].get(grant_type, 0)

    def tokens(self) -> list[str]:
        """Every access, refresh and ID token it issued."""
        return list(self.stats()["tokens"])

    def revoke(self, account: str) -> int:
        """The user revokes the vault's access in the broker's account settings."""
        r = requests.post(f"{self.url}/admin/accounts/{account}/revoke", timeout=5)
        r.raise_for_status()
        return r.json()["revoked"]

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class Database:
    """Where the vault keeps its rows: a SQLite file, or a fresh schema of the
    PostgreSQL test database."""

    backend: str
    url: str
    schema: str | None = None
    sqlite_file: Path | None = None

    @staticmethod
    def sqlite(workdir: Path) -> "Database":
        path = workdir / "vault.db"
        return Database("sqlite", f"sqlite://{path}", sqlite_file=path)

    @staticmethod
    def postgres() -> "Database | None":
        """A unique schema on the test database, or None when none answers."""
        try:
            with socket.create_connection(("127.0.0.1", 5432), timeout=1):
                pass
        except OSError:
            return None
        schema = f"agentward_e2e_{os.getpid()}_{time.time_ns() % 10**9}"
        if not _have("psql"):
            return Database("postgres", POSTGRES_URLS[0], schema=schema)
        for url in POSTGRES_URLS:
            user = url.split("//", 1)[1].split("@", 1)[0]
            probe = ["psql", "-h", "127.0.0.1", "-U", user, "test", "-tAc", "select 1"]
            if subprocess.run(probe, capture_output=True).returncode == 0:
                return Database("postgres", url, schema=schema)
        return None

    def files(self) -> list[Path]:
        """The SQLite file and its side files (WAL, journal)."""
        if not self.sqlite_file:
            return []
        return sorted(self.sqlite_file.parent.glob(self.sqlite_file.name + "*"))

    def drop(self) -> None:
        if self.schema and _have("psql"):
            user = self.url.split("//", 1)[1].split("@", 1)[0]
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", user, "test", "-qc", f'drop schema if exists "{self.schema}" cascade'],
                capture_output=True,
            )


def _have(program: str) -> bool:
    return any((Path(d) / program).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


class Vault:
    """One agentward-vault process on the shipped example config."""

    def __init__(
        self, name: str, workdir: Path, port: int, ports: dict[str, int], database: Database, refresh_margin: int, key: str
    ):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"{name}.log"
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(render_ports(VAULT_CONFIG.read_text(), dict(ports, vault=port)))
        args = [
            str(VAULT_BIN),
            "--config", str(self.config_path),
            "--database-url", database.url,
            "--refresh-margin-seconds", str(refresh_margin),
        ]
        if database.schema:
            args += ["--database-schema", database.schema]
        self.key = key  # replicas share the data-encryption key
        self.args = args
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=dict(os.environ, AGENTWARD_VAULT_KEY=self.key, RUST_LOG="debug"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_http(self.url + "/healthz", self.process, self.log_path)

    def metric(self, name: str, **labels: str) -> int:
        """A counter from /metrics (0 when absent)."""
        text = requests.get(self.url + "/metrics", timeout=5).text
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == want:
                return int(float(value))
        return 0

    def exchange(self, subject_token: str, scope: str = "stocks:read") -> requests.Response:
        """An RFC 8693 exchange as the gateway would send it."""
        return requests.post(
            self.url + "/oauth/token",
            auth=GATEWAY_CLIENT,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": subject_token,
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "resource": "stocktrade",
                "scope": scope,
            },
            timeout=10,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        _stop(self.process)


class VaultTap:
    """A pass-through in front of one vault that notes the shape of every
    request the gateway sends it (path, grant and token types, connection,
    client id, parameter names, whether the credentials came as HTTP Basic)
    and of the vault's answer (`status`, `error`, `issued_token_type`). Never
    a token or a secret; kept in process, never logged."""

    # What a request's parameters may be noted by value; the rest by name only.
    NOTED = ("grant_type", "subject_token_type", "requested_token_type", "connection", "resource", "audience",
             "scope", "client_id")

    def __init__(self, vault: Vault):
        self.vault = vault
        self.requests: list[dict] = []
        tap = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                params = parse_qsl(body.decode(errors="replace"), keep_blank_values=True)
                noted = {k: v for k, v in params if k in VaultTap.NOTED}
                noted.update(
                    path=self.path,
                    params=sorted(k for k, _ in params),
                    basic_auth=self.headers.get("authorization", "").lower().startswith("basic "),
                )
                tap.requests.append(noted)
                forward = {
                    k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept", "authorization")
                }
                try:
                    r = requests.post(tap.vault.url + self.path, data=body, headers=forward, timeout=10)
                except requests.RequestException:
                    self.send_error(502)
                    return
                try:
                    answer = r.json()
                except ValueError:
                    answer = {}
                noted.update(
                    status=r.status_code, error=answer.get("error"), issued_token_type=answer.get("issued_token_type")
                )
                self.send_response(r.status_code)
                for name in ("content-type", "cache-control", "pragma"):
                    if name in r.headers:
                        self.send_header(name, r.headers[name])
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def chain_policy() -> dict:
    return policy_file(CHAIN_POLICY)


def chain_config(ports: dict[str, int], policy: dict, vault_ports: list[int]) -> str:
    """envoy/chain.yaml with these ports and policy; every vault replica an
    endpoint of the `vault` cluster."""
    config = render(CHAIN_CONFIG.read_text(), dict(ports, vault=vault_ports[0]), policy)
    endpoint = (
        "        - endpoint:\n"
        "            address:\n"
        "              socket_address: { address: 127.0.0.1, port_value: %d }\n"
    )
    first = endpoint % vault_ports[0]
    assert config.count(first) == 1, "the vault cluster's endpoint is not where expected"
    return config.replace(first, "".join(endpoint % p for p in vault_ports))


@dataclass
class TokenVaultStack:
    """Everything of one run: provider, vault replicas, broker API, Envoy."""

    backend: str
    workdir: Path
    idp: object  # examples/stock-trade/idp.py's Idp
    provider: Provider
    database: Database
    vaults: list[Vault]
    broker: object  # upstream.Broker
    broker_server: object  # its ThreadingHTTPServer
    envoy: Envoy | Spin
    policy: dict
    access_token_ttl: int
    margin: int
    taps: list[VaultTap] = field(default_factory=list)
    host: str = "envoy"
    gateways: list[Envoy] = field(default_factory=list)
    user_tokens: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.envoy.url

    @property
    def audience(self) -> str:
        return self.policy["issuers"][0]["audiences"][0]

    def token(self, sub: str, **claims) -> str:
        """A user token issued to the stock agent (remembered for the grep)."""
        base = {"sub": sub, "aud": self.audience, "azp": "stock-agent", "scope": "portfolio:read trade"}
        base.update(claims)
        token = self.idp.mint(base, alg="ES256")
        with self._lock:
            self.user_tokens.append(token)
        return token

    def vault_token(self, sub: str, vault: "Vault") -> str:
        """The user's token for the vault itself (its audience is the vault's
        public URL): what DELETE /connections and GET /audit accept."""
        token = self.idp.mint({"sub": sub, "aud": vault.url, "azp": "stock-agent"}, alg="ES256")
        with self._lock:
            self.user_tokens.append(token)
        return token

    def portfolio(self, token: str, timeout: float = 15, **headers) -> requests.Response:
        headers["authorization"] = f"Bearer {token}"
        return requests.get(self.url + "/broker/portfolio", headers=headers, timeout=timeout)

    def refreshes(self) -> int:
        """Successful upstream refreshes, summed over the vault replicas."""
        return sum(v.metric("agentward_vault_refreshes_total", result="ok") for v in self.vaults if v.process.poll() is None)

    @property
    def broker_url(self) -> str:
        return f"http://127.0.0.1:{self.broker_server.server_port}"

    @property
    def tapped(self) -> list[dict]:
        """The token requests the vaults' taps saw, in order per tap."""
        return [r for tap in self.taps for r in tap.requests]

    def chain_gateway(self, name: str, **vault) -> Envoy:
        """Another Envoy on chain.yaml in front of the same vaults (through
        the taps, if any), its policy's `vault` section updated with `vault`.
        Only the listener moves: the audience stays this stack's."""
        ports = dict(self.envoy.ports, listener=free_port(), admin=free_port())
        policy = copy.deepcopy(self.policy)
        if "client_secret" in vault:  # inline instead of from the environment
            policy["vault"].pop("client_secret_env", None)
        policy["vault"].update(vault)
        endpoints = [t.port for t in self.taps] or [v.port for v in self.vaults]
        envoy = Envoy(name, chain_config(ports, policy, endpoints), self.workdir, ports)
        self.gateways.append(envoy)
        return envoy.start()

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        self.envoy.stop()
        self.broker_server.shutdown()
        for tap in self.taps:
            tap.stop()
        for vault in self.vaults:
            vault.stop()
        self.provider.stop()
        self.database.drop()


def start_stack(
    backend: str,
    workdir: Path,
    idp,
    idp_port: int,
    upstream_module,
    replicas: int,
    access_token_ttl: int,
    margin: int,
    dialect: str | None = None,
    tap: bool = False,
    host: str = "envoy",
) -> TokenVaultStack:
    """Provider, `replicas` vaults, the broker API and the gateway, all on
    fresh ports: Envoy (chain.yaml, two workers), or with `host="spin"` the
    Spin components jwt-identity → token-exchange in `host-test serve` (the
    first vault only). `dialect` sets the policy's `vault.dialect` (None:
    the shipped policy's, RFC 8693); with `tap`, the gateway reaches each
    vault through a VaultTap."""
    workdir.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        database = Database.sqlite(workdir)
    else:
        database = Database.postgres()
        if database is None:
            import pytest

            pytest.skip(f"no PostgreSQL answers at {POSTGRES_URLS}")
    vault_ports = [free_port() for _ in range(replicas)]
    provider = Provider(workdir, [f"http://127.0.0.1:{p}/connect/callback" for p in vault_ports], access_token_ttl)
    ports = {"listener": free_port(), "admin": free_port(), "idp": idp_port, "provider": provider.port}
    started: list = [provider]
    try:
        vaults, taps = [], []
        key = "k1:" + base64.b64encode(os.urandom(32)).decode()
        for i, port in enumerate(vault_ports):
            vaults.append(Vault(f"vault-{i}", workdir, port, ports, database, margin, key))
            started.append(vaults[-1])
            if tap:
                taps.append(VaultTap(vaults[-1]))
                started.append(taps[-1])
        broker = upstream_module.Broker(provider.url)
        server = upstream_module.make_server(0, quiet=True, broker=broker)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ports["upstream"] = server.server_port
        policy = json.loads(render(json.dumps(chain_policy()), ports))
        policy["vault"]["expiry_margin_seconds"] = margin
        if dialect is not None:
            policy["vault"]["dialect"] = dialect
        endpoints = [t.port for t in taps] or vault_ports
        if host == "spin":
            variables = {
                "cluster_idp": f"http://127.0.0.1:{idp_port}",
                "cluster_vault": f"http://127.0.0.1:{endpoints[0]}",
                "agentward_vault_client_secret": DEMO_VAULT_SECRET,
                # Known to the test, so it can serve token-exchange alone with it.
                "proof_key": os.urandom(16).hex(),
            }
            envoy = Spin(f"chain-{backend}", ["jwt-identity", "token-exchange"], policy, workdir, ports, variables)
        else:
            envoy = Envoy(f"chain-{backend}", chain_config(ports, policy, endpoints), workdir, ports, concurrency=2)
        started.append(envoy)
        envoy.start()
    except BaseException:
        for piece in reversed(started):
            piece.stop()
        database.drop()
        raise
    return TokenVaultStack(
        backend, workdir, idp, provider, database, vaults, broker, server, envoy, policy, access_token_ttl, margin, taps, host
    )


def embedded_chain_policies(path: Path) -> list[dict]:
    return embedded_policies(path.read_text())
