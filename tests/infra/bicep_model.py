"""Shared model of infra/ for the tests: pycep parse trees, helpers to walk them, an evaluator of
the ROUTE__* construction with ARM semantics, and azd's parameter-file substitution."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

try:  # A missing tool fails the tests (conftest.py), never skips them: an unscanned infra/ must not pass.
    import pycep
except ImportError:  # pragma: no cover
    pycep = None
try:
    import yaml
except ImportError:  # pragma: no cover
    yaml = None

MISSING_TOOLS = "tests/infra needs pycep-parser, pyyaml and checkov: pip install -r requirements-dev.txt"

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
APP = INFRA / "app"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# DESIGN §3 route fields and the camelCase `routes[]` property each one is read from.
ROUTE_FIELD_PROPERTIES = {
    "MODEL": "model", "BACKEND": "backend", "ENDPOINT": "endpoint", "DEPLOYMENT": "deployment",
    "API_VERSION": "apiVersion", "AUTH": "auth", "CLIENT_ID": "clientId", "SCOPE": "scope",
    "HEADERS": "headers", "PARAMS": "params", "PRIORITY": "priority", "WEIGHT": "weight",
    "TIMEOUT": "timeout", "KEY_HEADER": "keyHeader", "REASONING": "reasoning",
}
ROUTE_FIELDS = {*ROUTE_FIELD_PROPERTIES, "API_KEY"}  # API_KEY comes from routeApiKeys, never routes[]

# Settings (and the site property) that Flex Consumption rejects.
FLEX_REJECTED = (
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT", "linuxFxVersion",
)

STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
COGNITIVE_SERVICES_OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
COGNITIVE_SERVICES_USER = "a97b65f3-24c7-4388-baec-2e87135dc908"

VAULT_URI = "https://kv-test.vault.azure.net/"


# --- parsing ---------------------------------------------------------------------------------

@cache
def parse(path: Path) -> dict[str, Any]:
    return pycep.BicepParser().parse(file_path=path)


def template(name: str) -> dict[str, Any]:
    return parse(INFRA / name)


def unwrap(config: dict[str, Any]) -> dict[str, Any]:
    """The body of a resource/module, inside any `for` loop and `if` condition."""
    while isinstance(config, dict) and ("loop_type" in config or "condition" in config) and "config" in config:
        config = config["config"]
    return config


def resources(doc: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: unwrap(res["config"]) for name, res in doc.get("resources", {}).items()
            if res["type"] == type_ and not res.get("existing")}


def the_resource(file: str, type_: str) -> dict[str, Any]:
    found = resources(template(file), type_)
    assert len(found) == 1, f"{file}: expected one {type_}, found {sorted(found)}"
    return next(iter(found.values()))


def variable(doc: dict[str, Any], name: str) -> Any:
    return doc["variables"][name]["value"]


def decorator(param: dict[str, Any], kind: str) -> Any:
    return next((d.get("argument", True) for d in param["decorators"] if d["type"] == kind), None)


def code_without_comments(path: Path) -> str:
    return re.sub(r"//[^\n]*", "", path.read_text())


def module_file(module: dict[str, Any]) -> Path:
    return INFRA / module["detail"]["path"]



# --- routes -> ROUTE__<ID>__<FIELD> ----------------------------------------------------------

class Evaluator:
    """Evaluates the pycep tree of the route-settings expression with ARM semantics, enough for
    the functions api.bicep uses. Bare strings are identifiers when bound, literals otherwise."""

    def __init__(self, scope: dict[str, Any]):
        self.scope = scope

    def __call__(self, node: Any) -> Any:
        if isinstance(node, str):
            if node in self.scope:
                return self.scope[node]
            return re.sub(r"\$\{([^}]*)\}", lambda m: self.arm_string(self.path(m.group(1))), node)
        if isinstance(node, list):
            return [self(item) for item in node]
        if isinstance(node, dict) and "operator" in node:
            return self.operator(node["operator"]["type"], node["operator"]["operands"])
        if isinstance(node, dict) and "function" in node:
            return self.function(node["function"]["type"], node["function"]["parameters"])
        if isinstance(node, dict):
            return {key: self(value) for key, value in node.items()}
        return node

    def path(self, dotted: str) -> Any:
        head, *rest = dotted.split(".")
        value = self.scope[head]
        for name in rest:
            value = value[name]
        return value

    @staticmethod
    def arm_string(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "True" if value else "False"  # ARM string(true) is 'True'
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        return str(value)

    def operator(self, kind: str, ops: dict[str, Any]) -> Any:
        if kind == "conditional":
            return self(ops["true_value"]) if self(ops["condition"]) else self(ops["false_value"])
        if kind == "property_accessor":
            target = self(ops["operand_1"])
            key = ops["operand_2"]
            if isinstance(key, dict) and "operator" in key:  # pycep reads `s.value != null` as `s.(value != null)`
                inner = key["operator"]
                first = {"operator": {"type": "property_accessor",
                                      "operands": {"operand_1": ops["operand_1"], "operand_2": inner["operands"]["operand_1"]}}}
                return self.operator(inner["type"], {**inner["operands"], "operand_1": first})
            return target[key]
        if kind == "not_equals":
            return self(ops["operand_1"]) != self(ops["operand_2"])
        if kind == "equals":
            return self(ops["operand_1"]) == self(ops["operand_2"])
        if kind == "not":
            return not self(ops["bool_value"])
        raise NotImplementedError(f"operator {kind}")

    def function(self, kind: str, params: dict[str, Any]) -> Any:
        if kind == "contains":
            return self(params["item_to_find"]) in self(params["container"])
        if kind == "string":
            return self.arm_string(self(params["value_to_convert"]))
        if kind == "to_lower":
            return self(params["string_to_change"]).lower()
        if kind == "replace":
            return self(params["original_string"]).replace(self(params["old_string"]), self(params["new_string"]))
        if kind == "format":
            args = [self(v) for k, v in sorted(params.items()) if k.startswith("arg_")]
            return self(params["format_string"]).format(*args)
        if kind == "filter":
            name = params["input_element"]
            return [item for item in self(params["input_array"])
                    if Evaluator({**self.scope, name: item})(params["expression"])]
        raise NotImplementedError(f"function {kind}")


def route_settings(routes: list[dict[str, Any]], route_key_ids: list[str]) -> dict[str, str]:
    """ROUTE__* app settings api.bicep produces for `routes`: the for-loop per route, then
    `routeSettings = filter(flatten(routeSettingsPerRoute), <drop null values>)`."""
    doc = template("app/api.bicep")
    loop = variable(doc, "routeSettingsPerRoute")
    assert loop["loop_type"]["detail"] == {"item_name": "r", "array_name": "routes"}
    per_route = [Evaluator({"r": route, "routeKeyIds": route_key_ids, "keyVaultUri": VAULT_URI})(loop["config"])
                 for route in routes]
    final = variable(doc, "routeSettings")["function"]
    assert final["type"] == "filter"
    assert final["parameters"]["input_array"] == {
        "function": {"type": "flatten", "parameters": {"array_to_flattern": "routeSettingsPerRoute"}}}
    flat = [setting for settings in per_route for setting in settings]
    kept = Evaluator({})({"function": {**final, "parameters": {**final["parameters"], "input_array": flat}}})
    names = [setting["name"] for setting in kept]
    assert len(names) == len(set(names)), f"duplicate settings {names}"
    return {setting["name"]: setting["value"] for setting in kept}



# --- main.parameters.json --------------------------------------------------------------------

def azd_substitute(text: str, env: dict[str, str]) -> str:
    """azd's parameter-file substitution: ${VAR} and ${VAR=default}."""
    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(3)
        return env.get(name, default if default is not None else "")
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(=([^}]*))?\}", replace, text)


def parameters(env: dict[str, str]) -> dict[str, Any]:
    text = azd_substitute((INFRA / "main.parameters.json").read_text(), env)
    return {name: spec["value"] for name, spec in json.loads(text)["parameters"].items()}
