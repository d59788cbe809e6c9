"""Upstreams that do not behave like the emulators: framing variants, odd content types,
redirects, split error bodies, bad retry hints, slow identity endpoints. A scripted upstream
(a real HTTP server on loopback) answers each deployment name with a fixed behaviour."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import route
from tests.helpers import GATEWAY_KEY, GatewayProcess, data_events, sse_events

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
KEY = "scripted-upstream-key"
CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def chunk(text: str) -> str:
    return json.dumps({**CHUNK, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


def sse(raw: str, pieces: int = 3) -> StreamingResponse:
    data = raw.encode()
    size = max(1, len(data) // pieces)

    async def body():
        for i in range(0, len(data), size):  # split anywhere, even inside a line end
            yield data[i:i + size]
            await asyncio.sleep(0.01)
    return StreamingResponse(body(), media_type="text/event-stream")


SCRIPTS = {
    "crlf": lambda: sse(f"data: {chunk('a')}\r\n\r\ndata: {chunk('b')}\r\n\r\ndata: [DONE]\r\n\r\n", 7),
    "loose": lambda: sse(f": keep-alive\n\nevent: message\ndata:{chunk('a')}\n\nid: 2\ndata: {chunk('b')}\n\n"
                         "data:[DONE]\n\n\n"),
    "multiline": lambda: sse('data: {"id": "c1", "object": "chat.completion.chunk",\ndata:  "choices": '
                             '[{"index": 0, "delta": {"content": "ab"}}]}\n\ndata: [DONE]\n\n'),
    # A last `[DONE]` without its blank line still ends the stream well, even as the only event.
    "bare_done": lambda: sse(f"data: {chunk('a')}\n\ndata: [DONE]", 2),
    "only_done": lambda: sse("data: [DONE]", 1),
    "json_for_stream": lambda: JSONResponse({"id": "x", "object": "chat.completion", "choices": []}),
    "redirect": lambda: RedirectResponse("/redirected", status_code=307),
}


def create_upstream(seen: list[dict]) -> Starlette:
    async def chat(request):
        deployment = request.path_params["deployment"]
        seen.append({"deployment": deployment, "headers": dict(request.headers)})
        if request.headers.get("api-key") != KEY:
            return JSONResponse({"error": {"code": "401", "message": "denied"}}, status_code=401)
        if deployment == "split_error":
            body = json.dumps({"error": {"message": "This model's maximum context length is 8192 tokens. "
                                         + "x" * 3000, "type": "invalid_request_error",
                                         "param": "messages", "code": "context_length_exceeded"}}).encode()

            async def pieces():
                for i in range(0, len(body), 700):
                    yield body[i:i + 700]
                    await asyncio.sleep(0.01)
            return StreamingResponse(pieces(), status_code=400, media_type="application/json")
        if deployment == "nan_retry":
            return JSONResponse({"error": {"code": "429", "message": "slow down"}}, status_code=429,
                                headers={"retry-after": "nan", "retry-after-ms": "inf"})
        return SCRIPTS[deployment]()

    async def redirected(request):
        seen.append({"deployment": "redirected", "headers": dict(request.headers)})
        return Response("{}", media_type="application/json")

    async def slow_identity(request):
        await asyncio.sleep(30)
        return JSONResponse({})

    return Starlette(routes=[
        Route("/openai/deployments/{deployment}/chat/completions", chat, methods=["POST"]),
        Route("/redirected", redirected, methods=["POST", "GET"]),
        Route("/msi/token", slow_identity),
    ])


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    from emulator.servers import start

    seen: list[dict] = []
    upstream = start(create_upstream(seen))
    common = {"backend": "azure-openai", "endpoint": upstream.url, "api_key": KEY}
    settings = {"GATEWAY_API_KEYS": GATEWAY_KEY,
                "IDENTITY_ENDPOINT": upstream.url + "/msi/token", "IDENTITY_HEADER": "h",
                **route("MI", model="slow-identity", backend="azure-openai", endpoint=upstream.url,
                        timeout="1"),
                **{k: v for name in [*SCRIPTS, "split_error", "nan_retry"]
                   for k, v in route(name.upper(), model=name, deployment=name, **common).items()}}
    gateway = GatewayProcess(settings, tmp_path_factory.mktemp("scripted"))
    yield gateway, seen
    gateway.stop()
    upstream.stop()


def stream(gateway, model: str) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": "x"}], "stream": True})


@pytest.mark.parametrize("model, text", [("crlf", "ab"), ("loose", "ab"), ("multiline", "ab"),
                                         ("bare_done", "a"), ("only_done", "")])
def test_any_upstream_framing_reaches_the_client_as_strict_sse(scripted, model, text):
    gateway, _ = scripted
    response = stream(gateway, model)
    events = sse_events(response.content)  # strict: `data: ` events, LF, one blank line each
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert not any(e.startswith('{"error"') for e in events)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in data_events(response.content)) == text


def test_json_answer_to_a_stream_request_is_an_error_not_an_empty_stream(scripted):
    gateway, _ = scripted
    response = stream(gateway, "json_for_stream")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_protocol_error"


def test_redirects_are_not_followed(scripted):
    gateway, seen = scripted
    seen.clear()
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
        "model": "redirect", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 502 and "'REDIRECT'" in response.json()["error"]["message"]
    assert response.headers["x-should-retry"] == "false"
    assert [s["deployment"] for s in seen] == ["redirect"]  # the key went nowhere else


def test_error_body_arriving_in_pieces_is_mapped_whole(scripted):
    gateway, _ = scripted
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
        "model": "split_error", "messages": [{"role": "user", "content": "x"}]})
    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert error["message"].startswith("This model's maximum context length")


def test_unusable_retry_hint_falls_back_to_the_default_cooldown(scripted):
    gateway, _ = scripted
    for _ in range(2):
        response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
            "model": "nan_retry", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 429
        assert response.headers["retry-after"] in {str(s) for s in range(1, 11)}


def test_slow_identity_endpoint_is_bounded_by_the_route_timeout(scripted):
    gateway, _ = scripted
    start = time.monotonic()
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, timeout=60, json={
        "model": "slow-identity", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 504
    assert time.monotonic() - start < 5
