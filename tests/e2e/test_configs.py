"""The shipped Envoy configs are valid as shipped, the policy inside
jwt-identity.yaml is policies/stock-trade.json, and a bad policy stops Envoy
with a message that names the field."""

import json

import pytest

from stack import (
    JWT_IDENTITY_CONFIG,
    ROOT,
    Envoy,
    EnvoyExited,
    default_ports,
    embedded_policies,
    free_port,
    render,
    shipped_configs,
    validate,
)


@pytest.mark.parametrize("config", shipped_configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_config_passes_envoy_validate(config, tmp_path):
    # As shipped, from the repository root: only the file is copied.
    result = validate(config.read_text(), tmp_path / config.name)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_embedded_policy_is_the_stock_trade_policy():
    shipped = json.loads((ROOT / "policies/stock-trade.json").read_text())
    assert embedded_policies(JWT_IDENTITY_CONFIG.read_text()) == [shipped]


def bad_policy() -> dict:
    policy = embedded_policies(JWT_IDENTITY_CONFIG.read_text())[0]
    policy["issuers"][0]["algorithms"] = ["HS256"]
    return policy


def test_bad_policy_fails_validate_naming_the_field(tmp_path):
    config = render(JWT_IDENTITY_CONFIG.read_text(), default_ports(), bad_policy())
    result = validate(config, tmp_path / "bad.yaml")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "issuers[0].algorithms[0]" in output, output[-3000:]


def test_bad_policy_stops_envoy_from_starting_and_logs_the_field(tmp_path):
    ports = default_ports(upstream=free_port(), idp=free_port())
    config = render(JWT_IDENTITY_CONFIG.read_text(), ports, bad_policy())
    envoy = Envoy("bad-policy", config, tmp_path, ports)
    try:
        with pytest.raises(EnvoyExited) as exited:
            envoy.start(timeout=30)
        assert exited.value.returncode != 0
    finally:
        envoy.stop()
    log = envoy.log()
    assert "agentward: invalid policy at `issuers[0].algorithms[0]`" in log, log[-3000:]
    assert "HS256" in log
