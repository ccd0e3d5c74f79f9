"""The shipped Envoy configs are valid as shipped, the policy inside
jwt-identity.yaml is policies/stock-trade.json, and a bad policy stops Envoy
with a message that names the field. The gateway configs start without
Envoy's warnings, and the admin endpoint never shows the vault secret."""

import datetime
import json
import os

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stack import (
    CHAIN_CONFIG,
    DEMO_VAULT_SECRET,
    ENVOY_DIR,
    JWT_IDENTITY_CONFIG,
    ROOT,
    VAULT_SECRET_ENV,
    WASM_DIR,
    Envoy,
    EnvoyExited,
    default_ports,
    embedded_policies,
    free_port,
    policy_file,
    render,
    shipped_configs,
    validate,
)

PRODUCTION_CONFIG = ENVOY_DIR / "production/chain.yaml"


def self_signed(directory) -> None:
    """A throwaway certificate and key where the production config expects
    them (gateway.crt, gateway.key in `directory`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.example.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "gateway.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "gateway.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def production_ready(config: str, tmp_path) -> str:
    """The production config with its placeholders filled in: a throwaway
    certificate, the .wasm files of this build."""
    self_signed(tmp_path)
    assert "/etc/envoy/tls/" in config and "/etc/envoy/agentward/" in config
    config = config.replace("/etc/envoy/tls/", f"{tmp_path}/")
    return config.replace("/etc/envoy/agentward/", f"{WASM_DIR}/")


@pytest.mark.parametrize("config", shipped_configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_config_passes_envoy_validate(config, tmp_path):
    # As shipped, from the repository root: only the file is copied (the
    # production config gets a throwaway certificate and this build's .wasm).
    text = config.read_text()
    if config == PRODUCTION_CONFIG:
        text = production_ready(text, tmp_path)
    result = validate(text, tmp_path / config.name)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("config", [CHAIN_CONFIG, PRODUCTION_CONFIG], ids=lambda p: str(p.relative_to(ROOT)))
def test_vault_secret_comes_from_the_environment_and_is_required(config, tmp_path):
    text = config.read_text()
    for policy in embedded_policies(text):
        assert policy["vault"]["client_secret_env"] == VAULT_SECRET_ENV
        assert "client_secret" not in policy["vault"]
    assert f"host_env_keys: [{VAULT_SECRET_ENV}]" in text
    if config == PRODUCTION_CONFIG:
        text = production_ready(text, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != VAULT_SECRET_ENV}
    result = validate(text, tmp_path / "no-secret.yaml", env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "vault.client_secret_env" in output and VAULT_SECRET_ENV in output, output[-3000:]


@pytest.mark.parametrize(
    "config", [JWT_IDENTITY_CONFIG, CHAIN_CONFIG, PRODUCTION_CONFIG], ids=lambda p: str(p.relative_to(ROOT))
)
def test_gateway_configs_start_without_envoy_warnings_and_hide_the_secret(config, tmp_path):
    text = config.read_text()
    assert "address: 127.0.0.1, port_value: 9901" in text, "admin on loopback"
    for timeout in ("request_headers_timeout:", "request_timeout:", "stream_idle_timeout:"):
        assert timeout in text, timeout
    ports = default_ports(upstream=free_port(), idp=free_port(), vault=free_port())
    if config == PRODUCTION_CONFIG:
        text = production_ready(text, tmp_path)
        listener = "address: 0.0.0.0, port_value: 443 }"
        assert text.count(listener) == 1
        text = text.replace(listener, f"address: 127.0.0.1, port_value: {ports['listener']} }}")
    else:
        assert "address: 0.0.0.0" not in text, "the demo listens on loopback"
    envoy = Envoy(config.stem + "-start", render(text, ports), tmp_path, ports)
    try:
        envoy.start(timeout=60)
        dump = requests.get(envoy.admin + "/config_dump", timeout=10).text
        assert "wasm" in dump
        assert DEMO_VAULT_SECRET not in dump
    finally:
        envoy.stop()
    log = envoy.log()
    assert "no configured limit" not in log, log[-3000:]
    assert "deprecated" not in log.lower(), log[-3000:]


def test_embedded_policy_is_the_stock_trade_policy():
    shipped = policy_file(ROOT / "policies/stock-trade.json")
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
