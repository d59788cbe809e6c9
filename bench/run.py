"""One benchmark run: direct calls (the floor), the bare forwarders and the gateway, side by side
against one fast local upstream, in interleaved rounds; then cold import and RSS.

    python -m bench              # default run (~3 min on 2 cores, < 5 min)
    python -m bench --quick      # short run (< 60 s)
    python -m bench --out DIR    # where latest.json / latest.md go (default bench/results)

Every process is separate (upstream, each forwarder, the gateway, the load generator), so the
CPU time of each server is read from /proc around the measured part of each phase. The gateway
(and its cold import) runs in the runtime venv: requirements.txt only, what Azure deploys
(bench/runtime_env.py); everything else runs in the harness's venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import imports, litellm_proxy, redis_state, report, runtime_env
from bench.procs import (REPO, LoadProcess, Server, cpu_seconds, free_port, machine, machine_busy_seconds,
                         post, rss_mib)

DEFAULT_OUT = REPO / "bench" / "results"
UPSTREAM_KEY = "bench-upstream-key"
GATEWAY_KEY = "bench-gateway-key"
UPSTREAM_PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
GATEWAY_PATH = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello to the benchmark in a few words."}]
BODY = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 50, "temperature": 0.7},
                  separators=(",", ":"))
STREAM_BODY = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 50,
                          "temperature": 0.7, "stream": True}, separators=(",", ":"))


@dataclass
class Mode:
    """Request counts of one kind of run."""

    rounds: int
    c1: int           # non-streamed requests at concurrency 1, per round and target
    c32: int          # non-streamed requests at concurrency 32, per round and target
    stream: int       # streamed requests at concurrency 1, per round and target
    rss: int          # requests between the two RSS readings
    import_repeats: int
    phase_time_limit: float = 60.0  # seconds; a phase stops there even if its count is not reached
    concurrency: int = 32
    slow_scale: float = 0.1  # share of the counts for a slow optional target (LiteLLM)
    warmup: dict = field(default_factory=lambda: {"c1": 20, "c32": 96, "stream": 10, "rss": 100})


MODES = {
    "default": Mode(rounds=7, c1=500, c32=3000, stream=200, rss=10_000, import_repeats=9),
    "quick": Mode(rounds=2, c1=200, c32=1500, stream=80, rss=10_000, import_repeats=7,
                  phase_time_limit=20.0, slow_scale=0.04),
    # For the harness's own smoke test: every figure, a few requests each.
    "tiny": Mode(rounds=1, c1=20, c32=64, stream=10, rss=200, import_repeats=1, phase_time_limit=15.0,
                 warmup={"c1": 5, "c32": 32, "stream": 3, "rss": 20}),
}


@dataclass
class Target:
    name: str
    label: str
    url: str
    headers: dict[str, str]
    server: Server | None  # None: direct calls (only the upstream works)
    exact: bool = True  # relays the upstream's bytes unchanged (answers are checked byte for byte)
    scale: float = 1.0  # share of the mode's request counts (slow targets get fewer)
    helpers: tuple[Server, ...] = ()  # other processes it needs (stopped with it)


def _python(module: str, *args: str, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", module, *args]


def start_servers(log_dir: Path, litellm_python: str | None, stream_gap_ms: float,
                  gateway_src: Path | None = None, compare_srcs: tuple[Path, ...] = (),
                  slow_scale: float = 0.1, gateway_python: str | None = None,
                  compare_envs: tuple[runtime_env.GatewayEnv, ...] = ()) -> tuple[Server, list[Target]]:
    """The upstream and every target, each its own process, answering. `gateway_src`: a folder
    holding another `routing/` to run (the gateway and bare_httpx), e.g. a patched copy;
    `compare_srcs`: more such folders, each served as one more gateway target (before/after);
    `gateway_python`: the interpreter of the gateway targets (default: the harness's own);
    `compare_envs`: more venvs, each serving the same gateway as one more target."""
    routing_path = f"{gateway_src}:{REPO}" if gateway_src else str(REPO)
    up_port = free_port()
    upstream = Server("upstream", _python("bench.fast_upstream", "--port", str(up_port),
                                          "--stream-gap-ms", str(stream_gap_ms)), up_port, log_dir)
    servers = [upstream]
    try:
        def forwarder(name: str, module: str, pythonpath: str | None = None) -> Server:
            port = free_port()
            server = Server(name, _python(module, "--port", str(port), "--upstream", upstream.url),
                            port, log_dir, pythonpath=pythonpath)
            servers.append(server)
            return server

        aio = forwarder("bare_aiohttp", "bench.bare_aiohttp")
        uva = forwarder("bare_uvicorn_aiohttp", "bench.bare_uvicorn_aiohttp")
        hx = forwarder("bare_httpx", "bench.bare_httpx", routing_path)

        def gateway_process(name: str, pythonpath: str, python: str | None = gateway_python,
                            extra_env: dict[str, str] | None = None) -> Server:
            port = free_port()
            cwd = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=log_dir))  # no local.settings.json
            server = Server(name, _python("routing", "serve", "--port", str(port), python=python),
                            port, log_dir, env={**gateway_environ(upstream.url), **(extra_env or {})},
                            cwd=cwd, pythonpath=pythonpath)
            servers.append(server)
            return server

        gateway = gateway_process("gateway", routing_path)
        upstream_headers = {"content-type": "application/json", "api-key": UPSTREAM_KEY}
        gateway_headers = {"content-type": "application/json", "authorization": f"Bearer {GATEWAY_KEY}"}
        targets = [
            Target("direct", "direct (floor)", upstream.url + UPSTREAM_PATH, upstream_headers, None),
            Target("bare_aiohttp", "bare aiohttp", aio.url + UPSTREAM_PATH, upstream_headers, aio),
            Target("bare_uvicorn_aiohttp", "bare uvicorn + aiohttp client", uva.url + UPSTREAM_PATH,
                   upstream_headers, uva),
            Target("bare_httpx", "bare uvicorn + httpx (gateway's first client)", hx.url + UPSTREAM_PATH,
                   upstream_headers, hx),
            Target("gateway", "gateway" + (f" ({gateway_src.name})" if gateway_src else ""),
                   gateway.url + GATEWAY_PATH, gateway_headers, gateway),
        ]
        # The same gateway with metrics on: OpenTelemetry exporting over OTLP/HTTP every 5 s to a
        # second fast upstream standing in for a collector (it answers every POST with 200).
        sink_port = free_port()
        sink = Server("otlp_sink", _python("bench.fast_upstream", "--port", str(sink_port)), sink_port, log_dir)
        servers.append(sink)
        sink.wait_ready(UPSTREAM_PATH, BODY.encode(), upstream_headers)
        metered = gateway_process("gateway_metrics", routing_path, extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_METRIC_EXPORT_INTERVAL": "5000"})
        targets.append(Target("gateway_metrics", "gateway + metrics (OTLP)", metered.url + GATEWAY_PATH,
                              gateway_headers, metered, helpers=(sink,)))
        # The same gateway keeping its limits and cooldowns in Redis (when a redis-server exists).
        redis_server = redis_state.start()
        if redis_server is not None:
            shared = gateway_process("gateway_redis", routing_path, extra_env={"GATEWAY_STATE": redis_server.url})
            targets.append(Target("gateway_redis", "gateway + Redis state", shared.url + GATEWAY_PATH,
                                  gateway_headers, shared, helpers=(redis_server,)))
        for i, src in enumerate(compare_srcs, start=2):
            other = gateway_process(f"gateway_{i}", f"{src}:{REPO}")
            targets.append(Target(f"gateway_{i}", f"gateway ({src.name})", other.url + GATEWAY_PATH,
                                  gateway_headers, other))
        for i, env in enumerate(compare_envs, start=2):
            other = gateway_process(f"gateway_venv_{i}", routing_path, env.python)
            targets.append(Target(f"gateway_venv_{i}", f"gateway in {env.kind} venv", other.url + GATEWAY_PATH,
                                  gateway_headers, other))
        if litellm_python:
            lite = litellm_proxy.start(litellm_python, log_dir, upstream.url, UPSTREAM_KEY)
            servers.append(lite)
            targets.append(Target("litellm", f"LiteLLM proxy {litellm_proxy.version(litellm_python)}",
                                  lite.url + GATEWAY_PATH,
                                  {"content-type": "application/json",
                                   "authorization": f"Bearer {litellm_proxy.MASTER_KEY}"}, lite,
                                  exact=False, scale=slow_scale))
        upstream.wait_ready(UPSTREAM_PATH, BODY.encode(), upstream_headers)
        for target in targets:
            if target.server is not None:
                target.server.wait_ready(target.url.split(str(target.server.port), 1)[1],
                                         BODY.encode(), target.headers, timeout=90)
        return upstream, targets
    except BaseException:
        for server in servers:
            server.stop()
        raise


def gateway_environ(upstream_url: str) -> dict[str, str]:
    """One azure-openai key route to the fast upstream; the client is a consumer with limits
    (never reached: every request is counted and admitted as in production)."""
    return {
        "CONSUMER__BENCH__KEYS": GATEWAY_KEY,
        "CONSUMER__BENCH__TOKENS_PER_MINUTE": str(10**12),
        "CONSUMER__BENCH__REQUESTS_PER_MINUTE": str(10**12),
        "ROUTE__BENCH__MODEL": "gpt-4o",
        "ROUTE__BENCH__BACKEND": "azure-openai",
        "ROUTE__BENCH__ENDPOINT": upstream_url,
        "ROUTE__BENCH__API_KEY": UPSTREAM_KEY,
    }


def upstream_count(upstream: Server) -> int:
    status, content = post(upstream.url + "/_bench/stats", b"", {})
    return json.loads(content)["requests"]


class Runner:
    def __init__(self, mode: Mode, upstream: Server, load: LoadProcess, expected: dict[str, int]):
        self.mode, self.upstream, self.load, self.expected = mode, upstream, load, expected

    def phase(self, target: Target, kind: str, count: int, concurrency: int, warmup: int) -> dict:
        stream = kind == "stream"
        spec = {"url": target.url, "headers": target.headers, "body": STREAM_BODY if stream else BODY,
                "stream": stream, "concurrency": concurrency, "count": count, "warmup": warmup,
                "time_limit": self.mode.phase_time_limit,
                "expect_len": self.expected["stream" if stream else "json"] if target.exact else None}
        before_count = upstream_count(self.upstream)
        self.load.send(json.dumps(spec))
        ready = self.load.receive(timeout=self.mode.phase_time_limit + 60)
        pids = {"upstream": self.upstream.pid, "load": self.load.pid}
        if target.server is not None:
            pids["target"] = target.server.pid
        busy0 = machine_busy_seconds()
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        rss0 = rss_mib(target.server.pid) if target.server else None
        self.load.send("go")
        result = self.load.receive(timeout=self.mode.phase_time_limit + 60)
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        busy = machine_busy_seconds() - busy0
        result["cpu_s"] = {k: cpu1[k] - cpu0[k] for k in pids}
        # CPU used meanwhile by processes other than the benchmark's (others' tests, builds...).
        foreign = max(busy - sum(result["cpu_s"].values()), 0.0)
        result["background_cpu_s"] = foreign
        result["background_cpu_share"] = foreign / max(result["wall_s"] * (os.cpu_count() or 1), 1e-9)
        if target.server is None:
            result["cpu_s"]["target"] = result["cpu_s"]["upstream"]  # direct: the upstream is the server
        if target.server is not None:
            result["rss_before_mib"], result["rss_after_mib"] = rss0, rss_mib(target.server.pid)
        result["warmup_errors"] = ready.get("warmup_errors", 0)
        result["warmup_error_samples"] = ready.get("warmup_error_samples", [])
        result["upstream_requests"] = upstream_count(self.upstream) - before_count
        result["expected_upstream_requests"] = warmup + result["requests"]
        return result


def gateway_env(kind: str, log=print) -> runtime_env.GatewayEnv:
    """`runtime`: the cached requirements.txt-only venv (built when missing or stale);
    `dev`: the harness's own venv (the dev venv); anything else: the path of a Python."""
    if kind == "runtime":
        return runtime_env.ensure(log)
    if kind == "dev":
        return runtime_env.current("dev")
    return runtime_env.other(kind)


def run(mode_name: str, out: Path, litellm_python: str | None = None, stream_gap_ms: float = 2.0,
        gateway_src: Path | None = None, compare_srcs: tuple[Path, ...] = (), log=print,
        gateway_venv: str = "runtime", compare_venvs: tuple[str, ...] = ()) -> dict:
    mode = MODES[mode_name]
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    gw_env = gateway_env(gateway_venv, log)
    harness_env = runtime_env.current("harness")
    compare_envs = tuple(gateway_env(kind, log) for kind in compare_venvs)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    log(f"bench: mode {mode_name}, logs in {log_dir}"
        + (f", with LiteLLM ({litellm_python})" if litellm_python else ", without LiteLLM"))
    log(f"bench: gateway in {gw_env.description} ({gw_env.python})")
    upstream, targets = start_servers(log_dir, litellm_python, stream_gap_ms, gateway_src, compare_srcs,
                                      mode.slow_scale, gateway_python=gw_env.python, compare_envs=compare_envs)
    load = LoadProcess(log_dir)
    try:
        _, json_answer = post(upstream.url + UPSTREAM_PATH, BODY.encode(), targets[0].headers)
        _, stream_answer = post(upstream.url + UPSTREAM_PATH, STREAM_BODY.encode(), targets[0].headers)
        runner = Runner(mode, upstream, load, {"json": len(json_answer), "stream": len(stream_answer)})

        rss = {}
        for target in targets:  # RSS right after start (+ warm-up), then after mode.rss requests
            if target.server is None:
                continue
            log(f"bench: RSS of {target.name} over {mode.rss} requests")
            result = runner.phase(target, "rss", max(int(mode.rss * target.scale), 10), mode.concurrency,
                                  mode.warmup["rss"])
            rss[target.name] = {"after_start_mib": result["rss_before_mib"],
                                "after_requests_mib": result["rss_after_mib"],
                                "delta_mib": result["rss_after_mib"] - result["rss_before_mib"],
                                "requests": result["requests"], "ok": result["ok"],
                                "errors": result["errors"], "error_samples": result["error_samples"],
                                "throughput_rps": result["throughput_rps"]}

        rounds = []
        phases = (("c1", mode.c1, 1), ("stream", mode.stream, 1), ("c32", mode.c32, mode.concurrency))
        for r in range(mode.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            log(f"bench: round {r + 1}/{mode.rounds}: {', '.join(t.name for t in order)}")
            results: dict[str, dict] = {t.name: {} for t in targets}
            for kind, count, concurrency in phases:
                for target in order:
                    results[target.name][kind] = runner.phase(
                        target, kind, max(int(count * target.scale), 10), concurrency, mode.warmup[kind])
            rounds.append({"order": [t.name for t in order], "results": results})

        redis_ops = None
        shared = next((t for t in targets if t.name == "gateway_redis"), None)
        if shared is not None:
            log("bench: Redis commands per request")
            redis_ops = redis_state.ops_per_request(runner, shared, shared.helpers[0],
                                                    max(int(mode.c1 * 2), 200))

        log("bench: cold import of function_app")
        cold = imports.measure(mode.import_repeats, gateway_src, python=gw_env.python)
        for target in targets:
            if target.server is not None:
                rss.setdefault(target.name, {})["at_end_mib"] = rss_mib(target.server.pid)
    finally:
        load.stop()
        for target in targets:
            if target.server is not None:
                target.server.stop()
            for helper in target.helpers:
                helper.stop()
        upstream.stop()

    data = report.build(mode_name, mode, machine(), [(t.name, t.label) for t in targets], rounds, rss, cold,
                        stream_gap_ms, time.monotonic() - started,
                        environments={"gateway": gw_env.to_json(), "harness": harness_env.to_json(),
                                      **{f"gateway_venv_{i}": e.to_json() for i, e in enumerate(compare_envs, start=2)}})
    data["redis_ops"] = redis_ops
    data["config"]["gateway_src"] = str(gateway_src) if gateway_src else None
    data["config"]["compare_srcs"] = [str(p) for p in compare_srcs]
    data["config"]["gateway_venv"] = gateway_venv
    data["config"]["compare_venvs"] = list(compare_venvs)
    data["config"]["gateway_python"] = gw_env.python
    (out / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "latest.md").write_text(report.markdown(data))
    if mode_name == "default" and data["valid"] and out.resolve() == DEFAULT_OUT and not gateway_src \
            and not compare_srcs and gateway_venv == "runtime" and not compare_venvs:
        for readme in (REPO / "README.md", REPO / "bench" / "README.md"):
            if report.update_readme(readme, report.markdown(data)):
                log(f"bench: updated the latest table in {readme.relative_to(REPO)}")
    shutil.rmtree(log_dir, ignore_errors=True)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 60 s)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the smoke test's mode
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where latest.json and latest.md go; a default run written here also "
                             "refreshes the table between the bench:latest markers of README.md "
                             "and bench/README.md")
    parser.add_argument("--litellm", choices=("auto", "no"), default="auto",
                        help="also measure LiteLLM's proxy when litellm is importable or "
                             "BENCH_LITELLM_PYTHON / --litellm-python names a Python that has it")
    parser.add_argument("--litellm-python", help="a Python with litellm[proxy] installed")
    parser.add_argument("--gateway-src", type=Path,
                        help="run the gateway (and bare_httpx) from this folder's routing/ instead, "
                             "e.g. a patched copy, to compare before/after in the same conditions")
    parser.add_argument("--compare-src", type=Path, action="append", default=[],
                        help="also serve the routing/ of this folder as one more gateway target "
                             "(repeatable): before/after figures in one interleaved run")
    parser.add_argument("--stream-gap-ms", type=float, default=2.0,
                        help="upstream delay between a stream's first event and the rest")
    parser.add_argument("--gateway-venv", choices=("runtime", "dev"), default="runtime",
                        help="runtime (default): serve the gateway from a venv holding requirements.txt "
                             "only, as deployed (built once, cached in bench/.venv-runtime); dev: from "
                             "the harness's own venv, whose extra packages make it faster than Azure")
    parser.add_argument("--compare-venv", action="append", default=[], metavar="runtime|dev|PYTHON",
                        help="also serve the gateway from this venv (runtime, dev, or the path of a "
                             "venv's python), as one more target of the same interleaved run (e.g. "
                             "`--compare-venv dev`: what the dev venv's extra packages change)")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "default"
    litellm_python = None if args.litellm == "no" else litellm_proxy.find_python(args.litellm_python)
    if args.litellm_python and not litellm_python:
        parser.error(f"--litellm-python {args.litellm_python}: no such file")
    gateway_src = args.gateway_src.resolve() if args.gateway_src else None
    compare = tuple(p.resolve() for p in args.compare_src)
    for folder in ((gateway_src,) if gateway_src else ()) + compare:
        if not (folder / "routing").is_dir():
            parser.error(f"{folder}: no routing/ folder there")
    for python in args.compare_venv:
        if python not in ("runtime", "dev") and not Path(python).is_file():
            parser.error(f"--compare-venv {python}: not runtime, dev, or the path of a Python")
    data = run(mode, args.out, litellm_python, args.stream_gap_ms, gateway_src, compare,
               gateway_venv=args.gateway_venv, compare_venvs=tuple(args.compare_venv))
    print(report.markdown(data))
    print(f"bench: wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
    return 0 if data["valid"] else 2


if __name__ == "__main__":
    sys.exit(main())
