"""The Redis connection of `RedisStore`: one pipelined RESP2 connection, made for the hot path.

redis-py's asyncio client cost ~110 µs of CPU per command in this process (a pool checkout and
return, a timeout context per read, its command packing and reply callbacks, its observability
hooks): with an admission and a reconciliation per request, more than half of what the whole
request path costs otherwise. The state store sends a handful of fixed commands (EVALSHA, EVAL,
PING, AUTH, SELECT), so it speaks the protocol itself over one asyncio connection:

- Pipelined: every caller writes its command and waits on a future; replies come back in order
  and resolve the futures in order (a caller that gave up leaves its future, whose reply is
  then dropped). Concurrent requests share the connection without a pool or a lock. A command
  leaves at once when no reply is pending; while some are, the commands of one event-loop turn
  leave together in one write at the end of it (one send for many requests under load).
- Bounded: one watchdog timer per connection (not one per command) fails the connection when
  its oldest reply is `timeout` late. It looks at what is still pending when it fires, after
  the loop has read what arrived: an event loop that stalled (a GC pause) longer than the
  timeout does not fail a reply that came in time. A connection that failed, timed out or lost
  its peer is discarded with every reply still pending on it (never reused: a late reply would
  answer the wrong caller); the next call connects again.
- Connecting (TCP, TLS, credentials, AUTH, SELECT) is one attempt shared by the callers that
  need it, bounded as a whole by `connect_timeout`; it goes on in the background when they
  stop waiting (their own bounds: ResilientStore's), so a slow first connection (TLS and an
  Entra token) is ready for the next call rather than started again.
- Authentication: an access key (AUTH key), or a credential provider (Entra ID through
  redis-entraid): its credentials at each connect, and AUTH again on the open connection each
  time the provider renews its token.
- Replies parsed by hiredis when it is installed, else by the small parser below (the replies
  here are a few short values: ~4 µs of CPU a request with it, ~0.5 µs with hiredis).
- No retries: a command that may have run must not run twice; the caller decides.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import Any

try:
    import hiredis
except ImportError:  # optional: the pure-Python parser below does the same for these replies
    hiredis = None

log = logging.getLogger("routing.state")


class RedisError(Exception):
    """Anything that went wrong talking to Redis."""


class ReplyError(RedisError):
    """An error reply from the server (its text, e.g. `NOSCRIPT ...`)."""


class ConnectionLost(RedisError, ConnectionError):
    """The connection failed or closed: the replies pending on it will never come."""


class ReplyTimeout(RedisError, TimeoutError):
    """A reply did not come within the timeout; the connection was discarded."""


class ProtocolError(RedisError):
    """The server sent something that is not RESP."""


def pack(*args: bytes | str | int | float) -> bytes:
    """A command in RESP: an array of bulk strings (numbers as their decimal text)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if type(arg) is str:
            arg = arg.encode()
        elif type(arg) is int:
            arg = b"%d" % arg
        elif type(arg) is float:
            arg = repr(arg).encode()
        elif not isinstance(arg, (bytes, bytearray)):
            raise TypeError(f"a Redis argument must be bytes, str, int or float, got {type(arg).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class PyReader:
    """RESP2 replies from a byte stream, with hiredis.Reader's interface: feed() bytes as they
    come, gets() the next whole reply or False; error replies come back as ReplyError objects."""

    def __init__(self) -> None:
        self._buffer = b""
        self._position = 0

    def feed(self, data: bytes) -> None:
        self._buffer = self._buffer[self._position:] + data if self._buffer else bytes(data)
        self._position = 0

    def gets(self) -> Any:
        parsed = self._parse(self._position)
        if parsed is None:
            return False
        reply, self._position = parsed
        if self._position == len(self._buffer):
            self._buffer, self._position = b"", 0
        return reply

    def _parse(self, position: int) -> tuple[Any, int] | None:
        """(reply, position after it), or None when it has not all arrived."""
        buffer = self._buffer
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        kind = buffer[position]
        if kind == 36:  # $ bulk string
            size = int(buffer[position + 1:end])
            if size < 0:
                return None, end + 2
            stop = end + 2 + size
            if len(buffer) < stop + 2:
                return None
            return buffer[end + 2:stop], stop + 2
        if kind == 58:  # : integer
            return int(buffer[position + 1:end]), end + 2
        if kind == 42:  # * array
            count = int(buffer[position + 1:end])
            if count < 0:
                return None, end + 2
            items, position = [], end + 2
            for _ in range(count):
                parsed = self._parse(position)
                if parsed is None:
                    return None
                items.append(parsed[0])
                position = parsed[1]
            return items, position
        if kind == 43:  # + simple string
            return buffer[position + 1:end], end + 2
        if kind == 45:  # - error
            return ReplyError(buffer[position + 1:end].decode(errors="replace")), end + 2
        raise ProtocolError(f"unexpected reply type {bytes([kind])!r}")


def _reader():
    if hiredis is not None:
        return hiredis.Reader(replyError=ReplyError, protocolError=ProtocolError)
    return PyReader()


class _Protocol(asyncio.Protocol):
    """One connection: writes commands, matches replies to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader = _reader()
        self._waiters: deque[tuple[asyncio.Future, float]] = deque()  # (future, reply deadline)
        self._pending_writes: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.broken = False  # failed, timed out or closed: never used again

    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        while True:
            try:
                reply = reader.gets()
            except ProtocolError as error:
                self.fail(error)
                return
            if reply is False:
                return
            if not waiters:
                self.fail(ProtocolError("a reply nobody asked for"))
                return
            future = waiters.popleft()[0]
            if not future.done():  # done: its caller gave up (cancelled); the reply is dropped
                if type(reply) is ReplyError:
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionLost("connection to Redis lost"))

    def request(self, command: bytes, timeout: float, hold: bool = False) -> asyncio.Future:
        """Send a command; the future gets its reply (or the connection's failure). `hold`: at
        the end of this loop turn even when idle, with whatever else is sent in it."""
        if self.broken:
            raise ConnectionLost("connection to Redis lost")
        future = self._loop.create_future()
        deadline = self._loop.time() + timeout
        if self._pending_writes:  # a write is due at the end of this turn: this goes with it
            self._pending_writes.append(command)
        elif self._waiters or hold:  # what this turn's other callers send will go in the same write
            self._pending_writes.append(command)
            self._loop.call_soon(self._write)
        else:  # idle: now (waiting a turn would cost the lone command a loop iteration)
            self._transport.write(command)
        self._waiters.append((future, deadline))
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(deadline, self._check)
        return future

    def _write(self) -> None:
        """What this loop turn's callers sent, in one write."""
        commands, self._pending_writes = self._pending_writes, []
        if not self.broken and commands:
            self._transport.write(commands[0] if len(commands) == 1 else b"".join(commands))

    def _check(self) -> None:
        """The watchdog: the oldest reply still pending is late → the connection is discarded."""
        self._watchdog = None
        if self.broken or not self._waiters:
            return
        deadline = self._waiters[0][1]
        if self._loop.time() >= deadline:
            self.fail(ReplyTimeout("Redis did not answer in time"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._check)

    def fail(self, error: Exception) -> None:
        """Discard the connection: every pending reply fails with `error`."""
        if self.broken:
            return
        self.broken = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None:
            self._transport.abort()
        waiters, self._waiters = self._waiters, deque()
        for future, _ in waiters:
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self.fail(ConnectionLost("connection closed"))


class RedisConnection:
    """A pipelined connection to one Redis endpoint, opened on first use and again after a
    failure. `timeout`: seconds for a reply; `connect_timeout`: for a whole connection attempt
    (TCP, TLS, credentials, AUTH)."""

    def __init__(self, host: str, port: int, *, db: int = 0, tls: bool = False, password: str | None = None,
                 credential_provider: Any = None, timeout: float = 0.05, connect_timeout: float | None = None):
        self.host, self.port, self.db, self.tls = host, port, db, tls
        self.password = password
        self.credential_provider = credential_provider
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._ssl: ssl.SSLContext | None = None  # made at the first connect (it reads the CA store)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None
        self._closed = False
        if credential_provider is not None and hasattr(credential_provider, "on_next"):
            # A streaming provider (Entra ID) renews its token in the background: the open
            # connection authenticates again with each new one (before the old one expires).
            credential_provider.on_next(self._reauthenticate)
            credential_provider.on_error(self._renewal_failed)

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.broken

    async def execute(self, command: bytes) -> Any:
        """One packed command's reply. Raises ReplyError (the server said no), ConnectionLost,
        ReplyTimeout, or OSError / TimeoutError while connecting."""
        protocol = self._protocol
        if protocol is None or protocol.broken:
            protocol = await self._connect()
        return await protocol.request(command, self.timeout)

    def send(self, command: bytes) -> asyncio.Future | None:
        """A command sent without waiting: written at the end of this loop turn with whatever
        else is sent in it (the next `execute`, typically), its reply in the future. None when
        not connected (connecting needs `execute`)."""
        protocol = self._protocol
        if protocol is None or protocol.broken:
            return None
        return protocol.request(command, self.timeout, hold=True)

    def discard(self) -> None:
        """Drop the connection (the next command connects again)."""
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        self.discard()

    # -- connecting -----------------------------------------------------------------------------

    async def _connect(self) -> _Protocol:
        """The open connection; concurrent callers share one attempt."""
        if self._closed:
            raise ConnectionLost("the store is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._protocol = attempt.result()

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol = _Protocol(loop)
        if self.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()  # certificates and host name verified
        async with asyncio.timeout(self.connect_timeout):
            await loop.create_connection(lambda: protocol, self.host, self.port, ssl=self._ssl,
                                         server_hostname=self.host if self.tls else None)
            try:
                setup = []
                credentials = await self._credentials()
                if credentials:
                    setup.append(protocol.request(pack("AUTH", *credentials), self.connect_timeout))
                if self.db:
                    setup.append(protocol.request(pack("SELECT", self.db), self.connect_timeout))
                for reply in setup:
                    await reply
            except BaseException:
                protocol.close()
                raise
        return protocol

    async def _credentials(self) -> tuple[str, ...]:
        if self.credential_provider is None:
            return (self.password,) if self.password else ()
        try:
            return tuple(await self.credential_provider.get_credentials_async())
        except (RedisError, OSError, TimeoutError, asyncio.CancelledError):
            raise
        except Exception as error:  # e.g. the identity endpoint's own errors: a failed connect
            raise ConnectionLost(f"no credentials for Redis ({type(error).__name__})") from error

    async def _reauthenticate(self, token: Any) -> None:
        protocol = self._protocol
        if protocol is None or protocol.broken:
            return  # the next connection authenticates with the provider's current token
        try:
            await protocol.request(pack("AUTH", token.try_get("oid"), token.get_value()), self.timeout)
        except (RedisError, OSError) as error:
            # Still authenticated with the old token, which will expire: start afresh instead.
            log.warning("shared state store %s:%s refused the renewed token (%s); reconnecting",
                        self.host, self.port, type(error).__name__)
            if self._protocol is protocol:
                self.discard()

    async def _renewal_failed(self, error: Exception) -> None:
        # The type only: the text may quote the identity endpoint's answer.
        log.warning("shared state store %s:%s: renewing the Entra ID token failed (%s); the next "
                    "connection asks for a new one", self.host, self.port, type(error).__name__)
