"""The streamed answer to the client, which owns the upstream stream it relays.

Starlette stops a `StreamingResponse` when the client goes away by cancelling it. If the
cancellation lands while the response is inside `send` (the client's socket is full: a slow or
non-reading client), the relay generator is left suspended at its `yield`: its `finally`, which
closes the upstream response, runs only when the garbage collector finalises it, and with the
reference cycles a cancellation leaves, that can be minutes. Meanwhile the upstream connection
stays open. This response closes the generator and the upstream itself, on every way out.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp
from starlette.responses import StreamingResponse
from starlette.types import Send


class EventStreamResponse(StreamingResponse):
    def __init__(self, events: AsyncGenerator[bytes, None], upstream: aiohttp.ClientResponse,
                 status_code: int, headers: dict[str, str]):
        super().__init__(events, status_code=status_code, media_type="text/event-stream",
                         headers=headers)
        self.events = events
        self.upstream = upstream

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            # The relay's own `finally` (release or close the upstream) runs now. Its cleanup does
            # not await, so this finishes even inside an already-cancelled scope.
            try:
                await self.events.aclose()
            finally:
                self.upstream.close()  # no-op once the relay released the connection to the pool
