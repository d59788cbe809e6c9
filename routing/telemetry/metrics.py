"""Metrics through OpenTelemetry (DESIGN §12), built only when an exporter is configured.

`configure_metrics(environ)` runs once per process, from `routing.gateway.configure()`. With
neither `APPLICATIONINSIGHTS_CONNECTION_STRING` nor `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) set it returns at once and imports nothing from
`opentelemetry` or `azure.monitor`: cold start and the hot path pay nothing (bench/imports.py
checks it). Otherwise finished requests are aggregated in the process
(`routing.telemetry.aggregates`, a few µs each) and a background thread hands each interval's
aggregates to the OpenTelemetry exporters: `AzureMonitorMetricExporter` (delta temporality, as
it asks) and/or `OTLPMetricExporter` (the temporality its OTEL_* settings ask for).

What is recorded, for the GenAI operations (chat/completions, completions, embeddings):

- `gen_ai.client.token.usage` (histogram, `{token}`): the prompt tokens with `gen_ai.token.type`
  `input`, the completion tokens with `output`, when the upstream reported usage.
- `gen_ai.client.operation.duration` (histogram, `s`): the request's duration, with `error.type`
  (the record's error code, else its status) when it failed.
- Both with `gen_ai.operation.name` (chat / text_completion / embeddings), `gen_ai.provider.name`
  (`azure.ai.openai` for azure-openai routes, `azure.ai.inference` for azure-ai), the public model
  asked for as `gen_ai.request.model`, the upstream's `model` as `gen_ai.response.model`, and
  `gateway.consumer`, `gateway.route`. Bucket boundaries as the semantic conventions advise.
- `Prompt Tokens`, `Completion Tokens`, `Total Tokens` (counters, the names APIM's
  `llm-emit-token-metric` policy emits) with the dimensions `Consumer`, `Model`, `Route`,
  `Backend`, under the instrumentation scope `API Management` (APIM's default metric namespace:
  Application Insights uses the scope name as the namespace when
  `APPLICATIONINSIGHTS_METRIC_NAMESPACE_OPT_IN` is `true`).

Only names, counts and times: never content, keys or tokens. A model name the client sent is an
attribute only when it names a configured route (an unknown name is the client's free text and
would grow one series per value).

Cooperation with the Functions Python worker: with `PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`
the worker calls the distro's `configure_azure_monitor()` itself and exports logs, requests and
its own metrics through its global providers; the gateway's metrics never pass through those
(they are not instruments of any MeterProvider), so each is exported exactly once, by this
module. The gateway never calls `configure_azure_monitor()`: that would export every log record
and the HTTP spans the host already sends, twice.

Exports happen every `OTEL_METRIC_EXPORT_INTERVAL` ms (60 000 by default) and at process end,
so a short run loses nothing: at a normal exit (atexit) and on SIGTERM (a handler that exports,
then lets the signal end the process as before; see `_flush_on_sigterm`).

Cost when configured (measured on the 2-core dev machine): ~0.35 s more cold import (the SDK and
the exporters), a few µs per finished request.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from routing.telemetry.record import SINKS, RequestRecord

log = logging.getLogger("routing.telemetry")

AZURE_MONITOR = "APPLICATIONINSIGHTS_CONNECTION_STRING"
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
OTLP_PROTOCOLS = ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
OTLP_HEADERS = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS")

SHUTDOWN_TIMEOUT_MS = 5000  # the last export, at exit
EXPORT_TIMEOUT_MS = 10_000

_state: dict[str, Any] = {}  # "sink", "export" (the exporting thread and its pipelines)


def configure_metrics(environ: Mapping[str, str] | None = None) -> bool:
    """Once per process: the aggregates, a sink and the exporting thread when an exporter is
    configured. True when metrics are (now or already) recorded; never raises (telemetry never
    stops the gateway)."""
    if "sink" in _state:
        return True
    environ = os.environ if environ is None else environ
    connection_string = (environ.get(AZURE_MONITOR) or "").strip()
    otlp_endpoint = _otlp_endpoint(environ)
    if not connection_string and not otlp_endpoint:
        return False
    if (environ.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    from routing.telemetry.aggregates import Aggregates  # no OpenTelemetry import: cheap
    from routing.telemetry.redaction import SECRETS

    # OTLP headers often carry a vendor's API key: never in a log line either.
    for name in OTLP_HEADERS:
        SECRETS.add_all(("environment", name), (part.partition("=")[2].strip()
                                                for part in (environ.get(name) or "").split(",")))

    aggregates = Aggregates()
    export = MetricsExport(aggregates, lambda: _pipelines(environ, connection_string, otlp_endpoint,
                                                          aggregates.started_ns),
                           lambda: _resource(environ), _interval(environ))
    sink = _Sink(aggregates)
    _state.update(sink=sink, export=export)
    SINKS.append(sink)
    export.start()
    atexit.register(shutdown)
    _flush_on_sigterm()
    return True


def shutdown() -> None:
    """Export what is pending and stop the exporters (at exit and on SIGTERM too)."""
    export = _state.pop("export", None)
    if export is not None:
        export.shutdown()
    sink = _state.pop("sink", None)
    if sink is not None and sink in SINKS:
        SINKS.remove(sink)


def register_extra(build: Callable[[int, int, bool], Any]) -> None:
    """More metrics, built at each export by their owner (e.g. the state store's degradations):
    `build(start_ns, now_ns, delta)` returns an OpenTelemetry `Metric` or None."""
    if build not in EXTRA:
        EXTRA.append(build)


EXTRA: list[Callable[[int, int, bool], Any]] = []


class Pipeline:
    """One exporter, with the temporality it asks for (cumulative: the sums since the start)."""

    def __init__(self, exporter, delta: bool, started_ns: int) -> None:
        from routing.telemetry.aggregates import Cumulative

        self.exporter = exporter
        self.delta = delta
        self.cumulative = None if delta else Cumulative(started_ns)


class MetricsExport:
    """The thread that builds the exporters, then exports every interval (and once more at
    shutdown). Building them imports the SDK and the exporters (~0.35 s): off the start path,
    so a cold start does not wait for it; requests finished meanwhile are aggregated already."""

    def __init__(self, aggregates, build_pipelines: Callable[[], list[Pipeline]],
                 build_resource: Callable[[], Any], interval_s: float) -> None:
        self.aggregates = aggregates
        self.build_pipelines = build_pipelines
        self.build_resource = build_resource
        self.pipelines: list[Pipeline] = []
        self.resource = None
        self.interval_s = interval_s
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one export at a time (the thread's, or shutdown's)
        self._thread = threading.Thread(target=self._run, name="routing-metrics-export", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._lock:
                self.pipelines = self.build_pipelines()
                self.resource = self.build_resource()
        except Exception:
            log.exception("metrics are not exported: their exporter could not be set up")
        finally:
            self.ready.set()
        if not self.pipelines:
            sink = _state.get("sink")
            if sink is not None and sink in SINKS:
                SINKS.remove(sink)
            return
        while not self._stop.wait(self.interval_s):
            self.export_once()

    def export_once(self) -> None:
        from routing.telemetry.aggregates import metrics_data

        with self._lock:
            taken, start_ns = self.aggregates.take()
            now_ns = time.time_ns()
            for pipeline in self.pipelines:
                try:
                    if pipeline.delta:
                        series, since = taken, start_ns
                    else:
                        series, since = pipeline.cumulative.merge(taken), pipeline.cumulative.started_ns
                    data = metrics_data(series, since, now_ns, pipeline.delta, self.resource, EXTRA)
                    if data.resource_metrics[0].scope_metrics:
                        pipeline.exporter.export(data, timeout_millis=EXPORT_TIMEOUT_MS)
                except Exception:  # the exporter logs its own failures; anything else, here
                    log.exception("metrics: an export failed")

    def shutdown(self) -> None:
        self._stop.set()
        self.ready.wait(SHUTDOWN_TIMEOUT_MS / 1000)  # still building: what it builds exports last
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(SHUTDOWN_TIMEOUT_MS / 1000)
        self.export_once()
        for pipeline in self.pipelines:
            try:
                pipeline.exporter.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_MS)
            except TypeError:  # exporters without the timeout argument
                pipeline.exporter.shutdown()
            except Exception:
                log.exception("metrics: an exporter failed to shut down")


def _flush_on_sigterm() -> None:
    """atexit does not run when a process ends on SIGTERM's default action, and that is how
    `python -m routing serve` ends on SIGTERM: uvicorn shuts down gracefully, puts back the
    handler it found and raises the signal again. So the handler it finds is this one: export
    what is pending, then end the same way (the previous handler, else the default action).
    Only from the main thread."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or previous is None:
        return

    def on_sigterm(signum, frame):
        try:
            shutdown()
        except Exception:
            log.exception("metrics: flushing at SIGTERM failed")
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):  # not the main interpreter thread after all
        pass


