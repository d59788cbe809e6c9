"""Shared state (DESIGN §11): the store that limits and cooldowns use, built from the settings.

| setting | meaning |
|---|---|
| GATEWAY_STATE | `memory` (default) or `redis://host[:port][/db]` / `rediss://host[:port][/db]` (TLS; port 10000, Azure Managed Redis's, when none is given; 6379 for redis://) |
| GATEWAY_STATE_AUTH | `managed-identity` (default for rediss://: an Entra token for Azure Managed Redis through the app's identity, user-assigned when AZURE_CLIENT_ID is set), `key` (GATEWAY_STATE_KEY, e.g. a Key Vault reference), or `none` (default for redis://) |
| GATEWAY_STATE_TIMEOUT_MS | reply timeout of each Redis call, default 50; a whole call is bounded by twice that (a connection attempt, TLS and credentials included, gets at least 1 s, going on in the background) |

Redis and redis-entraid are imported only when GATEWAY_STATE names Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from routing.state.memory import MemoryStore
from routing.state.store import (QUOTA_EXCEEDED, QUOTA_PERIODS, RATE_LIMITED, Admission, Limits, Reservation,
                                 StateStore, Usage, Window, period_bounds)

__all__ = ["QUOTA_EXCEEDED", "QUOTA_PERIODS", "RATE_LIMITED", "Admission", "Limits", "MemoryStore", "Reservation",
           "StateStore", "Usage", "Window", "period_bounds", "store_from_settings"]

DEFAULT_TIMEOUT_MS = 50
MAX_TIMEOUT_MS = 5000
AZURE_MANAGED_REDIS_PORT = 10000
AUTH_MODES = ("managed-identity", "key", "none")


def store_from_settings(environ: Mapping[str, str]):
    """MemoryStore for GATEWAY_STATE=memory (the default), else a ResilientStore over Redis with
    MemoryStore as its fallback. Raises ValueError naming the setting on a bad value; no message
    ever contains a key."""
    value = environ.get("GATEWAY_STATE", "").strip()
    if not value or value.lower() == "memory":
        return MemoryStore()
    url = _redis_url(value)
    timeout_ms = _timeout_ms(environ.get("GATEWAY_STATE_TIMEOUT_MS", "").strip())
    password, credential_provider = _credentials(environ, url)

    from routing.state.redis_store import RedisStore
    from routing.state.resilient import ResilientStore

    timeout = timeout_ms / 1000
    primary = RedisStore.from_url(url, timeout=timeout, password=password, credential_provider=credential_provider)
    return ResilientStore(primary, MemoryStore(), call_timeout=2 * timeout)


def _redis_url(value: str) -> str:
    """The URL with its default port made explicit, or ValueError."""
    expected = "GATEWAY_STATE: expected memory, redis://host:port or rediss://host:port"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{expected}, got {_shown(value)}") from None
    if parts.scheme.lower() not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{expected}, got {_shown(value)}")
    if parts.username or parts.password:
        raise ValueError("GATEWAY_STATE: put the access key in GATEWAY_STATE_KEY (with GATEWAY_STATE_AUTH=key), "
                         "not in the URL")
    if parts.query or parts.fragment or not (parts.path.strip("/") or "0").isdigit():
        raise ValueError(f"GATEWAY_STATE: expected redis[s]://host:port with at most a database number as "
                         f"path, got {_shown(value)}")
    scheme = parts.scheme.lower()
    if port is None:
        port = AZURE_MANAGED_REDIS_PORT if scheme == "rediss" else 6379
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}:{port}{parts.path}"


def _shown(value: str) -> str:
    """The value for an error message, with anything that looks like credentials left out."""
    scheme, separator, rest = value.partition("://")
    if "@" in rest:
        rest = "…@" + rest.rsplit("@", 1)[1]
    return repr(scheme + separator + rest if separator else ("…" if "@" in value else value))


def _timeout_ms(value: str) -> int:
    if not value:
        return DEFAULT_TIMEOUT_MS
    if not value.isdigit() or not 1 <= int(value) <= MAX_TIMEOUT_MS:
        raise ValueError(f"GATEWAY_STATE_TIMEOUT_MS: expected whole milliseconds from 1 to {MAX_TIMEOUT_MS}, "
                         f"got {value!r}")
    return int(value)


def _credentials(environ: Mapping[str, str], url: str) -> tuple[str | None, object | None]:
    """(access key, Entra credential provider) for the chosen GATEWAY_STATE_AUTH."""
    tls = url.startswith("rediss://")
    auth = environ.get("GATEWAY_STATE_AUTH", "").strip().lower() or ("managed-identity" if tls else "none")
    if auth not in AUTH_MODES:
        raise ValueError(f"GATEWAY_STATE_AUTH: expected {', '.join(AUTH_MODES)}, "
                         f"got {environ['GATEWAY_STATE_AUTH'].strip()!r}")
    key = environ.get("GATEWAY_STATE_KEY", "").strip()
    if auth == "key":
        if not key:
            raise ValueError("GATEWAY_STATE_KEY: required when GATEWAY_STATE_AUTH is key")
        return key, None
    if key:
        raise ValueError(f"GATEWAY_STATE_KEY: set, but GATEWAY_STATE_AUTH is {auth}; set GATEWAY_STATE_AUTH=key "
                         f"to use the key, or remove it")
    if auth == "managed-identity":
        if not tls:
            raise ValueError("GATEWAY_STATE_AUTH: managed-identity needs a rediss:// URL in GATEWAY_STATE "
                             "(a token must not travel unencrypted)")
        from routing.state.redis_store import managed_identity_credentials

        return None, managed_identity_credentials(environ.get("AZURE_CLIENT_ID", "").strip() or None)
    return None, None
