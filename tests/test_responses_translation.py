"""Responses API ⇄ chat completions translation (DESIGN §13), the request and non-streamed answers.

The answers are checked with the real `openai` SDK: its models, and its own HTTP client calling a
loopback server that translates the SDK's request to chat, answers it with a scripted chat
completion and translates that back (`SdkUpstream`; the stream tests use it too).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import openai
import pydantic
import pytest
from openai.types.responses import Response

from routing.errors import GatewayError
from routing.responses.translate_request import responses_to_chat
from routing.responses.translate_response import chat_to_response
from routing.responses.translate_stream import ChatToResponsesStream

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
           "additionalProperties": False}


class SdkUpstream:
    """POST /v1/responses on loopback: the body through `responses_to_chat`, `script(chat body)`
    (a chat completion, or a list of chunks for a stream) through the translators back."""

    def __init__(self, script: Callable[[dict[str, Any]], Any]):
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.chats: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                upstream.requests.append(body)
                try:
                    chat = responses_to_chat(body)
                except GatewayError as error:
                    return self._send(error.status, "application/json", [json.dumps(error.body()).encode()])
                upstream.chats.append(chat)
                answer = upstream.script(chat)
                if not chat.get("stream"):
                    return self._send(200, "application/json",
                                      [json.dumps(chat_to_response(answer, body)).encode()])
                stream = ChatToResponsesStream(body)
                pieces = [stream.start()] + [stream.feed(chunk) for chunk in answer] + [stream.finish()]
                self._send(200, "text/event-stream", [p for p in pieces if p])

            def _send(self, status: int, kind: str, pieces: list[bytes]) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                for piece in pieces:  # as the gateway would write them, one by one
                    self.wfile.write(piece)
                    self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.server.server_port}/v1",
                                    api_key="test", max_retries=0, timeout=10)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sdk_upstream():
    made: list[SdkUpstream] = []

    def make(script: Callable[[dict[str, Any]], Any]) -> SdkUpstream:
        made.append(SdkUpstream(script))
        return made[-1]

    yield make
    for upstream in made:
        upstream.close()


def completion(content: str | None = "Hi there!", *, finish_reason: str = "stop",
               tool_calls: list[dict] | None = None, **message: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "Llama-3-70B",
            "choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": content, "tool_calls": tool_calls,
                                     **message}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 2}}}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# -- the request ------------------------------------------------------------------------------

def test_string_input_and_scalar_parameters():
    chat = responses_to_chat({
        "model": "llama3", "input": "Hello", "instructions": "Be terse.", "max_output_tokens": 64,
        "temperature": 0.2, "top_p": 0.9, "parallel_tool_calls": False, "user": "u1",
        "metadata": {"tenant": "t1"}, "store": False, "stream": True, "reasoning": {"effort": "low",
                                                                                    "summary": "auto"}})
    assert chat == {
        "model": "llama3", "messages": [{"role": "system", "content": "Be terse."},
                                        {"role": "user", "content": "Hello"}],
        "max_tokens": 64, "temperature": 0.2, "top_p": 0.9, "parallel_tool_calls": False, "user": "u1",
        "reasoning_effort": "low", "stream": True, "stream_options": {"include_usage": True}}


def test_items_become_messages_with_consistent_call_ids():
    chat = responses_to_chat({"model": "m", "input": [
        {"role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in"},
                                     {"type": "input_text", "text": "Paris and Rome?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather",
         "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "weather",
         "arguments": "{\"city\":\"Rome\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "21C"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "25C"}]},
        {"type": "function_call", "call_id": "call_3", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_3", "output": "?"},
        {"role": "user", "content": [{"type": "input_text", "text": "And this?"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AA==",
                                      "detail": "low"}]},
    ]})
    assert chat["messages"] == [
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": "Weather in\nParis and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            call("call_1", "weather", "{\"city\":\"Paris\"}"), call("call_2", "weather", "{\"city\":\"Rome\"}")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "25C"},
        {"role": "assistant", "content": None, "tool_calls": [call("call_3", "weather", "{}")]},
        {"role": "tool", "tool_call_id": "call_3", "content": "?"},
        {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==",
                                                                         "detail": "low"}}]},
    ]


def test_function_tools_are_nested():
    chat = responses_to_chat({"model": "m", "input": "x", "tools": [
        {"type": "function", "name": "weather", "description": "Get weather", "parameters": WEATHER,
         "strict": True},
        {"type": "function", "name": "noop", "parameters": None, "strict": None}]})
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "weather", "description": "Get weather",
                                          "parameters": WEATHER, "strict": True}},
        {"type": "function", "function": {"name": "noop"}}]


@pytest.mark.parametrize("choice, expected", [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "name": "b"}, {"type": "function", "function": {"name": "b"}}),
])
def test_tool_choice(choice, expected):
    tools = [{"type": "function", "name": n, "parameters": {}} for n in ("a", "b")]
    chat = responses_to_chat({"model": "m", "input": "x", "tools": tools, "tool_choice": choice})
    assert chat["tool_choice"] == expected and len(chat["tools"]) == 2


def test_allowed_tools_choice_offers_only_those():
    tools = [{"type": "function", "name": n, "parameters": {}} for n in ("a", "b", "c")]
    chat = responses_to_chat({"model": "m", "input": "x", "tools": tools, "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "c"}]}})
    assert chat["tool_choice"] == "required" and [t["function"]["name"] for t in chat["tools"]] == ["c"]


@pytest.mark.parametrize("text, expected", [
    ({"format": {"type": "json_schema", "name": "answer", "schema": WEATHER, "strict": True}},
     {"type": "json_schema", "json_schema": {"name": "answer", "schema": WEATHER, "strict": True}}),
    ({"format": {"type": "json_object"}}, {"type": "json_object"}),
    ({"format": {"type": "text"}}, None),
])
def test_text_format_becomes_response_format(text, expected):
    chat = responses_to_chat({"model": "m", "input": "x", "text": text})
    assert chat.get("response_format") == expected


@pytest.mark.parametrize("store", [None, False])
def test_store_left_out_or_false_is_served(store):
    body = {"model": "m", "input": "x", **({} if store is None else {"store": store})}
    assert "store" not in responses_to_chat(body)


@pytest.mark.parametrize("extra, param", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"store": True}, "store"),
    ({"background": True}, "background"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"include": ["reasoning.encrypted_content", "file_search_call.results"]}, "include[1]"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "f"}, {"type": "file_search", "vector_store_ids": ["v"]}]},
     "tools[1].type"),
    ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
    ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
    ({"tools": [{"type": "image_generation"}]}, "tools[0].type"),
    ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "f", "defer_loading": True}]}, "tools[0].defer_loading"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"context_management": [{"type": "compaction"}]}, "context_management"),
    ({"reasoning": {"effort": "low", "mode": "pro"}}, "reasoning.mode"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     "input[0].content[0].file_id"),
])
def test_what_cannot_be_translated_is_a_400_naming_it(extra, param):
    with pytest.raises(GatewayError) as caught:
        responses_to_chat({"model": "m", "input": "x", **extra})
    error = caught.value
    assert (error.status, error.param, error.code) == (400, param, "unsupported_parameter")
    assert f"'{param}'" in error.message and error.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("body, param, code", [
    ({"model": "m"}, "input", "missing_required_parameter"),
    ({"model": "m", "input": "x", "frobnicate": 1}, "frobnicate", "unknown_parameter"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"}]},
     "input[0].call_id", "invalid_value"),
    ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata", "invalid_value"),
    ({"model": "m", "input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role", "invalid_value"),
])
def test_invalid_requests_are_400s(body, param, code):
    with pytest.raises(GatewayError) as caught:
        responses_to_chat(body)
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, code)


def test_translation_is_linear_in_the_input():
    items = []
    for i in range(20_000):
        items.append({"type": "function_call", "call_id": f"call_{i}", "name": "f", "arguments": "{}"})
        items.append({"type": "function_call_output", "call_id": f"call_{i}", "output": "ok"})
    started = time.perf_counter()
    chat = responses_to_chat({"model": "m", "input": items})
    assert time.perf_counter() - started < 2.0  # quadratic work on 40k items takes minutes
    assert len(chat["messages"]) == 40_000 and chat["messages"][-1]["tool_call_id"] == "call_19999"


# -- the answer -------------------------------------------------------------------------------

REQUEST = {"model": "llama3", "input": "Weather?", "instructions": "Be terse.", "max_output_tokens": 100,
           "temperature": 0.5, "metadata": {"tenant": "t1"},
           "tools": [{"type": "function", "name": "weather", "parameters": WEATHER}],
           "tool_choice": "auto", "text": {"format": {"type": "text"}}}


def test_text_answer_is_a_valid_response():
    answer = chat_to_response(completion("Sunny."), REQUEST)
    response = Response.model_validate(answer)
    assert "output_text" not in answer and response.output_text == "Sunny."
    assert answer["id"].startswith("resp_") and answer["object"] == "response"
    assert answer["status"] == "completed" and answer["completed_at"] >= answer["created_at"] == 1700000000
    assert answer["model"] == "Llama-3-70B"
    [item] = answer["output"]
    assert item["id"].startswith("msg_") and item["role"] == "assistant" and item["status"] == "completed"
    assert item["content"] == [{"type": "output_text", "text": "Sunny.", "annotations": [], "logprobs": []}]
    assert answer["usage"] == {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                               "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2},
                               "total_tokens": 18}
    assert {k: answer[k] for k in ("instructions", "max_output_tokens", "temperature", "top_p", "tool_choice",
                                   "parallel_tool_calls", "text", "metadata", "previous_response_id",
                                   "store", "error", "incomplete_details")} == {
        "instructions": "Be terse.", "max_output_tokens": 100, "temperature": 0.5, "top_p": 1.0,
        "tool_choice": "auto", "parallel_tool_calls": True, "text": {"format": {"type": "text"}},
        "metadata": {"tenant": "t1"}, "previous_response_id": None, "store": False, "error": None,
        "incomplete_details": None}
    assert answer["tools"] == [{"type": "function", "name": "weather", "description": None,
                                "parameters": WEATHER, "strict": True}]


def test_tool_calls_become_function_call_items_after_the_text():
    answer = chat_to_response(completion("Let me check.", finish_reason="tool_calls", tool_calls=[
        call("call_a", "weather", "{\"city\":\"Paris\"}"), call("call_b", "weather", "{\"city\":\"Rome\"}")]),
        REQUEST)
    response = Response.model_validate(answer)
    assert [o.type for o in response.output] == ["message", "function_call", "function_call"]
    calls = response.output[1:]
    assert [(c.call_id, c.name, c.arguments, c.status) for c in calls] == [
        ("call_a", "weather", "{\"city\":\"Paris\"}", "completed"),
        ("call_b", "weather", "{\"city\":\"Rome\"}", "completed")]
    assert all(c.id.startswith("fc_") for c in calls) and calls[0].id != calls[1].id


def test_only_tool_calls_no_empty_message():
    answer = chat_to_response(completion(None, finish_reason="tool_calls", tool_calls=[call("c1", "f", "{}")]),
                              REQUEST)
    assert [o["type"] for o in answer["output"]] == ["function_call"]


@pytest.mark.parametrize("finish_reason, reason, content, items", [
    ("length", "max_output_tokens", "A long stor", ["incomplete"]),
    ("content_filter", "content_filter", None, []),
])
def test_cut_answers_are_incomplete(finish_reason, reason, content, items):
    answer = chat_to_response(completion(content, finish_reason=finish_reason), REQUEST)
    response = Response.model_validate(answer)
    assert response.status == "incomplete" and response.incomplete_details.reason == reason
    assert [o.status for o in response.output] == items and "completed_at" not in answer


def test_reasoning_content_and_refusal_are_kept():
    answer = chat_to_response(completion("", reasoning_content="Thinking…", refusal="I can't."), REQUEST)
    response = Response.model_validate(answer)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.content[0].text == "Thinking…" and reasoning.summary == []
    assert [p.type for p in message.content] == ["refusal"] and message.content[0].refusal == "I can't."


def test_sdk_create_over_http(sdk_upstream):
    upstream = sdk_upstream(lambda chat: completion(f"You said: {chat['messages'][-1]['content']}"))
    response = upstream.client.responses.create(model="llama3", input="ping", instructions="Echo.")
    assert response.output_text == "You said: ping" and response.usage.total_tokens == 18
    assert upstream.chats[0]["messages"][0] == {"role": "system", "content": "Echo."}


class Weather(pydantic.BaseModel):
    city: str
    celsius: int


def test_sdk_parse_json_schema_over_http(sdk_upstream):
    upstream = sdk_upstream(lambda chat: completion(json.dumps({"city": "Paris", "celsius": 21})))
    response = upstream.client.responses.parse(model="llama3", input="Paris?", text_format=Weather)
    assert response.output_parsed == Weather(city="Paris", celsius=21)
    schema = upstream.chats[0]["response_format"]
    assert schema["type"] == "json_schema" and schema["json_schema"]["name"] == "Weather"
    assert schema["json_schema"]["strict"] is True and "celsius" in schema["json_schema"]["schema"]["properties"]


def test_sdk_parse_function_tool_arguments_over_http(sdk_upstream):
    upstream = sdk_upstream(lambda chat: completion(None, finish_reason="tool_calls", tool_calls=[
        call("call_1", chat["tools"][0]["function"]["name"], "{\"city\":\"Rome\",\"celsius\":25}")]))
    response = upstream.client.responses.parse(model="llama3", input="Rome?",
                                               tools=[openai.pydantic_responses_function_tool(Weather)])
    [item] = response.output
    assert item.type == "function_call" and item.call_id == "call_1"
    assert item.parsed_arguments == Weather(city="Rome", celsius=25)


def test_sdk_sees_the_400(sdk_upstream):
    upstream = sdk_upstream(lambda chat: pytest.fail("nothing goes upstream"))
    with pytest.raises(openai.BadRequestError) as caught:
        upstream.client.responses.create(model="llama3", input="x", previous_response_id="resp_1")
    assert caught.value.status_code == 400 and caught.value.param == "previous_response_id"
    assert caught.value.code == "unsupported_parameter"
