"""Per-app emulator state, request recording and the ``/_emulator/*`` control endpoints.

Every emulator app owns one ``EmulatorState`` (records, fault rules, runtime knobs, counters), so
two apps in one process never see each other's traffic. Handlers are wrapped by ``endpoint()``,
which records the request on arrival and its status once the answer is decided.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .faults import FaultRule, FaultSpecError, FaultTable
from .wire import JSONDecodeError, json_response, loads

DEFAULT_RECORD_LIMIT = 10_000  # bounded so long benchmark runs keep a flat RSS
CLIENT_CLOSED = 499  # recorded when the client went away while a fault delayed the answer


class EmulatorState:
    def __init__(self, name: str, *, answer_words: int, record_limit: int = DEFAULT_RECORD_LIMIT) -> None:
        self.name = name
        self.records: deque[dict[str, Any]] = deque(maxlen=record_limit)
        self.faults = FaultTable()
        self.default_answer_words = answer_words
        self.answer_words = answer_words
        self.chunk_delay = 0.0
        self.record = True
        self.requests = 0
        self.active_streams = 0
        # Set by servers.start(): uvicorn knows the open TCP connections, the ASGI app does not.
        self.connection_count: Callable[[], int] | None = None

    def config_json(self) -> dict[str, Any]:
        return {"chunk_delay": self.chunk_delay, "answer_words": self.answer_words, "record": self.record}

    def set_config(self, spec: Any) -> None:
        if not isinstance(spec, dict) or set(spec) - {"chunk_delay", "answer_words", "record"}:
            raise ValueError("config: expected an object with keys among ['answer_words', 'chunk_delay', 'record']")
        chunk_delay = spec.get("chunk_delay", self.chunk_delay)
        answer_words = spec.get("answer_words", self.answer_words)
        record = spec.get("record", self.record)
        if isinstance(chunk_delay, bool) or not isinstance(chunk_delay, (int, float)) or chunk_delay < 0:
            raise ValueError(f"chunk_delay: expected seconds >= 0, got {chunk_delay!r}")
        if answer_words is None:
            answer_words = self.default_answer_words
        if isinstance(answer_words, bool) or not isinstance(answer_words, int) or answer_words < 1:
            raise ValueError(f"answer_words: expected an integer >= 1, got {answer_words!r}")
        if not isinstance(record, bool):
            raise ValueError(f"record: expected true or false, got {record!r}")
        self.chunk_delay, self.answer_words, self.record = float(chunk_delay), answer_words, record

    def stats_json(self) -> dict[str, Any]:
        count = self.connection_count
        return {
            "open_connections": count() if count is not None else None,
            "active_streams": self.active_streams,
            "requests": self.requests,
        }

    def reset(self) -> None:
        """Back to a fresh app (connections and in-flight streams are facts, not state: kept)."""
        self.records.clear()
        self.requests = 0
        self.faults.clear()
        self.chunk_delay, self.answer_words, self.record = 0.0, self.default_answer_words, True


class Call:
    """One incoming (non-control) request: parsed body, its record and the fault it drew."""

    __slots__ = ("request", "state", "body", "bad_json", "record", "fault")

    def __init__(self, request: Request, state: EmulatorState, raw: bytes) -> None:
        self.request = request
        self.state = state
        self.fault: FaultRule | None = None
        self.bad_json = False
        body: Any = None
        if raw:
            try:
                body = loads(raw)
            except JSONDecodeError:
                self.bad_json = True
        self.body = body
        scope = request.scope
        record: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "query": dict(request.query_params),
            # ASGI servers lower-case header names already.
            "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            "body": body,
            "status": None,
        }
        if self.bad_json:
            record["raw_body"] = raw.decode("utf-8", "replace")
        self.record = record
        state.requests += 1
        if state.record:
            state.records.append(record)

    @property
    def headers(self):
        return self.request.headers

    @property
    def query(self):
        return self.request.query_params

    def take_fault(self, deployment: str | None, stream: bool = False) -> FaultRule | None:
        self.fault = self.state.faults.take(deployment, self.request.scope["path"], stream)
        return self.fault

    def chunk_delay(self) -> float:
        if self.fault is not None and self.fault.chunk_delay is not None:
            return float(self.fault.chunk_delay)
        return self.state.chunk_delay

    def cut_after(self) -> int | None:
        return self.fault.cut_after_chunks if self.fault is not None else None


async def wait_or_disconnect(request: Request, seconds: float) -> bool:
    """Sleep, but wake early when the client hangs up (a "hang" fault must not outlive its client).
    Returns True when the client disconnected."""
    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        done, _ = await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        watcher.cancel()
    return watcher in done


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


Handler = Callable[[Call], Awaitable[Response]]


def endpoint(state: EmulatorState, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an emulator handler: record, run, apply the drawn fault's delay, record the status."""

    async def run(request: Request) -> Response:
        call = Call(request, state, await request.body())
        try:
            response = await handler(call)
        except BaseException:
            call.record["status"] = 500
            raise
        fault = call.fault
        if fault is not None and fault.delay > 0 and await wait_or_disconnect(request, fault.delay):
            call.record["status"] = CLIENT_CLOSED
            return Response(status_code=CLIENT_CLOSED)  # never reaches the (gone) client
        call.record["status"] = response.status_code
        return response

    return run


def control_routes(state: EmulatorState) -> list[Route]:
    """``/_emulator/*``: unauthenticated, never recorded, never faulted."""

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        return loads(raw) if raw else {}

    async def requests_(request: Request) -> Response:
        if request.method == "DELETE":
            n = len(state.records)
            state.records.clear()
            return json_response({"cleared": n})
        return json_response(list(state.records))

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            return json_response({"cleared": state.faults.clear()})
        if request.method == "GET":
            return json_response([rule.to_json() for rule in state.faults.rules])
        try:
            rule = state.faults.add(await body_of(request))
        except (FaultSpecError, JSONDecodeError) as exc:
            return json_response({"error": f"bad fault rule: {exc}"}, 400)
        return json_response(rule.to_json())

    async def config(request: Request) -> Response:
        if request.method == "POST":
            try:
                state.set_config(await body_of(request))
            except (ValueError, JSONDecodeError) as exc:
                return json_response({"error": f"bad config: {exc}"}, 400)
        return json_response(state.config_json())

    async def stats(request: Request) -> Response:
        return json_response(state.stats_json())

    async def reset(request: Request) -> Response:
        state.reset()
        return json_response({"reset": True})

    return [
        Route("/_emulator/requests", requests_, methods=["GET", "DELETE"]),
        Route("/_emulator/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/config", config, methods=["GET", "POST"]),
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
    ]
