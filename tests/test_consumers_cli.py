"""`python -m routing consumers convert | diff | list`: consumers files → CONSUMER__* app settings
that the gateway's own loader reads back as the same consumer table, validated against the
current routes and GATEWAY_* settings; diff and list never show a key; a converted consumer
calls the gateway with its key."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import httpx
import pytest
import yaml

from routing.__main__ import main
from routing.config.settings import load_route_table
from routing.manage.consumers_file import FILE_FIELDS
from tests.helpers import REPO, GatewayProcess, clean_environ

OBJECT_ID = "3f2b8a9e-1c4d-4e5f-8a6b-7c8d9e0f1a2b"
TENANT = "72f988bf-0000-4000-8000-00000000beef"
KEY_A, KEY_A2, KEY_B = "team-a-key-0123456789abcdef", "team-a-next-key-0123456789", "team-b-key-0123456789abcdef"
GATEWAY_KEY = "gateway-key-0123456789abcdef"
KV_REF = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/consumer-team-b-keys)"
ROUTES = {"ROUTE__GPT__MODEL": "gpt-4o", "ROUTE__GPT__BACKEND": "azure-openai",
          "ROUTE__GPT__ENDPOINT": "https://res.openai.azure.com",
          "ROUTE__LLAMA__MODEL": "llama3", "ROUTE__LLAMA__BACKEND": "azure-ai",
          "ROUTE__LLAMA__ENDPOINT": "https://l.models.ai.azure.com", "ROUTE__LLAMA__API_KEY": "llama-key-0123456789"}
ENTRA = {"GATEWAY_AUTH": "keys,entra", "GATEWAY_ENTRA_TENANT": TENANT, "GATEWAY_ENTRA_AUDIENCE": "api://gateway"}

CONSUMERS_YAML = f"""\
consumers:
  - name: team-a
    keys: [{KEY_A}, os.environ/TEAM_A_NEXT_KEY]
    models: [gpt-4o, llama3]
    tokensPerMinute: 50000
    requestsPerMinute: 300
    tokenQuota: 10000000
    quotaPeriod: weekly
  - name: batch.bot
    principals: [{OBJECT_ID}]
    requestsPerMinute: 10
  - name: team_b
    keys: {KEY_B}
"""
EXPECTED_SETTINGS = {
    "CONSUMER__team-a__KEYS": f"{KEY_A},{KEY_A2}", "CONSUMER__team-a__MODELS": "gpt-4o,llama3",
    "CONSUMER__team-a__TOKENS_PER_MINUTE": "50000", "CONSUMER__team-a__REQUESTS_PER_MINUTE": "300",
    "CONSUMER__team-a__TOKEN_QUOTA": "10000000", "CONSUMER__team-a__QUOTA_PERIOD": "weekly",
    "CONSUMER__batch.bot__PRINCIPALS": OBJECT_ID, "CONSUMER__batch.bot__REQUESTS_PER_MINUTE": "10",
    "CONSUMER__team_b__KEYS": KEY_B,
}
EXPECTED_TABLE = {
    "batch.bot": {"keys": "<0 redacted>", "principals": [OBJECT_ID], "models": "all",
                  "limits": {"requests_per_minute": 10}},
    "default": {"keys": "<1 redacted>", "principals": [], "models": "all", "limits": {}},
    "team-a": {"keys": "<2 redacted>", "principals": [], "models": ["gpt-4o", "llama3"],
               "limits": {"tokens_per_minute": 50000, "requests_per_minute": 300, "token_quota": 10000000,
                          "quota_period": "weekly"}},
    "team_b": {"keys": "<1 redacted>", "principals": [], "models": "all", "limits": {}},
}
SECRETS = (KEY_A, KEY_A2, KEY_B, GATEWAY_KEY)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`python -m routing consumers ...` in-process, in tmp_path, with no gateway settings in the
    environment but `env`; returns (exit code, stdout, stderr)."""
    for name in list(os.environ):
        if name not in clean_environ():
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            code = main(["consumers", *args])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def local_settings(path, values: dict, **extra) -> None:
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values, **extra}, indent=2))


def deployed(settings: dict[str, str]) -> str:
    """What `az functionapp config appsettings list` prints."""
    return json.dumps([{"name": k, "value": v, "slotSetting": False} for k, v in settings.items()])


