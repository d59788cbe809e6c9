"""Parameter normalisation: no client ever sees a backend quirk (DESIGN §4)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.helpers import GATEWAY_KEY, data_events, sse_events

pytestmark = pytest.mark.usefixtures("clean")
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
USER = [{"role": "user", "content": "Tell me something"}]


def upstream_bodies(upstream) -> list[dict]:
    return [r["body"] for r in upstream.requests()]


def test_origin_case_stream_options_to_llama_without_extra_parameters(gateway, upstreams):
    """The origin story: an OpenAI client asking for usage from Llama on Azure AI."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
            model="llama3", messages=USER, stream=True,
            stream_options={"include_usage": True}) as response:
        assert response.headers["x-gateway-dropped-params"] == "stream_options"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello! You said: Tell me something")
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1, "exactly one usage chunk"
    assert usage_chunks[0].choices == [] and chunks[-1] is usage_chunks[0]
    assert usage_chunks[0].usage.completion_tokens == len(text.split())
    seen = upstream_bodies(upstreams["serverless"])
    assert len(seen) == 1 and "stream_options" not in seen[0]
    assert "extra-parameters" not in upstreams["serverless"].requests()[0]["headers"]


def test_openai_only_parameters_never_reach_llama(gateway, upstreams):
    body = {"model": "llama3", "messages": [{"role": "developer", "content": "Be brief."}, *USER],
            "user": "u", "n": 1, "parallel_tool_calls": False, "max_completion_tokens": 5,
            "logit_bias": {}, "store": False, "metadata": {"a": "b"}, "temperature": 0.3}
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    dropped = response.headers["x-gateway-dropped-params"].split(",")
    assert sorted(dropped) == sorted(["user", "n", "parallel_tool_calls", "logit_bias", "store", "metadata"])
    seen = upstream_bodies(upstreams["serverless"])[0]
    assert seen["max_tokens"] == 5 and "max_completion_tokens" not in seen
    assert seen["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen["temperature"] == 0.3
    assert set(seen) <= {"messages", "frequency_penalty", "stream", "presence_penalty", "temperature",
                         "top_p", "max_tokens", "response_format", "stop", "tools", "tool_choice",
                         "seed", "model"}
    assert response.json()["usage"]["completion_tokens"] <= 5


def test_pass_through_route_forwards_header_and_parameter(gateway, upstreams):
    body = {"model": "llama3-passthrough", "messages": USER, "stream": True,
            "stream_options": {"include_usage": True}, "n": 1}
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    assert "x-gateway-dropped-params" not in response.headers
    record = upstreams["serverless"].requests()[0]
    assert record["headers"]["extra-parameters"] == "pass-through"
    assert record["body"]["stream_options"] == {"include_usage": True}
    assert record["body"]["n"] == 1
    events = data_events(response.content)
    usage = [e for e in events if e.get("usage")]
    assert len(usage) == 1 and usage[0]["choices"] == []
    assert sse_events(response.content)[-1] == "[DONE]"


def test_include_usage_on_azure_openai_is_native(gateway, upstreams):
    body = {"model": "gpt-4o-key", "messages": USER, "stream": True,
            "stream_options": {"include_usage": True}}
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json=body)
    events = data_events(response.content)
    usage = [e for e in events if e.get("usage")]
    assert len(usage) == 1 and usage[0]["choices"] == [] and events[-1] is usage[0]
    assert upstream_bodies(upstreams["aoai"])[0]["stream_options"] == {"include_usage": True}


def test_stream_options_without_stream_is_dropped_for_azure_openai(gateway, upstreams):
    body = {"model": "gpt-4o-key", "messages": USER, "stream_options": {"include_usage": True}}
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-dropped-params"] == "stream_options"
    assert "stream_options" not in upstream_bodies(upstreams["aoai"])[0]


def test_reasoning_route_rules(gateway, upstreams):
    body = {"model": "o3-mini", "messages": [{"role": "system", "content": "Be brief."}, *USER],
            "max_tokens": 50, "temperature": 0.7, "top_p": 0.9, "presence_penalty": 0.1,
            "logit_bias": {"1": 1}, "parallel_tool_calls": True}
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    assert sorted(response.headers["x-gateway-dropped-params"].split(",")) == sorted(
        ["temperature", "top_p", "presence_penalty", "logit_bias", "parallel_tool_calls"])
    seen = upstream_bodies(upstreams["aoai"])[0]
    assert seen["max_completion_tokens"] == 50 and "max_tokens" not in seen
    assert seen["messages"][0]["role"] == "developer"
    assert "completion_tokens_details" in response.json()["usage"]


