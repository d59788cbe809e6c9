"""One adapter per upstream API; `BACKENDS[route.backend]` is the route's adapter."""

from routing.upstream.backends import azure_ai, azure_openai
from routing.upstream.backends.base import Backend, OperationRules

BACKENDS: dict[str, Backend] = {
    azure_openai.BACKEND.name: azure_openai.BACKEND,
    azure_ai.BACKEND.name: azure_ai.BACKEND,
}

__all__ = ["BACKENDS", "Backend", "OperationRules"]
