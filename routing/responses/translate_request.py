"""A Responses API create body → a chat completions body, for routes without a Responses API.

Pure: no I/O, time linear in the body. What cannot be translated is a 400 naming the parameter
(`code: "unsupported_parameter"`), never a silent change of meaning:

- Stored state does not exist on a translated route: `previous_response_id`, `conversation`,
  `background: true`, `prompt` (stored templates), `item_reference` items, `include` values
  other than `reasoning.encrypted_content`, and an explicit `store: true`. A request that does
  not send `store` is served (OpenAI's default is `true`, but an SDK user who never asked for
  storage expects an answer, not a 400); the response says `"store": false`, which is what
  happened. Only a client that explicitly asked to store is refused.
- Built-in tools (web_search, file_search, code_interpreter, computer_use, image_generation,
  mcp, custom, namespace, ...) and tool choices naming them: only function tools exist on
  chat completions.
- `truncation: "auto"`, `top_logprobs`, `context_management`, `moderation`: behaviours chat
  completions cannot reproduce.

Kept with a documented translation:
- `instructions` → a leading `system` message; input roles (`developer` too) are kept as they
  are: the route's backend rules map roles as for any chat request.
- Function tools: Responses' flat `{type, name, description, parameters, strict}` → chat's
  nested `{type: function, function: {...}}`; `strict` is sent only when the client set it.
  `tool_choice` auto/none/required/function map one to one; `allowed_tools` offers only the
  allowed tools with its mode. `text.format` json_schema/json_object → `response_format`.
  `max_output_tokens` → `max_tokens`; `stream: true` → `stream_options.include_usage` too
  (usage for `response.completed`).
- `reasoning.effort` → `reasoning_effort` (the chat parameter; the route's backend rules then
  apply as for any chat request). `reasoning.summary` is accepted; chat completions produce no
  summaries, so none is returned (OpenAI itself may return none for `auto`); raw reasoning a
  model reports (`reasoning_content`) comes back as a `reasoning` item. Replayed `reasoning`
  input items are not sent (chat has no input for them; models must not see old reasoning).
- `metadata` is validated (16 pairs, keys ≤ 64 chars, string values ≤ 512 chars, as OpenAI's)
  and echoed on the Response, not sent upstream: it is the caller's bookkeeping, and chat's
  `metadata` belongs to stored completions.
- Text-only message content becomes one string (parts joined with "\\n"): every chat backend
  takes a string for every role. Content with images stays a list of parts (user messages).
- `prompt_cache_retention` / `prompt_cache_options` are caching hints without effect on the
  answer: accepted, not sent. `stream_options` (obfuscation) likewise.
"""

from __future__ import annotations

from typing import Any

from routing.errors import GatewayError

# Responses key → chat key, copied as they are (the route's backend rules apply afterwards).
COPIED = {"model": "model", "temperature": "temperature", "top_p": "top_p",
          "parallel_tool_calls": "parallel_tool_calls", "user": "user",
          "safety_identifier": "safety_identifier", "prompt_cache_key": "prompt_cache_key",
          "service_tier": "service_tier", "max_output_tokens": "max_tokens"}
# Handled below, or accepted without an upstream counterpart (see the module docstring).
HANDLED = frozenset({"input", "instructions", "tools", "tool_choice", "text", "reasoning", "metadata",
                     "stream", "stream_options", "store", "include", "max_tool_calls", "truncation",
                     "prompt_cache_retention", "prompt_cache_options", "background", "top_logprobs"})
# Non-null values of these need state or machinery a chat upstream does not have.
STATEFUL = {
    "previous_response_id": "previous responses are not stored on this route; send the whole "
                            "conversation in 'input' instead",
    "conversation": "conversations are not stored on this route; send the whole conversation in 'input'",
    "prompt": "stored prompt templates are not available on this route",
    "context_management": "context management (compaction) is not available on this route",
    "moderation": "moderation is not available on this route",
}
HANDLED = HANDLED | frozenset(STATEFUL)  # refused before the copy unless null
ALLOWED_INCLUDES = frozenset({"reasoning.encrypted_content"})  # no reasoning is encrypted: a no-op
FUNCTION_TOOL_KEYS = frozenset({"type", "name", "description", "parameters", "strict"})
TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512


def unsupported(param: str, why: str) -> GatewayError:
    return GatewayError(400, f"Unsupported parameter: '{param}': {why}.", param=param,
                        code="unsupported_parameter")


