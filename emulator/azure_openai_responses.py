"""The Responses API of the Azure OpenAI emulator (reference azure-responses-and-v1.md §1, §2).

Paths, each under ``/openai/v1`` (api-version optional: ``v1``/``preview``/``latest``) and under
``/openai`` (``?api-version=`` required, 2025-03-01-preview or later, or ``preview``/``latest``):
``POST /responses``, ``GET|DELETE /responses/{id}``, ``POST /responses/{id}/cancel``,
``GET /responses/{id}/input_items``. Auth as the other routes (``api-key``, Bearer Entra token, and
on ``/openai/v1`` a Bearer key); ``model`` = deployment name.

Stored responses belong to the app instance (one Azure resource): another instance does not know
their ids (404 on GET/DELETE/cancel/input_items, 400 ``previous_response_not_found``).
``store: false`` answers are not kept. ``background: true`` answers ``queued`` at once, goes
``in_progress`` after half of the ``background_delay`` knob (``/_emulator/config``, seconds,
default ``DEFAULT_BACKGROUND_DELAY``) and finishes after the rest of it plus the events' pacing.
Bodies marked [unconfirmed] are not given by the reference.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from . import azure_openai_rules as rules
from .chat_answer import Problem, mentions_json
from .faults import FaultRule
from .records import DEFAULT_RECORD_LIMIT, Call, EmulatorState, endpoint
from .responses_answer import (
    answer, chat_messages, input_items, new_id, orphan_output, request_problem, response_json,
)
from .responses_stream import TERMINAL, Run, RunSSE, answer_events, produce
from .wire import json_response

DEFAULT_BACKGROUND_DELAY = 0.2
FIRST_RESPONSES_VERSION = "2025-03-01-preview"  # §2.1: "Responses API" arrived in 2025-03-01-preview


class ResponsesState(EmulatorState):
    """``EmulatorState`` plus the resource's stored responses and the ``background_delay`` knob."""

    def __init__(self, name: str, *, answer_words: int, record_limit: int = DEFAULT_RECORD_LIMIT) -> None:
        super().__init__(name, answer_words=answer_words, record_limit=record_limit)
        self.background_delay = DEFAULT_BACKGROUND_DELAY
        self.runs: OrderedDict[str, Run] = OrderedDict()  # bounded like the records
        self.run_limit = record_limit

    def config_json(self) -> dict[str, Any]:
        return {**super().config_json(), "background_delay": self.background_delay}

    def set_config(self, spec: Any) -> None:
        delay = self.background_delay
        if isinstance(spec, dict) and "background_delay" in spec:
            spec = dict(spec)
            delay = spec.pop("background_delay")
            if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
                raise ValueError(f"background_delay: expected seconds >= 0, got {delay!r}")
        super().set_config(spec)
        self.background_delay = float(delay)

    def reset(self) -> None:
        super().reset()
        self.background_delay = DEFAULT_BACKGROUND_DELAY
        for run in self.runs.values():
            run.stop()
        self.runs.clear()

    def keep(self, run: Run) -> None:
        self.runs[run.id] = run
        while len(self.runs) > self.run_limit:
            self.runs.popitem(last=False)[1].stop()


# --- error bodies ---------------------------------------------------------------------------------

