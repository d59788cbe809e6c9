#!/usr/bin/env python3
"""One command each, on any machine with Python 3.11+:

    python dev.py serve [serve options]   set up .venv, run the gateway (demo mode when no route
                                          is configured in the environment or local.settings.json)
    python dev.py test  [pytest options]  set up .venv, run every test
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_environment() -> None:
    """Create .venv and install the requirements when they changed since the last install."""
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is needed (this is {sys.version.split()[0]}).")
    if not venv_python().exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in REQUIREMENTS)).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if not stamp.exists() or stamp.read_text() != digest:
        print("installing requirements-dev.txt into .venv ...", flush=True)
        subprocess.run([str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(ROOT / "requirements-dev.txt")], check=True, cwd=ROOT)
        stamp.write_text(digest)


def routes_configured() -> bool:
    if any(name.upper().startswith("ROUTE__") for name in os.environ):
        return True
    settings = Path("local.settings.json")
    if settings.is_file():
        values = json.loads(settings.read_text(encoding="utf-8")).get("Values", {})
        return any(name.upper().startswith("ROUTE__") for name in values)
    return False


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("serve", "test"):
        print(__doc__)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "test":
        args = ["-m", "pytest", *(rest or ["-q"])]
    else:
        args = ["-m", "routing", "serve", *rest]
        if "--demo" not in rest and not routes_configured():
            print("No ROUTE__* settings found: starting demo mode against the bundled emulators.\n"
                  "Configure routes in local.settings.json (see local.settings.example.json) to "
                  "serve your own deployments.", flush=True)
            args.append("--demo")
    return subprocess.call([str(venv_python()), *args], cwd=ROOT if command == "test" else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