def table(settings: dict[str, str]) -> dict:
    return load_route_table(settings).consumers.describe()


def never_shown(*texts: str) -> None:
    for secret in SECRETS:
        assert all(secret not in text for text in texts), secret


def test_file_fields_are_the_bicep_consumer_fields():
    bicep = (REPO / "infra" / "app" / "api.bicep").read_text()
    pairs = set(re.findall(r"name: 'CONSUMER__\$\{c\.name\}__(\w+)'\s*value: contains\(c, '(\w+)'\)", bicep))
    # keys is ours only: the Bicep takes keys from the @secure consumerKeys, never from consumers[].
    assert pairs == {(setting, name) for name, setting in FILE_FIELDS.items() if name != "keys"}
    assert len(pairs) == 6


def test_round_trip_yaml_json_and_env(cli, tmp_path):
    (tmp_path / "consumers.yaml").write_text(CONSUMERS_YAML)
    current = {**ROUTES, **ENTRA, "GATEWAY_API_KEYS": GATEWAY_KEY}
    (tmp_path / "current.json").write_text(deployed(current))
    env = {"TEAM_A_NEXT_KEY": KEY_A2}
    code, out, err = cli("convert", "consumers.yaml", "--format", "appsettings-json", "--current-json", "current.json",
                         env=env)
    assert code == 0, err
    items = json.loads(out)
    assert all(set(item) == {"name", "value", "slotSetting"} and item["slotSetting"] is False for item in items)
    from_yaml = {item["name"]: item["value"] for item in items}
    assert from_yaml == EXPECTED_SETTINGS and list(from_yaml) == list(EXPECTED_SETTINGS)  # file order
    assert table({**current, **from_yaml}) == EXPECTED_TABLE
    assert err == "consumers: batch.bot (1 principal, all models), team-a (2 keys, 2 models), team_b (1 key, all models)\n"

    # The same consumers as a bare JSON list, keys as one comma-separated string: the same settings.
    as_list = yaml.safe_load(CONSUMERS_YAML)["consumers"]
    as_list[0]["keys"] = f"{KEY_A},os.environ/TEAM_A_NEXT_KEY"
    (tmp_path / "consumers.txt").write_text(json.dumps(as_list))
    local_settings(tmp_path / "local.settings.json", current)
    code, out, err = cli("convert", "consumers.txt", "--format", "env", env=env)
    assert code == 0, err
    assert dict(line.split("=", 1) for line in out.splitlines()) == EXPECTED_SETTINGS


def test_local_settings_merge_keeps_other_values_and_removes_stale_consumers(cli, tmp_path):
    (tmp_path / "consumers.yaml").write_text(CONSUMERS_YAML)
    others = {"FUNCTIONS_WORKER_RUNTIME": "python", "GATEWAY_API_KEYS": GATEWAY_KEY, **ENTRA, **ROUTES}
    local_settings(tmp_path / "local.settings.json", {
        **others, "CONSUMER__GONE__KEYS": "gone-key-0123456789abcdef", "CONSUMER__team-a__MODELS": "llama3"},
        Host={"CORS": "*"})
    code, _, err = cli("convert", "consumers.yaml", "--format", "local-settings", env={"TEAM_A_NEXT_KEY": KEY_A2})
    assert code == 0, err
    assert "local.settings.json: 9 consumer settings written; removed CONSUMER__GONE__KEYS" in err
    data = json.loads((tmp_path / "local.settings.json").read_text())
    assert data["IsEncrypted"] is False and data["Host"] == {"CORS": "*"}
    assert data["Values"] == {**others, **EXPECTED_SETTINGS}

    # The gateway reads the file the same way; a second diff finds nothing to do.
    check = subprocess.run([sys.executable, "-m", "routing", "check"], capture_output=True, text=True, cwd=tmp_path,
                           env={**clean_environ(), "PYTHONPATH": str(REPO)}, timeout=60)
    assert check.returncode == 0, check.stdout
    assert json.loads(check.stdout)["consumers"] == EXPECTED_TABLE
    never_shown(check.stdout, check.stderr)
    code, out, err = cli("diff", "consumers.yaml", env={"TEAM_A_NEXT_KEY": KEY_A2})
    assert code == 0 and out.endswith("no consumer changes\n"), out + err

    # --format local-settings validates the file it writes (here without routes), not the environment.
    code, _, err = cli("convert", "consumers.yaml", "--format", "local-settings", "--out", "new.settings.json",
                       env={"TEAM_A_NEXT_KEY": KEY_A2, **ROUTES})
    assert code == 1 and "CONSUMER__TEAM-A__MODELS: unknown model 'gpt-4o'" in err
    assert not (tmp_path / "new.settings.json").exists()


