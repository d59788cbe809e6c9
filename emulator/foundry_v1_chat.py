"""The fake model's chat answer on Foundry's ``/openai/v1`` endpoint: reasoning per model family,
then the OpenAI chat-completion wire shapes (reference azure-responses-and-v1.md §4.3, §5).

- Reasoning ``field`` families (DeepSeek-R1, grok-3-mini, Kimi): ``message.reasoning_content`` and,
  streamed, ``delta.reasoning_content`` deltas before the answer's (F-RSN); ``usage`` adds
  ``completion_tokens_details.reasoning_tokens``. Reasoning ``think`` families (Phi-4-reasoning):
  the reasoning inline in ``content`` between ``<think>`` and ``</think>`` (the §4.3 MI-RSN form of
  reasoning; for Phi-4-reasoning on v1 [unconfirmed]).
- The reasoning is ``REASONING_WORDS`` words, "Okay, the user said: <last user text>…", one token
  per word; ``max_completion_tokens`` (else ``max_tokens``) covers reasoning then answer: a limit
  within the reasoning gives ``finish_reason: "length"`` and empty content.
- Stream usage [unconfirmed for v1]: with ``stream_options.include_usage`` the OpenAI way
  (``"usage": null`` on every chunk, then a ``choices: []`` usage chunk); without it the usage rides
  on the finish chunk, as Foundry documents for its models (upstream §4.2), so every answer has usage.
- A filtered completion (``content_filter``): ``finish_reason: "content_filter"`` with
  ``content_filter_results`` on the choice and ``prompt_filter_results`` on the body (§5.2);
  streamed, on the finish chunk after half the content (§5.3). Normal answers carry no annotations
  (as the model-inference route; whether v1 annotates non-OpenAI models is [unconfirmed]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .chat_answer import ChatAnswer, plan_answer
from .content_filter import annotate_filtered_choice, prompt_filter_results
from .fake_model import answer_words, last_user_text, prompt_tokens_of_messages, stream_pieces
from .model_families import Family
from .wire import sse_event

REASONING_WORDS = 8
_THINK_OPEN, _THINK_CLOSE = "<think>\n", "\n</think>\n\n"


@dataclass
class V1Answer:
    answer: ChatAnswer
    reasoning: list[str] | None  # reasoning_content deltas (field families), else None
    usage: dict[str, Any]


def _limit(body: dict[str, Any]) -> int | None:
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def plan(body: dict[str, Any], family: Family, n_words: int, n: int) -> V1Answer:
    messages = body.get("messages") or []
    limit = _limit(body)
    reasoning: list[str] | None = None
    if family.reasoning is None:
        answer = plan_answer(body, n_words, limit)
    else:
        words = answer_words(last_user_text(messages), REASONING_WORDS, prefix="Okay, the user said: ")
        if limit is not None and limit <= len(words):
            words, answer = words[:limit], ChatAnswer([], "length")
        else:
            answer = plan_answer(body, n_words, None if limit is None else limit - len(words))
        reasoning = stream_pieces(words)
        if family.reasoning == "think":
            if answer.tool_calls:
                answer = ChatAnswer([], answer.finish_reason, answer.tool_calls, answer.filtered)
            else:
                pieces = [_THINK_OPEN, *reasoning, _THINK_CLOSE, *answer.pieces]
                answer = ChatAnswer(pieces, answer.finish_reason, [], answer.filtered)
            reasoning = None  # counted inside the content, the two tags a token each
    prompt = prompt_tokens_of_messages(messages)
    completion = (answer.completion_tokens + (len(reasoning) if reasoning else 0)) * n
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": len(reasoning) * n}
    return V1Answer(answer, reasoning, usage)


def chat_json(planned: V1Answer, n: int, common: dict[str, Any]) -> dict[str, Any]:
    answer = planned.answer
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if planned.reasoning is not None:
        message["reasoning_content"] = "".join(planned.reasoning)
    message["tool_calls"] = [call.message_json() for call in answer.tool_calls] or None  # F-RSN sample: null
    choices = [annotate_filtered_choice({"index": i, "message": dict(message), "finish_reason": answer.finish_reason,
                                         "logprobs": None}, answer.filtered) for i in range(n)]
    body = {**common, "object": "chat.completion", "choices": choices, "usage": planned.usage}
    if answer.filtered:
        body["prompt_filter_results"] = prompt_filter_results()
    return body


def _deltas(planned: V1Answer) -> list[dict[str, Any]]:
    """The deltas after the role delta: reasoning, then content or tool calls (OpenAI's shape)."""
    answer = planned.answer
    deltas: list[dict[str, Any]] = [{"reasoning_content": piece} for piece in planned.reasoning or []]
    if not answer.tool_calls:
        return deltas + [{"content": piece} for piece in answer.streamed_pieces]
    for index, call in enumerate(answer.tool_calls):
        deltas.append({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                       "function": {"name": call.name, "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                   for piece in call.argument_pieces]
    return deltas


def chat_events(planned: V1Answer, n: int, common: dict[str, Any], include_usage: bool) -> list[bytes]:
    answer = planned.answer
    base = {**common, "object": "chat.completion.chunk"}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        data = {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if include_usage:
            data["usage"] = None
        return data

    events = [sse_event(chunk(i, {"role": "assistant", "content": ""})) for i in range(n)]
    for delta in _deltas(planned):
        events += [sse_event(chunk(i, delta)) for i in range(n)]
    for i in range(n):
        last = chunk(i, {}, answer.finish_reason)
        annotate_filtered_choice(last["choices"][0], answer.filtered)
        if not include_usage and i == n - 1:
            last["usage"] = planned.usage
        events.append(sse_event(last))
    if include_usage:
        events.append(sse_event({**base, "choices": [], "usage": planned.usage}))
    return events
