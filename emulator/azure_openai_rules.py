"""Azure OpenAI rules as data: api-versions, accepted parameters, reasoning-model limits, error bodies.

Sources: reference/azure-upstream-apis.md §3 (paths, versions, auth, errors, 429, content filter,
stream_options, o-series). Exact strings are copied from there; the few guesses are marked.
"""

from __future__ import annotations

from typing import Any

# --- api-versions (§3.2) --------------------------------------------------------------------------

GA_VERSIONS = ("2024-10-21", "2024-06-01", "2024-02-01", "2023-05-15")
PREVIEW_VERSIONS = (
    "2024-04-01-preview", "2024-05-01-preview", "2024-07-01-preview", "2024-08-01-preview",
    "2024-09-01-preview", "2024-10-01-preview", "2024-12-01-preview", "2025-01-01-preview",
    "2025-02-01-preview", "2025-03-01-preview", "2025-04-01-preview",
)
KNOWN_VERSIONS = frozenset(GA_VERSIONS + PREVIEW_VERSIONS)
V1 = "v1"
# The v1 API needs no api-version; during its preview the docs used ?api-version=preview|latest.
V1_VERSIONS = frozenset({"preview", "latest", V1})

# --- parameters accepted per operation and api-version (§3.2, §3.4, §3.7) -------------------------

_CHAT_BASE = frozenset({
    "messages", "model", "data_sources", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "max_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream", "temperature",
    "top_p", "tools", "tool_choice", "function_call", "functions", "user",
})
_FROM_2024_09 = frozenset({"stream_options", "max_completion_tokens", "parallel_tool_calls"})
_FROM_2024_12 = frozenset({"reasoning_effort", "store", "metadata", "user_security_context"})
_FROM_2025_01 = frozenset({"prediction", "modalities", "audio"})
_V1_ONLY = frozenset({"service_tier", "verbosity", "prompt_cache_key", "safety_identifier", "web_search_options"})

_COMPLETIONS_BASE = frozenset({
    "prompt", "model", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens",
    "n", "presence_penalty", "seed", "stop", "stream", "suffix", "temperature", "top_p", "user",
    "completion_config",
})
_EMBEDDINGS = frozenset({"input", "model", "user", "input_type", "encoding_format", "dimensions"})


def version_date(version: str) -> str:
    """Comparable date of an api-version; the v1 API sorts after every dated one."""
    return "9999-99-99" if version == V1 else version[:10]


def accepted_keys(op: str, version: str) -> frozenset[str]:
    date = version_date(version)
    if op == "embeddings":
        return _EMBEDDINGS
    keys = _CHAT_BASE if op == "chat" else _COMPLETIONS_BASE
    if date >= "2024-09-01":
        keys = keys | (_FROM_2024_09 if op == "chat" else {"stream_options"})
    if op == "chat":
        if date >= "2024-12-01":
            keys = keys | _FROM_2024_12
        if date >= "2025-01-01":
            keys = keys | _FROM_2025_01
        if version == V1:
            keys = keys | _V1_ONLY
    return keys


def has_token_details(version: str) -> bool:
    """``completion_tokens_details`` arrived with 2024-09-01-preview (§3.2)."""
    return version_date(version) >= "2024-09-01"


# --- deployments ----------------------------------------------------------------------------------

REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
OPERATION_OF_KIND = {"chat": "chat", "reasoning": "chat", "completions": "completions", "embeddings": "embeddings"}
OPERATION_NAMES = {"chat": "chatCompletion", "completions": "completion", "embeddings": "embeddings"}
OPERATION_IDS = {"chat": "ChatCompletions_Create", "completions": "Completions_Create", "embeddings": "Embeddings_Create"}

