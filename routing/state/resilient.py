"""`ResilientStore`: the shared store (Redis) while it answers in time, this instance's memory
while it does not (DESIGN §11: a request never fails because the state store did).

- Each call to the shared store is bounded (`call_timeout`, on top of the connection's own
  reply timeout), by one bare timer that cancels the call (asyncio.timeout costs twice as much
  on every request). When it expires it lets what the loop has already received run first: a
  loop that stalled (a GC pause) while the answer arrived does not count as Redis being slow.
  A failure or a timeout serves that call from memory and turns the store degraded: one
  warning (logger `routing.state`, naming the store's host:port, never a key or token),
  `degraded_total` counts it, and later calls go straight to memory without waiting on Redis.
- While degraded, a call at most every `probe_interval` seconds starts one background probe
  (PING, which also reconnects, authenticates and loads the scripts, bounded by
  `probe_timeout`); when it answers, the store goes back to Redis by itself (one info line).
- A reservation is reconciled in the store that took it (`Reservation.store`): one taken from
  Redis is reconciled there even while degraded (it is accounting after the response, and
  Redis may be back already); if that fails the difference is dropped, counted in
  `lost_reconciles_total`.
- `reconcile_soon` (the end of every request) never waits: memory's are applied at once;
  Redis's are queued, then sent together as one script call (at most MAX_BATCH each) with the
  next admission's command: one write and one round trip for both, the reconciliations
  applied first; or on their own when no admission comes within FLUSH_DELAY. While a batch is
  in flight the next ones wait for its answer: under load, one call per round trip however
  many requests end meanwhile; at one request at a time, no round trip of its own. Each is
  applied once or counted lost: a failed call counts all of its batch (never sent again: it
  may have run), one refused inside the script counts itself (logged once). The queue is
  bounded (MAX_QUEUED; beyond, counted lost); `close` sends what is left.
- Cooldowns are written to memory always (so this instance keeps what it learnt when Redis goes
  away) and to Redis while it answers. On recovery the cooldowns still running in memory are
  written to Redis too (best effort, a later end wins there), so what the instance learnt while
  degraded reaches the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from routing.state.memory import MemoryStore
from routing.state.store import Admission, Limits, Reservation, Usage

log = logging.getLogger("routing.state")
T = TypeVar("T")


MAX_BATCH = 200  # reconciliations in one script call
MAX_QUEUED = 10_000  # reconciliations waiting to be sent; beyond, dropped (and counted)
FLUSH_DELAY = 0.002  # seconds a reconciliation waits for an admission to go with, at most


class SharedStore(Protocol):
    """What ResilientStore needs of the shared store (RedisStore, which is used through it: it
    has no `reconcile_soon` of its own)."""
    name: str
    address: str  # host:port, for log lines
    failures: tuple[type[BaseException], ...]  # what its calls raise when it is unavailable

    async def admit(self, consumer: str, limits: Limits, tokens: int, now: float,
                    routes: Sequence[str] = ()) -> Admission: ...

    async def reconcile_many(self, items: Sequence[tuple[Reservation, int, float]]) -> int:
        """Apply them in one call; how many could not be applied. Raises when the call failed."""

    def send_reconciles(self, items: Sequence[tuple[Reservation, int, float]],
                        answered: Callable[[int, BaseException | None], None]) -> bool:
        """The same without waiting, written with the next command; `answered(refused, error)`
        once. False when not connected (nothing sent)."""

    async def cool_down(self, route_id: str, until: float, now: float | None = None) -> None: ...

    async def usage(self, consumer: str, limits: Limits, now: float) -> Usage: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


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
        self._queue: deque[tuple[Reservation, int, float]] = deque()  # Redis reconciliations to send
        self._flush_timer: asyncio.TimerHandle | None = None  # sends them when no admission came
        self._in_flight = 0  # batches sent, not answered yet
        self._all_answered: asyncio.Future | None = None  # what drain() waits for
        self._loss_logged = False
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
        if self._queue and not self._in_flight and not self.degraded:
            self._flush()  # the reconciliations waiting go in this admission's write
        answered, admission = await self._from_primary(
            lambda: self.primary.admit(consumer, limits, tokens, now, routes))
        if answered:
            return admission
        return await self.fallback.admit(consumer, limits, tokens, now, routes)

    async def reconcile(self, reservation: Reservation, used_tokens: int, now: float) -> None:
        self._last_now = now
        if reservation.store != self.primary.name:
            self.fallback.reconcile_soon(reservation, used_tokens, now)
            return
        await self._send([(reservation, used_tokens, now)])

    def reconcile_soon(self, reservation: Reservation, used_tokens: int, now: float) -> None:
        self._last_now = now
        if reservation.store != self.primary.name:
            self.fallback.reconcile_soon(reservation, used_tokens, now)
            return
        if len(self._queue) >= MAX_QUEUED:
            self._lose(1, "the queue of reconciliations is full")
            return
        if self._flush_timer is None and not self._in_flight:  # (in flight: its answer sends them)
            try:
                self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush)
            except RuntimeError:  # no event loop: the process is ending
                self._lose(1, "no event loop")
                return
        self._queue.append((reservation, used_tokens, now))

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
        await self.drain()  # what is queued goes out first (bounded: call_timeout a batch)
        await self.primary.close()
        await self.fallback.close()

    async def drain(self) -> None:
        """Until the reconciliations queued so far are sent and answered (or counted lost)."""
        self._flush()
        while self._in_flight:
            if self._all_answered is None:
                self._all_answered = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._all_answered)

    # -- reconciliations ------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send the queue now, at most MAX_BATCH a call: written with this loop turn's other
        commands (bounded by the connection's reply timeout). Without a connection, a task
        connects first (bounded by call_timeout)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
            count = len(batch)
            try:
                sent = self.primary.send_reconciles(
                    batch, lambda refused, error, count=count: self._answered(count, refused, error))
            except Exception:  # a bug, not the store: counted
                self.lost_reconciles_total += count
                log.exception("shared state store %s: sending %d reconciliation(s) failed", self.primary.address,
                              count)
                continue
            if not sent:  # not connected: `_send` connects, and counts what it loses itself
                task = asyncio.get_running_loop().create_task(self._send(batch))
                task.add_done_callback(lambda task: self._answered(0, 0, None))
            self._in_flight += 1

    def _answered(self, count: int, refused: int, error: BaseException | None) -> None:
        """A batch of `count` answered: `refused` of them refused, or the call failed (`error`).
        The next batch goes once none is left in flight."""
        self._in_flight -= 1
        if error is not None:
            self.lost_reconciles_total += count  # unknown whether it ran: never sent again
            if isinstance(error, self._failures):
                self._degrade(error)
            else:
                log.error("shared state store %s: sending %d reconciliation(s) failed (%s)", self.primary.address,
                          count, type(error).__name__)
        elif refused:
            self._lose(refused, "Redis refused them")
        if not self._in_flight:
            if self._queue:
                self._flush()
            elif self._all_answered is not None:
                self._all_answered.set_result(None)
                self._all_answered = None

    async def _send(self, batch: list[tuple[Reservation, int, float]]) -> None:
        """One batch through `reconcile_many` (connecting if need be), bounded by call_timeout."""
        try:
            refused = await self._bounded(lambda: self.primary.reconcile_many(batch))
        except self._failures as error:
            self.lost_reconciles_total += len(batch)  # unknown whether it ran: never sent again
            self._degrade(error)
        except asyncio.CancelledError:
            self.lost_reconciles_total += len(batch)
            raise
        except Exception:  # a bug, not the store: counted
            self.lost_reconciles_total += len(batch)
            log.exception("shared state store %s: sending %d reconciliation(s) failed", self.primary.address,
                          len(batch))
        else:
            if refused:
                self._lose(refused, "Redis refused them")

    def _lose(self, count: int, why: str) -> None:
        self.lost_reconciles_total += count
        if not self._loss_logged:
            self._loss_logged = True
            log.warning("shared state store %s: %d reconciliation(s) of finished requests dropped (%s); "
                        "lost_reconciles_total counts them (logged once)", self.primary.address, count, why)

    # -- degrading and recovering ---------------------------------------------------------------

    async def _from_primary(self, call: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, answer) from the shared store, or (False, None): serve from memory."""
        if self.degraded:
            self._maybe_probe()
        else:
            try:
                return True, await self._bounded(call)
            except self._failures as error:
                self._degrade(error)
        self.fallback_calls_total += 1
        return False, None

    async def _bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` within call_timeout, else TimeoutError (what asyncio.timeout does)."""
        task = asyncio.current_task()
        state = [task.cancelling(), False, False]  # cancellations before, call over, timer cancelled it
        timer = task.get_loop().call_later(self.call_timeout, _expire, task, state)
        try:
            return await call()
        except asyncio.CancelledError:
            if state[2] and task.uncancel() <= state[0]:
                raise TimeoutError from None
            raise
        finally:
            state[1] = True
            timer.cancel()

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


def _expire(task: asyncio.Task, state: list) -> None:
    """call_timeout is over: cancel the call, after what the loop has already made ready (a
    reply read in this same loop turn resumes the task first, and then it is over)."""
    task.get_loop().call_soon(_cancel_if_still_waiting, task, state)


def _cancel_if_still_waiting(task: asyncio.Task, state: list) -> None:
    if not state[1]:
        state[2] = True
        task.cancel()
