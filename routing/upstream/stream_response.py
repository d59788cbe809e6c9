"""The streamed answer to the client, which owns the upstream stream it relays.

Starlette stops a `StreamingResponse` when the client goes away by cancelling it. If the
cancellation lands while the response is inside `send` (the client's socket is full: a slow or
non-reading client), the relay generator is left suspended at its `yield`: its `finally`, which
closes the upstream response, runs only when the garbage collector finalises it, and with the
reference cycles a cancellation leaves, that can be minutes. Meanwhile the upstream connection
stays open. This response closes the generator and the upstream itself, on every way out.

The relay enforces GATEWAY_TOTAL_TIMEOUT between upstream reads; a client that stops reading
blocks the response in `send` instead, where only this response can end it at the deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import aiohttp
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from routing.telemetry.record import RequestRecord, finish
from routing.upstream.sse import EventStream

log = logging.getLogger("routing.upstream.stream_response")
# After the deadline, the relay's own limit ends a stream it is still reading (with an error
# event the client sees); this response's limit only has to catch a send that never returns.
SEND_GRACE_SECONDS = 1.0


class EventStreamResponse(StreamingResponse):
    def __init__(self, events: AsyncGenerator[bytes, None], upstream: aiohttp.ClientResponse,
                 status_code: int, headers: dict[str, str], deadline: float, route_id: str,
                 record: RequestRecord | None = None, stream: EventStream | None = None):
        super().__init__(events, status_code=status_code, media_type="text/event-stream",
                         headers=headers)
        self.events = events
        self.upstream = upstream
        self.deadline = deadline  # event-loop time: the request's GATEWAY_TOTAL_TIMEOUT
        self.route_id = route_id
        self.record = record if record is not None else RequestRecord("")
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Streams in the request's own task; a watcher task cancels it if the client leaves.

        Starlette's way (for servers that, like uvicorn, speak ASGI < 2.4) starts the stream in
        a new task of an anyio task group: one more event-loop turn, and more work, before the
        client's first chunk."""
        streaming = asyncio.current_task()
        state = {"done": False, "left": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["done"]:
                state["left"] = True
                streaming.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not state["left"] or streaming.uncancel() > 0:
                raise  # cancelled from outside, not (only) by the client's leaving
        finally:
            state["done"] = True
            watcher.cancel()

    async def stream_response(self, send: Send) -> None:
        ended = (499, "client_closed_request")  # unless the stream gets to an end of its own
        try:
            async with asyncio.timeout_at(self.deadline + SEND_GRACE_SECONDS):
                await super().stream_response(send)
            code = self.stream.failure_code if self.stream is not None else None
            ended = (200, None) if code is None else (504 if "timeout" in code else 502, code)
        except TimeoutError:
            # Only reachable blocked in `send`: the client stopped reading. It cannot be told
            # (it does not read); the connection ends without the response's end.
            log.warning("route %s: the client stopped reading the stream; ended at the gateway's "
                        "total time limit (GATEWAY_TOTAL_TIMEOUT)", self.route_id)
            ended = (504, "total_timeout")
        finally:
            # The record says how the stream ended (its HTTP status was 200 from the start).
            finish(self.record, *ended)
            # The relay's own `finally` (release or close the upstream) runs now. Its cleanup does
            # not await, so this finishes even inside an already-cancelled scope.
            try:
                await self.events.aclose()
            finally:
                self.upstream.close()  # no-op once the relay released the connection to the pool
