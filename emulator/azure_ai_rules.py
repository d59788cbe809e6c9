"""Azure AI model-inference rules as data: the ``extra-parameters`` header, known keys, the fake
Llama backend's own validation and the error bodies (reference §1, §2, §3.6, §6).

Two layers answer in reality, so two error shapes exist:
- the inference *service* (``{"detail": "..."}`` for extra parameters, ``parameter_not_supported``);
- the *model server* behind it (pydantic 422 ``{"detail": [...]}``), which the Foundry ``/models``
  route wraps as ``{"error": {"code": "Invalid input", "message": "<json>", "status": 422}}``.
"""

from __future__ import annotations

from typing import Any

from .wire import dumps

API_VERSIONS = frozenset({
    "2024-04-01-preview", "2024-05-01-preview", "2025-02-01-preview", "2025-05-01-preview",
    "2025-05-15-preview", "2025-04-01", "2025-05-01",
})
EXTRA_PARAMETER_MODES = ("error", "drop", "pass-through")

# §2.3 / §6: the 2024-05-01 ChatCompletionsOptions body; everything else is an "extra".
CHAT_KEYS = frozenset({
    "messages", "frequency_penalty", "stream", "presence_penalty", "temperature", "top_p", "max_tokens",
    "response_format", "stop", "tools", "tool_choice", "seed", "model",
})
EMBEDDING_KEYS = frozenset({"input", "dimensions", "encoding_format", "input_type", "model"})
# §2.3: extras the Llama model server accepts under pass-through. stream_options is handled apart.
LLAMA_CHAT_EXTRAS = frozenset({
    "n", "best_of", "logprobs", "ignore_eos", "use_beam_search", "stop_token_ids", "skip_special_tokens",
})
BACKEND_ROLES = ("system", "user", "assistant", "tool")
CONTENT_FILTER_MARKER = "[[content_filter]]"

CONTENT_FILTERED = {"error": {
    "message": ("The response was filtered due to the prompt triggering Microsoft's content management policy. "
                "Please modify your prompt and retry."),
    "type": None, "param": "prompt", "code": "content_filter", "status": 400}}


def error(status: int, code: str, message: str) -> dict[str, Any]:
    """The ``{"error": {code, message, status}}`` shape of §1.4 / §3.6 (exact MaaS bodies unconfirmed)."""
    return {"error": {"code": code, "message": message, "status": status}}


