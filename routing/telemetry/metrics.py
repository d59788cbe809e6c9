"""Metrics through OpenTelemetry (DESIGN §12), built only when an exporter is configured.

`configure_metrics(environ)` runs once per process, from `routing.gateway.configure()`. With
neither `APPLICATIONINSIGHTS_CONNECTION_STRING` nor `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) set it returns at once and imports nothing from
`opentelemetry` or `azure.monitor`: cold start and the hot path pay nothing (bench/imports.py
checks it). Otherwise it builds the instruments once and adds a sink to
`routing.telemetry.record.SINKS`: per finished request a few `record()` / `add()` calls with
attribute dicts built once per distinct (operation, consumer, model, route, ...) combination.

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
  `Backend`, from a meter named `API Management` (APIM's default metric namespace: Application
  Insights uses the meter name as the namespace when `APPLICATIONINSIGHTS_METRIC_NAMESPACE_OPT_IN`
  is `true`).

Only names, counts and times: never content, keys or tokens. A model name the client sent is an
attribute only when it names a configured route (an unknown name is the client's free text and
would grow one series per value).

Cooperation with the Functions Python worker: with `PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`
(and `"telemetryMode": "OpenTelemetry"` in host.json) the worker calls the distro's
`configure_azure_monitor()` itself, before it imports `function_app`, and that sets the global
MeterProvider (with an Azure Monitor reader). Then the instruments come from that provider and
no second Azure Monitor pipeline is built: one export, with the worker's resource. Otherwise
(the default, where the Functions host sends logs and requests itself) the gateway builds its own
MeterProvider for metrics only, never `configure_azure_monitor()`: that would also export every
log record and the HTTP spans the host already sends, twice. OTLP always goes through the
gateway's own provider (the worker's distro exports to Azure Monitor only).

The gateway's provider is not made global, exports every `OTEL_METRIC_EXPORT_INTERVAL` ms
(60 000 by default) and is shut down at process exit, which exports what is pending, so a short
run loses nothing: at a normal exit (atexit) and on SIGTERM (a handler that exports, then lets
the signal end the process as before; see `_flush_on_sigterm`).

Cost when configured (measured on the 2-core dev machine): ~0.35 s more cold import (the SDK and
the exporters), ~20 µs per finished request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from routing.telemetry.record import SINKS, RequestRecord

log = logging.getLogger("routing.telemetry")

AZURE_MONITOR = "APPLICATIONINSIGHTS_CONNECTION_STRING"
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
OTLP_PROTOCOLS = ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
OTLP_HEADERS = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS")
WORKER_TELEMETRY = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"

METER_NAME = "routing"
APIM_METER_NAME = "API Management"
# OpenTelemetry instrument names cannot hold spaces: the APIM counters are created under these
# names and renamed by views to the names APIM emits.
APIM_METRICS = {"gateway.prompt_tokens": "Prompt Tokens",
                "gateway.completion_tokens": "Completion Tokens",
                "gateway.total_tokens": "Total Tokens"}

# The record's operation → gen_ai.operation.name (semantic conventions' well-known values).
OPERATIONS = {"chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings"}
# The route's backend → gen_ai.provider.name.
PROVIDERS = {"azure-openai": "azure.ai.openai", "azure-ai": "azure.ai.inference"}
# Advised by the GenAI semantic conventions (gen-ai-metrics.md).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
MAX_NAME_CHARS = 128  # an upstream's response model, bounded
MAX_CACHED_ATTRIBUTE_SETS = 1024
SHUTDOWN_TIMEOUT_MS = 5000  # the last export, at exit

_state: dict[str, Any] = {}  # "sink", "providers" (the ones this module built), "mode"


def configure_metrics(environ: Mapping[str, str] | None = None) -> bool:
    """Once per process: instruments and a sink when an exporter is configured. True when
    metrics are (now or already) recorded; never raises (telemetry never stops the gateway)."""
    if "sink" in _state:
        return True
    environ = os.environ if environ is None else environ
    connection_string = (environ.get(AZURE_MONITOR) or "").strip()
    otlp_endpoint = _otlp_endpoint(environ)
    if not connection_string and not otlp_endpoint:
        return False
    if (environ.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    try:
        meters = _build_meters(environ, connection_string, otlp_endpoint)
        if not meters:
            return False
        sink = _Sink(meters)
    except Exception:
        log.exception("metrics are not exported: their exporter could not be set up")
        return False
    _state["sink"] = sink
    SINKS.append(sink)
    return True


def shutdown() -> None:
    """Export what is pending and stop the providers this module built (their atexit hook and
    the SIGTERM handler do the same at the end of the process)."""
    for provider in _state.pop("providers", ()):
        provider.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_MS)
    sink = _state.pop("sink", None)
    if sink is not None and sink in SINKS:
        SINKS.remove(sink)
    _state.pop("mode", None)


def _flush_on_sigterm() -> None:
    """atexit does not run when a process ends on SIGTERM's default action, and that is how
    `python -m routing serve` ends on SIGTERM: uvicorn shuts down gracefully, puts back the
    handler it found and raises the signal again. So the handler it finds is this one: export
    what is pending, then end the same way (the previous handler, else the default action).
    Only from the main thread, and only for the provider this module built."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or previous is None:
        return

    def on_sigterm(signum, frame):
        try:
            for provider in _state.get("providers", ()):
                provider.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_MS)
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


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def _build_meters(environ: Mapping[str, str], connection_string: str, otlp_endpoint: str) -> list:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.sdk.metrics import MeterProvider

    from routing.telemetry.redaction import SECRETS

    # OTLP headers often carry a vendor's API key: never in a log line either.
    for name in OTLP_HEADERS:
        SECRETS.add_all(("environment", name), (part.partition("=")[2].strip()
                                                for part in (environ.get(name) or "").split(",")))
    providers = []
    readers = []
    worker_provider = otel_metrics.get_meter_provider()
    if connection_string and isinstance(worker_provider, MeterProvider):
        # Set process-wide before `function_app` was imported: the Functions worker's
        # configure_azure_monitor() (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true), or
        # whoever owns this process's telemetry. Its Azure Monitor reader exports ours too.
        _add_apim_views(worker_provider)
        providers.append(worker_provider)
        _state["mode"] = "global"
        if not _truthy(environ.get(WORKER_TELEMETRY)):
            log.info("metrics: using the MeterProvider already set for this process")
    elif connection_string:
        readers.append(_azure_monitor_reader(environ, connection_string))
    if otlp_endpoint:
        reader = _otlp_reader(environ, otlp_endpoint)
        if reader is not None:
            readers.append(reader)
    if readers:
        own = MeterProvider(metric_readers=readers, resource=_resource(environ),
                            views=_apim_views(), shutdown_on_exit=True)
        providers.append(own)
        _state["providers"] = [own]
        _state.setdefault("mode", "own")
        _flush_on_sigterm()
    return [(p.get_meter(METER_NAME), p.get_meter(APIM_METER_NAME)) for p in providers]


