"""`RedisStore`: the limits and cooldowns shared by every instance, in Redis (GATEWAY_STATE=
redis://… or rediss://…). Semantics: routing/state/store.py; this module only moves the
decision into Lua scripts, so that it is atomic across instances: two instances never both take
the last tokens. Imported only when the settings name Redis.

- One round trip per call: `admit` runs one script that reads and takes the limits and reads the
  cooldowns of the request's routes; `reconcile`, `cool_down` and `usage` one script each.
  Scripts run by EVALSHA; redis-py's script objects load them again when a restarted server
  answers NOSCRIPT.
- Every key is under one hash tag (`{routing}:…`): a clustered Redis runs a multi-key script
  only when all its keys hash to one slot (Azure Managed Redis: under the OSS clustering policy
  every multi-key command must; under the Enterprise policy, its default, only DEL, MSET, MGET,
  EXISTS, UNLINK and TOUCH may span slots). Everything lands on one shard; the state is a few
  small keys per consumer and route. The client is a plain (not cluster-aware) one: Enterprise
  or non-clustered policy, whose endpoint routes every command itself.
- Every key expires on its own: a bucket when it would be full again (missing = full), a quota
  counter an hour after its period ends, a cooldown when it ends (plus a second of slack for
  clocks). So Redis holds only what is still in force.
- Times are the callers' (`now`), never Redis's TIME: every instance uses the wall clock, and
  tests pass their own. Key TTLs are relative durations computed from that same `now`.
- No retries inside the client: a script that may have run must not run twice (it would take
  twice); `ResilientStore` decides what a failure means.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from routing.state.store import Admission, Limits, Reservation, Usage, build_admission, build_usage, period_bounds

KEY_PREFIX = "{routing}"
QUOTA_KEPT_AFTER_PERIOD = 3600  # seconds: a request straddling the period's end is reconciled into it
COOLDOWN_SLACK_MS = 1000
REDIS_SCOPE_RESOURCE = "https://redis.azure.com/"  # the Entra resource of Azure Managed Redis

# Shared by the scripts: a bucket's level at `now` (missing: full), and saving it with a TTL of
# the time until it is full again (a full bucket is deleted: the same as a missing one).
_BUCKET_LUA = """
local function level_at(key, capacity, now)
  local state = redis.call('HMGET', key, 'level', 'at')
  if not state[1] then return capacity, now end
  local at = tonumber(state[2])
  local level = tonumber(state[1]) + math.max(now - at, 0) * capacity / 60
  return math.min(level, capacity), math.max(at, now)
end
local function save(key, level, capacity, at)
  if level >= capacity then
    redis.call('DEL', key)
    return
  end
  redis.call('HSET', key, 'level', string.format('%.17g', level), 'at', string.format('%.17g', at))
  redis.call('PEXPIRE', key, math.ceil((capacity - level) * 60000 / capacity) + 1000)
end
"""

# KEYS: token bucket, request bucket, quota counter, then the cooldown of each route.
# ARGV: now, tokens per minute (0: none), requests per minute (0: none), quota (-1: none), cost,
# quota counter TTL (ms). Returns {refused flags, token level, request level, quota used,
# cooldown end of each route ('' when none)}; levels as strings (Lua numbers become integers).
_ADMIT_LUA = _BUCKET_LUA + """
local now, tpm, rpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local quota, cost = tonumber(ARGV[4]), tonumber(ARGV[5])
local refused, token_level, request_level, used = 0, 0, 0, 0
local token_at, request_at = now, now
if tpm > 0 then
  token_level, token_at = level_at(KEYS[1], tpm, now)
  if token_level < math.min(cost, tpm) then refused = refused + 1 end
end
if rpm > 0 then
  request_level, request_at = level_at(KEYS[2], rpm, now)
  if request_level < 1 then refused = refused + 2 end
end
if quota >= 0 then
  used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used + cost > quota then refused = refused + 4 end
end
if refused == 0 then
  if tpm > 0 then
    token_level = token_level - cost
    save(KEYS[1], token_level, tpm, token_at)
  end
  if rpm > 0 then
    request_level = request_level - 1
    save(KEYS[2], request_level, rpm, request_at)
  end
  if quota >= 0 then
    used = redis.call('INCRBY', KEYS[3], cost)
    redis.call('PEXPIRE', KEYS[3], ARGV[6])
  end
