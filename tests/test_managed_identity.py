"""The real azure-identity credential against the App Service managed-identity emulator."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.conftest import route
from tests.helpers import GATEWAY_KEY, GatewayProcess


def test_one_token_request_for_many_gateway_requests(emulators, upstreams, tmp_path):
    upstreams["identity"].clear()
    upstreams["aoai"].clear()
    settings = {
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "IDENTITY_ENDPOINT": emulators.urls["identity"],
        "IDENTITY_HEADER": emulators.identity_header,
        **route("A", model="gpt-4o", backend="azure-openai", endpoint=emulators.urls["azure_openai"]),
        **route("B", model="gpt-4o-mini", backend="azure-openai", endpoint=emulators.urls["azure_openai"]),
    }
    gateway = GatewayProcess(settings, tmp_path)
    try:
        def call(i: int) -> int:
            model = "gpt-4o" if i % 2 else "gpt-4o-mini"
            return httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                              headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                              json={"model": model, "messages": [{"role": "user", "content": "x"}]}).status_code
        with concurrent.futures.ThreadPoolExecutor(16) as pool:  # a burst on a cold instance
            statuses = list(pool.map(call, range(40)))
        statuses += [call(i) for i in range(10)]
    finally:
        gateway.stop()
    assert statuses == [200] * 50
    token_requests = upstreams["identity"].requests()
    # Both routes share the system-assigned identity and the scope: one token for all.
    assert len(token_requests) == 1, token_requests
    assert token_requests[0]["query"]["resource"].startswith("https://cognitiveservices.azure.com")
    assert token_requests[0]["headers"]["x-identity-header"] == emulators.identity_header
    seen = upstreams["aoai"].requests()
    assert len(seen) == 50 and len({r["headers"]["authorization"] for r in seen}) == 1
    assert "eyJ" not in gateway.log()  # no token in the logs


def test_identity_endpoint_failure_is_502_naming_route(emulators, upstreams, tmp_path):
    settings = {
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "IDENTITY_ENDPOINT": emulators.urls["identity"],
        "IDENTITY_HEADER": "wrong-header",
        **route("MI", model="gpt-4o", backend="azure-openai", endpoint=emulators.urls["azure_openai"]),
    }
    upstreams["aoai"].clear()
    gateway = GatewayProcess(settings, tmp_path)
    try:
        response = httpx.post(gateway.url + "/v1/chat/completions", timeout=60,
                              headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                              json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    finally:
        gateway.stop()
    assert response.status_code == 502
    assert "'MI'" in response.json()["error"]["message"]
    assert upstreams["aoai"].requests() == []


def echoing_identity_endpoint():
    """An identity endpoint that answers every token request with an error echoing the request
    headers, the App Service `X-IDENTITY-HEADER` secret included."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def token(request):
        echoed = dict(request.headers)
        return JSONResponse({"statusCode": 400, "message": f"bad request, headers were {echoed}",
                             "correlationId": echoed.get("x-identity-header")}, status_code=400)

    from emulator.servers import start
    return start(Starlette(routes=[Route("/msi/token", token)]))


def test_identity_endpoint_echoing_its_secret_leaves_no_trace(emulators, tmp_path):
    secret = "identity-header-secret-6f1c2b9d0a7e"
    endpoint = echoing_identity_endpoint()
    settings = {
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "IDENTITY_ENDPOINT": endpoint.url + "/msi/token",
        "IDENTITY_HEADER": secret,
        **route("MI", model="gpt-4o", backend="azure-openai", endpoint=emulators.urls["azure_openai"]),
    }
    gateway = GatewayProcess({**settings, "AZURE_LOG_LEVEL": "info"}, tmp_path)
    try:
        responses = [httpx.post(gateway.url + "/v1/chat/completions", timeout=60,
                                headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
                     for _ in range(2)]
    finally:
        gateway.stop()
        endpoint.stop()
    log = gateway.log()
    assert [r.status_code for r in responses] == [502, 502]
    # The log holds the failure and the echoed request (so the echo really happened) ...
    assert "could not get a token" in log and "x-identity-header" in log.lower(), log
    # ... but never the secret, in the gateway's lines or azure-identity's.
    assert secret not in log
    assert "[redacted]" in log
    for response in responses:
        assert secret not in response.text and secret not in str(response.headers)
