"""The Responses API on a route whose upstream has only chat completions (azure-ai, Llama):
translated to chat completions and back (DESIGN §13), with the real `openai` SDK through the
session gateway. The translation's own mapping is tested in test_responses_translation*.py."""

from __future__ import annotations

import json

import openai
import pytest

from tests.helpers import GATEWAY_KEY, access_lines

WEATHER = {"type": "function", "name": "get_weather", "description": "Get weather", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def test_create_and_stream_on_a_chat_only_route(gateway, clean):
    answer = client(gateway).responses.create(model="llama3", input="Hi there", instructions="Be brief.",
                                              max_output_tokens=50)
    assert answer.status == "completed" and answer.output_text and answer.usage.total_tokens > 0
    sent = [r for r in clean["serverless"].requests() if r["path"].endswith("/chat/completions")]
    assert len(sent) == 1
    body = sent[0]["body"] if "body" in sent[0] else json.loads(sent[0].get("raw", "{}"))
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["max_tokens"] == 50 and "input" not in body and "instructions" not in body
    with client(gateway).responses.stream(model="llama3", input="Stream to me") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.usage.total_tokens > 0


def test_function_call_round_trip_without_stored_state(gateway, clean):
    first = client(gateway).responses.create(model="llama3", input="What is the weather in Paris?",
                                             tools=[WEATHER], tool_choice="required")
    call = next(item for item in first.output if item.type == "function_call")
    # No stored state on this route: the client sends the conversation back itself.
    follow = client(gateway).responses.create(
        model="llama3", tools=[WEATHER],
        input=[{"role": "user", "content": "What is the weather in Paris?"}, *[item.model_dump() for item in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'}])
    assert follow.status == "completed" and follow.output_text
    chats = [r for r in clean["serverless"].requests() if r["path"].endswith("/chat/completions")]
    messages = chats[-1]["body"]["messages"]
    assert [m["role"] for m in messages][-2:] == ["assistant", "tool"]
    assert messages[-1]["tool_call_id"] == call.call_id


def test_what_cannot_be_translated_is_a_400_naming_the_parameter(gateway, clean):
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).responses.create(model="llama3", input="hi", tools=[{"type": "web_search"}])
    assert refused.value.param == "tools[0].type"
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).responses.create(model="llama3", input="hi", store=True)
    assert refused.value.param == "store"
    for odd in ({"include": [{}]}, {"input": [{"role": [], "content": "x"}]},
                {"input": [{"type": "function_call_output", "call_id": {}, "output": "x"}]},
                {"input": [{"role": "user", "content": [{"type": [], "text": "x"}]}]}):
        with pytest.raises(openai.BadRequestError):  # never a 500
            client(gateway).responses.create(model="llama3", **{"input": "hi", **odd})
    assert clean["serverless"].requests() == []


def test_responses_are_counted_like_chat(gateway, clean):
    answer = client(gateway).responses.create(model="llama3", input="Count me", extra_headers={"x-request-id": "resp-count-1"})
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in access_lines(gateway.log()) if '"resp-count-1"' in line]
        if records:
            break
        time.sleep(0.05)
    assert len(records) == 1
    record = records[0]
    assert record["operation"] == "responses" and record["route"] == "LLAMA"
    assert record["prompt_tokens"] == answer.usage.input_tokens
    assert record["total_tokens"] == answer.usage.total_tokens
