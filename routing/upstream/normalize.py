"""Translate a client body for one route: backend rules, then the route's PARAMS policy.

Order (DESIGN §4): backend rules (only-with, drop, rename, roles, accepted set), `model` =
DEPLOYMENT, then the route's policy: drop, rename, defaults, set. The policy's output is final.
Returns the names of every top-level key removed, for `x-gateway-dropped-params`.
"""

from __future__ import annotations

from typing import Any

from routing.upstream.backends.base import OperationRules
from routing.config.settings import ParamsPolicy


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
    if rules.accepted is not None:
        for key in [k for k in body if k not in rules.accepted]:
            del body[key]
            dropped.append(key)
    body["model"] = deployment

    for key in policy.drop:
        if key in body:
            del body[key]
            dropped.append(key)
    _rename(body, policy.rename, dropped)
    for key, value in policy.defaults.items():
        body.setdefault(key, value)
    body.update(policy.set)
    return body, sorted(set(dropped), key=dropped.index)


def _rename(body: dict[str, Any], renames, dropped: list[str]) -> None:
    for source, target in renames.items():
        if source in body:
            value = body.pop(source)
            if target in body:  # the key the client sent under the backend's name wins
                dropped.append(source)
            else:
                body[target] = value


def _map_role(message: Any, roles) -> Any:
    if isinstance(message, dict) and message.get("role") in roles:
        return {**message, "role": roles[message["role"]]}
    return message
