"""A local stand-in for what metrics are exported to, written for the tests: one HTTP server on
loopback answering both

- the Application Insights ingestion endpoint (`POST /v2.1/track`: a JSON array of envelopes, or
  JSON lines, gzip'd or not, as the azure-monitor-opentelemetry exporter sends them; answered with
  the service's `itemsReceived` / `itemsAccepted` / `errors` object), and
- an OTLP/HTTP receiver (`POST /v1/metrics`: an `ExportMetricsServiceRequest` in protobuf,
  decoded with `opentelemetry-proto`).

It keeps every body it received (decompressed) so a test can look for what must never be there.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 16 * 1024 * 1024


@dataclass
class Received:
    envelopes: list[dict] = field(default_factory=list)  # Application Insights
    otlp_points: list[dict] = field(default_factory=list)  # OTLP, one dict per data point
    bodies: list[bytes] = field(default_factory=list)  # every body, decompressed
    paths: list[str] = field(default_factory=list)


class TelemetryReceiver:
    def __init__(self) -> None:
        self.received = Received()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY:
                    self._answer(413, b"{}", "application/json")
                    return
                body = self.rfile.read(length)
                encoding = (self.headers.get("content-encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                path = self.path.split("?")[0]
                with receiver.lock:
                    receiver.received.bodies.append(body)
                    receiver.received.paths.append(path)
                if path.endswith("/v2.1/track"):
                    envelopes = _envelopes(body)
                    with receiver.lock:
                        receiver.received.envelopes.extend(envelopes)
                    answer = {"itemsReceived": len(envelopes), "itemsAccepted": len(envelopes),
                              "errors": []}
                    self._answer(200, json.dumps(answer).encode(), "application/json")
                elif path == "/v1/metrics":
                    points = _otlp_points(body)
                    with receiver.lock:
                        receiver.received.otlp_points.extend(points)
                    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
                        ExportMetricsServiceResponse)
                    self._answer(200, ExportMetricsServiceResponse().SerializeToString(),
                                 "application/x-protobuf")
                else:
                    self._answer(404, b"{}", "application/json")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def snapshot(self) -> Received:
        with self.lock:
            return Received(list(self.received.envelopes), list(self.received.otlp_points),
                            list(self.received.bodies), list(self.received.paths))

    def clear(self) -> None:
        with self.lock:
            self.received = Received()

    def wait_for(self, predicate, timeout: float = 15.0, interval: float = 0.2) -> Received:
        """Until `predicate(snapshot)` is true (then that snapshot), or the last snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.snapshot()
            if predicate(snapshot) or time.monotonic() >= deadline:
                return snapshot
            time.sleep(interval)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _envelopes(body: bytes) -> list[dict]:
    text = body.decode()
    stripped = text.strip()
    if stripped.startswith("["):
        return json.loads(stripped)
    return [json.loads(line) for line in stripped.splitlines() if line.strip()]


def _any_value(value) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _otlp_points(body: bytes) -> list[dict]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest)

    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    points = []
    for resource_metrics in request.resource_metrics:
        resource = {a.key: _any_value(a.value) for a in resource_metrics.resource.attributes}
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                for point in data.data_points:
                    entry = {"name": metric.name, "unit": metric.unit, "kind": kind, "scope": scope,
                             "resource": resource,
                             "attributes": {a.key: _any_value(a.value) for a in point.attributes},
                             "time": point.time_unix_nano,
                             "temporality": getattr(data, "aggregation_temporality", None)}
                    if kind == "histogram":
                        entry.update(sum=point.sum, count=point.count,
                                     bounds=list(point.explicit_bounds))
                    else:
                        entry["value"] = (point.as_int if point.WhichOneof("value") == "as_int"
                                          else point.as_double)
                    points.append(entry)
    return points
