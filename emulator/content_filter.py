"""Azure content filtering, triggered deterministically by markers in the user's text
(reference azure-responses-and-v1.md §5; azure-upstream-apis.md §3.6, §4.1).

Markers (anywhere in a ``user`` message, string or text parts):
- ``[[filtered-prompt]]`` (or the emulators' older ``[[content_filter]]``): the PROMPT is filtered,
  HTTP 400 ``code: "content_filter"`` (§5.1). ``[[filtered-prompt:<category>]]`` picks the category
  that trips (default ``violence``, severity ``medium``, as in the observed §5.1 body).
- ``[[filtered-completion]]`` in the last user message: the COMPLETION is filtered, HTTP 200 with
  ``finish_reason: "content_filter"``, ``content: null`` and ``choices[].content_filter_results``
  (§5.2); streamed, the first half of the answer's deltas arrive, then a chunk with
  ``finish_reason: "content_filter"`` and the annotations (§5.3). ``[[filtered-completion:<category>]]``
  picks the category (default ``violence``, severity ``high``, as in the §5.2 example).

Categories: ``hate``, ``sexual``, ``violence``, ``self_harm`` (severity results) and ``jailbreak``,
``protected_material_text``, ``protected_material_code`` (detection results) [AZ-V1P schema, §5.2].
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from .fake_model import content_text

SEVERITY_CATEGORIES = ("hate", "self_harm", "sexual", "violence")
DETECTION_CATEGORIES = ("jailbreak", "protected_material_text", "protected_material_code")
CATEGORIES = SEVERITY_CATEGORIES + DETECTION_CATEGORIES
PROMPT_MARKER = "[[filtered-prompt]]"
LEGACY_PROMPT_MARKER = "[[content_filter]]"  # what the emulators (and the gateway's tests) used first
COMPLETION_MARKER = "[[filtered-completion]]"
_ALTERNATION = "|".join(CATEGORIES)
_PROMPT = re.compile(r"\[\[(?:filtered-prompt(?::(" + _ALTERNATION + r"))?|content_filter)\]\]")
_COMPLETION = re.compile(r"\[\[filtered-completion(?::(" + _ALTERNATION + r"))?\]\]")
_SAFE = {"filtered": False, "severity": "safe"}
_NOT_DETECTED = {"filtered": False, "detected": False}


def prompt_category(messages: Any) -> str | None:
    """The category a prompt marker trips in any user message, or None."""
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "user":
            found = _PROMPT.search(content_text(message.get("content")))
            if found:
                return found.group(1) or "violence"
    return None


def completion_category(text: str) -> str | None:
    """The category a completion marker in ``text`` (the last user message) trips, or None."""
    found = _COMPLETION.search(text)
    return (found.group(1) or "violence") if found else None


def _results(names: Iterable[str], category: str | None, severity: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        if name in SEVERITY_CATEGORIES:
            out[name] = {"filtered": True, "severity": severity} if name == category else dict(_SAFE)
        else:
            out[name] = {"filtered": True, "detected": True} if name == category else dict(_NOT_DETECTED)
    return out


def prompt_results(category: str | None = None) -> dict[str, Any]:
    """Prompt annotations (§5.2 ``prompt_filter_results[].content_filter_results``, §5.1 innererror)."""
    names = ["hate", "jailbreak", "self_harm", "sexual", "violence"]
    if category is not None and category not in names:
        names.append(category)
    return _results(names, category, "medium")


def completion_results(category: str | None = None) -> dict[str, Any]:
    """Choice annotations (§5.2 ``choices[].content_filter_results``)."""
    names = ["hate", "protected_material_code", "protected_material_text", "self_harm", "sexual", "violence"]
    if category is not None and category not in names:
        names.append(category)
    return _results(names, category, "high")


def prompt_filter_results(category: str | None = None) -> list[dict[str, Any]]:
    return [{"prompt_index": 0, "content_filter_results": prompt_results(category)}]


def v1_prompt_filtered(category: str) -> dict[str, Any]:
    """The 400 body on the Foundry ``/openai/v1`` endpoint. F-RSN's sample shows ``code`` and this
    ``message`` only; ``type``/``param``/``status`` and ``innererror.content_filter_result`` (singular,
    as observed on Azure OpenAI, §5.1) are added as Azure OpenAI sends them [unconfirmed for v1]."""
    return {"error": {
        "message": "The response was filtered due to the prompt triggering a content policy.",
        "type": None, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": prompt_results(category)},
    }}


def annotate_filtered_choice(choice: dict[str, Any], category: str | None) -> dict[str, Any]:
    """Add a filtered completion's annotations to a (non-streamed or finish) choice."""
    if category is not None:
        choice["content_filter_results"] = completion_results(category)
    return choice
