"""ciba-hold against a CIBA authority nobody here wrote: npm oidc-provider 9
(its `ciba` feature, poll mode; vault/tests/peers/ciba-authority.mjs), as
the gateway would use Auth0 or Keycloak: their endpoint paths, HTTP Basic,
a plain `login_hint`, no agentward parameters, plain polling at the
provider's interval. Real Envoy on envoy/ciba-hold.yaml with the policy's
`approval` pointed at the provider; the user decides on the provider's
side (a test hook standing in for their device)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from stack import DEMO_VAULT_SECRET, ENVOY_DIR, ROOT, WASM_DIR, Envoy, default_ports, free_port, policy_file, render

PEERS = ROOT / "vault/tests/peers"
CONFIG = ENVOY_DIR / "ciba-hold.yaml"
POLICY = ROOT / "policies/stock-trade-approval.json"


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    if not (PEERS / "node_modules/oidc-provider").exists() or not (WASM_DIR / "ciba_hold.wasm").exists():
        pytest.skip("needs vault/tests/peers/node_modules (cargo xtask setup) and ciba_hold.wasm (cargo xtask build)")
    log = open(tmp_path_factory.mktemp("ciba-peer") / "peer.log", "w+")
    config = {"port": free_port(), "client_id": "gateway", "client_secret": DEMO_VAULT_SECRET}
    process = subprocess.Popen(
        ["node", str(PEERS / "ciba-authority.mjs")],
        cwd=PEERS,
        env=dict(os.environ, PEER_CONFIG=json.dumps(config)),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    line = process.stdout.readline()
    assert line.startswith("listening"), line + open(log.name).read()
    yield f"http://127.0.0.1:{config['port']}", config["port"]
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def gateway(idp, upstream_port, authority, tmp_path_factory):
    url, port = authority
    ports = default_ports(upstream=upstream_port, idp=idp.port, vault=port)
    policy = json.loads(render(json.dumps(policy_file(POLICY)), ports))
    policy["approval"] = dict(
        policy["approval"],
        bc_authorize_path="/backchannel",
        token_path="/token",
        agentward_params=False,
        wait_seconds=0,
    )
    policy["approval"].pop("audience")
    for route in policy["routes"]:
        if "approval" in route:
            route["approval"].pop("authorization_details", None)
    envoy = Envoy("ciba-interop", render(CONFIG.read_text(), ports, policy), tmp_path_factory.mktemp("ciba-interop"), ports)
    envoy.start()
    yield envoy, url, policy
    envoy.stop()


def post(gateway, idp, path: str, order: dict, **headers) -> requests.Response:
    envoy, _, policy = gateway
    token = idp.idp.mint({"sub": "alice", "aud": policy["issuers"][0]["audiences"][0], "azp": "stock-agent", "scope": "trade"})
    headers["authorization"] = f"Bearer {token}"
    return requests.post(envoy.url + path, json=order, headers=headers, timeout=60)


def decide(url: str, message: str, decision: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        waiting = requests.get(url + "/_test/pending", timeout=5).json()
        if any(w["binding_message"] == message and w["account"] == "alice" for w in waiting):
            r = requests.post(url + "/_test/decide", params={"binding_message": message, "decision": decision}, timeout=5)
            assert r.status_code == 204, r.text
            return
        time.sleep(0.1)
    raise TimeoutError(f"the provider never got {message!r}")


def test_a_held_trade_goes_through_when_the_user_approves_at_oidc_provider(gateway, idp):
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, gateway, idp, "/trades", {"ticker": "ACME", "qty": 30})
        decide(gateway[1], "Buy 30 ACME", "approve")
        r = held.result(timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["qty"] == 30


def test_a_denial_at_oidc_provider_is_403_access_denied(gateway, idp):
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, gateway, idp, "/trades", {"ticker": "ACME", "qty": 31})
        decide(gateway[1], "Buy 31 ACME", "deny")
        r = held.result(timeout=60)
    assert r.status_code == 403, r.text
    assert r.json()["reason"] == "approval_denied"


def test_a_deferred_order_is_retried_once_against_oidc_provider(gateway, idp):
    order = {"ticker": "ACME", "qty": 32}
    first = post(gateway, idp, "/orders", order)
    assert first.status_code == 202, first.text
    approval = {"x-agentward-approval": first.json()["approval_id"]}
    decide(gateway[1], "Order 32 ACME", "approve")
    retry = post(gateway, idp, "/orders", order, **approval)
    assert retry.status_code == 201, retry.text
    replay = post(gateway, idp, "/orders", order, **approval)
    assert replay.status_code == 403 and replay.json()["reason"] == "approval_used", replay.text
