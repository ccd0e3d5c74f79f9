"""MCP tool-call approvals end to end, with real peers: the Python `mcp` SDK
(PyPI `mcp`) as the client and as the upstream server (Streamable HTTP,
stateless, on /trading/mcp), Envoy on envoy/ciba-hold.yaml (jwt-identity →
ciba-hold, the real .wasm files, the shipped policy's MCP route), the real
vault (SQLite) as the CIBA authority. The user decides with plain HTTP on
the vault's approval page (the page's CSRF token and cookie; Chromium is
test_ciba_hold.py's), the link coming from the vault's log notifier.

`place_order` above 10 shares needs alice's approval: a 2026-07-28 client
gets `input_required` with a URL elicitation, its elicitation callback has
alice approve, and the SDK's own retry (with `requestState` echoed)
completes; a 2025-11-25 client gets JSON-RPC -32042 and its plain retry
completes. The upstream server never sees `requestState` (the SDK server
would refuse a state it did not seal). `get_price` passes untouched."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import pytest

mcp = pytest.importorskip("mcp", reason="the Python mcp SDK (cargo xtask setup)")

from stack import ENVOY_DIR, ROOT, WASM_DIR, Envoy, default_ports, free_port, policy_file, render  # noqa: E402
from test_ciba_hold import Stack  # noqa: E402
from vault_stack import Database, Vault, missing_pieces  # noqa: E402

CONFIG = ENVOY_DIR / "ciba-hold.yaml"
POLICY = ROOT / "policies/stock-trade-approval.json"
PATH = "/trading/mcp"


class Upstream:
    """The SDK's MCPServer with place_order and get_price, and every JSON-RPC
    request body it was sent."""

    def __init__(self, port: int):
        import uvicorn
        from mcp.server.mcpserver import MCPServer
        from mcp.server.transport_security import TransportSecuritySettings

        self.bodies: list[dict] = []
        server = MCPServer("stock-trading")

        @server.tool(description="Buy shares")
        def place_order(ticker: str, qty: int) -> str:
            return f"bought {qty} {ticker}"

        @server.tool(description="The price of a share")
        def get_price(ticker: str) -> str:
            return f"{ticker} at 42.00"

        app = server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        upstream = self

        async def recording(scope, receive, send):
            if scope["type"] != "http" or scope["method"] != "POST":
                return await app(scope, receive, send)
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            try:
                upstream.bodies.append(json.loads(body))
            except ValueError:
                pass
            sent = False

            async def replay():
                nonlocal sent
                if sent:
                    return await receive()  # waits for the client to go away
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await app(scope, replay, send)

        config = uvicorn.Config(recording, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the MCP SDK server did not start"

    def calls(self, tool: str) -> list[dict]:
        return [b for b in self.bodies if b.get("method") == "tools/call" and b["params"]["name"] == tool]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def stack(idp, tmp_path_factory):
    missing = missing_pieces()
    if missing or not (WASM_DIR / "ciba_hold.wasm").exists():
        pytest.skip("missing: " + ", ".join(missing or ["ciba_hold.wasm (cargo xtask build)"]))
    workdir = tmp_path_factory.mktemp("ciba-mcp")
    upstream = Upstream(free_port())
    vault_port = free_port()
    ports = default_ports(upstream=upstream.server.config.port, idp=idp.port, vault=vault_port)
    database = Database.sqlite(workdir)
    key = "k1:" + base64.b64encode(b"2" * 32).decode()
    vault = Vault("vault", workdir, vault_port, ports, database, 30, key)
    policy = json.loads(render(json.dumps(policy_file(POLICY)), ports))
    envoy = Envoy("ciba-mcp", render(CONFIG.read_text(), ports, policy), workdir, ports, concurrency=2)
    try:
        envoy.start()
    except BaseException:
        vault.stop()
        upstream.stop()
        raise
    s = Stack(idp, envoy, vault, policy)
    s.upstream = upstream
    yield s
    envoy.stop()
    vault.stop()
    upstream.stop()
    database.drop()


def run(stack: Stack, mode: str, work, sub: str = "alice", elicit=None):
    """`work(client)` with an SDK client of protocol `mode` ('2026-07-28' or
    'legacy') through the gateway, as `sub`."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async def go():
        http = create_mcp_http_client(headers={"authorization": f"Bearer {stack.token(sub)}"})
        async with http:
            transport = streamable_http_client(stack.envoy.url + PATH, http_client=http)
            async with Client(transport, mode=mode, elicitation_callback=elicit) as client:
                return await work(client)

    return asyncio.run(go())


def approving(stack: Stack, message: str, decision: str = "approve", seen: list | None = None):
    """An elicitation callback: alice opens the link her device got for
    `message` and decides, then the client answers `accept`."""
    import anyio
    from mcp_types import ElicitResult

    async def elicit(context, params):
        if seen is not None:
            seen.append(params)
        link = await anyio.to_thread.run_sync(stack.link, message)
        r = await anyio.to_thread.run_sync(stack.decide, link, decision)
        assert r.status_code == 200, r.text
        return ElicitResult(action="accept")

    return elicit


