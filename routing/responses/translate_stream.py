"""Chat completion chunks → Responses API stream events, as OpenAI sends them.

`ChatToResponsesStream` is fed the upstream's parsed chunks one by one and returns the client's
bytes: each event framed `event: <type>\\ndata: <json>\\n\\n` (OpenAI's framing; no `[DONE]`: a
Responses stream ends with its terminal event), `sequence_number` from 0.

Order: `response.created`, `response.in_progress`; then one output item at a time:
`response.output_item.added`, its content (`response.content_part.added`,
`response.output_text.delta`… (or `refusal`/`reasoning_text`), `….done`,
`response.content_part.done`; for a function call `response.function_call_arguments.delta`…,
`….done`), `response.output_item.done`; then `response.completed` or `response.incomplete`
(`finish_reason` `length`/`content_filter`) with the whole response and its usage.

Items never interleave, whatever the upstream does: the earliest unfinished item streams live,
later ones are held (their deltas kept as lists of pieces, joined once) until it is done. Text
(or reasoning) is done as soon as anything else starts; a function call only at the finish,
since chunks of parallel calls may interleave (`tool_calls[].index`), so a second call's
arguments arrive in one delta at the end. State is linear in the output.

Failures: an upstream `{"error": ...}` chunk, a stream cut before its `finish_reason` (`finish`
without one) or any failure the caller reports (`fail`) ends the stream with `response.failed`
(`status: failed`, `error: {code, message}`, the output so far, unfinished items `incomplete`):
a terminal event carrying a Response, which the SDK's stream helpers understand, rather than a
bare `error` event, which leaves a client without the response's state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from routing.errors import reduce_upstream_error
from routing.responses.translate_response import (INCOMPLETE_REASONS, failed, finish as finished,
                                                  function_call_item, message_item, new_id,
                                                  reasoning_item, response_shell, text_part)

RESPONSE_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded"})
PART_EVENTS = {"output_text": "response.output_text", "refusal": "response.refusal",
               "reasoning_text": "response.reasoning_text"}
PART_FIELD = {"output_text": "text", "refusal": "refusal", "reasoning_text": "text"}


class _Part:
    __slots__ = ("type", "index", "pieces", "done")

    def __init__(self, type_: str, index: int):
        self.type, self.index, self.pieces, self.done = type_, index, [], False

    def text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""


class _Item:
    __slots__ = ("kind", "index", "id", "parts", "call_id", "name", "added", "closed", "final")

    def __init__(self, kind: str, index: int, item_id: str):
        self.kind, self.index, self.id = kind, index, item_id
        self.parts: list[_Part] = []  # a function call's arguments are its one part
        self.call_id = self.name = ""
        self.added = self.closed = False
        self.final: dict[str, Any] | None = None

    def snapshot(self, status: str) -> dict[str, Any]:
        if self.kind == "function_call":
            arguments = self.parts[0].text() if self.parts else ""
            return function_call_item(self.id, self.call_id or "", self.name, arguments, status)
        if self.kind == "reasoning":
            return reasoning_item(self.id, self.parts[0].text() if self.parts else None, status)
        item = message_item(self.id, None, None, status)
        item["content"] = [_part_body(p.type, p.text()) for p in self.parts]
        return item


def _part_body(type_: str, text: str) -> dict[str, Any]:
    if type_ == "output_text":
        return text_part(text)
    return {"type": type_, PART_FIELD[type_]: text}


class ChatToResponsesStream:
    """One Responses stream, translated from one chat completions stream.

    `start()` → `response.created` + `response.in_progress` (optional: `feed` starts too);
    `feed(chunk)` for each parsed upstream chunk (a dict; `[DONE]` is not fed);
    `finish()` once the upstream ended (`[DONE]` or its close) → the terminal event;
    `fail(message)` on any failure the caller sees (cut, timeout, protocol error) →
    `response.failed`. Each returns the bytes for the client (b"" when there are none); after the
    terminal event (`ended`) every call returns b"".
    """

    def __init__(self, request: dict[str, Any], *, response_id: str | None = None,
                 model: str | None = None, created_at: int | None = None,
                 make_id: Callable[[str], str] = new_id):
        self.make_id = make_id  # prefix → a new item id (the gateway's: they name the route)
        self.response_id = response_id or make_id("resp_")
        self.model = model or (request.get("model") if isinstance(request.get("model"), str) else "") or ""
        self.created_at = created_at if created_at is not None else int(time.time())
        self.request = request
        self.sequence = 0
        self.started = self.ended = False
        self.items: list[_Item] = []
        self.calls: dict[Any, _Item] = {}  # chat tool_calls[].index → its item
        self.last_call: _Item | None = None
        self.live = 0  # items before this one are done
        self.finish_reason: str | None = None
        self.usage: Any = None  # the chat usage last reported
        self.status: str | None = None  # the terminal status once ended
        self._out: list[bytes] = []

    # -- the caller's side --------------------------------------------------------------

    def start(self) -> bytes:
        self._start()
        return self._flush()

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self.ended or not isinstance(chunk, dict):
            return b""
        self._start()
        if chunk.get("error"):
            reduced = reduce_upstream_error(chunk, "server_error")["error"]
            code = "rate_limit_exceeded" if "rate_limit" in f"{reduced.get('code')}{reduced.get('type')}" \
                else "server_error"
            return self.fail(f"The upstream failed: {reduced['message']}", code)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if self.finish_reason is not None:
            return self._flush()  # nothing after the finish but usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice)
                break
        return self._flush()

    def finish(self) -> bytes:
        if self.ended:
            return b""
        if self.finish_reason is None:
            return self.fail("The upstream closed the stream before it was complete.")
        self._start()
        output = [item.final for item in self.items if item.final is not None]
        response = finished(self._shell("in_progress"), output, self.finish_reason, self.usage)
        self.status = response["status"]
        kind = "response.incomplete" if self.status == "incomplete" else "response.completed"
        self._emit({"type": kind, "response": response})
        self.ended = True
        return self._flush()

    def fail(self, message: str, code: str = "server_error") -> bytes:
        if self.ended:
            return b""
        self._start()
        output = [item.final or item.snapshot("incomplete") for item in self.items]
        code = code if code in RESPONSE_ERROR_CODES else "server_error"
        self.status = "failed"
        self._emit({"type": "response.failed",
                    "response": failed(self._shell("in_progress"), output, message, code, self.usage)})
        self.ended = True
        return self._flush()

    def _start(self) -> None:
        if not self.started:
            self.started = True
            shell = self._shell("in_progress")
            self._emit({"type": "response.created", "response": shell})
            self._emit({"type": "response.in_progress", "response": shell})

    # -- chunks → items -------------------------------------------------------------------

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for field, kind, part in (("reasoning_content", "reasoning", "reasoning_text"),
                                      ("content", "message", "output_text"),
                                      ("refusal", "message", "refusal")):
                text = delta.get(field)
                if isinstance(text, str) and text:
                    self._text(kind, part, text)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._tool_call(call)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish_reason = reason
            for item in self.items:
                self._close(item, last=item is self.items[-1])

    def _text(self, kind: str, part_type: str, text: str) -> None:
        item = self.items[-1] if self.items else None
        if item is None or item.kind != kind:
            item = self._new(kind, "rs_" if kind == "reasoning" else "msg_")
        part = item.parts[-1] if item.parts else None
        if part is None or part.type != part_type:
            if part is not None and item.added:
                self._close_part(item, part)
            part = _Part(part_type, len(item.parts))
            item.parts.append(part)
            if item.added:
                self._open_part(item, part)
        part.pieces.append(text)
        if item.added:
            self._emit(self._part_event(item, part, "delta", text))

    def _tool_call(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        key = index if isinstance(index, int) and not isinstance(index, bool) else None
        if key is not None:
            item = self.calls.get(key)
        else:  # no index (some upstreams): a new id is a new call, else the last call goes on
            known = self.last_call
            fresh = isinstance(call.get("id"), str) and call["id"] and (known is None or call["id"] != known.call_id)
            item = None if fresh else known
        if item is None:
            item = self._new("function_call", "fc_")
            item.parts.append(_Part("arguments", 0))
            if key is not None:
                self.calls[key] = item
        self.last_call = item
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if not item.call_id and isinstance(call.get("id"), str):
            item.call_id = call["id"]
        if not item.name and isinstance(function.get("name"), str):
            item.name = function["name"]  # sent once; some upstreams repeat it whole
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.parts[0].pieces.append(arguments)
            if item.added:
                self._emit({"type": "response.function_call_arguments.delta", "item_id": item.id,
                            "output_index": item.index, "delta": arguments})
        self._advance()

    def _new(self, kind: str, prefix: str) -> _Item:
        if self.live < len(self.items) and self.items[self.live].kind != "function_call":
            self._close(self.items[self.live], last=False)  # text is done once anything else starts
        item = _Item(kind, len(self.items), self.make_id(prefix))
        self.items.append(item)
        self._advance()
        return item

    def _advance(self) -> None:
        """Start the earliest unfinished item if it can be shown (a call needs its name)."""
        while self.live < len(self.items) and self.items[self.live].closed:
            self.live += 1
        if self.live < len(self.items):
            item = self.items[self.live]
            if not item.added and (item.kind != "function_call" or item.name):
                self._add(item)

    # -- events ------------------------------------------------------------------------------

    def _add(self, item: _Item) -> None:
        """output_item.added, then what the item holds so far as one delta per part."""
        item.added = True
        if item.kind == "function_call" and not item.call_id:
            item.call_id = new_id("call_")
        added = item.snapshot("in_progress")
        if item.kind == "function_call":
            added["arguments"] = ""
            self._emit({"type": "response.output_item.added", "output_index": item.index, "item": added})
            held = item.parts[0].text()
            if held:
                self._emit({"type": "response.function_call_arguments.delta", "item_id": item.id,
                            "output_index": item.index, "delta": held})
            return
        added["content"] = []
        self._emit({"type": "response.output_item.added", "output_index": item.index, "item": added})
        for part in item.parts:
            self._open_part(item, part)
            held = part.text()
            if held:
                self._emit(self._part_event(item, part, "delta", held))
            if part is not item.parts[-1]:
                self._close_part(item, part)

    def _close(self, item: _Item, *, last: bool) -> None:
        if item.closed:
            return
        if not item.added:
            self._add(item)
        status = "incomplete" if last and self.finish_reason in INCOMPLETE_REASONS else "completed"
        item.closed = True
        final = item.snapshot(status)
        if item.kind == "function_call":
            self._emit({"type": "response.function_call_arguments.done", "item_id": item.id,
                        "output_index": item.index, "name": item.name, "arguments": final["arguments"]})
        elif item.parts:
            self._close_part(item, item.parts[-1])
        item.final = final
        self._emit({"type": "response.output_item.done", "output_index": item.index, "item": final})
        self._advance()

    def _open_part(self, item: _Item, part: _Part) -> None:
        self._emit({"type": "response.content_part.added", "item_id": item.id, "output_index": item.index,
                    "content_index": part.index, "part": _part_body(part.type, "")})

    def _close_part(self, item: _Item, part: _Part) -> None:
        if part.done:
            return
        part.done = True
        text = part.text()
        self._emit(self._part_event(item, part, "done", text))
        self._emit({"type": "response.content_part.done", "item_id": item.id, "output_index": item.index,
                    "content_index": part.index, "part": _part_body(part.type, text)})

    def _part_event(self, item: _Item, part: _Part, what: str, text: str) -> dict[str, Any]:
        type_ = part.type
        field = "delta" if what == "delta" else PART_FIELD[type_]
        event = {"type": f"{PART_EVENTS[type_]}.{what}", "item_id": item.id, "output_index": item.index,
                 "content_index": part.index, field: text}
        if type_ == "output_text":
            event["logprobs"] = []
        return event

    def _shell(self, status: str) -> dict[str, Any]:
        return response_shell(self.request, response_id=self.response_id, model=self.model,
                              created_at=self.created_at, status=status)

    def _emit(self, event: dict[str, Any]) -> None:
        event = {"type": event["type"], "sequence_number": self.sequence, **event}
        self.sequence += 1
        self._out.append(b"event: " + event["type"].encode() + b"\ndata: "
                         + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")

    def _flush(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out
