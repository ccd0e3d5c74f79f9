"""The FGA side of the end-to-end tests: the agentward vault with its
OpenFGA-compatible API on (a preshared key), a store seeded through that API
with a model from policies/*.fga (turned into JSON by the real `fga` CLI,
`fga model transform`) and the tuples of its OpenFGA model test
(policies/*.fga.yaml), and Envoy on envoy/scope-fga.yaml
(jwt-identity → scope-fga) or envoy/identity-fga.yaml (the two in one
filter) pointed at that store."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import requests
import yaml

from stack import DEMO_FGA_KEY, HOST_TEST, ROOT, SPIN_WASM_DIR, Envoy, Spin, embedded_policies, free_port, render
from vault_stack import VAULT_BIN, VAULT_CONFIG, _stop, _wait_http, render_ports

FGA_CLI = ROOT / ".tools/venv/bin/fga"
SCOPE_FGA_CONFIG = ROOT / "envoy/scope-fga.yaml"
# The same gateway as one filter (identity_fga.wasm: jwt-identity and scope-fga in one module).
IDENTITY_FGA_CONFIG = ROOT / "envoy/identity-fga.yaml"
RAG_MODEL = ROOT / "policies/stock-trade-rag.fga"
RAG_TESTS = ROOT / "policies/stock-trade-rag.fga.yaml"


def missing_pieces() -> list[str]:
    missing = []
    for path, how in [
        (VAULT_BIN, "cargo xtask build"),
        (ROOT / "target/wasm32-wasip1/release/scope_fga.wasm", "cargo xtask build"),
        (ROOT / "target/wasm32-wasip1/release/identity_fga.wasm", "cargo xtask build"),
        (FGA_CLI, "cargo xtask setup"),
    ]:
        if not path.exists():
            missing.append(f"{path.relative_to(ROOT)} ({how})")
    return missing


class FgaVault:
    """One vault process on SQLite with the FGA API on (key `DEMO_FGA_KEY`)."""

    def __init__(self, workdir: Path, key: str = DEMO_FGA_KEY):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = key
        self.log_path = workdir / "fga-vault.log"
        config = workdir / "fga-vault.toml"
        config.write_text(render_ports(VAULT_CONFIG.read_text(), {"vault": self.port}))
        self.args = [
            str(VAULT_BIN),
            "--config", str(config),
            "--database-url", f"sqlite://{workdir / 'fga-vault.db'}",
        ]
        self.process = None
        self.start()

    def start(self) -> None:
        env = dict(
            os.environ,
            AGENTWARD_VAULT_KEY="k1:" + base64.b64encode(os.urandom(32)).decode(),
            AGENTWARD_VAULT_FGA_PRESHARED_KEYS=self.key,
            RUST_LOG="info",
        )
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_http(self.url + "/healthz", self.process, self.log_path)

    def stop(self) -> None:
        _stop(self.process)

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        r = requests.request(
            method, self.url + path, json=body, headers={"authorization": f"Bearer {self.key}"}, timeout=30
        )
        assert r.status_code in (200, 201), f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}

    def seed(self, model: Path = RAG_MODEL, tests: Path = RAG_TESTS, extra: list[dict] | None = None) -> str:
        """A new store with `model` and the tuples of `tests`; its id."""
        store = self.api("POST", "/stores", {"name": "agentward-e2e"})["id"]
        transformed = subprocess.run(
            [str(FGA_CLI), "model", "transform", "--file", str(model)],
            capture_output=True, text=True, check=True,
        ).stdout
        self.api("POST", f"/stores/{store}/authorization-models", json.loads(transformed))
        tuples = list(yaml.safe_load(tests.read_text())["tuples"]) + list(extra or [])
        for i in range(0, len(tuples), 100):
            self.api("POST", f"/stores/{store}/write", {"writes": {"tuple_keys": tuples[i : i + 100]}})
        return store

    def check(self, store: str, user: str, relation: str, obj: str) -> bool:
        body = {"tuple_key": {"user": user, "relation": relation, "object": obj}}
        return self.api("POST", f"/stores/{store}/check", body)["allowed"]


def shipped_policy() -> dict:
    """The policy inside envoy/scope-fga.yaml (both filters carry it)."""
    return embedded_policies(SCOPE_FGA_CONFIG.read_text())[0]


def gateway(
    name: str, workdir: Path, ports: dict[str, int], policy: dict, concurrency: int = 1, one_filter: bool = False
) -> Envoy:
    """Envoy on envoy/scope-fga.yaml (`one_filter`: envoy/identity-fga.yaml)
    with these ports and this policy (started)."""
    config = IDENTITY_FGA_CONFIG if one_filter else SCOPE_FGA_CONFIG
    envoy = Envoy(name, render(config.read_text(), ports, policy), workdir, ports, concurrency)
    envoy.start()
    return envoy


def spin_gateway(name: str, workdir: Path, ports: dict[str, int], policy: dict) -> Spin:
    """The same chain as Spin components (jwt-identity → scope-fga in
    `host-test serve`) with these ports and this policy (started); skips
    when the Spin build is missing."""
    import pytest

    missing = [p for p in [HOST_TEST, SPIN_WASM_DIR / "spin_scope_fga.wasm"] if not p.exists()]
    if missing:
        pytest.fail(f"the Spin build is missing ({missing[0].relative_to(ROOT)}): run `cargo xtask build`")
    variables = {
        "cluster_idp": f"http://127.0.0.1:{ports['idp']}",
        "cluster_vault": f"http://127.0.0.1:{ports['vault']}",
        "agentward_fga_key": DEMO_FGA_KEY,
    }
    spin = Spin(name, ["jwt-identity", "scope-fga"], policy, workdir, ports, variables)
    spin.start()
    return spin
