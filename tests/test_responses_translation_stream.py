"""Chat completion chunks → Responses stream events (DESIGN §13): OpenAI's order and framing,
checked event by event against the SDK's event types and end to end through the SDK's own stream
parsing (`SdkUpstream` serves the translator's bytes on loopback)."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from routing.responses.translate_stream import ChatToResponsesStream
from tests import test_responses_translation as translation_tests
from tests.test_responses_translation import Weather

sdk_upstream = translation_tests.sdk_upstream  # the fixture, shared

EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
REQUEST = {"model": "llama3", "input": "hi", "stream": True}


def chunk(content: str | None = None, *, finish: str | None = None, calls: list | None = None,
          usage: dict | None = None, **delta: Any) -> dict[str, Any]:
    if content is not None:
        delta["content"] = content
    if calls is not None:
        delta["tool_calls"] = calls
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "Llama",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage}


def tool(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
    if name:
        call["function"]["name"] = name
    return call


USAGE_CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}


def events_of(raw: bytes) -> list[dict[str, Any]]:
    """Parse the translator's bytes strictly: `event: <type>` + one `data:` line per event, each
    event valid for the SDK's event union, sequence numbers 0, 1, 2, ..."""
    assert raw.endswith(b"\n\n") and b"[DONE]" not in raw
    events = []
    for block in raw[:-2].split(b"\n\n"):
        name, data = block.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        event = json.loads(data[6:])
        assert event["type"] == name[7:].decode() and "error" not in event  # the SDK raises on it
        EVENTS.validate_python(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def translate(chunks: list[dict], request: dict = REQUEST, end: str = "finish") -> list[dict[str, Any]]:
    stream = ChatToResponsesStream(request)
    raw = stream.start() + b"".join(stream.feed(c) for c in chunks) + getattr(stream, end)()
    assert stream.ended and stream.feed(chunk("late")) == b"" and stream.finish() == b""
    return events_of(raw)


def types(events: list[dict]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


TEXT = [chunk("", role="assistant"), chunk("Hel"), chunk(""), chunk("lo"), chunk(finish="stop"), USAGE_CHUNK]
TEXT_ORDER = ["created", "in_progress", "output_item.added", "content_part.added", "output_text.delta",
              "output_text.delta", "output_text.done", "content_part.done", "output_item.done", "completed"]


def test_text_stream_in_openais_order():
    events = translate(TEXT)
    assert types(events) == TEXT_ORDER
    created, _, added, part, *_ = events
    assert created["response"]["status"] == "in_progress" and created["response"]["output"] == []
    item_id = added["item"]["id"]
    assert added["output_index"] == 0 and added["item"]["status"] == "in_progress" and item_id.startswith("msg_")
    assert all(e["item_id"] == item_id and e["output_index"] == 0 and e["content_index"] == 0
               for e in events[3:8])
    assert [e["delta"] for e in events[4:6]] == ["Hel", "lo"] and events[6]["text"] == "Hello"
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed" and final.output_text == "Hello" and final.id == created["response"]["id"]
    assert final.usage.input_tokens == 9 and final.usage.output_tokens == 4 and final.usage.total_tokens == 13


def test_parallel_interleaved_tool_calls_stream_one_item_at_a_time():
    events = translate([
        chunk("Checking."),
        chunk(calls=[tool(0, "", "call_a", "weather")]),
        chunk(calls=[tool(1, "{\"ci", "call_b", "weather")]),
        chunk(calls=[tool(0, "{\"city\":")]),
        chunk(calls=[tool(1, "ty\":\"Rome\"}")]),
        chunk(calls=[tool(0, "\"Paris\"}")]),
        chunk(finish="tool_calls", usage=USAGE)])  # usage on the finish chunk (Azure AI)
    assert types(events) == [
        "created", "in_progress",
        "output_item.added", "content_part.added", "output_text.delta", "output_text.done",
        "content_part.done", "output_item.done",
        "output_item.added", "function_call_arguments.delta", "function_call_arguments.delta",
        "function_call_arguments.done", "output_item.done",
        "output_item.added", "function_call_arguments.delta", "function_call_arguments.done", "output_item.done",
        "completed"]
    first, second = events[8], events[13]
    assert (first["output_index"], first["item"]["call_id"], second["output_index"], second["item"]["call_id"]) \
        == (1, "call_a", 2, "call_b")
    assert events[11]["arguments"] == "{\"city\":\"Paris\"}" and events[15]["arguments"] == "{\"city\":\"Rome\"}"
    assert all(e["item_id"] == second["item"]["id"] for e in events[14:16])
    final = Response.model_validate(events[-1]["response"])
    assert [(o.type, getattr(o, "call_id", None)) for o in final.output] == [
        ("message", None), ("function_call", "call_a"), ("function_call", "call_b")]
    assert final.usage.total_tokens == 13


def test_chunks_without_content_make_no_items():
    events = translate([
        {"id": "", "object": "", "created": 0, "model": "", "choices": [], "usage": None,
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]},
        chunk("", role="assistant"), {"choices": [{"index": 0}]}, chunk(None, finish="stop"), USAGE_CHUNK])
    assert types(events) == ["created", "in_progress", "completed"]
    assert events[-1]["response"]["output"] == [] and events[-1]["response"]["status"] == "completed"


def test_reasoning_then_text_are_two_items():
    events = translate([chunk(reasoning_content="Let me "), chunk(reasoning_content="think."), chunk("42"),
                        chunk(finish="stop")])
    assert types(events)[2:-1] == [
        "output_item.added", "content_part.added", "reasoning_text.delta", "reasoning_text.delta",
        "reasoning_text.done", "content_part.done", "output_item.done",
        "output_item.added", "content_part.added", "output_text.delta", "output_text.done",
        "content_part.done", "output_item.done"]
    final = Response.model_validate(events[-1]["response"])
    assert final.output[0].type == "reasoning" and final.output[0].content[0].text == "Let me think."
    assert final.output_text == "42" and final.usage is None  # the upstream reported none


def test_length_finish_is_incomplete():
    events = translate([chunk("A long sto"), chunk("ry", finish="length"), USAGE_CHUNK])
    assert types(events)[-2:] == ["output_item.done", "incomplete"]
    assert events[-2]["item"]["status"] == "incomplete"
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert final.output_text == "A long story"


def test_stream_cut_before_its_finish_fails():
    events = translate([chunk("Half an ans")])
    assert types(events)[-1] == "failed" and "output_item.done" not in types(events)
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert "before it was complete" in failed.error.message
    assert failed.output[0].status == "incomplete" and failed.output_text == "Half an ans"


def test_upstream_error_mid_stream_fails_and_ends():
    stream = ChatToResponsesStream(REQUEST)
    raw = stream.feed(chunk("Partial")) + stream.feed(
        {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit_exceeded"}})
    assert stream.ended and stream.feed(chunk("more")) == b"" and stream.finish() == b""
    events = events_of(raw)
    assert types(events)[-1] == "failed"
    failed = Response.model_validate(events[-1]["response"])
    assert failed.error.code == "rate_limit_exceeded" and "Rate limit reached" in failed.error.message
    assert failed.output_text == "Partial"


def test_caller_reported_failure_is_failed_with_a_known_code():
    stream = ChatToResponsesStream(REQUEST)
    events = events_of(stream.feed(chunk(calls=[tool(0, "{", "call_1", "f")]))
                       + stream.fail("The upstream sent nothing for 30 seconds.", "upstream_timeout"))
    failed = events[-1]["response"]
    assert failed["error"] == {"code": "server_error", "message": "The upstream sent nothing for 30 seconds."}
    assert failed["output"][0]["arguments"] == "{" and failed["output"][0]["status"] == "incomplete"


def test_repeated_names_and_ids_are_not_concatenated():
    events = translate([chunk(calls=[tool(0, "{\"a\":", "call_1", "f")]),
                        chunk(calls=[tool(0, "1}", "call_1", "f")]), chunk(finish="tool_calls")])
    item = events[-1]["response"]["output"][0]
    assert (item["name"], item["call_id"], item["arguments"]) == ("f", "call_1", "{\"a\":1}")


def test_state_is_linear_in_the_output():
    stream = ChatToResponsesStream(REQUEST)
    started = time.perf_counter()
    sizes = [len(stream.feed(chunk("x"))) for _ in range(30_000)]
    done = stream.feed(chunk(finish="stop")) + stream.finish()
    assert time.perf_counter() - started < 3.0  # joining the text at every delta takes minutes
    assert max(sizes[1:]) < 300 and json.loads(done.split(b"data: ")[-1])["response"]["output"][0][
        "content"][0]["text"] == "x" * 30_000


# -- through the SDK's own stream parsing ----------------------------------------------------------

def test_sdk_stream_text(sdk_upstream):
    upstream = sdk_upstream(lambda chat: TEXT)
    deltas = []
    with upstream.client.responses.stream(model="llama3", input="hi") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert deltas == ["Hel", "lo"] and final.output_text == "Hello" and final.usage.total_tokens == 13
    assert upstream.chats[0]["stream"] is True and upstream.chats[0]["stream_options"] == {"include_usage": True}


def test_sdk_create_stream_parallel_function_calls(sdk_upstream):
    upstream = sdk_upstream(lambda chat: [
        chunk(calls=[tool(0, "{\"city\"", "call_a", "weather"), tool(1, "{\"city\"", "call_b", "weather")]),
        chunk(calls=[tool(1, ":\"Rome\"}"), tool(0, ":\"Paris\"}")]), chunk(finish="tool_calls"), USAGE_CHUNK])
    seen = list(upstream.client.responses.create(model="llama3", input="Paris and Rome?", stream=True, tools=[
        {"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": False}]))
    assert [e.sequence_number for e in seen] == list(range(len(seen)))
    arguments: dict[str, list[str]] = {}
    for event in seen:
        if event.type == "response.function_call_arguments.delta":
            arguments.setdefault(event.item_id, []).append(event.delta)
    final = seen[-1].response
    assert seen[-1].type == "response.completed"
    calls = [(o.call_id, o.arguments, "".join(arguments[o.id])) for o in final.output]
    assert calls == [("call_a", "{\"city\":\"Paris\"}", "{\"city\":\"Paris\"}"),
                     ("call_b", "{\"city\":\"Rome\"}", "{\"city\":\"Rome\"}")]


def test_sdk_stream_json_schema_and_pydantic_tools(sdk_upstream):
    answer = json.dumps({"city": "Paris", "celsius": 21})
    upstream = sdk_upstream(lambda chat: [chunk(answer[:9]), chunk(answer[9:]), chunk(finish="stop"), USAGE_CHUNK])
    with upstream.client.responses.stream(model="llama3", input="Paris?", text_format=Weather) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == Weather(city="Paris", celsius=21)
    assert upstream.chats[0]["response_format"]["json_schema"]["name"] == "Weather"

    upstream = sdk_upstream(lambda chat: [chunk(calls=[tool(0, "{\"city\":\"Rome\",", "call_1", "Weather")]),
                                          chunk(calls=[tool(0, "\"celsius\":25}")]), chunk(finish="tool_calls")])
    with upstream.client.responses.stream(model="llama3", input="Rome?",
                                          tools=[openai.pydantic_responses_function_tool(Weather)]) as stream:
        final = stream.get_final_response()
    assert final.output[0].parsed_arguments == Weather(city="Rome", celsius=25)


def test_sdk_sees_a_cut_stream_as_failed(sdk_upstream):
    upstream = sdk_upstream(lambda chat: [chunk("Half")])
    with upstream.client.responses.stream(model="llama3", input="hi") as stream:
        kinds = [event.type for event in stream]
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    assert kinds[-1] == "response.failed"


def test_unusual_upstream_shapes():
    """A refusal, a call named only in its second chunk, calls without `index` (some upstreams)."""
    events = translate([
        chunk(refusal="I can't"), chunk(refusal=" help."),
        chunk(calls=[{"index": 0, "id": "call_1", "function": {"arguments": ""}}]),
        chunk(calls=[{"index": 0, "function": {"name": "f", "arguments": "{}"}}]),
        chunk(calls=[{"id": "call_2", "function": {"name": "g", "arguments": "{\"x\":"}}]),
        chunk(calls=[{"function": {"arguments": "1}"}}]), chunk(finish="tool_calls")])
    assert types(events)[2:9] == ["output_item.added", "content_part.added", "refusal.delta", "refusal.delta",
                                  "refusal.done", "content_part.done", "output_item.done"]
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [(i["type"], i.get("name")) for i in added] == [("message", None), ("function_call", "f"),
                                                          ("function_call", "g")]
    final = Response.model_validate(events[-1]["response"])
    assert final.output[0].content[0].refusal == "I can't help."
    assert [(o.call_id, o.name, o.arguments) for o in final.output[1:]] == [("call_1", "f", "{}"),
                                                                          ("call_2", "g", "{\"x\":1}")]
