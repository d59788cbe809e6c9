"""Hostile upstreams (DESIGN §8): every bound holds against an upstream that misbehaves on
purpose. A scripted raw-socket upstream (tests/hostile_upstream.py) answers each deployment
with one misbehaviour; the gateway runs as `python -m routing serve` in a subprocess, so its CPU
time and peak memory are read from /proc for it alone."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from routing.upstream.sse_events import EventSplitter, event_payloads
from tests.conftest import route
from tests.helpers import GATEWAY_KEY, GatewayProcess, data_events, sse_events
from tests.hostile_upstream import (HostileUpstream, chat_answer, chat_chunk, healthy, head, paced, respond,
                                    respond_generated, respond_json, sse_body)

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
USER = [{"role": "user", "content": "x"}]
ROUTE_KEY = "hostile-route-key-0123456789abcdef"
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
HUGE = 200 * 1024 * 1024
BIG_EVENT_TEXT = 4 * 1024 * 1024 - 16 * 1024  # one event near MAX_EVENT_BYTES: the worst case
SLOW_TIMEOUT = 0.5  # ROUTE__BREAKSLOW__TIMEOUT
COOLDOWN = 1.0  # GATEWAY_COOLDOWN
SLOW = {"slow": True}  # the breaker test switches its deployment between slow and fast


def echoes(request) -> str:
    """What an echoing upstream reflects: the request's credential (and, as if it had learned
    it, an inbound key of the gateway)."""
    return f"key={request.key} inbound={GATEWAY_KEY}"


async def echo_400(request, writer):
    body = {"error": {"message": f"bad request, headers were {echoes(request)}", "type": "invalid_request_error",
                      "param": None, "code": "bad_thing", "status": 400,
                      "innererror": {"code": "Echo", "request_headers": request.headers, "note": echoes(request)},
                      "debug": {"received": echoes(request)}}}
    await respond_json(writer, 400, body, {"x-ratelimit-remaining-tokens": request.key,
                                           "x-ratelimit-remaining-requests": "12",
                                           "x-ratelimit-limit-tokens": "1e9; " + request.key})


async def echo_200(request, writer):
    await respond_json(writer, 200, chat_answer(f"you sent {echoes(request)}"),
                       {"x-ratelimit-remaining-tokens": request.key})


async def echo_stream(request, writer):
    await respond(writer, 200, {"content-type": "text/event-stream", "x-ratelimit-remaining-requests": request.key},
                  sse_body(chat_chunk("first "), chat_chunk(echoes(request)), "[DONE]"))


CONTENT_FILTER_BODY = {"error": {
    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
               "policy. Please modify your prompt and retry.",
    "type": None, "param": "prompt", "code": "content_filter", "status": 400,
    "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
        "hate": {"filtered": False, "severity": "safe"}, "jailbreak": {"filtered": True, "detected": True},
        "self_harm": {"filtered": False, "severity": "safe"}, "sexual": {"filtered": False, "severity": "safe"},
        "violence": {"filtered": False, "severity": "safe"},
        "custom_blocklists": [{"filtered": True, "id": "raiBlocklistName"}]}}}}


async def content_filter(request, writer):
    await respond_json(writer, 400, CONTENT_FILTER_BODY)


async def html_200(request, writer):
    await respond(writer, 200, {"content-type": "text/html"}, b"<html><body>Welcome to nginx!</body></html>")


async def json_200(request, writer):
    await respond_json(writer, 200, chat_answer("not a stream"))


async def bad_json_first(request, writer):
    await respond(writer, 200, {"content-type": "text/event-stream"}, b"data: {not json\n\ndata: [DONE]\n\n")


async def bad_json_later(request, writer):
    writer.write(head(200, {"content-type": "text/event-stream"}) + sse_body(chat_chunk("fine so far")))
    await writer.drain()
    await asyncio.sleep(0.2)  # the first event is with the client by now
    writer.write(b"data: {not json\n\n" + sse_body(chat_chunk("x"), "[DONE]"))
    await writer.drain()


async def error_event(request, writer):
    error = {"error": {"message": f"The server had an error ({echoes(request)})", "type": "server_error",
                       "param": None, "code": "server_error", "trace": request.headers}}
    await respond(writer, 200, {"content-type": "text/event-stream"},
                  sse_body(chat_chunk("partial"), error, chat_chunk("after the error"), "[DONE]"))


async def huge_length(request, writer):
    await respond_generated(writer, HUGE, chunked=False, length=HUGE)


async def huge_chunked(request, writer):
    await respond_generated(writer, HUGE, chunked=True)


async def huge_eof(request, writer):
    await respond_generated(writer, HUGE, chunked=False)  # close-delimited: no length at all


async def slow(request, writer):
    if SLOW["slow"]:
        await asyncio.sleep(5)
    await healthy(request, writer)


UNPROCESSABLE = {
    "azure_ai_422": {"status": 422, "code": "parameter_not_supported",
                     "detail": {"loc": ["body", "response_format"], "input": "json_object"},
                     "message": "One of the parameters contain invalid values."},
    "pydantic_422": {"detail": [{"type": "extra_forbidden", "loc": ["body", "user"],
                                 "msg": "Extra inputs are not permitted", "input": "u1"}]},
    "foundry_422": {"error": {"code": "Invalid input", "status": 422, "message": json.dumps({"detail": [
        {"type": "extra_forbidden", "loc": ["body", "stream_options", "include_usage"],
         "msg": "Extra inputs are not permitted", "input": True}]})}},
}


def unprocessable(body):
    async def script(request, writer):
        await respond_json(writer, 422, body)
    return script


SCRIPTS = {
    "healthy": healthy, "echo_400": echo_400, "echo_200": echo_200, "echo_stream": echo_stream,
    "content_filter": content_filter, "html_200": html_200, "json_200": json_200,
    "bad_json_first": bad_json_first, "bad_json_later": bad_json_later, "error_event": error_event,
    "huge_length": huge_length, "huge_chunked": huge_chunked, "huge_eof": huge_eof, "slow": slow,
    "big_stream": paced(sse_body(chat_chunk("a"), chat_chunk("b" * BIG_EVENT_TEXT), chat_chunk("c"), "[DONE]"),
                        piece=1024, pause=0.0005),
    **{name: unprocessable(body) for name, body in UNPROCESSABLE.items()},
}
SOLO = ("healthy", "echo_400", "echo_200", "echo_stream", "content_filter", "big_stream", "huge_length",
        "huge_chunked", "huge_eof", "bad_json_later", "error_event", *UNPROCESSABLE)
# model → deployments in priority order (a pool when more than one)
POOLS = {
    "html-pool": ("html_200", "healthy"), "html-solo": ("html_200",),
    "bad-first-pool": ("bad_json_first", "healthy"), "bad-first-solo": ("bad_json_first",),
    "json-for-stream-pool": ("json_200", "healthy"),
    "breaker": ("slow", "healthy"),
}


def settings(upstream: HostileUpstream) -> dict[str, str]:
    common = {"backend": "azure-openai", "endpoint": upstream.url, "api_key": ROUTE_KEY}
    values = {"GATEWAY_API_KEYS": GATEWAY_KEY, "GATEWAY_COOLDOWN": str(COOLDOWN),
              "GATEWAY_MAX_RESPONSE_BYTES": str(MAX_RESPONSE_BYTES), "GATEWAY_STREAM_IDLE_TIMEOUT": "5",
              "GATEWAY_TOTAL_TIMEOUT": "30"}
    for name in SOLO:
        values.update(route(name.upper(), model=name, deployment=name, **common))
    for model, deployments in POOLS.items():
        for priority, deployment in enumerate(deployments, start=1):
            route_id = (model + "_" + deployment).upper().replace("-", "_")
            values.update(route(route_id, model=model, deployment=deployment, priority=str(priority),
                                **({"timeout": str(SLOW_TIMEOUT)} if deployment == "slow" else {}), **common))
    return values


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    upstream = HostileUpstream(SCRIPTS).start()
    gateway = GatewayProcess(settings(upstream), tmp_path_factory.mktemp("hostile"))
    yield gateway, upstream
    gateway.stop()
    upstream.stop()


def chat(gateway, model: str, **body) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, timeout=60,
                      json={"model": model, "messages": USER, **body})


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def memory(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of a process, in bytes."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def reset_peak_rss(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS, so the next peak is this request's alone


def raw_exchange(url: str, body: dict) -> bytes:
    """The client's bytes exactly as the gateway sent them: status line, headers, body."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {parts.netloc}\r\n"
               f"authorization: Bearer {GATEWAY_KEY}\r\ncontent-type: application/json\r\n"
               f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n").encode() + payload
    received = bytearray()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
            assert len(received) < 16 * 1024 * 1024
    return bytes(received)


