"""Azure OpenAI's chat-completion wire shapes for a fake-model answer (reference §3.6, §4.1).

Streamed: the prompt-annotation preamble, per choice a role delta, the content deltas (or the tool
calls: the first delta of a call carries ``index``, ``id``, ``type``, ``function.name`` and empty
``arguments``, the next ones ``index`` and a piece of ``arguments``), a finish chunk, and with
``stream_options.include_usage`` a ``choices: []`` usage chunk. Choices interleave delta by delta.
A content-filtered completion (``content_filter``) has ``finish_reason: "content_filter"`` and the
blocking annotations on the choice (streamed: on the finish chunk, after half the content) (§5.2, §5.3).
"""

from __future__ import annotations

from typing import Any

from . import azure_openai_rules as rules
from .chat_answer import ChatAnswer
from .content_filter import completion_results
from .wire import sse_event

FINGERPRINT = "fp_emulator01"


def preamble(include_usage: bool) -> bytes:
    """§4.1 first chunk: prompt annotations with empty ids and no choices."""
    data: dict[str, Any] = {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                            "prompt_filter_results": rules.PROMPT_FILTER_RESULTS}
    if include_usage:
        data["usage"] = None
    return sse_event(data)


def chat_json(answer: ChatAnswer, n: int, created: int, cid: str, model: str, usage: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"annotations": [], "content": answer.content, "refusal": None, "role": "assistant"}
    if answer.tool_calls:
        message["tool_calls"] = [call.message_json() for call in answer.tool_calls]
    filters = completion_results(answer.filtered) if answer.filtered else rules.CHOICE_FILTER_RESULTS
    choices = [{"content_filter_results": filters, "finish_reason": answer.finish_reason,
                "index": i, "logprobs": None, "message": message} for i in range(n)]
    return {"choices": choices, "created": created, "id": cid, "model": model, "object": "chat.completion",
            "prompt_filter_results": rules.PROMPT_FILTER_RESULTS, "system_fingerprint": FINGERPRINT, "usage": usage}


def _choice_deltas(answer: ChatAnswer) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(delta, content_filter_results) of one choice, role delta first, finish delta excluded."""
    if not answer.tool_calls:
        deltas = [({"content": "", "refusal": None, "role": "assistant"}, {})]
        return deltas + [({"content": piece}, rules.CHOICE_FILTER_RESULTS) for piece in answer.streamed_pieces]
    deltas = []
    for index, call in enumerate(answer.tool_calls):
        head: dict[str, Any] = {"function": {"arguments": "", "name": call.name}, "id": call.id, "index": index,
                                "type": "function"}
        # The role rides on the first call's head delta, as OpenAI streams it.
        first = {"content": None, "refusal": None, "role": "assistant"} if index == 0 else {}
        deltas.append(({**first, "tool_calls": [head]}, {}))
        deltas += [({"tool_calls": [{"function": {"arguments": piece}, "index": index}]}, {})
                   for piece in call.argument_pieces]
    return deltas


def chat_events(answer: ChatAnswer, n: int, created: int, cid: str, model: str, include_usage: bool,
                usage: dict[str, Any]) -> list[bytes]:
    common = {"created": created, "id": cid, "model": model, "object": "chat.completion.chunk",
              "system_fingerprint": FINGERPRINT}

    def chunk(choice: dict[str, Any]) -> bytes:
        data = {"choices": [choice], **common}
        if include_usage:
            data["usage"] = None
        return sse_event(data)

    events = [preamble(include_usage)]
    for delta, filters in _choice_deltas(answer):  # every choice is the same answer
        events += [chunk({"content_filter_results": filters, "delta": delta, "finish_reason": None, "index": i,
                          "logprobs": None}) for i in range(n)]
    finish_filters = completion_results(answer.filtered) if answer.filtered else {}
    events += [chunk({"content_filter_results": finish_filters, "delta": {}, "finish_reason": answer.finish_reason,
                      "index": i, "logprobs": None}) for i in range(n)]
    if include_usage:
        events.append(sse_event({"choices": [], **common, "usage": usage}))
    return events
