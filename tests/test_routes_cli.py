"""`python -m routing routes convert | diff | list`: routes files (ours and LiteLLM's model_list)
→ app settings that the gateway's own loader reads back as the same route table; diff and list
never show a key; a converted LiteLLM config serves real requests through the gateway."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys

import openai
import pytest
import yaml

from routing.manage.routes_file import FILE_FIELDS
from routing.config.settings import load_route_table
from tests.helpers import GATEWAY_KEY, REPO, GatewayProcess, clean_environ

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
DEFAULT_SCOPE = "https://cognitiveservices.azure.com/.default"
NO_PARAMS = {"drop": [], "rename": {}, "defaults": {}, "set": {}}
KV_REF = "@Microsoft.KeyVault(SecretUri=https://vault.vault.azure.net/secrets/llama/)"

# apiVersion 2024-10-21 is unquoted on purpose: YAML reads it as a date.
OUR_ROUTES_YAML = """\
routes:
  - id: GPT4O
    model: gpt-4o
    backend: azure-openai
    endpoint: https://res.openai.azure.com/
    auth: managed-identity
    clientId: 11111111-2222-3333-4444-555555555555
    headers: {x-team: platform}
  - id: LLAMA
    model: llama3
    backend: azure-ai
    endpoint: https://Meta-Llama-3-70B-Instruct-abc.eastus2.models.ai.azure.com
    apiKey: llama-secret-1
    headers: {extra-parameters: pass-through}
    params: {drop: [seed], rename: {stop_sequences: stop}, defaults: {max_tokens: 7}, set: {top_p: 0.5}}
    priority: 0
    weight: 0.5
  - id: O3_EU
    model: o3-mini
    backend: azure-openai
    endpoint: https://eu.openai.azure.com
    deployment: o3-mini-eu
    apiVersion: 2024-12-01-preview
    apiKey: o3-secret-2
    scope: https://cognitiveservices.azure.com/.default
    timeout: 120
    keyHeader: bearer
    reasoning: false
    priority: 2
    weight: 0
  - id: FOUNDRY
    model: mistral-large
    backend: azure-ai
    endpoint: https://res.services.ai.azure.com/models
    deployment: Mistral-Large-2411
    apiVersion: 2024-10-21
