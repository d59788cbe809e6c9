"""Run emulator apps on real loopback sockets: uvicorn in a daemon thread with its own event loop.

Usable from pytest fixtures and from another program (``routing serve --demo``). The listening
socket is bound before the thread starts, so ``port=0`` yields the real port at once, and nothing
here changes process-wide logging (uvicorn's ``access_log=False``/``log_level`` would, which would
silence the host program's own uvicorn): the access log is switched off per connection instead.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from . import azure_ai, azure_openai, identity
from .tokens import DEFAULT_TOKEN_SECRET

EMULATOR_NAMES = ("azure_openai", "azure_ai_serverless", "azure_ai_foundry", "identity")
DEFAULT_KEYS = {
    "azure_openai": azure_openai.DEFAULT_KEY,
    "azure_ai_serverless": azure_ai.DEFAULT_KEYS["serverless"],
    "azure_ai_foundry": azure_ai.DEFAULT_KEYS["foundry"],
}


class _QuietHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol without the access log, decided per connection, not process-wide."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = False


@dataclass
class RunningServer:
    app: Any
    host: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():  # something refused to finish: stop waiting for it
            self.server.force_exit = True
            self.thread.join(timeout)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str | None = None,
    graceful_shutdown: float = 1.0,
    startup_timeout: float = 10.0,
    lifespan: str = "off",
) -> RunningServer:
    """Serve ``app`` in a background thread; returns once the socket accepts connections.
    ``log_level`` (e.g. "warning") sets uvicorn's loggers, which are process-wide: None leaves them
    alone. ``graceful_shutdown``: seconds ``stop()`` waits for in-flight requests (hung faults)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets (else Nagle adds ~40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, loop="asyncio", lifespan=lifespan, http=_QuietHTTPProtocol, log_config=None, log_level=log_level,
        timeout_graceful_shutdown=graceful_shutdown, timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from uvicorn on startup failure included
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"emulator:{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"emulator server on {host}:{bound_port} failed to start: {failure or 'timeout'}")
        time.sleep(0.005)
    state = getattr(getattr(app, "state", None), "emulator", None)
    if state is not None:
        state.connection_count = lambda: len(server.server_state.connections)
    return RunningServer(app=app, host=host, port=bound_port, server=server, thread=thread)


@dataclass
class EmulatorSet:
    """The emulators of ``start_all``, keyed by ``EMULATOR_NAMES``: ``urls`` (identity's includes
    ``/msi/token``) and ``keys`` (every accepted key, a list per emulator; use ``[0]``)."""

    servers: dict[str, RunningServer]
    keys: dict[str, list[str]]
    identity_header: str
    token_secret: str
    urls: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.urls = {name: server.url for name, server in self.servers.items()}
        if "identity" in self.urls:
            self.urls["identity"] += identity.TOKEN_PATH

    def apps(self) -> dict[str, Any]:
        return {name: server.app for name, server in self.servers.items()}

    def ready_info(self) -> dict[str, Any]:
        return {"urls": self.urls, "keys": self.keys, "identity_header": self.identity_header}

    def stop(self) -> None:
        for server in self.servers.values():
            server.server.should_exit = True  # all shut down in parallel, then wait
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> "EmulatorSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def resolve_keys(keys: str | Iterable[str] | Mapping[str, Any] | None) -> dict[str, list[str]]:
    """None → a distinct default key per emulator; a string or list → the same for all; a mapping → per emulator."""
    if keys is None:
        return {name: [key] for name, key in DEFAULT_KEYS.items()}
    if isinstance(keys, Mapping):
        out = {name: [key] for name, key in DEFAULT_KEYS.items()}
        out.update({n: [k] if isinstance(k, str) else list(k) for n, k in keys.items() if n in DEFAULT_KEYS})
        return out
    shared = [keys] if isinstance(keys, str) else list(keys)
    return {name: list(shared) for name in DEFAULT_KEYS}


def build_app(name: str, keys: dict[str, list[str]], *, token_secret: str = DEFAULT_TOKEN_SECRET,
              identity_header: str = identity.DEFAULT_IDENTITY_HEADER, client_ids: Iterable[str] | None = None,
              azure_openai_deployments: Any = None, model_name: str = azure_ai.DEFAULT_MODEL_NAME,
              foundry_deployments: Iterable[str] | None = None, usage_chunk_on_passthrough: bool = False) -> Any:
    if name == "azure_openai":
        return azure_openai.create_app(keys["azure_openai"], token_secret, azure_openai_deployments)
    if name == "azure_ai_serverless":
        return azure_ai.create_app("serverless", keys["azure_ai_serverless"], token_secret, model_name,
                                   usage_chunk_on_passthrough=usage_chunk_on_passthrough)
    if name == "azure_ai_foundry":
        return azure_ai.create_app("foundry", keys["azure_ai_foundry"], token_secret, deployments=foundry_deployments,
                                   usage_chunk_on_passthrough=usage_chunk_on_passthrough)
    if name == "identity":
        return identity.create_app(identity_header, token_secret, client_ids)
    raise ValueError(f"unknown emulator {name!r}; expected one of {EMULATOR_NAMES}")


def start_all(
    host: str = "127.0.0.1",
    keys: str | Iterable[str] | Mapping[str, Any] | None = None,
    *,
    port_base: int = 0,
    names: Iterable[str] = EMULATOR_NAMES,
    token_secret: str = DEFAULT_TOKEN_SECRET,
    identity_header: str = identity.DEFAULT_IDENTITY_HEADER,
    log_level: str | None = None,
    **app_options: Any,
) -> EmulatorSet:
    """Start the emulators (all four by default). ``port_base``: 0 for ephemeral ports, else
    consecutive ports in ``EMULATOR_NAMES`` order. ``app_options``: ``client_ids``,
    ``azure_openai_deployments``, ``model_name``, ``foundry_deployments``, ``usage_chunk_on_passthrough``."""
    resolved = resolve_keys(keys)
    servers: dict[str, RunningServer] = {}
    try:
        for name in names:
            port = port_base + EMULATOR_NAMES.index(name) if port_base else 0
            app = build_app(name, resolved, token_secret=token_secret, identity_header=identity_header, **app_options)
            servers[name] = start(app, host, port, log_level=log_level)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    used_keys = {name: resolved[name] for name in servers if name in resolved}
    return EmulatorSet(servers, used_keys, identity_header, token_secret)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

