"""Clients that leave mid-stream: the upstream relay stops at once, however the client left.

The hard case (issue 8): streaming clients that do not read, so the gateway's sends block on
full sockets, and then all close. A cancellation landing inside a blocked `send` used to leave
the relay generator suspended and its upstream response open until the garbage collector came
by. Here every relay must end, and every upstream connection must be released, within seconds.

The gateway and a dedicated Azure OpenAI emulator run in this process over real loopback
sockets, so the gateway's upstream connection pool can be inspected.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import socket
import struct
import sys
import time

import httpx
import pytest

from tests.conftest import route
from tests.helpers import GATEWAY_KEY

CLIENTS = 10
KEYS: dict[str, str] = {}  # emulator URL → its key


def start_relay_gateway(**gateway_settings: str):
    from emulator.servers import start, start_all

    emulators = start_all(names=["azure_openai"])
    upstream_url = emulators.urls["azure_openai"]
    key = emulators.keys["azure_openai"][0]
    runtime = importlib.import_module("routing.gateway")
    gateway = runtime.configure({"GATEWAY_API_KEYS": GATEWAY_KEY, **gateway_settings, **route(
        "S", model="streamer", backend="azure-openai", endpoint=upstream_url, api_key=key,
        deployment="gpt-4o")})
    server = start(importlib.import_module("routing.server").create_app(), lifespan="on")
    KEYS[upstream_url] = key
    return server, emulators, (server.url, upstream_url, gateway)


@pytest.fixture
def relay_gateway():
    server, emulators, handles = start_relay_gateway()
    yield handles
    server.stop()
    emulators.stop()


@pytest.fixture
def short_total_gateway():
    server, emulators, handles = start_relay_gateway(GATEWAY_TOTAL_TIMEOUT="3")
    yield handles
    server.stop()
    emulators.stop()


def configure(upstream_url: str, **config) -> None:
    httpx.post(upstream_url + "/_emulator/config", json=config, timeout=5).raise_for_status()


def active_streams(upstream_url: str) -> int:
    return httpx.get(upstream_url + "/_emulator/stats", timeout=5).json()["active_streams"]


def stream_request(port: int) -> bytes:
    body = json.dumps({"model": "streamer", "stream": True,
                       "messages": [{"role": "user", "content": "a long story"}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (port, GATEWAY_KEY.encode(), len(body))) + body


def open_non_reading_client(port: int) -> socket.socket:
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few events
    client.connect(("127.0.0.1", port))
    client.sendall(stream_request(port))
    return client


def wait_until(condition, seconds: float) -> float:
    """Seconds it took for `condition()` to hold; fails after `seconds`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.parametrize("how", ["close", "reset"])
def test_non_reading_clients_that_leave_end_every_relay(relay_gateway, how):
    url, upstream_url, gateway = relay_gateway
    port = int(url.rsplit(":", 1)[1])
    # Long streams, sent as fast as the upstream can: every client's socket fills up.
    configure(upstream_url, answer_words=12000, chunk_delay=0)
    assert httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                      json={"model": "streamer", "messages": [{"role": "user", "content": "hi"}]},
                      timeout=30).status_code == 200  # the shared upstream client exists from here on
    connector = gateway.client.connector
    gc.disable()  # the garbage collector must not be what ends the relays
    try:
        clients = [open_non_reading_client(port) for _ in range(CLIENTS)]
        # Each stream is larger than the loopback buffers can hold: the relays block in send.
        wait_until(lambda: len(connector._acquired) == CLIENTS, 20)
        time.sleep(1.0)
        assert len(connector._acquired) == CLIENTS, "a stream ended although nobody read it"
        for client in clients:
            if how == "reset":  # RST instead of FIN, as a killed process's sockets do
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        took = wait_until(lambda: not connector._acquired, 10)
    finally:
        gc.enable()
    assert took < 5, f"relays kept reading {took:.1f} s after their clients left"


