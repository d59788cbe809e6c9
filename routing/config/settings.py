"""App settings → a validated RouteTable.

Routes are read once per process (cold start) and validated as a whole: every error names the
full setting (`ROUTE__X__FIELD: what is wrong, what is allowed`) so `routing check` and the
Functions log tell an operator exactly what to fix. Values are never echoed for secrets.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from routing.config.consumers import KEY_VAULT_REFERENCE, ConsumerTable, load_consumers
from routing.config.foundry import FAMILY_NAMES, FOUNDRY_V1_SCOPE, foundry_v1_errors
from routing.upstream.backends.families import detect as detect_family

ROUTE_PREFIX = "ROUTE__"
BACKENDS = ("azure-openai", "azure-ai")
DEFAULT_API_VERSION = {"azure-openai": "2024-10-21", "azure-ai": "2024-05-01-preview"}
DEFAULT_SCOPE = "https://cognitiveservices.azure.com/.default"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Request bodies being uploaded, summed over every request of the instance (DESIGN §8).
DEFAULT_MAX_INFLIGHT_BODY_BYTES = 128 * 1024 * 1024
# Reasoning-model rules apply by default to these deployment/model name prefixes (DESIGN §3).
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
# Hosts whose key goes in `api-key`; every other host (serverless Llama) takes `Authorization: Bearer`.
API_KEY_HEADER_HOST_SUFFIXES = (".openai.azure.com", ".services.ai.azure.com")
# Headers an operator may not inject: they carry credentials or framing the gateway owns.
RESERVED_HEADERS = frozenset(
    {"authorization", "api-key", "host", "content-length", "content-type", "transfer-encoding",
     "connection", "keep-alive", "upgrade", "te", "trailer", "proxy-authorization", "cookie",
     "x-ms-client-request-id", "accept", "accept-encoding"}
)
# Injected header values shown as <redacted> by `check` and `routes list` (they may be keys).
SECRET_HEADER_NAME = re.compile(r"key|secret|token|auth|signature|password|credential", re.IGNORECASE)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

# Setting field → attribute; the order is the order `check` prints.
ROUTE_FIELDS = {
    "MODEL": "model", "BACKEND": "backend", "ENDPOINT": "endpoint", "DEPLOYMENT": "deployment",
    "API_VERSION": "api_version", "AUTH": "auth", "API_KEY": "api_key", "CLIENT_ID": "client_id",
    "SCOPE": "scope", "HEADERS": "headers", "PARAMS": "params", "PRIORITY": "priority",
    "WEIGHT": "weight", "TIMEOUT": "timeout", "KEY_HEADER": "key_header", "REASONING": "reasoning",
    "FAMILY": "family",
}


class SettingsError(Exception):
    """The whole list of configuration errors, one line per error, each naming its setting."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


class ParamsPolicy(BaseModel):
    """ROUTE__<ID>__PARAMS: applied in this order: drop, rename, defaults, set."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    drop: tuple[str, ...] = ()
    rename: dict[str, str] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    set: dict[str, Any] = Field(default_factory=dict)


class Route(BaseModel):
    """One deployment behind a public model name. Built only by `load_route_table`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    model: str = Field(min_length=1, max_length=256)
    backend: Literal["azure-openai", "azure-ai"]
    endpoint: str
    deployment: str = Field(min_length=1, max_length=256)
    api_version: str
    auth: Literal["key", "managed-identity"]
    api_key: SecretStr | None = None
    client_id: str | None = None
    scope: str = DEFAULT_SCOPE
    headers: dict[str, str] = Field(default_factory=dict)
    params: ParamsPolicy = Field(default_factory=ParamsPolicy)
    priority: int = Field(default=1, ge=0)
    weight: float = Field(default=1.0, ge=0)
    timeout: float = Field(default=60.0, gt=0, le=230)
    key_header: Literal["api-key", "bearer"]
    reasoning: bool
    family: Literal[FAMILY_NAMES] | None = None  # azure-ai v1 routes; None: detected from DEPLOYMENT

    @field_validator("model", "deployment")
    @classmethod
    def _no_outer_space(cls, value: str) -> str:
        if value != value.strip() or "/" in value:
            raise ValueError("must not contain '/' or leading/trailing spaces")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an absolute https:// URL, e.g. https://res.openai.azure.com")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("must use https (http is allowed only for loopback hosts)")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.strip().rstrip("/")

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if not value.startswith("https://") or not value.endswith("/.default"):
            raise ValueError("must be a resource scope ending in /.default, e.g. " + DEFAULT_SCOPE)
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        value = _json_object(value)
        for name, header_value in value.items():
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name!r} is set by the gateway and cannot be injected")
            if not isinstance(header_value, str) or "\n" in header_value or "\r" in header_value:
                raise ValueError(f"the value of {name!r} must be a single-line string")
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        return _json_object(value)

    @property
    def upstream_host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""

    def redacted(self) -> dict[str, Any]:
        """The route as `check` prints it: secrets replaced, nothing else hidden."""
        data = self.model_dump(mode="json", exclude={"api_key"})
        data["api_key"] = "<redacted>" if self.api_key else None
        data["headers"] = redacted_headers(self.headers)
        if self.backend == "azure-ai" and self.api_version == "v1":  # the rules it gets, detected or set
            data["family"] = self.family or detect_family(self.deployment, self.model)
        else:
            data.pop("family")
        return data


class GatewayConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_keys: tuple[SecretStr, ...] = ()
    auth: str = "keys"  # validated with the consumers (routing.config.consumers)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    cooldown: float = Field(default=10.0, ge=0)
    credential: Literal["managed-identity", "default"] = "managed-identity"
    # Seconds of silence allowed between two chunks of an upstream stream.
    stream_idle_timeout: float = Field(default=60.0, gt=0, le=230)
    # The whole request, failover and stream included; under the 230 s HTTP limit of Functions.
    total_timeout: float = Field(default=225.0, gt=0, le=230)
    # A non-streamed upstream answer larger than this is a 502, holding no more than it.
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, gt=0)
    # Seconds a client may take to upload its request body.
    body_timeout: float = Field(default=30.0, gt=0, le=230)
    # Bytes of request bodies being read at once across the instance; beyond it, 503.
    max_inflight_body_bytes: int = Field(default=DEFAULT_MAX_INFLIGHT_BODY_BYTES, gt=0)
    # Consecutive timed-out requests that rest a deployment (a circuit breaker): one slow request
    # fails over without cooling the deployment down for everyone.
    breaker_timeouts: int = Field(default=3, ge=1, le=1000)


class RouteTable:
    """All routes plus the gateway-wide settings; pools are routes sharing one MODEL."""

    def __init__(self, routes: list[Route], gateway: GatewayConfig, azure_client_id: str | None,
                 consumers: ConsumerTable | None = None):
        self.routes = routes
        self.gateway = gateway
        self.consumers = consumers
        self.azure_client_id = azure_client_id
        self.pools: dict[str, list[Route]] = {}
        self.routes_by_id: dict[str, Route] = {route.id: route for route in routes}
        for route in routes:
            self.pools.setdefault(route.model, []).append(route)

    @property
    def models(self) -> list[str]:
        return list(self.pools)

    def describe(self) -> dict[str, Any]:
        return {
            "gateway": {
                "GATEWAY_AUTH": self.gateway.auth,
                "GATEWAY_API_KEYS": f"<{len(self.gateway.api_keys)} redacted>",
                "GATEWAY_MAX_BODY_BYTES": self.gateway.max_body_bytes,
                "GATEWAY_COOLDOWN": self.gateway.cooldown,
                "GATEWAY_CREDENTIAL": self.gateway.credential,
                "GATEWAY_STREAM_IDLE_TIMEOUT": self.gateway.stream_idle_timeout,
                "GATEWAY_TOTAL_TIMEOUT": self.gateway.total_timeout,
                "GATEWAY_MAX_RESPONSE_BYTES": self.gateway.max_response_bytes,
                "GATEWAY_BODY_TIMEOUT": self.gateway.body_timeout,
                "GATEWAY_MAX_INFLIGHT_BODY_BYTES": self.gateway.max_inflight_body_bytes,
                "GATEWAY_BREAKER_TIMEOUTS": self.gateway.breaker_timeouts,
            },
            "models": {model: [r.id for r in pool] for model, pool in self.pools.items()},
            "consumers": self.consumers.describe() if self.consumers is not None else {},
            "routes": [route.redacted() for route in self.routes],
        }


