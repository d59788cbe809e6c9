"""Processes of a benchmark run: start, wait until they answer, measure (CPU, RSS), stop.

CPU time is read from /proc: the sum over the process's threads of `schedstat`'s on-CPU
nanoseconds (exact), falling back to `stat`'s utime+stime (10 ms ticks) where schedstat is missing.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")
# The gateway's own settings are never inherited from the calling shell: each server gets its own.
SETTING_PREFIXES = ("ROUTE__", "GATEWAY_", "IDENTITY_", "MSI_", "AZURE_CLIENT_ID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    """The process and its descendants (a server that runs its workers as child processes)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    pids, todo = [], [pid]
    while todo and len(pids) < 256:
        current = todo.pop()
        pids.append(current)
        todo.extend(parents.get(current, []))
    return pids


def cpu_seconds(pid: int) -> float:
    """CPU time (user+system) used so far by the process and its descendants, all threads."""
    return sum(_cpu_seconds(p) for p in tree(pid))


def _cpu_seconds(pid: int) -> float:
    total, found = 0, False
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
                    found = True
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that just ended
    except FileNotFoundError:
        pass
    if found:
        return total / 1e9
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, all processes), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / _TICK


def rss_mib(pid: int) -> float:
    """Resident memory of the process and its descendants."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except FileNotFoundError:
            continue
    return total / 1024


def machine() -> dict:
    import platform
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = None
    try:
        with open("/proc/meminfo") as f:
            memory = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": memory,
            "python": platform.python_version(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    """One blocking request (readiness checks, reference answers)."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("POST" if body else "GET", path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """One server process of the run; its output goes to a log file."""

    def __init__(self, name: str, argv: list[str], port: int, log_dir: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 pythonpath: str | None = None):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
        full_env = {**inherited, **(env or {}), "PYTHONPATH": pythonpath or str(REPO),
                    "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(argv, env=full_env, cwd=cwd or REPO, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, path: str, body: bytes, headers: dict[str, str], timeout: float = 30.0) -> bytes:
        """Until the server answers the benchmark request with 200; returns that answer."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.log()}")
            try:
                status, content = post(self.url + path, body, headers, timeout=5)
                if status == 200:
                    return content
                last = f"HTTP {status}: {content[:300]!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s ({last}):\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class LoadProcess:
    """`bench/load.py` in its own process, driven one JSON line at a time."""

    def __init__(self, log_dir: Path):
        self._stderr = open(log_dir / "load.log", "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "bench.load"], cwd=REPO,
                                        env={**os.environ, "PYTHONPATH": str(REPO)},
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._stderr)
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: str) -> None:
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"load generator silent for {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    raise RuntimeError(f"load generator exited {self.process.poll()}")
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send(json.dumps({"quit": True}))
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(5)
        self._stderr.close()
