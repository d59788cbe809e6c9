"""Offline checks of infra/ (no Bicep CLI here): every .bicep file parses with pycep-parser, and
the parsed templates have the shape DESIGN §3 and the Flex Consumption facts require."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bicep_model import (
    APP, BICEP_FILES, COGNITIVE_SERVICES_OPENAI_USER, COGNITIVE_SERVICES_USER, FLEX_REJECTED, INFRA,
    KEY_VAULT_SECRETS_OFFICER, KEY_VAULT_SECRETS_USER, MONITORING_METRICS_PUBLISHER, ROOT,
    STORAGE_BLOB_DATA_OWNER, VAULT_URI, Evaluator, code_without_comments, decorator, module_file,
    parse, pycep, resources, route_settings, template, the_resource, unwrap, variable,
)


def test_infra_has_bicep_files():
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "app/identity.bicep", "app/storage.bicep", "app/monitoring.bicep",
            "app/keyvault.bicep", "app/plan.bicep", "app/api.bicep", "app/rbac.bicep",
            "app/upstream-rbac.bicep"} <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path: Path):
    try:
        doc = pycep.BicepParser().parse(file_path=path)
    except Exception as exc:  # lark's UnexpectedInput and friends
        pytest.fail(f"{path.relative_to(ROOT)} does not parse: {exc}")
    assert doc.get("resources") or doc.get("modules"), f"{path.name}: no resource or module"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_registry_modules(path: Path):
    assert "br/public:" not in path.read_text() and "br:" not in code_without_comments(path)


# --- main.bicep ------------------------------------------------------------------------------

def test_main_parameters_and_scope():
    doc = template("main.bicep")
    assert doc["globals"]["scope"]["value"] == "subscription"
    params = doc["parameters"]
    env = params["environmentName"]
    assert (decorator(env, "min_length"), decorator(env, "max_length")) == (1, 64)
    assert decorator(params["location"], "metadata") == {"azd": {"type": "location"}}
    assert params["principalId"]["default"] == ""
    assert params["routes"]["type"] == "array" and params["routes"]["default"] == []
    assert decorator(params["gatewayApiKeys"], "secure") and params["gatewayApiKeys"]["type"] == "string"
    assert decorator(params["routeApiKeys"], "secure") and params["routeApiKeys"]["type"] == "object"
    assert params["instanceMemoryMB"]["default"] == 2048
    assert decorator(params["instanceMemoryMB"], "allowed") == [512, 2048, 4096]
    assert params["maximumInstanceCount"]["default"] == 100
    assert (decorator(params["maximumInstanceCount"], "min_value"),
            decorator(params["maximumInstanceCount"], "max_value")) == (40, 1000)
    assert params["pythonVersion"]["default"] == "3.11"
    assert decorator(params["pythonVersion"], "allowed") == ["3.10", "3.11", "3.12"]
    for name in ("azureOpenAiResourceIds", "aiServicesResourceIds"):
        assert params[name]["type"] == "array" and params[name]["default"] == []


def test_main_resource_group_token_and_tags():
    doc = template("main.bicep")
    text = code_without_comments(INFRA / "main.bicep")
    assert "toLower(uniqueString(subscription().id, environmentName, location))" in text
    assert variable(doc, "tags") == {"'azd-env-name'": "environmentName"}
    rg = the_resource("main.bicep", "Microsoft.Resources/resourceGroups")
    assert rg["tags"] == "tags"


def test_main_outputs():
    outputs = template("main.bicep")["outputs"]
    required = {"AZURE_LOCATION", "AZURE_TENANT_ID", "AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_NAME",
                "SERVICE_API_NAME", "SERVICE_API_URI", "GATEWAY_URL", "AZURE_KEY_VAULT_NAME",
                "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    assert required <= set(outputs)
    assert outputs["SERVICE_API_URI"]["value"] == "https://${api.outputs.defaultHostName}"
    assert outputs["GATEWAY_URL"]["value"] == "https://${api.outputs.defaultHostName}"



@pytest.mark.parametrize("path", [p for p in BICEP_FILES if parse(p).get("modules")],
                         ids=lambda p: p.relative_to(INFRA).as_posix())
def test_modules_match_their_files(path: Path):
    """What `bicep build` would catch: unknown or missing module params, unknown outputs."""
    doc = parse(path)
    for name, module in doc["modules"].items():
        file = module_file(module, path.parent)
        assert file.is_file(), f"module {name}: {file} missing"
        params = parse(file).get("parameters", {})
        given = set(unwrap(module["config"])["params"])
        assert given <= set(params), f"module {name}: unknown params {given - set(params)}"
        required = {p for p, spec in params.items() if spec.get("default") is None}
        assert required <= given, f"module {name}: missing params {required - given}"
    for module_name, output in re.findall(r"\b(\w+)(?:\[\d+\])?\.outputs\.(\w+)", code_without_comments(path)):
        module = doc["modules"].get(module_name)
        assert module, f"{module_name}.outputs.{output}: no module {module_name}"
        outputs = parse(module_file(module, path.parent)).get("outputs", {})
        assert output in outputs, f"{module_name}.outputs.{output}: {module_file(module).name} has no such output"


def test_api_waits_for_role_assignments():
    api = unwrap(template("main.bicep")["modules"]["api"]["config"])
    assert "rbac" in api["dependsOn"]


# --- Flex Consumption plan and Function App --------------------------------------------------

def test_plan_is_flex_consumption():
    plan = the_resource("app/plan.bicep", "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    assert plan["kind"] == "functionapp"


def site() -> dict[str, Any]:
    return the_resource("app/api.bicep", "Microsoft.Web/sites")


def test_site_shape():
    app = site()
    props = app["properties"]
    assert app["kind"] == "functionapp,linux"
    assert app["identity"]["type"] == "UserAssigned"
    assert app["identity"]["userAssignedIdentities"] == {"'${identityId}'": {}}
    assert props["keyVaultReferenceIdentity"] == "identityId"
    assert props["httpsOnly"] is True
    assert props["serverFarmId"] == "appServicePlanId"
    config = props["siteConfig"]
    assert config["minTlsVersion"] == "1.2"
    assert config["ftpsState"] == "Disabled"
    assert config["http20Enabled"] is True


def test_site_tagged_for_azd():
    doc = template("app/api.bicep")
    assert site()["tags"] == "siteTags"
    union = variable(doc, "siteTags")["function"]
    assert union["type"] == "union"
    assert union["parameters"]["arg_2"] == {"'azd-service-name'": "serviceName"}
    assert doc["parameters"]["serviceName"]["default"] == "api"
    main = template("main.bicep")
    assert variable(main, "serviceName") == "api"
    assert unwrap(main["modules"]["api"]["config"])["params"]["serviceName"] == "serviceName"


def test_function_app_config():
    doc = template("app/api.bicep")
    config = site()["properties"]["functionAppConfig"]
    runtime = config["runtime"]
    assert runtime["name"] == "python"
    version = doc["parameters"][runtime["version"]]
    assert set(decorator(version, "allowed")) <= {"3.10", "3.11", "3.12"}
    assert version["default"] in {"3.10", "3.11", "3.12"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity",
                                         "userAssignedIdentityResourceId": "identityId"}
    scale = config["scaleAndConcurrency"]
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    assert decorator(doc["parameters"]["instanceMemoryMB"], "allowed") == [512, 2048, 4096]


def test_basic_auth_publishing_disabled():
    policies = resources(template("app/api.bicep"), "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(p["name"] for p in policies.values()) == ["ftp", "scm"]
    assert all(p["properties"]["allow"] is False for p in policies.values())


def base_settings() -> dict[str, Any]:
    return {s["name"]: s["value"] for s in variable(template("app/api.bicep"), "baseAppSettings")}


def test_base_app_settings():
    settings = base_settings()
    assert settings["PYTHON_ENABLE_INIT_INDEXING"] == "1"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__blobServiceUri",
            "APPLICATIONINSIGHTS_CONNECTION_STRING"} <= set(settings)
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    gateway = variable(template("app/api.bicep"), "gatewayKeySettings")["operator"]["operands"]
    assert gateway["false_value"] == [{"name": "GATEWAY_API_KEYS",
                                       "value": "@Microsoft.KeyVault(SecretUri=${gatewayApiKeysSecretUri})"}]
    assert site()["properties"]["siteConfig"]["appSettings"] == "appSettings"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_flex_rejected_setting(path: Path):
    code = code_without_comments(path)
    found = [name for name in FLEX_REJECTED if name in code]
    assert not found, f"{path.name} sets what Flex Consumption rejects: {found}"


def test_no_flex_rejected_setting_in_parameters():
    text = (INFRA / "main.parameters.json").read_text()
    assert not [name for name in FLEX_REJECTED if name in text]


# --- storage, monitoring, Key Vault ----------------------------------------------------------

def test_storage_account():
    storage = the_resource("app/storage.bicep", "Microsoft.Storage/storageAccounts")
    props = storage["properties"]
    assert storage["kind"] == "StorageV2"
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    container = the_resource("app/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container["name"] == "deploymentContainerName"
    assert container["properties"]["publicAccess"] == "None"


def test_application_insights_entra_only():
    insights = the_resource("app/monitoring.bicep", "Microsoft.Insights/components")
    assert insights["properties"]["DisableLocalAuth"] is True
    assert insights["properties"]["WorkspaceResourceId"] == {
        "operator": {"type": "property_accessor", "operands": {"operand_1": "logAnalytics", "operand_2": "id"}}}


def test_key_vault():
    vault = the_resource("app/keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["softDeleteRetentionInDays"] == "softDeleteRetentionInDays"
    secrets = resources(template("app/keyvault.bicep"), "Microsoft.KeyVault/vaults/secrets")
    assert set(secrets) == {"gatewayApiKeysSecret", "routeApiKeySecrets", "consumerKeySecrets", "gatewayStateKeySecret",
                            "gatewayIdSecretSecret"}
    assert secrets["gatewayApiKeysSecret"]["properties"]["value"] == "gatewayApiKeys"
    assert secrets["gatewayStateKeySecret"]["properties"]["value"] == "gatewayStateKey"


def conditional(node: Any) -> dict[str, Any]:
    assert node["operator"]["type"] == "conditional", node
    return node["operator"]["operands"]


def test_key_vault_purge_protection_is_a_parameter():
    """Purge protection on pins the vault name for the retention period after `azd down`, so it is
    a parameter: off by default (dev: `azd down --purge` then `azd up` works), on for production.
    Off means the property is left out: ARM rejects `false`, and a vault that has it keeps it."""
    doc = template("app/keyvault.bicep")
    params = doc["parameters"]
    assert params["purgeProtection"]["type"] == "bool" and params["purgeProtection"]["default"] is False
    retention = params["softDeleteRetentionInDays"]
    assert retention["default"] == 7
    assert (decorator(retention, "min_value"), decorator(retention, "max_value")) == (7, 90)
    vault = the_resource("app/keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert conditional(vault["enablePurgeProtection"]) == {
        "condition": "purgeProtection", "true_value": True, "false_value": None}
    assert "enablePurgeProtection: false" not in code_without_comments(APP / "keyvault.bicep")


def test_key_vault_recover_is_an_explicit_one_shot():
    params = template("app/keyvault.bicep")["parameters"]
    assert params["recoverSoftDeleted"]["type"] == "bool" and params["recoverSoftDeleted"]["default"] is False
    vault = the_resource("app/keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert conditional(vault["createMode"]) == {
        "condition": "recoverSoftDeleted", "true_value": "recover", "false_value": "default"}


def test_main_wires_the_key_vault_parameters():
    main = template("main.bicep")
    params = main["parameters"]
    for name in ("keyVaultPurgeProtection", "keyVaultRecover"):
        assert params[name]["type"] == "bool" and params[name]["default"] is False, name
    assert params["keyVaultSoftDeleteRetentionInDays"]["default"] == 7
    given = unwrap(main["modules"]["keyVault"]["config"])["params"]
    assert given["purgeProtection"] == "keyVaultPurgeProtection"
    assert given["recoverSoftDeleted"] == "keyVaultRecover"
    assert given["softDeleteRetentionInDays"] == "keyVaultSoftDeleteRetentionInDays"


def test_key_vault_name_is_per_environment():
    """One vault name per subscription + environment + region (what `azd down --purge` frees)."""
    main = template("main.bicep")
    name = unwrap(main["modules"]["keyVault"]["config"])["params"]["name"]
    assert "${abbrs.keyVaultVaults}${resourceToken}" in str(name)
    assert "toLower(uniqueString(subscription().id, environmentName, location))" in \
        code_without_comments(INFRA / "main.bicep")
    prefix = json.loads((INFRA / "abbreviations.json").read_text())["keyVaultVaults"]
    assert 3 <= len(prefix) + 13 <= 24  # uniqueString() is 13 characters; vault names 3-24


def test_key_vault_settings_in_the_parameter_file():
    from bicep_model import parameters
    defaults = parameters({})
    assert defaults["keyVaultPurgeProtection"] == "false"  # azd hands "true"/"false" to bool parameters
    assert defaults["keyVaultRecover"] == "false"
    production = parameters({"AZURE_KEY_VAULT_PURGE_PROTECTION": "true", "AZURE_KEY_VAULT_RECOVER": "true"})
    assert production["keyVaultPurgeProtection"] == "true" and production["keyVaultRecover"] == "true"


def test_route_key_secret_names_match_the_references():
    """keyvault.bicep names the secrets, api.bicep references them: same name for every id."""
    doc = template("app/keyvault.bicep")
    secrets = doc["resources"]["routeApiKeySecrets"]["config"]
    assert secrets["loop_type"]["detail"] == {"item_name": "id", "array_name": "routeKeyIds"}
    for route_id in ("LLAMA", "My_Route.1", "gpt4o"):
        name = Evaluator({"id": route_id})(unwrap(secrets)["name"])
        assert re.fullmatch(r"[0-9a-zA-Z-]{1,127}", name), f"invalid Key Vault secret name {name!r}"
        reference = route_settings([{"id": route_id}], [route_id])[f"ROUTE__{route_id}__API_KEY"]
        assert reference == f"@Microsoft.KeyVault(SecretUri={VAULT_URI}secrets/{name})"


# --- role assignments ------------------------------------------------------------------------

def role_assignments(file: str) -> dict[str, dict[str, Any]]:
    doc = template(file)
    found = {}
    for name, res in doc["resources"].items():
        if res["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        body = unwrap(res["config"])
        role = body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        guid = doc.get("variables", {}).get(role, {}).get("value", role)
        found[name] = {"body": body, "role": guid, "conditional": res["config"].get("condition") is not None}
    return found


def test_identity_roles():
    assignments = role_assignments("app/rbac.bicep")
    identity = {a["role"]: a for a in assignments.values() if a["body"]["properties"]["principalId"] == "identityPrincipalId"}
    assert set(identity) == {STORAGE_BLOB_DATA_OWNER, MONITORING_METRICS_PUBLISHER, KEY_VAULT_SECRETS_USER}
    scopes = {STORAGE_BLOB_DATA_OWNER: "storage", MONITORING_METRICS_PUBLISHER: "applicationInsights",
              KEY_VAULT_SECRETS_USER: "vault"}
    for role, assignment in identity.items():
        body = assignment["body"]
        assert body["properties"]["principalType"] == "ServicePrincipal"
        assert body["scope"] == scopes[role]
        guid = body["name"]["function"]
        assert guid["type"] == "guid"
        assert guid["parameters"]["base_string"]["operator"]["operands"] == {"operand_1": scopes[role], "operand_2": "id"}
        assert guid["parameters"]["extra_string_1"] == "identityPrincipalId"
        assert not assignment["conditional"]


def test_user_roles_only_with_principal_id():
    doc = template("app/rbac.bicep")
    assert code_without_comments(APP / "rbac.bicep").count("var assignToUser = !empty(principalId)") == 1
    user = {a["role"]: a for a in role_assignments("app/rbac.bicep").values()
            if a["body"]["properties"]["principalId"] == "principalId"}
    assert set(user) == {STORAGE_BLOB_DATA_OWNER, MONITORING_METRICS_PUBLISHER, KEY_VAULT_SECRETS_OFFICER}
    assert all(a["conditional"] and a["body"]["properties"]["principalType"] == "principalType" for a in user.values())
    assert doc["parameters"]["principalType"]["default"] == "User"


def test_upstream_roles():
    assignment = role_assignments("app/upstream-rbac.bicep")["roleAssignment"]
    assert assignment["body"]["scope"] == "account"
    doc = template("app/upstream-rbac.bicep")
    assert doc["globals"]["scope"]["value"] == "resourceGroup"
    assert set(decorator(doc["parameters"]["roleDefinitionId"], "allowed")) == {
        COGNITIVE_SERVICES_OPENAI_USER, COGNITIVE_SERVICES_USER}
    assert doc["parameters"]["principalType"]["default"] == "ServicePrincipal"
    main = template("main.bicep")
    expected = {"azureOpenAiRoles": ("azureOpenAiAccountIds", COGNITIVE_SERVICES_OPENAI_USER),
                "aiServicesRoles": ("aiServicesAccountIds", COGNITIVE_SERVICES_USER)}
    for name, (ids, role) in expected.items():
        module = main["modules"][name]
        assert module_file(module) == APP / "upstream-rbac.bicep"
        assert module["config"]["loop_type"]["detail"]["array_name"] == ids
        body = unwrap(module["config"])
        assert body["scope"]["function"]["type"] == "resource_group"
        assert variable(main, body["params"]["roleDefinitionId"]) == role
        assert body["params"]["principalId"]["operator"]["operands"]["operand_1"] == "identity"
    text = code_without_comments(INFRA / "main.bicep")
    assert "filter(azureOpenAiResourceIds, id => !empty(trim(id)))" in text
    assert "filter(aiServicesResourceIds, id => !empty(trim(id)))" in text


def test_no_queue_or_table_roles():
    text = "".join(code_without_comments(p) for p in BICEP_FILES)
    assert "974c5e8b-45b9-4653-ba55-5f855dd0fb88" not in text  # Storage Queue Data Contributor
    assert "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3" not in text  # Storage Table Data Contributor
