"""Responses API streaming (reference azure-responses-and-v1.md §1.4, §1.5): the event sequence of
one answer, a live event log per response (``Run``), and the SSE response that follows it.

A ``Run`` is what the resource knows of one response: its current snapshot and the events produced
so far (``sequence_number`` = position in the log, from 0 [unconfirmed starting value]). Events
are appended on a schedule (seconds before each): by the SSE connection itself for a synchronous
stream (``RunSSE(schedule=...)``, in lockstep with sending, so hanging up or a cut fault ends the
response as "cancelled" [unconfirmed]), or by a task of its own (``produce``) for a background
response, which an SSE connection follows live from ``starting_after`` + 1, so the client may drop
and resume with ``GET …?stream=true&starting_after=N``, or replays once it is finished.

Framing: ``event: <type>`` + ``data: <json>`` + blank line, as the OpenAI spec example frames it;
no ``data: [DONE]`` (the spec's Responses example has none). Azure's exact framing is [unconfirmed].
Faults as for chat streams: ``chunk_delay`` paces, ``cut_after_chunks`` drops the connection after
that many events, before the end of the chunked body.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Mapping, Sequence

from starlette.types import Receive, Scope, Send

from .records import EmulatorState
from .streaming import StreamCut
from .wire import SSE_TYPE, dumps

TERMINAL = ("completed", "incomplete", "failed", "cancelled")
_SNAPSHOT_EVENTS = ("response.created", "response.queued", "response.in_progress", "response.completed",
                    "response.incomplete", "response.failed")


def encode(event: Mapping[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + dumps(event) + b"\n\n"


def item_events(index: int, item: dict[str, Any], pieces: Sequence[str]) -> list[dict[str, Any]]:
    """The events of output item ``index``, from ``output_item.added`` to ``output_item.done``."""
    iid, kind = item["id"], item["type"]
    where = {"item_id": iid, "output_index": index}
    if kind == "function_call":
        # Order inferred from the SDK's accumulator (§1.4): [unconfirmed] as the server's exact order.
        events = [{"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "arguments": "", "status": "in_progress"}}]
        events += [{"type": "response.function_call_arguments.delta", **where, "delta": p} for p in pieces]
        events.append({"type": "response.function_call_arguments.done", **where, "name": item["name"],
                       "arguments": item["arguments"]})
    elif kind == "message":
        part = item["content"][0]
        at = {**where, "content_index": 0}
        events = [
            {"type": "response.output_item.added", "output_index": index,
             "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **at,
             "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}},
        ]
        events += [{"type": "response.output_text.delta", **at, "delta": p, "logprobs": []} for p in pieces]
        events += [{"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []},
                   {"type": "response.content_part.done", **at, "part": part}]
    else:  # reasoning: an empty summary, nothing streamed in between
        events = [{"type": "response.output_item.added", "output_index": index, "item": item}]
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return events


def answer_events(output: list[dict[str, Any]], pieces: Mapping[str, Sequence[str]],
                  final: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything after ``response.in_progress``: the items, then ``response.completed``/``.incomplete``."""
    events: list[dict[str, Any]] = []
    for index, item in enumerate(output):
        events += item_events(index, item, pieces.get(item["id"], ()))
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append({"type": kind, "response": final})
    return events


class Run:
    """One response as the resource knows it: snapshot, request facts and the live event log."""

    def __init__(self, rid: str, deployment: str, body: dict[str, Any], snapshot: dict[str, Any],
                 items: list[dict[str, Any]], context: list[dict[str, Any]]) -> None:
        self.id = rid
        self.deployment = deployment
        self.stream = body.get("stream") is True
        self.background = body.get("background") is True
        self.response = snapshot
        self.input_items = items  # what input_items lists
        self.context = context  # earlier turns + this input: what previous_response_id continues from
        self.events: list[dict[str, Any]] = []
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def status(self) -> str:
        return str(self.response["status"])

    def append(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        event = {"type": kind, "sequence_number": len(self.events), **{k: v for k, v in event.items() if k != "type"}}
        if kind in _SNAPSHOT_EVENTS:
            if event["response"]["status"] in TERMINAL:
                event["response"]["completed_at"] = int(time.time()) if kind == "response.completed" else None
            self.response = event["response"]
        self.events.append(event)
        if self.status in TERMINAL:
            self.finished = True
        self._notify()

    def stop(self, status: str = "cancelled") -> None:
        """End the response early (cancel, hang-up, delete): no further events."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if not self.finished:
            self.response = {**self.response, "status": status}
            self.finished = True
            self._notify()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def changed(self) -> None:
        await self._wake.wait()


async def produce(run: Run, schedule: Sequence[tuple[float, dict[str, Any]]]) -> None:
    """Append each event after its delay (seconds since the previous one)."""
    for delay, event in schedule:
        if delay > 0:
            await asyncio.sleep(delay)
        if run.finished:
            return
        run.append(event)


class RunSSE:
    """An ASGI response sending a run's events after ``starting_after`` (-1: all), live until it ends."""

    status_code = 200
    media_type = SSE_TYPE

    def __init__(self, run: Run, state: EmulatorState, headers: Mapping[str, str], *, starting_after: int = -1,
                 schedule: Sequence[tuple[float, dict[str, Any]]] | None = None, chunk_delay: float = 0.0,
                 cut_after: int | None = None) -> None:
        self.run = run
        self.state = state
        self.next = max(starting_after + 1, 0)
        self.schedule = schedule  # given: this connection produces the events (a synchronous stream)
        self.chunk_delay = chunk_delay
        self.cut_after = cut_after
        self.raw_headers = [(b"content-type", SSE_TYPE.encode())]
        self.raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.state.active_streams += 1
        streamer = asyncio.ensure_future(self._send_all(send))
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({streamer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not streamer.done():  # the client went away: stop sending
                streamer.cancel()
                try:
                    await streamer
                except asyncio.CancelledError:
                    pass
            if self.schedule is not None and not self.run.finished:
                # "To cancel a synchronous response, terminate the connection directly" (§2.3); the status
                # it leaves (here "cancelled", also after a cut fault) is [unconfirmed].
                self.run.stop()
            self.state.active_streams -= 1
        if not streamer.cancelled():
            streamer.result()  # re-raise StreamCut

    async def _send_all(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        run, sent, waited = self.run, 0, True
        if self.schedule is not None:  # produce in lockstep: a cut leaves exactly what was sent
            for delay, event in self.schedule:
                if delay > 0:
                    await asyncio.sleep(delay)
                if run.finished:  # deleted meanwhile
                    break
                if self.cut_after is not None and sent >= self.cut_after:
                    raise StreamCut(f"stream cut after {sent} events (fault injection)")
                run.append(event)
                await send({"type": "http.response.body", "body": encode(run.events[-1]), "more_body": True})
                sent += 1
            self.next = len(run.events)
        while True:
            if self.next < len(run.events):
                if self.chunk_delay > 0 and sent and not waited:  # replaying what exists: pace it
                    await asyncio.sleep(self.chunk_delay)
                if self.cut_after is not None and sent >= self.cut_after:
                    raise StreamCut(f"stream cut after {sent} events (fault injection)")
                await send({"type": "http.response.body", "body": encode(run.events[self.next]), "more_body": True})
                self.next += 1
                sent += 1
                waited = False
            elif run.finished:
                break
            else:
                await run.changed()
                waited = True
        if self.cut_after is not None:
            raise StreamCut("stream cut before its end (fault injection)")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
