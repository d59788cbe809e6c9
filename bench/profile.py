"""Profile a forwarder under load with py-spy: where its CPU goes, by function and by module.

    python -m bench.profile [--target gateway|gateway_metrics|bare_httpx|bare_aiohttp] [--kind c32|c1|stream]
                            [--seconds 15] [--out bench/results]

Starts the fast upstream and the target, drives it with the load generator while `py-spy record`
samples the target (raw collapsed stacks in `<out>/profile-<target>-<kind>.txt`), then prints
the top functions by self and by inclusive time, and the inclusive share of each `routing/`
function. Needs `py-spy` (pip install py-spy) and ptrace rights (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import run as bench_run
from bench.procs import REPO, LoadProcess

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "/lib/python3" and "/" in rest else rest
    return path


def parse(raw: str) -> list[tuple[list[tuple[str, str, str]], int]]:
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            if m:
                frames.append((m["func"], _short(m["file"]), m["line"] or ""))
            else:
                frames.append((frame, "", ""))
        stacks.append((frames, int(count)))
    return stacks


def summarize(stacks, top: int = 25) -> dict:
    """Shares of the main thread's samples (py-spy counts some sleeping helper threads, such as
    pycares' shutdown thread, as active: their share is reported apart, as `other_threads`)."""
    all_samples = sum(c for _, c in stacks) or 1
    stacks = [(f, c) for f, c in stacks if f and f[0][0] != "Thread._bootstrap"]
    total = sum(c for _, c in stacks) or 1
    self_time: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    routing_lines: collections.Counter = collections.Counter()
    modules: collections.Counter = collections.Counter()
    for frames, count in stacks:
        if not frames:
            continue
        func, file, line = frames[-1]
        self_time[f"{func} ({file})"] += count
        modules[_module(file)] += count
        seen = set()
        for func, file, line in frames:
            key = f"{func} ({file})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
        for func, file, line in reversed(frames):  # the innermost routing/ line on the stack
            if file.startswith("routing/"):
                routing_lines[f"{func} ({file}:{line})"] += count
                break

    def pct(counter, n=top):
        return [(name, round(100.0 * c / total, 1)) for name, c in counter.most_common(n)]

    routing_inclusive = collections.Counter({k: v for k, v in inclusive.items() if "(routing/" in k})
    return {"samples": total, "other_threads": round(100.0 * (all_samples - total) / all_samples, 1),
            "self": pct(self_time), "inclusive": pct(inclusive),
            "routing_inclusive": pct(routing_inclusive, 40), "routing_innermost_line": pct(routing_lines, 25),
            "self_by_module": pct(modules, 20)}


def _module(file: str) -> str:
    if file.startswith("routing/"):
        return file
    parts = file.split("/")
    return parts[0] if parts and parts[0] else file or "?"


def profile(target: str, kind: str, seconds: float, out: Path, rate: int, nonblocking: bool = False,
            gateway_src: Path | None = None, gateway_venv: str = "runtime") -> dict:
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    gateway_python = bench_run.gateway_env(gateway_venv).python
    upstream, targets = bench_run.start_servers(log_dir, None, 2.0, gateway_src, gateway_python=gateway_python)
    load = LoadProcess(log_dir)
    raw_path = out / f"profile-{target}-{kind}.txt"
    out.mkdir(parents=True, exist_ok=True)
    try:
        chosen = next(t for t in targets if t.name == target)
        _, json_answer = bench_run.post(upstream.url + bench_run.UPSTREAM_PATH, bench_run.BODY.encode(),
                                        targets[0].headers)
        _, stream_answer = bench_run.post(upstream.url + bench_run.UPSTREAM_PATH,
                                          bench_run.STREAM_BODY.encode(), targets[0].headers)
        mode = bench_run.Mode(rounds=1, c1=0, c32=0, stream=0, rss=0, import_repeats=0,
                              phase_time_limit=seconds)
        runner = bench_run.Runner(mode, upstream, load, {"json": len(json_answer), "stream": len(stream_answer)})
        spy = subprocess.Popen([py_spy, "record", "--pid", str(chosen.server.pid), "--rate", str(rate),
                                "--format", "raw", "--output", str(raw_path), "--duration", str(int(seconds) + 1),
                                *(["--nonblocking"] if nonblocking else [])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        concurrency = 32 if kind == "c32" else 1
        result = runner.phase(chosen, "stream" if kind == "stream" else kind, 10**6, concurrency, 50)
        try:
            _, err = spy.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if not raw_path.exists():
            raise SystemExit(f"py-spy wrote no profile: {err.decode(errors='replace')[-2000:]}")
    finally:
        load.stop()
        for t in targets:
            if t.server is not None:
                t.server.stop()
        upstream.stop()
        shutil.rmtree(log_dir, ignore_errors=True)
    summary = summarize(parse(raw_path.read_text()))
    summary.update({"target": target, "kind": kind, "requests": result["ok"], "errors": result["errors"],
                    "throughput_rps": result["throughput_rps"],
                    "cpu_ms_per_request": result["cpu_s"]["target"] / max(result["ok"], 1) * 1e3,
                    "raw": str(raw_path)})
    return summary


def print_summary(s: dict) -> None:
    print(f"{s['target']} under {s['kind']}: {s['requests']} requests, {s['errors']} errors, "
          f"{s['throughput_rps']:.0f} req/s, {s['cpu_ms_per_request']:.3f} ms CPU/request, "
          f"{s['samples']} main-thread samples, other threads {s['other_threads']}% ({s['raw']})")
    for title, key in (("self time by function", "self"), ("inclusive time by function", "inclusive"),
                       ("self time by module", "self_by_module"),
                       ("inclusive time of routing/ functions", "routing_inclusive"),
                       ("innermost routing/ line on the stack", "routing_innermost_line")):
        print(f"\n{title} (% of samples):")
        for name, share in s[key]:
            print(f"  {share:5.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="gateway", choices=("gateway", "gateway_metrics", "bare_httpx", "bare_uvicorn_aiohttp", "bare_aiohttp"))
    parser.add_argument("--kind", default="c32", choices=("c32", "c1", "stream"))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--nonblocking", action="store_true",
                        help="do not pause the target while sampling (less overhead, partial stacks)")
    parser.add_argument("--gateway-src", type=Path, help="a folder holding another routing/ to profile")
    parser.add_argument("--gateway-venv", choices=("runtime", "dev"), default="runtime",
                        help="the gateway's venv: runtime (requirements.txt only, as deployed) or dev")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    summary = profile(args.target, args.kind, args.seconds, args.out, args.rate, args.nonblocking,
                      args.gateway_src.resolve() if args.gateway_src else None, args.gateway_venv)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
