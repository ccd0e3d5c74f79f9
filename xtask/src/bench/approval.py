"""`cargo xtask bench --only approval-longpoll,approval-polling,approval-held`:
ciba-hold's figures, with real processes (Envoy on envoy/ciba-hold.yaml, one
worker; the real vault on SQLite as the CIBA authority; the stock-trade API).

- approval-longpoll / approval-polling: approve → resumed latency. A held
  trade waits in the gateway; the user's approval page is opened, then its
  form posted; the time from sending that post to the agent getting its 201
  is one sample (the vault commits the decision, the gateway's long-poll is
  answered, or its next plain poll sees it, and the request is resumed and
  reaches the API). Long-poll: `approval.wait_seconds` 20; polling:
  `wait_seconds` 0, the vault's `interval_seconds` (1 s in the demo vault).
- approval-held: `--held N` (1000) trades held at once on the one worker
  (N users, each one pending approval, long-poll), Envoy's resident memory
  before and with them held, then every one approved: errors are requests
  answered other than 201.

Run by xtask (which builds first); also alone:
    .tools/venv/bin/python xtask/src/bench/approval.py --only approval-longpoll --samples 30
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from html import unescape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests/e2e"))
sys.path.insert(0, str(ROOT / "examples/stock-trade"))

import requests  # noqa: E402

import idp as idp_module  # noqa: E402
import upstream as upstream_module  # noqa: E402
from stack import ENVOY_DIR, Envoy, default_ports, free_port, policy_file, render  # noqa: E402
from vault_stack import Database, Vault  # noqa: E402

CONFIG = ENVOY_DIR / "ciba-hold.yaml"
POLICY = ROOT / "policies/stock-trade-approval.json"


class Links:
    """Approval links from the vault's log notifier, by user."""

    def __init__(self, vault: Vault):
        self.vault = vault
        self.offset = 0
        self.by_sub: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def take(self, sub: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                text = self.vault.log_path.read_text(errors="replace")
                for line in text[self.offset :].splitlines():
                    if "log notifier" in line:
                        s = re.search(r"\bsub=(\S+)", line)
                        u = re.search(r"approval_url=(\S+)", line)
                        if s and u:
                            self.by_sub.setdefault(s.group(1), []).append(u.group(1).strip('"'))
                self.offset = len(text)
                if self.by_sub.get(sub):
                    return self.by_sub[sub].pop(0)
            time.sleep(0.02)
        raise TimeoutError(f"no approval link for {sub}")


def open_page(link: str) -> tuple[requests.Session, str, dict]:
    browser = requests.Session()
    page = browser.get(link, timeout=30)
    page.raise_for_status()
    form = {k: unescape(v) for k, v in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text)}
    action = unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    return browser, requests.compat.urljoin(link, action), form


class Gateway:
    def __init__(
        self, name: str, workdir: Path, issuer, idp_port: int, upstream_port: int, wait_seconds: int, timeout_ms: int = 3000
    ):
        self.workdir = workdir
        vault_port = free_port()
        self.ports = default_ports(upstream=upstream_port, idp=idp_port, vault=vault_port)
        self.database = Database.sqlite(workdir)
        key = "k1:" + base64.b64encode(b"b" * 32).decode()
        self.vault = Vault(f"{name}-vault", workdir, vault_port, self.ports, self.database, 30, key)
        policy = json.loads(render(json.dumps(policy_file(POLICY)), self.ports))
        policy["approval"]["wait_seconds"] = wait_seconds
        policy["approval"]["max_held_requests"] = 2000
        policy["approval"]["timeout_ms"] = timeout_ms
        self.policy = policy
        self.issuer = issuer
        config = render(CONFIG.read_text(), self.ports, policy)
        self.envoy = Envoy(name, config, workdir, self.ports, concurrency=1).start()
        self.links = Links(self.vault)

    def token(self, sub: str) -> str:
        aud = self.policy["issuers"][0]["audiences"][0]
        return self.issuer.mint({"sub": sub, "aud": aud, "azp": "bench-agent", "scope": "trade"})

    def trade(self, sub: str, token: str, qty: int = 50) -> requests.Response:
        return requests.post(
            self.envoy.url + "/trades",
            json={"ticker": "ACME", "qty": qty},
            headers={"authorization": f"Bearer {token}"},
            timeout=120,
        )

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.envoy.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

    def stop(self) -> None:
        self.envoy.stop()
        self.vault.stop()
        self.database.drop()


