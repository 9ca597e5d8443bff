"""Five-field cron expressions (minute hour day-of-month month day-of-week): parsing and validation.

``parse_cron`` turns an expression into ``CronFields`` (the matching values of each field);
``validate_cron`` is what manifest validation calls: it normalises the spacing and raises
``CronError`` naming the field at fault, also for an expression that can never fire (the 30th
of February). The slot arithmetic built on ``CronFields`` lives in ``core/schedule.py``.

Semantics are Vixie cron's: ``*``, numbers, names (``jan``, ``mon``), ranges ``N-M``, lists
and steps (``*/15``, ``1-10/2``, ``N/S`` meaning ``N-max/S``); day-of-week 0-6 with 7 also
Sunday. When both day-of-month and day-of-week are restricted, a day matches if either one
matches; a field that starts with ``*`` (``*``, ``*/2``) does not restrict, and then a day must
match both (as in Vixie cron, where ``0 0 */2 * mon`` is odd days that are Mondays).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_TITLES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# The longest each month can be (February: in a leap year).
MONTH_DAYS_MAX = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(MONTH_NAMES)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(DAY_NAMES)}),
)
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


class CronError(ValueError):
    """A cron expression that is not five valid fields, or one that never fires."""


@dataclass(frozen=True, slots=True)
class CronFields:
    """The values each field matches, sorted; weekdays 0 (Sunday) to 6, 7 already folded into 0."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    any_day: bool  # the day-of-month field starts with '*'
    any_weekday: bool  # the day-of-week field starts with '*'

    def day_matches(self, day: date) -> bool:
        """Whether the schedule fires on this (local) calendar day at all (Vixie's OR rule)."""
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return by_date and by_weekday
        return by_date or by_weekday

    def impossible(self) -> str | None:
        """Why no calendar day ever matches (the 30th of February), or None when some day does.

        Only a restricted day-of-month with an unrestricted day-of-week can miss every day: with
        both restricted any weekday matches, and every weekday falls on every valid date within
        the 400-year Gregorian cycle (the 29th of February included).
        """
        if self.any_day or not self.any_weekday:
            return None
        if any(day <= MONTH_DAYS_MAX[month - 1] for month in self.months for day in self.days):
            return None
        days = ",".join(str(d) for d in self.days)
        verb = "occurs" if len(self.days) == 1 else "occur"
        months = " or ".join(MONTH_TITLES[m - 1] for m in self.months)
        return f"day of month: {days} never {verb} in {months}, so this schedule would never fire"


def _value(token: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    number = names.get(token) if not token.isdigit() else int(token)
    if number is None:
        raise CronError(f"{field}: {token!r} is not a number or a known name")
    if not low <= number <= high:
        raise CronError(f"{field}: {number} is outside {low}-{high}")
    return number


def _field_values(text: str, field: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if not match:
            raise CronError(f"{field}: {item!r} is not '*', 'N', 'N-M', a list or a '/step'")
        base, step_text = match.group(1), match.group(2)
        step = 1 if step_text is None else int(step_text)
        if step == 0:
            raise CronError(f"{field}: step 0 never fires")
        if base == "*":
            first, last = low, high
        else:
            start, _, end = base.partition("-")
            first = _value(start, low, high, names, field)
            if end:
                last = _value(end, low, high, names, field)
                if last < first:
                    raise CronError(f"{field}: range {base!r} runs backwards")
            else:
                last = high if step_text is not None else first  # 'N/S' is 'N-max/S'
        values.update(range(first, last + 1, step))
    return values


def parse_cron(expression: str) -> CronFields:
    """The matching values of each field; raise CronError naming the bad field."""
    fields = expression.lower().split()
    if len(fields) != 5:
        raise CronError(f"cron needs exactly 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    minutes, hours, days, months, weekdays = (
        _field_values(text, field, low, high, names)
        for text, (field, low, high, names) in zip(fields, _FIELDS, strict=True)
    )
    return CronFields(
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=tuple(sorted(days)),
        months=tuple(sorted(months)),
        weekdays=tuple(sorted({w % 7 for w in weekdays})),
        any_day=fields[2].startswith("*"),
        any_weekday=fields[4].startswith("*"),
    )


def validate_cron(expression: str) -> str:
    """Return the expression with single spaces; raise CronError naming the bad field.

    An expression that is well formed but never fires (``0 0 30 2 *``) is an error too.
    """
    fields = parse_cron(expression)
    reason = fields.impossible()
    if reason is not None:
        raise CronError(reason)
    return " ".join(expression.lower().split())
