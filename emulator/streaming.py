"""Server-Sent Events responses with the stream faults (chunk delay, abrupt cut).

Events are built up front (the fake model is deterministic and small), then sent one ASGI body
message per event so a relaying client sees real chunk boundaries. A cut raises ``StreamCut``
after the response started: uvicorn then closes the transport without the terminating chunk, which
is what a client sees when an upstream dies mid-stream (incomplete chunked read, no ``[DONE]``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Mapping, Sequence

from starlette.types import Receive, Scope, Send

from .records import EmulatorState
from .wire import SSE_DONE, SSE_TYPE


class StreamCut(Exception):
    """Raised on purpose to make the server drop the connection mid-stream."""


class _HideStreamCut(logging.Filter):
    # uvicorn logs every exception escaping the app; an injected cut is not an error worth a traceback.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, StreamCut)


_filter = _HideStreamCut()
if _filter not in logging.getLogger("uvicorn.error").filters:
    logging.getLogger("uvicorn.error").addFilter(_filter)


class SSEResponse:
    """An ASGI response streaming pre-encoded ``data: ...\\n\\n`` events, then ``data: [DONE]``."""

    media_type = SSE_TYPE

    def __init__(
        self,
        events: Sequence[bytes],
        state: EmulatorState,
        headers: Mapping[str, str],
        *,
        chunk_delay: float = 0.0,
        cut_after: int | None = None,
    ) -> None:
        self.status_code = 200
        self.events = events
        self.state = state
        self.chunk_delay = chunk_delay
        self.cut_after = cut_after
        self.raw_headers = [(b"content-type", SSE_TYPE.encode())]
        self.raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.state.active_streams += 1
        try:
            if self.chunk_delay <= 0:
                await self._send_all(send)  # finishes at once: no disconnect watcher needed
                return
            streamer = asyncio.ensure_future(self._send_all(send))
            watcher = asyncio.ensure_future(_until_disconnect(receive))
            try:
                await asyncio.wait({streamer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                watcher.cancel()
                if not streamer.done():  # the client went away: stop producing
                    streamer.cancel()
                    try:
                        await streamer
                    except asyncio.CancelledError:
                        pass
            if streamer.done() and not streamer.cancelled():
                streamer.result()  # re-raise StreamCut
        finally:
            self.state.active_streams -= 1

    async def _send_all(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        cut = self.cut_after
        delay = self.chunk_delay
        for index, event in enumerate(self.events):
            if cut is not None and index >= cut:
                raise StreamCut(f"stream cut after {cut} chunks (fault injection)")
            if delay > 0 and index > 0:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if cut is not None:
            raise StreamCut("stream cut before [DONE] (fault injection)")
        if delay > 0:
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": SSE_DONE, "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
