"""A deterministic instance of a JSON Schema: what the fake model answers for structured output
(``response_format: json_schema``) and for tool-call arguments (a tool's ``parameters``).

Covers what OpenAI structured outputs and pydantic emit: ``type`` (or a list of types), object
``properties`` (every listed property, in schema order), ``array`` ``items`` with ``minItems``,
``string`` with ``minLength``/``maxLength``/``format``, ``number``/``integer`` within
``minimum``/``maximum`` (exclusive too), ``boolean``, ``null``, ``enum``, ``const``, ``$ref`` into
``$defs``/``definitions``, ``anyOf``/``oneOf`` (the first non-null branch), ``allOf`` (merged).
Hostile schemas cannot make it hang: nesting, array sizes and the total are bounded, ``$ref`` cycles end in
``null``/``{}``. ``pattern``, ``multipleOf`` and ``not`` are not honoured.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 16
MAX_ARRAY_ITEMS = 64
MAX_STRING = 1_000
MAX_VALUES = 2_000  # nested arrays multiply: a budget for the whole instance
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "00:00:00Z",
    "email": "user@example.com", "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com", "ipv4": "192.0.2.1", "ipv6": "2001:db8::1", "duration": "P1D",
}


def instance_of(schema: Any) -> Any:
    """A JSON value that conforms to ``schema`` (a dict; anything else yields ``{}``)."""
    if not isinstance(schema, dict):
        return {}
    return _Generator(schema).value(schema, "value", 0, ())


class _Generator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.budget = MAX_VALUES

    def resolve(self, ref: Any) -> Any:
        """A local ``#/...`` reference, or None when it points nowhere."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            return None
        node: Any = self.root
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, dict) else None

    def value(self, schema: Any, name: str, depth: int, refs: tuple[str, ...]) -> Any:
        if not isinstance(schema, dict):
            return "example"  # `true`/missing schemas accept anything
        if depth > MAX_DEPTH:
            return None
        self.budget -= 1
        if "$ref" in schema:
            ref = schema["$ref"]
            target = self.resolve(ref)
            if target is None or ref in refs:  # dangling or cyclic: end the branch
                return None
            return self.value({**target, **{k: v for k, v in schema.items() if k != "$ref"}},
                              name, depth + 1, refs + (ref,))
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                chosen = next((b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")),
                              branches[0])
                return self.value(chosen, name, depth + 1, refs)
        if isinstance(schema.get("allOf"), list):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                if isinstance(part, dict):
                    merged = _merge(merged, part)
            return self.value(merged, name, depth + 1, refs)
        kind = _type_of(schema)
        if kind == "object":
            return self.object(schema, depth, refs)
        if kind == "array":
            return self.array(schema, name, depth, refs)
        if kind == "integer":
            return int(_number(schema, integer=True))
        if kind == "number":
            return _number(schema, integer=False)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return _string(schema, name)

    def object(self, schema: dict[str, Any], depth: int, refs: tuple[str, ...]) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        out = {key: self.value(sub, key, depth + 1, refs) for key, sub in properties.items()}
        for key in schema.get("required") or ():
            if isinstance(key, str) and key not in out:  # required but not described
                out[key] = "example"
        return out

    def array(self, schema: dict[str, Any], name: str, depth: int, refs: tuple[str, ...]) -> list[Any]:
        low = _int(schema.get("minItems"), 0)
        high = _int(schema.get("maxItems"), MAX_ARRAY_ITEMS)
        count = max(0, min(max(low, 1), high, MAX_ARRAY_ITEMS, self.budget))
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        items = schema.get("items")
        if isinstance(items, dict) and items.get("$ref") in refs:
            count = min(low, count)  # a recursive item type: as few as allowed (pydantic's list[Self])
        return [self.value(prefix[i] if i < len(prefix) else items, name, depth + 1, refs) for i in range(count)]


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if kinds else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {**a, **b}
    if isinstance(a.get("properties"), dict) and isinstance(b.get("properties"), dict):
        out["properties"] = {**a["properties"], **b["properties"]}
    if isinstance(a.get("required"), list) and isinstance(b.get("required"), list):
        out["required"] = list(dict.fromkeys(a["required"] + b["required"]))
    return out


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _finite(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _number(schema: dict[str, Any], integer: bool) -> float:
    """1 when allowed, else the nearest allowed value to it."""
    step = 1.0 if integer else 0.5
    low, high = _finite(schema.get("minimum")), _finite(schema.get("maximum"))
    xlow, xhigh = _finite(schema.get("exclusiveMinimum")), _finite(schema.get("exclusiveMaximum"))
    value = 1.0
    if low is not None and value < low:
        value = math.ceil(low) if integer else low
    if xlow is not None and value <= xlow:
        value = math.floor(xlow) + 1 if integer else xlow + step
    if high is not None and value > high:
        value = math.floor(high) if integer else high
    if xhigh is not None and value >= xhigh:
        value = math.ceil(xhigh) - 1 if integer else xhigh - step
    return value


def _string(schema: dict[str, Any], name: str) -> str:
    fmt = schema.get("format")
    text = (_FORMATS.get(fmt) if isinstance(fmt, str) else None) or f"example {name}"
    low = min(_int(schema.get("minLength"), 0), MAX_STRING)
    high = _int(schema.get("maxLength"), MAX_STRING)
    if len(text) < low:
        text += "x" * (low - len(text))
    return text[:max(high, 0)]