def load_route_table(environ: Mapping[str, str]) -> RouteTable:
    """Validate every ROUTE__* and GATEWAY_* setting; raise SettingsError listing all errors."""
    errors: list[str] = []
    raw_routes: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.upper().startswith(ROUTE_PREFIX):
            continue
        parts = name[len(ROUTE_PREFIX):].split("__")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            errors.append(f"{name}: not a route setting; use ROUTE__<ID>__<FIELD>, "
                          f"FIELD one of {', '.join(ROUTE_FIELDS)}")
            continue
        route_id, field = parts[0], parts[1].upper()
        if field not in ROUTE_FIELDS:
            hint = difflib.get_close_matches(field, ROUTE_FIELDS, n=1)
            errors.append(f"{name}: unknown route field {parts[1]!r}"
                          + (f" (did you mean {ROUTE_PREFIX}{route_id}__{hint[0]}?)" if hint else "")
                          + f"; allowed: {', '.join(ROUTE_FIELDS)}")
            continue
        raw_routes.setdefault(route_id, {})[field] = value

    routes = []
    for route_id in sorted(raw_routes):
        route, route_errors = _build_route(route_id, raw_routes[route_id], environ)
        errors.extend(route_errors)
        if route is not None:
            routes.append(route)

    gateway, gateway_errors = _build_gateway(environ)
    errors.extend(gateway_errors)
    consumers, consumer_errors = load_consumers(environ, (r.model for r in routes))
    errors.extend(consumer_errors)
    if errors:
        raise SettingsError(errors)
    return RouteTable(routes, gateway, environ.get("AZURE_CLIENT_ID") or None, consumers)


def _build_route(route_id: str, raw: dict[str, str], environ: Mapping[str, str]):
    def setting(field: str) -> str:
        return f"{ROUTE_PREFIX}{route_id}__{field}"

    errors: dict[str, str] = {}  # FIELD → message; one error per field, all fields checked
    for field, hint in (("MODEL", "the public model name clients send"),
                        ("BACKEND", "azure-openai or azure-ai"), ("ENDPOINT", "the upstream base URL")):
        if not raw.get(field, "").strip():
            errors[field] = f"required ({hint})"
    if not re.fullmatch(r"[A-Za-z0-9_.]{1,64}", route_id):
        errors["MODEL"] = f"route id {route_id[:80]!r} may contain only letters, digits, '.' and '_' (at most 64)"

    backend = raw.get("BACKEND", "").strip().lower()
    if backend and backend not in BACKENDS:
        errors["BACKEND"] = f"{raw['BACKEND']!r} is not a backend; allowed: {', '.join(BACKENDS)}"
    api_key = raw.get("API_KEY", "").strip() or None
    if api_key and api_key.lower().startswith(KEY_VAULT_REFERENCE):
        errors["API_KEY"] = ("the Key Vault reference was not resolved by the platform; grant the "
                             "app's identity 'Key Vault Secrets User' on the vault and set "
                             "keyVaultReferenceIdentity (see the README, Key Vault references)")
    auth = raw.get("AUTH", "").strip().lower() or ("key" if api_key else "managed-identity")
    if auth == "key" and not api_key:
        errors["API_KEY"] = (f"required when {setting('AUTH')} is 'key' "
                             "(the key, or a @Microsoft.KeyVault(...) reference)")
    if auth == "managed-identity" and api_key:
        errors["API_KEY"] = f"set while {setting('AUTH')} is managed-identity; remove one of them"

    model = raw.get("MODEL", "").strip()
    deployment = raw.get("DEPLOYMENT", "").strip() or model
    api_version = raw.get("API_VERSION", "").strip() or DEFAULT_API_VERSION.get(backend, "")
    if backend in BACKENDS and not (API_VERSION.match(api_version) or api_version == "v1"):
        errors["API_VERSION"] = (f"{api_version!r} is not an api-version; allowed: YYYY-MM-DD, "
                                 "YYYY-MM-DD-preview or v1")
    host = urlsplit(raw.get("ENDPOINT", "").strip()).hostname or ""
    errors.update(foundry_v1_errors(backend, api_version, raw, host, setting))
    reasoning = raw.get("REASONING", "").strip().lower() or any(
        name.lower().startswith(REASONING_PREFIXES) for name in (deployment, model) if name)

    values: dict[str, Any] = {
        "id": route_id, "model": model, "backend": backend, "endpoint": raw.get("ENDPOINT", ""),
        "deployment": deployment, "api_version": api_version, "auth": auth, "api_key": api_key,
        "client_id": raw.get("CLIENT_ID", "").strip() or environ.get("AZURE_CLIENT_ID") or None,
        # Azure OpenAI always takes `api-key`; Azure AI by host (serverless hosts take Bearer).
        "key_header": raw.get("KEY_HEADER", "").strip().lower() or (
            "api-key" if backend == "azure-openai" or host.lower().endswith(API_KEY_HEADER_HOST_SUFFIXES)
            else "bearer"),
        "reasoning": reasoning,
    }
    if backend == "azure-ai" and api_version == "v1":
        values["scope"] = FOUNDRY_V1_SCOPE  # what Foundry documents for its v1 endpoint
    for field in ("SCOPE", "HEADERS", "PARAMS", "PRIORITY", "WEIGHT", "TIMEOUT", "FAMILY"):
        if raw.get(field, "").strip():
            values[ROUTE_FIELDS[field]] = raw[field].strip()
    try:
        route = Route.model_validate(values)
    except ValidationError as exc:
        route = None
        for error in exc.errors():
            field, message = _error_field_message(error, _ATTR_TO_FIELD)
            if field in raw or not errors:  # else it is derived from a field already in error
                errors.setdefault(field, message)
    if errors:
        ordered = [f for f in ROUTE_FIELDS if f in errors]
        return None, [f"{setting(field)}: {errors[field]}" for field in ordered]
    return route, []


