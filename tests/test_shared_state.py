"""State shared across instances (DESIGN §11), end to end: two gateway processes on one real
redis-server enforce one consumer's limit together and share a deployment's cooldown; with
Redis stopped they keep serving on per-instance state (said in the log and the metrics) and
go back to Redis by themselves when it returns."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import gateway_settings
from tests.helpers import GATEWAY_KEY, GatewayProcess
from tests.redis_server import RedisServer
from tests.telemetry_receiver import TelemetryReceiver

SHARED = "shared-consumer-key-0123"
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def receiver():
    running = TelemetryReceiver()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def instances(emulators, redis_server, receiver, tmp_path_factory):
    settings = {**gateway_settings(emulators), "GATEWAY_STATE": redis_server.url,
                "CONSUMER__SHARED__KEYS": SHARED, "CONSUMER__SHARED__REQUESTS_PER_MINUTE": "4",
                "GATEWAY_COOLDOWN": "30"}
    first = GatewayProcess({**settings, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                            "OTEL_METRIC_EXPORT_INTERVAL": "300"}, tmp_path_factory.mktemp("instance-a"))
    second = GatewayProcess(settings, tmp_path_factory.mktemp("instance-b"))
    yield first, second
    first.stop()
    second.stop()


def chat(gateway, model: str = "gpt-4o-key", key: str = SHARED) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"}, json={"model": model, "messages": MESSAGES})


def test_two_instances_enforce_one_limit_together(instances, redis_server, clean):
    first, second = instances
    answers = [chat(first), chat(second), chat(first), chat(second)]
    assert [a.status_code for a in answers] == [200] * 4
    # Each instance alone has seen 2 of the 4 allowed: the fifth is refused by either.
    assert [int(a.headers["x-ratelimit-remaining-requests"]) for a in answers] == [3, 2, 1, 0]
    refused = chat(second)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert chat(first).status_code == 429


def test_a_cooldown_seen_by_one_instance_is_kept_by_the_other(instances, clean):
    first, second = instances
    clean["serverless"].fault(status=429, retry_after=30, count=1)
    refused = chat(first, "llama3-cooldown", key=GATEWAY_KEY)
    assert refused.status_code == 429  # the only deployment of that model answered 429: it rests
    requests_before = len(clean["serverless"].requests())
    other = chat(second, "llama3-cooldown", key=GATEWAY_KEY)
    # The second instance never saw the 429, yet skips the resting deployment: no upstream call.
    assert other.status_code == 429, other.text
    assert len(clean["serverless"].requests()) == requests_before
    assert 1 <= int(other.headers["retry-after"]) <= 30


def test_redis_down_then_back(instances, redis_server, receiver, clean):
    first, second = instances
    redis_server.stop()
    try:
        started = time.monotonic()
        answers = [chat(first, key=GATEWAY_KEY) for _ in range(3)]
        assert [a.status_code for a in answers] == [200] * 3  # served on per-instance state
        assert time.monotonic() - started < 5
    finally:
        redis_server.start()
    log = first.log()
    assert "routing.state" in log and "WARNING" in log, log[-2000:]

    def degraded(snapshot):
        return any(p["name"] == "gateway.state.degradations" and p["value"] >= 1
                   for p in snapshot.otlp_points)

    assert receiver.wait_for(degraded, timeout=10).otlp_points
    # Back to Redis by itself: the shared limit holds again across both instances.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chat(first, key=GATEWAY_KEY)
        latest = [p for p in receiver.snapshot().otlp_points if p["name"] == "gateway.state.degraded"]
        if latest and max(latest, key=lambda p: p["time"])["value"] == 0:
            break
        time.sleep(0.3)
    else:
        pytest.fail("the gateway did not go back to Redis")
    assert "recovered" in first.log().lower() or "back" in first.log().lower()
