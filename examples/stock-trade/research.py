"""The fine-grained authorization part of the demo (scope-fga).

    python research.py seed --vault http://127.0.0.1:8787 --key fga-demo-key
        creates a store in the vault's OpenFGA-compatible API, writes the
        model policies/stock-trade-rag.fga (turned into JSON by the real
        `fga` CLI) and the tuples of its model test; prints the store id.

    python research.py run --gateway http://127.0.0.1:10002 --idp http://127.0.0.1:8081
        the agent, through Envoy on envoy/scope-fga.yaml (jwt-identity →
        scope-fga): a research search cut to the notes alice may read; the
        MCP tool list cut to what alice and her agent may use; a tool the
        agent may not use, and one alice's company forbids an agent, refused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "policies/stock-trade-rag.fga"
TESTS = ROOT / "policies/stock-trade-rag.fga.yaml"
FGA_CLI = ROOT / ".tools/venv/bin/fga"


def seed(vault: str, key: str) -> str:
    headers = {"authorization": f"Bearer {key}"}

    def api(path: str, body: dict) -> dict:
        r = requests.post(vault + path, json=body, headers=headers, timeout=30)
        if r.status_code not in (200, 201):
            raise SystemExit(f"{path}: {r.status_code} {r.text}")
        return r.json()

    store = api("/stores", {"name": "stock-trade-demo"})["id"]
    model = subprocess.run([str(FGA_CLI), "model", "transform", "--file", str(MODEL)],
                           capture_output=True, text=True, check=True).stdout
    api(f"/stores/{store}/authorization-models", json.loads(model))
    tuples = yaml.safe_load(TESTS.read_text())["tuples"]
    for i in range(0, len(tuples), 100):
        api(f"/stores/{store}/write", {"writes": {"tuple_keys": tuples[i:i + 100]}})
    return store


class Agent:
    def __init__(self, gateway: str, idp: str, resource: str):
        self.gateway = gateway.rstrip("/")
        self.idp = idp.rstrip("/")
        self.resource = resource

    def token(self, sub: str, agent: str, scope: str = "research:read tools") -> str:
        claims = {"sub": sub, "aud": self.resource, "azp": agent, "scope": scope}
        r = requests.post(self.idp + "/mint", json={"claims": claims}, timeout=10)
        r.raise_for_status()
        return r.json()["access_token"]

    def post(self, path: str, token: str, body: dict) -> requests.Response:
        return requests.post(self.gateway + path, json=body, headers={"authorization": f"Bearer {token}"},
                             timeout=15)

    def mcp(self, token: str, method: str, params: dict | None = None, name: str | None = None):
        headers = {"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream",
                   "mcp-method": method}
        if name:
            headers["mcp-name"] = name
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        return requests.post(self.gateway + "/mcp", json=body, headers=headers, timeout=15)


def run(gateway: str, idp: str, resource: str) -> int:
    agent = Agent(gateway, idp, resource)
    ok = True
    alice = agent.token("alice", "copilot")

    print("[research] 1. the agent searches the research notes for alice (RAG)")
    r = agent.post("/research/search", alice, {"query": "chip research"})
    notes = [n["id"] for n in r.json().get("results", [])]
    print(f"           {r.status_code}: the index matched 10 notes; alice gets {len(notes)}: {', '.join(notes)}")
    ok &= r.status_code == 200 and sorted(notes) == ["alice-draft", "methodology", "nvda-note", "prices-faq"]

    print("[research] 2. the agent (copilot) lists its MCP tools for alice")
    r = agent.mcp(alice, "tools/list")
    tools = [t["name"] for t in r.json().get("result", {}).get("tools", [])]
    print(f"           {r.status_code}: the server has 5 tools; listed: {', '.join(tools) or '(none)'}")
    ok &= r.status_code == 200 and tools == ["get-quote", "place-trade"]

    print("[research] 3. the agent calls wire-funds: alice may, copilot is blocked on it")
    r = agent.mcp(alice, "tools/call", {"name": "wire-funds", "arguments": {}}, "wire-funds")
    print(f"           {r.status_code}: {r.text[:160]}")
    ok &= r.status_code == 403

    print("[research] 4. another agent, rogue, calls get-quote for alice: alice's company blocks rogue")
    rogue = agent.token("alice", "rogue")
    r = agent.mcp(rogue, "tools/call", {"name": "get-quote", "arguments": {}}, "get-quote")
    print(f"           {r.status_code}: {r.text[:160]}")
    ok &= r.status_code == 403
    print("[research] " + ("done: every step as expected" if ok else "FAILED: a step did not go as expected"))
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--vault", required=True)
    s.add_argument("--key", required=True)
    r = sub.add_parser("run")
    r.add_argument("--gateway", required=True)
    r.add_argument("--idp", required=True)
    r.add_argument("--resource", required=True)
    args = parser.parse_args()
    if args.command == "seed":
        print(seed(args.vault.rstrip("/"), args.key))
        return 0
    return run(args.gateway, args.idp, args.resource)


if __name__ == "__main__":
    sys.exit(main())
