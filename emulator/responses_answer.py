"""The Responses API side of the fake model (reference azure-responses-and-v1.md §1.2, §1.3).

A request is checked (``request_problem``), its ``input`` normalised to items with ids
(``input_items``), the conversation (stored context + input) turned into chat messages so the
chat fake model (``chat_answer.plan_answer``) decides the answer, and that answer rendered as
Responses output items (``output_items``) inside a full ``Response`` object (``response_json``).
Same rules as chat, so it is predictable: text "Hello! You said: <last user text>", function calls
when ``tool_choice`` requires one or the last user message names a tool, "Tool result: <output>"
after a ``function_call_output``, an instance of ``text.format``'s schema for structured output.
Reasoning deployments (o-series, gpt-5) add a ``reasoning`` item worth ``REASONING_TOKENS``.
Wording marked [unconfirmed] is not in the reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .chat_answer import ChatAnswer, Problem, plan_answer
from .fake_model import content_text, prompt_tokens_of_messages

# §1.2 (openai-python 3.3.1 create()) plus what newer SDKs send; anything else: "Unknown parameter".
ACCEPTED_KEYS = frozenset({
    "background", "context_management", "conversation", "include", "input", "instructions", "max_output_tokens",
    "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls", "previous_response_id", "prompt",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning", "safety_identifier",
    "service_tier", "store", "stream", "stream_options", "temperature", "text", "tool_choice", "tools",
    "top_logprobs", "top_p", "truncation", "user", "access_programs", "background_options", "image",
})
MIN_OUTPUT_TOKENS = 16  # OAPI: max_output_tokens minimum 16
REASONING_TOKENS = 8  # emulator choice: what a reasoning deployment "thinks" per answer
_USER_PART = {"user": "input_text", "system": "input_text", "developer": "input_text", "assistant": "output_text"}


def new_id(prefix: str) -> str:
    """Ids shaped like the spec examples' (``resp_``/``msg_``/``fc_`` + 48 hex digits)."""
    return prefix + os.urandom(24).hex()


def problem(param: str | None, message: str, code: str | None = None) -> Problem:
    return Problem(param, message, code)  # type: ignore[arg-type]  # OpenAI's param may be null


# --- checks ---------------------------------------------------------------------------------------

