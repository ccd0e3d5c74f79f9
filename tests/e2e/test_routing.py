"""What reaches the upstream, through real Envoy in front of a WSGI upstream:
bypass spellings of a route's path, HEAD, requests no route matches, identity
headers spelled with underscores (over HTTP/1.1 and HTTP/2), and the user's
token, which goes upstream only where the route asks for it.

Each check runs on two gateways: `shipped` is envoy/jwt-identity.yaml as
shipped (Envoy normalises paths and refuses `_` in header names), `bare` is
the same file without those options, so the plugin alone must hold."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from stack import ENVOY_DIR
from wsgi_upstream import WsgiUpstream

ENVOY_GUARDS = re.compile(
    r"^ *(normalize_path|merge_slashes|path_with_escaped_slashes_action|common_http_protocol_options"
    r"|headers_with_underscores_action):.*\n",
    re.M,
)


def without_envoy_guards(config: str) -> str:
    """The config without Envoy's path normalisation and underscore check."""
    return ENVOY_GUARDS.sub("", config)


def token_options(policy: dict) -> None:
    policy["identity"] = {"token_header": "x-access-token", "token_query_param": "access_token"}


def open_policy(policy: dict) -> None:
    """The riskiest choice: what no route lists is public. A spelling of
    /trades that missed its route would go upstream with no token at all."""
    token_options(policy)
    policy["unmatched"] = "public"
    policy["routes"].append({"match": {"methods": ["GET"], "path": "/legacy"}, "forward_token": True})


@pytest.fixture(scope="session")
def wsgi():
    upstream = WsgiUpstream().start()
    yield upstream
    upstream.stop()


def _started(start_gateway, wsgi, name, adjust, edit=None):
    gateway = start_gateway(name, adjust, upstream=wsgi.port, edit=edit)
    gateway.upstream = wsgi
    return gateway


@pytest.fixture(scope="session")
def shipped(start_gateway, wsgi):
    return _started(start_gateway, wsgi, "routing-shipped", token_options)


@pytest.fixture(scope="session")
def bare(start_gateway, wsgi):
    return _started(start_gateway, wsgi, "routing-bare", token_options, without_envoy_guards)


@pytest.fixture(scope="session")
def open_gateway(start_gateway, wsgi):
    return _started(start_gateway, wsgi, "routing-open", open_policy, without_envoy_guards)


@pytest.fixture(params=["shipped", "bare"])
def gw(request):
    return request.getfixturevalue(request.param)


@dataclass
class Answer:
    status_code: int
    text: str

    def json(self) -> dict:
        return json.loads(self.text)


