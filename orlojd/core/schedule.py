"""TaskSchedule slots and the decision whether to fire one: pure, time passed in.

Called by ``engine/scheduler.py`` (the APScheduler trigger and ``TaskScheduler.fire_due``)
and by status. Two parts:

Slot arithmetic. A slot is a minute the cron expression (``core/cron.py``, Vixie semantics)
matches on the wall clock of the schedule's IANA zone, returned in UTC. Daylight saving: a
wall time that does not exist (spring forward) is no slot; a wall time that happens twice
(fall back) is one slot, at its first occurrence. ``next_slot`` and ``latest_slot`` walk the
matching days, then hours and minutes, in wall-clock order; with the first occurrence of each
wall time that order is also UTC order, so the first candidate past the bound is the answer.
Search stops after 400 years (the Gregorian calendar's period): None means never.

Decisions. ``due`` looks only at the latest slot at or before ``now`` (never an earlier
missed one: no backfill) and says fire it, skip it as missed (later than
``startingDeadlineSeconds``), nothing to do, or suspended. ``admit`` then applies the
concurrency policy to the schedule's unfinished runs: forbid skips, allow fires, replace
cancels them and fires. A run's queue digest ``slot_digest(slot)`` makes each slot run once.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import MAXYEAR, MINYEAR, UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from orlojd.core.cron import CronFields, parse_cron

SEARCH_YEARS = 400  # the Gregorian calendar repeats every 400 years: nothing by then means never
DEFAULT_DEADLINE = timedelta(seconds=300)


@lru_cache(maxsize=1024)
def cron_fields(expression: str) -> CronFields:
    """``parse_cron``, remembered (``CronFields`` is immutable); raises CronError."""
    return parse_cron(expression)


def never_fires(cron: str) -> bool:
    """True for an expression no calendar day matches (``0 0 30 2 *``); raises CronError if malformed."""
    return cron_fields(cron).impossible() is not None


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass a timezone-aware time")
    return moment.astimezone(UTC)


def _instant(zone: ZoneInfo, day: date, hour: int, minute: int) -> datetime | None:
    """The UTC instant of a wall time (its first occurrence), or None when the wall time does not exist."""
    wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)  # fold=0: the first occurrence
    instant = wall.astimezone(UTC)
    back = instant.astimezone(zone)
    if (back.year, back.month, back.day, back.hour, back.minute) != (day.year, day.month, day.day, hour, minute):
        return None  # skipped by a spring-forward transition
    return instant


def _days(fields: CronFields, start: date, forward: bool) -> Iterator[date]:
    """Matching days from ``start`` on (or back), for at most SEARCH_YEARS."""
    if forward:
        years = range(start.year, min(start.year + SEARCH_YEARS, MAXYEAR + 1))
    else:
        years = range(start.year, max(start.year - SEARCH_YEARS, MINYEAR - 1), -1)
    months = fields.months if forward else fields.months[::-1]
    first_month = (start.year, start.month)
    for year in years:
        for month in months:
            if (year, month) != first_month and ((year, month) < first_month) == forward:
                continue  # a month on the wrong side of ``start``
            length = calendar.monthrange(year, month)[1]
            for number in range(1, length + 1) if forward else range(length, 0, -1):
                day = date(year, month, number)
                if (day >= start if forward else day <= start) and fields.day_matches(day):
                    yield day


def next_slot(cron: str, tz: str, after: datetime) -> datetime | None:
    """The first slot strictly after ``after``, in UTC; None when the expression never fires."""
    fields = cron_fields(cron)
    if fields.impossible() is not None:
        return None
    zone = ZoneInfo(tz)
    after = _aware(after)
    # A wall time before after's own has its first occurrence before ``after``: start there.
    start = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    for day in _days(fields, start.date(), forward=True):
        first = day == start.date()
        for hour in fields.hours:
            if first and hour < start.hour:
                continue
            for minute in fields.minutes:
                if first and hour == start.hour and minute < start.minute:
                    continue
                slot = _instant(zone, day, hour, minute)
                if slot is not None and slot > after:
                    return slot
    return None


def latest_slot(cron: str, tz: str, at_or_before: datetime) -> datetime | None:
    """The last slot at or before ``at_or_before``, in UTC; None when there is none (never fires)."""
    fields = cron_fields(cron)
    if fields.impossible() is not None:
        return None
    zone = ZoneInfo(tz)
    bound = _aware(at_or_before)
    local = bound.astimezone(zone)
    # In the second pass of a repeated hour, later wall times had their first occurrence already.
    ahead = (local.replace(fold=0).utcoffset() or timedelta()) - (local.utcoffset() or timedelta())
    start = (local.replace(tzinfo=None) + max(ahead, timedelta())).replace(second=0, microsecond=0)
    for day in _days(fields, start.date(), forward=False):
        first = day == start.date()
        for hour in reversed(fields.hours):
            if first and hour > start.hour:
                continue
            for minute in reversed(fields.minutes):
                if first and hour == start.hour and minute > start.minute:
                    continue
                slot = _instant(zone, day, hour, minute)
                if slot is not None and slot <= bound:
                    return slot
    return None


def slot_text(slot: datetime) -> str:
    """A slot in UTC ISO 8601 with a Z: ``2026-11-25T10:00:00Z``."""
    return _aware(slot).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def slot_digest(slot: datetime) -> str:
    """The queue digest of a slot's run: with the schedule's key, unique per slot (run once)."""
    return "slot:" + slot_text(slot)


# -- decisions ---------------------------------------------------------------------------------


class ConcurrencyPolicy(StrEnum):
    FORBID = "forbid"
    ALLOW = "allow"
    REPLACE = "replace"


class Verdict(StrEnum):
    FIRE = "fire"
    SKIP = "skip"  # recorded with a SkipReason, never fired later
    IDLE = "idle"  # no slot yet, or the latest slot is already settled
    SUSPENDED = "suspended"
    DUPLICATE = "duplicate"  # the slot's run is already in the queue (another daemon, or before a restart)


class SkipReason(StrEnum):
    MISSED_DEADLINE = "missed_deadline"
    FORBID = "forbid"


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What ``due`` needs to know about one schedule.

    ``last_slot`` is the latest slot already settled (fired, skipped or found queued) by this
    process; None on a first look, when a slot past its deadline is not reported as missed
    (it may have fired before a restart, or predate the schedule).
    """

    cron: str
    time_zone: str = "UTC"
    starting_deadline: timedelta = DEFAULT_DEADLINE
    concurrency: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    suspended: bool = False
    last_slot: datetime | None = None


