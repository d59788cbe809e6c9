"""The second attack round on the upstream side (DESIGN §8): evasions of the first round's fixes.

A hostile upstream that cuts its echo of the route key where the gateway truncates text (so
only a prefix would survive a later scrub), that writes the key with JSON escapes, that keeps a
silent stream open with comment lines, or that answers a valid JSON object made of millions of
arrays (cheap bytes, costly objects). The gateway runs as a subprocess, as in
tests/test_hostile_upstream.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.conftest import route
from tests.helpers import GATEWAY_KEY, GatewayProcess, data_events
from tests.hostile_upstream import HostileUpstream, chat_answer, chat_chunk, head, respond, respond_json, sse_body
from tests.test_hostile_upstream import chat, memory, raw_exchange, reset_peak_rss

ROUTE_KEY = "evasion-route-key-0123456789abcdef"
IDLE = 1.0  # GATEWAY_STREAM_IDLE_TIMEOUT
MANY_ARRAYS = 300_000  # ~0.9 MB of `[]`: far under the response limit, past the container limit


def escaped(text: str) -> str:
    """`text` with every character as a JSON \\u escape (decoded, it is `text` again)."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


async def cut_text_400(request, writer):
    # Text bodies become a message of at most 500 characters: the key straddles that cut.
    await respond(writer, 400, {"content-type": "text/plain"}, b"x" * 490 + request.key.encode())


async def cut_json_400(request, writer):
    # JSON messages are cut at 16 000 characters: the key straddles that cut.
    await respond_json(writer, 400, {"error": {"message": "y" * 15_990 + request.key, "code": "bad"}})


async def cut_stream_error(request, writer):
    error = {"error": {"message": "z" * 15_990 + request.key, "type": "server_error"}}
    await respond(writer, 200, {"content-type": "text/event-stream"},
                  sse_body(chat_chunk("partial"), error))


async def escaped_200(request, writer):
    body = json.dumps(chat_answer("KEY")).replace("KEY", escaped(request.key)).encode()
    await respond(writer, 200, {"content-type": "application/json"}, body)


async def escaped_stream(request, writer):
    event = json.dumps(chat_chunk("KEY")).replace("KEY", "key " + escaped(request.key))
    await respond(writer, 200, {"content-type": "text/event-stream"},
                  sse_body(chat_chunk("first"), event, "[DONE]"))


async def keepalive_forever(request, writer):
    writer.write(head(200, {"content-type": "text/event-stream"}) + sse_body(chat_chunk("one event")))
    await writer.drain()
    for _ in range(100):  # 20 s of comments and nothing else
        await asyncio.sleep(0.2)
        writer.write(b": keep-alive\n\n")
        await writer.drain()


async def many_arrays(request, writer):
    await respond(writer, 200, {"content-type": "application/json"},
                  b'{"choices": [' + b",".join([b"[]"] * MANY_ARRAYS) + b"]}")


SCRIPTS = {"cut_text_400": cut_text_400, "cut_json_400": cut_json_400,
           "cut_stream_error": cut_stream_error, "escaped_200": escaped_200,
           "escaped_stream": escaped_stream, "keepalive_forever": keepalive_forever,
           "many_arrays": many_arrays}


@pytest.fixture(scope="module")
def evasive(tmp_path_factory):
    upstream = HostileUpstream(SCRIPTS).start()
    settings = {"GATEWAY_API_KEYS": GATEWAY_KEY, "GATEWAY_STREAM_IDLE_TIMEOUT": str(IDLE),
                "GATEWAY_TOTAL_TIMEOUT": "30"}
    for name in SCRIPTS:
        settings.update(route(name.upper(), model=name, deployment=name, backend="azure-openai",
                              endpoint=upstream.url, api_key=ROUTE_KEY))
    gateway = GatewayProcess(settings, tmp_path_factory.mktemp("evasion"))
    yield gateway
    gateway.stop()
    upstream.stop()


def key_pieces(received: bytes, secret: str = ROUTE_KEY, shortest: int = 10) -> list[str]:
    """Every piece of the secret of `shortest`+ characters found in the received bytes (a
    prefix cut by a truncation, or a suffix)."""
    text = received.decode("utf-8", "replace")
    return [secret[i:j] for i in range(len(secret)) for j in range(i + shortest, len(secret) + 1)
            if secret[i:j] in text]


@pytest.mark.parametrize("model, stream", [("cut_text_400", False), ("cut_json_400", False),
                                           ("cut_stream_error", True), ("escaped_200", False),
                                           ("escaped_stream", True)])
def test_no_piece_of_an_echoed_key_reaches_the_client(evasive, model, stream):
    received = raw_exchange(evasive.url, {"model": model, "messages": [{"role": "user", "content": "x"}],
                                          "stream": stream})
    assert b"[redacted]" in received, received[-300:]  # the echo happened, and was caught
    decoded = received.decode("utf-8", "replace")
    if "\\u" in decoded:  # what a JSON client reads: escapes decoded
        decoded = decoded.encode().decode("unicode_escape", "replace")
    assert key_pieces(decoded.encode()) == []
    assert ROUTE_KEY not in evasive.log()


def test_comment_lines_do_not_keep_a_silent_stream_open(evasive):
    start = time.monotonic()
    response = chat(evasive, "keepalive_forever", stream=True)
    took = time.monotonic() - start
    events = data_events(response.content)
    assert events[0]["choices"][0]["delta"]["content"] == "one event"
    assert "GATEWAY_STREAM_IDLE_TIMEOUT" in events[-1]["error"]["message"]
    assert took < IDLE + 3, f"the idle limit fired after {took:.1f} s"


def test_millions_of_arrays_are_refused_before_parsing(evasive):
    pid = evasive.process.pid
    reset_peak_rss(pid)
    resident = memory(pid, "VmRSS")
    start = time.monotonic()
    response = chat(evasive, "many_arrays")
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_protocol_error"
    assert time.monotonic() - start < 2
    grown = memory(pid, "VmHWM") - resident
    # Parsed, 300 000 empty lists cost ~25 MiB; refused, about the body's size.
    assert grown < 12 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.0f} MiB"
    assert httpx.get(evasive.url + "/health", timeout=5).status_code == 200
