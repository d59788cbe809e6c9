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

from routing.responses.ids import IdCodec
from routing.telemetry.record import RequestRecord

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class ResponsesEvents:
    """The `EventStream` adapter of a Responses stream from one route."""

    def __init__(self, codec: IdCodec | None, route_id: str, record: RequestRecord):
        self.codec = codec
        self.route_id = route_id
        self.record = record

    def event(self, payload: bytes, data: dict[str, Any]) -> tuple[bytes, bool]:
        """(the client's framed event, whether it ends the stream)."""
        kind = data.get("type") if isinstance(data.get("type"), str) else ""
        response = data.get("response")
        if isinstance(response, dict):
            if kind in TERMINAL and response.get("usage"):
                self.record.take_usage(response["usage"])
            if self.record.response_model is None and isinstance(response.get("model"), str):
                self.record.response_model = response["model"]
        if self.codec is not None:
            payload = _ENCODER.encode(self.codec.rewrite_out(data, self.route_id)).encode()
        name = kind.encode() if kind.isascii() and kind.replace(".", "").replace("_", "").isalnum() else b"message"
        return b"event: " + name + b"\ndata: " + payload + b"\n\n", kind in TERMINAL
