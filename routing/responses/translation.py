"""A Responses create served by chat completions, for routes whose upstream has no Responses
API (azure-ai): the request translated (`translate_request`), sent as a chat completion through
the usual pool, failover and relay, and its answer translated back (`translate_response`,
`translate_stream`) with ids that name the route, as native ones do.
"""

from __future__ import annotations

from typing import Any

from routing.config.settings import Route
from routing.responses.translate_request import responses_to_chat
from routing.responses.translate_response import chat_to_response, new_id
from routing.responses.translate_stream import ChatToResponsesStream
from routing.telemetry.record import RequestRecord
from routing.upstream.forward import Call

CHAT = "chat/completions"


class TranslatedEvents:
    """The `EventStream` adapter turning one route's chat chunks into Responses events."""

    def __init__(self, request: dict[str, Any], route: Route, codec, record: RequestRecord):
        self.record = record
        self.failure_code: str | None = None
        self.stream = ChatToResponsesStream(
            request, model=request.get("model") if isinstance(request.get("model"), str) else None,
            make_id=lambda prefix: codec.encode(route.id, new_id(prefix)))

    def event(self, payload: bytes, data: dict[str, Any]) -> tuple[bytes, bool]:
        out = self.stream.feed(data)
        if data.get("usage"):
            self.record.take_usage(data["usage"])
        if self.stream.ended and self.stream.status == "failed":
            self.failure_code = "upstream_error"
        return out, self.stream.ended

    def done(self) -> bytes:
        out = self.stream.finish()
        if self.stream.status == "failed":
            self.failure_code = "upstream_stream_error"
        return out

    def failed(self, message: str, code: str) -> bytes:
        self.failure_code = self.failure_code or code
        return self.stream.fail(message)


def translated_call(codec, body: dict[str, Any], pool: list[Route], common: dict[str, Any]) -> Call:
    """The chat completions call that answers a Responses create on `pool` (400 naming the
    parameter for what cannot be translated, before any upstream call). `codec`: the calling
    consumer's ids."""
    request = dict(body)  # the client's Responses body, for the answer's echo of its settings
    chat = responses_to_chat(body)
    record: RequestRecord = common["record"]

    def rewrite(answer: dict[str, Any], route: Route) -> dict[str, Any]:
        translated = chat_to_response(answer, request, model=request.get("model"))
        return codec.rewrite_out(translated, route.id)  # its response and item ids name the route

    routes = [r for r in pool if _supports(r, CHAT)]
    return Call(operation=CHAT, body=chat, pool=routes or pool, **common,
                events=lambda route: TranslatedEvents(request, route, codec, record), rewrite=rewrite)


def _supports(route: Route, operation: str) -> bool:
    from routing.upstream.backends import BACKENDS

    return BACKENDS[route.backend].supports(route, operation)
