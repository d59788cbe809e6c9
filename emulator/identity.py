"""App Service managed-identity endpoint emulator (the ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER`` protocol).

What ``azure-identity`` sends (``_credentials/app_service.py``, async and sync alike):
``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>[&client_id=..|object_id=..|mi_res_id=..]``
with header ``X-IDENTITY-HEADER: <IDENTITY_HEADER>``; the scope's ``/.default`` is already turned
into a resource. What it parses: ``access_token``, ``expires_on`` (epoch seconds, a string in real
answers), ``resource`` (its cache key), ``token_type``. Tokens come from ``tokens.issue_token`` so
the other emulators can verify them.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from .faults import FaultRule
from .fake_model import DEFAULT_ANSWER_WORDS
from .records import DEFAULT_RECORD_LIMIT, Call, EmulatorState, control_routes, endpoint
from .tokens import DEFAULT_TOKEN_SECRET, SYSTEM_ASSIGNED_CLIENT_ID, issue_token, normalize_audience
from .wire import json_response, new_uuid

DEFAULT_IDENTITY_HEADER = "emulator-identity-header"
TOKEN_PATH = "/msi/token"
API_VERSION = "2019-08-01"
# The 2019-08-01 protocol names a user-assigned identity by one of these query parameters.
_USER_ASSIGNED_PARAMS = ("client_id", "object_id", "principal_id", "mi_res_id")


def _failure(status: int, message: str) -> Response:
    # App Service answers {"statusCode", "message", "correlationId"}; msal reads statusCode/message.
    return json_response({"statusCode": status, "message": message, "correlationId": new_uuid()}, status)


class _Identity:
    def __init__(self, state: EmulatorState, identity_header: str, token_secret: str,
                 client_ids: Iterable[str] | None, lifetime: int, system_assigned: bool) -> None:
        self.state = state
        self.identity_header = identity_header
        self.token_secret = token_secret
        self.client_ids = None if client_ids is None else {c.lower() for c in client_ids}
        self.lifetime = lifetime
        self.system_assigned = system_assigned

    async def token(self, call: Call) -> Response:
        secret = call.headers.get("x-identity-header")
        if secret is None:  # [observed shape, exact text unconfirmed]
            return _failure(400, "Missing required header X-IDENTITY-HEADER.")
        if secret != self.identity_header:
            return _failure(401, "Unauthorized: the X-IDENTITY-HEADER value is not valid.")
        query = call.query
        version = query.get("api-version")
        if version != API_VERSION:
            return _failure(400, f"Invalid or missing api-version {version!r}; this emulator speaks {API_VERSION}.")
        resource = query.get("resource")
        if not resource:
            return _failure(400, "Missing required query parameter 'resource'.")
        given = [p for p in _USER_ASSIGNED_PARAMS if query.get(p)]
        if len(given) > 1:
            return _failure(400, f"Only one of {', '.join(_USER_ASSIGNED_PARAMS)} may be specified.")
        rule = call.take_fault(None)
        if rule is not None and rule.status is not None:
            return rule.response(_fault_body, {})
        if given:
            client_id = query[given[0]]
            if self.client_ids is not None and client_id.lower() not in self.client_ids:
                return _failure(400, "Unable to load the proper Managed Identity.")
        elif not self.system_assigned:
            return _failure(400, "No system-assigned managed identity is enabled for this app.")
        else:
            client_id = SYSTEM_ASSIGNED_CLIENT_ID
        now = int(time.time())
        audience = normalize_audience(resource)
        token = issue_token(self.token_secret, audience, client_id, self.lifetime, now=now)
        return json_response({
            "access_token": token,
            "expires_on": str(now + self.lifetime),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        })

    async def not_found(self, call: Call) -> Response:
        return _failure(404, "Not found.")


def _fault_body(rule: FaultRule) -> Any:
    return {"statusCode": rule.status, "message": f"Emulated HTTP {rule.status}.", "correlationId": new_uuid()}


def create_app(
    identity_header: str = DEFAULT_IDENTITY_HEADER,
    token_secret: str = DEFAULT_TOKEN_SECRET,
    client_ids: Iterable[str] | None = None,
    lifetime: int = 3600,
    *,
    system_assigned: bool = True,
    record_limit: int = DEFAULT_RECORD_LIMIT,
) -> Starlette:
    """Serves ``GET /msi/token``. ``client_ids``: user-assigned identities that exist (None = any);
    ``system_assigned``: whether a request naming no identity gets the system-assigned one."""
    state = EmulatorState("identity", answer_words=DEFAULT_ANSWER_WORDS, record_limit=record_limit)
    emu = _Identity(state, identity_header, token_secret, client_ids, lifetime, system_assigned)
    routes = control_routes(state) + [
        Route(TOKEN_PATH, endpoint(state, emu.token), methods=["GET"]),
        Route("/{path:path}", endpoint(state, emu.not_found), methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = state
    return app
