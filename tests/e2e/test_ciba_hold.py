"""Human approval end to end, with real processes: Envoy on
envoy/ciba-hold.yaml (jwt-identity → ciba-hold, the real .wasm files), the
real vault (target/debug/agentward-vault, SQLite) as the CIBA authority, the
stock-trade API as the upstream. The user decides on the vault's approval
page in headless Chromium (Debian's `chromium`, npm `playwright-core`,
tests/e2e/browser; one browser for the session), or, for the deferred
retries, with plain HTTP as a browser would (the page's CSRF token and
cookie); the link comes from the vault's log notifier.

Hold mode: a large trade waits in the gateway until alice approves, then
reaches the API; a denied one gets 403 access_denied; an expired one 403
expired_token. Deferred mode: 202 with an approval id; the same retry goes
through once the user approved, once; a changed amount or a replay is
refused. A binding message that would carry markup is refused at the
gateway; details holding a script show as text on the page."""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from html import unescape

import pytest
import requests

from stack import (
    APPROVAL_KEY_ENV,
    DEMO_APPROVAL_KEY,
    DEMO_VAULT_SECRET,
    ENVOY_DIR,
    HOST_TEST,
    ROOT,
    SPIN_WASM_DIR,
    VAULT_SECRET_ENV,
    WASM_DIR,
    Envoy,
    Spin,
    default_ports,
    embedded_policies,
    free_port,
    policy_file,
    render,
)
from vault_stack import Database, Vault, missing_pieces

CONFIG = ENVOY_DIR / "ciba-hold.yaml"
POLICY = ROOT / "policies/stock-trade-approval.json"


def test_the_config_carries_the_approval_policy_and_bounds_holds():
    policy = policy_file(POLICY)
    text = CONFIG.read_text()
    assert embedded_policies(text) == [policy, policy], "one policy for both filters"
    assert text.count("failure_policy: FAIL_CLOSED") == 2
    assert text.count("vm_id: agentward") == 2
    hold = max(r["approval"]["expiry_seconds"] for r in policy["routes"] if r.get("approval", {}).get("mode") == "hold")
    idle = int(re.search(r"stream_idle_timeout: (\d+)s", text).group(1))
    route_idle = int(re.search(r"idle_timeout: (\d+)s }", text).group(1))
    assert idle > hold and route_idle > hold, "a hold must end before Envoy's idle timeouts"


@pytest.fixture(scope="module", params=["envoy", "spin"])
def stack(request, idp, upstream_port, tmp_path_factory):
    """jwt-identity → ciba-hold in each host: Envoy on envoy/ciba-hold.yaml,
    and the Spin components in `host-test serve` with the same policy and
    secrets as variables; a vault of their own."""
    missing = missing_pieces()
    if missing or not (WASM_DIR / "ciba_hold.wasm").exists():
        pytest.skip("missing: " + ", ".join(missing or ["ciba_hold.wasm (cargo xtask build)"]))
    if request.param == "spin" and not (HOST_TEST.exists() and (SPIN_WASM_DIR / "spin_ciba_hold.wasm").exists()):
        pytest.fail("the Spin build is missing: run `cargo xtask build`")
    workdir = tmp_path_factory.mktemp(f"ciba-{request.param}")
    vault_port = free_port()
    ports = default_ports(upstream=upstream_port, idp=idp.port, vault=vault_port)
    database = Database.sqlite(workdir)
    key = "k1:" + base64.b64encode(b"0" * 32).decode()
    vault = Vault("vault", workdir, vault_port, ports, database, 30, key)
    policy = json.loads(render(json.dumps(policy_file(POLICY)), ports))
    # Test-only routes: a short expiry, and details that carry what the
    # binding message cannot (to see the page escape them).
    quick = copy.deepcopy(policy["routes"][2])
    quick["match"]["path"] = "/quick-trades"
    quick["approval"]["expiry_seconds"] = 2
    noted = copy.deepcopy(policy["routes"][3])
    noted["match"]["path"] = "/noted-orders"
    noted["approval"]["authorization_details"][0]["note"] = "{body.note}"
    policy["routes"] += [quick, noted]
    if request.param == "spin":
        variables = {
            "cluster_idp": f"http://127.0.0.1:{idp.port}",
            "cluster_vault": f"http://127.0.0.1:{vault_port}",
            VAULT_SECRET_ENV.lower(): DEMO_VAULT_SECRET,
            APPROVAL_KEY_ENV.lower(): DEMO_APPROVAL_KEY,
        }
        envoy = Spin("ciba-hold", ["jwt-identity", "ciba-hold"], policy, workdir, ports, variables)
    else:
        envoy = Envoy("ciba-hold", render(CONFIG.read_text(), ports, policy), workdir, ports, concurrency=2)
    try:
        envoy.start()
    except BaseException:
        vault.stop()
        raise
    yield Stack(idp, envoy, vault, policy, request.param)
    envoy.stop()
    vault.stop()
    database.drop()


