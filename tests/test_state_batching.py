"""Reconciliations handed off at the end of requests (DESIGN §10, §11): the limiter gives them to
the store without waiting and without a task per request; ResilientStore sends Redis's in
batches, one script call for many requests under load, each applied exactly once, or counted
lost when Redis fails (never sent twice: a batch that may have run is not sent again). A real
redis-server (tests/redis_server.py), the clock passed in."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import pytest
import redis

from routing.config.consumers import Consumer
from routing.limits.limiter import Limiter
from routing.state import resilient, store_from_settings
from routing.state.memory import MemoryStore
from routing.state.redis_store import RedisStore
from routing.state.store import Limits
from routing.telemetry.record import RequestRecord
from tests.redis_server import RedisServer

T0 = datetime(2024, 5, 15, 12, tzinfo=timezone.utc).timestamp()
LIMITS = Limits(tokens_per_minute=1_000_000, token_quota=10_000_000, quota_period="daily")


@pytest.fixture(scope="module")
def server():
    running = RedisServer()
    running.start()
    yield running
    running.close()


@pytest.fixture
def redis_server(server):
    """The module's server, emptied, its statistics reset."""
    client = redis.Redis(port=server.port)
    client.flushall()
    client.config_resetstat()
    return server


def script_calls(server) -> int:
    stats = redis.Redis(port=server.port).info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def used(store, consumer: str) -> tuple[int, int]:
    """(tokens taken from the bucket, quota used) for `consumer` at T0 (no refill: same clock)."""
    usage = await store.usage(consumer, LIMITS, T0)
    return LIMITS.tokens_per_minute - usage.tokens.remaining, usage.quota_used


def finished(record: RequestRecord, total_tokens: int) -> RequestRecord:
    record.status, record.attempts, record.total_tokens = 200, 1, total_tokens
    return record


def test_the_limiter_settles_without_waiting_and_without_an_event_loop():
    """Memory: applied before settle returns. (A task per request could not even be started here,
    outside any event loop: the reconciliation was dropped.)"""
    limiter = Limiter(MemoryStore(), on_cooldowns=lambda cooldowns: None, clock=lambda: T0)
    consumer = Consumer(name="team", limits=Limits(tokens_per_minute=1000))
    record = RequestRecord(request_id="r1")
    asyncio.run(limiter.admit(consumer, record, 400, {"max_tokens": 100}, []))  # 100 + 100 reserved
    limiter.settle(finished(record, 50))
    usage = asyncio.run(limiter.store.usage("team", consumer.limits, T0))
    assert usage.tokens.remaining == 950 and record.reservation is None


def test_concurrent_requests_are_reconciled_in_a_few_calls_each_exactly_once(redis_server):
    consumer = Consumer(name="team", limits=LIMITS)
    requests = 64

    async def scenario():
        store = store_from_settings({"GATEWAY_STATE": redis_server.url})
        limiter = Limiter(store, on_cooldowns=lambda cooldowns: None, clock=lambda: T0)
        try:
            assert await store.connect()

            async def request(number: int) -> None:
                record = RequestRecord(request_id=f"r{number}")
                await limiter.admit(consumer, record, 4000, {}, [])  # 1000 reserved
                await asyncio.sleep(0)
                limiter.settle(finished(record, number))  # used: 0..63

            before = script_calls(redis_server)
            await asyncio.gather(*(request(number) for number in range(requests)))
            await store.drain()
            calls = script_calls(redis_server) - before
            assert requests < calls <= requests + 8, calls  # the admissions, then a few batches
            assert await used(store, "team") == (sum(range(requests)),) * 2
            assert store.lost_reconciles_total == 0 and not store.degraded
        finally:
            await store.close()
    asyncio.run(scenario())


