"""Bare forwarder with the HTTP client setup the gateway had first (DESIGN §7, issue 2): uvicorn
(as `routing serve` runs it) + a raw ASGI app + one `httpx.AsyncClient` over httpx-aiohttp's
AiohttpTransport. Kept to show what the httpx client layer costs. No logic: read the body, POST
it to the same path upstream, return the body, or relay the stream when the upstream answers `text/event-stream`.

    python -m bench.bare_httpx --port 8002 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse

import uvicorn



def create_http_client():
    import httpx
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)
    return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), limits=limits)


def create_app(upstream: str):
    client = None

    async def lifespan(receive, send) -> None:
        nonlocal client
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if client is not None:
                    await client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope, receive, send) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":
            return
        if client is None:  # inside the serving loop: aiohttp sessions belong to their loop
            client = create_http_client()
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        target = upstream + scope["raw_path"].decode()
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode()
        request = client.build_request("POST", target, content=body,
                                       headers={"content-type": "application/json"})
        answer = await client.send(request, stream=True)
        try:
            content_type = answer.headers.get("content-type", "application/json")
            if content_type.startswith("text/event-stream"):
                await send({"type": "http.response.start", "status": answer.status_code,
                            "headers": [(b"content-type", b"text/event-stream")]})
                async for chunk in answer.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                content = await answer.aread()
                await send({"type": "http.response.start", "status": answer.status_code,
                            "headers": [(b"content-type", content_type.encode()),
                                        (b"content-length", str(len(content)).encode())]})
                await send({"type": "http.response.body", "body": content})
        finally:
            await answer.aclose()

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_httpx", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream")
    args = parser.parse_args(argv)
    # The same uvicorn settings as `python -m routing serve` (routing/__main__.py).
    uvicorn.run(create_app(args.upstream.rstrip("/")), host=args.host, port=args.port,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
