"""A consumers file → `CONSUMER__<NAME>__<FIELD>` app settings (DESIGN §9).

YAML or JSON, `{"consumers": [...]}` or a bare list of consumer objects whose field names are
those of the Bicep `consumers` parameter (infra/main.bicep), plus the keys:

    consumers:
      - name: team-a                      # CONSUMER__team-a__*; letters, digits, '_', '.', '-'
        keys: [os.environ/TEAM_A_KEY, os.environ/TEAM_A_NEXT_KEY]   # two allow rotation
        models: [gpt-4o, llama3]          # default: every model
        tokensPerMinute: 50000
        requestsPerMinute: 300
        tokenQuota: 10000000
        quotaPeriod: monthly              # hourly, daily, weekly or monthly
      - name: batch-bot
        principals: [3f2b8a9e-1c4d-4e5f-8a6b-7c8d9e0f1a2b]   # Entra object or client ids
      - name: team-b
        keys: "@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/consumer-team-b-keys)"

`keys` is a list of keys or one comma-separated string; either may be `os.environ/NAME` (the
variable NAME, or what `--key-ref NAME=...` maps it to), and the whole value may be a Key Vault
reference (App Service resolves it to the comma-separated keys). Only the conversion lives here:
whether the result is a valid consumer table is decided by the gateway's own loader.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routing.config.consumers import CONSUMER_FIELDS, CONSUMER_PREFIX
from routing.manage.settings_io import CommandError, camel_case, is_kv_reference, load_document, resolve_reference

# Consumer-object field → setting field, derived from the loader's own list (the Bicep's names;
# tests/test_consumers_cli.py checks them against infra/app/api.bicep).
FILE_FIELDS = {camel_case(setting_field): setting_field for setting_field in CONSUMER_FIELDS}
LIST_FIELDS = ("KEYS", "PRINCIPALS", "MODELS")  # a list, or one comma-separated string


@dataclass
class ConvertedConsumers:
    settings: dict[str, str] = field(default_factory=dict)  # CONSUMER__* name → value, in file order
    sources: dict[str, str] = field(default_factory=dict)  # consumer name → where the file defines it


def read_consumers_file(path: Path, environ: Mapping[str, str] = os.environ,
                        key_refs: Mapping[str, str] | None = None) -> ConvertedConsumers:
    """Parse `path` and convert it; raise CommandError listing every problem."""
    document = load_document(path, "consumers")
    if isinstance(document, Mapping) and set(document) == {"consumers"} and isinstance(document["consumers"], list):
        objects = [(f"consumers[{i}]", consumer) for i, consumer in enumerate(document["consumers"])]
    elif isinstance(document, list):
        objects = [(f"[{i}]", consumer) for i, consumer in enumerate(document)]
    else:
        raise CommandError([f"{path}: expected {{\"consumers\": [...]}} or a list of consumers"])
    errors: list[str] = []
    converted = ConvertedConsumers()
    names: dict[str, str] = {}  # lower-cased name → where; the loader's names are case-insensitive
    for where, consumer in objects:
        name = consumer.get("name") if isinstance(consumer, Mapping) else None
        if not isinstance(name, str) or not name.strip() or "__" in name:
            errors.append(f"{where}: 'name' is required: letters, digits, '_', '.' and '-', no '__' "
                          f"(it becomes {CONSUMER_PREFIX}<NAME>__<FIELD>)")
            continue
        if name.lower() in names:
            errors.append(f"{where}: name {name!r} is already used by {names[name.lower()]}")
            continue
        names[name.lower()] = converted.sources[name] = where
        errors_before, order = len(errors), list(FILE_FIELDS)
        for key, value in sorted(consumer.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else -1):
            if key == "name":
                continue
            setting_field = FILE_FIELDS.get(key)
            if setting_field is None:
                hint = difflib.get_close_matches(str(key), order, n=1)
                errors.append(f"{where}: unknown field {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; allowed: name, {', '.join(order)}")
                continue
            value = _setting_value(value, f"{where}: {key}", setting_field, environ, key_refs or {}, errors)
            if value:  # not given → the gateway's default applies
                converted.settings[f"{CONSUMER_PREFIX}{name}__{setting_field}"] = value
        given = any(setting.startswith(f"{CONSUMER_PREFIX}{name}__") for setting in converted.settings)
        if not given and len(errors) == errors_before:
            errors.append(f"{where}: consumer {name!r} gives no field: without keys or principals nobody "
                          "could call as it")
    if errors:
        raise CommandError(errors)
    return converted


def _setting_value(value: Any, where: str, setting_field: str, environ: Mapping[str, str],
                   key_refs: Mapping[str, str], errors: list[str]) -> str | None:
    """Lists as comma-separated text, numbers as digits, `os.environ/NAME` resolved."""
    if setting_field in LIST_FIELDS:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            errors.append(f"{where}: expected a list of strings or one comma-separated string")
            return None
        items = [item.strip() for item in items]
        resolved = [resolve_reference(item, where, environ, key_refs, errors) for item in items]
        if None in resolved:
            return None
        if setting_field == "KEYS" and len(resolved) > 1 and any(is_kv_reference(item) for item in resolved):
            errors.append(f"{where}: a Key Vault reference must be the whole value (its secret holds the "
                          "comma-separated keys)")
            return None
        return ",".join(item.strip() for item in resolved if item.strip())
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors.append(f"{where}: expected {'a period name' if setting_field == 'QUOTA_PERIOD' else 'a whole number'}")
        return None
    return str(value).strip()