UNAUTHORIZED_FOUNDRY = error(401, "401", (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."))
UNAUTHORIZED_SERVERLESS = error(401, "Unauthorized", (
    "Access denied: send the endpoint key as 'Authorization: Bearer <key>'."))
RESOURCE_NOT_FOUND = error(404, "404", "Resource not found")
NO_MODEL = {"error": {"code": "no_model_name", "message": (
    "No model specified in request. Please provide a model name in the request body or as a "
    "x-ms-model-mesh-model-name header.")}}


def unknown_model(name: str) -> dict[str, Any]:
    """§1.1 observed body (the leading slash in the report is the caller's input, not a format)."""
    message = f"Unknown model: {name}"
    return {"error": {"code": "unknown_model", "message": message, "details": message}}


def unsupported_api_version(version: str) -> dict[str, Any]:
    return error(400, "BadRequest", (
        f"Unsupported api-version '{version}'. Supported versions: {', '.join(sorted(API_VERSIONS))}"))


def operation_not_supported(op: str, name: str) -> dict[str, Any]:
    return error(400, "OperationNotSupported", (
        f"The {op} operation does not work with the specified model, {name}. "
        "Please choose different model and try again."))


def rate_limited(seconds: int) -> dict[str, Any]:
    return error(429, "429", f"Rate limit is exceeded. Try again in {seconds} seconds.")


_STATUS_CODES = {400: "BadRequest", 408: "Timeout", 500: "InternalServerError", 502: "BadGateway",
                 503: "ServiceUnavailable", 504: "GatewayTimeout"}


def status_error(status: int) -> dict[str, Any]:
    return error(status, _STATUS_CODES.get(status, str(status)), f"Emulated HTTP {status}.")


def parameter_not_supported(param: str, value: Any) -> dict[str, Any]:
    """§2.2 docs example (a known parameter the model does not support), status 422."""
    return {"status": 422, "code": "parameter_not_supported", "detail": {"loc": ["body", param], "input": value},
            "message": "One of the parameters contain invalid values."}


def backend_422(detail: list[dict[str, Any]], foundry: bool) -> dict[str, Any]:
    """A pydantic model-server rejection; the Foundry route wraps it (§2.2, LiteLLM #11696)."""
    if foundry:
        return {"error": {"code": "Invalid input", "message": dumps({"detail": detail}).decode(), "status": 422}}
    return {"detail": detail}


def extra_forbidden(key: str, value: Any) -> dict[str, Any]:
    return {"type": "extra_forbidden", "loc": ["body", key], "msg": "Extra inputs are not permitted", "input": value}


def apply_extra_parameters(
    body: dict[str, Any], known: frozenset[str], header: str | None, backend_extras: frozenset[str], foundry: bool,
) -> tuple[dict[str, Any], int, Any]:
    """The §2.1/§6 header semantics. Returns (body to use, error status or 0, error body)."""
    mode = "error" if header is None else header
    if mode not in EXTRA_PARAMETER_MODES:
        return body, 400, {"detail": (
            f"Unexpected EXTRA_PARAMETERS option {mode}, expected options are ['error', 'drop', 'pass-through']")}
    extras = [key for key in body if key not in known]  # body key order (§2.2: presumably)
    if not extras:
        return body, 0, None
    if mode == "error":
        return body, 400, {"detail": (
            f"Extra parameters {extras!r} are not allowed when extra-parameters is not set or set to be 'error'. "
            "Set extra-parameters to 'pass-through' to pass to the model.")}
    if mode == "drop":
        return {k: v for k, v in body.items() if k in known}, 0, None
    rejected = [extra_forbidden(k, body[k]) for k in extras if k not in backend_extras]
    if rejected:
        return body, 422, backend_422(rejected, foundry)
    return body, 0, None


def message_errors(messages: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The fake Llama server's pydantic validation of ``messages`` (no ``developer`` role)."""
    if messages is None:
        return [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required", "input": body}]
    if not isinstance(messages, list):
        return [{"type": "list_type", "loc": ["body", "messages"], "msg": "Input should be a valid list",
                 "input": messages}]
    expected = "'system', 'user', 'assistant' or 'tool'"
    errors = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            errors.append({"type": "model_type", "loc": ["body", "messages", i],
                           "msg": "Input should be a valid dictionary", "input": message})
        elif "role" not in message:
            errors.append({"type": "missing", "loc": ["body", "messages", i, "role"], "msg": "Field required",
                           "input": message})
        elif message["role"] not in BACKEND_ROLES:
            errors.append({"type": "literal_error", "loc": ["body", "messages", i, "role"],
                           "msg": f"Input should be {expected}", "input": message["role"],
                           "ctx": {"expected": expected}})
    return errors


def json_invalid(message: str) -> dict[str, Any]:
    return {"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error", "input": {},
                        "ctx": {"error": message}}]}


# Native embedding sizes: `dimensions` can shorten a vector, never lengthen it (case-insensitive prefixes).
_MAX_DIMENSIONS = (("cohere-embed-v3", 1024), ("cohere-embed-v-4", 1536), ("embed-v-4", 1536),
                   ("text-embedding-3-large", 3072), ("text-embedding-3-small", 1536))
DEFAULT_MAX_DIMENSIONS = 1024


def max_dimensions(name: str) -> int:
    lower = name.lower()
    return next((dims for prefix, dims in _MAX_DIMENSIONS if lower.startswith(prefix)), DEFAULT_MAX_DIMENSIONS)


def model_type_of(name: str) -> str:
    return "embeddings" if "embed" in name.lower() else "chat-completions"


def provider_of(name: str) -> str:
    lower = name.lower()
    for needle, provider in (("llama", "Meta"), ("mistral", "Mistral AI"), ("cohere", "Cohere"), ("phi", "Microsoft")):
        if needle in lower:
            return provider
    return "Unknown"