def test_a_reconciliation_goes_with_the_next_admission_in_one_write_and_is_applied_first(redis_server):
    limits = Limits(tokens_per_minute=1000)
    stats = redis.Redis(port=redis_server.port)

    async def scenario():
        store = store_from_settings({"GATEWAY_STATE": redis_server.url})
        try:
            first = (await store.admit("team", limits, 600, T0)).reservation
            store.reconcile_soon(first, 100, T0)  # 500 to give back: not sent yet
            reads = stats.info("stats")["total_reads_processed"]
            second = await store.admit("team", limits, 600, T0)  # fits only once the 500 are back
            assert second.admitted and second.tokens.remaining == 300
            # One read for both commands, one for this INFO (two writes would be two reads).
            assert stats.info("stats")["total_reads_processed"] - reads == 2
            store.reconcile_soon(second.reservation, 0, T0)
            await asyncio.sleep(0.05)  # no admission comes: sent on its own after FLUSH_DELAY
            assert (await store.primary.usage("team", limits, T0)).tokens.remaining == 900
            assert store.lost_reconciles_total == 0
        finally:
            await store.close()
    asyncio.run(scenario())


def test_reconciliations_sent_after_a_script_flush_are_applied_once(redis_server):
    async def scenario():
        store = store_from_settings({"GATEWAY_STATE": redis_server.url})
        try:
            reservation = (await store.admit("team", LIMITS, 100, T0)).reservation
            redis.Redis(port=redis_server.port).script_flush()  # NOSCRIPT: nothing ran, sent again as EVAL
            store.reconcile_soon(reservation, 30, T0)
            assert (await store.admit("other", LIMITS, 1, T0)).reservation.store == "redis"
            await store.drain()
            assert await used(store, "team") == (30, 30) and store.lost_reconciles_total == 0
        finally:
            await store.close()
    asyncio.run(scenario())


def test_one_call_reconciles_many_consumers_and_skips_what_changes_nothing(redis_server):
    async def scenario():
        store = RedisStore.from_url(redis_server.url)
        try:
            items = []
            for number in range(5):
                reservation = (await store.admit(f"c{number}", LIMITS, 100, T0)).reservation
                items.append((reservation, 10 * number, T0))  # c0..c4 used 0, 10, ... 40
            unchanged = (await store.admit("same", LIMITS, 100, T0)).reservation
            before = script_calls(redis_server)
            assert await store.reconcile_many([*items, (unchanged, 100, T0)]) == 0
            assert script_calls(redis_server) - before == 1
            assert await store.reconcile_many([(unchanged, 100, T0)]) == 0  # nothing to change: no call
            assert script_calls(redis_server) - before == 1
            assert [await used(store, f"c{number}") for number in range(5)] == [(10 * n, 10 * n) for n in range(5)]
            assert await used(store, "same") == (100, 100)
        finally:
            await store.close()
    asyncio.run(scenario())


def test_one_refused_inside_a_batch_is_counted_and_the_others_applied_once(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="routing.state")

    async def scenario():
        store = store_from_settings({"GATEWAY_STATE": redis_server.url})
        try:
            reservations = [(await store.admit(name, LIMITS, 100, T0)).reservation for name in ("a", "bad", "c")]
            # The bucket of "bad" is no longer a hash: its reconciliation fails inside the script.
            redis.Redis(port=redis_server.port).set("{routing}:tokens:bad", "not a bucket")
            for reservation in reservations:
                store.reconcile_soon(reservation, 30, T0)
            await store.drain()
            assert store.lost_reconciles_total == 1 and not store.degraded
            assert await used(store, "a") == await used(store, "c") == (30, 30)
            store.reconcile_soon(reservations[1], 20, T0)  # fails again: counted, not logged again
            await store.drain()
            assert store.lost_reconciles_total == 2
        finally:
            await store.close()
    asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.name == "routing.state"]
    assert len(warnings) == 1 and "dropped" in warnings[0]


