"""Azure OpenAI data-plane emulator (reference §3, §4.1, §6 "Azure OpenAI").

Routes: ``POST /openai/deployments/{d}/{chat/completions|completions|embeddings}?api-version=``,
``POST /openai/v1/{...}`` (``model`` = deployment, no api-version), ``GET /openai/v1/models`` and
``GET /openai/models?api-version=``, the Responses API (``azure_openai_responses``); plus the
``/_emulator/*`` control endpoints.

Check order mirrors the service: api-version, auth, deployment, (fault), body validation.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Iterable, Mapping

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from . import azure_openai_rules as rules
from . import content_filter
from .azure_openai_chat import chat_events, chat_json
from .azure_openai_responses import ResponsesState, responses_routes
from .chat_answer import format_problem, mentions_json, orphan_tool_message, plan_answer, tool_problem
from .fake_model import (
    DEFAULT_ANSWER_WORDS, DEFAULT_EMBEDDING_DIMS, MAX_EMBEDDING_INPUTS, answer_for_prompt, capped, embedding_inputs,
    embedding_vector, encode_embedding, prompt_tokens_of_inputs, prompt_tokens_of_messages, stream_pieces,
)
from .faults import FaultRule
from .records import DEFAULT_RECORD_LIMIT, Call, EmulatorState, control_routes, endpoint
from .streaming import SSEResponse
from .tokens import COGNITIVE_SERVICES_AUDIENCE, DEFAULT_TOKEN_SECRET, verify_token
from .wire import json_response, new_id, new_uuid, sse_event

DEFAULT_KEY = "emulator-azure-openai-key"
_LISTED_WHEN_OPEN = ("gpt-4o", "gpt-4o-mini", "o3-mini", "gpt-35-turbo-instruct", "text-embedding-3-small")


class _AzureOpenAI:
    def __init__(self, state: EmulatorState, keys: Iterable[str], token_secret: str,
                 deployments: Iterable[str] | Mapping[str, str] | None, region: str,
                 v1_bearer_keys: bool, strict_reasoning_versions: bool) -> None:
        self.state = state
        self.keys = frozenset(keys)
        self.token_secret = token_secret
        # name -> versioned model name reported in answers
        if deployments is None:
            self.deployments: dict[str, str] | None = None
        elif isinstance(deployments, Mapping):
            self.deployments = dict(deployments)
        else:
            self.deployments = {name: rules.versioned_model(name) for name in deployments}
        self.region = region
        self.v1_bearer_keys = v1_bearer_keys
        self.strict_reasoning_versions = strict_reasoning_versions

    # --- common ------------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        return {
            "apim-request-id": new_uuid(),
            "x-ms-region": self.region,
            "x-ratelimit-remaining-requests": "119",
            "x-ratelimit-remaining-tokens": "119000",
        }

    def error(self, body: Any, status: int) -> Response:
        return json_response(body, status, self.headers())

    def authorized(self, call: Call, v1: bool) -> bool:
        key = call.headers.get("api-key")
        if key is not None and key in self.keys:
            return True
        auth = call.headers.get("authorization", "")
        if auth[:7].lower() != "bearer ":
            return False
        credential = auth[7:].strip()
        if v1 and self.v1_bearer_keys and credential in self.keys:
            return True  # the plain OpenAI client sends its key as a Bearer token (§3.3, unconfirmed)
        return verify_token(self.token_secret, credential, COGNITIVE_SERVICES_AUDIENCE) is not None

    def model_of(self, name: str) -> str | None:
        if self.deployments is None:
            return rules.versioned_model(name)
        return self.deployments.get(name)

    def fault_response(self, rule: FaultRule, op: str, version: str) -> Response:
        def default_body(r: FaultRule) -> Any:
            if r.status == 429:
                return rules.rate_limited(op, version, r.retry_seconds())
            return rules.status_error(r.status or 500)
        return rule.response(default_body, self.headers())

    # --- entry points ------------------------------------------------------------------------

    async def dated(self, call: Call, op: str) -> Response:
        version = call.query.get("api-version")
        if not version:
            return self.error(rules.RESOURCE_NOT_FOUND, 404)
        if version not in rules.KNOWN_VERSIONS:
            return self.error(rules.unsupported_api_version(version), 400)
        if not self.authorized(call, v1=False):
            return self.error(rules.UNAUTHORIZED, 401)
        return self.serve(call, op, call.request.path_params["deployment"], version)

    async def v1(self, call: Call, op: str) -> Response:
        version = call.query.get("api-version")
        if version is not None and version not in rules.V1_VERSIONS:
            return self.error(rules.unsupported_api_version(version), 400)
        if not self.authorized(call, v1=True):
            return self.error(rules.UNAUTHORIZED, 401)
        body = call.body
        if call.bad_json or not isinstance(body, dict):
            return self.error(rules.invalid_request("We could not parse the JSON body of your request."), 400)
        name = body.get("model")
        if not isinstance(name, str) or not name:
            return self.error(rules.invalid_request(
                "Missing required parameter: 'model'.", "model", "missing_required_parameter"), 400)
        return self.serve(call, op, name, rules.V1)

    async def models(self, call: Call, v1: bool) -> Response:
        if not v1:
            version = call.query.get("api-version")
            if not version:
                return self.error(rules.RESOURCE_NOT_FOUND, 404)
            if version not in rules.KNOWN_VERSIONS:
                return self.error(rules.unsupported_api_version(version), 400)
        if not self.authorized(call, v1=v1):
            return self.error(rules.UNAUTHORIZED, 401)
        rule = call.take_fault(None)
        if rule is not None and rule.status is not None:
            return self.fault_response(rule, "chat", rules.V1 if v1 else call.query["api-version"])
        names = list(self.deployments) if self.deployments is not None else list(_LISTED_WHEN_OPEN)
        created = int(time.time())
        data = [{"id": n, "object": "model", "created": created, "owned_by": "system"} for n in names]
        return json_response({"object": "list", "data": data}, 200, self.headers())

    async def not_found(self, call: Call) -> Response:
        return self.error(rules.RESOURCE_NOT_FOUND, 404)

    def serve(self, call: Call, op: str, name: str, version: str) -> Response:
        model = self.model_of(name)
        if model is None:
            return self.error(rules.DEPLOYMENT_NOT_FOUND, 404)
        body = call.body
        stream = isinstance(body, dict) and body.get("stream") is True
        rule = call.take_fault(name, stream)
        if rule is not None and rule.status is not None:
            return self.fault_response(rule, op, version)
        if call.bad_json or not isinstance(body, dict):
            return self.error(rules.invalid_request("We could not parse the JSON body of your request."), 400)
        kind = rules.deployment_kind(name)
        if rules.OPERATION_OF_KIND[kind] != op:
            return self.error(rules.operation_not_supported(op, model), 400)
        if (kind == "reasoning" and self.strict_reasoning_versions
                and rules.version_date(version) < rules.reasoning_min_version(name)[:10]):
            return self.error(rules.reasoning_version_too_old(name), 400)
        unknown = [k for k in body if k not in rules.accepted_keys(op, version)]
        if unknown:
            return self.error(rules.unrecognized_arguments(unknown, version), 400)
        if "stream_options" in body and not stream:
            return self.error(rules.invalid_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"), 400)
        n = body.get("n", 1)
        if n is None:
            n = 1
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
            return self.error(rules.invalid_request(f"{n!r} is not valid for 'n': expected 1 to 128.", "n"), 400)
        if op == "chat":
            return self.chat(call, body, name, model, kind, version, stream, n)
        if op == "completions":
            return self.completions(call, body, model, version, stream, n)
        return self.embeddings(body, model)

    # --- operations --------------------------------------------------------------------------

    def usage(self, prompt: int, completion: int, version: str) -> dict[str, Any]:
        usage: dict[str, Any] = {"completion_tokens": completion}
        if rules.has_token_details(version):
            usage["completion_tokens_details"] = {
                "accepted_prediction_tokens": 0, "audio_tokens": 0, "reasoning_tokens": 0,
                "rejected_prediction_tokens": 0}
        usage["prompt_tokens"] = prompt
        if rules.has_token_details(version):
            usage["prompt_tokens_details"] = {"audio_tokens": 0, "cached_tokens": 0}
        usage["total_tokens"] = prompt + completion
        return usage

    def chat(self, call: Call, body: dict, name: str, model: str, kind: str, version: str,
             stream: bool, n: int) -> Response:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(rules.invalid_request(
                "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"), 400)
        if kind == "reasoning":
            violation = rules.reasoning_violation(name, body)
            if violation is not None:
                return self.error(violation, 400)
        if content_filter.prompt_category(messages) is not None:  # both markers
            return self.error(rules.CONTENT_FILTERED, 400)
        problem = tool_problem(body) or format_problem(body)
        if problem is not None:
            return self.error(rules.invalid_request(problem.message, problem.param, problem.code), 400)
        if _response_type(body) == "json_object" and not mentions_json(messages):
            return self.error(rules.JSON_WORD_MISSING, 400)
        orphan = orphan_tool_message(messages)
        if orphan is not None:
            return self.error(rules.orphan_tool_message(orphan), 400)
        answer = plan_answer(body, self.state.answer_words, body.get("max_completion_tokens", body.get("max_tokens")))
        usage = self.usage(prompt_tokens_of_messages(messages), answer.completion_tokens * n, version)
        created, cid = int(time.time()), new_id("chatcmpl-")
        if not stream:
            return json_response(chat_json(answer, n, created, cid, model, usage), 200, self.headers())
        return self.sse(call, chat_events(answer, n, created, cid, model, _include_usage(body), usage))

    def completions(self, call: Call, body: dict, model: str, version: str, stream: bool, n: int) -> Response:
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]
        if prompt is None or not all(isinstance(p, (str, list)) for p in prompts):
            return self.error(rules.invalid_request(
                "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"), 400)
        if any(isinstance(p, str) and rules.CONTENT_FILTER_MARKER in p for p in prompts):
            return self.error(rules.CONTENT_FILTERED, 400)
        answers = [capped(answer_for_prompt(p, self.state.answer_words), body.get("max_tokens")) for p in prompts]
        choices = [(a, f) for a, f in answers for _ in range(n)]  # index = prompt * n + j, as OpenAI does
        completion = sum(len(a) for a, _ in choices)
        prompt_tokens = prompt_tokens_of_inputs(prompts if len(prompts) > 1 else prompts[0])
        usage = {"completion_tokens": completion, "prompt_tokens": prompt_tokens,
                 "total_tokens": prompt_tokens + completion}
        filters = [{"prompt_index": i, "content_filter_results": rules.PROMPT_FILTER_RESULTS[0]["content_filter_results"]}
                   for i in range(len(prompts))]
        created, cid = int(time.time()), new_id("cmpl-")
        if not stream:
            return json_response({
                "choices": [{"content_filter_results": rules.CHOICE_FILTER_RESULTS, "finish_reason": f, "index": i,
                             "logprobs": None, "text": " ".join(a)} for i, (a, f) in enumerate(choices)],
                "created": created, "id": cid, "model": model, "object": "text_completion",
                "prompt_filter_results": filters, "usage": usage}, 200, self.headers())
        include_usage = _include_usage(body)
        common = {"created": created, "id": cid, "model": model, "object": "text_completion"}

        def chunk(choice: dict) -> bytes:
            data = {"choices": [choice], **common}
            if include_usage:
                data["usage"] = None
            return sse_event(data)

        preamble = {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": filters}
        if include_usage:
            preamble["usage"] = None
        events = [sse_event(preamble)]
        for i, (a, f) in enumerate(choices):
            events += [chunk({"content_filter_results": rules.CHOICE_FILTER_RESULTS, "finish_reason": None,
                              "index": i, "logprobs": None, "text": piece}) for piece in stream_pieces(a)]
            events.append(chunk({"content_filter_results": {}, "finish_reason": f, "index": i, "logprobs": None,
                                 "text": ""}))
        if include_usage:
            events.append(sse_event({"choices": [], **common, "usage": usage}))
        return self.sse(call, events)

    def embeddings(self, body: dict, model: str) -> Response:
        items = embedding_inputs(body.get("input"))
        if items is None:
            return self.error(rules.invalid_request(
                "'input' must be a non-empty string, array of strings or array of token arrays.", "input"), 400)
        if len(items) > MAX_EMBEDDING_INPUTS:
            return self.error(rules.TOO_MANY_INPUTS, 400)
        dims = body.get("dimensions")
        if dims is not None:
            if model in ("ada", "text-embedding-ada-002"):
                return self.error(rules.invalid_request(
                    "This model does not support specifying dimensions.", "dimensions"), 400)
            if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= rules.max_dimensions(model):
                return self.error(rules.dimensions_out_of_range(dims, model), 400)
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return self.error(rules.invalid_request(
                f"Invalid value for 'encoding_format': {fmt!r}. Supported values are 'float' and 'base64'.",
                "encoding_format"), 400)
        dims = dims or DEFAULT_EMBEDDING_DIMS
        data = [{"embedding": encode_embedding(embedding_vector(item, dims), fmt), "index": i, "object": "embedding"}
                for i, item in enumerate(items)]
        tokens = prompt_tokens_of_inputs(items if len(items) > 1 else items[0])
        return json_response({"data": data, "model": model, "object": "list",
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, 200, self.headers())

    def sse(self, call: Call, events: list[bytes]) -> SSEResponse:
        return SSEResponse(events, self.state, self.headers(), chunk_delay=call.chunk_delay(), cut_after=call.cut_after())


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _response_type(body: dict) -> str | None:
    fmt = body.get("response_format")
    return fmt.get("type") if isinstance(fmt, dict) else None


def create_app(
    keys: Iterable[str] = (DEFAULT_KEY,),
    token_secret: str = DEFAULT_TOKEN_SECRET,
    deployments: Iterable[str] | Mapping[str, str] | None = None,
    *,
    answer_words: int = DEFAULT_ANSWER_WORDS,
    region: str = "East US",
    v1_bearer_keys: bool = True,
    strict_reasoning_versions: bool = True,
    record_limit: int = DEFAULT_RECORD_LIMIT,
) -> Starlette:
    """An Azure OpenAI resource. ``deployments``: None accepts any name (kind inferred from it), a list
    limits the names, a mapping also sets the versioned model name each one reports.
    ``v1_bearer_keys``: accept ``Authorization: Bearer <key>`` on ``/openai/v1`` (plain OpenAI client).
    ``strict_reasoning_versions``: o-series deployments reject api-versions older than they need (§3.8)."""
    state = ResponsesState("azure-openai", answer_words=answer_words, record_limit=record_limit)
    emu = _AzureOpenAI(state, [keys] if isinstance(keys, str) else keys, token_secret, deployments, region,
                       v1_bearer_keys, strict_reasoning_versions)
    routes = control_routes(state)
    for path, op in (("chat/completions", "chat"), ("completions", "completions"), ("embeddings", "embeddings")):
        routes.append(Route(f"/openai/deployments/{{deployment}}/{path}",
                            endpoint(state, partial(emu.dated, op=op)), methods=["POST"]))
        routes.append(Route(f"/openai/v1/{path}", endpoint(state, partial(emu.v1, op=op)), methods=["POST"]))
    routes.append(Route("/openai/v1/models", endpoint(state, partial(emu.models, v1=True)), methods=["GET"]))
    routes.append(Route("/openai/models", endpoint(state, partial(emu.models, v1=False)), methods=["GET"]))
    routes += responses_routes(state, emu)
    routes.append(Route("/{path:path}", endpoint(state, emu.not_found),
                        methods=["GET", "POST", "PUT", "PATCH", "DELETE"]))
    app = Starlette(routes=routes)
    app.state.emulator = state
    return app
