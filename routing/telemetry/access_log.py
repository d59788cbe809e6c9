"""The access log (DESIGN §12): one JSON object per request on logger `routing.access`, at INFO.

Locally it goes wherever logging goes (stdout with `python -m routing serve`); on Azure the
Functions worker sends log records to Application Insights as traces. Only the record's fields:
names, counts and times, never content, keys or tokens.
"""

from __future__ import annotations

import json
import logging

from routing.telemetry.record import SINKS, RequestRecord

log = logging.getLogger("routing.access")


def write(record: RequestRecord) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("%s", json.dumps(record.fields(), separators=(",", ":")))


if write not in SINKS:
    SINKS.append(write)
