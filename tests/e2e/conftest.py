"""Fixtures: the IdP stand-in and the stock-trade upstream run in this
process; each gateway is a real Envoy loading the real jwt_identity.wasm,
rendered from envoy/jwt-identity.yaml with its own ports and policy."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack import (
    HOST_TEST,
    JWT_IDENTITY_CONFIG,
    ROOT,
    SPIN_WASM_DIR,
    WASM_DIR,
    Envoy,
    Spin,
    default_ports,
    embedded_policies,
    render,
)

sys.path.insert(0, str(ROOT / "examples/stock-trade"))

import idp as idp_module  # noqa: E402
import upstream as upstream_module  # noqa: E402

WASM = WASM_DIR / "jwt_identity.wasm"
BROWSER_DIR = ROOT / "tests/e2e/browser"


class Browser:
    """tests/e2e/browser/browser.mjs: one headless Chromium for the whole
    suite, a fresh page (and cookies) per command."""

    def __init__(self):
        self.process = subprocess.Popen(
            ["node", str(BROWSER_DIR / "browser.mjs")],
            cwd=BROWSER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = json.loads(self.process.stdout.readline() or "{}")
        assert hello.get("ready"), hello

    def command(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        assert "error" not in answer, answer["error"]
        return answer

    def visit(self, url: str, decision: str | None = None) -> dict:
        """Opens an approval page and clicks `decision` (none: only looks)."""
        return self.command({"url": url, "decision": decision})

    def steps(self, url: str, steps: list[dict]) -> list:
        """Opens `url` and runs `steps` (browser.mjs); what the reads saw."""
        return self.command({"url": url, "steps": steps})["read"]

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="session")
def browser():
    if not shutil.which("chromium") or not (BROWSER_DIR / "node_modules/playwright-core").exists():
        pytest.skip("headless Chromium is not installed (cargo xtask setup)")
    b = Browser()
    yield b
    b.close()


def pytest_collection_modifyitems(config, items):
    if not WASM.exists():
        pytest.exit(f"{WASM.relative_to(ROOT)} is missing: run `cargo xtask build` first", returncode=2)


@dataclass
class Idp:
    idp: idp_module.Idp
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def idp():
    issuer = idp_module.Idp()
    server = issuer.serve(0)
    yield Idp(issuer, server.server_port)
    server.shutdown()


@pytest.fixture(scope="session")
def upstream_port():
    server = upstream_module.make_server(0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def shipped_policy() -> dict:
    return embedded_policies(JWT_IDENTITY_CONFIG.read_text())[0]


@dataclass
class Gateway:
    envoy: Envoy | Spin
    policy: dict
    idp: idp_module.Idp
    host: str = "envoy"

    @property
    def counts(self) -> bool:
        """Whether the host keeps counters (Envoy does, Spin does not)."""
        return self.host == "envoy"

    @property
    def url(self) -> str:
        return self.envoy.url

    @property
    def resource(self) -> str:
        return self.policy["resource"]

    @property
    def audience(self) -> str:
        return self.policy["issuers"][0]["audiences"][0]

    def token(self, alg: str = "ES256", **claims) -> str:
        """A valid token for this gateway: alice, through the stock agent."""
        base = {
            "sub": "alice",
            "aud": self.audience,
            "azp": "stock-agent",
            "act": {"sub": "stock-agent"},
            "scope": "portfolio:read trade",
        }
        base.update(claims)
        return self.idp.mint(base, alg=alg)

    def counter(self, name: str) -> int:
        return self.envoy.counter(name)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("envoy")


@pytest.fixture(scope="session")
def start_gateway(idp, upstream_port, workdir):
    """Starts a gateway with the shipped config and `adjust(policy)` applied
    to a copy of the shipped policy (and `edit(config)` to the rendered
    config, `upstream` as the upstream's port); stopped at the end of the session."""
    started: list[Envoy] = []

    def start(
        name: str,
        adjust=None,
        idp_port: int | None = None,
        concurrency: int = 1,
        upstream: int | None = None,
        edit=None,
        host: str = "envoy",
        allowed_outbound: dict[str, list[str]] | None = None,
    ) -> Gateway:
        ports = default_ports(upstream=upstream or upstream_port, idp=idp_port or idp.port)
        policy = copy.deepcopy(shipped_policy())
        policy = json.loads(render(json.dumps(policy), ports))  # resource/audience follow the port
        if adjust:
            adjust(policy)
        if host == "spin":
            variables = {"cluster_idp": f"http://127.0.0.1:{ports['idp']}"}
            spin = Spin(name, ["jwt-identity"], policy, workdir, ports, variables, allowed_outbound)
            started.append(spin)
            spin.start()
            return Gateway(spin, policy, idp.idp, host="spin")
        config = render(JWT_IDENTITY_CONFIG.read_text(), ports, policy)
        if edit:
            config = edit(config)
        envoy = Envoy(name, config, workdir, ports, concurrency)
        started.append(envoy)
        envoy.start()
        return Gateway(envoy, policy, idp.idp)

    yield start
    for envoy in started:
        envoy.stop()


def _fast_refetch(policy: dict) -> None:
    # Key rotation tests should not wait the default 30 s between refetches.
    policy["issuers"][0]["jwks_min_refetch_seconds"] = 1


@pytest.fixture(scope="session")
def envoy_gateway(start_gateway) -> Gateway:
    """The shipped stock-trade gateway, two workers."""
    return start_gateway("stock-trade", _fast_refetch, concurrency=2)


@pytest.fixture(scope="session")
def gateway(envoy_gateway) -> Gateway:
    """The shipped stock-trade gateway in Envoy (see `hosted_gateway` for
    the scenarios that run in both hosts)."""
    return envoy_gateway


def _spin_built() -> bool:
    return HOST_TEST.exists() and (SPIN_WASM_DIR / "spin_jwt_identity.wasm").exists()


@pytest.fixture(scope="session", params=["envoy", "spin"])
def hosted_gateway(request, start_gateway) -> Gateway:
    """The shipped stock-trade gateway in each host: Envoy (two workers)
    and the Spin component in `host-test serve`. A scenario that passes in
    one and fails in the other is a bug."""
    if request.param == "spin":
        if not _spin_built():
            pytest.fail("the Spin build is missing: run `cargo xtask build`")
        return start_gateway("stock-trade-spin", _fast_refetch, host="spin")
    return request.getfixturevalue("envoy_gateway")


@pytest.fixture(scope="session")
def options_gateway(start_gateway) -> Gateway:
    """The stock-trade gateway with the identity options in use: a token
    header, a token query parameter, claim_to_headers and a required typ."""

    def adjust(policy: dict) -> None:
        _fast_refetch(policy)
        policy["issuers"][0]["typ"] = "at+jwt"
        policy["identity"] = {
            "token_header": "x-access-token",
            "token_query_param": "access_token",
            "claim_to_headers": [
                {"claim": "org.id", "header": "x-org-id"},
                {"claim": "email", "header": "x-user-email"},
            ],
        }

    return start_gateway("options", adjust)
