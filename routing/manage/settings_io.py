"""What `python -m routing routes …` and `consumers …` share: reading a YAML/JSON file, the
`os.environ/NAME` indirection, the current app settings (the environment + ./local.settings.json,
a local.settings.json, or the output of `az functionapp config appsettings list`), merging into a
local.settings.json, writing a file readable by its owner only, the diff of the settings one
command owns (a `SettingsKind`) and the az commands that apply it.

Only plumbing lives here: what a setting means is decided by the gateway's own loader."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routing.config.local_settings import load_local_settings
from routing.config.settings import KEY_VAULT_REFERENCE

ENV_REFERENCE = "os.environ/"
FORMATS = ("local-settings", "appsettings-json", "env")


class CommandError(Exception):
    """Every problem found, one line each, naming where it is."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def camel_case(setting_field: str) -> str:
    """`API_VERSION` → `apiVersion`: the file (and Bicep) name of a setting field."""
    first, *rest = setting_field.lower().split("_")
    return first + "".join(part.title() for part in rest)


# --- arguments -----------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction, kind: SettingsKind, summary: str, description: str,
               convert: Callable, diff: Callable, listing: Callable, *,
               convert_current: bool = False) -> argparse._SubParsersAction:
    """`python -m routing <kind.command> convert | diff | list`; `run(kind, args)` dispatches."""
    parser = sub.add_parser(kind.command, help=summary, description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest=f"{kind.command}_command", required=True)

    command = commands.add_parser("convert", help=f"write the {kind.command} file as app settings")
    command.add_argument("file", type=Path)
    command.add_argument("--format", required=True, choices=FORMATS,
                         help="local-settings: merge into local.settings.json (or --out); appsettings-json: "
                              "for `az functionapp config appsettings set --settings @FILE`; env: NAME=value lines")
    command.add_argument("--out", type=Path, help="file to write (default: stdout; local.settings.json "
                                                  "for local-settings); created readable by you only")
    add_key_ref_argument(command)
    if convert_current:
        add_current_arguments(command)
    command.set_defaults(**{f"{kind.command}_handler": convert})

    command = commands.add_parser("diff", help=f"show the {kind.prefix}* settings the file adds, changes, removes")
    command.add_argument("file", type=Path)
    add_current_arguments(command)
    add_key_ref_argument(command)
    command.add_argument("--app", default="$AZURE_FUNCTION_NAME", help="Function App name for the printed commands")
    command.add_argument("--resource-group", default="$AZURE_RESOURCE_GROUP", help="its resource group")
    command.set_defaults(**{f"{kind.command}_handler": diff})

    command = commands.add_parser("list", help=f"the {kind.command} of the current settings (keys never shown)")
    add_current_arguments(command)
    command.set_defaults(**{f"{kind.command}_handler": listing})
    return commands


def run(kind: SettingsKind, args: argparse.Namespace) -> int:
    try:
        return getattr(args, f"{kind.command}_handler")(args)
    except CommandError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 1


def add_current_arguments(parser: argparse.ArgumentParser) -> None:
    current = parser.add_mutually_exclusive_group()
    current.add_argument("--current", type=Path, metavar="LOCAL_SETTINGS_JSON",
                         help="a local.settings.json instead of the environment + ./local.settings.json")
    current.add_argument("--current-json", type=Path, metavar="APPSETTINGS_JSON",
                         help="output of `az functionapp config appsettings list` (the deployed app)")


def add_key_ref_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-ref", action="append", default=[], type=_key_ref, metavar="NAME=VALUE",
                        help="use VALUE for os.environ/NAME, e.g. NAME=@Microsoft.KeyVault(SecretUri=...)")


