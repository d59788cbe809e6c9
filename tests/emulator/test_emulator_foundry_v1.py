"""Foundry's OpenAI-compatible v1 endpoint for non-OpenAI models, driven by the real ``openai`` SDK:
per-family chat, streams and usage, tools, structured output, reasoning, Mistral's strict schema,
embeddings, deployments, auth (keys, Entra audiences per route), api-version, faults and records."""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import openai
import pytest

from emulator import azure_ai, issue_token, servers
from emulator.fake_model import answer_words, embedding_vector, stream_pieces

PROJECT = "my-project"
USER = [{"role": "user", "content": "ping"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 2}},
    "required": ["city", "days"]}}}
WEATHER_ARGUMENTS = '{"city":"example city","days":2}'
ASK_WEATHER = [{"role": "user", "content": "call get_weather please"}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
    "type": "object", "properties": {"a": {"type": "string"}, "n": {"type": "integer", "minimum": 3}},
    "required": ["a", "n"], "additionalProperties": False}}}
REASONING = "Okay, the user said: ping lorem ipsum dolor"  # 8 words


def text(user: str = "ping", n: int = 20) -> str:
    return " ".join(answer_words(user, n))


# (deployment, reasoning: None | "field" | "think", tools supported, JSON output supported)
FAMILIES = [
    ("Llama-3.3-70B-Instruct", None, False, False),
    ("Llama-4-Maverick-17B-128E-Instruct-FP8", None, False, False),
    ("Meta-Llama-3.1-8B-Instruct", None, False, False),
    ("Mistral-Large-2411", None, True, True),
    ("mistral-small-2503", None, True, True),
    ("DeepSeek-R1", "field", True, True),
    ("DeepSeek-V3.1", None, True, True),
    ("grok-3", None, True, True),
    ("grok-3-mini", "field", True, True),
    ("Phi-4", None, False, True),
    ("Phi-4-reasoning", "think", False, True),
    ("Kimi-K2.5", "field", True, True),
    ("generic-chat", None, True, True),
]
NAMES = [f[0] for f in FAMILIES]
OPENAI_STREAM_USAGE = [f for f in NAMES if "istral" not in f]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def v1(foundry, http) -> openai.OpenAI:
    return openai.OpenAI(base_url=foundry["url"] + "/openai/v1/", api_key=foundry["key"], max_retries=0,
                         http_client=http)


@pytest.fixture
def project(foundry, http) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{foundry['url']}/api/projects/{PROJECT}/openai/v1", api_key=foundry["key"],
                         max_retries=0, http_client=http)


def collect(stream) -> tuple[list[Any], str, str]:
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    return chunks, content, reasoning


# --- chat per family ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,reasoning,tools_ok,json_ok", FAMILIES)
def test_chat_per_family(v1, name, reasoning, tools_ok, json_ok):
    r = v1.chat.completions.create(model=name, messages=USER)
    assert r.model == name and r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    extra = choice.message.model_extra or {}
    if reasoning == "think":
        assert choice.message.content == f"<think>\n{REASONING}\n</think>\n\n{text()}"
        assert "reasoning_content" not in extra
        assert r.usage.completion_tokens == 20 + 8 + 2
    elif reasoning == "field":
        assert choice.message.content == text() and extra["reasoning_content"] == REASONING
        assert r.usage.completion_tokens == 28 and r.usage.completion_tokens_details.reasoning_tokens == 8
    else:
        assert choice.message.content == text() and "reasoning_content" not in extra
        assert r.usage.completion_tokens == 20 and r.usage.completion_tokens_details is None
    assert r.usage.prompt_tokens == 1 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert "prompt_filter_results" not in (r.model_extra or {}), "no annotations on normal answers"


@pytest.mark.parametrize("name", OPENAI_STREAM_USAGE)
def test_stream_include_usage_per_family(v1, name):
    full = v1.chat.completions.create(model=name, messages=USER)
    chunks, content, reasoning = collect(v1.chat.completions.create(
        model=name, messages=USER, stream=True, stream_options={"include_usage": True}))
    assert content == full.choices[0].message.content
    assert reasoning == ((full.choices[0].message.model_extra or {}).get("reasoning_content") or "")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("name", ["Llama-3.3-70B-Instruct", "Mistral-Large-2411", "DeepSeek-R1"])
