"""`python -m routing serve --demo`: emulators plus a sample route table, callable at once, with a
calm log and a banner whose commands work when pasted."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata

import openai
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from routing.manage.demo import DEMO_KEY
from tests.helpers import REPO, GatewayProcess, access_lines


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    process = GatewayProcess({}, tmp_path_factory.mktemp("demo"), args=("--demo",))
    yield process
    process.stop()


def demo_client(demo) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo.url + "/v1", api_key=DEMO_KEY, max_retries=0)


def test_demo_mode_serves_every_sample_model(demo):
    client = demo_client(demo)
    models = sorted(m.id for m in client.models.list())
    assert models == sorted(["gpt-4o", "o3-mini", "text-embedding-3-small", "llama3", "mistral-large"])
    for model in ("gpt-4o", "o3-mini", "llama3", "mistral-large"):
        chunks = list(client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], stream=True,
            stream_options={"include_usage": True}))
        assert chunks[-1].usage is not None and chunks[-1].choices == []
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Hello!")
    assert client.embeddings.create(model="text-embedding-3-small", input="x").data[0].embedding
    assert f"Gateway key: {DEMO_KEY}" in demo.log() and "curl" in demo.log()


def test_demo_log_is_calm(demo):
    client = demo_client(demo)
    for model in ("gpt-4o", "mistral-large", "llama3"):  # two managed-identity token fetches, one key route
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    log = demo.log()
    assert log.count("Started server process") <= 1, log
    assert log.count(f"Gateway listening on {demo.url}") == 1, log
    # One access record per request, and no other INFO line (no azure.core, azure.identity or
    # uvicorn chatter).
    assert [line for line in log.splitlines() if re.search(r"\bINFO\b", line)] == [], log
    assert len(access_lines(log)) >= 3, log
    assert "azure.core" not in log and "azure.identity" not in log, log
    assert "/v1/chat/completions HTTP" not in log, "no uvicorn access lines"


def banner_command(log: str, start: str) -> str:
    """The command of the banner that begins with `start`, continuation lines joined."""
    lines = log.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith(start))
    command = [lines[first].strip()]
    while command[-1].endswith("\\"):
        first += 1
        command.append(lines[first].strip())
    return "\n".join(command)


def test_banner_curl_streams_when_pasted(demo):
    curl = banner_command(demo.log(), "curl")
    assert curl.split()[1].startswith("-") and "N" in curl.split()[1], "curl needs -N to print events as they come"
    if not (shutil.which("bash") and shutil.which("curl")):
        pytest.skip("needs bash and curl")
    result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("data: [DONE]") and '"usage"' in result.stdout


def test_banner_python_command_names_an_interpreter_with_openai(demo):
    command = banner_command(demo.log(), shlex.quote(sys.executable))
    python = shlex.split(command)[0]
    assert python == sys.executable  # the gateway's own interpreter (GatewayProcess runs this one)
    check = subprocess.run([python, "-c", "import openai"], capture_output=True, timeout=60)
    assert check.returncode == 0, check.stderr
    if not shutil.which("bash"):
        pytest.skip("needs bash")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello! You said: Hi")


# --- what `dev.py serve` installs -----------------------------------------------------------------

def requirement_names(path) -> set[str]:
    names: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith(("-r ", "--requirement ")):
            names |= requirement_names(path.parent / line.split(None, 1)[1])
        elif line and not line.startswith("-"):
            names.add(canonicalize_name(Requirement(line).name))
    return names


def installed_closure(names: set[str]) -> set[str]:
    """The distributions these pull in (their non-extra requirements, transitively)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


# Imported by aiohttp when present (here because checkov pulls them in), never needed.
OPTIONAL_WHEN_INSTALLED = {"aiodns", "pycares", "brotli", "brotlicffi", "uvloop"}


def test_serve_set_covers_everything_the_demo_imports(tmp_path):
    """requirements-local.txt (what `dev.py serve` installs) must hold every distribution that
    serving the demo imports, lazy imports included: the import log of a real demo run says which."""
    demo = GatewayProcess({"PYTHONPROFILEIMPORTTIME": "1"}, tmp_path, args=("--demo",))
    try:
        client = demo_client(demo)
        for model in ("gpt-4o", "llama3", "mistral-large"):
            list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                                stream=True, stream_options={"include_usage": True}))
        client.embeddings.create(model="text-embedding-3-small", input="x")
    finally:
        demo.stop()
    imported = re.findall(r"^import time:.*\|\s*([A-Za-z_][\w.]*)\s*$", demo.log(), re.MULTILINE)
    start = next(i for i, name in enumerate(imported) if name.split(".")[0] == "routing")  # after site's
    top_level = {name.split(".")[0] for name in imported[start:]}
    distributions = metadata.packages_distributions()
    used = {canonicalize_name(dist) for module in top_level for dist in distributions.get(module, ())}
    assert {"uvicorn", "aiohttp", "azure-identity", "starlette"} <= used, "the import log was read wrongly"
    serve_set = installed_closure(requirement_names(REPO / "requirements-local.txt"))
    missing = used - serve_set - OPTIONAL_WHEN_INSTALLED
    assert missing == set(), "imported by `serve --demo` but not installed by requirements-local.txt"
