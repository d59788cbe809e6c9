"""Entra ID access tokens (DESIGN §9, `GATEWAY_AUTH=entra`): validated in the gateway.

One `EntraValidator` per process, built at startup: construction only checks the settings, no
network I/O. The first token fetches the tenant's OpenID configuration and the JWKS it names
(routing/inbound/entra_keys.py, which also refreshes them as keys rotate); tokens are parsed by
routing/inbound/entra_jws.py.

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
  v1.0 tokens; so does this validator, lazily, on the first v1.0 token, so a sovereign cloud's
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

Bounds: tokens over 16 KiB are refused before any parsing; validated tokens are cached (LRU,
10 000) by SHA-256 until expiry; what fetching the keys may cost is bounded in entra_keys.py.

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

import hashlib
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import urlsplit

from routing.config.settings import is_loopback
from routing.inbound.entra_jws import MAX_ID_CHARS, InvalidToken, parse_jws
from routing.inbound.entra_keys import KeysUnavailable, SigningKeys

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Counters", "EntraValidator", "InvalidToken", "KeysUnavailable", "Principal"]

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
MAX_TOKEN_CHARS = 16 * 1024
# Entra's longest-lived access tokens last 20-28 h (CAE); anything claiming more is not sane.
MAX_TOKEN_LIFETIME = 48 * 3600

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z", re.I)


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
        self.leeway = float(leeway)
        self.fetch_timeout = float(fetch_timeout)
        self.refresh_interval = float(refresh_interval)
        self.failure_backoff = float(failure_backoff)
        self.max_key_age = float(max_key_age)
        self.cache_size = int(cache_size)
        self.counters = Counters()
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        self._signing_keys = SigningKeys(
            self.tenant, self.authority, self.counters, self._forget,
            session_factory=session_factory, fetch_timeout=self.fetch_timeout,
            refresh_interval=self.refresh_interval, failure_backoff=self.failure_backoff,
            max_key_age=self.max_key_age)
        self.discovery_url = self._signing_keys.discovery_url
        self.v1_discovery_url = self._signing_keys.v1_discovery_url

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

        header, claims, signing_input, signature = parse_jws(token)
        kid = header["kid"]
        version = self._check_claims(claims)
        keys = self._signing_keys
        await keys.ensure_loaded()
        if claims["iss"] != await keys.issuer(version):
            raise InvalidToken("invalid issuer")
        key = await keys.key(kid)
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

    def _forget(self, kids: set[str]) -> None:
        """Tokens signed with a key the tenant withdrew are not served from the cache."""
        for digest in [d for d, e in self._cache.items() if e.kid in kids]:
            del self._cache[digest]

    async def aclose(self) -> None:
        await self._signing_keys.aclose()


def _principal(payload: dict, version: str) -> Principal:
    app_id = payload.get("azp") if version == "2.0" else payload.get("appid")
    app_id = app_id or payload.get("azp") or payload.get("appid")
    sub = payload.get("sub")
    return Principal(
        oid=_lower(payload.get("oid")), app_id=_lower(app_id), tid=payload["tid"].lower(),
        sub=sub if isinstance(sub, str) and len(sub) <= MAX_ID_CHARS else None,
        version=version, expires_at=float(payload["exp"]))


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


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
        check_url(authority)
    except ValueError as exc:
        raise ValueError(f"AZURE_AUTHORITY_HOST: {exc}") from None
    parts = urlsplit(authority)
    if parts.query or parts.fragment:
        raise ValueError("AZURE_AUTHORITY_HOST: must be a base URL without query or fragment")
    return authority


def check_url(url: str) -> None:
    """Raises ValueError unless `url` is https, or http to a loopback host (a local tenant).
    Also checks the `jwks_uri` a discovery document names (routing/inbound/entra_keys.py)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    raise ValueError(f"must be an https URL (http only for loopback hosts), got {url!r}")

