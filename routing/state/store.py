"""Shared state (DESIGN §11): what limits (§10) and cooldowns (§5) need from a store.

One interface, two stores: `MemoryStore` (per instance, the default) and `RedisStore` (shared by
every instance), wrapped in `ResilientStore`, which serves from memory while Redis is unreachable
or slow and goes back to it by itself. The hot path makes one call, `admit`: one round trip to
Redis at most, with the limits and the cooldowns of the request's routes read together.

Limits are token buckets, one per (consumer, kind): capacity = the per-minute limit, refilled
continuously at limit/60 per second. A request is admitted when every bucket holds its cost (1
request, the token estimate); the costs are then taken at once, atomically, so concurrent
requests cannot both take the last tokens. `reconcile` gives back (or takes more of) the
estimate when the real usage is known; a bucket may go below zero that way (the debt delays the
next requests). Quotas are plain counters per calendar period (UTC), reserved and reconciled the
same way, admitted only when used + cost <= quota.

Decisions shared by every store (the helpers below build the answers of both):
- A cost larger than a bucket's capacity would never fit: it is admitted once the bucket is full
  (the check uses min(cost, capacity)) and the whole cost is taken, so the bucket goes into debt
  and the consumer still averages its per-minute limit.
- Refused by several limits: the code is QUOTA_EXCEEDED when the quota refused (it is not a
  wait-a-moment case), else RATE_LIMITED; `retry_after` is the longest wait among the limits that
  refused, since all of them must pass: for a bucket, until the refused cost fits (with the same
  min(cost, capacity)); for the quota, until the period ends. Never negative.
- A refused request takes nothing. Reconcile changes only the token bucket and the quota (a
  request is one request whatever it used).
- A reconcile for a quota period the store no longer holds (it ended) changes nothing.

Times are seconds since the epoch, passed in by the caller (`now`): every instance's clock is
the wall clock, and tests pass their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol

RATE_LIMITED = "rate_limit_exceeded"
QUOTA_EXCEEDED = "insufficient_quota"
QUOTA_PERIODS = ("hourly", "daily", "weekly", "monthly")


@dataclass(frozen=True)
class Limits:
    """A consumer's limits (None: no such limit)."""
    tokens_per_minute: int | None = None
    requests_per_minute: int | None = None
    token_quota: int | None = None
    quota_period: str | None = None  # one of QUOTA_PERIODS when token_quota is set

    def __bool__(self) -> bool:
        return bool(self.tokens_per_minute or self.requests_per_minute or self.token_quota)


@dataclass(frozen=True)
class Window:
    """One limit's state after the decision, for OpenAI's x-ratelimit-* headers and the usage
    endpoint: `remaining` floored at 0; `reset` seconds until the bucket is full again (quota:
    until the period ends)."""
    limit: int
    remaining: int
    reset: float


@dataclass(frozen=True)
class Reservation:
    """What an admitted request took, to reconcile when it ends."""
    consumer: str
    tokens: int  # the estimate taken from the token bucket and the quota
    quota_period_start: int | None = None  # epoch seconds of the quota period charged
    store: str = "memory"  # which store holds it ("memory" or "redis"): reconciled there
    # The token bucket's capacity when admitted (None: no tokens-per-minute limit), so that a
    # reconcile can rebuild a bucket the store dropped as full meanwhile (a long stream).
    tokens_per_minute: int | None = None


@dataclass
class Admission:
    admitted: bool
    code: str | None = None  # RATE_LIMITED or QUOTA_EXCEEDED when refused
    retry_after: float = 0.0  # seconds until the refused cost would fit (quota: period end)
    tokens: Window | None = None  # present when the consumer has a tokens-per-minute limit
    requests: Window | None = None  # ... a requests-per-minute limit
    quota: Window | None = None  # ... a token quota
    reservation: Reservation | None = None  # when admitted with any limit
    cooldowns: dict[str, float] = field(default_factory=dict)  # route id -> cooldown end (epoch s), only routes cooling down


@dataclass(frozen=True)
class Usage:
    """GET /v1/gateway/usage: the consumer's windows now (nothing taken)."""
    tokens: Window | None
    requests: Window | None
    quota: Window | None
    quota_used: int | None
    quota_period_start: int | None


