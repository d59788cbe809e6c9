"""Emulator access tokens: JWT-shaped, HS256, stdlib only.

The identity emulator issues them and the Azure OpenAI / Foundry emulators verify them, so a test
exercises the real ``azure-identity`` → gateway → upstream path without Entra. Real Entra tokens
are RS256; the shape (three base64url parts, ``aud``/``appid``/``oid``/``exp`` claims) is what
matters to code that only passes them along.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

DEFAULT_TOKEN_SECRET = "emulator-token-secret"
COGNITIVE_SERVICES_AUDIENCE = "https://cognitiveservices.azure.com"
# Object id of the emulated system-assigned identity (a user-assigned one is named by its client id).
SYSTEM_ASSIGNED_CLIENT_ID = "5e29463d-71da-4fe0-8e69-999b57db23b0"
EMULATOR_TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"

_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, signing_input: bytes) -> str:
    return _b64url(hmac.new(secret.encode("utf-8"), signing_input, hashlib.sha256).digest())


def normalize_audience(value: str) -> str:
    """``https://x/.default`` (a scope), ``https://x/`` and ``https://x`` (resources) name one audience."""
    value = value.strip()
    if value.endswith("/.default"):
        value = value[: -len("/.default")]
    return value.rstrip("/")


def issue_token(
    secret: str = DEFAULT_TOKEN_SECRET,
    audience: str = COGNITIVE_SERVICES_AUDIENCE,
    client_id: str = SYSTEM_ASSIGNED_CLIENT_ID,
    lifetime: int = 3600,
    *,
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "aud": normalize_audience(audience),
        "iss": f"https://sts.windows.net/{EMULATOR_TENANT_ID}/",
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime),
        "appid": client_id,
        "oid": client_id,
        "sub": client_id,
        "tid": EMULATOR_TENANT_ID,
        "idtyp": "app",
    }
    header = _b64url(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    return f"{header}.{payload}.{_sign(secret, signing_input)}"


def verify_token(secret: str, token: str, audience: str = COGNITIVE_SERVICES_AUDIENCE) -> dict[str, Any] | None:
    """Claims when the signature, audience and expiry check out, else None (never raises)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    if not hmac.compare_digest(_sign(secret, signing_input), parts[2]):
        return None
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except ValueError:
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("aud"), str):
        return None
    if normalize_audience(claims["aud"]) != normalize_audience(audience):
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= time.time():
        return None
    return claims
