"""Translate a client body for one route: backend rules, then the route's PARAMS policy.

Order (DESIGN §4): backend rules (only-with, drop, rename, roles, accepted set), `model` =
DEPLOYMENT, then the route's policy: drop, rename, defaults, set. The policy's output is final.
Returns the names of every top-level key removed, for `x-gateway-dropped-params`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from routing.config.settings import ParamsPolicy
from routing.upstream.backends.base import OperationRules

# `x-gateway-dropped-params` stays a small header whatever the client sent (DESIGN §8): names
# past this many characters are cut and counted (`...,+N more`).
MAX_DROPPED_HEADER_CHARS = 1024


def normalize(body: dict[str, Any], rules: OperationRules, policy: ParamsPolicy,
              deployment: str) -> tuple[dict[str, Any], list[str]]:
    body = dict(body)  # top level is rewritten; nested values are replaced, never mutated
    dropped: list[str] = []

    for key, (other, value) in rules.only_with.items():
        if key in body and body.get(other) != value:
            del body[key]
            dropped.append(key)
    for key in rules.drop:
        if key in body:
            del body[key]
            dropped.append(key)
    _rename(body, rules.rename, dropped)
    if rules.roles and isinstance(body.get("messages"), list):
        body["messages"] = [_map_role(m, rules.roles) for m in body["messages"]]
    if rules.message_drop and isinstance(body.get("messages"), list):
        body["messages"] = _without_message_keys(body["messages"], rules.message_drop, dropped)
    if rules.accepted is not None:
        accepted = rules.accepted
        kept = {k: v for k, v in body.items() if k in accepted}
        if len(kept) < len(body):
            dropped.extend(k for k in body if k not in accepted)
            body = kept
    body["model"] = deployment

    for key in policy.drop:
        if key in body:
            del body[key]
            dropped.append(key)
    _rename(body, policy.rename, dropped)
    for key, value in policy.defaults.items():
        body.setdefault(key, value)
    body.update(policy.set)
    return body, list(dict.fromkeys(dropped))  # unique, in order, in linear time


def dropped_header(dropped: list[str]) -> str:
    """`x-gateway-dropped-params`: client-chosen names percent-encoded (any key makes a valid
    header), capped at MAX_DROPPED_HEADER_CHARS with a count of the names left out."""
    parts: list[str] = []
    size = 0
    for index, key in enumerate(dropped):
        # Only the part that can fit is encoded; surrogatepass: JSON may carry lone surrogates
        # (`"\ud800"`), which UTF-8 refuses.
        encoded = quote(key[:MAX_DROPPED_HEADER_CHARS], safe="", errors="surrogatepass")
        if size + len(encoded) + 1 > MAX_DROPPED_HEADER_CHARS:
            parts.append(f"+{len(dropped) - index} more")
            break
        parts.append(encoded)
        size += len(encoded) + 1
    return ",".join(parts)


def _rename(body: dict[str, Any], renames, dropped: list[str]) -> None:
    for source, target in renames.items():
        if source in body:
            value = body.pop(source)
            if target in body:  # the key the client sent under the backend's name wins
                dropped.append(source)
            else:
                body[target] = value


def _map_role(message: Any, roles) -> Any:
    if isinstance(message, dict):
        role = message.get("role")
        if isinstance(role, str) and role in roles:  # a list or object role is not hashable
            return {**message, "role": roles[role]}
    return message


def _without_message_keys(messages: list[Any], keys: frozenset[str], dropped: list[str]) -> list[Any]:
    """Messages without `keys` (copied only when they hold one); each key named once as
    `messages[].<key>` in the dropped list."""
    out, seen = [], set()
    for message in messages:
        if isinstance(message, dict) and not keys.isdisjoint(message):
            present = keys.intersection(message)
            seen |= present
            message = {k: v for k, v in message.items() if k not in present}
        out.append(message)
    dropped.extend(f"messages[].{key}" for key in sorted(seen))
    return out

