"""What a finished request is charged (routing.limits.limiter, DESIGN §10), on the memory store
with a fixed clock: the reservation becomes what was really used, however the request ended."""

from __future__ import annotations

import asyncio

import pytest

from routing.config.consumers import Consumer
from routing.limits.limiter import DEFAULT_COMPLETION_ESTIMATE, Limiter, estimate_tokens
from routing.state import Limits, MemoryStore
from routing.telemetry.record import RequestRecord

NOW = 1_800_000_000.0
QUOTA = 100_000
CONSUMER = Consumer("team", limits=Limits(token_quota=QUOTA, quota_period="daily"))
BODY = {"model": "m", "messages": [{"role": "user", "content": "x" * 396}]}  # 400 bytes: 100 tokens


def used_after(**record_fields) -> int:
    async def run():
        store = MemoryStore()
        limiter = Limiter(store, lambda cooldowns: None, clock=lambda: NOW)
        record = RequestRecord("r", record_fields.pop("operation", "chat/completions"))
        await limiter.admit(CONSUMER, record, 400, {**BODY, **record_fields.pop("body", {})}, ["R"])
        for name, value in record_fields.items():
            setattr(record, name, value)
        limiter.settle(record)
        await asyncio.sleep(0)
        usage = await store.usage("team", CONSUMER.limits, NOW)
        return QUOTA - usage.quota.remaining

    return asyncio.run(run())


def test_estimates():
    assert estimate_tokens(400, BODY) == (100, 100 + DEFAULT_COMPLETION_ESTIMATE)
    assert estimate_tokens(400, {**BODY, "max_tokens": 50}) == (100, 150)
    assert estimate_tokens(400, {"input": "x"}, "embeddings") == (100, 100)


@pytest.mark.parametrize("fields, expected", [
    ({"status": 200, "attempts": 1, "total_tokens": 37}, 37),  # reported usage
    ({"status": 429, "attempts": 0}, 0),  # refused before any upstream
    ({"status": 502, "attempts": 2}, 0),  # every deployment failed: nothing generated
    ({"status": 499, "attempts": 1}, 100),  # left while the answer was made: the prompt was read
    # A stream cut short before its usage chunk: the prompt plus what reached the client.
    ({"status": 499, "attempts": 1, "stream": True, "relayed_bytes": 4000}, 100 + 1000),
    ({"status": 504, "attempts": 1, "stream": True, "relayed_bytes": 800}, 100 + 200),
    # A background Responses create: charged its whole estimate (its answer comes later).
    ({"status": 200, "attempts": 1, "background": True, "operation": "responses"}, 100 + DEFAULT_COMPLETION_ESTIMATE),
    ({"status": 200, "attempts": 1, "background": True, "operation": "responses", "body": {"max_output_tokens": 5000}},
     100 + 5000),
])
def test_what_a_finished_request_is_charged(fields, expected):
    assert used_after(**fields) == expected

