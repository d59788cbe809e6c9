"""Server-Sent Events relay: chunk by chunk as the upstream sends them, whole events only.

The relay never buffers beyond one incomplete event, never adds comments or keep-alives, and
never ends a broken stream quietly: an upstream cut, error or timeout after the first byte ends
the client's stream with one `data: {"error": ...}` event and no `[DONE]`. Whatever framing the
upstream uses (CRLF, `data:` without its space, comment or `event:` lines), the client gets
strict `data: <payload>\\n\\n` events, which strict parsers such as azure-ai-inference require.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from routing.errors import error_body

log = logging.getLogger("routing.upstream.sse")
DONE = b"[DONE]"
EVENT_END = b"\n\n"
MAX_EVENT_BYTES = 4 * 1024 * 1024  # one event larger than this is a broken upstream


def error_event(message: str, code: str = "upstream_stream_error") -> bytes:
    return b"data: " + json.dumps(error_body(message, "server_error", None, code)).encode() + EVENT_END


def event_payloads(block: bytes) -> list[bytes]:
    """The data payloads of the complete events in `block` (LF line ends, ends with a blank line)."""
    payloads = []
    for event in block[:-2].split(EVENT_END):
        if event.startswith(b"data: ") and b"\n" not in event:  # the usual shape: one data line
            payloads.append(event[6:])
            continue
        data = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:  # comments, event:, id: and retry: lines carry nothing a client needs
            # Multi-line data is JSON split between tokens, where a space is equivalent.
            payloads.append(b" ".join(data))
    return payloads


def frame(payloads: list[bytes]) -> bytes:
    return b"".join(b"data: " + payload + EVENT_END for payload in payloads)


class UsageChunk:
    """OpenAI's `stream_options.include_usage` for a backend that reports usage on its finish
    chunk (Azure AI): usage moves to one `choices: []` chunk before `[DONE]`; a backend that
    already sends such a chunk is left alone. Only payloads mentioning usage are parsed."""

    def __init__(self) -> None:
        self.usage: Any = None
        self.template: dict[str, Any] = {}
        self.sent = False

    def rewrite(self, payloads: list[bytes]) -> list[bytes]:
        out = []
        for payload in payloads:
            if payload == DONE and not self.sent and self.usage is not None:
                chunk = {**self.template, "choices": [], "usage": self.usage}
                out.append(json.dumps(chunk, separators=(",", ":")).encode())
                self.sent = True
            elif b'"usage"' in payload:
                payload = self._take_usage(payload)
            out.append(payload)
        return out

    def _take_usage(self, payload: bytes) -> bytes:
        try:
            data = json.loads(payload)
        except ValueError:
            return payload
        if not isinstance(data, dict) or not data.get("usage"):
            return payload
        if not data.get("choices"):
            self.sent = True  # the backend's own usage chunk
            return payload
        self.usage = data["usage"]
        self.template = {k: data[k] for k in ("id", "object", "created", "model", "system_fingerprint") if k in data}
        data["usage"] = None  # counted once, in the usage chunk
        return json.dumps(data, separators=(",", ":")).encode()


async def next_chunk(chunks: AsyncIterator[bytes], seconds: float) -> bytes:
    """The upstream's next raw chunk, or TimeoutError after `seconds` of silence."""
    async with asyncio.timeout(seconds):
        return await anext(chunks)


def _lf(data: bytes) -> bytes:
    """CRLF and CR line ends → LF; a trailing CR waits for the next chunk (it may start with LF)."""
    tail = b"\r" if data.endswith(b"\r") else b""
    body = data[:-1] if tail else data
    return body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail


async def relay(response: aiohttp.ClientResponse, chunks: AsyncIterator[bytes], first: bytes, route_id: str,
                usage: UsageChunk | None, idle: float, deadline: float) -> AsyncIterator[bytes]:
    """Relay `first` and then the rest of `chunks` as whole events; close the upstream at the
    end, on failure and when the client goes away (Starlette cancels this generator)."""
    loop = asyncio.get_running_loop()
    pending = first
    finished = False  # `[DONE]`, or the upstream's own error event: the stream is over
    failure = None
    try:
        try:
            while True:
                if b"\r" in pending:
                    pending = _lf(pending)
                end = pending.rfind(EVENT_END)
                if end >= 0:
                    block, pending = pending[:end + 2], pending[end + 2:]
                    payloads = event_payloads(block)
                    for index, payload in enumerate(payloads):
                        if payload == DONE or payload.startswith(b'{"error"'):
                            del payloads[index + 1:]  # nothing after the end is relayed
                            finished = True
                            break
                    if usage is not None:
                        payloads = usage.rewrite(payloads)
                    if payloads:
                        yield frame(payloads)
                    if finished:
                        break
                if len(pending) > MAX_EVENT_BYTES:
                    raise EventTooLarge
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
            if not finished and event_payloads(_lf(pending).strip(b"\n") + EVENT_END) == [DONE]:
                finished = True  # a final `[DONE]` without its blank line
                yield frame(usage.rewrite([DONE]) if usage is not None else [DONE])
            if not finished:
                failure = "The upstream closed the stream before it was complete."
        except EventTooLarge:
            failure = f"The upstream sent an event larger than {MAX_EVENT_BYTES} bytes."
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
        if finished and not pending.strip():
            response.release()
        else:
            response.close()  # an unfinished body: the connection cannot be reused


class TotalTimeout(Exception):
    pass


class EventTooLarge(Exception):
    pass
