"""Admission and accounting for one request (DESIGN §10), over the state store (§11).

At admission the request reserves an estimate of its tokens: its body's size / 4 (no tokenizer:
JSON is mostly text, and English averages ~4 characters a token) plus the completion it allows
(`max_tokens` / `max_completion_tokens` / `max_output_tokens`, or DEFAULT_COMPLETION_ESTIMATE
when it names none: otherwise N concurrent requests without a limit would all slip under a
limit their answers then exceed), bounded. When its record is finished the reservation is
replaced by what it really used:
- the upstream's `total_tokens` when it reported usage;
- a stream cut short before its usage: the prompt estimate plus what was relayed (bytes / 4:
  the SSE framing counts too, so it errs high, never low);
- a background Responses create (its answer comes later, through follow-ups that carry no
  reservation): the whole estimate;
- a request that failed before reaching an upstream: nothing.
That accounting runs after the answer has gone out and never delays the client: `settle` hands
it to the store's `reconcile_soon` (no task per request; a shared store queues it and sends
many requests' reconciliations in one call).

The same call reads the shared cooldowns of the request's deployments (one round trip to Redis
at most), so a deployment rested by another instance is skipped here too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from routing.config.consumers import Consumer
from routing.errors import GatewayError
from routing.state.store import QUOTA_EXCEEDED, Admission, StateStore, Window
from routing.telemetry.record import SINKS, RequestRecord

log = logging.getLogger("routing.limits")

CHARS_PER_TOKEN = 4
MAX_COMPLETION_ESTIMATE = 1_000_000
# Reserved for the answer of a request that sets no completion limit (reconciled when it ends).
DEFAULT_COMPLETION_ESTIMATE = 1024
GENERATING = frozenset({"chat/completions", "completions", "responses"})
COMPLETION_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def estimate_tokens(body_bytes: int, body: dict[str, Any], operation: str = "chat/completions") -> tuple[int, int]:
    """(prompt estimate, whole estimate) of a request."""
    prompt = max(body_bytes // CHARS_PER_TOKEN, 1)
    if operation not in GENERATING:
        return prompt, prompt  # embeddings: the input is all there is
    completion = DEFAULT_COMPLETION_ESTIMATE
    for name in COMPLETION_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            completion = min(value, MAX_COMPLETION_ESTIMATE)
            break
    return prompt, prompt + completion


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `6s`, `1m30s`, `2h0m0s`."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 0)}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def limit_headers(admission: Admission) -> dict[str, str]:
    headers = {}
    for kind, window in (("tokens", admission.tokens), ("requests", admission.requests)):
        if window is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(window.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(window.remaining, 0))
            headers[f"x-ratelimit-reset-{kind}"] = duration(window.reset)
    return headers


class Limiter:
    def __init__(self, store: StateStore, on_cooldowns: Callable[[dict[str, float]], None],
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.on_cooldowns = on_cooldowns
        self.clock = clock
        # A shared store connects (TLS, Entra token, scripts) on the first request, with its
        # longer probe timeout, rather than failing that request's short call timeout.
        self._connected = not hasattr(store, "connect")

    @property
    def shared(self) -> bool:
        return self.store.name != "memory"

    async def admit(self, consumer: Consumer, record: RequestRecord, body_bytes: int,
                    body: dict[str, Any], routes: Sequence[str]) -> dict[str, str]:
        """Admit or raise 429; the consumer's rate-limit headers (empty without limits)."""
        if not consumer.limits and not self.shared:
            return {}  # nothing to count, and cooldowns are this instance's own
        if not self._connected:
            self._connected = True
            await self.store.connect()
        prompt, tokens = estimate_tokens(body_bytes, body, record.operation)
        admission = await self.store.admit(consumer.name, consumer.limits, tokens, self.clock(), routes)
        if admission.cooldowns:
            self.on_cooldowns(admission.cooldowns)
        headers = limit_headers(admission)
        if not admission.admitted:
            retry = max(math.ceil(admission.retry_after), 1)
            quota = admission.code == QUOTA_EXCEEDED
            raise GatewayError(
                429, _refusal_message(consumer, admission, retry), code=admission.code,
                type="insufficient_quota" if quota else _refused_kind(admission),
                headers={**headers, "retry-after": str(retry),
                         **({"x-should-retry": "false"} if quota else {})})
        if admission.reservation is not None:
            record.reservation = (self, admission.reservation, prompt, tokens)
        return headers

    def settle(self, record: RequestRecord) -> None:
        """The record is finished: its reservation becomes what it really used (handed to the
        store, which applies it now or in the background; never awaited)."""
        _, reservation, prompt, estimate = record.reservation
        record.reservation = None
        if record.background and record.status < 400:
            used = max(estimate, record.total_tokens or 0)  # answered later, by follow-ups
        elif record.total_tokens is not None:
            used = record.total_tokens
        elif record.attempts and record.stream and record.status in (200, 499, 502, 504):
            # Cut short before any usage report: the prompt was read, and whatever reached the
            # client was generated (its bytes / 4 err high: the framing counts too).
            used = prompt + record.relayed_bytes // CHARS_PER_TOKEN
        elif record.attempts and record.status in (200, 499):
            used = prompt  # an answer without usage, or a client that left while it was made
        else:
            used = 0  # refused or failed: nothing was generated for it
        try:
            self.store.reconcile_soon(reservation, used, self.clock())
        except Exception:  # accounting never fails a request; the store logs its degradation
            log.exception("limits: reconciling a reservation of consumer %s failed", reservation.consumer)

    async def usage(self, consumer: Consumer) -> dict[str, Any]:
        """GET /v1/gateway/usage for the calling consumer."""
        limits = consumer.limits
        now = self.clock()
        report = await self.store.usage(consumer.name, limits, now) if limits else None

        def window(w: Window | None, limit: int | None) -> dict[str, Any] | None:
            if limit is None:
                return None
            if w is None:
                return {"limit": limit, "remaining": limit, "used": 0, "reset_seconds": 0}
            return {"limit": w.limit, "remaining": max(w.remaining, 0), "used": max(w.limit - w.remaining, 0),
                    "reset_seconds": round(w.reset, 3)}

        quota = None
        if limits.token_quota:
            w = report.quota if report else None
            quota = {"limit": limits.token_quota, "period": limits.quota_period,
                     "used": report.quota_used if report and report.quota_used is not None else 0,
                     "remaining": max(w.remaining, 0) if w else limits.token_quota,
                     "period_start": report.quota_period_start if report else None,
                     "reset_seconds": round(w.reset, 3) if w else None}
        return {"object": "gateway.usage", "consumer": consumer.name,
                "models": sorted(consumer.models) if consumer.models is not None else None,
                "limits": {"tokens_per_minute": limits.tokens_per_minute,
                           "requests_per_minute": limits.requests_per_minute,
                           "token_quota": limits.token_quota, "quota_period": limits.quota_period},
                "tokens_per_minute": window(report.tokens if report else None, limits.tokens_per_minute),
                "requests_per_minute": window(report.requests if report else None, limits.requests_per_minute),
                "quota": quota, "state": self.store.name}


def _refusal_message(consumer: Consumer, admission: Admission, retry: int) -> str:
    if admission.code == QUOTA_EXCEEDED:
        period = consumer.limits.quota_period or "period"
        return (f"Consumer '{consumer.name}' has used its {period} token quota "
                f"({consumer.limits.token_quota}). It renews in {duration(retry)}.")
    which = _refused_kind(admission)
    limit = consumer.limits.tokens_per_minute if which == "tokens" else consumer.limits.requests_per_minute
    return (f"Rate limit reached for consumer '{consumer.name}' on {which} per minute: limit {limit}. "
            f"Please try again in {duration(retry)}.")


def _refused_kind(admission: Admission) -> str:
    """`tokens` or `requests` (OpenAI's error type for rate limits): the requests bucket when it
    is the one that is empty."""
    if admission.requests is not None and admission.requests.remaining <= 0 and (
            admission.tokens is None or admission.tokens.remaining > 0):
        return "requests"
    return "tokens" if admission.tokens is not None else "requests"


def _settle_sink(record: RequestRecord) -> None:
    if record.reservation is not None:
        record.reservation[0].settle(record)


if _settle_sink not in SINKS:
    SINKS.insert(0, _settle_sink)
