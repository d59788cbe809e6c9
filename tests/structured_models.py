"""Pydantic models for structured-output tests (nested objects, arrays, enums, nullables): the
shapes `response_format: json_schema` and strict function tools are exercised with."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel


class Step(BaseModel):
    explanation: str
    output: float


class Solution(BaseModel):
    steps: list[Step]
    final_answer: str
    confidence: Literal["low", "high"]
    note: Optional[int]
