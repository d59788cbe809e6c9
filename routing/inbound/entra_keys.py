"""The tenant's signing keys and token issuers, for the Entra validator (routing/inbound/entra.py).

Read from the tenant's OpenID configuration (`{authority}/{tenant}/v2.0/.well-known/openid-
configuration`: the v2.0 issuer and `jwks_uri`), the JWKS it names, and, only once a v1.0 token
arrives, the v1.0 configuration (`{authority}/{tenant}/.well-known/openid-configuration`),
whose `issuer` v1.0 tokens carry.

Keys rotate: "a reasonable frequency to check for updates ... is every 24 hours" (Microsoft's
`access-tokens.md`). Here: on a token naming an unknown `kid` (rate-limited, below) and, in the
background while the current keys serve, when the key set is over 24 h old.

Bounds: documents over 256 KiB, slower than the fetch timeout, redirected or not JSON are a
failed fetch; at most 64 keys are kept; an unknown `kid` refreshes the keys at most once per
`refresh_interval` (5 min) per validator, and concurrent fetches are coalesced into one; after a
failed first load, fetches are retried no sooner than `failure_backoff`; a failed refresh keeps
the last good keys.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from routing.inbound.entra_jws import BASE64URL, MAX_ID_CHARS, InvalidToken

if TYPE_CHECKING:
    import aiohttp

    from routing.inbound.entra import Counters

# The validator's logger: operators filter on one name for everything Entra.
log = logging.getLogger("routing.inbound.entra")

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_KEYS = 64
MIN_KEY_BITS, MAX_KEY_BITS = 2048, 8192


class KeysUnavailable(InvalidToken):
    """The tenant's OpenID configuration or keys could not be read (answer 503, not 401)."""

    def __init__(self, reason: str = "signing keys unavailable"):
        super().__init__(reason)


class _FetchError(Exception):
    pass


@dataclass
class _KeySet:
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> RSAPublicKey
    loaded_at: float = 0.0  # monotonic