"""

# What the loader must make of OUR_ROUTES_YAML: every field, defaults included.
EXPECTED_ROUTES = {
    "GPT4O": {"id": "GPT4O", "model": "gpt-4o", "backend": "azure-openai", "endpoint": "https://res.openai.azure.com",
              "deployment": "gpt-4o", "api_version": "2024-10-21", "auth": "managed-identity", "api_key": None,
              "client_id": CLIENT_ID, "scope": DEFAULT_SCOPE, "headers": {"x-team": "platform"},
              "params": NO_PARAMS, "priority": 1, "weight": 1.0, "timeout": 60.0, "key_header": "api-key",
              "reasoning": False},
    "LLAMA": {"id": "LLAMA", "model": "llama3", "backend": "azure-ai",
              "endpoint": "https://Meta-Llama-3-70B-Instruct-abc.eastus2.models.ai.azure.com",
              "deployment": "llama3", "api_version": "2024-05-01-preview", "auth": "key",
              "api_key": "llama-secret-1", "client_id": None, "scope": DEFAULT_SCOPE,
              "headers": {"extra-parameters": "pass-through"},
              "params": {"drop": ["seed"], "rename": {"stop_sequences": "stop"}, "defaults": {"max_tokens": 7},
                         "set": {"top_p": 0.5}},
              "priority": 0, "weight": 0.5, "timeout": 60.0, "key_header": "bearer", "reasoning": False},
    "O3_EU": {"id": "O3_EU", "model": "o3-mini", "backend": "azure-openai", "endpoint": "https://eu.openai.azure.com",
              "deployment": "o3-mini-eu", "api_version": "2024-12-01-preview", "auth": "key",
              "api_key": "o3-secret-2", "client_id": None, "scope": DEFAULT_SCOPE, "headers": {},
              "params": NO_PARAMS, "priority": 2, "weight": 0.0, "timeout": 120.0, "key_header": "bearer",
              "reasoning": False},
    "FOUNDRY": {"id": "FOUNDRY", "model": "mistral-large", "backend": "azure-ai",
                "endpoint": "https://res.services.ai.azure.com/models", "deployment": "Mistral-Large-2411",
                "api_version": "2024-10-21", "auth": "managed-identity", "api_key": None, "client_id": None,
                "scope": DEFAULT_SCOPE, "headers": {}, "params": NO_PARAMS, "priority": 1, "weight": 1.0,
                "timeout": 60.0, "key_header": "api-key", "reasoning": False},
}
SECRETS = ("llama-secret-1", "o3-secret-2")


def routes(*args: str, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "routing", "routes", *args], capture_output=True, text=True,
                          env={**clean_environ(), **(env or {}), "PYTHONPATH": str(REPO)}, cwd=cwd, timeout=60)


def appsettings(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert all(set(item) == {"name", "value", "slotSetting"} and item["slotSetting"] is False for item in items)
    return {item["name"]: item["value"] for item in items}


def route_table(settings: dict[str, str]) -> dict[str, dict]:
    table = load_route_table({**settings, "GATEWAY_API_KEYS": "k-0123456789abcdef"})
    return {r.id: {**r.model_dump(mode="json", exclude={"family"} if r.family is None else set()),
                   "api_key": r.api_key.get_secret_value() if r.api_key else None}
            for r in table.routes}


def write_local_settings(path, values: dict, **extra) -> None:
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values, **extra}, indent=2))


def test_route_fields_are_the_bicep_route_fields():
    bicep = (REPO / "infra" / "app" / "api.bicep").read_text()
    pairs = set(re.findall(r"name: 'ROUTE__\$\{r\.id\}__(\w+)'\s*value: contains\(r, '(\w+)'\)", bicep))
    # apiKey is ours only: the Bicep takes keys from the @secure routeApiKeys, never from routes[].
    assert pairs == {(setting, name) for name, setting in FILE_FIELDS.items() if name != "apiKey"}


def test_round_trip_our_format_yaml_json_and_env(tmp_path):
    (tmp_path / "routes.yaml").write_text(OUR_ROUTES_YAML)
    from_yaml = appsettings(routes("convert", "routes.yaml", "--format", "appsettings-json", cwd=tmp_path))
    assert route_table(from_yaml) == EXPECTED_ROUTES
    assert from_yaml["ROUTE__FOUNDRY__API_VERSION"] == "2024-10-21"
    assert from_yaml["ROUTE__LLAMA__HEADERS"] == '{"extra-parameters":"pass-through"}'  # as the Bicep writes it

    # The same routes as a bare JSON list under a name without a known extension: sniffed.
    as_list = yaml.safe_load(OUR_ROUTES_YAML.replace("apiVersion: 2024-10-21", "apiVersion: '2024-10-21'"))["routes"]
    (tmp_path / "routes.txt").write_text(json.dumps(as_list))
    from_json = appsettings(routes("convert", "routes.txt", "--format", "appsettings-json", cwd=tmp_path))
    assert from_json == from_yaml

    result = routes("convert", "routes.yaml", "--format", "env", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert dict(line.split("=", 1) for line in result.stdout.splitlines()) == from_yaml


def test_local_settings_merge_keeps_other_values_and_removes_stale_routes(tmp_path):
    (tmp_path / "routes.yaml").write_text(OUR_ROUTES_YAML)
    others = {"FUNCTIONS_WORKER_RUNTIME": "python", "GATEWAY_API_KEYS": "local-key-0123456789", "GATEWAY_CREDENTIAL": "default"}
    write_local_settings(tmp_path / "local.settings.json", {
        "FUNCTIONS_WORKER_RUNTIME": "python", "ROUTE__STALE__MODEL": "old", "ROUTE__STALE__BACKEND": "azure-ai",
        "ROUTE__STALE__ENDPOINT": "https://s.models.ai.azure.com", "ROUTE__STALE__API_KEY": "stale-key",
        "GATEWAY_API_KEYS": "local-key-0123456789", "ROUTE__LLAMA__MODEL": "previous-name", "GATEWAY_CREDENTIAL": "default",
    }, Host={"CORS": "*"})

    result = routes("convert", "routes.yaml", "--format", "local-settings", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("removed ROUTE__STALE__MODEL, ROUTE__STALE__BACKEND, ROUTE__STALE__ENDPOINT, ROUTE__STALE__API_KEY"
            in result.stderr)
    data = json.loads((tmp_path / "local.settings.json").read_text())
    assert data["IsEncrypted"] is False and data["Host"] == {"CORS": "*"}
    values = data["Values"]
    assert {k: v for k, v in values.items() if not k.startswith("ROUTE__")} == others
    assert route_table({k: v for k, v in values.items() if k.startswith("ROUTE__")}) == EXPECTED_ROUTES

    # The gateway reads the file the same way; a second diff finds nothing to do.
    check = subprocess.run([sys.executable, "-m", "routing", "check"], capture_output=True, text=True, cwd=tmp_path,
                           env={**clean_environ(), "PYTHONPATH": str(REPO)}, timeout=60)
    assert check.returncode == 0, check.stdout
    assert json.loads(check.stdout)["models"] == {"gpt-4o": ["GPT4O"], "mistral-large": ["FOUNDRY"],
                                                  "llama3": ["LLAMA"], "o3-mini": ["O3_EU"]}
    result = routes("diff", "routes.yaml", cwd=tmp_path)
    assert result.returncode == 0 and "no route changes" in result.stdout, result.stdout + result.stderr

    # A new file is created readable by its owner only (it holds keys).
    result = routes("convert", "routes.yaml", "--format", "local-settings", "--out", "new.settings.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "new.settings.json").stat().st_mode) == 0o600
    assert json.loads((tmp_path / "new.settings.json").read_text())["Values"] == {
        k: v for k, v in values.items() if k.startswith("ROUTE__")}


def deployed(settings: dict[str, str]) -> str:
    """What `az functionapp config appsettings list` prints."""
    return json.dumps([{"name": k, "value": v, "slotSetting": False} for k, v in settings.items()])


def test_diff_against_the_deployed_app(tmp_path):
    (tmp_path / "current.json").write_text(deployed({
        "AzureWebJobsStorage__accountName": "st",
        "GATEWAY_API_KEYS": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/gateway-api-keys)",
        "ROUTE__KEEP__MODEL": "gpt-4o", "ROUTE__KEEP__BACKEND": "azure-openai",
        "ROUTE__KEEP__ENDPOINT": "https://res.openai.azure.com", "ROUTE__KEEP__HEADERS": '{"x-team": "platform"}',
        "ROUTE__LLAMA__MODEL": "llama3", "ROUTE__LLAMA__BACKEND": "azure-ai",
        "ROUTE__LLAMA__ENDPOINT": "https://old.models.ai.azure.com", "ROUTE__LLAMA__API_KEY": "old-llama-secret",
        "ROUTE__SAME__MODEL": "llama3", "ROUTE__SAME__BACKEND": "azure-ai",
        "ROUTE__SAME__ENDPOINT": "https://b.models.ai.azure.com", "ROUTE__SAME__API_KEY": "same-secret",
        "ROUTE__GONE__MODEL": "m", "ROUTE__GONE__BACKEND": "azure-openai",
        "ROUTE__GONE__ENDPOINT": "https://x.openai.azure.com",
        "ROUTE__GONE__API_KEY": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/route-gone-api-key)",
    }))
    (tmp_path / "routes.json").write_text(json.dumps({"routes": [
        {"id": "KEEP", "model": "gpt-4o", "backend": "azure-openai", "endpoint": "https://res.openai.azure.com",
         "headers": {"x-team": "platform"}},
        {"id": "LLAMA", "model": "llama3", "backend": "azure-ai", "endpoint": "https://new.models.ai.azure.com",
         "apiKey": "new-llama-secret"},
        {"id": "SAME", "model": "llama3", "backend": "azure-ai", "endpoint": "https://b.models.ai.azure.com",
         "apiKey": "same-secret"},
        {"id": "NEW", "model": "gpt-4o-mini", "backend": "azure-openai", "endpoint": "https://res.openai.azure.com"},
    ]}))
    result = routes("diff", "routes.json", "--current-json", "current.json", "--app", "my-func",
                    "--resource-group", "my-rg", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    changes = [line for line in lines if line[:2] in ("+ ", "~ ", "- ")]
    assert changes == [
        "+ ROUTE__NEW__MODEL = gpt-4o-mini",
        "+ ROUTE__NEW__BACKEND = azure-openai",
        "+ ROUTE__NEW__ENDPOINT = https://res.openai.azure.com",
        "~ ROUTE__LLAMA__ENDPOINT = https://old.models.ai.azure.com -> https://new.models.ai.azure.com",
        "~ ROUTE__LLAMA__API_KEY = <redacted> -> <redacted>",
        "- ROUTE__GONE__MODEL (was m)",
        "- ROUTE__GONE__BACKEND (was azure-openai)",
        "- ROUTE__GONE__ENDPOINT (was https://x.openai.azure.com)",
        "- ROUTE__GONE__API_KEY (was @Microsoft.KeyVault(SecretUri="
        "https://v.vault.azure.net/secrets/route-gone-api-key))",
    ]  # KEEP (HEADERS compared as JSON) and SAME (key compared by hash) are unchanged
    for secret in ("old-llama-secret", "new-llama-secret", "same-secret"):
        assert secret not in result.stdout + result.stderr
    target = "--name my-func --resource-group my-rg"
    set_command = f"az functionapp config appsettings set {target} --settings @routes.appsettings.json"
    delete_command = (f"az functionapp config appsettings delete {target} --setting-names "
                      "ROUTE__GONE__MODEL ROUTE__GONE__BACKEND ROUTE__GONE__ENDPOINT ROUTE__GONE__API_KEY")
    convert_command = ("python -m routing routes convert routes.json --format appsettings-json "
                       "--out routes.appsettings.json")
    assert lines.index(convert_command) < lines.index(set_command) < lines.index(delete_command)


def test_diff_orders_the_commands_so_the_app_stays_valid(tmp_path):
    """Key → managed identity: setting AUTH first would leave AUTH=managed-identity next to the old
    API_KEY (invalid), so the delete goes first."""
    (tmp_path / "current.json").write_text(deployed({
        "GATEWAY_API_KEYS": "k-0123456789abcdef", "ROUTE__A__MODEL": "gpt-4o", "ROUTE__A__BACKEND": "azure-openai",
        "ROUTE__A__ENDPOINT": "https://res.openai.azure.com", "ROUTE__A__API_KEY": "a-secret"}))
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump({"routes": [
        {"id": "A", "model": "gpt-4o", "backend": "azure-openai", "endpoint": "https://res.openai.azure.com",
         "auth": "managed-identity"}]}))
    result = routes("diff", "routes.yaml", "--current-json", "current.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    delete = next(i for i, line in enumerate(lines) if line.startswith("az functionapp config appsettings delete"))
    set_ = next(i for i, line in enumerate(lines) if line.startswith("az functionapp config appsettings set"))
    assert delete < set_ and lines[delete].endswith("--setting-names ROUTE__A__API_KEY")
    assert '--name "$AZURE_FUNCTION_NAME" --resource-group "$AZURE_RESOURCE_GROUP"' in lines[delete]
    assert "a-secret" not in result.stdout + result.stderr


def test_list_shows_the_current_routes_without_keys(tmp_path):
    write_local_settings(tmp_path / "local.settings.json", {
        "GATEWAY_API_KEYS": "k-0123456789abcdef", "ROUTE__LLAMA__MODEL": "llama3", "ROUTE__LLAMA__BACKEND": "azure-ai",
        "ROUTE__LLAMA__ENDPOINT": "https://l.models.ai.azure.com", "ROUTE__LLAMA__API_KEY": "list-secret",
        "ROUTE__GPT__MODEL": "gpt-4o", "ROUTE__GPT__BACKEND": "azure-openai",
        "ROUTE__GPT__ENDPOINT": "https://res.openai.azure.com", "ROUTE__GPT__DEPLOYMENT": "gpt-4o-2024",
        "ROUTE__GPT__PRIORITY": "3"})
    result = routes("list", cwd=tmp_path, env={"ROUTE__LLAMA__WEIGHT": "0.5"})  # the environment wins
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [["id", "model", "backend", "endpoint", "deployment", "auth", "priority", "weight"],
                    ["GPT", "gpt-4o", "azure-openai", "https://res.openai.azure.com", "gpt-4o-2024",
                     "managed-identity", "3", "1"],
                    ["LLAMA", "llama3", "azure-ai", "https://l.models.ai.azure.com", "llama3", "key", "1", "0.5"]]
    assert "list-secret" not in result.stdout + result.stderr

    # A Key Vault reference is fine where App Service resolves it, an error in a local file.
    current = {"ROUTE__A__MODEL": "llama3", "ROUTE__A__BACKEND": "azure-ai",
               "ROUTE__A__ENDPOINT": "https://l.models.ai.azure.com", "ROUTE__A__API_KEY": KV_REF}
    (tmp_path / "current.json").write_text(deployed(current))
    result = routes("list", "--current-json", "current.json", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.splitlines()[1].split()[:2] == ["A", "llama3"], result.stderr
    write_local_settings(tmp_path / "other.settings.json", current)
    result = routes("list", "--current", "other.settings.json", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("ROUTE__A__API_KEY: the Key Vault reference was not resolved")
    assert "hint: only App Service resolves" in result.stderr


VALID = {"id": "BAD", "model": "llama3", "backend": "azure-ai", "endpoint": "https://l.models.ai.azure.com",
         "apiKey": "bad-route-secret"}


@pytest.mark.parametrize("change, expected", [
    ({"endpoint": "http://example.com"}, "ROUTE__BAD__ENDPOINT: must use https"),
    ({"backend": "bedrock"}, "ROUTE__BAD__BACKEND: 'bedrock' is not a backend"),
    ({"weight": -1}, "ROUTE__BAD__WEIGHT:"),
    ({"headers": {"Authorization": "x"}}, "ROUTE__BAD__HEADERS: 'Authorization' is set by the gateway"),
    ({"auth": "managed-identity"}, "ROUTE__BAD__API_KEY: set while ROUTE__BAD__AUTH is managed-identity"),
    ({"apiVersion": "latest"}, "ROUTE__BAD__API_VERSION: 'latest' is not an api-version"),
    ({"endpiont": "https://x"}, "routes[0]: unknown field 'endpiont' (did you mean 'endpoint'?)"),
    ({"api_key": "x"}, "routes[0]: unknown field 'api_key' (did you mean 'apiKey'?)"),
    ({"id": None}, "routes[0]: 'id' is required"),
    ({"id": "A__B"}, "routes[0]: 'id' is required: letters, digits"),
])
def test_an_invalid_file_fails_naming_the_setting_and_writes_nothing(tmp_path, change, expected):
    route = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    (tmp_path / "routes.json").write_text(json.dumps({"routes": [route]}))
    write_local_settings(tmp_path / "local.settings.json", {"GATEWAY_API_KEYS": "k-0123456789abcdef"})
    before = (tmp_path / "local.settings.json").read_text()
    for output in ("local-settings", "appsettings-json", "env"):
        result = routes("convert", "routes.json", "--format", output, cwd=tmp_path)
        assert result.returncode == 1, (output, result.stdout)
        assert any(line.startswith(expected) for line in result.stderr.splitlines()), result.stderr
        assert result.stdout == "" and "bad-route-secret" not in result.stderr
    assert (tmp_path / "local.settings.json").read_text() == before
    result = routes("diff", "routes.json", cwd=tmp_path)
    assert result.returncode == 1 and expected in result.stderr


def test_duplicate_ids_and_unsupported_litellm_providers_fail(tmp_path):
    (tmp_path / "routes.json").write_text(json.dumps([VALID, {**VALID, "id": "bad"}]))
    result = routes("convert", "routes.json", "--format", "env", cwd=tmp_path)
    assert result.returncode == 1 and "[1]: id 'bad' is already used by [0]" in result.stderr
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model_list": [
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-sonnet"}}]}))
    result = routes("convert", "config.yaml", "--format", "env", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("model_list[0] ('claude'): litellm_params.model 'anthropic/claude-3-5-sonnet' "
                                    "cannot be converted")


def litellm_config(aoai: str, ai: str) -> dict:
    return {
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "azure/gpt-4o", "api_base": aoai,
                                                        "api_version": "2024-10-21", "rpm": 60}},
            {"model_name": "llama3", "litellm_params": {
                "model": "azure_ai/Meta-Llama-3-70B-Instruct", "api_base": ai, "api_key": "os.environ/LLAMA_KEY",
                "headers": {"extra-parameters": "pass-through"}}},
        ],
        "router_settings": {"routing_strategy": "simple-shuffle"},
    }


def test_litellm_model_list_converts(tmp_path):
    config = litellm_config("https://res.openai.azure.com", "https://ai-res.services.ai.azure.com")
    config["model_list"].append({"model_name": "gpt-4o", "litellm_params": {
        "model": "azure/gpt-4o-eu", "api_base": "https://eu.openai.azure.com", "api_key": "literal-eu-key",
        "order": 2, "weight": 3}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    result = routes("convert", "config.yaml", "--format", "appsettings-json", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith(
        "model_list[1] ('llama3'): litellm_params.api_key: os.environ/LLAMA_KEY, but LLAMA_KEY is not set")
    assert "--key-ref 'LLAMA_KEY=@Microsoft.KeyVault(" in result.stderr

    result = routes("convert", "config.yaml", "--format", "appsettings-json", cwd=tmp_path,
                    env={"LLAMA_KEY": "env-key"})
    assert appsettings(result) == {
        "ROUTE__GPT_4O__MODEL": "gpt-4o", "ROUTE__GPT_4O__BACKEND": "azure-openai",
        "ROUTE__GPT_4O__ENDPOINT": "https://res.openai.azure.com", "ROUTE__GPT_4O__DEPLOYMENT": "gpt-4o",
        "ROUTE__GPT_4O__API_VERSION": "2024-10-21",
        "ROUTE__LLAMA3__MODEL": "llama3", "ROUTE__LLAMA3__BACKEND": "azure-ai",
        # A Foundry resource: its OpenAI v1 endpoint, not the model inference API LiteLLM calls.
        "ROUTE__LLAMA3__ENDPOINT": "https://ai-res.services.ai.azure.com", "ROUTE__LLAMA3__API_VERSION": "v1",
        "ROUTE__LLAMA3__DEPLOYMENT": "Meta-Llama-3-70B-Instruct", "ROUTE__LLAMA3__API_KEY": "env-key",
        "ROUTE__LLAMA3__HEADERS": '{"extra-parameters":"pass-through"}',
        "ROUTE__GPT_4O_2__MODEL": "gpt-4o", "ROUTE__GPT_4O_2__BACKEND": "azure-openai",
        "ROUTE__GPT_4O_2__ENDPOINT": "https://eu.openai.azure.com", "ROUTE__GPT_4O_2__DEPLOYMENT": "gpt-4o-eu",
        "ROUTE__GPT_4O_2__API_KEY": "literal-eu-key", "ROUTE__GPT_4O_2__PRIORITY": "2",
        "ROUTE__GPT_4O_2__WEIGHT": "3",
    }
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: router_settings: LiteLLM proxy settings have no gateway equivalent; ignored",
        "warning: model_list[0] ('gpt-4o'): litellm_params.rpm has no gateway equivalent; ignored",
        "warning: model_list[0] ('gpt-4o'): no api_key, so the route uses the app's managed identity "
        "(LiteLLM would have read AZURE_API_KEY)",
        "warning: model_list[1] ('llama3'): on Foundry's OpenAI v1 endpoint "
        "(https://ai-res.services.ai.azure.com/openai/v1), the successor of the deprecated model inference "
        "API LiteLLM calls",
    ]

    # os.environ/NAME mapped to a Key Vault reference: right for App Service, refused locally.
    result = routes("convert", "config.yaml", "--format", "appsettings-json", "--key-ref", f"LLAMA_KEY={KV_REF}",
                    cwd=tmp_path)
    assert appsettings(result)["ROUTE__LLAMA3__API_KEY"] == KV_REF
    result = routes("convert", "config.yaml", "--format", "local-settings", "--key-ref", f"LLAMA_KEY={KV_REF}",
                    cwd=tmp_path)
    assert result.returncode == 1
    assert "ROUTE__LLAMA3__API_KEY: the Key Vault reference was not resolved" in result.stderr
    assert not (tmp_path / "local.settings.json").exists()


def test_converted_litellm_config_serves_through_the_gateway(emulators, upstreams, clean, tmp_path):
    urls = emulators.urls
    for upstream in ("serverless", "aoai"):  # records are what this test checks; another test may turn them off
        upstreams[upstream].configure(record=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(litellm_config(urls["azure_openai"],
                                                                        urls["azure_ai_serverless"])))
    settings = appsettings(routes("convert", "config.yaml", "--format", "appsettings-json", cwd=tmp_path,
                                  env={"LLAMA_KEY": upstreams["serverless"].key}))
    gateway = GatewayProcess({**settings, "GATEWAY_API_KEYS": GATEWAY_KEY, "IDENTITY_ENDPOINT": urls["identity"],
                              "IDENTITY_HEADER": emulators.identity_header}, tmp_path)
    try:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
        messages = [{"role": "user", "content": "Say hello"}]
        chunks = list(client.chat.completions.create(model="llama3", messages=messages, stream=True,
                                                     stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("Hello! You said: Say hello")
        assert [c.usage.completion_tokens for c in chunks if c.usage] == [len(text.split())]
        (seen,) = upstreams["serverless"].requests()
        assert seen["headers"]["extra-parameters"] == "pass-through"
        assert seen["headers"]["authorization"] == f"Bearer {upstreams['serverless'].key}"
        assert seen["body"]["stream_options"] == {"include_usage": True}

        reply = client.chat.completions.create(model="gpt-4o", messages=messages)
        assert reply.choices[0].message.content.startswith("Hello! You said: Say hello")
        (seen,) = [r for r in upstreams["aoai"].requests() if not r["path"].startswith("/msi")]
        assert seen["path"] == "/openai/deployments/gpt-4o/chat/completions"
        assert seen["headers"]["authorization"].startswith("Bearer ey")  # the managed identity's token
    finally:
        gateway.stop()


def test_migrate_v1_moves_foundry_models_routes_only(tmp_path):
    current = {"GATEWAY_API_KEYS": "k-0123456789abcdef",
               "ROUTE__MISTRAL__MODEL": "mistral", "ROUTE__MISTRAL__BACKEND": "azure-ai",
               "ROUTE__MISTRAL__ENDPOINT": "https://res.services.ai.azure.com/models",
               "ROUTE__MISTRAL__DEPLOYMENT": "Mistral-Large-2411", "ROUTE__MISTRAL__API_KEY": "k" * 20,
               "ROUTE__LLAMA__MODEL": "llama", "ROUTE__LLAMA__BACKEND": "azure-ai",
               "ROUTE__LLAMA__ENDPOINT": "https://Meta-Llama-3-70B-Instruct-abc.eastus2.models.ai.azure.com",
               "ROUTE__LLAMA__API_KEY": "k" * 20}
    write_local_settings(tmp_path / "local.settings.json", current)
    result = routes("migrate-v1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "moving MISTRAL to Foundry's OpenAI v1 endpoint" in out
    assert "~ ROUTE__MISTRAL__ENDPOINT = https://res.services.ai.azure.com/models -> https://res.services.ai.azure.com" in out
    assert "+ ROUTE__MISTRAL__API_VERSION = v1" in out
    assert "ROUTE__LLAMA__" not in out  # serverless: no v1 endpoint there
    assert "k" * 20 not in out

