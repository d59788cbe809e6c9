"""Pick the deployments to try for a model: lowest PRIORITY first, weighted random within a
priority, skipping deployments cooling down after a 429/5xx/connect error or an open breaker.

Cooldowns (DESIGN §5): after a 429, 408, 5xx, a broken answer or a connect error the deployment
rests for the upstream's retry hint, else GATEWAY_COOLDOWN.

Timeouts and the circuit breaker (DESIGN §8): a request can be slow because of what it asks
(a long generation), so one timed-out request only fails that request over; it does not rest the
deployment for everyone. The deployment's breaker counts consecutive timed-out requests:
- closed: each timeout adds one; any answer in time (a success, and also a 4xx, 429, 5xx or
  broken answer: the deployment is responsive) resets the count to zero;
- open: at GATEWAY_BREAKER_TIMEOUTS consecutive timeouts the deployment rests for
  GATEWAY_COOLDOWN and is not tried meanwhile;
- half-open: after that rest it is tried again with the count kept, so one more timeout opens
  the breaker again at once, and one answer in time closes it.
Connect errors do not count: they are not a slow-request problem and nothing a caller sends can
cause one, so they rest the deployment at once, as before.

State is per process (each Functions instance learns on its own), behind the small
`CooldownStore` interface so that a shared store (Redis) can replace the in-memory one without
touching selection.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from routing.config.settings import Route


class CooldownStore(Protocol):
    def until(self, route_id: str) -> float: ...
    def rest(self, route_id: str, until: float) -> None: ...
    def add_timeout(self, route_id: str, consumer: str) -> tuple[int, int]:
        """Count one more timed-out request; (the consecutive count, this one included, and how
        many distinct consumers those came from, counted up to 2)."""
    def reset_timeouts(self, route_id: str) -> None: ...


class LocalCooldowns:
    """In-memory state for this instance: route id → monotonic time it may be used again, and
    route id → consecutive timed-out requests."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._timeouts: dict[str, tuple[int, frozenset[str]]] = {}

    def until(self, route_id: str) -> float:
        return self._until.get(route_id, 0.0)

    def rest(self, route_id: str, until: float) -> None:
        self._until[route_id] = max(until, self._until.get(route_id, 0.0))

    def add_timeout(self, route_id: str, consumer: str) -> tuple[int, int]:
        count, consumers = self._timeouts.get(route_id, (0, frozenset()))
        if len(consumers) < 2:
            consumers = consumers | {consumer}
        self._timeouts[route_id] = (count + 1, consumers)
        return count + 1, len(consumers)

    def reset_timeouts(self, route_id: str) -> None:
        if self._timeouts:  # the hot path: nothing to do unless some route timed out
            self._timeouts.pop(route_id, None)


class Selector:
    def __init__(self, cooldowns: CooldownStore | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 on_rest: Callable[[str, float], None] | None = None, consumers: int = 1):
        self.cooldowns = cooldowns or LocalCooldowns()
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_rest = on_rest  # told of every rest this instance decides (shared with the others)
        # The breaker opens on timeouts from this many distinct consumers (2 when there are
        # several): one caller's slow requests must not rest a deployment for everyone.
        self.distinct_consumers = min(max(consumers, 1), 2)
        self._server_errors: dict[str, tuple[float, frozenset[str]]] = {}  # route → (window start, consumers)

    def order(self, pool: Sequence[Route]) -> list[Route]:
        """Routes to try, in order. Empty when every selectable route is cooling down."""
        now = self.clock()
        ready = [r for r in pool if r.weight > 0 and self.cooldowns.until(r.id) <= now]
        if len(ready) <= 1:
            return ready
        # Weighted shuffle (Efraimidis–Spirakis): key u^(1/w), larger first, per priority.
        keyed = [(r.priority, -(self.rng.random() ** (1.0 / r.weight)), i, r) for i, r in enumerate(ready)]
        return [item[3] for item in sorted(keyed)]

    def rest(self, route: Route, seconds: float) -> None:
        self.cooldowns.rest(route.id, self.clock() + max(seconds, 0.0))
        if self.on_rest is not None and seconds > 0:
            self.on_rest(route.id, seconds)

    def merge_shared(self, cooldowns: dict[str, float]) -> None:
        """Cooldowns another instance decided (route id → end, epoch seconds): rested here too."""
        offset = self.clock() - time.time()
        for route_id, until in cooldowns.items():
            self.cooldowns.rest(route_id, until + offset)

    def timed_out(self, route: Route, breaker_timeouts: int, cooldown: float,
                  consumer: str = "default") -> bool:
        """A request to `route` timed out. True when this opened its breaker (it now rests)."""
        count, distinct = self.cooldowns.add_timeout(route.id, consumer)
        if count < breaker_timeouts or distinct < self.distinct_consumers:
            return False
        self.rest(route, cooldown)
        return True

    def answered(self, route: Route) -> None:
        """`route` answered in time: its breaker closes."""
        self.cooldowns.reset_timeouts(route.id)

    def server_error(self, route: Route, consumer: str | None, seconds: float) -> bool:
        """`route` answered 5xx or broke the protocol for `consumer`'s request. With several
        consumers it rests only once two of them met such a failure within `seconds`: a request
        can cause a 5xx (a malformed body some upstreams fail on), and one caller must not rest
        a deployment for everyone. True when it now rests."""
        if self.distinct_consumers > 1:
            now = self.clock()
            since, seen = self._server_errors.get(route.id, (now, frozenset()))
            if now - since > max(seconds, 1.0):
                since, seen = now, frozenset()
            seen = seen | {consumer or ""} if len(seen) < 2 else seen
            self._server_errors[route.id] = (since, seen)
            if len(self._server_errors) > 4096:
                self._server_errors.clear()
            if len(seen) < self.distinct_consumers:
                return False
            self._server_errors.pop(route.id, None)
        self.rest(route, seconds)
        return True

    def shortest_wait(self, pool: Sequence[Route]) -> float:
        """Seconds until the first selectable route of the pool leaves its cooldown."""
        now = self.clock()
        waits = [self.cooldowns.until(r.id) - now for r in pool if r.weight > 0]
        return max(min(waits, default=0.0), 0.0)
