"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with a fitting status.

Upstream error bodies (Azure OpenAI's envelope, Azure AI's `{"detail": ...}` in its three
shapes, flat `{"message": ...}`, text) are mapped into the same shape so clients parse one
format, and reduced to it (DESIGN §8): only the four OpenAI fields and Azure's content-filter
details are passed on, because an upstream may echo anything, request headers included. Every
error body leaves through the secret scrubber.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.responses import Response

from routing.telemetry.redaction import SECRETS

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
    # Scrubbed: the message may quote an upstream (e.g. the last error of an exhausted pool).
    return Response(SECRETS.scrub_bytes(json.dumps(error.body()).encode()), status_code=error.status,
                    media_type="application/json", headers={**headers, **error.headers})


# What clients need to tell why Azure blocked a prompt (`BadRequestError.body["innererror"]`);
# both spellings of the inner key and the results key occur in the wild.
INNER_ERROR_KEYS = ("innererror", "inner_error")
CONTENT_FILTER_KEYS = ("content_filter_result", "content_filter_results")
MAX_MESSAGE_CHARS = 16_000
MAX_TEXT_MESSAGE_CHARS = 500  # a non-JSON error body (an HTML page) says little more
MAX_IDENTIFIER_CHARS = 256  # type, param, code
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def map_upstream_error(status: int, content: bytes) -> dict[str, Any]:
    """Any upstream error body → the OpenAI envelope (see `reduce_upstream_error`). The caller
    scrubs the encoded result."""
    data = _json(content)
    if isinstance(data, dict):
        return reduce_upstream_error(data, error_type(status), f"The upstream returned HTTP {status}.")
    text = _cut(" ".join(content.decode("utf-8", "replace").split()), MAX_TEXT_MESSAGE_CHARS) if content else ""
    return error_body(text or f"The upstream returned HTTP {status}.", error_type(status))


def reduce_upstream_error(data: dict[str, Any], default_type: str,
                          default_message: str = "The upstream reported an error.") -> dict[str, Any]:
    """A parsed upstream error (a body, or an in-stream `{"error": ...}` event) → the OpenAI
    envelope with the upstream's message, type, param and code, and Azure's content-filter
    details (`innererror.code`, `innererror.content_filter_result(s)`, `content_filter_results`).
    Nothing else of the upstream's is kept.

    Shapes: Azure OpenAI `{"error": {message, type, param, code, innererror}}`; flat
    `{"status", "code", "message", "param"}`; Azure AI 422 `{"code", "message", "detail":
    {"loc": [...]}}`; pydantic `{"detail": [{"type", "loc", "msg"}]}`; Foundry's wrapped
    `{"error": {"code": "Invalid input", "message": "<JSON with detail>"}}`; `{"error": "text"}`.
    """
    inner = data.get("error")
    source = inner if isinstance(inner, dict) else data
    message = _message(inner if isinstance(inner, str) else source.get("message"))
    type_ = _string(source.get("type"), MAX_IDENTIFIER_CHARS)
    param = _string(source.get("param"), MAX_IDENTIFIER_CHARS)
    code = source.get("code")
    code = str(code) if isinstance(code, int) and not isinstance(code, bool) else _string(code, MAX_IDENTIFIER_CHARS)
    detail = source.get("detail", data.get("detail"))
    if detail is None and message and message.lstrip().startswith("{"):
        wrapped = _json(message.encode())  # Foundry: a pydantic body as the message's text
        if isinstance(wrapped, dict) and "detail" in wrapped:
            detail, message = wrapped["detail"], None
            if code is not None and not IDENTIFIER.fullmatch(code):
                code = None  # "Invalid input": the detail's own code says more
    if detail is not None:
        message = message or _detail_message(detail)
        param = param or _detail_param(detail)
        code = code or _detail_code(detail)
    content_filter = _content_filter_details(source)
    if code is None and "innererror" in content_filter:
        code = content_filter["innererror"].get("code")
    body = error_body(message or default_message, type_ or default_type, param, code)
    body["error"].update(content_filter)
    return body


def _content_filter_details(source: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {}
    inner = next((source[k] for k in INNER_ERROR_KEYS if isinstance(source.get(k), dict)), None)
    if inner is not None:
        kept = {k: inner[k] for k in CONTENT_FILTER_KEYS if isinstance(inner.get(k), dict)}
        if isinstance(inner.get("code"), str) and len(inner["code"]) <= MAX_IDENTIFIER_CHARS:
            kept = {"code": inner["code"], **kept}
        if kept:
            details["innererror"] = kept
    if isinstance(source.get("content_filter_results"), dict):
        details["content_filter_results"] = source["content_filter_results"]
    return details


def _json(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except (ValueError, RecursionError):
        return None


def _cut(text: str, limit: int) -> str:
    """Upstream text, bounded. Scrubbed first: a cut through a secret would leave a prefix of it
    that no later scrub recognises (DESIGN §8)."""
    text = SECRETS.scrub_text(text)
    return text if len(text) <= limit else text[:limit] + "…"


def _message(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return _cut(value, MAX_MESSAGE_CHARS)


def _string(value: Any, limit: int) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= limit else None


def _detail_message(detail: Any) -> str:
    if isinstance(detail, str):
        return _message(detail) or "The upstream rejected the request as invalid."
    if isinstance(detail, list):  # pydantic/FastAPI validation errors
        parts = []
        for item in detail[:20]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in _loc(item)[1:]) or "body"
                msg = item.get("msg") if isinstance(item.get("msg"), str) else "invalid value"
                parts.append(f"{loc}: {msg}")
        if parts:
            return _cut("; ".join(parts), MAX_MESSAGE_CHARS)
    if isinstance(detail, dict) and len(_loc(detail)) > 1:  # Azure AI: {"loc": [...], "input"}
        return _cut(f"Invalid value for {'.'.join(str(p) for p in _loc(detail)[1:])}.", MAX_MESSAGE_CHARS)
    return "The upstream rejected the request as invalid."


def _detail_param(detail: Any) -> str | None:
    first = detail[0] if isinstance(detail, list) and detail else detail
    loc = _loc(first) if isinstance(first, dict) else []
    return _cut(str(loc[1]), MAX_IDENTIFIER_CHARS) if len(loc) > 1 else None


def _detail_code(detail: Any) -> str | None:
    first = detail[0] if isinstance(detail, list) and detail else None
    return _string(first.get("type"), MAX_IDENTIFIER_CHARS) if isinstance(first, dict) else None


def _loc(item: dict[str, Any]) -> list[Any]:
    loc = item.get("loc")
    return [p for p in loc if isinstance(p, (str, int))] if isinstance(loc, list) else []
