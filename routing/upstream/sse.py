"""Server-Sent Events relay: chunk by chunk as the upstream sends them, whole events only.

The relay never buffers beyond one incomplete event, never adds comments or keep-alives, and
never ends a broken stream quietly: an upstream cut, error or timeout after the first byte ends
the client's stream with one `data: {"error": ...}` event and no `[DONE]`. Whatever framing the
upstream uses (CRLF, `data:` without its space, comment or `event:` lines), the client gets
strict `data: <payload>\\n\\n` events, which strict parsers such as azure-ai-inference require.

Every event is checked (DESIGN §8): a payload that is not a JSON object or `[DONE]` is an
upstream protocol error, an upstream `{"error": ...}` event ends the stream with that error
reduced to the OpenAI shape, and every byte sent on passes the secret scrubber.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp

from routing.errors import error_body, reduce_upstream_error
from routing.telemetry.record import RequestRecord
from routing.telemetry.redaction import SECRETS
from routing.upstream.sse_events import (DONE, EVENT_END, MAX_EVENT_BYTES, NOT_JSON, EventSplitter,
                                         EventTooLarge, event_payloads, frame, json_object)
from routing.upstream.usage import UsageChunk, without_usage_member

log = logging.getLogger("routing.upstream.sse")


def error_event(message: str, code: str = "upstream_stream_error") -> bytes:
    return b"data: " + json.dumps(error_body(message, "server_error", None, code)).encode() + EVENT_END


class EventAdapter(Protocol):
    """Another API's events (the Responses API, natively or translated from chat)."""

    failure_code: str | None  # set when the stream ended with an error of its own

    def event(self, payload: bytes, data: dict) -> tuple[bytes, bool]:
        """(the framed bytes for the client, whether this event ends the stream)."""

    def done(self) -> bytes:
        """The upstream's `[DONE]`: what ends the client's stream."""

    def failed(self, message: str, code: str) -> bytes:
        """The gateway ends the stream early (a cut, a timeout, a broken event)."""


class EventStream:
    """Upstream chunks → the bytes the client gets: whole, checked, scrubbed events.

    `ended` once nothing more may be relayed: after `[DONE]` (`done`), an upstream error event,
    or a protocol error (`protocol_error`, the reason; the output then ends with an error event).
    """

    def __init__(self, route_id: str, usage: UsageChunk | None, record: RequestRecord | None = None,
                 strip_usage: bool = False, adapter: EventAdapter | None = None):
        self.route_id = route_id
        # Another API's events (the Responses API): framed, rewritten and ended by the adapter.
        self.adapter = adapter
        self.usage = usage
        self.record = record if record is not None else RequestRecord("")
        self.strip_usage = strip_usage  # the gateway asked for usage, the client did not
        self.failure_code: str | None = None  # how the stream ended early, for the record
        self.splitter = EventSplitter()
        self.done = False
        self.ended = False
        self.protocol_error: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Client bytes completed by `chunk` (often none). EventTooLarge past the event bound."""
        block = self.splitter.feed(chunk)
        return self._relay(event_payloads(block)) if block is not None else b""

    def finish(self) -> bytes:
        """The upstream closed: a final `[DONE]` without its blank line still counts."""
        tail = self.splitter.finish().strip(b"\n")
        if tail and event_payloads(tail + EVENT_END) == [DONE]:
            return self._relay([DONE])
        return b""

    def leftover(self) -> bool:
        return self.splitter.pending()

    def ending(self, message: str, code: str) -> bytes:
        """The last event of a stream the gateway ends early, in its API's shape."""
        if self.adapter is not None:
            return self.adapter.failed(message, code)
        return error_event(message, code)

    def _relay(self, payloads: list[bytes]) -> bytes:
        out: list[bytes] = []
        ending = b""
        for payload in payloads:
            if payload == DONE and self.adapter is not None:
                out.append(self.adapter.done())
                self.done = self.ended = True
                break
            if payload == DONE:
                if self.usage is not None:
                    out.extend(self.usage.before_done())
                out.append(DONE)
                self.done = self.ended = True
                break  # nothing after the end is relayed
            data = json_object(payload)
            if data is NOT_JSON:
                self.protocol_error = "The upstream sent an event that is not a JSON object."
                self.failure_code = "upstream_protocol_error"
                ending = self.ending(f"{self.protocol_error} The response is incomplete "
                                     f"(route '{self.route_id}').", "upstream_protocol_error")
                self.ended = True
                break
            if self.adapter is not None:
                framed, last = self.adapter.event(payload, data)
                out.append(SECRETS.scrub_bytes(framed))
                if last:
                    self.done = self.ended = True
                    self.failure_code = self.adapter.failure_code
                    break
                continue
            if data.get("error"):
                log.warning("route %s: the upstream ended the stream with an error event", self.route_id)
                reduced = reduce_upstream_error(data, "server_error")
                self.failure_code = reduced["error"].get("code") or "upstream_error"
                ending = b"data: " + json.dumps(reduced).encode() + EVENT_END
                self.ended = True
                break
            reported = data.get("usage")
            if reported:
                self.record.take_usage(reported)
            if self.record.response_model is None and isinstance(data.get("model"), str) and data["model"]:
                self.record.response_model = data["model"]
            if self.strip_usage:
                if reported and not data.get("choices"):
                    continue  # the usage chunk the client did not ask for
                payload = without_usage_member(payload)
            elif self.usage is not None:
                payload = self.usage.take(payload, data)
            # An upstream may echo a key in any event, JSON-escaped too (DESIGN §8).
            out.append(SECRETS.scrub_json(payload, data))
        if self.adapter is not None:
            return b"".join(out) + SECRETS.scrub_bytes(ending) if out or ending else b""
        return frame(out) + SECRETS.scrub_bytes(ending) if out or ending else b""


