"""Keys come from the IdP's JWKS: rotation without a restart, a JWKS that is
unreachable answers 503 (a dependency is down), not 401 (the token is bad).
And the counters show what happened, including which signature path ran."""

import base64
import json
import time

import requests

import idp as idp_module  # examples/stock-trade, on the path (conftest)
from stack import free_port


def get_portfolio(gateway, token, timeout=15):
    return requests.get(gateway.url + "/portfolio", headers={"authorization": f"Bearer {token}"}, timeout=timeout)


def test_rotated_key_is_picked_up_without_a_restart(gateway, idp):
    assert get_portfolio(gateway, gateway.token()).status_code == 200
    fetches = gateway.counter("agentward.jwt.jwks_fetch_ok")
    rotated = requests.post(idp.url + "/rotate", json={"alg": "ES256"}, timeout=5).json()
    token = gateway.token()
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["kid"] == rotated["kid"]
    # Each worker refuses the new kid at once (401 unknown_kid, never a
    # held request) and refetches in the background; then it serves it.
    deadline = time.monotonic() + 10
    answers = []
    while time.monotonic() < deadline and answers[-10:] != [200] * 10:
        r = get_portfolio(gateway, token)
        answers.append(r.status_code)
        if r.status_code != 200:
            assert r.json()["reason"] == "unknown_kid", r.text
            time.sleep(0.5)  # a refetch may wait out jwks_min_refetch_seconds
    assert answers[-10:] == [200] * 10, answers
    assert r.json()["seen_headers"]["x-agentward-sub"] == "alice"
    assert gateway.counter("agentward.jwt.jwks_fetch_ok") > fetches


def test_unreachable_jwks_answers_503_after_the_timeout(start_gateway):
    def adjust(policy):
        policy["issuers"][0]["jwks_timeout_ms"] = 1000

    down = start_gateway("jwks-down", adjust, idp_port=free_port())
    started = time.monotonic()
    r = get_portfolio(down, down.token())
    took = time.monotonic() - started
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["error"] == "temporarily_unavailable"
    assert body["reason"] == "jwks_unavailable"
    assert took < 10, f"took {took:.1f}s"
    assert down.counter("agentward.jwt.jwks_fetch_failed") >= 1
    # Public routes do not need the keys.
    assert requests.get(down.url + "/prices/ACME", timeout=15).status_code == 200


def test_counters_show_allowed_cache_and_jwks_fetches(gateway):
    before = {n: gateway.counter(f"agentward.jwt.{n}") for n in ("allowed", "cache_hit", "cache_miss")}
    token = gateway.token()
    for _ in range(3):
        assert get_portfolio(gateway, token).status_code == 200
    # A cached request's counts are published on the VM's next tick (250 ms).
    deadline = time.monotonic() + 5
    while gateway.counter("agentward.jwt.allowed") < before["allowed"] + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    after = {n: gateway.counter(f"agentward.jwt.{n}") for n in before}
    assert after["allowed"] == before["allowed"] + 3
    assert after["cache_miss"] >= before["cache_miss"] + 1
    assert after["cache_hit"] >= before["cache_hit"] + 1
    assert gateway.counter("agentward.jwt.jwks_fetch_ok") >= 1


def test_es256_and_rs256_verify_through_envoy_and_eddsa_in_pure_rust(gateway):
    """Envoy has the verify_signature foreign function: ES256 and RS256 use
    it (BoringSSL); EdDSA is not offered by it and takes the pure-Rust path."""
    for alg, path in (("ES256", "verify_foreign"), ("RS256", "verify_foreign"), ("EdDSA", "verify_pure")):
        counter = f"agentward.jwt.{path}"
        before = gateway.counter(counter)
        assert get_portfolio(gateway, gateway.token(alg)).status_code == 200
        assert gateway.counter(counter) == before + 1, f"{alg} did not take the {path} path"


def test_spin_keeps_the_issuers_keys_between_requests_and_refetches_a_rotated_key(start_gateway):
    """A Spin host starts a fresh instance per request: jwt-identity keeps
    the JWKS it fetched in the app's key-value store, so later requests
    verify without a fetch; a token from a rotated key gets one refetch
    (no sooner than jwks_min_refetch_seconds after the kept fetch). An IdP
    of its own, so the rotation touches no other test."""
    own = idp_module.Idp()
    server = own.serve(0)
    try:
        def adjust(policy):
            policy["issuers"][0]["jwks_min_refetch_seconds"] = 1

        spin = start_gateway("spin-jwks", adjust, idp_port=server.server_port, host="spin")
        spin.idp = own
        assert get_portfolio(spin, spin.token()).status_code == 200
        fetched = own.jwks_requests
        assert fetched == 1
        for _ in range(5):
            r = get_portfolio(spin, spin.token())
            assert r.status_code == 200, r.text
        assert own.jwks_requests == fetched, "the kept keys served: no fetch"

        own.rotate("ES256")
        time.sleep(1.1)  # past jwks_min_refetch_seconds since the kept fetch
        r = get_portfolio(spin, spin.token())
        assert r.status_code == 200, r.text
        assert own.jwks_requests == fetched + 1, "one refetch for the new kid"
        for _ in range(3):
            assert get_portfolio(spin, spin.token()).status_code == 200
        assert own.jwks_requests == fetched + 1, "the refetched keys are kept too"
    finally:
        server.shutdown()
