"""scope-fga with real MCP peers: the Python `mcp` SDK (PyPI `mcp`) as the
server behind Envoy (Streamable HTTP, stateless) and as the client in front
of it, through jwt-identity → scope-fga, the real vault's FGA API deciding
(policies/stock-trade-rag.fga: a tool needs `can_use` for the user and the
agent). The SDK server runs once per module."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time

import pytest

mcp = pytest.importorskip("mcp", reason="the Python mcp SDK (cargo xtask setup)")

from fga_stack import FgaVault, gateway, missing_pieces, shipped_policy, spin_gateway  # noqa: E402
from stack import default_ports, free_port, render  # noqa: E402

ISSUER = "https://idp.stock-trade.example/"
TOOLS = ["get-quote", "place-trade", "wire-funds", "prices", "admin-reset"]


def _server(port: int):
    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from mcp.server.transport_security import TransportSecuritySettings

    server = MCPServer("stock-tools")
    def make(name: str):
        def tool(ticker: str = "ACME") -> str:
            return f"{name} done for {ticker}"

        return tool

    for name in TOOLS:
        server.tool(name=name, description=f"the {name} tool")(make(name))
    app = server.streamable_http_app(
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    return uvicorn.Server(config)


@pytest.fixture(scope="module")
def mcp_server():
    port = free_port()
    server = _server(port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the MCP SDK server did not start"
    yield port
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def fga_vault(tmp_path_factory):
    missing = missing_pieces()
    if missing:
        pytest.skip("missing: " + ", ".join(missing))
    vault = FgaVault(tmp_path_factory.mktemp("fga-mcp-vault"))
    yield vault
    vault.stop()


@pytest.fixture(scope="module", params=["envoy", "envoy-one-filter", "spin"])
def mcp_gateway(request, idp, mcp_server, fga_vault, tmp_path_factory):
    """jwt-identity → scope-fga in front of the SDK server, in each host
    (Envoy as two filters and as one, and the Spin components in
    `host-test serve`)."""
    store = fga_vault.seed()
    ports = default_ports(upstream=mcp_server, idp=idp.port, vault=fga_vault.port)
    policy = json.loads(render(json.dumps(copy.deepcopy(shipped_policy())), ports))
    policy["fga"]["store_id"] = store
    can_use = {"principal": "both", "checks": [{"relation": "can_use", "object": "tool:{tool}"}]}
    policy["routes"].append(
        {
            "match": {"path": "/mcp"},
            "mcp": {"tools": {t: {"fga": can_use} for t in TOOLS if t != "admin-reset"}},
        }
    )
    workdir = tmp_path_factory.mktemp(f"scope-fga-mcp-{request.param}")
    if request.param == "spin":
        envoy = spin_gateway("scope-fga-mcp", workdir, ports, policy)
    else:
        one_filter = request.param == "envoy-one-filter"
        envoy = gateway(f"scope-fga-mcp-{request.param}", workdir, ports, policy, one_filter=one_filter)
    yield envoy, policy
    envoy.stop()


def _token(idp, policy, sub: str, agent: str) -> str:
    return idp.idp.mint(
        {"iss": ISSUER, "sub": sub, "aud": policy["issuers"][0]["audiences"][0], "azp": agent, "scope": "tools"}
    )


async def _session(url: str, token: str, work):
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    http = create_mcp_http_client(headers={"authorization": f"Bearer {token}"})
    async with http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            return await work(client)


def _list(url: str, token: str) -> list[str]:
    async def work(client):
        result = await client.list_tools()
        return sorted(t.name for t in result.tools)

    return asyncio.run(_session(url, token, work))


def _call(url: str, token: str, name: str):
    async def work(client):
        try:
            return await client.call_tool(name, {"ticker": "ACME"})
        except Exception as e:  # the SDK raises on an error answer
            return e

    return asyncio.run(_session(url, token, work))


def test_the_sdk_client_lists_only_the_tools_the_user_and_agent_may_use(idp, mcp_gateway):
    envoy, policy = mcp_gateway
    url = envoy.url + "/mcp"
    # Two users, two agents: copilot is blocked on wire-funds and has no
    # company for prices; acme blocks rogue; dave is not in acme.
    assert _list(url, _token(idp, policy, "alice", "copilot")) == ["get-quote", "place-trade"]
    assert _list(url, _token(idp, policy, "bob", "copilot")) == ["get-quote", "place-trade"]
    assert _list(url, _token(idp, policy, "alice", "rogue")) == []
    assert _list(url, _token(idp, policy, "dave", "copilot")) == []


def test_the_sdk_client_is_refused_a_hidden_tool(idp, mcp_gateway):
    envoy, policy = mcp_gateway
    url = envoy.url + "/mcp"
    token = _token(idp, policy, "alice", "copilot")
    allowed = _call(url, token, "get-quote")
    assert not isinstance(allowed, Exception), allowed
    assert not allowed.is_error and "get-quote done" in json.dumps(allowed.model_dump())
    for hidden in ["wire-funds", "admin-reset"]:
        refused = _call(url, token, hidden)
        text = repr(refused) if isinstance(refused, Exception) else json.dumps(refused.model_dump())
        assert isinstance(refused, Exception) or refused.is_error, text
        assert "done for" not in text, text
