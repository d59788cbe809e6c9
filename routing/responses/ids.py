"""Response and item ids that say which route made them (DESIGN §13): sticky without shared state.

An upstream's id `resp_abc` (or `msg_…`, `fc_…`, `rs_…`) is handed to the client as
`resp_` + base64url(version, route id, upstream id) + a 128-bit HMAC-SHA256 tag keyed with
GATEWAY_ID_SECRET. Every instance reads the same secret, so any instance can send a follow-up
(`previous_response_id`, retrieve, delete, cancel, input_items, an item echoed back in `input`)
to the resource that holds the state, and nothing else: an id with a bad tag (forged, tampered,
another gateway's) decodes to None and the client gets a 404 before any upstream call.

The prefix is kept (`resp_`, `msg_`, ...): SDKs and agent frameworks look at it. Call ids
(`call_…`) are the model's own and pass unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

# Prefixes of ids an Azure OpenAI resource stores state under.
PREFIXES = ("resp_", "msg_", "fc_", "rs_", "ci_", "ws_", "fs_", "ig_", "mcp_", "ctc_", "lsh_", "cu_", "item_")
VERSION = b"\x01"
TAG_BYTES = 16
TAG_CHARS = 22  # base64url of 16 bytes, unpadded
MAX_ID_CHARS = 2048  # an upstream id of up to ~1 500 characters still round-trips
# Keys whose string values are ids in Responses objects, items and stream events.
ID_KEYS = frozenset({"id", "item_id", "previous_response_id", "response_id", "first_id", "last_id"})
MAX_DEPTH = 64


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class IdCodec:
    """Ids for one consumer: the consumer's name is part of what the tag signs, so an id works
    only for the consumer it was handed to (another consumer holding it gets a 404)."""

    def __init__(self, secret: bytes, consumer: str = "", encoded: dict | None = None):
        self._secret = secret
        self._key = hashlib.sha256(b"routing response ids\0" + secret).digest()
        self._consumer = consumer.encode()
        # Recent encodings, shared by every consumer's codec (stream deltas repeat ids).
        self._encoded: dict[tuple[bytes, str, str], str] = {} if encoded is None else encoded

    def bind(self, consumer: str | None) -> IdCodec:
        return IdCodec(self._secret, consumer or "", self._encoded)

    def _tag(self, prefix: str, payload: bytes) -> bytes:
        signed = prefix.encode() + bytes([len(self._consumer) % 256]) + self._consumer + payload
        return hmac.new(self._key, signed, hashlib.sha256).digest()[:TAG_BYTES]

    def encode(self, route_id: str, upstream_id: str) -> str:
        """The client's id for an upstream id of `route_id` (ids without a known prefix pass)."""
        cached = self._encoded.get((self._consumer, route_id, upstream_id))
        if cached is not None:
            return cached
        prefix = next((p for p in PREFIXES if upstream_id.startswith(p)), None)
        if prefix is None:
            return upstream_id
        route = route_id.encode()[:255]  # route ids are at most 64 characters (settings)
        payload = VERSION + bytes([len(route)]) + route + upstream_id[len(prefix):].encode()
        encoded = prefix + _b64(payload) + _b64(self._tag(prefix, payload))
        if len(self._encoded) >= 4096:
            self._encoded.clear()
        self._encoded[(self._consumer, route_id, upstream_id)] = encoded
        return encoded

    def decode(self, client_id: Any) -> tuple[str, str] | None:
        """(route id, upstream id) of an id this gateway made; None for anything else."""
        if not isinstance(client_id, str) or len(client_id) > MAX_ID_CHARS:
            return None
        prefix = next((p for p in PREFIXES if client_id.startswith(p)), None)
        if prefix is None:
            return None
        body = client_id[len(prefix):]
        if len(body) <= TAG_CHARS:
            return None
        payload, tag = _unb64(body[:-TAG_CHARS]), _unb64(body[-TAG_CHARS:])
        if payload is None or tag is None or len(payload) < 2 or payload[:1] != VERSION:
            return None
        if _b64(payload) + _b64(tag) != body:  # one encoding per id: no altered spelling passes
            return None
        if not hmac.compare_digest(tag, self._tag(prefix, payload)):
            return None
        size = payload[1]
        route, rest = payload[2:2 + size], payload[2 + size:]
        if len(route) != size:
            return None
        try:
            return route.decode(), prefix + rest.decode()
        except UnicodeDecodeError:
            return None

    def rewrite_out(self, value: Any, route_id: str, depth: int = 0) -> Any:
        """Upstream ids → client ids, in place, through nested objects and lists."""
        if depth > MAX_DEPTH:
            return value
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ID_KEYS and isinstance(item, str):
                    value[key] = self.encode(route_id, item)
                elif isinstance(item, (dict, list)):
                    self.rewrite_out(item, route_id, depth + 1)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, (dict, list)):
                    self.rewrite_out(item, route_id, depth + 1)
        return value


class ForeignId(Exception):
    """An id the gateway did not make (or made for another route than the request's others)."""

    def __init__(self, client_id: str, param: str):
        super().__init__(client_id)
        self.client_id = client_id
        self.param = param


def rewrite_in(codec: IdCodec, body: dict[str, Any]) -> set[str]:
    """Client ids in a create request → upstream ids, in place; the routes that made them (the
    caller decides which route may serve the request). ForeignId for an id with a known prefix
    the gateway did not make."""
    routes: set[str] = set()

    def take(client_id: Any, param: str) -> str:
        decoded = codec.decode(client_id)
        if decoded is None:
            raise ForeignId(str(client_id)[:64], param)
        routes.add(decoded[0])
        return decoded[1]

    previous = body.get("previous_response_id")
    if previous is not None:
        body["previous_response_id"] = take(previous, "previous_response_id")
    items = body.get("input")
    if isinstance(items, list):
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            item_id = item.get("id")
            if isinstance(item_id, str) and item_id.startswith(PREFIXES):
                item["id"] = take(item_id, f"input[{index}].id")
            elif item.get("type") == "item_reference" and "id" in item:
                item["id"] = take(item.get("id"), f"input[{index}].id")
    return routes
