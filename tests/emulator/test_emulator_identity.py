"""Managed identity: the real azure-identity async credential against the App Service emulator."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ManagedIdentityCredential

from emulator import identity, servers, tokens

SCOPE = "https://cognitiveservices.azure.com/.default"
USER_ASSIGNED = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def msi_env(monkeypatch):
    """Point azure-identity at an identity emulator (App Service protocol, nothing else)."""
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID",
                 "AZURE_FEDERATED_TOKEN_FILE", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)

    def point(url: str, header: str) -> None:
        monkeypatch.setenv("IDENTITY_ENDPOINT", url)
        monkeypatch.setenv("IDENTITY_HEADER", header)

    return point


async def get_tokens(n: int = 1, **kwargs):
    async with ManagedIdentityCredential(**kwargs) as credential:
        return [await credential.get_token(SCOPE) for _ in range(n)]


def test_system_assigned_token_is_accepted_by_azure_openai(emus, msi_env, ctl, client):
    msi_env(emus.urls["identity"], emus.identity_header)
    first, second = asyncio.run(get_tokens(2))
    assert first.token == second.token and first.expires_on > time.time() + 3000
    records = ctl.records(emus.urls["identity"].removesuffix("/msi/token"))
    assert len(records) == 1, "the credential caches its token"
    record = records[0]
    assert record["method"] == "GET" and record["path"] == "/msi/token" and record["status"] == 200
    assert record["query"] == {"api-version": "2019-08-01", "resource": "https://cognitiveservices.azure.com"}
    assert record["headers"]["x-identity-header"] == emus.identity_header
    claims = tokens.verify_token(emus.token_secret, first.token, "https://cognitiveservices.azure.com")
    assert claims is not None and claims["appid"] == tokens.SYSTEM_ASSIGNED_CLIENT_ID
    r = client.post(emus.urls["azure_openai"] + "/openai/deployments/gpt-4o/chat/completions",
                    params={"api-version": "2024-10-21"}, headers={"authorization": f"Bearer {first.token}"},
                    json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    r = client.post(emus.urls["azure_ai_foundry"] + "/models/chat/completions",
                    params={"api-version": "2024-05-01-preview"}, headers={"authorization": f"Bearer {first.token}"},
                    json={"model": "Mistral-Large-2411", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200


def test_user_assigned_client_id_is_passed_through(msi_env):
    app = identity.create_app("hdr", client_ids=[USER_ASSIGNED])
    with servers.start(app) as server, httpx.Client() as c:
        msi_env(server.url + "/msi/token", "hdr")
        (token,) = asyncio.run(get_tokens(client_id=USER_ASSIGNED))
        record = c.get(server.url + "/_emulator/requests").json()[0]
        assert record["query"]["client_id"] == USER_ASSIGNED
        assert tokens.verify_token(tokens.DEFAULT_TOKEN_SECRET, token.token)["appid"] == USER_ASSIGNED
        with pytest.raises(ClientAuthenticationError):
            asyncio.run(get_tokens(client_id="99999999-0000-0000-0000-000000000000"))
        assert c.get(server.url + "/_emulator/requests").json()[-1]["status"] == 400


def test_wrong_identity_header_fails(emus, msi_env):
    msi_env(emus.urls["identity"], "not-the-header")
    with pytest.raises(ClientAuthenticationError):
        asyncio.run(get_tokens())


def test_protocol_errors(emus, client):
    url = emus.urls["identity"]
    query = {"api-version": "2019-08-01", "resource": "https://cognitiveservices.azure.com"}
    r = client.get(url, params=query)
    assert r.status_code == 400 and r.json()["statusCode"] == 400
    r = client.get(url, params=query, headers={"x-identity-header": "nope"})
    assert r.status_code == 401
    r = client.get(url, params={"resource": query["resource"]}, headers={"x-identity-header": emus.identity_header})
    assert r.status_code == 400
    r = client.get(url, params=query, headers={"X-IDENTITY-HEADER": emus.identity_header})
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "Bearer" and body["resource"] == query["resource"]
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) > time.time()


def test_tokens_verify_signature_audience_and_expiry():
    token = tokens.issue_token("s", "https://cognitiveservices.azure.com/", "cid", 60)
    assert token.count(".") == 2
    claims = tokens.verify_token("s", token, "https://cognitiveservices.azure.com/.default")
    assert claims["aud"] == "https://cognitiveservices.azure.com" and claims["oid"] == "cid"
    assert claims["exp"] - claims["iat"] == 60
    assert tokens.verify_token("other", token, "https://cognitiveservices.azure.com") is None
    assert tokens.verify_token("s", token, "https://ml.azure.com") is None
    assert tokens.verify_token("s", tokens.issue_token("s", lifetime=-1), "https://cognitiveservices.azure.com") is None
    header, payload, signature = token.split(".")
    assert tokens.verify_token("s", f"{header}.{payload}x.{signature}", "https://cognitiveservices.azure.com") is None
    assert tokens.verify_token("s", "garbage", "https://cognitiveservices.azure.com") is None