def invalid(param: str, why: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, f"Invalid '{param}': {why}.", param=param, code=code)


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completions body for a Responses create body (not changed).
    GatewayError(400) for what cannot be translated."""
    if not isinstance(body, dict):
        raise invalid("body", "expected a JSON object", "invalid_type")
    _refuse_state(body)
    chat: dict[str, Any] = {}
    for key, value in body.items():
        if value is None:
            continue
        if key in COPIED:
            chat[COPIED[key]] = value
        elif key not in HANDLED:
            raise GatewayError(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
    chat["messages"] = messages(body.get("input"), body.get("instructions"))
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("tools", "expected an array", "invalid_type")
        if tools:
            chat["tools"] = [function_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        choice, allowed = tool_choice(choice)
        chat["tool_choice"] = choice
        if allowed is not None:  # allowed_tools: only those are offered
            chat["tools"] = [t for t in chat.get("tools", []) if t["function"]["name"] in allowed]
            if not chat["tools"]:
                raise invalid("tool_choice.tools", "none of the allowed tools is in 'tools'")
    chat.update(text_options(body.get("text")))
    effort = reasoning_effort(body.get("reasoning"))
    if effort is not None:
        chat["reasoning_effort"] = effort
    check_metadata(body.get("metadata"))
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # response.completed carries usage
    return chat


def _refuse_state(body: dict[str, Any]) -> None:
    for key, why in STATEFUL.items():
        if body.get(key) is not None:
            raise unsupported(key, why)
    if body.get("store") is True:
        raise unsupported("store", "responses cannot be stored on this route; send 'store': false "
                                   "(or leave it out) and keep the conversation on the client")
    if body.get("background") is True:
        raise unsupported("background", "background responses need stored state, which this "
                                        "route does not have")
    if body.get("truncation") not in (None, "disabled"):
        raise unsupported("truncation", "only 'disabled' is available on this route")
    if body.get("top_logprobs"):
        raise unsupported("top_logprobs", "log probabilities are not available on this route")
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list):
            raise invalid("include", "expected an array", "invalid_type")
        for i, value in enumerate(include):
            if not _one_of(value, ALLOWED_INCLUDES):
                raise unsupported(f"include[{i}]", f"'{_short(value)}' is not available on this route")


def messages(input_: Any, instructions: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid("instructions", "expected a string", "invalid_type")
        out.append({"role": "system", "content": instructions})
    if input_ is None:
        raise GatewayError(400, "Missing required parameter: 'input'.", param="input",
                           code="missing_required_parameter")
    if isinstance(input_, str):
        out.append({"role": "user", "content": input_})
        return out
    if not isinstance(input_, list):
        raise invalid("input", "expected a string or an array of items", "invalid_type")
    calls: set[str] = set()  # call ids of the function_call items so far
    open_calls: dict[str, Any] | None = None  # the assistant message function calls join
    for i, item in enumerate(input_):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(where, "expected an object", "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            out.append(message(item, where))
            open_calls = out[-1] if out[-1]["role"] == "assistant" else None
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
            for key, value in (("call_id", call_id), ("name", name), ("arguments", arguments)):
                if not isinstance(value, str):
                    raise invalid(f"{where}.{key}", "expected a string", "invalid_type")
            if open_calls is None:
                open_calls = {"role": "assistant", "content": None}
                out.append(open_calls)
            open_calls.setdefault("tool_calls", []).append(
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
            calls.add(call_id)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not _one_of(call_id, calls):
                raise invalid(f"{where}.call_id", f"no function_call item with call_id "
                              f"'{_short(call_id)}' precedes it in 'input' (this route keeps no "
                              f"stored state: send the function_call item too)")
            out.append({"role": "tool", "tool_call_id": call_id,
                        "content": tool_output(item.get("output"), f"{where}.output")})
            open_calls = None
        elif kind == "reasoning":
            continue  # chat has no input for it (see the module docstring)
        elif kind == "item_reference":
            raise unsupported(where, "item references need stored items, which this route does "
                                     "not have; send the item itself")
        else:
            raise unsupported(f"{where}.type", f"'{_short(kind)}' items are not available on "
                                               f"this route (only messages and function calls)")
    return out


def message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if not _one_of(role, MESSAGE_ROLES):
        raise invalid(f"{where}.role", f"expected one of {', '.join(sorted(MESSAGE_ROLES))}")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "expected a string or an array of parts", "invalid_type")
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    images = False
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        kind = kind if isinstance(kind, str) else None  # a list or object type matches nothing
        if kind in TEXT_PART_TYPES or kind == "refusal":
            text = part.get("refusal" if kind == "refusal" else "text")
            if not isinstance(text, str):
                raise invalid(at, "expected a string in the part", "invalid_type")
            texts.append(text)
            parts.append({"type": "text", "text": text})
        elif kind == "input_image" and role == "user":
            parts.append(image_part(part, at))
            images = True
        elif kind == "input_file":
            raise unsupported(f"{at}.type", "file inputs are not available on this route")
        else:
            raise unsupported(f"{at}.type", f"'{_short(kind)}' parts are not available in "
                                            f"{role} messages on this route")
    return {"role": role, "content": parts if images else "\n".join(texts)}


def image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        if part.get("file_id") is not None:
            raise unsupported(f"{where}.file_id", "stored files are not available on this route; "
                                                  "send 'image_url' (a URL or a data: URL)")
        raise invalid(f"{where}.image_url", "expected a URL", "invalid_type")
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def tool_output(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):  # text parts only: a tool message's content is text
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or not _one_of(part.get("type"), TEXT_PART_TYPES) \
                    or not isinstance(part.get("text"), str):
                raise unsupported(f"{where}[{j}]", "only text parts can be a function's output "
                                                   "on this route")
            texts.append(part["text"])
        return "\n".join(texts)
    raise invalid(where, "expected a string or an array of text parts", "invalid_type")


def function_tool(tool: Any, where: str) -> dict[str, Any]:
    """Responses' flat function tool → chat's nested one."""
    if not isinstance(tool, dict):
        raise invalid(where, "expected an object", "invalid_type")
    kind = tool.get("type")
    if kind != "function":
        raise unsupported(f"{where}.type", f"'{_short(kind)}' is a built-in tool this route cannot "
                                           f"run (only function tools)")
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"{where}.name", "expected a string", "invalid_type")
    for key, value in tool.items():
        if key not in FUNCTION_TOOL_KEYS and value not in (None, False):
            raise unsupported(f"{where}.{key}", "this function tool option is not available on this route")
    function = {"name": name}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def tool_choice(choice: Any) -> tuple[Any, set[str] | None]:
    """(chat's tool_choice, the allowed tool names of an allowed_tools choice or None)."""
    if choice in ("auto", "none", "required"):
        return choice, None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, None
    if kind == "allowed_tools" and choice.get("mode", "auto") in ("auto", "required") \
            and isinstance(choice.get("tools"), list):
        names = set()
        for j, tool in enumerate(choice["tools"]):
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("name"), str):
                raise unsupported(f"tool_choice.tools[{j}]", "only function tools are available on this route")
            names.add(tool["name"])
        return choice.get("mode", "auto"), names
    if isinstance(choice, dict) and isinstance(kind, str):
        raise unsupported("tool_choice", f"'{_short(kind)}' tool choices are not available on this "
                                         f"route (only auto, none, required and function)")
    raise invalid("tool_choice", "expected 'auto', 'none', 'required' or a tool choice object")


