"""What the fake model answers to a chat request: text, JSON (``response_format``) or tool calls.

A pure function of the body, so tests can predict it (only tool-call ids are random):
- ``tool_choice`` naming a function → one call of it;
- ``tool_choice: "required"`` → a call of each tool named in the last user message, else of the
  first tool;
- ``tool_choice: "auto"`` or absent, with ``tools`` → a call of each tool named in the last user
  message, when the conversation ends with that user message (after a tool result: text);
- ``parallel_tool_calls: false`` → at most one call; ``tool_choice: "none"`` → never;
- otherwise ``response_format`` ``json_object`` → ``{"answer": "<text answer>"}``, ``json_schema``
  → an instance of its schema (``json_instance``); else the text answer, which after a tool result
  reads ``Tool result: <its content>``.
A text answer whose last user message holds ``[[filtered-completion]]`` is content-filtered
(``content_filter``): ``finish_reason: "content_filter"``, no content, only the first half of its
deltas streamed.
Arguments are an instance of the tool's ``parameters``, compact JSON. Text streams one word per
delta, JSON and arguments in token-like pieces (``json_pieces``); every delta counts as one
completion token, and ``max_tokens`` cuts the answer there (``finish_reason: "length"``).
Each emulator checks the request with ``tool_problem``/``format_problem`` and renders the answer
in its own wire shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .content_filter import completion_category
from .fake_model import answer_words, capped, content_text, json_pieces, last_user_text, stream_pieces
from .json_instance import instance_of
from .wire import new_id


@dataclass
class ToolCall:
    id: str
    name: str
    argument_pieces: list[str]

    @property
    def arguments(self) -> str:
        return "".join(self.argument_pieces)

    def message_json(self) -> dict[str, Any]:
        """The non-streamed ``message.tool_calls[i]``."""
        return {"function": {"arguments": self.arguments, "name": self.name}, "id": self.id, "type": "function"}


@dataclass
class ChatAnswer:
    pieces: list[str]  # content deltas; empty when the answer is tool calls
    finish_reason: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    filtered: str | None = None  # the content-filter category that blocked the completion

    @property
    def content(self) -> str | None:
        # §5.2: "Non-streaming completions calls don't return any content when the content is filtered"
        # (null rather than "" is [unconfirmed]).
        return None if self.tool_calls or self.filtered else "".join(self.pieces)

    @property
    def streamed_pieces(self) -> list[str]:
        """The content deltas a stream sends: a filtered completion stops halfway (§5.3)."""
        return self.pieces[: len(self.pieces) // 2] if self.filtered else self.pieces

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces) + sum(len(call.argument_pieces) for call in self.tool_calls)


@dataclass
class Problem:
    """A request the model rejects: OpenAI's wording; each emulator wraps it in its own shape."""
    param: str
    message: str
    code: str | None = None


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    return tools if isinstance(tools, list) else []


