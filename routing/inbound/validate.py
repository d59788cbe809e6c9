"""Inbound request validation: a clear 400 naming the parameter, before any upstream is called.

Only what the gateway itself relies on is checked (the shape of `messages`, `stream`,
`stream_options`, the input of embeddings/completions); the upstream validates the rest.
"""

from __future__ import annotations

from typing import Any

from routing.errors import GatewayError


def _bad(param: str, message: str, code: str = "invalid_type") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def _missing(param: str) -> GatewayError:
    return GatewayError(400, f"Missing required parameter: '{param}'.", param=param,
                        code="missing_required_parameter")


def _check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' must be a non-empty array of message objects.")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{index}]", f"messages[{index}] must be an object.")
        if not isinstance(message.get("role"), str):
            raise _bad(f"messages[{index}].role", f"messages[{index}].role must be a string.")


def _check_input(key: str):
    def check(body: dict[str, Any]) -> None:
        value = body.get(key)
        if value is None:
            raise _missing(key)
        if isinstance(value, str):
            return
        if isinstance(value, list) and value and all(
                isinstance(v, (str, int)) or (isinstance(v, list) and all(isinstance(t, int) for t in v))
                for v in value):
            return
        raise _bad(key, f"'{key}' must be a string, an array of strings, or an array of tokens.")
    return check


def _check_stream(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "'stream' must be a boolean.")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("stream_options", "'stream_options' must be an object.")


CHECKS = {
    "chat/completions": (_check_messages, _check_stream),
    "completions": (_check_input("prompt"), _check_stream),
    "embeddings": (_check_input("input"),),
}


def validate_body(operation: str, body: dict[str, Any]) -> None:
    for check in CHECKS[operation]:
        check(body)
