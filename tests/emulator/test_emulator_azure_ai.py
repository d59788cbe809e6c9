"""Azure AI model inference emulator: extra-parameters, auth, Foundry routing, Llama stream shape."""

from __future__ import annotations

import json

import httpx
import pytest

from emulator import azure_ai, issue_token, servers

MSG = [{"role": "user", "content": "ping from test"}]
EXTRA_TAIL = ("are not allowed when extra-parameters is not set or set to be 'error'. "
              "Set extra-parameters to 'pass-through' to pass to the model.")


def chat(client, target, body, headers=None, path="/chat/completions", params=None):
    return client.post(target["url"] + path, json=body, headers={**target["headers"], **(headers or {})}, params=params)


# --- extra-parameters ---------------------------------------------------------------------------

def test_extra_parameter_default_is_error_with_exact_body(client, serverless):
    r = chat(client, serverless, {"messages": MSG, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 400
    assert r.json() == {"detail": "Extra parameters ['stream_options'] " + EXTRA_TAIL}


def test_several_extras_listed_in_body_order(client, serverless):
    body = {"user": "u1", "messages": MSG, "n": 1, "max_completion_tokens": 5, "temperature": 0.2}
    r = chat(client, serverless, body, {"extra-parameters": "error"})
    assert r.status_code == 400
    assert r.text == json.dumps(
        {"detail": "Extra parameters ['user', 'n', 'max_completion_tokens'] " + EXTRA_TAIL}, separators=(",", ":"))


def test_v1_path_enforces_extra_parameters_too(client, serverless):
    r = chat(client, serverless, {"messages": MSG, "n": 2}, path="/v1/chat/completions")
    assert r.status_code == 400 and "['n']" in r.json()["detail"]


def test_drop_strips_extras_silently(client, serverless, ctl):
    body = {"messages": MSG, "user": "u1", "parallel_tool_calls": False, "max_tokens": 3}
    r = chat(client, serverless, body, {"extra-parameters": "drop"})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "Hello! You said:"
    record = ctl.records(serverless["url"])[-1]
    assert record["body"] == body  # the record keeps what was sent, not what was used
    assert record["headers"]["extra-parameters"] == "drop"


def test_pass_through_accepts_llama_extras_and_stream_options(client, serverless, ctl, parse_sse):
    body = {"messages": MSG, "n": 1, "ignore_eos": False, "stream": True, "stream_options": {"include_usage": True}}
    r = chat(client, serverless, body, {"extra-parameters": "pass-through"})
    assert r.status_code == 200
    events = parse_sse(r.content)
    assert events[-1]["choices"][0]["finish_reason"] == "stop" and events[-1]["usage"]["completion_tokens"] == 20
    assert all(e["choices"] for e in events), "no OpenAI usage chunk unless the option is on"
    assert ctl.records(serverless["url"])[-1]["body"]["stream_options"] == {"include_usage": True}


def test_pass_through_unknown_to_the_model_is_422_extra_forbidden(client, serverless):
    body = {"messages": MSG, "user": "u1", "n": 1, "logit_bias": {"1": 2}}
    r = chat(client, serverless, body, {"extra-parameters": "pass-through"})
    assert r.status_code == 422
    assert r.json() == {"detail": [
        {"type": "extra_forbidden", "loc": ["body", "user"], "msg": "Extra inputs are not permitted", "input": "u1"},
        {"type": "extra_forbidden", "loc": ["body", "logit_bias"], "msg": "Extra inputs are not permitted",
         "input": {"1": 2}},
    ]}


def test_foundry_wraps_model_server_422(client, foundry):
    body = {"model": "Mistral-Large-2411", "messages": MSG, "user": "u1"}
    r = chat(client, foundry, body, {"extra-parameters": "pass-through"}, "/models/chat/completions",
             {"api-version": "2024-05-01-preview"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "Invalid input" and error["status"] == 422
    assert json.loads(error["message"])["detail"][0]["loc"] == ["body", "user"]


def test_bad_extra_parameters_value(client, serverless):
    r = chat(client, serverless, {"messages": MSG}, {"extra-parameters": "ignore"})
    assert r.status_code == 400
    assert r.json() == {"detail": "Unexpected EXTRA_PARAMETERS option ignore, expected options are "
                                  "['error', 'drop', 'pass-through']"}


def test_embeddings_extra_parameters(client, serverless):
    r = client.post(serverless["url"] + "/embeddings", headers=serverless["headers"],
                    json={"input": "x", "user": "u", "encoding_format": "float"})
    assert r.status_code == 400 and r.json()["detail"].startswith("Extra parameters ['user'] ")


# --- serverless auth and api-version ------------------------------------------------------------

def test_serverless_bearer_key_ok(client, serverless):
    r = chat(client, serverless, {"messages": MSG})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == azure_ai.DEFAULT_MODEL_NAME
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 23, "completion_tokens": 20}


def test_serverless_api_key_alone_is_401(client, serverless):
    r = client.post(serverless["url"] + "/chat/completions", json={"messages": MSG},
                    headers={"api-key": serverless["key"]})
    assert r.status_code == 401
    assert r.json()["error"]["status"] == 401


def test_serverless_rejects_entra_tokens(client, serverless):
    token = issue_token()
    r = client.post(serverless["url"] + "/chat/completions", json={"messages": MSG},
                    headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_serverless_api_version_optional_but_checked(client, serverless):
    assert chat(client, serverless, {"messages": MSG}, params={"api-version": "2024-05-01-preview"}).status_code == 200
    r = chat(client, serverless, {"messages": MSG}, params={"api-version": "2023-01-01"})
    assert r.status_code == 400 and "2023-01-01" in r.json()["error"]["message"]


def test_serverless_info(client, serverless):
    r = client.get(serverless["url"] + "/info", headers=serverless["headers"])
    assert r.json() == {"model_name": "Meta-Llama-3-70B-Instruct", "model_type": "chat-completions",
                        "model_provider_name": "Meta"}


# --- Foundry ------------------------------------------------------------------------------------

FOUNDRY_PATH = "/models/chat/completions"
V = {"api-version": "2024-05-01-preview"}


def test_foundry_api_key_and_case_insensitive_model(client, foundry):
    r = chat(client, foundry, {"model": "meta-llama-3.1-8b-instruct", "messages": MSG}, path=FOUNDRY_PATH, params=V)
    assert r.status_code == 200 and r.json()["model"] == "Meta-Llama-3.1-8B-Instruct"


def test_foundry_entra_token(client, foundry):
    token = issue_token(audience="https://cognitiveservices.azure.com/.default")
    r = client.post(foundry["url"] + FOUNDRY_PATH, params=V, headers={"authorization": f"Bearer {token}"},
                    json={"model": "Mistral-Large-2411", "messages": MSG})
    assert r.status_code == 200
    wrong = issue_token(audience="https://ml.azure.com")
    r = client.post(foundry["url"] + FOUNDRY_PATH, params=V, headers={"authorization": f"Bearer {wrong}"},
                    json={"model": "Mistral-Large-2411", "messages": MSG})
    assert r.status_code == 401


def test_foundry_bearer_key_is_not_a_token(client, foundry):
    r = client.post(foundry["url"] + FOUNDRY_PATH, params=V, headers={"authorization": f"Bearer {foundry['key']}"},
                    json={"model": "Mistral-Large-2411", "messages": MSG})
    assert r.status_code == 401


def test_foundry_unknown_model_404(client, foundry):
    r = chat(client, foundry, {"model": "gpt-99", "messages": MSG}, path=FOUNDRY_PATH, params=V)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "unknown_model", "message": "Unknown model: gpt-99",
                                  "details": "Unknown model: gpt-99"}}


def test_foundry_requires_api_version_and_has_no_info(client, foundry):
    assert chat(client, foundry, {"model": "Mistral-Large-2411", "messages": MSG}, path=FOUNDRY_PATH).status_code == 404
    assert client.get(foundry["url"] + "/models/info", params=V, headers=foundry["headers"]).status_code == 404


def test_foundry_embeddings_deployment(client, foundry, parse_sse):
    r = client.post(foundry["url"] + "/models/embeddings", params=V, headers=foundry["headers"],
                    json={"model": "Cohere-embed-v3-english", "input": ["a", "b c"], "input_type": "query"})
    body = r.json()
    assert r.status_code == 200 and [d["index"] for d in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 8 and body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    r = chat(client, foundry, {"model": "Cohere-embed-v3-english", "messages": MSG}, path=FOUNDRY_PATH, params=V)
    assert r.status_code == 400 and r.json()["error"]["code"] == "OperationNotSupported"


# --- model behaviour and stream shape -----------------------------------------------------------

def test_developer_role_rejected_by_llama(client, serverless):
    messages = [{"role": "developer", "content": "be brief"}, *MSG]
    r = chat(client, serverless, {"messages": messages})
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["type"] == "literal_error" and detail["loc"] == ["body", "messages", 0, "role"]
    assert detail["input"] == "developer"


def test_json_object_not_supported_by_llama(client, serverless):
    r = chat(client, serverless, {"messages": MSG, "response_format": {"type": "json_object"}})
    assert r.status_code == 422
    assert r.json() == {"status": 422, "code": "parameter_not_supported",
                        "detail": {"loc": ["body", "response_format"], "input": "json_object"},
                        "message": "One of the parameters contain invalid values."}


def test_content_filter_foundry_shape(client, serverless):
    r = chat(client, serverless, {"messages": [{"role": "user", "content": "bad [[content_filter]] words"}]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "content_filter" and r.json()["error"]["param"] == "prompt"


def test_llama_stream_shape_usage_on_finish_chunk(client, serverless, parse_sse):
    r = chat(client, serverless, {"messages": MSG, "stream": True, "max_tokens": 5})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.content)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "prompt_filter_results" not in events[0]
    assert [e["choices"][0]["delta"].get("content") for e in events[1:-1]] == ["Hello! ", "You ", "said: ", "ping ",
                                                                             "from"]
    last = events[-1]
    assert last["choices"][0]["finish_reason"] == "length" and last["choices"][0]["delta"] == {"content": ""}
    assert last["usage"] == {"prompt_tokens": 3, "total_tokens": 8, "completion_tokens": 5}
    assert all("usage" not in e for e in events[:-1])


def test_streamed_content_equals_non_streamed(client, serverless, parse_sse):
    body = {"messages": [{"role": "user", "content": "tell me   something\nnice"}]}
    full = chat(client, serverless, body).json()["choices"][0]["message"]["content"]
    events = parse_sse(chat(client, serverless, {**body, "stream": True}).content)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == full


def test_usage_chunk_on_passthrough_option(parse_sse):
    app = azure_ai.create_app("serverless", keys=["k"], usage_chunk_on_passthrough=True)
    with servers.start(app) as server, httpx.Client() as c:
        body = {"messages": MSG, "stream": True, "stream_options": {"include_usage": True}}
        headers = {"authorization": "Bearer k", "extra-parameters": "pass-through"}
        events = parse_sse(c.post(server.url + "/chat/completions", json=body, headers=headers).content)
        assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] == 23
        assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_invalid_flavour():
    with pytest.raises(ValueError):
        azure_ai.create_app("managed")


def test_openai_sdk_against_serverless_v1(serverless):
    import openai

    sdk = openai.OpenAI(base_url=serverless["url"] + "/v1", api_key=serverless["key"], max_retries=0)
    chunks = list(sdk.chat.completions.create(model="ignored", messages=MSG, stream=True, max_tokens=4))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello! You said: ping"
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="x", messages=MSG, stream=True, stream_options={"include_usage": True})
    assert caught.value.response.json()["detail"].startswith("Extra parameters ['stream_options'] ")
