"""`function_app.py` as the Functions host sees it: indexing metadata, and each registered user
function called with a Starlette request answers like the local server."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys

import pytest
from starlette.requests import Request

from tests.conftest import gateway_settings
from tests.helpers import GATEWAY_KEY, clean_environ, data_events

EXPECTED = {
    "chat_completions": ("v1/chat/completions", ["POST"]),
    "completions": ("v1/completions", ["POST"]),
    "embeddings": ("v1/embeddings", ["POST"]),
    "list_models": ("v1/models", ["GET"]),
    "retrieve_model": ("v1/models/{model}", ["GET"]),
    "gateway_usage": ("v1/gateway/usage", ["GET"]),
    "azure_chat_completions": ("openai/deployments/{name}/chat/completions", ["POST"]),
    "azure_completions": ("openai/deployments/{name}/completions", ["POST"]),
    "azure_embeddings": ("openai/deployments/{name}/embeddings", ["POST"]),
    "azure_list_models": ("openai/models", ["GET"]),
    "health": ("health", ["GET"]),
    "openai_v1_chat_completions": ("openai/v1/chat/completions", ["POST"]),
    "openai_v1_completions": ("openai/v1/completions", ["POST"]),
    "openai_v1_embeddings": ("openai/v1/embeddings", ["POST"]),
    "openai_v1_models": ("openai/v1/models", ["GET"]),
    "openai_v1_models_model": ("openai/v1/models/{model}", ["GET"]),
    **{f"{prefix.replace('/', '_')}_responses{name}": (f"{prefix}/responses{path}", methods)
       for prefix in ("v1", "openai/v1", "openai")
       for name, path, methods in (("", "", ["POST"]), ("_response_id", "/{response_id}", ["GET", "DELETE"]),
                                   ("_response_id_cancel", "/{response_id}/cancel", ["POST"]),
                                   ("_response_id_input_items", "/{response_id}/input_items", ["GET"]))},
}


@pytest.fixture
def function_app(emulators, monkeypatch):
    for name in list(os.environ):
        if name not in clean_environ():
            monkeypatch.delenv(name)
    for name, value in gateway_settings(emulators).items():
        monkeypatch.setenv(name, value)
    with fresh_gateway_modules():
        yield importlib.import_module("function_app")


@contextlib.contextmanager
def fresh_gateway_modules():
    """`function_app` and `routing` imported anew (it configures itself from the environment at
    import), then the modules the rest of the session imported put back: classes other tests
    hold must stay the ones `routing` uses."""
    mine = [m for m in sys.modules if m == "function_app" or m.startswith("routing")]
    saved = {m: sys.modules.pop(m) for m in mine}
    try:
        yield
    finally:
        for module in [m for m in sys.modules if m == "function_app" or m.startswith("routing")]:
            del sys.modules[module]
        sys.modules.update(saved)


def make_request(method: str, path: str, body: dict | None = None, headers: dict | None = None,
                 path_params: dict | None = None) -> Request:
    raw = json.dumps(body).encode() if body is not None else b""
    header_list = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    header_list.append((b"content-length", str(len(raw)).encode()))
    scope = {"type": "http", "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "headers": header_list,
             "server": ("localhost", 80), "client": ("127.0.0.1", 1234),
             "path_params": path_params or {}}
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(3600)

    return Request(scope, receive)


def test_indexing_metadata(function_app):
    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    assert set(functions) == set(EXPECTED)
    for name, (route, methods) in EXPECTED.items():
        trigger = functions[name].get_trigger()
        assert trigger.route == route
        assert [str(m.value) for m in trigger.methods] == methods
        binding = json.loads(functions[name].get_function_json())["bindings"][0]
        assert binding["authLevel"].upper() == "ANONYMOUS"
    # Every function uses the FastAPI-extension types (required for HTTP streams).
    from azurefunctions.extensions.http import fastapi as extension
    for function in functions.values():
        annotations = function.get_user_function().__annotations__
        assert annotations["req"] is extension.Request
        assert annotations["return"] is extension.Response


def test_user_functions_answer_like_the_server(function_app, upstreams):
    for upstream in upstreams.values():
        upstream.clear()
    auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    user = [{"role": "user", "content": "hello there"}]
    fns = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}

    async def run():
        out = {}
        out["health"] = await fns["health"](make_request("GET", "/health"))
        out["models"] = await fns["list_models"](make_request("GET", "/v1/models", headers=auth))
        out["model"] = await fns["retrieve_model"](make_request(
            "GET", "/v1/models/llama3", headers=auth, path_params={"model": "llama3"}))
        out["noauth"] = await fns["chat_completions"](make_request(
            "POST", "/v1/chat/completions", {"model": "llama3", "messages": user}))
        out["chat"] = await fns["chat_completions"](make_request(
            "POST", "/v1/chat/completions", {"model": "llama3", "messages": user}, auth))
        stream = await fns["azure_chat_completions"](make_request(
            "POST", "/openai/deployments/llama3/chat/completions",
            {"messages": user, "stream": True, "stream_options": {"include_usage": True}},
            {"api-key": GATEWAY_KEY}, {"name": "llama3"}))
        out["stream"] = stream
        out["stream_body"] = b"".join([c async for c in stream.body_iterator])
        out["emb"] = await fns["embeddings"](make_request(
            "POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}, auth))
        from routing import gateway as runtime
        await runtime.configured().aclose()
        return out

    out = asyncio.run(run())
    assert out["health"].status_code == 200
    assert {m["id"] for m in json.loads(out["models"].body)["data"]} >= {"llama3", "gpt-4o"}
    assert json.loads(out["model"].body)["id"] == "llama3"
    assert out["noauth"].status_code == 401
    chat = json.loads(out["chat"].body)
    assert out["chat"].status_code == 200 and chat["choices"][0]["message"]["content"].startswith("Hello!")
    assert out["chat"].headers["x-gateway-route"] == "LLAMA"
    assert out["stream"].media_type == "text/event-stream"
    assert out["stream"].headers["x-gateway-dropped-params"] == "stream_options"
    events = data_events(out["stream_body"])
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] > 0
    assert len(json.loads(out["emb"].body)["data"]) == 1
    paths = [r["path"] for r in upstreams["serverless"].requests()]
    assert paths == ["/chat/completions", "/chat/completions"]


def test_invalid_settings_answer_503_and_log(monkeypatch, caplog):
    for name in list(os.environ):
        if name not in clean_environ():
            monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWAY_API_KEYS", "k-0123456789abcdef")
    monkeypatch.setenv("ROUTE__X__MODEL", "m")
    monkeypatch.setenv("ROUTE__X__BACKEND", "azure-ai")
    monkeypatch.setenv("ROUTE__X__ENDPIONT", "https://x.models.ai.azure.com")
    with fresh_gateway_modules():
        with caplog.at_level("ERROR"):
            module = importlib.import_module("function_app")
        assert "ROUTE__X__ENDPIONT" in caplog.text and "ROUTE__X__ENDPOINT: required" in caplog.text
        fn = {f.get_function_name(): f.get_user_function() for f in module.app.get_functions()}["health"]
        response = asyncio.run(fn(make_request("GET", "/health")))
    assert response.status_code == 503
    assert json.loads(response.body)["error"]["code"] == "invalid_configuration"
