"""The access log (DESIGN §12): one JSON record per request on `routing.access`, for every
outcome, with the usage the upstream reported; and usage counted for streams whose client did
not ask for it, without the client seeing a byte of the gateway's own usage request.

Runs against the session gateway (a `python -m routing serve` subprocess) and its log file.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid

import httpx
import pytest

from tests.helpers import GATEWAY_KEY, access_lines, data_events

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
PROMPT = "a prompt whose words must never reach the log"
FIELDS = {"request_id", "consumer", "model", "route", "backend", "operation", "stream", "status",
          "error_code", "attempts", "duration_ms", "ttfb_ms", "prompt_tokens", "completion_tokens",
          "total_tokens", "cached_tokens", "reasoning_tokens", "dropped_params"}
_ids = itertools.count()


def new_id() -> str:
    return f"access-{uuid.uuid4().hex[:12]}-{next(_ids)}"


def record_for(gateway, request_id: str, wait: float = 5.0) -> dict:
    """The one access record of a request, from the gateway's log."""
    deadline = time.monotonic() + wait
    while True:
        found = [json.loads(line) for line in access_lines(gateway.log())
                 if f'"request_id":"{request_id}"' in line]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(found) == 1, f"{len(found)} access records for {request_id}"
    assert set(found[0]) == FIELDS
    return found[0]


def chat(gateway, request_id: str, model: str, headers=None, **body) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                      headers={**AUTH, "x-request-id": request_id, **(headers or {})},
                      json={"model": model, "messages": [{"role": "user", "content": PROMPT}], **body})


USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")


@pytest.mark.parametrize("model, route, backend", [("gpt-4o-key", "GPTKEY", "azure-openai"),
                                                   ("llama3", "LLAMA", "azure-ai")])
def test_json_answer_usage_is_recorded(gateway, clean, model, route, backend):
    request_id = new_id()
    response = chat(gateway, request_id, model)
    assert response.status_code == 200
    record = record_for(gateway, request_id)
    usage = response.json()["usage"]
    assert {k: record[k] for k in USAGE} == {k: usage[k] for k in USAGE}
    assert record["prompt_tokens"] > 0 and record["completion_tokens"] > 0
    assert (record["consumer"], record["model"], record["route"], record["backend"]) == \
        ("default", model, route, backend)
    assert (record["operation"], record["stream"], record["status"], record["error_code"]) == \
        ("chat/completions", False, 200, None)
    assert record["attempts"] == 1 and 0 < record["ttfb_ms"] <= record["duration_ms"]
    assert float(response.headers["x-gateway-overhead-ms"]) < record["duration_ms"]


@pytest.mark.parametrize("model", ["gpt-4o-key", "llama3"])
def test_stream_usage_is_recorded_whether_or_not_the_client_asked(gateway, clean, model):
    asked_id, silent_id = new_id(), new_id()
    asked = chat(gateway, asked_id, model, stream=True, stream_options={"include_usage": True})
    silent = chat(gateway, silent_id, model, stream=True)
    usage_chunks = [e for e in data_events(asked.content) if e.get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
    silent_events = data_events(silent.content)
    assert not any(e.get("usage") and e["choices"] == [] for e in silent_events)  # no usage chunk
    if model == "gpt-4o-key":  # Azure OpenAI sends none unasked; Azure AI's finish chunk has it
        assert not any("usage" in e for e in silent_events)
    expected = {k: usage_chunks[0]["usage"][k] for k in USAGE}
    for request_id in (asked_id, silent_id):
        record = record_for(gateway, request_id)
        assert {k: record[k] for k in USAGE} == expected
        assert (record["stream"], record["status"], record["error_code"]) == (True, 200, None)


def without_call_values(raw: bytes) -> bytes:
    """A stream with its per-call values (id, created) blanked: what two calls share."""
    raw = re.sub(rb'"id": ?"(chatcmpl-)?[A-Za-z0-9]*"', b'"id":""', raw)
    return re.sub(rb'"created": ?\d+', b'"created":0', raw)


def test_the_gateway_s_own_usage_request_is_invisible_to_the_client(gateway, clean, upstreams):
    """Through the gateway (which asks the upstream for usage) the client gets exactly the bytes
    the upstream sends a request without `include_usage`."""
    request_id = new_id()
    through = chat(gateway, request_id, "gpt-4o-key", stream=True)
    sent = [r for r in upstreams["aoai"].requests() if r["body"].get("stream")]
    assert sent[-1]["body"]["stream_options"] == {"include_usage": True}  # the gateway asked
    aoai = upstreams["aoai"]
    direct = httpx.post(aoai.url + "/openai/deployments/gpt-4o/chat/completions",
                        params={"api-version": "2024-10-21"}, headers={"api-key": aoai.key}, timeout=30,
                        json={"model": "gpt-4o", "stream": True,
                              "messages": [{"role": "user", "content": PROMPT}]})
    assert b'"usage"' not in through.content
    assert without_call_values(through.content) == without_call_values(direct.content)
    assert record_for(gateway, request_id)["total_tokens"] > 0


def test_every_outcome_has_one_record(gateway, clean, upstreams):
    cases = []

    def expect(response: httpx.Response, status: int, code: str | None, request_id: str) -> None:
        assert response.status_code == status, response.text
        cases.append((request_id, status, code))

    rid = new_id()
    expect(chat(gateway, rid, "gpt-4o-key", headers={"Authorization": "Bearer wrong-key-0123456789"}),
           401, "invalid_api_key", rid)
    rid = new_id()
    expect(httpx.post(gateway.url + "/v1/chat/completions", content=b'{"model": "gpt-4o", "x": NaN}',
                      headers={**AUTH, "x-request-id": rid, "content-type": "application/json"}),
           400, "invalid_json", rid)
    rid = new_id()
    expect(chat(gateway, rid, "no-such-model"), 404, "model_not_found", rid)
    rid = new_id()
    expect(chat(gateway, rid, "gpt-4o-key", messages="not a list"), 400, "invalid_type", rid)
    upstreams["aoai"].fault(match={"deployment": "gpt-4o"}, status=400, count=1,
                            body={"error": {"message": "bad", "code": "bad_thing", "type": "invalid_request_error"}})
    rid = new_id()
    expect(chat(gateway, rid, "gpt-4o-key"), 400, "bad_thing", rid)
    rid = new_id()
    expect(httpx.get(gateway.url + "/v1/models", headers={**AUTH, "x-request-id": rid}), 200, None, rid)
    for request_id, status, code in cases:
        record = record_for(gateway, request_id)
        assert (record["status"], record["error_code"]) == (status, code), record


def test_a_stream_the_client_leaves_is_recorded_as_499(gateway, clean, upstreams):
    upstreams["aoai"].configure(chunk_delay=0.3, answer_words=20)
    request_id = new_id()
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", timeout=30,
                      headers={**AUTH, "x-request-id": request_id},
                      json={"model": "gpt-4o-key", "stream": True,
                            "messages": [{"role": "user", "content": PROMPT}]}) as response:
        chunks = response.iter_raw()
        next(chunks)
    record = record_for(gateway, request_id)
    assert (record["status"], record["error_code"], record["stream"]) == (499, "client_closed_request", True)
    assert record["total_tokens"] is None  # never reported: the stream did not get that far


