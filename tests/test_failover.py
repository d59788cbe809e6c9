"""Pools and failover (DESIGN §5) against the emulators' fault injection, over real sockets.

The gateway runs in this process (uvicorn in a thread, real loopback sockets) so that its
cooldown clock can be replaced: cooldowns are checked by moving the clock, not by sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import importlib
import time

import httpx
import openai
import pytest

from tests.conftest import route
from tests.helpers import GATEWAY_KEY, sse_events

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
USER = [{"role": "user", "content": "hello pool"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pool_settings(aoai: str, key: str) -> dict[str, str]:
    common = {"backend": "azure-openai", "endpoint": aoai, "api_key": key}
    return {
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "GATEWAY_COOLDOWN": "10",
        "GATEWAY_STREAM_IDLE_TIMEOUT": "1",
        "GATEWAY_TOTAL_TIMEOUT": "6",
        **route("A", model="pool", deployment="dep-a", priority="1", **common),
        **route("B", model="pool", deployment="dep-b", priority="2", **common),
        **route("W1", model="weighted", deployment="w-one", weight="3", **common),
        **route("W2", model="weighted", deployment="w-two", weight="1", **common),
        **route("W3", model="weighted", deployment="w-three", weight="0", **common),
        **route("S1", model="slow", deployment="s-one", timeout="1", priority="1", **common),
        **route("S2", model="slow", deployment="s-two", timeout="1", priority="2", **common),
        **route("SOLO", model="solo", deployment="solo", **common),
    }


class InProcessGateway:
    def __init__(self, settings: dict[str, str]):
        from emulator.servers import start

        self.runtime = importlib.import_module("routing.gateway")
        self.gateway = self.runtime.configure(settings)
        self.clock = FakeClock()
        self.gateway.selector.clock = self.clock
        self.server = start(importlib.import_module("routing.server").create_app(), lifespan="on")
        self.url = self.server.url

    def chat(self, model: str = "pool", **body) -> httpx.Response:
        return httpx.post(self.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": model, "messages": USER, **body})


@pytest.fixture
def pool(emulators, upstreams):
    upstreams["aoai"].clear()
    gateway = InProcessGateway(pool_settings(emulators.urls["azure_openai"], upstreams["aoai"].key))
    yield gateway
    gateway.server.stop()
    upstreams["aoai"].clear()


def deployments_called(upstream) -> list[str]:
    return [r["path"].split("/")[3] for r in upstream.requests()]


def test_429_fails_over_and_rests_the_deployment(pool, upstreams):
    aoai = upstreams["aoai"]
    aoai.fault(match={"deployment": "dep-a"}, status=429, retry_after=30)
    first = pool.chat()
    assert first.status_code == 200, first.text
    assert (first.headers["x-gateway-route"], first.headers["x-gateway-attempts"]) == ("B", "2")
    for _ in range(5):  # A rests: not called at all while its cooldown runs
        response = pool.chat()
        assert (response.headers["x-gateway-route"], response.headers["x-gateway-attempts"]) == ("B", "1")
    pool.clock.advance(29)
    assert pool.chat().headers["x-gateway-route"] == "B"
    pool.clock.advance(2)
    assert pool.chat().headers["x-gateway-route"] == "A"  # priority 1 again after its cooldown
    assert deployments_called(aoai) == ["dep-a", "dep-b"] + ["dep-b"] * 6 + ["dep-a"]


@pytest.mark.parametrize("fault, rest", [
    ({"status": 429, "retry_after_ms": 2500, "retry_after": 9}, 2.5),  # retry-after-ms wins
    ({"status": 503, "headers": {"x-ratelimit-reset-requests": "4s", "x-ratelimit-reset-tokens": "1s"}}, 4),
    ({"status": 500}, 10),  # no hint: GATEWAY_COOLDOWN
    ({"status": 408}, 10),
])
def test_cooldown_length_follows_the_upstream_hint(pool, upstreams, fault, rest):
    upstreams["aoai"].fault(match={"deployment": "dep-a"}, **fault)
    assert pool.chat().headers["x-gateway-route"] == "B"
    pool.clock.advance(rest - 0.2)
    assert pool.chat().headers["x-gateway-route"] == "B"
    pool.clock.advance(0.4)
    assert pool.chat().headers["x-gateway-route"] == "A"


def test_retry_after_http_date(pool, upstreams):
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    upstreams["aoai"].fault(match={"deployment": "dep-a"}, status=429, headers={"retry-after": when})
    assert pool.chat().headers["x-gateway-route"] == "B"
    pool.clock.advance(17)
    assert pool.chat().headers["x-gateway-route"] == "B"
    pool.clock.advance(5)
    assert pool.chat().headers["x-gateway-route"] == "A"


def test_exhausted_pool_answers_429_with_shortest_wait(pool, upstreams):
    aoai = upstreams["aoai"]
    aoai.fault(match={"deployment": "dep-a"}, status=429, retry_after=8)
    aoai.fault(match={"deployment": "dep-b"}, status=429, retry_after=5)
    response = pool.chat()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.headers["x-gateway-attempts"] == "2"
    # Every deployment cooling: 429 at once, no upstream call.
    pool.clock.advance(2.5)
    response = pool.chat()
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert len(aoai.requests()) == 2
    pool.clock.advance(3)
    assert pool.chat().headers["x-gateway-route"] == "B"


def test_5xx_fails_over_and_all_5xx_is_502(pool, upstreams):
    aoai = upstreams["aoai"]
    aoai.fault(match={"deployment": "dep-a"}, status=500)
    assert pool.chat().headers["x-gateway-route"] == "B"
    pool.clock.advance(60)
    aoai.fault(match={"deployment": "dep-a"}, status=502)
    aoai.fault(match={"deployment": "dep-b"}, status=503)
    response = pool.chat()
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and "'A': HTTP 502" in error["message"]


def test_hung_deployment_fails_over_then_504(pool, upstreams):
    aoai = upstreams["aoai"]
    aoai.fault(match={"deployment": "s-one"}, delay=20)
    start = time.monotonic()
    response = pool.chat("slow")
    assert response.status_code == 200 and response.headers["x-gateway-route"] == "S2"
    assert time.monotonic() - start < 3
    # One timed-out request does not rest S1 for everyone (DESIGN §8): the next request, at the
    # same moment, tries it first again.
    aoai.fault(match={"deployment": "s-one"}, delay=20)
    aoai.fault(match={"deployment": "s-two"}, delay=20)
    start = time.monotonic()
    response = pool.chat("slow")
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - start < 4
    assert deployments_called(aoai) == ["s-one", "s-two", "s-one", "s-two"]


def test_consecutive_timeouts_open_the_breaker_until_an_answer_closes_it(pool, upstreams):
    aoai = upstreams["aoai"]
    aoai.fault(match={"deployment": "s-one"}, delay=20, count=4)
    for _ in range(3):  # GATEWAY_BREAKER_TIMEOUTS: 3 by default
        assert pool.chat("slow").headers["x-gateway-route"] == "S2"
    assert deployments_called(aoai) == ["s-one", "s-two"] * 3
    assert pool.chat("slow").headers["x-gateway-attempts"] == "1"  # open: S1 rests
    pool.clock.advance(10.5)  # GATEWAY_COOLDOWN; half-open: one more timeout opens it again
    assert pool.chat("slow").headers["x-gateway-route"] == "S2"
    assert pool.chat("slow").headers["x-gateway-attempts"] == "1"
    assert deployments_called(aoai)[6:] == ["s-two", "s-one", "s-two", "s-two"]
    pool.clock.advance(10.5)
    assert pool.chat("slow").headers["x-gateway-route"] == "S1"  # an answer closes the breaker
    aoai.fault(match={"deployment": "s-one"}, delay=20)
    assert pool.chat("slow").headers["x-gateway-route"] == "S2"
    assert pool.chat("slow").headers["x-gateway-route"] == "S1"  # one timeout rests nothing


def test_stream_broken_before_first_byte_fails_over(pool, upstreams):
    upstreams["aoai"].fault(match={"deployment": "dep-a"}, cut_after_chunks=0)
    response = pool.chat(stream=True)
    assert response.headers["x-gateway-route"] == "B"
    assert sse_events(response.content)[-1] == "[DONE]"


def test_stream_cut_after_first_byte_is_not_retried(pool, upstreams):
    upstreams["aoai"].fault(match={"deployment": "dep-a"}, cut_after_chunks=2)
    client = openai.OpenAI(base_url=pool.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="pool", messages=USER, stream=True):
            pass
    assert deployments_called(upstreams["aoai"]) == ["dep-a"]


def test_idle_and_total_stream_limits(pool, upstreams):
    upstreams["aoai"].fault(match={"deployment": "solo"}, chunk_delay=3)
    start = time.monotonic()
    events = sse_events(pool.chat("solo", stream=True).content)
    assert time.monotonic() - start < 5
    assert "GATEWAY_STREAM_IDLE_TIMEOUT" in events[-1] and "[DONE]" not in events

    upstreams["aoai"].configure(answer_words=200)
    upstreams["aoai"].fault(match={"deployment": "solo"}, chunk_delay=0.1)
    start = time.monotonic()
    events = sse_events(pool.chat("solo", stream=True).content)
    assert 5 < time.monotonic() - start < 8
    assert "GATEWAY_TOTAL_TIMEOUT" in events[-1] and "[DONE]" not in events


def test_upstream_400_is_returned_not_retried(pool, upstreams):
    upstreams["aoai"].fault(match={"deployment": "dep-a"}, status=400,
                            body={"error": {"message": "bad thing", "code": "bad"}})
    response = pool.chat()
    assert response.status_code == 400 and response.json()["error"]["message"] == "bad thing"
    assert deployments_called(upstreams["aoai"]) == ["dep-a"]
    assert pool.chat().headers["x-gateway-route"] == "A"  # a 400 does not rest the deployment


def test_weighted_selection_and_draining(pool, upstreams):
    upstreams["aoai"].configure(record=True)
    n = 400
    counts = collections.Counter(pool.chat("weighted").headers["x-gateway-route"] for _ in range(n))
    assert counts["W3"] == 0  # WEIGHT=0 drains
    # Binomial(400, 0.75): mean 300, sd 8.7; ±5 sd.
    assert 257 <= counts["W1"] <= 343, counts
    assert counts["W1"] + counts["W2"] == n


def test_client_disconnect_frees_connection_and_tasks(pool, upstreams):
    aoai = upstreams["aoai"]
    aoai.configure(chunk_delay=0.2, answer_words=50)
    assert pool.chat("solo").status_code == 200  # the shared client exists from here on
    loop = pool.gateway.client._loop

    def task_count() -> int:
        async def count() -> int:
            return len(asyncio.all_tasks())
        return asyncio.run_coroutine_threadsafe(count(), loop).result(5)

    baseline = task_count()
    connector = pool.gateway.client.connector
    # The emulator's count includes the stats request's own connection, the gateway's idle
    # keep-alive connections and other processes' ones.
    open_before = aoai.stats()["open_connections"]
    idle_before = sum(len(v) for v in connector._conns.values())
    with httpx.stream("POST", pool.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": "solo", "messages": USER, "stream": True}) as response:
        chunks = response.iter_raw()
        next(chunks)
        assert len(connector._acquired) == 1
        assert aoai.stats()["active_streams"] == 1
        assert task_count() > baseline
    deadline = time.monotonic() + 5
    while (aoai.stats()["active_streams"] or connector._acquired) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert aoai.stats()["active_streams"] == 0
    assert len(connector._acquired) == 0, "the upstream connection was not released"
    # The upstream connection was closed, not parked half-read in the keep-alive pool.
    assert sum(len(v) for v in connector._conns.values()) == 0
    assert aoai.stats()["open_connections"] <= open_before - idle_before
    assert task_count() == baseline, "a task outlived its request"
