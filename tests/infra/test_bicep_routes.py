"""The `routes` parameter → ROUTE__<ID>__<FIELD> app settings, evaluated from api.bicep's own
expression on real inputs (including the example main.parameters.json, checked with the gateway's
validator), plus main.parameters.json and azure.yaml."""

from __future__ import annotations

import json


from bicep_model import (
    INFRA, ROOT, ROUTE_FIELD_PROPERTIES, ROUTE_FIELDS, VAULT_URI, parameters, route_settings, template, variable, yaml,
)


def test_route_settings_cover_design_fields():
    loop = variable(template("app/api.bicep"), "routeSettingsPerRoute")
    entries = loop["config"]
    names = [entry["name"] for entry in entries]
    assert all(name.startswith("ROUTE__${r.id}__") for name in names)
    fields = [name.removeprefix("ROUTE__${r.id}__") for name in names]
    assert sorted(fields) == sorted(ROUTE_FIELDS) and len(fields) == len(set(fields))
    for field, entry in zip(fields, entries):  # FIELD is read from its camelCase routes[] property
        if field == "API_KEY":
            continue
        condition = entry["value"]["operator"]["operands"]["condition"]["function"]
        assert condition["type"] == "contains"
        assert condition["parameters"]["item_to_find"] == ROUTE_FIELD_PROPERTIES[field], field
    from routing.config import settings as settings_module
    assert set(settings_module.ROUTE_FIELDS) == ROUTE_FIELDS, "DESIGN §3 fields and routing/config/settings.py differ"


def test_every_field_of_a_full_route():
    route = {"id": "FULL", "model": "o3-mini", "backend": "azure-openai", "endpoint": "https://res.openai.azure.com",
             "deployment": "o3-mini-dep", "apiVersion": "2024-12-01-preview", "auth": "key",
             "clientId": "00000000-0000-0000-0000-000000000001",
             "scope": "https://cognitiveservices.azure.com/.default",
             "headers": {"x-team": "platform"}, "params": {"drop": ["user"], "set": {"store": False}},
             "priority": 2, "weight": 3, "timeout": 90, "keyHeader": "api-key", "reasoning": True,
             "apiKey": "must-never-be-used"}
    settings = route_settings([route], ["FULL"])
    assert settings == {
        "ROUTE__FULL__MODEL": "o3-mini", "ROUTE__FULL__BACKEND": "azure-openai",
        "ROUTE__FULL__ENDPOINT": "https://res.openai.azure.com", "ROUTE__FULL__DEPLOYMENT": "o3-mini-dep",
        "ROUTE__FULL__API_VERSION": "2024-12-01-preview", "ROUTE__FULL__AUTH": "key",
        "ROUTE__FULL__API_KEY": f"@Microsoft.KeyVault(SecretUri={VAULT_URI}secrets/route-full-api-key)",
        "ROUTE__FULL__CLIENT_ID": "00000000-0000-0000-0000-000000000001",
        "ROUTE__FULL__SCOPE": "https://cognitiveservices.azure.com/.default",
        "ROUTE__FULL__HEADERS": '{"x-team":"platform"}',
        "ROUTE__FULL__PARAMS": '{"drop":["user"],"set":{"store":false}}',
        "ROUTE__FULL__PRIORITY": "2", "ROUTE__FULL__WEIGHT": "3", "ROUTE__FULL__TIMEOUT": "90",
        "ROUTE__FULL__KEY_HEADER": "api-key", "ROUTE__FULL__REASONING": "true",
    }
    assert "must-never-be-used" not in json.dumps(settings)


def test_only_given_fields_are_set_and_keys_only_from_route_api_keys():
    settings = route_settings([{"id": "My_Route.1", "model": "m", "backend": "azure-ai", "endpoint": "https://x.y",
                                "apiKey": "ignored"}], [])
    assert settings == {"ROUTE__My_Route.1__MODEL": "m", "ROUTE__My_Route.1__BACKEND": "azure-ai",
                        "ROUTE__My_Route.1__ENDPOINT": "https://x.y"}
    keyed = route_settings([{"id": "My_Route.1", "model": "m"}], ["My_Route.1"])
    assert keyed["ROUTE__My_Route.1__API_KEY"] == f"@Microsoft.KeyVault(SecretUri={VAULT_URI}secrets/route-my-route-1-api-key)"


