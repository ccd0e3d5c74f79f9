"""The stock-trade agent: an AI agent's HTTP calls, made through the gateway.

The agent knows nothing about the gateway's policy. It calls the API; when
told 401 it reads the WWW-Authenticate challenge, discovers the protected
resource metadata (RFC 9728), gets a token the user's IdP issued to it for
that resource, and calls again. For the user's account at the broker
(GET /broker/portfolio) the gateway exchanges that token for the user's
broker access token at the vault; the agent never sees it. Until the user
links the account, the agent gets 403 with a `connect_url` to show the user.
Each step prints what happened.

With `--approval-gateway` (envoy/ciba-hold.yaml) and the vault's log, the
agent then places orders that need alice's approval: a large buy is held by
the gateway until alice approves it on the vault's approval page (the link
"her phone" got: the demo vault's log notifier), a larger one she denies,
a deferred order the agent retries with its approval id, and the same buy
as an MCP tool call (POST /trading/mcp, JSON-RPC): answered in the MCP
client's protocol (2026-07-28 `input_required` with the approval as
`requestState`; 2025-11-25 error -32042), then retried once she approved.

    python agent.py --gateway http://localhost:10000 --idp http://127.0.0.1:8081 \
        [--approval-gateway http://127.0.0.1:10001 --vault-log .demo/vault.log]

Steps are a list: add one with the @step decorator, in order.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
from typing import Callable

import requests

import user

STEPS: list[tuple[str, int, Callable[["Agent"], requests.Response]]] = []
APPROVAL_STEPS: list[tuple[str, int, Callable[["Agent"], requests.Response]]] = []


def step(title: str, expect: int, steps: list = STEPS):
    """Registers a step: it makes one call and returns the response; the
    status it should get is `expect`."""

    def register(fn):
        steps.append((title, expect, fn))
        return fn

    return register


class Agent:
    def __init__(self, gateway: str, idp: str):
        self.gateway = gateway.rstrip("/")
        self.idp = idp.rstrip("/")
        self.http = requests.Session()
        self.metadata: dict | None = None
        self.token: str | None = None
        self.connect_url: str | None = None
        self.notes: list[tuple[str, object]] = []
        self.approval_gateway: str | None = None
        self.vault_log: str | None = None
        self.links_seen: set[str] = set()

    def note(self, label: str, value) -> None:
        """A detail printed under the current step's status line."""
        self.notes.append((label, value))

    def call(self, method: str, path: str, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return self.http.request(method, self.gateway + path, headers=headers, timeout=15, **kw)

    def user_token(self, resource: str) -> str:
        """A token for alice, issued to this agent (a stand-in for the OAuth
        flow in which alice lets the agent act for her)."""
        claims = {
            "sub": "alice",
            "aud": resource,
            "azp": "stock-agent",
            "act": {"sub": "stock-agent"},
            "scope": "portfolio:read trade",
        }
        answer = self.http.post(self.idp + "/mint", json={"claims": claims}, timeout=10)
        answer.raise_for_status()
        return answer.json()["access_token"]


def identity_seen_upstream(r: requests.Response) -> dict:
    """The x-agentward-* headers the upstream received, the claims decoded."""
    seen = {k: v for k, v in r.json().get("seen_headers", {}).items() if k.startswith("x-agentward-")}
    claims = seen.get("x-agentward-claims")
    if claims:
        seen["x-agentward-claims"] = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    return seen


@step("public price, no token", expect=200)
def public_price(agent: Agent) -> requests.Response:
    r = agent.call("GET", "/prices/ACME")
    if r.ok:
        agent.note("price", f"{r.json()['ticker']} {r.json()['price']} {r.json()['currency']}")
    return r


@step("portfolio, no token", expect=401)
def portfolio_without_token(agent: Agent) -> requests.Response:
    r = agent.call("GET", "/portfolio")
    challenge = r.headers.get("www-authenticate", "")
    agent.note("WWW-Authenticate", challenge)
    agent.note("body", r.text)
    found = re.search(r'resource_metadata="([^"]+)"', challenge)
    if found:
        # Follow the path on the gateway we know: the advertised origin may
        # be the public name of the deployment.
        path = re.sub(r"^https?://[^/]+", "", found.group(1))
        agent.metadata = agent.http.get(agent.gateway + path, timeout=10).json()
        agent.note(f"GET {path}", agent.metadata)
    return r


@step("portfolio, with alice's token issued to stock-agent", expect=200)
def portfolio_with_user_token(agent: Agent) -> requests.Response:
    resource = (agent.metadata or {}).get("resource") or agent.gateway
    agent.token = agent.user_token(resource)
    r = agent.call("GET", "/portfolio")
    if r.ok:
        agent.note("upstream saw", identity_seen_upstream(r))
    else:
        agent.note("body", r.text)
    return r


@step("alice's private portfolio at the broker, through the token vault", expect=403)
def broker_portfolio_before_linking(agent: Agent) -> requests.Response:
    r = agent.call("GET", "/broker/portfolio")
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    agent.note("error", f"{body.get('error')}: {body.get('error_description')}")
    agent.connect_url = body.get("connect_url")
    if agent.connect_url:
        agent.note("connect_url (the agent shows it to alice)", agent.connect_url)
    else:
        agent.note("body", r.text)
    return r


@step("alice links her broker account (her browser, scripted: sign in, allow)", expect=200)
def user_links_the_account(agent: Agent) -> requests.Response:
    if not agent.connect_url:
        raise requests.RequestException("no connect_url to follow")
    linking = user.link_account(agent.connect_url, login="alice", password="demo")
    if linking.question:
        agent.note("the vault asked her first", linking.question)
    agent.note("what her browser did", "\n".join(f"{m} {u} → {s}" for m, u, s in linking.hops))
    agent.note("the vault", "keeps the broker's refresh token, encrypted; the agent gets none of it")
    return linking.response


@step("the agent retries: the gateway swaps alice's token for her broker token", expect=200)
def broker_portfolio_after_linking(agent: Agent) -> requests.Response:
    r = agent.call("GET", "/broker/portfolio")
    if not r.ok:
        agent.note("body", r.text)
        return r
    body = r.json()
    agent.note("portfolio", {"account": body["account"], "positions": body["positions"]})
    agent.note("the broker API accepted", body["authorized_by"])
    agent.note(
        "the agent never saw that token",
        "it sent alice's JWT; the gateway sent the broker's access token instead, "
        f"and the answer holds no credential (authorization seen upstream: {body['seen_headers'].get('authorization')!r})",
    )
    return r


@step("alice reads the vault's audit trail: who used her broker account, for which agent", expect=200)
def audit_trail(agent: Agent) -> requests.Response:
    if not agent.connect_url:
        raise requests.RequestException("no connect_url: the vault's address is unknown")
    vault = agent.connect_url.split("/connect/", 1)[0]
    # Her own JWT, issued for the vault itself (its audience is the vault's
    # public URL; a token for the API is refused there), shows her own rows only.
    headers = {"authorization": f"Bearer {agent.user_token(vault)}"}
    for _ in range(30):  # rows are written off the request path, within milliseconds
        r = agent.http.get(vault + "/audit", params={"limit": 5}, headers=headers, timeout=10)
        if not r.ok or any(e["outcome"].startswith("issued") for e in r.json()["entries"]):
            break
        time.sleep(0.1)
    if r.ok:
        rows = [
            f"{time.strftime('%H:%M:%S', time.gmtime(e['at']))}Z  {e['outcome']:<14} connection={e['connection']} agent={e['agent'] or '-'}"
            for e in r.json()["entries"]
        ]
        agent.note("newest first (no token in any row)", "\n".join(rows))
    else:
        agent.note("body", r.text)
    return r


def order_through_approvals(agent: Agent, path: str, order: dict, **headers) -> requests.Response:
    headers["authorization"] = f"Bearer {agent.token}"
    return agent.http.post(agent.approval_gateway + path, json=order, headers=headers, timeout=60)


def held_order_decided(agent: Agent, order: dict, message: str, decision: str) -> requests.Response:
    """Places `order` through the approval gateway (held), lets alice decide
    on the link her phone got, and returns what the agent finally got."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1)
    held = pool.submit(order_through_approvals, agent, "/trades", order)
    link = user.approval_link(agent.vault_log, message, agent.links_seen)
    agent.note("alice's phone got", f"{message!r} from stock-agent: {link.split('?')[0]}?ticket=…")
    agent.note("the agent's request meanwhile", "held in the gateway" if not held.done() else "answered already")
    shown, answer = user.decide_approval(link, decision)
    agent.note(f"alice opens the page, reads {shown!r} and clicks", f"{decision} → {answer.status_code}")
    r = held.result(timeout=60)
    pool.shutdown()
    return r


@step("a large order (50 ACME): the gateway holds it and asks alice; she approves", expect=201, steps=APPROVAL_STEPS)
def large_order_approved(agent: Agent) -> requests.Response:
    r = held_order_decided(agent, {"ticker": "ACME", "qty": 50}, "Buy 50 ACME", "approve")
    if r.status_code == 201:
        trade = r.json()
        agent.note("the order went through", {k: trade[k] for k in ("trade_id", "ticker", "qty", "owner")})
    else:
        agent.note("body", r.text)
    return r


@step("a larger order (500 ACME): alice denies it", expect=403, steps=APPROVAL_STEPS)
def larger_order_denied(agent: Agent) -> requests.Response:
    r = held_order_decided(agent, {"ticker": "ACME", "qty": 500}, "Buy 500 ACME", "deny")
    agent.note("the agent got", r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text)
    return r


@step("a deferred order: 202 with an approval id, alice approves later, the agent retries", expect=201, steps=APPROVAL_STEPS)
def deferred_order(agent: Agent) -> requests.Response:
    order = {"ticker": "GLOBEX", "qty": 20}
    first = order_through_approvals(agent, "/orders", order)
    if first.status_code != 202:
        agent.note("body", first.text)
        return first
    pending = first.json()
    agent.note("first answer", f"202 approval_pending, Retry-After {first.headers.get('retry-after')} s, approval_id {pending['approval_id'][:16]}…")
    link = user.approval_link(agent.vault_log, "Order 20 GLOBEX", agent.links_seen)
    shown, answer = user.decide_approval(link, "approve")
    agent.note(f"alice approves {shown!r}", answer.status_code)
    retry = order_through_approvals(agent, "/orders", order, **{"x-agentward-approval": pending["approval_id"]})
    replay = order_through_approvals(agent, "/orders", order, **{"x-agentward-approval": pending["approval_id"]})
    agent.note("the same retry again", f"{replay.status_code} {replay.json().get('reason')}: an approval is used once")
    return retry


MCP_TRADING = "/trading/mcp"


class RpcOutcome:
    """What an MCP step ends with: `result`, or `error <code>` (a JSON-RPC
    error comes with HTTP 200 too), as the step's status."""

    def __init__(self, r: requests.Response):
        try:
            body = r.json()
        except ValueError:
            body = {}
        if "result" in body and "error" not in body:
            self.status_code = "result"
        else:
            self.status_code = f"{r.status_code} error {body.get('error', {}).get('code')}"
        self.body = body


def mcp_call(agent: Agent, rid: int, arguments: dict, version: str, **params) -> requests.Response:
    """One `tools/call` of place_order as an MCP client of `version` sends it
    (Streamable HTTP; 2026-07-28 mirrors the method and tool in headers)."""
    message = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
               "params": dict(name="place_order", arguments=arguments, **params)}
    headers = {
        "authorization": f"Bearer {agent.token}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": version,
    }
    if version == "2026-07-28":
        headers.update({"mcp-method": "tools/call", "mcp-name": "place_order"})
    return agent.http.post(agent.approval_gateway + MCP_TRADING, json=message, headers=headers, timeout=60)


