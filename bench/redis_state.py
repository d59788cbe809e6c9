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


def counts(server) -> tuple[int, int, int]:
    """(commands sent by clients, commands processed in all (scripts' inner ones included), reads
    the server made: each a round trip's request, however many commands it carried)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        stats = client.info("commandstats")
        info = client.info("stats")
    finally:
        client.close()
    sent = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in CLIENT_COMMANDS)
    return sent, int(info["total_commands_processed"]), int(info["total_reads_processed"])


def ops_per_request(runner, target, server, count: int = 2000) -> dict:
    """Redis calls, reads (round trips) and commands run per request over `count` requests at
    concurrency 1, warm-up included; this function's own two INFO connections subtracted."""
    sent0, total0, reads0 = counts(server)
    result = runner.phase(target, "c1", count, 1, 50)
    sent1, total1, reads1 = counts(server)
    requests = max(result["expected_upstream_requests"], 1)
    # Each `counts` connection: a HELLO/CLIENT SETINFO handshake and two INFO commands.
    own = 4
    return {"requests": requests, "round_trips": sent1 - sent0, "commands": total1 - total0 - own,
            "per_request": (sent1 - sent0) / requests, "reads_per_request": (reads1 - reads0 - own) / requests,
            "commands_per_request": (total1 - total0 - own) / requests, "errors": result["errors"]}
