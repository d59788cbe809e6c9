"""`ResilientStore`: the shared store (Redis) while it answers in time, this instance's memory
while it does not (DESIGN §11: a request never fails because the state store did).

- Each call to the shared store is bounded (`call_timeout`, on top of the client's own socket
  timeouts). A failure or a timeout serves that call from memory and turns the store degraded:
  one warning (logger `routing.state`, naming the store's host:port, never a key or token),
  `degraded_total` counts it, and later calls go straight to memory without waiting on Redis.
- While degraded, a call at most every `probe_interval` seconds starts one background probe
  (PING, which also reconnects, authenticates and loads the scripts, bounded by
  `probe_timeout`); when it answers, the store goes back to Redis by itself (one info line).
- A reservation is reconciled in the store that took it (`Reservation.store`): one taken from
  Redis is reconciled there even while degraded (it is accounting after the response, and
  Redis may be back already); if that fails the difference is dropped, counted in
  `lost_reconciles_total`.
- Cooldowns are written to memory always (so this instance keeps what it learnt when Redis goes
  away) and to Redis while it answers. On recovery the cooldowns still running in memory are
  written to Redis too (best effort, a later end wins there), so what the instance learnt while
  degraded reaches the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from routing.state.memory import MemoryStore
from routing.state.store import Admission, Limits, Reservation, StateStore, Usage

log = logging.getLogger("routing.state")
T = TypeVar("T")


class SharedStore(StateStore, Protocol):
    address: str  # host:port, for log lines
    failures: tuple[type[BaseException], ...]  # what its calls raise when it is unavailable

    async def ping(self) -> None: ...


class ResilientStore:
    def __init__(self, primary: SharedStore, fallback: MemoryStore | None = None, *, call_timeout: float = 0.1,
                 probe_interval: float = 1.0, probe_timeout: float = 1.0):
        self.primary = primary
        self.fallback = fallback or MemoryStore()
        self.call_timeout = call_timeout
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self._failures = (*primary.failures, TimeoutError)
        self._degraded_since: float | None = None  # monotonic time, None while Redis answers
        self._next_probe = 0.0
        self._probe: asyncio.Task | None = None
        self._last_now: float | None = None  # the callers' latest clock, for the cooldown replay
        self.degraded_total = 0  # times the store switched to memory
        self.fallback_calls_total = 0  # calls answered from memory because of that
        self.lost_reconciles_total = 0  # Redis reservations whose reconcile failed
        self.probes_total = 0  # background probes started while degraded

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def degraded(self) -> bool:
        return self._degraded_since is not None

    async def connect(self) -> bool:
        """Probe the shared store now (at startup: connection, authentication and scripts ready
        before the first request, with the probe's longer timeout). False: degraded."""
        return await self._probe_once()

    # -- the StateStore interface ---------------------------------------------------------------

    async def admit(self, consumer: str, limits: Limits, tokens: int, now: float,
                    routes: Sequence[str] = ()) -> Admission:
        self._last_now = now
        answered, admission = await self._from_primary(
            lambda: self.primary.admit(consumer, limits, tokens, now, routes))
        if answered:
            return admission
        return await self.fallback.admit(consumer, limits, tokens, now, routes)

    async def reconcile(self, reservation: Reservation, used_tokens: int, now: float) -> None:
        self._last_now = now
        if reservation.store != self.primary.name:
            await self.fallback.reconcile(reservation, used_tokens, now)
            return
        try:
            async with asyncio.timeout(self.call_timeout):
                await self.primary.reconcile(reservation, used_tokens, now)
        except self._failures as error:
            self.lost_reconciles_total += 1
            self._degrade(error)

    async def cool_down(self, route_id: str, until: float, now: float | None = None) -> None:
        if now is not None:
            self._last_now = now
        await self.fallback.cool_down(route_id, until, now)
        await self._from_primary(lambda: self.primary.cool_down(route_id, until, now))

    async def usage(self, consumer: str, limits: Limits, now: float) -> Usage:
        self._last_now = now
        answered, usage = await self._from_primary(lambda: self.primary.usage(consumer, limits, now))
        return usage if answered else await self.fallback.usage(consumer, limits, now)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        await self.primary.close()
        await self.fallback.close()

    # -- degrading and recovering ---------------------------------------------------------------

    async def _from_primary(self, call: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, answer) from the shared store, or (False, None): serve from memory."""
        if self.degraded:
            self._maybe_probe()
        else:
            try:
                async with asyncio.timeout(self.call_timeout):
                    return True, await call()
            except self._failures as error:
                self._degrade(error)
        self.fallback_calls_total += 1
        return False, None

    def _degrade(self, error: BaseException) -> None:
        if self.degraded:
            return
        self._degraded_since = time.monotonic()
        self._next_probe = self._degraded_since + self.probe_interval
        self.degraded_total += 1
        # The error's type only: its text may quote what the server or a proxy said.
        log.warning("shared state store %s unavailable (%s); serving limits and cooldowns from this "
                    "instance's memory until it answers again", self.primary.address, type(error).__name__)

    def _maybe_probe(self) -> None:
        if self._probe is None and time.monotonic() >= self._next_probe:
            self.probes_total += 1
            self._probe = asyncio.get_running_loop().create_task(self._run_probe())

    async def _run_probe(self) -> None:
        try:
            await self._probe_once()
        finally:
            self._probe = None

    async def _probe_once(self) -> bool:
        """Is the shared store answering? When it is again, the cooldowns learnt meanwhile are
        written to it and the store goes back to it."""
        try:
            async with asyncio.timeout(self.probe_timeout):
                await self.primary.ping()
                if self.degraded:
                    now = self._last_now if self._last_now is not None else time.time()
                    for route_id, until in self.fallback.active_cooldowns(now).items():
                        await self.primary.cool_down(route_id, until, now)
        except self._failures as error:
            self._degrade(error)  # logs only when it was not degraded yet
            self._next_probe = time.monotonic() + self.probe_interval
            return False
        if self.degraded:
            seconds = time.monotonic() - self._degraded_since
            self._degraded_since = None
            log.info("shared state store %s answers again after %.1f s; limits and cooldowns are shared again",
                     self.primary.address, seconds)
        return True
