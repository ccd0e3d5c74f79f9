"""Every way a token can be wrong ends in 401 with its reason, an RFC 6750
challenge that points at the RFC 9728 metadata, and never the token echoed."""

import base64
import hashlib
import hmac
import json
import time

import pytest
import requests

import idp as idp_module



@pytest.fixture
def gateway(hosted_gateway):
    """Every scenario here runs in both hosts: Envoy and Spin."""
    return hosted_gateway

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict, signature: str = "") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{signature}"


def expired(g):
    now = int(time.time())
    return g.token(iat=now - 900, nbf=now - 900, exp=now - 300)


def not_yet_valid(g):
    return g.token(nbf=int(time.time()) + 300)


def bad_signature_es256(g):
    other = idp_module.new_private_key("ES256")
    key = idp_module.SigningKey(g.idp.key("ES256").kid, "ES256", other)
    return g.idp.mint({"sub": "alice", "aud": g.audience}, key=key)


def bad_signature_rs256(g):
    other = idp_module.new_private_key("RS256")
    key = idp_module.SigningKey(g.idp.key("RS256").kid, "RS256", other)
    return g.idp.mint({"sub": "alice", "aud": g.audience}, alg="RS256", key=key)


def bad_signature_eddsa(g):
    other = idp_module.new_private_key("EdDSA")
    key = idp_module.SigningKey(g.idp.key("EdDSA").kid, "EdDSA", other)
    return g.idp.mint({"sub": "alice", "aud": g.audience}, alg="EdDSA", key=key)


def tampered_claims(g):
    header, _, signature = g.token().split(".")
    claims = g.idp.claims({"sub": "mallory", "aud": g.audience})
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def ps256_with_an_allowed_rsa_key(g):
    return g.token("PS256")


def hs256_keyed_with_the_public_key(g):
    # The classic confusion attack: HMAC with the issuer's public key as secret.
    rsa_key = g.idp.key("RS256")
    claims = g.idp.claims({"sub": "alice", "aud": g.audience})
    signing_input = unsigned({"alg": "HS256", "kid": rsa_key.kid, "typ": "JWT"}, claims)[:-1]
    secret = json.dumps(rsa_key.public_jwk()).encode()
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def alg_none(g):
    claims = g.idp.claims({"sub": "alice", "aud": g.audience})
    return unsigned({"alg": "none", "typ": "JWT"}, claims)


def crit_header(g):
    return g.idp.mint({"sub": "alice", "aud": g.audience}, headers={"crit": ["exp"]})


def oversize(g):
    return g.token(padding="x" * 9000)


def unknown_kid(g):
    stranger = idp_module.SigningKey("never-published", "ES256", idp_module.new_private_key("ES256"))
    return g.idp.mint({"sub": "alice", "aud": g.audience}, key=stranger)


CASES = [
    ("expired", expired, "expired"),
    ("not yet valid", not_yet_valid, "not_yet_valid"),
    ("bad signature ES256", bad_signature_es256, "bad_signature"),
    ("bad signature RS256", bad_signature_rs256, "bad_signature"),
    ("bad signature EdDSA", bad_signature_eddsa, "bad_signature"),
    ("tampered claims", tampered_claims, "bad_signature"),
    ("wrong audience", lambda g: g.token(aud="https://other.example"), "wrong_audience"),
    ("unknown issuer", lambda g: g.token(iss="https://evil.example/"), "unknown_issuer"),
    ("PS256 not in the allow-list", ps256_with_an_allowed_rsa_key, "alg_not_allowed"),
    ("HS256", hs256_keyed_with_the_public_key, "alg_not_allowed"),
    ("alg none", alg_none, "alg_not_allowed"),
    ("crit header", crit_header, "crit_unsupported"),
    ("oversize token", oversize, "token_too_large"),
    ("missing exp", lambda g: g.token(exp=None), "missing_exp"),
    ("unknown kid", unknown_kid, "unknown_kid"),
    ("control characters in sub", lambda g: g.token(sub="alice\r\nx-agentward-sub: root"), "bad_claim"),
    ("a comma in sub", lambda g: g.token(sub="alice,root"), "bad_claim"),
    ("a line separator in sub", lambda g: g.token(sub="alice\u2028root"), "bad_claim"),
    ("a zero-width space in the agent", lambda g: g.token(azp="stock\u200bagent"), "bad_claim"),
    ("a comma in an actor", lambda g: g.token(act={"sub": "stock-agent,planner"}), "bad_claim"),
    ("no sub at an issuer without client credentials", lambda g: g.token(sub=None), "bad_claim"),
    ("malformed: one segment", lambda g: "not-a-jwt", "malformed"),
    ("malformed: garbage segments", lambda g: "a.b.c", "malformed"),
    ("malformed: header not JSON", lambda g: f"{b64(b'nope')}.{b64(b'{}')}.{b64(b'sig')}", "malformed"),
]


