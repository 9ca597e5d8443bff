"""One tool call and what it came to: the values every tool executor takes and returns.

``ToolCall`` (name, arguments, idempotency key, timeout) goes in; ``ToolResult`` comes out of
``tool_executors.run_tool``. ``Outcome`` is an executor's raw answer (ok, output, error, size) before the
result is capped and timed; ``short_reason`` and ``describe`` make the one-line ``error`` reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_REASON", "Outcome", "ToolCall", "ToolResult", "describe", "short_reason"]

MAX_REASON = 300  # characters of an error reason

Outcome = tuple[bool, str, str | None, int]


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool: its name, the model's arguments, the idempotency key and the time it may take."""

    tool: str
    arguments: Mapping[str, Any]
    idempotency_key: str  # "task:<id>/step:<n>/attempt:<k>", made by the caller
    timeout: float  # seconds


@dataclass(frozen=True)
class ToolResult:
    """What a call came to. ``output`` goes back to the model; ``error`` is a short reason when not ok."""

    ok: bool
    output: str
    error: str | None
    duration_ms: int
    size: int  # bytes of the raw output before capping (for http, at least this many when refused early)


def short_reason(text: str) -> str:
    """``text`` on one line, at most ``MAX_REASON`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def describe(exc: BaseException) -> str:
    """``ExceptionType: message`` (the type alone when there is no message)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
