"""Helpers of `cargo xtask bench` for scope-fga's cached decision path.

    python fga.py prepare --dir target/bench
        From DIR/policy.json (written by examples/stock-trade/idp.py
        bench-tokens) writes DIR/fga-policy.json: the same policy with an
        `fga` section (cluster `vault`, decisions cached for an hour) and, on
        GET /portfolio, a check that the user is the portfolio's `owner`;
        GET /research/search cut (RAG `filter`: `viewer` of `document:{id}`
        for each of `results`) and GET /research/all not cut (the same
        50-item answer from envoy/bench/upstream.yaml); and
        DIR/fga-policy-uncached.json, the same without a decision cache.

    python fga.py serve --port P
        An OpenFGA stand-in (`/check`, `/batch-check`): it allows every
        check but those on an odd-numbered note (`document:note-07`), so a
        50-note answer is cut to 25. The cached path asks it once.

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
    policy["routes"] += [
        {
            "match": {"methods": ["GET"], "path": "/research/search"},
            "fga": {"filter": {"items": "results", "id": "id", "object": "document:{id}", "relation": "viewer"}},
        },
        {"match": {"methods": ["GET"], "path": "/research/all"}},
    ]
    (directory / "fga-policy.json").write_text(json.dumps(policy, indent=2))
    policy["fga"]["cache_seconds"] = 0
    (directory / "fga-policy-uncached.json").write_text(json.dumps(policy, indent=2))


def allowed(check: dict) -> bool:
    """Every check but one on an odd-numbered note."""
    obj = check.get("tuple_key", {}).get("object", "")
    number = obj.rsplit("-", 1)[-1]
    return not (obj.startswith("document:note-") and number.isdigit() and int(number) % 2 == 1)


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
            self._answer({"result": {c["correlation_id"]: {"allowed": allowed(c)} for c in body.get("checks", [])}})
        else:
            self._answer({"allowed": allowed(body), "resolution": ""})

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
