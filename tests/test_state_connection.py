"""RedisStore's connection (routing/state/resp.py) against a real redis-server: pipelined calls
on one connection each getting their own reply, a late reply discarding the connection (never
answering the next caller), a caller that gave up leaving its reply to be dropped, a stalled
event loop not taken for a slow Redis, authentication (key, credential provider renewing its
token on the open connection), and the reply parser."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import time
from datetime import datetime, timezone

import pytest
import redis

from routing.state import resp, store_from_settings
from routing.state.resp import ConnectionLost, PyReader, RedisConnection, ReplyError, ReplyTimeout, pack
from routing.state.store import Limits
from tests.redis_server import RedisServer

T0 = datetime(2024, 5, 15, 12, tzinfo=timezone.utc).timestamp()
KEY = "connection-key-0123456789"


@pytest.fixture(scope="module")
def server():
    running = RedisServer(password=KEY)
    running.start()
    yield running
    running.close()


def admin(server) -> redis.Redis:
    return redis.Redis(port=server.port, password=KEY, decode_responses=True)


def connection(server, **options) -> RedisConnection:
    return RedisConnection("127.0.0.1", server.port, **{"password": KEY, **options})


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario(), 20))


@pytest.mark.parametrize("reader", ["default", "python"])
def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(server, reader, monkeypatch):
    if reader == "python":
        monkeypatch.setattr(resp, "hiredis", None)  # what a deployment without hiredis parses with

    async def scenario():
        conn = connection(server)
        watcher = admin(server)
        try:
            client_id = await conn.execute(pack("CLIENT", "ID"))
            connections = watcher.info("stats")["total_connections_received"]
            replies = await asyncio.gather(*(conn.execute(pack("ECHO", f"call-{n}")) for n in range(300)))
            assert replies == [f"call-{n}".encode() for n in range(300)]
            assert await conn.execute(pack("CLIENT", "ID")) == client_id
            assert watcher.info("stats")["total_connections_received"] == connections  # no other connection
        finally:
            watcher.close()
            await conn.close()
    run(scenario)


def test_a_late_reply_discards_the_connection_and_never_answers_the_next_caller(server):
    async def scenario():
        conn = connection(server, timeout=0.05)
        try:
            assert await conn.execute(pack("PING")) == b"PONG"
            server.freeze()
            started = time.monotonic()
            with pytest.raises(ReplyTimeout):
                await conn.execute(pack("ECHO", "before"))
            assert time.monotonic() - started < 0.3 and not conn.connected
            server.resume()
            # The late "before" will come on the discarded connection, not as this answer.
            assert await conn.execute(pack("ECHO", "after")) == b"after"
        finally:
            server.resume()
            await conn.close()
    run(scenario)


def test_a_caller_that_gave_up_leaves_its_reply_to_be_dropped(server):
    async def scenario():
        conn = connection(server, timeout=2.0)
        try:
            with pytest.raises(TimeoutError):  # BLPOP holds the connection's replies for 0.2 s
                await asyncio.wait_for(conn.execute(pack("BLPOP", "nothing", "0.2")), 0.05)
            assert await conn.execute(pack("ECHO", "mine")) == b"mine"  # not the BLPOP's nil
            assert conn.connected
        finally:
            await conn.close()
    run(scenario)


def test_a_lost_connection_fails_the_pending_calls_at_once_and_the_next_call_reconnects(server):
    async def scenario():
        conn = connection(server, timeout=5.0)
        try:
            pending = asyncio.ensure_future(conn.execute(pack("BLPOP", "nothing", "3")))
            await asyncio.sleep(0.05)
            admin(server).client_kill_filter(skipme=True)
            started = time.monotonic()
            with pytest.raises(ConnectionLost):
                await pending
            assert time.monotonic() - started < 0.5
            assert await conn.execute(pack("PING")) == b"PONG"
        finally:
            await conn.close()
    run(scenario)


def test_an_event_loop_stall_is_not_taken_for_a_slow_redis(server):
    """The reply arrives within the timeout while the loop is blocked for longer (a GC pause):
    neither the connection's watchdog nor ResilientStore's call bound fails it."""
    async def scenario():
        conn = connection(server, timeout=0.05)
        try:
            call = asyncio.ensure_future(conn.execute(pack("ECHO", "in time")))
            await asyncio.sleep(0)  # written
            time.sleep(0.2)
            assert await call == b"in time"
        finally:
            await conn.close()

        store = store_from_settings({"GATEWAY_STATE": server.url, "GATEWAY_STATE_AUTH": "key",
                                     "GATEWAY_STATE_KEY": KEY})
        try:
            assert await store.connect()
            admission = asyncio.ensure_future(store.admit("team", Limits(requests_per_minute=10), 1, T0))
            await asyncio.sleep(0)
            time.sleep(0.3)  # three times call_timeout
            assert (await admission).reservation.store == "redis" and not store.degraded
        finally:
            await store.close()
    run(scenario)


def test_select_and_a_wrong_key(server):
    async def scenario():
        conn = connection(server, db=3)
        wrong = connection(server, password="wrong-key-0123456789")
        try:
            await conn.execute(pack("SET", "selected", "yes"))
            with pytest.raises(ReplyError) as refused:
                await wrong.execute(pack("PING"))
            assert "wrong-key" not in str(refused.value) and not wrong.connected
        finally:
            await conn.close()
            await wrong.close()
    run(scenario)
    assert redis.Redis(port=server.port, password=KEY, db=3).get("selected") == b"yes"


class Token:
    def __init__(self, user: str, password: str):
        self.user, self.password = user, password

    def try_get(self, claim: str) -> str:
        assert claim == "oid"
        return self.user

    def get_value(self) -> str:
        return self.password


class StreamingProvider:
    """What redis-entraid's provider offers: credentials now, and callbacks on renewal."""

    def __init__(self, user: str, password: str):
        self.current = (user, password)
        self.on_next_callback = self.on_error_callback = None

    async def get_credentials_async(self):
        if isinstance(self.current, Exception):
            raise self.current
        return self.current

    def on_next(self, callback):
        self.on_next_callback = callback

    def on_error(self, callback):
        self.on_error_callback = callback


