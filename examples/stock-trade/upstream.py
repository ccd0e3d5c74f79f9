"""The stock-trade API that sits behind the gateway.

It trusts the gateway: who the caller is comes from the `x-agentward-*`
headers jwt-identity sets. Every response echoes the request headers it
received under "seen_headers", so tests and the demo can see exactly what the
gateway forwarded.

    GET  /prices/{ticker}   public: a price
    GET  /portfolio         private: the caller's positions
    POST /trades            private: place a trade ({"ticker", "qty", "side"})

Run: python upstream.py --port 8080
"""

import argparse
import hashlib
import itertools
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_trade_ids = itertools.count(1)


def price_of(ticker: str) -> float:
    """A stable made-up price, so answers are reproducible."""
    digest = hashlib.sha256(ticker.upper().encode()).digest()
    return round(10 + int.from_bytes(digest[:4], "big") % 90000 / 100, 2)


class StockTradeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stock-trade-upstream/1"
    quiet = False

    def _seen_headers(self) -> dict:
        seen = {}
        for name, value in self.headers.items():
            name = name.lower()
            seen[name] = f"{seen[name]},{value}" if name in seen else value
        return seen

    def _answer(self, status: int, body: dict) -> None:
        body = dict(body, seen_headers=self._seen_headers())
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._answer(200, {"status": "ok"})
        elif path.startswith("/prices/") and len(path) > len("/prices/"):
            ticker = path[len("/prices/"):].upper()
            self._answer(200, {"ticker": ticker, "price": price_of(ticker), "currency": "USD"})
        elif path == "/portfolio":
            owner = self.headers.get("x-agentward-sub")
            positions = [{"ticker": "ACME", "qty": 10}, {"ticker": "GLOBEX", "qty": 3}]
            self._answer(200, {"owner": owner, "positions": positions})
        else:
            self._answer(404, {"error": "not_found"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if path != "/trades":
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


def make_server(port: int = 0, host: str = "127.0.0.1", quiet: bool = False) -> ThreadingHTTPServer:
    """A threaded server (not yet serving); port 0 picks a free one."""
    handler = type("Handler", (StockTradeHandler,), {"quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    server = make_server(args.port, args.host, args.quiet)
    print(f"upstream: listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
