"""Smoke test of the benchmark harness (`python -m bench`), not of performance: a tiny run must
produce every figure for every target, with every request answered correctly and counted.

The gateway runs in the runtime venv (requirements.txt only), built on first use and cached in
bench/.venv-runtime: ~12 s on 2 cores from pip's cache (filled by installing requirements-dev.txt),
nothing afterwards; the tiny run itself takes ~10 s."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.helpers import REPO

TARGETS = {"direct", "bare_aiohttp", "bare_uvicorn_aiohttp", "bare_httpx", "gateway", "gateway_metrics",
           "gateway_redis"}
SERVERS = TARGETS - {"direct"}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "bench", "--tiny", "--litellm", "no", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "latest.json").read_text()), (out / "latest.md").read_text()


def test_every_request_answered_and_counted(tiny_run):
    data, _ = tiny_run
    cfg = data["config"]
    assert data["valid"], data["problems"]
    assert set(data["targets"]) == TARGETS
    expected = {"c1": cfg["c1_requests"], "stream": cfg["stream_requests"], "c32": cfg["c32_requests"]}
    assert len(data["rounds"]) == cfg["rounds"] >= 1
    for round_ in data["rounds"]:
        assert sorted(round_["order"]) == sorted(TARGETS)
        for name in TARGETS:
            for kind, count in expected.items():
                phase = round_["results"][name][kind]
                assert phase["requests"] == phase["ok"] == count, (name, kind, phase)
                assert phase["errors"] == phase["warmup_errors"] == 0, (name, kind, phase["error_samples"])
                assert not phase["timed_out"]
                # every request (warm-up included) reached the upstream exactly once
                assert phase["upstream_requests"] == phase["expected_upstream_requests"], (name, kind)
                assert phase["cpu_s"]["target"] >= 0 and phase["cpu_s"]["load"] > 0
    for name in TARGETS:
        assert data["targets"][name]["counts"]["requests"] == data["targets"][name]["counts"]["ok"] \
            == cfg["rounds"] * sum(expected.values())
    # A consumer with limits on Redis: one round trip to admit, the reconciliation after.
    ops = data["redis_ops"]
    assert ops["errors"] == 0 and 1 <= ops["per_request"] <= 2.2, ops


def test_every_figure_for_every_target(tiny_run):
    data, markdown = tiny_run
    for name in TARGETS:
        f = data["targets"][name]
        figures = [f["c1"]["p50_ms"], f["c1"]["p99_ms"], f["c1"]["cpu_ms_per_request"],
                   f["c32"]["throughput_rps"], f["c32"]["p50_ms"], f["c32"]["p99_ms"],
                   f["c32"]["cpu_ms_per_request"], f["stream"]["ttfb_p50_ms"], f["stream"]["ttfb_p99_ms"],
                   f["stream"]["total_p50_ms"]]
        assert all(_positive(v) for v in figures), (name, figures)
        assert f["c1"]["p50_ms"] <= f["c1"]["p99_ms"] < 10_000
        assert f["stream"]["ttfb_p50_ms"] <= f["stream"]["total_p50_ms"]
        if name == "direct":
            assert f["c1"]["added_p50_ms"] is None
            continue
        for value in (f["c1"]["added_p50_ms"], f["c1"]["added_p99_ms"], f["stream"]["added_ttfb_p50_ms"]):
            assert isinstance(value, float) and math.isfinite(value), (name, value)
        rss = f["rss"]
        assert _positive(rss["after_start_mib"]) and _positive(rss["after_requests_mib"])
        assert rss["requests"] == rss["ok"] == data["config"]["rss_requests"] and rss["errors"] == 0
    cold = data["cold_import"]
    assert _positive(cold["function_app_ms"]) and _positive(cold["bare_ms"]) and _positive(cold["ratio"])
    assert cold["functions_registered"] is True and isinstance(cold["azure_identity_imported"], bool)
    assert _positive(data["upstream"]["cpu_us_per_request"])
    checks = {c["key"]: c for c in data["checks"]}
    assert set(checks) == {"added_latency_ratio", "cpu_ratio", "throughput_ratio", "added_ttfb_ms",
                           "import_ratio", "azure_identity_imported", "metrics_exporters_imported",
                           "rss_delta_mib"}
    assert all(c["value"] is not None and isinstance(c["pass"], bool) for c in checks.values()), checks
    for label in ("direct (floor)", "bare aiohttp", "gateway", "added latency, c=1, median",
                  "throughput, c=32", "added time to first chunk", "Machine:", "Cold import"):
        assert label in markdown


def test_gateway_ran_as_deployed(tiny_run):
    """The gateway (and its cold import) ran in the venv built from requirements.txt alone, not in
    the dev venv this test runs in; the report says so."""
    data, markdown = tiny_run
    env = data["environments"]["gateway"]
    assert env["kind"] == "runtime" and data["config"]["gateway_venv"] == "runtime"
    assert env["python"] != sys.executable
    assert data["config"]["gateway_python"] == data["cold_import"]["python"] == env["python"]
    packages = env["packages"]
    assert {"azure-functions", "azurefunctions-extensions-http-fastapi", "aiohttp", "uvicorn",
            "httptools", "starlette"} <= set(packages)
    assert not {"httpx", "pytest", "checkov", "openai"} & set(packages)  # dev-only tools
    assert env["uvicorn_http"] == "HttpToolsProtocol" and env["uvicorn_loop_auto"] == "asyncio"
    assert data["cold_import"]["httptools_imported"] is False
    assert data["cold_import"]["metrics_exporters_imported"] is False  # neither exporter configured
    assert data["environments"]["harness"]["python"] == sys.executable
    assert "requirements.txt only" in markdown and "Bare forwarders, upstream, load generator" in markdown


def test_load_generator_counts_wrong_answers_as_errors(tmp_path):
    """The harness's checks can fail: answers of the wrong size are errors, not latencies."""
    from bench.procs import LoadProcess, Server, free_port
    from bench.run import BODY, UPSTREAM_PATH

    port = free_port()
    upstream = Server("upstream", [sys.executable, "-m", "bench.fast_upstream", "--port", str(port)], port, tmp_path)
    load = LoadProcess(tmp_path)
    try:
        good = len(upstream.wait_ready(UPSTREAM_PATH, BODY.encode(), {"content-type": "application/json"}))
        spec = {"url": upstream.url + UPSTREAM_PATH, "headers": {"content-type": "application/json"},
                "body": BODY, "stream": False, "concurrency": 2, "count": 6, "warmup": 0, "time_limit": 10}
        for expect_len, errors in ((good, 0), (good + 1, 6)):
            load.send(json.dumps({**spec, "expect_len": expect_len}))
            assert load.receive(30)["ready"]
            load.send("go")
            result = load.receive(30)
            assert (result["requests"], result["errors"], result["ok"]) == (6, errors, 6 - errors), result
    finally:
        load.stop()
        upstream.stop()
