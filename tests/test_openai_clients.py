"""Unchanged `openai` SDK clients (OpenAI and AzureOpenAI, sync and async, streaming) through
the gateway to the emulators; the emulators' records prove what the upstream received."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import openai
import pytest

from tests.conftest import USER_ASSIGNED_CLIENT_ID
from tests.helpers import GATEWAY_KEY

pytestmark = pytest.mark.usefixtures("clean")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


def openai_client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def azure_client(gateway) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=gateway.url, api_key=GATEWAY_KEY,
                              api_version="2024-10-21", max_retries=0)


def only_request(upstream) -> dict:
    records = [r for r in upstream.requests() if not r["path"].startswith("/msi")]
    assert len(records) == 1, records
    return records[0]


def test_chat_managed_identity_route(gateway, upstreams):
    reply = openai_client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, user="u-1")
    completion = reply.parse()
    assert completion.choices[0].message.content.startswith("Hello! You said: Say hello")
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert reply.headers["x-gateway-route"] == "GPT"
    assert reply.headers["x-gateway-attempts"] == "1"
    assert reply.headers["x-request-id"]

    seen = only_request(upstreams["aoai"])
    assert seen["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert seen["query"] == {"api-version": "2024-10-21"}
    assert seen["headers"]["authorization"].startswith("Bearer ey")  # an Entra (emulated) token
    assert "api-key" not in seen["headers"]
    assert seen["headers"]["x-team"] == "platform"  # injected by the route
    assert seen["headers"]["x-ms-client-request-id"] == reply.headers["x-request-id"]
    assert seen["body"]["model"] == "gpt-4o"
    assert seen["body"]["messages"] == MESSAGES
    assert seen["body"]["user"] == "u-1"
    # The client's own credentials never travel upstream.
    assert GATEWAY_KEY not in str(seen["headers"])


def test_chat_key_route_and_v1_path(gateway, upstreams):
    client = openai_client(gateway)
    client.chat.completions.create(model="gpt-4o-key", messages=MESSAGES)
    seen = only_request(upstreams["aoai"])
    assert seen["headers"]["api-key"] == upstreams["aoai"].key
    assert "authorization" not in seen["headers"]
    upstreams["aoai"].clear()

    client.chat.completions.create(model="gpt-4o-v1", messages=MESSAGES)
    seen = only_request(upstreams["aoai"])
    assert seen["path"] == "/openai/v1/chat/completions"
    assert seen["query"] == {}
    assert seen["body"]["model"] == "gpt-4o"


def token_claims(authorization: str) -> dict:
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_user_assigned_identity_token_is_used(gateway, upstreams):
    openai_client(gateway).chat.completions.create(model="gpt-4o-uami", messages=MESSAGES)
    claims = token_claims(only_request(upstreams["aoai"])["headers"]["authorization"])
    assert claims["appid"] == USER_ASSIGNED_CLIENT_ID
    assert claims["aud"].rstrip("/") == "https://cognitiveservices.azure.com"
    upstreams["aoai"].clear()
    openai_client(gateway).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    # The route without CLIENT_ID uses the system-assigned identity: another token.
    claims = token_claims(only_request(upstreams["aoai"])["headers"]["authorization"])
    assert claims["appid"] != USER_ASSIGNED_CLIENT_ID


def test_azure_openai_client_paths(gateway, upstreams):
    client = azure_client(gateway)
    completion = client.chat.completions.create(model="gpt-4o-key", messages=MESSAGES)
    assert completion.choices[0].message.content
    seen = only_request(upstreams["aoai"])
    # The client's api-version is accepted; the route's is used upstream.
    assert seen["query"] == {"api-version": "2024-10-21"}
    assert seen["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert "api-key" in seen["headers"] and seen["headers"]["api-key"] != GATEWAY_KEY

    models = [m.id for m in client.models.list()]
    assert "gpt-4o-key" in models and "llama3" in models


def test_streaming_chat_sync_both_clients(gateway, upstreams):
    for client, model in ((openai_client(gateway), "gpt-4o"), (azure_client(gateway), "gpt-4o-key")):
        full = client.chat.completions.create(model=model, messages=MESSAGES).choices[0].message.content
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert len([p for p in parts if p]) > 2
        assert "".join(parts) == full


def test_async_clients_stream_and_embeddings(gateway, upstreams):
    async def run():
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
        azure = openai.AsyncAzureOpenAI(azure_endpoint=gateway.url, api_key=GATEWAY_KEY,
                                        api_version="2024-10-21", max_retries=0)
        texts = []
        for c in (client, azure):
            stream = await c.chat.completions.create(model="llama3", messages=MESSAGES, stream=True)
            texts.append("".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices]))
        emb = await azure.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        await client.close()
        await azure.close()
        return texts, emb
    texts, emb = asyncio.run(run())
    assert texts[0] == texts[1] and texts[0].startswith("Hello! You said: Say hello")
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    assert emb.data[0].embedding != emb.data[1].embedding


def test_embeddings_all_backends(gateway, upstreams):
    client = openai_client(gateway)
    emb = client.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=4)
    assert len(emb.data[0].embedding) == 4
    seen = only_request(upstreams["aoai"])
    assert seen["path"] == "/openai/deployments/text-embedding-3-small/embeddings"
    # The SDK asks for base64; the gateway passes it through and the SDK decodes it.
    assert seen["body"]["encoding_format"] == "base64"

    emb2 = client.embeddings.create(model="cohere-embed", input=["hello"], user="u-2")
    assert len(emb2.data[0].embedding) > 0
    seen = only_request(upstreams["foundry"])
    assert seen["path"] == "/models/embeddings"
    assert seen["body"]["model"] == "Cohere-embed-v3-english"
    assert "user" not in seen["body"]  # not in the Azure AI embeddings schema


def test_completions_on_azure_openai(gateway, upstreams):
    client = openai_client(gateway)
    completion = client.completions.create(model="gpt-35-turbo-instruct", prompt="Say hello")
    assert completion.choices[0].text
    seen = only_request(upstreams["aoai"])
    assert seen["path"] == "/openai/deployments/gpt-35-turbo-instruct/completions"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="gpt-35-turbo-instruct", prompt="Say hello", stream=True) if c.choices)
    assert streamed == completion.choices[0].text


def test_models_list_and_retrieve(gateway, emulators):
    client = openai_client(gateway)
    ids = sorted(m.id for m in client.models.list())
    from tests.conftest import gateway_settings
    expected = sorted({v for k, v in gateway_settings(emulators).items() if k.endswith("__MODEL")})
    assert ids == expected
    assert client.models.retrieve("llama3").id == "llama3"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_base64_embedding_matches_float(gateway, upstreams):
    import httpx
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    floats = httpx.post(gateway.url + "/v1/embeddings", headers=headers, json={
        "model": "text-embedding-3-small", "input": "x", "encoding_format": "float"}).json()
    b64 = httpx.post(gateway.url + "/v1/embeddings", headers=headers, json={
        "model": "text-embedding-3-small", "input": "x", "encoding_format": "base64"}).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert decoded == pytest.approx(floats["data"][0]["embedding"], rel=1e-6)
