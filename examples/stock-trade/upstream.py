"""The stock-trade API that sits behind the gateway.

It trusts the gateway: who the caller is comes from the `x-agentward-*`
headers jwt-identity sets. Every response echoes the request headers it
received under "seen_headers", so tests and the demo can see exactly what the
gateway forwarded.

    GET  /prices/{ticker}    public: a price
    GET  /portfolio          private: the caller's positions
    POST /trades             private: place a trade ({"ticker", "qty", "side"})
    POST /orders             the same (the route envoy/ciba-hold.yaml defers for approval)
    POST /research/search    the research notes index (RAG): every note that
                             matches {"query"}, whoever asks; the gateway's
                             scope-fga filter cuts the answer to the notes
                             the user (and the agent) may read
    GET  /research/{id}      one note
    POST /mcp                a minimal MCP server (JSON-RPC over Streamable
                             HTTP, plain JSON answers): tools/list lists
                             every tool, tools/call runs one; the gateway's
                             scope-fga cuts the list and refuses hidden tools
    POST /trading/mcp        a minimal MCP trading server: place_order and
                             get_price (envoy/ciba-hold.yaml asks alice to
                             approve large orders); like a real server it
                             refuses a `requestState` it did not issue
    GET  /broker/portfolio   the user's account at the broker: trusts no
                             gateway header, only an access token issued by
                             the broker's OAuth provider (provider/), checked
                             by introspection (RFC 7662). The gateway's
                             token-exchange filter puts it there; the agent's
                             own token is refused. `authorization` is never
                             echoed back.

Run: python upstream.py --port 8080 --provider http://127.0.0.1:8082
"""

import argparse
import hashlib
import itertools
import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

_trade_ids = itertools.count(1)


# The research notes (policies/stock-trade-rag.fga names their folders and
# readers); the index knows nothing of who may read them.
NOTES = [
    {"id": "nvda-note", "title": "NVDA: Q4 position note", "folder": "research-2026-q4"},
    {"id": "outlook", "title": "2026 market outlook", "folder": "research-2026"},
    {"id": "methodology", "title": "Research methodology", "folder": "research"},
    {"id": "prices-faq", "title": "How prices are quoted", "folder": "public"},
    {"id": "board-minutes", "title": "Board minutes, November", "folder": None},
    {"id": "alice-draft", "title": "Alice's draft on chip supply", "folder": None},
    {"id": "bob-draft", "title": "Bob's draft on rates", "folder": None},
    {"id": "merger-memo", "title": "Merger memo (restricted)", "folder": None},
    {"id": "hr-review", "title": "HR review notes", "folder": None},
    {"id": "trading-book", "title": "Trading desk book", "folder": None},
]


# The MCP tools (policies/stock-trade-rag.fga names who may use them).
MCP_TOOLS = ["get-quote", "place-trade", "wire-funds", "prices", "admin-reset"]


def mcp_answer(message: dict) -> dict:
    """A JSON-RPC answer to one MCP request (no sessions: stateless)."""
    method, rid = message.get("method"), message.get("id")
    if method == "initialize":
        result = {
            "protocolVersion": message.get("params", {}).get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "stock-trade-tools", "version": "1.0"},
        }
    elif method == "tools/list":
        result = {"tools": [{"name": t, "description": f"the {t} tool", "inputSchema": {"type": "object"}}
                            for t in MCP_TOOLS]}
    elif method == "tools/call" and message.get("params", {}).get("name") in MCP_TOOLS:
        name = message["params"]["name"]
        result = {"content": [{"type": "text", "text": f"{name}: done"}], "isError": False}
    else:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "Unknown tool"}}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


TRADING_TOOLS = ["place_order", "get_price"]


