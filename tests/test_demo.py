"""`python -m routing serve --demo`: emulators plus a sample route table, callable at once."""

from __future__ import annotations

import openai

from routing.manage.demo import DEMO_KEY
from tests.helpers import GatewayProcess


def test_demo_mode_serves_every_sample_model(tmp_path):
    demo = GatewayProcess({}, tmp_path, args=("--demo",))
    try:
        client = openai.OpenAI(base_url=demo.url + "/v1", api_key=DEMO_KEY, max_retries=0)
        models = sorted(m.id for m in client.models.list())
        assert models == sorted(["gpt-4o", "o3-mini", "text-embedding-3-small", "llama3", "mistral-large"])
        for model in ("gpt-4o", "o3-mini", "llama3", "mistral-large"):
            chunks = list(client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hi"}], stream=True,
                stream_options={"include_usage": True}))
            assert chunks[-1].usage is not None and chunks[-1].choices == []
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Hello!")
        assert client.embeddings.create(model="text-embedding-3-small", input="x").data[0].embedding
        assert f"Gateway key: {DEMO_KEY}" in demo.log() and "curl" in demo.log()
    finally:
        demo.stop()
