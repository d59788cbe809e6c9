"""CLI: ``python -m emulator all|azure-openai|azure-ai-serverless|azure-ai-foundry|identity``.

Starts the emulator(s), prints exactly one line ``EMULATOR READY {json}`` (urls, keys,
identity_header) to stdout, then runs until SIGINT/SIGTERM. Binds loopback unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from . import servers
from .identity import DEFAULT_IDENTITY_HEADER
from .tokens import DEFAULT_TOKEN_SECRET

_COMMANDS = {
    "all": servers.EMULATOR_NAMES,
    "azure-openai": ("azure_openai",),
    "azure-ai-serverless": ("azure_ai_serverless",),
    "azure-ai-foundry": ("azure_ai_foundry",),
    "identity": ("identity",),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=sorted(_COMMANDS), help="which emulator(s) to run")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port of a single emulator (0: ephemeral)")
    parser.add_argument("--port-base", type=int, default=0,
                        help="'all': first of four consecutive ports in the order "
                             f"{', '.join(servers.EMULATOR_NAMES)} (0: ephemeral)")
    parser.add_argument("--key", action="append", default=None,
                        help="accepted key (repeatable; default: a distinct built-in key per emulator)")
    parser.add_argument("--identity-header", default=DEFAULT_IDENTITY_HEADER)
    parser.add_argument("--token-secret", default=DEFAULT_TOKEN_SECRET)
    parser.add_argument("--client-id", action="append", default=None,
                        help="user-assigned identity client id the identity emulator knows (repeatable; default any)")
    parser.add_argument("--usage-chunk-on-passthrough", action="store_true",
                        help="azure-ai: add an OpenAI usage chunk when stream_options is passed through")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = _COMMANDS[args.which]
    if not servers.is_loopback(args.host):
        print(f"warning: binding {args.host}: the emulators accept fixed test keys", file=sys.stderr)
    port_base = args.port_base if args.which == "all" else 0
    if args.which != "all" and args.port:
        port_base = args.port - servers.EMULATOR_NAMES.index(names[0])
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    running = servers.start_all(
        args.host, args.key, port_base=port_base, names=names, token_secret=args.token_secret,
        identity_header=args.identity_header, log_level="warning", client_ids=args.client_id,
        usage_chunk_on_passthrough=args.usage_chunk_on_passthrough,
    )
    try:
        print("EMULATOR READY " + json.dumps(running.ready_info(), separators=(",", ":")), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
