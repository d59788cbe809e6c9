"""Hostile clients (DESIGN §8): every cost linear, every buffer bounded, every answer an
OpenAI-shaped error. Real `python -m routing serve` processes over raw loopback sockets, against
the emulators; each test asserts the bound itself (CPU seconds, RSS, seconds to close, bytes)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import socket
import threading
import time

import httpx
import pytest

from tests.conftest import gateway_settings
from tests.helpers import GATEWAY_KEY, GatewayProcess

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
USER = [{"role": "user", "content": "hi"}]
MiB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def hostile(emulators, tmp_path_factory):
    """A gateway with the default bounds, for this module alone (its CPU, RSS and log are ours)."""
    process = GatewayProcess(gateway_settings(emulators), tmp_path_factory.mktemp("hostile"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def tight(emulators, tmp_path_factory):
    """Bounds small enough to fill: 1 MiB body limit = 1 MiB in-flight budget, 1 s body timeout.
    One body of nearly 1 MiB that has arrived fills the budget, so any leak shows as a 503 on the
    next nearly-1-MiB request (`chat_filling`)."""
    settings = {**gateway_settings(emulators), "GATEWAY_MAX_BODY_BYTES": str(MiB),
                "GATEWAY_MAX_INFLIGHT_BODY_BYTES": str(MiB), "GATEWAY_BODY_TIMEOUT": "1"}
    process = GatewayProcess(settings, tmp_path_factory.mktemp("tight"))
    yield process
    process.stop()


# --- raw HTTP over sockets -------------------------------------------------------------------

def head(path: str = "/v1/chat/completions", length: int | None = None, key: bool = True,
         extra: bytes = b"", method: bytes = b"POST") -> bytes:
    lines = [method + b" " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1",
             b"Content-Type: application/json"]
    if key:
        lines.append(f"Authorization: Bearer {GATEWAY_KEY}".encode())
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


def connect(gateway: GatewayProcess, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def response_of(sock: socket.socket) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response


def openai_error(response: http.client.HTTPResponse, status: int, code: str) -> dict:
    assert response.status == status, (response.status, response.read()[:300])
    error = json.loads(response.read())["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["code"] == code, error
    return error


def closed_by_peer(sock: socket.socket, within: float) -> float:
    """Seconds until the gateway closes the connection (reading and discarding what it sends)."""
    start = time.monotonic()
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def chat(gateway, **extra) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, timeout=10,
                      json={"model": "llama3", "messages": USER, **extra})


def post(gateway, content: str | bytes) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH, content=content, timeout=60)


CHAT_PREFIX = '{"model":"llama3","messages":[{"role":"user","content":"hi"}],'


def chat_filling(gateway, size: int = MiB - 64) -> httpx.Response:
    """A valid chat body of `size` bytes: on `tight`, a 200 only when (nearly) all of the
    in-flight budget is free, so a leaked byte count shows."""
    prefix = '{"model":"llama3","messages":[{"role":"user","content":"'
    return post(gateway, prefix + "x" * (size - len(prefix) - 4) + '"}]}')


def held_body(size: int) -> bytes:
    """The first `size` bytes of a chat body that never ends (the rest is never sent)."""
    prefix = b'{"model":"llama3","messages":[{"role":"user","content":"'
    return prefix + b"x" * (size - len(prefix))


# --- 1. many unknown keys: linear, bounded header, responsive meanwhile -------------------------

def test_100k_unknown_keys_cost_milliseconds_and_a_bounded_header(hostile, upstreams, clean):
    keys = 100_000
    pad = "p" * 145
    fields = ",".join(f'"unknown_{i:06d}_{pad}":0' for i in range(keys))
    body = (CHAT_PREFIX + fields + "}").encode()
    assert 15 * MiB < len(body) <= 16 * MiB

    pings: list[float] = []
    stop = threading.Event()

    def ping_health() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                start = time.monotonic()
                assert client.get(hostile.url + "/health").status_code == 200
                pings.append(time.monotonic() - start)
                time.sleep(0.002)

    pinger = threading.Thread(target=ping_health)
    chat(hostile)  # warm: first-request work is not the big body's
    before = cpu_seconds(hostile.process.pid)
    pinger.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", hostile.port, timeout=60)
        connection.request("POST", "/v1/chat/completions", body=body,
                           headers={**AUTH, "Content-Type": "application/json"})
        response = connection.getresponse()  # http.client: ≤ 64 KiB per header line
        content = response.read()
        dropped = response.getheader("x-gateway-dropped-params")
        connection.close()
    finally:
        stop.set()
        pinger.join(15)
    spent = cpu_seconds(hostile.process.pid) - before

    assert response.status == 200, content[:300]
    assert len(dropped) <= 1100, len(dropped)
    named = dropped.split(",")
    cut = re.fullmatch(r"\+(\d+) more", named[-1])
    assert cut and len(named) - 1 + int(cut.group(1)) == keys
    assert named[0] == f"unknown_000000_{pad}"
    # Receiving and parsing 16 MiB is ~0.1-0.3 s here; the quadratic version took minutes.
    print(f"\n100 000 unknown keys, {len(body) / MiB:.1f} MiB: gateway CPU {spent * 1000:.0f} ms, "
          f"/health max {max(pings) * 1000:.0f} ms over {len(pings)} pings")
    assert spent < 1.5, f"{spent:.2f} s of gateway CPU"
    assert pings and max(pings) < 1.0, f"/health took {max(pings):.2f} s"
    sent = upstreams["serverless"].requests()[-1]["body"]
    assert set(sent) == {"model", "messages"}


# --- 2. slow uploads: in-flight budget, body timeout, never leaked ------------------------------

def test_held_uploads_are_bounded_in_memory(emulators, tmp_path):
    """40 keyed clients each declare 15 MiB and send 14 MiB of it, then stall. Only bytes that
    arrived count against the 128 MiB budget: the declarations alone take nothing, and a client
    whose bytes would push past it gets 503 + Retry-After; at most 9 hold 14 MiB each (10 would
    be 140 MiB), and RSS grows by the held bodies only."""
    gateway = GatewayProcess(gateway_settings(emulators), tmp_path)
    socks: list[socket.socket] = []
    try:
        assert chat(gateway).status_code == 200
        pid = gateway.process.pid
        rss_before = rss_mib(pid)
        prefix = b'{"model":"gpt-9","messages":[{"role":"user","content":"'
        for _ in range(40):
            sock = connect(gateway)
            sock.sendall(head(length=15 * MiB) + prefix)
            socks.append(sock)
        time.sleep(0.3)
        # 40 declared 15 MiB bodies (600 MiB) with a few bytes each arrived: nobody is refused.
        assert select.select(socks, [], [], 0)[0] == []

        rejected: dict[socket.socket, http.client.HTTPResponse] = {}
        chunk = b"x" * MiB
        for sock in socks:  # one client after the other sends 14 of its 15 MiB, then stalls
            for _ in range(14):
                if select.select([sock], [], [], 0)[0]:
                    break  # answered (503): stop sending
                try:
                    sock.sendall(chunk)
                except OSError:  # the gateway answered and closed meanwhile
                    break
        time.sleep(1)  # the gateway reads what was sent
        deadline = time.monotonic() + 5
        while len(rejected) < 31 and time.monotonic() < deadline:
            readable, _, _ = select.select([s for s in socks if s not in rejected], [], [], 0.5)
            for sock in readable:
                rejected[sock] = response_of(sock)
        admitted = [s for s in socks if s not in rejected]
        for response in rejected.values():
            openai_error(response, 503, "server_busy")
            assert response.getheader("retry-after") == "1"
        assert len(rejected) >= 31 and 1 <= len(admitted) <= 9, (len(rejected), len(admitted))

        rss_held, peak = rss_mib(pid), rss_mib(pid, "VmHWM")
        print(f"\nheld uploads: {len(admitted)} admitted, {len(rejected)} refused (503); gateway RSS "
              f"{rss_before:.0f} MiB → {rss_held:.0f} MiB (peak {peak:.0f} MiB)")
        assert rss_held - rss_before > 14 * len(admitted) * 0.5  # the bodies really are held
        assert peak - rss_before < 400, (rss_before, peak)
    finally:
        for sock in socks:
            sock.close()  # clients leave mid-upload
    try:
        # The whole budget is free again: 8 more 15 MiB bodies are admitted and parsed.
        for _ in range(8):
            sock = connect(gateway)
            sock.sendall(head(length=15 * MiB))
            payload = b'{"model":"gpt-9","messages":[{"role":"user","content":"'
            payload += b"x" * (15 * MiB - len(payload) - 4) + b'"}]}'
            sock.sendall(payload)
            openai_error(response_of(sock), 404, "model_not_found")
            sock.close()
        assert "Traceback" not in gateway.log()
    finally:
        gateway.stop()


def test_budget_full_is_503_and_freed_when_the_client_leaves(tight, upstreams):
    holder = connect(tight)
    holder.sendall(head(length=MiB) + held_body(MiB - 16))  # 16 bytes short of the budget
    time.sleep(0.3)
    busy = chat(tight)  # its ~70 bytes would push past the budget
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_busy"
    assert busy.headers["retry-after"] == "1"
    holder.close()  # leaves mid-upload
    deadline = time.monotonic() + 5  # the gateway notices the departure within moments
    while (ok := chat_filling(tight)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ok.status_code == 200  # the whole budget is free again


def test_declared_but_unsent_bodies_hold_no_budget(hostile, upstreams, clean):
    """The attack on reserving Content-Length up front: 10 keyed connections declare 16 MiB each
    (160 MiB, past the 128 MiB budget) and send nothing. They hold no memory, so they hold none
    of the budget: a legitimate small POST gets 200 at once, not 503 until their body timeout."""
    idle: list[socket.socket] = []
    try:
        for _ in range(10):
            sock = connect(hostile)
            sock.sendall(head(length=16 * MiB))
            idle.append(sock)
        time.sleep(0.5)  # the gateway has taken every head and is waiting for the bodies
        start = time.monotonic()
        response = chat(hostile)
        took = time.monotonic() - start
        assert response.status_code == 200, response.text
        assert took < 2, took
        assert select.select(idle, [], [], 0)[0] == []  # none was refused either: still waiting
    finally:
        for sock in idle:
            sock.close()


def test_unauthenticated_clients_hold_no_body_memory(tight):
    anonymous = connect(tight)
    anonymous.sendall(head(length=MiB, key=False) + b'{"model":"llama3",')
    openai_error(response_of(anonymous), 401, "missing_api_key")  # before any body byte is read
    assert chat(tight).status_code == 200  # the budget was never touched
    anonymous.close()


def test_body_timeout_is_408_and_frees_the_budget(tight):
    slow = connect(tight)
    start = time.monotonic()
    slow.sendall(head(length=MiB) + held_body(MiB - 16))  # fills the budget, then stalls
    error = openai_error(response_of(slow), 408, "request_timeout")
    took = time.monotonic() - start
    assert "1 seconds" in error["message"]
    assert 0.9 <= took < 3, took
    assert closed_by_peer(slow, 3) < 3  # the connection is closed after the 408
    slow.close()
    assert chat_filling(tight).status_code == 200  # not a 503: its bytes were given back


def test_too_much_body_is_413_and_frees_the_budget(tight):
    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"model":"llama3","messages":[{"role":"user","content":"'
        for _ in range(3):
            yield b"x" * (MiB // 2)
    response = httpx.post(tight.url + "/v1/chat/completions", headers=AUTH, content=chunks())
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    declared = connect(tight)
    declared.sendall(head(length=2 * MiB) + b"{")
    openai_error(response_of(declared), 413, "request_too_large")
    declared.close()
    assert chat_filling(tight).status_code == 200  # the chunks taken before the 413 were given back
    assert "Traceback" not in tight.log()


# --- 3. JSON the parser accepts but no upstream should see ------------------------------------

def nested(depth: int) -> str:
    """An unknown key whose value makes the whole body `depth` levels deep (the top is 1)."""
    return '"x":' + "[" * (depth - 1) + "]" * (depth - 1)


@pytest.mark.parametrize("fragment, why", [
    (nested(65), "nested deeper than 64"),
    (nested(1000), "nested deeper than 64"),
    ('"temperature":NaN', "NaN or Infinity"),
    ('"temperature":Infinity', "NaN or Infinity"),
    ('"temperature":-Infinity', "NaN or Infinity"),
    ('"temperature":1e999', "too large"),
    ('"temperature":-1e999', "too large"),
    ('"seed":' + "9" * 5000, "too large"),
])
def test_json_no_upstream_takes_is_400_invalid_json(hostile, upstreams, clean, fragment, why):
    response = post(hostile, CHAT_PREFIX + fragment + "}")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json" and why in error["message"]
    assert upstreams["serverless"].requests() == []


def test_json_deeper_than_the_stack_is_400_not_500(hostile, upstreams, clean):
    response = post(hostile, b"[" * 200_000 + b"]" * 200_000)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    assert "Traceback" not in hostile.log() and " ERROR " not in hostile.log()


def test_16_mib_of_arrays_is_refused_before_parsing(hostile, upstreams, clean):
    """~8 M nested arrays: parsed, CPython's GC made this 4-30 s of CPU; counted, milliseconds."""
    towers = ",".join(["[" * 62 + "]" * 62] * 134_000)
    before = cpu_seconds(hostile.process.pid)
    response = post(hostile, CHAT_PREFIX + '"x":[' + towers + "]}")
    spent = cpu_seconds(hostile.process.pid) - before
    assert response.status_code == 400 and "more than 100000 arrays" in response.json()["error"]["message"]
    assert spent < 0.5, f"{spent:.2f} s of gateway CPU"
    # Brackets inside strings are text, not arrays: 300 000 of them pass.
    response = chat(hostile, messages=[{"role": "user", "content": "[{" * 150_000}])
    assert response.status_code == 200, response.text
    assert upstreams["serverless"].requests()[-1]["body"]["messages"][0]["content"] == "[{" * 150_000