def test_stream_without_include_usage_has_usage_on_finish_chunk(v1, name):
    chunks, content, _ = collect(v1.chat.completions.create(model=name, messages=USER, stream=True, max_tokens=12))
    last = chunks[-1]
    assert last.choices[0].finish_reason == "length" and last.usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1]) and all(c.choices for c in chunks)
    assert content == " ".join(answer_words("ping", 4 if name == "DeepSeek-R1" else 12))  # R1: 8 went to reasoning


def test_stream_wire_shape(client, foundry, parse_sse):
    r = client.post(foundry["url"] + "/openai/v1/chat/completions", headers=foundry["headers"],
                    json={"model": "DeepSeek-R1", "messages": USER, "stream": True, "max_completion_tokens": 10})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.content)
    deltas = [e["choices"][0]["delta"] for e in events]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1:9] == [{"reasoning_content": p} for p in stream_pieces(REASONING.split())]
    assert deltas[9:11] == [{"content": "Hello! "}, {"content": "You"}] and deltas[11] == {}
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 10, "total_tokens": 11,
                                   "completion_tokens_details": {"reasoning_tokens": 8}}
    assert {e["object"] for e in events} == {"chat.completion.chunk"} and len({e["id"] for e in events}) == 1


def test_n_choices(v1):
    r = v1.chat.completions.create(model="DeepSeek-V3.1", messages=USER, n=2)
    assert [c.index for c in r.choices] == [0, 1] and r.usage.completion_tokens == 40


# --- reasoning ------------------------------------------------------------------------------------

def test_reasoning_budget_covers_reasoning_first(v1):
    r = v1.chat.completions.create(model="DeepSeek-R1", messages=USER, max_completion_tokens=5)
    choice = r.choices[0]
    assert choice.finish_reason == "length" and choice.message.content == ""
    assert choice.message.model_extra["reasoning_content"] == "Okay, the user said: ping"
    assert r.usage.completion_tokens == 5 and r.usage.completion_tokens_details.reasoning_tokens == 5


@pytest.mark.parametrize("name,param,value", [
    ("DeepSeek-R1", "temperature", 0.2), ("DeepSeek-R1", "top_p", 0.9), ("DeepSeek-R1", "presence_penalty", 0.5),
    ("grok-3-mini", "stop", ["x"]), ("grok-3-mini", "frequency_penalty", 0.1),
])
def test_reasoning_models_reject_sampling_params(v1, name, param, value):
    with pytest.raises(openai.BadRequestError) as caught:
        v1.chat.completions.create(model=name, messages=USER, **{param: value})
    assert caught.value.body == {"message": f"Unsupported parameter: '{param}' is not supported with this model.",
                                 "type": "invalid_request_error", "param": param, "code": "unsupported_parameter"}
    assert v1.chat.completions.create(model="grok-3", messages=USER, **{param: value}).choices[0].finish_reason == "stop"