def test_a_renewed_token_authenticates_the_open_connection_again(server, caplog):
    caplog.set_level(logging.WARNING, logger="routing.state")
    users = admin(server)
    for user, password in (("app-one", "first-token-0123"), ("app-two", "second-token-0123")):
        users.acl_setuser(user, enabled=True, passwords=[f"+{password}"], commands=["+@all"], keys=["*"])

    async def scenario():
        provider = StreamingProvider("app-one", "first-token-0123")
        conn = RedisConnection("127.0.0.1", server.port, credential_provider=provider)
        try:
            assert await conn.execute(pack("ACL", "WHOAMI")) == b"app-one"
            client_id = await conn.execute(pack("CLIENT", "ID"))
            await provider.on_next_callback(Token("app-two", "second-token-0123"))
            assert await conn.execute(pack("ACL", "WHOAMI")) == b"app-two"
            assert await conn.execute(pack("CLIENT", "ID")) == client_id  # the same connection

            await provider.on_next_callback(Token("app-two", "refused-token-0123"))
            assert not conn.connected  # refused: started afresh with the provider's credentials
            provider.current = ("app-one", "first-token-0123")
            assert await conn.execute(pack("ACL", "WHOAMI")) == b"app-one"

            await provider.on_error_callback(RuntimeError("identity endpoint said secret things"))
            provider.current = RuntimeError("no token")
            conn.discard()
            with pytest.raises(ConnectionLost):  # a failure ResilientStore serves from memory on
                await conn.execute(pack("PING"))
        finally:
            await conn.close()
    run(scenario)
    messages = [record.getMessage() for record in caplog.records if record.name == "routing.state"]
    assert len(messages) == 2 and "refused the renewed token" in messages[0]
    assert all("token-0123" not in message and "secret" not in message for message in messages)