def test_lone_surrogate_key_is_dropped_and_named(hostile, upstreams, clean):
    """Legal JSON that is not UTF-8 (a lone surrogate) in a dropped key: named, not a 500."""
    response = post(hostile, CHAT_PREFIX + '"\\ud800x":1}')
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-dropped-params"] == "%ED%A0%80x"


def test_json_at_the_nesting_limit_is_accepted(hostile, upstreams, clean):
    response = post(hostile, CHAT_PREFIX + nested(64) + "}")
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-dropped-params"] == "x"


# --- 4. trailing slash, User-Agent -------------------------------------------------------------

@pytest.mark.parametrize("method, path", [("POST", "/v1/chat/completions/"), ("GET", "/v1/models/"),
                                          ("GET", "/health/")])
def test_trailing_slash_is_404_without_redirect(hostile, method, path):
    response = httpx.request(method, hostile.url + path, json={"model": "llama3", "messages": USER},
                             headers={**AUTH, "Host": "evil.example"})
    assert response.status_code == 404, response.status_code
    assert "location" not in response.headers
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("agent, forwarded", [
    (b"my-app/1.0 (python)", "my-app/1.0 (python)"),
    (b"a" * 256, "a" * 256),
    (b"a" * 257, "azure-llm-gateway"),
    (b"b" * 20_000, "azure-llm-gateway"),
    ("caf\u00e9/1.0".encode("latin-1"), "azure-llm-gateway"),
    ("caf\u00e9/1.0".encode("utf-8"), "azure-llm-gateway"),
    (b"tab\tinside", "azure-llm-gateway"),
])
def test_user_agent_forwarded_only_when_short_and_printable(hostile, upstreams, clean, agent, forwarded):
    response = httpx.post(hostile.url + "/v1/chat/completions",
                          headers=[(b"Authorization", f"Bearer {GATEWAY_KEY}".encode()),
                                   (b"User-Agent", agent)],
                          json={"model": "llama3", "messages": USER})
    assert response.status_code == 200, response.text
    assert upstreams["serverless"].requests()[-1]["headers"]["user-agent"] == forwarded


