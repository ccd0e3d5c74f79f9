"""examples/stock-trade/spin.toml, read as Spin reads it, against what the
end-to-end tests and `cargo xtask demo --spin` run in `host-test serve`: the
same four components in the same order, on policies/stock-trade-spin.json,
each given the variables its part of the policy reads. (No Spin CLI here:
this is what stands in for `spin up` checking the manifest.)"""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import requests

from stack import HOST_TEST, ROOT, SPIN_WASM_DIR

MANIFEST = ROOT / "examples/stock-trade/spin.toml"
POLICY = ROOT / "policies/stock-trade-spin.json"
CHAIN = ["jwt-identity", "scope-fga", "ciba-hold", "token-exchange"]


def _manifest() -> dict:
    return tomllib.loads(MANIFEST.read_text())


def resolve(template: str, variables: dict[str, str]) -> str:
    """`{{ name }}` replaced by the application variable's value, as Spin
    resolves `allowed_outbound_hosts` and component variables."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        assert name in variables, f"{template}: `{name}` has no value"
        return variables[name]

    return re.sub(r"\{\{\s*([a-z0-9_]+)\s*\}\}", value, template)


def defaults(manifest: dict) -> dict[str, str]:
    return {name: v["default"] for name, v in manifest["variables"].items() if "default" in v}


def test_only_jwt_identity_is_public_and_the_chain_runs_in_order():
    m = _manifest()
    public = [t["component"] for t in m["trigger"]["http"] if t["route"] != {"private": True}]
    assert public == ["jwt-identity"]
    assert sorted(t["component"] for t in m["trigger"]["http"]) == sorted(CHAIN)
    order, name = [], "jwt-identity"
    while name:
        order.append(name)
        component = m["component"][name]
        nxt = component["variables"]["next"]
        # Every hop a component makes is allowed to it.
        assert nxt in component["allowed_outbound_hosts"], name
        name = nxt.removeprefix("http://").removesuffix(".spin.internal") if nxt.endswith(".spin.internal") else None
    assert order == CHAIN
    assert resolve(m["component"]["token-exchange"]["variables"]["next"], defaults(m)) == "http://127.0.0.1:8080"


def test_where_the_services_live_is_a_variable_and_the_allow_lists_follow_it():
    """The IdP, vault and API origins are application variables (the demo's
    addresses as defaults): each component's `allowed_outbound_hosts` and
    the cluster it calls are the same template, so a deployment that moves
    the vault (SPIN_VARIABLE_VAULT_ORIGIN) moves both; every entry resolves
    to Spin's `scheme://host[:port]` form."""
    m = _manifest()
    moved = dict(defaults(m), vault_origin="https://vault.internal.example", idp_origin="https://idp.example")
    for name in CHAIN:
        component = m["component"][name]
        hosts = [resolve(h, moved) for h in component["allowed_outbound_hosts"]]
        for host in hosts:
            assert re.fullmatch(r"(https?)://[a-z0-9.*-]+(:\d+)?", host), f"{name}: {host}"
        for var, value in component["variables"].items():
            if var.startswith("cluster_") or var == "next":
                assert resolve(value, moved) in hosts, f"{name}: {var}"
        assert not any("127.0.0.1:8787" in h or "127.0.0.1:8081" in h for h in hosts), (name, hosts)
    assert resolve("{{ api_origin }}", defaults(m)) == "http://127.0.0.1:8080"


def test_each_component_gets_the_policy_the_proof_key_and_what_its_section_reads():
    m = _manifest()
    policy = json.loads(POLICY.read_text())
    needs = {
        "jwt-identity": [f"cluster_{policy['issuers'][0]['jwks_cluster']}"],
        "scope-fga": [f"cluster_{policy['fga']['cluster']}", policy["fga"]["preshared_key_env"].lower()],
        "ciba-hold": [
            f"cluster_{policy['approval']['cluster']}",
            policy["approval"]["client_secret_env"].lower(),
            policy["approval"]["handle_key_env"].lower(),
        ],
        "token-exchange": [f"cluster_{policy['vault']['cluster']}", policy["vault"]["client_secret_env"].lower()],
    }
    declared = set(m["variables"])
    for name in CHAIN:
        component = m["component"][name]
        variables = component["variables"]
        assert variables["policy"] == "{{ policy }}" and variables["proof_key"] == "{{ proof_key }}", name
        for var in needs[name]:
            assert var in variables, f"{name} lacks {var}"
            if var.startswith("cluster_"):
                assert variables[var] in component["allowed_outbound_hosts"], f"{name}: {var}"
        # Secrets come from the app's variables, never inline.
        for var, value in variables.items():
            if "{{" in value:
                assert value.strip("{} ") in declared, f"{name}.{var}"
        # jwt-identity keeps the issuer's keys in the app's key-value store,
        # scope-fga its FGA decisions, ciba-hold a 2025-11-25 MCP call's
        # pending approval.
        stores = ["default"] if name in ("jwt-identity", "scope-fga", "ciba-hold") else []
        assert component.get("key_value_stores", []) == stores, name
        assert component["source"] == f"../../target/wasm32-wasip2/spin/spin_{name.replace('-', '_')}.wasm"


def test_the_spin_policy_is_the_three_envoy_policies_together():
    """policies/stock-trade-spin.json: every route of envoy/chain.yaml,
    envoy/ciba-hold.yaml and envoy/scope-fga.yaml, with the section each
    plugin needs."""
    from stack import ENVOY_DIR, embedded_policies, policy_file

    spin = policy_file(POLICY)
    chain = policy_file(ROOT / "policies/stock-trade-chain.json")
    approval = policy_file(ROOT / "policies/stock-trade-approval.json")
    fga = embedded_policies((ENVOY_DIR / "scope-fga.yaml").read_text())[0]
    for other, section in [(chain, "vault"), (approval, "approval"), (fga, "fga")]:
        assert spin[section] == other[section]
        assert spin["issuers"] == other["issuers"]
        for route in other["routes"]:
            same = [r for r in spin["routes"] if r["match"] == route["match"]]
            assert same, route["match"]
            for key, value in route.items():
                assert same[0].get(key) == value, (route["match"], key)


def test_a_component_reaches_only_its_allowed_outbound_hosts(start_gateway, upstream_port):
    """`host-test serve` enforces `allowed_outbound_hosts` as Spin does (the
    other Spin tests run with the manifest's lists): jwt-identity without
    the IdP in its list cannot fetch the JWKS, so a good token gets 503, and
    the runner says which call it refused."""
    if not (HOST_TEST.exists() and (SPIN_WASM_DIR / "spin_jwt_identity.wasm").exists()):
        pytest.skip("the Spin build is missing: run `cargo xtask build`")
    gw = start_gateway(
        "spin-outbound",
        host="spin",
        allowed_outbound={"jwt-identity": [f"http://127.0.0.1:{upstream_port}"]},
    )
    r = requests.get(gw.url + "/portfolio", headers={"authorization": f"Bearer {gw.token()}"}, timeout=10)
    assert r.status_code == 503, r.text
    assert "component `jwt-identity` may not reach http://127.0.0.1:" in gw.envoy.log()
