"""Entra ID access tokens (DESIGN §9, `GATEWAY_AUTH=entra`): validated in the gateway.

One `EntraValidator` per process, built at startup: construction only checks the settings, no
network I/O. The first token fetches the tenant's OpenID configuration
(`{authority}/{tenant}/v2.0/.well-known/openid-configuration`) and the JWKS its `jwks_uri` names.

What Entra puts in access tokens (confirmed in Microsoft's docs, MicrosoftDocs/entra-docs
`identity-platform/access-token-claims-reference.md` and `access-tokens.md`):
- The token version follows the *API's* app registration (`accessTokenAcceptedVersion` /
  `requestedAccessTokenVersion`: null or 1 → v1.0, 2 → v2.0), not the endpoint the client used.
  `ver` is "1.0" or "2.0".
- `aud`: in v2.0 tokens always the API's client id (GUID); in v1.0 tokens the client id or the
  App ID URI (`api://...`) the client asked for. So GATEWAY_ENTRA_AUDIENCE lists both.
- `iss`: v2.0 `https://login.microsoftonline.com/{tid}/v2.0` (the v2.0 discovery document's
  `issuer`, a `{tenantid}` template in the common/organizations documents); v1.0
  `https://sts.windows.net/{tid}/` (the *v1.0* discovery document's `issuer`: Microsoft's own
  validator, Microsoft.IdentityModel.Validators' AadIssuerValidator, reads the v1.0 metadata for
  v1.0 tokens; so does this module, lazily, on the first v1.0 token, so a sovereign cloud's
  v1.0 issuer host is whatever its own metadata says).
- `azp` (v2.0) / `appid` (v1.0): the calling application's client id; `oid`: the object id of the
  user or service principal; `tid`: the tenant GUID; `kid` in the header names the signing key
  (v1.0 tokens also carry `x5t`, same value); signed RS256.
- With a tenant-specific metadata endpoint an exact `iss` match is all the issuer validation
  needed (the key-issuer check applies to the tenant-independent endpoints); we also require
  `tid` to be a GUID equal to the configured tenant. The tenant's keys document validates both
  token versions (a Microsoft answer in MicrosoftDocs/azure-docs#22063; Microsoft.Identity.Web,
  configured with a v2.0 authority, accepts v1.0 tokens for such APIs too,
  AzureAD/microsoft-identity-web#444).
- Keys rotate: "a reasonable frequency to check for updates ... is every 24 hours". Here: on a
  token naming an unknown `kid` (rate-limited, below) and when the key set is over 24 h old.

Bounds: tokens over 16 KiB are refused before any parsing; documents over 256 KiB, slower than
the fetch timeout, redirected or not JSON are a failed fetch; at most 64 keys are kept; an
unknown `kid` refreshes the keys at most once per `refresh_interval` (5 min) per validator, and
concurrent fetches are coalesced into one; after a failed first load, fetches are retried no
sooner than `failure_backoff`; validated tokens are cached (LRU, 10 000) by SHA-256 until expiry.

Checks, cheapest first: size; strict compact-JWS parsing; `alg` exactly RS256 (not `none`, not
HS256 keyed with the public key, no `crit`/`b64` extensions; `jku`/`x5u`/`jwk`/`x5c` headers are
ignored); `ver`; `tid`; `aud`; `exp`/`nbf`/`iat` (30 s leeway: platform clocks are NTP-synced and
azure-identity renews tokens minutes before they expire); then `iss`, then the key by `kid` and
the signature. So only a token naming our tenant and audience, unexpired, can cause a fetch.

`InvalidToken.reason` is short and safe to show a client: never the token, a claim value or key
material. `KeysUnavailable` (a subclass) means the tenant's endpoints could not be read: the
token may be fine, so answer 503 with a short Retry-After (the OpenAI SDKs retry 5xx, not 401);
every other `InvalidToken` is a 401.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("routing.inbound.entra")

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
MAX_TOKEN_CHARS = 16 * 1024
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_KEYS = 64
MIN_KEY_BITS, MAX_KEY_BITS = 2048, 8192
# Entra's longest-lived access tokens last 20-28 h (CAE); anything claiming more is not sane.
MAX_TOKEN_LIFETIME = 48 * 3600

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z", re.I)
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")  # base64url, no padding (RFC 7515)
_MAX_ID_CHARS = 256


class InvalidToken(Exception):
    """The token is not accepted. `reason` is short and safe to show the caller."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(InvalidToken):
    """The tenant's OpenID configuration or keys could not be read (answer 503, not 401)."""

    def __init__(self, reason: str = "signing keys unavailable"):
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a validated token speaks for. `oid`, `app_id` and `tid` are lower-case GUIDs."""

    oid: str | None  # object id of the user or service principal
    app_id: str | None  # the calling app's client id: `azp` (v2.0) or `appid` (v1.0)
    tid: str
    sub: str | None
    version: str  # "1.0" or "2.0"
    expires_at: float  # `exp`, epoch seconds

    @property
    def ids(self) -> tuple[str, ...]:
        """What to match a consumer's PRINCIPALS against, in order: `oid`, then the app id."""
        return tuple(i for i in (self.oid, self.app_id) if i)


