"""The access log (DESIGN §12): one JSON object per request on logger `routing.access`, at INFO.

The record is built from the gateway's own names and counts plus the model name the client
sent, which is scrubbed here. It is then handed to the logger's handlers as a ready `LogRecord`:
`Logger.info` would walk the stack for the caller and run the log-record factory (a second
scrub of the whole line), costs paid on every request for nothing.

Locally (`python -m routing serve`) the records go to stdout, one JSON line each; on Azure the
Functions worker's handler sends them to Application Insights as traces. Only the record's
fields: names, counts and times, never content, keys or tokens.
"""

from __future__ import annotations

import json
import logging
import sys

from routing.telemetry.record import SINKS, RequestRecord
from routing.telemetry.redaction import SECRETS

log = logging.getLogger("routing.access")

# Made once: `json.dumps` with options builds an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def write(record: RequestRecord) -> None:
    if log.isEnabledFor(logging.INFO):
        fields = record.fields()
        if fields["model"]:  # the only client-chosen text
            fields["model"] = SECRETS.scrub_text(fields["model"])
        log.handle(logging.LogRecord(log.name, logging.INFO, __file__, 0, _ENCODER.encode(fields), None, None))


def to_stdout() -> None:
    """Local serving: access records on stdout, the bare JSON line each (no second formatting),
    and not also on the root handler (stderr, with the gateway's other log lines)."""
    if not any(getattr(handler, "access_log_stdout", False) for handler in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.access_log_stdout = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.propagate = False


if write not in SINKS:
    SINKS.append(write)