def test_route_params_policy(gateway, upstreams):
    body = {"model": "llama3-policy", "messages": USER, "seed": 4, "stop_sequences": ["x"],
            "temperature": 0.9, "top_p": 0.1}
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    seen = upstream_bodies(upstreams["serverless"])[0]
    assert "seed" not in seen  # drop
    assert seen["max_tokens"] == 7  # defaults: the client did not send it
    assert seen["temperature"] == 0.9  # defaults: the client's value wins
    assert seen["top_p"] == 0.5  # set: always
    # `stop_sequences` is not in the Azure AI schema: the backend rules remove it before the
    # policy's rename sees it, and the header says so.
    assert "seed" in response.headers["x-gateway-dropped-params"].split(",")
    assert "stop_sequences" in response.headers["x-gateway-dropped-params"].split(",")


def test_azure_style_path_uses_path_model(gateway, upstreams):
    response = httpx.post(gateway.url + "/openai/deployments/llama3/chat/completions?api-version=2024-02-01",
                          headers={"api-key": GATEWAY_KEY}, json={"messages": USER, "n": 1})
    assert response.status_code == 200, response.text
    record = upstreams["serverless"].requests()[0]
    assert record["path"] == "/chat/completions"
    assert record["query"] == {"api-version": "2024-05-01-preview"}
    assert record["headers"]["authorization"] == f"Bearer {upstreams['serverless'].key}"
    assert record["body"]["model"] == "Meta-Llama-3-70B-Instruct"


def test_foundry_managed_identity_route(gateway, upstreams):
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
        "model": "mistral-large", "messages": USER, "max_completion_tokens": 3, "user": "x"})
    assert response.status_code == 200, response.text
    record = upstreams["foundry"].requests()[0]
    assert record["path"] == "/models/chat/completions"
    assert record["headers"]["authorization"].startswith("Bearer ey")
    assert record["body"]["model"] == "Mistral-Large-2411" and record["body"]["max_tokens"] == 3
    assert response.headers["x-gateway-dropped-params"] == "user"


def test_client_headers_never_forwarded(gateway, upstreams):
    """Only the gateway's own headers go upstream: no client credentials, cookies, hop-by-hop
    headers, and no client attempt to set the route's `extra-parameters` policy."""
    headers = {**AUTH, "api-key": GATEWAY_KEY, "Cookie": "session=abc", "Connection": "keep-alive, x-hop",
               "x-hop": "1", "X-Custom": "nope", "extra-parameters": "pass-through",
               "Proxy-Authorization": "Basic eA==", "User-Agent": "my-app/1.0"}
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=headers, json={
        "model": "llama3", "messages": USER, "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    assert response.headers["x-gateway-dropped-params"] == "stream_options"
    seen = upstreams["serverless"].requests()[0]["headers"]
    assert set(seen) <= {"host", "connection", "content-type", "accept", "accept-encoding", "user-agent",
                         "x-ms-client-request-id", "authorization", "content-length"}, seen
    assert seen["authorization"] == f"Bearer {upstreams['serverless'].key}"
    assert seen["user-agent"] == "my-app/1.0"
    assert "stream_options" not in upstreams["serverless"].requests()[0]["body"]


def test_older_azure_openai_api_version_gets_only_what_it_knows(emulators, upstreams, tmp_path):
    from tests.conftest import route
    from tests.helpers import GatewayProcess
    old = GatewayProcess({"GATEWAY_API_KEYS": GATEWAY_KEY, **route(
        "OLD", model="gpt-4o-old", backend="azure-openai", endpoint=emulators.urls["azure_openai"],
        deployment="gpt-4o", api_version="2024-06-01", api_key=upstreams["aoai"].key)}, tmp_path)
    try:
        response = httpx.post(old.url + "/v1/chat/completions", headers=AUTH, json={
            "model": "gpt-4o-old", "messages": USER, "stream": True, "max_completion_tokens": 4,
            "stream_options": {"include_usage": True}, "parallel_tool_calls": False})
    finally:
        old.stop()
    assert response.status_code == 200, response.text
    assert sorted(response.headers["x-gateway-dropped-params"].split(",")) == ["parallel_tool_calls", "stream_options"]
    seen = upstream_bodies(upstreams["aoai"])[0]
    assert seen["max_tokens"] == 4 and "max_completion_tokens" not in seen
    assert sse_events(response.content)[-1] == "[DONE]"
