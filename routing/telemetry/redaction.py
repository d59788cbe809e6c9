"""No configured secret leaves the gateway (DESIGN §8), whatever an upstream or the identity
endpoint echoes back.

`SECRETS` holds every secret the gateway knows: route keys, inbound keys, the managed-identity
header, and the access tokens it fetched (the current and previous one per identity and scope).
`scrub_bytes` / `scrub_text` replace any of them with `[redacted]`; they cost one fast substring
search per secret over the data (linear), so they can guard every upstream byte that reaches a
client. `install_log_redaction` makes every log record, from any logger (azure-identity's and the
Functions worker's included), carry only scrubbed text.

Values shorter than MIN_SECRET_LENGTH are not registered: replacing a short string everywhere
would mangle ordinary text, and such keys are refused by the settings anyway (inbound) or are
test values.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any

MIN_SECRET_LENGTH = 8
REDACTED = "[redacted]"
REDACTED_BYTES = REDACTED.encode()
TOKENS_KEPT_PER_SLOT = 2


class SecretRegistry:
    """Secrets by slot: a slot holds its last few values (a token slot rotates)."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, deque[str]] = {}
        self._lock = threading.Lock()
        self._texts: tuple[str, ...] = ()
        self._bytes: tuple[bytes, ...] = ()

    def add(self, slot: Hashable, value: str | None, keep: int = 1) -> None:
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            values = self._slots.get(slot)
            if values is None or values.maxlen != keep:
                values = self._slots[slot] = deque(values or (), maxlen=keep)
            if value in values:
                return
            values.append(value)
            self._rebuild()

    def add_all(self, slot: Hashable, values: Iterable[str | None]) -> None:
        for index, value in enumerate(values):
            self.add((slot, index), value)

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()
            self._rebuild()

    def _rebuild(self) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        texts = sorted({v for values in self._slots.values() for v in values}, key=len, reverse=True)
        self._texts = tuple(texts)
        self._bytes = tuple(t.encode() for t in texts)

    def __bool__(self) -> bool:
        return bool(self._texts)

    def scrub_bytes(self, data: bytes) -> bytes:
        for secret in self._bytes:
            if secret in data:
                data = data.replace(secret, REDACTED_BYTES)
        return data

    def scrub_text(self, text: str) -> str:
        for secret in self._texts:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def scrub_json(self, payload: bytes, decoded: Any = None) -> bytes:
        """A JSON payload scrubbed, secrets written with JSON escapes (`\\u0073k-...`, `\\/`)
        included: those are looked for in the decoded strings (`decoded`, when the caller parsed
        the payload already). Only payloads holding such escapes pay for the decoding."""
        payload = self.scrub_bytes(payload)
        if not self._texts or (b"\\u" not in payload and b"\\/" not in payload):
            return payload
        try:
            value = json.loads(payload) if decoded is None else decoded
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (ValueError, RecursionError):
            return payload
        if not self.found_in(text):
            return payload
        # Re-encoded ASCII-escaped: a lone surrogate from the upstream cannot break the UTF-8.
        return json.dumps(json.loads(self.scrub_text(text)), separators=(",", ":")).encode()

    def found_in(self, data: bytes | str) -> bool:
        secrets = self._bytes if isinstance(data, bytes) else self._texts
        return any(secret in data for secret in secrets)


SECRETS = SecretRegistry()


def install_log_redaction(registry: SecretRegistry = SECRETS) -> None:
    """Every log record created from now on holds only scrubbed text: its message (arguments
    applied) and its traceback (folded into the message, so handlers that read `exc_info`
    themselves, such as OpenTelemetry's, cannot see an unscrubbed exception message)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "redacts_secrets", None) is registry:
        return  # installed already (a re-imported module brings a registry of its own)

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = current(*args, **kwargs)
        if not registry:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format call: never raise into the caller; keep what it said
            message = f"{record.msg} {record.args!r}"
        if record.exc_info and record.exc_info[0] is not None:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = registry.scrub_text(message), ()
        if record.stack_info:
            record.stack_info = registry.scrub_text(record.stack_info)
        return record

    factory.redacts_secrets = registry  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