def test_a_new_local_settings_file_is_private(cli, tmp_path):
    (tmp_path / "consumers.json").write_text(json.dumps({"consumers": [{"name": "solo", "keys": [KEY_A]}]}))
    code, _, err = cli("convert", "consumers.json", "--format", "local-settings", "--out", "new.settings.json")
    assert code == 0, err
    assert stat.S_IMODE((tmp_path / "new.settings.json").stat().st_mode) == 0o600
    assert json.loads((tmp_path / "new.settings.json").read_text())["Values"] == {"CONSUMER__solo__KEYS": KEY_A}
    code, out, err = cli("convert", "consumers.json", "--format", "env", "--out", "solo.env")
    assert code == 0 and out == "" and stat.S_IMODE((tmp_path / "solo.env").stat().st_mode) == 0o600


def test_diff_against_the_deployed_app(cli, tmp_path):
    (tmp_path / "current.json").write_text(deployed({
        **ROUTES, "GATEWAY_API_KEYS": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/gateway-api-keys)",
        "CONSUMER__team-a__KEYS": f"{KEY_A2},{KEY_A}", "CONSUMER__team-a__MODELS": "llama3,gpt-4o",
        "CONSUMER__team-a__TOKENS_PER_MINUTE": "1000",
        "CONSUMER__team_b__KEYS": "old-team-b-key-0123456789",
        "CONSUMER__gone__KEYS": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/consumer-gone-keys)",
        "CONSUMER__gone__QUOTA_PERIOD": "daily", "CONSUMER__gone__TOKEN_QUOTA": "5"}))
    (tmp_path / "consumers.yaml").write_text(yaml.safe_dump({"consumers": [
        {"name": "team-a", "keys": [KEY_A, KEY_A2], "models": ["gpt-4o", "llama3"], "tokensPerMinute": 2000},
        {"name": "team_b", "keys": [KEY_B]},
        {"name": "new", "keys": KV_REF, "quotaPeriod": "Daily", "tokenQuota": 100}]}))
    code, out, err = cli("diff", "consumers.yaml", "--current-json", "current.json", "--app", "my-func",
                         "--resource-group", "my-rg")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "# consumers: 3 now, 3 after; settings: 3 added, 2 changed, 3 removed"
    assert [line for line in lines if line[:2] in ("+ ", "~ ", "- ")] == [
        f"+ CONSUMER__new__KEYS = {KV_REF}",  # a Key Vault reference is only a pointer
        "+ CONSUMER__new__TOKEN_QUOTA = 100",
        "+ CONSUMER__new__QUOTA_PERIOD = Daily",
        "~ CONSUMER__team-a__TOKENS_PER_MINUTE = 1000 -> 2000",
        "~ CONSUMER__team_b__KEYS = <1 keys> -> <1 keys>",
        "- CONSUMER__gone__KEYS (was @Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/consumer-gone-keys))",
        "- CONSUMER__gone__QUOTA_PERIOD (was daily)",
        "- CONSUMER__gone__TOKEN_QUOTA (was 5)",
    ]  # team-a's KEYS and MODELS only changed order: unchanged
    never_shown(out, err, "old-team-b-key-0123456789")
    assert "old-team-b-key" not in out + err
    target = "--name my-func --resource-group my-rg"
    assert lines[-4:] == [
        "python -m routing consumers convert consumers.yaml --format appsettings-json --out consumers.appsettings.json",
        f"az functionapp config appsettings set {target} --settings @consumers.appsettings.json",
        "rm consumers.appsettings.json  # it holds the consumer keys",
        f"az functionapp config appsettings delete {target} --setting-names CONSUMER__gone__KEYS "
        "CONSUMER__gone__QUOTA_PERIOD CONSUMER__gone__TOKEN_QUOTA"]