def trading_answer(message: dict) -> dict:
    """A JSON-RPC answer on /trading/mcp: place_order and get_price."""
    method, rid = message.get("method"), message.get("id")
    params = message.get("params") or {}
    if method == "tools/list":
        schema = {"type": "object", "properties": {"ticker": {"type": "string"}, "qty": {"type": "integer"}}}
        result = {"tools": [{"name": t, "inputSchema": schema} for t in TRADING_TOOLS]}
    elif method == "tools/call" and "requestState" in params:
        # Never sealed here: the gateway must have removed its own.
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "Invalid or expired requestState"}}
    elif method == "tools/call" and params.get("name") in TRADING_TOOLS:
        args = params.get("arguments") or {}
        ticker = str(args.get("ticker", "ACME"))
        if params["name"] == "get_price":
            text = f"{ticker} at {price_of(ticker)}"
        else:
            text = f"bought {args.get('qty')} {ticker}"
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "Unknown tool"}}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def search_notes(query: str) -> list[dict]:
    """Every note, best match first (a stand-in for a vector search)."""
    words = [w for w in query.lower().split() if w]
    scored = []
    for i, note in enumerate(NOTES):
        hits = sum(w in note["title"].lower() for w in words)
        scored.append((-hits, i, dict(note, score=round(1 - i / 20 + hits, 3))))
    return [n for _, _, n in sorted(scored, key=lambda t: (t[0], t[1]))]


def price_of(ticker: str) -> float:
    """A stable made-up price, so answers are reproducible."""
    digest = hashlib.sha256(ticker.upper().encode()).digest()
    return round(10 + int.from_bytes(digest[:4], "big") % 90000 / 100, 2)


def positions_of(account: str) -> list[dict]:
    """A stable made-up portfolio per broker account."""
    digest = hashlib.sha256(account.encode()).digest()
    tickers = ["ACME", "GLOBEX", "INITECH", "UMBRELLA", "HOOLI"]
    return [{"ticker": t, "qty": 1 + digest[i] % 50} for i, t in enumerate(tickers) if digest[i] % 3]


@dataclass
class Broker:
    """How the broker API checks tokens: introspection at its OAuth provider
    with the API's own client credentials. Remembers what it was sent, for
    tests (in process only; nothing is logged)."""

    provider: str
    client_id: str = "stocktrade-api"
    client_secret: str = "api-demo-secret"
    seen: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def introspect(self, token: str) -> dict:
        r = requests.post(
            self.provider.rstrip("/") + "/token/introspection",
            data={"token": token},
            auth=(self.client_id, self.client_secret),
            timeout=5,
        )
        if r.status_code == 400 and r.json().get("error") == "unsupported_token_type":
            return {"active": False}  # e.g. a JWT of another issuer: not one of ours
        r.raise_for_status()
        return r.json()

    def remember(self, authorization: str | None, verdict: dict) -> None:
        with self._lock:
            self.seen.append({"authorization": authorization, **verdict})


class StockTradeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stock-trade-upstream/1"
    quiet = False
    broker: Broker | None = None

    def _seen_headers(self) -> dict:
        seen = {}
        for name, value in self.headers.items():
            name = name.lower()
            seen[name] = f"{seen[name]},{value}" if name in seen else value
        return seen

    def _answer(self, status: int, body: dict, echo_authorization: bool = True, headers: dict | None = None) -> None:
        seen = self._seen_headers()
        if not echo_authorization and "authorization" in seen:
            seen["authorization"] = "(a credential; not echoed)"
        body = dict(body, seen_headers=seen)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _broker_portfolio(self) -> None:
        """Only the broker's own access tokens open the account."""
        broker = self.broker
        if broker is None:
            self._answer(503, {"error": "not_configured", "error_description": "no --provider given"})
            return
        authorization = self.headers.get("authorization")
        scheme, _, token = (authorization or "").partition(" ")

        def refuse(status: int, error: str, description: str, verdict: dict) -> None:
            broker.remember(authorization, verdict)
            challenge = f'Bearer realm="stocktrade", error="{error}"' if status == 401 else None
            self._answer(
                status,
                {"error": error, "error_description": description},
                echo_authorization=False,
                headers={"www-authenticate": challenge} if challenge else None,
            )

        if scheme.lower() != "bearer" or not token.strip():
            refuse(401, "invalid_token", "a StockTrade access token is required", {"active": False})
            return
        try:
            info = broker.introspect(token.strip())
        except (requests.RequestException, ValueError):
            refuse(503, "temporarily_unavailable", "cannot reach the StockTrade provider", {"active": None})
            return
        if not info.get("active"):
            refuse(401, "invalid_token", "not a valid StockTrade access token", {"active": False})
            return
        scopes = str(info.get("scope", "")).split()
        verdict = {"active": True, "sub": info.get("sub"), "client_id": info.get("client_id"), "scope": scopes}
        if "stocks:read" not in scopes:
            refuse(403, "insufficient_scope", "the token lacks stocks:read", verdict)
            return
        broker.remember(authorization, verdict)
        account = str(info.get("sub"))
        self._answer(
            200,
            {
                "account": account,
                "positions": positions_of(account),
                "authorized_by": {
                    "issuer": broker.provider,
                    "client_id": info.get("client_id"),
                    "scope": info.get("scope"),
                    "expires_at": info.get("exp"),
                },
            },
            echo_authorization=False,
        )

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            # A gateway that rewrote the body sends it chunked (no length).
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._answer(200, {"status": "ok"})
        elif path.startswith("/prices/") and len(path) > len("/prices/"):
            ticker = path[len("/prices/"):].upper()
            self._answer(200, {"ticker": ticker, "price": price_of(ticker), "currency": "USD"})
        elif path == "/broker/portfolio":
            self._broker_portfolio()
        elif path.startswith("/research/") and path.count("/") == 2:
            note = next((n for n in NOTES if n["id"] == path[len("/research/"):]), None)
            if note is None:
                self._answer(404, {"error": "not_found"})
            else:
                self._answer(200, dict(note, text=f"The full text of {note['title']}."))
        elif path == "/portfolio":
            owner = self.headers.get("x-agentward-sub")
            positions = [{"ticker": "ACME", "qty": 10}, {"ticker": "GLOBEX", "qty": 3}]
            self._answer(200, {"owner": owner, "positions": positions})
        else:
            self._answer(404, {"error": "not_found"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if path in ("/mcp", "/trading/mcp"):
            try:
                message = json.loads(body or b"{}")
            except ValueError:
                self._answer(400, {"error": "bad_request"})
                return
            if "id" not in message:  # a notification
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            answer = mcp_answer if path == "/mcp" else trading_answer
            data = json.dumps(answer(message)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if path == "/research/search":
            try:
                query = str(json.loads(body or b"{}").get("query", ""))
            except (ValueError, AttributeError):
                self._answer(400, {"error": "bad_query"})
                return
            self._answer(200, {"query": query, "results": search_notes(query)})
            return
        if path not in ("/trades", "/orders"):
            self._answer(404, {"error": "not_found"})
            return
        try:
            order = json.loads(body or b"{}")
            trade = {
                "trade_id": next(_trade_ids),
                "ticker": str(order["ticker"]).upper(),
                "qty": int(order["qty"]),
                "side": order.get("side", "buy"),
                "owner": self.headers.get("x-agentward-sub"),
            }
        except (ValueError, KeyError, TypeError):
            self._answer(400, {"error": "bad_order", "error_description": "need ticker and qty"})
            return
        trade["price"] = price_of(trade["ticker"])
        self._answer(201, trade)

    def log_message(self, format: str, *args) -> None:
        if not self.quiet:
            sys.stderr.write("upstream: " + (format % args) + "\n")


def make_server(
    port: int = 0, host: str = "127.0.0.1", quiet: bool = False, broker: Broker | None = None
) -> ThreadingHTTPServer:
    """A threaded server (not yet serving); port 0 picks a free one. With a
    `broker`, GET /broker/portfolio checks tokens at its provider."""
    handler = type("Handler", (StockTradeHandler,), {"quiet": quiet, "broker": broker})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--provider", help="the broker's OAuth provider, e.g. http://127.0.0.1:8082")
    parser.add_argument("--api-client-id", default="stocktrade-api")
    parser.add_argument("--api-client-secret", default="api-demo-secret")
    args = parser.parse_args()
    broker = Broker(args.provider, args.api_client_id, args.api_client_secret) if args.provider else None
    server = make_server(args.port, args.host, args.quiet, broker)
    print(f"upstream: listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
