"""Every HTTP endpoint, once: (path template, methods, handler). `routing.server` serves them on
uvicorn and `function_app.py` registers them with Azure Functions."""

from __future__ import annotations

from routing import api
from routing.responses import handlers as responses

# Azure OpenAI's v1 API paths, so a client pointed at Azure's `/openai/v1/` only changes its
# base URL (DESIGN §13).
V1_PATHS = [
    ("openai/v1/chat/completions", ["POST"], api.chat_completions),
    ("openai/v1/completions", ["POST"], api.completions),
    ("openai/v1/embeddings", ["POST"], api.embeddings),
    ("openai/v1/models", ["GET"], api.list_models),
    ("openai/v1/models/{model}", ["GET"], api.retrieve_model),
]

ENDPOINTS = [*api.ENDPOINTS, *V1_PATHS, *responses.ENDPOINTS]
