"""Shared model of infra/ for the tests: pycep parse trees, helpers to walk them, an evaluator of
the app-settings construction (routes, consumers, auth, state; main.bicep -> api.bicep) with ARM
semantics, and azd's parameter-file substitution."""

from __future__ import annotations

import json
import re
import uuid
from collections import ChainMap
from collections.abc import Mapping
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
    "TIMEOUT": "timeout", "KEY_HEADER": "keyHeader", "REASONING": "reasoning", "FAMILY": "family",
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


def module_file(module: dict[str, Any], parent: Path = INFRA) -> Path:
    """The file of a local module; `parent` is the folder of the file that declares it."""
    return parent / module["detail"]["path"]


# --- evaluating templates with ARM semantics ------------------------------------------------

TENANT_ID = "72f988bf-0000-4000-8000-00000000beef"  # what tenant().tenantId gives in these tests


class Evaluator:
    """Evaluates pycep trees with ARM semantics, enough for the functions the templates' settings
    use. Bare strings are identifiers when bound, literals otherwise."""

    def __init__(self, scope: Mapping[str, Any]):
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
            return self.function(node["function"])
        if isinstance(node, dict):
            return {key: self(value) for key, value in node.items()}
        return node

    def path(self, dotted: str) -> Any:
        head, *rest = dotted.split(".")
        value = self.scope[head]
        for name in rest:
            value = self.member(value, name)
        return value

    @staticmethod
    def member(value: Any, key: Any) -> Any:
        """ARM property names are case-insensitive; a missing one fails the deployment."""
        if isinstance(value, Mapping) and isinstance(key, str) and key not in value:
            matches = [k for k in value if isinstance(k, str) and k.lower() == key.lower()]
            if not matches:
                raise KeyError(f"the language expression property '{key}' doesn't exist, available properties "
                               f"are '{', '.join(value)}'")
            key = matches[0]
        return value[key]

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
        if kind == "conditional":  # ARM evaluates only the branch taken
            return self(ops["true_value"]) if self(ops["condition"]) else self(ops["false_value"])
        if kind == "index_accessor":
            return self.member(self(ops["operand_1"]), self(ops["operand_2"]))
        if kind == "property_accessor":
            key = ops["operand_2"]
            if isinstance(key, dict) and "operator" in key:
                # pycep reads `a.b.c` as `a.(b.c)` and `s.value != null` as `s.(value != null)`
                inner = key["operator"]
                first = {"operator": {"type": kind, "operands": {"operand_1": ops["operand_1"],
                                                                 "operand_2": inner["operands"]["operand_1"]}}}
                return self.operator(inner["type"], {**inner["operands"], "operand_1": first})
            return self.member(self(ops["operand_1"]), key)
        if kind == "not_equals":
            return self(ops["operand_1"]) != self(ops["operand_2"])
        if kind == "equals":
            return self(ops["operand_1"]) == self(ops["operand_2"])
        if kind == "not":
            return not self(ops["bool_value"])
        if kind == "and":
            return bool(self(ops["operand_1"])) and bool(self(ops["operand_2"]))
        if kind == "or":
            return bool(self(ops["operand_1"])) or bool(self(ops["operand_2"]))
        raise NotImplementedError(f"operator {kind}")

    def function(self, node: dict[str, Any]) -> Any:
        kind, params = node["type"], node.get("parameters", {})
        if kind == "tenant":
            value: Any = {"tenantId": TENANT_ID}
        elif kind == "filter":
            name = params["input_element"]
            value = [item for item in self(params["input_array"])
                     if Evaluator(ChainMap({name: item}, self.scope))(params["expression"])]
        else:
            value = self.plain_function(kind, params)
        if "index" in node:  # split(...)[4]
            value = value[node["index"]]
        if "property_name" in node:  # tenant().tenantId: pycep keeps the token's repr
            value = self.member(value, re.search(r"'(\w+)'\)\]?$", node["property_name"]).group(1))
        return value

    def plain_function(self, kind: str, params: dict[str, Any]) -> Any:
        if kind == "contains":
            container, item = self(params["container"]), self(params["item_to_find"])
            if isinstance(container, Mapping):  # an object's keys, case-insensitively
                return item.lower() in {key.lower() for key in container}
            return item in container
        if kind == "string":
            return self.arm_string(self(params["value_to_convert"]))
        if kind == "int":
            value = self(params["value_to_convert"])
            if isinstance(value, bool) or not re.fullmatch(r"-?\d+", str(value)):
                raise ValueError(f"int(): {value!r} is not an integer")  # ARM fails the deployment
            return int(value)
        if kind == "to_lower":
            return self(params["string_to_change"]).lower()
        if kind == "trim":
            return self(params["string_to_trim"]).strip()
        if kind == "empty":
            return not self(params["item_to_test"])
        if kind == "join":
            return self(params["delimiter"]).join(self(params["input_array"]))
        if kind == "split":
            return self(params["input_string"]).split(self(params["delimiter"]))
        if kind == "last":
            return self(params["arg_1"])[-1]
        if kind == "flatten":
            return [item for group in self(params["array_to_flattern"]) for item in group]
        if kind == "replace":
            return self(params["original_string"]).replace(self(params["old_string"]), self(params["new_string"]))
        if kind == "format":
            args = [self(v) for k, v in sorted(params.items()) if k.startswith("arg_")]
            return self(params["format_string"]).format(*args)
        if kind == "guid":  # deterministic, GUID-shaped, like ARM's
            parts = [self.arm_string(self(v)) for k, v in sorted(params.items())]
            return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts)))
        raise NotImplementedError(f"function {kind}")


