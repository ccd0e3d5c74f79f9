"""An identity provider stand-in: signing keys, a JWKS and token minting.

Enough of an OpenID provider for the gateway to verify tokens against: it
serves its public keys (ES256, RS256 and EdDSA) as a JWKS, rotates them on
request, and mints access tokens. It is a library (tests mint tokens in
process) and a CLI.

HTTP:
    GET  /.well-known/jwks.json               the public keys
    GET  /.well-known/openid-configuration    issuer and jwks_uri
    POST /rotate   {"alg": "ES256"}           adds a key with a new kid; it signs from now on
    POST /mint     {"claims": {...}, "alg": "ES256", "ttl": 300}
                                              a signed token (a stand-in for a login flow)

CLI:
    python idp.py serve --port 8081
    python idp.py mint --url http://127.0.0.1:8081 --claims '{"sub": "alice", "aud": "..."}'
    python idp.py bench-tokens --out DIR --count 50000 --aud https://api.stock-trade.example
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

DEFAULT_ISSUER = "https://idp.stock-trade.example/"
ALGORITHMS = ("ES256", "RS256", "EdDSA")


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: object

    def public_jwk(self) -> dict:
        public = self.private.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        return dict(jwk, kid=self.kid, alg=self.alg, use="sig")


def new_private_key(alg: str):
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"no key type for {alg}")


class Idp:
    """Keys and minting. Thread-safe: the HTTP server and tests share it."""

    def __init__(self, issuer: str = DEFAULT_ISSUER, algorithms=ALGORITHMS):
        self.issuer = issuer
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = []
        self.jwks_requests = 0
        for alg in algorithms:
            self.add_key(alg)

    def add_key(self, alg: str = "ES256") -> SigningKey:
        """A new key with a fresh kid; it becomes the signing key for `alg`."""
        key = SigningKey(f"{alg.lower()}-{uuid.uuid4().hex[:8]}", alg, new_private_key(alg))
        with self._lock:
            self._keys.append(key)
        return key

    rotate = add_key

    def key(self, alg: str = "ES256") -> SigningKey:
        """The current (newest) signing key for `alg`."""
        with self._lock:
            for key in reversed(self._keys):
                if key.alg == alg:
                    return key
        raise KeyError(f"no {alg} key")

    def jwks(self) -> dict:
        with self._lock:
            return {"keys": [k.public_jwk() for k in self._keys]}

    def claims(self, claims: dict | None = None, ttl: int = 300) -> dict:
        """Default claims (iss, iat, nbf, exp, jti) overlaid with `claims`; a
        claim given as None is left out."""
        now = int(time.time())
        base = {"iss": self.issuer, "iat": now, "nbf": now, "exp": now + ttl, "jti": uuid.uuid4().hex}
        base.update(claims or {})
        return {k: v for k, v in base.items() if v is not None}

    def mint(
        self,
        claims: dict | None = None,
        alg: str = "ES256",
        ttl: int = 300,
        key: SigningKey | None = None,
        headers: dict | None = None,
    ) -> str:
        """A signed token. `key` defaults to the current key for `alg`'s key
        type; `alg` may differ from the key's own (to test allow-lists)."""
        key = key or self.key(_key_alg(alg))
        header = {"kid": key.kid, "typ": "JWT"}
        header.update(headers or {})
        header = {k: v for k, v in header.items() if v is not None}
        return jwt.encode(self.claims(claims, ttl), key.private, algorithm=alg, headers=header)

    def serve(self, port: int = 0, host: str = "127.0.0.1", quiet: bool = True) -> ThreadingHTTPServer:
        """Serves the HTTP endpoints from a background thread; returns the server
        (`server.server_port`, `server.shutdown()`)."""
        server = make_server(self, port, host, quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _key_alg(alg: str) -> str:
    """Which of our key types signs `alg`."""
    if alg.startswith(("RS", "PS")):
        return "RS256"
    if alg == "EdDSA":
        return "EdDSA"
    return alg if alg in ("ES256", "ES384") else "ES256"


class IdpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stock-trade-idp/1"
    idp: Idp
    quiet = True

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self) -> dict:
        length = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/.well-known/jwks.json":
            self.idp.jwks_requests += 1
            self._answer(200, self.idp.jwks())
        elif path == "/.well-known/openid-configuration":
            issuer = self.idp.issuer.rstrip("/")
            self._answer(200, {"issuer": self.idp.issuer, "jwks_uri": f"{issuer}/.well-known/jwks.json"})
        elif path == "/healthz":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error": "not_found"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._json_body()
            if path == "/rotate":
                key = self.idp.rotate(body.get("alg", "ES256"))
                self._answer(200, {"kid": key.kid, "alg": key.alg})
            elif path == "/mint":
                token = self.idp.mint(body.get("claims"), body.get("alg", "ES256"), int(body.get("ttl", 300)))
                self._answer(200, {"access_token": token, "token_type": "Bearer"})
            else:
                self._answer(404, {"error": "not_found"})
        except (ValueError, KeyError, TypeError) as e:
            self._answer(400, {"error": "invalid_request", "error_description": str(e)})

    def log_message(self, format: str, *args) -> None:
        if not self.quiet:
            sys.stderr.write("idp: " + (format % args) + "\n")