def _build_gateway(environ: Mapping[str, str]):
    values: dict[str, Any] = {}
    errors = []
    keys = tuple(k.strip() for k in environ.get("GATEWAY_API_KEYS", "").split(",") if k.strip())
    values["api_keys"] = keys
    for name, attr in (("GATEWAY_AUTH", "auth"), ("GATEWAY_MAX_BODY_BYTES", "max_body_bytes"),
                       ("GATEWAY_COOLDOWN", "cooldown"), ("GATEWAY_CREDENTIAL", "credential"),
                       ("GATEWAY_STREAM_IDLE_TIMEOUT", "stream_idle_timeout"),
                       ("GATEWAY_TOTAL_TIMEOUT", "total_timeout"),
                       ("GATEWAY_MAX_RESPONSE_BYTES", "max_response_bytes"),
                       ("GATEWAY_BODY_TIMEOUT", "body_timeout"),
                       ("GATEWAY_MAX_INFLIGHT_BODY_BYTES", "max_inflight_body_bytes"),
                       ("GATEWAY_BREAKER_TIMEOUTS", "breaker_timeouts")):
        if environ.get(name, "").strip():
            values[attr] = environ[name].strip().lower()
    try:
        gateway = GatewayConfig.model_validate(values)
    except ValidationError as exc:
        return None, ["GATEWAY_%s: %s" % _error_field_message(e, _GATEWAY_FIELDS) for e in exc.errors()]
    if gateway.max_inflight_body_bytes < gateway.max_body_bytes:
        errors.append(f"GATEWAY_MAX_INFLIGHT_BODY_BYTES: {gateway.max_inflight_body_bytes} is below "
                      f"GATEWAY_MAX_BODY_BYTES ({gateway.max_body_bytes}); one request of the "
                      "largest allowed size must fit")
    return gateway, errors


_ATTR_TO_FIELD = {attr: field for field, attr in ROUTE_FIELDS.items()}
_GATEWAY_FIELDS = {"api_keys": "API_KEYS", "auth": "AUTH", "max_body_bytes": "MAX_BODY_BYTES",
                   "cooldown": "COOLDOWN", "credential": "CREDENTIAL",
                   "stream_idle_timeout": "STREAM_IDLE_TIMEOUT", "total_timeout": "TOTAL_TIMEOUT",
                   "max_response_bytes": "MAX_RESPONSE_BYTES", "body_timeout": "BODY_TIMEOUT",
                   "max_inflight_body_bytes": "MAX_INFLIGHT_BODY_BYTES",
                   "breaker_timeouts": "BREAKER_TIMEOUTS"}


def _error_field_message(error: dict, fields: dict[str, str]) -> tuple[str, str]:
    """A pydantic error → (setting field, message an operator can act on)."""
    attr = str(error["loc"][0]) if error["loc"] else ""
    field = fields.get(attr, attr.upper())
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "literal_error":
        message = f"{error['input']!r} is not allowed; {message[0].lower()}{message[1:]}"
    elif error["type"] == "extra_forbidden" and attr == "params":
        message = f"unknown key {error['loc'][-1]!r}; allowed: drop, rename, defaults, set"
    elif error["loc"][1:]:
        message = f"{'.'.join(str(p) for p in error['loc'][1:])}: {message}"
    return field, message


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        try:
            # No NaN/Infinity: a PARAMS value is sent upstream, where it must be strict JSON.
            value = json.loads(value, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"not valid JSON ({name} is not a JSON value)")


def redacted_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: "<redacted>" if SECRET_HEADER_NAME.search(name) else value
            for name, value in headers.items()}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