@pytest.mark.parametrize("make_token,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_token_is_rejected_with_its_reason(gateway, make_token, reason):
    token = make_token(gateway)
    r = requests.get(gateway.url + "/portfolio", headers={"authorization": f"Bearer {token}"}, timeout=15)
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["error"] == "invalid_token"
    assert body["reason"] == reason, body
    assert body.get("error_description")
    metadata = f"{gateway.resource}/.well-known/oauth-protected-resource"
    assert r.headers["www-authenticate"] == (
        f'Bearer realm="{gateway.resource}", error="invalid_token", '
        f'error_description="{reason}", resource_metadata="{metadata}"'
    )
    assert token not in r.text
    assert token not in r.headers["www-authenticate"]


def test_bad_claim_names_the_claim_and_not_its_value(gateway):
    token = gateway.token(sub="alice,root")
    r = requests.get(gateway.url + "/portfolio", headers={"authorization": f"Bearer {token}"}, timeout=15)
    assert r.status_code == 401, r.text
    assert "`sub`" in r.json()["error_description"]
    assert "alice,root" not in r.text


def test_token_without_the_routes_scope_gets_403_insufficient_scope(gateway):
    before = gateway.counter("agentward.jwt.rejected.insufficient_scope") if gateway.counts else 0
    token = gateway.token(scope="portfolio:read")
    r = requests.post(
        gateway.url + "/trades",
        json={"ticker": "ACME", "qty": 1},
        headers={"authorization": f"Bearer {token}"},
        timeout=15,
    )
    assert r.status_code == 403, r.text
    metadata = f"{gateway.resource}/.well-known/oauth-protected-resource"
    assert r.headers["www-authenticate"] == (
        f'Bearer realm="{gateway.resource}", error="insufficient_scope", '
        f'scope="trade", resource_metadata="{metadata}"'
    )
    body = r.json()
    assert body["error"] == "insufficient_scope"
    assert body["missing_scopes"] == ["trade"]
    assert token not in r.text
    # The same token, now cached, still reads the portfolio it has the scope for.
    r = requests.get(gateway.url + "/portfolio", headers={"authorization": f"Bearer {token}"}, timeout=15)
    assert r.status_code == 200, r.text
    if gateway.counts:
        assert gateway.counter("agentward.jwt.rejected.insufficient_scope") == before + 1


def test_rejections_are_counted_by_reason(gateway):
    if not gateway.counts:
        pytest.skip("a Spin host has no counters")
    before = gateway.counter("agentward.jwt.rejected.expired")
    requests.get(gateway.url + "/portfolio", headers={"authorization": f"Bearer {expired(gateway)}"}, timeout=15)
    assert gateway.counter("agentward.jwt.rejected.expired") == before + 1


def test_missing_token_gets_a_challenge_with_resource_metadata(gateway):
    r = requests.get(gateway.url + "/portfolio", timeout=15)
    assert r.status_code == 401
    metadata = f"{gateway.resource}/.well-known/oauth-protected-resource"
    assert r.headers["www-authenticate"] == f'Bearer realm="{gateway.resource}", resource_metadata="{metadata}"'
    body = r.json()
    assert body["error"] == "unauthorized"
    assert body["reason"] == "missing_token"
    assert body["error_description"]


@pytest.mark.parametrize("authorization", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer "])
def test_authorization_without_a_bearer_token_counts_as_missing_or_malformed(gateway, authorization):
    r = requests.get(gateway.url + "/portfolio", headers={"authorization": authorization}, timeout=15)
    assert r.status_code == 401
    assert r.json()["reason"] in ("missing_token", "malformed")


def test_unmatched_path_is_denied_with_or_without_a_token(gateway):
    # The shipped policy leaves `unmatched` at its default, `deny`.
    for headers in ({}, {"authorization": f"Bearer {gateway.token()}"}):
        r = requests.get(gateway.url + "/admin", headers=headers, timeout=15)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "access_denied"
        assert "seen_headers" not in r.json()


@pytest.mark.parametrize("suffix", ["", "/portfolio"])
def test_protected_resource_metadata_is_served(gateway, suffix):
    # RFC 9728 §3.1: the resource's own path follows the well-known path.
    r = requests.get(gateway.url + "/.well-known/oauth-protected-resource" + suffix, timeout=15)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    meta = r.json()
    assert meta["resource"] == gateway.resource + suffix
    assert meta["authorization_servers"] == gateway.policy["authorization_servers"]
    assert meta["scopes_supported"] == ["portfolio:read", "trade"]
    assert meta["bearer_methods_supported"] == ["header"]
    assert "seen_headers" not in meta, "the metadata must come from the gateway, not the upstream"