# --- 5. the local server's request head: size and time ----------------------------------------

def test_oversized_head_is_431_and_closed(hostile):
    sock = connect(hostile)
    start = time.monotonic()
    sock.sendall(head("/v1/models", method=b"GET", key=False, extra=b"X-Junk: " + b"a" * 100_000 + b"\r\n"))
    response = response_of(sock)
    error = openai_error(response, 431, "request_header_fields_too_large")
    assert "32768 bytes" in error["message"]
    assert closed_by_peer(sock, 3) < 3 and time.monotonic() - start < 3
    sock.close()


def test_100_mb_head_is_cut_off_early(hostile):
    rss_before = rss_mib(hostile.process.pid)
    sock = connect(hostile)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Junk: ")
    sent, start = 0, time.monotonic()
    with pytest.raises(OSError):  # reset or broken pipe once the gateway has closed
        while sent < 100 * MiB:
            sock.sendall(b"a" * MiB)
            sent += MiB
    sock.close()
    assert sent < 32 * MiB and time.monotonic() - start < 5, sent  # socket buffers, not the gateway
    assert rss_mib(hostile.process.pid) - rss_before < 16


def test_large_legal_heads_still_work(hostile):
    """Heads just under the limit with the body in the same write (a read that spans the end of
    the head), twice on one keep-alive connection (the count starts afresh per request)."""
    padding = b"X-Padding: " + b"p" * 30_000 + b"\r\n"
    body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "y" * 300_000}]}).encode()
    sock = connect(hostile)
    for _ in range(2):
        sock.sendall(head(length=len(body), extra=padding) + body)
        response = response_of(sock)
        assert response.status == 200, response.read()[:300]
        response.read()
    sock.close()


