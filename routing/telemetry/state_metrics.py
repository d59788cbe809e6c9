"""The shared state store's health as metrics (DESIGN §11): whether it is degraded (serving with
per-instance state because Redis did not answer), how often it was, and how many calls were
answered from memory meanwhile. Gauges of the store's own counters, read at each export."""

from __future__ import annotations

from typing import Any


def state_gauges(store: Any):
    """A metrics builder for `routing.telemetry.metrics.register_extra`."""

    def build(start_ns: int, now_ns: int, delta: bool) -> list:
        from opentelemetry.sdk.metrics.export import Gauge, Metric, NumberDataPoint

        attributes = {"gateway.state.store": store.name}

        def gauge(name: str, description: str, value: int) -> Metric:
            point = NumberDataPoint(attributes=attributes, start_time_unix_nano=start_ns,
                                    time_unix_nano=now_ns, value=value)
            return Metric(name=name, description=description, unit="1", data=Gauge(data_points=[point]))

        return [gauge("gateway.state.degraded", "1 while the shared store is unreachable and state is "
                      "per instance", int(store.degraded)),
                gauge("gateway.state.degradations", "times the shared store became unreachable since "
                      "the process started", store.degraded_total),
                gauge("gateway.state.fallback_calls", "state calls answered from per-instance memory "
                      "since the process started", store.fallback_calls_total)]

    return build