# Longest prefix first: the versioned model name Azure reports for a deployment of that family.
_MODEL_VERSIONS = (
    ("o1-preview", "o1-preview-2024-09-12"), ("o1-mini", "o1-mini-2024-09-12"), ("o1", "o1-2024-12-17"),
    ("o3-mini", "o3-mini-2025-01-31"), ("o3", "o3-2025-04-16"), ("o4-mini", "o4-mini-2025-04-16"),
    ("gpt-5-mini", "gpt-5-mini-2025-08-07"), ("gpt-5", "gpt-5-2025-08-07"),
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"), ("gpt-4.1", "gpt-4.1-2025-04-14"), ("gpt-4o", "gpt-4o-2024-08-06"),
    ("gpt-35-turbo-instruct", "gpt-35-turbo-instruct"), ("gpt-35-turbo", "gpt-35-turbo-0125"),
    ("text-embedding-3-large", "text-embedding-3-large"), ("text-embedding-ada-002", "ada"),
)
_DEFAULT_MODEL = {
    "chat": "gpt-4o-2024-08-06", "reasoning": "o3-mini-2025-01-31",
    "completions": "gpt-35-turbo-instruct", "embeddings": "text-embedding-3-small",
}


def deployment_kind(name: str) -> str:
    lower = name.lower()
    if lower.startswith(REASONING_PREFIXES):
        return "reasoning"
    if "embedding" in lower:
        return "embeddings"
    if "instruct" in lower:
        return "completions"
    return "chat"


def versioned_model(name: str) -> str:
    lower = name.lower()
    for prefix, model in _MODEL_VERSIONS:
        if lower.startswith(prefix):
            return model
    return _DEFAULT_MODEL[deployment_kind(name)]


def reasoning_min_version(name: str) -> str:
    """§3.8: o1-preview/o1-mini need 2024-09-01-preview+, newer reasoning models 2024-12-01-preview+."""
    lower = name.lower()
    return "2024-09-01-preview" if lower.startswith(("o1-preview", "o1-mini")) else "2024-12-01-preview"


# --- error bodies ---------------------------------------------------------------------------------

