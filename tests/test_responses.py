"""The Responses API through the gateway (DESIGN §13), with the real `openai` SDK: a pool of two
azure-openai routes on two emulated resources (each stores its own responses), served by two
gateway processes that share nothing but GATEWAY_ID_SECRET. Every follow-up must land on the
resource that created the response, whichever gateway serves it."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from emulator import azure_openai, servers
from tests.conftest import gateway_settings, route
from tests.helpers import GATEWAY_KEY, GatewayProcess, Upstream
from tests.structured_models import Solution

ID_SECRET = "test-id-secret-0123456789abcdefghijklmnop"
OTHER_KEY = "other-consumer-key-0123456789"
WEATHER = {"type": "function", "name": "get_weather", "description": "Get weather", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def second_resource(emulators):
    key = emulators.keys["azure_openai"][0]
    with servers.start(azure_openai.create_app(keys=[key])) as running:
        yield running


@pytest.fixture(scope="module")
def pair(emulators, second_resource, tmp_path_factory):
    key = emulators.keys["azure_openai"][0]
    settings = {**gateway_settings(emulators), "GATEWAY_ID_SECRET": ID_SECRET, "CONSUMER__OTHER__KEYS": OTHER_KEY,
                **route("RESPA", model="gpt-resp", backend="azure-openai",
                        endpoint=emulators.urls["azure_openai"], deployment="gpt-4o", api_key=key),
                **route("RESPB", model="gpt-resp", backend="azure-openai", endpoint=second_resource.url,
                        deployment="gpt-4o", api_key=key)}
    first = GatewayProcess(settings, tmp_path_factory.mktemp("responses-a"))
    second = GatewayProcess(settings, tmp_path_factory.mktemp("responses-b"))
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
def resources(clean, second_resource):
    b = Upstream(second_resource.url)
    b.clear()
    yield {"RESPA": clean["aoai"], "RESPB": b}
    b.clear()


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def served_by(resources) -> dict[str, list[tuple[str, str]]]:
    return {name: [(r["method"], r["path"]) for r in upstream.requests() if "/responses" in r["path"]]
            for name, upstream in resources.items()}


def test_every_follow_up_lands_on_the_creating_resource(pair, resources):
    first, second = pair
    created = [client(first).responses.create(model="gpt-resp", input=f"question {n}") for n in range(8)]
    creators = {}
    for response in created:
        raw = httpx.get(second.url + f"/v1/responses/{response.id}", headers={"api-key": GATEWAY_KEY})
        assert raw.status_code == 200 and raw.json()["id"] == response.id
        creators[response.id] = raw.headers["x-gateway-route"]
    assert set(creators.values()) == {"RESPA", "RESPB"}, "both resources should have created some"
    for response in created:  # continued through the OTHER gateway process
        follow = client(second).responses.create(model="gpt-resp", input="and then?",
                                                 previous_response_id=response.id)
        assert follow.previous_response_id == response.id
        items = client(first).responses.input_items.list(follow.id)
        assert items.data
    calls = served_by(resources)
    for name, upstream_calls in calls.items():
        creates = sum(1 for method, path in upstream_calls if method == "POST")
        assert creates == 2 * list(creators.values()).count(name)  # its creates and their follow-ups


def test_stream_events_arrive_as_they_come_with_ids_rewritten(pair, resources):
    first, _ = pair
    for upstream in resources.values():
        upstream.configure(chunk_delay=0.15)
    started = time.monotonic()
    arrivals, events = [], []
    with client(first).responses.create(model="gpt-resp", input="stream please", stream=True) as stream:
        for event in stream:
            arrivals.append(time.monotonic() - started)
            events.append(event)
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert arrivals[-1] - arrivals[0] > 0.5, "the first event came when the upstream's last did"
    final = events[-1].response
    assert final.id == events[0].response.id and final.usage.total_tokens > 0
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {final.output[0].id}  # every delta names the item as the final output does
    again = client(first).responses.retrieve(final.id)
    assert again.output[0].id == final.output[0].id


def test_function_call_round_trip_streamed(pair, resources):
    first, second = pair
    with client(first).responses.stream(model="gpt-resp", input="What is the weather in Paris?",
                                        tools=[WEATHER], tool_choice="required") as stream:
        response = stream.get_final_response()
    call = next(item for item in response.output if item.type == "function_call")
    assert call.name == "get_weather"
    follow = client(second).responses.create(
        model="gpt-resp", previous_response_id=response.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'}])
    assert "21" in follow.output_text


def test_parse_retrieve_delete_and_background_cancel(pair, resources):
    first, second = pair
    parsed = client(first).responses.parse(model="gpt-resp", input="Solve 8x + 7 = -23", text_format=Solution)
    assert isinstance(parsed.output_parsed, Solution)
    assert client(second).responses.retrieve(parsed.id).id == parsed.id
    client(second).responses.delete(parsed.id)
    with pytest.raises(openai.NotFoundError):
        client(first).responses.retrieve(parsed.id)
    for upstream in resources.values():
        upstream.configure(background_delay=5)
    background = client(first).responses.create(model="gpt-resp", input="slowly", background=True)
    assert background.status in ("queued", "in_progress")
    cancelled = client(second).responses.cancel(background.id)
    assert cancelled.status == "cancelled" and cancelled.id == background.id


def test_azure_openai_and_async_clients(pair, resources):
    first, _ = pair
    azure = openai.AzureOpenAI(azure_endpoint=first.url, api_version="2025-04-01-preview",
                               api_key=GATEWAY_KEY, max_retries=0)
    created = azure.responses.create(model="gpt-resp", input="hello from AzureOpenAI")
    assert azure.responses.retrieve(created.id).output_text == created.output_text

    async def run():
        async_client = openai.AsyncOpenAI(base_url=first.url + "/openai/v1/", api_key=GATEWAY_KEY, max_retries=0)
        answer = await async_client.responses.create(model="gpt-resp", input="hello async")
        stream = await async_client.responses.create(model="gpt-resp", input="hello async", stream=True)
        kinds = [event.type async for event in stream]
        return answer, kinds

    answer, kinds = asyncio.run(run())
    assert answer.output_text and kinds[-1] == "response.completed"


@pytest.mark.parametrize("case", ["forged", "tampered", "foreign"])
def test_ids_the_gateway_did_not_make_are_404_and_reach_nothing(pair, resources, case):
    first, _ = pair
    real = client(first).responses.create(model="gpt-resp", input="hi")
    for upstream in resources.values():
        upstream.clear()
    if case == "forged":
        bad = "resp_" + "a" * 48
    elif case == "tampered":
        bad = real.id[:-1] + ("A" if real.id[-1] != "A" else "B")
    else:  # a real upstream id, as another gateway (or the resource itself) would hand out
        bad = client_of(resources).responses.create(model="gpt-4o", input="direct").id
        for upstream in resources.values():
            upstream.clear()
    for call in (lambda: client(first).responses.retrieve(bad),
                 lambda: client(first).responses.delete(bad),
                 lambda: client(first).responses.cancel(bad),
                 lambda: client(first).responses.input_items.list(bad)):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.NotFoundError) as caught:
        client(first).responses.create(model="gpt-resp", input="next", previous_response_id=bad)
    assert caught.value.code == "previous_response_not_found"
    assert all(upstream.requests() == [] for upstream in resources.values())


def client_of(resources) -> openai.OpenAI:
    """A client of the first emulated resource itself, bypassing the gateway."""
    upstream = resources["RESPA"]
    return openai.OpenAI(base_url=upstream.url + "/openai/v1/", api_key=upstream.key, max_retries=0)


def test_another_consumer_cannot_use_a_response_id(pair, resources):
    first, second = pair
    mine = client(first).responses.create(model="gpt-resp", input="my secret is swordfish")
    before = sum(len(upstream.requests()) for upstream in resources.values())
    other = openai.OpenAI(base_url=second.url + "/v1", api_key=OTHER_KEY, max_retries=0)
    for call in (lambda: other.responses.retrieve(mine.id), lambda: other.responses.delete(mine.id),
                 lambda: other.responses.input_items.list(mine.id),
                 lambda: other.responses.create(model="gpt-resp", input="go on", previous_response_id=mine.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert sum(len(upstream.requests()) for upstream in resources.values()) == before  # none reached one
    assert client(second).responses.retrieve(mine.id).id == mine.id  # its own consumer still can

