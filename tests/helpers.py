"""Shared test plumbing: real processes and sockets on loopback, nothing of ours mocked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
GATEWAY_KEY = "test-gateway-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environ() -> dict[str, str]:
    """This process's environment without any gateway, route or identity settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("ROUTE__", "CONSUMER__", "GATEWAY_", "IDENTITY_", "MSI_", "AZURE_CLIENT_ID"))}


class GatewayProcess:
    """`python -m routing serve` in a subprocess, in an empty folder (no local.settings.json)."""

    def __init__(self, settings: dict[str, str], cwd: Path, args: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**clean_environ(), **settings, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.log_path = cwd / f"gateway-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "routing", "serve", "--port", str(self.port), *args],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("gateway did not start:\n" + self.log())

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class Upstream:
    """Control plane of one emulator: its request records and fault rules."""

    def __init__(self, url: str, key: str | None = None):
        self.url = url.split("/msi/")[0]
        self.key = key

    def requests(self) -> list[dict]:
        return httpx.get(self.url + "/_emulator/requests", timeout=5).json()

    def clear(self) -> None:
        """Records, faults, config (recording on, no chunk delay) and counters back to new."""
        httpx.post(self.url + "/_emulator/reset", timeout=5).raise_for_status()

    def fault(self, **rule) -> None:
        httpx.post(self.url + "/_emulator/faults", json=rule, timeout=5).raise_for_status()

    def configure(self, **config) -> None:
        httpx.post(self.url + "/_emulator/config", json=config, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(self.url + "/_emulator/stats", timeout=5).json()


def sse_events(raw: bytes) -> list[str]:
    """Strict SSE framing check: only `data: ...` events separated by one blank line."""
    text = raw.decode()
    assert text.endswith("\n\n"), f"stream does not end with a blank line: {text[-80:]!r}"
    events = text[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, f"bad SSE event {event!r}"
    return [e[6:] for e in events]


def data_events(raw: bytes) -> list[dict]:
    return [json.loads(e) for e in sse_events(raw) if e != "[DONE]"]


def access_lines(log: str) -> list[str]:
    """The access-log records in a local gateway's output: the bare JSON lines on its stdout."""
    return [line for line in log.splitlines() if line.startswith('{"request_id":')]
