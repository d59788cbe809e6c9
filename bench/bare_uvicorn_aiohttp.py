"""Diagnostic forwarder: the gateway's server side (uvicorn, as `routing serve` runs it, with a
raw ASGI app) and the bare aiohttp forwarder's client side (one aiohttp ClientSession). Set
beside `bare_httpx` (same server, httpx client) and `bare_aiohttp` (same client, aiohttp server),
it splits the gateway's distance to the bare aiohttp forwarder into its server and client parts.

    python -m bench.bare_uvicorn_aiohttp --port 8003 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse

import aiohttp
import uvicorn


def create_app(upstream: str):
    session: aiohttp.ClientSession | None = None

    async def lifespan(receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if session is not None:
                    await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope, receive, send) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":
            return
        if session is None:  # inside the serving loop
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30), auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60))
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        target = upstream + scope["raw_path"].decode()
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode()
        async with session.post(target, data=body, headers={"content-type": "application/json"}) as answer:
            if answer.content_type == "text/event-stream":
                await send({"type": "http.response.start", "status": answer.status,
                            "headers": [(b"content-type", b"text/event-stream")]})
                async for chunk in answer.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                content = await answer.read()
                content_type = answer.headers.get("content-type", "application/json")
                await send({"type": "http.response.start", "status": answer.status,
                            "headers": [(b"content-type", content_type.encode()),
                                        (b"content-length", str(len(content)).encode())]})
                await send({"type": "http.response.body", "body": content})

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_uvicorn_aiohttp",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.upstream.rstrip("/")), host=args.host, port=args.port,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
