"""Helpers of `cargo xtask bench` for the token-exchange measurements.

    python exchange.py prepare --dir target/bench --vault-port P --peer-url URL
        From DIR/policy.json and DIR/jwks.json (written by examples/stock-trade/
        idp.py bench-tokens) and the first token of DIR/tokens.txt, writes:
          exchange-policy.json  the bench policy with a `vault` section and
                                `connection: stocktrade` on GET /portfolio
          vault.toml            the vault's configuration: the bench key inline
                                as its issuer, the gateway client, the
                                `stocktrade` connection at the oidc-provider peer
          vault-exchange.lua    a wrk script: the gateway's RFC 8693 exchange
                                for alice (Basic client authentication)
          vault-exchange.http   the same request as raw HTTP/1.1 bytes, for
                                the paced (fixed-rate) latency windows

    python exchange.py link --vault URL --dir target/bench
        Links alice's `stocktrade` account without a browser, as the vault's
        tests do: the gateway's exchange answers with a connect_url; open it,
        post the vault's confirmation form (Continue), follow the provider's
        redirects, log in and consent at /interaction/:uid?account=alice, back
        to the vault's callback; then checks one exchange answers 200.

Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import html
import http.client
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote, urlencode, urljoin, urlsplit

CONNECTION = "stocktrade"
CLIENT_ID = "gateway"
CLIENT_SECRET = "bench-gateway-secret"
PEER_CLIENT_ID = "vault"
PEER_CLIENT_SECRET = "vault-secret"
ACCOUNT = "alice"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def toml_value(value) -> str:
    """A JSON value as a TOML value (inline tables and arrays)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        # JSON string escapes of ASCII text are valid TOML basic strings.
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = []
        for k, v in value.items():
            key = k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)
            pairs.append(f"{key} = {toml_value(v)}")
        return "{ " + ", ".join(pairs) + " }"
    raise ValueError(f"no TOML form for {value!r}")


def first_token(out: Path) -> str:
    with open(out / "tokens.txt") as f:
        return f.readline().strip()


def exchange_body(token: str) -> str:
    """The form the token-exchange plugin sends (RFC 8693, no scope: the
    connection's defaults)."""
    return urlencode(
        {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "resource": CONNECTION,
        }
    )


