"""The fake model's tool calls and structured output, in both emulators' wire shapes, and the
bounded embeddings ``dimensions``."""

from __future__ import annotations

import json
import time
from typing import Optional

import pytest
from pydantic import BaseModel

from tests.structured_models import Solution

from emulator.json_instance import instance_of

USER = [{"role": "user", "content": "What is the weather?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]},
                                     "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "unit", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
WEATHER_ARGUMENTS = '{"city":"example city","unit":"c","days":1}'
FORCED = {"type": "function", "function": {"name": "get_weather"}}
GA = {"api-version": "2024-10-21"}
AI_VERSION = {"api-version": "2024-05-01-preview"}


def aoai_chat(client, aoai, body, deployment="gpt-4o"):
    return client.post(f"{aoai['url']}/openai/deployments/{deployment}/chat/completions", params=GA, json=body,
                       headers=aoai["headers"])


def serverless_chat(client, serverless, body):
    return client.post(serverless["url"] + "/chat/completions", json=body, headers=serverless["headers"])


def foundry_chat(client, foundry, body, model="Mistral-Large-2411"):
    return client.post(foundry["url"] + "/models/chat/completions", params=AI_VERSION,
                       json={"model": model, **body}, headers=foundry["headers"])


def argument_deltas(events):
    return [call for e in events for c in e["choices"] for call in c["delta"].get("tool_calls") or []]


# --- Azure OpenAI ---------------------------------------------------------------------------------

def test_aoai_forced_tool_call_non_stream(client, aoai):
    r = aoai_chat(client, aoai, {"messages": USER, "tools": [TIME, WEATHER], "tool_choice": FORCED})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["role"] == "assistant"
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"arguments": WEATHER_ARGUMENTS, "name": "get_weather"}
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == 14 and usage["total_tokens"] == usage["prompt_tokens"] + 14  # 14 pieces


def test_aoai_streamed_tool_call_shape(client, aoai, parse_sse):
    body = {"messages": USER, "tools": [WEATHER], "tool_choice": "required", "stream": True,
            "stream_options": {"include_usage": True}}
    r = aoai_chat(client, aoai, body)
    events = parse_sse(r.content)
    assert events[0]["prompt_filter_results"] and events[0]["choices"] == []
    head = events[1]["choices"][0]["delta"]
    assert head["role"] == "assistant" and head["content"] is None
    [first] = head["tool_calls"]
    assert first == {"function": {"arguments": "", "name": "get_weather"}, "id": first["id"], "index": 0,
                     "type": "function"}
    pieces = [d["function"]["arguments"] for d in argument_deltas(events[2:])]
    assert len(pieces) > 1 and "".join(pieces) == WEATHER_ARGUMENTS
    assert all(set(d) == {"function", "index"} for d in argument_deltas(events[2:]))
    finish = events[-2]["choices"][0]
    assert finish["finish_reason"] == "tool_calls" and finish["delta"] == {}
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == len(pieces)


def test_aoai_parallel_calls_of_the_tools_the_user_names(client, aoai, parse_sse):
    messages = [{"role": "user", "content": "use get_time and get_weather"}]
    r = aoai_chat(client, aoai, {"messages": messages, "tools": [WEATHER, TIME], "stream": True})
    calls = argument_deltas(parse_sse(r.content))
    heads = [c for c in calls if "id" in c]
    assert [(h["index"], h["function"]["name"]) for h in heads] == [(0, "get_weather"), (1, "get_time")]
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 1) == '{"zone":"example zone"}'
    single = aoai_chat(client, aoai, {"messages": messages, "tools": [WEATHER, TIME], "parallel_tool_calls": False})
    assert [c["function"]["name"] for c in single.json()["choices"][0]["message"]["tool_calls"]] == ["get_weather"]


def test_aoai_auto_answers_text_unless_a_tool_is_named(client, aoai):
    r = aoai_chat(client, aoai, {"messages": USER, "tools": [WEATHER]})
    message = r.json()["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"].startswith("Hello! You said: What is")
    none = aoai_chat(client, aoai, {"messages": [{"role": "user", "content": "get_weather"}], "tools": [WEATHER],
                                    "tool_choice": "none"})
    assert none.json()["choices"][0]["finish_reason"] == "stop"


