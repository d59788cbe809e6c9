"""Shared state (DESIGN §10, §11): MemoryStore and RedisStore against the same expectations (a
real redis-server, tests/redis_server.py), the clock passed in, and what is Redis's own (keys
expiring, one round trip, two clients). ResilientStore and the settings: test_state_resilient.py;
batched reconciliations: test_state_batching.py; the Redis connection: test_state_connection.py."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timezone

import pytest
import redis

from routing.state.memory import MemoryStore
from routing.state.redis_store import RedisStore
from routing.state.store import QUOTA_EXCEEDED, RATE_LIMITED, Limits, Window, period_bounds
from tests.redis_server import RedisServer

T0 = datetime(2024, 5, 15, 12, tzinfo=timezone.utc).timestamp()  # a Wednesday, noon
MONTH_END = datetime(2024, 2, 1, tzinfo=timezone.utc).timestamp()


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["memory", "redis"])
def new_store(request):
    """Makes a store of each kind (inside the test's event loop); Redis emptied first."""
    if request.param == "memory":
        return MemoryStore
    server = request.getfixturevalue("redis_server")
    redis.Redis(port=server.port).flushall()
    return lambda: RedisStore.from_url(server.url)


def run(new_store, scenario):
    async def main():
        store = new_store()
        try:
            await scenario(store)
        finally:
            await store.close()
    asyncio.run(main())


def test_tokens_per_minute_windows_and_retry_after(new_store):
    limits = Limits(tokens_per_minute=600)  # refills 10 tokens a second

    async def scenario(store):
        first = await store.admit("team", limits, 100, T0)
        assert first.admitted and first.code is None
        assert first.tokens == Window(limit=600, remaining=500, reset=10.0)
        assert first.requests is None and first.quota is None
        assert first.reservation.tokens == 100 and first.reservation.store == store.name
        assert (await store.admit("team", limits, 500, T0)).tokens == Window(600, 0, 60.0)
        refused = await store.admit("team", limits, 25, T0 + 1)
        assert not refused.admitted and refused.code == RATE_LIMITED and refused.reservation is None
        assert refused.retry_after == pytest.approx(1.5)  # 10 tokens back, 15 more to wait for
        assert refused.tokens == Window(600, 10, 59.0)
        assert (await store.admit("team", limits, 25, T0 + 2.5)).admitted
        assert (await store.admit("other", limits, 600, T0)).admitted  # buckets are per consumer
    run(new_store, scenario)


def test_a_refused_request_takes_nothing(new_store):
    limits = Limits(tokens_per_minute=100, requests_per_minute=10)

    async def scenario(store):
        assert (await store.admit("team", limits, 80, T0)).admitted
        assert not (await store.admit("team", limits, 30, T0)).admitted
        admitted = await store.admit("team", limits, 20, T0)
        assert admitted.admitted and admitted.requests.remaining == 8
    run(new_store, scenario)


def test_cost_above_capacity_is_admitted_when_full_and_leaves_a_debt(new_store):
    limits = Limits(tokens_per_minute=600)

    async def scenario(store):
        big = await store.admit("team", limits, 1500, T0)
        assert big.admitted and big.reservation.tokens == 1500
        assert big.tokens == Window(600, 0, 150.0)  # 900 in debt + 600 to fill: 1500 tokens at 10/s
        refused = await store.admit("team", limits, 1, T0 + 60)
        assert refused.code == RATE_LIMITED and refused.retry_after == pytest.approx(30.1)
        assert not (await store.admit("team", limits, 1500, T0 + 149)).admitted
        assert (await store.admit("team", limits, 1500, T0 + 150)).admitted
    run(new_store, scenario)


def test_requests_per_minute(new_store):
    limits = Limits(requests_per_minute=2)

    async def scenario(store):
        assert (await store.admit("team", limits, 5000, T0)).requests == Window(2, 1, 30.0)
        assert (await store.admit("team", limits, 5000, T0)).requests == Window(2, 0, 60.0)
        refused = await store.admit("team", limits, 1, T0 + 6)
        assert refused.code == RATE_LIMITED and refused.retry_after == pytest.approx(24.0)
        assert refused.tokens is None
        assert (await store.admit("team", limits, 1, T0 + 30)).admitted
    run(new_store, scenario)


def test_with_two_rate_limits_retry_after_is_the_longest_wait(new_store):
    limits = Limits(tokens_per_minute=60, requests_per_minute=1)

    async def scenario(store):
        assert (await store.admit("team", limits, 60, T0)).admitted
        refused = await store.admit("team", limits, 30, T0)
        assert refused.code == RATE_LIMITED and refused.retry_after == pytest.approx(60.0)  # the request
        assert refused.tokens == Window(60, 0, 60.0) and refused.requests == Window(1, 0, 60.0)
    run(new_store, scenario)


@pytest.mark.parametrize("period, end", [
    ("hourly", MONTH_END), ("daily", MONTH_END), ("monthly", MONTH_END), ("weekly", utc(2024, 2, 5))])
def test_quota_per_calendar_period(new_store, period, end):
    now = utc(2024, 1, 31, 23, 59, 30)
    limits = Limits(token_quota=100, quota_period=period)

    async def scenario(store):
        first = await store.admit("team", limits, 60, now)
        start = period_bounds(period, now)[0]
        assert first.quota == Window(100, 40, end - now) and first.reservation.quota_period_start == start
        refused = await store.admit("team", limits, 41, now)
        assert refused.code == QUOTA_EXCEEDED and refused.retry_after == end - now
        assert (await store.admit("team", limits, 40, now)).quota.remaining == 0
        assert not (await store.admit("team", limits, 1, end - 0.001)).admitted
        fresh = await store.admit("team", limits, 100, end)  # a new period
        assert fresh.admitted and fresh.reservation.quota_period_start == end
        usage = await store.usage("team", limits, end)
        assert usage.quota_used == 100 and usage.quota_period_start == end
    run(new_store, scenario)


def test_quota_reconcile_after_the_month_ended_leaves_the_new_month_alone(new_store):
    limits = Limits(token_quota=1000, quota_period="monthly")

    async def scenario(store):
        january = (await store.admit("team", limits, 500, MONTH_END - 10)).reservation
        assert january.quota_period_start == utc(2024, 1, 1)
        assert (await store.admit("team", limits, 200, MONTH_END + 10)).admitted
        await store.reconcile(january, 0, MONTH_END + 20)
        assert (await store.usage("team", limits, MONTH_END + 20)).quota_used == 200
    run(new_store, scenario)


def test_over_quota_and_rate_the_code_is_quota_and_the_wait_the_longest(new_store):
    limits = Limits(tokens_per_minute=100, token_quota=100, quota_period="hourly")
    now = utc(2024, 5, 15, 12, 59, 50)  # the hour ends in 10 s, the bucket refills in 60 s

    async def scenario(store):
        assert (await store.admit("team", limits, 100, now)).admitted
        refused = await store.admit("team", limits, 50, now)
        assert refused.code == QUOTA_EXCEEDED and refused.retry_after == pytest.approx(30.0)
        next_hour = await store.admit("team", limits, 50, now + 11)  # a new quota period, the bucket not yet
        assert next_hour.code == RATE_LIMITED and next_hour.retry_after == pytest.approx(19.0)
    run(new_store, scenario)


def test_reconcile_down_up_and_to_zero(new_store):
    limits = Limits(tokens_per_minute=600, token_quota=1000, quota_period="daily")

    async def scenario(store):
        async def remaining():
            usage = await store.usage("team", limits, T0)
            return usage.tokens.remaining, usage.quota_used

        reservation = (await store.admit("team", limits, 100, T0)).reservation
        await store.reconcile(reservation, 40, T0)  # used less than estimated: 60 back
        assert await remaining() == (560, 40)
        reservation = (await store.admit("team", limits, 100, T0)).reservation
        await store.reconcile(reservation, 300, T0)  # used more: 200 more taken
        assert await remaining() == (260, 340)
        reservation = (await store.admit("team", limits, 100, T0)).reservation
        await store.reconcile(reservation, 0, T0)  # failed before any usage: all back
        assert await remaining() == (260, 340)
        reservation = (await store.admit("team", limits, 200, T0)).reservation
        await store.reconcile(reservation, 700, T0)  # the bucket goes into debt
        usage = await store.usage("team", limits, T0)
        assert usage.tokens == Window(600, 0, 104.0) and usage.quota_used == 1040  # 440 in debt
        refused = await store.admit("team", limits, 1, T0)
        assert refused.code == QUOTA_EXCEEDED
    run(new_store, scenario)


def test_reconcile_rebuilds_a_bucket_dropped_as_full(new_store):
    limits = Limits(tokens_per_minute=600)

    async def scenario(store):
        reservation = (await store.admit("team", limits, 600, T0)).reservation
        await store.admit("someone-else", limits, 1, T0 + 61)  # the team's bucket is full again by now
        await store.reconcile(reservation, 900, T0 + 61)  # a long stream used 300 more
        assert (await store.usage("team", limits, T0 + 61)).tokens.remaining == 300
    run(new_store, scenario)


def test_usage_reads_without_taking_or_refilling(new_store):
    limits = Limits(tokens_per_minute=600, requests_per_minute=10, token_quota=5000, quota_period="weekly")

    async def scenario(store):
        await store.admit("team", limits, 100, T0)
        later = await store.usage("team", limits, T0 + 30)
        assert later.tokens == Window(600, 600, 0.0) and later.requests == Window(10, 10, 0.0)
        now = await store.usage("team", limits, T0)
        assert now.tokens == Window(600, 500, 10.0) and now.requests == Window(10, 9, 6.0)
        assert now.quota == Window(5000, 4900, utc(2024, 5, 20) - T0) and now.quota_used == 100
        assert now.quota_period_start == utc(2024, 5, 13)
        assert (await store.usage("nobody", limits, T0)).tokens.remaining == 600
    run(new_store, scenario)


def test_concurrent_admissions_cannot_exceed_a_limit(new_store):
    limits = Limits(tokens_per_minute=1000)

    async def scenario(store):
        answers = await asyncio.gather(*(store.admit("team", limits, 100, T0) for _ in range(32)))
        assert sum(answer.admitted for answer in answers) == 10
    run(new_store, scenario)


def test_cooldowns_later_end_wins_and_they_end(new_store):
    async def scenario(store):
        await store.cool_down("r1", T0 + 30, now=T0)
        await store.cool_down("r1", T0 + 10, now=T0)  # an earlier end does not shorten it
        await store.cool_down("r2", T0 + 5, now=T0)
        answer = await store.admit("team", Limits(), 10, T0, routes=["r1", "r2", "r3"])
        assert answer.admitted and answer.reservation is None
        assert answer.cooldowns == {"r1": T0 + 30, "r2": T0 + 5}
        await store.cool_down("r1", T0 + 40, now=T0 + 1)
        assert (await store.admit("team", Limits(), 1, T0 + 6, routes=["r1", "r2"])).cooldowns == {"r1": T0 + 40}
        limited = await store.admit("team", Limits(requests_per_minute=5), 1, T0 + 39, routes=["r1"])
        assert limited.cooldowns == {"r1": T0 + 40} and limited.reservation is not None
        assert (await store.admit("team", Limits(), 1, T0 + 40, routes=["r1", "r2"])).cooldowns == {}
    run(new_store, scenario)


def test_memory_store_drops_idle_consumers_ended_periods_and_cooldowns():
    limits = Limits(tokens_per_minute=1000, requests_per_minute=10, token_quota=10_000, quota_period="hourly")

    async def scenario():
        store = MemoryStore()
        for number in range(5000):
            assert (await store.admit(f"consumer-{number}", limits, 10, T0)).admitted
            await store.cool_down(f"route-{number}", T0 + 30, now=T0)
        assert store.entry_count == 5000 * 4
        await store.admit("late", limits, 10, T0 + 61)  # every bucket is full again, the hour goes on
        assert store.entry_count == 5000 + 3
        await store.admit("later", limits, 10, T0 + 3600)  # the hour is over
        assert store.entry_count == 3
    asyncio.run(scenario())


def test_redis_keys_expire_on_their_own(redis_server):
    redis.Redis(port=redis_server.port).flushall()
    limits = Limits(tokens_per_minute=600, requests_per_minute=10, token_quota=10_000, quota_period="hourly")

    async def scenario(store):
        await store.admit("team", limits, 300, T0)
        await store.cool_down("r1", T0 + 30, now=T0)
    run(lambda: RedisStore.from_url(redis_server.url), scenario)
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    ttls = {key: client.pttl(key) for key in client.scan_iter("*")}
    assert set(ttls) == {"{routing}:tokens:team", "{routing}:requests:team",
                         f"{{routing}}:quota:{int(T0)}:team", "{routing}:cooldown:r1"}
    assert 30_000 < ttls["{routing}:tokens:team"] <= 31_000  # full again in 30 s (+1 s slack)
    assert 6_000 < ttls["{routing}:requests:team"] <= 7_000
    assert 3600_000 < ttls[f"{{routing}}:quota:{int(T0)}:team"] <= 7200_000  # the hour, then an hour
    assert 30_000 < ttls["{routing}:cooldown:r1"] <= 31_000


def commands_sent(watcher: socket.socket) -> list[bytes]:
    """What clients sent, from a MONITOR connection: the commands scripts ran are left out."""
    watcher.settimeout(0.3)
    received = b""
    try:
        while chunk := watcher.recv(65536):
            received += chunk
    except TimeoutError:
        pass
    return [line.split(b"] ", 1)[1] for line in received.split(b"\r\n")
            if line.startswith(b"+") and b"] " in line and b" lua] " not in line]


def test_admit_is_one_round_trip_to_redis(redis_server):
    async def scenario(store):
        await store.ping()  # connection set up and scripts loaded, as after ResilientStore.connect()
        await store.cool_down("r1", T0 + 30, now=T0)
        with socket.create_connection(("127.0.0.1", redis_server.port)) as watcher:
            watcher.sendall(b"MONITOR\r\n")
            commands_sent(watcher)  # its +OK
            limits = Limits(tokens_per_minute=600, requests_per_minute=10, token_quota=10_000, quota_period="daily")
            answer = await store.admit("team", limits, 100, T0, routes=["r1", "r2"])
            assert answer.admitted and answer.cooldowns == {"r1": T0 + 30}
            sent = commands_sent(watcher)
            assert len(sent) == 1 and sent[0].upper().startswith(b"\"EVALSHA\""), sent
            await store.reconcile(answer.reservation, 50, T0)
            await store.cool_down("r2", T0 + 30, now=T0)
            assert [command.split(b" ")[0].upper() for command in commands_sent(watcher)] == [b"\"EVALSHA\""] * 2
    run(lambda: RedisStore.from_url(redis_server.url), scenario)


def test_two_redis_clients_share_limits_and_cooldowns(redis_server):
    redis.Redis(port=redis_server.port).flushall()
    limits = Limits(tokens_per_minute=600)

    async def scenario():
        one, two = RedisStore.from_url(redis_server.url), RedisStore.from_url(redis_server.url)
        try:
            assert (await one.admit("team", limits, 600, T0)).admitted
            refused = await two.admit("team", limits, 1, T0)
            assert refused.code == RATE_LIMITED
            await two.cool_down("r1", T0 + 30, now=T0)
            assert (await one.admit("team", Limits(), 0, T0, routes=["r1"])).cooldowns == {"r1": T0 + 30}
            answers = await asyncio.gather(*(store.admit("other", limits, 100, T0)
                                             for store in (one, two) for _ in range(8)))
            assert sum(answer.admitted for answer in answers) == 6
        finally:
            await one.close()
            await two.close()
    asyncio.run(scenario())


def test_redis_store_loads_its_scripts_again_after_a_script_flush(redis_server):
    async def scenario(store):
        assert (await store.admit("team", Limits(requests_per_minute=5), 1, T0)).admitted
        redis.Redis(port=redis_server.port).script_flush()
        assert (await store.admit("team", Limits(requests_per_minute=5), 1, T0)).requests.remaining == 3
    redis.Redis(port=redis_server.port).flushall()
    run(lambda: RedisStore.from_url(redis_server.url), scenario)


def test_period_bounds_are_utc_calendar_periods():
    assert period_bounds("hourly", utc(2024, 12, 31, 23, 30)) == (utc(2024, 12, 31, 23), utc(2025, 1, 1))
    assert period_bounds("daily", utc(2024, 2, 28, 23, 59, 59)) == (utc(2024, 2, 28), utc(2024, 2, 29))
    assert period_bounds("weekly", utc(2024, 12, 31, 8)) == (utc(2024, 12, 30), utc(2025, 1, 6))  # ISO week 1
    assert period_bounds("weekly", utc(2024, 5, 13)) == (utc(2024, 5, 13), utc(2024, 5, 20))  # a Monday
    assert period_bounds("monthly", utc(2024, 2, 29, 12)) == (utc(2024, 2, 1), utc(2024, 3, 1))
    assert period_bounds("monthly", utc(2024, 12, 31, 23, 59, 59)) == (utc(2024, 12, 1), utc(2025, 1, 1))
    with pytest.raises(ValueError, match="quota period"):
        period_bounds("yearly", T0)
