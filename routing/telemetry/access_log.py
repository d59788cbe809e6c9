"""The access log (DESIGN §12): one JSON object per request on logger `routing.access`, at INFO.

The record is built from the gateway's own names and counts plus the model name the client
sent, which is scrubbed here. It is then handed to the logger's handlers as a ready `LogRecord`:
`Logger.info` would walk the stack for the caller and run the log-record factory (a second
scrub of the whole line), costs paid on every request for nothing.

On Azure the Functions worker's handler sends the records to Application Insights as traces.
Locally (`python -m routing serve`, `to_stdout()`) the lines go to stdout directly, the bare JSON
each, written once per event-loop turn for all the requests that ended in it. Only the record's
fields: names, counts and times, never content, keys or tokens.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
from typing import TextIO

from routing.telemetry.record import SINKS, RequestRecord
from routing.telemetry.redaction import SECRETS

log = logging.getLogger("routing.access")

# Made once: `json.dumps` with options builds an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class LineWriter:
    """Lines to a stream, written together at the end of the event-loop turn that produced them
    (one write for many requests under load), at once outside a loop, and at exit."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.pending: list[str] = []
        atexit.register(self.flush)

    def __call__(self, line: str) -> None:
        self.pending.append(line)
        if len(self.pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stdout closed or gone: the log cannot fail a request
                pass


_direct: LineWriter | None = None


def write(record: RequestRecord) -> None:
    if log.isEnabledFor(logging.INFO):
        fields = record.fields()
        if fields["model"]:  # the only client-chosen text
            fields["model"] = SECRETS.scrub_text(fields["model"])
        line = _ENCODER.encode(fields)
        if _direct is not None:
            _direct(line)
        else:
            log.handle(logging.LogRecord(log.name, logging.INFO, __file__, 0, line, None, None))


def to_stdout(stream: TextIO | None = None) -> None:
    """Local serving: the access lines on stdout, bare JSON (the root handler's stderr keeps the
    gateway's other log lines)."""
    global _direct
    if _direct is None:
        _direct = LineWriter(stream or sys.stdout)


if write not in SINKS:
    SINKS.append(write)