def _apim_views() -> list:
    from opentelemetry.sdk.metrics.view import View

    return [View(instrument_name=instrument, meter_name=APIM_METER_NAME, name=name)
            for instrument, name in APIM_METRICS.items()]


def _add_apim_views(provider) -> None:
    """The renaming views, added to a provider built elsewhere. The SDK takes views only in the
    MeterProvider's constructor and reads them from its configuration when an instrument is first
    used (`MetricReaderStorage`), so they are appended there, before our instruments exist; if
    that configuration is not where this SDK version keeps it, the counters keep their
    instrument names (gateway.prompt_tokens, ...)."""
    config = getattr(provider, "_sdk_config", None)
    views = getattr(config, "views", None)
    if views is None:
        log.warning("metrics: the APIM-compatible counters are exported as %s (this OpenTelemetry "
                    "SDK does not take views after its MeterProvider is built)", ", ".join(APIM_METRICS))
        return
    config.views = (*views, *_apim_views())


def _interval(environ: Mapping[str, str]) -> float | None:
    value = (environ.get("OTEL_METRIC_EXPORT_INTERVAL") or "").strip()
    try:
        return float(value) if value and float(value) > 0 else None
    except ValueError:
        return None


def _azure_monitor_reader(environ: Mapping[str, str], connection_string: str):
    from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    # Entra ID (local auth disabled on the resource): the exporter reads
    # APPLICATIONINSIGHTS_AUTHENTICATION_STRING ("Authorization=AAD;ClientId=<client id>") itself
    # and uses a ManagedIdentityCredential for that identity.
    exporter = AzureMonitorMetricExporter(connection_string=connection_string)
    return PeriodicExportingMetricReader(exporter, export_interval_millis=_interval(environ))


