"""Usage in streams, both ways round.

`UsageChunk`: a client that asked `stream_options.include_usage` of a backend that reports usage
on its finish chunk (Azure AI) still gets OpenAI's final `choices: []` usage chunk.

Usage for every stream (DESIGN §12): the gateway asks azure-openai upstreams for
`stream_options.include_usage` itself when the client did not, and takes the answer back out,
so the client's bytes are exactly those it would get without the gateway's request.

With `include_usage`, Azure OpenAI (like OpenAI) adds `"usage":null` to every chunk and ends
with one `choices: []` chunk carrying the usage. Taking them out works on the bytes: an unescaped
`"` cannot occur inside a JSON string, so `"usage":null` in a payload is always that member.
"""

from __future__ import annotations

import json
import re
from typing import Any

from routing.config.settings import Route
from routing.upstream.backends.base import OperationRules

# Operations whose azure-openai streams report usage when asked.
USAGE_OPERATIONS = ("chat/completions", "completions")
# The member `"usage": null` with the comma that joins it to its neighbour (either side).
USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,?')


def asks_for_usage(body: dict[str, Any], route: Route, operation: str, rules: OperationRules) -> bool:
    """Add `include_usage` to an upstream stream request where the route's API takes it;
    whether it did (the stream's usage chunk must then be taken out)."""
    if route.backend != "azure-openai" or operation not in USAGE_OPERATIONS:
        return False
    if "stream_options" in rules.drop or (rules.accepted is not None and "stream_options" not in rules.accepted):
        return False  # an api-version before stream_options: its streams carry no usage
    options = body.get("stream_options")
    body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


def without_usage_member(payload: bytes) -> bytes:
    """A chunk as it would be without the gateway's `include_usage`: no `"usage":null`."""
    return USAGE_NULL.sub(b"", payload, count=1) if b'"usage"' in payload else payload


class UsageChunk:
    """OpenAI's `stream_options.include_usage` for a backend that reports usage on its finish
    chunk (Azure AI): usage moves to one `choices: []` chunk before `[DONE]`; a backend that
    already sends such a chunk is left alone."""

    def __init__(self) -> None:
        self.usage: Any = None
        self.template: dict[str, Any] = {}
        self.sent = False

    def take(self, payload: bytes, data: dict[str, Any]) -> bytes:
        """A parsed chunk as it goes on: a finish chunk's usage is set aside."""
        if not data.get("usage"):
            return payload
        if not data.get("choices"):
            self.sent = True  # the backend's own usage chunk
            return payload
        self.usage = data["usage"]
        self.template = {k: data[k] for k in ("id", "object", "created", "model", "system_fingerprint") if k in data}
        data["usage"] = None  # counted once, in the usage chunk
        return json.dumps(data, separators=(",", ":")).encode()

    def before_done(self) -> list[bytes]:
        if self.sent or self.usage is None:
            return []
        self.sent = True
        return [json.dumps({**self.template, "choices": [], "usage": self.usage}, separators=(",", ":")).encode()]