@step("the MCP form (2026-07-28): tools/call place_order 25 ACME → input_required; alice approves; the client retries with requestState",
      expect="result", steps=APPROVAL_STEPS)
def mcp_order_2026(agent: Agent) -> RpcOutcome:
    order = {"ticker": "ACME", "qty": 25}
    first = mcp_call(agent, 1, order, "2026-07-28")
    result = first.json().get("result", {}) if first.ok else {}
    if result.get("resultType") != "input_required":
        agent.note("body", first.text)
        return RpcOutcome(first)
    elicit = result["inputRequests"]["agentward_approval"]["params"]
    agent.note("the MCP answer", f"input_required: a URL elicitation ({elicit['url']}) saying {elicit['message']!r}; requestState {result['requestState'][:16]}…")
    link = user.approval_link(agent.vault_log, "Buy 25 ACME by MCP", agent.links_seen)
    shown, answer = user.decide_approval(link, "approve")
    agent.note(f"alice approves {shown!r} on the link her phone got", answer.status_code)
    accepted = {"agentward_approval": {"action": "accept"}}
    retry = mcp_call(agent, 2, order, "2026-07-28", requestState=result["requestState"], inputResponses=accepted)
    outcome = RpcOutcome(retry)
    agent.note("the retry", outcome.body.get("result") or outcome.body)
    replay = RpcOutcome(mcp_call(agent, 3, order, "2026-07-28", requestState=result["requestState"]))
    agent.note("the same requestState again", replay.body.get("error", {}).get("data") or replay.body)
    return outcome


