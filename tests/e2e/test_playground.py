"""The policy playground in headless Chromium (Debian's `chromium`, npm
`playwright-core`; the suite's one browser), served by the real vault at
/playground/ from `target/playground` (`cargo xtask playground`, part of
`cargo xtask build`): the page loads agentward-core as WebAssembly, mints
a token with a key it makes, and shows each plugin's decision; changing the
policy changes the decision; a broken policy shows its field; the state
survives in the URL fragment; and the page asks nothing of any server but
its own files."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from stack import ROOT, default_ports, free_port
from vault_stack import Database, Vault, missing_pieces

PAGE_FILES = ROOT / "target/playground"

READY = {"wait": "body[data-ready=true]"}
SETTLE = {"settle": 600}


@pytest.fixture(scope="module")
def vault(idp, upstream_port, tmp_path_factory):
    missing = missing_pieces()
    if missing:
        pytest.skip("missing: " + ", ".join(missing))
    if not (PAGE_FILES / "agentward_playground_bg.wasm").exists():
        pytest.fail("the playground is not built: run `cargo xtask build` (or `cargo xtask playground`)")
    workdir = tmp_path_factory.mktemp("playground")
    port = free_port()
    ports = default_ports(upstream=upstream_port, idp=idp.port, vault=port)
    key = "k1:" + base64.b64encode(b"1" * 32).decode()
    v = Vault("vault", workdir, port, ports, Database.sqlite(workdir), 30, key)
    yield v
    v.stop()


def edit_policy(js_body: str) -> dict:
    """A step that rewrites the policy textarea: `js_body` changes `p`."""
    return {
        "run": "(() => { const t = document.getElementById('policy');"
        " const p = JSON.parse(t.value); " + js_body + ";"
        " t.value = JSON.stringify(p, null, 2);"
        " t.dispatchEvent(new Event('input', {bubbles: true})); return true; })()"
    }


def test_the_vault_serves_the_page_files_with_a_closed_content_security_policy(vault):
    page = requests.get(vault.url + "/playground/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "'wasm-unsafe-eval'" in csp
    wasm = requests.get(vault.url + "/playground/agentward_playground_bg.wasm", timeout=10)
    assert wasm.headers["content-type"] == "application/wasm" and wasm.content[:4] == b"\0asm"
    # Gzipped to a client that takes it (requests asks for gzip and inflates), as it is to one that does not.
    assert wasm.headers["content-encoding"] == "gzip" and wasm.headers["vary"] == "accept-encoding"
    plain = requests.get(
        vault.url + "/playground/agentward_playground_bg.wasm", headers={"accept-encoding": "identity"}, timeout=10
    )
    assert "content-encoding" not in plain.headers and plain.content == wasm.content
    assert int(plain.headers["content-length"]) > 2 * len(requests.get(
        vault.url + "/playground/agentward_playground_bg.wasm", stream=True, timeout=10).raw.read(decode_content=False))
    # Only the page's own files: nothing else under the folder, no traversal.
    for path in ("/playground/..%2F..%2FCargo.toml", "/playground/README.md", "/playground/%2e%2e"):
        answer = requests.get(vault.url + path, timeout=10)
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "not_found"
    root = requests.get(vault.url + "/playground", timeout=10, allow_redirects=False)
    assert root.status_code in (301, 308) and root.headers["location"] == "/playground/"


def test_a_policy_change_changes_the_decision_and_the_link_keeps_it(vault, browser):
    url = vault.url + "/playground/"
    read = browser.steps(url, [
        READY,
        {"text": "#answer"},
        {"eval": "[...document.querySelectorAll('#decisions tbody tr')].map(r => [r.dataset.plugin, r.className])"},
        {"text": "#upstream-request"},
        # The portfolio route now needs a scope alice's token does not carry.
        edit_policy("p.routes.find(r => r.match.path === '/portfolio').scopes = ['portfolio:admin']"),
        SETTLE,
        {"text": "#answer"},
        {"text": "#answer-body"},
        {"eval": "location.hash"},
        # A broken policy: every error names its field, and nothing is decided.
        edit_policy("p.routes[1].scopes = 7"),
        SETTLE,
        {"text": "#policy-errors"},
        {"text": "#answer"},
        {"eval": "performance.getEntriesByType('resource').map(e => e.name)"},
    ])
    (first, plugins, upstream, changed, changed_body, fragment, errors, broken, fetched) = read
    assert first == "200 from the upstream", first
    assert plugins == [[p, "continue"] for p in ("jwt-identity", "scope-fga", "ciba-hold", "token-exchange")]
    assert "x-agentward-sub: alice" in upstream and "authorization" not in upstream.lower().split("\n\n")[0]
    assert changed == "403 from jwt-identity", changed
    assert '"insufficient_scope"' in changed_body and 'scope="portfolio:admin"' in changed_body
    assert fragment.startswith("#z.") or fragment.startswith("#j."), fragment
    assert "routes[1].scopes" in errors and errors.startswith("line "), errors
    assert broken.startswith("No decision"), broken
    # No data leaves the page: it fetched its own files and nothing else.
    assert fetched and all(f.startswith(url) for f in fetched), fetched

    # The link carries the changed policy: the 403 again, in a fresh page.
    again = browser.steps(url + fragment, [READY, {"text": "#answer"}, {"eval": "document.getElementById('path').value"}])
    assert again == ["403 from jwt-identity", "/portfolio"], again


def test_rag_results_tools_and_approvals_show_as_the_plugins_decide(vault, browser):
    read = browser.steps(vault.url + "/playground/", [
        READY,
        {"select": "#example", "value": "rag"},
        SETTLE,
        {"text": "#answer"},
        {"text": "#answer-body"},
        {"eval": "[...document.querySelectorAll('#decisions tbody tr')].map(r => r.cells[4].innerText)"},
        {"select": "#example", "value": "big-trade"},
        SETTLE,
        {"text": "#answer"},
        {"text": "#binding-message"},
        {"select": "#approval", "value": "denied"},
        SETTLE,
        {"text": "#answer"},
        {"text": "#upstream-request"},
        {"select": "#example", "value": "tools-list"},
        SETTLE,
        {"text": "#answer-body"},
        {"select": "#example", "value": "broker"},
        SETTLE,
        {"text": "#upstream-request"},
    ])
    (rag, rag_body, rag_callouts, trade, message, denied, denied_upstream, tools, broker) = read
    assert rag == "200 from the upstream"
    assert [r["id"] for r in json.loads(rag_body)["results"]] == ["1", "3"], rag_body
    assert any("/batch-check" in c for c in rag_callouts), rag_callouts
    assert trade == "200 from the upstream" and message == "Buy 50 ACME"
    assert denied == "403 from ciba-hold"
    assert "did not reach" in denied_upstream
    assert [t["name"] for t in json.loads(tools)["result"]["tools"]] == ["get-quote"], tools
    assert "authorization: Bearer upstream-token-of-alice" in broker, broker
