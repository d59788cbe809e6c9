"""`local.settings.json` `Values`, applied the way `func start` applies them: as environment
variables, where the real environment wins."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from pathlib import Path


def load_local_settings(path: Path = Path("local.settings.json"),
                        environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Copy `Values` into `environ` (existing variables win). Returns the names applied."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from None
    values = data.get("Values", {}) if isinstance(data, dict) else {}
    if not isinstance(values, dict):
        raise SystemExit(f"{path}: 'Values' must be an object of app settings")
    applied = []
    for name, value in values.items():
        if name not in environ and value is not None:
            environ[name] = value if isinstance(value, str) else json.dumps(value)
            applied.append(name)
    return applied
