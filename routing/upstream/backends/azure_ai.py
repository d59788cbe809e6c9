"""Azure AI model inference: serverless Llama (`*.models.ai.azure.com`) and Foundry `/models`.

The service rejects any key outside its schema unless the request carries
`extra-parameters: pass-through|drop` (reference §2), so by default the gateway removes them.
"""

from __future__ import annotations

from routing.upstream.backends.base import Backend, OperationRules

CHAT_KEYS = frozenset({
    "messages", "frequency_penalty", "stream", "presence_penalty", "temperature", "top_p",
    "max_tokens", "response_format", "stop", "tools", "tool_choice", "seed", "model",
})
EMBEDDING_KEYS = frozenset({"input", "dimensions", "encoding_format", "input_type", "model"})


def url(route, operation: str) -> str:
    return f"{route.endpoint}/{operation}?api-version={route.api_version}"


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
)
