"""The `consumers` parameter → CONSUMER__<NAME>__<FIELD> app settings, the consumers' keys (Key
Vault references only), and GATEWAY_AUTH with its Entra settings, evaluated from main.bicep and
api.bicep's own expressions and checked with the gateway's loader (DESIGN §9)."""

from __future__ import annotations

import json
import re

import pytest

from bicep_model import (
    INFRA, TENANT_ID, VAULT_URI, Evaluator, app_settings_from_main, code_without_comments, consumer_settings,
    decorator, parameters, template, unwrap, variable,
)

# camelCase consumers[] property → setting field (KEYS comes from consumerKeys, never consumers[]).
CONSUMER_FIELD_PROPERTIES = {
    "PRINCIPALS": "principals", "MODELS": "models", "TOKENS_PER_MINUTE": "tokensPerMinute",
    "REQUESTS_PER_MINUTE": "requestsPerMinute", "TOKEN_QUOTA": "tokenQuota", "QUOTA_PERIOD": "quotaPeriod",
}
OBJECT_ID = "3f2b8a9e-1c4d-4e5f-8a6b-7c8d9e0f1a2b"
CLIENT_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
PLAIN_KEY = "team-a-plain-key-0123456789"


def reference(name: str) -> str:
    return f"@Microsoft.KeyVault(SecretUri={VAULT_URI}secrets/consumer-{name}-keys)"


def test_consumer_settings_cover_design_fields():
    from routing.config.consumers import CONSUMER_FIELDS
    from routing.state import QUOTA_PERIODS
    entries = variable(template("app/api.bicep"), "consumerSettingsPerConsumer")["config"]
    fields = [entry["name"].removeprefix("CONSUMER__${c.name}__") for entry in entries]
    assert sorted(fields) == sorted(CONSUMER_FIELDS) and len(fields) == len(set(fields))
    for field, entry in zip(fields, entries):  # FIELD is read from its camelCase consumers[] property
        if field != "KEYS":
            assert f"'item_to_find': '{CONSUMER_FIELD_PROPERTIES[field]}'" in str(entry["value"]), field
    assert sorted(variable(template("app/api.bicep"), "quotaPeriods")) == sorted(QUOTA_PERIODS)


def test_every_field_of_a_full_consumer():
    consumer = {"name": "team_a", "models": ["gpt-4o", "llama3"], "tokensPerMinute": 50000,
                "requestsPerMinute": 300, "tokenQuota": 10_000_000, "quotaPeriod": "monthly",
                "principals": [OBJECT_ID, CLIENT_ID], "keys": [PLAIN_KEY]}
    assert consumer_settings([consumer], ["team_a"]) == {
        "CONSUMER__team_a__KEYS": reference("team-a"),
        "CONSUMER__team_a__PRINCIPALS": f"{OBJECT_ID},{CLIENT_ID}",
        "CONSUMER__team_a__MODELS": "gpt-4o,llama3",
        "CONSUMER__team_a__TOKENS_PER_MINUTE": "50000",
        "CONSUMER__team_a__REQUESTS_PER_MINUTE": "300",
        "CONSUMER__team_a__TOKEN_QUOTA": "10000000",
        "CONSUMER__team_a__QUOTA_PERIOD": "monthly",
    }


def test_only_given_fields_are_set_and_keys_only_as_key_vault_references():
    consumers = [{"name": "bare"}, {"name": "Team.B", "keys": PLAIN_KEY, "models": []},
                 {"name": "keyed", "requestsPerMinute": "60"}]
    settings = consumer_settings(consumers, ["keyed"])
    assert settings == {"CONSUMER__keyed__KEYS": reference("keyed"), "CONSUMER__keyed__REQUESTS_PER_MINUTE": "60"}
    assert PLAIN_KEY not in json.dumps(settings)  # a key inside consumers[] never becomes a setting
    dotted = consumer_settings(consumers, ["Team.B"])
    assert dotted == {"CONSUMER__Team.B__KEYS": reference("team-b"), "CONSUMER__keyed__REQUESTS_PER_MINUTE": "60"}


