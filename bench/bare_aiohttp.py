"""Bare forwarder, aiohttp server + one aiohttp ClientSession: the practical limit of a Python
forwarder. No logic: read the body, POST it to the same path upstream, return the body, or relay
the stream chunk by chunk when the upstream answers `text/event-stream`.

    python -m bench.bare_aiohttp --port 8001 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web


def create_app(upstream: str) -> web.Application:
    app = web.Application()

    async def start(app: web.Application) -> None:
        # Same pool size as the gateway's client (routing.gateway.create_session).
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60))

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(upstream + request.path_qs, data=body,
                                headers={"content-type": "application/json"}) as answer:
            if answer.content_type == "text/event-stream":
                response = web.StreamResponse(status=answer.status,
                                              headers={"content-type": "text/event-stream"})
                await response.prepare(request)
                async for chunk in answer.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            return web.Response(body=await answer.read(), status=answer.status,
                                headers={"content-type": answer.headers.get("content-type", "application/json")})

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_aiohttp", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream")
    args = parser.parse_args(argv)
    web.run_app(create_app(args.upstream.rstrip("/")), host=args.host, port=args.port,
                access_log=None, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
