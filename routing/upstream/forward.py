"""Send a normalised request to the pool's deployments, in order, until one answers.

Until the first byte reaches the client, a 429, 408, 5xx, connect error, timeout, an answer
that breaks the protocol (a non-JSON success, a stream request answered without an event
stream, a first event that is not JSON) or a stream that breaks before its first event moves to
the next deployment at once (no server-side sleep). The failed deployment rests for the
upstream's retry hint or GATEWAY_COOLDOWN, except after a timeout: one slow request does not
rest a deployment for everyone, consecutive ones do (the circuit breaker in `pool`). Other 4xx
are returned, reduced to the OpenAI error fields. 401/403 mean the gateway's own upstream
credentials are wrong: the client gets 502 naming the route and the log says so. A non-stream
answer larger than GATEWAY_MAX_RESPONSE_BYTES is a 502, never held whole. Every byte from an
upstream passes the secret scrubber. Every attempt shares one deadline (GATEWAY_TOTAL_TIMEOUT)
so a request always ends in bounded time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from starlette.responses import Response

from routing.config.settings import Route
from routing.errors import GatewayError, map_upstream_error
from routing.telemetry.record import RequestRecord
from routing.telemetry.redaction import SECRETS
from routing.upstream.normalize import dropped_header, normalize
from routing.upstream.retry_hints import retry_delay
from routing.upstream.sse import EventStream, first_events, relay
from routing.upstream.sse_events import NOT_JSON, EventTooLarge, checked_json_object
from routing.upstream.usage import UsageChunk, asks_for_usage
from routing.upstream.stream_response import EventStreamResponse

log = logging.getLogger("routing.upstream.forward")
# Upstream response headers worth handing to the client (rate-limit state, for client backoff).
FORWARDED_RESPONSE_HEADERS = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
                              "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens")
# ... and only when their value is a count or an OpenAI duration (`6s`, `1m30s`, `250ms`):
# anything else an upstream puts there (a reflected request header) stays behind.
FORWARDED_VALUE = re.compile(r"[0-9]{1,15}|(?:[0-9]{1,9}(?:\.[0-9]{1,6})?(?:ms|s|m|h)){1,4}")
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
    # What the access log and metrics get (api opens it; streams close it when they end).
    record: RequestRecord = field(default_factory=lambda: RequestRecord(""))
    # Other calls than a POST of `body` to the operation's URL (the Responses API's follow-ups):
    method: str = "POST"
    url_suffix: str = ""  # appended to the operation's URL path (`/{id}/cancel`)
    query: dict[str, str] | None = None  # the upstream URL's query instead of its own
    send_body: bool = True
    streaming: bool | None = None  # a stream asked for outside the body (`GET ...?stream=true`)
    # Another API's stream events (the Responses API): (route) → the EventStream's adapter.
    events: Callable[[Route], Any] | None = None
    # A JSON answer rewritten before it is returned: (answer, route) → answer.
    rewrite: Callable[[dict[str, Any], Route], dict[str, Any]] | None = None

    @property
    def stream(self) -> bool:
        return self.streaming if self.streaming is not None else self.body.get("stream") is True

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
    reason: str = ""  # for "broken": what was wrong, in the exhausted pool's message
    protocol: bool = False  # the upstream answered, but not in the API's protocol

    @property
    def summary(self) -> str:
        return f"route '{self.route.id}': " + (f"HTTP {self.status}" if self.status else self.reason or self.kind)


class ResponseTooLarge(Exception):
    pass


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
        call.record.route, call.record.backend, call.record.attempts = route.id, route.backend, attempt
        try:
            outcome = await _attempt(gateway, call, route)
        except GatewayError:
            gateway.selector.answered(route)  # it answered in time, just not usefully
            raise
        if isinstance(outcome, Response):
            gateway.selector.answered(route)
            return outcome
        failures.append(outcome)
        _after_failure(gateway, call, outcome, more=attempt < len(order))
    raise _exhausted(gateway, call, failures)


def _after_failure(gateway, call: Call, failure: Failure, more: bool) -> None:
    """Rest the failed deployment: for the upstream's hint or GATEWAY_COOLDOWN after an answer
    or a connect error, only when the circuit breaker opens after a timeout."""
    settings, selector, route = gateway.table.gateway, gateway.selector, failure.route
    next_step = "; trying the next deployment" if more else ""
    if failure.kind == "timeout":
        if selector.timed_out(route, settings.breaker_timeouts, settings.cooldown, call.record.consumer):
            log.warning("request %s: route %s timed out, %d times in a row: resting it %.1f s "
                        "(circuit breaker)%s", call.request_id, route.id, settings.breaker_timeouts,
                        settings.cooldown, next_step)
        else:
            log.warning("request %s: route %s timed out%s", call.request_id, route.id, next_step)
        return
    if failure.kind != "connect":
        selector.answered(route)  # an answer, however bad, is not a slow deployment
    hint = retry_delay(failure.headers)
    rest = hint if hint is not None else settings.cooldown
    what = failure.status or failure.reason or failure.kind
    # 429/408 and connect errors say the deployment is busy or down, whoever asked; a 5xx or a
    # broken answer may be the request's doing: it needs two consumers to rest the deployment.
    if failure.kind == "broken" or failure.status >= 500:
        if not selector.server_error(route, call.record.consumer, rest):
            log.warning("request %s: route %s failed (%s)%s", call.request_id, route.id, what, next_step)
            return
    else:
        selector.rest(route, rest)
    log.warning("request %s: route %s failed (%s), resting it %.1f s%s", call.request_id, route.id,
                what, rest, next_step)


async def _attempt(gateway, call: Call, route: Route) -> Response | Failure:
    if call.send_body:
        body, dropped = normalize(call.body, gateway.rules(route, call.operation), route.params,
                                  route.deployment)
    else:
        body, dropped = {}, []
    if dropped:
        call.headers["x-gateway-dropped-params"] = dropped_header(dropped)
    else:
        call.headers.pop("x-gateway-dropped-params", None)
    call.record.dropped_params = len(dropped)
    # Usage is counted for every stream (DESIGN §12): ask for it where the client did not.
    own_usage = call.stream and not call.wants_usage and asks_for_usage(body, route, call.operation,
                                                                         gateway.rules(route, call.operation))
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
    payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode() if call.send_body else None
    if not call.send_body:
        del headers["content-type"]
    wait = min(route.timeout, call.deadline - loop.time())
    response = None
    stream: EventStream | None = None
    first = content = b""
    waited = time.perf_counter()
    try:
        async with asyncio.timeout(wait):
            # No redirects: they would carry the route's key to another origin.
            url = gateway.url(route, call.operation)
            if call.url_suffix:
                url = url.with_path(url.raw_path + call.url_suffix, encoded=True)
            if call.query is not None:
                url = url.with_query(call.query)
            response = await gateway.client.request(call.method, url, data=payload, headers=headers,
                                                    allow_redirects=False)
            status = response.status
            if call.stream and status < 300 and _is_event_stream(response):
                usage = (UsageChunk() if call.wants_usage and route.backend == "azure-ai" and call.events is None
                         else None)  # an adapter (Responses) takes usage from its own events
                stream = EventStream(route.id, usage, call.record, strip_usage=own_usage,
                                     adapter=call.events(route) if call.events is not None else None)
                chunks = response.content.iter_any().__aiter__()
                # Commit to this deployment only once its first event arrived and passed the
                # checks: until a byte reached the client, a broken stream can still fail over.
                first = await _closing_on_error(response, first_events(stream, chunks))
            elif status >= 400 or (status < 300 and not call.stream):
                limit = MAX_ERROR_BODY if status >= 400 else gateway.table.gateway.max_response_bytes
                content = await _closing_on_error(response, _read_body(response, limit, cut=status >= 400))
                response.release()
            else:
                response.close()  # a redirect, or no event stream for a stream: the body is unused
    except TimeoutError:
        return Failure(route, "timeout")
    except StopAsyncIteration:
        return Failure(route, "broken", reason="the stream ended before its first event")
    except EventTooLarge:
        return Failure(route, "broken", reason="an oversized first event")
    except ResponseTooLarge:
        limit = gateway.table.gateway.max_response_bytes
        log.error("route %s: the upstream's answer is larger than GATEWAY_MAX_RESPONSE_BYTES (%d)",
                  route.id, limit)
        # Not failed over and no cooldown: the deployment is up, and another deployment of the
        # same model would most likely answer the same request as largely.
        raise GatewayError(502, f"The upstream's answer is larger than the gateway's limit of "
                           f"{limit} bytes (GATEWAY_MAX_RESPONSE_BYTES; route '{route.id}').",
                           code="upstream_response_too_large", headers=NO_RETRY) from None
    except (aiohttp.ClientError, OSError) as exc:
        log.info("route %s: transport error %s", route.id, type(exc).__name__)
        if response is None:
            return Failure(route, "connect")
        return Failure(route, "broken", reason=f"the answer broke off ({type(exc).__name__})")
    finally:
        call.record.upstream_seconds += time.perf_counter() - waited  # not the gateway's overhead

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
    # A consumer with limits gets its own window's headers (already in call.headers), not the upstream's.
    headers = call.headers if call.record.limit_headers else {**call.headers, **forwarded_headers(response.headers)}
    if status >= 400:
        mapped = map_upstream_error(status, content)
        call.record.error_code = mapped["error"]["code"]
        return Response(SECRETS.scrub_bytes(json.dumps(mapped).encode()), status_code=status,
                        media_type="application/json", headers=headers)
    if not call.stream:
        if call.method == "DELETE" and not content.strip():
            return Response(status_code=status, headers=headers)
        answer = checked_json_object(content)
        if answer is NOT_JSON:
            return _protocol_failure(route, "a success answer that is not a JSON object (or holds "
                                     "more arrays and objects than any real answer)")
        call.record.take_usage(answer.get("usage"))
        call.record.response_model = answer.get("model") if isinstance(answer.get("model"), str) else None
        if call.rewrite is not None:
            content = json.dumps(call.rewrite(answer, route), separators=(",", ":"), ensure_ascii=False).encode()
        return Response(SECRETS.scrub_json(content), status_code=status, headers=headers,
                        media_type="application/json")
    if stream is None:
        return _protocol_failure(route, "a streamed request answered without an event stream")
    if stream.protocol_error:
        response.close()
        return _protocol_failure(route, "a first event that is not a JSON object")
    events = relay(response, chunks, stream, first, idle=gateway.table.gateway.stream_idle_timeout,
                   deadline=call.deadline)
    call.record.mark_first_byte()
    return EventStreamResponse(events, response, status, {**headers, "cache-control": "no-cache"},
                               deadline=call.deadline, route_id=route.id, record=call.record,
                               stream=stream)


def _protocol_failure(route: Route, reason: str) -> Failure:
    log.error("route %s: the upstream broke the protocol: %s", route.id, reason)
    return Failure(route, "broken", reason=reason, protocol=True)


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("content-type", "").lower().startswith("text/event-stream")


def forwarded_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    """The rate-limit headers worth passing on, when their values are well-formed."""
    kept = {}
    for name in FORWARDED_RESPONSE_HEADERS:
        value = upstream.get(name)
        if value is not None and FORWARDED_VALUE.fullmatch(value) and not SECRETS.found_in(value):
            kept[name] = value
    return kept


async def _closing_on_error(response: aiohttp.ClientResponse, work):
    try:
        return await work
    except BaseException:
        response.close()  # a half-read body: the connection cannot be reused
        raise


async def _read_body(response: aiohttp.ClientResponse, limit: int, cut: bool) -> bytes:
    """The body, holding no more than `limit` bytes (content-length checked first, then as it
    arrives). Past the limit: its first `limit` bytes when `cut` (error bodies), else
    ResponseTooLarge."""
    if not cut and (response.content_length or 0) > limit:
        raise ResponseTooLarge
    pieces: list[bytes] = []
    size = 0
    while chunk := await response.content.readany():
        if size + len(chunk) > limit:
            if not cut:
                raise ResponseTooLarge
            pieces.append(chunk[:limit - size])
            break
        pieces.append(chunk)
        size += len(chunk)
    return b"".join(pieces)


def _rate_limited(call: Call, wait: float, why: str) -> GatewayError:
    seconds = max(1, math.ceil(wait))
    return GatewayError(429, f"The deployments of model '{call.model}' are rate limited ({why}). "
                        f"Retry after {seconds} seconds.", code="rate_limit_exceeded",
                        headers={"retry-after": str(seconds)})


def _exhausted(gateway, call: Call, failures: list[Failure]) -> GatewayError:
    summary = "; ".join(f.summary for f in failures) or "no time left"
    if any(f.status == 429 for f in failures):
        return _rate_limited(call, gateway.selector.shortest_wait(call.pool), summary)
    if all(f.kind == "timeout" for f in failures):
        return GatewayError(504, f"No deployment of model '{call.model}' answered in time ({summary}).",
                            code="upstream_timeout")
    if failures and all(f.protocol for f in failures):
        return GatewayError(502, f"No deployment of model '{call.model}' answered in the API's "
                            f"protocol ({summary}).", code="upstream_protocol_error")
    last = next((f for f in reversed(failures) if f.kind == "status"), None)
    # The upstream's message is quoted reduced; `error_response` scrubs the whole body.
    detail = map_upstream_error(last.status, last.body)["error"]["message"] if last else ""
    return GatewayError(502, f"Every deployment of model '{call.model}' failed ({summary})."
                        + (f" Last upstream error: {detail}" if detail else ""), code="upstream_error")
