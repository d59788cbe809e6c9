"""Session fixtures: the emulators (real HTTP servers on loopback) and one gateway process
serving a route table that covers every backend, auth mode and normalisation case."""

from __future__ import annotations

import json

import pytest

from tests.helpers import GATEWAY_KEY, GatewayProcess, Upstream

USER_ASSIGNED_CLIENT_ID = "11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="session")
def emulators():
    from emulator.servers import start_all

    running = start_all()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def upstreams(emulators):
    urls = emulators.urls
    keys = {name: values[0] for name, values in emulators.keys.items()}
    return {
        "aoai": Upstream(urls["azure_openai"], keys["azure_openai"]),
        "serverless": Upstream(urls["azure_ai_serverless"], keys["azure_ai_serverless"]),
        "foundry": Upstream(urls["azure_ai_foundry"], keys["azure_ai_foundry"]),
        "identity": Upstream(urls["identity"]),
    }


def route(route_id: str, **fields) -> dict[str, str]:
    return {f"ROUTE__{route_id}__{name.upper()}": value if isinstance(value, str) else json.dumps(value)
            for name, value in fields.items()}


def gateway_settings(emulators) -> dict[str, str]:
    urls = emulators.urls
    keys = {name: values[0] for name, values in emulators.keys.items()}
    aoai, serverless, foundry = urls["azure_openai"], urls["azure_ai_serverless"], urls["azure_ai_foundry"]
    return {
        "GATEWAY_API_KEYS": f"other-key-0123456789,{GATEWAY_KEY}",
        "IDENTITY_ENDPOINT": urls["identity"],
        "IDENTITY_HEADER": emulators.identity_header,
        **route("GPT", model="gpt-4o", backend="azure-openai", endpoint=aoai, auth="managed-identity",
                headers={"x-team": "platform", "x-ms-useragent": "gateway-tests"}),
        **route("GPTKEY", model="gpt-4o-key", backend="azure-openai", endpoint=aoai,
                deployment="gpt-4o", api_key=keys["azure_openai"]),
        **route("GPTV1", model="gpt-4o-v1", backend="azure-openai", endpoint=aoai,
                deployment="gpt-4o", api_version="v1", api_key=keys["azure_openai"]),
        **route("GPTUAMI", model="gpt-4o-uami", backend="azure-openai", endpoint=aoai,
                deployment="gpt-4o", client_id=USER_ASSIGNED_CLIENT_ID),
        **route("O3", model="o3-mini", backend="azure-openai", endpoint=aoai,
                api_version="2024-12-01-preview", api_key=keys["azure_openai"]),
        **route("EMBED", model="text-embedding-3-small", backend="azure-openai", endpoint=aoai,
                api_key=keys["azure_openai"]),
        **route("INSTRUCT", model="gpt-35-turbo-instruct", backend="azure-openai", endpoint=aoai,
                api_key=keys["azure_openai"]),
        **route("LLAMA", model="llama3", backend="azure-ai", endpoint=serverless,
                deployment="Meta-Llama-3-70B-Instruct", api_key=keys["azure_ai_serverless"]),
        **route("LLAMAPT", model="llama3-passthrough", backend="azure-ai", endpoint=serverless,
                api_key=keys["azure_ai_serverless"], headers={"extra-parameters": "pass-through"}),
        **route("LLAMAPOLICY", model="llama3-policy", backend="azure-ai", endpoint=serverless,
                api_key=keys["azure_ai_serverless"],
                params={"drop": ["seed"], "rename": {"stop_sequences": "stop"},
                        "defaults": {"max_tokens": 7, "temperature": 0.2}, "set": {"top_p": 0.5}}),
        # Only for the test that makes them cool down (the gateway is shared by the session).
        **route("LLAMACOOL", model="llama3-cooldown", backend="azure-ai", endpoint=serverless,
                api_key=keys["azure_ai_serverless"]),
        **route("GPTCOOL", model="gpt-4o-cooldown", backend="azure-openai", endpoint=aoai,
                deployment="gpt-4o", api_key=keys["azure_openai"]),
        **route("MISTRAL", model="mistral-large", backend="azure-ai", endpoint=foundry + "/models",
                deployment="Mistral-Large-2411", auth="managed-identity"),
        **route("COHERE", model="cohere-embed", backend="azure-ai", endpoint=foundry + "/models",
                deployment="Cohere-embed-v3-english", api_key=keys["azure_ai_foundry"],
                key_header="api-key"),  # the default for *.services.ai.azure.com hosts
        **route("BADKEY", model="gpt-4o-badkey", backend="azure-openai", endpoint=aoai,
                deployment="gpt-4o", api_key="not-the-key"),
    }


@pytest.fixture(scope="session")
def gateway(emulators, tmp_path_factory):
    process = GatewayProcess(gateway_settings(emulators), tmp_path_factory.mktemp("gateway"))
    yield process
    process.stop()


@pytest.fixture
def clean(upstreams):
    """Fresh records and no faults on every emulator, before and after the test."""
    for upstream in upstreams.values():
        upstream.clear()
    yield upstreams
    for upstream in upstreams.values():
        upstream.clear()