# --- main.parameters.json and azure.yaml -----------------------------------------------------

def test_parameters_file_is_valid_json_with_azd_variables():
    raw = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert raw["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert raw["location"]["value"] == "${AZURE_LOCATION}"
    assert raw["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert raw["gatewayApiKeys"]["value"] == "${GATEWAY_API_KEYS}"
    assert raw["routeApiKeys"]["value"] == {}  # the example's routes use the app's identity
    assert raw["azureOpenAiResourceIds"]["value"] == ["${AZURE_OPENAI_RESOURCE_ID=}"]
    main_params = template("main.bicep")["parameters"]
    assert set(raw) <= set(main_params), f"not parameters of main.bicep: {set(raw) - set(main_params)}"
    required = {name for name, spec in main_params.items() if spec.get("default") is None}
    assert required <= set(raw)
    for env in ({}, {"AZURE_ENV_NAME": "dev", "AZURE_LOCATION": "eastus2", "LLAMA_API_KEY": "k",
                     "AZURE_OPENAI_RESOURCE_ID": "/subscriptions/s/resourceGroups/g/providers/"
                                                 "Microsoft.CognitiveServices/accounts/a"}):
        values = parameters(env)  # valid JSON whatever the environment holds
        assert isinstance(values["routes"], list) and isinstance(values["azureOpenAiResourceIds"], list)


def test_example_routes():
    routes = parameters({})["routes"]
    llama = next(r for r in routes if r["id"] == "LLAMA")
    # Foundry's OpenAI v1 endpoint (the model inference API is deprecated), with the app's identity.
    assert llama == {"id": "LLAMA", "model": "llama3", "backend": "azure-ai", "apiVersion": "v1",
                     "auth": "managed-identity", "endpoint": "https://YOUR-RESOURCE.services.ai.azure.com",
                     "deployment": "Llama-3.3-70B-Instruct"}
    assert parameters({"FOUNDRY_ENDPOINT": "https://mine.services.ai.azure.com"})["routes"][0]["endpoint"] == \
        "https://mine.services.ai.azure.com"
    gpt = next(r for r in routes if r["id"] == "GPT4O")
    assert gpt == {"id": "GPT4O", "model": "gpt-4o", "backend": "azure-openai",
                   "endpoint": "https://YOUR-RESOURCE.openai.azure.com", "auth": "managed-identity"}
    assert parameters({"AZURE_OPENAI_ENDPOINT": "https://mine.openai.azure.com"})["routes"][1]["endpoint"] == \
        "https://mine.openai.azure.com"
    assert parameters({})["azureOpenAiResourceIds"] == [""]  # main.bicep filters the empty id out


def test_example_parameters_give_a_valid_route_table():
    """The app settings the example deployment produces load in the gateway's own validator
    (Key Vault references resolved, as the platform does before the process starts)."""
    from routing.config import settings as settings_module
    values = parameters({})
    key_ids = [route_id for route_id, key in values["routeApiKeys"].items() if key]
    env = route_settings(values["routes"], key_ids)
    assert env["ROUTE__LLAMA__API_VERSION"] == "v1" and env["ROUTE__LLAMA__AUTH"] == "managed-identity"
    assert not any(name.endswith("__API_KEY") for name in env)
    table = settings_module.load_route_table({**env, "GATEWAY_API_KEYS": "gw-key-0123456789abcdef"})
    assert sorted(route.id for route in table.routes) == ["GPT4O", "LLAMA"]
    llama = table.routes_by_id["LLAMA"]
    assert llama.scope == "https://ai.azure.com/.default" and llama.redacted()["family"] == "llama"


def test_azure_yaml():
    config = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert config["name"]
    assert config["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
