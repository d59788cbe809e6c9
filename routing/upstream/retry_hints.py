"""How long a deployment should rest after a 429/5xx, from the upstream's own hints.

Order (DESIGN §5): `retry-after-ms`, `retry-after` (seconds or an HTTP date),
`x-ratelimit-reset-requests` / `-tokens` (OpenAI durations like `6s`, `1m30s`, `250ms`), else None.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# An upstream hint longer than this is capped: the deployment is tried again after it.
MAX_DELAY = 600.0


def retry_delay(headers: Mapping[str, str]) -> float | None:
    delay = _hinted_delay(headers)
    if delay is None or not math.isfinite(delay):  # `nan`/`inf` parse as floats
        return None
    return min(max(delay, 0.0), MAX_DELAY)


def _hinted_delay(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        try:
            return max(float(value), 0.0)
        except ValueError:
            try:
                return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
            except (TypeError, ValueError, IndexError):
                pass
    resets = [d for d in (_duration(headers.get("x-ratelimit-reset-requests")),
                          _duration(headers.get("x-ratelimit-reset-tokens"))) if d is not None]
    return max(resets) if resets else None


def _duration(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parts = DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * UNIT_SECONDS[u] for n, u in parts)
