"""Model families on Foundry's OpenAI v1 endpoint (DESIGN §3): what each accepts, as data.

An `azure-ai` route with `API_VERSION=v1` speaks OpenAI's chat completions to
`{resource}/openai/v1/` for a non-OpenAI model (the successor of the model inference API). The
quirks move with the model, not the API, so they are listed per family, Portkey-style: the keys
a family accepts, renames, keys removed from replayed messages, whether it calls tools, and its
reasoning variants. The family is detected from DEPLOYMENT (or MODEL), or set with
`ROUTE__<ID>__FAMILY`. Unknown families get the safe default: OpenAI's standard chat keys only.

Sources (shared/reference/azure-responses-and-v1.md §4): the Foundry catalog marks Llama 3.3 and
Llama 4 Maverick "Tool calling: No"; Azure-hosted Mistral answered 422 `extra_forbidden` for
`user`, and Mistral's API rejects `store`, `metadata`, `max_completion_tokens` and
`reasoning_content` on replayed assistant messages; reasoning models (DeepSeek-R1, grok-3-mini,
Phi-4-reasoning, Kimi thinking models) reject sampling parameters and want
`max_completion_tokens`, and return `reasoning_content` (kept as the upstream sends it); no
family takes its own reasoning back in history ("do not replay reasoning into history").
"""

from __future__ import annotations

from dataclasses import dataclass

from routing.upstream.backends.base import OperationRules

# OpenAI chat keys every v1 model takes (the safe default for a family we do not know).
STANDARD_CHAT = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "stop", "presence_penalty", "frequency_penalty", "response_format",
    "tools", "tool_choice", "seed", "n",
})
SAMPLING = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty"})
EMBEDDING_KEYS = frozenset({"model", "input", "dimensions", "encoding_format", "input_type", "user"})


@dataclass(frozen=True)
class Family:
    name: str
    prefixes: tuple[str, ...]  # DEPLOYMENT/MODEL prefixes, lower-case
    chat: OperationRules
    tools: bool = True
    # Deployment name fragments of its reasoning models (lower-case).
    reasoning_markers: tuple[str, ...] = ()

    def reasoning(self, deployment: str) -> bool:
        name = deployment.lower()
        return any(marker in name for marker in self.reasoning_markers)


# Reasoning variants: sampling parameters dropped, the completion limit under its newer name.
REASONING_CHAT = OperationRules(drop=SAMPLING, rename={"max_tokens": "max_completion_tokens"})

FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("llama", ("llama", "meta-llama"), tools=False,
           chat=OperationRules(accepted=STANDARD_CHAT - {"tools", "tool_choice"},
                               message_drop=frozenset({"reasoning_content"}))),
    Family("mistral", ("mistral", "ministral", "codestral", "pixtral", "magistral"),
           # Strict schema: `user`, `store`, `metadata`, `parallel_tool_calls`, `logprobs`,
           # `max_completion_tokens` are all 422s; the completion limit is `max_tokens`.
           chat=OperationRules(accepted=STANDARD_CHAT - {"max_completion_tokens", "n", "stream_options"},
                               rename={"max_completion_tokens": "max_tokens"},
                               message_drop=frozenset({"reasoning_content"})),
           reasoning_markers=("magistral",)),
    Family("deepseek", ("deepseek",),
           chat=OperationRules(accepted=STANDARD_CHAT, message_drop=frozenset({"reasoning_content"})),
           reasoning_markers=("deepseek-r1", "-reasoner", "speciale")),
    Family("grok", ("grok",),
           chat=OperationRules(accepted=STANDARD_CHAT | {"user", "parallel_tool_calls", "logprobs", "top_logprobs"},
                               message_drop=frozenset({"reasoning_content"})),
           reasoning_markers=("grok-3-mini", "grok-4", "reasoning")),
    Family("phi", ("phi-",),
           chat=OperationRules(accepted=STANDARD_CHAT - {"tools", "tool_choice"},
                               message_drop=frozenset({"reasoning_content"})),
           tools=False, reasoning_markers=("reasoning",)),
    Family("cohere", ("cohere", "command"),
           chat=OperationRules(accepted=STANDARD_CHAT, message_drop=frozenset({"reasoning_content"}))),
    Family("kimi", ("kimi", "moonshot"),
           chat=OperationRules(accepted=STANDARD_CHAT, message_drop=frozenset({"reasoning_content"})),
           reasoning_markers=("thinking", "k2.5", "k2.6", "k2.7")),
    Family("generic", (),
           chat=OperationRules(accepted=STANDARD_CHAT, message_drop=frozenset({"reasoning_content"}))),
)}
DEFAULT_FAMILY = "generic"


def detect(deployment: str, model: str = "") -> str:
    """The family of a deployment, by name (DEPLOYMENT first, then MODEL); generic if unknown."""
    for name in (deployment, model):
        lowered = name.lower()
        for family in FAMILIES.values():
            if family.prefixes and lowered.startswith(family.prefixes):
                return family.name
    return DEFAULT_FAMILY