def text_options(text: Any) -> dict[str, Any]:
    """`text.format` → `response_format`; `text.verbosity` → `verbosity`."""
    if text is None:
        return {}
    if not isinstance(text, dict):
        raise invalid("text", "expected an object", "invalid_type")
    out: dict[str, Any] = {}
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        pass
    elif kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise invalid("text.format", "a json_schema format needs 'name' and 'schema'")
        schema = {"name": fmt["name"], "schema": fmt["schema"]}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise unsupported("text.format.type", f"'{_short(kind)}' formats are not available on this "
                                              f"route (text, json_object, json_schema)")
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    for key, value in text.items():
        if key not in ("format", "verbosity") and value is not None:
            raise unsupported(f"text.{key}", "this text option is not available on this route")
    return out


def reasoning_effort(reasoning: Any) -> Any:
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise invalid("reasoning", "expected an object", "invalid_type")
    for key, value in reasoning.items():
        if key not in ("effort", "summary", "generate_summary") and value is not None:
            raise unsupported(f"reasoning.{key}", "this reasoning option is not available on this route")
    return reasoning.get("effort")


def check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > METADATA_PAIRS:
        raise invalid("metadata", f"expected an object of at most {METADATA_PAIRS} pairs")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS or not isinstance(value, str) or len(value) > METADATA_VALUE_CHARS:
            raise invalid("metadata", f"keys are strings of at most {METADATA_KEY_CHARS} characters, "
                                      f"values strings of at most {METADATA_VALUE_CHARS}")


def _one_of(value: Any, allowed) -> bool:
    """Membership for client values of any JSON type (a list or object is never a member, and
    must not reach a set lookup, which would raise)."""
    return isinstance(value, str) and value in allowed


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 64 else text[:64] + "…"
