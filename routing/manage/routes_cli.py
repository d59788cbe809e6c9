"""Route management without redeploying: `python -m routing routes convert | diff | list`.

  convert FILE --format local-settings|appsettings-json|env [--out PATH] [--key-ref NAME=VALUE]
  diff FILE [--current local.settings.json | --current-json appsettings.json] [--app --resource-group]
  list [--current local.settings.json | --current-json appsettings.json]

FILE is a routes file (YAML or JSON): {"routes": [...]} with the Bicep's route fields, or a
LiteLLM config.yaml with model_list. The current settings default to the environment plus
./local.settings.json, as `python -m routing check` reads them; --current-json takes the output of
`az functionapp config appsettings list`. Every result is validated by the gateway's own loader
before anything is written; diff and list never print a key.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from routing.config.consumers import AUTH_MODES
from routing.config.settings import ROUTE_PREFIX, RouteTable, SettingsError, load_route_table, redacted_headers
from routing.manage.routes_file import ConvertedRoutes, foundry_v1_endpoint, read_routes_file
from routing.manage.settings_io import (CommandError, SettingsKind, add_current_arguments, add_parser,
                                        current_settings, diff_command,
                                        is_kv_reference, merge_local_settings, run, settings_text, write_output)

# The loader requires an inbound key; when the current settings have none, this stands in for it.
PLACEHOLDER_GATEWAY_KEY = "placeholder-for-validation"
# Stands in for a Key Vault reference where App Service resolves it (never in a local run).
RESOLVED_BY_PLATFORM = "resolved-by-app-service"
SECRET_FIELDS = ("API_KEY",)
JSON_FIELDS = ("HEADERS", "PARAMS")  # compared as JSON: the Bicep writes them compact
LIST_COLUMNS = ("id", "model", "backend", "endpoint", "deployment", "auth", "priority", "weight")


def add_routes_parser(sub: argparse._SubParsersAction) -> None:
    commands = add_parser(sub, ROUTES, "convert a routes file (ours or LiteLLM's) to app settings, diff it against "
                          "the current settings, list the current routes", __doc__, _convert, _diff, _list)
    command = commands.add_parser("migrate-v1", help="the changes that move the current azure-ai routes on "
                                  "Foundry's deprecated /models API to its OpenAI v1 endpoint")
    add_current_arguments(command)
    command.add_argument("--app", default="$AZURE_FUNCTION_NAME", help="Function App name for the printed commands")
    command.add_argument("--resource-group", default="$AZURE_RESOURCE_GROUP", help="its resource group")
    command.set_defaults(routes_handler=_migrate_v1)


def run_routes(args: argparse.Namespace) -> int:
    return run(ROUTES, args)


# --- commands ------------------------------------------------------------------------------


def _convert(args: argparse.Namespace) -> int:
    converted = _read(args)
    if args.format == "local-settings":
        _write_local_settings(converted, args.out or Path("local.settings.json"))
        return 0
    # Only App Service resolves Key Vault references; env lines feed local runs and containers.
    table = _validate(converted.settings, platform=args.format == "appsettings-json", sources=converted.sources)
    write_output(args.out, settings_text(converted.settings, args.format))
    _print_summary(table, converted)
    return 0


def _diff(args: argparse.Namespace) -> int:
    converted = _read(args)
    return diff_command(ROUTES, args, converted.settings, converted.sources)


def _migrate_v1(args: argparse.Namespace) -> int:
    """Every azure-ai route on `https://<resource>.services.ai.azure.com/models` (the model
    inference API) moved to the resource's OpenAI v1 endpoint: ENDPOINT without `/models`,
    API_VERSION=v1. Serverless `*.models.ai.azure.com` routes have no v1 endpoint and stay."""
    current, _ = current_settings(args)
    new = {name: value for name, value in current.items() if ROUTES.owns(name)}
    moved = []
    for name, value in current.items():
        if not (name.upper().startswith(ROUTE_PREFIX) and name.upper().endswith("__ENDPOINT")):
            continue
        route_id = name[len(ROUTE_PREFIX):-len("__ENDPOINT")]
        backend = current.get(f"{ROUTE_PREFIX}{route_id}__BACKEND", "").strip().lower()
        v1 = foundry_v1_endpoint(value)
        if backend == "azure-ai" and v1 is not None:
            new[name] = v1
            new[f"{ROUTE_PREFIX}{route_id}__API_VERSION"] = "v1"
            moved.append(route_id)
    if not moved:
        print("no azure-ai route uses Foundry's /models API: nothing to migrate")
        return 0
    print(f"# moving {', '.join(moved)} to Foundry's OpenAI v1 endpoint (model families: see `routes list`)")
    return diff_command(ROUTES, args, new, {}, local_hint=f"set the values above in {args.current or 'local.settings.json'}")


def _list(args: argparse.Namespace) -> int:
    current, platform = current_settings(args)
    table = _validate(current, platform=platform, sources={})
    rows = [LIST_COLUMNS] + [(r.id, r.model, r.backend, r.endpoint, r.deployment, r.auth,
                              str(r.priority), f"{r.weight:g}") for r in table.routes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not table.routes:
        print("no routes configured", file=sys.stderr)
    return 0


# --- reading, validating, writing ----------------------------------------------------------


def _read(args: argparse.Namespace) -> ConvertedRoutes:
    converted = read_routes_file(args.file, os.environ, dict(args.key_ref))
    for warning in converted.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not converted.settings:
        print("warning: the file has no routes; the gateway refuses to start without one", file=sys.stderr)
    return converted


def _validate(settings: Mapping[str, str], *, platform: bool, sources: Mapping[str, str]) -> RouteTable:
    environ = dict(settings)
    auth = (environ.get("GATEWAY_AUTH") or "keys").strip().lower().replace(" ", "")
    if "keys" in AUTH_MODES.get(auth, ("keys",)) and not environ.get("GATEWAY_API_KEYS", "").strip():
        environ["GATEWAY_API_KEYS"] = PLACEHOLDER_GATEWAY_KEY  # the keys may be set elsewhere
    if platform:
        environ = {name: RESOLVED_BY_PLATFORM if is_kv_reference(value) else value
                   for name, value in environ.items()}
    try:
        return load_route_table(environ)
    except SettingsError as exc:
        lines = [_with_source(line, sources) for line in exc.errors]
        if not platform and any("Key Vault reference" in line for line in exc.errors):
            lines.append("hint: only App Service resolves @Microsoft.KeyVault(...) references: use them with "
                         "--format appsettings-json or --current-json; locally give the key itself")
        raise CommandError(lines) from None


def _write_local_settings(converted: ConvertedRoutes, path: Path) -> None:
    table, removed = merge_local_settings(ROUTES, path, converted.settings, converted.sources)
    print(f"{path}: {len(converted.settings)} route settings written"
          + (f"; removed {', '.join(removed)}" if removed else ""), file=sys.stderr)
    _print_summary(table, converted)


def _print_summary(table: RouteTable, converted: ConvertedRoutes) -> None:
    ids = set(converted.sources)
    routes = [f"{r.id} ({r.model} -> {r.backend})" for r in table.routes if r.id in ids]
    print(f"routes: {', '.join(routes) or 'none'}", file=sys.stderr)


# --- small helpers -------------------------------------------------------------------------


def _field(name: str) -> str:
    return name.rsplit("__", 1)[-1].upper()


def _same(name: str, old: str, new: str) -> bool:
    if _field(name) in SECRET_FIELDS:
        return hashlib.sha256(old.strip().encode()).digest() == hashlib.sha256(new.strip().encode()).digest()
    if _field(name) in JSON_FIELDS:
        try:
            return json.loads(old) == json.loads(new)
        except ValueError:
            pass
    return old.strip() == new.strip()


def _shown(name: str, value: str) -> str:
    """A key is never shown; a Key Vault reference is only a pointer, so it is."""
    if _field(name) in SECRET_FIELDS and not is_kv_reference(value):
        return "<redacted>"
    if _field(name) == "HEADERS":  # injected headers may carry keys (e.g. an APIM subscription key)
        try:
            headers = json.loads(value)
        except ValueError:
            return value
        if isinstance(headers, dict):
            return json.dumps(redacted_headers(headers), separators=(",", ":"))
    return value


def _with_source(line: str, sources: Mapping[str, str]) -> str:
    for route_id, where in sources.items():
        if line.startswith(f"{ROUTE_PREFIX}{route_id}__"):
            return f"{line}  [{where}]"
    return line


ROUTES = SettingsKind("routes", "route", ROUTE_PREFIX, _validate, _same, _shown)
