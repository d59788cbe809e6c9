"""The app-settings contract (DESIGN §3): `routing check`, `routing serve` refusal, and the
rules of the table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from routing.config.settings import SettingsError, load_route_table
from tests.helpers import REPO, clean_environ

BASE = {"GATEWAY_API_KEYS": "k-0123456789abcdef", "ROUTE__A__MODEL": "llama3", "ROUTE__A__BACKEND": "azure-ai",
        "ROUTE__A__ENDPOINT": "https://Meta-Llama-3-70B-Instruct-abc.eastus2.models.ai.azure.com",
        "ROUTE__A__API_KEY": "secret-value-123"}


def errors_for(**changes) -> list[str]:
    env = {**BASE, **changes}
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(SettingsError) as raised:
        load_route_table(env)
    return raised.value.errors


def test_defaults():
    table = load_route_table({**BASE, "ROUTE__B__MODEL": "gpt-4o", "ROUTE__B__BACKEND": "azure-openai",
                              "ROUTE__B__ENDPOINT": "https://res.openai.azure.com/",
                              "ROUTE__C__MODEL": "o3-mini", "ROUTE__C__BACKEND": "azure-openai",
                              "ROUTE__C__ENDPOINT": "https://res.services.ai.azure.com", "ROUTE__C__API_KEY": "x",
                              "AZURE_CLIENT_ID": "cid"})
    a, b, c = (next(r for r in table.routes if r.id == i) for i in "ABC")
    assert (a.auth, a.key_header, a.api_version, a.deployment) == ("key", "bearer", "2024-05-01-preview", "llama3")
    assert (b.auth, b.api_version, b.endpoint, b.client_id) == ("managed-identity", "2024-10-21", "https://res.openai.azure.com", "cid")
    assert (c.key_header, c.reasoning, b.reasoning) == ("api-key", True, False)
    assert (a.priority, a.weight, a.timeout) == (1, 1.0, 60.0)
    assert table.gateway.max_body_bytes == 16 * 1024 * 1024 and table.gateway.cooldown == 10


def test_pools_and_draining_weight():
    table = load_route_table({**BASE, "ROUTE__A2__MODEL": "llama3", "ROUTE__A2__BACKEND": "azure-ai",
                              "ROUTE__A2__ENDPOINT": "https://b.models.ai.azure.com",
                              "ROUTE__A2__API_KEY": "x", "ROUTE__A2__WEIGHT": "0"})
    assert [r.id for r in table.pools["llama3"]] == ["A", "A2"]
    assert table.pools["llama3"][1].weight == 0


@pytest.mark.parametrize("changes, expected", [
    ({"ROUTE__A__ENDPIONT": "x"}, "ROUTE__A__ENDPIONT: unknown route field 'ENDPIONT' (did you mean ROUTE__A__ENDPOINT?)"),
    ({"ROUTE__A__MODEL": None}, "ROUTE__A__MODEL: required"),
    ({"ROUTE__A__BACKEND": "bedrock"}, "ROUTE__A__BACKEND: 'bedrock' is not a backend"),
    ({"ROUTE__A__ENDPOINT": "http://example.com"}, "ROUTE__A__ENDPOINT: must use https"),
    ({"ROUTE__A__API_KEY": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/k/)"},
     "ROUTE__A__API_KEY: the Key Vault reference was not resolved"),
    ({"ROUTE__A__PRIORITY": "-1"}, "ROUTE__A__PRIORITY:"),
    ({"ROUTE__A__WEIGHT": "-2"}, "ROUTE__A__WEIGHT:"),
    ({"ROUTE__A__TIMEOUT": "0"}, "ROUTE__A__TIMEOUT:"),
    ({"ROUTE__A__HEADERS": "{not json"}, "ROUTE__A__HEADERS: not valid JSON"),
    ({"ROUTE__A__HEADERS": '{"Authorization": "x"}'}, "ROUTE__A__HEADERS: 'Authorization' is set by the gateway"),
    ({"ROUTE__A__PARAMS": '{"dorp": []}'}, "ROUTE__A__PARAMS: unknown key 'dorp'"),
    ({"ROUTE__A__PARAMS": '{"set": {"temperature": NaN}}'}, "ROUTE__A__PARAMS: not valid JSON (NaN"),
    ({"ROUTE__A__AUTH": "token"}, "ROUTE__A__AUTH: 'token' is not allowed"),
    ({"ROUTE__A__AUTH": "managed-identity"}, "ROUTE__A__API_KEY: set while ROUTE__A__AUTH is managed-identity"),
    ({"ROUTE__A__API_VERSION": "v1"}, "ROUTE__A__API_VERSION: v1 is not served by serverless"),
    ({"ROUTE__A__API_VERSION": "v2"}, "ROUTE__A__API_VERSION: 'v2' is not an api-version"),
    ({"ROUTE__A__API_VERSION": "v1", "ROUTE__A__ENDPOINT": "https://res.services.ai.azure.com/models"},
     "ROUTE__A__ENDPOINT: ends with /models (the model inference API); for v1 use the resource endpoint "
     "'https://res.services.ai.azure.com'"),
    ({"ROUTE__A__API_VERSION": "v1", "ROUTE__A__ENDPOINT": "https://res.services.ai.azure.com/openai/v1"},
     "ROUTE__A__ENDPOINT: the gateway adds /openai/v1 itself"),
    ({"ROUTE__A__FAMILY": "llama"}, "ROUTE__A__FAMILY: only for azure-ai routes with ROUTE__A__API_VERSION=v1"),
    ({"ROUTE__A__API_VERSION": "v1", "ROUTE__A__ENDPOINT": "https://res.services.ai.azure.com",
      "ROUTE__A__FAMILY": "llamma"}, "ROUTE__A__FAMILY: 'llamma' is not a family; allowed: llama, mistral"),
    ({"ROUTE__A__KEY_HEADER": "x-key"}, "ROUTE__A__KEY_HEADER:"),
    ({"ROUTE__A__REASONING": "maybe"}, "ROUTE__A__REASONING:"),
    ({"ROUTE__A__SCOPE": "https://x"}, "ROUTE__A__SCOPE:"),
    ({"ROUTE__A": "x"}, "ROUTE__A: not a route setting"),
    ({"GATEWAY_API_KEYS": None}, "GATEWAY_API_KEYS: required while GATEWAY_AUTH includes 'keys'"),
    ({"GATEWAY_AUTH": "maybe"}, "GATEWAY_AUTH: 'maybe' is not allowed"),
    ({"GATEWAY_MAX_BODY_BYTES": "0"}, "GATEWAY_MAX_BODY_BYTES:"),
    ({"GATEWAY_COOLDOWN": "-1"}, "GATEWAY_COOLDOWN:"),
    ({"GATEWAY_CREDENTIAL": "cli"}, "GATEWAY_CREDENTIAL:"),
    ({"GATEWAY_API_KEYS": "a"}, "GATEWAY_API_KEYS: a key shorter than 16 characters"),
    ({"GATEWAY_API_KEYS": "long-enough-key-0001,short"}, "GATEWAY_API_KEYS: a key shorter"),
    ({"GATEWAY_MAX_RESPONSE_BYTES": "0"}, "GATEWAY_MAX_RESPONSE_BYTES:"),
    ({"GATEWAY_BODY_TIMEOUT": "0"}, "GATEWAY_BODY_TIMEOUT:"),
    ({"GATEWAY_BODY_TIMEOUT": "500"}, "GATEWAY_BODY_TIMEOUT:"),
    ({"GATEWAY_MAX_INFLIGHT_BODY_BYTES": "1000"},
     "GATEWAY_MAX_INFLIGHT_BODY_BYTES: 1000 is below GATEWAY_MAX_BODY_BYTES"),
    ({"GATEWAY_BREAKER_TIMEOUTS": "0"}, "GATEWAY_BREAKER_TIMEOUTS:"),
])
def test_each_bad_setting_is_named(changes, expected):
    errors = errors_for(**changes)
    assert any(e.startswith(expected) for e in errors), errors
    assert not any("secret-value-123" in e for e in errors)


def test_short_inbound_key_is_not_echoed():
    errors = errors_for(GATEWAY_API_KEYS="tiny-key-zz")
    assert errors and not any("tiny-key-zz" in e for e in errors), errors


def test_every_error_is_reported_at_once():
    errors = errors_for(ROUTE__A__PRIORITY="-1", ROUTE__A__TIMEOUT="x", ROUTE__B__MODEL="m",
                        GATEWAY_AUTH="maybe")
    assert [e.split(":")[0] for e in errors] == [
        "ROUTE__A__PRIORITY", "ROUTE__A__TIMEOUT", "ROUTE__B__BACKEND", "ROUTE__B__ENDPOINT", "GATEWAY_AUTH"]


def run_cli(*args: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "routing", *args], capture_output=True, text=True,
                          env={**clean_environ(), **env, "PYTHONPATH": str(REPO)}, cwd=cwd, timeout=60)


def test_check_prints_redacted_table(tmp_path):
    result = run_cli("check", env=BASE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["routes"][0]["api_key"] == "<redacted>" and table["models"] == {"llama3": ["A"]}
    assert "secret-value-123" not in result.stdout + result.stderr


def test_check_lists_every_error_and_fails(tmp_path):
    result = run_cli("check", env={**BASE, "ROUTE__A__ENDPIONT": "x", "ROUTE__A__WEIGHT": "-1"}, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["ROUTE__A__ENDPIONT", "ROUTE__A__WEIGHT"]


def test_check_reads_local_settings_json_and_environment_wins(tmp_path):
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        **BASE, "ROUTE__A__MODEL": "from-file", "FUNCTIONS_WORKER_RUNTIME": "python"}}))
    result = run_cli("check", env={}, cwd=tmp_path)
    assert json.loads(result.stdout)["models"] == {"from-file": ["A"]}
    result = run_cli("check", env={"ROUTE__A__MODEL": "from-env"}, cwd=tmp_path)
    assert json.loads(result.stdout)["models"] == {"from-env": ["A"]}


def test_serve_refuses_invalid_or_empty_table(tmp_path):
    result = run_cli("serve", "--port", "1", env={**BASE, "ROUTE__A__BACKEND": "bedrock"}, cwd=tmp_path)
    assert result.returncode == 1 and "ROUTE__A__BACKEND: 'bedrock' is not a backend" in result.stderr
    result = run_cli("serve", "--port", "1", env={"GATEWAY_API_KEYS": "k-0123456789abcdef"}, cwd=tmp_path)
    assert result.returncode == 1 and "no routes configured" in result.stderr


def test_check_redacts_secret_looking_header_values(tmp_path):
    env = {**BASE, "ROUTE__A__HEADERS": '{"Ocp-Apim-Subscription-Key": "apim-secret-123", "x-team": "blue"}'}
    result = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 0
    headers = json.loads(result.stdout)["routes"][0]["headers"]
    assert headers == {"Ocp-Apim-Subscription-Key": "<redacted>", "x-team": "blue"}
    assert "apim-secret-123" not in result.stdout


@pytest.mark.parametrize("name", ["Accept", "accept-encoding", "Host", "Cookie"])
def test_gateway_owned_headers_cannot_be_injected(name):
    errors = errors_for(ROUTE__A__HEADERS=json.dumps({name: "x"}))
    assert errors == [f"ROUTE__A__HEADERS: '{name}' is set by the gateway and cannot be injected"]


def test_foundry_v1_routes():
    table = load_route_table({**BASE, "ROUTE__A__ENDPOINT": "https://res.services.ai.azure.com",
                              "ROUTE__A__API_VERSION": "v1", "ROUTE__A__DEPLOYMENT": "DeepSeek-R1",
                              "ROUTE__P__MODEL": "mistral", "ROUTE__P__BACKEND": "azure-ai",
                              "ROUTE__P__ENDPOINT": "https://res.services.ai.azure.com/api/projects/team",
                              "ROUTE__P__API_VERSION": "v1", "ROUTE__P__FAMILY": "mistral"})
    a, p = table.routes_by_id["A"], table.routes_by_id["P"]
    assert (a.api_version, a.family, p.family) == ("v1", None, "mistral")
    assert a.scope == p.scope == "https://ai.azure.com/.default"  # the v1 endpoint's documented audience
    from routing.upstream.backends import BACKENDS

    backend = BACKENDS["azure-ai"]
    assert backend.url(a, "chat/completions") == "https://res.services.ai.azure.com/openai/v1/chat/completions"
    assert backend.url(p, "embeddings") == "https://res.services.ai.azure.com/api/projects/team/openai/v1/embeddings"
    deepseek = backend.rules_for(a, "chat/completions")
    assert "temperature" in deepseek.drop and deepseek.rename["max_tokens"] == "max_completion_tokens"
    assert "reasoning_content" in deepseek.message_drop and deepseek.tools
    assert "user" not in backend.rules_for(p, "chat/completions").accepted

