"""The embedded scheduler: fires applied TaskSchedules into the task queue, runs periodic jobs.

``TaskScheduler`` is created by the daemon's task runtime (``engine/runtime.py``) once it holds
the repository lock; ``sync(revision)`` after every apply makes one APScheduler job per applied
TaskSchedule (job id = the schedule's key), and ``add_interval`` carries the daemon's own
periodic jobs (lease reaper, queue-wait check). APScheduler only decides when to wake up:
``SlotTrigger`` asks ``core/schedule.py`` for the next slot (APScheduler's own CronTrigger
numbers weekdays from Monday and ANDs day-of-month with day-of-week, so it is not used).

Every job calls ``fire_due(now)``, which tests also call directly with an injected clock. For
each schedule it takes ``core.schedule.due`` (latest slot only, starting deadline), then, when
a slot is due, ``admit`` against the schedule's unfinished runs (forbid / allow / replace), and
enqueues the template Task with ``mode: run`` under task key = the schedule's key and digest
``slot:<UTC ISO>``. The queue's unique (task key, digest) makes a slot run once, across
restarts and between two daemons racing; a losing enqueue is reported as a duplicate.
Skipped slots are logged (``schedule_slot_skipped``) and kept in memory (``skipped_slots``).
After a slot fires, finished runs beyond ``successfulHistoryLimit`` / ``failedHistoryLimit``
(failed, dead-lettered and cancelled count as failed) are deleted, newest kept.
A newly added job runs once at once, so a slot still within its deadline when the daemon
starts (or the schedule is applied) fires late rather than not at all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from orlojd.adapters import clock
from orlojd.adapters.queue import TaskQueue
from orlojd.adapters.store import Store
from orlojd.core.cron import CronError
from orlojd.core.digest import digest_of
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.base import split_ref
from orlojd.core.runs import agent_key, run_parameters
from orlojd.core.schedule import (
    DEFAULT_DEADLINE,
    ConcurrencyPolicy,
    ScheduleState,
    SkipReason,
    SlotDecision,
    Verdict,
    admit,
    cron_fields,
    due,
    next_slot,
    slot_digest,
    slot_text,
)

log = logging.getLogger("orlojd.scheduler")

SKIPS_KEPT = 200


@dataclass(frozen=True, slots=True)
class SlotOutcome:
    """What ``fire_due`` did for one schedule: ``task_id`` when it queued a run."""

    schedule: str
    verdict: Verdict
    slot: datetime | None = None
    reason: SkipReason | None = None
    task_id: str | None = None
    cancelled: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Schedule:
    """One applied TaskSchedule with everything a firing needs, as of the last ``sync``."""

    key: str
    digest: str
    state: ScheduleState
    template_key: ResourceKey
    template: dict[str, Any]
    agent: dict[str, Any] | None
    revision: str
    history: tuple[int, int] = (10, 3)  # successfulHistoryLimit, failedHistoryLimit


class SlotTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires at every slot of a cron expression in a zone (``core.schedule.next_slot``).

    The first fire time is ``now``: a job runs once when added, then at each slot.
    """

    __slots__ = ("cron", "time_zone")

    def __init__(self, cron: str, time_zone: str) -> None:
        self.cron = cron
        self.time_zone = time_zone

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is None:
            return now
        return next_slot(self.cron, self.time_zone, previous_fire_time)

    def __str__(self) -> str:
        return f"cron[{self.cron!r} in {self.time_zone}]"


def _schedule_state(spec: dict[str, Any], suspended: bool) -> ScheduleState:
    return ScheduleState(
        cron=str(spec["schedule"]),
        time_zone=str(spec.get("timeZone") or "UTC"),
        starting_deadline=timedelta(seconds=int(spec.get("startingDeadlineSeconds", DEFAULT_DEADLINE.seconds))),
        concurrency=ConcurrencyPolicy(spec.get("concurrencyPolicy") or ConcurrencyPolicy.FORBID),
        suspended=suspended,
    )