def make_server(idp: Idp, port: int = 0, host: str = "127.0.0.1", quiet: bool = True) -> ThreadingHTTPServer:
    handler = type("Handler", (IdpHandler,), {"idp": idp, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def write_bench_tokens(out: Path, count: int, aud: str, issuer: str = DEFAULT_ISSUER, policy: Path | None = None) -> None:
    """For `cargo xtask bench`: `jwks.json` (one ES256 key), `tokens.txt`
    (`count` distinct ES256 tokens, one a line, valid for a day) and, from
    `policy`, `policy.json`: that policy with the key inline and `aud` as its
    resource and audience."""
    idp = Idp(issuer, algorithms=("ES256",))
    out.mkdir(parents=True, exist_ok=True)
    (out / "jwks.json").write_text(json.dumps(idp.jwks(), separators=(",", ":")))
    if policy:
        document = json.loads(policy.read_text())
        document["resource"] = aud
        first = document["issuers"][0]
        for field in ("jwks_uri", "jwks_cluster"):
            first.pop(field, None)
        first.update(issuer=issuer, audiences=[aud], jwks=idp.jwks())
        document["issuers"] = [first]
        (out / "policy.json").write_text(json.dumps(document, indent=2))
    claims = {"sub": "alice", "aud": aud, "azp": "stock-agent", "scope": "portfolio:read trade"}
    with open(out / "tokens.txt", "w") as f:
        for _ in range(count):
            f.write(idp.mint(claims, ttl=86400) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the JWKS, /rotate and /mint")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8081)
    serve.add_argument("--issuer", default=DEFAULT_ISSUER)
    serve.add_argument("--quiet", action="store_true")
    mint = sub.add_parser("mint", help="ask a running IdP for a token")
    mint.add_argument("--url", default="http://127.0.0.1:8081")
    mint.add_argument("--claims", default="{}", help="JSON object of claims")
    mint.add_argument("--alg", default="ES256")
    mint.add_argument("--ttl", type=int, default=300)
    bench = sub.add_parser("bench-tokens", help="a JWKS and many distinct tokens for the benchmark")
    bench.add_argument("--out", required=True, type=Path)
    bench.add_argument("--count", type=int, default=50000)
    bench.add_argument("--aud", required=True)
    bench.add_argument("--issuer", default=DEFAULT_ISSUER)
    bench.add_argument("--policy", type=Path, help="a policy to write with the bench key inline")
    args = parser.parse_args()

    if args.command == "serve":
        server = make_server(Idp(args.issuer), args.port, args.host, args.quiet)
        print(f"idp: {args.issuer} serving on http://{args.host}:{server.server_port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    elif args.command == "mint":
        import requests

        body = {"claims": json.loads(args.claims), "alg": args.alg, "ttl": args.ttl}
        answer = requests.post(args.url.rstrip("/") + "/mint", json=body, timeout=10)
        answer.raise_for_status()
        print(answer.json()["access_token"])
    else:
        write_bench_tokens(args.out, args.count, args.aud, args.issuer, args.policy)


if __name__ == "__main__":
    main()
