"""The deterministic fake model: answers, stream pieces, token counts and embeddings.

Everything here is a pure function of the request so tests can predict it exactly:
- answer = "Hello! You said: <last user text>" cut or padded (filler words) to the word budget;
- a stream sends one piece per word (word + space, last word bare), so the concatenated deltas
  equal the non-streamed content byte for byte; JSON (structured output, tool-call arguments) is
  cut into token-like pieces instead (``json_pieces``), which concatenate back the same way;
- a "token" is a whitespace-separated word (prompt min 1); an integer of a token array is one token;
- embeddings come from SHA-256 of the input, rounded to float32 so the base64 form (little-endian
  float32, what the openai SDK requests by default) decodes to exactly the JSON float list.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from typing import Any, Iterable

DEFAULT_ANSWER_WORDS = 20
DEFAULT_EMBEDDING_DIMS = 8
MAX_EMBEDDING_INPUTS = 2048  # Azure OpenAI's limit per request; bounds the emulator's work too
_FILLER = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua"
).split()


# --- text -----------------------------------------------------------------------------------------

def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a multimodal list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def last_user_text(messages: Iterable[Any]) -> str:
    text = ""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            text = content_text(message.get("content"))
    return text


def count_words(text: str) -> int:
    return len(text.split())


def prompt_tokens_of_messages(messages: Iterable[Any]) -> int:
    total = 0
    for message in messages:
        if isinstance(message, dict):
            total += count_words(content_text(message.get("content")))
    return max(1, total)


def prompt_tokens_of_inputs(value: Any) -> int:
    """Prompt tokens of a completions ``prompt`` or an embeddings ``input`` (string, strings, token arrays)."""
    if isinstance(value, str):
        return max(1, count_words(value))
    if isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return max(1, len(value))
        return max(1, sum(prompt_tokens_of_inputs(v) if v else 0 for v in value))
    return 1


def answer_words(user_text: str, n_words: int, prefix: str = "Hello! You said: ") -> list[str]:
    words = (prefix + user_text).split()
    if len(words) >= n_words:
        return words[:n_words]
    missing = n_words - len(words)
    return words + [_FILLER[i % len(_FILLER)] for i in range(missing)]


def capped(words: list[str], limit: Any) -> tuple[list[str], str]:
    """Apply ``max_tokens``/``max_completion_tokens``: (words kept, finish_reason)."""
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(words):
        return words[:limit], "length"
    return words, "stop"


def stream_pieces(words: list[str]) -> list[str]:
    """One delta per word; ``"".join(pieces) == " ".join(words)``."""
    if not words:
        return []
    return [w + " " for w in words[:-1]] + [words[-1]]


# A word (with the spaces before it), a run of punctuation (with its spaces), or trailing spaces:
# every character matches, so the pieces always join back to the text.
_JSON_PIECE = re.compile(r"\s*\w+|\s*[^\w\s]+|\s+")


def json_pieces(text: str) -> list[str]:
    """Token-like pieces of a JSON text (``{"``, ``city``, ``":"``, ``Paris``, ``"}``): how the real
    service streams tool-call arguments, several characters per delta."""
    return _JSON_PIECE.findall(text)


def answer_for_prompt(prompt: Any, n_words: int) -> list[str]:
    """Completions answer: the prompt plays the user message (first prompt when a list)."""
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    if not isinstance(prompt, str):  # a token array
        prompt = " ".join(str(t) for t in prompt) if isinstance(prompt, list) else ""
    return answer_words(prompt, n_words)


# --- embeddings -----------------------------------------------------------------------------------

def embedding_inputs(value: Any) -> list[Any] | None:
    """Normalise ``input`` to a list of items (each a string or a token array); None when invalid."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value]  # one token array
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return list(value)
    return None


def embedding_vector(item: Any, dims: int = DEFAULT_EMBEDDING_DIMS) -> list[float]:
    """Unit-length deterministic vector, each component exactly representable as float32."""
    seed = item.encode("utf-8") if isinstance(item, str) else ",".join(map(str, item)).encode()
    raw = b""
    block = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(seed + block.to_bytes(4, "little")).digest()
        block += 1
    ints = struct.unpack(f"<{dims}I", raw[: dims * 4])
    values = [(i / 0xFFFFFFFF) * 2.0 - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in values))))


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def decode_base64_embedding(text: str) -> list[float]:
    data = base64.b64decode(text)
    return list(struct.unpack(f"<{len(data) // 4}f", data))
