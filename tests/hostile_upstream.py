"""A scripted hostile upstream for tests: a raw asyncio HTTP/1.1 server on loopback.

Each deployment name (`/openai/deployments/<name>/...`) runs one script that writes the answer
byte for byte: any size, any piece size, any framing, lying or missing content-length, echoes
of the request's headers. A framework would tidy exactly what these tests need to be untidy.
One request per connection (`connection: close`); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

MAX_REQUEST_HEAD = 64 * 1024
MAX_REQUEST_BODY = 16 * 1024 * 1024
REQUEST_READ_TIMEOUT = 10.0


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def deployment(self) -> str:
        parts = self.path.split("?")[0].split("/")
        return parts[3] if len(parts) > 3 and parts[1:3] == ["openai", "deployments"] else ""

    @property
    def json(self) -> dict:
        return json.loads(self.body or b"{}")

    @property
    def key(self) -> str:
        """The credential the gateway sent (what an echoing upstream reflects)."""
        return self.headers.get("api-key") or self.headers.get("authorization", "").removeprefix("Bearer ")


Script = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class HostileUpstream:
    scripts: dict[str, Script]
    calls: list[Request] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-upstream", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def called(self, deployment: str) -> int:
        return sum(1 for call in list(self.calls) if call.deployment == deployment)

    def start(self) -> "HostileUpstream":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("hostile upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, sock=self._sock))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_READ_TIMEOUT):
                request = await read_request(reader)
            self.calls.append(request)
            script = self.scripts.get(request.deployment)
            if script is None:
                await respond(writer, 404, {"content-type": "application/json"},
                              b'{"error":{"code":"DeploymentNotFound","message":"no such script"}}')
            else:
                await script(request, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the gateway hung up (as it should, on oversized answers) or sent garbage
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> Request:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_REQUEST_HEAD:
        raise ConnectionError("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = min(int(headers.get("content-length", "0")), MAX_REQUEST_BODY)
    body = await reader.readexactly(length) if length else b""
    return Request(method, path, headers, body)


def head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} Scripted", "connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def respond(writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: bytes) -> None:
    writer.write(head(status, {**headers, "content-length": str(len(body))}) + body)
    await writer.drain()


async def respond_json(writer: asyncio.StreamWriter, status: int, data, headers: dict[str, str] | None = None) -> None:
    await respond(writer, status, {"content-type": "application/json", **(headers or {})},
                  json.dumps(data).encode())


async def respond_generated(writer: asyncio.StreamWriter, total: int, *, chunked: bool,
                            length: int | None = None, piece: int = 256 * 1024) -> None:
    """A JSON-looking body of `total` bytes made on the fly (never held whole here): chunked,
    with a content-length (`length`, which may lie), or close-delimited."""
    headers = {"content-type": "application/json"}
    if chunked:
        headers["transfer-encoding"] = "chunked"
    elif length is not None:
        headers["content-length"] = str(length)
    writer.write(head(200, headers))
    block = b'{"filler": "' + b"x" * piece
    sent = 0
    while sent < total:
        part = block[:min(piece, total - sent)]
        writer.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
        await writer.drain()
        sent += len(part)
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()


def paced(data: bytes, piece: int, pause: float):
    """`data` in `piece`-byte writes, each followed by a short blocking pause so that the reader
    gets them one by one (asyncio timers are too coarse for sub-millisecond pacing)."""
    async def script(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"content-type": "text/event-stream"}))
        for start in range(0, len(data), piece):
            writer.write(data[start:start + piece])
            await writer.drain()
            time.sleep(pause)
    return script


def chat_answer(text: str = "hello") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def chat_chunk(text: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def sse_body(*payloads: str | dict) -> bytes:
    return b"".join(b"data: " + (p if isinstance(p, str) else json.dumps(p)).encode() + b"\n\n"
                    for p in payloads)


async def healthy(request: Request, writer: asyncio.StreamWriter) -> None:
    """A well-behaved deployment: JSON, or a short event stream when asked to stream."""
    if request.json.get("stream"):
        await respond(writer, 200, {"content-type": "text/event-stream"},
                      sse_body(chat_chunk("fine"), chat_chunk(" answer"), "[DONE]"))
    else:
        await respond_json(writer, 200, chat_answer("fine answer"))