def text(result) -> str:
    assert not result.is_error, result
    return result.content[0].text


def test_a_2026_client_is_asked_by_url_elicitation_and_its_retry_completes(stack):
    seen: list = []
    elicit = approving(stack, "Buy 50 ACME by MCP", seen=seen)

    async def work(client):
        assert client.protocol_version == "2026-07-28"
        return await client.call_tool("place_order", {"ticker": "ACME", "qty": 50})

    result = run(stack, "2026-07-28", work, elicit=elicit)
    assert text(result) == "bought 50 ACME"
    assert len(seen) == 1
    assert seen[0].mode == "url"
    assert seen[0].url == stack.policy["approval"]["approval_url"]
    assert "Buy 50 ACME" in seen[0].message
    calls = stack.upstream.calls("place_order")
    assert len(calls) == 1, "the upstream got the approved call once"
    assert "requestState" not in calls[0]["params"] and "inputResponses" not in calls[0]["params"]
    assert calls[0]["params"]["arguments"] == {"ticker": "ACME", "qty": 50}


def test_a_2026_replay_of_the_approved_state_is_refused(stack):
    from mcp.shared.exceptions import MCPError
    from mcp_types import InputRequiredResult

    async def work(client):
        first = await client.session.call_tool(
            "place_order", {"ticker": "GLOBEX", "qty": 30}, allow_input_required=True
        )
        assert isinstance(first, InputRequiredResult)
        state = first.request_state
        link = await asyncio.to_thread(stack.link, "Buy 30 GLOBEX by MCP")
        assert (await asyncio.to_thread(stack.decide, link, "approve")).status_code == 200
        done = await client.session.call_tool(
            "place_order", {"ticker": "GLOBEX", "qty": 30}, request_state=state, allow_input_required=True
        )
        changed = replay = None
        try:
            await client.session.call_tool(
                "place_order", {"ticker": "GLOBEX", "qty": 300}, request_state=state, allow_input_required=True
            )
        except MCPError as e:
            changed = e
        try:
            await client.session.call_tool(
                "place_order", {"ticker": "GLOBEX", "qty": 30}, request_state=state, allow_input_required=True
            )
        except MCPError as e:
            replay = e
        return done, changed, replay

    done, changed, replay = run(stack, "2026-07-28", work)
    assert text(done) == "bought 30 GLOBEX"
    assert changed is not None and changed.error.code == -32010
    assert changed.error.data["reason"] == "approval_other_request"
    assert replay is not None and replay.error.code == -32010
    assert replay.error.data["reason"] == "approval_used"
    assert len(stack.upstream.calls("place_order")) >= 1
    assert not [c for c in stack.upstream.calls("place_order") if c["params"]["arguments"]["qty"] == 300]


def test_a_2025_client_gets_32042_and_its_plain_retry_completes(stack):
    from mcp.shared.exceptions import MCPError

    async def work(client):
        assert client.protocol_version == "2025-11-25"
        try:
            await client.call_tool("place_order", {"ticker": "INITECH", "qty": 20})
        except MCPError as e:
            pending = e
        else:
            raise AssertionError("no approval asked")
        link = await asyncio.to_thread(stack.link, "Buy 20 INITECH by MCP")
        assert (await asyncio.to_thread(stack.decide, link, "approve")).status_code == 200
        return pending, await client.call_tool("place_order", {"ticker": "INITECH", "qty": 20})

    pending, result = run(stack, "legacy", work)
    assert pending.error.code == -32042
    elicitation = pending.error.data["elicitations"][0]
    assert elicitation["mode"] == "url" and elicitation["url"] == stack.policy["approval"]["approval_url"]
    assert text(result) == "bought 20 INITECH"
    assert len([c for c in stack.upstream.calls("place_order") if c["params"]["arguments"]["ticker"] == "INITECH"]) == 1


def test_a_denied_call_is_a_json_rpc_error_and_never_reaches_the_server(stack):
    from mcp.shared.exceptions import MCPError

    elicit = approving(stack, "Buy 40 HOOLI by MCP", decision="deny")

    async def work(client):
        try:
            await client.call_tool("place_order", {"ticker": "HOOLI", "qty": 40})
        except MCPError as e:
            return e
        raise AssertionError("a denied call went through")

    refused = run(stack, "2026-07-28", work, elicit=elicit)
    assert refused.error.code == -32010
    assert refused.error.data["error"] == "access_denied"
    assert not [c for c in stack.upstream.calls("place_order") if c["params"]["arguments"]["ticker"] == "HOOLI"]


def test_get_price_and_small_orders_pass_untouched(stack):
    asked = stack.envoy.counter("agentward.approval.asked")

    async def work(client):
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        price = await client.call_tool("get_price", {"ticker": "ACME"})
        small = await client.call_tool("place_order", {"ticker": "ACME", "qty": 5})
        return tools, price, small

    for mode in ("2026-07-28", "legacy"):
        tools, price, small = run(stack, mode, work)
        assert tools == ["get_price", "place_order"]
        assert text(price) == "ACME at 42.00"
        assert text(small) == "bought 5 ACME"
    assert stack.envoy.counter("agentward.approval.asked") == asked
