"""Shared state (DESIGN §11): Azure Managed Redis only when a parameter asks for it, TLS on port
10000, Entra authentication only, data access for the app's own identity; GATEWAY_STATE and
GATEWAY_STATE_AUTH follow, checked with the gateway's own parser of those settings."""

from __future__ import annotations

import json
import re
from collections import ChainMap

import pytest

from bicep_model import (
    APP, BICEP_FILES, INFRA, REDIS_HOST, VAULT_URI, Evaluator, app_settings_from_main, decorator, main_scope,
    module_file, parameters, template, the_resource, unwrap,
)

API_VERSION = "2025-07-01"  # the current stable Microsoft.Cache/redisEnterprise API
EXISTING = "/subscriptions/sub-2/resourceGroups/shared-rg/providers/Microsoft.Cache/redisEnterprise/shared-redis"


def state_settings(settings: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in settings.items() if name.startswith("GATEWAY_STATE")}


def test_redis_resources_live_only_in_the_redis_modules():
    found = {path.relative_to(INFRA).as_posix(): sorted({res["type"] for res in template(path.relative_to(INFRA).as_posix())
                                                         .get("resources", {}).values() if "Cache" in res["type"]})
             for path in BICEP_FILES}
    assert {file: types for file, types in found.items() if types} == {
        "app/redis.bicep": ["Microsoft.Cache/redisEnterprise", "Microsoft.Cache/redisEnterprise/databases"],
        "app/redis-access.bicep": ["Microsoft.Cache/redisEnterprise", "Microsoft.Cache/redisEnterprise/databases",
                                   "Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments"]}
    for file in ("app/redis.bicep", "app/redis-access.bicep"):
        versions = {res["api_version"] for res in template(file)["resources"].values()}
        assert versions == {API_VERSION}, file
    main = template("main.bicep")
    users = {name for name, module in main["modules"].items() if module_file(module).name.startswith("redis")}
    assert users == {"redis", "existingRedisAccess"}
    assert main["modules"]["redis"]["config"]["condition"] == "deployRedis"
    assert main["modules"]["existingRedisAccess"]["config"]["loop_type"]["detail"]["array_name"] == "existingRedisIds"
    assert main["parameters"]["deployRedis"] == {**main["parameters"]["deployRedis"], "type": "bool", "default": False}
    assert main["parameters"]["redisSkuName"]["default"] == "Balanced_B0"


@pytest.mark.parametrize("params, deployed, existing", [
    ({}, False, []),
    ({"deployRedis": True}, True, []),
    ({"deployRedis": True, "redisResourceId": EXISTING}, True, []),  # the deployed one wins
    ({"redisResourceId": f" {EXISTING} "}, False, [EXISTING]),
    ({"gatewayState": "rediss://mine.example.com:6380"}, False, []),
])
def test_redis_is_deployed_or_granted_only_when_asked(params, deployed, existing):
    scope = main_scope({**parameters({}), **params})
    assert Evaluator(scope)("deployRedis") is deployed
    assert scope["existingRedisIds"] == existing


def test_default_deployment_has_per_instance_state():
    settings = app_settings_from_main(parameters({}))
    assert state_settings(settings) == {}
    outputs = template("main.bicep")["outputs"]
    scope = main_scope(parameters({}))
    assert Evaluator(scope)(outputs["AZURE_REDIS_HOST_NAME"]["value"]) == ""
    assert Evaluator(scope)(outputs["AZURE_REDIS_NAME"]["value"]) == ""


def test_deployed_redis_gives_a_tls_url_on_port_10000_with_the_app_identity():
    params = parameters({"AZURE_REDIS_DEPLOY": "true"})
    assert params["deployRedis"] == "true"  # azd's text, which ARM converts to the bool parameter
    settings = app_settings_from_main(params)
    assert state_settings(settings) == {"GATEWAY_STATE": f"rediss://{REDIS_HOST}:10000",
                                        "GATEWAY_STATE_AUTH": "managed-identity"}
    scope = main_scope(params)
    assert Evaluator(scope)(template("main.bicep")["outputs"]["AZURE_REDIS_HOST_NAME"]["value"]) == REDIS_HOST
    from routing.state import store_from_settings  # the gateway builds its Redis store from them
    store = store_from_settings(settings)
    assert store.primary.address == f"{REDIS_HOST}:10000"


def test_existing_azure_managed_redis_by_resource_id():
    params = parameters({"AZURE_REDIS_RESOURCE_ID": EXISTING})
    settings = app_settings_from_main(params)
    assert state_settings(settings) == {"GATEWAY_STATE": "rediss://shared-redis.westeurope.redis.azure.net:10000",
                                        "GATEWAY_STATE_AUTH": "managed-identity"}
    module = template("main.bicep")["modules"]["existingRedisAccess"]["config"]
    scope = main_scope(params)
    (access,) = scope["existingRedisIds"]
    evaluate = Evaluator(ChainMap({"clusterId": access, "i": 0}, scope))
    assert evaluate(unwrap(module)["scope"]["function"]["parameters"]) == {
        "subscription_id": "sub-2", "resource_group_name": "shared-rg"}
    assert evaluate(unwrap(module)["params"]["clusterName"]) == "shared-redis"


