"""Helpers of `cargo xtask bench` for scope-fga's cached decision path.

    python fga.py prepare --dir target/bench
        From DIR/policy.json (written by examples/stock-trade/idp.py
        bench-tokens) writes DIR/fga-policy.json: the same policy with an
        `fga` section (cluster `vault`, decisions cached for an hour) and, on
        GET /portfolio, a check that the user is the portfolio's `owner`.

    python fga.py serve --port P
        An OpenFGA stand-in that allows every check (`/check`, `/batch-check`):
        the bench measures the gateway's cached path, so it is asked once.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def prepare(directory: Path) -> None:
    policy = json.loads((directory / "policy.json").read_text())
    policy["fga"] = {
        "cluster": "vault",
        "store_id": "01BENCHSTORE",
        "preshared_key": "bench-fga-key",
        "cache_seconds": 3600,
    }
    for route in policy["routes"]:
        if route["match"].get("path") == "/portfolio":
            route["forward_token"] = True
            route["fga"] = {"checks": [{"relation": "owner", "object": "portfolio:{sub}"}]}
    (directory / "fga-policy.json").write_text(json.dumps(policy, indent=2))


class Allow(BaseHTTPRequestHandler):
    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer({"status": "ok"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if self.path.endswith("/batch-check"):
            self._answer({"result": {c["correlation_id"]: {"allowed": True} for c in body.get("checks", [])}})
        else:
            self._answer({"allowed": True, "resolution": ""})

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--dir", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(Path(args.dir))
    else:
        ThreadingHTTPServer(("127.0.0.1", args.port), Allow).serve_forever()


if __name__ == "__main__":
    main()
