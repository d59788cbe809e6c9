"""Control endpoints: request records, stats (connections, streams), runtime config, isolation."""

from __future__ import annotations

import threading
import time

import httpx

from emulator import azure_openai, servers

MSG = [{"role": "user", "content": "record me"}]


def test_records_capture_the_request_and_status(client, aoai, ctl):
    url = f"{aoai['url']}/openai/deployments/gpt-4o/chat/completions"
    client.post(url, params={"api-version": "2024-10-21", "x": "1"}, json={"messages": MSG},
                headers={**aoai["headers"], "X-Custom-Header": "Value"})
    client.post(url, params={"api-version": "2024-10-21"}, content=b"not json", headers=aoai["headers"])
    client.get(aoai["url"] + "/_emulator/stats")  # control requests are never recorded
    first, second = ctl.records(aoai["url"])
    assert first["method"] == "POST" and first["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert first["query"] == {"api-version": "2024-10-21", "x": "1"}
    assert first["headers"]["x-custom-header"] == "Value" and first["headers"]["api-key"] == aoai["headers"]["api-key"]
    assert first["body"] == {"messages": MSG} and first["status"] == 200
    assert second["body"] is None and second["raw_body"] == "not json" and second["status"] == 400
    assert client.delete(aoai["url"] + "/_emulator/requests").json() == {"cleared": 2}
    assert ctl.records(aoai["url"]) == []


def test_unknown_paths_are_recorded_as_404(client, aoai, ctl):
    r = client.get(aoai["url"] + "/nope", headers=aoai["headers"])
    assert r.status_code == 404 and r.json() == {"error": {"code": "404", "message": "Resource not found"}}
    assert ctl.records(aoai["url"])[-1]["status"] == 404


def test_state_is_per_app(client, aoai, serverless, ctl):
    client.post(serverless["url"] + "/chat/completions", headers=serverless["headers"], json={"messages": MSG})
    ctl.fault(serverless["url"], status=500, count=-1)
    assert ctl.records(aoai["url"]) == []
    r = client.post(f"{aoai['url']}/openai/deployments/gpt-4o/chat/completions", params={"api-version": "2024-10-21"},
                    headers=aoai["headers"], json={"messages": MSG})
    assert r.status_code == 200
    assert len(ctl.records(serverless["url"])) == 1


def test_config_answer_words_and_validation(client, serverless, ctl):
    assert ctl.config(serverless["url"], answer_words=3) == {"chunk_delay": 0.0, "answer_words": 3, "record": True}
    r = client.post(serverless["url"] + "/chat/completions", headers=serverless["headers"], json={"messages": MSG})
    assert r.json()["choices"][0]["message"]["content"] == "Hello! You said:"
    assert client.post(serverless["url"] + "/_emulator/config", json={"answer_words": 0}).status_code == 400
    assert client.post(serverless["url"] + "/_emulator/config", json={"speed": 1}).status_code == 400


def test_config_record_off(client, serverless, ctl):
    ctl.config(serverless["url"], record=False)
    client.post(serverless["url"] + "/chat/completions", headers=serverless["headers"], json={"messages": MSG})
    assert ctl.records(serverless["url"]) == []
    assert ctl.stats(serverless["url"])["requests"] == 1


def test_stats_connections_streams_and_requests():
    app = azure_openai.create_app(keys=["k"])
    with servers.start(app) as server, httpx.Client(timeout=10) as control:
        stats = lambda: control.get(server.url + "/_emulator/stats").json()  # noqa: E731
        assert stats() == {"open_connections": 1, "active_streams": 0, "requests": 0}
        control.post(server.url + "/_emulator/config", json={"chunk_delay": 0.2})
        lines: list[str] = []
        started = threading.Event()

        def stream() -> None:
            with httpx.Client(timeout=10) as other:
                with other.stream("POST", server.url + "/openai/deployments/gpt-4o/chat/completions",
                                  params={"api-version": "2024-10-21"}, headers={"api-key": "k"},
                                  json={"messages": MSG, "stream": True, "max_tokens": 3}) as r:
                    for line in r.iter_lines():
                        started.set()
                        lines.append(line)

        worker = threading.Thread(target=stream)
        worker.start()
        assert started.wait(5)
        during = stats()
        worker.join(10)
        assert during == {"open_connections": 2, "active_streams": 1, "requests": 1}
        assert lines[-2] == "data: [DONE]"
        deadline = time.monotonic() + 3
        while stats()["open_connections"] != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stats() == {"open_connections": 1, "active_streams": 0, "requests": 1}


def test_client_disconnect_ends_a_slow_stream(ctl, aoai):
    ctl.config(aoai["url"], chunk_delay=0.2)
    with httpx.Client(timeout=10) as c:
        with c.stream("POST", f"{aoai['url']}/openai/deployments/gpt-4o/chat/completions",
                      params={"api-version": "2024-10-21"}, headers=aoai["headers"],
                      json={"messages": MSG, "stream": True}) as r:
            lines = r.iter_lines()  # keep a reference: a collected iterator closes the response
            next(lines)
            assert ctl.stats(aoai["url"])["active_streams"] == 1
    deadline = time.monotonic() + 3  # 20 words * 0.2 s would take 4 s if it ran on
    while ctl.stats(aoai["url"])["active_streams"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ctl.stats(aoai["url"])["active_streams"] == 0
