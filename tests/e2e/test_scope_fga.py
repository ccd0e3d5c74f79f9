"""scope-fga end to end: real Envoy on envoy/scope-fga.yaml (jwt-identity →
scope-fga → the stock-trade upstream) and on envoy/identity-fga.yaml (the
two in one filter), the Spin components, the real vault's OpenFGA-compatible
API as the FGA server, seeded through that API with
policies/stock-trade-rag.fga and the tuples of its model test."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import requests

from fga_stack import FgaVault, gateway, missing_pieces, shipped_policy, spin_gateway
from stack import ROOT, default_ports, free_port, render

sys.path.insert(0, str(ROOT / "examples/stock-trade"))

import upstream as upstream_module  # noqa: E402

ISSUER = "https://idp.stock-trade.example/"


@pytest.fixture(scope="module")
def fga_vault(tmp_path_factory):
    missing = missing_pieces()
    if missing:
        pytest.skip("missing: " + ", ".join(missing))
    vault = FgaVault(tmp_path_factory.mktemp("fga-vault"))
    yield vault
    vault.stop()


@pytest.fixture(scope="module")
def store(fga_vault):
    return fga_vault.seed()


class Gateway:
    def __init__(self, envoy, policy, idp, host: str = "envoy"):
        self.envoy = envoy
        self.policy = policy
        self.idp = idp
        self.host = host

    @property
    def url(self) -> str:
        return self.envoy.url

    def token(self, **claims) -> str:
        base = {
            "iss": ISSUER,
            "sub": "alice",
            "aud": self.policy["issuers"][0]["audiences"][0],
            "azp": "copilot",
            "scope": "research:read tools",
        }
        base.update(claims)
        return self.idp.mint(base)

    def call(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=15, **kwargs)


# A route whose check reads the request body (not in the shipped policy:
# the stock-trade upstream has no such endpoint and answers 404 to what
# passes).
SHARE_ROUTE = {
    "match": {"methods": ["POST"], "path": "/research/share"},
    "fga": {
        "scopes": {"all": ["research:read"]},
        "checks": [{"relation": "can_share", "object": "document:{body.document}"}],
        "max_body_bytes": 256,
    },
}


def _policy(ports: dict, store: str, vault_port: int) -> dict:
    policy = copy.deepcopy(shipped_policy())
    policy = json.loads(render(json.dumps(policy), ports))
    policy["fga"]["store_id"] = store
    policy["routes"].append(SHARE_ROUTE)
    return policy


@pytest.fixture(scope="module", params=["envoy", "envoy-one-filter", "spin"])
def fga_gateway(request, idp, upstream_port, fga_vault, store, tmp_path_factory):
    """jwt-identity → scope-fga in each host: Envoy (two workers) as two
    filters and as one (identity_fga.wasm), and the Spin components in
    `host-test serve`, on one vault and one store."""
    assert idp.idp.issuer == ISSUER, "the test IdP's issuer is the shipped policy's"
    ports = default_ports(upstream=upstream_port, idp=idp.port, vault=fga_vault.port)
    policy = _policy(ports, store, fga_vault.port)
    workdir = tmp_path_factory.mktemp(f"scope-fga-{request.param}")
    if request.param == "spin":
        host = spin_gateway("scope-fga", workdir, ports, policy)
    else:
        one_filter = request.param == "envoy-one-filter"
        host = gateway(f"scope-fga-{request.param}", workdir, ports, policy, concurrency=2, one_filter=one_filter)
    yield Gateway(host, policy, idp.idp, request.param)
    host.stop()


def test_a_reader_gets_a_note_they_may_read(fga_gateway, fga_vault, store):
    assert fga_vault.check(store, "user:alice", "can_read", "document:nvda-note")
    r = fga_gateway.call("GET", "/research/nvda-note", fga_gateway.token())
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "nvda-note"


def test_a_missing_scope_gets_the_step_up_challenge(fga_gateway):
    r = fga_gateway.call("GET", "/research/nvda-note", fga_gateway.token(scope="tools"))
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "insufficient_scope"
    challenge = r.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="research:read"' in challenge


def test_fga_denial_names_the_relation_not_the_note(fga_gateway):
    # alice is blocked on the outlook (a viewer, but `can_read` is `viewer but not blocked`).
    r = fga_gateway.call("GET", "/research/outlook", fga_gateway.token())
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"] == "access_denied" and body["relation"] == "can_read"
    assert "outlook" not in r.text and "alice" not in r.text
    r = fga_gateway.call("GET", "/research/board-minutes", fga_gateway.token())
    assert r.status_code == 403


def test_the_agent_is_denied_where_the_user_is_allowed(fga_gateway, fga_vault, store):
    # alice may use wire-funds; the copilot agent is blocked on it.
    assert fga_vault.check(store, "user:alice", "can_use", "tool:wire-funds")
    assert not fga_vault.check(store, "agent:copilot", "can_use", "tool:wire-funds")
    ok = fga_gateway.call("POST", "/tools/place-trade", fga_gateway.token(), json={})
    assert ok.status_code != 403, ok.text
    r = fga_gateway.call("POST", "/tools/wire-funds", fga_gateway.token(), json={})
    assert r.status_code == 403, r.text
    assert r.json()["principal"] == "agent" and r.json()["relation"] == "can_use"
    # An agent her company forbids (acme blocks `rogue`), on a tool she may use.
    r = fga_gateway.call("POST", "/tools/get-quote", fga_gateway.token(azp="rogue"), json={})
    assert r.status_code == 403 and r.json()["principal"] == "agent"


def test_a_route_check_reads_the_request_body(fga_gateway):
    token = fga_gateway.token()
    # alice owns her draft and may read it: the request goes on (the
    # upstream has no such endpoint: its 404, not the gateway's 403).
    r = fga_gateway.call("POST", "/research/share", token, json={"document": "alice-draft", "to": "bob"})
    assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
    # She reads the NVDA note but does not own it.
    r = fga_gateway.call("POST", "/research/share", token, json={"document": "nvda-note", "to": "bob"})
    assert r.status_code == 403, r.text
    assert r.json()["relation"] == "can_share" and "nvda" not in r.text
    # Not JSON, a key given twice, the field absent: 400; over the bound: 413.
    for body in [b"document=alice-draft", b'{"document": "nvda-note", "document": "alice-draft"}', b'{"to": "bob"}']:
        r = fga_gateway.call("POST", "/research/share", token, data=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (body, r.text)
    r = fga_gateway.call("POST", "/research/share", token, json={"document": "alice-draft", "memo": "x" * 300})
    assert r.status_code == 413, r.text


def test_a_rag_search_of_ten_notes_gives_exactly_the_four_alice_may_read(fga_gateway):
    everything = upstream_module.search_notes("chip research")
    assert len(everything) == 10
    r = fga_gateway.call("POST", "/research/search", fga_gateway.token(), json={"query": "chip research"})
    assert r.status_code == 200, r.text
    assert "content-length" not in {k.lower() for k in r.headers} or int(r.headers["content-length"]) == len(r.content)
    ids = [n["id"] for n in r.json()["results"]]
    assert ids == ["methodology", "alice-draft", "nvda-note", "prices-faq"]
    # bob sees other notes (his group edits the Q4 folder; his own draft is blocked for his group).
    r = fga_gateway.call("POST", "/research/search", fga_gateway.token(sub="bob"), json={"query": ""})
    ids = {n["id"] for n in r.json()["results"]}
    assert ids == {"nvda-note", "prices-faq"}
    if fga_gateway.host == "envoy":  # a Spin host has no counters
        assert fga_gateway.envoy.counter("agentward.fga.filtered") >= 2


def test_a_path_normalisation_bypass_is_refused(fga_gateway):
    token = fga_gateway.token()
    for path in ["/research/x/../outlook", "/research/%2e%2e/outlook", "//research/outlook", "/research/./outlook"]:
        r = requests.get(
            fga_gateway.url + path, headers={"authorization": f"Bearer {token}"}, timeout=10, allow_redirects=False
        )
        assert r.status_code in (400, 403, 404), (path, r.status_code, r.text)
        assert "The full text" not in r.text, path


def test_a_forged_identity_header_does_not_pass(fga_gateway):
    token = fga_gateway.token(sub="mallory")
    r = fga_gateway.call("GET", "/research/nvda-note", token, headers={"x-agentward-sub": "alice"})
    assert r.status_code == 403, r.text


@pytest.mark.parametrize("one_filter", [False, True], ids=["two-filters", "one-filter"])
def test_the_fga_service_down_is_503_never_forwarded(idp, upstream_port, tmp_path_factory, store, one_filter):
    ports = default_ports(upstream=upstream_port, idp=idp.port, vault=free_port())
    workdir = tmp_path_factory.mktemp("fga-down")
    envoy = gateway("scope-fga-down", workdir, ports, _policy(ports, store, 0), one_filter=one_filter)
    try:
        g = Gateway(envoy, _policy(ports, store, 0), idp.idp)
        r = g.call("GET", "/research/nvda-note", g.token())
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "temporarily_unavailable"
        r = g.call("POST", "/research/search", g.token(), json={"query": ""})
        assert r.status_code == 200
        # Envoy answers a call to a cluster with no live endpoint itself (503).
        assert r.json()["reason"] in ("fga_unavailable", "fga_error") and "results" not in r.json()
        # Public routes need no check.
        assert g.call("GET", "/prices/ACME").status_code == 200
    finally:
        envoy.stop()


def test_both_filters_read_the_same_policy_and_the_key_comes_from_the_environment():
    from fga_stack import SCOPE_FGA_CONFIG
    from stack import embedded_policies

    text = SCOPE_FGA_CONFIG.read_text()
    jwt, fga = embedded_policies(text)
    assert jwt == fga
    assert fga["fga"]["preshared_key_env"] == "AGENTWARD_FGA_KEY" and "preshared_key" not in fga["fga"]
    assert "host_env_keys: [AGENTWARD_FGA_KEY]" in text


def test_the_one_filter_gateway_reads_the_two_filters_policy():
    from fga_stack import IDENTITY_FGA_CONFIG, SCOPE_FGA_CONFIG
    from stack import embedded_policies

    text = IDENTITY_FGA_CONFIG.read_text()
    (one,) = embedded_policies(text)
    assert one == embedded_policies(SCOPE_FGA_CONFIG.read_text())[0]
    assert "host_env_keys: [AGENTWARD_FGA_KEY]" in text and "scope_fga.wasm" not in text


@pytest.mark.parametrize("one_filter", [False, True], ids=["two-filters", "one-filter"])
def test_a_request_held_for_the_issuer_s_keys_is_then_checked(idp, upstream_port, fga_vault, tmp_path_factory, one_filter):
    """A request that comes while the issuer's keys are being fetched is held
    by jwt-identity; when they arrive it is verified and its FGA check made.
    In the one filter the root decides it and makes the check: the answer
    comes to the root and goes back to the request."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class SlowJwks(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(3)
            body = json.dumps(idp.idp.jwks()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    jwks = ThreadingHTTPServer(("127.0.0.1", 0), SlowJwks)
    threading.Thread(target=jwks.serve_forever, daemon=True).start()
    store = fga_vault.seed()  # a fresh store: no decision is cached
    ports = default_ports(upstream=upstream_port, idp=jwks.server_port, vault=fga_vault.port)
    policy = _policy(ports, store, fga_vault.port)
    policy["issuers"][0]["jwks_timeout_ms"] = 8000
    name = "held-one" if one_filter else "held-two"
    envoy = gateway(name, tmp_path_factory.mktemp(name), ports, policy, one_filter=one_filter)
    try:
        g = Gateway(envoy, policy, idp.idp)
        answers = {}

        def ask(key, path):
            answers[key] = g.call("GET", path, g.token())

        asks = [
            threading.Thread(target=ask, args=("allowed", "/research/nvda-note")),
            threading.Thread(target=ask, args=("denied", "/research/outlook")),
        ]
        for t in asks:
            t.start()
        time.sleep(0.5)
        assert all(t.is_alive() for t in asks), f"not held: {[(k, a.status_code, a.text) for k, a in answers.items()]}"
        for t in asks:
            t.join(20)
        assert answers["allowed"].status_code == 200, answers["allowed"].text
        assert answers["allowed"].json()["seen_headers"]["x-agentward-sub"] == "alice"
        assert answers["denied"].status_code == 403, answers["denied"].text
        assert answers["denied"].json()["relation"] == "can_read"
        assert envoy.counter("agentward.jwt.keys_pending") >= 2
        assert envoy.counter("agentward.fga.fga_call") >= 2
    finally:
        jwks.shutdown()
        envoy.stop()


def test_the_demo_s_research_steps_go_as_expected(fga_gateway, idp):
    """examples/stock-trade/research.py run: what `cargo xtask demo` shows."""
    import subprocess

    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/stock-trade/research.py"),
            "run",
            "--gateway", fga_gateway.url,
            "--idp", idp.url,
            "--resource", fga_gateway.policy["issuers"][0]["audiences"][0],
        ],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alice gets 4" in result.stdout and "listed: get-quote, place-trade" in result.stdout
