"""The local host: the same handlers as `function_app.py`, served by Starlette on uvicorn."""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routing import api
from routing import gateway as runtime
from routing.errors import GatewayError, error_response


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    message = (f"Unknown path {request.url.path}." if status == 404
               else f"Method {request.method} is not allowed on {request.url.path}.")
    return error_response(GatewayError(status, message, code="not_found" if status == 404
                                       else "method_not_allowed"),
                          {"x-request-id": api.request_id(request)})


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette):
    yield
    gateway = runtime.configured()
    if gateway is not None:
        await gateway.aclose()


def create_app() -> Starlette:
    routes = [Route("/" + path, endpoint=handler, methods=methods)
              for path, methods, handler in api.ENDPOINTS]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found},
                     lifespan=_lifespan)


def run(host: str, port: int) -> None:
    """Serve the gateway on uvicorn until interrupted (`python -m routing serve`)."""
    import uvicorn

    # No access log and no proxy-header rewriting: the gateway logs what matters itself and
    # never uses the client address; both cost time on every request.
    uvicorn.run(create_app(), host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=False, timeout_graceful_shutdown=5)