UNAUTHORIZED = {"error": {"code": "401", "message": (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource.")}}
RESOURCE_NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
DEPLOYMENT_NOT_FOUND = {"error": {"code": "DeploymentNotFound", "message": (
    "The API deployment for this resource does not exist. If you created the deployment within the last "
    "5 minutes, please wait a moment and try again.")}}
_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_MARKER = "[[content_filter]]"
CONTENT_FILTERED = {"error": {
    "message": (
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
        "Please modify your prompt and retry. To learn more about our content filtering policies please read "
        "our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"),
    "type": None, "param": "prompt", "code": "content_filter", "status": 400,
    "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
        "hate": _SAFE, "jailbreak": {"filtered": True, "detected": True}, "self_harm": _SAFE,
        "sexual": _SAFE, "violence": _SAFE}},
}}
# Normal-answer annotations (§3.6, §4.1).
PROMPT_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": {
    "hate": _SAFE, "jailbreak": {"filtered": False, "detected": False},
    "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}}]
CHOICE_FILTER_RESULTS = {
    "hate": _SAFE, "protected_material_code": {"filtered": False, "detected": False},
    "protected_material_text": {"filtered": False, "detected": False},
    "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE,
}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def unsupported_api_version(version: str) -> dict[str, Any]:
    # [unconfirmed] the reference does not give this body; Azure answers 400 naming the version.
    return {"error": {"code": "BadRequest", "message": f"API version not supported: {version}"}}


def unrecognized_arguments(keys: list[str], version: str) -> dict[str, Any]:
    if version == V1:  # the v1 API answers the newer OpenAI style (§3.4)
        return invalid_request(f"Unknown parameter: '{keys[0]}'.", keys[0], "unknown_parameter")
    if len(keys) == 1:
        return invalid_request(f"Unrecognized request argument supplied: {keys[0]}")
    return invalid_request(f"Unrecognized request arguments supplied: {', '.join(keys)}")


def operation_not_supported(op: str, model: str) -> dict[str, Any]:
    return {"error": {"code": "OperationNotSupported", "message": (
        f"The {OPERATION_NAMES[op]} operation does not work with the specified model, {model}. Please choose "
        "different model and try again. You can learn more about which models can be used with each "
        "operation here: https://go.microsoft.com/fwlink/?linkid=2197993.")}}


def reasoning_version_too_old(name: str) -> dict[str, Any]:
    # [observed, not in the reference] wording of Azure's answer to an o-series call on an old version.
    return {"error": {"code": "BadRequest", "message": (
        f"Model {name} is enabled only for api versions {reasoning_min_version(name)} and later")}}


def rate_limited(op: str, version: str, seconds: int) -> dict[str, Any]:
    """The §3.5 429 body: string code, no type/param."""
    return {"error": {"code": "429", "message": (
        f"Requests to the {OPERATION_IDS[op]} Operation under Azure OpenAI API version {version} have "
        "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after "
        f"{seconds} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further "
        "increase the default rate limit.")}}


_STATUS_BODIES = {
    400: ("BadRequest", "The request is invalid."),
    408: ("Timeout", "The operation was timeout."),
    500: ("InternalServerError", "The server had an error while processing your request. Sorry about that!"),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request. Please try again later."),
    504: ("GatewayTimeout", "The operation was timeout."),
}


def status_error(status: int) -> dict[str, Any]:
    code, message = _STATUS_BODIES.get(status, (str(status), f"Emulated HTTP {status}."))
    return {"error": {"code": code, "message": message}}


# --- o-series parameter rules (§3.8) --------------------------------------------------------------

_DEFAULT_ONLY = {"temperature": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0}
_REJECTED = ("logprobs", "top_logprobs", "logit_bias", "parallel_tool_calls")


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def reasoning_violation(name: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The first o-series rule the body breaks, as the exact 400 body, or None."""
    if "max_tokens" in body:
        return invalid_request(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
    for key, default in _DEFAULT_ONLY.items():
        if key in body and body[key] is not None and body[key] != default:
            return invalid_request(
                f"Unsupported value: '{key}' does not support {_fmt(body[key])} with this model. "
                f"Only the default ({default}) value is supported.", key, "unsupported_value")
    for key in _REJECTED:
        if key in body:
            return invalid_request(
                f"Unsupported parameter: '{key}' is not supported with this model.", key, "unsupported_parameter")
    lower = name.lower()
    if lower.startswith(("o1-mini", "o1-preview")):
        for i, message in enumerate(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "system":
                return invalid_request(
                    f"Unsupported value: 'messages[{i}].role' does not support 'system' with this model.",
                    f"messages[{i}].role", "unsupported_value")
        if body.get("stream") is True:
            return invalid_request(
                "Unsupported value: 'stream' does not support true with this model.", "stream", "unsupported_value")
    return None


# --- chat messages and embeddings -----------------------------------------------------------------

# [observed, not in the reference] OpenAI's and Azure's answers, word for word (typo included).
JSON_WORD_MISSING = invalid_request(
    "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
    "messages")


def orphan_tool_message(index: int) -> dict[str, Any]:
    return invalid_request(
        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
        f"messages.[{index}].role")


TOO_MANY_INPUTS = invalid_request(
    "Too many inputs. The max number of inputs is 2048.  We hope to increase the number of inputs per request "
    "soon. Please contact us through an Azure support request at: https://go.microsoft.com/fwlink/?linkid=2213926 "
    "for further questions.")

# Native size of each embedding model: the most `dimensions` may ask for (ada-002 takes none).
_MAX_DIMENSIONS = (("text-embedding-3-large", 3072), ("text-embedding-3-small", 1536))
DEFAULT_MAX_DIMENSIONS = 1536


def max_dimensions(model: str) -> int:
    return next((dims for prefix, dims in _MAX_DIMENSIONS if model.startswith(prefix)), DEFAULT_MAX_DIMENSIONS)


def dimensions_out_of_range(value: Any, model: str) -> dict[str, Any]:
    # [unconfirmed] wording; the bound itself is the model's native size.
    return invalid_request(
        f"Invalid value for 'dimensions': {value!r}. It must be an integer from 1 to {max_dimensions(model)} "
        "for this model.", "dimensions", "invalid_value")
