"""Five-field cron expressions (minute hour day-of-month month day-of-week): validation only.

The scheduler adapter fires them; this module only says whether an expression is
well formed, with a message that names the field at fault.
"""

from __future__ import annotations

import re

_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {
            m: i + 1
            for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])
        },
    ),
    ("day of week", 0, 7, {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}),
)
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


class CronError(ValueError):
    """A cron expression that is not five valid fields."""


def _value(token: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    number = names.get(token) if not token.isdigit() else int(token)
    if number is None:
        raise CronError(f"{field}: {token!r} is not a number or a known name")
    if not low <= number <= high:
        raise CronError(f"{field}: {number} is outside {low}-{high}")
    return number


def validate_cron(expression: str) -> str:
    """Return the expression with single spaces; raise CronError naming the bad field."""
    fields = expression.lower().split()
    if len(fields) != 5:
        raise CronError(f"cron needs exactly 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    for text, (field, low, high, names) in zip(fields, _FIELDS, strict=True):
        for item in text.split(","):
            match = _ITEM.match(item)
            if not match:
                raise CronError(f"{field}: {item!r} is not '*', 'N', 'N-M', a list or a '/step'")
            base, step = match.group(1), match.group(2)
            if step is not None and int(step) == 0:
                raise CronError(f"{field}: step 0 never fires")
            if base != "*":
                start, _, end = base.partition("-")
                first = _value(start, low, high, names, field)
                if end:
                    last = _value(end, low, high, names, field)
                    if last < first:
                        raise CronError(f"{field}: range {base!r} runs backwards")
    return " ".join(fields)
