"""`MemoryStore`: the limits and cooldowns of this instance only (GATEWAY_STATE=memory, and the
fallback of `ResilientStore` while Redis does not answer). Semantics: routing/state/store.py.

Every method runs without awaiting anything, so on the event loop each call is atomic: concurrent
admissions cannot both take the last tokens.

Bounded memory: a bucket that is full again is the same as no bucket, a cooldown that ended is
the same as none, and only the current quota period of a consumer counts; so a sweep, at most
every SWEEP_INTERVAL seconds of the callers' clock (linear in the entries, amortised over the
calls in between), drops them. What stays is what a busy minute, the current periods and the
running cooldowns need.
"""

from __future__ import annotations

from collections.abc import Sequence

from routing.state.store import (REFUSED_BY_QUOTA, REFUSED_BY_REQUESTS, REFUSED_BY_TOKENS, Admission, Limits,
                                 Reservation, Usage, bucket_admits, build_admission, build_usage, period_bounds,
                                 refilled)

SWEEP_INTERVAL = 10.0  # seconds of the callers' clock between sweeps


class _Bucket:
    __slots__ = ("level", "updated_at", "capacity")

    def __init__(self, level: float, updated_at: float, capacity: int):
        self.level, self.updated_at, self.capacity = level, updated_at, capacity


class _QuotaPeriod:
    __slots__ = ("start", "end", "used")

    def __init__(self, start: int, end: int, used: int = 0):
        self.start, self.end, self.used = start, end, used


class MemoryStore:
    name = "memory"

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], _Bucket] = {}  # (consumer, "tokens" | "requests")
        self._quotas: dict[str, _QuotaPeriod] = {}  # consumer -> its current quota period
        self._cooldowns: dict[str, float] = {}  # route id -> end (epoch seconds)
        self._next_sweep = 0.0

    @property
    def entry_count(self) -> int:
        """Buckets, quota periods and cooldowns held (what bounded memory is about)."""
        return len(self._buckets) + len(self._quotas) + len(self._cooldowns)

    def active_cooldowns(self, now: float) -> dict[str, float]:
        return {route: until for route, until in self._cooldowns.items() if until > now}

    # -- the StateStore interface ---------------------------------------------------------------

    async def admit(self, consumer: str, limits: Limits, tokens: int, now: float,
                    routes: Sequence[str] = ()) -> Admission:
        self._sweep(now)
        cooldowns = {route: until for route in routes if (until := self._cooldowns.get(route, 0.0)) > now}
        if not limits:
            return Admission(admitted=True, cooldowns=cooldowns)
        cost = max(int(tokens), 0)
        tpm, rpm, quota = limits.tokens_per_minute, limits.requests_per_minute, limits.token_quota
        token_level = self._level(consumer, "tokens", tpm, now) if tpm else 0.0
        request_level = self._level(consumer, "requests", rpm, now) if rpm else 0.0
        period = self._period(consumer, limits.quota_period, now) if quota else None
        used = period.used if period else 0

        refused = 0
        if tpm and not bucket_admits(tpm, token_level, cost):
            refused |= REFUSED_BY_TOKENS
        if rpm and not bucket_admits(rpm, request_level, 1):
            refused |= REFUSED_BY_REQUESTS
        if quota and used + cost > quota:
            refused |= REFUSED_BY_QUOTA
        if not refused:
            if tpm:
                token_level -= cost
                self._save(consumer, "tokens", token_level, tpm, now)
            if rpm:
                request_level -= 1
                self._save(consumer, "requests", request_level, rpm, now)
            if period:
                period.used = used = used + cost
                self._quotas[consumer] = period
        return build_admission(self.name, consumer, limits, cost, now, refused, token_level, request_level,
                               used, cooldowns)

    async def reconcile(self, reservation: Reservation, used_tokens: int, now: float) -> None:
        self.reconcile_soon(reservation, used_tokens, now)

    def reconcile_soon(self, reservation: Reservation, used_tokens: int, now: float) -> None:
        """`reconcile`, applied before returning (nothing to wait for in memory)."""
        returned = reservation.tokens - max(int(used_tokens), 0)  # negative: it used more than reserved
        if not returned:
            return
        consumer = reservation.consumer
        bucket = self._buckets.get((consumer, "tokens"))
        capacity = reservation.tokens_per_minute or (bucket.capacity if bucket else None)
        if capacity:
            level = min(self._level(consumer, "tokens", capacity, now) + returned, float(capacity))
            self._save(consumer, "tokens", level, capacity, now)
        period = self._quotas.get(consumer)
        if reservation.quota_period_start is not None and period and period.start == reservation.quota_period_start:
            period.used = max(period.used - returned, 0)

    async def cool_down(self, route_id: str, until: float, now: float | None = None) -> None:
        if until > self._cooldowns.get(route_id, 0.0):
            self._cooldowns[route_id] = until
        if now is not None:  # the sweep runs on the callers' clock only
            self._sweep(now)

    async def usage(self, consumer: str, limits: Limits, now: float) -> Usage:
        tpm, rpm = limits.tokens_per_minute, limits.requests_per_minute
        period = self._quotas.get(consumer)
        used = 0
        if limits.token_quota and period and period.start == period_bounds(limits.quota_period, now)[0]:
            used = period.used
        return build_usage(limits, now, self._level(consumer, "tokens", tpm, now) if tpm else 0.0,
                           self._level(consumer, "requests", rpm, now) if rpm else 0.0, used)

    async def close(self) -> None:
        pass

    # -- state ----------------------------------------------------------------------------------

    def _level(self, consumer: str, kind: str, capacity: int, now: float) -> float:
        bucket = self._buckets.get((consumer, kind))
        if bucket is None:  # dropped as full, or never used
            return float(capacity)
        return refilled(bucket.level, bucket.updated_at, capacity, now)

    def _save(self, consumer: str, kind: str, level: float, capacity: int, now: float) -> None:
        key = (consumer, kind)
        if level >= capacity:
            self._buckets.pop(key, None)
            return
        bucket = self._buckets.get(key)
        # A caller's clock behind the last update must not make the elapsed time count twice.
        updated_at = max(now, bucket.updated_at) if bucket else now
        self._buckets[key] = _Bucket(level, updated_at, capacity)

    def _period(self, consumer: str, period: str | None, now: float) -> _QuotaPeriod:
        start, end = period_bounds(period, now)
        current = self._quotas.get(consumer)
        if current and current.start == start and current.end == end:
            return current
        return _QuotaPeriod(start, end)  # a new period: stored once something is charged to it

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        self._buckets = {key: bucket for key, bucket in self._buckets.items()
                         if refilled(bucket.level, bucket.updated_at, bucket.capacity, now) < bucket.capacity}
        self._quotas = {consumer: period for consumer, period in self._quotas.items() if period.end > now}
        self._cooldowns = {route: until for route, until in self._cooldowns.items() if until > now}
