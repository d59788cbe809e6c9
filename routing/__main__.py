"""`python -m routing check | serve [--host] [--port] [--demo] | routes convert|diff|list`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from routing.config.local_settings import load_local_settings
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


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.demo:
        from routing.manage.demo import start_demo
        emulators = start_demo(args.host, args.port)
    else:
        load_local_settings()
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
    try:
        run(args.host, args.port)
    finally:
        if args.demo:
            emulators.stop()
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
    add_routes_parser(sub)
    args = parser.parse_args(argv)
    return {"check": _check, "serve": _serve, "routes": run_routes}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
