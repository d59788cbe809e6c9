"""A Responses API stream relayed as it comes (DESIGN §13): each upstream event checked, its ids
rewritten to the gateway's (the same upstream id always gives the same client id), its usage
taken from the terminal event, and framed as OpenAI frames it: `event: <type>` then `data:`.

A Responses stream has no `[DONE]`: it is complete with `response.completed`, `.incomplete` or
`.failed` (the SDK's `responses.stream()` needs one of them); an upstream `error` event ends it
too. Anything else before the upstream closes is a stream cut short, as for chat.
"""

from __future__ import annotations

import json
from typing import Any

from routing.errors import reduce_upstream_error
from routing.responses.ids import IdCodec
from routing.telemetry.record import RequestRecord

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class ResponsesEvents:
    """The `EventStream` adapter of a native Responses stream from one route."""

    def __init__(self, codec: IdCodec | None, route_id: str, record: RequestRecord):
        self.codec = codec
        self.route_id = route_id
        self.record = record
        self.failure_code: str | None = None
        self.sequence = -1  # the last sequence_number relayed

    def event(self, payload: bytes, data: dict[str, Any]) -> tuple[bytes, bool]:
        """(the client's framed event, whether it ends the stream)."""
        kind = data.get("type") if isinstance(data.get("type"), str) else ""
        if not kind and data.get("error"):  # an error in chat's shape: OpenAI's error event
            reduced = reduce_upstream_error(data, "server_error")["error"]
            return self.failed(reduced.get("message") or "The upstream failed.", reduced.get("code") or "upstream_error"), True
        if isinstance(data.get("sequence_number"), int):
            self.sequence = data["sequence_number"]
        response = data.get("response")
        if isinstance(response, dict):
            if kind in TERMINAL and response.get("usage"):
                self.record.take_usage(response["usage"])
            if self.record.response_model is None and isinstance(response.get("model"), str):
                self.record.response_model = response["model"]
        if kind == "response.failed" or kind == "error":
            error = response.get("error") if isinstance(response, dict) else data
            code = error.get("code") if isinstance(error, dict) else None
            self.failure_code = code if isinstance(code, str) and code else "upstream_error"
        if self.codec is not None:
            payload = _ENCODER.encode(self.codec.rewrite_out(data, self.route_id)).encode()
        return framed(kind, payload), kind in TERMINAL

    def done(self) -> bytes:
        return b""  # `[DONE]` is not part of this API's stream; it ended the upstream's, quietly

    def failed(self, message: str, code: str) -> bytes:
        self.failure_code = self.failure_code or code
        self.sequence += 1
        event = {"type": "error", "code": code, "message": message, "param": None,
                 "sequence_number": self.sequence}
        return framed("error", _ENCODER.encode(event).encode())


def framed(kind: str, payload: bytes) -> bytes:
    name = kind.encode() if kind and kind.isascii() and kind.replace(".", "").replace("_", "").isalnum() else b"message"
    return b"event: " + name + b"\ndata: " + payload + b"\n\n"
