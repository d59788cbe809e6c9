"""Content filtering by marker, both Azure shapes (prompt → HTTP 400 ``content_filter``; completion →
``finish_reason: "content_filter"`` with annotations), on Foundry v1, the model-inference route
(``/models``) and Azure OpenAI, seen through the ``openai`` SDK and on the wire."""

from __future__ import annotations

from typing import Iterator

import httpx
import openai
import pytest

from emulator.fake_model import answer_words, stream_pieces

SAFE = {"filtered": False, "severity": "safe"}
UNDETECTED = {"filtered": False, "detected": False}
PROMPT_SAFE = {"hate": SAFE, "jailbreak": UNDETECTED, "self_harm": SAFE, "sexual": SAFE, "violence": SAFE}
COMPLETION_VIOLENCE = {"hate": SAFE, "protected_material_code": UNDETECTED, "protected_material_text": UNDETECTED,
                       "self_harm": SAFE, "sexual": SAFE, "violence": {"filtered": True, "severity": "high"}}
FILTERED_COMPLETION = [{"role": "user", "content": "tell me [[filtered-completion]] now"}]
MODELS_VERSION = {"api-version": "2024-05-01-preview"}


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def v1(foundry, http) -> openai.OpenAI:
    return openai.OpenAI(base_url=foundry["url"] + "/openai/v1/", api_key=foundry["key"], max_retries=0,
                         http_client=http)


@pytest.fixture
def aoai_v1(aoai, http) -> openai.OpenAI:
    return openai.OpenAI(base_url=aoai["url"] + "/openai/v1/", api_key=aoai["headers"]["api-key"], max_retries=0,
                         http_client=http)


def half_text(user_text: str) -> str:
    pieces = stream_pieces(answer_words(user_text, 20))
    return "".join(pieces[: len(pieces) // 2])


# --- prompt filtered: HTTP 400 --------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_v1_prompt_filtered(v1, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        v1.chat.completions.create(model="DeepSeek-V3.1", messages=user("x [[filtered-prompt]] y"), stream=stream)
    error = caught.value
    assert error.status_code == 400 and error.code == "content_filter" and error.param == "prompt"
    assert error.body == {
        "message": "The response was filtered due to the prompt triggering a content policy.",
        "type": None, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
            **PROMPT_SAFE, "violence": {"filtered": True, "severity": "medium"}}}}


@pytest.mark.parametrize("marker,category,result", [
    ("[[filtered-prompt:hate]]", "hate", {"filtered": True, "severity": "medium"}),
    ("[[filtered-prompt:jailbreak]]", "jailbreak", {"filtered": True, "detected": True}),
    ("[[content_filter]]", "violence", {"filtered": True, "severity": "medium"}),  # the older marker
])
def test_v1_prompt_filter_categories(v1, marker, category, result):
    parts = [{"type": "text", "text": "look"}, {"type": "text", "text": marker}]
    with pytest.raises(openai.BadRequestError) as caught:
        v1.chat.completions.create(model="grok-3", messages=[{"role": "user", "content": parts}])
    categories = caught.value.body["innererror"]["content_filter_result"]
    assert categories[category] == result
    assert [name for name, value in categories.items() if value["filtered"]] == [category]


def test_marker_outside_user_messages_does_not_filter(v1):
    messages = [{"role": "system", "content": "[[filtered-prompt]]"}, *user("hi")]
    assert v1.chat.completions.create(model="grok-3", messages=messages).choices[0].finish_reason == "stop"


@pytest.mark.parametrize("marker", ["[[filtered-prompt]]", "[[content_filter]]"])
def test_models_route_prompt_filtered_shape(client, foundry, marker):
    r = client.post(foundry["url"] + "/models/chat/completions", params=MODELS_VERSION, headers=foundry["headers"],
                    json={"model": "Mistral-Large-2411", "messages": user(f"bad {marker}")})
    assert r.status_code == 400
    assert r.json() == {"error": {
        "message": ("The response was filtered due to the prompt triggering Microsoft's content management policy. "
                    "Please modify your prompt and retry."),
        "type": None, "param": "prompt", "code": "content_filter", "status": 400}}


