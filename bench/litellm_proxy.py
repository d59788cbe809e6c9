"""Optional target: LiteLLM's proxy, configured fairly — one uvicorn worker, the same Azure OpenAI
deployment on the fast upstream, a master key checked like the gateway's inbound key, no
database, no callbacks, no telemetry, no cost-map download, no per-request logging.

LiteLLM is not a dependency of the project. The harness uses it when `litellm` is importable by
the running Python, or when `BENCH_LITELLM_PYTHON` (or `--litellm-python`) names a Python that
has `litellm[proxy]` installed (e.g. a separate venv: `python -m venv /tmp/litellm-venv &&
/tmp/litellm-venv/bin/pip install 'litellm[proxy]'`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.procs import Server, free_port

# LiteLLM wants its master key to start with "sk-".
MASTER_KEY = "sk-bench-gateway-key"


def find_python(explicit: str | None = None) -> str | None:
    """A Python that can run LiteLLM's proxy, or None."""
    candidate = explicit or os.environ.get("BENCH_LITELLM_PYTHON")
    if candidate:
        return candidate if Path(candidate).exists() else None
    return sys.executable if importlib.util.find_spec("litellm") is not None else None


def version(python: str) -> str:
    try:
        return subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def start(python: str, log_dir: Path, upstream_url: str, upstream_key: str) -> Server:
    config = {
        "model_list": [{"model_name": "gpt-4o", "litellm_params": {
            "model": "azure/gpt-4o", "api_base": upstream_url, "api_key": upstream_key,
            "api_version": "2024-10-21"}}],
        "litellm_settings": {"drop_params": True, "telemetry": False, "request_timeout": 60,
                             "json_logs": False},
        "general_settings": {"master_key": MASTER_KEY, "disable_spend_logs": True,
                             "disable_error_logs": True},
    }
    config_path = log_dir / "litellm-config.yaml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    port = free_port()
    script = Path(python).parent / "litellm"
    argv = ([str(script)] if script.exists() else
            [python, "-c", "from litellm.proxy.proxy_cli import run_server; run_server()"])
    argv += ["--config", str(config_path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
           "DISABLE_ADMIN_UI": "True"}
    return Server("litellm", argv, port, log_dir, env=env, cwd=log_dir)
