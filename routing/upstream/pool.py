"""Pick the deployments to try for a model: lowest PRIORITY first, weighted random within a
priority, skipping deployments cooling down after a 429/5xx/timeout.

Cooldowns are per process (each Functions instance learns on its own). They sit behind the
small `CooldownStore` interface so that a shared store (Redis, Table storage) can replace the
in-memory one without touching selection.
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


class LocalCooldowns:
    """In-memory cooldowns for this instance: route id → monotonic time it may be used again."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def until(self, route_id: str) -> float:
        return self._until.get(route_id, 0.0)

    def rest(self, route_id: str, until: float) -> None:
        self._until[route_id] = max(until, self._until.get(route_id, 0.0))


class Selector:
    def __init__(self, cooldowns: CooldownStore | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self.cooldowns = cooldowns or LocalCooldowns()
        self.clock = clock
        self.rng = rng or random.Random()

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

    def shortest_wait(self, pool: Sequence[Route]) -> float:
        """Seconds until the first selectable route of the pool leaves its cooldown."""
        now = self.clock()
        waits = [self.cooldowns.until(r.id) - now for r in pool if r.weight > 0]
        return max(min(waits, default=0.0), 0.0)
