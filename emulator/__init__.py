"""Faithful local emulators of the Azure upstreams the gateway talks to.

Three services, each a Starlette app served by uvicorn (see ``servers``):

- ``azure_openai``: Azure OpenAI data plane (dated ``/openai/deployments/...`` and ``/openai/v1/...``);
- ``azure_ai``: Azure AI model inference, serverless Llama (``flavour="serverless"``) or the
  Foundry ``/models`` endpoint (``flavour="foundry"``);
- ``identity``: the App Service managed-identity token endpoint used by ``azure-identity``.

Wire facts follow ``reference/azure-upstream-apis.md``; guesses are constructor options. Both model
emulators answer with one deterministic fake model (``fake_model``, ``chat_answer``): text, JSON for
``response_format`` (``json_instance``), and tool calls for ``tool_choice``/named tools, streamed
as Azure streams them.
Not part of the deployed gateway (tests, demo and benchmarks only).
"""

from .tokens import COGNITIVE_SERVICES_AUDIENCE, DEFAULT_TOKEN_SECRET, issue_token, verify_token

__all__ = ["COGNITIVE_SERVICES_AUDIENCE", "DEFAULT_TOKEN_SECRET", "issue_token", "verify_token"]