def test_no_content_and_no_secret_in_the_access_log(gateway, emulators):
    lines = access_lines(gateway.log())
    assert len(lines) >= 5  # the records of this module's requests
    text = "\n".join(lines)
    assert PROMPT not in text and "prompt whose words" not in text
    for secret in [GATEWAY_KEY, *[k for keys in emulators.keys.values() for k in keys]]:
        assert secret not in text


def test_every_answer_says_the_gateway_s_overhead(gateway, clean):
    answers = [chat(gateway, new_id(), "gpt-4o-key"), chat(gateway, new_id(), "llama3", stream=True),
               chat(gateway, new_id(), "gpt-4o-key", headers={"Authorization": "Bearer nope-0123456789abcdef"}),
               chat(gateway, new_id(), "no-such-model"),
               httpx.get(gateway.url + "/v1/models", headers=AUTH), httpx.get(gateway.url + "/health")]
    for response in answers:
        overhead = float(response.headers["x-gateway-overhead-ms"])
        assert 0 <= overhead < 1000, (response.status_code, overhead)


@pytest.fixture(scope="module")
def impatient(emulators, tmp_path_factory):
    """A gateway whose route gives up after 1 s, for the timeout outcome."""
    from tests.conftest import route
    from tests.helpers import GatewayProcess

    urls, keys = emulators.urls, emulators.keys
    process = GatewayProcess({"GATEWAY_API_KEYS": GATEWAY_KEY, **route(
        "QUICK", model="quick", backend="azure-openai", endpoint=urls["azure_openai"],
        deployment="gpt-4o", api_key=keys["azure_openai"][0], timeout="1")},
        tmp_path_factory.mktemp("impatient"))
    yield process
    process.stop()


def test_upstream_failures_have_their_records(impatient, clean, upstreams):
    aoai = upstreams["aoai"]
    aoai.fault(match={"deployment": "gpt-4o"}, delay=3, count=1)
    timed_out = new_id()
    assert chat(impatient, timed_out, "quick").status_code == 504
    aoai.fault(match={"deployment": "gpt-4o"}, status=429, retry_after=1, count=1)
    limited = new_id()
    assert chat(impatient, limited, "quick").status_code == 429
    time.sleep(1.2)  # the route's cooldown after the 429
    aoai.fault(match={"deployment": "gpt-4o"}, cut_after_chunks=3, count=1)
    cut = new_id()
    response = chat(impatient, cut, "quick", stream=True)
    assert response.status_code == 200 and "error" in data_events(response.content)[-1]
    expected = {timed_out: (504, "upstream_timeout"), limited: (429, "rate_limit_exceeded"),
                cut: (502, "upstream_stream_error")}
    for request_id, outcome in expected.items():
        record = record_for(impatient, request_id)
        assert (record["status"], record["error_code"]) == outcome, record
        assert record["route"] == "QUICK" and record["attempts"] == 1


def test_a_model_name_that_is_a_secret_is_redacted_in_the_record(gateway, emulators):
    """The model name is the record's only client-chosen text (the access log skips the
    log-wide scrub for speed, so the record scrubs it itself)."""
    secret = emulators.keys["azure_openai"][0]
    request_id = new_id()
    response = chat(gateway, request_id, secret)
    assert response.status_code == 404 and secret not in response.text
    record = record_for(gateway, request_id)
    assert record["model"] == "[redacted]"


def test_an_upstream_error_code_echoing_a_key_is_not_logged(gateway, clean, emulators):
    key = emulators.keys["azure_openai"][0]
    clean["aoai"].fault(status=400, body={"error": {"code": key, "message": "bad", "type": "invalid_request_error"}})
    request_id = new_id()
    response = chat(gateway, request_id, "gpt-4o-key")
    assert response.status_code == 400 and key not in response.text
    record = record_for(gateway, request_id)
    assert record["error_code"] == "upstream_error"
    assert key not in gateway.log()
