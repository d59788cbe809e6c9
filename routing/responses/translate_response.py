"""A chat completion → a Responses API `Response` object, and what the stream translator shares.

The Response echoes the request's settings as OpenAI does (`instructions`, `tools` in Responses'
flat shape, `tool_choice`, `text`, `max_output_tokens`, `parallel_tool_calls`, `temperature`,
`top_p`, `reasoning`, `metadata`, ...), says `"store": false` and `"previous_response_id": null`
(nothing is stored on a translated route), and has no `output_text` (an SDK-side convenience).

Output items, in the order a model produces them: a `reasoning` item when the upstream reports
`reasoning_content` (raw reasoning, as `content: [{type: reasoning_text}]`, no summary), a
`message` item (`output_text` and/or `refusal` parts), then one `function_call` item per tool
call. Status: `finish_reason` `length` → `incomplete` (`max_output_tokens`), `content_filter` →
`incomplete` (`content_filter`), anything else → `completed`; in an incomplete response the last
item is the one cut short (`status: incomplete`).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
ECHO_DEFAULTS = {"tool_choice": "auto", "parallel_tool_calls": True, "temperature": 1.0, "top_p": 1.0,
                 "text": {"format": {"type": "text"}}, "truncation": "disabled", "metadata": {}}
# (`service_tier` is not echoed: the upstream's tier is unknown.)
ECHOED = ("instructions", "max_output_tokens", "max_tool_calls", "reasoning", "user",
          "safety_identifier", "prompt_cache_key", "top_logprobs")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(24)


def response_shell(request: dict[str, Any], *, response_id: str, model: str, created_at: int,
                   status: str) -> dict[str, Any]:
    """Every key of a Response but `output` and `usage`, from the create request it answers."""
    shell: dict[str, Any] = {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": None, "incomplete_details": None, "model": model,
        "output": [], "previous_response_id": None, "store": False, "usage": None,
        "tools": [_echo_tool(t) for t in request.get("tools") or [] if isinstance(t, dict)],
    }
    for key, default in ECHO_DEFAULTS.items():
        value = request.get(key)
        shell[key] = default if value is None else value
    for key in ECHOED:
        shell[key] = request.get(key)
    return shell


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    # As OpenAI echoes a function tool: every field present, `strict` defaulting to true.
    return {"type": "function", "name": tool.get("name"), "description": tool.get("description"),
            "parameters": tool.get("parameters"),
            "strict": True if tool.get("strict") is None else tool["strict"]}


def finish(shell: dict[str, Any], output: list[dict[str, Any]], finish_reason: Any,
           usage: Any) -> dict[str, Any]:
    """The shell as a terminal Response: status from `finish_reason`, the last item of an
    incomplete one marked incomplete, the usage mapped."""
    reason = INCOMPLETE_REASONS.get(finish_reason)
    for item in output:
        item["status"] = "completed"
    if reason is not None:
        shell.update(status="incomplete", incomplete_details={"reason": reason})
        if output:
            output[-1]["status"] = "incomplete"
    else:
        shell.update(status="completed", completed_at=int(time.time()))
    shell["output"] = output
    shell["usage"] = responses_usage(usage)
    return shell


def failed(shell: dict[str, Any], output: list[dict[str, Any]], message: str, code: str,
           usage: Any = None) -> dict[str, Any]:
    shell.update(status="failed", error={"code": code, "message": message}, output=output,
                 usage=responses_usage(usage))
    return shell


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """Chat usage → Responses usage (None when the upstream reported none)."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    total = usage.get("total_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": _count(prompt_details.get("cached_tokens")),
                                 "cache_write_tokens": _count(prompt_details.get("cache_write_tokens"))},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _count(completion_details.get("reasoning_tokens"))},
        "total_tokens": _count(total) if total is not None else prompt + completion,
    }


def message_item(item_id: str, text: str | None, refusal: str | None, status: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append(text_part(text))
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [], "content": content}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def chat_to_response(completion: dict[str, Any], request: dict[str, Any], *,
                     response_id: str | None = None, model: str | None = None,
                     created_at: int | None = None) -> dict[str, Any]:
    """The Response for a (non-streamed) chat completion answering `request` (the Responses create
    body the client sent). `model` defaults to the completion's, else the request's."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    model = model or _text(completion.get("model")) or _text(request.get("model")) or ""
    created = created_at if created_at is not None else _created(completion)
    shell = response_shell(request, response_id=response_id or new_id("resp_"), model=model,
                           created_at=created, status="completed")
    output: list[dict[str, Any]] = []
    reasoning = _text(message.get("reasoning_content"))
    if reasoning:
        output.append(reasoning_item(new_id("rs_"), reasoning, "completed"))
    text, refusal = _text(message.get("content")), _text(message.get("refusal"))
    tool_calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)] \
        if isinstance(message.get("tool_calls"), list) else []
    # An empty text is an answer only when there is nothing else (OpenAI's empty message).
    has_text = text is not None and (text != "" or not (tool_calls or refusal))
    if has_text or refusal:
        output.append(message_item(new_id("msg_"), text if has_text else None, refusal or None,
                                   "completed"))
    for call in tool_calls:
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        output.append(function_call_item(new_id("fc_"), _text(call.get("id")) or new_id("call_"),
                                         _text(function.get("name")) or "",
                                         _text(function.get("arguments")) or "", "completed"))
    return finish(shell, output, choice.get("finish_reason"), completion.get("usage"))


def _created(completion: dict[str, Any]) -> int:
    created = completion.get("created")
    if isinstance(created, int) and not isinstance(created, bool) and created > 0:
        return created
    return int(time.time())
