"""`RedisStore`: the limits and cooldowns shared by every instance, in Redis (GATEWAY_STATE=
redis://… or rediss://…). Semantics: routing/state/store.py; this module only moves the
decision into Lua scripts, so that it is atomic across instances: two instances never both take
the last tokens. Imported only when the settings name Redis.

- One round trip per call: `admit` runs one script that reads and takes the limits and reads the
  cooldowns of the request's routes; `reconcile_many` one script for any number of finished
  requests (ResilientStore batches them: under load, many requests' accounting in one round
  trip), and `send_reconciles` the same without waiting, written with the next admission's
  command; `cool_down` and `usage` one script each. Scripts run by EVALSHA; after a server
  restart or SCRIPT FLUSH (NOSCRIPT, so nothing ran) the call is sent again as EVAL, which also
  loads the script.
- The connection is routing/state/resp.py's: one pipelined connection, no pool, one watchdog
  timer per connection rather than a timeout per call (redis-py's asyncio client cost ~110 µs of
  CPU per command here; this ~35 µs, most of it the event loop's and the kernel's work).
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
  twice); `ResilientStore` decides what a failure means. In a batch of reconciliations each one
  is applied on its own (a Lua pcall), so one that fails (a key of the wrong type) is reported
  and the others are applied once.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from routing.state.resp import ConnectionLost, RedisConnection, RedisError, ReplyError, pack
from routing.state.store import Admission, Limits, Reservation, Usage, build_admission, build_usage, period_bounds

KEY_PREFIX = "{routing}"
QUOTA_KEPT_AFTER_PERIOD = 3600  # seconds: a request straddling the period's end is reconciled into it
COOLDOWN_SLACK_MS = 1000
CONNECT_TIMEOUT = 1.0  # seconds, at least, for a connection attempt (TLS and an Entra token included)
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

# Any number of reconciliations. KEYS: for each, its token bucket and quota counter. ARGV: for
# each, now, tokens per minute (0: none), tokens returned (negative: more were used than
# reserved), 1 when the quota was charged. Each runs in its own pcall: returns the (1-based)
# numbers of those that failed, empty when all were applied.
_RECONCILE_LUA = _BUCKET_LUA + """
local function reconcile(bucket, counter, now, tpm, returned, charged)
  if tpm > 0 then
    local level, at = level_at(bucket, tpm, now)
    save(bucket, math.min(level + returned, tpm), tpm, at)
  end
  if charged == '1' and redis.call('EXISTS', counter) == 1 then
    if redis.call('INCRBY', counter, -returned) < 0 then
      redis.call('SET', counter, 0, 'KEEPTTL')
    end
  end
