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
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from routing.config.local_settings import load_local_settings
from routing.manage.routes_file import ConvertedRoutes, RoutesFileError, read_routes_file
from routing.config.settings import (KEY_VAULT_REFERENCE, ROUTE_PREFIX, RouteTable, SettingsError, load_route_table,
                              redacted_headers)

FORMATS = ("local-settings", "appsettings-json", "env")
# The loader requires an inbound key; when the current settings have none, this stands in for it.
PLACEHOLDER_GATEWAY_KEY = "placeholder-for-validation"
# Stands in for a Key Vault reference where App Service resolves it (never in a local run).
RESOLVED_BY_PLATFORM = "resolved-by-app-service"
SECRET_FIELDS = ("API_KEY",)
JSON_FIELDS = ("HEADERS", "PARAMS")  # compared as JSON: the Bicep writes them compact
LIST_COLUMNS = ("id", "model", "backend", "endpoint", "deployment", "auth", "priority", "weight")
SETTINGS_FILE = "routes.appsettings.json"


class CommandError(Exception):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def add_routes_parser(sub: argparse._SubParsersAction) -> None:
    routes = sub.add_parser("routes", help="convert a routes file (ours or LiteLLM's) to app settings, "
                            "diff it against the current settings, list the current routes",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = routes.add_subparsers(dest="routes_command", required=True)

    convert = commands.add_parser("convert", help="write the routes file as app settings")
    convert.add_argument("file", type=Path)
    convert.add_argument("--format", required=True, choices=FORMATS,
                         help="local-settings: merge into local.settings.json (or --out); appsettings-json: "
                              "for `az functionapp config appsettings set --settings @FILE`; env: NAME=value lines")
    convert.add_argument("--out", type=Path, help="file to write (default: stdout; local.settings.json "
                                                   "for local-settings); created readable by you only")
    _add_key_ref(convert)
    convert.set_defaults(routes_handler=_convert)

    diff = commands.add_parser("diff", help="show the ROUTE__* settings the file adds, changes, removes")
    diff.add_argument("file", type=Path)
    _add_current(diff)
    _add_key_ref(diff)
    diff.add_argument("--app", default="$AZURE_FUNCTION_NAME", help="Function App name for the printed commands")
    diff.add_argument("--resource-group", default="$AZURE_RESOURCE_GROUP", help="its resource group")
    diff.set_defaults(routes_handler=_diff)

    listing = commands.add_parser("list", help="the routes of the current settings (keys never shown)")
    _add_current(listing)
    listing.set_defaults(routes_handler=_list)


def run_routes(args: argparse.Namespace) -> int:
    try:
        return args.routes_handler(args)
    except (CommandError, RoutesFileError) as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 1


def _add_current(parser: argparse.ArgumentParser) -> None:
    current = parser.add_mutually_exclusive_group()
    current.add_argument("--current", type=Path, metavar="LOCAL_SETTINGS_JSON",
                         help="a local.settings.json instead of the environment + ./local.settings.json")
    current.add_argument("--current-json", type=Path, metavar="APPSETTINGS_JSON",
                         help="output of `az functionapp config appsettings list` (the deployed app)")


def _add_key_ref(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-ref", action="append", default=[], type=_key_ref, metavar="NAME=VALUE",
                        help="use VALUE for os.environ/NAME, e.g. NAME=@Microsoft.KeyVault(SecretUri=...)")


def _key_ref(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, value


# --- commands ------------------------------------------------------------------------------


def _convert(args: argparse.Namespace) -> int:
    converted = _read(args)
    if args.format == "local-settings":
        _write_local_settings(converted, args.out or Path("local.settings.json"))
        return 0
    # Only App Service resolves Key Vault references; env lines feed local runs and containers.
    table = _validate(converted.settings, platform=args.format == "appsettings-json", sources=converted.sources)
    if args.format == "appsettings-json":
        text = json.dumps([{"name": name, "value": value, "slotSetting": False}
                           for name, value in converted.settings.items()], indent=2) + "\n"
    else:
        multiline = [name for name, value in converted.settings.items() if "\n" in value or "\r" in value]
        if multiline:
            raise CommandError([f"{name}: a value with a line break cannot be a NAME=value line"
                                for name in multiline])
        text = "".join(f"{name}={value}\n" for name, value in converted.settings.items())
    if args.out:
        _write_private(args.out, text)
        print(f"{args.out}: written", file=sys.stderr)
    else:
        sys.stdout.write(text)
    _print_summary(table, converted)
    return 0


def _diff(args: argparse.Namespace) -> int:
    converted = _read(args)
    current, platform = _current_settings(args)
    old = {name: value for name, value in current.items() if _is_route_setting(name)}
    new = converted.settings
    others = {name: value for name, value in current.items() if name not in old}
    _validate({**others, **new}, platform=platform, sources=converted.sources)

    added = [name for name in new if name not in old]
    changed = [name for name in new if name in old and not _same(name, old[name], new[name])]
    removed = [name for name in old if name not in new]
    print(f"# routes: {len(_route_ids(old))} now, {len(_route_ids(new))} after; settings: "
          f"{len(added)} added, {len(changed)} changed, {len(removed)} removed")
    for name in added:
        print(f"+ {name} = {_shown(name, new[name])}")
    for name in changed:  # keys are compared by hash and shown as <redacted>
        print(f"~ {name} = {_shown(name, old[name])} -> {_shown(name, new[name])}")
    for name in removed:
        print(f"- {name} (was {_shown(name, old[name])})")
    if not (added or changed or removed):
        print("no route changes")
        return 0
    print()
    if platform:
        _print_az_commands(args, current, new if added or changed else {}, removed)
    else:
        where = args.current or Path("local.settings.json")
        print(f"# to apply locally:\n{_convert_command(args, 'local-settings', where)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    current, platform = _current_settings(args)
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


def _current_settings(args: argparse.Namespace) -> tuple[dict[str, str], bool]:
    """(settings, whether App Service resolves their Key Vault references)."""
    if args.current_json:
        return _read_appsettings_json(args.current_json), True
    values: dict[str, str] = {}
    if args.current:
        if not args.current.is_file():
            raise CommandError([f"{args.current}: no such file"])
        load_local_settings(args.current, values)
        return values, False
    values.update(os.environ)  # as `routing check`: the environment wins over local.settings.json
    load_local_settings(Path("local.settings.json"), values)
    return values, False


def _read_appsettings_json(path: Path) -> dict[str, str]:
    """`az functionapp config appsettings list` output: [{"name", "value", "slotSetting"}]."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError([f"{path}: cannot read the app settings ({exc})"]) from None
    if isinstance(data, dict):  # the other form `--settings @file` takes: {"NAME": "value"}
        data = [{"name": name, "value": value} for name, value in data.items()]
    if not isinstance(data, list) or not all(isinstance(item, dict) and "name" in item for item in data):
        raise CommandError([f"{path}: expected the output of `az functionapp config appsettings list`"])
    unreadable = [item["name"] for item in data if not isinstance(item.get("value"), str)]
    if unreadable:
        raise CommandError([f"{path}: {name} has no value (listing values needs permission to list "
                            "the app's settings, e.g. Website Contributor)" for name in unreadable])
    return {item["name"]: item["value"] for item in data}


def _validate(settings: Mapping[str, str], *, platform: bool, sources: Mapping[str, str]) -> RouteTable:
    environ = dict(settings)
    if not environ.get("GATEWAY_API_KEYS", "").strip():
        environ["GATEWAY_API_KEYS"] = PLACEHOLDER_GATEWAY_KEY
    if platform:
        environ = {name: RESOLVED_BY_PLATFORM if _is_kv_reference(value) else value
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
    data: dict = {"IsEncrypted": False, "Values": {}}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError([f"{path}: cannot read it as JSON ({exc}); fix or move it"]) from None
        if not isinstance(data, dict) or not isinstance(data.get("Values", {}), dict):
            raise CommandError([f"{path}: expected {{\"IsEncrypted\": false, \"Values\": {{...}}}}"])
        if data.get("IsEncrypted"):
            raise CommandError([f"{path}: IsEncrypted is true; run `func settings decrypt` first"])
    values = data.get("Values") or {}
    # Existing routes are replaced as a whole, so a route removed from the file disappears.
    removed = [name for name in values if _is_route_setting(name) and name not in converted.settings]
    merged = {**{k: v for k, v in values.items() if not _is_route_setting(k)}, **converted.settings}
    as_environ = {k: v if isinstance(v, str) else json.dumps(v) for k, v in merged.items() if v is not None}
    table = _validate(as_environ, platform=False, sources=converted.sources)
    data["Values"] = merged
    _write_private(path, json.dumps(data, indent=2) + "\n")
    print(f"{path}: {len(converted.settings)} route settings written"
          + (f"; removed {', '.join(removed)}" if removed else ""), file=sys.stderr)
    _print_summary(table, converted)


def _write_private(path: Path, text: str) -> None:
    """Atomic, and a new file is readable by its owner only: it holds route keys."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    if path.exists():
        shutil.copymode(path, temporary)  # keep the mode the operator gave the existing file
    os.replace(temporary, path)


def _print_summary(table: RouteTable, converted: ConvertedRoutes) -> None:
    ids = set(converted.sources)
    routes = [f"{r.id} ({r.model} -> {r.backend})" for r in table.routes if r.id in ids]
    print(f"routes: {', '.join(routes) or 'none'}", file=sys.stderr)


def _print_az_commands(args: argparse.Namespace, current: Mapping[str, str], new: Mapping[str, str],
                       removed: list[str]) -> None:
    target = f"--name {_quote(args.app)} --resource-group {_quote(args.resource_group)}"
    set_steps = [_convert_command(args, "appsettings-json", Path(SETTINGS_FILE)),
                 f"az functionapp config appsettings set {target} --settings @{SETTINGS_FILE}",
                 f"rm {SETTINGS_FILE}  # it holds the route keys"] if new else []
    delete_steps = [f"az functionapp config appsettings delete {target} --setting-names "
                    + " ".join(removed)] if removed else []
    steps, note = set_steps + delete_steps, ""
    if set_steps and delete_steps:
        # Each command restarts the app with what it has so far: pick the order whose
        # in-between settings are still a valid table (e.g. AUTH=managed-identity set while
        # the API_KEY it replaces is still there is not).
        if not _is_valid({**current, **new}):
            if _is_valid({k: v for k, v in current.items() if k not in removed}):
                steps = delete_steps + set_steps
            else:
                note = "# between the commands the settings are invalid: the app answers errors until the last one"
    print("# to apply on the Function App (each az command restarts it):")
    print("\n".join(([note] if note else []) + steps))


def _is_valid(settings: Mapping[str, str]) -> bool:
    try:
        _validate(settings, platform=True, sources={})
        return True
    except CommandError:
        return False


def _convert_command(args: argparse.Namespace, output: str, out: Path) -> str:
    refs = " ".join(f"--key-ref {_quote(f'{name}={value}' if _is_kv_reference(value) else f'{name}=<as before>')}"
                    for name, value in args.key_ref)
    return (f"python -m routing routes convert {_quote(str(args.file))} --format {output} "
            f"--out {_quote(str(out))}" + (f" {refs}" if refs else ""))


# --- small helpers -------------------------------------------------------------------------


def _is_route_setting(name: str) -> bool:
    return name.upper().startswith(ROUTE_PREFIX)


def _field(name: str) -> str:
    return name.rsplit("__", 1)[-1].upper()


def _route_ids(settings: Mapping[str, str]) -> set[str]:
    return {name.split("__")[1] for name in settings if name.count("__") == 2}


def _is_kv_reference(value: str) -> bool:
    return value.strip().lower().startswith(KEY_VAULT_REFERENCE)


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
    if _field(name) in SECRET_FIELDS and not _is_kv_reference(value):
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


def _quote(text: str) -> str:
    # "$AZURE_FUNCTION_NAME" stays expandable (azd writes it to .azure/<env>/.env)
    return f'"{text}"' if text.startswith("$") and text[1:].replace("_", "").isalnum() else shlex.quote(text)