def test_any_other_redis_by_url_with_a_key_from_key_vault():
    params = parameters({"GATEWAY_STATE": "rediss://cache.example.com:6380", "GATEWAY_STATE_AUTH": "key",
                         "GATEWAY_STATE_KEY": "redis-access-key-0123456789"})
    settings = app_settings_from_main(params)
    assert state_settings(settings) == {
        "GATEWAY_STATE": "rediss://cache.example.com:6380", "GATEWAY_STATE_AUTH": "key",
        "GATEWAY_STATE_KEY": f"@Microsoft.KeyVault(SecretUri={VAULT_URI}secrets/gateway-state-key)"}
    assert "redis-access-key" not in json.dumps(settings)
    from routing.state import store_from_settings
    resolved = {**settings, "GATEWAY_STATE_KEY": "redis-access-key-0123456789"}  # as the platform resolves it
    assert store_from_settings(resolved).primary.address == "cache.example.com:6380"
    main = template("main.bicep")
    assert decorator(main["parameters"]["gatewayStateKey"], "secure")
    assert unwrap(main["modules"]["keyVault"]["config"])["params"]["gatewayStateKey"] == "gatewayStateKey"
    assert "gatewayStateKey" not in unwrap(main["modules"]["api"]["config"])["params"]
    assert decorator(main["parameters"]["gatewayStateAuth"], "allowed") == ["", "managed-identity", "key", "none"]
    from routing.state import AUTH_MODES
    assert set(decorator(main["parameters"]["gatewayStateAuth"], "allowed")) - {""} == set(AUTH_MODES)


def test_redis_cluster_and_database():
    cluster = the_resource("app/redis.bicep", "Microsoft.Cache/redisEnterprise")
    assert cluster["sku"] == {"name": "skuName"}
    props = cluster["properties"]
    assert props["minimumTlsVersion"] == "1.2" and props["publicNetworkAccess"] == "Enabled"
    assert Evaluator({"highAvailability": False})(props["highAvailability"]) == "Disabled"
    assert Evaluator({"highAvailability": True})(props["highAvailability"]) == "Enabled"
    database = the_resource("app/redis.bicep", "Microsoft.Cache/redisEnterprise/databases")
    assert database["parent"] == "cluster" and database["name"] == "default"
    assert database["properties"] == {
        "clientProtocol": "Encrypted",  # TLS only
        "port": 10000,
        "clusteringPolicy": "EnterpriseCluster",  # one endpoint: the gateway's client is not cluster-aware
        "evictionPolicy": "NoEviction",  # a quota counter is never evicted
        "accessKeysAuthentication": "Disabled",  # Entra tokens only
    }
    from routing.state import AZURE_MANAGED_REDIS_PORT
    assert database["properties"]["port"] == AZURE_MANAGED_REDIS_PORT


def test_access_policy_assignment_uses_the_app_identity():
    doc = template("app/redis-access.bicep")
    assignment = the_resource("app/redis-access.bicep",
                              "Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments")
    assert assignment["parent"] == "database"
    assert assignment["properties"] == {"accessPolicyName": "default", "user": {"objectId": "principalId"}}
    database = doc["resources"]["database"]
    assert database["existing"] and database["config"]["parent"] == "cluster"
    assert doc["parameters"]["databaseName"]["default"] == "default"
    names = set()
    for principal in ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"):
        name = Evaluator({"principalId": principal, "database": {"id": "/subscriptions/s/.../databases/default"}})(
            assignment["name"])
        assert re.fullmatch(r"[A-Za-z0-9]{1,60}", name), name  # the API's name pattern
        names.add(name)
    assert len(names) == 2
    # redis.bicep grants its own cluster to the identity main.bicep passes: the app's.
    nested = template("app/redis.bicep")["modules"]["appAccess"]
    assert module_file(nested, APP) == APP / "redis-access.bicep"
    assert unwrap(nested["config"])["params"] == {
        "clusterName": {"operator": {"type": "property_accessor", "operands": {"operand_1": "cluster", "operand_2": "name"}}},
        "databaseName": {"operator": {"type": "property_accessor", "operands": {"operand_1": "database", "operand_2": "name"}}},
        "principalId": "identityPrincipalId"}
    app_identity = {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "identity", "operand_2": {"operator": {"type": "property_accessor", "operands": {
            "operand_1": "outputs", "operand_2": "principalId"}}}}}}
    main = template("main.bicep")
    assert unwrap(main["modules"]["redis"]["config"])["params"]["identityPrincipalId"] == app_identity
    assert unwrap(main["modules"]["existingRedisAccess"]["config"])["params"]["principalId"] == app_identity
    assert unwrap(main["modules"]["rbac"]["config"])["params"]["identityPrincipalId"] == app_identity  # the same one


def test_parameter_file_maps_the_state_settings():
    raw = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert {name: raw[name]["value"] for name in ("deployRedis", "redisSkuName", "redisHighAvailability",
                                                  "redisResourceId", "gatewayState", "gatewayStateAuth",
                                                  "gatewayStateKey")} == {
        "deployRedis": "${AZURE_REDIS_DEPLOY=false}", "redisSkuName": "${AZURE_REDIS_SKU=Balanced_B0}",
        "redisHighAvailability": "${AZURE_REDIS_HIGH_AVAILABILITY=true}",
        "redisResourceId": "${AZURE_REDIS_RESOURCE_ID=}", "gatewayState": "${GATEWAY_STATE=}",
        "gatewayStateAuth": "${GATEWAY_STATE_AUTH=}", "gatewayStateKey": "${GATEWAY_STATE_KEY}"}
    outputs = template("main.bicep")["outputs"]
    # An output named like an input variable would feed itself back into the next `azd provision`.
    assert not {"GATEWAY_STATE", "AZURE_REDIS_RESOURCE_ID", "AZURE_REDIS_DEPLOY"} & set(outputs)
    assert {"AZURE_REDIS_HOST_NAME", "AZURE_REDIS_NAME"} <= set(outputs)