class Stack:
    def __init__(self, idp, envoy: Envoy | Spin, vault: Vault, policy: dict, host: str = "envoy"):
        self.idp, self.envoy, self.vault, self.policy = idp, envoy, vault, policy
        self.host = host
        self.seen_links: set[str] = set()

    def token(self, sub: str = "alice") -> str:
        return self.idp.idp.mint(
            {"sub": sub, "aud": self.policy["issuers"][0]["audiences"][0], "azp": "stock-agent", "scope": "trade portfolio:read"}
        )

    def post(self, path: str, order: dict, sub: str = "alice", timeout: float = 60, **headers) -> requests.Response:
        headers["authorization"] = f"Bearer {self.token(sub)}"
        return requests.post(self.envoy.url + path, json=order, headers=headers, timeout=timeout)

    def link(self, message: str, timeout: float = 20) -> str:
        """The approval link the vault sent the user for `message` (its log
        notifier), one not seen before."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.vault.log().splitlines():
                if "log notifier" in line and message in line:
                    m = re.search(r"approval_url=(\S+)", line)
                    if m and m.group(1) not in self.seen_links:
                        self.seen_links.add(m.group(1))
                        return m.group(1).strip('"')
            time.sleep(0.1)
        raise TimeoutError(f"no approval link for {message!r}:\n{self.vault.log()[-3000:]}")

    def decide(self, link: str, decision: str) -> requests.Response:
        """What the user's browser does: open the page, post its form."""
        browser = requests.Session()
        page = browser.get(link, timeout=10)
        assert page.status_code == 200, page.text
        form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
        form = {k: unescape(v) for k, v in form.items()}
        action = unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
        url = requests.compat.urljoin(link, action)
        return browser.post(url, data=dict(form, decision=decision), timeout=10)


def json_error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def in_background(fn, *args, **kwargs):
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return future


def test_a_small_trade_goes_through_without_asking(stack):
    r = stack.post("/trades", {"ticker": "ACME", "qty": 5})
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == "alice"


def test_a_held_trade_reaches_the_api_when_alice_approves_in_the_browser(stack, browser):
    held = in_background(stack.post, "/trades", {"ticker": "ACME", "qty": 50})
    link = stack.link("Buy 50 ACME")
    assert not held.done(), "held while alice decides"
    # Opening the link decides nothing.
    seen = browser.visit(link)
    assert seen["message"] == "Buy 50 ACME"
    assert "stock-agent" in seen["details_text"] and "alice" in seen["details_text"]
    assert not held.done()
    decided = browser.visit(link, "approve")
    assert decided["status"] == 200, decided
    assert "approved" in decided["outcome"].lower(), decided["outcome"]
    r = held.result(timeout=30)
    assert r.status_code == 201, r.text
    trade = r.json()
    assert (trade["ticker"], trade["qty"], trade["owner"]) == ("ACME", 50, "alice")
    if stack.host == "envoy":  # a Spin host has no counters
        assert stack.envoy.counter("agentward.approval.approved") >= 1


def test_a_denied_trade_is_403_access_denied(stack, browser):
    held = in_background(stack.post, "/trades", {"ticker": "GLOBEX", "qty": 40})
    assert browser.visit(stack.link("Buy 40 GLOBEX"), "deny")["status"] == 200
    body = json_error(held.result(timeout=30), 403)
    assert body["error"] == "access_denied" and body["reason"] == "approval_denied"


def test_a_trade_nobody_decides_expires_with_403_expired_token(stack):
    r = stack.post("/quick-trades", {"ticker": "ACME", "qty": 60})
    body = json_error(r, 403)
    assert body["error"] == "expired_token"


def test_markup_in_the_binding_message_is_refused_before_anyone_is_asked(stack):
    r = stack.post("/trades", {"ticker": "<script>alert(1)</script>", "qty": 50})
    body = json_error(r, 400)
    assert body["reason"] == "approval_template"
    assert "<script>" not in r.text