async def first_events(stream: EventStream, chunks: AsyncIterator[bytes]) -> bytes:
    """Read until the first client bytes are ready (under the caller's timeout): nothing has
    reached the client yet, so the caller can still fail over on what this finds.
    StopAsyncIteration if the upstream closes first (unless with a bare final `[DONE]`)."""
    while True:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            out = stream.finish()
            if out:
                return out
            raise
        out = stream.feed(chunk)
        if out or stream.ended:
            return out


async def next_chunk(chunks: AsyncIterator[bytes], seconds: float) -> bytes:
    """The upstream's next raw chunk, or TimeoutError after `seconds` of silence."""
    async with asyncio.timeout(seconds):
        return await anext(chunks)


async def relay(response: aiohttp.ClientResponse, chunks: AsyncIterator[bytes], stream: EventStream,
                first: bytes, idle: float, deadline: float) -> AsyncIterator[bytes]:
    """Relay `first` and then the rest of `chunks` as whole events; close the upstream at the
    end, on failure and when the client goes away (Starlette cancels this generator)."""
    loop = asyncio.get_running_loop()
    route_id = stream.route_id
    failure = None
    try:
        try:
            if first:
                stream.record.relayed_bytes += len(first)
                yield first
            # Idle time counts from the last event relayed, not the last byte read: comments or
            # keep-alive lines (never relayed) do not keep a silent stream open.
            last_event = loop.time()
            while not stream.ended:
                now = loop.time()
                left = deadline - now
                if left <= 0:
                    raise TotalTimeout
                quiet = idle - (now - last_event)
                if quiet <= 0:
                    raise TimeoutError
                try:
                    chunk = await next_chunk(chunks, min(quiet, left))
                except StopAsyncIteration:
                    out = stream.finish()
                    if out:
                        yield out
                    break
                except TimeoutError:
                    if left < quiet:
                        raise TotalTimeout from None
                    raise
                out = stream.feed(chunk)
                if out:
                    last_event = loop.time()
                    stream.record.relayed_bytes += len(out)
                    yield out
            if stream.protocol_error:
                log.warning("route %s: stream ended early: %s", route_id, stream.protocol_error)
            elif not stream.ended:
                failure, stream.failure_code = ("The upstream closed the stream before it was complete.",
                                                "upstream_stream_error")
        except EventTooLarge:
            failure = f"The upstream sent an event larger than {MAX_EVENT_BYTES} bytes."
            stream.failure_code = "upstream_stream_error"
        except TotalTimeout:
            failure = "The gateway's total time limit (GATEWAY_TOTAL_TIMEOUT) was reached."
            stream.failure_code = "total_timeout"
        except TimeoutError:
            failure = f"The upstream sent nothing for {idle:g} seconds (GATEWAY_STREAM_IDLE_TIMEOUT)."
            stream.failure_code = "upstream_timeout"
        except (aiohttp.ClientError, OSError) as exc:
            failure = f"The upstream stream failed: {type(exc).__name__}."
            stream.failure_code = "upstream_stream_error"
        if failure:
            log.warning("route %s: stream ended early: %s", route_id, failure)
            yield SECRETS.scrub_bytes(stream.ending(f"{failure} The response is incomplete (route '{route_id}').",
                                                    stream.failure_code or "upstream_stream_error"))
    finally:
        if stream.done and not stream.leftover():
            response.release()
        else:
            response.close()  # an unfinished body: the connection cannot be reused


class TotalTimeout(Exception):
    pass