def send(gateway, method: str, path: str, token: str | None = None, headers: dict | None = None):
    """Sends `path` byte for byte (no client normalises it) with a probe
    header; returns the answer and the upstream's records of the request."""
    probe = uuid.uuid4().hex
    headers = {"x-probe": probe, **(headers or {})}
    if token:
        headers["authorization"] = f"Bearer {token}"
    url = urlsplit(gateway.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        answer = Answer(r.status, r.read().decode(errors="replace"))
    finally:
        conn.close()
    return answer, gateway.upstream.requests_with(probe)


def test_shipped_configs_normalise_paths_and_refuse_underscored_headers():
    for config in sorted(ENVOY_DIR.rglob("*.yaml")):
        text = config.read_text()
        if "HttpConnectionManager" not in text:
            continue
        for option in (
            "normalize_path: true",
            "merge_slashes: true",
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "headers_with_underscores_action: REJECT_REQUEST",
        ):
            assert text.count(option) == text.count("HttpConnectionManager"), f"{config.name}: {option}"


# ---------------------------------------------------------------- #10.6 paths


@pytest.mark.parametrize("path", ["/prices/../portfolio", "/prices/%2e%2e/portfolio", "/prices/./../portfolio"])
def test_a_dot_segment_cannot_climb_out_of_a_public_prefix(gw, path):
    r, seen = send(gw, "GET", path)
    assert r.status_code == 401, r.text
    assert r.json()["reason"] == "missing_token"
    assert seen == []


@pytest.mark.parametrize("path", ["//portfolio", "/%70ortfolio", "/x/../portfolio", "/prices/../portfolio"])
def test_the_upstream_gets_the_normal_path_the_route_was_matched_on(gw, path):
    r, seen = send(gw, "GET", path, gw.token())
    assert r.status_code == 200, r.text
    assert [s["request_target"] for s in seen] == ["/portfolio"]
    assert seen[0]["environ"]["HTTP_X_AGENTWARD_SUB"] == "alice"


@pytest.mark.parametrize(
    "path", ["/trades%2Fx", "/trades%2fx", "/prices%2F..%2Fportfolio", "/prices/..%5Cportfolio", "/trades%00"]
)
def test_an_encoded_slash_backslash_or_nul_is_refused_with_400(gw, path):
    r, seen = send(gw, "GET", path, gw.token())
    assert r.status_code == 400, r.text
    assert seen == []
    if gw.envoy.name == "routing-bare":
        assert r.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", ["//trades", "/%74rades", "/x/../trades", "/prices/../trades", "/trades/"])
def test_bypass_spellings_of_a_protected_route_need_its_token_even_when_unmatched_is_public(open_gateway, path):
    r, seen = send(open_gateway, "POST", path)
    assert r.status_code == 401, r.text
    assert r.json()["reason"] == "missing_token"
    assert seen == []
    r, seen = send(open_gateway, "POST", path, open_gateway.token())
    assert r.status_code == 200, r.text
    assert seen[0]["environ"]["HTTP_X_AGENTWARD_SUB"] == "alice"


# ---------------------------------------------------------------- #14.3 HEAD, unmatched


def test_head_is_decided_as_get(gw):
    r, seen = send(gw, "HEAD", "/portfolio")
    assert r.status_code == 401
    assert seen == []
    r, seen = send(gw, "HEAD", "/prices/ACME")
    assert r.status_code == 200
    r, seen = send(gw, "HEAD", "/portfolio", gw.token())
    assert r.status_code == 200
    assert seen[0]["method"] == "HEAD"
    assert "HTTP_AUTHORIZATION" not in seen[0]["environ"]


@pytest.mark.parametrize("method,path", [("GET", "/admin"), ("GET", "/trades"), ("HEAD", "/trades"), ("DELETE", "/portfolio")])
def test_a_request_no_route_matches_is_denied_by_default(gw, method, path):
    r, seen = send(gw, method, path, gw.token())
    assert r.status_code == 403
    if method != "HEAD":
        assert r.json()["error"] == "access_denied"
    assert seen == []


def test_unmatched_public_lets_an_unlisted_path_through_without_the_token(open_gateway):
    r, seen = send(open_gateway, "GET", "/admin", open_gateway.token())
    assert r.status_code == 200, r.text
    assert "HTTP_AUTHORIZATION" not in seen[0]["environ"]
    assert seen[0]["environ"]["HTTP_X_AGENTWARD_SUB"] == "alice"


# ---------------------------------------------------------------- #14.1 underscores


@pytest.mark.parametrize("path,token", [("/portfolio", True), ("/prices/ACME", False)])
def test_identity_headers_with_underscores_never_reach_a_wsgi_upstream(gw, path, token):
    mallory = gw.token(sub="mallory")
    spoof = {"x_agentward_sub": "alice", "X_AgentWard_Scope": "admin"}
    r, seen = send(gw, "GET", path, mallory if token else None, spoof)
    if gw.envoy.name == "routing-shipped":
        assert r.status_code == 400, r.text  # Envoy: headers_with_underscores_action
        assert seen == []
        return
    assert r.status_code == 200, r.text
    environ = seen[0]["environ"]
    assert environ.get("HTTP_X_AGENTWARD_SUB") == ("mallory" if token else None)
    assert environ.get("HTTP_X_AGENTWARD_SCOPE") == ("portfolio:read trade" if token else None)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl for HTTP/2")
def test_identity_headers_with_underscores_never_reach_the_upstream_over_http2(gw):
    probe = uuid.uuid4().hex
    mallory = gw.token(sub="mallory")
    result = subprocess.run(
        [
            "curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
            "-H", f"x-probe: {probe}", "-H", f"authorization: Bearer {mallory}", "-H", "x_agentward_sub: alice",
            gw.url + "/portfolio",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    seen = gw.upstream.requests_with(probe)
    if gw.envoy.name == "routing-shipped":
        assert seen == [], "Envoy must refuse the header (the stream is reset)"
        return
    assert result.stdout == "200 2", result
    assert seen[0]["environ"]["HTTP_X_AGENTWARD_SUB"] == "mallory"


# ---------------------------------------------------------------- #14.2, #10.8 the user's token


def test_no_upstream_sees_the_users_token_unless_its_route_asks(gw):
    token = gw.token()
    for method, path in [("GET", "/portfolio"), ("POST", "/trades"), ("GET", "/prices/ACME")]:
        r, seen = send(gw, method, path, token)
        assert r.status_code == 200, r.text
        assert "HTTP_AUTHORIZATION" not in seen[0]["environ"], path
    r, seen = send(gw, "GET", "/portfolio", headers={"x-access-token": token})
    assert r.status_code == 200, r.text
    assert "HTTP_X_ACCESS_TOKEN" not in seen[0]["environ"]


def test_a_query_token_is_stripped_from_the_path_once_verified(gw):
    token = gw.token()
    r, seen = send(gw, "GET", f"/portfolio?x=1&access_token={token}&y=2")
    assert r.status_code == 200, r.text
    assert seen[0]["request_target"] == "/portfolio?x=1&y=2"
    assert token not in str(seen[0])
    r, seen = send(gw, "GET", f"/portfolio?access_token={token}")
    assert r.status_code == 200, r.text
    assert seen[0]["request_target"] == "/portfolio"


def test_a_route_with_forward_token_gets_the_token(open_gateway):
    token = open_gateway.token()
    r, seen = send(open_gateway, "GET", "/legacy", token)
    assert r.status_code == 200, r.text
    assert seen[0]["environ"]["HTTP_AUTHORIZATION"] == f"Bearer {token}"
    r, seen = send(open_gateway, "GET", f"/legacy?access_token={token}")
    assert seen[0]["request_target"] == f"/legacy?access_token={token}"