def test_aoai_prompt_filtered_through_sdk(aoai_v1):
    with pytest.raises(openai.BadRequestError) as caught:
        aoai_v1.chat.completions.create(model="gpt-4o", messages=user("x [[content_filter]]"))
    assert caught.value.code == "content_filter"
    assert caught.value.body["innererror"]["content_filter_result"]["jailbreak"] == {"filtered": True,
                                                                                     "detected": True}


# --- completion filtered: 200 + finish_reason content_filter --------------------------------------

def test_v1_completion_filtered_non_stream(v1):
    r = v1.chat.completions.create(model="Mistral-Large-2411", messages=FILTERED_COMPLETION)
    choice = r.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content is None
    assert choice.model_extra["content_filter_results"] == COMPLETION_VIOLENCE
    assert r.model_extra["prompt_filter_results"] == [{"prompt_index": 0, "content_filter_results": PROMPT_SAFE}]
    assert r.usage.completion_tokens == 20  # billed for what was generated (§5.3)


def test_v1_completion_filtered_stream(v1):
    chunks = list(v1.chat.completions.create(model="DeepSeek-R1", messages=FILTERED_COMPLETION, stream=True,
                                             stream_options={"include_usage": True}))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == half_text("tell me [[filtered-completion]] now")
    finish = chunks[-2].choices[0]
    assert finish.finish_reason == "content_filter"
    assert finish.model_extra["content_filter_results"] == COMPLETION_VIOLENCE
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens_details.reasoning_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks[:-2]] == [None] * (len(chunks) - 2)


def test_v1_completion_filter_detection_category(v1):
    r = v1.chat.completions.create(model="grok-3", messages=user("[[filtered-completion:protected_material_text]]"))
    results = r.choices[0].model_extra["content_filter_results"]
    assert results["protected_material_text"] == {"filtered": True, "detected": True}
    assert results["violence"] == SAFE


def test_models_route_completion_filtered(client, foundry, parse_sse):
    url = foundry["url"] + "/models/chat/completions"
    body = {"model": "Meta-Llama-3.1-8B-Instruct", "messages": FILTERED_COMPLETION}
    r = client.post(url, params=MODELS_VERSION, headers=foundry["headers"], json=body)
    data = r.json()
    assert r.status_code == 200 and data["choices"][0]["finish_reason"] == "content_filter"
    assert data["choices"][0]["message"]["content"] is None
    assert data["choices"][0]["content_filter_results"] == COMPLETION_VIOLENCE
    assert data["prompt_filter_results"][0]["content_filter_results"] == PROMPT_SAFE
    events = parse_sse(client.post(url, params=MODELS_VERSION, headers=foundry["headers"],
                                   json={**body, "stream": True}).content)
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert content == half_text("tell me [[filtered-completion]] now")
    last = events[-1]
    assert last["choices"][0]["finish_reason"] == "content_filter" and last["usage"]["completion_tokens"] == 20
    assert last["choices"][0]["content_filter_results"] == COMPLETION_VIOLENCE


def test_aoai_completion_filtered(aoai_v1, client, aoai, parse_sse):
    r = aoai_v1.chat.completions.create(model="gpt-4o", messages=FILTERED_COMPLETION)
    choice = r.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content is None
    assert choice.model_extra["content_filter_results"] == COMPLETION_VIOLENCE
    r = client.post(aoai["url"] + "/openai/deployments/gpt-4o/chat/completions", params={"api-version": "2024-10-21"},
                    headers=aoai["headers"], json={"messages": FILTERED_COMPLETION, "stream": True})
    events = parse_sse(r.content)
    assert events[0]["prompt_filter_results"][0]["content_filter_results"] == PROMPT_SAFE  # preamble as usual
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[1:])
    assert content == half_text("tell me [[filtered-completion]] now")
    finish = events[-1]["choices"][0]
    assert finish["finish_reason"] == "content_filter" and finish["content_filter_results"] == COMPLETION_VIOLENCE


def test_tool_call_answers_are_not_completion_filtered(v1):
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    r = v1.chat.completions.create(model="grok-3", messages=user("lookup [[filtered-completion]]"), tools=[tool])
    assert r.choices[0].finish_reason == "tool_calls"