def _invalid(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return rules.invalid_request(message, param, code)


def response_not_found(rid: str) -> dict[str, Any]:
    # §1.6: observed in client fixtures, [unconfirmed] as Azure's body (§2.4 gives none)
    return _invalid(f"Response with id '{rid}' not found.")


def previous_not_found(rid: str) -> dict[str, Any]:
    return _invalid(f"Previous response with id '{rid}' not found.", "previous_response_id",
                    "previous_response_not_found")  # §2.4, exact


def model_not_found(name: str) -> dict[str, Any]:
    # §2.4's body with the name filled in ([unconfirmed] substitution; 404 per the docs' troubleshooting)
    return _invalid(f"The requested model '{name}' with deployment name {name} does not exist.", "model",
                    "model_not_found")


def item_not_found(iid: str) -> dict[str, Any]:
    return _invalid(f"Item with id '{iid}' not found. Items are not persisted when `store` is set to false. Try "
                    "again with `store` set to true, or remove this item from your input.", "input")  # §2.4


def version_too_old() -> dict[str, Any]:
    # observed message (§2.1, aider#4029); the envelope is [unconfirmed]
    return {"error": {"code": "BadRequest", "message": (
        "Azure OpenAI Responses API is enabled only for api-version 2025-03-01-preview and later")}}


def not_supported(model: str) -> dict[str, Any]:
    # [unconfirmed] shaped like the chat emulator's OperationNotSupported; Foundry says "400 Model not supported"
    return {"error": {"code": "OperationNotSupported", "message": (
        f"The responses operation does not work with the specified model, {model}. Please choose different "
        "model and try again.")}}


def rate_limited(version: str, seconds: int) -> dict[str, Any]:
    # [unconfirmed] the chat 429 text with the Responses operation named
    return {"error": {"code": "429", "message": (
        f"Requests to the Responses_Create Operation under Azure OpenAI API version {version} have exceeded token "
        f"rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds. Please go here: "
        "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.")}}


BACKGROUND_NEEDS_STORE = _invalid(  # §2.3 "requires store=true"; wording [unconfirmed]
    "Background mode requires 'store' to be true. Stateless requests are not supported.", "background")
NOT_BACKGROUND = _invalid(  # PY cancel() docstring as the message: [unconfirmed]
    "Only responses created with the `background` parameter set to `true` can be cancelled.")
NOT_STREAMED = _invalid(  # §2.3 "resume streaming only if original request had stream=true"; wording [unconfirmed]
    "This response can only be streamed if it was created with `background` and `stream` set to true.", "stream")


# --- handlers -------------------------------------------------------------------------------------

class ResponsesAPI:
    def __init__(self, state: ResponsesState, emu: Any) -> None:
        self.state = state
        self.emu = emu  # azure_openai._AzureOpenAI: auth, deployments, headers

    def error(self, body: Any, status: int) -> Response:
        return self.emu.error(body, status)

    def gate(self, call: Call, v1: bool) -> tuple[Response | None, str]:
        """api-version and auth, as the chat routes check them: (error or None, version)."""
        version = call.query.get("api-version")
        if v1:
            if version is not None and version not in rules.V1_VERSIONS:
                return self.error(rules.unsupported_api_version(version), 400), ""
            version = version or rules.V1
        elif not version:
            return self.error(rules.RESOURCE_NOT_FOUND, 404), ""
        elif version not in rules.V1_VERSIONS:  # preview/latest: LiteLLM's default on this path [unconfirmed]
            if version not in rules.KNOWN_VERSIONS:
                return self.error(rules.unsupported_api_version(version), 400), ""
            if version < FIRST_RESPONSES_VERSION:
                return self.error(version_too_old(), 400), ""
        if not self.emu.authorized(call, v1=v1):
            return self.error(rules.UNAUTHORIZED, 401), ""
        return None, version

    def fault(self, call: Call, deployment: str | None, stream: bool, version: str) -> Response | None:
        rule = call.take_fault(deployment, stream)
        if rule is None or rule.status is None:
            return None

        def default_body(r: FaultRule) -> Any:
            return rate_limited(version, r.retry_seconds()) if r.status == 429 else rules.status_error(r.status or 500)
        return rule.response(default_body, self.emu.headers())

    def ok(self, body: Any) -> Response:
        return json_response(body, 200, self.emu.headers())

    def bad(self, p: Problem) -> Response:
        return self.error(_invalid(p.message, p.param, p.code), 400)

    def lookup(self, call: Call) -> Run | None:
        return self.state.runs.get(call.request.path_params["response_id"])

    # --- POST /responses -------------------------------------------------------------------------

    async def create(self, call: Call, v1: bool) -> Any:  # a Response or a RunSSE
        failed, version = self.gate(call, v1)
        if failed is not None:
            return failed
        body = call.body
        if call.bad_json or not isinstance(body, dict):
            return self.error(_invalid("We could not parse the JSON body of your request."), 400)
        name = body.get("model")
        if not isinstance(name, str) or not name:
            return self.error(_invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter"),
                              400)
        model = self.emu.model_of(name)
        if model is None:
            return self.error(model_not_found(name), 404)
        stream = body.get("stream") is True
        faulted = self.fault(call, name, stream, version)
        if faulted is not None:
            return faulted
        kind = rules.deployment_kind(name)
        if kind not in ("chat", "reasoning"):
            return self.error(not_supported(model), 400)
        reasoning_model = kind == "reasoning"
        p = request_problem(body, reasoning_model)
        if p is not None:
            return self.bad(p)
        background, store = body.get("background") is True, body.get("store") is not False
        if background and not store:
            return self.error(BACKGROUND_NEEDS_STORE, 400)
        earlier: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            prior = self.state.runs.get(previous) if isinstance(previous, str) else None
            if prior is None:
                return self.error(previous_not_found(str(previous)), 400)
            earlier = prior.context + list(prior.response["output"])
        items = input_items(body.get("input"))
        if isinstance(items, Problem):
            return self.bad(items)
        for i, item in enumerate(items):  # replayed reasoning items and references must exist here
            if item.get("type") in ("reasoning", "item_reference"):
                found = self.find_item(item.get("id"))
                if found is None:
                    return self.error(item_not_found(str(item.get("id"))), 400)
                if item["type"] == "item_reference":
                    items[i] = found
        context = earlier + items
        orphan = orphan_output(context)
        if orphan is not None:  # [unconfirmed] wording
            return self.error(_invalid(f"No tool call found for function call output with call_id {orphan}.",
                                       "input"), 400)
        messages = chat_messages(body.get("instructions"), context)
        if any(m["role"] == "user" and rules.CONTENT_FILTER_MARKER in str(m.get("content")) for m in messages):
            return self.error(rules.CONTENT_FILTERED, 400)  # the chat 400; on /responses [unconfirmed] (§5.4)
        fmt = body["text"].get("format") if isinstance(body.get("text"), dict) else None
        if isinstance(fmt, dict) and fmt.get("type") == "json_object" and not mentions_json(messages):
            return self.error(_invalid("Response input messages must contain the word 'json' in some form to use "
                                       "'text.format' of type 'json_object'.", "input"), 400)  # [unconfirmed]
        return self.start(call, body, name, model, reasoning_model, items, context, messages)

    def find_item(self, iid: Any) -> dict[str, Any] | None:
        for run in reversed(self.state.runs.values()):
            for item in run.input_items + list(run.response["output"]):
                if item.get("id") == iid:
                    return item
        return None

    def start(self, call: Call, body: dict[str, Any], name: str, model: str, reasoning_model: bool,
              items: list[dict[str, Any]], context: list[dict[str, Any]], messages: list[dict[str, Any]]) -> Any:
        planned = answer(body, messages, self.state.answer_words, reasoning_model)
        rid, created = new_id("resp_"), int(time.time())

        def snapshot(status: str) -> dict[str, Any]:
            return response_json(rid, created, status, body, model, reasoning_model)

        final = response_json(rid, created, "incomplete" if planned.incomplete else "completed", body, model,
                              reasoning_model, planned.output, planned.usage, planned.incomplete)
        run = Run(rid, name, body, snapshot("queued" if body.get("background") is True else "in_progress"),
                  items, context)
        if body.get("store") is not False:
            self.state.keep(run)
        step = call.chunk_delay()
        tail = answer_events(planned.output, planned.pieces, final)
        if run.background:
            # created (queued) and response.queued at once, in_progress and the rest later [unconfirmed order]
            run.append({"type": "response.created", "response": run.response})
            run.append({"type": "response.queued", "response": snapshot("queued")})
            half = self.state.background_delay / 2
            schedule = [(half, {"type": "response.in_progress", "response": snapshot("in_progress")})]
            schedule += [(step, e) for e in tail[:-1]] + [(max(half, step), tail[-1])]
            run.task = asyncio.ensure_future(produce(run, schedule))
            if run.stream:  # follows the producer; dropping the connection leaves the response running
                return RunSSE(run, self.state, self.emu.headers(), cut_after=call.cut_after())
            return self.ok(run.response)
        if run.stream:
            schedule = [(0.0, {"type": "response.created", "response": run.response}),
                        (step, {"type": "response.in_progress", "response": snapshot("in_progress")})]
            schedule += [(step, e) for e in tail]
            return RunSSE(run, self.state, self.emu.headers(), schedule=schedule, cut_after=call.cut_after())
        final["completed_at"] = int(time.time()) if final["status"] == "completed" else None
        run.response, run.finished = final, True
        return self.ok(final)

    # --- GET / DELETE /responses/{id} ------------------------------------------------------------

    async def retrieve(self, call: Call, v1: bool) -> Any:  # a Response or a RunSSE
        failed, version = self.gate(call, v1)
        if failed is not None:
            return failed
        run = self.lookup(call)
        stream = call.query.get("stream") == "true"
        faulted = self.fault(call, run.deployment if run else None, stream, version)
        if faulted is not None:
            return faulted
        if run is None:
            return self.error(response_not_found(call.request.path_params["response_id"]), 404)
        if not stream:
            return self.ok(run.response)
        if not (run.background and run.stream):
            return self.error(NOT_STREAMED, 400)
        after = call.query.get("starting_after")
        try:
            starting_after = -1 if after is None else int(after)
        except ValueError:
            return self.error(_invalid(f"Invalid value for 'starting_after': {after!r}.", "starting_after",
                                       "invalid_value"), 400)  # [unconfirmed] wording
        return RunSSE(run, self.state, self.emu.headers(), starting_after=starting_after,
                      chunk_delay=call.chunk_delay(), cut_after=call.cut_after())

    async def delete(self, call: Call, v1: bool) -> Response:
        failed, version = self.gate(call, v1)
        if failed is not None:
            return failed
        run = self.lookup(call)
        faulted = self.fault(call, run.deployment if run else None, False, version)
        if faulted is not None:
            return faulted
        if run is None:
            return self.error(response_not_found(call.request.path_params["response_id"]), 404)
        run.stop()
        del self.state.runs[run.id]
        return self.ok({"id": run.id, "object": "response", "deleted": True})  # OAPI example body

    # --- POST /responses/{id}/cancel -------------------------------------------------------------

    async def cancel(self, call: Call, v1: bool) -> Response:
        failed, version = self.gate(call, v1)
        if failed is not None:
            return failed
        run = self.lookup(call)
        faulted = self.fault(call, run.deployment if run else None, False, version)
        if faulted is not None:
            return faulted
        if run is None:
            return self.error(response_not_found(call.request.path_params["response_id"]), 404)
        if not run.background:
            return self.error(NOT_BACKGROUND, 400)
        if run.status == "cancelled":
            return self.ok(run.response)  # §2.3: cancel "is idempotent"
        if run.status in TERMINAL:  # [unconfirmed] wording
            return self.error(_invalid(f"Cannot cancel a {run.status} response."), 400)
        run.stop("cancelled")
        return self.ok(run.response)

    # --- GET /responses/{id}/input_items ---------------------------------------------------------

    async def input_items(self, call: Call, v1: bool) -> Response:
        failed, version = self.gate(call, v1)
        if failed is not None:
            return failed
        run = self.lookup(call)
        faulted = self.fault(call, run.deployment if run else None, False, version)
        if faulted is not None:
            return faulted
        if run is None:
            return self.error(response_not_found(call.request.path_params["response_id"]), 404)
        query = call.query
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            return self.error(_invalid(f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                                       "order", "invalid_value"), 400)  # [unconfirmed] wording
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:  # OAPI: 1-100, default 20; [unconfirmed] wording
            return self.error(_invalid(f"Invalid 'limit': expected an integer from 1 to 100, got "
                                       f"{query.get('limit')!r}.", "limit", "invalid_value"), 400)
        items = run.input_items if order == "asc" else run.input_items[::-1]
        after = query.get("after")
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:  # [unconfirmed] wording and status
                return self.error(_invalid(f"Item with id '{after}' not found.", "after"), 400)
            items = items[ids.index(after) + 1:]
        page = items[:limit]
        return self.ok({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                        "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit})


def responses_routes(state: ResponsesState, emu: Any) -> list[Route]:
    """The Responses routes of one Azure OpenAI app (register before its catch-all 404)."""
    api = ResponsesAPI(state, emu)
    routes = []
    for prefix, v1 in (("/openai/v1", True), ("/openai", False)):
        def route(path: str, handler: Any, method: str, v1: bool = v1) -> Route:
            async def run(call: Call) -> Response:
                return await handler(call, v1)
            return Route(prefix + path, endpoint(state, run), methods=[method])
        routes += [
            route("/responses", api.create, "POST"),
            route("/responses/{response_id}", api.retrieve, "GET"),
            route("/responses/{response_id}", api.delete, "DELETE"),
            route("/responses/{response_id}/cancel", api.cancel, "POST"),
            route("/responses/{response_id}/input_items", api.input_items, "GET"),
        ]
    return routes