def test_list_shows_the_current_consumers_without_keys(cli, tmp_path):
    local_settings(tmp_path / "local.settings.json", {
        **ROUTES, **ENTRA, "GATEWAY_API_KEYS": GATEWAY_KEY, "CONSUMER__team-a__KEYS": f"{KEY_A},{KEY_A2}",
        "CONSUMER__team-a__MODELS": "llama3", "CONSUMER__team-a__TOKEN_QUOTA": "1000",
        "CONSUMER__BOT__PRINCIPALS": OBJECT_ID})
    code, out, err = cli("list", env={"CONSUMER__team-a__TOKENS_PER_MINUTE": "500"})  # the environment wins
    assert code == 0, err
    assert [line.split() for line in out.splitlines()] == [
        ["#", "GATEWAY_AUTH=keys,entra;", "Entra", "tenant", TENANT],
        ["name", "keys", "principals", "models", "tokens/min", "requests/min", "quota"],
        ["bot", "<0", "keys>", "1", "all", "-", "-", "-"],
        ["default", "<1", "keys>", "0", "all", "-", "-", "-"],
        ["team-a", "<2", "keys>", "0", "llama3", "500", "-", "1000/monthly"]]
    never_shown(out, err)

    # Key Vault references: fine where App Service resolves them, an error in a local file.
    current = {**ROUTES, "GATEWAY_API_KEYS": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/g)",
               "CONSUMER__team_b__KEYS": KV_REF}
    (tmp_path / "current.json").write_text(deployed(current))
    code, out, err = cli("list", "--current-json", "current.json")
    assert code == 0, err
    rows = [line.split("  ") for line in out.splitlines()[2:]]
    assert [(row[0], row[1].strip()) for row in rows] == [("default", "<Key Vault reference>"),
                                                          ("team_b", "<Key Vault reference>")]
    local_settings(tmp_path / "other.settings.json", current)
    code, out, err = cli("list", "--current", "other.settings.json")
    assert code == 1 and [line.split(":")[0] for line in err.splitlines()] == [
        "GATEWAY_API_KEYS", "CONSUMER__TEAM_B__KEYS", "hint"]
    assert "a Key Vault reference was not resolved" in err and "only App Service resolves" in err

    # list shows the settings as they are: no stand-in for a missing inbound key.
    local_settings(tmp_path / "bare.settings.json", ROUTES)
    code, _, err = cli("list", "--current", "bare.settings.json")
    assert code == 1 and err.startswith("GATEWAY_API_KEYS: required while GATEWAY_AUTH includes 'keys'")


def test_models_are_checked_against_the_current_routes(cli, tmp_path):
    (tmp_path / "consumers.yaml").write_text(yaml.safe_dump({"consumers": [
        {"name": "team-a", "keys": [KEY_A], "models": ["gpt-4q"]}]}))
    local_settings(tmp_path / "local.settings.json", ROUTES)
    code, out, err = cli("convert", "consumers.yaml", "--format", "appsettings-json")
    assert code == 1 and out == ""
    assert err.splitlines()[0] == ("CONSUMER__TEAM-A__MODELS: unknown model 'gpt-4q'; did you mean 'gpt-4o'?"
                                   "  [consumers[0]]")
    assert "hint: MODELS are checked against the routes of the current settings" in err
    (tmp_path / "current.json").write_text(deployed({**ROUTES, "ROUTE__Q__MODEL": "gpt-4q",
                                                      "ROUTE__Q__BACKEND": "azure-openai",
                                                      "ROUTE__Q__ENDPOINT": "https://q.openai.azure.com"}))
    code, out, err = cli("convert", "consumers.yaml", "--format", "appsettings-json", "--current-json", "current.json")
    assert code == 0 and json.loads(out) == [
        {"name": "CONSUMER__team-a__KEYS", "value": KEY_A, "slotSetting": False},
        {"name": "CONSUMER__team-a__MODELS", "value": "gpt-4q", "slotSetting": False}], err


