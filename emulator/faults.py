"""Fault injection: rules posted to ``/_emulator/faults`` and consumed by matching requests.

A rule either replaces the answer (``status``/``body``) or shapes a normal one (``delay``,
``chunk_delay``, ``cut_after_chunks``). Rules are tried in order of addition; the first that matches
and still has a count left is used and decremented (``count: -1`` lasts until cleared).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from starlette.responses import Response

from .wire import json_response

_RULE_KEYS = {
    "match", "status", "body", "headers", "retry_after", "retry_after_ms",
    "delay", "chunk_delay", "cut_after_chunks", "count",
}
_MATCH_KEYS = {"deployment", "path", "stream"}
_NO_BODY = object()


class FaultSpecError(ValueError):
    """A rule posted to /_emulator/faults is malformed; the message says which field."""


def _number(spec: Mapping[str, Any], key: str, *, integer: bool = False, minimum: float = 0) -> Any:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise FaultSpecError(f"{key}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if value < minimum:
        raise FaultSpecError(f"{key}: must be >= {minimum}, got {value!r}")
    return value


@dataclass
class FaultRule:
    id: int
    deployment: str | None = None
    path: str | None = None
    stream: bool | None = None
    status: int | None = None
    body: Any = _NO_BODY
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float | str | None = None  # seconds, or an HTTP date passed through verbatim
    retry_after_ms: int | None = None
    delay: float = 0.0
    chunk_delay: float | None = None
    cut_after_chunks: int | None = None
    count: int = 1

    @classmethod
    def from_spec(cls, rule_id: int, spec: Any) -> "FaultRule":
        if not isinstance(spec, dict):
            raise FaultSpecError("a fault rule must be a JSON object")
        unknown = sorted(set(spec) - _RULE_KEYS)
        if unknown:
            raise FaultSpecError(f"unknown fault field(s) {unknown}; allowed: {sorted(_RULE_KEYS)}")
        match = spec.get("match") or {}
        if not isinstance(match, dict) or set(match) - _MATCH_KEYS:
            raise FaultSpecError(f"match: expected an object with keys among {sorted(_MATCH_KEYS)}")
        status = _number(spec, "status", integer=True, minimum=100)
        if status is not None and status > 599:
            raise FaultSpecError(f"status: not an HTTP status: {status}")
        headers = spec.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, (str, int, float)) for v in headers.values()):
            raise FaultSpecError("headers: expected an object of header name to string")
        retry_after = spec.get("retry_after")
        if retry_after is not None and not isinstance(retry_after, str):
            retry_after = _number(spec, "retry_after")
        count = spec.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or (count < 1 and count != -1):
            raise FaultSpecError(f"count: expected a positive integer or -1, got {count!r}")
        stream = match.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise FaultSpecError("match.stream: expected true or false")
        return cls(
            id=rule_id,
            deployment=str(match["deployment"]) if match.get("deployment") is not None else None,
            path=str(match["path"]) if match.get("path") is not None else None,
            stream=stream,
            status=status,
            body=spec["body"] if "body" in spec else _NO_BODY,
            headers={str(k).lower(): str(v) for k, v in headers.items()},
            retry_after=retry_after,
            retry_after_ms=_number(spec, "retry_after_ms", integer=True),
            delay=float(_number(spec, "delay") or 0.0),
            chunk_delay=_number(spec, "chunk_delay"),
            cut_after_chunks=_number(spec, "cut_after_chunks", integer=True),
            count=count,
        )

    def matches(self, deployment: str | None, path: str, stream: bool) -> bool:
        if self.deployment is not None and (deployment is None or deployment.casefold() != self.deployment.casefold()):
            return False
        if self.path is not None and self.path not in path:
            return False
        return self.stream is None or self.stream == stream

    def to_json(self) -> dict[str, Any]:
        match = {k: v for k, v in (("deployment", self.deployment), ("path", self.path), ("stream", self.stream)) if v is not None}
        out: dict[str, Any] = {"id": self.id, "match": match, "count": self.count}
        for key in ("status", "retry_after", "retry_after_ms", "chunk_delay", "cut_after_chunks"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.delay:
            out["delay"] = self.delay
        if self.headers:
            out["headers"] = self.headers
        if self.body is not _NO_BODY:
            out["body"] = self.body
        return out

    # --- what the rule sends -------------------------------------------------------------------

    def retry_seconds(self) -> int:
        """Whole seconds for "Please retry after N seconds" in bodies (1 when the rule gave no hint)."""
        if isinstance(self.retry_after, (int, float)):
            return max(1, math.ceil(self.retry_after))
        if self.retry_after_ms is not None:
            return max(1, math.ceil(self.retry_after_ms / 1000))
        return 1

    def retry_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            ra = self.retry_after
            headers["retry-after"] = ra if isinstance(ra, str) else (str(int(ra)) if float(ra).is_integer() else str(ra))
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.retry_after_ms)
        return headers

    def response(self, default_body: Callable[["FaultRule"], Any], headers: Mapping[str, str]) -> Response:
        """The replacement answer: the emulator's usual headers, retry hints, then the rule's headers."""
        assert self.status is not None
        out = dict(headers)
        if self.status == 429:
            out["x-ratelimit-remaining-requests"] = "0"
            out["x-ratelimit-remaining-tokens"] = "0"
        out.update(self.retry_headers())
        out.update(self.headers)
        body = default_body(self) if self.body is _NO_BODY else self.body
        if isinstance(body, str):  # a raw (e.g. HTML proxy) error page
            return Response(body, status_code=self.status, headers=out, media_type="text/plain")
        return json_response(body, self.status, out)


class FaultTable:
    """The rules of one app instance (never shared between apps)."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, spec: Any) -> FaultRule:
        rule = FaultRule.from_spec(self._next_id, spec)
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def clear(self) -> int:
        n = len(self.rules)
        self.rules.clear()
        return n

    def take(self, deployment: str | None, path: str, stream: bool) -> FaultRule | None:
        if not self.rules:  # the common, benchmark path
            return None
        for rule in self.rules:
            if rule.matches(deployment, path, stream):
                if rule.count > 0:
                    rule.count -= 1
                    if rule.count == 0:
                        self.rules.remove(rule)
                return rule
        return None
