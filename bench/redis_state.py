"""The gateway on Redis state (DESIGN §11) in the benchmark: a local redis-server (the one the
tests use, tests/redis_server.py), and how many Redis round trips one request costs.

A consumer with limits costs one script call at admission (limits and the deployments'
cooldowns read together) and the reconciliation after the answer; the count is measured from
the server's own statistics (INFO commandstats) over a phase of requests, not assumed.
"""

from __future__ import annotations


def start():
    """A running redis-server on loopback, or None when no binary is installed."""
    from tests.redis_server import RedisServer

    try:
        server = RedisServer()
    except RuntimeError:
        return None
    server.start()
    return server


# Commands a client sends itself; what a script runs inside (HMGET, HSET, ...) is counted apart.
CLIENT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "ping", "hello", "auth", "select",
                   "client|setinfo", "client|setname", "script|load", "script|exists")


def counts(server) -> tuple[int, int]:
    """(commands sent by clients, commands processed in all, scripts' inner ones included)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        stats = client.info("commandstats")
        total = int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()
    sent = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in CLIENT_COMMANDS)
    return sent, total


def ops_per_request(runner, target, server, count: int = 2000) -> dict:
    """Redis round trips (and commands run, inside scripts included) per request over `count`
    requests at concurrency 1, warm-up included in both counts."""
    sent0, total0 = counts(server)
    result = runner.phase(target, "c1", count, 1, 50)
    sent1, total1 = counts(server)
    requests = result["expected_upstream_requests"]
    return {"requests": requests, "round_trips": sent1 - sent0, "commands": total1 - total0 - 2,
            "per_request": (sent1 - sent0) / max(requests, 1),
            "commands_per_request": (total1 - total0 - 2) / max(requests, 1), "errors": result["errors"]}