# --- bounds on work and memory -------------------------------------------------------------

def test_4mib_stream_in_1kib_pieces_costs_linear_cpu(hostile):
    gateway, _ = hostile
    assert chat(gateway, "healthy", stream=True).status_code == 200  # warm: imports, connections
    pid = gateway.process.pid
    before = cpu_seconds(pid)
    response = chat(gateway, "big_stream", stream=True)
    spent = cpu_seconds(pid) - before
    chunks = data_events(response.content)
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["a", "b" * BIG_EVENT_TEXT, "c"]
    assert sse_events(response.content)[-1] == "[DONE]"
    # Quadratic reassembly spent ~2.2 s here; the linear relay ~0.3 s (mostly the event loop's
    # cost per read of 1 KiB).
    assert spent < 1.0, f"the gateway spent {spent:.2f} s CPU on one 4 MiB stream"


@pytest.mark.parametrize("model", ["huge_length", "huge_chunked", "huge_eof"])
def test_huge_answer_is_502_holding_no_more_than_the_limit(hostile, model):
    gateway, _ = hostile
    pid = gateway.process.pid
    reset_peak_rss(pid)
    resident = memory(pid, "VmRSS")
    start = time.monotonic()
    response = chat(gateway, model)
    assert response.status_code == 502, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "upstream_response_too_large" and str(MAX_RESPONSE_BYTES) in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert time.monotonic() - start < 10
    grown = memory(pid, "VmHWM") - resident
    # The body is 200 MB (reading it whole took ~570 MiB); the limit is 8 MiB.
    assert grown < 48 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.0f} MiB"


