"""Azure AI: Foundry's OpenAI v1 endpoint for non-OpenAI models (`API_VERSION=v1`, the current
API), and the deprecated Azure AI model inference API: serverless Llama
(`*.models.ai.azure.com`) and Foundry `/models`.

The model inference API rejects any key outside its schema unless the request carries
`extra-parameters: pass-through|drop` (reference §2), so by default the gateway removes them.
On v1 the rules are per model family (`families`).
"""

from __future__ import annotations

from routing.upstream.backends.base import Backend, OperationRules
from routing.upstream.backends.families import EMBEDDING_KEYS as EMBEDDING_V1_KEYS
from routing.upstream.backends.families import FAMILIES, REASONING_CHAT, detect

CHAT_KEYS = frozenset({
    "messages", "frequency_penalty", "stream", "presence_penalty", "temperature", "top_p",
    "max_tokens", "response_format", "stop", "tools", "tool_choice", "seed", "model",
})
EMBEDDING_KEYS = frozenset({"input", "dimensions", "encoding_format", "input_type", "model"})


V1_OPERATIONS = frozenset({"chat/completions", "embeddings", "responses"})
V1_BASE = OperationRules(roles={"developer": "system"})


def url(route, operation: str) -> str:
    if route.api_version == "v1":  # resource or project endpoint + /openai/v1, no api-version
        return f"{route.endpoint}/openai/v1/{operation}"
    return f"{route.endpoint}/{operation}?api-version={route.api_version}"


def v1_rules(route, operation: str) -> OperationRules | None:
    if route.api_version != "v1":
        return None
    if operation == "embeddings":
        return OperationRules(accepted=EMBEDDING_V1_KEYS)
    if operation == "responses":
        return OperationRules()  # forwarded as sent, where the deployment has the Responses API
    family = FAMILIES[route.family or detect(route.deployment, route.model)]
    rules = V1_BASE.overlay(family.chat).overlay(OperationRules(tools=family.tools))
    if route.reasoning or family.reasoning(route.deployment):
        rules = rules.overlay(REASONING_CHAT)
    return rules


def operations_of(route) -> frozenset[str]:
    return V1_OPERATIONS if route.api_version == "v1" else frozenset(BACKEND.operations)


BACKEND = Backend(
    name="azure-ai",
    operations={
        "chat/completions": OperationRules(
            accepted=CHAT_KEYS,
            rename={"max_completion_tokens": "max_tokens"},
            roles={"developer": "system"},
        ),
        "embeddings": OperationRules(accepted=EMBEDDING_KEYS),
    },
    url=url,
    honours_extra_parameters=True,
    variant=v1_rules,
    route_operations=operations_of,
)