end
local answer = {refused, string.format('%.17g', token_level), string.format('%.17g', request_level), used}
for i = 4, #KEYS do
  answer[#answer + 1] = redis.call('GET', KEYS[i]) or ''
end
return answer
"""

# KEYS: token bucket, quota counter. ARGV: now, tokens per minute (0: none), tokens returned
# (negative: more were used than reserved), 1 when the quota was charged.
_RECONCILE_LUA = _BUCKET_LUA + """
local now, tpm, returned = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 then
  local level, at = level_at(KEYS[1], tpm, now)
  save(KEYS[1], math.min(level + returned, tpm), tpm, at)
end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('INCRBY', KEYS[2], -returned) < 0 then
    redis.call('SET', KEYS[2], 0, 'KEEPTTL')
  end
end
return 0
"""

# KEYS: the route's cooldown. ARGV: its end, TTL (ms). A later end wins.
_COOL_DOWN_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 0
"""

# KEYS: token bucket, request bucket, quota counter. ARGV: now, tokens per minute, requests per
# minute (0: none). Reads only.
_USAGE_LUA = _BUCKET_LUA + """
local now, tpm, rpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local token_level, request_level = 0, 0
if tpm > 0 then token_level = level_at(KEYS[1], tpm, now) end
if rpm > 0 then request_level = level_at(KEYS[2], rpm, now) end
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
return {string.format('%.17g', token_level), string.format('%.17g', request_level), used}
"""


class RedisStore:
    name = "redis"
    # What a call may raise when Redis is unreachable, slow or refusing: ResilientStore then
    # serves from memory.
    failures: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

    def __init__(self, client: aioredis.Redis, *, address: str, key_prefix: str = KEY_PREFIX):
        """`address`: host:port, for log lines (never a key). `key_prefix` must be a hash tag."""
        self._client = client
        self.address = address
        self._prefix = key_prefix
        self._scripts = [client.register_script(text) for text in (_ADMIT_LUA, _RECONCILE_LUA, _COOL_DOWN_LUA, _USAGE_LUA)]
        self._admit, self._reconcile, self._cool_down, self._usage = self._scripts

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.05, password: str | None = None,
                 credential_provider: object | None = None, key_prefix: str = KEY_PREFIX) -> RedisStore:
        """A store on `redis://host:port[/db]` or `rediss://host:port[/db]` (TLS). `timeout`:
        seconds for connecting and for each reply. `password` (an access key) or
        `credential_provider` (Entra ID) when the server wants one. The URL is taken as given:
        routing.state.store_from_settings validates the settings."""
        parts = urlsplit(url)
        tls = parts.scheme == "rediss"
        host, port = parts.hostname or "localhost", parts.port or 6379
        client = aioredis.Redis(
            host=host, port=port, db=int(parts.path.strip("/") or 0), ssl=tls,
            password=password, credential_provider=credential_provider,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0))
        return cls(client, address=f"{host}:{port}", key_prefix=key_prefix)

    # -- the StateStore interface ---------------------------------------------------------------

    async def admit(self, consumer: str, limits: Limits, tokens: int, now: float,
                    routes: Sequence[str] = ()) -> Admission:
        if not limits and not routes:
            return Admission(admitted=True)
        cost = max(int(tokens), 0)
        tpm, rpm, quota = limits.tokens_per_minute or 0, limits.requests_per_minute or 0, limits.token_quota or 0
        period_start, period_end = period_bounds(limits.quota_period, now) if quota else (0, 0)
        quota_ttl_ms = math.ceil((period_end - now + QUOTA_KEPT_AFTER_PERIOD) * 1000)
        keys = [self._key("tokens", consumer), self._key("requests", consumer),
                self._quota_key(consumer, period_start), *(self._key("cooldown", route) for route in routes)]
        refused, token_level, request_level, used, *ends = await self._admit(
            keys, [repr(float(now)), tpm, rpm, quota if quota else -1, cost, quota_ttl_ms])
        cooldowns = {route: until for route, end in zip(routes, ends) if end and (until := float(end)) > now}
        if not limits:
            return Admission(admitted=True, cooldowns=cooldowns)
        return build_admission(self.name, consumer, limits, cost, now, int(refused), float(token_level),
                               float(request_level), int(used), cooldowns)

    async def reconcile(self, reservation: Reservation, used_tokens: int, now: float) -> None:
        returned = reservation.tokens - max(int(used_tokens), 0)
        charged = reservation.quota_period_start is not None
        if not returned or not (reservation.tokens_per_minute or charged):
            return
        consumer = reservation.consumer
        await self._reconcile(
            [self._key("tokens", consumer), self._quota_key(consumer, reservation.quota_period_start or 0)],
            [repr(float(now)), reservation.tokens_per_minute or 0, returned, 1 if charged else 0])

    async def cool_down(self, route_id: str, until: float, now: float | None = None) -> None:
        remaining_ms = math.ceil((until - (time.time() if now is None else now)) * 1000)
        if remaining_ms > 0:
            await self._cool_down([self._key("cooldown", route_id)],
                                  [repr(float(until)), remaining_ms + COOLDOWN_SLACK_MS])

    async def usage(self, consumer: str, limits: Limits, now: float) -> Usage:
        quota = limits.token_quota
        period_start = period_bounds(limits.quota_period, now)[0] if quota else 0
        token_level, request_level, used = await self._usage(
            [self._key("tokens", consumer), self._key("requests", consumer), self._quota_key(consumer, period_start)],
            [repr(float(now)), limits.tokens_per_minute or 0, limits.requests_per_minute or 0])
        return build_usage(limits, now, float(token_level), float(request_level), int(used) if quota else 0)

    async def close(self) -> None:
        await self._client.aclose()

    # -- for ResilientStore and the tests -------------------------------------------------------

    async def ping(self) -> None:
        """One round trip that also loads the scripts (a restarted server has none)."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.ping()
            for script in self._scripts:
                pipe.script_load(script.script)
            await pipe.execute()

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}:{kind}:{name}"

    def _quota_key(self, consumer: str, period_start: int) -> str:
        return f"{self._prefix}:quota:{period_start}:{consumer}"


def managed_identity_credentials(client_id: str | None) -> object:
    """Entra ID tokens for Azure Managed Redis through the app's managed identity (user-assigned
    when `client_id` is given), refreshed in the background by redis-entraid."""
    from redis_entraid.cred_provider import create_from_managed_identity
    from redis_entraid.identity_provider import ManagedIdentityIdType, ManagedIdentityType

    if client_id:
        return create_from_managed_identity(ManagedIdentityType.USER_ASSIGNED, REDIS_SCOPE_RESOURCE,
                                            id_type=ManagedIdentityIdType.CLIENT_ID, id_value=client_id)
    return create_from_managed_identity(ManagedIdentityType.SYSTEM_ASSIGNED, REDIS_SCOPE_RESOURCE)
