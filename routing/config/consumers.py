"""App settings → consumers (DESIGN §9): who may call, with which keys or Entra principals, which
models, under which limits.

    CONSUMER__<NAME>__KEYS                 comma-separated keys (two allow rotation)
    CONSUMER__<NAME>__PRINCIPALS           Entra object ids or app (client) ids
    CONSUMER__<NAME>__MODELS               public model names it may use (default: all)
    CONSUMER__<NAME>__TOKENS_PER_MINUTE    rate limits (default: none)
    CONSUMER__<NAME>__REQUESTS_PER_MINUTE
    CONSUMER__<NAME>__TOKEN_QUOTA          tokens per QUOTA_PERIOD
    CONSUMER__<NAME>__QUOTA_PERIOD         hourly, daily, weekly or monthly (default monthly)

`GATEWAY_API_KEYS` are the keys of the consumer `default` (no limits unless CONSUMER__DEFAULT__
gives some). Names are case-insensitive and shown lower-case (`CONSUMER__TEAM_A__…` is `team_a`).
Validated as a whole like routes: every error names its setting.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import SecretStr

from routing.state.store import QUOTA_PERIODS, Limits

CONSUMER_PREFIX = "CONSUMER__"
CONSUMER_FIELDS = ("KEYS", "PRINCIPALS", "MODELS", "TOKENS_PER_MINUTE", "REQUESTS_PER_MINUTE",
                   "TOKEN_QUOTA", "QUOTA_PERIOD")
DEFAULT_CONSUMER = "default"
AUTH_MODES = {"keys": ("keys",), "entra": ("entra",), "keys,entra": ("keys", "entra"),
              "entra,keys": ("keys", "entra"), "none": ()}
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
MIN_KEY_LENGTH = 16
MAX_LIMIT = 10**12
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KEY_VAULT_REFERENCE = "@microsoft.keyvault("


@dataclass(frozen=True)
class Consumer:
    name: str
    keys: tuple[SecretStr, ...] = ()
    principals: frozenset[str] = frozenset()
    models: frozenset[str] | None = None  # None: every model
    limits: Limits = field(default_factory=Limits)

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class EntraSettings:
    tenant: str
    audiences: tuple[str, ...]
    authority: str = DEFAULT_AUTHORITY


@dataclass
class ConsumerTable:
    consumers: dict[str, Consumer]
    modes: tuple[str, ...]  # ("keys",), ("entra",), ("keys", "entra") or () for none
    entra: EntraSettings | None = None
    by_key_digest: dict[bytes, Consumer] = field(default_factory=dict)
    by_principal: dict[str, Consumer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for consumer in self.consumers.values():
            for key in consumer.keys:
                self.by_key_digest[key_digest(key.get_secret_value())] = consumer
            for principal in consumer.principals:
                self.by_principal[principal.lower()] = consumer

    @property
    def anonymous(self) -> Consumer:
        return self.consumers.get(DEFAULT_CONSUMER) or Consumer(DEFAULT_CONSUMER)

    def describe(self) -> dict:
        return {name: {"keys": f"<{len(c.keys)} redacted>", "principals": sorted(c.principals),
                       "models": sorted(c.models) if c.models is not None else "all",
                       "limits": {k: v for k, v in vars(c.limits).items() if v is not None}}
                for name, c in sorted(self.consumers.items())}


def key_digest(key: str) -> bytes:
    """Keys are looked up by their SHA-256: a dict lookup on a digest says nothing, by its
    timing, about the key presented."""
    return hashlib.sha256(key.encode()).digest()


def load_consumers(environ: Mapping[str, str], models: Iterable[str]) -> tuple[ConsumerTable | None, list[str]]:
    """(the table, every error naming its setting)."""
    errors: list[str] = []
    models = sorted(set(models))
    auth_value = (environ.get("GATEWAY_AUTH") or "keys").strip().lower().replace(" ", "")
    modes = AUTH_MODES.get(auth_value)
    if modes is None:
        errors.append(f"GATEWAY_AUTH: {auth_value[:40]!r} is not allowed; use keys, entra, keys,entra or none")
        modes = ("keys",)

    raw: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.upper().startswith(CONSUMER_PREFIX):
            continue
        parts = name[len(CONSUMER_PREFIX):].split("__")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            errors.append(f"{name}: not a consumer setting; use CONSUMER__<NAME>__<FIELD>, FIELD one "
                          f"of {', '.join(CONSUMER_FIELDS)}")
            continue
        consumer, field_name = parts[0], parts[1].upper()
        if field_name not in CONSUMER_FIELDS:
            hint = difflib.get_close_matches(field_name, CONSUMER_FIELDS, n=1)
            errors.append(f"{name}: unknown consumer field {parts[1]!r}"
                          + (f" (did you mean {CONSUMER_PREFIX}{consumer}__{hint[0]}?)" if hint else "")
                          + f"; allowed: {', '.join(CONSUMER_FIELDS)}")
            continue
        if not NAME.fullmatch(consumer):
            errors.append(f"{name}: consumer name {consumer[:64]!r} may contain only letters, digits, "
                          "'_', '.' and '-' (at most 64)")
            continue
        raw.setdefault(consumer.lower(), {})[field_name] = value
    default_keys = [k.strip() for k in (environ.get("GATEWAY_API_KEYS") or "").split(",") if k.strip()]
    if default_keys:
        raw.setdefault(DEFAULT_CONSUMER, {})

    consumers: dict[str, Consumer] = {}
    key_owner: dict[str, str] = {}
    for name in sorted(raw):
        fields = raw[name]

        def setting(field_name: str) -> str:
            return f"{CONSUMER_PREFIX}{name.upper()}__{field_name}"

        keys = [k.strip() for k in (fields.get("KEYS") or "").split(",") if k.strip()]
        key_settings = [(setting("KEYS"), k) for k in keys]
        if name == DEFAULT_CONSUMER:
            key_settings += [("GATEWAY_API_KEYS", k) for k in default_keys]
        for where, key in key_settings:
            if key.lower().startswith(KEY_VAULT_REFERENCE):
                errors.append(f"{where}: a Key Vault reference was not resolved by the platform; grant "
                              "the app's identity 'Key Vault Secrets User' on the vault")
            elif len(key) < MIN_KEY_LENGTH:
                errors.append(f"{where}: a key shorter than {MIN_KEY_LENGTH} characters; use long random "
                              "keys, e.g. `python -c \"import secrets; print(secrets.token_urlsafe(32))\"`")
            elif key in key_owner and key_owner[key] != where:
                errors.append(f"{where}: a key also used by {key_owner[key]}; each key belongs to one consumer")
            key_owner.setdefault(key, where)
        principals = [p.strip().lower() for p in (fields.get("PRINCIPALS") or "").split(",") if p.strip()]
        for principal in principals:
            if not GUID.fullmatch(principal):
                errors.append(f"{setting('PRINCIPALS')}: {principal[:40]!r} is not an object id or client "
                              "id (a GUID)")
        allowed = None
        if (fields.get("MODELS") or "").strip():
            allowed = frozenset(m.strip() for m in fields["MODELS"].split(",") if m.strip())
            for model in sorted(allowed):
                if model not in models:
                    hint = difflib.get_close_matches(model, models, n=1)
                    errors.append(f"{setting('MODELS')}: unknown model {model[:64]!r}"
                                  + (f"; did you mean {hint[0]!r}?" if hint else
                                     f"; configured: {', '.join(models) or 'none'}"))
        limits = {}
        for field_name, attr in (("TOKENS_PER_MINUTE", "tokens_per_minute"),
                                 ("REQUESTS_PER_MINUTE", "requests_per_minute"), ("TOKEN_QUOTA", "token_quota")):
            value = (fields.get(field_name) or "").strip().replace("_", "")
            if not value:
                continue
            if not value.isdigit() or not 0 < int(value) <= MAX_LIMIT:
                errors.append(f"{setting(field_name)}: {value[:20]!r} is not a whole number from 1 to {MAX_LIMIT}")
                continue
            limits[attr] = int(value)
        period = (fields.get("QUOTA_PERIOD") or "").strip().lower()
        if period and period not in QUOTA_PERIODS:
            errors.append(f"{setting('QUOTA_PERIOD')}: {period[:20]!r} is not allowed; use "
                          f"{', '.join(QUOTA_PERIODS)}")
        elif period and "token_quota" not in limits:
            errors.append(f"{setting('QUOTA_PERIOD')}: set without {setting('TOKEN_QUOTA')}")
        if "token_quota" in limits:
            limits["quota_period"] = period or "monthly"
        all_keys = keys + (default_keys if name == DEFAULT_CONSUMER else [])
        consumers[name] = Consumer(name, tuple(SecretStr(k) for k in dict.fromkeys(all_keys)),
                                   frozenset(principals), allowed, Limits(**limits))
        if not all_keys and not principals and modes:
            errors.append(f"{setting('KEYS')}: consumer {name!r} has neither KEYS nor PRINCIPALS; nobody "
                          "could call as it")

    entra = None
    if "keys" in modes and not any(c.keys for c in consumers.values()):
        errors.append("GATEWAY_API_KEYS: required while GATEWAY_AUTH includes 'keys' (comma-separated "
                      "inbound keys) unless some CONSUMER__<NAME>__KEYS are set, or set GATEWAY_AUTH=none "
                      "behind another authenticating layer")
    if "keys" not in modes:
        for name, consumer in consumers.items():
            if consumer.keys and modes:
                errors.append(f"{CONSUMER_PREFIX}{name.upper()}__KEYS: keys are set but GATEWAY_AUTH "
                              f"({auth_value}) does not accept keys")
    if "entra" in modes:
        entra, entra_errors = _entra_settings(environ)
        errors += entra_errors
        if not any(c.principals for c in consumers.values()):
            errors.append("CONSUMER__<NAME>__PRINCIPALS: GATEWAY_AUTH includes 'entra' but no consumer "
                          "lists PRINCIPALS (object or client ids): every Entra caller would get 401")
    else:
        for name, consumer in consumers.items():
            if consumer.principals:
                errors.append(f"{CONSUMER_PREFIX}{name.upper()}__PRINCIPALS: set but GATEWAY_AUTH "
                              f"({auth_value}) does not include entra")
    if not modes:  # none: one anonymous consumer, `default`
        others = sorted(n for n in consumers if n != DEFAULT_CONSUMER)
        if others:
            errors.append(f"{CONSUMER_PREFIX}{others[0].upper()}__*: GATEWAY_AUTH is none (one anonymous "
                          "consumer, 'default'); other consumers cannot be told apart")
    if errors:
        return None, errors
    return ConsumerTable(consumers, modes, entra), []


def _entra_settings(environ: Mapping[str, str]) -> tuple[EntraSettings | None, list[str]]:
    errors = []
    tenant = (environ.get("GATEWAY_ENTRA_TENANT") or "").strip().lower()
    if not GUID.fullmatch(tenant):
        errors.append("GATEWAY_ENTRA_TENANT: required while GATEWAY_AUTH includes 'entra': the tenant id "
                      "(a GUID) whose tokens are accepted")
    audiences = tuple(a.strip() for a in (environ.get("GATEWAY_ENTRA_AUDIENCE") or "").split(",") if a.strip())
    if not audiences:
        errors.append("GATEWAY_ENTRA_AUDIENCE: required while GATEWAY_AUTH includes 'entra': the gateway "
                      "app's Application ID URI and/or client id, comma-separated")
    authority = (environ.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY).strip().rstrip("/")
    parts = urlsplit(authority)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if not parts.hostname or parts.scheme not in ("https", "http") or (parts.scheme == "http" and not loopback):
        errors.append(f"AZURE_AUTHORITY_HOST: {authority[:80]!r} is not an https URL (http only for loopback)")
    if errors:
        return None, errors
    return EntraSettings(tenant, audiences, authority), []
