"""Foundry's OpenAI-compatible v1 endpoint for non-OpenAI models, on the emulated Foundry resource
(reference azure-responses-and-v1.md §3.2-§3.4, §4, §5; azure-upstream-apis.md §1.1).

Routes (registered by ``azure_ai.create_app("foundry")``; the project form shares the handlers):
``POST {resource}[/api/projects/<project>]/openai/v1/chat/completions``, ``…/openai/v1/embeddings``,
``GET …/openai/v1/models`` and ``GET …/openai/v1/models/{model}``.

- ``model`` = deployment name (F-EP), case-insensitive as on the Foundry routes (upstream §1.1);
  unknown → 404 ``DeploymentNotFound`` (Azure OpenAI's body, upstream §3.4: the v1 surface is that
  service; for non-OpenAI deployments [unconfirmed]); missing → 400.
- No ``api-version`` needed; ``v1`` and ``preview`` are accepted and ignored (§3.2 enum), others → 400.
- Auth: ``api-key: <key>``; ``Authorization: Bearer <key>`` (the plain OpenAI client; implied by MS
  samples, §2.2); ``Authorization: Bearer <Entra token>``. Token audience (checked, see AUDIENCES):
  the resource route takes ``https://cognitiveservices.azure.com`` and ``https://ai.azure.com``
  (§3.3 documents both scopes; Foundry's own 401 names both: "audience is incorrect
  (https://cognitiveservices.azure.com or https://ai.azure.com)", microsoft-foundry-for-vscode#18,
  azure-sdk-for-net#50872); the project route only ``https://ai.azure.com`` (F-ENTRA: "Tokens must be
  issued with scope https://ai.azure.com/.default"; F-RSN; agent-framework#7201: a
  cognitiveservices token 401s there). Keys on the project route: accepted (``project_keys``) [unconfirmed].
- Model families (``model_families``) decide tools, reasoning, strict schemas; answers are the fake
  model's (``foundry_v1_chat``); content filtering by markers (``content_filter``); faults and
  records as on every emulator route (``endpoint``/``take_fault``).
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from starlette.responses import Response
from starlette.routing import Route

from . import azure_ai_rules as ai_rules
from . import azure_openai_rules as aoai_rules
from . import content_filter, foundry_v1_chat, model_families
from .chat_answer import format_problem, tool_problem
from .fake_model import (
    DEFAULT_EMBEDDING_DIMS, MAX_EMBEDDING_INPUTS, embedding_inputs, embedding_vector, encode_embedding,
    prompt_tokens_of_inputs,
)
from .records import Call, EmulatorState, endpoint
from .streaming import SSEResponse
from .tokens import COGNITIVE_SERVICES_AUDIENCE, verify_token
from .wire import json_response, new_id

if TYPE_CHECKING:  # pragma: no cover
    from .azure_ai import _AzureAI

AI_AZURE_AUDIENCE = "https://ai.azure.com"
AUDIENCES = {"resource": (COGNITIVE_SERVICES_AUDIENCE, AI_AZURE_AUDIENCE), "project": (AI_AZURE_AUDIENCE,)}
API_VERSIONS = frozenset({"v1", "preview"})  # §3.2: AzureAIFoundryModelsApiVersion = [v1, preview]


def token_unauthorized(audiences: Iterable[str]) -> dict[str, Any]:
    """Foundry's 401 for a bad Entra token (observed; the project route's list is [unconfirmed])."""
    return {"statusCode": 401, "message": (
        f"Unauthorized. Access token is missing, invalid, audience is incorrect ({' or '.join(audiences)}), "
        "or have expired.")}


class FoundryV1:
    def __init__(self, emu: "_AzureAI", deployments: Mapping[str, model_families.Family], *,
                 project_keys: bool, projects: Iterable[str] | None) -> None:
        self.emu = emu
        self.state: EmulatorState = emu.state
        self.families = dict(deployments)
        self.names = {name.casefold(): name for name in deployments}
        self.project_keys = project_keys
        self.projects = None if projects is None else frozenset(projects)
        self.created = int(time.time())

    # --- checks ------------------------------------------------------------------------------

    def refused(self, call: Call) -> Response | None:
        """Project, api-version and auth, in the order the service checks them."""
        project = call.request.path_params.get("project")
        if project is not None and self.projects is not None and project not in self.projects:
            return self.emu.error(ai_rules.RESOURCE_NOT_FOUND, 404)  # [unconfirmed body]
        version = call.query.get("api-version")
        if version is not None and version not in API_VERSIONS:
            return self.emu.error(aoai_rules.unsupported_api_version(version), 400)
        keys_ok = project is None or self.project_keys
        key = call.headers.get("api-key")
        if key is not None:
            return None if keys_ok and key in self.emu.keys else self.emu.error(aoai_rules.UNAUTHORIZED, 401)
        auth = call.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if bearer is None:
            return self.emu.error(aoai_rules.UNAUTHORIZED, 401)
        if keys_ok and bearer in self.emu.keys:
            return None
        audiences = AUDIENCES["project" if project is not None else "resource"]
        if any(verify_token(self.emu.token_secret, bearer, audience) for audience in audiences):
            return None
        if bearer.count(".") == 2:  # JWT-shaped: the token answer, else the key answer
            return json_response(token_unauthorized(audiences), 401, self.emu.headers())
        return self.emu.error(aoai_rules.UNAUTHORIZED, 401)

    def invalid(self, message: str, param: str | None = None, code: str | None = None) -> Response:
        return self.emu.error(aoai_rules.invalid_request(message, param, code), 400)

    # --- entry points ------------------------------------------------------------------------

    async def operation(self, call: Call, op: str) -> Response:
        failed = self.refused(call)
        if failed is not None:
            return failed
        body = call.body
        if call.bad_json or not isinstance(body, dict):
            return self.invalid("We could not parse the JSON body of your request.")
        requested = body.get("model")
        if not isinstance(requested, str) or not requested:
            return self.invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        name = self.names.get(requested.casefold())
        if name is None:
            return self.emu.error(aoai_rules.DEPLOYMENT_NOT_FOUND, 404)
        stream = body.get("stream") is True
        rule = call.take_fault(requested, stream)
        if rule is not None and rule.status is not None:
            return self.emu.fault_response(rule)
        family = self.families[name]
        if op == "responses":
            # "If a deployment doesn't support the Responses API, the request returns `400 Model not
            # supported`" (reference §4.1); which non-OpenAI deployments support it is not listed, so
            # here none does. [unconfirmed] the envelope around the message.
            return self.emu.error({"error": {"code": "BadRequest", "message": "Model not supported",
                                             "type": "invalid_request_error", "param": "model"}}, 400)
        if (family.kind == "embeddings") != (op == "embeddings"):
            return self.emu.error(aoai_rules.operation_not_supported(op, name), 400)
        if op == "embeddings":
            return self.embeddings(body, name)
        return self.chat(call, body, name, family, stream)

    async def models(self, call: Call) -> Response:
        failed = self.refused(call)
        if failed is not None:
            return failed
        rule = call.take_fault(None)
        if rule is not None and rule.status is not None:
            return self.emu.fault_response(rule)
        wanted = call.request.path_params.get("model")
        if wanted is None:  # [unconfirmed] lists deployments, as the Azure OpenAI emulator does (§3.4)
            data = [self.model_json(name) for name in self.families]
            return json_response({"object": "list", "data": data}, 200, self.emu.headers())
        name = self.names.get(wanted.casefold())
        if name is None:
            return self.emu.error(aoai_rules.DEPLOYMENT_NOT_FOUND, 404)
        return json_response(self.model_json(name), 200, self.emu.headers())

    def model_json(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": self.families[name].provider}

    # --- operations --------------------------------------------------------------------------

    def chat(self, call: Call, body: dict[str, Any], name: str, family: model_families.Family,
             stream: bool) -> Response:
        refused = model_families.chat_problem(family, body)
        if refused is not None:
            return self.emu.error(refused[1], refused[0])
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return self.invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
        problem = tool_problem(body) or format_problem(body)
        if problem is not None:
            return self.invalid(problem.message, problem.param, problem.code)
        n = body.get("n", 1)
        n = 1 if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
            return self.invalid(f"{n!r} is not valid for 'n': expected 1 to 128.", "n")
        category = content_filter.prompt_category(messages)
        if category is not None:
            return self.emu.error(content_filter.v1_prompt_filtered(category), 400)
        planned = foundry_v1_chat.plan(body, family, self.state.answer_words, n)
        common = {"id": new_id("chatcmpl-"), "created": int(time.time()), "model": name}
        if not stream:
            return json_response(foundry_v1_chat.chat_json(planned, n, common), 200, self.emu.headers())
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = foundry_v1_chat.chat_events(planned, n, common, include_usage)
        return SSEResponse(events, self.state, self.emu.headers(), chunk_delay=call.chunk_delay(),
                           cut_after=call.cut_after())

    def embeddings(self, body: dict[str, Any], name: str) -> Response:
        unknown = [key for key in body if key not in model_families.V1_EMBEDDING_KEYS]
        if unknown:  # [unconfirmed] as for chat
            return self.emu.error(aoai_rules.unrecognized_arguments(unknown, aoai_rules.V1), 400)
        items = embedding_inputs(body.get("input"))
        if items is None:
            return self.invalid("'input' must be a non-empty string, array of strings or array of token arrays.",
                                "input")
        if len(items) > MAX_EMBEDDING_INPUTS:
            return self.emu.error(aoai_rules.TOO_MANY_INPUTS, 400)
        dims = body.get("dimensions")
        top = ai_rules.max_dimensions(name)
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= top):
            return self.invalid(f"Invalid value for 'dimensions': {dims!r}. It must be an integer from 1 to {top} "
                                "for this model.", "dimensions", "invalid_value")  # [unconfirmed] wording
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return self.invalid(f"Invalid value for 'encoding_format': {fmt!r}. Supported values are 'float' and "
                                "'base64'.", "encoding_format")
        dims = dims or DEFAULT_EMBEDDING_DIMS
        data = [{"object": "embedding", "index": i, "embedding": encode_embedding(embedding_vector(item, dims), fmt)}
                for i, item in enumerate(items)]
        tokens = prompt_tokens_of_inputs(items if len(items) > 1 else items[0])
        return json_response({"object": "list", "data": data, "model": name,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, 200, self.emu.headers())


def routes(emu: "_AzureAI", deployments: Mapping[str, model_families.Family], *, project_keys: bool = True,
           projects: Iterable[str] | None = None) -> list[Route]:
    """The v1 routes at the resource root and under ``/api/projects/{project}``."""
    v1 = FoundryV1(emu, deployments, project_keys=project_keys, projects=projects)
    state = emu.state
    chat = endpoint(state, partial(v1.operation, op="chat"))
    embed = endpoint(state, partial(v1.operation, op="embeddings"))
    responses = endpoint(state, partial(v1.operation, op="responses"))
    models = endpoint(state, v1.models)
    out: list[Route] = []
    for prefix in ("", "/api/projects/{project}"):
        out += [
            Route(f"{prefix}/openai/v1/chat/completions", chat, methods=["POST"]),
            Route(f"{prefix}/openai/v1/embeddings", embed, methods=["POST"]),
            Route(f"{prefix}/openai/v1/responses", responses, methods=["POST"]),
            Route(f"{prefix}/openai/v1/models", models, methods=["GET"]),
            Route(f"{prefix}/openai/v1/models/{{model}}", models, methods=["GET"]),
        ]
    return out
