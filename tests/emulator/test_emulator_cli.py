"""``python -m emulator``: one READY line, working servers, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def launch(*args: str) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "emulator", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("EMULATOR READY "), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, json.loads(line[len("EMULATOR READY "):])


def test_all():
    proc, info = launch("all", "--key", "cli-key")
    try:
        assert set(info["urls"]) == {"azure_openai", "azure_ai_serverless", "azure_ai_foundry", "identity"}
        assert info["keys"]["azure_ai_serverless"] == ["cli-key"] and info["urls"]["identity"].endswith("/msi/token")
        assert all(url.startswith("http://127.0.0.1:") for url in info["urls"].values())
        r = httpx.post(info["urls"]["azure_ai_serverless"] + "/chat/completions",
                       headers={"authorization": "Bearer cli-key"},
                       json={"messages": [{"role": "user", "content": "cli"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("Hello! You said: cli")
        r = httpx.get(info["urls"]["identity"], headers={"x-identity-header": info["identity_header"]},
                      params={"api-version": "2019-08-01", "resource": "https://cognitiveservices.azure.com"})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert proc.stdout.read() == "", "exactly one line on stdout"


def test_single_emulator_on_a_given_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, info = launch("azure-openai", "--port", str(port))
    try:
        assert info["urls"] == {"azure_openai": f"http://127.0.0.1:{port}"}
        key = info["keys"]["azure_openai"][0]
        r = httpx.get(f"http://127.0.0.1:{port}/openai/v1/models", headers={"api-key": key})
        assert r.status_code == 200 and r.json()["object"] == "list"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
