"""Entra callers through the gateway (DESIGN §9): `GATEWAY_AUTH=keys,entra`, tokens minted by a
local stand-in for the tenant (tests/entra_tenant.py, its keys published on a local JWKS
endpoint), mapped to consumers by `oid` or by `azp`/`appid`. The validator's own checks are in
test_entra.py; here, what a caller sees."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest

from tests.conftest import gateway_settings
from tests.entra_tenant import EntraTenant
from tests.helpers import GATEWAY_KEY, GatewayProcess

AUDIENCE = "api://llm-gateway"
BY_OID = str(uuid.uuid4())  # a managed identity's object id
BY_APP = str(uuid.uuid4())  # an app registration's client id
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def tenant():
    with EntraTenant() as running:
        yield running


@pytest.fixture(scope="module")
def entra_gateway(emulators, tenant, tmp_path_factory):
    settings = {**gateway_settings(emulators), "GATEWAY_AUTH": "keys,entra",
                "GATEWAY_ENTRA_TENANT": tenant.tenant_id, "GATEWAY_ENTRA_AUDIENCE": f"{AUDIENCE},{uuid.uuid4()}",
                "AZURE_AUTHORITY_HOST": tenant.url,
                "CONSUMER__APP_ONE__PRINCIPALS": BY_OID, "CONSUMER__APP_ONE__MODELS": "gpt-4o-key",
                "CONSUMER__APP_TWO__PRINCIPALS": BY_APP}
    process = GatewayProcess(settings, tmp_path_factory.mktemp("entra-gateway"))
    yield process
    process.stop()


def chat(gateway, token: str, model: str = "gpt-4o-key") -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}, json={"model": model, "messages": MESSAGES})


def test_tokens_map_to_consumers_by_oid_and_by_app_id(entra_gateway, tenant, clean):
    by_oid = tenant.mint(tenant.claims(audience=AUDIENCE, oid=BY_OID))
    answer = chat(entra_gateway, by_oid)
    assert answer.status_code == 200 and answer.headers["x-gateway-consumer"] == "app_one"
    assert chat(entra_gateway, by_oid, "llama3").status_code == 403  # app_one's allow-list
    v1_by_app = tenant.mint(tenant.claims(version="1.0", audience=AUDIENCE, appid=BY_APP))
    answer = chat(entra_gateway, v1_by_app, "llama3")
    assert answer.status_code == 200 and answer.headers["x-gateway-consumer"] == "app_two"
    # Keys keep working alongside tokens, and no token reaches an upstream.
    assert chat(entra_gateway, GATEWAY_KEY).headers["x-gateway-consumer"] == "default"
    sent = " ".join(str(r.get("headers")) for r in clean["aoai"].requests() + clean["serverless"].requests())
    assert by_oid not in sent and v1_by_app not in sent


def test_the_openai_sdk_calls_with_a_token(entra_gateway, tenant, clean):
    token = tenant.mint(tenant.claims(audience=AUDIENCE, azp=BY_APP))
    client = openai.OpenAI(base_url=entra_gateway.url + "/v1", api_key=token)
    reply = client.chat.completions.create(model="llama3", messages=MESSAGES)
    assert reply.choices[0].message.content


@pytest.mark.parametrize("case", ["expired", "wrong_audience", "unknown_principal", "tampered", "other_tenant"])
def test_bad_tokens_are_401_and_reach_no_upstream(entra_gateway, tenant, clean, case):
    claims = tenant.claims(audience=AUDIENCE, oid=BY_OID)
    if case == "expired":
        claims.update(exp=int(time.time()) - 600, iat=int(time.time()) - 4200, nbf=int(time.time()) - 4200)
    elif case == "wrong_audience":
        claims["aud"] = "api://someone-else"
    elif case == "unknown_principal":
        claims.update(oid=str(uuid.uuid4()), azp=str(uuid.uuid4()))
    elif case == "other_tenant":
        claims["tid"] = str(uuid.uuid4())
    token = tenant.mint(claims)
    if case == "tampered":
        header, payload, signature = token.split(".")
        token = ".".join([header, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), signature])
    answer = chat(entra_gateway, token)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == ("unknown_principal" if case == "unknown_principal" else "invalid_token")
    assert token not in answer.text and token not in entra_gateway.log()
    assert "x-gateway-consumer" not in answer.headers
    assert clean["aoai"].requests() == []
