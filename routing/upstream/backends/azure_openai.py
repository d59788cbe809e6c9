"""Azure OpenAI: `/openai/deployments/{deployment}/{op}?api-version=` or the `/openai/v1/` API."""

from __future__ import annotations

from urllib.parse import quote

from routing.upstream.backends.base import Backend, OperationRules

# o-series / gpt-5 reject these sampling parameters outright (reference §3.8).
REASONING_REJECTED = frozenset({
    "temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
    "logit_bias", "parallel_tool_calls",
})


def url(route, operation: str) -> str:
    if operation.startswith("responses"):
        # The v1 GA path for every route, with no api-version: Azure dropped the parameter for
        # v1 ("no longer a required parameter") and `?api-version=preview` was seen rejected;
        # the dated alternative needs 2025-03-01-preview or later, newer than most routes' own.
        return f"{route.endpoint}/openai/v1/{operation}"
    if route.api_version == "v1":
        return f"{route.endpoint}/openai/v1/{operation}"
    return (f"{route.endpoint}/openai/deployments/{quote(route.deployment, safe='')}/{operation}"
            f"?api-version={route.api_version}")


BACKEND = Backend(
    name="azure-openai",
    operations={
        "chat/completions": OperationRules(
            # `developer` is only understood by reasoning models on recent api-versions.
            roles={"developer": "system"},
            only_with={"stream_options": ("stream", True)},
        ),
        "completions": OperationRules(only_with={"stream_options": ("stream", True)}),
        "embeddings": OperationRules(),
        # The Responses API: forwarded as the client sent it (body `model` = the deployment).
        "responses": OperationRules(),
    },
    reasoning={
        "chat/completions": OperationRules(
            drop=REASONING_REJECTED,
            rename={"max_tokens": "max_completion_tokens"},
            roles={"system": "developer"},
        ),
    },
    # `max_completion_tokens`, `stream_options` and `parallel_tool_calls` arrived in
    # 2024-09-01-preview (reference §3.2); older versions reject them as unrecognized.
    older_than={
        "2024-09-01-preview": {
            "chat/completions": OperationRules(
                drop=frozenset({"stream_options", "parallel_tool_calls"}),
                rename={"max_completion_tokens": "max_tokens"},
            ),
            "completions": OperationRules(drop=frozenset({"stream_options"})),
        },
    },
    url=url,
)
