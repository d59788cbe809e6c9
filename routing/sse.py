"""Server-Sent Events relay: chunk by chunk as the upstream sends them, whole events only.

The relay never buffers beyond one incomplete event, never adds comments or keep-alives, and
never ends a broken stream quietly: an upstream cut, error or timeout after the first byte ends
the client's stream with one `data: {"error": ...}` event and no `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from routing.errors import error_body

log = logging.getLogger("routing.sse")
DONE = b"data: [DONE]"
EVENT_END = b"\n\n"


def error_event(message: str, code: str = "upstream_stream_error") -> bytes:
    return b"data: " + json.dumps(error_body(message, "server_error", None, code)).encode() + EVENT_END


class UsageChunk:
    """OpenAI's `stream_options.include_usage` for a backend that reports usage on its finish
    chunk (Azure AI): usage moves to one `choices: []` chunk before `[DONE]`; a backend that
    already sends such a chunk is left alone. Only events mentioning usage are parsed."""

    def __init__(self) -> None:
        self.usage: Any = None
        self.template: dict[str, Any] = {}
        self.sent = False

    def rewrite(self, events: bytes) -> bytes:
        out = []
        for event in events.split(EVENT_END):
            if not event:
                continue
            if event == DONE and not self.sent and self.usage is not None:
                chunk = {**self.template, "choices": [], "usage": self.usage}
                out.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode())
                self.sent = True
            elif b'"usage"' in event and event.startswith(b"data: {"):
                event = self._take_usage(event)
            out.append(event)
        return EVENT_END.join(out) + EVENT_END

    def _take_usage(self, event: bytes) -> bytes:
        try:
            data = json.loads(event[6:])
        except ValueError:
            return event
        if not isinstance(data, dict) or not data.get("usage"):
            return event
        if not data.get("choices"):
            self.sent = True  # the backend's own usage chunk
            return event
        self.usage = data["usage"]
        self.template = {k: data[k] for k in ("id", "object", "created", "model", "system_fingerprint") if k in data}
        data["usage"] = None  # counted once, in the usage chunk
        return b"data: " + json.dumps(data, separators=(",", ":")).encode()


async def next_chunk(chunks: AsyncIterator[bytes], seconds: float) -> bytes:
    """The upstream's next raw chunk, or TimeoutError after `seconds` of silence."""
    async with asyncio.timeout(seconds):
        return await anext(chunks)


async def relay(response: aiohttp.ClientResponse, chunks: AsyncIterator[bytes], first: bytes, route_id: str,
                usage: UsageChunk | None, idle: float, deadline: float) -> AsyncIterator[bytes]:
    """Relay `first` and then the rest of `chunks` as whole events; close the upstream at the
    end, on failure and when the client goes away (Starlette cancels this generator)."""
    loop = asyncio.get_running_loop()
    pending = first
    finished = False
    failure = None
    try:
        try:
            while True:
                end = pending.rfind(EVENT_END)
                if end >= 0:
                    events, pending = pending[:end + 2], pending[end + 2:]
                    if usage is not None:
                        events = usage.rewrite(events)
                    finished = events.endswith(DONE + EVENT_END) or events.startswith(b'data: {"error"')
                    yield events
                left = deadline - loop.time()
                if left <= 0:
                    raise TotalTimeout
                try:
                    pending += await next_chunk(chunks, min(idle, left))
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if left < idle:
                        raise TotalTimeout from None
                    raise
            if not finished and pending.strip() == DONE:  # a final event without its blank line
                finished = True
                yield usage.rewrite(DONE + EVENT_END) if usage is not None else DONE + EVENT_END
            if not finished:
                failure = "The upstream closed the stream before it was complete."
        except TotalTimeout:
            failure = "The gateway's total time limit (GATEWAY_TOTAL_TIMEOUT) was reached."
        except TimeoutError:
            failure = f"The upstream sent nothing for {idle:g} seconds (GATEWAY_STREAM_IDLE_TIMEOUT)."
        except (aiohttp.ClientError, OSError) as exc:
            failure = f"The upstream stream failed: {type(exc).__name__}."
        if failure:
            log.warning("route %s: stream ended early: %s", route_id, failure)
            yield error_event(f"{failure} The response is incomplete (route '{route_id}').")
    finally:
        if finished:
            response.release()
        else:
            response.close()  # an unfinished body: the connection cannot be reused


class TotalTimeout(Exception):
    pass
