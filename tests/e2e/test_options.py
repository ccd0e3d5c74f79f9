"""The identity options: the token in another header or a query parameter,
claims copied into headers, a required `typ`."""

import requests


def at_jwt(gateway, **claims) -> str:
    base = {"sub": "alice", "aud": gateway.audience, "azp": "stock-agent", "scope": "portfolio:read"}
    base.update(claims)
    return gateway.idp.mint(base, headers={"typ": "at+jwt"})


def test_token_in_the_configured_header_is_accepted(options_gateway):
    r = requests.get(
        options_gateway.url + "/portfolio", headers={"x-access-token": at_jwt(options_gateway)}, timeout=15
    )
    assert r.status_code == 200, r.text
    assert r.json()["seen_headers"]["x-agentward-sub"] == "alice"


def test_token_in_the_configured_query_parameter_is_accepted(options_gateway):
    r = requests.get(options_gateway.url + "/portfolio", params={"access_token": at_jwt(options_gateway)}, timeout=15)
    assert r.status_code == 200, r.text
    assert r.json()["seen_headers"]["x-agentward-sub"] == "alice"


def test_authorization_header_still_works_alongside(options_gateway):
    token = at_jwt(options_gateway)
    r = requests.get(options_gateway.url + "/portfolio", headers={"authorization": f"Bearer {token}"}, timeout=15)
    assert r.status_code == 200, r.text


def test_claims_are_copied_into_configured_headers_and_spoofs_removed(options_gateway):
    token = at_jwt(options_gateway, org={"id": "acme-corp"})
    r = requests.get(
        options_gateway.url + "/portfolio",
        headers={"authorization": f"Bearer {token}", "x-org-id": "evil-corp", "x-user-email": "mallory@evil"},
        timeout=15,
    )
    assert r.status_code == 200, r.text
    seen = r.json()["seen_headers"]
    assert seen["x-org-id"] == "acme-corp"
    assert "x-user-email" not in seen, "a claim_to_headers target must be removed when the claim is absent"


def test_claim_headers_are_removed_on_public_routes_without_token(options_gateway):
    r = requests.get(options_gateway.url + "/prices/ACME", headers={"x-org-id": "evil-corp"}, timeout=15)
    assert r.status_code == 200, r.text
    assert "x-org-id" not in r.json()["seen_headers"]


def test_wrong_typ_is_rejected_when_a_typ_is_required(options_gateway):
    token = options_gateway.idp.mint({"sub": "alice", "aud": options_gateway.audience}, headers={"typ": "JWT"})
    r = requests.get(options_gateway.url + "/portfolio", headers={"authorization": f"Bearer {token}"}, timeout=15)
    assert r.status_code == 401
    assert r.json()["reason"] == "wrong_typ"


def test_typ_is_compared_case_insensitively(options_gateway):
    claims = {"sub": "alice", "aud": options_gateway.audience, "scope": "portfolio:read"}
    token = options_gateway.idp.mint(claims, headers={"typ": "AT+JWT"})
    r = requests.get(options_gateway.url + "/portfolio", headers={"authorization": f"Bearer {token}"}, timeout=15)
    assert r.status_code == 200, r.text


def test_metadata_advertises_the_query_bearer_method(options_gateway):
    meta = requests.get(options_gateway.url + "/.well-known/oauth-protected-resource", timeout=15).json()
    assert meta["bearer_methods_supported"] == ["header", "query"]