def _tool_problem(body: dict[str, Any]) -> Problem | None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        return problem("tools", f"Invalid type for 'tools': expected an array, but got {type(tools).__name__}.",
                       "invalid_type")
    names = set()
    for i, tool in enumerate(tools or []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            return problem(f"tools[{i}].type", f"Missing required parameter: 'tools[{i}].type'.",
                           "missing_required_parameter")
        if kind != "function":
            # [unconfirmed] an emulator limit, not Azure's answer: built-in tools are not emulated.
            return problem(f"tools[{i}].type", f"Invalid value: '{kind}'. The emulator supports only 'function' "
                           "tools.", "invalid_value")
        if not isinstance(tool.get("name"), str) or not tool["name"]:  # the flat shape (§1.2), not chat's
            return problem(f"tools[{i}].name", f"Missing required parameter: 'tools[{i}].name'.",
                           "missing_required_parameter")
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        return None
    name = choice.get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        # [unconfirmed] wording
        return problem("tool_choice", "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
                       "{'type': 'function', 'name': ...}.", "invalid_value")
    if name not in names:
        return problem("tool_choice", "Tool choice 'function' not found in 'tools' parameter.")  # [unconfirmed]
    return None


def _format_problem(body: dict[str, Any]) -> Problem | None:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        return problem("text.format.type", f"Invalid value: {kind!r}. Supported values are: 'text', 'json_object', "
                       "and 'json_schema'.", "invalid_value")  # [unconfirmed] wording
    if kind == "json_schema":
        for key in ("name", "schema"):
            if not fmt.get(key) or (key == "name" and not isinstance(fmt[key], str)):
                return problem(f"text.format.{key}", f"Missing required parameter: 'text.format.{key}'.",
                               "missing_required_parameter")
    return None


def request_problem(body: dict[str, Any], reasoning_model: bool) -> Problem | None:
    """The first thing wrong with a create body (before any stored state is looked at), or None."""
    unknown = [k for k in body if k not in ACCEPTED_KEYS]
    if unknown:  # the v1 wording, as the chat emulator answers it on /openai/v1 (§3.4 of the upstream reference)
        return problem(unknown[0], f"Unknown parameter: '{unknown[0]}'.", "unknown_parameter")
    value = body.get("input")
    if value is None and body.get("previous_response_id") is None:
        return problem("input", "Missing required parameter: 'input'.", "missing_required_parameter")
    if value is not None and not isinstance(value, (str, list)):
        return problem("input", f"Invalid type for 'input': expected a string or an array, but got "
                       f"{type(value).__name__}.", "invalid_type")
    limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < MIN_OUTPUT_TOKENS):
        # [unconfirmed] wording; the minimum is OAPI's
        return problem("max_output_tokens", "Invalid 'max_output_tokens': integer below minimum value. Expected a "
                       f"value >= {MIN_OUTPUT_TOKENS}, but got {limit!r} instead.", "integer_below_min_value")
    if "stream_options" in body and body.get("stream") is not True:
        return problem("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
    if body.get("conversation") is not None:
        # [unconfirmed] an emulator limit: Conversations are not emulated (OAPI: exclusive with previous_response_id)
        return problem("conversation", "The emulator does not support 'conversation'; use 'previous_response_id'.")
    reasoning = body.get("reasoning")
    if not reasoning_model and isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        return problem("reasoning.effort", "Unsupported parameter: 'reasoning.effort' is not supported with this "
                       "model.", "unsupported_parameter")  # [unconfirmed] wording
    return _tool_problem(body) or _format_problem(body)


# --- input items ----------------------------------------------------------------------------------

def input_items(value: Any) -> list[dict[str, Any]] | Problem:
    """``input`` as stored items: messages with ``input_text`` parts and ids, others as given plus an id."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    items: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            return problem(f"input[{i}]", f"Invalid type for 'input[{i}]': expected an object.", "invalid_type")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in _USER_PART:
                return problem(f"input[{i}].role", f"Invalid value: '{role}'. Supported values are: 'assistant', "
                               "'system', 'developer', and 'user'.", "invalid_value")
            content = item.get("content")
            if isinstance(content, str):
                content = [{"type": _USER_PART[role], "text": content}]
                if role == "assistant":
                    content[0]["annotations"] = []
            items.append({"id": item.get("id") or new_id("msg_"), "type": "message", "role": role,
                          "status": item.get("status", "completed"), "content": content})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                return problem(f"input[{i}].call_id", f"Missing required parameter: 'input[{i}].call_id'.",
                               "missing_required_parameter")
            # [unconfirmed] the id prefix of stored function_call_output items
            items.append({"id": item.get("id") or new_id("fco_"), **item, "status": item.get("status", "completed")})
        elif isinstance(kind, str):
            items.append(dict(item))  # function_call, reasoning, item_reference, ... as replayed
        else:
            return problem(f"input[{i}].type", f"Missing required parameter: 'input[{i}].type'.",
                           "missing_required_parameter")
    return items


def orphan_output(context: list[dict[str, Any]]) -> str | None:
    """call_id of the first ``function_call_output`` that answers no earlier ``function_call``."""
    calls: set[str] = set()
    for item in context:
        if item.get("type") == "function_call":
            calls.add(str(item.get("call_id")))
        elif item.get("type") == "function_call_output" and item.get("call_id") not in calls:
            return str(item.get("call_id"))
    return None


def chat_messages(instructions: Any, context: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as chat messages, for the chat fake model (same mapping as §6.2's bridges)."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in context:
        kind = item.get("type")
        if kind == "message":
            messages.append({"role": item["role"], "content": content_text(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else content_text(output)})
    return messages


# --- the answer -----------------------------------------------------------------------------------

@dataclass
class Answer:
    output: list[dict[str, Any]]  # completed output items
    pieces: dict[str, list[str]]  # item id -> the deltas it streams in (text or arguments)
    usage: dict[str, Any]
    incomplete: bool  # cut by max_output_tokens


def _format_kind(body: dict[str, Any]) -> dict[str, Any] | None:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": fmt.get("name"), "schema": fmt.get("schema")}}


def answer(body: dict[str, Any], messages: list[dict[str, Any]], n_words: int, reasoning_model: bool) -> Answer:
    tools = [{"type": "function", "function": {"name": t["name"], "parameters": t.get("parameters")}}
             for t in body.get("tools") or []]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    chat_body = {"messages": messages, "tools": tools, "parallel_tool_calls": body.get("parallel_tool_calls"),
                 "response_format": _format_kind(body)}
    if choice is not None:
        chat_body["tool_choice"] = choice
    reasoning = REASONING_TOKENS if reasoning_model else 0
    limit = body.get("max_output_tokens")  # includes reasoning tokens (§1.2); >= 16 > REASONING_TOKENS
    planned: ChatAnswer = plan_answer(chat_body, n_words, None if limit is None else limit - reasoning)
    output: list[dict[str, Any]] = []
    pieces: dict[str, list[str]] = {}
    if reasoning:
        output.append({"id": new_id("rs_"), "type": "reasoning", "summary": []})
    incomplete = planned.finish_reason == "length"
    for call in planned.tool_calls:
        item_id = new_id("fc_")
        output.append({"id": item_id, "type": "function_call", "status": "completed", "arguments": call.arguments,
                       "call_id": call.id, "name": call.name})
        pieces[item_id] = call.argument_pieces
    if not planned.tool_calls and planned.pieces:
        item_id = new_id("msg_")
        output.append({"id": item_id, "type": "message", "status": "incomplete" if incomplete else "completed",
                       "role": "assistant", "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                                                         "text": "".join(planned.pieces)}]})
        pieces[item_id] = planned.pieces
    input_tokens = prompt_tokens_of_messages(messages)
    output_tokens = planned.completion_tokens + reasoning
    usage = {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning},
             "total_tokens": input_tokens + output_tokens}
    return Answer(output, pieces, usage, incomplete)


# --- the Response object --------------------------------------------------------------------------

def _tools_echo(tools: Any) -> list[dict[str, Any]]:
    # OAPI "Functions" example: `strict` omitted in the request comes back true.
    return [{"type": "function", "name": t.get("name"), "description": t.get("description"),
             "parameters": t.get("parameters"), "strict": t.get("strict", True)} for t in tools or []]


def response_json(rid: str, created_at: int, status: str, body: dict[str, Any], model: str, reasoning_model: bool,
                  output: list[dict[str, Any]] | None = None, usage: dict[str, Any] | None = None,
                  incomplete: bool = False) -> dict[str, Any]:
    """The full Response object (§1.3) at ``status``; ``output``/``usage`` only once finished."""
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    return {
        "id": rid, "object": "response", "created_at": created_at, "status": status,
        "background": body.get("background") is True, "completed_at": None, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"), "model": model, "output": output or [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort", "medium" if reasoning_model else None),
                      "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"), "prompt_cache_key": body.get("prompt_cache_key"),
        "service_tier": body.get("service_tier", "default"), "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0), "text": {"format": {"type": "text"}, **text},
        "tool_choice": body.get("tool_choice", "auto"), "tools": _tools_echo(body.get("tools")),
        "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
        "usage": usage, "user": body.get("user"), "metadata": body.get("metadata") or {},
    }