@step("the MCP form (2025-11-25): the same call gets error -32042; alice approves; the client calls again",
      expect="result", steps=APPROVAL_STEPS)
def mcp_order_2025(agent: Agent) -> RpcOutcome:
    order = {"ticker": "GLOBEX", "qty": 15}
    first = mcp_call(agent, 1, order, "2025-11-25")
    error = first.json().get("error", {}) if first.ok else {}
    if error.get("code") != -32042:
        agent.note("body", first.text)
        return RpcOutcome(first)
    elicit = error["data"]["elicitations"][0]
    agent.note("the MCP answer", f"error -32042 (URL elicitation required): {elicit['url']}, {elicit['message']!r}")
    link = user.approval_link(agent.vault_log, "Buy 15 GLOBEX by MCP", agent.links_seen)
    shown, answer = user.decide_approval(link, "approve")
    agent.note(f"alice approves {shown!r}", answer.status_code)
    outcome = RpcOutcome(mcp_call(agent, 2, order, "2025-11-25"))
    agent.note("the same call again", outcome.body.get("result") or outcome.body)
    return outcome


def print_notes(notes) -> None:
    for label, value in notes:
        text = value if isinstance(value, str) else json.dumps(value, indent=2)
        lines = text.splitlines() or [""]
        if len(lines) == 1:
            print(f"     {label}: {lines[0]}")
        else:
            print(f"     {label}:")
            for line in lines:
                print(f"       {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="http://localhost:10000")
    parser.add_argument("--idp", default="http://127.0.0.1:8081")
    parser.add_argument("--approval-gateway", help="the gateway with ciba-hold (envoy/ciba-hold.yaml)")
    parser.add_argument("--vault-log", help="the vault's log: its log notifier is alice's phone")
    args = parser.parse_args()
    agent = Agent(args.gateway, args.idp)
    agent.approval_gateway, agent.vault_log = args.approval_gateway, args.vault_log
    steps = STEPS + (APPROVAL_STEPS if args.approval_gateway and args.vault_log else [])
    failed = []
    for n, (title, expect, run) in enumerate(steps, 1):
        agent.notes = []
        try:
            status = run(agent).status_code
        except requests.RequestException as e:
            status = "no answer"
            agent.note("error", str(e))
        verdict = "" if status == expect else f"   ✗ expected {expect}"
        print(f"{n}. {title} … {status}{verdict}")
        print_notes(agent.notes)
        if status != expect:
            failed.append(str(n))
    if failed:
        print(f"\nsteps {', '.join(failed)} did not go as expected")
        return 1
    print(f"\nall {len(steps)} steps went as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
