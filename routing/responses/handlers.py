"""The Responses API endpoints (DESIGN §13): create, retrieve, delete, cancel, input_items.

azure-openai routes forward to the resource's own Responses API (`/openai/v1/responses`): new
responses go to any deployment of the model's pool, failed over before the first byte like
chat; every follow-up goes to the route that made the response, named by the id itself
(`routing.responses.ids`), and is never failed over (the state is on that resource only: a
cooling route answers an honest 429). azure-ai routes have no Responses API: a create is
translated to chat completions and back (`routing.responses.translation`); there is nothing
stored to follow up on.

A forged, foreign or tampered id, or one of a route whose model the caller may not use, is a
404 in OpenAI's shape before any upstream call: nobody learns whether such a response exists.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from routing import gateway as runtime
from routing.api import (answered, body_size, error_answer, forward_while_connected, identify, model_pool,
                         request_id, shown)
from routing.config.settings import Route
from routing.errors import GatewayError
from routing.inbound.body import read_json_body
from routing.responses.events import ResponsesEvents
from routing.responses.ids import ForeignId, rewrite_in
from routing.telemetry.record import RequestRecord
from routing.upstream.forward import Call

OPERATION = "responses"
# How long a Foundry deployment that answered `Model not supported` is translated without asking
# again (a deployment may gain the API; a new process asks anew anyway).
LACKS_RESPONSES_SECONDS = 600.0
STATEFUL_BACKEND = "azure-openai"
# Query parameters of the follow-ups passed on (api-version is the client's, not the upstream's).
FOLLOW_UP_QUERY = {"retrieve": ("include", "include_obfuscation", "starting_after", "stream"),
                   "input_items": ("after", "include", "limit", "order")}


def not_found(response_id: str, param: str | None = None) -> GatewayError:
    if param == "previous_response_id":
        return GatewayError(404, f"Previous response with id '{shown(response_id)}' not found.",
                            param=param, code="previous_response_not_found")
    if param and param.startswith("input"):
        return GatewayError(404, f"Item with id '{shown(response_id)}' not found.", param=param,
                            code="item_not_found")
    return GatewayError(404, f"Response with id '{shown(response_id)}' not found.", code="response_not_found")


def _start(request: Request, operation: str) -> tuple[dict[str, str], RequestRecord]:
    headers = {"x-request-id": request_id(request)}
    return headers, RequestRecord(headers["x-request-id"], operation)


def _calls(codec, record: RequestRecord) -> dict[str, Any]:
    """What every native Responses call does with the upstream's answer: ids rewritten (for the
    calling consumer: `codec` is bound to it)."""
    return {"events": lambda route: ResponsesEvents(codec, route.id, record),
            "rewrite": lambda answer, route: codec.rewrite_out(answer, route.id)}


async def create_response(request: Request) -> Response:
    headers, record = _start(request, OPERATION)
    try:
        gateway = runtime.current()
        deadline = asyncio.get_running_loop().time() + gateway.table.gateway.total_timeout
        consumer = await identify(gateway, request, headers, record)
        body = await read_json_body(request, gateway.table.gateway)
        model = body.get("model")
        pool = model_pool(gateway, consumer, model, body, record)
        codec = gateway.ids.bind(consumer.name)
        try:
            made_by = rewrite_in(codec, body)
        except ForeignId as foreign:
            raise not_found(foreign.client_id, foreign.param) from None
        native = [r for r in pool if native_responses(gateway, r)]
        pinned = _pinned_route(gateway, made_by, model, native)
        record.background = body.get("background") is True
        common = {"request_id": headers["x-request-id"], "model": model, "user_agent": None,
                  "deadline": deadline, "headers": headers, "record": record}
        translatable = dict(body)  # as sent, should a Foundry deployment lack the API
        if pinned is not None or native:
            call = Call(operation=OPERATION, body=body, pool=[pinned] if pinned else native,
                        **common, **_calls(codec, record))
        else:  # translated before admission: what cannot be translated costs nothing
            call = _translated(gateway, codec, body, pool, common)
        limit_headers = await gateway.limiter.admit(consumer, record, body_size(request, body), body,
                                                    [r.id for r in call.pool])
        if limit_headers:  # the consumer's own window, in place of any upstream's
            record.limit_headers = limit_headers
            headers.update(limit_headers)
        response = await forward_while_connected(request, gateway, call)
        if call.operation == OPERATION and pinned is None and _lacks_responses(gateway, response, call):
            response = await forward_while_connected(request, gateway, _translated(
                gateway, codec, translatable, pool, common))
    except Exception as exc:  # a bug too must answer in the OpenAI shape (and close its record)
        response = error_answer(exc, headers, record)
    return answered(response, record)


def native_responses(gateway, route: Route) -> bool:
    """Whether the route's upstream has the Responses API: Azure OpenAI always; a Foundry v1
    deployment unless it answered that it does not (remembered for the process)."""
    if route.backend == STATEFUL_BACKEND:
        return True
    if route.api_version != "v1":
        return False
    until = gateway.without_responses.get(route.id)
    return until is None or until <= time.monotonic()


def _lacks_responses(gateway, response: Response, call: Call) -> bool:
    """A Foundry deployment answered `400 Model not supported` for the Responses API: remember
    it, so later requests are translated at once (DESIGN §13, reference §4.1)."""
    route = gateway.table.routes_by_id.get(call.headers.get("x-gateway-route", ""))
    if response.status_code != 400 or route is None or route.backend == STATEFUL_BACKEND:
        return False
    try:
        error = json.loads(bytes(response.body)).get("error") or {}
    except (ValueError, AttributeError):
        return False
    # Exactly Azure's answer for a deployment without the API: a request's own bad parameter
    # ("'temperature' is not supported with this model") must not switch the route for everyone.
    if not isinstance(error, dict) or str(error.get("message", "")).strip().lower() != "model not supported":
        return False
    gateway.without_responses[route.id] = time.monotonic() + LACKS_RESPONSES_SECONDS
    return True


def _translated(gateway, codec, body: dict[str, Any], pool: list[Route], common: dict[str, Any]) -> Call:
    from routing.responses.translation import translated_call

    chat_routes = [r for r in pool if not native_responses(gateway, r)] or pool
    return translated_call(codec, body, chat_routes, common)


def _pinned_route(gateway, made_by: set[str], model: str, native: list[Route]) -> Route | None:
    """The route a create must go to: the one holding the state its ids refer to (None: any).
    Ids made by translated (stateless) routes pin nothing."""
    routes = gateway.table.routes_by_id
    stateful = {rid for rid in made_by if rid not in routes or native_responses(gateway, routes[rid])}
    if not stateful:
        return None
    if len(stateful) > 1:
        raise GatewayError(400, "The request refers to responses or items stored on different "
                           "resources; they cannot be used together.", param="input",
                           code="invalid_request")
    route = routes.get(next(iter(stateful)))
    if route is None:  # a route removed since: its state is unreachable
        raise not_found("", "previous_response_id")
    if route.model == model:
        return route
    # Another model on the same resource can continue the conversation (the state is there).
    same_resource = [r for r in native if r.endpoint == route.endpoint]
    if same_resource:
        return same_resource[0]
    raise GatewayError(400, f"The previous response was created on a resource that serves no "
                       f"deployment of model '{shown(model)}'; continue it with its own model.",
                       param="previous_response_id", code="invalid_request")


async def _follow_up(request: Request, kind: str, method: str, suffix: str = "") -> Response:
    headers, record = _start(request, f"responses/{kind}")
    try:
        gateway = runtime.current()
        deadline = asyncio.get_running_loop().time() + gateway.table.gateway.total_timeout
        consumer = await identify(gateway, request, headers, record)
        client_id = request.path_params["response_id"]
        codec = gateway.ids.bind(consumer.name)
        decoded = codec.decode(client_id)
        route = gateway.table.routes_by_id.get(decoded[0]) if decoded else None
        if route is None or not native_responses(gateway, route) or not consumer.allows(route.model):
            raise not_found(client_id)
        record.model = route.model
        query = _query(codec, request, kind)
        stream = kind == "retrieve" and query.get("stream") == "true"
        record.stream = stream
        call = Call(operation=OPERATION, body={}, pool=[route], request_id=headers["x-request-id"],
                    model=route.model, user_agent=None, deadline=deadline, headers=headers,
                    record=record, method=method, send_body=False, streaming=stream,
                    url_suffix="/" + quote(decoded[1], safe="") + suffix, query=query,
                    **_calls(codec, record))
        response = await forward_while_connected(request, gateway, call)
    except Exception as exc:
        response = error_answer(exc, headers, record)
    return answered(response, record)


def _query(codec, request: Request, kind: str) -> dict[str, str]:
    query = {}
    for name in FOLLOW_UP_QUERY.get(kind, ()):
        value = request.query_params.get(name)
        if value is None:
            continue
        if name == "after":  # an item id of ours
            decoded = codec.decode(value)
            if decoded is None:
                raise not_found(value, "input_items.after")
            value = decoded[1]
        query[name] = value[:256]
    return query


async def retrieve_response(request: Request) -> Response:
    return await _follow_up(request, "retrieve", "GET")


async def delete_response(request: Request) -> Response:
    return await _follow_up(request, "delete", "DELETE")


async def cancel_response(request: Request) -> Response:
    return await _follow_up(request, "cancel", "POST", "/cancel")


async def list_input_items(request: Request) -> Response:
    return await _follow_up(request, "input_items", "GET", "/input_items")


# Each path under /v1/, /openai/v1/ and /openai/ (AzureOpenAI clients, api-version accepted).
PREFIXES = ("v1", "openai/v1", "openai")
ENDPOINTS = [
    endpoint
    for prefix in PREFIXES
    for endpoint in (
        (f"{prefix}/responses", ["POST"], create_response),
        (f"{prefix}/responses/{{response_id}}", ["GET"], retrieve_response),
        (f"{prefix}/responses/{{response_id}}", ["DELETE"], delete_response),
        (f"{prefix}/responses/{{response_id}}/cancel", ["POST"], cancel_response),
        (f"{prefix}/responses/{{response_id}}/input_items", ["GET"], list_input_items),
    )
]
