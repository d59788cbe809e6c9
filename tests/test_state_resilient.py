"""ResilientStore (DESIGN §11): served from memory while Redis is stopped or frozen, back on Redis
by itself, reservations reconciled in the store that holds them, cooldowns learnt meanwhile
replayed; and the settings (GATEWAY_STATE*) that build it. A real redis-server of its own per
test (tests/redis_server.py), with a password, to check that no key ever shows."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from routing.state import store_from_settings
from routing.state.resilient import ResilientStore
from routing.state.store import Limits
from tests.helpers import REPO
from tests.redis_server import RedisServer

T0 = datetime(2024, 5, 15, 12, tzinfo=timezone.utc).timestamp()
STATE_KEY = "state-key-0123456789-secret"


@pytest.fixture
def own_redis_server():
    """A server this test may stop and start again, with a password (to check no key leaks)."""
    server = RedisServer(password=STATE_KEY)
    server.start()
    yield server
    server.close()


def state_settings(server: RedisServer, **extra: str) -> dict[str, str]:
    return {"GATEWAY_STATE": server.url, "GATEWAY_STATE_AUTH": "key", "GATEWAY_STATE_KEY": STATE_KEY, **extra}


async def timed(call):
    started = time.monotonic()
    answer = await call
    return answer, time.monotonic() - started


async def until_back_on_redis(store, limits, deadline_seconds=5.0):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        answer = await store.admit("team", limits, 1, time.time())
        if answer.reservation.store == "redis":
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError("the store did not go back to Redis")


def state_records(caplog):
    return [record for record in caplog.records if record.name == "routing.state"]


def test_redis_stopped_then_back_is_served_from_memory_and_recovers_by_itself(own_redis_server, caplog):
    caplog.set_level(logging.INFO, logger="routing.state")
    limits = Limits(tokens_per_minute=100_000, requests_per_minute=1000)

    async def scenario():
        store = store_from_settings(state_settings(own_redis_server))
        assert isinstance(store, ResilientStore)
        try:
            assert await store.connect()
            assert (await store.admit("team", limits, 1, time.time())).reservation.store == "redis"
            own_redis_server.stop()
            for _ in range(20):
                answer, seconds = await timed(store.admit("team", limits, 1, time.time(), routes=["r1"]))
                assert answer.admitted and answer.reservation.store == "memory"
                assert seconds < 0.3
            assert store.degraded and store.degraded_total == 1 and store.fallback_calls_total == 20
            warnings = [r for r in state_records(caplog) if r.levelno == logging.WARNING]
            assert len(warnings) == 1
            assert f"127.0.0.1:{own_redis_server.port}" in warnings[0].getMessage()

            own_redis_server.start()  # same port, empty
            await until_back_on_redis(store, limits)
            assert not store.degraded and store.degraded_total == 1
            recovered = [r for r in state_records(caplog) if r.levelno == logging.INFO]
            assert len(recovered) == 1 and "answers again" in recovered[0].getMessage()
        finally:
            await store.close()
        assert all(STATE_KEY not in record.getMessage() for record in caplog.records)
    asyncio.run(scenario())


def test_redis_hanging_costs_each_call_a_bounded_wait(own_redis_server, caplog):
    caplog.set_level(logging.INFO, logger="routing.state")
    limits = Limits(tokens_per_minute=100_000)

    async def scenario():
        store = store_from_settings(state_settings(own_redis_server))
        try:
            assert await store.connect()
            own_redis_server.freeze()  # connections stay open, nothing answers
            answer, seconds = await timed(store.admit("team", limits, 1, time.time()))
            assert answer.reservation.store == "memory" and seconds < 0.3  # 50 ms socket timeout
            for _ in range(10):  # degraded: no more waiting on Redis
                answer, seconds = await timed(store.admit("team", limits, 1, time.time()))
                assert answer.reservation.store == "memory" and seconds < 0.05
            for _ in range(25):  # 1.25 s of calls: at most a probe a second, each failing
                await asyncio.sleep(0.05)
                assert (await store.admit("team", limits, 1, time.time())).reservation.store == "memory"
            assert 1 <= store.probes_total <= 2
            assert store.degraded and store.degraded_total == 1
            own_redis_server.resume()
            await until_back_on_redis(store, limits)
            assert len([r for r in state_records(caplog) if r.levelno == logging.WARNING]) == 1
        finally:
            own_redis_server.resume()
            await store.close()
    asyncio.run(scenario())


def test_reservations_are_reconciled_in_the_store_that_holds_them(own_redis_server):
    limits = Limits(tokens_per_minute=1000)

    async def scenario():
        store = store_from_settings(state_settings(own_redis_server))
        try:
            assert await store.connect()
            from_redis = (await store.admit("team", limits, 400, T0)).reservation
            own_redis_server.stop()
            from_memory = (await store.admit("team", limits, 300, T0)).reservation
            assert (from_redis.store, from_memory.store) == ("redis", "memory")
            await store.reconcile(from_memory, 0, T0)  # memory's bucket is full again
            assert (await store.fallback.usage("team", limits, T0)).tokens.remaining == 1000
            await store.reconcile(from_redis, 0, T0)  # Redis is away: dropped, and counted
            assert store.lost_reconciles_total == 1
            own_redis_server.start()
            await until_back_on_redis(store, Limits(requests_per_minute=1000))
            await store.reconcile(from_redis, 100, T0)  # Redis is empty after its restart: a full bucket
            assert (await store.primary.usage("team", limits, T0)).tokens.remaining == 1000
            taken = (await store.admit("team", limits, 400, T0)).reservation
            await store.reconcile(taken, 100, T0)
            assert (await store.primary.usage("team", limits, T0)).tokens.remaining == 900
            assert (await store.fallback.usage("team", limits, T0)).tokens.remaining == 1000
        finally:
            await store.close()
    asyncio.run(scenario())


def test_cooldowns_learnt_while_degraded_reach_redis_when_it_is_back(own_redis_server):
    async def scenario():
        store = store_from_settings(state_settings(own_redis_server))
        try:
            assert await store.connect()
            own_redis_server.stop()
            now = time.time()
            await store.cool_down("r1", now + 60, now=now)
            assert (await store.admit("team", Limits(), 0, now, routes=["r1"])).cooldowns == {"r1": now + 60}
            own_redis_server.start()
            await until_back_on_redis(store, Limits(requests_per_minute=1000))
            shared = await store.primary.admit("team", Limits(), 0, time.time(), routes=["r1"])
            assert shared.cooldowns == {"r1": now + 60}
        finally:
            await store.close()
    asyncio.run(scenario())


# -- settings -------------------------------------------------------------------------------------

def test_memory_is_the_default_and_redis_is_not_imported_for_it():
    code = ("import sys; from routing.state import store_from_settings, MemoryStore;"
            "assert isinstance(store_from_settings({}), MemoryStore);"
            "assert isinstance(store_from_settings({'GATEWAY_STATE': ' Memory '}), MemoryStore);"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('redis', 'redis_entraid')], 'imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("settings, message", [
    ({"GATEWAY_STATE": "foo"}, "GATEWAY_STATE: expected memory, redis://host:port or rediss://host:port, got 'foo'"),
    ({"GATEWAY_STATE": "http://cache:6379"}, "GATEWAY_STATE: expected memory"),
    ({"GATEWAY_STATE": "redis://"}, "GATEWAY_STATE: expected memory"),
    ({"GATEWAY_STATE": "redis://cache:99999"}, "GATEWAY_STATE: expected memory"),
    ({"GATEWAY_STATE": "redis://cache:6379/x"}, "GATEWAY_STATE: expected redis[s]://host:port"),
    ({"GATEWAY_STATE": f"rediss://:{STATE_KEY}@cache:10000"}, "GATEWAY_STATE: put the access key in GATEWAY_STATE_KEY"),
    ({"GATEWAY_STATE": f"{STATE_KEY}@cache"}, "GATEWAY_STATE: expected memory"),
    ({"GATEWAY_STATE": "rediss://cache", "GATEWAY_STATE_AUTH": "password"},
     "GATEWAY_STATE_AUTH: expected managed-identity, key, none, got 'password'"),
    ({"GATEWAY_STATE": "rediss://cache", "GATEWAY_STATE_AUTH": "key"}, "GATEWAY_STATE_KEY: required"),
    ({"GATEWAY_STATE": "rediss://cache", "GATEWAY_STATE_KEY": STATE_KEY}, "GATEWAY_STATE_KEY: set, but"),
    ({"GATEWAY_STATE": "redis://cache", "GATEWAY_STATE_AUTH": "managed-identity"},
     "GATEWAY_STATE_AUTH: managed-identity needs a rediss:// URL"),
    ({"GATEWAY_STATE": "redis://cache", "GATEWAY_STATE_TIMEOUT_MS": "fast"}, "GATEWAY_STATE_TIMEOUT_MS: expected"),
    ({"GATEWAY_STATE": "redis://cache", "GATEWAY_STATE_TIMEOUT_MS": "0"}, "GATEWAY_STATE_TIMEOUT_MS: expected"),
])
def test_bad_settings_name_the_setting_and_never_the_key(settings, message):
    with pytest.raises(ValueError) as error:
        store_from_settings(settings)
    assert str(error.value).startswith(message)
    assert STATE_KEY not in str(error.value)


def test_rediss_uses_the_managed_identity_by_default():
    async def scenario():
        store = store_from_settings({"GATEWAY_STATE": "rediss://cache.example.invalid",
                                     "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
                                     "GATEWAY_STATE_TIMEOUT_MS": "20"})
        try:
            connection = store.primary.connection
            assert type(connection.credential_provider).__name__ == "EntraIdCredentialsProvider"
            assert connection.password is None and store.primary.address == "cache.example.invalid:10000"
            assert (connection.host, connection.port, connection.tls) == ("cache.example.invalid", 10000, True)
            assert connection.timeout == 0.02 and connection.connect_timeout == 1.0
            assert store.call_timeout == 0.04
        finally:
            await store.close()
    asyncio.run(scenario())


def test_a_wrong_key_degrades_without_showing_the_key(own_redis_server, caplog):
    caplog.set_level(logging.INFO, logger="routing.state")

    async def scenario():
        store = store_from_settings({**state_settings(own_redis_server), "GATEWAY_STATE_KEY": "wrong-key-0123456789"})
        try:
            assert not await store.connect() and store.degraded
            assert (await store.admit("team", Limits(tokens_per_minute=10), 5, T0)).reservation.store == "memory"
        finally:
            await store.close()
    asyncio.run(scenario())
    assert len(state_records(caplog)) == 1
    assert all("wrong-key" not in record.getMessage() for record in caplog.records)