def _otlp_endpoint(environ: Mapping[str, str]) -> str:
    """The OTLP/HTTP metrics URL: the signal-specific endpoint as given, else the base endpoint
    with /v1/metrics (as the OTLP exporter specification says)."""
    specific = (environ.get(OTLP_ENDPOINTS[0]) or "").strip()
    if specific:
        return specific
    base = (environ.get(OTLP_ENDPOINTS[1]) or "").strip()
    return base.rstrip("/") + "/v1/metrics" if base else ""


def _pipelines(environ: Mapping[str, str], connection_string: str, otlp_endpoint: str,
               started_ns: int) -> list[Pipeline]:
    pipelines = []
    if connection_string:
        from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter

        # Entra ID (local auth disabled on the resource): the exporter reads
        # APPLICATIONINSIGHTS_AUTHENTICATION_STRING ("Authorization=AAD;ClientId=<client id>")
        # itself and uses a ManagedIdentityCredential for that identity.
        exporter = AzureMonitorMetricExporter(connection_string=connection_string)
        pipelines.append(Pipeline(exporter, _wants_delta(exporter), started_ns))
    if otlp_endpoint:
        exporter = _otlp_exporter(environ, otlp_endpoint)
        if exporter is not None:
            pipelines.append(Pipeline(exporter, _wants_delta(exporter), started_ns))
    return pipelines