def test_consumer_key_secret_names_match_the_references():
    secrets = template("app/keyvault.bicep")["resources"]["consumerKeySecrets"]["config"]
    assert secrets["loop_type"]["detail"] == {"item_name": "consumerName", "array_name": "consumerKeyNames"}
    assert unwrap(secrets)["properties"]["value"] == {
        "operator": {"type": "index_accessor", "operands": {"operand_1": "consumerKeys", "operand_2": "consumerName"}}}
    for name in ("team_a", "Team.B", "bot-1", "default"):
        secret = Evaluator({"consumerName": name})(unwrap(secrets)["name"])
        assert re.fullmatch(r"[0-9a-zA-Z-]{1,127}", secret), f"invalid Key Vault secret name {secret!r}"
        assert consumer_settings([{"name": name}], [name])[f"CONSUMER__{name}__KEYS"] == \
            f"@Microsoft.KeyVault(SecretUri={VAULT_URI}secrets/{secret})"


def test_consumer_keys_go_to_key_vault_only():
    """consumerKeys is @secure and reaches only the Key Vault module; the app gets the names."""
    main = template("main.bicep")
    assert decorator(main["parameters"]["consumerKeys"], "secure") and main["parameters"]["consumerKeys"]["type"] == "object"
    assert main["parameters"]["consumers"]["type"] == "array" and not decorator(main["parameters"]["consumers"], "secure")
    assert unwrap(main["modules"]["keyVault"]["config"])["params"]["consumerKeys"] == "consumerKeys"
    api = unwrap(main["modules"]["api"]["config"])["params"]
    assert api["consumerKeyNames"] == "consumerKeyNames" and "consumerKeys" not in api
    assert "consumerKeys" not in template("app/api.bicep")["parameters"]
    uses = re.findall(r"[^\n]*\bconsumerKeys\b[^\n]*", code_without_comments(INFRA / "main.bicep"))
    assert [use.strip() for use in uses if not use.strip().startswith(("param ", "@description("))] == [
        "var consumerKeyNameCandidates = [for entry in items(consumerKeys): empty(entry.value) ? '' : entry.key]",
        "consumerKeys: consumerKeys"]
    # Names with an empty key (an unset ${VAR} in main.parameters.json) create no secret and no setting.
    settings = app_settings_from_main({**parameters({}), "consumers": [{"name": "a"}, {"name": "b"}],
                                       "consumerKeys": {"a": "", "b": PLAIN_KEY}})
    assert {k: v for k, v in settings.items() if k.startswith("CONSUMER__")} == {"CONSUMER__b__KEYS": reference("b")}
    assert PLAIN_KEY not in json.dumps(settings)


@pytest.mark.parametrize("change, expected", [
    ({"quotaPeriod": "Daily"}, "daily"),  # ARM property names are case-insensitive
    ({"quotaPeriod": "yearly"}, KeyError),  # the deployment fails, naming the allowed periods
    ({"tokensPerMinute": "lots"}, ValueError),  # int() fails the deployment
])
def test_values_are_validated_when_arm_evaluates_them(change, expected):
    consumer = {"name": "c", "tokenQuota": 1000, **change}
    if isinstance(expected, type):
        with pytest.raises(expected) as raised:
            consumer_settings([consumer], [])
        if expected is KeyError:
            assert "'hourly, daily, weekly, monthly'" in str(raised.value)
    else:
        assert consumer_settings([consumer], [])["CONSUMER__c__QUOTA_PERIOD"] == expected


# --- GATEWAY_AUTH and Entra ------------------------------------------------------------------

def test_gateway_auth_parameter():
    for file in ("main.bicep", "app/api.bicep"):
        param = template(file)["parameters"]["gatewayAuth"]
        assert param["default"] == "keys"
        assert decorator(param, "allowed") == ["keys", "entra", "keys,entra", "none"], file
    from routing.config.consumers import AUTH_MODES
    assert set(decorator(template("main.bicep")["parameters"]["gatewayAuth"], "allowed")) <= set(AUTH_MODES)


@pytest.mark.parametrize("auth, entra", [("keys", False), ("entra", True), ("keys,entra", True), ("none", False)])
def test_entra_settings_only_when_gateway_auth_includes_entra(auth, entra):
    settings = app_settings_from_main({**parameters({"GATEWAY_AUTH": auth, "GATEWAY_ENTRA_AUDIENCE": "api://gateway"})})
    assert settings["GATEWAY_AUTH"] == auth
    expected = {"GATEWAY_ENTRA_TENANT": TENANT_ID, "GATEWAY_ENTRA_AUDIENCE": "api://gateway"} if entra else {}
    assert {k: v for k, v in settings.items() if k.startswith("GATEWAY_ENTRA_")} == expected


