"""A local stand-in for an Entra ID tenant's OpenID endpoints, written for the tests: one HTTP
server on loopback answering

- `/{tenant}/v2.0/.well-known/openid-configuration` (issuer `{url}/{tenant}/v2.0`, or the
  `{tenantid}` template the common/organizations documents carry, `templated_issuer=True`),
- `/{tenant}/.well-known/openid-configuration` (v1.0: issuer `https://sts.windows.net/{tenant}/`,
  as the public cloud's),
- `/{tenant}/discovery/v2.0/keys` and `/{tenant}/discovery/keys` (the JWKS: `kty`, `use`, `kid`,
  `x5t`, `n`, `e` per key, as Entra publishes them),

with RS256 private keys it signs tokens with (`mint`), key rotation (`rotate`), fetch counters
and faults (`fail_status`, `stall`, `oversize_jwks`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT_ID = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
V1_ISSUER = "https://sts.windows.net/{tid}/"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(kid: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "use": "sig", "kid": kid, "x5t": kid,
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers.e.to_bytes(3, "big"))}


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    """A token put together by hand (for `alg: none`, HS256 and other forgeries)."""
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()),
                     b64url(signature)])


def forge_hs256(header: dict, claims: dict, secret: bytes) -> str:
    signing_input = (b64url(json.dumps(header).encode()) + "." +
                     b64url(json.dumps(claims).encode())).encode()
    return signing_input.decode() + "." + b64url(hmac.new(secret, signing_input, hashlib.sha256).digest())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (the validator's fetch timeout) is not an error of the tenant.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@dataclass
class Faults:
    fail_status: int | None = None  # answer every request with this status
    stall: float = 0.0  # seconds to wait before answering
    oversize_jwks: bool = False  # a JWKS padded past 256 KiB
    no_length: bool = False  # no content-length: the body ends when the connection closes


class EntraTenant:
    def __init__(self, tenant_id: str = TENANT_ID, templated_issuer: bool = False,
                 keys: int = 2):
        self.tenant_id = tenant_id
        self.templated_issuer = templated_issuer
        self.faults = Faults()
        self.lock = threading.Lock()
        self.signing: list[tuple[str, rsa.RSAPrivateKey]] = [(self._kid(), new_key())
                                                             for _ in range(keys)]
        self.counts = {"discovery": 0, "v1_discovery": 0, "jwks": 0}
        self.paths: list[str] = []
        self._stop = threading.Event()
        tenant = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                tenant._answer(self)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> EntraTenant:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> EntraTenant:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the tenant's documents -----------------------------------------------------------------

    @property
    def v2_issuer(self) -> str:
        return f"{self.url}/{self.tenant_id}/v2.0"

    @property
    def v1_issuer(self) -> str:
        return V1_ISSUER.format(tid=self.tenant_id)

    def _documents(self, path: str) -> tuple[str, dict] | None:
        base = f"/{self.tenant_id}"
        if path == f"{base}/v2.0/.well-known/openid-configuration":
            issuer = (f"{self.url}/{{tenantid}}/v2.0" if self.templated_issuer else self.v2_issuer)
            return "discovery", {
                "issuer": issuer, "jwks_uri": f"{self.url}{base}/discovery/v2.0/keys",
                "token_endpoint": f"{self.url}{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{self.url}{base}/oauth2/v2.0/authorize",
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"], "tenant_region_scope": "WW",
                "cloud_instance_name": "microsoftonline.com"}
        if path == f"{base}/.well-known/openid-configuration":
            return "v1_discovery", {
                "issuer": self.v1_issuer, "jwks_uri": f"{self.url}{base}/discovery/keys",
                "token_endpoint": f"{self.url}{base}/oauth2/token",
                "id_token_signing_alg_values_supported": ["RS256"]}
        if path in (f"{base}/discovery/v2.0/keys", f"{base}/discovery/keys"):
            with self.lock:
                keys = [jwk(kid, key) for kid, key in self.signing]
            document: dict[str, Any] = {"keys": keys}
            if self.faults.oversize_jwks:
                document["padding"] = "x" * (300 * 1024)
            return "jwks", document
        return None

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?")[0]
        with self.lock:
            self.paths.append(path)
        found = self._documents(path)
        if found is not None:
            with self.lock:
                self.counts[found[0]] += 1
        if self.faults.stall:
            self._stop.wait(self.faults.stall)
        status = self.faults.fail_status or (200 if found else 404)
        body = json.dumps(found[1] if found and status == 200 else {"error": "not_found"}).encode()
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json; charset=utf-8")
            if self.faults.no_length:
                handler.send_header("connection", "close")
                handler.close_connection = True
            else:
                handler.send_header("content-length", str(len(body)))
            handler.end_headers()
            for start in range(0, len(body), 16 * 1024):
                handler.wfile.write(body[start:start + 16 * 1024])
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- keys -----------------------------------------------------------------------------------

    @staticmethod
    def _kid() -> str:
        return b64url(uuid.uuid4().bytes)[:27]

    @property
    def kid(self) -> str:
        """The key tokens are signed with (the first published key)."""
        with self.lock:
            return self.signing[0][0]

    def private_key(self, kid: str | None = None) -> rsa.RSAPrivateKey:
        with self.lock:
            return dict(self.signing)[kid or self.signing[0][0]]

    def rotate(self, keep_previous: bool = False) -> str:
        """Publish a new key and sign with it from now on; the keys published so far are
        withdrawn, or all but the one signing until now is (`keep_previous`)."""
        kid = self._kid()
        with self.lock:
            self.signing = [(kid, new_key())] + (self.signing[:1] if keep_previous else [])
        return kid

    # -- tokens ---------------------------------------------------------------------------------

    def claims(self, version: str = "2.0", audience: str = "", **overrides: Any) -> dict[str, Any]:
        """What Entra puts in an app-only access token (client credentials / managed identity)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience, "iat": now - 300, "nbf": now - 300, "exp": now + 3600,
            "aio": "k2BgYDD8zXH3/ZoO1xoLqDUPM6hIAA==", "idp": self.v1_issuer,
            "oid": str(uuid.uuid4()), "rh": "0.AXEAv4j5cvGGr0GRqy180BHbRw.", "sub": str(uuid.uuid4()),
            "tid": self.tenant_id, "uti": b64url(uuid.uuid4().bytes)[:22], "ver": version,
        }
        if version == "2.0":
            claims.update(iss=self.v2_issuer, azp=str(uuid.uuid4()), azpacr="2", idtyp="app")
        else:
            claims.update(iss=self.v1_issuer, appid=str(uuid.uuid4()), appidacr="2")
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, claims: dict[str, Any], kid: str | None = None,
             key: rsa.RSAPrivateKey | None = None, **headers: Any) -> str:
        """An RS256 token signed with one of the tenant's keys (or `key`, named `kid`)."""
        kid = kid or self.kid
        key = key or self.private_key(kid)
        header = {"typ": "JWT", "kid": kid, **headers}
        if claims.get("ver") == "1.0":
            header.setdefault("x5t", kid)
        return jwt.encode(claims, key, algorithm="RS256", headers=header)