def test_client_leaving_during_a_slow_upstream_ends_the_relay_at_once(relay_gateway):
    """The upstream sends nothing for seconds: the disconnect is still seen at once, not at the
    upstream's next chunk."""
    url, upstream_url, gateway = relay_gateway
    configure(upstream_url, answer_words=5, chunk_delay=4)
    with httpx.stream("POST", url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                      json={"model": "streamer", "stream": True,
                            "messages": [{"role": "user", "content": "a slow story"}]}) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()  # kept: dropping the iterator would close the stream
        next(chunks)  # the first event is through; the next is 4 s away
        assert active_streams(upstream_url) == 1
    took = wait_until(lambda: active_streams(upstream_url) == 0, 3.5)
    assert took < 2, f"the relay noticed the disconnect only after {took:.1f} s"
    wait_until(lambda: not gateway.client.connector._acquired, 2)


def test_a_cancellation_inside_a_blocked_send_closes_the_relay(relay_gateway):
    """The mechanism behind the first test, made deterministic: the client's socket is full (its
    `send` never returns), the client leaves, Starlette cancels the response inside that send.
    Something still holds the relay generator (here a hook that keeps every async generator, as
    a reference cycle would), so only an explicit close can end it and release the upstream."""
    _, upstream_url, _ = relay_gateway
    # Longer than aiohttp reads ahead: the upstream connection stays in use until closed.
    configure(upstream_url, answer_words=12000, chunk_delay=0)
    runtime = importlib.import_module("routing.gateway")
    server = importlib.import_module("routing.server")

    async def scenario() -> tuple[list, int]:
        gateway = runtime.configure({"GATEWAY_API_KEYS": GATEWAY_KEY, **route(
            "S", model="streamer", backend="azure-openai", endpoint=upstream_url, deployment="gpt-4o",
            api_key=KEYS[upstream_url])})
        kept: list = []
        firstiter, finalizer = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=lambda g: (kept.append(g), firstiter and firstiter(g)),
                               finalizer=finalizer)
        body = json.dumps({"model": "streamer", "stream": True,
                           "messages": [{"role": "user", "content": "x"}]}).encode()
        received, left, blocked = [], asyncio.Event(), asyncio.Event()

        async def receive() -> dict:
            if not received:
                received.append(body)
                return {"type": "http.request", "body": body, "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                blocked.set()
                await asyncio.Event().wait()  # a full socket that never drains

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80),
                 "headers": [(b"authorization", f"Bearer {GATEWAY_KEY}".encode()),
                             (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        try:
            task = asyncio.ensure_future(server.create_app()(scope, receive, send))
            await asyncio.wait_for(blocked.wait(), 10)
            left.set()  # the client goes away while the response is blocked in send
            await asyncio.wait_for(task, 10)
            await asyncio.sleep(0.1)
            relays = [g for g in kept if g.ag_code.co_name == "relay"]
            # Judged now: when this loop ends, asyncio closes every generator it still tracks.
            return [g.ag_frame is None for g in relays], len(gateway.client.connector._acquired)
        finally:
            sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
            await gateway.aclose()

    closed, acquired = asyncio.run(scenario())
    assert closed, "the relay generator was not observed"
    assert all(closed), "the relay is still suspended at its yield"
    assert acquired == 0, "the upstream connection is still held"


def test_a_client_that_stops_reading_is_cut_at_the_total_time_limit(short_total_gateway):
    """The relay checks GATEWAY_TOTAL_TIMEOUT between upstream reads; blocked in `send` to a
    client that does not read, only the response itself can end the request on time."""
    url, upstream_url, gateway = short_total_gateway
    port = int(url.rsplit(":", 1)[1])
    assert httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                      json={"model": "streamer", "messages": [{"role": "user", "content": "hi"}]},
                      timeout=30).status_code == 200  # the shared upstream client exists from here on
    connector = gateway.client.connector
    configure(upstream_url, answer_words=12000, chunk_delay=0)
    client = open_non_reading_client(port)
    try:
        wait_until(lambda: len(connector._acquired) == 1, 10)
        started = time.monotonic()
        took = wait_until(lambda: not connector._acquired, 10)  # total limit 3 s (+1 s grace)
        assert took < 6, f"the stream outlived the total time limit by {took - 3:.1f} s"
        assert time.monotonic() - started < 6
    finally:
        client.close()
