"""Slot arithmetic and firing decisions (``orlojd.core.schedule``), checked against brute force.

The property tests build each cron field together with the set of values it means, so the
reference below never parses an expression: it walks UTC minutes (or days) one by one, reads
the wall clock in the zone and asks "is this a slot?" straight from Vixie's rules: minute,
hour and month match; the day matches by day-of-month OR day-of-week when both are
restricted (neither starts with '*'), by both otherwise; a repeated wall time (fall back)
counts at its first occurrence only. ``next_slot``/``latest_slot`` must agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orlojd.core.cron import DAY_NAMES, MONTH_NAMES, CronError, parse_cron
from orlojd.core.manifests.registry import validate_object
from orlojd.core.schedule import (
    ConcurrencyPolicy,
    ScheduleState,
    SkipReason,
    SlotDecision,
    Verdict,
    admit,
    due,
    latest_slot,
    never_fires,
    next_slot,
    slot_digest,
    slot_text,
)

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)
MINUTE = timedelta(minutes=1)
ZONES = ["UTC", "Europe/Prague", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago"]
# Near daylight-saving transitions (spring and autumn) of those zones, and some ordinary times.
ANCHORS = [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Prague spring forward
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Prague fall back
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York spring forward
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # New York fall back
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe back half an hour
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe forward half an hour
    datetime(2026, 4, 5, 3, 0, tzinfo=UTC),  # Santiago: midnight repeated
    datetime(2026, 9, 6, 4, 0, tzinfo=UTC),  # Santiago: midnight skipped
    datetime(2027, 2, 28, 12, 0, tzinfo=UTC),
    datetime(2028, 2, 28, 23, 59, tzinfo=UTC),
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- expressions with their meaning, built together ----------------------------------------------


@dataclass(frozen=True)
class Expression:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.weekday() + 1) % 7 in self.weekdays  # Monday is 1, Sunday 0
        if self.any_day or self.any_weekday:
            return by_date and by_weekday
        return by_date or by_weekday

    def is_slot(self, instant: datetime, zone: ZoneInfo) -> bool:
        local = instant.astimezone(zone)
        if local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset():
            return False  # the second time this wall clock reading happens
        return local.minute in self.minutes and local.hour in self.hours and self.day_matches(local.date())


@st.composite
def field(
    draw: st.DrawFn, low: int, high: int, names: tuple[str, ...] = (), first_name: int = 0
) -> tuple[str, set[int], bool]:
    """(text, values, starts with '*') for one cron field."""

    def word(n: int) -> str:
        if names and first_name <= n < first_name + len(names) and draw(st.booleans()):
            return names[n - first_name]
        return str(n)

    shape = draw(st.sampled_from(["star", "star-step", "list", "list", "list"]))
    if shape == "star":
        return "*", set(range(low, high + 1)), True
    if shape == "star-step":
        step = draw(st.integers(1, high - low + 1))
        return f"*/{step}", set(range(low, high + 1, step)), True
    texts: list[str] = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        first = draw(st.integers(low, high))
        kind = draw(st.sampled_from(["one", "range", "range-step", "from-step"]))
        if kind == "one":
            texts.append(word(first))
            values.add(first)
        elif kind == "from-step":
            step = draw(st.integers(1, high - low + 1))
            texts.append(f"{first}/{step}")
            values.update(range(first, high + 1, step))
        else:
            last = draw(st.integers(first, high))
            step = draw(st.integers(1, last - first + 1)) if kind == "range-step" else 1
            texts.append(f"{word(first)}-{word(last)}" + (f"/{step}" if kind == "range-step" else ""))
            values.update(range(first, last + 1, step))
    return ",".join(texts), values, False


@st.composite
def expressions(draw: st.DrawFn, frequent: bool = True) -> Expression:
    minute = draw(field(0, 59))
    hour = draw(field(0, 23))

    # Usually every day and month, so slots are close enough to find minute by minute.
    def mostly_star(strategy: st.SearchStrategy[tuple[str, set[int], bool]], low: int, high: int, odds: int) -> Any:
        if not frequent or draw(st.integers(0, odds)) == 0:
            return draw(strategy)
        return "*", set(range(low, high + 1)), True

    day = mostly_star(field(1, 31), 1, 31, 3)
    month = mostly_star(field(1, 12, MONTH_NAMES, 1), 1, 12, 5)
    weekday = mostly_star(field(0, 7, DAY_NAMES, 0), 0, 7, 2)
    return Expression(
        " ".join(part[0] for part in (minute, hour, day, month, weekday)),
        frozenset(minute[1]),
        frozenset(hour[1]),
        frozenset(day[1]),
        frozenset(month[1]),
        frozenset(w % 7 for w in weekday[1]),
        day[2],
        weekday[2],
    )


moments = st.builds(
    lambda anchor, minutes, seconds: anchor + timedelta(minutes=minutes, seconds=seconds),
    st.sampled_from(ANCHORS),
    st.integers(-2 * 1440, 2 * 1440),
    st.sampled_from([0, 0, 1, 30, 59.999]),
)


# -- against brute force --------------------------------------------------------------------------

WINDOW = timedelta(hours=36)


@PROPERTY
@given(expressions(), st.sampled_from(ZONES), moments)
def test_next_slot_is_the_first_slot_minute_by_minute(expression: Expression, tz: str, after: datetime) -> None:
    zone = ZoneInfo(tz)
    candidate = after.replace(second=0, microsecond=0) + MINUTE
    expected = None
    while candidate <= after + WINDOW:
        if expression.is_slot(candidate, zone):
            expected = candidate
            break
        candidate += MINUTE
    found = next_slot(expression.text, tz, after)
    if expected is not None:
        assert found == expected
    else:
        assert found is None or (found > after + WINDOW and expression.is_slot(found, zone))


@PROPERTY
@given(expressions(), st.sampled_from(ZONES), moments)
def test_latest_slot_is_the_last_slot_minute_by_minute(expression: Expression, tz: str, bound: datetime) -> None:
    zone = ZoneInfo(tz)
    candidate = bound.replace(second=0, microsecond=0)
    expected = None
    while candidate >= bound - WINDOW:
        if expression.is_slot(candidate, zone):
            expected = candidate
            break
        candidate -= MINUTE
    found = latest_slot(expression.text, tz, bound)
    if expected is not None:
        assert found == expected
    else:
        assert found is None or (found < bound - WINDOW and expression.is_slot(found, zone))


@PROPERTY
@given(expressions(frequent=False), st.dates(date(2020, 1, 1), date(2040, 12, 31)))
def test_days_follow_vixie_rules_day_by_day(expression: Expression, start: date) -> None:
    text = "0 0 " + " ".join(expression.text.split()[2:])
    after = datetime(start.year, start.month, start.day, tzinfo=UTC)
    expected = None
    for offset in range(1, 6 * 366):
        day = start + timedelta(days=offset)
        if expression.day_matches(day):
            expected = datetime(day.year, day.month, day.day, tzinfo=UTC)
            break
    found = next_slot(text, "UTC", after)
    if expected is not None:
        assert found == expected
    else:
        assert found is None or expression.day_matches(found.date())


@PROPERTY
@given(expressions(frequent=False), st.sampled_from(ZONES), moments)
def test_next_and_latest_agree(expression: Expression, tz: str, moment: datetime) -> None:
    following = next_slot(expression.text, tz, moment)
    if following is None:
        assert never_fires(expression.text)
        assert latest_slot(expression.text, tz, moment) is None
        return
    assert following > moment
    assert latest_slot(expression.text, tz, following) == following
    previous = latest_slot(expression.text, tz, following - timedelta(microseconds=1))
    assert previous is None or previous <= moment  # nothing in between
    if previous is not None:
        assert next_slot(expression.text, tz, previous) == following


@PROPERTY
@given(
    st.lists(st.sampled_from([29, 30, 31]), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from([2, 4, 6, 9, 11]), min_size=1, max_size=3, unique=True),
)
def test_never_fires_matches_eight_years_of_days(days: list[int], months: list[int]) -> None:
    text = f"0 0 {','.join(map(str, days))} {','.join(map(str, months))} *"
    start = date(2026, 1, 1)
    exists = any(
        (start + timedelta(days=n)).day in days and (start + timedelta(days=n)).month in months for n in range(8 * 366)
    )
    assert never_fires(text) is (not exists)
    assert (next_slot(text, "UTC", datetime(2026, 1, 1, tzinfo=UTC)) is None) is (not exists)


# -- worked examples --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        ("0 0 * * 0", "2026-03-25T12:00Z", "2026-03-29T00:00Z"),  # 0 is Sunday (APScheduler would say Monday)
        ("0 0 * * 7", "2026-03-25T12:00Z", "2026-03-29T00:00Z"),  # so is 7
        ("0 0 * * sun", "2026-03-25T12:00Z", "2026-03-29T00:00Z"),
        ("0 0 * * 1", "2026-03-25T12:00Z", "2026-03-30T00:00Z"),
        ("0 0 * * 5-7", "2026-03-25T12:00Z", "2026-03-27T00:00Z"),
        ("0 0 13 * 5", "2026-03-25T12:00Z", "2026-03-27T00:00Z"),  # Friday OR the 13th: a Friday first
        ("0 0 13 * 5", "2026-04-04T12:00Z", "2026-04-10T00:00Z"),
        ("0 0 13 * 5", "2026-04-10T12:00Z", "2026-04-13T00:00Z"),  # the 13th (a Monday)
        ("0 0 */2 * 1", "2026-03-25T12:00Z", "2026-04-13T00:00Z"),  # '*/2' does not restrict: odd day AND Monday
        ("0 0 29 2 *", "2026-03-01T00:00Z", "2028-02-29T00:00Z"),
        ("30 9 1 jan,jul *", "2026-03-01T00:00Z", "2026-07-01T09:30Z"),
        ("*/15 * * * *", "2026-03-01T00:00Z", "2026-03-01T00:15Z"),
        ("0 12 * * *", "2026-03-01T12:00Z", "2026-03-02T12:00Z"),  # strictly after
        ("0 */6 * * *", "2026-03-01T12:00:01Z", "2026-03-01T18:00Z"),
        ("5/20 * * * *", "2026-03-01T00:06Z", "2026-03-01T00:25Z"),  # 'N/S' is 'N-59/S'
    ],
)
def test_next_slot_examples(cron: str, after: str, expected: str) -> None:
    assert next_slot(cron, "UTC", at(after)) == at(expected)


@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        # Prague, spring forward 2026-03-29 02:00 -> 03:00: 02:30 does not exist that day.
        ("30 2 * * *", "Europe/Prague", "2026-03-28T12:00Z", "2026-03-30T00:30Z"),
        ("0 3 * * *", "Europe/Prague", "2026-03-28T12:00Z", "2026-03-29T01:00Z"),
        ("*/30 * * * *", "Europe/Prague", "2026-03-29T00:45Z", "2026-03-29T01:00Z"),  # 01:30 CET then 03:00 CEST
        # Prague, fall back 2026-10-25 03:00 -> 02:00: 02:30 happens twice and fires once, at CEST.
        ("30 2 * * *", "Europe/Prague", "2026-10-24T12:00Z", "2026-10-25T00:30Z"),
        ("30 2 * * *", "Europe/Prague", "2026-10-25T00:30Z", "2026-10-26T01:30Z"),
        ("0 * * * *", "Europe/Prague", "2026-10-25T00:00Z", "2026-10-25T02:00Z"),  # 02:00 CEST, then 03:00 CET
        # New York, spring forward 2026-03-08 02:00 -> 03:00 and fall back 2026-11-01 02:00 -> 01:00.
        ("30 2 * * *", "America/New_York", "2026-03-07T12:00Z", "2026-03-09T06:30Z"),
        ("30 1 * * *", "America/New_York", "2026-10-31T12:00Z", "2026-11-01T05:30Z"),
        ("30 1 * * *", "America/New_York", "2026-11-01T05:30Z", "2026-11-02T06:30Z"),
        ("0 9 * * *", "America/New_York", "2026-03-07T15:00Z", "2026-03-08T13:00Z"),  # 09:00 EDT
        # Santiago skips midnight in September: a midnight job skips that day.
        ("0 0 * * *", "America/Santiago", "2026-09-05T12:00Z", "2026-09-07T03:00Z"),
    ],
)
def test_daylight_saving(cron: str, tz: str, after: str, expected: str) -> None:
    assert next_slot(cron, tz, at(after)) == at(expected)
    assert latest_slot(cron, tz, at(expected)) == at(expected)


def test_latest_slot_in_the_repeated_hour_is_the_first_pass() -> None:
    # 06:40 UTC is 01:40 EST, the second pass; 01:59 EDT (05:59 UTC) was the last slot.
    assert latest_slot("* * * * *", "America/New_York", at("2026-11-01T06:40Z")) == at("2026-11-01T05:59Z")
    assert latest_slot("* * * * *", "America/New_York", at("2026-11-01T07:00Z")) == at("2026-11-01T07:00Z")
    assert next_slot("* * * * *", "America/New_York", at("2026-11-01T05:59Z")) == at("2026-11-01T07:00Z")


@pytest.mark.parametrize(
    "cron", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *", "0 0 30,31 feb *", "* * 31 9 */2", "0 0 31 4-6/2 *"]
)
def test_never_fires(cron: str) -> None:
    assert never_fires(cron)
    assert next_slot(cron, "UTC", at("2026-01-01T00:00Z")) is None
    assert latest_slot(cron, "UTC", at("2026-01-01T00:00Z")) is None


@pytest.mark.parametrize(
    "cron", ["0 0 29 2 *", "0 0 30 2 1", "0 0 31 * *", "0 0 31 4,5 *", "0 0 30 2 mon", "0 0 29 2 */7", "0 0 * 2 *"]
)
def test_fires_sometime(cron: str) -> None:
    assert not never_fires(cron)
    assert next_slot(cron, "UTC", at("2026-01-01T00:00Z")) is not None


def test_never_fires_rejects_a_malformed_expression() -> None:
    with pytest.raises(CronError):
        never_fires("0 0 * *")


def test_parse_folds_sunday_and_names() -> None:
    fields = parse_cron("0 0 1 jan-mar/2 sat-7")
    assert fields.months == (1, 3) and fields.weekdays == (0, 6)
    assert not fields.any_day and not fields.any_weekday
    assert parse_cron("0 0 */2 * *").any_day


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        next_slot("* * * * *", "UTC", datetime(2026, 1, 1))


def test_a_schedule_that_never_fires_is_a_manifest_error_naming_the_field() -> None:
    spec = {"taskRef": "nightly", "schedule": "0 0 31 4 *"}
    result = validate_object({"kind": "TaskSchedule", "metadata": {"name": "s"}, "spec": spec})
    assert result.obj is None
    [problem] = result.problems
    assert problem.path == ("spec", "schedule")
    assert problem.message == "day of month: 31 never occurs in April, so this schedule would never fire"


def test_slot_digest_is_utc_iso() -> None:
    slot = datetime(2026, 11, 25, 11, 0, tzinfo=ZoneInfo("Europe/Prague"))
    assert slot_text(slot) == "2026-11-25T10:00:00Z"
    assert slot_digest(slot) == "slot:2026-11-25T10:00:00Z"


# -- decisions ---------------------------------------------------------------------------------------

HOURLY = ScheduleState(cron="0 * * * *", starting_deadline=timedelta(seconds=300))


def state(**changes: Any) -> ScheduleState:
    return replace(HOURLY, **changes)


def test_fires_the_latest_slot_within_the_deadline() -> None:
    decision = due(state(last_slot=at("2026-03-01T09:00Z")), at("2026-03-01T10:04Z"))
    assert decision == SlotDecision(Verdict.FIRE, at("2026-03-01T10:00Z"))


def test_a_first_look_fires_a_slot_still_within_its_deadline() -> None:
    assert due(state(), at("2026-03-01T10:00:00.5Z")) == SlotDecision(Verdict.FIRE, at("2026-03-01T10:00Z"))


def test_deadline_boundary_in_whole_seconds() -> None:
    settled = state(last_slot=at("2026-03-01T09:00Z"))
    assert due(settled, at("2026-03-01T10:05:00.9Z")).verdict is Verdict.FIRE
    skipped = due(settled, at("2026-03-01T10:05:01Z"))
    assert skipped == SlotDecision(Verdict.SKIP, at("2026-03-01T10:00Z"), SkipReason.MISSED_DEADLINE)


def test_a_zero_deadline_still_fires_within_the_slots_second() -> None:
    zero = state(starting_deadline=timedelta(0), last_slot=at("2026-03-01T09:00Z"))
    assert due(zero, at("2026-03-01T10:00:00.2Z")).verdict is Verdict.FIRE
    assert due(zero, at("2026-03-01T10:00:01Z")).verdict is Verdict.SKIP


def test_no_backfill_after_a_long_gap() -> None:
    # Settled at 09:00, next looked at three days later: only the latest slot is considered, and it is late.
    decision = due(state(last_slot=at("2026-03-01T09:00Z")), at("2026-03-04T12:30Z"))
    assert decision == SlotDecision(Verdict.SKIP, at("2026-03-04T12:00Z"), SkipReason.MISSED_DEADLINE)
    # The gap's slot within the deadline fires, the many before it never do.
    assert due(state(last_slot=at("2026-03-01T09:00Z")), at("2026-03-04T12:02Z")) == SlotDecision(
        Verdict.FIRE, at("2026-03-04T12:00Z")
    )


def test_a_first_look_past_the_deadline_reports_nothing() -> None:
    # It may have fired before a restart, or predate the schedule: not claimed as missed.
    assert due(state(), at("2026-03-01T10:30Z")) == SlotDecision(Verdict.IDLE, at("2026-03-01T10:00Z"))


def test_a_settled_slot_is_idle() -> None:
    assert due(state(last_slot=at("2026-03-01T10:00Z")), at("2026-03-01T10:01Z")).verdict is Verdict.IDLE


def test_suspended_does_not_settle() -> None:
    decision = due(state(suspended=True, last_slot=at("2026-03-01T09:00Z")), at("2026-03-01T10:01Z"))
    assert decision == SlotDecision(Verdict.SUSPENDED, at("2026-03-01T10:00Z"))
    assert not decision.settles


def test_nothing_due_before_the_first_slot_and_never_for_an_impossible_day() -> None:
    assert due(state(cron="0 0 30 2 *"), at("2026-03-01T10:00Z")) == SlotDecision(Verdict.IDLE)


FIRE = SlotDecision(Verdict.FIRE, at("2026-03-01T10:00Z"))
EARLIER = ("run-9", "slot:2026-03-01T09:00:00Z")


def test_forbid_skips_while_a_run_is_active() -> None:
    assert admit(FIRE, ConcurrencyPolicy.FORBID, []) == FIRE
    skipped = admit(FIRE, ConcurrencyPolicy.FORBID, [EARLIER])
    assert skipped == SlotDecision(Verdict.SKIP, FIRE.slot, SkipReason.FORBID, active=("run-9",))


def test_allow_fires_alongside() -> None:
    assert admit(FIRE, ConcurrencyPolicy.ALLOW, [EARLIER]) == FIRE


def test_replace_cancels_then_fires() -> None:
    assert admit(FIRE, ConcurrencyPolicy.REPLACE, [EARLIER]) == SlotDecision(Verdict.FIRE, FIRE.slot, cancel=("run-9",))


@pytest.mark.parametrize("policy", list(ConcurrencyPolicy))
def test_the_slots_own_run_means_already_queued(policy: ConcurrencyPolicy) -> None:
    mine = ("run-10", "slot:2026-03-01T10:00:00Z")
    assert admit(FIRE, policy, [EARLIER, mine]).verdict is Verdict.DUPLICATE


def test_admit_leaves_other_decisions_alone() -> None:
    skip = SlotDecision(Verdict.SKIP, FIRE.slot, SkipReason.MISSED_DEADLINE)
    assert admit(skip, ConcurrencyPolicy.REPLACE, [EARLIER]) == skip
