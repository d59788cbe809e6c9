"""The Azure OpenAI emulator's Responses API, driven with the real ``openai`` SDK and raw HTTP:
paths and api-versions, answers, streaming events, function calls, stored state per resource,
background mode, input_items, structured output, faults and records."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.structured_models import Solution

from emulator import azure_openai, issue_token, servers

WEATHER = {"type": "function", "name": "get_weather", "description": "Get weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    "strict": True}
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"]
TEXT_TAIL = ["response.output_text.done", "response.content_part.done", "response.output_item.done",
             "response.completed"]


def sdk(aoai) -> openai.OpenAI:
    return openai.OpenAI(base_url=aoai["url"] + "/openai/v1/", api_key=aoai["headers"]["api-key"], max_retries=0)


def post(client, aoai, body, path="/openai/v1/responses", params=None, headers=None):
    return client.post(aoai["url"] + path, json=body, params=params,
                       headers=aoai["headers"] if headers is None else headers)


def get(client, aoai, rid, suffix="", params=None):
    return client.get(f"{aoai['url']}/openai/v1/responses/{rid}{suffix}", params=params, headers=aoai["headers"])


def parse_events(raw: bytes) -> list[dict]:
    """Strict Responses SSE: ``event: <type>`` + ``data: <compact json>`` + blank line, LF only, no [DONE]."""
    text = raw.decode("utf-8")
    assert "\r" not in text and text.endswith("\n\n") and "[DONE]" not in text
    events = []
    for block in text[:-2].split("\n\n"):
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: "):])
        assert event_line[len("event: "):] == data["type"]
        events.append(data)
    return events


def wait_status(client, aoai, rid, statuses=("completed", "incomplete", "cancelled", "failed"), timeout=5.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = get(client, aoai, rid).json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in statuses:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"{rid} still {seen} after {timeout}s")


# --- create, non-stream -------------------------------------------------------------------------

def test_create_returns_the_full_response_object(client, aoai):
    r = post(client, aoai, {"model": "gpt-4o", "input": "hello emulator", "instructions": "Be terse.",
                            "max_output_tokens": 100, "metadata": {"tenant": "t1"}})
    assert r.status_code == 200, r.text
    assert r.headers["apim-request-id"] and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("resp_") and len(body["id"]) == 53
    assert body["object"] == "response" and body["status"] == "completed" and body["model"] == "gpt-4o-2024-08-06"
    assert isinstance(body["created_at"], int) and body["completed_at"] >= body["created_at"]
    assert body["instructions"] == "Be terse." and body["max_output_tokens"] == 100
    assert body["store"] is True and body["background"] is False and body["previous_response_id"] is None
    assert body["error"] is None and body["incomplete_details"] is None and body["metadata"] == {"tenant": "t1"}
    assert body["text"] == {"format": {"type": "text"}} and body["tool_choice"] == "auto" and body["tools"] == []
    assert "output_text" not in body  # SDK-only convenience (§1.3)
    [message] = body["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_") and message["role"] == "assistant"
    assert message["status"] == "completed"
    [part] = message["content"]
    assert part["type"] == "output_text" and part["annotations"] == []
    assert part["text"].startswith("Hello! You said: hello emulator ") and len(part["text"].split()) == 20
    # "Be terse." + "hello emulator": 4 words in, 20 out
    assert body["usage"] == {"input_tokens": 4, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                             "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": 24}
    response = sdk(aoai).responses.create(model="gpt-4o", input="hello emulator")
    assert response.output_text == part["text"] and response.usage.total_tokens == 22


def test_max_output_tokens_makes_it_incomplete(client, aoai):
    body = post(client, aoai, {"model": "gpt-4o", "input": "hi", "max_output_tokens": 16}).json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["completed_at"] is None and body["usage"]["output_tokens"] == 16
    assert body["output"][0]["status"] == "incomplete" and len(body["output"][0]["content"][0]["text"].split()) == 16


def test_reasoning_deployment_reports_reasoning(client, aoai):
    body = post(client, aoai, {"model": "o3-mini", "input": "think", "reasoning": {"effort": "low"}}).json()
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_") and reasoning["summary"] == []
    assert message["type"] == "message" and body["reasoning"]["effort"] == "low"
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 8 and body["usage"]["output_tokens"] == 28
    r = post(client, aoai, {"model": "gpt-4o", "input": "think", "reasoning": {"effort": "low"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning.effort"


@pytest.mark.parametrize("body, param, code", [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, "messages", "unknown_parameter"),
    ({"model": "gpt-4o", "input": "x", "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tools[0].name", "missing_required_parameter"),
    ({"model": "gpt-4o", "input": "x", "max_output_tokens": 5}, "max_output_tokens", "integer_below_min_value"),
    ({"model": "gpt-4o", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
     "text.format.name", "missing_required_parameter"),
    ({"model": "gpt-4o"}, "input", "missing_required_parameter"),
    ({"input": "x"}, "model", "missing_required_parameter"),
    ({"model": "gpt-4o", "input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
     "tool_choice", None),
])
def test_invalid_bodies_are_400_in_openai_shape(client, aoai, body, param, code):
    r = post(client, aoai, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code


def test_json_object_needs_the_word_json(client, aoai):
    text = {"format": {"type": "json_object"}}
    r = post(client, aoai, {"model": "gpt-4o", "input": "hello", "text": text})
    assert r.status_code == 400 and "json" in r.json()["error"]["message"]
    body = post(client, aoai, {"model": "gpt-4o", "input": "answer in JSON", "text": text}).json()
    assert json.loads(body["output"][0]["content"][0]["text"])["answer"].startswith("Hello! You said: answer in JSON")


def test_parse_with_a_pydantic_model(aoai, ctl):
    response = sdk(aoai).responses.parse(model="gpt-4o", input="Solve 8x + 7 = -23", text_format=Solution)
    assert isinstance(response.output_parsed, Solution) and response.output_parsed.confidence == "low"
    sent = ctl.records(aoai["url"])[-1]["body"]["text"]["format"]
    assert sent["type"] == "json_schema" and sent["name"] == "Solution" and sent["strict"] is True


# --- paths, api-versions, auth, deployments -----------------------------------------------------

def test_azure_client_uses_the_api_versioned_paths(aoai, ctl):
    az = openai.AzureOpenAI(azure_endpoint=aoai["url"], api_key=aoai["headers"]["api-key"],
                            api_version="2025-04-01-preview", max_retries=0)
    created = az.responses.create(model="gpt-4o", input="via azure")
    assert az.responses.retrieve(created.id).output_text == created.output_text
    assert az.responses.input_items.list(created.id).data[0].content[0].text == "via azure"
    records = ctl.records(aoai["url"])
    assert [(r["method"], r["path"], r["query"]) for r in records[:2]] == [
        ("POST", "/openai/responses", {"api-version": "2025-04-01-preview"}),
        ("GET", f"/openai/responses/{created.id}", {"api-version": "2025-04-01-preview"})]
    assert records[0]["headers"]["api-key"] == aoai["headers"]["api-key"] and records[0]["body"]["model"] == "gpt-4o"


def test_v1_base_url_with_entra_token_and_preview_version(aoai, ctl):
    token = issue_token(audience="https://cognitiveservices.azure.com")
    az = openai.AzureOpenAI(base_url=aoai["url"] + "/openai/v1/", api_version="preview", azure_ad_token=token,
                            max_retries=0)
    assert az.responses.create(model="gpt-4o", input="entra").status == "completed"
    record = ctl.records(aoai["url"])[-1]
    assert record["path"] == "/openai/v1/responses" and record["query"] == {"api-version": "preview"}
    assert record["headers"]["authorization"] == f"Bearer {token}"


@pytest.mark.parametrize("path, params, status, error", [
    ("/openai/responses", {"api-version": "2024-10-21"}, 400, {"code": "BadRequest", "message": (
        "Azure OpenAI Responses API is enabled only for api-version 2025-03-01-preview and later")}),
    ("/openai/responses", None, 404, {"code": "404", "message": "Resource not found"}),
    ("/openai/responses", {"api-version": "2099-01-01"}, 400, {"code": "BadRequest",
                                                              "message": "API version not supported: 2099-01-01"}),
    ("/openai/v1/responses", {"api-version": "2025-04-01-preview"}, 400, {
        "code": "BadRequest", "message": "API version not supported: 2025-04-01-preview"}),
])
def test_api_versions(client, aoai, path, params, status, error):
    r = post(client, aoai, {"model": "gpt-4o", "input": "x"}, path=path, params=params)
    assert r.status_code == status and r.json() == {"error": error}
    r = client.get(aoai["url"] + path + "/resp_x", params=params, headers=aoai["headers"])
    assert r.status_code == status


@pytest.mark.parametrize("headers", [{"api-key": "wrong"}, {}, {"authorization": "Bearer wrong"}])
def test_bad_credentials_are_401(client, aoai, headers):
    for method, path in (("POST", "/openai/v1/responses"), ("GET", "/openai/v1/responses/resp_1"),
                         ("DELETE", "/openai/v1/responses/resp_1"), ("POST", "/openai/v1/responses/resp_1/cancel"),
                         ("GET", "/openai/v1/responses/resp_1/input_items")):
        r = client.request(method, aoai["url"] + path, headers=headers, json={"model": "gpt-4o", "input": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "401", (method, path)


def test_unknown_and_unsuitable_deployments(client):
    app = azure_openai.create_app(keys=["k"], deployments=["chat", "text-embedding-3-small"])
    with servers.start(app) as server:
        target = {"url": server.url, "headers": {"api-key": "k"}}
        r = post(client, target, {"model": "missing", "input": "x"})
        assert r.status_code == 404 and r.json() == {"error": {
            "message": "The requested model 'missing' with deployment name missing does not exist.",
            "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
        r = post(client, target, {"model": "text-embedding-3-small", "input": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "OperationNotSupported"
        assert post(client, target, {"model": "chat", "input": "x"}).status_code == 200


# --- streaming ----------------------------------------------------------------------------------

def test_stream_event_order_and_sequence_numbers(client, aoai, ctl):
    ctl.config(aoai["url"], answer_words=3)
    r = post(client, aoai, {"model": "gpt-4o", "input": "stream it", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = parse_events(r.content)
    assert [e["type"] for e in events] == TEXT_EVENTS + ["response.output_text.delta"] * 3 + TEXT_TAIL
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    created, in_progress, added, part_added, *deltas = events[:7]
    assert created["response"]["status"] == "in_progress" and created["response"]["output"] == []
    assert created["response"]["usage"] is None and in_progress["response"]["id"] == created["response"]["id"]
    item_id = added["item"]["id"]
    assert added["item"]["status"] == "in_progress" and added["item"]["content"] == [] and added["output_index"] == 0
    assert part_added["part"]["text"] == "" and part_added["item_id"] == item_id
    assert [d["delta"] for d in deltas] == ["Hello! ", "You ", "said:"]
    assert all(d["item_id"] == item_id and d["content_index"] == 0 and d["logprobs"] == [] for d in deltas)
    text_done, part_done, item_done, completed = events[-4:]
    assert text_done["text"] == part_done["part"]["text"] == "Hello! You said:"
    assert item_done["item"]["status"] == "completed"
    final = completed["response"]
    assert final["status"] == "completed" and final["output"] == [item_done["item"]]
    assert final["usage"]["output_tokens"] == 3 and final["usage"]["input_tokens"] == 2
    stored = get(client, aoai, final["id"]).json()
    assert stored == final


def test_sdk_stream_helper_gets_the_final_response(aoai):
    with sdk(aoai).responses.stream(model="gpt-4o", input="helper") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.output_text.startswith("Hello! You said: helper")


def test_chunk_delay_spaces_the_events(client, aoai, ctl):
    ctl.config(aoai["url"], chunk_delay=0.05, answer_words=5)
    arrivals, rid, mid_status = [], None, None
    with client.stream("POST", aoai["url"] + "/openai/v1/responses", headers=aoai["headers"],
                       json={"model": "gpt-4o", "input": "slow", "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                if rid is None:
                    rid = json.loads(line[6:])["response"]["id"]
                    mid_status = get(client, aoai, rid).json()["status"]
    assert len(arrivals) == 13 and arrivals[-1] - arrivals[0] >= 0.5  # 12 gaps of 0.05 s
    assert mid_status == "in_progress"
    assert get(client, aoai, rid).json()["status"] == "completed"


def test_stream_faults_status_and_cut(client, aoai, ctl):
    ctl.fault(aoai["url"], status=429, retry_after=2, match={"path": "/responses", "stream": True})
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(aoai).responses.create(model="gpt-4o", input="x", stream=True)
    assert caught.value.response.headers["retry-after"] == "2" and "Responses" in caught.value.message
    ctl.fault(aoai["url"], cut_after_chunks=3, match={"stream": True})
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", aoai["url"] + "/openai/v1/responses", headers=aoai["headers"],
                           json={"model": "gpt-4o", "input": "cut", "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
    assert [e["sequence_number"] for e in received] == [0, 1, 2]
    rid = received[0]["response"]["id"]
    # the synchronous response ended with its connection ([unconfirmed] status)
    assert get(client, aoai, rid).json()["status"] == "cancelled"
    assert ctl.stats(aoai["url"])["active_streams"] == 0
    assert [rec["status"] for rec in ctl.records(aoai["url"])][:2] == [429, 200]


# --- function calls and conversation state ------------------------------------------------------

def test_function_call_round_trip_with_previous_response_id(aoai, ctl):
    c = sdk(aoai)
    first = c.responses.create(model="gpt-4o", input="What is the weather in Paris?", tools=[WEATHER],
                               tool_choice="required")
    [call] = first.output
    assert call.type == "function_call" and call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "example city"}
    assert first.status == "completed" and first.tools[0].name == "get_weather"
    second = c.responses.create(model="gpt-4o", previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c":21}'}])
    assert second.previous_response_id == first.id
    assert second.output_text.startswith('Tool result: {"temp_c":21}')
    # the conversation so far reached the model: the user turn and the tool result count as input
    assert second.usage.input_tokens == 6 + 1
    with pytest.raises(openai.BadRequestError) as caught:
        c.responses.create(model="gpt-4o", input=[{"type": "function_call_output", "call_id": "call_x", "output": "1"}])
    assert "call_x" in caught.value.message


def test_named_tool_in_prompt_is_called_and_streamed(client, aoai):
    r = post(client, aoai, {"model": "gpt-4o", "input": "please use get_weather", "tools": [WEATHER],
                            "stream": True})
    events = parse_events(r.content)
    types = [e["type"] for e in events]
    n = types.count("response.function_call_arguments.delta")
    assert n > 1 and types == ["response.created", "response.in_progress", "response.output_item.added"] + [
        "response.function_call_arguments.delta"] * n + ["response.function_call_arguments.done",
                                                        "response.output_item.done", "response.completed"]
    added, done = events[2], events[-2]
    assert added["item"]["arguments"] == "" and added["item"]["status"] == "in_progress"
    deltas = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
    assert deltas == events[-3]["arguments"] == done["item"]["arguments"] == '{"city":"example city"}'
    assert all(e["item_id"] == added["item"]["id"] for e in events[3:-2])
    assert events[-1]["response"]["output"] == [done["item"]]


def test_instructions_are_not_carried_over(aoai):
    c = sdk(aoai)
    first = c.responses.create(model="gpt-4o", input="one two", instructions="four words of instructions")
    assert first.usage.input_tokens == 6
    second = c.responses.create(model="gpt-4o", previous_response_id=first.id, input="three")
    # earlier user turn (2) + earlier answer (20) + new turn (1); the instructions are gone
    assert second.usage.input_tokens == 23 and second.instructions is None
    assert second.output_text.startswith("Hello! You said: three")


def test_previous_response_not_found_and_store_false(client, aoai):
    r = post(client, aoai, {"model": "gpt-4o", "input": "x", "previous_response_id": "resp_nope"})
    assert r.status_code == 400 and r.json() == {"error": {
        "message": "Previous response with id 'resp_nope' not found.", "type": "invalid_request_error",
        "param": "previous_response_id", "code": "previous_response_not_found"}}
    unstored = post(client, aoai, {"model": "o3-mini", "input": "x", "store": False}).json()
    assert unstored["store"] is False and unstored["status"] == "completed"
    assert get(client, aoai, unstored["id"]).status_code == 404
    r = post(client, aoai, {"model": "gpt-4o", "input": "x", "previous_response_id": unstored["id"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "previous_response_not_found"
    reasoning = unstored["output"][0]
    r = post(client, aoai, {"model": "o3-mini", "input": [reasoning, {"role": "user", "content": "again"}]})
    assert r.status_code == 400 and r.json()["error"]["message"] == (
        f"Item with id '{reasoning['id']}' not found. Items are not persisted when `store` is set to false. Try again "
        "with `store` set to true, or remove this item from your input.")
    stored = post(client, aoai, {"model": "gpt-4o", "input": "keep me"}).json()
    ref = {"type": "item_reference", "id": stored["output"][0]["id"]}
    r = post(client, aoai, {"model": "gpt-4o", "input": [ref, {"role": "user", "content": "more"}]})
    assert r.status_code == 200 and r.json()["usage"]["input_tokens"] == 20 + 1  # the referenced answer + "more"


def test_retrieve_and_delete(aoai):
    c = sdk(aoai)
    created = c.responses.create(model="gpt-4o", input="keep")
    assert c.responses.retrieve(created.id).model_dump() == created.model_dump()
    raw = c.responses.with_raw_response.delete(created.id)
    assert raw.http_response.status_code == 200
    assert raw.http_response.json() == {"id": created.id, "object": "response", "deleted": True}
    for call in (lambda: c.responses.retrieve(created.id), lambda: c.responses.delete(created.id),
                 lambda: c.responses.cancel(created.id), lambda: c.responses.input_items.list(created.id)):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.body == {"message": f"Response with id '{created.id}' not found.",
                                     "type": "invalid_request_error", "param": None, "code": None}


def test_foreign_id_on_a_second_resource_is_unknown(aoai, ctl):
    created = sdk(aoai).responses.create(model="gpt-4o", input="mine")
    key = aoai["headers"]["api-key"]
    with servers.start(azure_openai.create_app(keys=[key])) as other:
        foreign = openai.OpenAI(base_url=other.url + "/openai/v1/", api_key=key, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            foreign.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            foreign.responses.input_items.list(created.id)
        with pytest.raises(openai.BadRequestError) as caught:
            foreign.responses.create(model="gpt-4o", input="next", previous_response_id=created.id)
        assert caught.value.code == "previous_response_not_found"
        records = httpx.get(other.url + "/_emulator/requests").json()
        assert [(r["method"], r["path"], r["status"]) for r in records] == [
            ("GET", f"/openai/v1/responses/{created.id}", 404),
            ("GET", f"/openai/v1/responses/{created.id}/input_items", 404),
            ("POST", "/openai/v1/responses", 400)]
    assert sdk(aoai).responses.retrieve(created.id).id == created.id
    assert [r["path"] for r in ctl.records(aoai["url"])] == [
        "/openai/v1/responses", f"/openai/v1/responses/{created.id}"]


# --- background mode ----------------------------------------------------------------------------

def test_background_is_queued_then_completes(client, aoai, ctl):
    ctl.config(aoai["url"], background_delay=0.6)
    r = post(client, aoai, {"model": "gpt-4o", "input": "later", "background": True})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "queued" and body["background"] is True
    assert body["output"] == [] and body["usage"] is None
    seen = wait_status(client, aoai, body["id"])
    assert seen == ["queued", "in_progress", "completed"]
    final = get(client, aoai, body["id"]).json()
    assert final["output"][0]["content"][0]["text"].startswith("Hello! You said: later")
    assert final["usage"]["output_tokens"] == 20 and final["completed_at"] >= final["created_at"]
    r = post(client, aoai, {"model": "gpt-4o", "input": "x", "background": True, "store": False})
    assert r.status_code == 400 and r.json()["error"]["param"] == "background"


def test_cancel_background_and_the_cancel_errors(client, aoai, ctl):
    c = sdk(aoai)
    ctl.config(aoai["url"], background_delay=5)
    running = c.responses.create(model="gpt-4o", input="long", background=True)
    cancelled = c.responses.cancel(running.id)
    assert cancelled.status == "cancelled" and cancelled.id == running.id
    assert c.responses.cancel(running.id).status == "cancelled"  # idempotent (§2.3)
    time.sleep(0.1)
    assert c.responses.retrieve(running.id).status == "cancelled"
    sync = c.responses.create(model="gpt-4o", input="sync")
    with pytest.raises(openai.BadRequestError) as caught:
        c.responses.cancel(sync.id)
    assert "background" in caught.value.message
    ctl.config(aoai["url"], background_delay=0)
    done = c.responses.create(model="gpt-4o", input="quick", background=True)
    wait_status(client, aoai, done.id)
    with pytest.raises(openai.BadRequestError):
        c.responses.cancel(done.id)


def test_background_stream_resumes_after_a_cut(client, aoai, ctl):
    ctl.config(aoai["url"], background_delay=0.2, answer_words=4)
    ctl.fault(aoai["url"], cut_after_chunks=3, match={"stream": True})
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", aoai["url"] + "/openai/v1/responses", headers=aoai["headers"],
                           json={"model": "gpt-4o", "input": "resume", "background": True, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
    assert [e["type"] for e in received] == ["response.created", "response.queued", "response.in_progress"]
    assert received[0]["response"]["status"] == "queued"
    rid, last = received[0]["response"]["id"], received[-1]["sequence_number"]
    rest = list(sdk(aoai).responses.retrieve(rid, stream=True, starting_after=last))
    assert [e.sequence_number for e in rest] == list(range(last + 1, last + 1 + len(rest)))
    assert [e.type for e in rest] == TEXT_EVENTS[2:] + ["response.output_text.delta"] * 4 + TEXT_TAIL
    assert rest[-1].response.output_text == "Hello! You said: resume"
    whole = parse_events(get(client, aoai, rid, params={"stream": "true"}).content)
    assert [e["sequence_number"] for e in whole] == list(range(last + 1 + len(rest)))
    sync = post(client, aoai, {"model": "gpt-4o", "input": "x", "stream": True})
    sync_id = parse_events(sync.content)[0]["response"]["id"]
    r = get(client, aoai, sync_id, params={"stream": "true"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


def test_background_delay_knob(client, aoai, ctl):
    assert ctl.config(aoai["url"])["background_delay"] == 0.2
    assert ctl.config(aoai["url"], background_delay=1.5)["background_delay"] == 1.5
    assert client.post(aoai["url"] + "/_emulator/config", json={"background_delay": -1}).status_code == 400
    client.post(aoai["url"] + "/_emulator/reset").raise_for_status()
    assert ctl.config(aoai["url"])["background_delay"] == 0.2


# --- input_items --------------------------------------------------------------------------------

def test_input_items_list_and_pagination(client, aoai):
    conversation = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
                    {"role": "user", "content": [{"type": "input_text", "text": "three"}]}]
    rid = post(client, aoai, {"model": "gpt-4o", "input": conversation}).json()["id"]
    url = f"{aoai['url']}/openai/v1/responses/{rid}/input_items"
    full = client.get(url, headers=aoai["headers"]).json()
    assert full["object"] == "list" and full["has_more"] is False
    texts = [item["content"][0]["text"] for item in full["data"]]
    assert texts == ["three", "two", "one"]  # default order: desc
    assert all(item["id"].startswith("msg_") and item["type"] == "message" for item in full["data"])
    assert [item["content"][0]["type"] for item in full["data"]] == ["input_text", "output_text", "input_text"]
    assert full["first_id"] == full["data"][0]["id"] and full["last_id"] == full["data"][-1]["id"]
    page = client.get(url, params={"limit": 2, "order": "asc"}, headers=aoai["headers"]).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["one", "two"] and page["has_more"] is True
    rest = client.get(url, params={"limit": 2, "order": "asc", "after": page["last_id"]},
                      headers=aoai["headers"]).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["three"] and rest["has_more"] is False
    assert client.get(url, params={"limit": 101}, headers=aoai["headers"]).status_code == 400
    sdk_page = sdk(aoai).responses.input_items.list(rid, order="asc")
    assert [i.id for i in sdk_page.data] == [i["id"] for i in reversed(full["data"])]


# --- faults and records on the other operations -------------------------------------------------

def test_faults_and_records_on_every_operation(client, aoai, ctl):
    rid = post(client, aoai, {"model": "gpt-4o-mini", "input": "x"}).json()["id"]
    ctl.fault(aoai["url"], status=503, match={"deployment": "gpt-4o-mini", "path": "/input_items"})
    r = get(client, aoai, rid, "/input_items")
    assert r.status_code == 503 and r.json()["error"]["code"] == "ServiceUnavailable"
    ctl.fault(aoai["url"], delay=0.3, match={"path": rid})
    start = time.monotonic()
    assert client.delete(f"{aoai['url']}/openai/v1/responses/{rid}", headers=aoai["headers"]).status_code == 200
    assert time.monotonic() - start >= 0.3
    records = ctl.records(aoai["url"])
    assert [(r["method"], r["path"], r["status"]) for r in records] == [
        ("POST", "/openai/v1/responses", 200), ("GET", f"/openai/v1/responses/{rid}/input_items", 503),
        ("DELETE", f"/openai/v1/responses/{rid}", 200)]
    assert records[0]["body"] == {"model": "gpt-4o-mini", "input": "x"}
