"""Route settings for Foundry's OpenAI v1 endpoint for non-OpenAI models (`azure-ai` routes with
`API_VERSION=v1`): the endpoint forms it takes, and the model family setting.

    ROUTE__<ID>__BACKEND=azure-ai
    ROUTE__<ID>__ENDPOINT=https://<resource>.services.ai.azure.com          (resource endpoint)
                      or https://<resource>.services.ai.azure.com/api/projects/<project>
    ROUTE__<ID>__API_VERSION=v1
    ROUTE__<ID>__DEPLOYMENT=DeepSeek-R1
    ROUTE__<ID>__FAMILY=deepseek      (optional: detected from DEPLOYMENT)

The gateway appends `/openai/v1/<operation>`. Managed identity tokens default to the scope
Foundry documents for this endpoint, `https://ai.azure.com/.default` (required on project
endpoints; reference §3.3, §4.1); ROUTE__<ID>__SCOPE overrides it.
"""

from __future__ import annotations

from collections.abc import Callable

from routing.upstream.backends.families import FAMILIES

FOUNDRY_V1_SCOPE = "https://ai.azure.com/.default"
FAMILY_NAMES = tuple(FAMILIES)
SERVERLESS_SUFFIX = ".models.ai.azure.com"


def foundry_v1_errors(backend: str, api_version: str, raw: dict[str, str], host: str,
                      setting: Callable[[str], str]) -> dict[str, str]:
    """FIELD → message for the combinations a v1 route cannot have."""
    errors: dict[str, str] = {}
    endpoint = raw.get("ENDPOINT", "").strip().rstrip("/")
    family = raw.get("FAMILY", "").strip().lower()
    if family and not (backend == "azure-ai" and api_version == "v1"):
        errors["FAMILY"] = (f"only for azure-ai routes with {setting('API_VERSION')}=v1 (model families "
                            "are Foundry v1 rules)")
    elif family and family not in FAMILIES:
        errors["FAMILY"] = f"{family!r} is not a family; allowed: {', '.join(FAMILIES)}"
    if backend != "azure-ai" or api_version != "v1":
        return errors
    if host.lower().endswith(SERVERLESS_SUFFIX):
        errors["API_VERSION"] = ("v1 is not served by serverless *.models.ai.azure.com endpoints; use the "
                                 "Foundry resource (https://<resource>.services.ai.azure.com) or keep the "
                                 "model inference API (e.g. 2024-05-01-preview)")
    elif endpoint.endswith("/models"):
        errors["ENDPOINT"] = (f"ends with /models (the model inference API); for v1 use the resource "
                              f"endpoint {endpoint[:-len('/models')]!r}: the gateway adds /openai/v1")
    elif endpoint.endswith("/openai/v1") or endpoint.endswith("/openai"):
        errors["ENDPOINT"] = (f"the gateway adds /openai/v1 itself; set {endpoint.rsplit('/openai', 1)[0]!r}")
    return errors
