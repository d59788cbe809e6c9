"""One record per request (DESIGN §12): who called, what was asked, how it ended, the tokens used.

The handler opens a `RequestRecord` when the request arrives; forwarding fills in the route,
the attempts and the usage the upstream reported; `finish` closes it exactly once, when the
answer is complete (a JSON answer returned, a stream ended however it ended), and hands it to
every sink: the access log always, the metrics when configured. Never message content, keys or
tokens: only names, counts and times.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from routing.telemetry.redaction import SECRETS

log = logging.getLogger("routing.telemetry")
SAFE_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# Usage fields as upstreams report them → the record's token fields.
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass
class RequestRecord:
    request_id: str
    operation: str = ""  # "chat/completions", "completions", "embeddings", "models", ...
    consumer: str | None = "default"  # None: the caller was not identified (401)
    model: str | None = None  # the public model the client asked for
    route: str | None = None
    backend: str | None = None
    stream: bool = False
    status: int = 0
    error_code: str | None = None
    attempts: int = 0
    ttfb_ms: float | None = None  # to the response's start (a stream's first event)
    duration_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    dropped_params: int = 0
    response_model: str | None = None  # the model the upstream says answered (metrics only)
    reservation: Any = field(default=None, repr=False)  # limits to settle at finish (routing.limits)
    limit_headers: dict[str, str] | None = field(default=None, repr=False)  # the consumer's x-ratelimit-*
    relayed_bytes: int = field(default=0, repr=False)  # stream bytes sent to the client (limits' estimate)
    background: bool = field(default=False, repr=False)  # a background Responses create
    started: float = field(default_factory=time.perf_counter, repr=False)
    upstream_seconds: float = field(default=0.0, repr=False)  # awaiting upstreams, excluded from overhead
    finished: bool = field(default=False, repr=False)

    def take_usage(self, usage: Any) -> None:
        """An upstream `usage` object (chat, completions, embeddings or Responses shape)."""
        if not isinstance(usage, dict):
            return
        if "input_tokens" in usage or "output_tokens" in usage:  # the Responses API's names
            usage = {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens"),
                     "total_tokens": usage.get("total_tokens"),
                     "prompt_tokens_details": usage.get("input_tokens_details"),
                     "completion_tokens_details": usage.get("output_tokens_details")}
        for name in USAGE_FIELDS:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, value)
        prompt_details = usage.get("prompt_tokens_details")
        if isinstance(prompt_details, dict) and isinstance(prompt_details.get("cached_tokens"), int):
            self.cached_tokens = prompt_details["cached_tokens"]
        completion_details = usage.get("completion_tokens_details")
        if isinstance(completion_details, dict) and isinstance(completion_details.get("reasoning_tokens"), int):
            self.reasoning_tokens = completion_details["reasoning_tokens"]

    def overhead_ms(self) -> float:
        """Time spent in the gateway so far, upstream waits excluded (`x-gateway-overhead-ms`)."""
        return max((time.perf_counter() - self.started - self.upstream_seconds) * 1000.0, 0.0)

    def mark_first_byte(self) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = round((time.perf_counter() - self.started) * 1000.0, 2)

    def fields(self) -> dict[str, Any]:
        """The access-log record (DESIGN §12 names)."""
        return {
            "request_id": self.request_id, "consumer": self.consumer, "model": self.model,
            "route": self.route, "backend": self.backend, "operation": self.operation,
            "stream": self.stream, "status": self.status, "error_code": self.error_code,
            "attempts": self.attempts, "duration_ms": self.duration_ms, "ttfb_ms": self.ttfb_ms,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens, "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens, "dropped_params": self.dropped_params,
        }


# Called with every finished record. The access log is always one; metrics add theirs when an
# exporter is configured (routing.telemetry.metrics).
SINKS: list[Callable[[RequestRecord], None]] = []


def finish(record: RequestRecord, status: int | None = None, error_code: str | None = None) -> None:
    """Close the record (once: later calls do nothing) and hand it to every sink."""
    if record.finished:
        return
    record.finished = True
    if status is not None:
        record.status = status
    if error_code is not None:
        record.error_code = error_code
    if record.error_code is not None:
        record.error_code = safe_code(record.error_code)
    record.duration_ms = round((time.perf_counter() - record.started) * 1000.0, 2)
    if record.ttfb_ms is None:
        record.ttfb_ms = record.duration_ms
    try:  # after the answer has gone out: a JSON answer is written in this same loop step
        asyncio.get_running_loop().call_soon(_to_sinks, record)
    except RuntimeError:  # no loop (a direct call): now
        _to_sinks(record)


def safe_code(code: Any) -> str:
    """An error code fit for the access log and metric dimensions: an upstream's code is its
    free text (it could echo the key it was sent), so only short identifiers that hold no
    configured secret pass; anything else is `upstream_error`."""
    if isinstance(code, str) and SAFE_CODE.fullmatch(code) and not SECRETS.found_in(code):
        return code
    return "upstream_error"


def _to_sinks(record: RequestRecord) -> None:
    for sink in SINKS:
        try:
            sink(record)
        except Exception:  # telemetry never fails a request
            log.exception("request %s: a telemetry sink failed", record.request_id)
