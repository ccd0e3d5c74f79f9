"""The token vault end to end, with real processes: Envoy on envoy/chain.yaml
(jwt-identity → token-exchange, the real .wasm files), the real vault
(target/debug/agentward-vault) on SQLite, then two replicas on one PostgreSQL
schema, the broker's real OAuth provider (npm oidc-provider, short-lived
access tokens) and the broker API, which accepts only that provider's access
tokens (introspection).

The tests of a backend run in order and share its stack: the user is not
linked → 403 with connect_url; the user follows it (login and consent at the
provider, scripted like a browser) → linked; the agent's request reaches the
API with the provider's token; the token expires → one refresh; 50 concurrent
first requests → one refresh; the user revoked the grant → the reconnect
error; token-exchange without jwt-identity in front refuses forged identity
headers (401); the vault down → 503; no token value at
rest or in any log.

Then the same chain with the policy's `"dialect": "auth0"` (SQLite, a tap in
front of the vault to see what the gateway sends): Auth0 Token Vault's
federated-connection exchange gets the same 403 with connect_url, then the
provider's token after linking; wrong gateway credentials → 502."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import upstream as upstream_module
from stack import (
    CHAIN_CONFIG,
    ENVOY_DIR,
    HOST_TEST,
    SPIN_WASM_DIR,
    WASM_DIR,
    Envoy,
    Spin,
    embedded_policies,
    free_port,
    render,
)
from user import link_account
from vault_stack import GATEWAY_CLIENT, chain_config, chain_policy, missing_pieces, start_stack

ACCESS_TOKEN_TTL = 8  # the provider's access tokens
MARGIN = 3  # vault refresh margin and the plugin's expiry margin
NOT_LINKED = "federated_connection_refresh_token_not_found"
AUTH0_GRANT = "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token"
AUTH0_TOKEN_TYPE = "http://auth0.com/oauth/token-type/federated-connection-access-token"


# -- the shipped configs --------------------------------------------------


def test_chain_config_carries_the_chain_policy():
    policy = chain_policy()
    assert embedded_policies(CHAIN_CONFIG.read_text()) == [policy, policy], "one policy for both filters"
    route = next(r for r in policy["routes"] if r.get("exchange"))
    assert route == {
        "match": {"methods": ["GET"], "path": "/broker/portfolio"},
        "scopes": ["portfolio:read"],
        "exchange": {"connection": "stocktrade", "scopes": ["stocks:read"]},
    }
    assert policy["vault"]["cluster"] == "vault"


def test_chain_config_fails_closed_and_bounds_holds():
    text = CHAIN_CONFIG.read_text()
    wasm_filters = text.count("envoy.filters.http.wasm\n")
    assert text.count("failure_policy: FAIL_CLOSED") == wasm_filters
    assert "stream_idle_timeout: 60s" in text and "idle_timeout: 60s }" in text
    clusters = re.findall(r"^  - name: (\S+)", text.split("  clusters:\n", 1)[1], re.M)
    assert clusters == ["upstream", "idp", "vault"]


@pytest.mark.parametrize("config", [CHAIN_CONFIG, ENVOY_DIR / "bench/token-exchange.yaml"], ids=lambda p: p.name)
def test_both_filters_share_one_vm_id_for_the_proof_key(config):
    # Shared data is per vm_id: token-exchange finds jwt-identity's proof key
    # only under the same one.
    text = config.read_text()
    assert re.findall(r"vm_id: (\S+)", text) == ["agentward", "agentward"]
    assert text.count("envoy.filters.http.wasm\n") == 2


def with_token_exchange_alone(config: str, listener: int, port: int) -> str:
    """A chain config plus a second listener on `port`: the same filters but
    jwt-identity, in the same Envoy, so in the same shared data."""
    start = config.index("  - name: gateway\n")
    end = config.index("  clusters:\n")
    alone = config[start:end].replace("  - name: gateway\n", "  - name: token-exchange-alone\n", 1)
    bind = f"port_value: {listener} }}"
    assert alone.count(bind) == 1
    alone = alone.replace(bind, f"port_value: {port} }}")
    wasm = "          - name: envoy.filters.http.wasm\n"
    first = alone.index(wasm)
    second = alone.index(wasm, first + 1)
    assert "name: jwt-identity" in alone[first:second]
    alone = alone[:first] + alone[second:]
    assert "jwt-identity" not in alone and "name: token-exchange" in alone
    return config[:end] + alone + config[end:]


def unsigned_jwt(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# -- end to end -------------------------------------------------------------


def require_built() -> None:
    missing = missing_pieces() + [
        str(WASM_DIR / w) for w in ("jwt_identity.wasm", "token_exchange.wasm") if not (WASM_DIR / w).exists()
    ]
    if missing:
        pytest.fail("missing: " + ", ".join(missing))


def require_spin_built() -> None:
    missing = [str(p) for p in [HOST_TEST, *(SPIN_WASM_DIR / f"spin_{c}.wasm" for c in ("jwt_identity", "token_exchange"))]
               if not p.exists()]
    if missing:
        pytest.fail("missing: " + ", ".join(missing) + " (run `cargo xtask build`)")


@pytest.fixture(scope="class", params=["sqlite", "postgres", "spin"])
def tx(request, idp, tmp_path_factory):
    """The whole stack on one backend: SQLite with one vault, PostgreSQL with
    two replicas behind Envoy's `vault` cluster; then SQLite again behind the
    Spin components (jwt-identity → token-exchange in `host-test serve`)
    instead of Envoy: the same scenarios in the second host."""
    require_built()
    host = "spin" if request.param == "spin" else "envoy"
    backend = "sqlite" if host == "spin" else request.param
    if host == "spin":
        require_spin_built()
    stack = start_stack(
        backend,
        tmp_path_factory.mktemp(f"token-exchange-{request.param}"),
        idp.idp,
        idp.port,
        upstream_module,
        replicas=1 if backend == "sqlite" else 2,
        access_token_ttl=ACCESS_TOKEN_TTL,
        margin=MARGIN,
        host=host,
    )
    stack.notes = {}
    yield stack
    stack.stop()


def json_error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()


def wait_until_expired(tx) -> None:
    """Until the tokens of the last links are within the margin of expiry
    (both the plugin's cache and the vault's then want a fresh one)."""
    deadline = tx.notes["last_link"] + ACCESS_TOKEN_TTL - MARGIN + 1
    time.sleep(max(0.0, deadline - time.monotonic()))


def link(tx, connect_url: str, account: str) -> None:
    linking = link_account(connect_url, account)
    assert linking.linked, f"{linking.hops}\n{linking.response.text[:500] if linking.response is not None else ''}"
    urls = [url for _, url, _ in linking.hops]
    # The vault asked first (GET: a page, nothing spent), then its form went on (POST).
    assert linking.question and "to the agentward user" in linking.question, linking.question
    assert [m for m, u, _ in linking.hops if "/connect/stocktrade" in u][:2] == ["GET", "POST"], linking.hops
    assert any(u.startswith(tx.provider.url + "/interaction/") for u in urls), urls
    assert urls[-1].endswith("/connect/callback"), urls
    tx.notes["last_link"] = time.monotonic()


class TestTokenVault:
    def test_before_linking_the_agent_gets_403_with_connect_url(self, tx):
        forwarded = len(tx.broker.seen)
        body = json_error(tx.portfolio(tx.token("alice")), 403)
        assert body["error"] == NOT_LINKED
        assert body["connection"] == "stocktrade"
        assert any(body["connect_url"].startswith(f"{v.url}/connect/stocktrade?ticket=") for v in tx.vaults), body
        assert len(tx.broker.seen) == forwarded, "nothing reached the API"
        tx.notes["alice_connect"] = body["connect_url"]

    def test_following_the_connect_url_links_the_account(self, tx):
        link(tx, tx.notes["alice_connect"], "alice-broker")
        assert tx.provider.grants("authorization_code") == 1

    def test_the_api_gets_the_providers_token_and_the_agent_never_sees_it(self, tx):
        jwt = tx.token("alice")
        r = tx.portfolio(jwt)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["account"] == "alice-broker"
        assert body["positions"] == upstream_module.positions_of("alice-broker")
        seen = tx.broker.seen[-1]
        assert seen["active"] is True and seen["client_id"] == "agentward-vault", seen
        scheme, token = seen["authorization"].split(" ", 1)
        assert scheme == "Bearer"
        issued = tx.provider.tokens()
        assert token in issued, "the API got an access token of the provider"
        assert jwt not in seen["authorization"]
        headers = body["seen_headers"]
        assert headers["x-agentward-sub"] == "alice"
        assert not any(jwt in v for v in headers.values()), "the user's JWT never reaches the API"
        answer = r.text + repr(dict(r.headers))
        assert not any(t in answer for t in issued), "no provider token in the agent's answer"
        tx.notes["alice_upstream_token"] = token

    def test_the_api_refuses_the_agents_own_token(self, tx):
        r = requests.get(
            tx.broker_url + "/broker/portfolio", headers={"authorization": f"Bearer {tx.token('alice')}"}, timeout=10
        )
        assert json_error(r, 401)["error"] == "invalid_token"
        assert json_error(requests.get(tx.broker_url + "/broker/portfolio", timeout=10), 401)["error"] == "invalid_token"

    def test_more_users_link_and_one_revokes_at_the_provider(self, tx):
        for user in ("bob", "carol"):
            body = json_error(tx.portfolio(tx.token(user)), 403)
            link(tx, body["connect_url"], f"{user}-broker")
        assert tx.provider.grants("authorization_code") == 3
        assert tx.provider.revoke("carol-broker") >= 1

    def test_an_expired_token_is_refreshed_once(self, tx):
        wait_until_expired(tx)
        refreshes, at_provider = tx.refreshes(), tx.provider.grants("refresh_token")
        r = tx.portfolio(tx.token("alice"))
        assert r.status_code == 200, r.text
        assert r.json()["account"] == "alice-broker"
        token = tx.broker.seen[-1]["authorization"].split(" ", 1)[1]
        assert token != tx.notes["alice_upstream_token"], "a fresh access token"
        assert (tx.refreshes(), tx.provider.grants("refresh_token")) == (refreshes + 1, at_provider + 1)
        again = tx.portfolio(tx.token("alice"))
        assert again.status_code == 200
        assert tx.provider.grants("refresh_token") == at_provider + 1, "then cached"

    def test_50_concurrent_first_requests_refresh_once(self, tx):
        refreshes, at_provider = tx.refreshes(), tx.provider.grants("refresh_token")
        jwt = tx.token("bob")
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: tx.portfolio(jwt, timeout=30), range(50)))
        assert [r.status_code for r in answers] == [200] * 50, {r.status_code: r.text for r in answers}
        assert {r.json()["account"] for r in answers} == {"bob-broker"}
        assert tx.provider.grants("refresh_token") == at_provider + 1, "one refresh at the provider"
        assert tx.refreshes() == refreshes + 1, "one refresh by the vault(s)"

    def test_a_revoked_grant_asks_the_user_to_reconnect(self, tx):
        refused = tx.provider.refused("refresh_token")
        body = json_error(tx.portfolio(tx.token("carol")), 403)
        assert body["error"] == NOT_LINKED
        assert "reconnect" in body["error_description"], body
        assert tx.provider.refused("refresh_token") == refused + 1
        link(tx, body["connect_url"], "carol-broker")
        r = tx.portfolio(tx.token("carol"))
        assert r.status_code == 200, r.text
        assert r.json()["account"] == "carol-broker"

    def test_replicas_serve_the_same_users(self, tx):
        if len(tx.vaults) < 2:
            pytest.skip("one vault on SQLite")
        jwt = tx.token("alice")
        answers = [v.exchange(jwt) for v in tx.vaults]
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert len({a.json()["access_token"] for a in answers}) == 1, "the same cached token from both"
        for vault in tx.vaults:
            served = sum(
                vault.metric("agentward_vault_exchanges_total", outcome=o) for o in ("issued_cached", "issued_refreshed")
            )
            assert served > 1, f"{vault.name} served the gateway too"

    def test_an_unlinked_account_stops_working_at_the_gateway(self, tx):
        if tx.host == "spin":
            pytest.skip("starts another Envoy (chain_gateway); a Spin instance keeps no token between requests")
        gateway = tx.chain_gateway("short-cache", max_cache_seconds=1)
        url = gateway.url + "/broker/portfolio"

        def portfolio(jwt: str) -> requests.Response:
            return requests.get(url, headers={"authorization": f"Bearer {jwt}"}, timeout=15)

        body = json_error(portfolio(tx.token("erin")), 403)
        link(tx, body["connect_url"], "erin-broker")
        r = portfolio(tx.token("erin"))
        assert r.status_code == 200, r.text
        assert r.json()["account"] == "erin-broker"
        vault = tx.vaults[0].url + "/connections/stocktrade"
        # Erin's token for the API does not open the vault's own endpoints.
        refused = requests.delete(vault, headers={"authorization": f"Bearer {tx.token('erin')}"}, timeout=10)
        assert refused.status_code == 401, refused.text
        erin_at_vault = tx.vault_token("erin", tx.vaults[0])
        gone = requests.delete(vault, headers={"authorization": f"Bearer {erin_at_vault}"}, timeout=10)
        assert gone.status_code == 204, gone.text
        # Meanwhile the gateway may still send its cached token for up to
        # max_cache_seconds (the API refuses it: the unlink revoked the
        # grant at the provider); then the vault says the account is unlinked.
        deadline = time.monotonic() + 1 + 5
        while True:
            r = portfolio(tx.token("erin"))
            if r.status_code == 403 or time.monotonic() > deadline:
                break
            assert r.status_code in (200, 401), r.text
            time.sleep(0.25)
        body = json_error(r, 403)
        assert body["error"] == NOT_LINKED and "connect_url" in body, body
        forwarded = len(tx.broker.seen)
        assert json_error(portfolio(tx.token("erin")), 403)["error"] == NOT_LINKED
        assert len(tx.broker.seen) == forwarded, "nothing reached the API"

    def test_token_exchange_without_jwt_identity_in_front_refuses_forged_identity(self, tx):
        """Issue #10, hole 3: a listener whose chain lacks jwt-identity, in
        the Envoy where alice's upstream token is cached. An unsigned JWT
        that says `sub: alice` and forged identity headers get 401, and
        nothing reaches the API."""
        if tx.backend != "sqlite" or tx.host == "spin":
            pytest.skip("once is enough (an Envoy listener without jwt-identity)")
        ports = dict(tx.envoy.ports, listener=free_port(), admin=free_port())
        alone_port = free_port()
        endpoints = [v.port for v in tx.vaults]
        config = with_token_exchange_alone(chain_config(ports, tx.policy, endpoints), ports["listener"], alone_port)
        envoy = Envoy("chain-and-alone", config, tx.workdir, ports, concurrency=2)
        envoy.start()
        try:
            chain = envoy.url + "/broker/portfolio"
            alone = f"http://127.0.0.1:{alone_port}/broker/portfolio"
            # Through the chain, alice's upstream token is exchanged and cached.
            for _ in range(2):
                r = requests.get(chain, headers={"authorization": f"Bearer {tx.token('alice')}"}, timeout=15)
                assert r.status_code == 200, r.text
                assert r.json()["account"] == "alice-broker"
            issuer = tx.policy["issuers"][0]["issuer"]
            forged = unsigned_jwt({"iss": issuer, "sub": "alice", "aud": tx.audience, "exp": int(time.time()) + 300})
            identity = {"x-agentward-sub": "alice", "x-agentward-issuer": issuer, "x-agentward-agent": "stock-agent"}
            forwarded = len(tx.broker.seen)
            attempts = [
                dict(identity, authorization=f"Bearer {forged}"),
                dict(identity, authorization=f"Bearer {forged}", **{"x-agentward-proof": "AAAAAAAAAAAAAAAAAAAAAA"}),
                # alice's own token, but no jwt-identity to prove the headers.
                dict(identity, authorization=f"Bearer {tx.token('alice')}"),
            ]
            for headers in attempts:
                body = json_error(requests.get(alone, headers=headers, timeout=15), 401)
                assert body["error"] == "invalid_token", body
                assert body["reason"] == "identity_unproven", body
                assert "jwt-identity" in body["error_description"]
            assert len(tx.broker.seen) == forwarded, "nothing reached the API"
            # The chain itself refuses the unsigned token, and still serves alice.
            assert requests.get(chain, headers=attempts[0], timeout=15).status_code == 401
            r = requests.get(chain, headers={"authorization": f"Bearer {tx.token('alice')}"}, timeout=15)
            assert r.status_code == 200 and r.json()["account"] == "alice-broker", r.text
        finally:
            envoy.stop()

    def test_spin_token_exchange_alone_refuses_forged_identity(self, tx):
        """The Spin form of the test above: token-exchange served alone
        (what a caller gets who reaches the private component directly),
        with the chain's own proof key. Forged identity headers, an unsigned
        JWT and alice's real token without jwt-identity's proof get 401, and
        nothing reaches the API."""
        if tx.host != "spin":
            pytest.skip("the Envoy form is the test above")
        ports = dict(tx.envoy.ports, listener=free_port())
        alone = Spin("spin-alone", ["token-exchange"], tx.policy, tx.workdir, ports, tx.envoy.variables)
        alone.start()
        try:
            url = alone.url + "/broker/portfolio"
            issuer = tx.policy["issuers"][0]["issuer"]
            forged = unsigned_jwt({"iss": issuer, "sub": "alice", "aud": tx.audience, "exp": int(time.time()) + 300})
            identity = {"x-agentward-sub": "alice", "x-agentward-issuer": issuer, "x-agentward-agent": "stock-agent"}
            forwarded = len(tx.broker.seen)
            attempts = [
                dict(identity, authorization=f"Bearer {forged}"),
                dict(identity, authorization=f"Bearer {forged}", **{"x-agentward-proof": "AAAAAAAAAAAAAAAAAAAAAA"}),
                dict(identity, authorization=f"Bearer {tx.token('alice')}"),
            ]
            for headers in attempts:
                body = json_error(requests.get(url, headers=headers, timeout=15), 401)
                assert body["reason"] == "identity_unproven", body
            assert len(tx.broker.seen) == forwarded, "nothing reached the API"
            r = tx.portfolio(tx.token("alice"))
            assert r.status_code == 200, r.text
        finally:
            alone.stop()

    def test_vault_down_answers_503_and_forwards_nothing(self, tx):
        for vault in tx.vaults:
            vault.stop()
        forwarded = len(tx.broker.seen)
        started = time.monotonic()
        body = json_error(tx.portfolio(tx.token("dave")), 503)
        assert time.monotonic() - started < 5
        assert body["error"] == "temporarily_unavailable"
        assert body["reason"] == "vault_unavailable"
        assert "connect_url" not in body
        assert len(tx.broker.seen) == forwarded, "nothing reached the API"

    def test_no_token_value_at_rest_or_in_any_log(self, tx):
        provider_tokens = tx.provider.tokens()
        assert len(provider_tokens) >= 8, "access, refresh and ID tokens of 4 links and 2 refreshes"
        secrets = [t.encode() for t in provider_tokens + tx.user_tokens]
        haystacks = {p.name: p.read_bytes() for p in tx.workdir.glob("*.log")}
        gateway_log = f"chain-{tx.backend}.spin.log" if tx.host == "spin" else f"chain-{tx.backend}.log"
        assert {"vault-0.log", gateway_log} <= set(haystacks)
        if tx.backend == "sqlite":
            files = tx.database.files()
            assert files, "the SQLite database file exists"
            haystacks.update({p.name: p.read_bytes() for p in files})
        else:
            dump = subprocess.run(
                ["pg_dump", "-h", "127.0.0.1", "-U", tx.database.url.split("//")[1].split("@")[0],
                 "-n", tx.database.schema, "--data-only", "test"],
                capture_output=True,
            )
            if dump.returncode == 0:
                assert b"COPY" in dump.stdout
                haystacks["pg_dump"] = dump.stdout
        found = [(name, secret[:12]) for name, data in haystacks.items() for secret in secrets if secret in data]
        found += [
            (name, secret[:12]) for name, data in haystacks.items() for secret in secrets if secret.hex().encode() in data
        ]
        assert not found, f"token values found: {found}"


# -- the Auth0 Token Vault dialect ------------------------------------------


@pytest.fixture(scope="class")
def auth0_tx(idp, tmp_path_factory):
    """The stack on SQLite with the policy's `"dialect": "auth0"`, Envoy
    reaching the vault through a tap."""
    require_built()
    stack = start_stack(
        "sqlite",
        tmp_path_factory.mktemp("token-exchange-auth0"),
        idp.idp,
        idp.port,
        upstream_module,
        replicas=1,
        access_token_ttl=60,
        margin=MARGIN,
        dialect="auth0",
        tap=True,
    )
    stack.notes = {}
    yield stack
    stack.stop()


def assert_auth0_dialect(request: dict) -> None:
    """A token request in Auth0 Token Vault's federated-connection dialect:
    client credentials in the form, the connection by name, no RFC 8693
    `resource` and no HTTP Basic."""
    assert request["path"] == "/oauth/token"
    assert request["grant_type"] == AUTH0_GRANT, request
    assert request["requested_token_type"] == AUTH0_TOKEN_TYPE
    assert request["subject_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert request["connection"] == "stocktrade"
    assert request["client_id"] == GATEWAY_CLIENT[0]
    assert request["scope"] == "stocks:read"
    assert "client_secret" in request["params"] and "subject_token" in request["params"]
    assert "resource" not in request["params"] and not request["basic_auth"], request


class TestAuth0Dialect:
    def test_before_linking_the_agent_gets_403_with_connect_url(self, auth0_tx):
        tx = auth0_tx
        (vault,) = tx.vaults
        body = json_error(tx.portfolio(tx.token("alice")), 403)
        assert body["error"] == NOT_LINKED
        assert body["connection"] == "stocktrade"
        assert body["connect_url"].startswith(f"{vault.url}/connect/stocktrade?ticket="), body
        assert tx.broker.seen == [], "nothing reached the API"
        (request,) = tx.tapped
        assert_auth0_dialect(request)
        assert (request["status"], request["error"]) == (400, NOT_LINKED)
        assert vault.metric("agentward_vault_exchanges_total", outcome="not_linked") == 1
        tx.notes["alice_connect"] = body["connect_url"]

    def test_after_linking_the_api_gets_the_providers_token(self, auth0_tx):
        tx = auth0_tx
        link(tx, tx.notes["alice_connect"], "alice-broker")
        jwt = tx.token("alice")
        r = tx.portfolio(jwt)
        assert r.status_code == 200, r.text
        assert r.json()["account"] == "alice-broker"
        seen = tx.broker.seen[-1]
        assert seen["active"] is True and seen["client_id"] == "agentward-vault", seen
        assert seen["authorization"].split(" ", 1)[1] in tx.provider.tokens()
        assert jwt not in seen["authorization"]
        assert not any(t in r.text for t in tx.provider.tokens()), "no provider token in the agent's answer"
        assert len(tx.tapped) == 2
        assert_auth0_dialect(tx.tapped[-1])
        assert tx.tapped[-1]["status"] == 200
        assert tx.tapped[-1]["issued_token_type"] == AUTH0_TOKEN_TYPE, "the vault answered in the Auth0 dialect"
        (vault,) = tx.vaults
        issued = sum(
            vault.metric("agentward_vault_exchanges_total", outcome=o) for o in ("issued_cached", "issued_refreshed")
        )
        assert issued == 1
        again = tx.portfolio(tx.token("alice"))
        assert again.status_code == 200 and again.json()["account"] == "alice-broker"
        assert len(tx.tapped) == 2, "the Auth0-dialect answer is cached by the gateway"
        # Cache hits reach the counter on the VM's next tick (every second).
        deadline = time.monotonic() + 5
        while tx.envoy.counter("agentward.exchange.cache_hit") < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tx.envoy.counter("agentward.exchange.cache_hit") >= 1

    def test_vault_refusing_the_gateways_credentials_answers_502(self, auth0_tx):
        tx = auth0_tx
        (vault,) = tx.vaults
        refused = vault.metric("agentward_vault_exchanges_total", outcome="invalid_client")
        forwarded = len(tx.broker.seen)
        gateway = tx.chain_gateway("chain-auth0-wrong-secret", client_secret="not-the-gateway-secret")
        r = requests.get(
            gateway.url + "/broker/portfolio", headers={"authorization": f"Bearer {tx.token('alice')}"}, timeout=15
        )
        body = json_error(r, 502)
        assert body["error"] == "server_error"
        assert body["reason"] == "vault_refused_gateway"
        assert "connect_url" not in body and "not-the-gateway-secret" not in r.text
        assert len(tx.broker.seen) == forwarded, "nothing reached the API"
        assert_auth0_dialect(tx.tapped[-1])
        assert (tx.tapped[-1]["status"], tx.tapped[-1]["error"]) == (401, "invalid_client")
        assert vault.metric("agentward_vault_exchanges_total", outcome="invalid_client") == refused + 1
        assert "token endpoint client authentication failed" in vault.log()
        assert gateway.counter("agentward.exchange.refused") == 1
