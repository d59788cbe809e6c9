"""Consumer management without redeploying: `python -m routing consumers convert | diff | list`.

  convert FILE --format local-settings|appsettings-json|env [--out PATH] [--key-ref NAME=VALUE]
          [--current local.settings.json | --current-json appsettings.json]
  diff FILE [--current local.settings.json | --current-json appsettings.json] [--app --resource-group]
  list [--current local.settings.json | --current-json appsettings.json]

FILE is a consumers file (YAML or JSON): {"consumers": [...]} with the Bicep's consumer fields and
`keys` (see routing/manage/consumers_file.py). It replaces every CONSUMER__* setting of the current
settings, which default to the environment plus ./local.settings.json, as `python -m routing check`
reads them; --current-json takes the output of `az functionapp config appsettings list`. The result
(the current routes and GATEWAY_* settings with the file's consumers) is validated by the gateway's
own loader before anything is written: MODELS must name models of the current routes. No key is
ever printed: diff and list show `<n keys>`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from routing.config.consumers import AUTH_MODES, CONSUMER_PREFIX, DEFAULT_CONSUMER, ConsumerTable
from routing.config.settings import SettingsError, load_route_table
from routing.manage.consumers_file import LIST_FIELDS, read_consumers_file
from routing.manage.settings_io import (CommandError, SettingsKind, add_parser, current_settings, diff_command,
                                        is_kv_reference, merge_local_settings, run, settings_text, write_output)

# The loader requires an inbound key while GATEWAY_AUTH accepts keys; when the current settings
# have none (e.g. only the deployed app has them), this stands in for it.
PLACEHOLDER_GATEWAY_KEY = "placeholder-for-validation"
LIST_COLUMNS = ("name", "keys", "principals", "models", "tokens/min", "requests/min", "quota")


def add_consumers_parser(sub: argparse._SubParsersAction) -> None:
    add_parser(sub, CONSUMERS, "convert a consumers file to app settings, diff it against the current settings, "
               "list the current consumers", __doc__, _convert, _diff, _list, convert_current=True)


def run_consumers(args: argparse.Namespace) -> int:
    return run(CONSUMERS, args)


# --- commands ------------------------------------------------------------------------------


def _convert(args: argparse.Namespace) -> int:
    converted = read_consumers_file(args.file, os.environ, dict(args.key_ref))
    if args.format == "local-settings":
        if args.current or args.current_json:
            raise CommandError(["--current/--current-json: --format local-settings validates the file it merges "
                                "into (--out, default ./local.settings.json)"])
        path = args.out or Path("local.settings.json")
        table, removed = merge_local_settings(CONSUMERS, path, converted.settings, converted.sources)
        print(f"{path}: {len(converted.settings)} consumer settings written"
              + (f"; removed {', '.join(removed)}" if removed else ""), file=sys.stderr)
    else:
        current, _ = current_settings(args)
        others = {name: value for name, value in current.items() if not CONSUMERS.owns(name)}
        # Only App Service resolves Key Vault references; env lines feed local runs and containers.
        table = _validate({**others, **converted.settings}, platform=args.format == "appsettings-json",
                          sources=converted.sources)
        write_output(args.out, settings_text(converted.settings, args.format))
    names = {name.lower() for name in converted.sources}
    print("consumers: " + (", ".join(_summary(c) for n, c in table.consumers.items() if n in names) or "none"),
          file=sys.stderr)
    return 0


def _diff(args: argparse.Namespace) -> int:
    converted = read_consumers_file(args.file, os.environ, dict(args.key_ref))
    return diff_command(CONSUMERS, args, converted.settings, converted.sources)


def _list(args: argparse.Namespace) -> int:
    current, platform = current_settings(args)
    table = _validate(current, platform=platform, sources={}, complete=True)
    raw = {name.upper(): value for name, value in current.items()}
    rows = [LIST_COLUMNS]
    for name, consumer in table.consumers.items():
        limits = consumer.limits
        keys = [raw.get(f"{CONSUMER_PREFIX}{name.upper()}__KEYS", "")]
        if name == DEFAULT_CONSUMER:
            keys.append(raw.get("GATEWAY_API_KEYS", ""))
        rows.append((name, _keys_shown(keys), str(len(consumer.principals)), ",".join(sorted(consumer.models)) if consumer.models else "all",
                     _number(limits.tokens_per_minute), _number(limits.requests_per_minute),
                     f"{limits.token_quota}/{limits.quota_period}" if limits.token_quota else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_COLUMNS))]
    modes = ",".join(table.modes) or "none"
    print(f"# GATEWAY_AUTH={modes}" + (f"; Entra tenant {table.entra.tenant}" if table.entra else ""))
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


# --- validating ----------------------------------------------------------------------------


def _validate(settings: Mapping[str, str], *, platform: bool, sources: Mapping[str, str],
              complete: bool = False) -> ConsumerTable:
    """The consumer table the gateway would load from `settings` (routes included), or CommandError.
    Unless the settings are `complete` (list), a missing GATEWAY_API_KEYS may live elsewhere."""
    environ = dict(settings)
    auth = (environ.get("GATEWAY_AUTH") or "keys").strip().lower().replace(" ", "")
    if not complete and "keys" in AUTH_MODES.get(auth, ()) and not environ.get("GATEWAY_API_KEYS", "").strip():
        environ["GATEWAY_API_KEYS"] = PLACEHOLDER_GATEWAY_KEY
    if platform:  # App Service resolves these; each stands in for its own keys (no false duplicates)
        environ = {name: f"resolved-by-app-service-{name}" if is_kv_reference(value) else value
                   for name, value in environ.items()}
    try:
        return load_route_table(environ).consumers
    except SettingsError as exc:
        lines = [_with_source(line, sources) for line in exc.errors]
        if any("__MODELS: unknown model" in line for line in exc.errors):
            lines.append("hint: MODELS are checked against the routes of the current settings; validate against "
                         "the deployed app's with --current-json (az functionapp config appsettings list -o json)")
        if not platform and any("Key Vault reference" in line for line in exc.errors):
            lines.append("hint: only App Service resolves @Microsoft.KeyVault(...) references: use them with "
                         "--format appsettings-json or --current-json; locally give the keys themselves")
        raise CommandError(lines) from None


def _with_source(line: str, sources: Mapping[str, str]) -> str:
    for name, where in sources.items():
        if line.upper().startswith(f"{CONSUMER_PREFIX}{name.upper()}__"):
            return f"{line}  [{where}]"
    return line


# --- comparing and showing (never a key) ---------------------------------------------------


def _field(name: str) -> str:
    return name.rsplit("__", 1)[-1].upper()


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _same(name: str, old: str, new: str) -> bool:
    """Lists compare as sets (their order means nothing to the gateway); keys by their hashes."""
    if _field(name) == "KEYS":
        return {hashlib.sha256(k.encode()).digest() for k in _items(old)} == \
            {hashlib.sha256(k.encode()).digest() for k in _items(new)}
    if _field(name) in LIST_FIELDS:
        return set(_items(old)) == set(_items(new))
    return old.strip().lower() == new.strip().lower()


def _shown(name: str, value: str) -> str:
    """Keys as `<n keys>`; a Key Vault reference is only a pointer, so it is shown."""
    if _field(name) == "KEYS" and not is_kv_reference(value):
        return f"<{len(_items(value))} keys>"
    return value


def _keys_shown(values: list[str]) -> str:
    """The keys of one consumer (its KEYS, and GATEWAY_API_KEYS for `default`), counted, never shown."""
    count = sum(len(_items(value)) for value in values if not is_kv_reference(value))
    references = sum(1 for value in values if is_kv_reference(value))
    if references and not count:
        return "<Key Vault reference>"
    return f"<{count} keys>" + (" + <Key Vault reference>" if references else "")


def _number(value: int | None) -> str:
    return str(value) if value is not None else "-"


def _summary(consumer) -> str:
    def counted(items, noun: str) -> str:
        return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}" if items else ""
    parts = [counted(consumer.keys, "key"), counted(consumer.principals, "principal"),
             "all models" if consumer.models is None else counted(consumer.models, "model")]
    return f"{consumer.name} ({', '.join(part for part in parts if part)})"


CONSUMERS = SettingsKind("consumers", "consumer", CONSUMER_PREFIX, _validate, _same, _shown)