def basic_auth() -> str:
    # RFC 6749 §2.3.1: each part form-encoded, then base64.
    credentials = f"{quote(CLIENT_ID, safe='')}:{quote(CLIENT_SECRET, safe='')}"
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def prepare(out: Path, vault_port: int, peer_url: str) -> None:
    policy = json.loads((out / "policy.json").read_text())
    routes = [r for r in policy.get("routes", []) if r.get("match", {}).get("path") == "/portfolio"]
    if not routes:
        sys.exit("policy.json has no GET /portfolio route")
    for route in routes:
        route["exchange"] = {"connection": CONNECTION}
    policy["vault"] = {"cluster": "vault", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    (out / "exchange-policy.json").write_text(json.dumps(policy, indent=2))

    issuer = policy["issuers"][0]
    jwks = json.loads((out / "jwks.json").read_text())
    vault = f"http://127.0.0.1:{vault_port}"
    config = f"""# Written by envoy/bench/exchange.py for cargo xtask bench.
listen = "127.0.0.1:{vault_port}"
public_url = "{vault}"
database_url = {toml_value(str((out / "vault.db").resolve()))}
log_format = "text"
refresh_margin_seconds = 30
upstream_timeout_seconds = 5

[[issuers]]
issuer = {toml_value(issuer["issuer"])}
audiences = {toml_value(issuer["audiences"])}
algorithms = ["ES256"]
jwks = {toml_value(jwks)}

[[clients]]
client_id = {toml_value(CLIENT_ID)}
client_secret = {toml_value(CLIENT_SECRET)}

[connections.{CONNECTION}]
authorize_url = "{peer_url}/auth"
token_url = "{peer_url}/token"
client_id = {toml_value(PEER_CLIENT_ID)}
client_secret = {toml_value(PEER_CLIENT_SECRET)}
scopes = ["openid", "offline_access", "stocks:read"]
token_endpoint_auth = "client_secret_basic"
authorize_params = {{ prompt = "consent" }}
"""
    (out / "vault.toml").write_text(config)

    lua = f"""-- Written by envoy/bench/exchange.py: the gateway's token exchange for alice.
wrk.method = "POST"
wrk.path = "/oauth/token"
wrk.body = "{exchange_body(first_token(out))}"
wrk.headers["content-type"] = "application/x-www-form-urlencoded"
wrk.headers["accept"] = "application/json"
wrk.headers["authorization"] = "{basic_auth()}"
"""
    (out / "vault-exchange.lua").write_text(lua)
    body = exchange_body(first_token(out))  # ASCII: its length is its byte count
    raw = (
        f"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1:{vault_port}\r\n"
        "content-type: application/x-www-form-urlencoded\r\naccept: application/json\r\n"
        f"authorization: {basic_auth()}\r\ncontent-length: {len(body)}\r\n\r\n{body}"
    )
    (out / "vault-exchange.http").write_text(raw)


def request(url: str, method: str = "GET", headers: dict | None = None, body: str | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def keep_cookies(cookies: dict[str, str], response) -> None:
    for header in response.headers.get_all("set-cookie") or []:
        name, _, value = header.split(";", 1)[0].partition("=")
        if value:
            cookies[name.strip()] = value
        else:
            cookies.pop(name.strip(), None)


def link(vault: str, out: Path) -> None:
    token = first_token(out)
    # One jar for the vault and the provider, as a browser on 127.0.0.1 has
    # (cookies ignore ports): the vault's forms and callback want their cookies.
    cookies: dict[str, str] = {}
    exchange_headers = {"content-type": "application/x-www-form-urlencoded", "authorization": basic_auth()}
    response, body = request(f"{vault}/oauth/token", method="POST", headers=exchange_headers, body=exchange_body(token))
    if response.status != 400:
        sys.exit(f"linking: expected the exchange to ask for a link, got {response.status}: {body[:300]!r}")
    connect_url = json.loads(body)["connect_url"]
    # The vault's confirmation page, then its form with Continue.
    response, body = request(connect_url)
    keep_cookies(cookies, response)
    page = body.decode()
    form = re.search(r'<form method="post" action="([^"]*)"', page)
    if response.status != 200 or not form:
        sys.exit(f"linking: expected the vault's confirmation page, got {response.status}: {body[:300]!r}")
    fields = {n: html.unescape(re.search(rf'name="{n}" value="([^"]*)"', page).group(1)) for n in ("ticket", "csrf_token")}
    url = html.unescape(form.group(1))
    response, body = request(
        url,
        method="POST",
        headers={"content-type": "application/x-www-form-urlencoded", "cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
        body=urlencode(dict(fields, decision="allow")),
    )
    for _ in range(12):
        keep_cookies(cookies, response)
        if response.status not in (302, 303, 307):
            sys.exit(f"linking: expected a redirect from {url}, got {response.status}: {body[:300]!r}")
        url = urljoin(url, response.getheader("location"))
        parts = urlsplit(url)
        if parts.path.startswith("/interaction/"):
            url += ("&" if parts.query else "?") + f"account={ACCOUNT}"
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        response, body = request(url, headers={"cookie": cookie} if cookie else {})
        if parts.path == "/connect/callback":
            if response.status != 200:
                sys.exit(f"linking: the vault's callback answered {response.status}: {body[:300]!r}")
            break
    else:
        sys.exit("linking did not reach the vault's callback")

    response, body = request(f"{vault}/oauth/token", method="POST", headers=exchange_headers, body=exchange_body(token))
    if response.status != 200:
        sys.exit(f"exchange after linking answered {response.status}: {body[:300]!r}")
    answer = json.loads(body)
    print(f"linked {ACCOUNT}'s {CONNECTION} account; upstream token expires in {answer.get('expires_in')} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--vault-port", required=True, type=int)
    p.add_argument("--peer-url", required=True)
    l = sub.add_parser("link")
    l.add_argument("--dir", required=True, type=Path)
    l.add_argument("--vault", required=True)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.dir, args.vault_port, args.peer_url.rstrip("/"))
    else:
        link(args.vault.rstrip("/"), args.dir)


if __name__ == "__main__":
    main()
