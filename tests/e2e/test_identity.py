"""Valid tokens pass and the upstream sees the verified identity, and only
that: inbound x-agentward-* headers never reach it."""

import pytest
import requests

from stack import decode_claims_header



@pytest.fixture
def gateway(hosted_gateway):
    """Every scenario here runs in both hosts: Envoy and Spin."""
    return hosted_gateway

def get(gateway, path, token=None, headers=None, **kw):
    headers = dict(headers or {})
    if token:
        headers["authorization"] = f"Bearer {token}"
    return requests.get(gateway.url + path, headers=headers, timeout=15, **kw)


def seen(response) -> dict:
    return response.json()["seen_headers"]


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_valid_token_passes_with_identity_headers(gateway, alg):
    token = gateway.token(alg)
    r = get(gateway, "/portfolio", token)
    assert r.status_code == 200, r.text
    h = seen(r)
    assert h["x-agentward-sub"] == "alice"
    assert h["x-agentward-principal"] == "user"
    assert h["x-agentward-agent"] == "stock-agent"
    assert h["x-agentward-act"] == "stock-agent"
    assert h["x-agentward-scope"] == "portfolio:read trade"
    assert h["x-agentward-issuer"] == gateway.idp.issuer
    claims = decode_claims_header(h["x-agentward-claims"])
    assert claims["sub"] == "alice"
    assert claims["azp"] == "stock-agent"
    assert claims["aud"] == gateway.audience


def test_post_with_token_reaches_upstream(gateway):
    r = requests.post(
        gateway.url + "/trades",
        json={"ticker": "ACME", "qty": 2},
        headers={"authorization": f"Bearer {gateway.token()}"},
        timeout=15,
    )
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == "alice"


def test_delegation_chain_is_listed_outermost_first(gateway):
    act = {"sub": "stock-agent", "act": {"sub": "orchestrator", "act": {"sub": "planner"}}}
    r = get(gateway, "/portfolio", gateway.token(act=act))
    assert r.status_code == 200, r.text
    assert seen(r)["x-agentward-act"] == "stock-agent,orchestrator,planner"


def test_agent_falls_back_to_client_id_and_scope_to_scp(gateway):
    token = gateway.token(azp=None, client_id="cli-agent", scope=None, scp=["portfolio:read", "trade"])
    r = get(gateway, "/portfolio", token)
    assert r.status_code == 200, r.text
    h = seen(r)
    assert h["x-agentward-agent"] == "cli-agent"
    assert h["x-agentward-scope"] == "portfolio:read trade"


def test_token_without_agent_or_actor_sets_no_agent_headers(gateway):
    r = get(gateway, "/portfolio", gateway.token(azp=None, act=None))
    assert r.status_code == 200, r.text
    h = seen(r)
    assert h["x-agentward-sub"] == "alice"
    assert "x-agentward-agent" not in h
    assert "x-agentward-act" not in h


def test_spoofed_identity_headers_are_replaced_by_verified_ones(gateway):
    spoofed = {
        "x-agentward-sub": "mallory",
        "x-agentward-agent": "evil-agent",
        "x-agentward-act": "evil-agent",
        "x-agentward-scope": "admin",
        "x-agentward-claims": "eyJzdWIiOiJtYWxsb3J5In0",
        "x-agentward-issuer": "https://evil.example/",
        "x-agentward-anything": "1",
    }
    r = get(gateway, "/portfolio", gateway.token(azp=None, act=None), headers=spoofed)
    assert r.status_code == 200, r.text
    h = seen(r)
    assert h["x-agentward-sub"] == "alice"
    assert h["x-agentward-scope"] == "portfolio:read trade"
    assert h["x-agentward-issuer"] == gateway.idp.issuer
    assert decode_claims_header(h["x-agentward-claims"])["sub"] == "alice"
    for name in ("x-agentward-agent", "x-agentward-act", "x-agentward-anything"):
        assert name not in h, f"{name} was forwarded"


def test_public_route_needs_no_token_and_forwards_no_identity(gateway):
    r = get(gateway, "/prices/ACME", headers={"x-agentward-sub": "mallory"})
    assert r.status_code == 200, r.text
    assert r.json()["ticker"] == "ACME"
    assert not [k for k in seen(r) if k.startswith("x-agentward-")]


def test_public_route_with_a_valid_token_forwards_the_identity(gateway):
    r = get(gateway, "/prices/ACME", gateway.token())
    assert r.status_code == 200, r.text
    assert seen(r)["x-agentward-sub"] == "alice"


def test_public_route_with_a_bad_token_is_still_rejected(gateway):
    r = get(gateway, "/prices/ACME", gateway.token(aud="https://other.example"))
    assert r.status_code == 401
    assert r.json()["reason"] == "wrong_audience"


def test_client_credentials_issuer_forwards_a_sub_less_token_as_the_agent_only(start_gateway):
    def adjust(policy):
        policy["issuers"][0]["client_credentials"] = True

    cc = start_gateway("client-credentials", adjust)
    spoofed = {"x-agentward-sub": "alice", "x-agentward-principal": "user"}
    r = get(cc, "/portfolio", cc.token(sub=None, act=None, azp="batch-agent"), headers=spoofed)
    assert r.status_code == 200, r.text
    h = seen(r)
    assert "x-agentward-sub" not in h
    assert h["x-agentward-principal"] == "agent"
    assert h["x-agentward-agent"] == "batch-agent"
    # Without the agent, the token names nobody.
    r = get(cc, "/portfolio", cc.token(sub=None, act=None, azp=None))
    assert r.status_code == 401, r.text
    assert r.json()["reason"] == "bad_claim"
