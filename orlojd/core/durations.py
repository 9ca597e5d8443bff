"""Go-style duration strings ("250ms", "1m30s", "24h"): parsing and one canonical form.

Manifests carry durations as strings in both dialects. Every duration is normalised to
its canonical form before digests are taken, so "60s" and "1m" never show as a change.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_MAX_MS = 366 * 24 * 3_600_000


class DurationError(ValueError):
    """A duration string that is not of the form 250ms, 30s, 5m, 1h30m."""


def parse_ms(text: str) -> int:
    """Milliseconds in a duration string; raises DurationError with a usable message."""
    raw = text.strip()
    if raw in ("0", ""):
        if raw == "":
            raise DurationError("empty duration; use a value such as 30s, 5m or 1h")
        return 0
    pos = 0
    total = 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or pos == 0:
        raise DurationError(f"invalid duration {text!r}; use a value such as 250ms, 30s, 5m or 1h30m")
    if total > _MAX_MS:
        raise DurationError(f"duration {text!r} is longer than a year")
    return round(total)


def format_ms(ms: int) -> str:
    """The canonical string for a number of milliseconds: largest units first, no zero parts."""
    if ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _normalise(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A bare number is taken as seconds, as in startingDeadlineSeconds.
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0 or seconds * 1000 > _MAX_MS:
            raise ValueError(f"invalid duration {value!r}; use 0 to a year, such as 30s, 5m or 1h30m")
        return format_ms(round(seconds * 1000))
    if isinstance(value, str):
        try:
            return format_ms(parse_ms(value))
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    return value


def _check_str(value: str) -> str:
    return value


Duration = Annotated[str, BeforeValidator(_normalise), AfterValidator(_check_str)]
"""A duration field: accepts "1m30s" (or a number of seconds), stores the canonical form."""
