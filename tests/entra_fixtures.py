"""What tests/test_entra.py and tests/test_entra_keys.py share: a local tenant
(tests/entra_tenant.py) per test, validators for it, and ways to run and refuse tokens."""

from __future__ import annotations

import asyncio

import pytest

from routing.inbound.entra import EntraValidator, InvalidToken
from tests.entra_tenant import TENANT_ID, EntraTenant

API_CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
API_URI = "api://llm-gateway"


@pytest.fixture
def tenant():
    """A local tenant per test. Test modules bind it as `tenant = entra_fixtures.tenant`:
    pytest finds fixtures among a module's names, and importing the name trips F401/F811."""
    with EntraTenant() as running:
        yield running


def make(tenant: EntraTenant | str, **options) -> EntraValidator:
    authority = tenant if isinstance(tenant, str) else tenant.url
    return EntraValidator(TENANT_ID, [API_CLIENT_ID, API_URI], authority=authority, **options)


def run(validator: EntraValidator, scenario):
    """Run `scenario(validator)` in a fresh loop, closing the validator's session after."""
    async def main():
        try:
            return await scenario(validator)
        finally:
            await validator.aclose()
    return asyncio.run(main())


async def rejected(validator: EntraValidator, token: str) -> str:
    """The reason the token is refused; the reason never carries the token or a part of it."""
    try:
        principal = await validator.validate(token)
    except InvalidToken as exc:
        for part in token.split("."):
            if len(part) >= 8:
                assert part not in exc.reason and part not in str(exc)
        return exc.reason
    raise AssertionError(f"accepted: {principal}")


def v2(tenant: EntraTenant, **overrides) -> dict:
    return tenant.claims("2.0", API_CLIENT_ID, **overrides)


def v1(tenant: EntraTenant, **overrides) -> dict:
    return tenant.claims("1.0", API_URI, **overrides)
