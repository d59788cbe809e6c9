"""Fixtures for the emulator tests: real uvicorn servers on loopback, httpx clients, strict SSE parsing."""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from emulator import servers


@pytest.fixture(scope="session")
def _emulator_set() -> Iterator[servers.EmulatorSet]:
    running = servers.start_all()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def _control_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:  # one client: building one costs ~50 ms (TLS context)
        yield c


@pytest.fixture
def emus(_emulator_set: servers.EmulatorSet, _control_client: httpx.Client) -> servers.EmulatorSet:
    """The four emulators, with records, faults and config reset before each test."""
    for url in _emulator_set.urls.values():
        base = url.removesuffix("/msi/token")
        _control_client.post(f"{base}/_emulator/reset").raise_for_status()
    return _emulator_set


@pytest.fixture
def client(_control_client: httpx.Client) -> httpx.Client:
    return _control_client


@pytest.fixture
def aoai(emus: servers.EmulatorSet) -> dict[str, Any]:
    """Azure OpenAI emulator URL and auth header."""
    return {"url": emus.urls["azure_openai"], "headers": {"api-key": emus.keys["azure_openai"][0]}}


@pytest.fixture
def serverless(emus: servers.EmulatorSet) -> dict[str, Any]:
    key = emus.keys["azure_ai_serverless"][0]
    return {"url": emus.urls["azure_ai_serverless"], "key": key, "headers": {"authorization": f"Bearer {key}"}}


@pytest.fixture
def foundry(emus: servers.EmulatorSet) -> dict[str, Any]:
    key = emus.keys["azure_ai_foundry"][0]
    return {"url": emus.urls["azure_ai_foundry"], "key": key, "headers": {"api-key": key}}


def _parse_sse(raw: bytes | str, *, expect_done: bool = True) -> list[dict[str, Any]]:
    """Parse an SSE body strictly: only ``data: <json>\\n\\n`` events, LF only, ``[DONE]`` last."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    assert "\r" not in text, "SSE must use LF line endings only"
    assert text.endswith("\n\n"), f"stream does not end with a blank line: {text[-40:]!r}"
    events = text[:-2].split("\n\n")
    payloads: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        assert "\n" not in event, f"event {i} spans several lines: {event!r}"
        assert event.startswith("data: "), f"event {i} is not a data event: {event!r}"
        data = event[len("data: "):]
        if data == "[DONE]":
            assert expect_done and i == len(events) - 1, "[DONE] must be the last event"
            return payloads
        compact = json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False)
        assert data == compact, f"event {i} JSON is not compact"
        payloads.append(json.loads(data))
    assert not expect_done, "stream ended without data: [DONE]"
    return payloads


class Control:
    """The ``/_emulator/*`` endpoints of any emulator, by base URL."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def records(self, base: str) -> list[dict[str, Any]]:
        return self.client.get(f"{base}/_emulator/requests").json()

    def fault(self, base: str, **rule: Any) -> dict[str, Any]:
        response = self.client.post(f"{base}/_emulator/faults", json=rule)
        assert response.status_code == 200, response.text
        return response.json()

    def stats(self, base: str) -> dict[str, Any]:
        return self.client.get(f"{base}/_emulator/stats").json()

    def config(self, base: str, **knobs: Any) -> dict[str, Any]:
        response = self.client.post(f"{base}/_emulator/config", json=knobs)
        assert response.status_code == 200, response.text
        return response.json()


# Helpers are fixtures, not imports: tests/ is not a package and another conftest owns tests/.
@pytest.fixture
def parse_sse():
    return _parse_sse


@pytest.fixture
def ctl(_control_client: httpx.Client) -> Control:
    return Control(_control_client)