def test_redis_failing_between_batches_counts_them_lost_and_never_sends_them_again(redis_server, monkeypatch):
    """Ten reconciliations in three batches of at most 4, sent together: applied once each. Then
    Redis freezes: four more are written but never answered, two more find no connection; all
    six are counted lost. The server may still run what was written when it wakes up (once);
    a client that sent them again would apply them twice."""
    monkeypatch.setattr(resilient, "MAX_BATCH", 4)

    async def scenario():
        store = store_from_settings({"GATEWAY_STATE": redis_server.url})
        try:
            reservations = [(await store.admit(f"c{number}", LIMITS, 100, T0)).reservation for number in range(16)]
            before = script_calls(redis_server)
            for reservation in reservations[:10]:
                store.reconcile_soon(reservation, 40, T0)
            await store.drain()
            assert script_calls(redis_server) - before == 3 and store.lost_reconciles_total == 0
            redis_server.freeze()
            for reservation in reservations[10:14]:
                store.reconcile_soon(reservation, 40, T0)
            await store.drain()
            assert store.lost_reconciles_total == 4 and store.degraded
            for reservation in reservations[14:]:
                store.reconcile_soon(reservation, 40, T0)
            await store.drain()
            assert store.lost_reconciles_total == 6 and store.degraded_total == 1
        finally:
            redis_server.resume()
            await store.close()
        checker = RedisStore.from_url(redis_server.url)
        try:
            for number in range(16):
                taken = await used(checker, f"c{number}")
                if number < 10:
                    assert taken == (40, 40)
                else:
                    assert taken in ((100, 100), (40, 40))  # not run, or run once (never 60 back twice)
        finally:
            await checker.close()
    asyncio.run(scenario())


def test_redis_stopped_with_reconciliations_queued_counts_each_lost_once(redis_server):
    async def scenario():
        store = store_from_settings({"GATEWAY_STATE": redis_server.url})
        try:
            reservations = [(await store.admit(f"c{number}", LIMITS, 100, T0)).reservation for number in range(5)]
            redis_server.stop()
            for reservation in reservations:
                store.reconcile_soon(reservation, 10, T0)
            await store.drain()
            assert store.lost_reconciles_total == 5 and store.degraded
            from_memory = (await store.admit("c0", LIMITS, 100, T0)).reservation
            store.reconcile_soon(from_memory, 10, T0)  # memory's: applied at once, whatever Redis does
            assert (await store.fallback.usage("c0", LIMITS, T0)).quota_used == 10
            await store.drain()
            assert store.lost_reconciles_total == 5
        finally:
            if redis_server.process is None:
                redis_server.start()
            await store.close()
    asyncio.run(scenario())


def test_close_sends_what_is_still_queued(redis_server):
    async def scenario():
        store = store_from_settings({"GATEWAY_STATE": redis_server.url})
        reservations = [(await store.admit("team", LIMITS, 100, T0)).reservation for _ in range(20)]
        for reservation in reservations:
            store.reconcile_soon(reservation, 25, T0)
        await store.close()  # no drain first
        assert store.lost_reconciles_total == 0
        checker = RedisStore.from_url(redis_server.url)
        try:
            assert await used(checker, "team") == (500, 500)
        finally:
            await checker.close()
    asyncio.run(scenario())


def test_the_queue_is_bounded_and_what_overflows_is_counted(redis_server, monkeypatch):
    monkeypatch.setattr(resilient, "MAX_QUEUED", 5)

    async def scenario():
        store = store_from_settings({"GATEWAY_STATE": redis_server.url})
        try:
            reservations = [(await store.admit("team", LIMITS, 100, T0)).reservation for _ in range(8)]
            for reservation in reservations:  # in one loop turn: nothing is sent meanwhile
                store.reconcile_soon(reservation, 0, T0)
            assert store.lost_reconciles_total == 3
            await store.drain()
            assert await used(store, "team") == (300, 300)  # 5 gave their 100 back, 3 did not
        finally:
            await store.close()
    asyncio.run(scenario())
