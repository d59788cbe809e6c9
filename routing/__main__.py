"""`python -m routing check | serve [--host] [--port] [--demo] [--log-level] | routes convert|diff|list |
consumers convert|diff|list`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys

from routing.config.local_settings import load_local_settings
from routing.manage.consumers_cli import add_consumers_parser, run_consumers
from routing.manage.routes_cli import add_routes_parser, run_routes
from routing.config.settings import SettingsError, load_route_table


def _check(_: argparse.Namespace) -> int:
    load_local_settings()
    try:
        table = load_route_table(os.environ)
    except SettingsError as exc:
        print("\n".join(exc.errors))
        return 1
    print(json.dumps(table.describe(), indent=2))
    if not table.routes:
        print("no routes configured: set ROUTE__<ID>__MODEL, __BACKEND and __ENDPOINT", file=sys.stderr)
    return 0


def _configure_serve_logging(level: str) -> None:
    """Calm by default: warnings and errors only (no per-request lines from uvicorn, the emulators
    or the Azure SDK). The access log, `routing.access` (one JSON line per request), stays at
    INFO, on stdout."""
    root_level = getattr(logging, level.upper())
    logging.basicConfig(level=root_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("routing.access").setLevel(min(logging.INFO, root_level))
    from routing.telemetry.access_log import to_stdout
    to_stdout()


def _bind_problem(host: str, port: int) -> str | None:
    """Whether the address is free, checked before the demo starts: uvicorn would only say so
    later, amid its own log lines."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc}"
    with socket.socket(family, kind, proto) as sock:
        if os.name != "nt":  # as asyncio binds: a port in TIME_WAIT is free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return (f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                    "(another gateway running? choose another --port)")
    return None


def _base_url(host: str, port: int) -> str:
    """The URL a local client calls (a wildcard bind is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve(args: argparse.Namespace) -> int:
    _configure_serve_logging(args.log_level)
    problem = _bind_problem(args.host, args.port)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    emulators = None
    if args.demo:
        from routing.manage.demo import start_demo
        emulators = start_demo()
    else:
        load_local_settings()
    try:
        return _serve_configured(args)
    finally:
        if emulators is not None:
            emulators.stop()


def _serve_configured(args: argparse.Namespace) -> int:
    from routing import gateway as runtime
    try:
        table = runtime.configure().table
    except SettingsError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 1
    if not table.routes:
        print("no routes configured: set ROUTE__<ID>__MODEL, __BACKEND and __ENDPOINT in the "
              "environment or local.settings.json, or run `python -m routing serve --demo`",
              file=sys.stderr)
        return 1

    from routing.server import run
    base = _base_url(args.host, args.port)
    models = ", ".join(dict.fromkeys(route.model for route in table.routes))
    print(f"Gateway listening on {base} (models: {models}); Ctrl+C stops it.", flush=True)
    if args.demo:
        from routing.manage.demo import demo_banner
        print(demo_banner(base), flush=True)
    try:
        run(args.host, args.port)
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the Ctrl+C: not an error
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate the app settings and print the route table (keys redacted)")
    serve = sub.add_parser("serve", help="serve the gateway locally on uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument("--demo", action="store_true",
                       help="start the bundled emulators with a sample route table")
    serve.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                       help="lowest level logged (default warning: no per-request lines)")
    add_routes_parser(sub)
    add_consumers_parser(sub)
    args = parser.parse_args(argv)
    return {"check": _check, "serve": _serve, "routes": run_routes, "consumers": run_consumers}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
