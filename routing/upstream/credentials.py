"""Upstream credentials: a key header, or an Entra token from the app's managed identity.

One `azure-identity` credential per identity (client id), built on first use and kept for the
process; one cached token per (identity, scope), refreshed five minutes before it expires under
a lock so that a burst of requests on a cold instance asks the identity endpoint once.
`azure.identity` is imported lazily: key-only deployments never pay for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from routing.errors import GatewayError
from routing.telemetry.redaction import SECRETS, TOKENS_KEPT_PER_SLOT
from routing.config.settings import Route

log = logging.getLogger("routing.upstream.credentials")
REFRESH_MARGIN_SECONDS = 300


class CachedToken:
    """An access token for one (identity, scope), refreshed before expiry.

    One fetch at a time, shared by every waiting request and shielded from their cancellation:
    a caller that times out or goes away does not abort the fetch the others wait for."""

    def __init__(self, credential: Any, scope: str):
        self._credential = credential
        self._scope = scope
        self._token: str | None = None
        self._expires_on = 0.0
        self._refresh: asyncio.Future[str] | None = None

    async def get(self) -> str:
        if self._token is not None and self._expires_on - time.time() > REFRESH_MARGIN_SECONDS:
            return self._token
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._refresh)

    async def _fetch(self) -> str:
        access = await self._credential.get_token(self._scope)
        SECRETS.add(("token", id(self), self._scope), access.token, keep=TOKENS_KEPT_PER_SLOT)
        self._token, self._expires_on = access.token, float(access.expires_on)
        return access.token


class Credentials:
    """Auth headers for upstream requests, per route."""

    def __init__(self, kind: str = "managed-identity"):
        self._kind = kind  # GATEWAY_CREDENTIAL
        self._credentials: dict[str | None, Any] = {}
        self._tokens: dict[tuple[str | None, str], CachedToken] = {}

    @staticmethod
    def key_header(route: Route) -> tuple[str, str]:
        key = route.api_key.get_secret_value() if route.api_key else ""
        return ("api-key", key) if route.key_header == "api-key" else ("authorization", f"Bearer {key}")

    async def token_header(self, route: Route) -> tuple[str, str]:
        """`Authorization: Bearer <token>` from the route's managed identity."""
        cache_key = (route.client_id, route.scope)
        token = self._tokens.get(cache_key)
        if token is None:
            token = self._tokens[cache_key] = CachedToken(self._credential(route.client_id), route.scope)
        try:
            return "authorization", f"Bearer {await token.get()}"
        except Exception as exc:  # azure-identity raises several types; none carries a token
            identity = f"user-assigned identity {route.client_id}" if route.client_id else "system-assigned identity"
            log.error("route %s: could not get a token for %s (%s) from the %s: %s",
                      route.id, route.scope, type(exc).__name__, identity, exc)
            raise GatewayError(502, f"The gateway could not get a managed-identity token for route "
                               f"'{route.id}'; see the gateway logs.", code="upstream_auth_failed") from None

    def _credential(self, client_id: str | None) -> Any:
        credential = self._credentials.get(client_id)
        if credential is None:
            if self._kind == "default":
                from azure.identity.aio import DefaultAzureCredential
                credential = DefaultAzureCredential(managed_identity_client_id=client_id)
            else:
                from azure.identity.aio import ManagedIdentityCredential
                credential = ManagedIdentityCredential(client_id=client_id)
            self._credentials[client_id] = credential
        return credential

    async def aclose(self) -> None:
        for credential in self._credentials.values():
            await credential.close()
        self._credentials.clear()
        self._tokens.clear()
