"""What a backend adapter is: the upstream URL for an operation, and its parameter rules as data.

Rules are declarative (Portkey-style): each backend lists, per operation, the keys it accepts,
the keys it calls by another name and the message roles it takes. `routing.upstream.normalize` applies
them; nothing here looks at a request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routing.config.settings import Route

@dataclass(frozen=True)
class OperationRules:
    """How one operation's request body is translated for one backend."""

    # Top-level keys the backend accepts; None forwards every key.
    accepted: frozenset[str] | None = None
    # Keys always removed (the backend rejects them for this kind of model).
    drop: frozenset[str] = frozenset()
    # Client key → backend key. When both are present, the backend key the client sent wins.
    rename: Mapping[str, str] = field(default_factory=dict)
    # Message role → role the backend takes (messages[*].role).
    roles: Mapping[str, str] = field(default_factory=dict)
    # Key → (other key, value): send the key only when body[other key] == value.
    only_with: Mapping[str, tuple[str, object]] = field(default_factory=dict)
    # Keys removed from every message (e.g. a model's own `reasoning_content` replayed).
    message_drop: frozenset[str] = frozenset()
    # Whether the model calls tools: if not, a request with `tools` is refused (400, `tools`).
    tools: bool = True

    def overlay(self, other: OperationRules) -> OperationRules:
        """These rules refined by `other` (e.g. the reasoning-model rules on top of the base)."""
        accepted = self.accepted
        if other.accepted is not None:
            accepted = other.accepted if accepted is None else accepted & other.accepted
        return OperationRules(
            accepted=accepted,
            drop=self.drop | other.drop,
            rename={**self.rename, **other.rename},
            # A base mapping into a role the overlay maps away is dropped (developer→system
            # under system→developer leaves developer as it is).
            roles={**{k: v for k, v in self.roles.items() if v not in other.roles}, **other.roles},
            only_with={**self.only_with, **other.only_with},
            message_drop=self.message_drop | other.message_drop,
            tools=self.tools and other.tools,
        )


@dataclass(frozen=True)
class Backend:
    name: str
    # Operation path (`chat/completions`, `embeddings`, ...) → rules; absent = not supported.
    operations: Mapping[str, OperationRules]
    # Extra rules for reasoning routes (ROUTE__<ID>__REASONING), per operation.
    reasoning: Mapping[str, OperationRules] = field(default_factory=dict)
    # api-version → extra rules, per operation, for routes whose API_VERSION sorts before it
    # (parameters an older API does not know yet). Dated versions sort by date; `v1` is newest.
    older_than: Mapping[str, Mapping[str, OperationRules]] = field(default_factory=dict)
    # (route, operation) → absolute upstream URL.
    url: Callable[[Route, str], str] = lambda route, op: ""
    # Whether a route header `extra-parameters: pass-through|drop` hands unknown keys to the
    # upstream's own policy instead of the gateway removing them.
    honours_extra_parameters: bool = False
    # (route, operation) → the route's own rules, when its API differs from the backend's
    # default (an azure-ai route on Foundry's v1 endpoint: per model family); None: the default.
    variant: Callable[[Route, str], OperationRules | None] | None = None
    # (route) → the operations of that route, when they differ from `operations`' keys.
    route_operations: Callable[[Route], frozenset[str]] | None = None

    def supports(self, route: Route, operation: str) -> bool:
        if self.route_operations is not None:
            return operation in self.route_operations(route)
        return operation in self.operations

    def rules_for(self, route: Route, operation: str) -> OperationRules:
        if self.variant is not None:
            special = self.variant(route, operation)
            if special is not None:
                return special
        rules = self.operations[operation]
        if route.reasoning and operation in self.reasoning:
            rules = rules.overlay(self.reasoning[operation])
        else:  # reasoning models need recent api-versions anyway; the upstream says so itself
            for version, by_operation in self.older_than.items():
                if route.api_version < version and operation in by_operation:
                    rules = rules.overlay(by_operation[operation])
        if self.honours_extra_parameters and route_passes_extras(route):
            rules = OperationRules(drop=rules.drop, rename=rules.rename, roles=rules.roles,
                                   only_with=rules.only_with, message_drop=rules.message_drop,
                                   tools=rules.tools)
        return rules


def route_passes_extras(route: Route) -> bool:
    value = next((v for k, v in route.headers.items() if k.lower() == "extra-parameters"), "")
    return value.strip().lower() in ("pass-through", "drop")
