"""GATEWAY_ID_SECRET (DESIGN §13): the key the gateway signs Responses API ids with. Generated once
per environment, kept across later provisions (a new one orphans every id handed out), stored as
the Key Vault secret gateway-id-secret, referenced from the app settings, never in an output.

The generation is azd's: `$(secretOrRandomPassword <vault> <secret>)` in main.parameters.json
reads the secret from the vault, or returns random characters when the vault has none (or no
vault is named yet). azd is not installed here, so `azd_parameters` models what it does with the
parameter file (Azure/azure-dev cli/azd/pkg/cmdsubst/cmdsubst.go and secretOrRandomPassword.go),
and `provision` plays `azd provision` against a dict of vaults: main.bicep's choice of value,
keyvault.bicep's write, the AZURE_KEY_VAULT_NAME output azd saves for the next run."""

from __future__ import annotations

import json
import re
import secrets
import string
from typing import Any

import pytest

from bicep_model import (
    BICEP_FILES, INFRA, ROOT, VAULT_URI, Evaluator, TemplateScope, app_settings_from_main, azd_substitute,
    decorator, main_scope, parse, resources, template, unwrap, variable, yaml,
)

SECRET_NAME = "gateway-id-secret"
VAULT = "kv-test"  # what AZURE_KEY_VAULT_NAME (an output of main.bicep) holds after a provision
REFERENCE = f"@Microsoft.KeyVault(SecretUri={VAULT_URI}secrets/{SECRET_NAME})"
ID_SECRET_PARAMS = ("gatewayIdSecret", "gatewayIdSecretCurrent", "gatewayIdSecretSeed")


# --- azd's parameter file: ${VAR}, then $(secretOrRandomPassword vault secret) ----------------

class VaultUnreachable(Exception):
    """What azd reports when the named vault does not answer (deleted, purged, soft-deleted, no
    access): "reading secret ... from vault ...", and provisioning stops."""


def azd_random_password() -> str:
    """secretOrRandomPassword's fallback: password.Generate with MinLower, MinUpper, MinNumeric 5
    and no length, i.e. 15 characters: 5 lowercase, 5 uppercase, 5 digits, shuffled."""
    chars = ([secrets.choice(string.ascii_lowercase) for _ in range(5)]
             + [secrets.choice(string.ascii_uppercase) for _ in range(5)]
             + [secrets.choice(string.digits) for _ in range(5)])
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


COMMAND = re.compile(r"\$\(\s*(\w+)([\w\s-]*)\)")  # cmdsubst.go's commandInvocationRegex


def azd_command_substitute(text: str, vaults: dict[str, dict[str, str]]) -> str:
    def run(match: re.Match) -> str:
        name, args = match.group(1), match.group(2).split()
        if name != "secretOrRandomPassword":
            return match.group(0)
        if len(args) != 2:  # no vault named (AZURE_KEY_VAULT_NAME unset before the first provision)
            return azd_random_password()
        vault, secret = args
        if vault not in vaults:
            raise VaultUnreachable(f"reading secret '{secret}' from vault '{vault}'")
        value = vaults[vault].get(secret, "")  # 404: not found -> random
        return value if value.strip() else azd_random_password()
    return COMMAND.sub(run, text)


def azd_parameters(env: dict[str, str], vaults: dict[str, dict[str, str]]) -> dict[str, Any]:
    text = azd_command_substitute(azd_substitute((INFRA / "main.parameters.json").read_text(), env), vaults)
    return {name: spec["value"] for name, spec in json.loads(text)["parameters"].items()}


def chosen_secret(params: dict[str, Any]) -> str:
    """What main.bicep hands keyvault.bicep as the gateway-id-secret value."""
    given = unwrap(template("main.bicep")["modules"]["keyVault"]["config"])["params"]
    return Evaluator(main_scope(params))(given["gatewayIdSecret"])


