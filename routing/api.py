"""The HTTP handlers, Starlette-level: `function_app.py` registers them with Azure Functions and
`routing.server` serves the same functions on uvicorn.

Each proxied request: inbound key (before any body byte is read: unauthenticated callers hold
no body memory) → body (`inbound.body`: size, time and in-flight bounds; strict JSON object) →
model → pool → validation → `forward`. Every response carries `x-request-id`; routed ones
`x-gateway-route` and `x-gateway-attempts`. Every failure is an OpenAI-shaped error.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from routing import gateway as runtime
from routing.upstream.backends import BACKENDS
from routing.errors import GatewayError, error_response
from routing.upstream.forward import Call, forward
from routing.inbound.body import read_json_body
from routing.inbound.validate import validate_body
from routing.telemetry import access_log  # noqa: F401  (registers the access-log sink)
from routing.telemetry.record import RequestRecord, finish
from routing.upstream.stream_response import EventStreamResponse

# A new id per request without a syscall: a random per-process prefix + a counter (32 hex digits).
_ID_PREFIX = uuid.uuid4().hex[:20]
_ID_COUNTER = itertools.count()
log = logging.getLogger("routing.api")
WATCH_DISCONNECT_AFTER = 0.5  # seconds
# fullmatch, not `$`: `$` also matches before a trailing newline.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Longer client User-Agents (or non-ASCII, or control characters) are not forwarded upstream.
MAX_USER_AGENT_CHARS = 256
MAX_ECHOED_NAME_CHARS = 256
OPERATION_PATHS = {"chat/completions": "/v1/chat/completions", "completions": "/v1/completions",
                   "embeddings": "/v1/embeddings"}


def request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    return given if given and SAFE_REQUEST_ID.fullmatch(given) else f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


def client_user_agent(request: Request) -> str | None:
    """The client's User-Agent when it is short printable ASCII (DESIGN §8), else None (the
    gateway's own is sent): a long or binary one is not the upstream's business to receive."""
    agent = request.headers.get("user-agent")
    if agent and len(agent) <= MAX_USER_AGENT_CHARS and agent.isascii() and agent.isprintable():
        return agent
    return None


def shown(name: str) -> str:
    """A client-chosen name as echoed in an error message: bounded."""
    return name if len(name) <= MAX_ECHOED_NAME_CHARS else name[:MAX_ECHOED_NAME_CHARS] + "..."


async def _proxy(request: Request, operation: str, path_model: str | None = None) -> Response:
    headers = {"x-request-id": request_id(request)}
    record = RequestRecord(headers["x-request-id"], operation)
    try:
        gateway = runtime.current()
        deadline = asyncio.get_running_loop().time() + gateway.table.gateway.total_timeout
        consumer = await identify(gateway, request, headers, record)
        body = await read_json_body(request, gateway.table.gateway)
        model = path_model if path_model is not None else body.get("model")
        pool = model_pool(gateway, consumer, model, body, record)
        pool = [r for r in pool if BACKENDS[r.backend].supports(r, operation)]
        if not pool:
            raise GatewayError(400, f"The model '{shown(model)}' does not support "
                               f"{OPERATION_PATHS[operation]}.", param="model",
                               code="unsupported_operation")
        validate_body(operation, body)
        if body.get("tools"):  # only deployments that call tools (DESIGN §3: a 400, never an opaque upstream error)
            pool = [r for r in pool if gateway.rules(r, operation).tools] or _no_tools(model)
        limit_headers = await gateway.limiter.admit(consumer, record, body_size(request, body), body,
                                                    [r.id for r in pool])
        if limit_headers:  # the consumer's own window, in place of any upstream's
            record.limit_headers = limit_headers
            headers.update(limit_headers)
        call = Call(request_id=headers["x-request-id"], operation=operation, model=model,
                    body=body, pool=pool, user_agent=client_user_agent(request),
                    deadline=deadline, headers=headers, record=record)
        response = await forward_while_connected(request, gateway, call)
    except Exception as exc:  # a bug must still answer in the OpenAI shape, with the request id
        response = error_answer(exc, headers, record)
    return answered(response, record)


def error_answer(exc: Exception, headers: dict[str, str], record: RequestRecord) -> Response:
    """A handler's exception as its answer: a GatewayError as itself, anything else a 500 (call
    it from the `except` block: the traceback is logged)."""
    if isinstance(exc, GatewayError):
        record.error_code = exc.code
        return error_response(exc, headers)
    return internal_error(headers, record)


def internal_error(headers: dict[str, str], record: RequestRecord) -> Response:
    """The answer to a bug: OpenAI-shaped, with the request id, logged with its traceback."""
    log.exception("request %s: unexpected error", headers["x-request-id"])
    record.error_code = "internal_error"
    return error_response(GatewayError(500, "The gateway failed to process the request.",
                                       code="internal_error"), headers)


def model_pool(gateway, consumer, model: Any, body: dict[str, Any], record: RequestRecord) -> list:
    """The deployments of the model a request names: 400 without one, 404 for an unknown model,
    403 for one the consumer may not use."""
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "Missing required parameter: 'model'.", param="model",
                           code="missing_required_parameter")
    record.model = shown(model)
    record.stream = body.get("stream") is True
    pool = gateway.table.pools.get(model)
    if not pool:
        raise GatewayError(404, f"The model '{shown(model)}' does not exist or you do not "
                           "have access to it.", param="model", code="model_not_found")
    if not consumer.allows(model):
        raise GatewayError(403, f"Consumer '{consumer.name}' may not use the model "
                           f"'{shown(model)}'.", param="model", code="model_not_allowed")
    return pool


def _no_tools(model: str):
    raise GatewayError(400, f"The model '{shown(model)}' does not support tools (function calling); "
                       "send the request without `tools`.", param="tools", code="unsupported_parameter")


async def identify(gateway, request: Request, headers: dict[str, str], record: RequestRecord):
    """The calling consumer (401 when none), named in the record and the response headers."""
    record.consumer = None
    consumer = await gateway.inbound.authenticate(request.headers)
    record.consumer = headers["x-gateway-consumer"] = consumer.name
    return consumer


def body_size(request: Request, body: dict[str, Any]) -> int:
    """The body's size for the token estimate: its Content-Length, else (a chunked upload) the
    size of the parsed body encoded again."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        return int(declared)
    return len(json.dumps(body, ensure_ascii=False))


