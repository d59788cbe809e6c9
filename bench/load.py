"""Load generator, in its own process: an aiohttp client with keep-alive, N concurrent workers,
a fixed request count and a time bound.

Driven by the harness over stdin/stdout, one JSON line per step, so that the harness can read
the servers' CPU time exactly around the measured part of each phase:

    harness → {"url", "headers", "body", "stream", "concurrency", "count", "warmup",
               "time_limit", "expect_len"}            (a phase; {"quit": true} ends the process)
    load    → {"ready": true, "warmup_errors": n}     (warm-up done, connections open)
    harness → go
    load    → {"requests": n, "errors": n, ...}       (the measured part's result)

Every answer is checked: status 200 and exactly `expect_len` bytes (for streams also ending in
`data: [DONE]`); anything else counts as an error. Latency is request start → full body; for
streams `ttfb` is request start → first body chunk.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time

import aiohttp

DONE = b"data: [DONE]\n\n"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {}
    return {"p50": percentile(values, 0.50) * 1e3, "p90": percentile(values, 0.90) * 1e3,
            "p99": percentile(values, 0.99) * 1e3, "mean": sum(values) / len(values) * 1e3,
            "min": values[0] * 1e3, "max": values[-1] * 1e3}


class Phase:
    def __init__(self, spec: dict):
        self.url = spec["url"]
        self.headers = spec["headers"]
        self.body = spec["body"].encode()
        self.stream = bool(spec["stream"])
        self.concurrency = int(spec["concurrency"])
        self.count = int(spec["count"])
        self.warmup = int(spec["warmup"])
        self.time_limit = float(spec["time_limit"])
        self.expect_len = spec.get("expect_len")

    async def one(self, session: aiohttp.ClientSession) -> tuple[float, float | None, str | None]:
        start = time.perf_counter()
        first = None
        async with session.post(self.url, data=self.body, headers=self.headers) as response:
            if self.stream:
                data = await response.content.readany()
                first = time.perf_counter() - start
                data += await response.content.read()
            else:
                data = await response.read()
            elapsed = time.perf_counter() - start
            status = response.status
        error = None
        if status != 200:
            error = f"HTTP {status}: {data[:200]!r}"
        elif self.expect_len is not None and len(data) != self.expect_len:
            error = f"{len(data)} bytes, expected {self.expect_len}: {data[-120:]!r}"
        elif self.stream and not data.endswith(DONE):
            error = f"stream without [DONE]: {data[-120:]!r}"
        return elapsed, first, error

    async def run(self, session: aiohttp.ClientSession, count: int, time_limit: float) -> dict:
        latencies: list[float] = []
        ttfbs: list[float] = []
        errors: list[str] = []
        started = 0
        deadline = time.perf_counter() + time_limit

        async def worker() -> None:
            nonlocal started
            while started < count and time.perf_counter() < deadline:
                started += 1
                try:
                    elapsed, first, error = await self.one(session)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if error:
                    errors.append(error)
                    continue
                latencies.append(elapsed)
                if first is not None:
                    ttfbs.append(first)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, max(count, 1)))))
        wall = time.perf_counter() - t0
        result = {"requests": started, "ok": len(latencies), "errors": len(errors),
                  "error_samples": errors[:3], "wall_s": wall,
                  "timed_out": started < count,
                  "throughput_rps": len(latencies) / wall if wall > 0 else 0.0,
                  "latency_ms": summary_ms(latencies)}
        if self.stream:
            result["ttfb_ms"] = summary_ms(ttfbs)
        return result


async def phase(spec: dict, read_line) -> dict:
    p = Phase(spec)
    connector = aiohttp.TCPConnector(limit=p.concurrency, limit_per_host=p.concurrency,
                                     keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        warm = await p.run(session, p.warmup, max(p.time_limit, 5.0)) if p.warmup else {"errors": 0}
        emit({"ready": True, "warmup_errors": warm["errors"],
              "warmup_error_samples": warm.get("error_samples", [])})
        if (await read_line()).strip() != "go":
            return {"aborted": True}
        return await p.run(session, p.count, p.time_limit)


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main_async() -> None:
    loop = asyncio.get_running_loop()

    async def read_line() -> str:
        return await loop.run_in_executor(None, sys.stdin.readline)

    while True:
        line = await read_line()
        if not line:
            return
        spec = json.loads(line)
        if spec.get("quit"):
            return
        emit(await phase(spec, read_line))


def main() -> int:
    asyncio.run(main_async())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
