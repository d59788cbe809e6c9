"""Upstream Server-Sent Events → whole events and their JSON payloads, in time linear in the
bytes received (DESIGN §8: an upstream writing tiny pieces must not cost quadratic work).

`EventSplitter` searches only each new chunk (plus one byte of overlap for an event end split
between two chunks) and keeps the pieces of an unfinished event in a list, joined once when its
end arrives. `json_object` is the per-event check: a payload is `[DONE]` or a JSON object.
"""

from __future__ import annotations

import json
from typing import Any

from routing.inbound.body import MAX_JSON_CONTAINERS, count_containers

DONE = b"[DONE]"
EVENT_END = b"\n\n"
MAX_EVENT_BYTES = 4 * 1024 * 1024  # one event larger than this is a broken upstream
NOT_JSON = object()  # what `json_object` returns for anything that is not a JSON object


class EventTooLarge(Exception):
    pass


class EventSplitter:
    """Upstream chunks → blocks of whole events with LF line ends (each block ends with a blank
    line). CR and CRLF line ends become LF; a chunk's trailing CR waits for the next chunk,
    which may start with its LF."""

    def __init__(self, limit: int = MAX_EVENT_BYTES):
        self.limit = limit
        self.pieces: list[bytes] = []  # the unfinished event, as it arrived
        self.size = 0
        self.held_cr = False

    def feed(self, chunk: bytes) -> bytes | None:
        """The whole events completed by `chunk`, or None. EventTooLarge past the limit."""
        if self.held_cr:
            chunk, self.held_cr = b"\r" + chunk, False
        if b"\r" in chunk:  # a scan of the new bytes only
            if chunk.endswith(b"\r"):
                chunk, self.held_cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not chunk:
            return None
        end = chunk.rfind(EVENT_END)
        if end >= 0:
            end += 2
        elif chunk[0] == 0x0A and self.pieces and self.pieces[-1][-1] == 0x0A:
            end = 1  # the blank line straddles the two chunks
        else:
            self._keep(chunk)
            return None
        self.pieces.append(chunk[:end])
        block = b"".join(self.pieces)
        self.pieces, self.size = [], 0
        if end < len(chunk):
            self._keep(chunk[end:])
        return block

    def finish(self) -> bytes:
        """What is left when the upstream closed (an event without its blank line, if any)."""
        tail = b"".join(self.pieces) + (b"\n" if self.held_cr else b"")
        self.pieces, self.size, self.held_cr = [], 0, False
        return tail

    def pending(self) -> bool:
        return any(piece.strip() for piece in self.pieces)

    def _keep(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.size += len(piece)
        if self.size > self.limit:
            raise EventTooLarge


def event_payloads(block: bytes) -> list[bytes]:
    """The data payloads of the complete events in `block` (LF line ends, ends with a blank line)."""
    payloads = []
    for event in block[:-2].split(EVENT_END):
        if event.startswith(b"data: ") and b"\n" not in event:  # the usual shape: one data line
            payloads.append(event[6:])
            continue
        data = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:  # comments, event:, id: and retry: lines carry nothing a client needs
            # Multi-line data is JSON split between tokens, where a space is equivalent.
            payloads.append(b" ".join(data))
    return payloads


def frame(payloads: list[bytes]) -> bytes:
    return b"".join(b"data: " + payload + EVENT_END for payload in payloads)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: strict clients cannot parse them


# Decoders made once: `json.loads` with any option builds a new one per call (~1 µs).
_DECODER = json.JSONDecoder(parse_constant=_no_constants)
# For a yes/no answer the scanner still checks every number's syntax, but skips converting
# floats, most of the cost of an embeddings body (1536 floats: ~0.5 ms → ~0.1 ms).
_CHECKER = json.JSONDecoder(parse_constant=_no_constants, parse_float=len)


def json_object(content: bytes) -> Any:
    """The JSON object in `content`, or NOT_JSON (not UTF-8 JSON, not an object, NaN, too deep)."""
    return _decode(_DECODER, content)


def checked_json_object(content: bytes) -> Any:
    """The JSON object in `content`, or NOT_JSON; its float values are checked, not converted
    (each becomes the length of its text: enough to read `usage`, `model` and the like)."""
    return _decode(_CHECKER, content)


def _decode(decoder: json.JSONDecoder, content: bytes) -> Any:
    try:
        text = content.decode("utf-8")
        # Past this many arrays + objects, parsing itself is the attack (memory ~25x the bytes,
        # seconds of CPU): no real answer or event holds that many (DESIGN §8).
        if (content.count(b"{") + content.count(b"[") > MAX_JSON_CONTAINERS
                and count_containers(text) > MAX_JSON_CONTAINERS):
            return NOT_JSON
        data = decoder.decode(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return NOT_JSON
    return data if isinstance(data, dict) else NOT_JSON
