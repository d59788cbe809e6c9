"""Bounded load on loopback: many concurrent streams complete correctly; memory stays flat over
a short soak (the 10 000-request soak is in bench/)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.helpers import GATEWAY_KEY

pytestmark = pytest.mark.usefixtures("clean")
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def stream_text(client: httpx.AsyncClient, url: str, model: str, text: str) -> tuple[str, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": True,
            "stream_options": {"include_usage": True}}
    parts, usage, done = [], None, False
    async with client.stream("POST", url, headers=AUTH, json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            if line == "data: [DONE]":
                done = True
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices", []):
                parts.append(choice["delta"].get("content") or "")
    assert done
    return "".join(parts), usage


def test_200_concurrent_streams_complete_correctly(gateway, upstreams):
    for upstream in ("serverless", "aoai"):
        upstreams[upstream].configure(record=False, chunk_delay=0.01, answer_words=12)

    async def run():
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            url = gateway.url + "/v1/chat/completions"
            jobs = [stream_text(client, url, "llama3" if i % 2 else "gpt-4o-key", f"request number {i}")
                    for i in range(200)]
            return await asyncio.wait_for(asyncio.gather(*jobs), 120)

    results = asyncio.run(run())
    for i, (text, usage) in enumerate(results):
        assert text.startswith(f"Hello! You said: request number {i}"), (i, text)
        assert usage["completion_tokens"] == 12


def test_short_soak_memory_flat_and_no_errors(gateway, upstreams):
    upstreams["serverless"].configure(record=False)

    async def burst(n: int) -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            semaphore = asyncio.Semaphore(16)

            async def one(i: int) -> int:
                async with semaphore:
                    response = await client.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
                        "model": "llama3", "messages": [{"role": "user", "content": f"soak {i}"}],
                        "stream": i % 3 == 0, "user": "soak"})
                    return response.status_code
            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 180)

    assert set(asyncio.run(burst(500))) == {200}  # warm-up: pools, caches, allocator
    before = rss_mib(gateway.process.pid)
    assert set(asyncio.run(burst(2000))) == {200}
    after = rss_mib(gateway.process.pid)
    print(f"gateway RSS before {before:.1f} MiB, after 2000 more requests {after:.1f} MiB")
    assert after - before < 8, (before, after)