def _key_ref(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, value


# --- reading -------------------------------------------------------------------------------


def load_document(path: Path, what: str) -> Any:
    """A JSON or YAML document (by extension; JSON first when there is none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError([f"{path}: cannot read it ({exc.strerror})"]) from None
    suffix = path.suffix.lower()
    if suffix == ".json" or suffix not in (".yaml", ".yml"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if suffix == ".json":
                raise CommandError([f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})"]) from None
    try:  # YAML is an operator-tool dependency only (requirements-dev.txt), not the runtime's
        import yaml
    except ImportError:
        raise CommandError([f"{path}: reading YAML needs PyYAML (pip install PyYAML); "
                            f"or write the {what} as JSON"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CommandError([f"{path}: not valid YAML ({exc})"]) from None


def resolve_reference(value: Any, where: str, environ: Mapping[str, str], key_refs: Mapping[str, str],
                      errors: list[str]) -> Any:
    """`os.environ/NAME` → --key-ref NAME=..., else the variable NAME; else an error (and None)."""
    if not isinstance(value, str) or not value.startswith(ENV_REFERENCE):
        return value
    name = value[len(ENV_REFERENCE):]
    if name in key_refs:
        return key_refs[name]
    if environ.get(name):
        return environ[name]
    errors.append(
        f"{where}: {value}, but {name} is not set; export {name}=..., or map it with "
        f"--key-ref '{name}=@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/)'")
    return None


def current_settings(args: argparse.Namespace) -> tuple[dict[str, str], bool]:
    """(settings, whether App Service resolves their Key Vault references)."""
    if args.current_json:
        return read_appsettings_json(args.current_json), True
    values: dict[str, str] = {}
    if args.current:
        if not args.current.is_file():
            raise CommandError([f"{args.current}: no such file"])
        load_local_settings(args.current, values)
        return values, False
    values.update(os.environ)  # as `routing check`: the environment wins over local.settings.json
    load_local_settings(Path("local.settings.json"), values)
    return values, False


def read_appsettings_json(path: Path) -> dict[str, str]:
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


def read_local_settings_file(path: Path) -> dict:
    """The local.settings.json to merge into ({"IsEncrypted": false, "Values": {}} when absent)."""
    if not path.exists():
        return {"IsEncrypted": False, "Values": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError([f"{path}: cannot read it as JSON ({exc}); fix or move it"]) from None
    if not isinstance(data, dict) or not isinstance(data.get("Values", {}), dict):
        raise CommandError([f"{path}: expected {{\"IsEncrypted\": false, \"Values\": {{...}}}}"])
    if data.get("IsEncrypted"):
        raise CommandError([f"{path}: IsEncrypted is true; run `func settings decrypt` first"])
    return data


# --- writing -------------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Atomic, and a new file is readable by its owner only: it holds keys."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    if path.exists():
        shutil.copymode(path, temporary)  # keep the mode the operator gave the existing file
    os.replace(temporary, path)


def settings_text(settings: Mapping[str, str], output: str) -> str:
    """appsettings-json (for `az functionapp config appsettings set --settings @FILE`) or env lines."""
    if output == "appsettings-json":
        return json.dumps([{"name": name, "value": value, "slotSetting": False}
                           for name, value in settings.items()], indent=2) + "\n"
    multiline = [name for name, value in settings.items() if "\n" in value or "\r" in value]
    if multiline:
        raise CommandError([f"{name}: a value with a line break cannot be a NAME=value line" for name in multiline])
    return "".join(f"{name}={value}\n" for name, value in settings.items())


def write_output(out: Path | None, text: str) -> None:
    if out:
        write_private(out, text)
        print(f"{out}: written", file=sys.stderr)
    else:
        sys.stdout.write(text)


# --- the settings one command manages ----------------------------------------------------


@dataclass(frozen=True)
class SettingsKind:
    """What differs between `routes …` and `consumers …`: the settings they own (by prefix), how a
    result is validated (by the gateway's loader), compared and shown."""

    command: str  # routes, consumers
    noun: str  # route, consumer
    prefix: str  # ROUTE__, CONSUMER__
    validate: Callable[..., Any]  # (settings, *, platform, sources) -> the loaded table, or CommandError
    same: Callable[[str, str, str], bool]  # (name, old, new)
    shown: Callable[[str, str], str]  # (name, value) -> printable, never a key

    def owns(self, name: str) -> bool:
        return name.upper().startswith(self.prefix)

    def is_valid(self, settings: Mapping[str, str]) -> bool:
        try:
            self.validate(settings, platform=True, sources={})
            return True
        except CommandError:
            return False


def merge_local_settings(kind: SettingsKind, path: Path, settings: Mapping[str, str],
                         sources: Mapping[str, str]) -> tuple[Any, list[str]]:
    """Replace the kind's settings in the local.settings.json at `path` as a whole (one removed
    from the file disappears), validate the merged values, write them; (table, removed names)."""
    data = read_local_settings_file(path)
    values = data.get("Values") or {}
    removed = [name for name in values if kind.owns(name) and name not in settings]
    merged = {**{k: v for k, v in values.items() if not kind.owns(k)}, **settings}
    as_environ = {k: v if isinstance(v, str) else json.dumps(v) for k, v in merged.items() if v is not None}
    table = kind.validate(as_environ, platform=False, sources=sources)
    data["Values"] = merged
    write_private(path, json.dumps(data, indent=2) + "\n")
    return table, removed


def diff_command(kind: SettingsKind, args: argparse.Namespace, new: Mapping[str, str],
                 sources: Mapping[str, str], local_hint: str | None = None) -> int:
    """Print the kind's settings `new` adds, changes and removes against the current settings
    (validated first), then the commands that apply them."""
    current, platform = current_settings(args)
    old = {name: value for name, value in current.items() if kind.owns(name)}
    others = {name: value for name, value in current.items() if name not in old}
    kind.validate({**others, **new}, platform=platform, sources=sources)

    added = [name for name in new if name not in old]
    changed = [name for name in new if name in old and not kind.same(name, old[name], new[name])]
    removed = [name for name in old if name not in new]
    print(f"# {kind.command}: {len(_ids(old))} now, {len(_ids(new))} after; settings: "
          f"{len(added)} added, {len(changed)} changed, {len(removed)} removed")
    for name in added:
        print(f"+ {name} = {kind.shown(name, new[name])}")
    for name in changed:  # keys are compared by hash and never shown
        print(f"~ {name} = {kind.shown(name, old[name])} -> {kind.shown(name, new[name])}")
    for name in removed:
        print(f"- {name} (was {kind.shown(name, old[name])})")
    if not (added or changed or removed):
        print(f"no {kind.noun} changes")
        return 0
    print()
    if platform:
        _print_az_commands(kind, args, current, new if added or changed else {}, removed)
    else:
        where = args.current or Path("local.settings.json")
        print(f"# to apply locally:\n{local_hint or convert_command(args, kind.command, 'local-settings', where)}")
    return 0


def _ids(settings: Mapping[str, str]) -> set[str]:
    return {name.split("__")[1] for name in settings if name.count("__") == 2}


def _print_az_commands(kind: SettingsKind, args: argparse.Namespace, current: Mapping[str, str],
                       new: Mapping[str, str], removed: list[str]) -> None:
    target = f"--name {quote(args.app)} --resource-group {quote(args.resource_group)}"
    settings_file = f"{kind.command}.appsettings.json"
    set_steps = [convert_command(args, kind.command, "appsettings-json", Path(settings_file)),
                 f"az functionapp config appsettings set {target} --settings @{settings_file}",
                 f"rm {settings_file}  # it holds the {kind.noun} keys"] if new else []
    delete_steps = [f"az functionapp config appsettings delete {target} --setting-names "
                    + " ".join(removed)] if removed else []
    steps, note = set_steps + delete_steps, ""
    if set_steps and delete_steps:
        # Each command restarts the app with what it has so far: pick the order whose
        # in-between settings are still a valid table (e.g. AUTH=managed-identity set while
        # the API_KEY it replaces is still there is not).
        if not kind.is_valid({**current, **new}):
            if kind.is_valid({k: v for k, v in current.items() if k not in removed}):
                steps = delete_steps + set_steps
            else:
                note = "# between the commands the settings are invalid: the app answers errors until the last one"
    print("# to apply on the Function App (each az command restarts it):")
    print("\n".join(([note] if note else []) + steps))


def convert_command(args: argparse.Namespace, command: str, output: str, out: Path) -> str:
    refs = " ".join(f"--key-ref {quote(f'{name}={value}' if is_kv_reference(value) else f'{name}=<as before>')}"
                    for name, value in args.key_ref)
    return (f"python -m routing {command} convert {quote(str(args.file))} --format {output} "
            f"--out {quote(str(out))}" + (f" {refs}" if refs else ""))


# --- small helpers -------------------------------------------------------------------------


def is_kv_reference(value: str) -> bool:
    return value.strip().lower().startswith(KEY_VAULT_REFERENCE)


def quote(text: str) -> str:
    # "$AZURE_FUNCTION_NAME" stays expandable (azd writes it to .azure/<env>/.env)
    return f'"{text}"' if text.startswith("$") and text[1:].replace("_", "").isalnum() else shlex.quote(text)
