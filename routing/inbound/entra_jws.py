"""Compact JWS (RFC 7515 §7.1) parsed strictly, for the Entra validator (routing/inbound/entra.py),
and `InvalidToken`, the error every check of a token raises.

Strict: exactly three base64url segments without padding, each in its canonical encoding (so a
token has one spelling and one cache entry); `alg` exactly RS256; no JWS extensions; a `kid`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

BASE64URL = re.compile(r"[A-Za-z0-9_-]+\Z")  # base64url, no padding (RFC 7515)
MAX_ID_CHARS = 256  # a `kid`, `sub` or the like: Entra's are far shorter


class InvalidToken(Exception):
    """The token is not accepted. `reason` is short and safe to show the caller."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_jws(token: str) -> tuple[dict, dict, bytes, bytes]:
    """Header, claims (unverified until the signature is checked), the signing input and the
    signature of a compact JWS (RFC 7515 §7.1), parsed strictly."""
    parts = token.split(".")
    if len(parts) != 3 or not BASE64URL.match(parts[0]):
        raise InvalidToken("malformed token")  # also JWE (5 parts): encrypted tokens unsupported
    header = _b64json(parts[0])
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    if header.get("alg") != "RS256":  # not none, not HS256 keyed with the public key, not ES*/PS*
        raise InvalidToken("unsupported algorithm")
    if "crit" in header or "b64" in header:  # no JWS extensions (RFC 7797 unencoded payloads)
        raise InvalidToken("unsupported token header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_ID_CHARS:
        raise InvalidToken("missing key id")
    # `jku`, `x5u`, `jwk` and `x5c` headers are ignored: keys come only from the tenant's JWKS.
    if not BASE64URL.match(parts[1]) or not BASE64URL.match(parts[2]):
        raise InvalidToken("malformed token")
    claims = _b64json(parts[1])
    if not isinstance(claims, dict):
        raise InvalidToken("malformed token")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), _b64decode(parts[2])


def _b64decode(segment: str) -> bytes:
    """Strict base64url without padding: the alphabet (`BASE64URL`) and a canonical encoding."""
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode():
        raise InvalidToken("malformed token")
    return data


def _b64json(segment: str) -> Any:
    try:
        return json.loads(_b64decode(segment))
    except (ValueError, RecursionError):
        raise InvalidToken("malformed token") from None