end
local failed = {}
for i = 1, #KEYS / 2 do
  local a = (i - 1) * 4
  if not pcall(reconcile, KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
               tonumber(ARGV[a + 3]), ARGV[a + 4]) then
    failed[#failed + 1] = i
  end
end
return failed
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


class _Script:
    __slots__ = ("text", "sha")

    def __init__(self, text: str):
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


class RedisStore:
    name = "redis"
    # What a call may raise when Redis is unreachable, slow or refusing: ResilientStore then
    # serves from memory.
    failures: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

    def __init__(self, connection: RedisConnection, *, address: str, key_prefix: str = KEY_PREFIX):
        """`address`: host:port, for log lines (never a key). `key_prefix` must be a hash tag."""
        self.connection = connection
        self.address = address
        self._prefix = key_prefix
        self._scripts = [_Script(text) for text in (_ADMIT_LUA, _RECONCILE_LUA, _COOL_DOWN_LUA, _USAGE_LUA)]
        self._admit, self._reconcile, self._cool_down, self._usage = self._scripts

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.05, password: str | None = None,
                 credential_provider: object | None = None, key_prefix: str = KEY_PREFIX) -> RedisStore:
        """A store on `redis://host:port[/db]` or `rediss://host:port[/db]` (TLS). `timeout`:
        seconds for each reply; a connection attempt (TCP, TLS, credentials, AUTH) gets at least
        CONNECT_TIMEOUT (it goes on in the background while callers give up on their own
        bounds, so a slow first connection gets made). `password` (an access key) or
        `credential_provider` (Entra ID) when the server wants one. The URL is taken as given:
        routing.state.store_from_settings validates the settings."""
        parts = urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port or 6379
        connection = RedisConnection(host, port, db=int(parts.path.strip("/") or 0), tls=parts.scheme == "rediss",
                                     password=password, credential_provider=credential_provider,
                                     timeout=timeout, connect_timeout=max(timeout, CONNECT_TIMEOUT))
        return cls(connection, address=f"{host}:{port}", key_prefix=key_prefix)

    # -- the StateStore interface ---------------------------------------------------------------

    async def admit(self, consumer: str, limits: Limits, tokens: int, now: float,
                    routes: Sequence[str] = ()) -> Admission:
        if not limits and not routes:
            return Admission(admitted=True)
        cost = max(int(tokens), 0)
        tpm, rpm, quota = limits.tokens_per_minute or 0, limits.requests_per_minute or 0, limits.token_quota or 0
        period_start, period_end = period_bounds(limits.quota_period, now) if quota else (0, 0)
        quota_ttl_ms = math.ceil((period_end - now + QUOTA_KEPT_AFTER_PERIOD) * 1000)
        prefix = self._prefix
        refused, token_level, request_level, used, *ends = await self._run(
            self._admit,
            (f"{prefix}:tokens:{consumer}", f"{prefix}:requests:{consumer}",
             f"{prefix}:quota:{period_start}:{consumer}", *(f"{prefix}:cooldown:{route}" for route in routes)),
            (repr(float(now)), tpm, rpm, quota if quota else -1, cost, quota_ttl_ms))
        cooldowns = {route: until for route, end in zip(routes, ends) if end and (until := float(end)) > now}
        if not limits:
            return Admission(admitted=True, cooldowns=cooldowns)
        return build_admission(self.name, consumer, limits, cost, now, int(refused), float(token_level),
                               float(request_level), int(used), cooldowns)

    async def reconcile(self, reservation: Reservation, used_tokens: int, now: float) -> None:
        if await self.reconcile_many(((reservation, used_tokens, now),)):
            raise ReplyError("the reconciliation failed in Redis")

    async def reconcile_many(self, items: Sequence[tuple[Reservation, int, float]]) -> int:
        """Apply (reservation, used tokens, now) reconciliations in one script call (one round
        trip, none when none changes anything). Returns how many could not be applied (each
        is applied or not on its own); raises when the call itself failed (then it is unknown
        which were)."""
        keys, args = self._reconcile_arguments(items)
        return len(await self._run(self._reconcile, keys, args)) if keys else 0

    def send_reconciles(self, items: Sequence[tuple[Reservation, int, float]],
                        answered: Callable[[int, BaseException | None], None]) -> bool:
        """`reconcile_many` without waiting: written with the next command sent in this loop
        turn (an admission's, typically: one write, one round trip for both, the
        reconciliations applied first). `answered(refused, error)` is called once, from the
        reply (before whatever else that read resumes). False when not connected (nothing
        sent: use `reconcile_many`)."""
        keys, args = self._reconcile_arguments(items)
        if not keys:
            asyncio.get_running_loop().call_soon(answered, 0, None)
            return True
        sent = self.connection.send(pack("EVALSHA", self._reconcile.sha, len(keys), *keys, *args))
        if sent is None:
            return False

        def replied(reply: asyncio.Future, first: bool = True) -> None:
            error = ConnectionLost("cancelled") if reply.cancelled() else reply.exception()
            if error is None:
                answered(len(reply.result()), None)
            elif first and isinstance(error, ReplyError) and str(error).startswith("NOSCRIPT"):
                # The server lost its scripts: nothing ran; EVAL loads it.
                again = self.connection.send(pack("EVAL", self._reconcile.text, len(keys), *keys, *args))
                if again is None:
                    answered(0, error)
                else:
                    again.add_done_callback(lambda reply: replied(reply, first=False))
            else:
                answered(0, error)

        sent.add_done_callback(replied)
        return True

    def _reconcile_arguments(self, items: Sequence[tuple[Reservation, int, float]]) -> tuple[list, list]:
        """The reconcile script's KEYS and ARGV for the items that change something."""
        keys: list[str] = []
        args: list[str | int] = []
        prefix = self._prefix
        for reservation, used_tokens, now in items:
            returned = reservation.tokens - max(int(used_tokens), 0)
            charged = reservation.quota_period_start is not None
            if not returned or not (reservation.tokens_per_minute or charged):
                continue
            consumer = reservation.consumer
            keys += (f"{prefix}:tokens:{consumer}", f"{prefix}:quota:{reservation.quota_period_start or 0}:{consumer}")
            args += (repr(float(now)), reservation.tokens_per_minute or 0, returned, 1 if charged else 0)
        return keys, args

    async def cool_down(self, route_id: str, until: float, now: float | None = None) -> None:
        remaining_ms = math.ceil((until - (time.time() if now is None else now)) * 1000)
        if remaining_ms > 0:
            await self._run(self._cool_down, (self._key("cooldown", route_id),),
                            (repr(float(until)), remaining_ms + COOLDOWN_SLACK_MS))

    async def usage(self, consumer: str, limits: Limits, now: float) -> Usage:
        quota = limits.token_quota
        period_start = period_bounds(limits.quota_period, now)[0] if quota else 0
        token_level, request_level, used = await self._run(
            self._usage,
            (self._key("tokens", consumer), self._key("requests", consumer), self._quota_key(consumer, period_start)),
            (repr(float(now)), limits.tokens_per_minute or 0, limits.requests_per_minute or 0))
        return build_usage(limits, now, float(token_level), float(request_level), int(used) if quota else 0)

    async def close(self) -> None:
        await self.connection.close()

    # -- for ResilientStore and the tests -------------------------------------------------------

    async def ping(self) -> None:
        """One round trip that also loads the scripts (a restarted server has none)."""
        connection = self.connection
        replies = await asyncio.gather(
            connection.execute(pack("PING")),
            *(connection.execute(pack("SCRIPT", "LOAD", script.text)) for script in self._scripts),
            return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply

    async def _run(self, script: _Script, keys: Sequence[str], args: Sequence[str | int]):
        try:
            return await self.connection.execute(pack("EVALSHA", script.sha, len(keys), *keys, *args))
        except ReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        # The server lost its scripts (restarted, or SCRIPT FLUSH): nothing ran; EVAL loads it.
        return await self.connection.execute(pack("EVAL", script.text, len(keys), *keys, *args))

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
