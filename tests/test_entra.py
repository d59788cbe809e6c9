"""Entra ID access-token validation (routing/inbound/entra.py) against a local tenant
(tests/entra_tenant.py): real loopback sockets, real RSA keys, nothing of ours mocked. Claims,
signatures, forgeries, the cache and the settings; fetching the keys is in test_entra_keys.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest

from routing.inbound.entra import EntraValidator, Principal
from tests import entra_fixtures
from tests.entra_fixtures import API_CLIENT_ID, API_URI, make, rejected, run, v1, v2
from tests.entra_tenant import (OTHER_TENANT_ID, TENANT_ID, EntraTenant, forge, forge_hs256,
                                new_key, public_pem)
from tests.helpers import REPO

tenant = entra_fixtures.tenant  # the fixture (see tests/entra_fixtures.py)


# -- accepted tokens ----------------------------------------------------------------------------

def test_v2_token_maps_to_oid_then_azp(tenant):
    claims = v2(tenant)
    no_oid = v2(tenant, oid=None, azp=str(uuid.uuid4()).upper())

    async def scenario(v):
        return await v.validate(tenant.mint(claims)), await v.validate(tenant.mint(no_oid))
    principal, app_only = run(make(tenant), scenario)
    assert isinstance(principal, Principal)
    assert (principal.version, principal.tid, principal.sub) == ("2.0", TENANT_ID, claims["sub"])
    assert principal.oid == claims["oid"] and principal.app_id == claims["azp"]
    assert principal.ids == (claims["oid"], claims["azp"])
    assert principal.expires_at == claims["exp"]
    # No oid: the app id alone, lower-cased as the consumer table compares it.
    assert app_only.oid is None and app_only.ids == (no_oid["azp"].lower(),)


def test_v1_token_with_appid_and_sts_issuer(tenant):
    claims = v1(tenant)
    assert claims["iss"] == f"https://sts.windows.net/{TENANT_ID}/" and "azp" not in claims
    validator = make(tenant)

    async def scenario(v):
        first = await v.validate(tenant.mint(claims))
        second = await v.validate(tenant.mint(v1(tenant)))
        return first, second
    principal, _ = run(validator, scenario)
    assert principal.version == "1.0" and principal.app_id == claims["appid"]
    assert principal.ids == (claims["oid"], claims["appid"])
    # The v1.0 issuer comes from the v1.0 OpenID configuration, read once.
    assert tenant.counts == {"discovery": 1, "v1_discovery": 1, "jwks": 1}
    assert validator.counters.v1_discovery_fetches == 1


def test_v2_tokens_never_read_the_v1_configuration(tenant):
    run(make(tenant), lambda v: v.validate(tenant.mint(v2(tenant))))
    assert tenant.counts == {"discovery": 1, "v1_discovery": 0, "jwks": 1}
    assert tenant.paths == [f"/{TENANT_ID}/v2.0/.well-known/openid-configuration",
                            f"/{TENANT_ID}/discovery/v2.0/keys"]


def test_templated_issuer_of_a_tenant_independent_document():
    with EntraTenant(templated_issuer=True) as tenant:
        principal = run(make(tenant), lambda v: v.validate(tenant.mint(v2(tenant))))
    assert principal.tid == TENANT_ID


def test_expiry_within_and_beyond_the_leeway(tenant):
    now = int(time.time())
    just_expired = tenant.mint(v2(tenant, exp=now - 5))
    expired = tenant.mint(v2(tenant, exp=now - 120))
    validator = make(tenant, leeway=30)

    async def scenario(v):
        return await rejected(v, expired), await v.validate(just_expired)
    reason, principal = run(validator, scenario)
    assert reason == "token expired"
    assert principal.expires_at == now - 5


def test_expired_token_is_refused_before_any_fetch(tenant):
    token = tenant.mint(v2(tenant, exp=int(time.time()) - 120))
    assert run(make(tenant), lambda v: rejected(v, token)) == "token expired"
    assert tenant.counts == {"discovery": 0, "v1_discovery": 0, "jwks": 0}


def test_not_yet_valid(tenant):
    now = int(time.time())
    early = tenant.mint(v2(tenant, nbf=now + 600))
    future_iat = tenant.mint(v2(tenant, iat=now + 600, nbf=now - 10))

    async def scenario(v):
        return [await rejected(v, early), await rejected(v, future_iat)]
    assert run(make(tenant), scenario) == ["token not yet valid"] * 2


def test_wrong_audience(tenant):
    tokens = [tenant.mint(v2(tenant, aud=str(uuid.uuid4()))),
              tenant.mint(v1(tenant, aud="api://other-api")),
              tenant.mint(v2(tenant, aud=[]))]

    async def scenario(v):
        return [await rejected(v, t) for t in tokens]
    assert run(make(tenant), scenario) == ["invalid audience"] * 3


def test_wrong_issuer(tenant):
    tokens = [
        # The public cloud's v2.0 form: not what this tenant's configuration publishes.
        tenant.mint(v2(tenant, iss=f"https://login.microsoftonline.com/{TENANT_ID}/v2.0")),
        tenant.mint(v2(tenant, iss=tenant.v1_issuer)),  # a v2.0 token with the v1.0 issuer
        tenant.mint(v1(tenant, iss=tenant.v2_issuer)),  # and the other way round
        tenant.mint(v2(tenant, iss=f"{tenant.url}/{OTHER_TENANT_ID}/v2.0")),
    ]

    async def scenario(v):
        return [await rejected(v, t) for t in tokens]
    validator = make(tenant)
    assert run(validator, scenario) == ["invalid issuer"] * 4
    assert validator.counters.signature_checks == 0


def test_other_tenants_token(tenant):
    tokens = [
        tenant.mint(v2(tenant, tid=OTHER_TENANT_ID, iss=f"{tenant.url}/{OTHER_TENANT_ID}/v2.0")),
        tenant.mint(v1(tenant, tid=OTHER_TENANT_ID, iss=f"https://sts.windows.net/{OTHER_TENANT_ID}/")),
        tenant.mint(v2(tenant, tid="contoso.onmicrosoft.com")),
        tenant.mint(v2(tenant, tid=None)),
    ]

    async def scenario(v):
        return [await rejected(v, t) for t in tokens]
    assert run(make(tenant), scenario) == ["token from another tenant"] * 4
    assert tenant.counts["jwks"] == 0


def test_claims_sanity(tenant):
    now = int(time.time())
    cases = {
        "missing or invalid time claims": [v2(tenant, nbf=None), v2(tenant, exp="soon"),
                                           v2(tenant, iat=True)],
        "invalid token lifetime": [v2(tenant, iat=now - 60, exp=now + 72 * 3600)],
        "token names no principal": [v2(tenant, oid=None, azp=None)],
        "invalid oid claim": [v2(tenant, oid="not-a-guid")],
        "unsupported token version": [v2(tenant, ver="3.0"), v2(tenant, ver=None)],
    }

    async def scenario(v):
        return {reason: [await rejected(v, tenant.mint(c)) for c in claims]
                for reason, claims in cases.items()}
    assert run(make(tenant), scenario) == {reason: [reason] * len(c) for reason, c in cases.items()}



# -- forgeries ----------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "HS256", "RS512", "PS256", "ES256", None])
def test_only_rs256(tenant, alg):
    header = {"typ": "JWT", "kid": tenant.kid, **({"alg": alg} if alg else {})}
    token = forge(header, v2(tenant), b"" if alg in ("none", "None") else b"x" * 256)
    assert run(make(tenant), lambda v: rejected(v, token)) == "unsupported algorithm"
    assert tenant.counts["jwks"] == 0


def test_hs256_keyed_with_the_public_key(tenant):
    """The classic confusion: HMAC with the published RSA key (PEM or raw) as the secret."""
    header = {"typ": "JWT", "alg": "HS256", "kid": tenant.kid}
    pem = public_pem(tenant.private_key())
    tokens = [forge_hs256(header, v2(tenant), pem), forge_hs256(header, v2(tenant), pem.strip())]

    async def scenario(v):
        await v.validate(tenant.mint(v2(tenant)))  # the keys are loaded: the attack's premise
        return [await rejected(v, t) for t in tokens]
    validator = make(tenant)
    assert run(validator, scenario) == ["unsupported algorithm"] * 2
    assert validator.counters.signature_checks == 1


def test_tampered_tokens(tenant):
    claims = v2(tenant)
    good = tenant.mint(claims)
    header, payload, signature = good.split(".")
    other = tenant.mint(v2(tenant, oid=str(uuid.uuid4())))
    swapped_payload = ".".join([header, other.split(".")[1], signature])
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    # A published kid, but signed with a key the tenant never published.
    impostor = tenant.mint(v2(tenant), kid=tenant.kid, key=new_key())
    padded_signature = ".".join([header, payload, signature + "=="])
    # 256 bytes in 342 characters leave 4 unused bits in the last one: same bytes, other text.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) ^ 1]
    non_canonical = ".".join([header, payload, signature[:-1] + last])

    async def scenario(v):
        reasons = [await rejected(v, t) for t in
                   (swapped_payload, ".".join([header, payload, flipped]), impostor)]
        reasons.append(await rejected(v, padded_signature))
        reasons.append(await rejected(v, non_canonical))
        accepted = await v.validate(good)
        return reasons, accepted
    reasons, accepted = run(make(tenant), scenario)
    assert reasons == ["invalid signature"] * 3 + ["malformed token"] * 2
    assert accepted.oid == claims["oid"]


def test_unsupported_headers(tenant):
    cases = [tenant.mint(v2(tenant), crit=["exp"]), tenant.mint(v2(tenant), b64=False)]
    no_kid = forge({"alg": "RS256", "typ": "JWT"}, v2(tenant), b"x" * 256)

    async def scenario(v):
        return [await rejected(v, t) for t in cases] + [await rejected(v, no_kid)]
    assert run(make(tenant), scenario) == ["unsupported token header"] * 2 + ["missing key id"]


def test_malformed_and_oversized_tokens_cost_no_fetch(tenant):
    good = tenant.mint(v2(tenant))
    header, payload, signature = good.split(".")
    oversized = tenant.mint(v2(tenant, padding="x" * 16 * 1024))
    cases = {
        "token too large": [oversized, "a" * (16 * 1024 + 1)],
        "malformed token": ["", "abc", "a.b", good + ".x.y", f"{header}.{payload}.{signature}!",
                            f"{header}.{payload}", "é" + good, "W10.e30.e30",
                            f"{header}.bm90IGpzb24.{signature}", f"{header}.W10.{signature}",
                            f"{header}.{payload}.", f"{header}.{payload[:-1]}.{signature}"],
    }

    async def scenario(v):
        started = time.perf_counter()
        reasons = {r: [await rejected(v, t) for t in tokens] for r, tokens in cases.items()}
        return reasons, time.perf_counter() - started
    reasons, _ = run(make(tenant), scenario)
    assert reasons == {r: [r] * len(tokens) for r, tokens in cases.items()}
    assert tenant.counts == {"discovery": 0, "v1_discovery": 0, "jwks": 0}



# -- the cache ----------------------------------------------------------------------------------

def test_second_validation_is_served_from_the_cache(tenant):
    token = tenant.mint(v2(tenant))
    validator = make(tenant)

    async def scenario(v):
        return await v.validate(token), await v.validate(token)
    first, second = run(validator, scenario)
    assert first is second
    assert validator.counters.signature_checks == 1 and validator.counters.cache_hits == 1
    assert tenant.counts["jwks"] == 1 and tenant.counts["discovery"] == 1


def test_cache_is_bounded(tenant):
    tokens = [tenant.mint(v2(tenant)) for _ in range(4)]
    validator = make(tenant, cache_size=3)

    async def scenario(v):
        for t in tokens:
            await v.validate(t)
        await v.validate(tokens[-1])  # still cached
        await v.validate(tokens[0])  # evicted: verified again
    run(validator, scenario)
    assert validator.counters.signature_checks == 5 and validator.counters.cache_hits == 1
    assert len(validator._cache) == 3


def test_cached_token_still_expires(tenant):
    token = tenant.mint(v2(tenant, exp=int(time.time()) + 2))
    validator = make(tenant, leeway=0)

    async def scenario(v):
        await v.validate(token)
        await asyncio.sleep(max(0.0, token_exp(token) - time.time()) + 0.05)
        return await rejected(v, token)
    assert run(validator, scenario) == "token expired"
    assert validator.counters.signature_checks == 1


def token_exp(token: str) -> int:
    import jwt
    return jwt.decode(token, options={"verify_signature": False})["exp"]


# -- settings and import cost -------------------------------------------------------------------

def test_settings_errors_name_the_setting():
    with pytest.raises(ValueError, match="AZURE_AUTHORITY_HOST"):
        EntraValidator(TENANT_ID, [API_CLIENT_ID], authority="http://login.example.com")
    with pytest.raises(ValueError, match="AZURE_AUTHORITY_HOST"):
        EntraValidator(TENANT_ID, [API_CLIENT_ID], authority="ftp://127.0.0.1")
    for tenant in ("contoso.onmicrosoft.com", "common", "organizations", ""):
        with pytest.raises(ValueError, match="GATEWAY_ENTRA_TENANT"):
            EntraValidator(tenant, [API_CLIENT_ID])
    for audiences in ([], [" "], "", ["api://a b"]):
        with pytest.raises(ValueError, match="GATEWAY_ENTRA_AUDIENCE"):
            EntraValidator(TENANT_ID, audiences)
    default = EntraValidator(TENANT_ID.upper(), f"{API_CLIENT_ID.upper()}, {API_URI}")
    assert default.discovery_url == (f"https://login.microsoftonline.com/{TENANT_ID}"
                                     "/v2.0/.well-known/openid-configuration")
    assert default.audiences == [API_CLIENT_ID, API_URI]
    assert EntraValidator(TENANT_ID, [API_URI], authority="login.microsoftonline.us/").authority \
        == "https://login.microsoftonline.us"
    assert EntraValidator(TENANT_ID, [API_URI], authority="http://localhost:1/").authority \
        == "http://localhost:1"


def test_import_and_construction_are_cheap_and_offline():
    code = ("import sys, routing.inbound.entra as e\n"
            "v = e.EntraValidator('%s', ['%s'], authority='https://login.invalid')\n"
            "print(sorted(m for m in ('jwt', 'aiohttp', 'cryptography') if m in sys.modules))\n"
            % (TENANT_ID, API_CLIENT_ID))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

