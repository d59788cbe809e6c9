"""Streaming: relayed as it arrives, honest about failures, cancelled with the client."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.helpers import GATEWAY_KEY, sse_events

pytestmark = pytest.mark.usefixtures("clean")
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
USER = [{"role": "user", "content": "count slowly please"}]


@pytest.mark.parametrize("model, upstream", [("llama3", "serverless"), ("gpt-4o-key", "aoai")])
def test_stream_is_not_buffered(gateway, upstreams, model, upstream):
    upstreams[upstream].configure(chunk_delay=0.15, answer_words=10)
    arrivals = []
    start = time.monotonic()
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": model, "messages": USER, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for _ in response.iter_raw():
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) >= 8, "chunks were merged"
    total = arrivals[-1]
    assert total >= 1.2
    # The first content arrives long before the last: nothing waits for the whole answer.
    assert arrivals[0] < total - 1.0


def test_stream_framing_is_strict(gateway):
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH,
                          json={"model": "gpt-4o", "messages": USER, "stream": True})
    events = sse_events(response.content)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert not any(line.startswith(":") for line in response.text.splitlines())


@pytest.mark.parametrize("model, upstream", [("llama3", "serverless"), ("gpt-4o-key", "aoai")])
def test_mid_stream_cut_ends_with_error_event(gateway, upstreams, model, upstream):
    upstreams[upstream].fault(cut_after_chunks=3)
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH,
                          json={"model": model, "messages": USER, "stream": True})
    events = sse_events(response.content)
    assert "[DONE]" not in events
    assert events[-1].startswith('{"error"') and sum(e.startswith('{"error"') for e in events) == 1
    assert len(upstreams[upstream].requests()) == 1  # no retry after the first byte

    upstreams[upstream].fault(cut_after_chunks=3)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=model, messages=USER, stream=True):
            pass


def test_client_disconnect_cancels_upstream(gateway, upstreams):
    upstreams["serverless"].configure(chunk_delay=0.3, answer_words=40)
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": "llama3", "messages": USER, "stream": True}) as response:
        chunks = response.iter_raw()  # keep a reference: collecting it would close the stream
        next(chunks)
        assert upstreams["serverless"].stats()["active_streams"] == 1
    deadline = time.monotonic() + 5
    while upstreams["serverless"].stats()["active_streams"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert upstreams["serverless"].stats()["active_streams"] == 0, "upstream stream still running"


@pytest.mark.parametrize("stream", [False, True])
def test_client_leaving_before_first_byte_cancels_upstream(gateway, upstreams, stream):
    aoai = upstreams["aoai"]
    aoai.fault(match={"deployment": "gpt-35-turbo-instruct"}, delay=20)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + "/v1/completions", headers=AUTH, timeout=1,
                   json={"model": "gpt-35-turbo-instruct", "prompt": "x", "stream": stream})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [r for r in aoai.requests() if r["status"] == 499]:
        time.sleep(0.1)
    # The emulator records a hung request as 499 once its caller (the gateway) hangs up.
    assert [r["status"] for r in aoai.requests()] == [499]
