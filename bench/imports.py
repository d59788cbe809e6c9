"""Cold import of `function_app` (what a Functions cold start pays for our code) against a bare
import of the packages it needs, each in a fresh interpreter, interleaved, medians.

Also: whether `import function_app` pulls in `azure.identity` (it must not: only
managed-identity routes need it, on first use), `httptools` (only uvicorn's server needs it, when
it starts) or the metrics exporters (the OpenTelemetry SDK, `azure.monitor`, the OTLP exporter:
only with APPLICATIONINSIGHTS_CONNECTION_STRING or OTEL_EXPORTER_OTLP_ENDPOINT set, which the
measurement leaves unset; FastAPI itself imports the OpenTelemetry API, so that one is in the bare
set), and which packages it adds to the bare set. Run with the gateway's interpreter (the
runtime venv: requirements.txt only), since what is installed changes what the imports pull in.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from bench.procs import REPO, machine_busy_seconds


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# The runtime requirements (requirements.txt) that `function_app` needs at import; azure.identity
# is imported lazily, on the first managed-identity request.
REQUIRED = ("azure.functions", "azurefunctions.extensions.http.fastapi", "aiohttp", "pydantic")
BARE_CODE = "import " + ", ".join(REQUIRED)
APP_CODE = "import function_app"
EMPTY_CODE = "pass"
SETTINGS = {
    "GATEWAY_API_KEYS": "bench-gateway-key",
    "ROUTE__BENCH__MODEL": "gpt-4o",
    "ROUTE__BENCH__BACKEND": "azure-openai",
    "ROUTE__BENCH__ENDPOINT": "https://bench.openai.azure.com",
    "ROUTE__BENCH__API_KEY": "bench-upstream-key",
}
_PROBE = """
import json, sys
before = set(sys.modules)
import {bare}
bare = set(sys.modules)
import function_app
added = sorted(set(sys.modules) - bare)
tops = {{}}
for name in added:
    tops[name.split('.')[0]] = tops.get(name.split('.')[0], 0) + 1
ok = bool(function_app.app.get_functions())
print(json.dumps({{"azure_identity_imported": "azure.identity" in sys.modules,
                  "httptools_imported": "httptools" in sys.modules,
                  "metrics_exporters_imported": any(m.startswith(("opentelemetry.sdk", "azure.monitor",
                                                                  "opentelemetry.exporter"))
                                                    for m in sys.modules),
                  "modules_added": len(added), "packages_added": tops, "functions_registered": ok}}))
"""


def environ(gateway_src=None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ROUTE__", "GATEWAY_", "IDENTITY_", "MSI_", "PYTHONPROFILEIMPORTTIME",
                                "APPLICATIONINSIGHTS_", "OTEL_"))}
    env.update(SETTINGS)
    env["PYTHONPATH"] = f"{gateway_src}:{REPO}" if gateway_src else str(REPO)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _time(code: str, env: dict[str, str], python: str) -> float:
    start = time.perf_counter()
    subprocess.run([python, "-c", code], env=env, cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return time.perf_counter() - start


# `import function_app` timed inside the interpreter, after its packages: what the start path pays
# for our code, with and without an exporter configured (the exporters are built on a thread).
_IN_PROCESS = """
import json, time
import {bare}
start = time.perf_counter()
import function_app
print(json.dumps({{"ms": (time.perf_counter() - start) * 1e3}}))
"""
METRICS_ON = {"APPLICATIONINSIGHTS_CONNECTION_STRING":
              "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/",
              "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
              "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
              "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
              "OTEL_METRIC_EXPORT_INTERVAL": "600000"}


def start_path_ms(python: str, env: dict[str, str], repeats: int) -> dict[str, float]:
    """Median in-process time of `import function_app` with metrics off and on."""
    code = _IN_PROCESS.format(bare=", ".join(REQUIRED))
    samples: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeats):
        for name, extra in (("off", {}), ("on", METRICS_ON)):
            run = subprocess.run([python, "-c", code], env={**env, **extra}, cwd=REPO,
                                 capture_output=True, text=True, timeout=60, check=True)
            samples[name].append(json.loads(run.stdout.strip().splitlines()[-1])["ms"])
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(repeats: int = 7, gateway_src=None, python: str | None = None) -> dict:
    """`python`: the interpreter to import with (the gateway's venv: what is installed there,
    e.g. orjson, changes what the imports pull in)."""
    python = python or sys.executable
    env = environ(gateway_src)
    busy0, children0 = machine_busy_seconds(), _children_cpu()
    started = time.perf_counter()
    for code in (EMPTY_CODE, BARE_CODE, APP_CODE):  # compile .pyc files, warm the page cache
        _time(code, env, python)
    samples: dict[str, list[float]] = {"empty": [], "bare": [], "function_app": []}
    for i in range(repeats):
        order = [("empty", EMPTY_CODE), ("bare", BARE_CODE), ("function_app", APP_CODE)]
        for name, code in order[i % 3:] + order[:i % 3]:
            samples[name].append(_time(code, env, python))
    medians = {name: statistics.median(values) * 1e3 for name, values in samples.items()}
    wall = time.perf_counter() - started
    foreign = max(machine_busy_seconds() - busy0 - (_children_cpu() - children0), 0.0)
    probe = subprocess.run([python, "-c", _PROBE.format(bare=", ".join(REQUIRED))], env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    start_path = start_path_ms(python, env, max(3, repeats // 2))
    return {
        "start_path_ms": start_path,
        "repeats": repeats,
        "python": python,
        "bare_code": BARE_CODE,
        "interpreter_ms": medians["empty"],
        "bare_ms": medians["bare"],
        "function_app_ms": medians["function_app"],
        "ratio": medians["function_app"] / medians["bare"],
        # The same without the interpreter's own start, for reading (the target uses `ratio`).
        "ratio_without_interpreter": ((medians["function_app"] - medians["empty"])
                                      / max(medians["bare"] - medians["empty"], 1e-9)),
        "samples_ms": {k: [round(v * 1e3, 2) for v in vs] for k, vs in samples.items()},
        # CPU other processes used meanwhile, as a share of the machine: high means noisy timings.
        "background_cpu_share": foreign / max(wall * (os.cpu_count() or 1), 1e-9),
        **facts,
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 7), indent=2))