def certificates(folder) -> tuple[str, str, str]:
    """(CA file, certificate file, key file): a test CA and a certificate it signed for localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(subject, key, issuer, issuer_key, *extensions):
        now = datetime.now(timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(hours=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "state test CA")])
    ca = certificate(ca_name, ca_key, ca_name, ca_key, (x509.BasicConstraints(ca=True, path_length=None), True))
    leaf = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), key, ca_name, ca_key,
                       (x509.SubjectAlternativeName([x509.DNSName("localhost")]), False))
    files = [folder / name for name in ("ca.pem", "cert.pem", "key.pem")]
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(file) for file in files)


def test_rediss_verifies_the_certificate_and_host_name(server, tmp_path, monkeypatch):
    """Azure Managed Redis is TLS only. This redis-server has no TLS: a TLS proxy in front of it,
    its certificate from a CA the default context trusts here (SSL_CERT_FILE)."""
    ca_file, cert_file, key_file = certificates(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)

    relays = []

    async def relay(reader, writer):
        relays.append(asyncio.current_task())
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", server.port)

        async def pipe(source, sink):
            while data := await source.read(65536):
                sink.write(data)
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True)

    async def scenario():
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        proxy = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
        port = proxy.sockets[0].getsockname()[1]
        trusted = RedisConnection("localhost", port, tls=True, password=KEY, connect_timeout=5)
        wrong_name = RedisConnection("127.0.0.1", port, tls=True, password=KEY, connect_timeout=5)
        try:
            replies = await asyncio.gather(*(trusted.execute(pack("ECHO", f"over TLS {n}")) for n in range(50)))
            assert replies == [f"over TLS {n}".encode() for n in range(50)]
            with pytest.raises(ssl.SSLCertVerificationError):  # an OSError: a failure like any other
                await wrong_name.execute(pack("PING"))
        finally:
            await trusted.close()
            await wrong_name.close()
            proxy.close()
            await asyncio.wait_for(asyncio.gather(*relays), 5)  # each ends with its client
    run(scenario)


REPLIES = [
    (b"+OK\r\n", b"OK"),
    (b"-ERR something went wrong\r\n", ReplyError("ERR something went wrong")),
    (b":-42\r\n", -42),
    (b"$5\r\nhe\r\nl\r\n", b"he\r\nl"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n$3\r\nend\r\n", [1, [b"a", None], b"end"]),
    (b"$1000\r\n" + b"x" * 1000 + b"\r\n", b"x" * 1000),
]


def parsed(reader, stream: bytes, chunk: int) -> list:
    replies = []
    for start in range(0, len(stream), chunk):
        reader.feed(stream[start:start + chunk])
        while (reply := reader.gets()) is not False:
            replies.append(reply)
    return replies


def comparable(reply):
    if isinstance(reply, ReplyError):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [comparable(item) for item in reply]
    return reply


@pytest.mark.parametrize("reader", ["python", "hiredis"])
def test_replies_are_parsed_whatever_pieces_they_arrive_in(reader):
    if reader == "hiredis" and resp.hiredis is None:
        pytest.skip("hiredis is not installed")
    stream = b"".join(wire for wire, _ in REPLIES)
    expected = [comparable(reply) for _, reply in REPLIES]
    for chunk in range(1, 40):
        new = PyReader if reader == "python" else resp._reader
        assert [comparable(reply) for reply in parsed(new(), stream, chunk)] == expected, chunk


def test_the_python_parser_refuses_what_is_not_resp():
    reader = PyReader()
    reader.feed(b"?what\r\n")
    with pytest.raises(resp.ProtocolError):
        reader.gets()


def test_commands_are_packed_as_bulk_strings():
    assert pack("EVALSHA", "ab", 2, -1, 0.5, b"\x00\xff") == (
        b"*6\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$2\r\n-1\r\n$3\r\n0.5\r\n$2\r\n\x00\xff\r\n")
    with pytest.raises(TypeError):
        pack("SET", None)