class NotDeployed(Mapping):
    """A conditional module whose condition is false: reading its outputs is a template bug."""

    def __init__(self, name: str):
        self.name = name

    def __getitem__(self, key: str) -> Any:
        raise AssertionError(f"module {self.name} is not deployed, yet its {key} are read")

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


class TemplateScope(Mapping):
    """The names one template's expressions see: the given parameters (else their literal
    defaults), other bindings (module outputs, ...), and its variables, evaluated on first use
    (loops included)."""

    def __init__(self, doc: dict[str, Any], values: Mapping[str, Any]):
        self.doc = doc
        self.values = {name: self.typed(doc, name, value) for name, value in values.items()}
        self.defaults = {name: spec.get("default") for name, spec in doc.get("parameters", {}).items()}
        self.variables = doc.get("variables", {})

    @staticmethod
    def typed(doc: dict[str, Any], name: str, value: Any) -> Any:
        """azd hands every substituted value over as text; ARM converts it to the parameter's type."""
        kind = doc.get("parameters", {}).get(name, {}).get("type")
        if kind == "bool" and isinstance(value, str):
            assert value in ("true", "false"), f"{name}: {value!r} is not a bool"
            return value == "true"
        if kind == "int" and isinstance(value, str):
            return int(value)
        return value

    def __getitem__(self, name: str) -> Any:
        if name not in self.values:
            if name in self.variables:
                self.values[name] = self.evaluate(self.variables[name]["value"])
            elif name in self.defaults:
                return self.defaults[name]
            else:
                raise KeyError(name)
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values or name in self.variables or name in self.defaults

    def __iter__(self):
        return iter({*self.values, *self.variables, *self.defaults})

    def __len__(self) -> int:
        return len({*self.values, *self.variables, *self.defaults})

    def evaluate(self, node: Any) -> Any:
        """A value, or a `for` loop over an array or an object (items as {key, value})."""
        if isinstance(node, dict) and "loop_type" in node:
            detail = node["loop_type"]["detail"]
            if "object_name" in detail:
                items = [{"key": k, "value": v} for k, v in Evaluator(self)(detail["object_name"]).items()]
            else:
                items = Evaluator(self)(detail["array_name"])
            return [Evaluator(ChainMap({detail["item_name"]: item, **({detail["index_name"]: i} if "index_name" in detail else {})},
                                       self))(node["config"]) for i, item in enumerate(items)]
        return Evaluator(self)(node)


def settings_list(scope: TemplateScope, name: str) -> dict[str, str]:
    """A variable holding [{name, value}] app settings, as name -> value (names unique)."""
    settings = scope[name]
    names = [setting["name"] for setting in settings]
    assert len(names) == len(set(n.upper() for n in names)), f"duplicate settings {names}"
    return {setting["name"]: setting["value"] for setting in settings}