@dataclass(frozen=True, slots=True)
class SlotDecision:
    """``slot`` is the latest slot at or before now (None when there is none yet)."""

    verdict: Verdict
    slot: datetime | None = None
    reason: SkipReason | None = None
    cancel: tuple[str, ...] = ()  # run ids to cancel before firing (replace)
    active: tuple[str, ...] = ()  # the unfinished runs that made forbid skip

    @property
    def settles(self) -> bool:
        """Whether the slot is dealt with for good (a suspended slot may still fire on resume)."""
        return self.slot is not None and self.verdict is not Verdict.SUSPENDED


def late(slot: datetime, now: datetime, deadline: timedelta) -> bool:
    """Past the starting deadline, counted in whole seconds (a run in the slot's own second is on time)."""
    lateness = _aware(now) - _aware(slot)
    return int(lateness.total_seconds()) > int(deadline.total_seconds())


def due(state: ScheduleState, now: datetime) -> SlotDecision:
    """Fire, skip as missed, nothing, or suspended, for the latest slot at or before ``now`` only."""
    slot = latest_slot(state.cron, state.time_zone, now)
    if slot is None:
        return SlotDecision(Verdict.IDLE)
    if state.suspended:
        return SlotDecision(Verdict.SUSPENDED, slot)
    if state.last_slot is not None and slot <= _aware(state.last_slot):
        return SlotDecision(Verdict.IDLE, slot)
    if late(slot, now, state.starting_deadline):
        if state.last_slot is None:
            return SlotDecision(Verdict.IDLE, slot)
        return SlotDecision(Verdict.SKIP, slot, SkipReason.MISSED_DEADLINE)
    return SlotDecision(Verdict.FIRE, slot)


def admit(decision: SlotDecision, policy: ConcurrencyPolicy, active: Sequence[tuple[str, str]]) -> SlotDecision:
    """Apply the concurrency policy to a FIRE decision, given the unfinished runs as (id, digest).

    A run carrying this slot's own digest means the slot is already queued: DUPLICATE, and it
    is neither a reason to skip nor a run to cancel.
    """
    if decision.verdict is not Verdict.FIRE or decision.slot is None:
        return decision
    mine = slot_digest(decision.slot)
    if any(digest == mine for _, digest in active):
        return replace(decision, verdict=Verdict.DUPLICATE)
    others = tuple(run_id for run_id, digest in active if digest != mine)
    if not others or policy is ConcurrencyPolicy.ALLOW:
        return decision
    if policy is ConcurrencyPolicy.FORBID:
        return SlotDecision(Verdict.SKIP, decision.slot, SkipReason.FORBID, active=others)
    return replace(decision, cancel=others)