def _function(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    return function if isinstance(function, dict) else {}


def tool_problem(body: dict[str, Any]) -> Problem | None:
    """The first thing wrong with ``tools``/``tool_choice``, or None."""
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        return Problem("tools", f"Invalid type for 'tools': expected an array, but got {type(tools).__name__}.",
                       "invalid_type")
    for i, tool in enumerate(tools or []):
        if not isinstance(_function(tool).get("name"), str) or not _function(tool)["name"]:
            return Problem(f"tools[{i}].function.name",
                           f"Missing required parameter: 'tools[{i}].function.name'.", "missing_required_parameter")
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto"):
        return None
    if isinstance(choice, str) and choice != "required":
        return Problem("tool_choice", f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', "
                       "and 'required'.", "invalid_value")
    if not tools:
        return Problem("tool_choice", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                       "'tools' are specified.")
    if choice == "required":
        return None
    name = _function(choice).get("name")
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        return Problem("tool_choice", "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
                       "{'type': 'function', 'function': {'name': ...}}.", "invalid_value")
    if name not in {_function(tool)["name"] for tool in tools}:
        # [unconfirmed] wording: the reference gives no body for an unknown forced function.
        return Problem("tool_choice", f"Invalid value for 'tool_choice': function '{name}' is not in 'tools'.",
                       "invalid_value")
    return None


def format_problem(body: dict[str, Any]) -> Problem | None:
    """The first thing wrong with ``response_format``, or None."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        return Problem("response_format.type", f"Invalid value: {kind!r}. Supported values are: 'json_object', "
                       "'json_schema', and 'text'.", "invalid_value")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            return Problem("response_format.json_schema", "Missing required parameter: "
                           "'response_format.json_schema'.", "missing_required_parameter")
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            return Problem("response_format.json_schema.name", "Missing required parameter: "
                           "'response_format.json_schema.name'.", "missing_required_parameter")
    return None


def _called_tools(body: dict[str, Any], messages: list[Any]) -> list[dict[str, Any]]:
    tools = [tool for tool in _tools(body) if _function(tool).get("name")]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return []
    if isinstance(choice, dict):
        name = _function(choice).get("name")
        return [tool for tool in tools if _function(tool)["name"] == name][:1]
    user_ends = bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") == "user"
    text = last_user_text(messages) if user_ends or choice == "required" else ""
    named = [tool for tool in tools if _function(tool)["name"] in text]
    if not named and choice == "required":
        named = tools[:1]
    return named[:1] if body.get("parallel_tool_calls") is False else named


def _tool_result(messages: list[Any]) -> str | None:
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "tool":
        return content_text(last.get("content"))
    return None


def plan_answer(body: dict[str, Any], n_words: int, limit: Any) -> ChatAnswer:
    """The answer to a valid chat body. ``limit``: ``max_tokens``/``max_completion_tokens``."""
    messages = body.get("messages") or []
    called = _called_tools(body, messages)
    if called:
        budget = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
        calls: list[ToolCall] = []
        finish = "tool_calls"
        for tool in called:
            arguments = json.dumps(instance_of(_function(tool).get("parameters")), separators=(",", ":"),
                                   ensure_ascii=False)
            pieces = json_pieces(arguments)
            if budget is not None and len(pieces) > budget:
                pieces, finish = pieces[:budget], "length"
            if pieces:
                calls.append(ToolCall(new_id("call_"), _function(tool)["name"], pieces))
            if finish == "length":
                break
            budget = None if budget is None else budget - len(pieces)
        return ChatAnswer([], finish, calls)
    tool_result = _tool_result(messages)
    if tool_result is not None:
        words = answer_words(tool_result, n_words, prefix="Tool result: ")
    else:
        words = answer_words(last_user_text(messages), n_words)
    filtered = completion_category(last_user_text(messages))
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else "text"
    if kind == "text":
        words, finish = capped(words, limit)
        pieces = stream_pieces(words)
    else:
        if kind == "json_object":
            value: Any = {"answer": " ".join(words)}
        else:
            value = instance_of(fmt["json_schema"].get("schema"))
        pieces, finish = capped(json_pieces(json.dumps(value, separators=(",", ":"), ensure_ascii=False)), limit)
    if filtered is not None:
        return ChatAnswer(pieces, "content_filter", filtered=filtered)
    return ChatAnswer(pieces, finish)


def mentions_json(messages: Any) -> bool:
    """OpenAI's json_object precondition: some message says "json" (any case)."""
    return any(isinstance(m, dict) and "json" in content_text(m.get("content")).lower()
               for m in messages or [])


def orphan_tool_message(messages: Any) -> int | None:
    """Index of the first ``tool`` message that answers no earlier assistant ``tool_calls`` id."""
    ids: set[str] = set()
    for i, message in enumerate(messages or []):
        if not isinstance(message, dict):
            continue
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    ids.add(call["id"])
        elif message.get("role") == "tool" and message.get("tool_call_id") not in ids:
            return i
    return None
