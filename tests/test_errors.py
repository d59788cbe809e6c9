"""Bad input gets a clear OpenAI-shaped error and never reaches an upstream; upstream errors
keep their status and are mapped into the same shape (DESIGN §5)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import gateway_settings
from tests.helpers import GATEWAY_KEY, GatewayProcess

pytestmark = pytest.mark.usefixtures("clean")
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
USER = [{"role": "user", "content": "hi"}]


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    assert response.headers["x-request-id"]
    return error


def assert_no_upstream_calls(upstreams) -> None:
    for name in ("aoai", "serverless", "foundry"):
        assert upstreams[name].requests() == [], name


@pytest.mark.parametrize("content, code", [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (b'"text"', "invalid_json"),
])
def test_unparseable_or_non_object_body(gateway, upstreams, content, code):
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, content=content)
    assert_openai_error(response, 400, code)
    assert_no_upstream_calls(upstreams)


@pytest.mark.parametrize("body, param", [
    ({"messages": USER}, "model"),
    ({"model": "llama3"}, "messages"),
    ({"model": "llama3", "messages": []}, "messages"),
    ({"model": "llama3", "messages": ["hi"]}, "messages[0]"),
    ({"model": "llama3", "messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"model": "llama3", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "llama3", "messages": USER, "stream_options": True}, "stream_options"),
])
def test_invalid_chat_fields(gateway, upstreams, body, param):
    error = assert_openai_error(httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json=body), 400)
    assert error["param"] == param
    assert_no_upstream_calls(upstreams)


def test_invalid_embeddings_input(gateway, upstreams):
    for body in ({"model": "text-embedding-3-small"}, {"model": "text-embedding-3-small", "input": {"a": 1}}):
        error = assert_openai_error(httpx.post(gateway.url + "/v1/embeddings", headers=AUTH, json=body), 400)
        assert error["param"] == "input"
    assert_no_upstream_calls(upstreams)


def test_unknown_model_and_unsupported_operation(gateway, upstreams):
    error = assert_openai_error(httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH,
                                           json={"model": "gpt-9", "messages": USER}), 404, "model_not_found")
    assert "gpt-9" in error["message"]
    assert_openai_error(httpx.post(gateway.url + "/v1/completions", headers=AUTH,
                                   json={"model": "llama3", "prompt": "x"}), 400, "unsupported_operation")
    assert_no_upstream_calls(upstreams)


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_api_key"),
    ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
    ({"api-key": "wrong"}, "invalid_api_key"),
    ({"Authorization": f"Basic {GATEWAY_KEY}"}, "missing_api_key"),
])
def test_missing_or_wrong_key(gateway, upstreams, headers, code):
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/v1/models/llama3")):
        response = httpx.request(method, gateway.url + path, headers=headers,
                                 json={"model": "llama3", "messages": USER} if method == "POST" else None)
        error = assert_openai_error(response, 401, code)
        assert "wrong" not in error["message"] and GATEWAY_KEY not in response.text
    assert_no_upstream_calls(upstreams)


def test_second_key_and_api_key_header_accepted(gateway):
    assert httpx.get(gateway.url + "/v1/models", headers={"api-key": "other-key-0123456789"}).status_code == 200
    assert httpx.get(gateway.url + "/v1/models", headers={"Authorization": "bearer other-key-0123456789"}).status_code == 200


def test_oversized_body_default_limit(gateway, upstreams):
    big = b'{"model": "llama3", "messages": [{"role": "user", "content": "' + b"x" * (16 * 1024 * 1024) + b'"}]}'
    assert_openai_error(httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, content=big,
                                   timeout=30), 413, "request_too_large")

    def chunked():  # no content-length: the limit applies while reading
        yield big[:1024]
        for i in range(1024, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]
    assert_openai_error(httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, content=chunked(),
                                   timeout=30), 413, "request_too_large")
    assert_no_upstream_calls(upstreams)


def test_max_body_bytes_setting(emulators, upstreams, tmp_path):
    small = GatewayProcess({**gateway_settings(emulators), "GATEWAY_MAX_BODY_BYTES": "200"}, tmp_path)
    try:
        ok = httpx.post(small.url + "/v1/chat/completions", headers=AUTH, json={"model": "llama3", "messages": USER})
        assert ok.status_code == 200
        error = assert_openai_error(httpx.post(small.url + "/v1/chat/completions", headers=AUTH, json={
            "model": "llama3", "messages": [{"role": "user", "content": "x" * 300}]}), 413)
        assert "200 bytes" in error["message"]
    finally:
        small.stop()
    assert len(upstreams["serverless"].requests()) == 1


def test_request_id_kept_when_safe(gateway):
    response = httpx.get(gateway.url + "/v1/models", headers={**AUTH, "x-request-id": "abc.DEF-123_x"})
    assert response.headers["x-request-id"] == "abc.DEF-123_x"
    response = httpx.get(gateway.url + "/v1/models", headers={**AUTH, "x-request-id": "bad id<script>"})
    assert response.headers["x-request-id"] != "bad id<script>" and len(response.headers["x-request-id"]) == 32


def test_upstream_4xx_returned_in_openai_shape_not_retried(gateway, upstreams):
    # Azure AI answers 422 `parameter_not_supported` with `detail.loc` for json_object on Llama.
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
        "model": "llama3", "messages": USER, "response_format": {"type": "json_object"}})
    error = assert_openai_error(response, 422, "parameter_not_supported")
    assert error["param"] == "response_format" and not error["message"].startswith("{")
    assert response.headers["x-gateway-attempts"] == "1"
    assert len(upstreams["serverless"].requests()) == 1

    # Azure OpenAI's own 400 keeps its message and code.
    upstreams["aoai"].clear()
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
        "model": "gpt-4o-key", "messages": USER, "made_up_parameter": 1})
    error = assert_openai_error(response, 400)
    assert "made_up_parameter" in error["message"]
    assert len(upstreams["aoai"].requests()) == 1


def test_upstream_rejecting_gateway_credentials_is_502_naming_route(gateway, upstreams):
    error = assert_openai_error(httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
        "model": "gpt-4o-badkey", "messages": USER}), 502, "upstream_auth_failed")
    assert "BADKEY" in error["message"] and "not-the-key" not in error["message"]
    assert "REJECTED THE GATEWAY'S CREDENTIALS" in gateway.log()
    assert "not-the-key" not in gateway.log()


def test_upstream_429_and_500_on_single_deployment(gateway, upstreams):
    upstreams["serverless"].fault(status=429, retry_after=7, count=1)
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH,
                          json={"model": "llama3-cooldown", "messages": USER})
    assert_openai_error(response, 429, "rate_limit_exceeded")
    assert 6 <= int(response.headers["retry-after"]) <= 7
    # While it cools down the gateway answers at once, without calling the upstream.
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH,
                          json={"model": "llama3-cooldown", "messages": USER})
    assert_openai_error(response, 429)
    assert len(upstreams["serverless"].requests()) == 1

    upstreams["aoai"].fault(status=500, count=1)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gpt-4o-cooldown", messages=USER)
    assert raised.value.status_code == 502


def test_unknown_path_is_openai_shaped_404(gateway):
    assert_openai_error(httpx.get(gateway.url + "/v2/nothing", headers=AUTH), 404)


def test_no_secret_in_gateway_log(gateway, emulators):
    """Runs late in the session: the shared gateway's whole log holds no key and no token."""
    log = gateway.log()
    assert "REJECTED THE GATEWAY'S CREDENTIALS" in log  # the log holds this session's requests
    secrets = [GATEWAY_KEY, "other-key", *[k for keys in emulators.keys.values() for k in keys]]
    for secret in secrets:
        assert secret not in log
    assert "eyJ" not in log


