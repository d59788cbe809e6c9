"""The venv the gateway target runs in: what Azure deploys (requirements.txt), not the dev venv.

The dev venv (.venv, requirements-dev.txt) holds test and benchmark tools that change how the
gateway runs: the upstream's httptools turns on uvicorn's fast HTTP parser, checkov's aiodns swaps
aiohttp's DNS resolver, orjson gets imported by fastapi. Measured in the dev venv, the gateway
would be faster than what Azure runs. So the harness builds, once per requirements.txt, a venv
holding requirements.txt and nothing else, and serves the gateway (`python -m routing serve`) from
it. The bare forwarders, the upstream and the load generator keep running in the harness's venv.

Nothing is added for local serving: `routing serve` needs Starlette and uvicorn, and both come
with requirements.txt (azurefunctions-extensions-http-fastapi requires fastapi, hence Starlette,
and uvicorn, which is also the server the Functions worker runs the extension's app on).

    python -m bench.runtime_env        # build it if needed; print where and what it holds

Cache: `bench/.venv-runtime` (or $BENCH_RUNTIME_VENV), rebuilt when requirements.txt, the Python
version or the base interpreter change (the key is a hash of them); a lock file serialises
concurrent builds. pip installs from its own cache when the wheels are there (they are after
`pip install -r requirements-dev.txt`): ~10 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import venv
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.procs import REPO

REQUIREMENTS = REPO / "requirements.txt"
# What local serving needs beyond requirements.txt (pip requirement strings): nothing, see above.
LOCAL_SERVING_EXTRAS: tuple[str, ...] = ()
DEFAULT_DIR = REPO / "bench" / ".venv-runtime"
STAMP = "bench-runtime.json"
BUILD_TIMEOUT_S = 900

# Run by the venv's own Python: what it holds, and what uvicorn would pick there.
_PROBE = r"""
import importlib.metadata as md, importlib.util as u, json, platform, sys
packages = {}
for dist in md.distributions():
    name = dist.metadata["Name"]
    if name:
        packages[name.lower().replace("_", "-")] = dist.version
http = loop = None
if u.find_spec("uvicorn"):
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    http = AutoHTTPProtocol.__name__
    loop = "uvloop" if u.find_spec("uvloop") else "asyncio"
print(json.dumps({"python": platform.python_version(), "executable": sys.executable,
                  "prefix": sys.prefix, "packages": dict(sorted(packages.items())),
                  "uvicorn_http": http, "uvicorn_loop_auto": loop,
                  "starlette": u.find_spec("starlette") is not None}))