def latency(gw: Gateway, samples: int) -> list[float]:
    out = []
    pool = ThreadPoolExecutor(max_workers=2)
    token = gw.token("alice")
    for i in range(samples):
        done = {}

        def held():
            r = gw.trade("alice", token)
            done["at"] = time.perf_counter()
            return r

        future = pool.submit(held)
        browser, url, form = open_page(gw.links.take("alice"))
        sent = time.perf_counter()
        answer = browser.post(url, data=dict(form, decision="approve"), timeout=30)
        r = future.result(timeout=60)
        if answer.status_code != 200 or r.status_code != 201:
            raise RuntimeError(f"sample {i}: page {answer.status_code}, trade {r.status_code} {r.text[:200]}")
        out.append((done["at"] - sent) * 1000)
    pool.shutdown()
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def held_at_once(gw: Gateway, count: int) -> dict:
    subs = [f"user-{i}" for i in range(count)]
    tokens = {s: gw.token(s) for s in subs}
    before = gw.rss_kb()
    pool = ThreadPoolExecutor(max_workers=count)
    futures = {s: pool.submit(gw.trade, s, tokens[s]) for s in subs}
    links = {}
    for s in subs:
        links[s] = gw.links.take(s, timeout=120)
    # Every request has been asked for: all held now (none answered yet).
    early = [s for s, f in futures.items() if f.done()]
    time.sleep(1)
    with_held = gw.rss_kb()
    held_gauge = count - len([f for f in futures.values() if f.done()])

    def approve(s: str) -> int:
        browser, url, form = open_page(links[s])
        return browser.post(url, data=dict(form, decision="approve"), timeout=60).status_code

    deciders = ThreadPoolExecutor(max_workers=16)
    pages = list(deciders.map(approve, subs))
    answers = [f.result(timeout=120) for f in futures.values()]
    statuses = [a.status_code for a in answers]
    reasons = {}
    for a in answers:
        if a.status_code != 201:
            key = f"{a.status_code} {a.json().get('reason') if a.headers.get('content-type', '').startswith('application/json') else a.text[:60]}"
            reasons[key] = reasons.get(key, 0) + 1
    pool.shutdown()
    deciders.shutdown()
    return {
        "held": count,
        "held_at_measurement": held_gauge,
        "answered_before_approval": len(early),
        "errors": sum(1 for s in statuses if s != 201),
        "statuses": {str(k): statuses.count(k) for k in sorted(set(statuses))},
        "refusals": reasons,
        "page_errors": sum(1 for p in pages if p != 200),
        "envoy_rss_before_kb": before,
        "envoy_rss_held_kb": with_held,
        "per_held_request_kb": round((with_held - before) / count, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="approval-longpoll,approval-polling,approval-held")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--workdir", default=str(ROOT / "target/bench-approval"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    # A fresh folder per run: the vault's log (where approval links are
    # read) is appended to.
    workdir = Path(args.workdir) / time.strftime("run-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    issuer = idp_module.Idp()
    idp_server = issuer.serve(0)
    # The stock-trade API with a listen backlog for 1,000 held requests: each
    # held request with a body has its upstream request open already (its
    # headers went on before the body was read; README, ciba-hold).
    from http.server import ThreadingHTTPServer

    class Upstream(ThreadingHTTPServer):
        request_queue_size = 4096
        daemon_threads = True

    handler = type("Handler", (upstream_module.StockTradeHandler,), {"quiet": True, "broker": None})
    upstream = Upstream(("127.0.0.1", 0), handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    results = {}
    for name, wait in [("approval-longpoll", 20), ("approval-polling", 0)]:
        if name not in only:
            continue
        gw = Gateway(name, workdir, issuer, idp_server.server_port, upstream.server_port, wait)
        try:
            ms = latency(gw, args.samples)
        finally:
            gw.stop()
        results[name] = {
            "samples": len(ms),
            "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1),
        }
        print(f"[bench] {name}: approve → resumed p50 {results[name]['p50_ms']} ms, p99 {results[name]['p99_ms']} ms, max {results[name]['max_ms']} ms ({len(ms)} samples)", flush=True)
    if "approval-held" in only:
        gw = Gateway("approval-held", workdir, issuer, idp_server.server_port, upstream.server_port, 20)
        try:
            results["approval-held"] = held_at_once(gw, args.held)
        finally:
            gw.stop()
        print(f"[bench] approval-held: {json.dumps(results['approval-held'])}", flush=True)
    idp_server.shutdown()
    upstream.shutdown()
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