class StateStore(Protocol):
    name: str  # "memory" or "redis"

    async def admit(self, consumer: str, limits: Limits, tokens: int, now: float,
                    routes: Sequence[str] = ()) -> Admission:
        """Decide and take, atomically: with no limits, admitted with only the cooldowns read."""

    async def reconcile(self, reservation: Reservation, used_tokens: int, now: float) -> None:
        """Replace the reservation's estimate by the tokens really used (0 for a request that
        failed before any usage): the difference goes back to (or is taken from) the token
        bucket and the quota period it was charged to."""

    def reconcile_soon(self, reservation: Reservation, used_tokens: int, now: float) -> None:
        """`reconcile` handed off, for the end of a request: never awaited, never raises for
        the store's sake. Applied now (memory) or queued and sent in the background, batched
        with the others (a shared store); `close` applies what is still queued."""

    async def cool_down(self, route_id: str, until: float, now: float | None = None) -> None:
        """Every instance skips the route until `until` (a later end wins over an earlier one).
        `now` (default: the wall clock) only bounds how long the store keeps the entry."""

    async def usage(self, consumer: str, limits: Limits, now: float) -> Usage: ...

    async def close(self) -> None: ...


# What refused a request, as bit flags (the Redis script returns the same number).
REFUSED_BY_TOKENS = 1
REFUSED_BY_REQUESTS = 2
REFUSED_BY_QUOTA = 4


def period_bounds(period: str | None, now: float) -> tuple[int, int]:
    """The UTC calendar period containing `now`: (start, end) in epoch seconds, end exclusive.
    Weekly periods are ISO weeks (Monday 00:00 UTC)."""
    moment = datetime.fromtimestamp(now, timezone.utc)
    if period == "hourly":
        start = moment.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "weekly":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=moment.weekday())
        end = start + timedelta(weeks=1)
    elif period == "monthly":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    else:
        raise ValueError(f"quota period: expected one of {', '.join(QUOTA_PERIODS)}, got {period!r}")
    return int(start.timestamp()), int(end.timestamp())


def refilled(level: float, updated_at: float, capacity: int, now: float) -> float:
    """A bucket's level at `now`: refilled at capacity/60 per second since `updated_at`, at most
    full. A clock behind the last update refills nothing."""
    return min(level + max(now - updated_at, 0.0) * capacity / 60.0, float(capacity))


def seconds_until_full(level: float, capacity: int) -> float:
    return max((capacity - level) * 60.0 / capacity, 0.0)


def bucket_window(capacity: int, level: float) -> Window:
    return Window(limit=capacity, remaining=max(math.floor(level), 0), reset=seconds_until_full(level, capacity))


def quota_window(quota: int, used: int, period_end: int, now: float) -> Window:
    return Window(limit=quota, remaining=max(quota - used, 0), reset=max(period_end - now, 0.0))


def bucket_admits(capacity: int, level: float, cost: int) -> bool:
    return level >= min(cost, capacity)


def _bucket_wait(capacity: int, level: float, cost: int) -> float:
    return max((min(cost, capacity) - level) * 60.0 / capacity, 0.0)


def build_admission(store: str, consumer: str, limits: Limits, tokens: int, now: float, refused: int,
                    token_level: float, request_level: float, quota_used: int,
                    cooldowns: Mapping[str, float]) -> Admission:
    """The answer to `admit` from a store's decision: `refused` (REFUSED_BY_* flags, 0 when
    admitted) and the levels after it (taken when admitted, untouched when refused)."""
    tpm, rpm, quota = limits.tokens_per_minute, limits.requests_per_minute, limits.token_quota
    answer = Admission(admitted=not refused, cooldowns=dict(cooldowns))
    waits = []
    if tpm:
        answer.tokens = bucket_window(tpm, token_level)
        if refused & REFUSED_BY_TOKENS:
            waits.append(_bucket_wait(tpm, token_level, tokens))
    if rpm:
        answer.requests = bucket_window(rpm, request_level)
        if refused & REFUSED_BY_REQUESTS:
            waits.append(_bucket_wait(rpm, request_level, 1))
    period_start = None
    if quota:
        period_start, period_end = period_bounds(limits.quota_period, now)
        answer.quota = quota_window(quota, quota_used, period_end, now)
        if refused & REFUSED_BY_QUOTA:
            waits.append(max(period_end - now, 0.0))
    if refused:
        answer.code = QUOTA_EXCEEDED if refused & REFUSED_BY_QUOTA else RATE_LIMITED
        answer.retry_after = max(waits, default=0.0)
    elif limits:
        answer.reservation = Reservation(consumer=consumer, tokens=tokens, quota_period_start=period_start,
                                         store=store, tokens_per_minute=tpm or None)
    return answer


def build_usage(limits: Limits, now: float, token_level: float, request_level: float, quota_used: int) -> Usage:
    tpm, rpm, quota = limits.tokens_per_minute, limits.requests_per_minute, limits.token_quota
    quota_window_now = period_start = None
    if quota:
        period_start, period_end = period_bounds(limits.quota_period, now)
        quota_window_now = quota_window(quota, quota_used, period_end, now)
    return Usage(tokens=bucket_window(tpm, token_level) if tpm else None,
                 requests=bucket_window(rpm, request_level) if rpm else None,
                 quota=quota_window_now, quota_used=quota_used if quota else None,
                 quota_period_start=period_start)