"""


@dataclass
class GatewayEnv:
    """Where a Python comes from and what it holds (for the report)."""

    kind: str                   # "runtime" (requirements.txt only) or "dev" (the harness's venv)
    python: str                 # the interpreter to run
    description: str
    packages: dict[str, str] = field(default_factory=dict)
    uvicorn_http: str | None = None       # uvicorn's http="auto" protocol class there
    uvicorn_loop_auto: str | None = None  # what uvicorn.run(loop="auto") would use there
    key: str | None = None
    requirements: list[str] = field(default_factory=list)
    built_now: bool = False
    build_s: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def probe(python: str) -> dict:
    proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60, cwd="/",
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")})
    if proc.returncode != 0:
        raise RuntimeError(f"{python}: probe failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def cache_key() -> str:
    digest = hashlib.sha256()
    for part in (REQUIREMENTS.read_bytes(), "\n".join(LOCAL_SERVING_EXTRAS).encode(), sys.version.encode(),
                 platform.machine().encode(), os.path.realpath(_base_python()).encode()):
        digest.update(part + b"\0")
    return digest.hexdigest()[:16]


def venv_dir() -> Path:
    return Path(os.environ.get("BENCH_RUNTIME_VENV") or DEFAULT_DIR)


def _venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run building the same venv: wait for it
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pip_has_python_option() -> bool:
    """pip >= 22.3 installs into another interpreter with `--python`: no pip inside the venv."""
    try:
        import pip
    except ImportError:
        return False
    major, minor = (int(x) for x in pip.__version__.split(".")[:2])
    return (major, minor) >= (22, 3)


def _build(path: Path, key: str, log) -> float:
    started = time.monotonic()
    shutil.rmtree(path, ignore_errors=True)
    external_pip = _pip_has_python_option()
    venv.EnvBuilder(with_pip=not external_pip, symlinks=os.name != "nt", clear=True).create(path)
    python = str(_venv_python(path))
    pip = ([sys.executable, "-m", "pip", "--python", python] if external_pip else [python, "-m", "pip"])
    command = [*pip, "install", "--quiet", "--disable-pip-version-check", "--no-input",
               "-r", str(REQUIREMENTS), *LOCAL_SERVING_EXTRAS]
    log(f"bench: building the runtime venv {path} (requirements.txt only) ...")
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install into {path} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.monotonic() - started


def ensure(log=print) -> GatewayEnv:
    """The runtime venv, built if missing or stale; described."""
    path, key = venv_dir(), cache_key()
    built, build_s = False, None
    with _locked(path):
        stamp = _read_stamp(path)
        if stamp is None or stamp.get("key") != key or not _venv_python(path).exists():
            build_s = _build(path, key, log)
            facts = probe(str(_venv_python(path)))
            if facts["uvicorn_http"] is None or not facts["starlette"]:
                raise RuntimeError("requirements.txt no longer brings uvicorn and Starlette, which "
                                   "`python -m routing serve` needs: add them to LOCAL_SERVING_EXTRAS "
                                   "in bench/runtime_env.py")
            stamp = {"key": key, "requirements": _requirement_lines(), "extras": list(LOCAL_SERVING_EXTRAS),
                     "build_s": round(build_s, 1), "built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     **facts}
            (path / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")  # last: marks the venv complete
            built = True
            log(f"bench: runtime venv ready in {build_s:.0f} s")
    shown = _shown(path)
    extras = f" + {', '.join(LOCAL_SERVING_EXTRAS)}" if LOCAL_SERVING_EXTRAS else ""
    return GatewayEnv(kind="runtime", python=str(_venv_python(path)),
                      description=f"runtime venv `{shown}`: requirements.txt only{extras}",
                      packages=stamp["packages"], uvicorn_http=stamp["uvicorn_http"],
                      uvicorn_loop_auto=stamp["uvicorn_loop_auto"], key=key,
                      requirements=stamp["requirements"], built_now=built,
                      build_s=build_s if built else stamp.get("build_s"))


def current(kind: str = "dev") -> GatewayEnv:
    """The harness's own interpreter (the dev venv when run as documented)."""
    facts = probe(sys.executable)
    return GatewayEnv(kind=kind, python=sys.executable,
                      description=f"the harness's venv `{_shown(Path(sys.prefix))}`",
                      packages=facts["packages"], uvicorn_http=facts["uvicorn_http"],
                      uvicorn_loop_auto=facts["uvicorn_loop_auto"])


def other(python: str) -> GatewayEnv:
    """Any other interpreter (e.g. a venv built from another requirements.txt, to compare)."""
    path = Path(python)
    if not path.is_file():
        raise FileNotFoundError(f"{python}: no such interpreter")
    facts = probe(python)
    return GatewayEnv(kind=_shown(Path(facts["prefix"])), python=python,
                      description=f"the venv `{_shown(Path(facts['prefix']))}`",
                      packages=facts["packages"], uvicorn_http=facts["uvicorn_http"],
                      uvicorn_loop_auto=facts["uvicorn_loop_auto"])


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _requirement_lines() -> list[str]:
    return [line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


if __name__ == "__main__":
    from bench.report import environment_line

    runtime = ensure()
    print(environment_line("Runtime venv", runtime.to_json()))
    print(f"python: {runtime.python}\nkey: {runtime.key}\nrequirements: {runtime.requirements}")