def answered(response: Response, record: RequestRecord) -> Response:
    """The response with `x-gateway-overhead-ms`; its record closed unless a stream still runs
    (the stream closes it when it ends)."""
    response.headers["x-gateway-overhead-ms"] = f"{record.overhead_ms():.2f}"
    if not isinstance(response, EventStreamResponse):
        finish(record, response.status_code)  # its error_code is set where the error is known
    return response


async def forward_while_connected(request: Request, gateway, call: Call) -> Response:
    """`forward`, cancelled (with its upstream calls and failover) if the client goes away
    before the response starts; once streaming, Starlette's own disconnect watch takes over.
    The watch starts only after WATCH_DISCONNECT_AFTER seconds: quick answers never pay for it."""
    loop = asyncio.get_running_loop()
    handler = asyncio.current_task()
    watcher: asyncio.Task | None = None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        handler.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_DISCONNECT_AFTER, start_watching)
    try:
        return await forward(gateway, call)
    except asyncio.CancelledError:
        if not gone:
            raise
        handler.uncancel()
        log.info("request %s: the client went away; upstream call cancelled", call.request_id)
        call.record.error_code = "client_closed_request"
        return error_response(GatewayError(499, "The client closed the request.",
                                           code="client_closed_request"), call.headers)
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def chat_completions(request: Request) -> Response:
    return await _proxy(request, "chat/completions")


async def completions(request: Request) -> Response:
    return await _proxy(request, "completions")


async def embeddings(request: Request) -> Response:
    return await _proxy(request, "embeddings")


# Azure-OpenAI-style paths: `{name}` is the public MODEL; the client's api-version is accepted
# and the route's own API_VERSION is used upstream.
async def azure_chat_completions(request: Request) -> Response:
    return await _proxy(request, "chat/completions", request.path_params["name"])


async def azure_completions(request: Request) -> Response:
    return await _proxy(request, "completions", request.path_params["name"])


async def azure_embeddings(request: Request) -> Response:
    return await _proxy(request, "embeddings", request.path_params["name"])


def _model_card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "azure-llm-gateway"}


async def _consumer_answer(request: Request, operation: str, answer) -> Response:
    """A GET that only needs the caller's identity: `answer(gateway, consumer, record)` → JSON."""
    headers = {"x-request-id": request_id(request)}
    record = RequestRecord(headers["x-request-id"], operation)
    try:
        gateway = runtime.current()
        consumer = await identify(gateway, request, headers, record)
        response = JSONResponse(await answer(gateway, consumer, record), headers=headers)
    except Exception as exc:
        response = error_answer(exc, headers, record)
    return answered(response, record)


async def list_models(request: Request) -> Response:
    async def answer(gateway, consumer, record):
        return {"object": "list", "data": [_model_card(m) for m in gateway.table.models if consumer.allows(m)]}

    return await _consumer_answer(request, "models", answer)


async def retrieve_model(request: Request) -> Response:
    async def answer(gateway, consumer, record):
        model = request.path_params["model"]
        record.model = shown(model)
        if model not in gateway.table.pools or not consumer.allows(model):
            raise GatewayError(404, f"The model '{shown(model)}' does not exist or you do not "
                               "have access to it.", param="model", code="model_not_found")
        return _model_card(model)

    return await _consumer_answer(request, "models", answer)


async def gateway_usage(request: Request) -> Response:
    """GET /v1/gateway/usage: the calling consumer's models, limits, use and what remains."""
    async def answer(gateway, consumer, record):
        return await gateway.limiter.usage(consumer)

    return await _consumer_answer(request, "usage", answer)


async def health(request: Request) -> Response:
    """Liveness plus configuration validity; says nothing about routes to anonymous callers.
    Not in the access log: platform probes call it every few seconds."""
    started = time.perf_counter()
    headers = {"x-request-id": request_id(request)}
    try:
        runtime.current()
        response = JSONResponse({"status": "ok"}, headers=headers)
    except GatewayError as error:
        response = error_response(error, headers)
    response.headers["x-gateway-overhead-ms"] = f"{(time.perf_counter() - started) * 1000:.2f}"
    return response


# (route template, methods, handler): the one list both hosts register.
ENDPOINTS = [
    ("v1/chat/completions", ["POST"], chat_completions),
    ("v1/completions", ["POST"], completions),
    ("v1/embeddings", ["POST"], embeddings),
    ("v1/models", ["GET"], list_models),
    ("v1/models/{model}", ["GET"], retrieve_model),
    ("v1/gateway/usage", ["GET"], gateway_usage),
    ("openai/deployments/{name}/chat/completions", ["POST"], azure_chat_completions),
    ("openai/deployments/{name}/completions", ["POST"], azure_completions),
    ("openai/deployments/{name}/embeddings", ["POST"], azure_embeddings),
    ("openai/models", ["GET"], list_models),
    ("health", ["GET"], health),
]
