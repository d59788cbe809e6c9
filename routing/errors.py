"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with a fitting status.

Upstream error bodies (Azure OpenAI's envelope, Azure AI's FastAPI `{"detail": ...}`, flat
`{"message": ...}`) are mapped into the same shape so clients parse one format.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

TYPE_BY_STATUS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "invalid_request_error", 408: "timeout_error", 409: "invalid_request_error",
    413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    """Raised anywhere in a request; `api` turns it into the OpenAI error response."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or error_type(status)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_type(status: int) -> str:
    return TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: GatewayError, headers: dict[str, str]) -> Response:
    return Response(json.dumps(error.body()).encode(), status_code=error.status,
                    media_type="application/json", headers={**headers, **error.headers})


def map_upstream_error(status: int, content: bytes) -> dict[str, Any]:
    """Any upstream error body → the OpenAI envelope, keeping its message, param and code."""
    try:
        data = json.loads(content) if content else None
    except (ValueError, UnicodeDecodeError):
        data = None
    message, param, code, type_ = None, None, None, None
    extra: dict[str, Any] = {}
    if isinstance(data, dict):
        inner = data.get("error")
        if isinstance(inner, dict):
            # Keep what the upstream said beyond the four fields (Azure's `innererror` with the
            # content-filter categories, `status`, ...): clients report why a prompt was blocked.
            extra = {k: v for k, v in inner.items() if k not in ("message", "type", "param", "code")}
            message = inner.get("message")
            param, code, type_ = inner.get("param"), inner.get("code"), inner.get("type")
            if isinstance(inner.get("innererror"), dict) and inner["innererror"].get("code"):
                code = code or inner["innererror"]["code"]
        elif isinstance(inner, str):
            message = inner
        if message is None and "detail" in data:
            message = _detail_message(data["detail"])
            param = param or _detail_param(data["detail"])
        if message is None and isinstance(data.get("message"), str):
            message, code = data["message"], data.get("code")
    if not message:
        text = content.decode("utf-8", "replace").strip() if content else ""
        message = text[:1000] or f"The upstream returned HTTP {status}."
    if code is not None and not isinstance(code, str):
        code = str(code)
    body = error_body(str(message), type_ if isinstance(type_, str) else error_type(status),
                      param if isinstance(param, str) else None, code)
    body["error"].update(extra)
    return body


def _detail_message(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # pydantic/FastAPI validation errors
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", [])[1:]) or "body"
                parts.append(f"{loc}: {item.get('msg', 'invalid')}")
        return "; ".join(parts) or json.dumps(detail)
    return json.dumps(detail)


def _detail_param(detail: Any) -> str | None:
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = detail[0].get("loc") or []
        return str(loc[1]) if len(loc) > 1 else None
    if isinstance(detail, dict) and isinstance(detail.get("loc"), list) and len(detail["loc"]) > 1:
        return str(detail["loc"][1])
    return None
