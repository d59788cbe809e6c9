"""The access log (DESIGN §12): one JSON object per request on logger `routing.access`, at INFO.

The record is built from the gateway's own names and counts plus the model name the client
sent, which is scrubbed here: the log-record factory's scrub (a second pass over the whole line)
is skipped for this logger, on the hot path of every request.

Locally it goes wherever logging goes (stdout with `python -m routing serve`); on Azure the
Functions worker sends log records to Application Insights as traces. Only the record's fields:
names, counts and times, never content, keys or tokens.
"""

from __future__ import annotations

import json
import logging

from routing.telemetry.record import SINKS, RequestRecord
from routing.telemetry.redaction import SECRETS

log = logging.getLogger("routing.access")


# Made once: `json.dumps` with options builds an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def write(record: RequestRecord) -> None:
    if log.isEnabledFor(logging.INFO):
        fields = record.fields()
        if fields["model"]:  # the only client-chosen text: scrubbed here, so the record
            fields["model"] = SECRETS.scrub_text(fields["model"])  # factory can pass it by
        log.info(_ENCODER.encode(fields))


if write not in SINKS:
    SINKS.append(write)