def test_keys_from_the_environment_or_key_vault(cli, tmp_path):
    (tmp_path / "consumers.yaml").write_text(yaml.safe_dump({"consumers": [
        {"name": "team-a", "keys": ["os.environ/TEAM_A_KEY"]}]}))
    local_settings(tmp_path / "local.settings.json", ROUTES)
    code, _, err = cli("convert", "consumers.yaml", "--format", "env")
    assert code == 1 and err.startswith("consumers[0]: keys: os.environ/TEAM_A_KEY, but TEAM_A_KEY is not set")
    assert "--key-ref 'TEAM_A_KEY=@Microsoft.KeyVault(" in err
    code, out, err = cli("convert", "consumers.yaml", "--format", "env", env={"TEAM_A_KEY": KEY_A})
    assert code == 0 and out == f"CONSUMER__team-a__KEYS={KEY_A}\n", err
    # Mapped to a Key Vault reference: right for App Service, refused locally.
    code, out, err = cli("convert", "consumers.yaml", "--format", "appsettings-json", "--key-ref", f"TEAM_A_KEY={KV_REF}")
    assert code == 0 and json.loads(out)[0]["value"] == KV_REF, err
    code, out, err = cli("convert", "consumers.yaml", "--format", "local-settings", "--key-ref", f"TEAM_A_KEY={KV_REF}")
    assert code == 1 and "CONSUMER__TEAM-A__KEYS: a Key Vault reference was not resolved" in err
    assert "hint: only App Service resolves" in err
    assert "CONSUMER__" not in (tmp_path / "local.settings.json").read_text()
    # Two consumers whose keys are both references are not taken for one shared key.
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({"consumers": [
        {"name": "a", "keys": KV_REF}, {"name": "b", "keys": KV_REF.replace("team-b", "b")}]}))
    code, out, err = cli("convert", "two.yaml", "--format", "appsettings-json")
    assert code == 0, err


def test_entra_only_gateway(cli, tmp_path):
    """GATEWAY_AUTH=entra: no inbound key is assumed, and a key is an error."""
    local_settings(tmp_path / "local.settings.json", {**ROUTES, **ENTRA, "GATEWAY_AUTH": "entra"})
    (tmp_path / "consumers.yaml").write_text(yaml.safe_dump({"consumers": [{"name": "bot", "principals": [OBJECT_ID]}]}))
    code, out, err = cli("convert", "consumers.yaml", "--format", "env")
    assert code == 0 and out == f"CONSUMER__bot__PRINCIPALS={OBJECT_ID}\n", err
    (tmp_path / "keyed.yaml").write_text(yaml.safe_dump({"consumers": [{"name": "bot", "keys": [KEY_A]}]}))
    code, _, err = cli("convert", "keyed.yaml", "--format", "env")
    assert code == 1 and "CONSUMER__BOT__KEYS: keys are set but GATEWAY_AUTH (entra) does not accept keys" in err
    never_shown(err)


VALID = {"name": "bad", "keys": [KEY_B], "models": ["gpt-4o"]}


@pytest.mark.parametrize("change, expected", [
    ({"quotaPeriod": "yearly", "tokenQuota": 5}, "CONSUMER__BAD__QUOTA_PERIOD: 'yearly' is not allowed"),
    ({"tokensPerMinute": -1}, "CONSUMER__BAD__TOKENS_PER_MINUTE: '-1' is not a whole number"),
    ({"tokensPerMinute": True}, "consumers[0]: tokensPerMinute: expected a whole number"),
    ({"principals": ["not-a-guid"]}, "CONSUMER__BAD__PRINCIPALS: 'not-a-guid' is not an object id"),
    ({"keys": ["short"]}, "CONSUMER__BAD__KEYS: a key shorter than 16 characters"),
    ({"keys": [KV_REF, KEY_A]}, "consumers[0]: keys: a Key Vault reference must be the whole value"),
    ({"models": [1]}, "consumers[0]: models: expected a list of strings"),
    ({"tokensPerMinit": 5}, "consumers[0]: unknown field 'tokensPerMinit' (did you mean 'tokensPerMinute'?)"),
    ({"name": None}, "consumers[0]: 'name' is required"),
    ({"name": "a__b"}, "consumers[0]: 'name' is required: letters, digits"),
    ({"name": "bad name"}, "CONSUMER__bad name__KEYS: consumer name 'bad name' may contain only"),
    ({"keys": [], "models": []}, "consumers[0]: consumer 'bad' gives no field"),
])
def test_an_invalid_file_fails_naming_the_setting_and_writes_nothing(cli, tmp_path, change, expected):
    consumer = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    (tmp_path / "consumers.json").write_text(json.dumps({"consumers": [consumer]}))
    local_settings(tmp_path / "local.settings.json", {**ROUTES, "GATEWAY_API_KEYS": GATEWAY_KEY})
    before = (tmp_path / "local.settings.json").read_text()
    for output in ("local-settings", "appsettings-json", "env"):
        code, out, err = cli("convert", "consumers.json", "--format", output)
        assert code == 1, (output, out)
        assert any(line.startswith(expected) for line in err.splitlines()), err
        assert out == ""
        never_shown(err)
    assert (tmp_path / "local.settings.json").read_text() == before
    code, _, err = cli("diff", "consumers.json")
    assert code == 1 and expected in err


