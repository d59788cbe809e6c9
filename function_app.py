"""Azure Functions registration only: one HTTP function per gateway endpoint.

Every function uses the FastAPI-extension types (HTTP streams need all HTTP functions of the
app to use them); the behaviour lives in `routing.api`, the same handlers `python -m routing
serve` runs locally.
"""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from routing import api
from routing import gateway as runtime
from routing.endpoints import V1_PATHS
from routing.responses import handlers as responses

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
runtime.configure_logged()  # validate the app settings at cold start; errors name the setting


@app.route(route="v1/chat/completions", methods=["POST"])
async def chat_completions(req: Request) -> Response:
    return await api.chat_completions(req)


@app.route(route="v1/completions", methods=["POST"])
async def completions(req: Request) -> Response:
    return await api.completions(req)


@app.route(route="v1/embeddings", methods=["POST"])
async def embeddings(req: Request) -> Response:
    return await api.embeddings(req)


@app.route(route="v1/models", methods=["GET"])
async def list_models(req: Request) -> Response:
    return await api.list_models(req)


@app.route(route="v1/models/{model}", methods=["GET"])
async def retrieve_model(req: Request) -> Response:
    return await api.retrieve_model(req)


@app.route(route="v1/gateway/usage", methods=["GET"])
async def gateway_usage(req: Request) -> Response:
    return await api.gateway_usage(req)


@app.route(route="openai/deployments/{name}/chat/completions", methods=["POST"])
async def azure_chat_completions(req: Request) -> Response:
    return await api.azure_chat_completions(req)


@app.route(route="openai/deployments/{name}/completions", methods=["POST"])
async def azure_completions(req: Request) -> Response:
    return await api.azure_completions(req)


@app.route(route="openai/deployments/{name}/embeddings", methods=["POST"])
async def azure_embeddings(req: Request) -> Response:
    return await api.azure_embeddings(req)


@app.route(route="openai/models", methods=["GET"])
async def azure_list_models(req: Request) -> Response:
    return await api.list_models(req)


@app.route(route="health", methods=["GET"])
async def health(req: Request) -> Response:
    return await api.health(req)


def _register(path: str, methods: list[str], by_method: dict) -> None:
    """One function per path (`GET` and `DELETE` of one response share theirs), named after it."""

    async def function(req: Request) -> Response:
        return await by_method[req.method](req)

    function.__name__ = function.__qualname__ = path.replace("/", "_").replace("{", "").replace("}", "")
    app.route(route=path, methods=methods)(function)


# Azure OpenAI's v1 paths and the Responses API (DESIGN §13), each under its prefixes.
for _path in dict.fromkeys(path for path, _, _ in [*V1_PATHS, *responses.ENDPOINTS]):
    _handlers = {method: handler for path, methods, handler in [*V1_PATHS, *responses.ENDPOINTS]
                 if path == _path for method in methods}
    _register(_path, list(_handlers), _handlers)

