"""Foundry's OpenAI v1 endpoint for non-OpenAI models (DESIGN §3), through the gateway with the
real `openai` SDK: each model family's rules applied, so OpenAI-only or unknown parameters never
reach a strict model, tools refused with a 400 where the family has none, reasoning content passed
on; the Responses API translated once a deployment says it lacks it."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import gateway_settings, route
from tests.helpers import GATEWAY_KEY, GatewayProcess

USER = [{"role": "user", "content": "Hello there"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
# What OpenAI clients (and agent frameworks) often send, that a strict model refuses.
OPENAI_EXTRAS = {"user": "u-1", "store": False, "metadata": {"app": "x"}, "parallel_tool_calls": True,
                 "logprobs": False, "max_completion_tokens": 64}
FAMILIES = {"LLAMA": "Llama-3.3-70B-Instruct", "MISTRAL": "Mistral-Large-2411", "DSR1": "DeepSeek-R1",
            "DSV3": "DeepSeek-V3.1", "GROKMINI": "grok-3-mini", "PHIR": "Phi-4-reasoning", "KIMI": "Kimi-K2.5"}


@pytest.fixture(scope="module")
def v1_gateway(emulators, tmp_path_factory):
    foundry, key = emulators.urls["azure_ai_foundry"], emulators.keys["azure_ai_foundry"][0]
    settings = {**gateway_settings(emulators)}
    for route_id, deployment in FAMILIES.items():
        settings.update(route(f"V1{route_id}", model=f"v1-{route_id.lower()}", backend="azure-ai",
                              endpoint=foundry, api_version="v1", deployment=deployment, api_key=key))
    settings.update(route("V1EMBED", model="v1-embed", backend="azure-ai", endpoint=foundry, api_version="v1",
                          deployment="Cohere-embed-v3-english", api_key=key))
    # Managed identity on a project endpoint: only an https://ai.azure.com token is accepted there.
    settings.update(route("V1PROJECT", model="v1-project", backend="azure-ai", api_version="v1",
                          endpoint=foundry + "/api/projects/team", deployment="DeepSeek-V3.1"))
    gateway = GatewayProcess(settings, tmp_path_factory.mktemp("foundry-v1"))
    yield gateway
    gateway.stop()


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def sent_bodies(upstream) -> list[dict]:
    return [r["body"] for r in upstream.requests() if r["path"].endswith("/chat/completions")]


@pytest.mark.parametrize("route_id", list(FAMILIES))
def test_every_family_answers_openai_clients(v1_gateway, clean, route_id):
    model = f"v1-{route_id.lower()}"
    raw = client(v1_gateway).chat.completions.with_raw_response.create(
        model=model, messages=USER, temperature=0.5, extra_body={"some_future_param": 1}, **OPENAI_EXTRAS)
    reply = raw.parse()
    assert reply.choices[0].message.content
    dropped = raw.headers["x-gateway-dropped-params"].split(",")
    assert "some_future_param" in dropped and "user" in dropped or route_id == "GROKMINI"
    body = sent_bodies(clean["foundry"])[-1]
    assert body["model"] == FAMILIES[route_id]
    assert "some_future_param" not in body and "metadata" not in body and "store" not in body
    stream = client(v1_gateway).chat.completions.create(model=model, messages=USER, stream=True,
                                                        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.total_tokens > 0 and chunks[-1].choices == []


def test_reasoning_models_lose_sampling_parameters_and_keep_their_reasoning(v1_gateway, clean):
    raw = client(v1_gateway).chat.completions.with_raw_response.create(
        model="v1-dsr1", messages=USER, temperature=0.2, top_p=0.9, max_tokens=100)
    message = raw.parse().choices[0].message
    assert message.content and message.model_extra.get("reasoning_content")
    body = sent_bodies(clean["foundry"])[-1]
    assert "temperature" not in body and "top_p" not in body and body["max_completion_tokens"] == 100
    # The model's own reasoning is not replayed to it (strict Mistral would answer 422).
    history = [*USER, {"role": "assistant", "content": "Hi", "reasoning_content": "thinking..."},
               {"role": "user", "content": "And then?"}]
    for model in ("v1-mistral", "v1-dsr1"):
        assert client(v1_gateway).chat.completions.create(model=model, messages=history).choices[0].message.content
        assert all("reasoning_content" not in m for m in sent_bodies(clean["foundry"])[-1]["messages"])
    deltas = [c.choices[0].delta for c in client(v1_gateway).chat.completions.create(
        model="v1-dsr1", messages=USER, stream=True) if c.choices]
    assert any(d.model_extra.get("reasoning_content") for d in deltas) and any(d.content for d in deltas)


def test_tools_where_the_family_has_them_and_a_400_where_not(v1_gateway, clean):
    with pytest.raises(openai.BadRequestError) as refused:
        client(v1_gateway).chat.completions.create(model="v1-llama", messages=USER, tools=[WEATHER])
    assert refused.value.param == "tools" and refused.value.code == "unsupported_parameter"
    assert sent_bodies(clean["foundry"]) == []  # never reached the upstream
    answer = client(v1_gateway).chat.completions.create(
        model="v1-dsv3", messages=[{"role": "user", "content": "What is the weather in Paris? use get_weather"}],
        tools=[WEATHER], tool_choice="required")
    assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_structured_output_embeddings_and_managed_identity_on_a_project(v1_gateway, clean):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    reply = client(v1_gateway).chat.completions.create(
        model="v1-mistral", messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}})
    assert "answer" in json.loads(reply.choices[0].message.content)
    vectors = client(v1_gateway).embeddings.create(model="v1-embed", input=["one", "two"])
    assert len(vectors.data) == 2
    assert client(v1_gateway).chat.completions.create(model="v1-project", messages=USER).choices[0].message.content
    assert clean["foundry"].requests()[-1]["path"] == "/api/projects/team/openai/v1/chat/completions"


def test_responses_api_translated_once_the_deployment_says_it_lacks_it(v1_gateway, clean):
    first = client(v1_gateway).responses.create(model="v1-dsv3", input="Hello")
    second = client(v1_gateway).responses.create(model="v1-dsv3", input="Hello again")
    assert first.output_text and second.output_text
    paths = [r["path"] for r in clean["foundry"].requests()]
    assert paths == ["/openai/v1/responses", "/openai/v1/chat/completions", "/openai/v1/chat/completions"]