class TaskScheduler:
    """One process's scheduler over one store; ``fire_due`` is safe to call from any thread."""

    def __init__(
        self,
        store: Store,
        now: Callable[[], datetime] = clock.now,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.queue = TaskQueue(store)
        self.now = now
        self.on_enqueued = on_enqueued
        # Lateness is judged by each schedule's startingDeadlineSeconds in core, not by APScheduler:
        # no misfire grace limit, and coalesce, so a long gap (a suspended VM) is one run, not a storm.
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._lock = threading.RLock()
        self._schedules: dict[str, _Schedule] = {}
        self._settled: dict[str, datetime] = {}
        self._problems: list[tuple[str, str]] = []
        self._skipped: deque[SlotOutcome] = deque(maxlen=SKIPS_KEPT)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self.scheduler.running:
            self.scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    def add_interval(self, name: str, seconds: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` every ``seconds``; an exception is logged and the next run happens anyway."""
        self._remove_job(name)
        trigger = IntervalTrigger(seconds=seconds, timezone=UTC)
        self.scheduler.add_job(self._guarded(name, fn), trigger, id=name, name=name)

    def _guarded(self, name: str, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as exc:
                log.warning(
                    "scheduled job %s failed: %s: %s",
                    name,
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                    extra={"event": "scheduler_job_failed", "job": name},
                )

        return run

    def _remove_job(self, job_id: str) -> None:
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(job_id)

    # -- schedules ---------------------------------------------------------------------------

    def sync(self, revision: str) -> None:
        """Make the jobs match the applied TaskSchedules: add, replace on a new digest, remove."""
        bodies = self.store.inventory_bodies_some(kinds=["TaskSchedule"])
        templates: dict[ResourceKey, ResourceKey] = {}
        for key, body in bodies.items():
            namespace, name = split_ref(str(body.get("spec", {}).get("taskRef", "")), key.namespace)
            templates[key] = ResourceKey("Task", namespace, name)
        tasks = self.store.inventory_bodies_some(keys=templates.values())
        agents_wanted = {k: agent_key(k, b.get("spec", {})) for k, b in tasks.items()}
        agents = self.store.inventory_bodies_some(keys=[a for a in agents_wanted.values() if a is not None])
        wanted: dict[str, _Schedule] = {}
        problems: list[tuple[str, str]] = []
        for key, body in sorted(bodies.items()):
            spec = body.get("spec", {})
            template_key = templates[key]
            template = tasks.get(template_key)
            problem = self._problem(spec, template_key, template)
            if problem is not None:
                problems.append((str(key), problem))
                continue
            assert template is not None  # a missing one is a problem
            try:
                state = _schedule_state(spec, bool(spec.get("suspend") or template.get("spec", {}).get("suspend")))
            except (TypeError, ValueError) as exc:  # a stored body older than today's validation
                problems.append((str(key), f"spec: {exc}"))
                continue
            agent = agents_wanted.get(template_key)
            wanted[str(key)] = _Schedule(
                key=str(key),
                digest=digest_of(body),
                state=state,
                template_key=template_key,
                template=template,
                agent=None if agent is None else agents.get(agent),
                revision=revision,
                history=(int(spec.get("successfulHistoryLimit", 10)), int(spec.get("failedHistoryLimit", 3))),
            )
        with self._lock:
            for gone in set(self._schedules) - set(wanted):
                self._remove_job(gone)
                self._settled.pop(gone, None)
            for job_id, entry in wanted.items():
                old = self._schedules.get(job_id)
                if old is None or old.digest != entry.digest:
                    self._remove_job(job_id)
                    trigger = SlotTrigger(entry.state.cron, entry.state.time_zone)
                    self.scheduler.add_job(self._guarded(job_id, self._job(job_id)), trigger, id=job_id, name=job_id)
            self._schedules = wanted
            new_problems = [p for p in problems if p not in self._problems]
            self._problems = problems
        for problem_key, message in new_problems:
            log.warning(
                "%s cannot be scheduled: %s",
                problem_key,
                message,
                extra={"event": "schedule_problem", "schedule": problem_key},
            )

    @staticmethod
    def _problem(spec: dict[str, Any], template_key: ResourceKey, template: dict[str, Any] | None) -> str | None:
        if template is None:
            return f"taskRef: {template_key.short} is not applied; add the template Task or fix the name"
        if template.get("spec", {}).get("mode") != "template":
            return f"taskRef: {template_key.short} has mode 'run'; a schedule needs a Task with mode: template"
        try:
            reason = cron_fields(str(spec.get("schedule", ""))).impossible()
        except CronError as exc:
            return f"schedule: {exc}"
        if reason is not None:
            return f"schedule: {reason}"
        zone = str(spec.get("timeZone") or "UTC")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            return f"timeZone: unknown time zone {zone!r}"
        return None

    def _job(self, key: str) -> Callable[[], None]:
        def fire() -> None:
            self.fire_due(self.now(), only=(key,))

        return fire

    def problems(self) -> list[tuple[str, str]]:
        """(schedule key, message) for each applied schedule that has no job, as of the last sync."""
        with self._lock:
            return list(self._problems)

    def next_runs(self) -> dict[str, datetime | None]:
        """Each applied schedule's next slot (also when suspended); None for one that cannot run."""
        now = self.now()
        with self._lock:
            runs: dict[str, datetime | None] = {
                k: next_slot(s.state.cron, s.state.time_zone, now) for k, s in self._schedules.items()
            }
            runs.update((key, None) for key, _ in self._problems)
        return runs

    def skipped_slots(self) -> list[SlotOutcome]:
        """The most recent skipped slots (missed deadline, forbid), oldest first."""
        with self._lock:
            return list(self._skipped)

    # -- firing ------------------------------------------------------------------------------

    def fire_due(self, now: datetime, only: Iterable[str] | None = None) -> list[SlotOutcome]:
        """Fire, skip or leave each schedule's latest slot at ``now``; one outcome per schedule."""
        wanted = None if only is None else set(only)
        with self._lock:
            schedules = [s for k, s in sorted(self._schedules.items()) if wanted is None or k in wanted]
            if not schedules:
                return []
            suspended = {str(k) for k in self.store.suspended_all()}
            outcomes = [self._fire_one(s, now, suspended) for s in schedules]
        if self.on_enqueued is not None and any(o.task_id is not None for o in outcomes):
            self.on_enqueued()
        return outcomes

    def _fire_one(self, entry: _Schedule, now: datetime, suspended: set[str]) -> SlotOutcome:
        held = entry.state.suspended or entry.key in suspended or str(entry.template_key) in suspended
        state = replace(entry.state, suspended=held, last_slot=self._settled.get(entry.key))
        decision = due(state, now)
        if decision.verdict is Verdict.FIRE:
            active = [(run.id, run.digest) for run in self.queue.active_for(entry.key)]
            decision = admit(decision, state.concurrency, active)
        outcome = self._carry_out(entry, decision, now)
        if outcome.task_id is not None:
            trimmed = self.queue.trim_finished_run(entry.key, *entry.history)
            if trimmed:
                log.info(
                    "%s: %d finished runs beyond the history limits deleted",
                    entry.key,
                    trimmed,
                    extra={"event": "schedule_history_trimmed", "schedule": entry.key, "deleted": trimmed},
                )
        if decision.settles and decision.slot is not None:
            self._settled[entry.key] = decision.slot
        self._report(outcome, decision)
        return outcome

    def _carry_out(self, entry: _Schedule, decision: SlotDecision, now: datetime) -> SlotOutcome:
        if decision.verdict is not Verdict.FIRE or decision.slot is None:
            return SlotOutcome(entry.key, decision.verdict, decision.slot, decision.reason)
        cancelled = tuple(run_id for run_id in decision.cancel if self.queue.cancel_run(run_id, now))
        slot = slot_text(decision.slot)
        body = {**entry.template, "spec": {**entry.template.get("spec", {}), "mode": "run"}}
        parameters = run_parameters(
            entry.template_key, body, entry.agent, entry.revision, extra={"schedule": entry.key, "slot": slot}
        )
        task_id = self.queue.enqueue_run(
            entry.key, slot_digest(decision.slot), now=now, **parameters.enqueue_options(now)
        )
        verdict = Verdict.FIRE if task_id is not None else Verdict.DUPLICATE
        return SlotOutcome(entry.key, verdict, decision.slot, None, task_id, cancelled)

    def _report(self, outcome: SlotOutcome, decision: SlotDecision) -> None:
        slot = None if outcome.slot is None else slot_text(outcome.slot)
        fields = {"schedule": outcome.schedule, "slot": slot}
        if outcome.verdict is Verdict.FIRE:
            log.info(
                "%s fired slot %s as task %s",
                outcome.schedule,
                slot,
                outcome.task_id,
                extra={"event": "schedule_slot_fired", **fields, "task_id": outcome.task_id},
            )
            if outcome.cancelled:
                log.info(
                    "%s replaced runs %s",
                    outcome.schedule,
                    ", ".join(outcome.cancelled),
                    extra={"event": "schedule_runs_replaced", **fields, "cancelled": list(outcome.cancelled)},
                )
        elif outcome.verdict is Verdict.SKIP:
            self._skipped.append(outcome)
            why = "it is too late" if outcome.reason is SkipReason.MISSED_DEADLINE else "a run is still active"
            log.warning(
                "%s skipped slot %s: %s",
                outcome.schedule,
                slot,
                why,
                extra={
                    "event": "schedule_slot_skipped",
                    **fields,
                    "reason": str(outcome.reason),
                    "active": list(decision.active),
                },
            )
        elif outcome.verdict is Verdict.DUPLICATE:
            log.debug(
                "%s slot %s is already queued",
                outcome.schedule,
                slot,
                extra={"event": "schedule_slot_queued", **fields},
            )
