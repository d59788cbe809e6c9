"""Send a normalised request to the pool's deployments, in order, until one answers.

Until the first byte reaches the client, a 429, 408, 5xx, connect error, timeout or a stream
that breaks before its first chunk moves to the next deployment at once (no server-side sleep)
and rests the failed one for the upstream's retry hint or GATEWAY_COOLDOWN. Other 4xx are
returned as they are. 401/403 mean the gateway's own upstream credentials are wrong: the client
gets 502 naming the route and the log says so. Every attempt shares one deadline
(GATEWAY_TOTAL_TIMEOUT) so a request always ends in bounded time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from starlette.responses import Response

from routing.errors import GatewayError, map_upstream_error
from routing.upstream.normalize import dropped_header, normalize
from routing.upstream.retry_hints import retry_delay
from routing.config.settings import Route
from routing.upstream.sse import UsageChunk, next_chunk, relay
from routing.upstream.stream_response import EventStreamResponse

log = logging.getLogger("routing.upstream.forward")
# Upstream response headers worth handing to the client (rate-limit state, for client backoff).
FORWARDED_RESPONSE_HEADERS = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
                              "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens")
MAX_ERROR_BODY = 64 * 1024
# An error that retrying cannot fix: the `openai` SDK honours this header and does not retry.
NO_RETRY = {"x-should-retry": "false"}


@dataclass
class Call:
    """One client request, validated, ready to be sent to any route of its pool."""

    request_id: str
    operation: str
    model: str
    body: dict[str, Any]
    pool: list[Route]
    user_agent: str | None
    deadline: float  # event-loop time by which the whole request must be over
    headers: dict[str, str] = field(default_factory=dict)  # response headers so far

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def wants_usage(self) -> bool:
        options = self.body.get("stream_options")
        return self.stream and isinstance(options, dict) and options.get("include_usage") is True


@dataclass
class Failure:
    route: Route
    kind: str  # "status" | "timeout" | "connect" | "broken"
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


async def forward(gateway, call: Call) -> Response:
    order = gateway.selector.order(call.pool)
    if not order:
        if not any(route.weight > 0 for route in call.pool):
            raise GatewayError(503, f"Every deployment of model '{call.model}' is drained "
                               "(WEIGHT=0); the operator must enable one.", code="model_unavailable")
        raise _rate_limited(call, gateway.selector.shortest_wait(call.pool),
                            "every deployment is cooling down after errors")
    loop = asyncio.get_running_loop()
    failures: list[Failure] = []
    for attempt, route in enumerate(order, start=1):
        if call.deadline - loop.time() <= 0:
            break
        call.headers["x-gateway-route"] = route.id
        call.headers["x-gateway-attempts"] = str(attempt)
        outcome = await _attempt(gateway, call, route)
        if isinstance(outcome, Response):
            return outcome
        failures.append(outcome)
        hint = retry_delay(outcome.headers)
        rest = hint if hint is not None else gateway.table.gateway.cooldown
        gateway.selector.rest(route, rest)
        log.warning("request %s: route %s failed (%s), resting it %.1f s%s", call.request_id,
                    route.id, outcome.status or outcome.kind, rest,
                    "; trying the next deployment" if attempt < len(order) else "")
    raise _exhausted(gateway, call, failures)


async def _attempt(gateway, call: Call, route: Route) -> Response | Failure:
    body, dropped = normalize(call.body, gateway.rules(route, call.operation), route.params,
                              route.deployment)
    if dropped:
        call.headers["x-gateway-dropped-params"] = dropped_header(dropped)
    else:
        call.headers.pop("x-gateway-dropped-params", None)
    loop = asyncio.get_running_loop()
    if route.auth == "key":
        auth_name, auth_value = gateway.credentials.key_header(route)
    else:
        try:
            async with asyncio.timeout(min(route.timeout, call.deadline - loop.time())):
                # a slow identity endpoint counts against the route's time
                auth_name, auth_value = await gateway.credentials.token_header(route)
        except TimeoutError:
            return Failure(route, "timeout")
    headers = {
        "content-type": "application/json",
        "accept": "text/event-stream" if call.stream else "application/json",
        "accept-encoding": "identity",
        "user-agent": call.user_agent or "azure-llm-gateway",
        "x-ms-client-request-id": call.request_id,
        **route.headers,
        auth_name: auth_value,
    }
    payload = json.dumps(body, separators=(",", ":")).encode()
    wait = min(route.timeout, call.deadline - loop.time())
    first = b""
    try:
        async with asyncio.timeout(wait):
            # No redirects: they would carry the route's key to another origin.
            response = await gateway.client.post(gateway.url(route, call.operation), data=payload,
                                                 headers=headers, allow_redirects=False)
            if not call.stream or response.status >= 300 or not _is_event_stream(response):
                try:
                    content = await _read_bounded(response)
                finally:
                    response.release()
            else:
                # Commit to this deployment only once its first chunk arrived: a stream that
                # breaks before any byte reached the client can still fail over.
                chunks = response.content.iter_any().__aiter__()
                try:
                    first = await next_chunk(chunks, wait)
                except BaseException:
                    response.close()
                    raise
    except TimeoutError:
        return Failure(route, "timeout")
    except StopAsyncIteration:
        return Failure(route, "broken")
    except (aiohttp.ClientError, OSError) as exc:
        log.info("route %s: transport error %s", route.id, type(exc).__name__)
        return Failure(route, "connect")

    status = response.status
    if status in (408, 429) or status >= 500:
        return Failure(route, "status", status, content, {k.lower(): v for k, v in response.headers.items()})
    if 300 <= status < 400:
        log.error("route %s: the upstream answered HTTP %d (a redirect): check ROUTE__%s__ENDPOINT",
                  route.id, status, route.id)
        raise GatewayError(502, f"The upstream of route '{route.id}' answered with a redirect "
                           f"(HTTP {status}); the route's endpoint must be fixed.",
                           code="upstream_error", headers=NO_RETRY)
    if status in (401, 403):
        log.error("route %s: the upstream REJECTED THE GATEWAY'S CREDENTIALS (HTTP %d, auth %s) - "
                  "check ROUTE__%s__AUTH / API_KEY and the identity's role assignments",
                  route.id, status, route.auth, route.id)
        raise GatewayError(502, f"The upstream of route '{route.id}' rejected the gateway's "
                           f"credentials (HTTP {status}); the gateway's configuration must be fixed.",
                           code="upstream_auth_failed", headers=NO_RETRY)
    headers = {**call.headers, **{k: response.headers[k] for k in FORWARDED_RESPONSE_HEADERS
                                  if k in response.headers}}
    if status >= 400:
        return Response(json.dumps(map_upstream_error(status, content)).encode(), status_code=status,
                        media_type="application/json", headers=headers)
    if not call.stream:
        return Response(content, status_code=status, headers=headers,
                        media_type=response.headers.get("content-type", "application/json"))
    if not _is_event_stream(response):
        log.error("route %s: a streamed request was answered with %r, not an event stream",
                  route.id, response.headers.get("content-type"))
        raise GatewayError(502, f"The upstream of route '{route.id}' answered a streamed request "
                           "without an event stream.", code="upstream_protocol_error", headers=NO_RETRY)
    usage = UsageChunk() if call.wants_usage and route.backend == "azure-ai" else None
    events = relay(response, chunks, first, route.id, usage,
                   idle=gateway.table.gateway.stream_idle_timeout, deadline=call.deadline)
    return EventStreamResponse(events, response, status, {**headers, "cache-control": "no-cache"})


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    if response.status < 300:
        return await response.read()
    content = b""  # an error body, read to its end or the cap (it may arrive in pieces)
    while len(content) < MAX_ERROR_BODY:
        chunk = await response.content.readany()
        if not chunk:
            break
        content += chunk
    return content[:MAX_ERROR_BODY]


def _rate_limited(call: Call, wait: float, why: str) -> GatewayError:
    seconds = max(1, math.ceil(wait))
    return GatewayError(429, f"The deployments of model '{call.model}' are rate limited ({why}). "
                        f"Retry after {seconds} seconds.", code="rate_limit_exceeded",
                        headers={"retry-after": str(seconds)})


def _exhausted(gateway, call: Call, failures: list[Failure]) -> GatewayError:
    summary = "; ".join(f"route '{f.route.id}': " + (f"HTTP {f.status}" if f.status else f.kind)
                        for f in failures) or "no time left"
    if any(f.status == 429 for f in failures):
        return _rate_limited(call, gateway.selector.shortest_wait(call.pool), summary)
    if all(f.kind == "timeout" for f in failures):
        return GatewayError(504, f"No deployment of model '{call.model}' answered in time ({summary}).",
                            code="upstream_timeout")
    last = next((f for f in reversed(failures) if f.kind == "status"), None)
    detail = map_upstream_error(last.status, last.body)["error"]["message"] if last else ""
    return GatewayError(502, f"Every deployment of model '{call.model}' failed ({summary})."
                        + (f" Last upstream error: {detail}" if detail else ""), code="upstream_error")
