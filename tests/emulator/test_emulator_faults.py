"""Fault injection over real sockets: error answers, retry headers, counts, delays, cut streams."""

from __future__ import annotations

import time

import httpx
import pytest

MSG = [{"role": "user", "content": "fault test"}]
GA = {"api-version": "2024-10-21"}


def chat(client, aoai, deployment="gpt-4o", **body):
    return client.post(f"{aoai['url']}/openai/deployments/{deployment}/chat/completions", params=GA,
                       headers=aoai["headers"], json={"messages": MSG, **body})


def test_429_exact_body_retry_headers_and_count(client, aoai, ctl):
    ctl.fault(aoai["url"], status=429, retry_after=6, retry_after_ms=5500, count=2)
    for _ in range(2):
        r = chat(client, aoai)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "6" and r.headers["retry-after-ms"] == "5500"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert r.headers["x-ratelimit-remaining-tokens"] == "0"
        assert r.json() == {"error": {"code": "429", "message": (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
            "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. "
            "Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the "
            "default rate limit.")}}
    assert chat(client, aoai).status_code == 200  # both uses consumed
    assert [rec["status"] for rec in ctl.records(aoai["url"])] == [429, 429, 200]
    assert client.get(aoai["url"] + "/_emulator/faults").json() == []


def test_429_without_hints_sends_no_retry_headers(client, aoai, ctl):
    ctl.fault(aoai["url"], status=429)
    r = chat(client, aoai)
    assert r.status_code == 429 and "retry-after" not in r.headers and "retry-after-ms" not in r.headers


def test_fault_matches_deployment_and_lasts_until_cleared(client, aoai, ctl):
    ctl.fault(aoai["url"], match={"deployment": "gpt-4o-mini"}, status=503, count=-1)
    assert chat(client, aoai, "gpt-4o").status_code == 200
    for _ in range(3):
        r = chat(client, aoai, "gpt-4o-mini")
        assert r.status_code == 503 and r.json()["error"]["code"] == "ServiceUnavailable"
    assert client.delete(aoai["url"] + "/_emulator/faults").json() == {"cleared": 1}
    assert chat(client, aoai, "gpt-4o-mini").status_code == 200


def test_faults_consumed_in_order_and_body_override(client, aoai, ctl):
    ctl.fault(aoai["url"], status=500)
    ctl.fault(aoai["url"], status=400, body={"error": {"message": "custom"}}, headers={"x-custom": "yes"})
    first, second, third = chat(client, aoai), chat(client, aoai), chat(client, aoai)
    assert first.status_code == 500 and first.json()["error"]["code"] == "InternalServerError"
    assert second.status_code == 400 and second.json() == {"error": {"message": "custom"}}
    assert second.headers["x-custom"] == "yes" and third.status_code == 200


def test_azure_ai_429_shape_and_match_on_body_model(client, foundry, ctl):
    ctl.fault(foundry["url"], match={"deployment": "mistral-large-2411"}, status=429, retry_after=2)
    params = {"api-version": "2024-05-01-preview"}
    url = foundry["url"] + "/models/chat/completions"
    ok = client.post(url, params=params, headers=foundry["headers"],
                     json={"model": "Meta-Llama-3.1-8B-Instruct", "messages": MSG})
    assert ok.status_code == 200
    r = client.post(url, params=params, headers=foundry["headers"], json={"model": "Mistral-Large-2411", "messages": MSG})
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.json() == {"error": {"code": "429", "message": "Rate limit is exceeded. Try again in 2 seconds.",
                                  "status": 429}}


def test_delay_before_headers(client, aoai, ctl):
    ctl.fault(aoai["url"], delay=0.4)
    start = time.monotonic()
    assert chat(client, aoai).status_code == 200
    assert time.monotonic() - start >= 0.4
    start = time.monotonic()
    chat(client, aoai)
    assert time.monotonic() - start < 0.3  # count 1: the next request is not delayed


def test_hang_is_released_when_the_client_gives_up(client, aoai, ctl):
    ctl.fault(aoai["url"], delay=600)
    with pytest.raises(httpx.ReadTimeout):
        with httpx.Client(timeout=0.3) as impatient:
            chat(impatient, aoai)
    deadline = time.monotonic() + 3
    while ctl.records(aoai["url"])[-1]["status"] != 499 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ctl.records(aoai["url"])[-1]["status"] == 499


def test_cut_after_chunks_aborts_without_done(aoai, ctl):
    ctl.fault(aoai["url"], cut_after_chunks=3, match={"stream": True})
    received = []
    with httpx.Client(timeout=5) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            with c.stream("POST", f"{aoai['url']}/openai/deployments/gpt-4o/chat/completions", params=GA,
                          headers=aoai["headers"], json={"messages": MSG, "stream": True}) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line:
                        received.append(line)
    assert len(received) == 3 and all(line.startswith("data: {") for line in received)
    assert "data: [DONE]" not in received
    assert ctl.stats(aoai["url"])["active_streams"] == 0


def test_azure_ai_cut_stream(serverless, ctl, parse_sse):
    ctl.fault(serverless["url"], cut_after_chunks=2)
    with httpx.Client(timeout=5) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.post(serverless["url"] + "/chat/completions", headers=serverless["headers"],
                   json={"messages": MSG, "stream": True})


def test_chunk_delay_paces_the_stream(aoai, ctl):
    ctl.fault(aoai["url"], chunk_delay=0.1)
    arrivals = []
    with httpx.Client(timeout=5) as c:
        with c.stream("POST", f"{aoai['url']}/openai/deployments/gpt-4o/chat/completions", params=GA,
                      headers=aoai["headers"], json={"messages": MSG, "stream": True, "max_tokens": 2}) as r:
            for line in r.iter_lines():
                if line:
                    arrivals.append(time.monotonic())
    # preamble, role, 2 words, finish, [DONE]: five gaps of >= 0.1 s
    assert len(arrivals) == 6 and arrivals[-1] - arrivals[0] >= 0.45


def test_bad_fault_rule_is_rejected(client, aoai):
    r = client.post(aoai["url"] + "/_emulator/faults", json={"status": 429, "retry_afterr": 1})
    assert r.status_code == 400 and "retry_afterr" in r.json()["error"]
    r = client.post(aoai["url"] + "/_emulator/faults", json={"count": 0})
    assert r.status_code == 400


def test_identity_fault(client, emus, ctl):
    url = emus.urls["identity"]
    base = url.removesuffix("/msi/token")
    ctl.fault(base, status=500)
    r = client.get(url, params={"api-version": "2019-08-01", "resource": "https://cognitiveservices.azure.com"},
                   headers={"x-identity-header": emus.identity_header})
    assert r.status_code == 500 and r.json()["statusCode"] == 500
