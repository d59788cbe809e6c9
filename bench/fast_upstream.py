"""A dedicated fast fake upstream for the benchmarks: raw asyncio protocol + httptools.

Answers every POST with a fixed Azure-OpenAI-shaped chat completion, or, when the body asks for
`"stream": true`, a fixed Azure SSE stream: the first event at once, the rest after
`--stream-gap-ms` (so a forwarder that buffers the stream shows it in its time to first byte).
No validation, no logic: it must cost far less per request than anything it is used to measure
(its own CPU per request is measured and reported by the harness).

`GET /_bench/stats` returns `{"requests": n}` (requests answered so far, stats excluded).

    python -m bench.fast_upstream --port 8000 [--stream-gap-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket

import httptools

COMPLETION = {
    "id": "chatcmpl-bench0000000000000000000000001",
    "object": "chat.completion",
    "created": 1730000000,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_bench0001",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
        "hate": {"filtered": False, "severity": "safe"}, "self_harm": {"filtered": False, "severity": "safe"},
        "sexual": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}}],
    "choices": [{
        "index": 0, "finish_reason": "stop", "logprobs": None,
        "message": {"role": "assistant", "refusal": None,
                    "content": "Hello there! This is a fixed benchmark answer of a few words."},
        "content_filter_results": {
            "hate": {"filtered": False, "severity": "safe"}, "self_harm": {"filtered": False, "severity": "safe"},
            "sexual": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}},
    }],
    "usage": {"prompt_tokens": 24, "completion_tokens": 14, "total_tokens": 38},
}
WORDS = ["Hello", " there", "!", " This", " is", " a", " fixed", " benchmark", " stream", "."]


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chunk(delta, finish=None) -> dict:
    return {"id": COMPLETION["id"], "object": "chat.completion.chunk", "created": COMPLETION["created"],
            "model": COMPLETION["model"], "system_fingerprint": COMPLETION["system_fingerprint"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None,
                         "content_filter_results": {}}]}


# Azure sends the prompt filter results first (an event with no choices), then the deltas.
FIRST_EVENTS = _sse({"id": "", "object": "", "created": 0, "model": "", "choices": [],
                     "prompt_filter_results": COMPLETION["prompt_filter_results"]})
REST_EVENTS = (_sse(_chunk({"role": "assistant", "content": ""}))
               + b"".join(_sse(_chunk({"content": w})) for w in WORDS)
               + _sse(_chunk({}, "stop")) + b"data: [DONE]\n\n")
STREAM_BODY = FIRST_EVENTS + REST_EVENTS

_COMMON = (b"apim-request-id: 00000000-0000-0000-0000-000000000000\r\n"
           b"x-ms-region: Bench Local\r\n"
           b"x-ratelimit-remaining-requests: 119\r\nx-ratelimit-remaining-tokens: 119000\r\n")
JSON_BODY = json.dumps(COMPLETION, separators=(",", ":")).encode()
JSON_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + _COMMON
                 + b"content-length: %d\r\n\r\n" % len(JSON_BODY) + JSON_BODY)
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
               b"cache-control: no-cache\r\n" + _COMMON + b"transfer-encoding: chunked\r\n\r\n")


def _framed(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_FIRST = STREAM_HEAD + _framed(FIRST_EVENTS)
STREAM_REST = _framed(REST_EVENTS) + b"0\r\n\r\n"


class Stats:
    requests = 0


class UpstreamProtocol(asyncio.Protocol):
    gap = 0.002

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.url = b""

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        if self.url.startswith(b"/_bench/stats"):
            body = json.dumps({"requests": Stats.requests}).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
        else:
            Stats.requests += 1
            body = b"".join(self.body)
            if b'"stream":true' in body or b'"stream": true' in body:
                self.transport.write(STREAM_FIRST)
                if self.gap > 0:
                    asyncio.get_running_loop().call_later(self.gap, self._finish_stream, keep_alive)
                    return
                self.transport.write(STREAM_REST)
            else:
                self.transport.write(JSON_RESPONSE)
        if not keep_alive:
            self.transport.close()

    def _finish_stream(self, keep_alive: bool) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(STREAM_REST)
        if not keep_alive:
            self.transport.close()


async def serve(host: str, port: int, gap_ms: float) -> None:
    UpstreamProtocol.gap = gap_ms / 1000.0
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = await loop.create_server(UpstreamProtocol, sock=sock, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"FAST UPSTREAM READY http://{host}:{sock.getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fast_upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stream-gap-ms", type=float, default=2.0,
                        help="delay between a stream's first event and the rest (0: all at once)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.stream_gap_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