def test_aoai_tool_result_round_trip_answers_text(client, aoai):
    first = aoai_chat(client, aoai, {"messages": USER, "tools": [WEATHER], "tool_choice": FORCED}).json()
    assistant = first["choices"][0]["message"]
    call_id = assistant["tool_calls"][0]["id"]
    messages = [*USER, assistant, {"role": "tool", "tool_call_id": call_id, "content": "sunny and 21 C"}]
    r = aoai_chat(client, aoai, {"messages": messages, "tools": [WEATHER]})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].startswith("Tool result: sunny and 21 C ")


def test_aoai_tool_message_without_a_preceding_call_is_rejected(client, aoai):
    messages = [*USER, {"role": "tool", "tool_call_id": "call_x", "content": "sunny"}]
    r = aoai_chat(client, aoai, {"messages": messages, "tools": [WEATHER]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages.[1].role"
    assert "must be a response to a preceeding message with 'tool_calls'" in r.json()["error"]["message"]


@pytest.mark.parametrize("body, param", [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
])
def test_aoai_rejects_bad_tools_and_formats(client, aoai, body, param):
    r = aoai_chat(client, aoai, {"messages": USER, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_aoai_tool_choice_without_tools_exact_message(client, aoai):
    r = aoai_chat(client, aoai, {"messages": USER, "tool_choice": "required"})
    assert r.json()["error"]["message"] == (
        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")


def test_aoai_json_object_needs_the_word_json_and_answers_an_object(client, aoai):
    refused = aoai_chat(client, aoai, {"messages": USER, "response_format": {"type": "json_object"}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "messages"
    messages = [{"role": "system", "content": "Answer in JSON."}, *USER]
    r = aoai_chat(client, aoai, {"messages": messages, "response_format": {"type": "json_object"}})
    content = r.json()["choices"][0]["message"]["content"]
    assert json.loads(content)["answer"].startswith("Hello! You said: What is the weather?")




def strict_schema(model) -> dict:
    from openai.lib._pydantic import to_strict_json_schema
    return to_strict_json_schema(model)


def test_aoai_json_schema_answer_conforms_streamed_and_not(client, aoai, parse_sse):
    fmt = {"type": "json_schema", "json_schema": {"name": "solution", "schema": strict_schema(Solution),
                                                  "strict": True}}
    r = aoai_chat(client, aoai, {"messages": USER, "response_format": fmt})
    content = r.json()["choices"][0]["message"]["content"]
    assert Solution.model_validate_json(content).confidence == "low"
    stream = aoai_chat(client, aoai, {"messages": USER, "response_format": fmt, "stream": True})
    deltas = [e["choices"][0]["delta"].get("content") or "" for e in parse_sse(stream.content) if e["choices"]]
    assert "".join(deltas) == content and sum(1 for d in deltas if d) > 1


def test_aoai_max_tokens_cuts_arguments_with_length(client, aoai):
    r = aoai_chat(client, aoai, {"messages": USER, "tools": [WEATHER], "tool_choice": FORCED, "max_tokens": 3})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"city":"'
    assert r.json()["usage"]["completion_tokens"] == 3


# --- Azure AI -------------------------------------------------------------------------------------

def test_serverless_streamed_tool_call_llama_shape(client, serverless, parse_sse):
    r = serverless_chat(client, serverless, {"messages": USER, "tools": [WEATHER], "tool_choice": FORCED,
                                             "stream": True})
    assert r.status_code == 200, r.text
    events = parse_sse(r.content)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    [head] = events[1]["choices"][0]["delta"]["tool_calls"]
    assert head == {"index": 0, "id": head["id"], "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}
    pieces = [c["function"]["arguments"] for c in argument_deltas(events[2:])]
    assert len(pieces) > 1 and "".join(pieces) == WEATHER_ARGUMENTS
    last = events[-1]
    assert last["choices"][0]["finish_reason"] == "tool_calls" and last["choices"][0]["delta"] == {}
    assert last["usage"]["completion_tokens"] == len(pieces)


def test_foundry_non_stream_tool_call_and_json_schema(client, foundry):
    r = foundry_chat(client, foundry, {"messages": USER, "tools": [WEATHER], "tool_choice": "required"})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": WEATHER_ARGUMENTS}
    fmt = {"type": "json_schema", "json_schema": {"name": "solution", "schema": strict_schema(Solution)}}
    r = foundry_chat(client, foundry, {"messages": USER, "response_format": fmt})
    Solution.model_validate_json(r.json()["choices"][0]["message"]["content"])


def test_llama_refuses_json_schema_too(client, serverless):
    fmt = {"type": "json_schema", "json_schema": {"name": "solution", "schema": strict_schema(Solution)}}
    r = serverless_chat(client, serverless, {"messages": USER, "response_format": fmt})
    assert r.status_code == 422 and r.json()["code"] == "parameter_not_supported"


def test_azure_ai_bad_tool_choice_is_a_model_server_422(client, serverless, foundry):
    body = {"messages": USER, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}}
    r = serverless_chat(client, serverless, body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tool_choice"]
    r = foundry_chat(client, foundry, body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "Invalid input"


# --- embeddings dimensions ------------------------------------------------------------------------

def test_aoai_dimensions_bounded_by_the_model(client, aoai):
    def embed(deployment, dims):
        return client.post(f"{aoai['url']}/openai/deployments/{deployment}/embeddings", params=GA,
                           json={"input": "x", "dimensions": dims}, headers=aoai["headers"])
    started = time.monotonic()
    huge = embed("text-embedding-3-small", 10**9)
    assert time.monotonic() - started < 2
    assert huge.status_code == 400 and huge.json()["error"]["param"] == "dimensions"
    assert "1536" in huge.json()["error"]["message"]
    assert len(embed("text-embedding-3-small", 1536).json()["data"][0]["embedding"]) == 1536
    assert embed("text-embedding-3-small", 1537).status_code == 400
    assert len(embed("text-embedding-3-large", 3072).json()["data"][0]["embedding"]) == 3072
    assert embed("text-embedding-3-large", 3073).status_code == 400


def test_azure_ai_dimensions_bounded_by_the_model(client, foundry):
    def embed(dims):
        return client.post(foundry["url"] + "/models/embeddings", params=AI_VERSION, headers=foundry["headers"],
                           json={"model": "Cohere-embed-v3-english", "input": "x", "dimensions": dims})
    huge = embed(10**9)
    assert huge.status_code == 422 and huge.json()["detail"] == {"loc": ["body", "dimensions"], "input": 10**9}
    assert len(embed(1024).json()["data"][0]["embedding"]) == 1024


# --- the schema instance generator ----------------------------------------------------------------

def test_instance_of_honours_bounds_enums_refs_and_recursion():
    class Node(BaseModel):
        name: str
        children: list["Node"]
        parent: Optional["Node"]

    assert Node.model_validate(instance_of(strict_schema(Node))).children[0].children == []
    schema = {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 5, "maximum": 9}, "x": {"type": "number", "exclusiveMaximum": 0},
        "s": {"type": "string", "minLength": 20, "maxLength": 22}, "flags": {"type": "array", "items":
        {"type": "boolean"}, "minItems": 3}, "kind": {"const": "k"}, "when": {"type": "string", "format": "date"},
        "opt": {"type": ["null", "integer"]}}, "required": ["n", "undescribed"]}
    value = instance_of(schema)
    assert value["n"] == 5 and value["x"] < 0 and 20 <= len(value["s"]) <= 22
    assert value["flags"] == [True, True, True] and value["kind"] == "k" and value["when"] == "2024-01-01"
    assert value["opt"] == 1 and "undescribed" in value


def test_instance_of_hostile_schema_is_bounded():
    nested = {"type": "array", "minItems": 10**9, "items": {"type": "string", "minLength": 10**9}}
    schema = {"type": "array", "minItems": 10**9, "items": nested}
    started = time.monotonic()
    text = json.dumps(instance_of(schema))
    assert time.monotonic() - started < 2 and len(text) < 5_000_000


def test_embedding_inputs_bounded(client, aoai, serverless):
    body = {"input": ["x"] * 2049}
    r = client.post(f"{aoai['url']}/openai/deployments/text-embedding-3-small/embeddings", params=GA, json=body,
                    headers=aoai["headers"])
    assert r.status_code == 400 and "The max number of inputs is 2048" in r.json()["error"]["message"]
    r = client.post(serverless["url"] + "/embeddings", json=body, headers=serverless["headers"])
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "too_long"
    ok = client.post(serverless["url"] + "/embeddings", json={"input": ["x"] * 2048}, headers=serverless["headers"])
    assert len(ok.json()["data"]) == 2048