@dataclass
class Counters:
    """What the validator did (for tests and diagnostics; never reset)."""

    signature_checks: int = 0  # RSA verifications
    cache_hits: int = 0
    discovery_fetches: int = 0  # v2.0 OpenID configuration
    v1_discovery_fetches: int = 0  # v1.0 OpenID configuration (only for v1.0 tokens)
    jwks_fetches: int = 0
    fetch_failures: int = 0


@dataclass(slots=True)
class _Cached:
    principal: Principal
    valid_until: float  # exp + leeway
    kid: str


class _FetchError(Exception):
    pass


@dataclass
class _KeySet:
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> RSAPublicKey
    loaded_at: float = 0.0  # monotonic


class EntraValidator:
    """Validates Entra ID access tokens for one tenant and a set of audiences."""

    def __init__(self, tenant: str, audiences: Sequence[str], authority: str | None = None, *,
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None,
                 leeway: float = 30.0, fetch_timeout: float = 5.0,
                 refresh_interval: float = 300.0, failure_backoff: float = 5.0,
                 max_key_age: float = 24 * 3600, cache_size: int = 10_000):
        """`session_factory` returns the aiohttp session to fetch with (e.g. the gateway's shared
        client, which is then never closed here); without it the validator makes its own on
        first use, inside the running loop, and `aclose()` closes it."""
        self.tenant = _tenant_id(tenant)
        self.audiences = _audiences(audiences)
        self.authority = _authority(DEFAULT_AUTHORITY if authority is None else authority)
        self.discovery_url = f"{self.authority}/{self.tenant}/v2.0/.well-known/openid-configuration"
        self.v1_discovery_url = f"{self.authority}/{self.tenant}/.well-known/openid-configuration"
        self.leeway = float(leeway)
        self.fetch_timeout = float(fetch_timeout)
        self.refresh_interval = float(refresh_interval)
        self.failure_backoff = float(failure_backoff)
        self.max_key_age = float(max_key_age)
        self.cache_size = int(cache_size)
        self.counters = Counters()
        self._session_factory = session_factory
        self._own_session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
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

    # -- the hot path ---------------------------------------------------------------------------

    async def validate(self, token: str) -> Principal:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("token too large" if isinstance(token, str) else "malformed token")
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidToken("malformed token") from None
        digest = hashlib.sha256(raw).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if time.time() < cached.valid_until:
                self._cache.move_to_end(digest)
                self.counters.cache_hits += 1
                return cached.principal
            del self._cache[digest]
            raise InvalidToken("token expired")

        header, claims, signing_input, signature = _parse(token)
        kid = header["kid"]
        version = self._check_claims(claims)
        await self._ensure_keys()
        issuer = self._v2_issuer if version == "2.0" else await self._v1()
        if claims["iss"] != issuer:
            raise InvalidToken("invalid issuer")
        key = await self._key(kid)
        self._verify(signing_input, signature, key)
        principal = _principal(claims, version)
        self._remember(digest, _Cached(principal, float(claims["exp"]) + self.leeway, kid))
        return principal

    def _check_claims(self, claims: dict) -> str:
        """Everything that needs no key, before any key is fetched: a token for another tenant
        or audience, or an expired one, never triggers a fetch. Returns the token version."""
        version = claims.get("ver")
        if version not in ("1.0", "2.0"):
            raise InvalidToken("unsupported token version")
        tid = claims.get("tid")
        if not isinstance(tid, str) or not _GUID.match(tid) or tid.lower() != self.tenant:
            raise InvalidToken("token from another tenant")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in self.audiences for a in auds):
            raise InvalidToken("invalid audience")
        times = [claims.get(name) for name in ("exp", "nbf", "iat")]
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
            raise InvalidToken("missing or invalid time claims")
        exp, nbf, iat = times
        now = time.time()
        if now >= exp + self.leeway:
            raise InvalidToken("token expired")
        if nbf > now + self.leeway or iat > now + self.leeway:
            raise InvalidToken("token not yet valid")
        if not iat <= exp or exp - iat > MAX_TOKEN_LIFETIME or nbf > exp:
            raise InvalidToken("invalid token lifetime")
        if not isinstance(claims.get("iss"), str):
            raise InvalidToken("invalid issuer")
        for name in ("oid", "azp", "appid"):
            value = claims.get(name)
            if value is not None and not (isinstance(value, str) and _GUID.match(value)):
                raise InvalidToken(f"invalid {name} claim")
        if not (claims.get("oid") or claims.get("azp") or claims.get("appid")):
            raise InvalidToken("token names no principal")
        return version

    def _verify(self, signing_input: bytes, signature: bytes, key: Any) -> None:
        """RS256 (RFC 7518 §3.3): RSASSA-PKCS1-v1_5 with SHA-256 over `header.payload`, by
        `cryptography` (what PyJWT's RSAAlgorithm calls; PyJWT 2.15's `decode` itself spends
        ~70 µs per token on a per-character base64url check, 4x the RSA verification)."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
        from cryptography.hazmat.primitives.hashes import SHA256

        self.counters.signature_checks += 1
        try:
            key.verify(signature, signing_input, PKCS1v15(), SHA256())
        except InvalidSignature:
            raise InvalidToken("invalid signature") from None

    def _remember(self, digest: bytes, entry: _Cached) -> None:
        self._cache[digest] = entry
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- keys -----------------------------------------------------------------------------------

    async def _ensure_keys(self) -> None:
        """The first load (or, after a failed one, a retry once the backoff has passed)."""
        if self._keys is not None:
            return
        if self._load_task is None and time.monotonic() < self._retry_at:
            raise KeysUnavailable()
        await self._join_load()
        if self._keys is None:
            raise KeysUnavailable()

    async def _key(self, kid: str) -> Any:
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
            if withdrawn:  # tokens signed with a withdrawn key are not served from the cache
                for digest in [d for d, e in self._cache.items() if e.kid in withdrawn]:
                    del self._cache[digest]
                log.info("Entra signing keys rotated: %d withdrawn, %d now published",
                         len(withdrawn), len(keys))

    async def _v1(self) -> str:
        """The v1.0 issuer, from the v1.0 OpenID configuration (fetched once, coalesced)."""
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
            try:
                _check_url(jwks_uri)
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


# -- parsing ------------------------------------------------------------------------------------

def _b64decode(segment: str) -> bytes:
    """Strict base64url without padding: the alphabet (`_SEGMENT`) and a canonical encoding."""
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


def _parse(token: str) -> tuple[dict, dict, bytes, bytes]:
    """Header, claims (unverified until the signature is checked), the signing input and the
    signature of a compact JWS (RFC 7515 §7.1), parsed strictly."""
    parts = token.split(".")
    if len(parts) != 3 or not _SEGMENT.match(parts[0]):
        raise InvalidToken("malformed token")  # also JWE (5 parts): encrypted tokens unsupported
    header = _b64json(parts[0])
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    if header.get("alg") != "RS256":  # not none, not HS256 keyed with the public key, not ES*/PS*
        raise InvalidToken("unsupported algorithm")
    if "crit" in header or "b64" in header:  # no JWS extensions (RFC 7797 unencoded payloads)
        raise InvalidToken("unsupported token header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_ID_CHARS:
        raise InvalidToken("missing key id")
    # `jku`, `x5u`, `jwk` and `x5c` headers are ignored: keys come only from the tenant's JWKS.
    if not _SEGMENT.match(parts[1]) or not _SEGMENT.match(parts[2]):
        raise InvalidToken("malformed token")
    claims = _b64json(parts[1])
    if not isinstance(claims, dict):
        raise InvalidToken("malformed token")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), _b64decode(parts[2])


def _principal(payload: dict, version: str) -> Principal:
    app_id = payload.get("azp") if version == "2.0" else payload.get("appid")
    app_id = app_id or payload.get("azp") or payload.get("appid")
    sub = payload.get("sub")
    return Principal(
        oid=_lower(payload.get("oid")), app_id=_lower(app_id), tid=payload["tid"].lower(),
        sub=sub if isinstance(sub, str) and len(sub) <= _MAX_ID_CHARS else None,
        version=version, expires_at=float(payload["exp"]))


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


def _b64int(value: Any) -> int:
    if not isinstance(value, str) or not _SEGMENT.match(value) or len(value) > 2048:
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
        if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_ID_CHARS:
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


# -- settings -----------------------------------------------------------------------------------

def _tenant_id(tenant: str) -> str:
    tenant = (tenant or "").strip()
    if not _GUID.match(tenant):
        raise ValueError("GATEWAY_ENTRA_TENANT: must be the tenant id (a GUID), "
                         "not a domain name, 'common' or 'organizations'")
    return tenant.lower()


def _audiences(audiences: Sequence[str]) -> list[str]:
    if isinstance(audiences, str):
        audiences = audiences.split(",")
    values = [a.strip() for a in audiences if a and a.strip()]
    if not values:
        raise ValueError("GATEWAY_ENTRA_AUDIENCE: give the gateway app's client id and/or its "
                         "Application ID URI (comma-separated)")
    for value in values:
        if any(c.isspace() for c in value):
            raise ValueError(f"GATEWAY_ENTRA_AUDIENCE: {value!r} contains whitespace")
    # Entra writes GUIDs in lower case; App ID URIs are compared exactly.
    return [v.lower() if _GUID.match(v) else v for v in values]


def _authority(authority: str) -> str:
    authority = authority.strip().rstrip("/")
    if "://" not in authority:  # as azure-identity: a bare host means https
        authority = "https://" + authority
    try:
        _check_url(authority)
    except ValueError as exc:
        raise ValueError(f"AZURE_AUTHORITY_HOST: {exc}") from None
    parts = urlsplit(authority)
    if parts.query or parts.fragment:
        raise ValueError("AZURE_AUTHORITY_HOST: must be a base URL without query or fragment")
    return authority


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise ValueError(f"must be an https URL (http only for loopback hosts), got {url!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
