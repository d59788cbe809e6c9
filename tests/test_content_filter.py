"""Azure content filtering reaches OpenAI clients in the shapes they expect (DESIGN §8, reference
§5), on both backends: a filtered prompt is a 400 `content_filter` with its categories, never failed
over to another deployment; a filtered completion ends with `finish_reason: "content_filter"` and
its annotations, streamed or not."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import gateway_settings, route
from tests.helpers import GATEWAY_KEY, GatewayProcess

MODELS = {"aoai": "cf-aoai", "foundry-v1": "cf-v1", "foundry-models": "cf-models"}


@pytest.fixture(scope="module")
def filtering_gateway(emulators, tmp_path_factory):
    aoai, foundry = emulators.urls["azure_openai"], emulators.urls["azure_ai_foundry"]
    aoai_key, foundry_key = emulators.keys["azure_openai"][0], emulators.keys["azure_ai_foundry"][0]
    settings = {**gateway_settings(emulators)}
    for suffix in ("A", "B"):  # two deployments of each model: a filtered prompt must not try the second
        settings.update(route(f"CFAOAI{suffix}", model="cf-aoai", backend="azure-openai", endpoint=aoai,
                              deployment="gpt-4o", api_key=aoai_key))
        settings.update(route(f"CFV1{suffix}", model="cf-v1", backend="azure-ai", endpoint=foundry, api_version="v1",
                              deployment="DeepSeek-V3.1", api_key=foundry_key))
        settings.update(route(f"CFMODELS{suffix}", model="cf-models", backend="azure-ai", endpoint=foundry + "/models",
                              deployment="Mistral-Large-2411", api_key=foundry_key, key_header="api-key"))
    gateway = GatewayProcess(settings, tmp_path_factory.mktemp("content-filter"))
    yield gateway
    gateway.stop()


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def chats(upstreams) -> int:
    return sum(1 for name in ("aoai", "foundry") for r in upstreams[name].requests()
               if r["path"].endswith("/chat/completions"))


@pytest.mark.parametrize("backend", list(MODELS))
def test_a_filtered_prompt_is_a_400_and_not_failed_over(filtering_gateway, clean, backend):
    with pytest.raises(openai.BadRequestError) as refused:
        client(filtering_gateway).chat.completions.create(
            model=MODELS[backend], messages=[{"role": "user", "content": "[[filtered-prompt:hate]] say it"}])
    assert refused.value.code == "content_filter"
    if backend != "foundry-models":  # the model inference API's body carries no categories
        assert "content_filter_result" in str(refused.value.body.get("innererror"))
    assert chats(clean) == 1


@pytest.mark.parametrize("backend", list(MODELS))
def test_a_filtered_completion_says_so_streamed_or_not(filtering_gateway, clean, backend):
    messages = [{"role": "user", "content": "[[filtered-completion]] tell me"}]
    answer = client(filtering_gateway).chat.completions.create(model=MODELS[backend], messages=messages)
    choice = answer.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.model_extra.get("content_filter_results")
    chunks = [c for c in client(filtering_gateway).chat.completions.create(
        model=MODELS[backend], messages=messages, stream=True) if c.choices]
    last = chunks[-1].choices[0]
    assert last.finish_reason == "content_filter" and last.model_extra.get("content_filter_results")