# --- secrets echoed by the upstream ----------------------------------------------------------

@pytest.mark.parametrize("model, stream", [("echo_400", False), ("echo_200", False), ("echo_stream", True)])
def test_an_echoed_key_never_reaches_the_client(hostile, model, stream):
    gateway, upstream = hostile
    raw = raw_exchange(gateway.url, {"model": model, "messages": USER, "stream": stream})
    assert raw.startswith(b"HTTP/1.1 ")
    assert ROUTE_KEY.encode() not in raw and GATEWAY_KEY.encode() not in raw.split(b"\r\n\r\n", 1)[1]
    assert upstream.calls[-1].key == ROUTE_KEY  # the upstream did get the key, and echoed it

    response = chat(gateway, model, stream=stream)
    assert ROUTE_KEY not in response.text and ROUTE_KEY not in str(response.headers)
    assert "x-ratelimit-remaining-tokens" not in response.headers
    if model == "echo_400":
        assert response.status_code == 400
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code", "innererror"}
        assert error["innererror"] == {"code": "Echo"}  # no echoed headers, no unknown fields
        assert error["code"] == "bad_thing" and "[redacted]" in error["message"]
        assert response.headers["x-ratelimit-remaining-requests"] == "12"  # well-formed: kept
        assert "x-ratelimit-limit-tokens" not in response.headers
    elif model == "echo_200":
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert "key=[redacted] inbound=[redacted]" in response.json()["choices"][0]["message"]["content"]
    else:
        assert "x-ratelimit-remaining-requests" not in response.headers
        text = "".join(c["choices"][0]["delta"]["content"] for c in data_events(response.content))
        assert text == "first key=[redacted] inbound=[redacted]"
    assert ROUTE_KEY not in gateway.log()


def test_content_filter_details_still_reach_the_client(hostile):
    gateway, _ = hostile
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="content_filter", messages=USER)
    error = raised.value
    assert error.code == "content_filter" and error.param == "prompt"
    assert error.body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error.body["innererror"]["content_filter_result"] == \
        CONTENT_FILTER_BODY["error"]["innererror"]["content_filter_result"]
    assert "status" not in error.body


# --- upstream protocol errors ----------------------------------------------------------------

def test_html_success_fails_over_and_alone_is_a_protocol_error(hostile):
    gateway, upstream = hostile
    response = chat(gateway, "html-pool")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert (response.headers["x-gateway-route"], response.headers["x-gateway-attempts"]) == \
        ("HTML_POOL_HEALTHY", "2")
    response = chat(gateway, "html-solo")
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_protocol_error"
    assert "Welcome to nginx" not in response.text


def test_first_event_not_json_fails_over_and_alone_is_a_protocol_error(hostile):
    gateway, _ = hostile
    response = chat(gateway, "bad-first-pool", stream=True)
    assert response.headers["x-gateway-route"] == "BAD_FIRST_POOL_HEALTHY"
    assert sse_events(response.content)[-1] == "[DONE]"
    response = chat(gateway, "bad-first-solo", stream=True)
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_protocol_error"