def _wants_delta(exporter) -> bool:
    """The temporality the exporter asks for histograms (Azure Monitor: delta; OTLP: what
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE says, cumulative by default)."""
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    preferred = getattr(exporter, "_preferred_temporality", None) or {}
    return preferred.get(Histogram) == AggregationTemporality.DELTA


def _otlp_exporter(environ: Mapping[str, str], endpoint: str):
    protocol = next((environ[n].strip() for n in OTLP_PROTOCOLS if (environ.get(n) or "").strip()),
                    "http/protobuf")
    if protocol != "http/protobuf":
        log.error("metrics are not exported over OTLP: %s=%s is not supported, only http/protobuf",
                  next(n for n in OTLP_PROTOCOLS if environ.get(n)), protocol[:32])
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    # Headers, timeout, compression and certificates come from the OTEL_EXPORTER_OTLP_* variables.
    return OTLPMetricExporter(endpoint=endpoint)


def _interval(environ: Mapping[str, str]) -> float:
    """OTEL_METRIC_EXPORT_INTERVAL (ms), default 60 s, in seconds."""
    value = (environ.get("OTEL_METRIC_EXPORT_INTERVAL") or "").strip()
    try:
        return float(value) / 1000.0 if value and float(value) > 0 else 60.0
    except ValueError:
        return 60.0


def _resource(environ: Mapping[str, str]):
    from opentelemetry.sdk.resources import Resource

    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; else the Function App's name (Application
    # Insights' cloud role), else "routing".
    named = (environ.get("OTEL_SERVICE_NAME")
             or "service.name=" in (environ.get("OTEL_RESOURCE_ATTRIBUTES") or ""))
    attributes = {} if named else {"service.name": environ.get("WEBSITE_SITE_NAME") or "routing"}
    return Resource.create(attributes)


class _Sink:
    """Adds each finished request to the current interval's aggregates."""

    def __init__(self, aggregates) -> None:
        from routing.telemetry.aggregates import series_key

        self.aggregates = aggregates
        self._key = series_key

    def __call__(self, record: RequestRecord) -> None:
        key = self._key(record, _known_model(record))
        if key is not None:
            self.aggregates.add(key, record)


def _known_model(record: RequestRecord) -> str | None:
    """The model the client asked for, when it names configured routes (else free text)."""
    model = record.model
    if not model:
        return None
    if record.route:
        return model
    from routing import gateway as runtime

    gateway = runtime.configured()
    return model if gateway is not None and model in gateway.table.pools else None
