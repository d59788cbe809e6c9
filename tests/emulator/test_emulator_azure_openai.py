"""Azure OpenAI emulator: api-version, auth, parameter validation, o-series rules, shapes, SDK use."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from emulator import azure_openai, issue_token, servers
from emulator.fake_model import decode_base64_embedding

MSG = [{"role": "user", "content": "hello emulator"}]
GA = {"api-version": "2024-10-21"}
UNAUTHORIZED = ('{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API '
                'endpoint. Make sure to provide a valid key for an active subscription and use a correct regional '
                'API endpoint for your resource."}}')


def post(client, aoai, deployment, body, op="chat/completions", params=GA, headers=None):
    return client.post(f"{aoai['url']}/openai/deployments/{deployment}/{op}", params=params, json=body,
                       headers=aoai["headers"] if headers is None else headers)


def error_of(response):
    return response.json()["error"]


# --- auth and api-version -----------------------------------------------------------------------

def test_api_key_ok_and_response_shape(client, aoai):
    r = post(client, aoai, "gpt-4o", {"messages": MSG})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-2024-08-06"
    assert body["choices"][0]["message"]["content"].startswith("Hello! You said: hello emulator ")
    assert body["choices"][0]["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert body["usage"]["prompt_tokens"] == 2 and body["usage"]["completion_tokens"] == 20
    assert body["usage"]["total_tokens"] == 22 and body["system_fingerprint"]
    for header in ("apim-request-id", "x-ms-region", "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens"):
        assert r.headers.get(header), header


def test_entra_token_ok(client, aoai):
    token = issue_token(audience="https://cognitiveservices.azure.com")
    r = post(client, aoai, "gpt-4o", {"messages": MSG}, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200


@pytest.mark.parametrize("headers", [
    {"api-key": "wrong"},
    {},
    {"authorization": "Bearer not-a-token"},
    {"authorization": "Bearer " + issue_token(audience="https://management.azure.com")},
    {"authorization": "Bearer " + issue_token(lifetime=-10)},
    {"authorization": "Bearer " + issue_token(secret="other-secret")},
])
def test_bad_credentials_exact_401(client, aoai, headers):
    r = post(client, aoai, "gpt-4o", {"messages": MSG}, headers=headers)
    assert r.status_code == 401
    assert r.text == UNAUTHORIZED


def test_missing_api_version_is_404(client, aoai):
    r = post(client, aoai, "gpt-4o", {"messages": MSG}, params={})
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_unknown_api_version_is_400_naming_it(client, aoai):
    r = post(client, aoai, "gpt-4o", {"messages": MSG}, params={"api-version": "2099-01-01"})
    assert r.status_code == 400 and "2099-01-01" in error_of(r)["message"]


# --- parameters ---------------------------------------------------------------------------------

def test_unknown_argument(client, aoai):
    r = post(client, aoai, "gpt-4o", {"messages": MSG, "foo": 1})
    assert r.status_code == 400
    assert r.json() == {"error": {"message": "Unrecognized request argument supplied: foo",
                                  "type": "invalid_request_error", "param": None, "code": None}}


def test_version_gates_parameters(client, aoai):
    old = {"api-version": "2024-06-01"}
    r = post(client, aoai, "gpt-4o", {"messages": MSG, "max_completion_tokens": 3}, params=old)
    assert r.status_code == 400 and error_of(r)["message"] == "Unrecognized request argument supplied: max_completion_tokens"
    r = post(client, aoai, "gpt-4o", {"messages": MSG, "stream": True, "stream_options": {"include_usage": True}},
             params={"api-version": "2024-05-01-preview"})
    assert error_of(r)["message"] == "Unrecognized request argument supplied: stream_options"
    r = post(client, aoai, "gpt-4o", {"messages": MSG, "max_completion_tokens": 3, "parallel_tool_calls": True})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    r = post(client, aoai, "gpt-4o", {"messages": MSG, "reasoning_effort": "low"})
    assert error_of(r)["message"] == "Unrecognized request argument supplied: reasoning_effort"


def test_stream_options_without_stream(client, aoai):
    r = post(client, aoai, "gpt-4o", {"messages": MSG, "stream_options": {"include_usage": True}})
    assert r.status_code == 400
    assert error_of(r)["message"] == "The 'stream_options' parameter is only allowed when 'stream' is enabled."


def test_missing_messages(client, aoai):
    r = post(client, aoai, "gpt-4o", {"temperature": 1})
    assert r.status_code == 400 and error_of(r)["param"] == "messages"


def test_content_filter_exact(client, aoai):
    r = post(client, aoai, "gpt-4o", {"messages": [{"role": "user", "content": "x [[content_filter]]"}]})
    assert r.status_code == 400
    error = error_of(r)
    assert error["code"] == "content_filter" and error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error["innererror"]["content_filter_result"]["jailbreak"] == {"filtered": True, "detected": True}


# --- reasoning deployments ----------------------------------------------------------------------

NEW = {"api-version": "2024-12-01-preview"}


def test_reasoning_rejects_max_tokens_exactly(client, aoai):
    r = post(client, aoai, "o3-mini", {"messages": MSG, "max_tokens": 10}, params=NEW)
    assert r.status_code == 400
    assert r.json() == {"error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                   "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}


def test_reasoning_rejects_temperature_exactly(client, aoai):
    r = post(client, aoai, "o1", {"messages": MSG, "temperature": 0.7}, params=NEW)
    assert r.json() == {"error": {
        "message": "Unsupported value: 'temperature' does not support 0.7 with this model. "
                   "Only the default (1) value is supported.",
        "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}}
    assert post(client, aoai, "o1", {"messages": MSG, "temperature": 1}, params=NEW).status_code == 200


@pytest.mark.parametrize("param,value,code", [
    ("top_p", 0.5, "unsupported_value"), ("presence_penalty", 0.5, "unsupported_value"),
    ("frequency_penalty", 1, "unsupported_value"), ("logprobs", True, "unsupported_parameter"),
    ("top_logprobs", 2, "unsupported_parameter"), ("logit_bias", {"1": 1}, "unsupported_parameter"),
    ("parallel_tool_calls", False, "unsupported_parameter"),
])
def test_reasoning_rejects_sampling_params(client, aoai, param, value, code):
    r = post(client, aoai, "gpt-5-mini", {"messages": MSG, param: value}, params=NEW)
    assert r.status_code == 400
    assert error_of(r)["param"] == param and error_of(r)["code"] == code


def test_o1_mini_rejects_system_role(client, aoai):
    messages = [{"role": "system", "content": "be nice"}, *MSG]
    r = post(client, aoai, "o1-mini", {"messages": messages}, params=NEW)
    assert error_of(r)["message"] == "Unsupported value: 'messages[0].role' does not support 'system' with this model."
    assert error_of(r)["param"] == "messages[0].role"
    r = post(client, aoai, "o3-mini", {"messages": messages}, params=NEW)
    assert r.status_code == 200


def test_reasoning_usage_and_version_gate(client, aoai):
    r = post(client, aoai, "o3-mini", {"messages": MSG, "max_completion_tokens": 4, "reasoning_effort": "low"},
             params=NEW)
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == 4 and "reasoning_tokens" in usage["completion_tokens_details"]
    r = post(client, aoai, "o3-mini", {"messages": MSG}, params=GA)
    assert r.status_code == 400 and "2024-12-01-preview" in error_of(r)["message"]


# --- deployments and operations -----------------------------------------------------------------

def test_deployment_list_and_operation_kind(client):
    app = azure_openai.create_app(keys=["k"], deployments=["chat", "text-embedding-3-small"])
    with servers.start(app) as server:
        target = {"url": server.url, "headers": {"api-key": "k"}}
        r = post(client, target, "missing", {"messages": MSG})
        assert r.status_code == 404 and error_of(r)["code"] == "DeploymentNotFound"
        assert error_of(r)["message"].startswith("The API deployment for this resource does not exist.")
        r = post(client, target, "text-embedding-3-small", {"messages": MSG})
        assert r.status_code == 400 and error_of(r)["code"] == "OperationNotSupported"
        assert post(client, target, "chat", {"messages": MSG}).json()["model"] == "gpt-4o-2024-08-06"
        models = client.get(server.url + "/openai/v1/models", headers={"api-key": "k"}).json()
        assert [m["id"] for m in models["data"]] == ["chat", "text-embedding-3-small"]


def test_v1_path(client, aoai):
    r = client.post(aoai["url"] + "/openai/v1/chat/completions", headers=aoai["headers"],
                    json={"model": "gpt-4o-mini", "messages": MSG, "service_tier": "auto"})
    assert r.status_code == 200 and r.json()["model"] == "gpt-4o-mini-2024-07-18"
    r = client.post(aoai["url"] + "/openai/v1/chat/completions", headers=aoai["headers"], json={"messages": MSG})
    assert r.status_code == 400 and error_of(r)["param"] == "model"
    r = client.post(aoai["url"] + "/openai/v1/chat/completions", headers=aoai["headers"],
                    json={"model": "gpt-4o", "messages": MSG, "bogus": 1})
    assert error_of(r) == {"message": "Unknown parameter: 'bogus'.", "type": "invalid_request_error",
                           "param": "bogus", "code": "unknown_parameter"}


# --- streaming ----------------------------------------------------------------------------------

def test_stream_shape_with_include_usage(client, aoai, parse_sse):
    body = {"messages": MSG, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 3}
    r = post(client, aoai, "gpt-4o", body)
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = parse_sse(r.content)
    preamble, role, *content, finish, usage = events
    assert preamble["choices"] == [] and preamble["id"] == "" and preamble["prompt_filter_results"]
    assert role["choices"][0]["delta"] == {"content": "", "refusal": None, "role": "assistant"}
    assert [c["choices"][0]["delta"]["content"] for c in content] == ["Hello! ", "You ", "said:"]
    assert finish["choices"][0]["finish_reason"] == "length" and finish["choices"][0]["delta"] == {}
    assert all(e["usage"] is None for e in events[:-1])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3 and usage["usage"]["total_tokens"] == 5


def test_stream_without_include_usage_has_no_usage(client, aoai, parse_sse):
    events = parse_sse(post(client, aoai, "gpt-4o", {"messages": MSG, "stream": True}).content)
    assert all("usage" not in e for e in events) and events[-1]["choices"][0]["finish_reason"] == "stop"


def test_streamed_equals_non_streamed(client, aoai, parse_sse, ctl):
    ctl.config(aoai["url"], answer_words=7)
    full = post(client, aoai, "gpt-4o", {"messages": MSG}).json()["choices"][0]["message"]["content"]
    events = parse_sse(post(client, aoai, "gpt-4o", {"messages": MSG, "stream": True}).content)
    streamed = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    assert streamed == full and len(full.split()) == 7


def test_completions(client, aoai, parse_sse):
    r = post(client, aoai, "gpt-35-turbo-instruct", {"prompt": "say hi", "max_tokens": 4}, op="completions")
    body = r.json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "Hello! You said: say"
    assert body["usage"] == {"completion_tokens": 4, "prompt_tokens": 2, "total_tokens": 6}
    events = parse_sse(post(client, aoai, "gpt-35-turbo-instruct", {"prompt": "say hi", "max_tokens": 4,
                                                                     "stream": True}, op="completions").content)
    assert "".join(c["text"] for e in events for c in e["choices"]) == "Hello! You said: say"
    assert events[0]["choices"] == [] and events[-1]["choices"][0]["finish_reason"] == "length"
    r = post(client, aoai, "gpt-35-turbo-instruct", {"messages": MSG}, op="chat/completions")
    assert error_of(r)["code"] == "OperationNotSupported"


# --- embeddings ---------------------------------------------------------------------------------

def test_embeddings_float_and_base64_agree(client, aoai):
    body = {"input": ["first text", "second"], "dimensions": 16}
    floats = post(client, aoai, "text-embedding-3-small", body, op="embeddings").json()
    b64 = post(client, aoai, "text-embedding-3-small", {**body, "encoding_format": "base64"}, op="embeddings").json()
    assert floats["object"] == "list" and floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    for f, b in zip(floats["data"], b64["data"]):
        assert len(f["embedding"]) == 16 and isinstance(b["embedding"], str)
        assert decode_base64_embedding(b["embedding"]) == f["embedding"]
    assert floats["data"][0]["embedding"] != floats["data"][1]["embedding"]
    tokens = post(client, aoai, "text-embedding-3-small", {"input": [1, 2, 3]}, op="embeddings").json()
    assert len(tokens["data"]) == 1 and tokens["usage"]["prompt_tokens"] == 3


# --- the real openai SDK ------------------------------------------------------------------------

def test_openai_sdk_azure_client(aoai):
    sdk = openai.AzureOpenAI(azure_endpoint=aoai["url"], api_key=aoai["headers"]["api-key"], api_version="2024-10-21",
                             max_retries=0)
    completion = sdk.chat.completions.create(model="gpt-4o", messages=MSG, max_tokens=5)
    assert completion.choices[0].message.content == "Hello! You said: hello emulator"
    chunks = list(sdk.chat.completions.create(model="gpt-4o", messages=MSG, max_tokens=5, stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello! You said: hello emulator"
    assert chunks[-1].usage.total_tokens == 7
    embedding = sdk.embeddings.create(model="text-embedding-3-small", input="abc")  # base64 on the wire
    assert len(embedding.data[0].embedding) == 8
    direct = httpx.post(aoai["url"] + "/openai/deployments/e-embedding/embeddings", params=GA,
                        headers=aoai["headers"], json={"input": "abc"}).json()
    assert embedding.data[0].embedding == pytest.approx(direct["data"][0]["embedding"], abs=0)


def test_openai_sdk_v1_client_with_bearer_key(aoai):
    sdk = openai.OpenAI(base_url=aoai["url"] + "/openai/v1", api_key=aoai["headers"]["api-key"], max_retries=0)
    completion = sdk.chat.completions.create(model="gpt-4o", messages=MSG, max_completion_tokens=3)
    assert completion.choices[0].message.content == "Hello! You said:"
    assert json.loads(completion.model_dump_json())["usage"]["total_tokens"] == 5