def test_event_not_json_after_the_first_byte_ends_the_stream_with_an_error(hostile):
    gateway, _ = hostile
    response = chat(gateway, "bad_json_later", stream=True)
    assert response.status_code == 200
    events = sse_events(response.content)
    assert "[DONE]" not in events and len(events) == 2
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "fine so far"
    assert json.loads(events[1])["error"]["code"] == "upstream_protocol_error"
    assert "{not json" not in response.text


def test_upstream_error_event_ends_the_stream_openai_shaped(hostile):
    gateway, _ = hostile
    response = chat(gateway, "error_event", stream=True)
    events = sse_events(response.content)
    assert "[DONE]" not in events and len(events) == 2  # nothing after the error is relayed
    error = json.loads(events[1])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("server_error", "server_error")
    assert error["message"] == "The server had an error (key=[redacted] inbound=[redacted])"
    assert ROUTE_KEY not in response.text


def test_json_answer_to_a_stream_request_fails_over(hostile):
    gateway, _ = hostile
    response = chat(gateway, "json-for-stream-pool", stream=True)
    assert response.headers["x-gateway-route"] == "JSON_FOR_STREAM_POOL_HEALTHY"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse_events(response.content)[-1] == "[DONE]"


# --- one caller cannot rest a deployment for everyone ----------------------------------------

def test_single_timeouts_fail_over_and_consecutive_ones_open_the_breaker(hostile):
    gateway, upstream = hostile

    def served_by() -> str:
        response = chat(gateway, "breaker")
        assert response.status_code == 200
        return response.headers["x-gateway-route"]

    SLOW["slow"] = True
    try:
        calls = upstream.called("slow")
        for n in (1, 2, 3):  # GATEWAY_BREAKER_TIMEOUTS defaults to 3
            assert served_by() == "BREAKER_HEALTHY"
            assert upstream.called("slow") == calls + n  # still tried: one timeout rests nothing
        assert served_by() == "BREAKER_HEALTHY"
        assert upstream.called("slow") == calls + 3  # third in a row: the breaker is open
        time.sleep(COOLDOWN + 0.2)
        assert served_by() == "BREAKER_HEALTHY"
        assert upstream.called("slow") == calls + 4  # half-open: tried once, timed out: open again
        assert served_by() == "BREAKER_HEALTHY"
        assert upstream.called("slow") == calls + 4
        time.sleep(COOLDOWN + 0.2)
        SLOW["slow"] = False
        assert served_by() == "BREAKER_SLOW"  # an answer in time closes the breaker
        SLOW["slow"] = True
        assert served_by() == "BREAKER_HEALTHY"
        assert served_by() == "BREAKER_HEALTHY"
        assert upstream.called("slow") == calls + 7  # the count started again from zero
    finally:
        SLOW["slow"] = False


# --- upstream 422 bodies ---------------------------------------------------------------------

@pytest.mark.parametrize("model, message, code, param", [
    ("azure_ai_422", "One of the parameters contain invalid values.", "parameter_not_supported", "response_format"),
    ("pydantic_422", "user: Extra inputs are not permitted", "extra_forbidden", "user"),
    ("foundry_422", "stream_options.include_usage: Extra inputs are not permitted", "extra_forbidden",
     "stream_options"),
])
def test_422_bodies_keep_a_readable_message_code_and_param(hostile, model, message, code, param):
    gateway, _ = hostile
    response = chat(gateway, model)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["message"], error["code"], error["param"]) == (message, code, param)
    assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}


# --- event reassembly, any split ---------------------------------------------------------------

def test_event_splitter_gives_the_same_events_for_any_split():
    stream = (b": comment\r\n\r\ndata: {\"a\": 1}\r\n\r\ndata:{\"b\": 2}\r\rdata: {\"c\":\r\n"
              b"data: 3}\n\nevent: x\r\ndata: [DONE]\r\n\r\n")
    expected = [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}', b"[DONE]"]

    def events(pieces: list[bytes]) -> list[bytes]:
        splitter, found = EventSplitter(), []
        for piece in pieces:
            block = splitter.feed(piece)
            if block is not None:
                assert block.endswith(b"\n\n") and b"\r" not in block
                found += event_payloads(block)
        assert not splitter.finish().strip()
        return found

    assert events([stream]) == expected
    for i in range(1, len(stream)):
        for j in range(i, len(stream)):
            assert events([stream[:i], stream[i:j], stream[j:]]) == expected, (i, j)
    assert events([stream[i:i + 1] for i in range(len(stream))]) == expected
