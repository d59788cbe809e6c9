"""`serve --demo`: the bundled emulators plus a sample route table, so a newcomer can call the
gateway at once. Never used by `function_app.py`; the emulators are not deployed."""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys

DEMO_KEY = "demo-gateway-key"


def start_demo():
    """Start the emulators and put the sample routes in the environment; returns the emulators."""
    from emulator.servers import start_all

    # "warning": the emulators are uvicorn servers too, and each would log "Started server process".
    emulators = start_all(log_level="warning")
    urls = emulators.urls
    keys = {name: values[0] for name, values in emulators.keys.items()}
    os.environ.update({
        # Managed identity: the App Service protocol, served by the identity emulator.
        "IDENTITY_ENDPOINT": urls["identity"],
        "IDENTITY_HEADER": emulators.identity_header,
        "GATEWAY_API_KEYS": DEMO_KEY,
        "ROUTE__GPT4O__MODEL": "gpt-4o",
        "ROUTE__GPT4O__BACKEND": "azure-openai",
        "ROUTE__GPT4O__ENDPOINT": urls["azure_openai"],
        "ROUTE__GPT4O__AUTH": "managed-identity",
        "ROUTE__O3MINI__MODEL": "o3-mini",
        "ROUTE__O3MINI__BACKEND": "azure-openai",
        "ROUTE__O3MINI__ENDPOINT": urls["azure_openai"],
        "ROUTE__O3MINI__API_VERSION": "2024-12-01-preview",
        "ROUTE__EMBED__MODEL": "text-embedding-3-small",
        "ROUTE__EMBED__BACKEND": "azure-openai",
        "ROUTE__EMBED__ENDPOINT": urls["azure_openai"],
        "ROUTE__EMBED__API_KEY": keys["azure_openai"],
        "ROUTE__LLAMA__MODEL": "llama3",
        "ROUTE__LLAMA__BACKEND": "azure-ai",
        "ROUTE__LLAMA__ENDPOINT": urls["azure_ai_serverless"],
        "ROUTE__LLAMA__API_KEY": keys["azure_ai_serverless"],
        "ROUTE__LLAMA__KEY_HEADER": "bearer",
        "ROUTE__MISTRAL__MODEL": "mistral-large",
        "ROUTE__MISTRAL__BACKEND": "azure-ai",
        "ROUTE__MISTRAL__ENDPOINT": urls["azure_ai_foundry"],  # Foundry's OpenAI v1 endpoint
        "ROUTE__MISTRAL__API_VERSION": "v1",
        "ROUTE__MISTRAL__DEPLOYMENT": "Mistral-Large-2411",
        "ROUTE__MISTRAL__AUTH": "managed-identity",
    })
    return emulators


def shell_path(path: str) -> str:
    """A path as a shell command word (POSIX quoting; double quotes on Windows)."""
    if os.name == "nt":
        return f'"{path}"' if " " in path else path
    return shlex.quote(path)


def demo_banner(base: str) -> str:
    """What to paste: a streamed curl (-N: print events as they arrive) and an `openai` call run
    by this very interpreter, which has the SDK when set up by `dev.py` (requirements-local.txt)."""
    python = shell_path(sys.executable)
    if importlib.util.find_spec("openai") is not None:
        sdk = f"With the openai SDK (installed in the gateway's Python, {python}):"
    else:
        sdk = f"With the openai SDK (first: {python} -m pip install openai):"
    return f"""
Demo mode: emulated Azure upstreams, nothing leaves this machine.
Models: gpt-4o (managed identity), o3-mini (reasoning rules), text-embedding-3-small (key),
        llama3 (serverless Llama, key), mistral-large (Foundry v1, managed identity).
Gateway key: {DEMO_KEY}

Stream a chat completion:
  curl -sN {base}/v1/chat/completions -H "Authorization: Bearer {DEMO_KEY}" \\
       -H "Content-Type: application/json" \\
       -d '{{"model": "llama3", "messages": [{{"role": "user", "content": "Hi"}}], "stream": true, "stream_options": {{"include_usage": true}}}}'

{sdk}
  {python} -c "from openai import OpenAI; c = OpenAI(base_url='{base}/v1', api_key='{DEMO_KEY}'); print(c.chat.completions.create(model='gpt-4o', messages=[{{'role': 'user', 'content': 'Hi'}}]).choices[0].message.content)"
"""
