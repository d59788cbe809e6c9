"""JSON and SSE encoding shared by every emulator.

Compact JSON everywhere (Azure sends compact bodies), orjson when installed because the emulator is
also the "fast upstream" of the benchmarks and should cost as little CPU per request as possible.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from starlette.responses import Response

try:  # optional speed-up; behaviour is identical
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

if _orjson is not None:

    def dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj)

    loads = _orjson.loads
    JSONDecodeError: type[Exception] = _orjson.JSONDecodeError
else:
    _encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

    def dumps(obj: Any) -> bytes:
        return _encoder.encode(obj).encode("utf-8")

    loads = json.loads
    JSONDecodeError = ValueError  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
SSE_DONE = b"data: [DONE]\n\n"


def sse_event(obj: Any) -> bytes:
    """One strict SSE event: ``data: {json}`` + blank line, LF only (the azure-ai-inference parser
    rejects anything else)."""
    return b"data: " + dumps(obj) + b"\n\n"


def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(obj), status_code=status, headers=dict(headers) if headers else None, media_type=JSON_TYPE)


def new_id(prefix: str = "") -> str:
    """Random opaque id (chatcmpl-..., apim-request-id); urandom is cheaper than uuid4()."""
    return prefix + os.urandom(12).hex()


def new_uuid() -> str:
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