def test_entra_tenant_defaults_to_the_deployment_tenant_and_audience_is_left_to_the_gateway():
    mine = "8c1e2d3f-0000-4000-8000-000000000001"
    settings = app_settings_from_main(parameters({"GATEWAY_AUTH": "entra", "GATEWAY_ENTRA_TENANT": mine}))
    # No audience given: the setting is absent and the gateway refuses to start naming it.
    assert settings["GATEWAY_ENTRA_TENANT"] == mine and "GATEWAY_ENTRA_AUDIENCE" not in settings


def test_additional_app_settings_win_over_generated_ones():
    settings = app_settings_from_main({**parameters({"GATEWAY_AUTH": "entra", "GATEWAY_ENTRA_AUDIENCE": "api://g"}),
                                       "additionalAppSettings": {"gateway_auth": "none", "GATEWAY_COOLDOWN": 5}})
    assert "GATEWAY_AUTH" not in settings and settings["gateway_auth"] == "none"
    assert settings["GATEWAY_ENTRA_AUDIENCE"] == "api://g" and settings["GATEWAY_COOLDOWN"] == "5"


def test_parameter_file_maps_auth_and_consumers():
    raw = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert raw["gatewayAuth"]["value"] == "${GATEWAY_AUTH=keys}"
    assert raw["gatewayEntraTenant"]["value"] == "${GATEWAY_ENTRA_TENANT=}"
    assert raw["gatewayEntraAudience"]["value"] == "${GATEWAY_ENTRA_AUDIENCE=}"
    assert raw["consumers"]["value"] == [] and raw["consumerKeys"]["value"] == {}
    assert parameters({})["gatewayAuth"] == "keys"


# --- the gateway's own loader ----------------------------------------------------------------

def test_deployed_consumers_load_in_the_gateway():
    """main.bicep's settings for consumers of both kinds, with Key Vault references resolved as
    the platform does, give the consumer table the gateway validates (models known from routes)."""
    from routing.config.settings import load_route_table
    keys = {"team_a": f"{PLAIN_KEY},team-a-next-key-abcdef012345", "default": "gateway-default-key-0123456789"}
    params = {**parameters({"GATEWAY_AUTH": "keys,entra", "GATEWAY_ENTRA_AUDIENCE": "api://gateway,"
                            + CLIENT_ID, "LLAMA_API_KEY": "llama-key"}),
              "consumers": [{"name": "team_a", "models": ["gpt-4o"], "tokensPerMinute": 1000, "tokenQuota": 50000,
                             "quotaPeriod": "Weekly"},
                            {"name": "batch.bot", "principals": [OBJECT_ID], "requestsPerMinute": 10},
                            {"name": "default"}],
              "consumerKeys": keys}
    settings = app_settings_from_main(params)
    secrets = {reference(name.replace("_", "-")): value for name, value in keys.items()}
    secrets[f"@Microsoft.KeyVault(SecretUri={VAULT_URI}secrets/route-llama-api-key)"] = "llama-key"
    assert all(value in secrets for name, value in settings.items() if name.endswith("KEYS"))
    table = load_route_table({name: secrets.get(value, value) for name, value in settings.items()})
    consumers = table.consumers.consumers
    assert sorted(consumers) == ["batch.bot", "default", "team_a"]
    assert table.consumers.modes == ("keys", "entra") and table.consumers.entra.tenant == TENANT_ID
    assert table.consumers.entra.audiences == ("api://gateway", CLIENT_ID)
    team = consumers["team_a"]
    assert [k.get_secret_value() for k in team.keys] == keys["team_a"].split(",")
    assert team.models == frozenset({"gpt-4o"})
    assert (team.limits.tokens_per_minute, team.limits.token_quota, team.limits.quota_period) == (1000, 50000, "weekly")
    assert consumers["batch.bot"].principals == frozenset({OBJECT_ID})
    assert consumers["batch.bot"].limits.requests_per_minute == 10
