"""Consumers and limits (DESIGN §9, §10) end to end: one gateway process with several consumers,
real clients over loopback, the emulators as upstreams. The state store's own semantics (windows,
clocks, Redis) are tested in test_state.py; here, what a caller sees."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from tests.conftest import gateway_settings
from tests.helpers import GATEWAY_KEY, GatewayProcess, access_lines

TEAM_A = "team-a-key-0123456789"
RPM = "rpm-key-0123456789abcdef"
TPM = "tpm-key-0123456789abcdef"
QUOTA = "quota-key-0123456789abcd"
BURST = "burst-key-0123456789abcd"  # its bucket untouched by the other tests
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def consumers_gateway(emulators, tmp_path_factory):
    settings = {
        **gateway_settings(emulators),
        "CONSUMER__TEAM_A__KEYS": TEAM_A, "CONSUMER__TEAM_A__MODELS": "gpt-4o-key,llama3",
        "CONSUMER__RPM__KEYS": RPM, "CONSUMER__RPM__REQUESTS_PER_MINUTE": "2",
        "CONSUMER__TPM__KEYS": TPM, "CONSUMER__TPM__TOKENS_PER_MINUTE": "1000",
        "CONSUMER__BURST__KEYS": BURST, "CONSUMER__BURST__TOKENS_PER_MINUTE": "1000",
        "CONSUMER__QUOTA__KEYS": QUOTA, "CONSUMER__QUOTA__TOKEN_QUOTA": "60",
        "CONSUMER__QUOTA__QUOTA_PERIOD": "daily",
    }
    process = GatewayProcess(settings, tmp_path_factory.mktemp("consumers"))
    yield process
    process.stop()


def chat(gateway, key: str, model: str = "gpt-4o-key", **body) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": MESSAGES, **body})


def access_records(gateway, done, wait: float = 5.0) -> list[dict]:
    """The gateway's access records, once `done(records)` holds (they are written just after
    the answers), or whatever is there after `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        records = [json.loads(line) for line in access_lines(gateway.log())]
        if done(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def upstream_chats(upstream) -> int:
    return sum(1 for r in upstream.requests() if r.get("path", "").endswith("/chat/completions"))


def test_each_consumer_is_told_apart_and_limited_to_its_models(consumers_gateway, clean):
    ok = chat(consumers_gateway, TEAM_A)
    assert ok.status_code == 200 and ok.headers["x-gateway-consumer"] == "team_a"
    assert chat(consumers_gateway, TEAM_A, "llama3").status_code == 200
    refused = chat(consumers_gateway, TEAM_A, "gpt-4o")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert refused.headers["x-gateway-consumer"] == "team_a"
    listed = httpx.get(consumers_gateway.url + "/v1/models", headers={"api-key": TEAM_A})
    assert sorted(m["id"] for m in listed.json()["data"]) == ["gpt-4o-key", "llama3"]
    hidden = httpx.get(consumers_gateway.url + "/v1/models/gpt-4o", headers={"api-key": TEAM_A})
    assert hidden.status_code == 404
    everything = httpx.get(consumers_gateway.url + "/v1/models", headers={"api-key": GATEWAY_KEY})
    assert everything.headers["x-gateway-consumer"] == "default"
    assert len(everything.json()["data"]) > 2
    # The consumer's name (never its key) is in the access log.
    records = access_records(consumers_gateway, lambda rs: {"team_a", "default"} <= {r["consumer"] for r in rs})
    assert {"team_a", "default"} <= {r["consumer"] for r in records}
    assert TEAM_A not in consumers_gateway.log()


def test_unknown_or_missing_credentials_are_401_and_identify_nobody(consumers_gateway, clean):
    for headers in ({"Authorization": "Bearer not-a-consumer-key-000"}, {}):
        response = httpx.post(consumers_gateway.url + "/v1/chat/completions", headers=headers,
                              json={"model": "gpt-4o-key", "messages": MESSAGES})
        assert response.status_code == 401
        assert "x-gateway-consumer" not in response.headers
    assert upstream_chats(clean["aoai"]) == 0
    records = access_records(consumers_gateway, lambda rs: any(r["status"] == 401 for r in rs))
    assert any(r["status"] == 401 and r["consumer"] is None for r in records)


def test_requests_per_minute(consumers_gateway, clean):
    first, second = chat(consumers_gateway, RPM), chat(consumers_gateway, RPM)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert int(first.headers["x-ratelimit-remaining-requests"]) == 1
    assert int(second.headers["x-ratelimit-remaining-requests"]) == 0
    assert "x-ratelimit-limit-tokens" not in second.headers  # the upstream's are replaced, not mixed
    third = chat(consumers_gateway, RPM)
    assert third.status_code == 429
    error = third.json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")
    # One request frees up at 2/60 per second: about 30 s (a little less, time has passed).
    assert 20 <= int(third.headers["retry-after"]) <= 30
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.headers["x-ratelimit-reset-requests"].endswith("s")
    assert upstream_chats(clean["aoai"]) == 2  # the refused one never reached an upstream


def test_concurrent_requests_cannot_exceed_a_token_limit_one_fills(consumers_gateway, clean):
    # Slow answers: all 32 are in flight together, each reserving ~900 tokens of a 1000 limit.
    clean["aoai"].fault(delay=1.0, count=-1)

    async def burst():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*[
                client.post(consumers_gateway.url + "/v1/chat/completions",
                            headers={"Authorization": f"Bearer {TPM}"},
                            json={"model": "gpt-4o-key", "messages": MESSAGES, "max_tokens": 900})
                for _ in range(32)])

    answers = asyncio.run(burst())
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [429] * 31, statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["type"] == "tokens"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-tokens"] == "1000"
    assert upstream_chats(clean["aoai"]) == 1


def test_quota_is_final_and_the_openai_sdk_does_not_retry(consumers_gateway, clean):
    client = openai.OpenAI(base_url=consumers_gateway.url + "/v1", api_key=QUOTA, max_retries=3)
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(10):  # the emulator's few tokens per answer use 60 up within a few calls
            client.chat.completions.create(model="gpt-4o-key", messages=MESSAGES, max_tokens=10)
    answered = upstream_chats(clean["aoai"])
    assert 1 <= answered < 10
    assert refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert int(refused.value.response.headers["retry-after"]) > 0
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-key", messages=MESSAGES, max_tokens=10)
    assert upstream_chats(clean["aoai"]) == answered  # no retry reached the upstream
    usage = httpx.get(consumers_gateway.url + "/v1/gateway/usage", headers={"api-key": QUOTA}).json()
    assert usage["quota"]["limit"] == 60 and usage["quota"]["period"] == "daily"
    assert 0 < usage["quota"]["used"] <= 60 + 40  # the last admitted request may end past it


def test_usage_endpoint_reports_the_callers_own_window(consumers_gateway, clean):
    answer = chat(consumers_gateway, TPM, max_tokens=400)
    assert answer.status_code == 200
    used = answer.json()["usage"]["total_tokens"]
    time.sleep(0.3)  # the reconciliation runs after the answer
    usage = httpx.get(consumers_gateway.url + "/v1/gateway/usage", headers={"api-key": TPM})
    body = usage.json()
    assert usage.status_code == 200 and usage.headers["x-gateway-consumer"] == "tpm"
    assert body["consumer"] == "tpm" and body["limits"]["tokens_per_minute"] == 1000
    window = body["tokens_per_minute"]
    # The 400-token reservation was replaced by what was used (the bucket refills meanwhile).
    assert window["limit"] == 1000 and window["remaining"] >= 1000 - used - 60
    default = httpx.get(consumers_gateway.url + "/v1/gateway/usage", headers={"api-key": GATEWAY_KEY}).json()
    assert default["consumer"] == "default" and default["tokens_per_minute"] is None
    assert default["models"] is None  # every model


def test_a_stream_cut_short_gives_its_reservation_back(consumers_gateway, clean):
    clean["aoai"].configure(chunk_delay=0.2)
    with httpx.stream("POST", consumers_gateway.url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {TPM}"},
                      json={"model": "gpt-4o-key", "messages": MESSAGES, "stream": True,
                            "max_tokens": 700}) as response:
        assert response.status_code == 200
        next(response.iter_raw())  # then leave
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        window = httpx.get(consumers_gateway.url + "/v1/gateway/usage",
                           headers={"api-key": TPM}).json()["tokens_per_minute"]
        if window["remaining"] > 1000 - 700:
            break
        time.sleep(0.1)
    assert window["remaining"] > 1000 - 700, window


def test_requests_without_a_completion_limit_reserve_a_default_answer(consumers_gateway, clean):
    """20 concurrent chats that set no max_tokens cannot all slip under a 1000-token limit."""
    clean["aoai"].fault(delay=1.0, count=-1)

    async def burst():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*[
                client.post(consumers_gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {BURST}"},
                            json={"model": "gpt-4o-key", "messages": MESSAGES}) for _ in range(20)])

    # A full bucket: without a reserved answer (~1024 each) all 20 (~10 tokens of prompt each) would pass.
    statuses = [a.status_code for a in asyncio.run(burst())]
    assert statuses.count(200) == 1 and statuses.count(429) == 19, statuses