def test_a_key_of_two_consumers_and_duplicate_names_fail(cli, tmp_path):
    local_settings(tmp_path / "local.settings.json", {**ROUTES, "GATEWAY_API_KEYS": GATEWAY_KEY})
    (tmp_path / "consumers.json").write_text(json.dumps([{"name": "a", "keys": [KEY_A]}, {"name": "b", "keys": KEY_A}]))
    code, _, err = cli("convert", "consumers.json", "--format", "env")
    assert code == 1 and "CONSUMER__B__KEYS: a key also used by CONSUMER__A__KEYS" in err
    (tmp_path / "consumers.json").write_text(json.dumps([{"name": "a", "keys": [KEY_A]}, {"name": "A", "keys": KEY_B}]))
    code, _, err = cli("convert", "consumers.json", "--format", "env")
    assert code == 1 and err.startswith("[1]: name 'A' is already used by [0]")
    (tmp_path / "consumers.json").write_text(json.dumps({"routes": []}))
    code, _, err = cli("convert", "consumers.json", "--format", "env")
    assert code == 1 and 'expected {"consumers": [...]} or a list of consumers' in err
    never_shown(err)


def test_a_converted_consumer_calls_the_gateway(emulators, upstreams, clean, tmp_path):
    """The settings `consumers convert` writes are what the gateway serves: the consumer's key is
    accepted and named in x-gateway-consumer, its models are enforced, another key is refused."""
    urls = emulators.urls
    routes = {"ROUTE__GPT__MODEL": "gpt-4o", "ROUTE__GPT__BACKEND": "azure-openai",
              "ROUTE__GPT__ENDPOINT": urls["azure_openai"], "ROUTE__GPT__API_KEY": upstreams["aoai"].key,
              "ROUTE__LLAMA__MODEL": "llama3", "ROUTE__LLAMA__BACKEND": "azure-ai",
              "ROUTE__LLAMA__ENDPOINT": urls["azure_ai_serverless"], "ROUTE__LLAMA__API_KEY": upstreams["serverless"].key}
    (tmp_path / "consumers.yaml").write_text(yaml.safe_dump({"consumers": [
        {"name": "team-a", "keys": [KEY_A], "models": ["gpt-4o"], "requestsPerMinute": 100}]}))
    convert = subprocess.run([sys.executable, "-m", "routing", "consumers", "convert", "consumers.yaml",
                              "--format", "appsettings-json"], capture_output=True, text=True, cwd=tmp_path,
                             env={**clean_environ(), **routes, "PYTHONPATH": str(REPO)}, timeout=60)
    assert convert.returncode == 0, convert.stderr
    settings = {item["name"]: item["value"] for item in json.loads(convert.stdout)}
    gateway = GatewayProcess({**routes, **settings}, tmp_path)
    try:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}]}
        reply = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                           headers={"Authorization": f"Bearer {KEY_A}"})
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-gateway-consumer"] == "team-a"
        other = httpx.post(gateway.url + "/v1/chat/completions", json={**body, "model": "llama3"}, timeout=30,
                           headers={"Authorization": f"Bearer {KEY_A}"})
        assert other.status_code == 403 and other.json()["error"]["code"] == "model_not_allowed"
        stranger = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                              headers={"Authorization": f"Bearer {KEY_B}"})
        assert stranger.status_code == 401
    finally:
        gateway.stop()
