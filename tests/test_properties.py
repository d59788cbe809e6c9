"""Properties of the request parser and the normaliser (DESIGN §8), with hypothesis.

Parser: any bytes → a dict or a 400 invalid_json GatewayError, nothing else; what it accepts
re-encodes as strict JSON; reading in any chunking gives the same answer and gives the in-flight
budget back. Normaliser: any JSON object, any backend rules, any PARAMS policy → strict JSON
upstream, model = deployment, a bounded latin-1 header, the client's body untouched. And cost
grows linearly: n keys vs 10 n keys.

Case counts (settings below): 2000 + 800 + 600 + 500 + 400 + 1000 + 1000 = 6300 examples, plus
four timed linear-cost checks.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from routing.config.settings import GatewayConfig, ParamsPolicy
from routing.errors import GatewayError
from routing.inbound.body import (INFLIGHT, MAX_JSON_DEPTH, count_containers, nesting_exceeds,
                                  parse_json_object, read_json_body)
from routing.upstream.backends import BACKENDS, OperationRules
from routing.upstream.normalize import MAX_DROPPED_HEADER_CHARS, dropped_header, normalize

SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN_KEYS = ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
              "temperature", "top_p", "seed", "n", "user", "tools", "logit_bias", "parallel_tool_calls",
              "input", "prompt", "presence_penalty", "frequency_penalty", "stop", "response_format"]
ROLES = ["system", "developer", "user", "assistant", "tool"]

scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=20)
           | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
# Lone surrogates are legal in JSON strings (`"\ud800"`) but not in UTF-8: keys may carry them.
odd_keys = st.sampled_from(["\ud800", "a\udfffb", "", "a,b", "x\r\ny", "\u00e9\u6a21"])
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=12) | odd_keys
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES) | json_values},
                                          optional={"content": json_values}) | json_values, max_size=4)
bodies = st.tuples(st.dictionaries(keys, json_values, max_size=10), st.none() | messages).map(
    lambda pair: pair[0] if pair[1] is None else {**pair[0], "messages": pair[1]})


def strict_round_trip(value) -> None:
    text = json.dumps(value, allow_nan=False)  # raises on NaN/Infinity
    assert json.loads(text) == value


# --- the parser --------------------------------------------------------------------------------

TOKENS = ["{", "}", "[", "]", ",", ":", '"k"', "0", "-1.5e3", "1e999", "-1e999", "NaN", "Infinity",
          "-Infinity", "true", "null", '"\\ud800"', '"\\u0000"', "9" * 5000, " ", "\xff", "\u00e9"]
json_like = st.lists(st.sampled_from(TOKENS), max_size=40).map(
    lambda tokens: "".join(tokens).encode("utf-8", "surrogatepass"))


def parses_or_400(data: bytes):
    try:
        body = parse_json_object(data)
    except GatewayError as error:
        assert error.status == 400 and error.code == "invalid_json", (error.status, error.code)
        return None
    assert isinstance(body, dict)
    strict_round_trip(body)
    assert not nesting_exceeds(body, MAX_JSON_DEPTH)
    return body


@settings(max_examples=2000, **SETTINGS)
@given(st.binary(max_size=200) | json_like | json_like.map(lambda b: b"{" + b + b"}"))
def test_any_bytes_parse_to_a_dict_or_a_400(data):
    parses_or_400(data)


@settings(max_examples=800, **SETTINGS)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=8),
       st.sampled_from(["utf-8", "utf-16", "utf-32"]))
def test_json_objects_round_trip(body, encoding):
    assert parses_or_400(json.dumps(body, ensure_ascii=False).encode(encoding, "surrogatepass")) == body


@settings(max_examples=600, **SETTINGS)
@given(st.lists(st.sampled_from(["[", "{"]), min_size=1, max_size=300))
def test_nesting_accepted_exactly_up_to_the_limit(opens):
    inner = "".join('{"k":' if o == "{" else "[" for o in opens) + "0"
    inner += "".join("}" if o == "{" else "]" for o in reversed(opens))
    body = parses_or_400(('{"a":' + inner + "}").encode())
    assert (body is not None) == (1 + len(opens) <= MAX_JSON_DEPTH)


def containers_in(value) -> int:
    if isinstance(value, dict):
        return 1 + sum(containers_in(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(containers_in(v) for v in value)
    return 0


tricky_text = st.text(alphabet='[]{}"\\\\ab\n\u00e9', max_size=12)
tricky_values = st.recursive(scalars | tricky_text, lambda inner: st.lists(inner, max_size=3)
                             | st.dictionaries(tricky_text, inner, max_size=3), max_leaves=8)


@settings(max_examples=500, **SETTINGS)
@given(tricky_values, st.booleans())
def test_container_count_ignores_brackets_inside_strings(value, ascii_only):
    assert count_containers(json.dumps(value, ensure_ascii=ascii_only)) == containers_in(value)


def read_in_chunks(data: bytes, cuts: list[int], declare: bool, limit: int, budget: int):
    """Read `data` cut at `cuts`; the in-flight budget never holds more than what has arrived
    (whatever Content-Length declared) nor more than `budget`."""
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    events = [{"type": "http.request", "body": p, "more_body": True} for p in pieces]
    events[-1]["more_body"] = False
    headers = [(b"content-length", str(len(data)).encode())] if declare else []
    arrived = 0

    async def receive():
        nonlocal arrived
        await asyncio.sleep(0)
        assert INFLIGHT.used <= min(arrived, budget), (INFLIGHT.used, arrived, budget)
        if not events:
            return {"type": "http.disconnect"}
        event = events.pop(0)
        arrived += len(event["body"])
        return event

    config = GatewayConfig(max_body_bytes=limit, max_inflight_body_bytes=budget, body_timeout=5)
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)
    return asyncio.run(read_json_body(request, config))


@settings(max_examples=400, **SETTINGS)
@given(json_like.map(lambda b: b"{" + b + b"}") | bodies.map(lambda b: json.dumps(b).encode()),
       st.lists(st.integers(0, 400), max_size=5), st.booleans(), st.integers(1, 400),
       st.integers(1, 800))
def test_reading_in_any_chunks_is_parsing_and_gives_the_budget_back(data, cuts, declare, limit, budget):
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    try:
        expected = parse_json_object(data)
    except GatewayError as error:
        expected = ("error", error.status)
    try:
        got = read_in_chunks(data, cuts, declare, limit, budget)
    except GatewayError as error:
        got = ("error", error.status)
    assert INFLIGHT.used == 0
    if len(data) > limit and (declare or budget >= limit):  # a declared length: 413 up front
        assert got == ("error", 413)
    elif len(data) > limit:  # counted as it arrives: whichever bound a chunk crosses first
        assert got in {("error", 413), ("error", 503)}
    elif len(data) > budget:  # only what arrived counts: the byte past the budget is the 503
        assert got == ("error", 503)
    else:
        assert got == expected


# --- the normaliser ----------------------------------------------------------------------------

def real_rules() -> list[OperationRules]:
    """Every rule set the backends can produce: base, reasoning and old-api-version overlays,
    and pass-through (the accepted set lifted)."""
    found = []
    for backend in BACKENDS.values():
        for operation, base in backend.operations.items():
            variants = [base]
            if operation in backend.reasoning:
                variants.append(base.overlay(backend.reasoning[operation]))
            for by_operation in backend.older_than.values():
                if operation in by_operation:
                    variants.append(base.overlay(by_operation[operation]))
            found += variants + [OperationRules(drop=r.drop, rename=r.rename, roles=r.roles,
                                                only_with=r.only_with) for r in variants]
    return found


names = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6) | odd_keys
finite_json = scalars | st.lists(scalars, max_size=2)
random_rules = st.builds(
    OperationRules,
    accepted=st.none() | st.frozensets(names, max_size=8),
    drop=st.frozensets(names, max_size=4),
    rename=st.dictionaries(names, names, max_size=3),
    roles=st.dictionaries(st.sampled_from(ROLES) | st.text(max_size=4), st.sampled_from(ROLES), max_size=3),
    only_with=st.dictionaries(names, st.tuples(names, scalars), max_size=2),
)
policies = st.builds(
    ParamsPolicy,
    drop=st.lists(names, max_size=3).map(tuple),
    rename=st.dictionaries(names, names, max_size=3),
    defaults=st.dictionaries(names, finite_json, max_size=3),
    set=st.dictionaries(names, finite_json, max_size=3),
)


def check_normalize(body, rules: OperationRules, policy: ParamsPolicy, deployment: str) -> None:
    before = copy.deepcopy(body)
    out, dropped = normalize(body, rules, policy, deployment)
    assert body == before  # the client's body is never mutated (failover re-normalises it)
    strict_round_trip(out)
    touched = set(policy.drop) | set(policy.rename) | set(policy.set)
    if "model" not in touched:
        assert out["model"] == deployment
    assert len(dropped) == len(set(dropped))
    renamed_to = set(rules.rename.values()) | set(policy.rename.values())
    assert set(dropped) <= set(body) | renamed_to | {"model"}
    if not (policy.drop or policy.rename or policy.defaults or policy.set):
        renamed_from = set(rules.rename)
        assert set(body) - set(out) - renamed_from <= set(dropped)
        if rules.accepted is not None:
            assert set(out) <= rules.accepted | {"model"}
    header = dropped_header(dropped)
    header.encode("latin-1")
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert len(header) <= MAX_DROPPED_HEADER_CHARS + len(f",+{len(dropped)} more")
    if dropped and len(header) <= MAX_DROPPED_HEADER_CHARS // 2 and "more" not in header:
        assert len(header.split(",")) == len(dropped)


@settings(max_examples=1000, **SETTINGS)
@given(bodies, st.sampled_from(real_rules()), policies, st.text(min_size=1, max_size=20))
def test_normalise_with_backend_rules(body, rules, policy, deployment):
    check_normalize(body, rules, policy, deployment)


@settings(max_examples=1000, **SETTINGS)
@given(bodies, random_rules, policies, st.text(min_size=1, max_size=20))
def test_normalise_with_any_rules(body, rules, policy, deployment):
    check_normalize(body, rules, policy, deployment)


# --- linear time -------------------------------------------------------------------------------

def best_of(runs: int, work) -> float:
    """Least CPU time of this process over `runs` (other processes' load does not count)."""
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def many_keys(n: int) -> dict:
    return {"model": "m", "messages": [{"role": "developer", "content": "x"}] * 10,
            **{f"unknown_{i}": i for i in range(n)}, "wide": [[i] for i in range(n)]}


@pytest.mark.parametrize("name, work", [
    ("normalize", lambda body: normalize(body, BACKENDS["azure-ai"].operations["chat/completions"],
                                         ParamsPolicy(drop=("seed",), set={"top_p": 1}), "d")),
    ("dropped_header", lambda body: dropped_header(list(body))),
    ("parse_json_object", None),
    ("nesting_exceeds", lambda body: nesting_exceeds(body, MAX_JSON_DEPTH)),
])
def test_cost_grows_linearly_with_the_number_of_keys(name, work):
    """10× the keys costs about 10× the CPU time (a quadratic path would be ~100×; caches
    alone make json.loads itself ~15-20× at these sizes, hence the margin)."""
    small, large = many_keys(2_000), many_keys(20_000)
    if work is None:
        small, large = json.dumps(small).encode(), json.dumps(large).encode()
        work = parse_json_object
    ratio = best_of(7, lambda: work(large)) / max(best_of(7, lambda: work(small)), 1e-6)
    assert ratio < 40, f"{name}: 10x the keys cost {ratio:.1f}x the time"
