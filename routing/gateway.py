"""The per-process gateway: the route table and everything built once from it.

The only process-wide state (DESIGN §2): the shared HTTP client, the credentials, the
cooldown table and the state store of limits and shared cooldowns (§11). The HTTP client is created on first use, inside the serving event
loop (aiohttp sessions belong to the loop that made them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping

import aiohttp
from yarl import URL

from routing.upstream.backends import BACKENDS, OperationRules
from routing.upstream.credentials import Credentials
from routing.errors import GatewayError
from routing.inbound.auth import InboundAuth
from routing.limits.limiter import Limiter
from routing.responses.ids import IdCodec
from routing.state import MemoryStore, StateStore, store_from_settings
from routing.upstream.pool import Selector
from routing.config.settings import Route, RouteTable, SettingsError, load_route_table
from routing.telemetry.metrics import configure_metrics
from routing.telemetry.redaction import SECRETS, install_log_redaction

log = logging.getLogger("routing")


class Gateway:
    def __init__(self, table: RouteTable, state: StateStore | None = None, id_secret: bytes | None = None):
        self.table = table
        self.inbound = InboundAuth(table.consumers)
        self.credentials = Credentials(table.gateway.credential)
        self.state = state if state is not None else MemoryStore()
        # A cooldown this instance decides is shared with the others through the store.
        self.selector = Selector(on_rest=self._share_cooldown if self.state.name != "memory" else None,
                                 consumers=len(table.consumers.consumers) if table.consumers else 1)
        self.limiter = Limiter(self.state, self.selector.merge_shared)
        self.ids = IdCodec(id_secret if id_secret is not None else os.urandom(32))
        self._background: set[asyncio.Task] = set()
        # Foundry v1 routes whose deployment lacks the Responses API → until when (monotonic).
        self.without_responses: dict[str, float] = {}
        self._client: aiohttp.ClientSession | None = None  # made in the serving loop
        self._urls: dict[tuple[str, str], URL] = {}
        self._rules: dict[tuple[str, str], OperationRules] = {}

    def url(self, route: Route, operation: str) -> URL:
        """The upstream URL, parsed once per (route, operation)."""
        key = (route.id, operation)
        url = self._urls.get(key)
        if url is None:
            url = self._urls[key] = URL(BACKENDS[route.backend].url(route, operation), encoded=True)
        return url

    def rules(self, route: Route, operation: str) -> OperationRules:
        """The route's backend rules for an operation, composed once."""
        key = (route.id, operation)
        rules = self._rules.get(key)
        if rules is None:
            rules = self._rules[key] = BACKENDS[route.backend].rules_for(route, operation)
        return rules

    def _share_cooldown(self, route_id: str, seconds: float) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self.state.cool_down(route_id, time.time() + seconds))
        except RuntimeError:
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = create_session()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self.credentials.aclose()
        await self.state.close()


def create_session() -> aiohttp.ClientSession:
    """The shared upstream client: one aiohttp session (pool of 1000), no cookies kept, no
    decompression (bodies are relayed as they come), connect timeout only (phases are bounded
    by the caller's deadlines).

    aiohttp rather than httpx: measured in bench/, httpx's client layer, even over the
    httpx-aiohttp transport, cost ~0.3 ms CPU per request and half the throughput at 32
    concurrent, and with it the gateway missed every DESIGN §7 target; without it, it meets them.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30),
        cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))


_gateway: Gateway | None = None
_errors: list[str] = []


def configure(environ: Mapping[str, str] | None = None) -> Gateway:
    """Build the gateway from settings (once per process). Raises SettingsError."""
    global _gateway, _errors
    environ = os.environ if environ is None else environ
    install_log_redaction()
    quiet_azure_sdk_logging()
    access = logging.getLogger("routing.access")
    if access.level == logging.NOTSET:  # one record per request at INFO, whatever the root's level
        access.setLevel(logging.INFO)
    # Register what is known before validating: an error line must not echo a secret either.
    SECRETS.add_all("environment", (environ.get(name) for name in SECRET_ENVIRONMENT))
    try:
        table = load_route_table(environ)
    except SettingsError as exc:
        _gateway, _errors = None, exc.errors
        raise
    if table.gateway.auth == "none":
        log.warning("GATEWAY_AUTH=none: the gateway accepts requests without a key; run it only "
                    "behind another authenticating layer")
    register_secrets(table)
    try:
        state = store_from_settings(environ)
    except ValueError as exc:
        _gateway, _errors = None, [str(exc)]
        raise SettingsError([str(exc)]) from None
    secret = (environ.get("GATEWAY_ID_SECRET") or "").strip()
    if secret and len(secret) < MIN_ID_SECRET_CHARS:
        _gateway, _errors = None, [f"GATEWAY_ID_SECRET: at least {MIN_ID_SECRET_CHARS} characters "
                                   "(e.g. `python -c \"import secrets; print(secrets.token_urlsafe(48))\"`)"]
        raise SettingsError(_errors)
    if not secret and any(r.backend == "azure-openai" for r in table.routes):
        log.warning("GATEWAY_ID_SECRET is not set: response ids are valid on this instance only, until it "
                    "restarts (set one secret for every instance; infra/ generates it in Key Vault)")
    _gateway, _errors = Gateway(table, state, secret.encode() if secret else None), []
    if configure_metrics(environ) and hasattr(state, "degraded_total"):  # nothing imported unless an exporter is set
        from routing.telemetry.metrics import register_extra
        from routing.telemetry.state_metrics import state_gauges

        register_extra(state_gauges(state))
    return _gateway


# Environment variables holding secrets the gateway never configures itself (the App Service
# managed-identity protocol's header, older MSI names).
SECRET_ENVIRONMENT = ("IDENTITY_HEADER", "MSI_SECRET", "AZURE_CLIENT_SECRET", "GATEWAY_STATE_KEY",
                      "GATEWAY_ID_SECRET")
MIN_ID_SECRET_CHARS = 32


def register_secrets(table: RouteTable) -> None:
    """Every key of the table joins the redaction registry (tokens join as they are fetched)."""
    SECRETS.add_all("route-keys", (r.api_key.get_secret_value() for r in table.routes if r.api_key))
    SECRETS.add_all("inbound-keys", (k.get_secret_value() for k in table.gateway.api_keys))
    if table.consumers is not None:
        SECRETS.add_all("consumer-keys", (k.get_secret_value() for c in table.consumers.consumers.values()
                                          for k in c.keys))


# azure-core logs every identity request and response at INFO (~15 lines per token fetch).
QUIET_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def quiet_azure_sdk_logging() -> None:
    """Azure SDK chatter at WARNING and above, unless the operator set a level for it."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def configure_logged() -> None:
    """For the Functions host: validate at cold start and log every error, naming its setting."""
    try:
        configure()
    except SettingsError as exc:
        for line in exc.errors:
            log.error("invalid configuration: %s", line)


def configured() -> Gateway | None:
    """The gateway if one was built (for shutdown), without building one."""
    return _gateway


def current() -> Gateway:
    if _gateway is None and not _errors:
        configure_logged()
    if _gateway is None:
        raise GatewayError(503, f"The gateway's configuration is invalid ({len(_errors)} error(s)); "
                           "the operator must fix the app settings named in the gateway logs.",
                           code="invalid_configuration")
    return _gateway