def test_gateway_auth_none_needs_no_key_and_warns(emulators, tmp_path):
    settings = {k: v for k, v in gateway_settings(emulators).items() if k != "GATEWAY_API_KEYS"}
    open_gateway = GatewayProcess({**settings, "GATEWAY_AUTH": "none"}, tmp_path)
    try:
        response = httpx.get(open_gateway.url + "/v1/models")
        assert response.status_code == 200 and response.json()["data"]
    finally:
        open_gateway.stop()
    assert "GATEWAY_AUTH=none" in open_gateway.log() and "WARNING" in open_gateway.log()


def test_content_filter_details_survive_the_mapping(gateway, upstreams):
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
        "model": "gpt-4o-key", "messages": [{"role": "user", "content": "[[content_filter]] x"}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filter" and error["param"] == "prompt"
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error["innererror"]["content_filter_result"]["jailbreak"]["filtered"] is True
    # Reduced to the OpenAI fields plus the filter details: Azure's `status` is not passed on.
    assert set(error) == {"message", "type", "param", "code", "innererror"}
    assert set(error["innererror"]) == {"code", "content_filter_result"}


def test_non_ascii_parameter_name_is_dropped_and_reported(gateway, upstreams):
    response = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, json={
        "model": "llama3", "messages": USER, "模型": 1, "a\r\nb": 2})
    assert response.status_code == 200
    assert response.headers["x-gateway-dropped-params"] == "%E6%A8%A1%E5%9E%8B,a%0D%0Ab"


def test_drained_pool_is_503_not_429(emulators, upstreams, tmp_path):
    settings = {**gateway_settings(emulators), "ROUTE__LLAMA__WEIGHT": "0"}
    drained = GatewayProcess(settings, tmp_path)
    try:
        response = httpx.post(drained.url + "/v1/chat/completions", headers=AUTH,
                              json={"model": "llama3", "messages": USER})
    finally:
        drained.stop()
    assert_openai_error(response, 503, "model_unavailable")
    assert "retry-after" not in response.headers
    assert upstreams["serverless"].requests() == []
