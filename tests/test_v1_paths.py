"""Azure OpenAI's v1 paths (DESIGN §13): a client pointed at Azure's `/openai/v1/` only changes
its base URL to the gateway's."""

from __future__ import annotations

import openai

from tests.helpers import GATEWAY_KEY


def test_openai_client_on_the_v1_base_url(gateway, clean):
    client = openai.OpenAI(base_url=gateway.url + "/openai/v1/", api_key=GATEWAY_KEY)
    reply = client.chat.completions.create(model="gpt-4o-key", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content
    vectors = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(vectors.data[0].embedding) > 0
    models = {m.id for m in client.models.list()}
    assert {"gpt-4o-key", "llama3"} <= models
    assert client.models.retrieve("llama3").id == "llama3"
    streamed = client.chat.completions.create(model="llama3", stream=True,
                                              messages=[{"role": "user", "content": "Hi"}])
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    paths = [r["path"] for r in clean["aoai"].requests()]
    assert any(p.endswith("/chat/completions") for p in paths) and any(p.endswith("/embeddings") for p in paths)