# --- tools ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [f[0] for f in FAMILIES if f[2]])
def test_tool_calls_where_supported(v1, name):
    r = v1.chat.completions.create(model=name, messages=ASK_WEATHER, tools=[WEATHER])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == WEATHER_ARGUMENTS
    assert call.id.startswith("call_")
    chunks, _, _ = collect(v1.chat.completions.create(model=name, messages=ASK_WEATHER, tools=[WEATHER], stream=True))
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert pieces[0].function.name == "get_weather" and pieces[0].id.startswith("call_")
    assert "".join(p.function.arguments or "" for p in pieces) == WEATHER_ARGUMENTS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_result_round_trip(v1):
    first = v1.chat.completions.create(model="grok-3", messages=ASK_WEATHER, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    messages = [*ASK_WEATHER, first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = v1.chat.completions.create(model="grok-3", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content.startswith("Tool result: sunny")


@pytest.mark.parametrize("name", [f[0] for f in FAMILIES if not f[2]])
def test_tools_unsupported_error(v1, client, foundry, name):
    with pytest.raises(openai.BadRequestError) as caught:
        v1.chat.completions.create(model=name, messages=ASK_WEATHER, tools=[WEATHER])
    assert caught.value.status_code == 400
    r = client.post(foundry["url"] + "/openai/v1/chat/completions", headers=foundry["headers"],
                    json={"model": name, "messages": ASK_WEATHER, "tools": [WEATHER]})
    assert r.json() == {"error": {
        "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
        "type": "BadRequestError", "param": None, "code": 400}}


# --- structured output ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [f[0] for f in FAMILIES if f[3] and f[1] != "think"])
def test_structured_output(v1, name):
    r = v1.chat.completions.create(model=name, messages=USER, response_format=SCHEMA)
    assert json.loads(r.choices[0].message.content) == {"a": "example a", "n": 3}
    r = v1.chat.completions.create(model=name, messages=USER, response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content) == {"answer": text()}


def test_structured_output_inside_think_block(v1):
    content = v1.chat.completions.create(model="Phi-4-reasoning", messages=USER,
                                         response_format=SCHEMA).choices[0].message.content
    assert json.loads(content.split("</think>\n\n", 1)[1]) == {"a": "example a", "n": 3}


@pytest.mark.parametrize("name", [f[0] for f in FAMILIES if not f[3]])
def test_structured_output_unsupported_by_llama(v1, name):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        v1.chat.completions.create(model=name, messages=USER, response_format=SCHEMA)
    assert caught.value.response.json() == {
        "status": 422, "code": "parameter_not_supported", "detail": {"loc": ["body", "response_format"],
                                                                    "input": "json_schema"},
        "message": "One of the parameters contain invalid values."}


# --- Mistral's strict schema ----------------------------------------------------------------------

def detail_of(exc: openai.APIStatusError) -> list[dict[str, Any]]:
    assert exc.status_code == 422 and exc.body["code"] == "Invalid input" and exc.body["status"] == 422
    return json.loads(exc.body["message"])["detail"]


def forbidden(loc: list[Any], value: Any) -> dict[str, Any]:
    return {"type": "extra_forbidden", "loc": loc, "msg": "Extra inputs are not permitted", "input": value,
            "url": "https://errors.pydantic.dev/2.10/v/extra_forbidden"}


@pytest.mark.parametrize("name", ["Mistral-Large-2411", "mistral-small-2503"])
def test_mistral_422_on_user(v1, name):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        v1.chat.completions.create(model=name, messages=USER, user="u-1")
    assert detail_of(caught.value) == [forbidden(["body", "user"], "u-1")]


def test_mistral_extras_listed_in_body_order(client, foundry):
    body = {"seed": 7, "model": "Mistral-Large-2411", "messages": USER, "parallel_tool_calls": False,
            "logprobs": True, "max_completion_tokens": 5, "random_seed": 7, "safe_prompt": True}
    r = client.post(foundry["url"] + "/openai/v1/chat/completions", headers=foundry["headers"], json=body)
    assert r.status_code == 422 and r.headers["x-ms-error-code"] == "Invalid input"
    detail = json.loads(r.json()["error"]["message"])["detail"]
    assert [d["loc"][1] for d in detail] == ["seed", "parallel_tool_calls", "logprobs", "max_completion_tokens"]


def test_mistral_rejects_include_usage_and_replayed_reasoning(v1):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        list(v1.chat.completions.create(model="mistral-small-2503", messages=USER, stream=True,
                                        stream_options={"include_usage": True}))
    assert detail_of(caught.value) == [forbidden(["body", "stream_options", "include_usage"], True)]
    history = [*USER, {"role": "assistant", "content": "hi", "reasoning_content": "thinking"}, *USER]
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        v1.chat.completions.create(model="Mistral-Large-2411", messages=history)
    assert detail_of(caught.value) == [forbidden(["body", "messages", 1, "assistant", "reasoning_content"], "thinking")]


def test_other_families_reject_unknown_parameters_openai_style(v1):
    with pytest.raises(openai.BadRequestError) as caught:
        v1.chat.completions.create(model="DeepSeek-V3.1", messages=USER, extra_body={"top_k": 5})
    assert caught.value.body == {"message": "Unknown parameter: 'top_k'.", "type": "invalid_request_error",
                                 "param": "top_k", "code": "unknown_parameter"}
    assert v1.chat.completions.create(model="DeepSeek-V3.1", messages=USER, user="u", seed=1,
                                      parallel_tool_calls=False).choices[0].finish_reason == "stop"


# --- embeddings, deployments, models --------------------------------------------------------------

def test_cohere_embeddings(v1):
    r = v1.embeddings.create(model="Cohere-embed-v3-english", input=["a", "b c"])  # SDK asks for base64
    assert [d.index for d in r.data] == [0, 1] and r.model == "Cohere-embed-v3-english"
    assert r.data[1].embedding == embedding_vector("b c") and r.usage.prompt_tokens == 3
    r = v1.embeddings.create(model="cohere-embed-v3-english", input="x", dimensions=4, encoding_format="float")
    assert r.data[0].embedding == embedding_vector("x", 4)


def test_operation_and_deployment_mismatches(v1):
    with pytest.raises(openai.BadRequestError) as caught:
        v1.chat.completions.create(model="Cohere-embed-v3-english", messages=USER)
    assert caught.value.code == "OperationNotSupported"
    assert "chatCompletion operation does not work with the specified model, Cohere-embed-v3-english" in \
        caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        v1.embeddings.create(model="grok-3", input="x")
    assert caught.value.code == "OperationNotSupported"


def test_unknown_and_missing_deployment(v1, client, foundry):
    with pytest.raises(openai.NotFoundError) as caught:
        v1.chat.completions.create(model="gpt-99", messages=USER)
    assert caught.value.response.json() == {"error": {"code": "DeploymentNotFound", "message": (
        "The API deployment for this resource does not exist. If you created the deployment within the last "
        "5 minutes, please wait a moment and try again.")}}
    r = client.post(foundry["url"] + "/openai/v1/chat/completions", headers=foundry["headers"], json={"messages": USER})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_required_parameter"
    assert v1.chat.completions.create(model="deepseek-r1", messages=USER).model == "DeepSeek-R1"


def test_models_list_and_retrieve(v1, project):
    listed = {m.id: m.owned_by for m in v1.models.list()}
    assert listed["Llama-3.3-70B-Instruct"] == "Meta" and listed["grok-3-mini"] == "xAI"
    assert set(NAMES) | {"Cohere-embed-v3-english"} == set(listed)
    assert project.models.retrieve("Mistral-Large-2411").owned_by == "Mistral AI"
    with pytest.raises(openai.NotFoundError):
        v1.models.retrieve("gpt-99")


def test_project_form_serves_the_same_handlers(project, foundry, ctl):
    assert project.chat.completions.create(model="DeepSeek-V3.1", messages=USER).choices[0].message.content == text()
    assert len(project.embeddings.create(model="Cohere-embed-v3-english", input="x").data) == 1
    paths = [rec["path"] for rec in ctl.records(foundry["url"])]
    assert paths == [f"/api/projects/{PROJECT}/openai/v1/chat/completions",
                     f"/api/projects/{PROJECT}/openai/v1/embeddings"]


def test_projects_option_limits_project_names():
    app = azure_ai.create_app("foundry", keys=["k"], projects=["p1"])
    with servers.start(app) as server, httpx.Client() as c:
        body = {"model": "grok-3", "messages": USER}
        ok = c.post(server.url + "/api/projects/p1/openai/v1/chat/completions", json=body, headers={"api-key": "k"})
        missing = c.post(server.url + "/api/projects/p2/openai/v1/chat/completions", json=body,
                         headers={"api-key": "k"})
        assert ok.status_code == 200 and missing.status_code == 404


# --- auth and api-version -------------------------------------------------------------------------

def entra_token(client, emus, resource: str) -> str:
    r = client.get(emus.urls["identity"], params={"api-version": "2019-08-01", "resource": resource},
                   headers={"X-IDENTITY-HEADER": emus.identity_header})
    assert r.status_code == 200
    return r.json()["access_token"]


def test_key_auth_forms(client, foundry, http):
    url = foundry["url"] + "/openai/v1/chat/completions"
    body = {"model": "grok-3", "messages": USER}
    assert client.post(url, json=body, headers={"api-key": foundry["key"]}).status_code == 200
    assert client.post(url, json=body, headers={"authorization": f"Bearer {foundry['key']}"}).status_code == 200
    for headers in ({"api-key": "wrong"}, {"authorization": "Bearer wrong"}, {}):
        r = client.post(url, json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "401"
    bad = openai.OpenAI(base_url=foundry["url"] + "/openai/v1/", api_key="wrong", max_retries=0, http_client=http)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="grok-3", messages=USER)


@pytest.mark.parametrize("resource,on_resource,on_project", [
    ("https://ai.azure.com", True, True),
    ("https://cognitiveservices.azure.com", True, False),
    ("https://ml.azure.com", False, False),
])
def test_entra_token_audiences(client, emus, foundry, http, resource, on_resource, on_project):
    token = entra_token(client, emus, resource)
    for base, allowed, audiences in (
            ("/openai/v1/", on_resource, "https://cognitiveservices.azure.com or https://ai.azure.com"),
            (f"/api/projects/{PROJECT}/openai/v1/", on_project, "https://ai.azure.com")):
        sdk = openai.OpenAI(base_url=foundry["url"] + base, api_key=token, max_retries=0, http_client=http)
        if allowed:
            assert sdk.chat.completions.create(model="Kimi-K2.5", messages=USER).choices[0].message.content == text()
            continue
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="Kimi-K2.5", messages=USER)
        assert caught.value.response.json() == {"statusCode": 401, "message": (
            f"Unauthorized. Access token is missing, invalid, audience is incorrect ({audiences}), or have expired.")}


def test_expired_token_and_project_keys_option(client, foundry):
    expired = issue_token(audience="https://ai.azure.com", lifetime=-10)
    r = client.post(foundry["url"] + "/openai/v1/chat/completions", headers={"authorization": f"Bearer {expired}"},
                    json={"model": "grok-3", "messages": USER})
    assert r.status_code == 401 and r.json()["statusCode"] == 401
    app = azure_ai.create_app("foundry", keys=["k"], project_keys=False)
    with servers.start(app) as server, httpx.Client() as c:
        body = {"model": "grok-3", "messages": USER}
        assert c.post(server.url + "/openai/v1/chat/completions", json=body, headers={"api-key": "k"}).status_code == 200
        r = c.post(server.url + "/api/projects/p/openai/v1/chat/completions", json=body, headers={"api-key": "k"})
        assert r.status_code == 401
        token = issue_token(audience="https://ai.azure.com/.default")
        r = c.post(server.url + "/api/projects/p/openai/v1/chat/completions", json=body,
                   headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200


def test_api_version_optional_v1_and_preview_accepted(client, foundry):
    url = foundry["url"] + "/openai/v1/chat/completions"
    body = {"model": "grok-3", "messages": USER}
    for version in ("v1", "preview"):
        assert client.post(url, json=body, headers=foundry["headers"], params={"api-version": version}).status_code == 200
    r = client.post(url, json=body, headers=foundry["headers"], params={"api-version": "2024-10-21"})
    assert r.status_code == 400 and "2024-10-21" in r.json()["error"]["message"]


# --- faults and records ---------------------------------------------------------------------------

def test_faults_and_records_apply(v1, foundry, ctl):
    ctl.fault(foundry["url"], match={"deployment": "DeepSeek-R1", "path": "/openai/v1/"}, status=429, retry_after=3)
    assert v1.chat.completions.create(model="grok-3", messages=USER).choices  # other deployment unaffected
    with pytest.raises(openai.RateLimitError) as caught:
        v1.chat.completions.create(model="DeepSeek-R1", messages=USER)
    assert caught.value.response.headers["retry-after"] == "3"
    ctl.fault(foundry["url"], match={"stream": True}, cut_after_chunks=3)
    with pytest.raises(openai.APIError):
        collect(v1.chat.completions.create(model="grok-3", messages=USER, stream=True))
    records = ctl.records(foundry["url"])
    assert [(r["path"], r["status"], r["body"]["model"]) for r in records] == [
        ("/openai/v1/chat/completions", 200, "grok-3"), ("/openai/v1/chat/completions", 429, "DeepSeek-R1"),
        ("/openai/v1/chat/completions", 200, "grok-3")]
    assert records[0]["headers"]["authorization"] == f"Bearer {foundry['key']}"


def test_chunk_delay_fault_on_v1_stream(v1, foundry, ctl):
    ctl.fault(foundry["url"], chunk_delay=0.01)
    chunks, content, _ = collect(v1.chat.completions.create(model="Phi-4", messages=USER, stream=True))
    assert content == text() and chunks[-1].usage.completion_tokens == 20
