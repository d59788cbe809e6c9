"""Tool calls and structured output end to end: the `openai` SDK → the gateway → the emulators'
fake model, for Azure OpenAI (gpt-4o, managed identity), serverless Llama (llama3) and Foundry
Mistral (mistral-large). Streamed tool-call deltas are the relay path most gateways get wrong."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from pydantic import BaseModel

from tests.structured_models import Solution

from tests.helpers import GATEWAY_KEY

pytestmark = pytest.mark.usefixtures("clean")
MODELS = ("gpt-4o", "llama3", "mistral-large")
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast", "parameters": {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                   "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "unit", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
FORCED = {"type": "function", "function": {"name": "get_weather"}}
# The fake model's arguments: an instance of the parameters schema, compact JSON.
WEATHER_ARGUMENTS = {"city": "example city", "unit": "celsius", "days": 1}


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def collect_stream(stream) -> dict:
    """Reassemble a streamed answer the way a careful client does: tool calls by `index`."""
    calls: dict[int, dict] = {}
    argument_deltas = 0
    finish, usage, content = None, None, ""
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": "", "heads": 0})
                if delta.id:
                    call["id"], call["heads"] = delta.id, call["heads"] + 1
                    assert delta.type == "function" and delta.function.name
                    assert delta.function.arguments == "", "the head delta carries empty arguments"
                    call["name"] = delta.function.name
                elif delta.function and delta.function.arguments:
                    argument_deltas += 1
                    call["arguments"] += delta.function.arguments
    return {"calls": [calls[i] for i in sorted(calls)], "argument_deltas": argument_deltas, "finish": finish,
            "usage": usage, "content": content}


@pytest.mark.parametrize("model", MODELS)
def test_streamed_forced_tool_call_reassembles(gateway, model):
    c = client(gateway)
    answer = collect_stream(c.chat.completions.create(
        model=model, messages=USER, tools=[TIME, WEATHER], tool_choice=FORCED, stream=True,
        stream_options={"include_usage": True}))
    [call] = answer["calls"]
    assert call["name"] == "get_weather" and call["id"] and call["heads"] == 1
    assert answer["argument_deltas"] > 1, "arguments must arrive split across several chunks"
    assert json.loads(call["arguments"]) == WEATHER_ARGUMENTS
    assert answer["finish"] == "tool_calls" and answer["content"] == ""
    assert answer["usage"].completion_tokens == answer["argument_deltas"]

    same = c.chat.completions.create(model=model, messages=USER, tools=[TIME, WEATHER], tool_choice=FORCED)
    assert same.choices[0].message.tool_calls[0].function.arguments == call["arguments"]


@pytest.mark.parametrize("model", MODELS)
def test_non_stream_tool_call(gateway, model, upstreams):
    completion = client(gateway).chat.completions.create(
        model=model, messages=USER, tools=[WEATHER], tool_choice=FORCED)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == WEATHER_ARGUMENTS
    upstream = {"gpt-4o": "aoai", "llama3": "serverless", "mistral-large": "foundry"}[model]
    seen = [r for r in upstreams[upstream].requests() if not r["path"].startswith("/msi")][-1]["body"]
    assert seen["tools"] == [WEATHER] and seen["tool_choice"] == FORCED


@pytest.mark.parametrize("model", MODELS)
def test_required_tool_choice_calls_a_tool(gateway, model):
    c = client(gateway)
    first = c.chat.completions.create(model=model, messages=USER, tools=[WEATHER, TIME], tool_choice="required")
    assert [t.function.name for t in first.choices[0].message.tool_calls] == ["get_weather"]
    named = [{"role": "user", "content": "Which zone? use get_time"}]
    streamed = collect_stream(c.chat.completions.create(
        model=model, messages=named, tools=[WEATHER, TIME], tool_choice="required", stream=True))
    assert [(call["name"], json.loads(call["arguments"])) for call in streamed["calls"]] == [
        ("get_time", {"zone": "example zone"})]


def test_parallel_tool_calls_stream_by_index(gateway):
    messages = [{"role": "user", "content": "call get_weather and get_time"}]
    answer = collect_stream(client(gateway).chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER, TIME], stream=True))
    assert [call["name"] for call in answer["calls"]] == ["get_weather", "get_time"]
    assert json.loads(answer["calls"][0]["arguments"]) == WEATHER_ARGUMENTS
    assert json.loads(answer["calls"][1]["arguments"]) == {"zone": "example zone"}
    assert len({call["id"] for call in answer["calls"]}) == 2


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_result_round_trip_returns_text(gateway, model, stream):
    c = client(gateway)
    first = c.chat.completions.create(model=model, messages=USER, tools=[WEATHER], tool_choice=FORCED)
    assistant = first.choices[0].message
    messages = [*USER, assistant.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": assistant.tool_calls[0].id, "content": "Sunny, 21 degrees"}]
    if stream:
        answer = collect_stream(c.chat.completions.create(model=model, messages=messages, tools=[WEATHER],
                                                          stream=True))
        text, finish = answer["content"], answer["finish"]
        assert answer["calls"] == []
    else:
        second = c.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
        text, finish = second.choices[0].message.content, second.choices[0].finish_reason
        assert not second.choices[0].message.tool_calls
    assert text.startswith("Tool result: Sunny, 21 degrees") and finish == "stop"


def test_azure_client_streams_tool_calls(gateway):
    azure = openai.AzureOpenAI(azure_endpoint=gateway.url, api_key=GATEWAY_KEY, api_version="2024-10-21",
                               max_retries=0)
    answer = collect_stream(azure.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER], tool_choice=FORCED, stream=True))
    assert json.loads(answer["calls"][0]["arguments"]) == WEATHER_ARGUMENTS and answer["argument_deltas"] > 1


def test_async_client_streams_tool_calls(gateway):
    async def run() -> tuple[str, int]:
        async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0) as c:
            stream = await c.chat.completions.create(model="llama3", messages=USER, tools=[WEATHER],
                                                     tool_choice=FORCED, stream=True)
            arguments, deltas = "", 0
            async for chunk in stream:
                for choice in chunk.choices:
                    for delta in choice.delta.tool_calls or []:
                        if delta.function and delta.function.arguments:
                            arguments, deltas = arguments + delta.function.arguments, deltas + 1
            return arguments, deltas

    arguments, deltas = asyncio.run(run())
    assert json.loads(arguments) == WEATHER_ARGUMENTS and deltas > 1


# --- structured output ----------------------------------------------------------------------------



class GetWeather(BaseModel):
    city: str
    days: int


@pytest.mark.parametrize("model", ["gpt-4o", "mistral-large"])
def test_structured_output_parses_into_the_model(gateway, model):
    completion = client(gateway).chat.completions.parse(model=model, messages=USER, response_format=Solution)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Solution) and parsed.steps and parsed.confidence == "low"


@pytest.mark.parametrize("model", MODELS)
def test_strict_function_tool_arguments_parse(gateway, model):
    completion = client(gateway).chat.completions.parse(
        model=model, messages=USER, tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}})
    arguments = completion.choices[0].message.tool_calls[0].function.parsed_arguments
    assert isinstance(arguments, GetWeather) and arguments.city == "example city" and arguments.days == 1


def test_llama_refuses_structured_output_with_its_422(gateway):
    with pytest.raises(openai.UnprocessableEntityError):
        client(gateway).chat.completions.parse(model="llama3", messages=USER, response_format=Solution)


@pytest.mark.parametrize("model", ["gpt-4o", "mistral-large"])
def test_json_object_answer_is_json(gateway, model):
    messages = [{"role": "system", "content": "Reply in JSON."}, *USER]
    c = client(gateway)
    completion = c.chat.completions.create(model=model, messages=messages, response_format={"type": "json_object"})
    content = completion.choices[0].message.content
    assert isinstance(json.loads(content), dict)
    streamed = collect_stream(c.chat.completions.create(
        model=model, messages=messages, response_format={"type": "json_object"}, stream=True))
    assert streamed["content"] == content
