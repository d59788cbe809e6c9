"""Foundry Models sold by Azure as data: which deployment belongs to which model family, and what
each family does on Foundry's OpenAI-compatible ``/openai/v1`` endpoint.

Sources (reference azure-responses-and-v1.md §4, azure-upstream-apis.md §2; tags as there):
- tool calling per family: F-MOD's catalogue ("Meta … Tool calling: **No**" for
  ``Llama-4-Maverick-17B-128E-Instruct-FP8`` and ``Llama-3.3-70B-Instruct``; DeepSeek, xAI, Moonshot: Yes);
- reasoning: ``message.reasoning_content`` / ``delta.reasoning_content`` (F-RSN; DeepSeek, Moonshot
  "reasoning content"); reasoning models "often reject ``temperature``, ``top_p``,
  ``presence_penalty``, ``frequency_penalty``; use ``max_completion_tokens``" (F-RSN);
- Mistral's pydantic model server forbids extra inputs: 422 ``extra_forbidden`` for ``user``
  (litellm#3899), ``stream_options.include_usage`` (litellm#11696, ``mistral-small-2503`` on Foundry,
  wrapped ``{"error":{"code":"Invalid input",…,"status":422}}``), ``max_completion_tokens``,
  ``metadata``, ``store`` and replayed ``reasoning_content`` (Mistral's own API, §4.3);
- Llama and JSON output: "Meta Llama models don't support JSON output formatting" (upstream §2.2).
Everything else in this table is [unconfirmed]: marked per entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from . import azure_ai_rules as ai_rules
from . import azure_openai_rules as aoai_rules

# What Foundry's v1 chat endpoint knows: the Azure OpenAI v1 chat body (the same service, §4.1).
V1_CHAT_KEYS = aoai_rules.accepted_keys("chat", aoai_rules.V1)
V1_EMBEDDING_KEYS = frozenset({"input", "model", "encoding_format", "dimensions", "user", "input_type"})
SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
# Mistral's own chat-completion fields [unconfirmed as the Azure container's exact set]; `seed`
# (Mistral says `random_seed`), `parallel_tool_calls`, `logprobs`, `user`, … are therefore extra.
MISTRAL_KEYS = frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n", "safe_prompt",
    "stream_options",  # the key is known, its `include_usage` is not (litellm#11696: loc body.stream_options.include_usage)
})
PYDANTIC_URL = "https://errors.pydantic.dev/2.10/v/extra_forbidden"  # as in litellm#11696's body


@dataclass(frozen=True)
class Family:
    key: str
    provider: str                       # `owned_by` in /openai/v1/models
    kind: str = "chat"                  # "chat" or "embeddings"
    tools: bool = True                  # False: `tools` → TOOLS_UNSUPPORTED (400)
    structured: bool = True             # False: response_format json_* → 422 parameter_not_supported
    reasoning: str | None = None        # "field": reasoning_content; "think": inline <think>…</think>
    rejects: tuple[str, ...] = ()       # parameters refused with 400 unsupported_parameter
    strict: frozenset[str] | None = None  # pydantic extra="forbid" keys (Mistral): the rest → 422


FAMILIES: dict[str, Family] = {f.key: f for f in (
    Family("llama", "Meta", tools=False, structured=False),      # F-MOD: tools No; §2.2: no JSON output
    Family("mistral", "Mistral AI", strict=MISTRAL_KEYS),
    Family("deepseek-reasoning", "DeepSeek", reasoning="field", rejects=SAMPLING),  # F-RSN
    Family("deepseek", "DeepSeek"),
    Family("grok", "xAI"),
    # [unconfirmed on Foundry] xAI's own docs: reasoning models refuse these three.
    Family("grok-reasoning", "xAI", reasoning="field", rejects=("presence_penalty", "frequency_penalty", "stop")),
    Family("phi", "Microsoft", tools=False),                      # [unconfirmed] Phi-4 tool calling
    Family("phi-reasoning", "Microsoft", tools=False, reasoning="think"),  # [unconfirmed] inline <think>
    Family("kimi", "Moonshot AI", reasoning="field"),             # F-MOD: tools Yes, reasoning content
    Family("cohere-embed", "Cohere", kind="embeddings"),
    Family("generic", "Unknown"),                                 # plain OpenAI-compatible chat model
)}

# The emulated Foundry resource's deployments (deployment name -> family); the first three were
# the model-inference emulator's defaults and stay so.
DEFAULT_DEPLOYMENTS: dict[str, str] = {
    "Meta-Llama-3.1-8B-Instruct": "llama",
    "Mistral-Large-2411": "mistral",
    "Cohere-embed-v3-english": "cohere-embed",
    "Llama-3.3-70B-Instruct": "llama",
    "Llama-4-Maverick-17B-128E-Instruct-FP8": "llama",
    "mistral-small-2503": "mistral",
    "DeepSeek-R1": "deepseek-reasoning",
    "DeepSeek-V3.1": "deepseek",
    "grok-3": "grok",
    "grok-3-mini": "grok-reasoning",
    "Phi-4": "phi",
    "Phi-4-reasoning": "phi-reasoning",
    "Kimi-K2.5": "kimi",
    "generic-chat": "generic",
}

# Family of a deployment name not in a table: first matching (case-insensitive) substring rule.
_PATTERNS = (
    (("embed",), "cohere-embed"), (("llama",), "llama"), (("mistral",), "mistral"), (("ministral",), "mistral"),
    (("codestral",), "mistral"), (("deepseek-r1",), "deepseek-reasoning"), (("deepseek",), "deepseek"),
    (("grok", "mini"), "grok-reasoning"), (("grok",), "grok"), (("phi", "reasoning"), "phi-reasoning"),
    (("phi",), "phi"), (("kimi",), "kimi"),
)


def infer_family(name: str) -> str:
    lower = name.lower()
    return next((family for needles, family in _PATTERNS if all(n in lower for n in needles)), "generic")


def resolve(deployments: Iterable[str] | Mapping[str, str] | None) -> dict[str, Family]:
    """Deployment name -> Family: a mapping names families, a list infers them, None = the defaults."""
    if deployments is None:
        table: Mapping[str, str] = DEFAULT_DEPLOYMENTS
    elif isinstance(deployments, Mapping):
        table = deployments
    else:
        table = {name: DEFAULT_DEPLOYMENTS.get(name) or infer_family(name) for name in deployments}
    unknown = sorted({family for family in table.values() if family not in FAMILIES})
    if unknown:
        raise ValueError(f"unknown model families {unknown}; known: {sorted(FAMILIES)}")
    return {name: FAMILIES[family] for name, family in table.items()}


# --- the error bodies ---------------------------------------------------------------------------

def _invalid(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return aoai_rules.invalid_request(message, param, code)


# [unconfirmed for Foundry v1] F-MOD says Llama has no tool calling but not what `tools` gets; this is
# vLLM's answer, observed from Azure-hosted Llama (microsoft/semantic-kernel#10221), in the newer
# vLLM envelope that the openai SDK unwraps.
TOOLS_UNSUPPORTED = {"error": {
    "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
    "type": "BadRequestError", "param": None, "code": 400}}


def extra_forbidden(loc: list[Any], value: Any) -> dict[str, Any]:
    return {"type": "extra_forbidden", "loc": loc, "msg": "Extra inputs are not permitted", "input": value,
            "url": PYDANTIC_URL}


def strict_errors(allowed: frozenset[str], body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pydantic ``extra_forbidden`` list of a Mistral-style model server, in body order."""
    errors = [extra_forbidden(["body", key], body[key]) for key in body if key not in allowed]
    options = body.get("stream_options")
    if isinstance(options, dict):
        errors += [extra_forbidden(["body", "stream_options", key], value) for key, value in options.items()]
    for i, message in enumerate(body.get("messages") if isinstance(body.get("messages"), list) else []):
        if isinstance(message, dict) and message.get("role") == "assistant" and "reasoning_content" in message:
            errors.append(extra_forbidden(["body", "messages", i, "assistant", "reasoning_content"],
                                          message["reasoning_content"]))
    return errors


def chat_problem(family: Family, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """What the family's model refuses in a chat body, as (status, error body), or None.
    Order: unknown keys, the model server's strict schema, tools, refused parameters, JSON output."""
    if family.strict is not None:
        errors = strict_errors(family.strict, body)
        if errors:  # the Foundry gateway wraps the model server's 422 (upstream §2.2, litellm#11696)
            return 422, ai_rules.backend_422(errors, foundry=True)
    else:
        unknown = [key for key in body if key not in V1_CHAT_KEYS]
        if unknown:  # [unconfirmed] Azure OpenAI v1's answer (upstream §3.4); v1 has no extra-parameters
            return 400, aoai_rules.unrecognized_arguments(unknown, aoai_rules.V1)
    if not family.tools and body.get("tools"):
        return 400, TOOLS_UNSUPPORTED
    for key in family.rejects:
        if key in body:  # [unconfirmed] wording: OpenAI's for o-series (upstream §3.8)
            return 400, _invalid(f"Unsupported parameter: '{key}' is not supported with this model.", key,
                                 "unsupported_parameter")
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if not family.structured and kind in ("json_object", "json_schema"):
        return 422, ai_rules.parameter_not_supported("response_format", kind)  # [unconfirmed on v1] /models' §2.2
    return None