def provision(env: dict[str, str], vaults: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One `azd provision`: resolve the parameter file, write what keyvault.bicep writes, save the
    vault name output. Returns the resolved parameters (what azd hashes for its provision state)."""
    params = azd_parameters(env, vaults)
    kv = TemplateScope(template("app/keyvault.bicep"), {"gatewayIdSecret": chosen_secret(params)})
    body = resources(template("app/keyvault.bicep"), "Microsoft.KeyVault/vaults/secrets")["gatewayIdSecretSecret"]
    for name in kv["gatewayIdSecretNames"]:
        vaults.setdefault(VAULT, {})[name] = Evaluator(kv)(body["properties"]["value"])
    env["AZURE_KEY_VAULT_NAME"] = VAULT
    return params


def stored(vaults: dict[str, dict[str, str]]) -> str:
    return vaults[VAULT][SECRET_NAME]


def gateway_accepts(secret: str) -> bool:
    from routing.gateway import MIN_ID_SECRET_CHARS  # the gateway's own rule (settings error below it)
    return len(secret.strip()) >= MIN_ID_SECRET_CHARS


# --- generated once, then kept ----------------------------------------------------------------

def test_first_provision_generates_a_full_length_secret_and_stores_it():
    env: dict[str, str] = {}
    vaults: dict[str, dict[str, str]] = {}
    provision(env, vaults)
    first = stored(vaults)
    assert len(first) == 45 and first.isalnum()  # three of azd's 15-character passwords
    assert gateway_accepts(first)
    assert env["AZURE_KEY_VAULT_NAME"] == VAULT
    others = set()
    for _ in range(20):
        fresh: dict[str, dict[str, str]] = {}
        provision({}, fresh)
        others.add(stored(fresh))
        assert gateway_accepts(stored(fresh))
    assert len(others | {first}) == 21, "every new environment gets its own random secret"


def test_later_provisions_keep_the_secret_and_the_parameters():
    """Stable: azd reads the stored secret back, main.bicep writes it back unchanged, and the
    resolved parameters are identical from the second provision on (nothing random left in them,
    so azd's provision state can skip an unchanged deployment)."""
    from routing.responses.ids import IdCodec

    env: dict[str, str] = {}
    vaults: dict[str, dict[str, str]] = {}
    provision(env, vaults)
    first = stored(vaults)
    issued = IdCodec(first.encode()).encode("GPT4O", "resp_abc123")
    second_params = provision(env, vaults)
    third_params = provision(env, vaults)
    assert stored(vaults) == first
    assert second_params == third_params
    assert IdCodec(stored(vaults).encode()).decode(issued) == ("GPT4O", "resp_abc123")


def test_an_environment_from_before_gets_one_on_its_next_provision():
    """A vault that exists without the secret (an environment provisioned before this parameter):
    azd gets a 404 and generates; from then on the secret is kept."""
    env = {"AZURE_KEY_VAULT_NAME": VAULT}
    vaults = {VAULT: {"gateway-api-keys": "k" * 40}}
    provision(env, vaults)
    first = stored(vaults)
    assert gateway_accepts(first)
    provision(env, vaults)
    assert stored(vaults) == first


def test_an_unreachable_vault_stops_the_provision_instead_of_regenerating():
    """AZURE_KEY_VAULT_NAME names a vault that is gone (after `azd down`): azd fails reading it,
    nothing is generated behind the operator's back (infra/README.md says what to do)."""
    env = {"AZURE_KEY_VAULT_NAME": "kv-gone"}
    with pytest.raises(VaultUnreachable):
        provision(env, {})


def test_override_rotates_deliberately_and_then_stays():
    env: dict[str, str] = {}
    vaults: dict[str, dict[str, str]] = {}
    provision(env, vaults)
    generated = stored(vaults)
    rotated = secrets.token_urlsafe(48)
    provision({**env, "GATEWAY_ID_SECRET": f" {rotated} "}, vaults)
    assert stored(vaults) == rotated != generated  # trimmed, like the gateway reads it
    provision(env, vaults)  # the variable removed again: the vault keeps the rotated one
    assert stored(vaults) == rotated


def test_a_stored_value_is_never_padded_nor_regenerated():
    """Whatever the vault holds is what the gateway gets, even a value too short for it (an earlier
    short override): the gateway then refuses to start naming GATEWAY_ID_SECRET, and a proper
    override fixes it. Nothing weak is made up from it, nothing is rotated behind the operator."""
    env = {"AZURE_KEY_VAULT_NAME": VAULT}
    vaults = {VAULT: {SECRET_NAME: "too-short"}}
    provision(env, vaults)
    provision(env, vaults)
    assert stored(vaults) == "too-short" and not gateway_accepts(stored(vaults))
    fixed = secrets.token_urlsafe(48)
    provision({**env, "GATEWAY_ID_SECRET": fixed}, vaults)
    provision(env, vaults)
    assert stored(vaults) == fixed and gateway_accepts(fixed)


# --- the wiring -------------------------------------------------------------------------------

def test_parameters_file_reads_the_secret_bicep_writes():
    raw = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    read = f"$(secretOrRandomPassword ${{AZURE_KEY_VAULT_NAME}} {SECRET_NAME})"
    assert raw["gatewayIdSecret"]["value"] == "${GATEWAY_ID_SECRET}"
    assert raw["gatewayIdSecretCurrent"]["value"] == read
    assert raw["gatewayIdSecretSeed"]["value"] == read + read
    call = COMMAND.fullmatch(azd_substitute(read, {"AZURE_KEY_VAULT_NAME": "kv-abc123"}))
    assert call and call.group(2).split() == ["kv-abc123", SECRET_NAME]  # azd's argument syntax
    assert variable(template("app/keyvault.bicep"), "gatewayIdSecretName") == SECRET_NAME
    main = template("main.bicep")
    assert main["outputs"]["AZURE_KEY_VAULT_NAME"]["value"] == {
        "operator": {"type": "property_accessor", "operands": {
            "operand_1": "keyVault", "operand_2": {"operator": {"type": "property_accessor", "operands": {
                "operand_1": "outputs", "operand_2": "name"}}}}}}
    assert "GATEWAY_ID_SECRET" not in json.dumps(raw.get("additionalAppSettings", {}))


def test_params_are_secure():
    main = template("main.bicep")["parameters"]
    for name in ID_SECRET_PARAMS:
        assert decorator(main[name], "secure"), name
        assert main[name]["type"] == "string" and main[name]["default"] == "", name
    kv = template("app/keyvault.bicep")["parameters"]["gatewayIdSecret"]
    assert decorator(kv, "secure") and kv["type"] == "string" and kv["default"] == ""
    given = unwrap(template("main.bicep")["modules"]["keyVault"]["config"])["params"]
    assert given["gatewayIdSecret"] == "gatewayIdSecretValue"


def test_key_vault_secret():
    doc = template("app/keyvault.bicep")
    res = doc["resources"]["gatewayIdSecretSecret"]["config"]
    assert res["loop_type"]["detail"] == {"item_name": "secretName", "array_name": "gatewayIdSecretNames"}
    body = unwrap(res)
    assert body["parent"] == "vault" and body["name"] == "secretName"
    assert body["properties"]["value"] == "gatewayIdSecret"
    assert TemplateScope(doc, {"gatewayIdSecret": "x" * 45})["gatewayIdSecretNames"] == [SECRET_NAME]
    assert TemplateScope(doc, {"gatewayIdSecret": ""})["gatewayIdSecretNames"] == []
    uri = Evaluator({"vault": {"properties": {"vaultUri": VAULT_URI}}, "gatewayIdSecretName": SECRET_NAME})(
        doc["outputs"]["gatewayIdSecretUri"]["value"])
    assert uri == f"{VAULT_URI}secrets/{SECRET_NAME}"


@pytest.mark.parametrize("env", [{}, {"GATEWAY_ID_SECRET": "o" * 40}], ids=["generated", "override"])
def test_app_setting_is_a_key_vault_reference(env):
    vaults: dict[str, dict[str, str]] = {}
    params = provision(dict(env), vaults)
    settings = app_settings_from_main(params)
    assert settings["GATEWAY_ID_SECRET"] == REFERENCE
    assert not [name for name, value in settings.items() if stored(vaults) in value], "the secret in plain text"


def test_no_reference_without_a_secret():
    """main.bicep deployed without azd's parameter file (all three empty): no secret, no setting;
    the gateway then keeps response ids per instance and says so."""
    params = {**azd_parameters({}, {}), **{name: "" for name in ID_SECRET_PARAMS}}
    assert chosen_secret(params) == ""
    assert "GATEWAY_ID_SECRET" not in app_settings_from_main(params)


def identifiers(node: Any) -> set[str]:
    """Every bare identifier and interpolated name in a pycep expression tree."""
    if isinstance(node, str):
        found = set(re.findall(r"\$\{\s*(\w+)", node))
        return found | ({node} if re.fullmatch(r"\w+", node) else set())
    if isinstance(node, list):
        return set().union(*map(identifiers, node)) if node else set()
    if isinstance(node, dict):
        return set().union(*map(identifiers, node.values())) if node else set()
    return set()


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_secure_value_in_outputs(path):
    """No output of any template reads a @secure parameter, or a variable built from one."""
    doc = parse(path)
    tainted = {name for name, spec in doc.get("parameters", {}).items() if decorator(spec, "secure")}
    variables = doc.get("variables", {})
    while True:
        more = {name for name, spec in variables.items() if identifiers(spec["value"]) & tainted} - tainted
        if not more:
            break
        tainted |= more
    leaks = {name: sorted(identifiers(spec["value"]) & tainted) for name, spec in doc.get("outputs", {}).items()
             if identifiers(spec["value"]) & tainted}
    assert not leaks, f"{path.name}: outputs reading secrets {leaks}"


def test_main_outputs_say_nothing_of_the_id_secret():
    """azd copies main.bicep's outputs into .azure/<env>/.env: not even the secret's URI goes there."""
    outputs = template("main.bicep")["outputs"]
    assert not [name for name, spec in outputs.items()
                if "ID_SECRET" in name.upper() or any("idsecret" in i.lower() for i in identifiers(spec["value"]))]


def test_azd_generates_it_in_one_place_only():
    """secretOrRandomPassword is the generator: no azure.yaml hook also sets GATEWAY_ID_SECRET (an
    `azd env set` of a fresh value would rotate it on every machine without the .env file)."""
    config = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert "GATEWAY_ID_SECRET" not in json.dumps(config.get("hooks", {}))
    assert not [p for p in (ROOT / "infra").rglob("*") if p.suffix in (".sh", ".ps1")
                and "GATEWAY_ID_SECRET" in p.read_text()]


def test_readme_documents_generation_and_rotation():
    text = (INFRA / "README.md").read_text()
    for needle in ("gateway-id-secret", "secretOrRandomPassword", "GATEWAY_ID_SECRET", "rotat"):
        assert needle in text, needle
