"""The Entra validator's signing keys (routing/inbound/entra_keys.py) against a local tenant
(tests/entra_tenant.py): fetched once, refreshed on rotation and with age, rate-limited against
floods, and the tenant's endpoints down, stalled, failing or oversized."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from routing.inbound.entra import InvalidToken, KeysUnavailable
from tests import entra_fixtures
from tests.entra_fixtures import make, rejected, run, v1, v2
from tests.entra_tenant import TENANT_ID, new_key
from tests.helpers import free_port

tenant = entra_fixtures.tenant  # the fixture (see tests/entra_fixtures.py)


# -- keys: rotation, floods, age ----------------------------------------------------------------

def test_rotated_keys_are_fetched_once_and_then_accepted(tenant):
    validator = make(tenant)
    old = tenant.mint(v2(tenant))

    async def scenario(v):
        await v.validate(old)
        assert tenant.counts["jwks"] == 1
        new_kid = tenant.rotate()
        new = tenant.mint(v2(tenant), kid=new_kid)
        principal = await v.validate(new)
        assert tenant.counts["jwks"] == 2
        again = await v.validate(tenant.mint(v2(tenant), kid=new_kid))
        # The old key was withdrawn: its token leaves the cache, and no second refresh happens.
        withdrawn = await rejected(v, old)
        return principal, again, withdrawn
    principal, again, withdrawn = run(validator, scenario)
    assert principal.version == again.version == "2.0"
    assert withdrawn == "unknown signing key"
    assert tenant.counts["jwks"] == 2 and tenant.counts["discovery"] == 1


def test_random_kid_flood_refreshes_at_most_once(tenant):
    attacker = new_key()
    flood = [tenant.mint(v2(tenant), kid=f"kid-{i}", key=attacker) for i in range(200)]
    validator = make(tenant, refresh_interval=300)

    async def scenario(v):
        await v.validate(tenant.mint(v2(tenant)))  # keys loaded
        concurrent = await asyncio.gather(*(rejected(v, t) for t in flood[:100]))
        sequential = [await rejected(v, t) for t in flood[100:]]
        return concurrent + sequential
    reasons = run(validator, scenario)
    assert set(reasons) == {"unknown signing key"}
    assert tenant.counts["jwks"] == 2  # the first load and one refresh
    assert validator.counters.signature_checks == 1  # only the genuine token's


def test_refresh_allowed_again_after_the_interval(tenant):
    attacker = new_key()
    validator = make(tenant, refresh_interval=0.2)

    async def scenario(v):
        await v.validate(tenant.mint(v2(tenant)))
        await rejected(v, tenant.mint(v2(tenant), kid="unknown-1", key=attacker))
        await rejected(v, tenant.mint(v2(tenant), kid="unknown-2", key=attacker))
        assert tenant.counts["jwks"] == 2
        await asyncio.sleep(0.3)
        await rejected(v, tenant.mint(v2(tenant), kid="unknown-3", key=attacker))
    run(validator, scenario)
    assert tenant.counts["jwks"] == 3


def test_cold_start_burst_is_one_discovery_and_one_jwks_fetch(tenant):
    tokens = [tenant.mint(v2(tenant)) for _ in range(50)]

    async def scenario(v):
        return await asyncio.gather(*(v.validate(t) for t in tokens))
    principals = run(make(tenant), scenario)
    assert len({p.oid for p in principals}) == 50
    assert tenant.counts == {"discovery": 1, "v1_discovery": 0, "jwks": 1}



def test_old_keys_are_refreshed_in_the_background(tenant):
    validator = make(tenant, max_key_age=0.1, refresh_interval=0.1)

    async def scenario(v):
        await v.validate(tenant.mint(v2(tenant)))
        await asyncio.sleep(0.2)
        principal = await v.validate(tenant.mint(v2(tenant)))  # served by the old keys meanwhile
        while v._signing_keys._load_task is not None:
            await asyncio.sleep(0.01)
        return principal
    assert run(validator, scenario).version == "2.0"
    assert tenant.counts["jwks"] == 2 and validator.counters.signature_checks == 2


# -- the tenant's endpoints failing -------------------------------------------------------------

def test_tenant_down_is_a_clear_failure_without_a_hang(tenant, caplog):
    authority = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    token = tenant.mint(v2(tenant))
    validator = make(authority, fetch_timeout=2, failure_backoff=60)

    async def scenario(v):
        started = time.perf_counter()
        with pytest.raises(KeysUnavailable) as first:
            await v.validate(token)
        with pytest.raises(KeysUnavailable):  # within the backoff: no second fetch
            await v.validate(token)
        return first.value, time.perf_counter() - started
    with caplog.at_level(logging.WARNING, logger="routing.inbound.entra"):
        error, elapsed = run(validator, scenario)
    assert error.reason == "signing keys unavailable" and isinstance(error, InvalidToken)
    assert elapsed < 2
    assert validator.counters.discovery_fetches == 1 and validator.counters.fetch_failures == 1
    warnings = [r for r in caplog.records if r.name == "routing.inbound.entra"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert authority in warnings[0].getMessage()
    assert all(part not in caplog.text for part in token.split("."))


def test_stalled_tenant_is_bounded_by_the_fetch_timeout(tenant):
    tenant.faults.stall = 10
    validator = make(tenant, fetch_timeout=0.5)

    async def scenario(v):
        started = time.perf_counter()
        reasons = await asyncio.gather(*(rejected(v, tenant.mint(v2(tenant))) for _ in range(5)))
        return reasons, time.perf_counter() - started
    reasons, elapsed = run(validator, scenario)
    assert reasons == ["signing keys unavailable"] * 5
    assert 0.4 < elapsed < 2
    assert tenant.counts["discovery"] == 1  # five callers, one coalesced fetch


def test_failing_tenant_then_recovery(tenant):
    tenant.faults.fail_status = 500
    validator = make(tenant, failure_backoff=0.2)
    token = tenant.mint(v2(tenant))

    async def scenario(v):
        first = await rejected(v, token)
        tenant.faults.fail_status = None
        during_backoff = await rejected(v, token)
        await asyncio.sleep(0.3)
        return first, during_backoff, await v.validate(token)
    first, during_backoff, principal = run(validator, scenario)
    assert first == during_backoff == "signing keys unavailable"
    assert principal.tid == TENANT_ID
    assert tenant.counts["discovery"] == 2


@pytest.mark.parametrize("no_length", [False, True], ids=["content-length", "read-to-close"])
def test_oversized_jwks_is_refused(tenant, caplog, no_length):
    tenant.faults.oversize_jwks = True
    tenant.faults.no_length = no_length
    with caplog.at_level(logging.WARNING, logger="routing.inbound.entra"):
        reason = run(make(tenant), lambda v: rejected(v, tenant.mint(v2(tenant))))
    assert reason == "signing keys unavailable"
    assert "response too large" in caplog.text


def test_failed_refresh_keeps_the_known_keys(tenant):
    validator = make(tenant)
    attacker = new_key()

    async def scenario(v):
        await v.validate(tenant.mint(v2(tenant)))
        tenant.faults.fail_status = 503
        unknown = await rejected(v, tenant.mint(v2(tenant), kid="rotated?", key=attacker))
        known = await v.validate(tenant.mint(v2(tenant)))  # still served by the last good keys
        return unknown, known
    unknown, known = run(validator, scenario)
    assert unknown == "signing keys unavailable" and known.version == "2.0"


def test_v1_configuration_unavailable(tenant):
    validator = make(tenant, failure_backoff=60)

    async def scenario(v):
        await v.validate(tenant.mint(v2(tenant)))
        tenant.faults.fail_status = 500
        return await rejected(v, tenant.mint(v1(tenant))), await rejected(v, tenant.mint(v1(tenant)))
    assert run(validator, scenario) == ("token issuer metadata unavailable",) * 2
    assert tenant.counts["v1_discovery"] == 1



# -- the session --------------------------------------------------------------------------------

def test_a_borrowed_session_is_used_and_left_open(tenant):
    import aiohttp

    async def scenario():
        # The gateway's shared client is made like this (routing/gateway.py create_session).
        shared = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                                       timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        v = make(tenant, session_factory=lambda: shared)
        principal = await v.validate(tenant.mint(v2(tenant)))
        await v.aclose()
        still_open = not shared.closed
        await shared.close()
        return principal, still_open
    principal, still_open = asyncio.run(scenario())
    assert principal.tid == TENANT_ID and still_open
    assert tenant.counts["jwks"] == 1