def api_scope(**params: Any) -> TemplateScope:
    return TemplateScope(template("app/api.bicep"), {"keyVaultUri": VAULT_URI, **params})


# --- routes -> ROUTE__<ID>__<FIELD> ----------------------------------------------------------

def route_settings(routes: list[dict[str, Any]], route_key_ids: list[str]) -> dict[str, str]:
    """ROUTE__* app settings api.bicep produces for `routes`: the for-loop per route, then
    `routeSettings = filter(flatten(routeSettingsPerRoute), <drop null values>)`."""
    doc = template("app/api.bicep")
    loop = variable(doc, "routeSettingsPerRoute")
    assert loop["loop_type"]["detail"] == {"item_name": "r", "array_name": "routes"}
    final = variable(doc, "routeSettings")["function"]
    assert final["type"] == "filter"
    assert final["parameters"]["input_array"] == {
        "function": {"type": "flatten", "parameters": {"array_to_flattern": "routeSettingsPerRoute"}}}
    return settings_list(api_scope(routes=routes, routeKeyIds=route_key_ids), "routeSettings")


# --- consumers, GATEWAY_AUTH, GATEWAY_STATE: main.bicep -> api.bicep --------------------------

def consumer_settings(consumers: list[dict[str, Any]], consumer_key_names: list[str]) -> dict[str, str]:
    """CONSUMER__* app settings api.bicep produces, built the same way as the routes'."""
    loop = variable(template("app/api.bicep"), "consumerSettingsPerConsumer")
    assert loop["loop_type"]["detail"] == {"item_name": "c", "array_name": "consumers"}
    return settings_list(api_scope(consumers=consumers, consumerKeyNames=consumer_key_names), "consumerSettings")


REDIS_HOST = "redis-tok3n.eastus2.redis.azure.net"
API_PARAMS_FROM_MAIN = ("gatewayApiKeysSecretUri", "routes", "routeKeyIds", "consumers", "consumerKeyNames", "gatewayAuth", "gatewayEntraTenant",
                        "gatewayEntraAudience", "gatewayState", "gatewayStateAuth", "gatewayStateKeySecretUri",
                        "gatewayIdSecretUri", "additionalAppSettings")


def main_scope(params: Mapping[str, Any]) -> TemplateScope:
    """main.bicep with `params`, its modules' outputs stubbed: `redis` only when its condition
    holds, one `existingRedisAccess` per id of its loop."""
    main = template("main.bicep")
    scope = TemplateScope(main, {**params, "keyVault": {"outputs": {
        "vaultUri": VAULT_URI, "gatewayApiKeysSecretUri": f"{VAULT_URI}secrets/gateway-api-keys",
        "gatewayStateKeySecretUri": f"{VAULT_URI}secrets/gateway-state-key",
        "gatewayIdSecretUri": f"{VAULT_URI}secrets/gateway-id-secret"}}})
    redis = main["modules"]["redis"]["config"]
    scope.values["redis"] = ({"outputs": {"hostName": REDIS_HOST, "name": REDIS_HOST.split(".")[0]}}
                             if Evaluator(scope)(redis["condition"]) else NotDeployed("redis"))
    loop = main["modules"]["existingRedisAccess"]["config"]["loop_type"]["detail"]
    scope.values["existingRedisAccess"] = [{"outputs": {"hostName": f"{cluster_id.rsplit('/', 1)[-1]}.westeurope.redis.azure.net"}}
                                           for cluster_id in scope[loop["array_name"]]]
    return scope


def app_settings_from_main(params: Mapping[str, Any]) -> dict[str, str]:
    """The settings api.bicep generates (all but the base ones) from main.bicep's parameters:
    main's `api` module params evaluated, then api.bicep's own expressions."""
    scope = main_scope(params)
    given = unwrap(template("main.bicep")["modules"]["api"]["config"])["params"]
    api = api_scope(**{name: Evaluator(scope)(given[name]) for name in API_PARAMS_FROM_MAIN})
    settings = {}
    for name in ("gatewayKeySettings", "gatewaySettings", "consumerSettings", "routeSettings", "additionalSettings"):
        settings.update(settings_list(api, name))
    return settings



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