def test_slow_or_idle_heads_are_closed_after_10_seconds(hostile):
    """A head not complete 10 s after connecting (or after the previous response) is answered
    408 and closed; a connection that sends nothing is closed silently."""
    took: dict[str, float] = {}
    trickled = bytearray()

    def trickle() -> None:  # one header line a second, forever
        sock, start = connect(hostile, timeout=20), time.monotonic()
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError):
            while time.monotonic() - start < 20:
                sock.sendall(b"X-Slow: 1\r\n")
                if select.select([sock], [], [], 1)[0]:
                    data = sock.recv(65536)
                    trickled.extend(data)
                    if not data:
                        break
        took["trickle"] = time.monotonic() - start
        sock.close()

    def idle() -> None:
        sock, start = connect(hostile, timeout=20), time.monotonic()
        closed_by_peer(sock, 20)
        took["idle"] = time.monotonic() - start
        sock.close()

    def after_response() -> None:  # keep-alive: a response, then a second head that stalls
        sock = connect(hostile, timeout=20)
        sock.sendall(head("/health", method=b"GET", key=False))
        response_of(sock).read()
        start = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # this cancels uvicorn's keep-alive timer
        closed_by_peer(sock, 20)
        took["second"] = time.monotonic() - start
        sock.close()

    threads = [threading.Thread(target=f) for f in (trickle, idle, after_response)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(25)
    assert set(took) == {"trickle", "idle", "second"}
    assert all(9.5 <= seconds < 12 for seconds in took.values()), took
    assert trickled.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), bytes(trickled[:200])
    assert b'"code": "request_timeout"' in trickled
