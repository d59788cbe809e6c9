"""The local host: the same handlers as `function_app.py`, served by Starlette on uvicorn.

uvicorn's httptools protocol bounds neither the size of a request head (request line + headers:
llhttp has no limit, httptools accumulates each header with `bytes +=`, quadratic in the number
of pieces it arrives in) nor the time a client takes to send it (a connection that sends nothing
is kept forever). `BoundedHttpToolsProtocol` adds both, keeping httptools as the parser: a head
over MAX_HEAD_BYTES → 431 and close; a head not complete HEAD_TIMEOUT seconds after the
connection opened (or after the previous response) → 408 and close (silent close when nothing
was sent). On Azure the Functions host (Kestrel) sits in front and applies its own limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routing import api
from routing import gateway as runtime
from routing.errors import GatewayError, error_body, error_response, error_type

# Kestrel's default total for request headers (Kestrel is the Functions host's web server);
# the request line counts here too.
MAX_HEAD_BYTES = 32 * 1024
# Seconds to send a whole request head; clients send it in one write, so this is generous.
HEAD_TIMEOUT = 10.0


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    message = (f"Unknown path {request.url.path[:256]}." if status == 404
               else f"Method {request.method[:32]} is not allowed on {request.url.path[:256]}.")
    return error_response(GatewayError(status, message, code="not_found" if status == 404
                                       else "method_not_allowed"),
                          {"x-request-id": api.request_id(request)})


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette):
    yield
    gateway = runtime.configured()
    if gateway is not None:
        await gateway.aclose()


def create_app():
    """The ASGI app: the fixed paths (every hot one) dispatched straight to their handler, the
    rest (templated paths, unknown paths and methods, lifespan) through Starlette's router.

    Starlette's middleware and routing layers cost ~35 µs per request here, more than any other
    stage of the gateway's own; a dict lookup does the same for paths without parameters. The
    handlers answer every failure themselves (OpenAI-shaped), as they do under Functions."""
    from routing.endpoints import ENDPOINTS

    routes = [Route("/" + path, endpoint=handler, methods=methods) for path, methods, handler in ENDPOINTS]
    router = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found},
                       lifespan=_lifespan)
    # A trailing slash is an unknown path (OpenAI-shaped 404), not a redirect whose Location
    # Starlette would build from the client's Host header.
    router.router.redirect_slashes = False
    fixed: dict[str, dict[str, object]] = {}
    for path, methods, handler in ENDPOINTS:
        if "{" not in path:
            fixed.setdefault("/" + path, {}).update(dict.fromkeys(methods, handler))

    async def app(scope, receive, send) -> None:
        handler = fixed.get(scope.get("path"), {}).get(scope.get("method")) if scope["type"] == "http" else None
        if handler is None:
            await router(scope, receive, send)
            return
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)

    app.router = router  # type: ignore[attr-defined]
    return app


def _canned(status: int, reason: bytes, message: str, code: str) -> bytes:
    """A complete OpenAI-shaped error response that closes the connection."""
    body = json.dumps(error_body(message, error_type(status), None, code)).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, reason, len(body))) + body


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: `run` falls back to h11, which has its own head limit
    HttpToolsProtocol = None
else:
    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a bounded request head, in bytes and in time.

        Only head bytes are counted (body bytes take the fast path). One timer per request,
        like uvicorn's own keep-alive timer: armed when the connection opens and when a response
        completes (the next head is due, or the rest of a body the app did not read must
        arrive), cancelled when a head completes."""

        max_head_bytes = MAX_HEAD_BYTES
        head_timeout = HEAD_TIMEOUT
        too_large = _canned(431, b"Request Header Fields Too Large",
                            f"The request line and headers exceed {MAX_HEAD_BYTES} bytes.",
                            "request_header_fields_too_large")
        too_slow = _canned(408, b"Request Timeout",
                           f"The request headers were not received within {HEAD_TIMEOUT:g} seconds.",
                           "request_timeout")

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._reading_head = True
            self._head_bytes = 0
            self._heads = 0  # heads completed on this connection
            self._head_timer: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._reading_head:
                return super().data_received(data)
            allowed = self.max_head_bytes - self._head_bytes
            if len(data) <= allowed:
                self._head_bytes += len(data)
                return super().data_received(data)
            # More than the allowance: the head must end within it (what follows may be body,
            # or the next pipelined request, counted afresh).
            heads = self._heads
            super().data_received(data[:allowed])
            if self.transport.is_closing():  # the parser rejected it already
                return
            if self._heads == heads:
                self._reject(self.too_large)
            else:
                self.data_received(data[allowed:])

        def on_headers_complete(self) -> None:
            self._reading_head = False
            self._heads += 1
            self._cancel_head_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._reading_head = True  # whatever comes next is the next request's head
            self._head_bytes = 0
            super().on_message_complete()
            if self.cycle is not None and self.cycle.response_complete:
                self._cancel_head_timer()  # answered before its body ended: the next head is
                self._arm_head_timer()     # due from now

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                if self._reading_head:  # a pipelined head arriving while a response is sent
                    self._arm_head_timer()
                return  # a request being served is bounded by the app (body timeout, deadline)
            self._reject(self.too_slow if self._reading_head and self._head_bytes else b"")

        def _reject(self, response: bytes) -> None:
            self._cancel_head_timer()
            if response and (self.cycle is None or self.cycle.response_complete):
                self.transport.write(response)  # never in the middle of another response
            self.transport.close()


def run(host: str, port: int) -> None:
    """Serve the gateway on uvicorn until interrupted (`python -m routing serve`)."""
    import uvicorn

    # No access log and no proxy-header rewriting: the gateway logs what matters itself and
    # never uses the client address; both cost time on every request.
    uvicorn.run(create_app(), host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=False, timeout_graceful_shutdown=5,
                http=BoundedHttpToolsProtocol if HttpToolsProtocol is not None else "h11")