def _otlp_reader(environ: Mapping[str, str], endpoint: str):
    protocol = next((environ[n].strip() for n in OTLP_PROTOCOLS if (environ.get(n) or "").strip()),
                    "http/protobuf")
    if protocol != "http/protobuf":
        log.error("metrics are not exported over OTLP: %s=%s is not supported, only http/protobuf",
                  next(n for n in OTLP_PROTOCOLS if environ.get(n)), protocol[:32])
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    # Headers, timeout, compression and certificates come from the OTEL_EXPORTER_OTLP_* variables.
    exporter = OTLPMetricExporter(endpoint=endpoint)
    return PeriodicExportingMetricReader(exporter, export_interval_millis=_interval(environ))


def _resource(environ: Mapping[str, str]):
    from opentelemetry.sdk.resources import Resource

    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; else the Function App's name (Application
    # Insights' cloud role), else "routing".
    named = (environ.get("OTEL_SERVICE_NAME")
             or "service.name=" in (environ.get("OTEL_RESOURCE_ATTRIBUTES") or ""))
    attributes = {} if named else {"service.name": environ.get("WEBSITE_SITE_NAME") or "routing"}
    return Resource.create(attributes)


class _Sink:
    """Records a finished RequestRecord into each configured pipeline's instruments."""

    def __init__(self, meters: list) -> None:
        self._instruments = []
        for meter, apim_meter in meters:
            self._instruments.append((
                meter.create_histogram(
                    "gen_ai.client.token.usage", unit="{token}",
                    description="Measures number of input and output tokens used",
                    explicit_bucket_boundaries_advisory=TOKEN_BUCKETS),
                meter.create_histogram(
                    "gen_ai.client.operation.duration", unit="s",
                    description="GenAI operation duration",
                    explicit_bucket_boundaries_advisory=DURATION_BUCKETS),
                *(apim_meter.create_counter(instrument, unit="{token}",
                                            description=f"{name} (as APIM's llm-emit-token-metric)")
                  for instrument, name in APIM_METRICS.items()),
            ))
        self._attributes: dict[tuple, tuple[dict, dict, dict, dict]] = {}

    def __call__(self, record: RequestRecord) -> None:
        operation = OPERATIONS.get(record.operation)
        if operation is None:  # model listings, health: not GenAI operations
            return
        failed = record.status >= 400 or record.error_code is not None
        error = (record.error_code or str(record.status)) if failed else None
        key = (operation, record.consumer, _known_model(record), record.route, record.backend,
               record.response_model, error)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attribute_sets(key)
        inputs, outputs, duration, apim = attributes
        prompt, completion, total = record.prompt_tokens, record.completion_tokens, record.total_tokens
        if total is None and prompt is not None and completion is not None:
            total = prompt + completion
        seconds = (record.duration_ms or 0.0) / 1000.0
        for usage, durations, prompt_count, completion_count, total_count in self._instruments:
            durations.record(seconds, duration)
            if prompt is not None:
                usage.record(prompt, inputs)
                prompt_count.add(prompt, apim)
            if completion is not None:
                usage.record(completion, outputs)
                completion_count.add(completion, apim)
            if total is not None:
                total_count.add(total, apim)

    def _attribute_sets(self, key: tuple) -> tuple[dict, dict, dict, dict]:
        operation, consumer, model, route, backend, response_model, error = key
        common: dict[str, str] = {"gen_ai.operation.name": operation}
        provider = PROVIDERS.get(backend or "")
        if provider:
            common["gen_ai.provider.name"] = provider
        if model:
            common["gen_ai.request.model"] = model
        if isinstance(response_model, str) and response_model:
            common["gen_ai.response.model"] = response_model[:MAX_NAME_CHARS]
        common["gateway.consumer"] = consumer or "default"
        if route:
            common["gateway.route"] = route
        duration = dict(common)
        if error:
            duration["error.type"] = error[:MAX_NAME_CHARS]
        apim = {"Consumer": consumer or "default", "Model": model or "", "Route": route or "",
                "Backend": backend or ""}
        attributes = ({**common, "gen_ai.token.type": "input"},
                      {**common, "gen_ai.token.type": "output"}, duration, apim)
        if len(self._attributes) >= MAX_CACHED_ATTRIBUTE_SETS:
            self._attributes.clear()
        self._attributes[key] = attributes
        return attributes


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


def configured_sink() -> Callable[[RequestRecord], None] | None:
    """The sink in SINKS, if metrics are configured (for tests and diagnostics)."""
    return _state.get("sink")
