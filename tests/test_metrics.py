"""Metrics (DESIGN §12): the real exporters, pointed at local receivers written for the tests.

The gateway runs as a subprocess with `APPLICATIONINSIGHTS_CONNECTION_STRING` (its
`IngestionEndpoint` on a local server answering `/v2.1/track`) and `OTEL_EXPORTER_OTLP_ENDPOINT`
(the same server answering `/v1/metrics`), requests go through it to the emulators, and what
arrives must carry the documented names, dimensions and the emulators' usage, and nothing else:
no message content, no key, no token.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import httpx
import pytest

from tests.conftest import gateway_settings
from tests.helpers import GATEWAY_KEY, REPO, GatewayProcess, clean_environ, data_events
from tests.telemetry_receiver import TelemetryReceiver

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
# Message content that must never be exported.
SECRET_PROMPT = "purple-walrus-7Q2 tell me about telemetry"
IKEY = "00000000-0000-0000-0000-000000000000"
FAST_EXPORT = "300"  # OTEL_METRIC_EXPORT_INTERVAL, ms

GENAI = ("gen_ai.client.token.usage", "gen_ai.client.operation.duration")
APIM = ("Prompt Tokens", "Completion Tokens", "Total Tokens")


def exporter_settings(receiver: TelemetryReceiver, interval: str) -> dict[str, str]:
    return {
        "APPLICATIONINSIGHTS_CONNECTION_STRING":
            f"InstrumentationKey={IKEY};IngestionEndpoint={receiver.url}/",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_METRIC_EXPORT_INTERVAL": interval,
        # The exporter's own telemetry to Microsoft and its remote configuration: not from tests.
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    }


@pytest.fixture(scope="module")
def receiver():
    running = TelemetryReceiver()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def traffic(emulators, upstreams, receiver, tmp_path_factory):
    """One gateway exporting to both receivers; a fixed set of requests; their usage."""
    settings = {**gateway_settings(emulators), **exporter_settings(receiver, FAST_EXPORT)}
    gateway = GatewayProcess(settings, tmp_path_factory.mktemp("metrics-gateway"))
    try:
        for upstream in upstreams.values():
            upstream.clear()
        messages = [{"role": "user", "content": SECRET_PROMPT}]
        url = gateway.url + "/v1/chat/completions"
        answers = {}
        plain = httpx.post(url, headers=AUTH, timeout=30,
                           json={"model": "gpt-4o-key", "messages": messages})
        assert plain.status_code == 200, plain.text
        answers["plain"] = plain.json()
        streamed = httpx.post(url, headers=AUTH, timeout=30,
                              json={"model": "gpt-4o-key", "messages": messages, "stream": True,
                                    "stream_options": {"include_usage": True}})
        assert streamed.status_code == 200, streamed.text
        events = data_events(streamed.content)
        answers["stream"] = {"usage": next(e["usage"] for e in events if e.get("usage")),
                             "model": events[0].get("model"),
                             "content": "".join(c["delta"].get("content") or ""
                                                for e in events for c in e.get("choices", []))}
        llama = httpx.post(url, headers=AUTH, timeout=30,
                           json={"model": "llama3", "messages": messages})
        assert llama.status_code == 200, llama.text
        answers["llama"] = llama.json()
        embedding = httpx.post(gateway.url + "/v1/embeddings", headers=AUTH, timeout=30,
                               json={"model": "text-embedding-3-small", "input": SECRET_PROMPT})
        assert embedding.status_code == 200, embedding.text
        answers["embedding"] = embedding.json()
        failed = httpx.post(url, headers=AUTH, timeout=30,
                            json={"model": "gpt-4o-badkey", "messages": messages})
        assert failed.status_code >= 400
        answers["failed"] = {"status": failed.status_code, "code": failed.json()["error"].get("code")}
        unknown = httpx.post(url, headers=AUTH, timeout=30,
                             json={"model": "no-such-model-" + SECRET_PROMPT[:12], "messages": messages})
        assert unknown.status_code == 404
        yield {"gateway": gateway, "answers": answers, "settings": settings}
    finally:
        gateway.stop()
        for upstream in upstreams.values():
            upstream.clear()


def expected_tokens(answers: dict) -> dict[tuple[str, str], dict[str, int]]:
    """(route, model) → summed usage over the successful requests."""
    sums: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, route, model in (("plain", "GPTKEY", "gpt-4o-key"), ("stream", "GPTKEY", "gpt-4o-key"),
                               ("llama", "LLAMA", "llama3"),
                               ("embedding", "EMBED", "text-embedding-3-small")):
        for field, value in answers[name]["usage"].items():
            if isinstance(value, int):
                sums[(route, model)][field] += value
    return sums


# --- Application Insights ------------------------------------------------------------------


def ai_metrics(envelopes: list[dict]) -> list[dict]:
    """Each metric data point of the envelopes: name, value, count, properties."""
    points = []
    for envelope in envelopes:
        if envelope.get("name") != "Microsoft.ApplicationInsights.Metric":
            continue
        base = envelope["data"]["baseData"]
        for metric in base["metrics"]:
            points.append({"name": metric["name"], "value": metric["value"],
                           "count": metric.get("count", 1), "properties": base.get("properties", {}),
                           "iKey": envelope.get("iKey")})
    return points


def ai_sum(points: list[dict], name: str, **properties: str) -> tuple[float, int]:
    matching = [p for p in points if p["name"] == name
                and all(p["properties"].get(k) == v for k, v in properties.items())]
    return sum(p["value"] for p in matching), sum(p["count"] for p in matching)


def apim_complete(expected):
    """Every request of `traffic` exported: the tokens, the failure, the unknown model."""
    def check(snapshot):
        points = ai_metrics(snapshot.envelopes)
        durations = [p["properties"] for p in points if p["name"] == GENAI[1]]
        return (all(ai_sum(points, "Total Tokens", Route=route)[0] >= usage["total_tokens"]
                    for (route, _), usage in expected.items())
                and any(d.get("gateway.route") == "BADKEY" for d in durations)
                and any("gateway.route" not in d for d in durations))
    return check


def test_application_insights_envelopes_carry_the_documented_metrics(traffic, receiver):
    answers = traffic["answers"]
    expected = expected_tokens(answers)
    snapshot = receiver.wait_for(apim_complete(expected))
    points = ai_metrics(snapshot.envelopes)
    assert points, f"no metric envelope arrived at /v2.1/track (paths: {set(snapshot.paths)})"
    assert {p["iKey"] for p in points} == {IKEY}
    names = {p["name"] for p in points}
    assert set(GENAI) | set(APIM) <= names, names

    # APIM-compatible counters: the emulators' usage, per Consumer / Model / Route / Backend.
    for (route, model), usage in expected.items():
        backend = "azure-ai" if route == "LLAMA" else "azure-openai"
        dims = {"Consumer": "default", "Model": model, "Route": route, "Backend": backend}
        assert ai_sum(points, "Prompt Tokens", **dims)[0] == usage["prompt_tokens"], route
        assert ai_sum(points, "Total Tokens", **dims)[0] == usage["total_tokens"], route
        assert ai_sum(points, "Completion Tokens", **dims)[0] == usage.get("completion_tokens", 0), route
    for point in points:
        if point["name"] in APIM:
            assert set(point["properties"]) == {"Consumer", "Model", "Route", "Backend"}

    # GenAI semantic conventions: token usage by type, duration per request.
    gpt = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "azure.ai.openai",
           "gen_ai.request.model": "gpt-4o-key", "gateway.route": "GPTKEY",
           "gateway.consumer": "default"}
    usage = expected[("GPTKEY", "gpt-4o-key")]
    assert ai_sum(points, GENAI[0], **gpt, **{"gen_ai.token.type": "input"}) == (usage["prompt_tokens"], 2)
    assert ai_sum(points, GENAI[0], **gpt, **{"gen_ai.token.type": "output"}) == (
        usage["completion_tokens"], 2)
    seconds, count = ai_sum(points, GENAI[1], **gpt)
    assert count == 2 and 0 < seconds < 60
    llama = {"gen_ai.provider.name": "azure.ai.inference", "gen_ai.request.model": "llama3",
             "gateway.route": "LLAMA", "gen_ai.operation.name": "chat"}
    assert ai_sum(points, GENAI[0], **llama, **{"gen_ai.token.type": "input"})[0] == (
        expected[("LLAMA", "llama3")]["prompt_tokens"])
    embed = {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small"}
    assert ai_sum(points, GENAI[0], **embed, **{"gen_ai.token.type": "input"})[0] == (
        expected[("EMBED", "text-embedding-3-small")]["prompt_tokens"])
    assert ai_sum(points, GENAI[0], **embed, **{"gen_ai.token.type": "output"}) == (0, 0)
    for point in points:
        if point["name"] == GENAI[0] and point["properties"].get("gen_ai.response.model"):
            # the upstream's answering model, when the record carries it
            model = point["properties"]["gen_ai.request.model"]
            assert point["properties"]["gen_ai.response.model"] in {
                a.get("model") for a in answers.values() if isinstance(a, dict)}, model

    # Failures: a duration with error.type, and no tokens.
    failed = answers["failed"]
    errors = [p for p in points if p["name"] == GENAI[1]
              and p["properties"].get("gateway.route") == "BADKEY"]
    assert errors and all(p["properties"].get("error.type") == (failed["code"] or str(failed["status"]))
                          for p in errors), errors
    assert not [p for p in points if p["name"] in APIM and p["properties"].get("Route") == "BADKEY"]
    assert all("error.type" not in p["properties"] for p in points
               if p["properties"].get("gateway.route") == "GPTKEY")
    # A model name no route has is the client's free text: never an attribute value.
    unknown = [p for p in points if p["name"] == GENAI[1] and p["properties"].get("error.type")
               and "gateway.route" not in p["properties"]]
    assert unknown and all("gen_ai.request.model" not in p["properties"] for p in unknown)


# --- OTLP ----------------------------------------------------------------------------------


def otlp_latest(points: list[dict]) -> dict[tuple, dict]:
    """Cumulative points: the latest per (name, attributes)."""
    latest: dict[tuple, dict] = {}
    for point in sorted(points, key=lambda p: p["time"]):
        latest[(point["name"], tuple(sorted(point["attributes"].items())))] = point
    return latest


def otlp_value(latest: dict, name: str, **attributes) -> tuple[float, int]:
    total, count = 0.0, 0
    for (point_name, _), point in latest.items():
        if point_name == name and all(point["attributes"].get(k) == v for k, v in attributes.items()):
            total += point.get("sum", point.get("value", 0))
            count += point.get("count", 1)
    return total, count


def test_otlp_receiver_gets_the_documented_metrics(traffic, receiver):
    expected = expected_tokens(traffic["answers"])

    def complete(snapshot):
        latest = otlp_latest(snapshot.otlp_points)
        return all(otlp_value(latest, "Total Tokens", Route=route)[0] >= usage["total_tokens"]
                   for (route, _), usage in expected.items())

    snapshot = receiver.wait_for(complete)
    assert snapshot.otlp_points, f"nothing arrived at /v1/metrics (paths: {set(snapshot.paths)})"
    latest = otlp_latest(snapshot.otlp_points)
    by_name = {p["name"]: p for p in latest.values()}
    assert set(GENAI) | set(APIM) <= set(by_name), set(by_name)
    assert by_name["gen_ai.client.token.usage"]["unit"] == "{token}"
    assert by_name["gen_ai.client.token.usage"]["kind"] == "histogram"
    assert by_name["gen_ai.client.token.usage"]["bounds"][:3] == [1, 4, 16]
    assert by_name["gen_ai.client.operation.duration"]["unit"] == "s"
    assert by_name["gen_ai.client.operation.duration"]["bounds"][:2] == [0.01, 0.02]
    assert by_name["Prompt Tokens"]["kind"] == "sum" and by_name["Prompt Tokens"]["scope"] == "API Management"
    assert by_name["gen_ai.client.token.usage"]["scope"] == "routing"
    assert by_name["Prompt Tokens"]["resource"].get("service.name") == "routing"

    for (route, model), usage in expected.items():
        backend = "azure-ai" if route == "LLAMA" else "azure-openai"
        dims = {"Consumer": "default", "Model": model, "Route": route, "Backend": backend}
        assert otlp_value(latest, "Prompt Tokens", **dims)[0] == usage["prompt_tokens"], route
        assert otlp_value(latest, "Total Tokens", **dims)[0] == usage["total_tokens"], route
    gpt = {"gen_ai.request.model": "gpt-4o-key", "gen_ai.provider.name": "azure.ai.openai",
           "gateway.route": "GPTKEY", "gen_ai.operation.name": "chat"}
    usage = expected[("GPTKEY", "gpt-4o-key")]
    assert otlp_value(latest, GENAI[0], **gpt, **{"gen_ai.token.type": "input"}) == (usage["prompt_tokens"], 2)
    assert otlp_value(latest, GENAI[0], **gpt, **{"gen_ai.token.type": "output"}) == (
        usage["completion_tokens"], 2)
    assert otlp_value(latest, GENAI[1], **gpt)[1] == 2


def test_nothing_exported_carries_content_or_secrets(traffic, receiver, emulators):
    expected = expected_tokens(traffic["answers"])
    snapshot = receiver.wait_for(apim_complete(expected))
    assert snapshot.bodies
    everything = b"\n".join(snapshot.bodies)
    answers = traffic["answers"]
    forbidden = [SECRET_PROMPT, SECRET_PROMPT[:12], GATEWAY_KEY, "other-key-0123456789",
                 emulators.identity_header,
                 *(key for keys in emulators.keys.values() for key in keys)]
    for name in ("plain", "llama"):
        content = answers[name]["choices"][0]["message"]["content"]
        if content and len(content) >= 12:
            forbidden.append(content)
    if len(answers["stream"]["content"]) >= 12:
        forbidden.append(answers["stream"]["content"])
    for value in forbidden:
        assert value.encode() not in everything, f"exported telemetry carries {value[:12]!r}..."
    assert b"Bearer" not in everything and b"api-key" not in everything.lower()


# --- Flush at exit --------------------------------------------------------------------------


def test_a_long_export_interval_still_flushes_at_exit(emulators, upstreams, tmp_path):
    receiver = TelemetryReceiver()
    settings = {**gateway_settings(emulators), **exporter_settings(receiver, "600000")}
    gateway = GatewayProcess(settings, tmp_path)
    try:
        response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                              json={"model": "gpt-4o-key",
                                    "messages": [{"role": "user", "content": "hello"}]})
        assert response.status_code == 200
        usage = response.json()["usage"]
        assert not receiver.snapshot().bodies  # the 10-minute interval has not come
    finally:
        gateway.stop()
    try:
        snapshot = receiver.wait_for(lambda s: ai_metrics(s.envelopes) and s.otlp_points, timeout=5)
        assert gateway.process.returncode is not None
        assert ai_sum(ai_metrics(snapshot.envelopes), "Total Tokens", Route="GPTKEY")[0] == usage["total_tokens"]
        latest = otlp_latest(snapshot.otlp_points)
        assert otlp_value(latest, "Total Tokens", Route="GPTKEY")[0] == usage["total_tokens"]
    finally:
        receiver.stop()
        for upstream in upstreams.values():
            upstream.clear()


# --- Unconfigured: nothing imported -------------------------------------------------------

_PROBE = """
import json, sys
import function_app
from routing.telemetry import record
print(json.dumps({"modules": sorted(m for m in sys.modules
                                    if m.startswith(("opentelemetry.sdk", "azure.monitor",
                                                     "opentelemetry.exporter"))),
                  "sinks": [getattr(s, "__qualname__", type(s).__name__) for s in record.SINKS]}))
