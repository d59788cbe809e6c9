"""A routes file → `ROUTE__<ID>__<FIELD>` app settings (DESIGN §3).

Two formats, YAML or JSON:
- ours: `{"routes": [...]}` or a bare list of route objects whose field names are those of the
  Bicep `routes` parameter (infra/app/api.bicep): id, model, backend, endpoint, deployment,
  apiVersion, auth, apiKey, clientId, scope, headers, params, priority, weight, timeout,
  keyHeader, reasoning;
- a LiteLLM proxy `config.yaml`: `model_list` entries whose `litellm_params.model` is
  `azure/<deployment>` or `azure_ai/<model>`.

Any string value may be `os.environ/NAME` (LiteLLM's convention): it is replaced by the variable
NAME, or by what `--key-ref NAME=...` maps it to. Only the conversion lives here: whether the
result is a valid route table is decided by the gateway's own loader (`load_route_table`).
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from routing.config.settings import ROUTE_FIELDS, ROUTE_PREFIX
from routing.manage.settings_io import CommandError, camel_case, load_document, resolve_reference

# Route-object field → setting field, derived from the loader's own list so the two cannot drift;
# the names are the Bicep's (tests/test_routes_cli.py checks them against api.bicep).
FILE_FIELDS = {camel_case(setting_field): setting_field for setting_field in ROUTE_FIELDS}

# LiteLLM `litellm_params` keys with a gateway equivalent → route-object field. Every other key
# is reported as a warning: nothing is dropped silently.
LITELLM_PARAMS = {"api_base": "endpoint", "api_version": "apiVersion", "api_key": "apiKey",
                  "order": "priority", "weight": "weight", "timeout": "timeout"}
LITELLM_HEADER_PARAMS = ("headers", "extra_headers")
LITELLM_PROVIDERS = {"azure/": "azure-openai", "azure_ai/": "azure-ai"}
# The variable LiteLLM reads when an entry has no api_key; the gateway uses managed identity instead.
LITELLM_KEY_FALLBACK = {"azure-openai": "AZURE_API_KEY", "azure-ai": "AZURE_AI_API_KEY"}


class RoutesFileError(CommandError):
    """Every problem found in the routes file, one line each, naming where it is."""


@dataclass
class ConvertedRoutes:
    settings: dict[str, str] = field(default_factory=dict)  # ROUTE__* name → value, in file order
    sources: dict[str, str] = field(default_factory=dict)  # route id → where the file defines it
    warnings: list[str] = field(default_factory=list)


def read_routes_file(path: Path, environ: Mapping[str, str] = os.environ,
                     key_refs: Mapping[str, str] | None = None) -> ConvertedRoutes:
    """Parse `path` and convert it; raise RoutesFileError listing every problem."""
    document = _load_document(path)
    converter = _Converter(environ, key_refs or {})
    if isinstance(document, Mapping) and "model_list" in document:
        if "routes" in document:
            raise RoutesFileError([f"{path}: has both 'routes' and 'model_list'; keep one"])
        objects = converter.from_litellm(document)
    elif isinstance(document, Mapping) and set(document) == {"routes"} and isinstance(document["routes"], list):
        objects = [(f"routes[{i}]", route) for i, route in enumerate(document["routes"])]
    elif isinstance(document, list):
        objects = [(f"[{i}]", route) for i, route in enumerate(document)]
    else:
        raise RoutesFileError([f"{path}: expected {{\"routes\": [...]}}, a list of routes, or a "
                               "LiteLLM config with model_list"])
    converted = converter.to_settings(objects)
    if converter.errors:
        raise RoutesFileError(converter.errors)
    return converted


def _load_document(path: Path) -> Any:
    try:
        return load_document(path, "routes")
    except CommandError as exc:
        raise RoutesFileError(exc.errors) from None


class _Converter:
    def __init__(self, environ: Mapping[str, str], key_refs: Mapping[str, str]):
        self.environ = environ
        self.key_refs = key_refs
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def resolve(self, value: Any, where: str) -> Any:
        """`os.environ/NAME` → --key-ref NAME=..., else the variable NAME; else an error."""
        return resolve_reference(value, where, self.environ, self.key_refs, self.errors)

    def to_settings(self, objects: list[tuple[str, Any]]) -> ConvertedRoutes:
        converted = ConvertedRoutes(warnings=self.warnings)
        ids: dict[str, str] = {}  # upper-cased id → where; App Service names are case-insensitive
        for where, route in objects:
            if not isinstance(route, Mapping):
                self.errors.append(f"{where}: a route must be an object (id, model, backend, endpoint, ...)")
                continue
            route_id = route.get("id")
            if not isinstance(route_id, str) or not route_id.strip() or "__" in route_id:
                self.errors.append(f"{where}: 'id' is required: letters, digits, '_' and '.', no '__' "
                                   f"(it becomes {ROUTE_PREFIX}<ID>__<FIELD>)")
                continue
            if route_id.upper() in ids:
                self.errors.append(f"{where}: id {route_id!r} is already used by {ids[route_id.upper()]}")
                continue
            ids[route_id.upper()] = where
            converted.sources[route_id] = where
            # Settings in the loader's field order, whatever the order in the file.
            order = list(FILE_FIELDS)
            for key, value in sorted(route.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else -1):
                if key == "id":
                    continue
                setting_field = FILE_FIELDS.get(key)
                if setting_field is None:
                    hint = difflib.get_close_matches(str(key), list(FILE_FIELDS), n=1)
                    self.errors.append(f"{where}: unknown field {key!r}"
                                       + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                       + f"; allowed: id, {', '.join(FILE_FIELDS)}")
                    continue
                value = self.resolve(value, f"{where}: {key}")
                if value is not None and value != "":  # not given → the gateway's default applies
                    converted.settings[f"{ROUTE_PREFIX}{route_id}__{setting_field}"] = _setting_value(value)
        return converted

    def from_litellm(self, document: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        for key in document:
            if key != "model_list":
                self.warnings.append(f"{key}: LiteLLM proxy settings have no gateway equivalent; ignored")
        entries = document["model_list"]
        if not isinstance(entries, list):
            self.errors.append("model_list: must be a list of {model_name, litellm_params} entries")
            return []
        objects, used_ids = [], set()
        for index, entry in enumerate(entries):
            where = f"model_list[{index}]"
            name = entry.get("model_name") if isinstance(entry, Mapping) else None
            params = entry.get("litellm_params") if isinstance(entry, Mapping) else None
            if not isinstance(name, str) or not name or not isinstance(params, Mapping):
                self.errors.append(f"{where}: needs model_name and litellm_params")
                continue
            where += f" ({name!r})"
            route = self._litellm_route(name, params, where)
            if route is not None:
                route["id"] = _unique_id(name, used_ids)
                objects.append((where, route))
            for key in entry:
                if key not in ("model_name", "litellm_params"):
                    self.warnings.append(f"{where}: {key} has no gateway equivalent; ignored")
        return objects

    def _litellm_route(self, name: str, params: Mapping[str, Any], where: str) -> dict[str, Any] | None:
        target = str(params.get("model", ""))
        prefix = next((p for p in LITELLM_PROVIDERS if target.startswith(p)), None)
        if prefix is None or not target[len(prefix):]:
            self.errors.append(f"{where}: litellm_params.model {target!r} cannot be converted; the gateway "
                               "serves azure/<deployment> (Azure OpenAI) and azure_ai/<model> (Azure AI)")
            return None
        backend = LITELLM_PROVIDERS[prefix]
        route: dict[str, Any] = {"model": name, "backend": backend, "deployment": target[len(prefix):]}
        headers: dict[str, Any] = {}
        for key, value in params.items():
            if key == "model":
                continue
            if key in LITELLM_HEADER_PARAMS:
                if isinstance(value, Mapping):
                    headers.update(value)
                else:
                    self.errors.append(f"{where}: litellm_params.{key} must be a mapping of headers")
            elif key in LITELLM_PARAMS:
                route[LITELLM_PARAMS[key]] = self.resolve(value, f"{where}: litellm_params.{key}")
            else:
                self.warnings.append(f"{where}: litellm_params.{key} has no gateway equivalent; ignored")
        if headers:
            route["headers"] = headers
        if "api_key" not in params:
            self.warnings.append(f"{where}: no api_key, so the route uses the app's managed identity "
                                 f"(LiteLLM would have read {LITELLM_KEY_FALLBACK[backend]})")
        if backend == "azure-ai" and isinstance(route.get("endpoint"), str):
            v1 = foundry_v1_endpoint(route["endpoint"])
            if v1 is not None and "apiVersion" not in route:
                # Foundry resources: the OpenAI v1 endpoint, successor of the model inference API.
                route["endpoint"], route["apiVersion"] = v1, "v1"
                self.warnings.append(f"{where}: on Foundry's OpenAI v1 endpoint ({v1}/openai/v1), the successor of "
                                     "the deprecated model inference API LiteLLM calls")
            elif v1 is not None and not route["endpoint"].rstrip("/").endswith("/models"):
                # An explicit api_version keeps the model inference API: LiteLLM adds `/models` itself.
                route["endpoint"] = route["endpoint"].strip().rstrip("/") + "/models"
        return route


def foundry_v1_endpoint(endpoint: str) -> str | None:
    """The OpenAI v1 base of a Foundry resource or project endpoint (`https://r.services.ai.azure.com`,
    `.../api/projects/p`; a `/models`, `/openai` or `/openai/v1` suffix removed); None for other
    hosts (serverless `*.models.ai.azure.com` has no v1 endpoint)."""
    parts = urlsplit(endpoint.strip())
    if not (parts.hostname or "").lower().endswith(".services.ai.azure.com"):
        return None
    path = parts.path.rstrip("/")
    for suffix in ("/models", "/openai/v1", "/openai"):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
            break
    return f"{parts.scheme}://{parts.netloc}{path}"


def _unique_id(model_name: str, used: set[str]) -> str:
    """`Meta-Llama-3-70B` → `META_LLAMA_3_70B`; a second entry of the same model gets `_2`, ..."""
    base = re.sub(r"_+", "_", re.sub(r"[^A-Z0-9_]", "_", model_name.upper())).strip("_") or "ROUTE"
    candidate, n = base, 2
    while candidate in used:
        candidate, n = f"{base}_{n}", n + 1
    used.add(candidate)
    return candidate


def _setting_value(value: Any) -> str:
    """As the Bicep writes them: objects as JSON text, booleans lower-case, other values as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, datetime.date):  # YAML reads an unquoted apiVersion 2024-10-21 as a date
        return value.isoformat()
    return str(value)