class SigningKeys:
    """One tenant's signing keys (by `kid`) and issuers, fetched on first use, then kept fresh."""

    def __init__(self, tenant: str, authority: str, counters: Counters,
                 forget: Callable[[set[str]], None], *,
                 session_factory: Callable[[], aiohttp.ClientSession] | None,
                 fetch_timeout: float, refresh_interval: float, failure_backoff: float,
                 max_key_age: float):
        """`tenant` and `authority` as the validator checked them. `forget(kids)` is told the
        kids a refresh withdrew, so that tokens they signed are no longer served from a cache.
        `session_factory`: as `EntraValidator`'s."""
        self.tenant = tenant
        self.authority = authority
        self.discovery_url = f"{authority}/{tenant}/v2.0/.well-known/openid-configuration"
        self.v1_discovery_url = f"{authority}/{tenant}/.well-known/openid-configuration"
        self.counters = counters
        self.fetch_timeout = fetch_timeout
        self.refresh_interval = refresh_interval
        self.failure_backoff = failure_backoff
        self.max_key_age = max_key_age
        self._forget = forget
        self._session_factory = session_factory
        self._own_session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._keys: _KeySet | None = None
        self._jwks_uri: str | None = None
        self._v2_issuer: str | None = None
        self._v1_issuer: str | None = None
        self._load_task: asyncio.Task | None = None
        self._v1_task: asyncio.Task | None = None
        self._last_load_failed = False
        self._retry_at = 0.0  # no keys yet: no fetch before this (monotonic)
        self._v1_retry_at = 0.0
        self._next_refresh_at = 0.0  # keys held: no unknown-kid/age refresh before this

    async def ensure_loaded(self) -> None:
        """The first load (or, after a failed one, a retry once the backoff has passed)."""
        if self._keys is not None:
            return
        if self._load_task is None and time.monotonic() < self._retry_at:
            raise KeysUnavailable()
        await self._join_load()
        if self._keys is None:
            raise KeysUnavailable()

    async def issuer(self, version: str) -> str | None:
        """The `iss` of this tenant's tokens of `version` ("1.0" or "2.0"), after `ensure_loaded`.
        The v1.0 issuer comes from the v1.0 configuration, fetched once, coalesced."""
        if version == "2.0":
            return self._v2_issuer
        if self._v1_issuer is not None:
            return self._v1_issuer
        if self._v1_task is None:
            if time.monotonic() < self._v1_retry_at:
                raise KeysUnavailable("token issuer metadata unavailable")
            self._v1_task = asyncio.get_running_loop().create_task(self._load_v1())
        await asyncio.shield(self._v1_task)
        if self._v1_issuer is None:
            raise KeysUnavailable("token issuer metadata unavailable")
        return self._v1_issuer

    async def key(self, kid: str) -> Any:
        """The public key named `kid`, after `ensure_loaded`."""
        keys = self._keys
        assert keys is not None
        key = keys.keys.get(kid)
        now = time.monotonic()
        if key is not None:
            if (now - keys.loaded_at > self.max_key_age and self._load_task is None
                    and now >= self._next_refresh_at):
                self._next_refresh_at = now + self.refresh_interval
                self._start_load()  # in the background; the current keys serve meanwhile
            return key
        # An unknown kid: the keys may have rotated. One refresh per interval, coalesced.
        if self._load_task is None:
            if now < self._next_refresh_at:
                raise InvalidToken("unknown signing key")
            self._next_refresh_at = now + self.refresh_interval
        await self._join_load()
        key = self._keys.keys.get(kid) if self._keys is not None else None
        if key is None:
            raise KeysUnavailable() if self._last_load_failed else InvalidToken("unknown signing key")
        return key

    def _start_load(self) -> asyncio.Task:
        if self._load_task is None:
            self._load_task = asyncio.get_running_loop().create_task(self._load())
        return self._load_task

    async def _join_load(self) -> None:
        # Shielded: a caller that goes away does not cancel the fetch the others wait for.
        await asyncio.shield(self._start_load())

    async def _load(self) -> None:
        """Discovery (once) and the JWKS. Never raises: a failure keeps the last good keys."""
        try:
            try:
                if self._jwks_uri is None:
                    self.counters.discovery_fetches += 1
                    self._v2_issuer, self._jwks_uri = self._read_discovery(
                        await self._get_json(self.discovery_url), v2=True)
                self.counters.jwks_fetches += 1
                keys = _read_jwks(await self._get_json(self._jwks_uri))
            except Exception as exc:  # noqa: BLE001 - never a crash: a failed load, logged
                reason = exc if isinstance(exc, _FetchError) else f"unexpected {type(exc).__name__}"
                self.counters.fetch_failures += 1
                self._last_load_failed = True
                self._jwks_uri = None  # rediscover next time
                if self._keys is None:
                    self._retry_at = time.monotonic() + self.failure_backoff
                log.warning("Entra signing keys unavailable from %s: %s%s", self.authority, reason,
                            "; keeping the previous keys" if self._keys is not None else "")
                return
            self._install(keys)
        finally:
            self._load_task = None

    def _install(self, keys: dict[str, Any]) -> None:
        previous = self._keys
        self._keys = _KeySet(keys, time.monotonic())
        self._last_load_failed = False
        if previous is not None:
            withdrawn = previous.keys.keys() - keys.keys()
            if withdrawn:
                self._forget(withdrawn)
                log.info("Entra signing keys rotated: %d withdrawn, %d now published",
                         len(withdrawn), len(keys))

    async def _load_v1(self) -> None:
        try:
            self.counters.v1_discovery_fetches += 1
            self._v1_issuer, _ = self._read_discovery(await self._get_json(self.v1_discovery_url),
                                                      v2=False)
        except Exception as exc:  # noqa: BLE001 - never a crash: a failed load, logged
            reason = exc if isinstance(exc, _FetchError) else f"unexpected {type(exc).__name__}"
            self.counters.fetch_failures += 1
            self._v1_retry_at = time.monotonic() + self.failure_backoff
            log.warning("Entra v1.0 issuer metadata unavailable from %s: %s", self.authority,
                        reason)
        finally:
            self._v1_task = None

    def _read_discovery(self, doc: dict, v2: bool) -> tuple[str, str]:
        issuer, jwks_uri = doc.get("issuer"), doc.get("jwks_uri")
        if not isinstance(issuer, str) or not isinstance(jwks_uri, str):
            raise _FetchError("OpenID configuration without issuer or jwks_uri")
        # Tenant-independent documents publish a template; we accept only the configured tenant.
        issuer = re.sub(r"\{tenantid\}", self.tenant, issuer, flags=re.I)
        if f"/{self.tenant}/" not in issuer.lower() + "/":
            raise _FetchError("OpenID configuration issuer names another tenant")
        if v2:
            from routing.inbound.entra import check_url  # not at import time: entra imports us

            try:
                check_url(jwks_uri)
            except ValueError as exc:
                raise _FetchError(f"jwks_uri {exc}") from None
        return issuer, jwks_uri

    async def _get_json(self, url: str) -> dict:
        import aiohttp

        try:
            async with asyncio.timeout(self.fetch_timeout):
                async with self._session().get(
                        url, allow_redirects=False,
                        headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                        timeout=aiohttp.ClientTimeout(total=self.fetch_timeout)) as response:
                    if response.status != 200:
                        raise _FetchError(f"HTTP {response.status}")
                    if (response.content_length or 0) > MAX_DOCUMENT_BYTES:
                        raise _FetchError("response too large")
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        body += chunk
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise _FetchError("response too large")
        except TimeoutError:
            raise _FetchError(f"no answer within {self.fetch_timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _FetchError(type(exc).__name__) from None
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise _FetchError("not JSON") from None
        if not isinstance(doc, dict):
            raise _FetchError("not a JSON object")
        return doc

    def _session(self) -> aiohttp.ClientSession:
        if self._session_factory is not None:
            return self._session_factory()
        import aiohttp

        loop = asyncio.get_running_loop()
        if (self._own_session is None or self._own_session.closed
                or self._session_loop is not loop):  # a session belongs to the loop that made it
            self._session_loop = loop
            self._own_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4), cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False)
        return self._own_session

    async def aclose(self) -> None:
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None


def _b64int(value: Any) -> int:
    if not isinstance(value, str) or not BASE64URL.match(value) or len(value) > 2048:
        raise ValueError("bad key parameter")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _read_jwks(doc: dict) -> dict[str, Any]:
    """The RSA signing keys of a JWKS (RFC 7517), by kid. Other keys are skipped."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise _FetchError("JWKS without keys")
    keys: dict[str, Any] = {}
    for entry in entries:
        if len(keys) >= MAX_KEYS:
            break
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_ID_CHARS:
            continue
        try:
            n, e = _b64int(entry.get("n")), _b64int(entry.get("e"))
            if not MIN_KEY_BITS <= n.bit_length() <= MAX_KEY_BITS or not 3 <= e < 2 ** 32:
                continue
            keys[kid] = RSAPublicNumbers(e, n).public_key()
        except (ValueError, binascii.Error):
            continue
    if not keys:
        raise _FetchError("JWKS without a usable RSA signing key")
    return keys