"""


def test_unconfigured_imports_no_exporter():
    env = {k: v for k, v in clean_environ().items()
           if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    env.update({"ROUTE__A__MODEL": "m", "ROUTE__A__BACKEND": "azure-openai",
                "ROUTE__A__ENDPOINT": "https://a.openai.azure.com", "ROUTE__A__API_KEY": "k" * 32,
                "GATEWAY_API_KEYS": "g" * 32, "PYTHONPATH": str(REPO)})
    probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=60, check=True)
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    # FastAPI itself imports the OpenTelemetry *API*; the SDK and the exporters stay out.
    assert facts["modules"] == []
    assert facts["sinks"] == ["_settle_sink", "write"]  # the limits' accounting, the access log


# --- The sink on its own (in-process, in-memory reader) -------------------------------------


def test_sink_attributes_and_bounds():
    from opentelemetry.sdk.resources import Resource

    from routing.telemetry.aggregates import Aggregates, metrics_data
    from routing.telemetry.metrics import _Sink
    from routing.telemetry.record import RequestRecord

    aggregates = Aggregates(max_series=4)
    sink = _Sink(aggregates)
    ok = RequestRecord("r1", "chat/completions", model="gpt-4o", route="GPT", backend="azure-openai",
                       status=200, prompt_tokens=11, completion_tokens=5, total_tokens=16,
                       duration_ms=1500.0, response_model="gpt-4o-2024-08-06")
    stream_error = RequestRecord("r2", "chat/completions", model="gpt-4o", route="GPT",
                                 backend="azure-openai", status=200, error_code="upstream_cut",
                                 duration_ms=10.0, prompt_tokens=3, completion_tokens=1, total_tokens=4)
    unknown = RequestRecord("r3", "embeddings", model="x" * 500, status=404,
                            error_code="model_not_found", duration_ms=1.0)
    listing = RequestRecord("r4", "models", status=200, duration_ms=1.0)
    for record in (ok, stream_error, unknown, listing):
        sink(record)
    taken, start = aggregates.take()
    data = metrics_data(taken, start, start + 10**9, True, Resource.create({}))
    points = [(m.name, dict(p.attributes), p)
              for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              for p in m.data.data_points]
    names = {name for name, _, _ in points}
    assert names == {*GENAI, *APIM}
    durations = {attrs.get("error.type"): p for name, attrs, p in points if name == GENAI[1]}
    assert set(durations) == {None, "upstream_cut", "model_not_found"}
    assert durations[None].sum == pytest.approx(1.5) and durations[None].count == 1
    assert sum(durations[None].bucket_counts) == 1 and durations[None].bucket_counts[8] == 1  # (1.28, 2.56]
    ok_attrs = next(attrs for name, attrs, _ in points if name == GENAI[1] and "error.type" not in attrs)
    assert ok_attrs == {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "azure.ai.openai",
                        "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
                        "gateway.consumer": "default", "gateway.route": "GPT"}
    unknown_attrs = next(attrs for name, attrs, _ in points
                         if name == GENAI[1] and attrs.get("error.type") == "model_not_found")
    assert unknown_attrs == {"gen_ai.operation.name": "embeddings", "gateway.consumer": "default",
                             "error.type": "model_not_found"}
    # One data point per exported attribute set: the APIM counters have four dimensions, so the
    # two GPT requests (one failed, other response model) are one point, summed.
    apim = [(name, attrs, p.value) for name, attrs, p in points if name in APIM]
    assert sorted(apim) == sorted([
        (name, {"Consumer": "default", "Model": "gpt-4o", "Route": "GPT", "Backend": "azure-openai"}, value)
        for name, value in (("Prompt Tokens", 14), ("Completion Tokens", 6), ("Total Tokens", 20))])
    inputs = [p for name, attrs, p in points if name == GENAI[0] and attrs["gen_ai.token.type"] == "input"]
    assert sorted((p.count, p.sum) for p in inputs) == [(1, 3), (1, 11)]  # two response models
    assert "error.type" not in str([attrs for name, attrs, _ in points if name == GENAI[0]])
    # Past the cardinality limit, the overflow series (as the OpenTelemetry specification says).
    for n in range(6):
        sink(RequestRecord(f"o{n}", "chat/completions", model="gpt-4o", route=f"R{n}",
                           backend="azure-openai", status=200, duration_ms=1.0))
    taken, start = aggregates.take()
    assert len(taken) == 5 and ("overflow",) in taken and taken[("overflow",)].duration.count == 2
    assert aggregates.take()[0] == {}  # taken means gone: the next interval starts empty


# --- Under the Functions worker's own Azure Monitor setup ---------------------------------

_WORKER_MODE = """
import json, sys
from azure.monitor.opentelemetry import configure_azure_monitor
from opentelemetry import metrics as otel_metrics