def test_a_script_in_the_details_shows_as_text_on_the_page(stack, browser):
    note = "<script>alert('x')</script><img src=x onerror=alert(2)>"
    r = stack.post("/noted-orders", {"ticker": "ACME", "qty": 11, "note": note})
    assert json_error(r, 202)["status"] == "approval_pending"
    link = stack.link("Order 11 ACME")
    page = requests.get(link, timeout=10).text
    assert "<script>" not in page and "<img" not in page
    seen = browser.visit(link)
    assert note in seen["details_text"], "shown as text"
    assert not seen["scripts_run"]


def test_deferred_202_then_the_same_retry_goes_through_once(stack):
    order = {"ticker": "ACME", "qty": 20}
    first = stack.post("/orders", order)
    pending = json_error(first, 202)
    assert pending["status"] == "approval_pending"
    assert int(first.headers["retry-after"]) == pending["interval"]
    approval = {"x-agentward-approval": pending["approval_id"]}
    # Retried before alice decided: still pending, the same id.
    again = stack.post("/orders", order, **approval)
    assert json_error(again, 202)["approval_id"] == pending["approval_id"]
    # A changed amount is another request.
    changed = stack.post("/orders", dict(order, qty=200), **approval)
    assert json_error(changed, 403)["reason"] == "approval_other_request"
    # Another user cannot use alice's approval.
    bob = stack.post("/orders", order, sub="bob", **approval)
    assert json_error(bob, 403)["reason"] == "approval_other_principal"
    assert stack.decide(stack.link("Order 20 ACME"), "approve").status_code == 200
    # Key order and spacing do not matter: the digest is over canonical JSON.
    done = requests.post(
        stack.envoy.url + "/orders",
        data='{"qty":20,  "ticker":"ACME"}',
        headers=dict(approval, authorization=f"Bearer {stack.token()}", **{"content-type": "application/json"}),
        timeout=30,
    )
    assert done.status_code == 201, done.text
    assert "x-agentward-approval" not in done.json()["seen_headers"]
    # jwt-identity hands its proof binding to the Spin components after it, never to the API.
    assert "x-agentward-binding" not in done.json()["seen_headers"]
    replay = stack.post("/orders", order, **approval)
    assert json_error(replay, 403)["reason"] == "approval_used"


# -- two vault replicas on one PostgreSQL -----------------------------------


@pytest.fixture(scope="module")
def replicas(idp, upstream_port, tmp_path_factory):
    """Two vaults on one PostgreSQL schema; Envoy asks and long-polls
    replica B only, the user decides on replica A."""
    missing = missing_pieces()
    if missing or not (WASM_DIR / "ciba_hold.wasm").exists():
        pytest.skip("missing: " + ", ".join(missing or ["ciba_hold.wasm (cargo xtask build)"]))
    database = Database.postgres()
    if database is None:
        pytest.skip("no PostgreSQL answers on 127.0.0.1:5432")
    workdir = tmp_path_factory.mktemp("ciba-replicas")
    port_a, port_b = free_port(), free_port()
    ports = default_ports(upstream=upstream_port, idp=idp.port, vault=port_b)
    key = "k1:" + base64.b64encode(b"1" * 32).decode()
    started = []
    try:
        vault_a = Vault("vault-a", workdir, port_a, ports, database, 30, key)
        started.append(vault_a)
        vault_b = Vault("vault-b", workdir, port_b, ports, database, 30, key)
        started.append(vault_b)
        policy = json.loads(render(json.dumps(policy_file(POLICY)), ports))
        envoy = Envoy("ciba-replicas", render(CONFIG.read_text(), ports, policy), workdir, ports)
        started.append(envoy)
        envoy.start()
    except BaseException:
        for piece in reversed(started):
            piece.stop()
        database.drop()
        raise
    yield Stack(idp, envoy, vault_b, policy), vault_a
    for piece in reversed(started):
        piece.stop()
    database.drop()


def test_a_decision_on_one_replica_resumes_the_long_poll_held_by_another(replicas, browser):
    stack, vault_a = replicas
    held = in_background(stack.post, "/trades", {"ticker": "ACME", "qty": 70})
    link_b = stack.link("Buy 70 ACME")  # replica B took the request and notified
    link_a = re.sub(r"^http://127\.0\.0\.1:\d+", vault_a.url, link_b)
    assert link_a != link_b
    assert browser.visit(link_a, "approve")["status"] == 200
    r = held.result(timeout=30)
    assert r.status_code == 201, r.text
    assert stack.envoy.counter("agentward.approval.approved") == 1
