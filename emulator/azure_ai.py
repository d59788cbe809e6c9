"""Azure AI model-inference emulator: serverless Llama ("models as a service") or Foundry ``/models``.

One factory, two flavours (reference §1, §2, §4.2, §6):

- ``serverless``: ``POST /chat/completions``, ``POST /v1/chat/completions``, ``POST /embeddings``,
  ``GET /info``; api-version optional; key auth as ``Authorization: Bearer <key>`` only.
- ``foundry``: ``POST /models/chat/completions``, ``POST /models/embeddings`` (``/models/info`` is
  404); api-version required; ``api-key`` or an Entra Bearer token; ``model`` picks the deployment.

Both enforce the ``extra-parameters`` header exactly and stream the Llama shape: role chunk,
content chunks, a last chunk carrying ``finish_reason`` and ``usage``, ``[DONE]``.

The ``foundry`` flavour also serves Foundry's OpenAI-compatible v1 endpoint for the same deployments
(``foundry_v1``; model families in ``model_families``). Content filtering (``content_filter``): a
prompt marker gets the model-inference 400 (MI-RSN shape, no ``innererror``), a completion marker
``finish_reason: "content_filter"`` with ``content_filter_results``.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Iterable, Mapping

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from . import azure_ai_rules as rules
from . import content_filter, foundry_v1, model_families
from .chat_answer import ChatAnswer, ToolCall, format_problem, plan_answer, tool_problem
from .fake_model import (
    DEFAULT_ANSWER_WORDS, DEFAULT_EMBEDDING_DIMS, MAX_EMBEDDING_INPUTS, embedding_inputs, embedding_vector,
    encode_embedding, prompt_tokens_of_inputs, prompt_tokens_of_messages,
)
from .faults import FaultRule
from .records import DEFAULT_RECORD_LIMIT, Call, EmulatorState, control_routes, endpoint
from .streaming import SSEResponse
from .tokens import COGNITIVE_SERVICES_AUDIENCE, DEFAULT_TOKEN_SECRET, verify_token
from .wire import json_response, new_id, new_uuid, sse_event

DEFAULT_MODEL_NAME = "Meta-Llama-3-70B-Instruct"
DEFAULT_FOUNDRY_DEPLOYMENTS = tuple(model_families.DEFAULT_DEPLOYMENTS)
DEFAULT_KEYS = {"serverless": "emulator-azure-ai-serverless-key", "foundry": "emulator-azure-ai-foundry-key"}


class _AzureAI:
    def __init__(self, state: EmulatorState, flavour: str, keys: Iterable[str], token_secret: str,
                 model_name: str, deployments: Iterable[str], usage_chunk_on_passthrough: bool) -> None:
        self.state = state
        self.foundry = flavour == "foundry"
        self.keys = frozenset(keys)
        self.token_secret = token_secret
        self.model_name = model_name
        self.deployments = {name.casefold(): name for name in deployments}  # routing is case-insensitive
        self.usage_chunk_on_passthrough = usage_chunk_on_passthrough

    def headers(self) -> dict[str, str]:
        if self.foundry:
            return {"apim-request-id": new_uuid(), "x-ms-region": "East US"}
        return {"x-request-id": new_uuid()}

    def error(self, body: Any, status: int) -> Response:
        headers = self.headers()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            headers["x-ms-error-code"] = str(body["error"].get("code"))
        return json_response(body, status, headers)

    def authorized(self, call: Call) -> bool:
        auth = call.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if not self.foundry:  # §1.3: serverless takes the key as a Bearer token, never Entra tokens
            return bearer is not None and bearer in self.keys
        key = call.headers.get("api-key")
        if key is not None and key in self.keys:
            return True
        return bearer is not None and verify_token(self.token_secret, bearer, COGNITIVE_SERVICES_AUDIENCE) is not None

    def check_version_and_auth(self, call: Call) -> Response | None:
        version = call.query.get("api-version")
        if version is None:
            if self.foundry:  # [unconfirmed body] the spec marks api-version required
                return self.error(rules.RESOURCE_NOT_FOUND, 404)
        elif version not in rules.API_VERSIONS:
            return self.error(rules.unsupported_api_version(version), 400)
        if not self.authorized(call):
            return self.error(rules.UNAUTHORIZED_FOUNDRY if self.foundry else rules.UNAUTHORIZED_SERVERLESS, 401)
        return None

    def fault_response(self, rule: FaultRule) -> Response:
        def default_body(r: FaultRule) -> Any:
            return rules.rate_limited(r.retry_seconds()) if r.status == 429 else rules.status_error(r.status or 500)
        headers = self.headers()
        headers["x-ms-error-code"] = "TooManyRequests" if rule.status == 429 else str(rule.status)
        return rule.response(default_body, headers)

    async def operation(self, call: Call, op: str) -> Response:
        failed = self.check_version_and_auth(call)
        if failed is not None:
            return failed
        body = call.body
        if call.bad_json:
            return self.error(rules.json_invalid("Expecting value"), 422)
        if not isinstance(body, dict):
            return self.error({"detail": [{"type": "model_attributes_type", "loc": ["body"], "input": body,
                                           "msg": "Input should be a valid dictionary or object to extract fields from"}]}, 422)
        requested = body.get("model")
        if self.foundry:
            if not isinstance(requested, str) or not requested:
                return self.error(rules.NO_MODEL, 400)
            name = self.deployments.get(requested.casefold())
            if name is None:
                return self.error(rules.unknown_model(requested), 404)
        else:  # §1.1: "ignored if the endpoint serves only one model"
            name = self.model_name
        stream = body.get("stream") is True
        rule = call.take_fault(requested if isinstance(requested, str) else None, stream)
        if rule is not None and rule.status is not None:
            return self.fault_response(rule)
        if self.foundry and (rules.model_type_of(name) == "embeddings") != (op == "embeddings"):
            return self.error(rules.operation_not_supported(op, name), 400)
        known, extras = (rules.EMBEDDING_KEYS, frozenset()) if op == "embeddings" else (
            rules.CHAT_KEYS, rules.LLAMA_CHAT_EXTRAS | {"stream_options"})
        header = call.headers.get("extra-parameters")
        body, status, problem = rules.apply_extra_parameters(body, known, header, extras, self.foundry)
        if status:
            return self.error(problem, status)
        if op == "embeddings":
            return self.embeddings(body, name)
        passthrough_usage = header == "pass-through" and self.usage_chunk_on_passthrough and _include_usage(body)
        return self.chat(call, body, name, stream, passthrough_usage)

    async def info(self, call: Call) -> Response:
        failed = self.check_version_and_auth(call)
        if failed is not None:
            return failed
        rule = call.take_fault(None)
        if rule is not None and rule.status is not None:
            return self.fault_response(rule)
        return json_response({"model_name": self.model_name, "model_type": rules.model_type_of(self.model_name),
                              "model_provider_name": rules.provider_of(self.model_name)}, 200, self.headers())

    async def not_found(self, call: Call) -> Response:
        return self.error(rules.RESOURCE_NOT_FOUND, 404)

    # --- operations --------------------------------------------------------------------------

    def chat(self, call: Call, body: dict[str, Any], name: str, stream: bool, usage_chunk: bool) -> Response:
        messages = body.get("messages")
        problems = rules.message_errors(messages, body)
        if problems:
            return self.error(rules.backend_422(problems, self.foundry), 422)
        response_format = body.get("response_format")
        if (isinstance(response_format, dict) and "llama" in name.lower()
                and response_format.get("type") in ("json_object", "json_schema")):
            return self.error(rules.parameter_not_supported("response_format", response_format["type"]), 422)
        if content_filter.prompt_category(messages) is not None:
            return self.error(rules.CONTENT_FILTERED, 400)
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
            return self.error(rules.backend_422([{"type": "int_type", "loc": ["body", "n"], "input": n,
                                                  "msg": "Input should be a valid integer between 1 and 128"}],
                                                self.foundry), 422)
        problem = tool_problem(body) or format_problem(body)
        if problem is not None:  # [unconfirmed] shape: the model server's pydantic-style rejection
            key = problem.param.split(".")[0].split("[")[0]
            detail = [{"type": "value_error", "loc": ["body", key], "msg": problem.message, "input": body.get(key)}]
            return self.error(rules.backend_422(detail, self.foundry), 422)
        answer = plan_answer(body, self.state.answer_words, body.get("max_tokens"))
        prompt = prompt_tokens_of_messages(messages)
        completion = answer.completion_tokens * n
        # Key order as in the documented Llama sample (§4.2).
        usage = {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion}
        common = {"id": new_id(), "object": "chat.completion.chunk" if stream else "chat.completion",
                  "created": int(time.time()), "model": name}
        if not stream:
            calls = [_tool_call_json(call) for call in answer.tool_calls] or None
            message = {"role": "assistant", "content": answer.content, "tool_calls": calls}
            choices = [content_filter.annotate_filtered_choice({"index": i, "message": message, "finish_reason":
                       answer.finish_reason, "logprobs": None}, answer.filtered) for i in range(n)]
            filters = {"prompt_filter_results": content_filter.prompt_filter_results()} if answer.filtered else {}
            return json_response({**common, **filters, "choices": choices, "usage": usage}, 200, self.headers())

        def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {**common, "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason,
                                           "logprobs": None}]}

        events = [sse_event(chunk(i, {"role": "assistant", "content": ""})) for i in range(n)]
        for delta in _stream_deltas(answer):
            events += [sse_event(chunk(i, delta)) for i in range(n)]
        for i in range(n):
            last = chunk(i, {} if answer.tool_calls else {"content": ""}, answer.finish_reason)
            content_filter.annotate_filtered_choice(last["choices"][0], answer.filtered)
            if i == n - 1:
                last["usage"] = usage  # usage rides on the finish chunk, no stream_options needed
            events.append(sse_event(last))
        if usage_chunk:  # constructor option: OpenAI-style trailing usage chunk under pass-through
            events.append(sse_event({**common, "choices": [], "usage": usage}))
        return SSEResponse(events, self.state, self.headers(), chunk_delay=call.chunk_delay(), cut_after=call.cut_after())

    def embeddings(self, body: dict[str, Any], name: str) -> Response:
        items = embedding_inputs(body.get("input"))
        if items is None:
            return self.error(rules.backend_422([{"type": "missing" if "input" not in body else "value_error",
                                                  "loc": ["body", "input"], "msg": "Input should be a non-empty "
                                                  "string, list of strings or list of token arrays",
                                                  "input": body.get("input")}], self.foundry), 422)
        if len(items) > MAX_EMBEDDING_INPUTS:  # [unconfirmed] limit and shape (pydantic's, input not echoed)
            return self.error(rules.backend_422([{"type": "too_long", "loc": ["body", "input"], "msg": (
                f"List should have at most {MAX_EMBEDDING_INPUTS} items after validation, not {len(items)}")}],
                self.foundry), 422)
        dims = body.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int)
                                 or not 1 <= dims <= rules.max_dimensions(name)):
            return self.error(rules.parameter_not_supported("dimensions", dims), 422)
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return self.error(rules.parameter_not_supported("encoding_format", fmt), 422)
        dims = dims or DEFAULT_EMBEDDING_DIMS
        data = [{"index": i, "object": "embedding", "embedding": encode_embedding(embedding_vector(item, dims), fmt)}
                for i, item in enumerate(items)]
        tokens = prompt_tokens_of_inputs(items if len(items) > 1 else items[0])
        return json_response({"id": new_id(), "object": "list", "data": data, "model": name,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, 200, self.headers())


def _tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _stream_deltas(answer: ChatAnswer) -> list[dict[str, Any]]:
    """Content deltas, or per tool call a head delta (index, id, type, name, empty arguments) then
    its argument pieces, the OpenAI way (the model-inference API streams the OpenAI chunk shape)."""
    if not answer.tool_calls:
        return [{"content": piece} for piece in answer.streamed_pieces]
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(answer.tool_calls):
        deltas.append({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                       "function": {"name": call.name, "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                   for piece in call.argument_pieces]
    return deltas


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return body.get("stream") is True and isinstance(options, dict) and options.get("include_usage") is True


def create_app(
    flavour: str = "serverless",
    keys: Iterable[str] | None = None,
    token_secret: str = DEFAULT_TOKEN_SECRET,
    model_name: str = DEFAULT_MODEL_NAME,
    deployments: Iterable[str] | Mapping[str, str] | None = None,
    *,
    usage_chunk_on_passthrough: bool = False,
    project_keys: bool = True,
    projects: Iterable[str] | None = None,
    answer_words: int = DEFAULT_ANSWER_WORDS,
    record_limit: int = DEFAULT_RECORD_LIMIT,
) -> Starlette:
    """``flavour``: ``serverless`` (one model, ``model_name``) or ``foundry`` (``deployments`` by name).
    ``usage_chunk_on_passthrough``: whether a passed-through ``stream_options.include_usage`` also gets
    an OpenAI ``choices: []`` usage chunk (unconfirmed upstream behaviour, §2.3/§7).
    Foundry only: ``deployments`` may map names to ``model_families`` keys (a list infers them);
    ``project_keys``: keys also work on ``/api/projects/<p>/openai/v1`` (else Entra only);
    ``projects``: the project names that exist (None = any)."""
    if flavour not in ("serverless", "foundry"):
        raise ValueError(f"flavour must be 'serverless' or 'foundry', not {flavour!r}")
    keys = [DEFAULT_KEYS[flavour]] if keys is None else [keys] if isinstance(keys, str) else list(keys)
    state = EmulatorState(f"azure-ai-{flavour}", answer_words=answer_words, record_limit=record_limit)
    emu = _AzureAI(state, flavour, keys, token_secret, model_name,
                   DEFAULT_FOUNDRY_DEPLOYMENTS if deployments is None else deployments, usage_chunk_on_passthrough)
    chat, embed = endpoint(state, partial(emu.operation, op="chat")), endpoint(state, partial(emu.operation, op="embeddings"))
    routes = control_routes(state)
    if flavour == "serverless":
        routes += [
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/embeddings", embed, methods=["POST"]),
            Route("/v1/embeddings", embed, methods=["POST"]),
            Route("/info", endpoint(state, emu.info), methods=["GET"]),
        ]
    else:  # /models/info falls through to 404: "/info route not supported" for the SDK (§1.1)
        routes += [
            Route("/models/chat/completions", chat, methods=["POST"]),
            Route("/models/embeddings", embed, methods=["POST"]),
        ]
        families = model_families.resolve(deployments)
        routes += foundry_v1.routes(emu, families, project_keys=project_keys, projects=projects)
    routes.append(Route("/{path:path}", endpoint(state, emu.not_found), methods=["GET", "POST", "PUT", "PATCH", "DELETE"]))
    app = Starlette(routes=routes)
    app.state.emulator = state
    return app