# What the worker does with PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true, before it imports
# function_app (live metrics off here: no call to Microsoft from a test).
configure_azure_monitor(enable_live_metrics=False)
from routing import gateway
from routing.telemetry import metrics
from routing.telemetry.record import RequestRecord, finish

gateway.configure()
record = RequestRecord("r1", "chat/completions", model="m", route="A", backend="azure-openai")
record.take_usage({"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12})
finish(record, 200)
metrics.shutdown()  # the gateway's own export, now
otel_metrics.get_meter_provider().force_flush()
print(json.dumps({"worker_provider": type(otel_metrics.get_meter_provider()).__name__}))
"""


def test_worker_configured_azure_monitor_is_used_not_duplicated():
    receiver = TelemetryReceiver()
    try:
        env = {k: v for k, v in clean_environ().items()
               if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
        env.update(exporter_settings(receiver, "600000"))
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT")
        env.update({"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
                    "ROUTE__A__MODEL": "m", "ROUTE__A__BACKEND": "azure-openai",
                    "ROUTE__A__ENDPOINT": "https://a.openai.azure.com", "ROUTE__A__API_KEY": "k" * 32,
                    "GATEWAY_API_KEYS": "g" * 32, "PYTHONPATH": str(REPO)})
        probe = subprocess.run([sys.executable, "-c", _WORKER_MODE], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0, probe.stderr[-2000:]
        facts = json.loads(probe.stdout.strip().splitlines()[-1])
        assert facts == {"worker_provider": "MeterProvider"}  # the worker's distro did set one
        points = ai_metrics(receiver.wait_for(
            lambda s: ai_sum(ai_metrics(s.envelopes), "Total Tokens")[0] >= 12, timeout=5).envelopes)
        # Exported once (by the gateway, not also through the worker's provider), under APIM's names.
        for name, value in (("Prompt Tokens", 7), ("Completion Tokens", 5), ("Total Tokens", 12)):
            matching = [p for p in points if p["name"] == name]
            assert [p["value"] for p in matching] == [value], (name, matching)
            assert matching[0]["properties"] == {"Consumer": "default", "Model": "m", "Route": "A",
                                                 "Backend": "azure-openai"}
        assert len([p for p in points if p["name"] == "gen_ai.client.token.usage"]) == 2
    finally:
        receiver.stop()
