"""Inbound keys (GATEWAY_API_KEYS): `Authorization: Bearer <key>` or `api-key: <key>`.

Compared in constant time against every configured key, so timing says nothing about which
key, or how much of one, matched. Presented keys are never logged or echoed.
"""

from __future__ import annotations

import hmac

from routing.errors import GatewayError
from routing.config.settings import GatewayConfig


class InboundAuth:
    def __init__(self, config: GatewayConfig):
        self.required = config.auth == "keys"
        self._keys = [k.get_secret_value().encode() for k in config.api_keys]

    def check(self, headers) -> None:
        if not self.required:
            return
        presented = _presented_key(headers)
        if presented is None:
            raise GatewayError(401, "Missing API key. Send it as 'Authorization: Bearer <key>' or "
                               "'api-key: <key>'.", code="missing_api_key")
        candidate = presented.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(key, candidate)
        if not matched:
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")


def _presented_key(headers) -> str | None:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("api-key")
    return api_key.strip() if api_key and api_key.strip() else None
