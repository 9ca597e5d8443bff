"""The embedded scheduler (``orlojd.engine.scheduler``) against both state stores.

Schedules reach the store the real way: manifests committed to a git repository and applied
with ``apply_revision``. Firing is driven through ``fire_due`` with explicit times (no sleeps);
restarts are new ``TaskScheduler`` objects on the same store, two daemons are two schedulers on
two ``Store`` connections racing from two threads. The APScheduler wiring is checked with real
timers, waiting on ``threading.Event`` with a timeout.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from conftest import GitRepo
from manifests import OFFLINE_ENDPOINT

from orlojd.adapters import clock
from orlojd.adapters.queue import TaskQueue, TaskState, TaskView
from orlojd.adapters.store import Store, Upsert
from orlojd.core.digest import digest_of
from orlojd.core.keys import ResourceKey
from orlojd.core.schedule import Verdict
from orlojd.engine.applying import apply_revision
from orlojd.engine.scheduler import SlotOutcome, SlotTrigger, TaskScheduler
from orlojd.engine.workspace import open_workspace

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # an hourly slot
HOUR = timedelta(hours=1)
SECONDS = timedelta(seconds=10)
HOURLY = "TaskSchedule/default/hourly"
TEMPLATE = ResourceKey("Task", "default", "scan")
WAIT = 10.0  # seconds to wait for a real timer before failing

AGENT = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: checker
spec:
  modelRef: offline
  retry:
    maxAttempts: 2
"""

TEMPLATE_TASK = """\
apiVersion: orloj.dev/v1
kind: Task
metadata:
  name: scan
spec:
  mode: template
  agent: checker
  priority: high
  input:
    folder: inbox
"""


def schedule_yaml(
    name: str = "hourly", cron: str = "0 * * * *", policy: str = "forbid", deadline: int = 300, **extra: str
) -> str:
    more = "".join(f"  {k}: {v}\n" for k, v in extra.items())
    return f"""\
apiVersion: orloj.dev/v1
kind: TaskSchedule
metadata:
  name: {name}
spec:
  taskRef: scan
  schedule: "{cron}"
  concurrencyPolicy: {policy}
  startingDeadlineSeconds: {deadline}
{more}"""


@dataclass
class Env:
    repo: GitRepo
    db_url: str
    store: Store

    def apply(self, hold: frozenset[ResourceKey] = frozenset(), **schedules: str) -> str:
        """Write ``schedules/<name>.yaml`` for each text given (None removes it), commit, apply."""
        for name, text in schedules.items():
            if text:
                self.repo.write(f"schedules/{name}.yaml", text)
            elif (self.repo.path / f"schedules/{name}.yaml").exists():
                self.repo.remove(f"schedules/{name}.yaml")
        revision = self.repo.commit("schedules")
        apply_revision(open_workspace(self.repo.path, self.db_url), self.store, "HEAD", hold=hold)
        return revision

    def scheduler(
        self,
        store: Store | None = None,
        now: Callable[[], datetime] = clock.now,
        on_enqueued: Callable[[], None] | None = None,
    ) -> TaskScheduler:
        scheduler = TaskScheduler(store or self.store, now=now, on_enqueued=on_enqueued)
        scheduler.sync(self.repo.git("rev-parse", "HEAD"))
        return scheduler

    def runs(self) -> list[TaskView]:
        return sorted(TaskQueue(self.store).list_all(limit=1000), key=lambda v: v.digest)


@pytest.fixture
def env(repo: GitRepo, db_url: str) -> Iterator[Env]:
    repo.write("orlojd.yaml", json.dumps({"prune": {"enabled": True}}))
    repo.write("models/offline.yaml", OFFLINE_ENDPOINT)
    repo.write("agents/checker.yaml", AGENT)
    repo.write("tasks/scan.yaml", TEMPLATE_TASK)
    store = Store.open(db_url)
    try:
        yield Env(repo, db_url, store)
    finally:
        store.close()


def fired(outcomes: list[SlotOutcome]) -> list[str]:
    return [f"{o.schedule}@{o.slot:%H:%M}" for o in outcomes if o.verdict is Verdict.FIRE and o.slot is not None]


def verdicts(outcomes: list[SlotOutcome]) -> list[tuple[str, str | None]]:
    return [(o.verdict.value, None if o.reason is None else o.reason.value) for o in outcomes]


def finish(store: Store, now: datetime) -> None:
    """A worker claims and completes every pending run."""
    queue = TaskQueue(store)
    while (claim := queue.claim_one("worker", now, timedelta(minutes=5))) is not None:
        assert queue.complete_run(claim.id, "worker", claim.fencing_token, now, {"ok": True})


# -- firing under an injected clock ---------------------------------------------------------------


def test_fires_each_slot_once_with_the_template_as_a_run(env: Env) -> None:
    revision = env.apply(hourly=schedule_yaml(policy="allow"))
    woken: list[int] = []
    scheduler = env.scheduler(on_enqueued=lambda: woken.append(1))

    assert fired(scheduler.fire_due(T0 + SECONDS)) == [f"{HOURLY}@10:00"]
    assert verdicts(scheduler.fire_due(T0 + 2 * SECONDS)) == [("idle", None)]
    assert verdicts(scheduler.fire_due(T0 + HOUR - SECONDS)) == [("idle", None)]
    assert fired(scheduler.fire_due(T0 + HOUR + SECONDS)) == [f"{HOURLY}@11:00"]
    assert woken == [1, 1]

    first, second = env.runs()
    assert (first.task_key, first.digest, second.digest) == (
        HOURLY,
        "slot:2026-03-01T10:00:00Z",
        "slot:2026-03-01T11:00:00Z",
    )
    assert (first.state, first.priority, first.max_attempts, first.agent) == (
        TaskState.PENDING,
        2,
        2,
        "Agent/default/checker",
    )
    payload = first.payload
    assert payload["task"]["spec"]["mode"] == "run"
    assert payload["task"]["metadata"]["name"] == "scan"
    assert (payload["schedule"], payload["slot"], payload["revision"]) == (
        HOURLY,
        "2026-03-01T10:00:00Z",
        revision,
    )


def test_next_runs_reports_the_coming_slot(env: Env) -> None:
    env.apply(hourly=schedule_yaml(), prague=schedule_yaml("prague", "30 2 * * *", timeZone="Europe/Prague"))
    scheduler = env.scheduler(now=lambda: datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert scheduler.next_runs() == {
        HOURLY: datetime(2026, 3, 28, 13, 0, tzinfo=UTC),
        "TaskSchedule/default/prague": datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 does not exist on the 29th
    }


@pytest.mark.parametrize("policy", ["forbid", "allow", "replace"])
def test_a_restart_inside_a_slot_does_not_fire_it_again(env: Env, policy: str) -> None:
    env.apply(hourly=schedule_yaml(policy=policy))
    assert fired(env.scheduler().fire_due(T0 + SECONDS)) == [f"{HOURLY}@10:00"]

    restarted = env.scheduler()
    assert verdicts(restarted.fire_due(T0 + 2 * SECONDS)) == [("duplicate", None)]
    finish(env.store, T0 + 3 * SECONDS)  # even once the run is over
    assert verdicts(env.scheduler().fire_due(T0 + 4 * SECONDS)) == [("duplicate", None)]
    assert [(r.digest, r.state) for r in env.runs()] == [("slot:2026-03-01T10:00:00Z", TaskState.SUCCEEDED)]


@pytest.mark.parametrize("policy", ["forbid", "allow"])
def test_two_daemons_racing_fire_each_slot_exactly_once(env: Env, policy: str) -> None:
    env.apply(minutely=schedule_yaml("minutely", "* * * * *", policy=policy))
    other_store = Store.open(env.db_url)  # the second daemon's own connection pool
    try:
        daemons = [env.scheduler(), env.scheduler(other_store)]
        slots = 8
        results: list[list[SlotOutcome]] = [[], []]
        barrier = threading.Barrier(2, timeout=WAIT)

        def race(index: int) -> None:
            for minute in range(slots):
                barrier.wait()
                now = T0 + timedelta(minutes=minute, seconds=1)
                results[index].extend(daemons[index].fire_due(now))
                barrier.wait()
                if index == 0:
                    finish(env.store, now)  # so forbid has nothing active at the next slot

        threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * slots)
        assert not any(thread.is_alive() for thread in threads)

        outcomes = results[0] + results[1]
        per_slot = {o.slot: sorted(v.verdict.value for v in outcomes if v.slot == o.slot) for o in outcomes}
        assert len(per_slot) == slots
        assert all(found == ["duplicate", "fire"] for found in per_slot.values()), per_slot
        assert [r.digest for r in env.runs()] == [f"slot:2026-03-01T10:{minute:02d}:00Z" for minute in range(slots)]
    finally:
        other_store.close()


# -- deadlines, concurrency policies, suspension --------------------------------------------------


def test_missed_deadline_is_skipped_and_recorded_with_no_backfill(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.apply(hourly=schedule_yaml(policy="allow", deadline=120))
    scheduler = env.scheduler()
    assert fired(scheduler.fire_due(T0 + SECONDS)) == [f"{HOURLY}@10:00"]

    later = T0 + timedelta(days=3, hours=2, minutes=5)  # 74 slots went by; the latest (12:00) is 5 min old
    with caplog.at_level(logging.INFO, logger="orlojd.scheduler"):
        outcomes = scheduler.fire_due(later)
    assert verdicts(outcomes) == [("skip", "missed_deadline")]
    assert outcomes[0].slot == datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    assert scheduler.skipped_slots() == outcomes
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "schedule_slot_skipped"]
    assert (record.schedule, record.slot, record.reason) == (HOURLY, "2026-03-04T12:00:00Z", "missed_deadline")  # type: ignore[attr-defined]
    assert verdicts(scheduler.fire_due(later + SECONDS)) == [("idle", None)]  # recorded once
    assert [r.digest for r in env.runs()] == ["slot:2026-03-01T10:00:00Z"]  # nothing backfilled

    # A daemon started after the gap fires nothing old either; the next slot fires on time.
    restarted = env.scheduler()
    assert verdicts(restarted.fire_due(later + 2 * SECONDS)) == [("idle", None)]
    assert fired(restarted.fire_due(datetime(2026, 3, 4, 13, 0, 30, tzinfo=UTC))) == [f"{HOURLY}@13:00"]
    assert len(env.runs()) == 2


def test_a_slot_within_its_deadline_fires_late_after_a_restart(env: Env) -> None:
    env.apply(hourly=schedule_yaml(deadline=300))
    assert fired(env.scheduler().fire_due(T0 + timedelta(minutes=4))) == [f"{HOURLY}@10:00"]


def test_forbid_skips_while_a_run_is_active(env: Env) -> None:
    env.apply(hourly=schedule_yaml(policy="forbid"))
    scheduler = env.scheduler()
    scheduler.fire_due(T0 + SECONDS)
    outcomes = scheduler.fire_due(T0 + HOUR + SECONDS)
    assert verdicts(outcomes) == [("skip", "forbid")]
    assert scheduler.skipped_slots() == outcomes
    assert verdicts(scheduler.fire_due(T0 + HOUR + 2 * SECONDS)) == [("idle", None)]  # a skip is final

    finish(env.store, T0 + HOUR + timedelta(minutes=30))
    assert fired(scheduler.fire_due(T0 + 2 * HOUR + SECONDS)) == [f"{HOURLY}@12:00"]
    assert [r.digest[-9:] for r in env.runs()] == ["10:00:00Z", "12:00:00Z"]


def test_allow_fires_while_a_run_is_active(env: Env) -> None:
    env.apply(hourly=schedule_yaml(policy="allow"))
    scheduler = env.scheduler()
    scheduler.fire_due(T0 + SECONDS)
    assert fired(scheduler.fire_due(T0 + HOUR + SECONDS)) == [f"{HOURLY}@11:00"]
    assert [r.state for r in env.runs()] == [TaskState.PENDING, TaskState.PENDING]


def test_replace_cancels_the_active_run_then_fires(env: Env) -> None:
    env.apply(hourly=schedule_yaml(policy="replace"))
    scheduler = env.scheduler()
    [first] = scheduler.fire_due(T0 + SECONDS)
    [second] = scheduler.fire_due(T0 + HOUR + SECONDS)
    assert second.verdict is Verdict.FIRE and second.cancelled == (first.task_id,)
    assert [(r.id, r.state) for r in env.runs()] == [
        (first.task_id, TaskState.CANCELLED),
        (second.task_id, TaskState.PENDING),
    ]


def test_suspend_in_git_stops_firing_and_resuming_fires_within_the_deadline(env: Env) -> None:
    env.apply(hourly=schedule_yaml())
    env.apply(hourly=schedule_yaml(suspend="true"))  # switching suspend on is applied
    scheduler = env.scheduler()
    assert verdicts(scheduler.fire_due(T0 + SECONDS)) == [("suspended", None)]
    assert scheduler.next_runs()[HOURLY] is not None  # still computed while suspended
    assert env.runs() == []

    env.apply(hourly=schedule_yaml())
    scheduler.sync(env.repo.git("rev-parse", "HEAD"))
    assert fired(scheduler.fire_due(T0 + timedelta(minutes=2))) == [f"{HOURLY}@10:00"]


@pytest.mark.parametrize("target", [ResourceKey("TaskSchedule", "default", "hourly"), TEMPLATE])
def test_orlojd_suspend_of_the_schedule_or_its_template_stops_firing(env: Env, target: ResourceKey) -> None:
    env.apply(hourly=schedule_yaml())
    scheduler = env.scheduler()
    assert env.store.suspend_run(target, "maintenance", T0)
    assert verdicts(scheduler.fire_due(T0 + SECONDS)) == [("suspended", None)]  # no sync needed
    assert env.runs() == []
    assert env.store.resume_run(target)
    assert fired(scheduler.fire_due(T0 + 2 * SECONDS)) == [f"{HOURLY}@10:00"]


# -- problems -------------------------------------------------------------------------------------------


def test_a_schedule_whose_template_is_not_applied_is_a_problem_not_a_job(env: Env) -> None:
    env.apply(hold=frozenset({TEMPLATE}), hourly=schedule_yaml())
    assert ResourceKey("TaskSchedule", "default", "hourly") in env.store.inventory_digests_all()
    scheduler = env.scheduler()
    assert scheduler.problems() == [
        (HOURLY, "taskRef: Task/scan is not applied; add the template Task or fix the name")
    ]
    assert scheduler.scheduler.get_jobs() == []
    assert scheduler.fire_due(T0 + SECONDS) == []
    assert scheduler.next_runs() == {HOURLY: None}


def test_stored_schedules_that_cannot_run_are_problems(env: Env) -> None:
    # Written straight to the store, as an older orlojd (before these checks) could have.
    def body(kind: str, name: str, spec: dict[str, object]) -> Upsert:
        data = {"apiVersion": "orloj.dev/v1", "kind": kind, "metadata": {"name": name, "namespace": "default"}}
        data["spec"] = spec
        return Upsert(ResourceKey(kind, "default", name), digest_of(data), data)

    upserts = [
        body("Task", "once", {"mode": "run", "agent": "checker"}),
        body("Task", "scan", {"mode": "template", "agent": "checker"}),
        body("TaskSchedule", "feb30", {"taskRef": "scan", "schedule": "0 0 30 2 *"}),
        body("TaskSchedule", "not-template", {"taskRef": "once", "schedule": "0 * * * *"}),
        body("TaskSchedule", "zone", {"taskRef": "scan", "schedule": "0 * * * *", "timeZone": "Mars/Olympus"}),
        body("TaskSchedule", "garbled", {"taskRef": "scan", "schedule": "0 * * *"}),
        body("TaskSchedule", "policy", {"taskRef": "scan", "schedule": "0 * * * *", "concurrencyPolicy": "queue"}),
    ]
    env.repo.commit("nothing applied from git")
    env.store.apply_run("rev", upserts, [], {}, {}, T0, T0, "sha256:test")
    scheduler = env.scheduler()
    assert scheduler.problems() == [
        (
            "TaskSchedule/default/feb30",
            "schedule: day of month: 30 never occurs in February, so this schedule would never fire",
        ),
        (
            "TaskSchedule/default/garbled",
            "schedule: cron needs exactly 5 fields (minute hour day-of-month month day-of-week), got 4",
        ),
        (
            "TaskSchedule/default/not-template",
            "taskRef: Task/once has mode 'run'; a schedule needs a Task with mode: template",
        ),
        ("TaskSchedule/default/policy", "spec: 'queue' is not a valid ConcurrencyPolicy"),
        ("TaskSchedule/default/zone", "timeZone: unknown time zone 'Mars/Olympus'"),
    ]
    assert scheduler.scheduler.get_jobs() == []
    assert scheduler.fire_due(T0 + SECONDS) == []


# -- APScheduler wiring --------------------------------------------------------------------------------


def test_sync_adds_replaces_and_removes_jobs(env: Env) -> None:
    env.apply(hourly=schedule_yaml(), daily=schedule_yaml("daily", "0 2 * * *"))
    scheduler = env.scheduler()
    jobs = {job.id: job for job in scheduler.scheduler.get_jobs()}
    assert set(jobs) == {HOURLY, "TaskSchedule/default/daily"}
    assert isinstance(jobs[HOURLY].trigger, SlotTrigger) and jobs[HOURLY].trigger.cron == "0 * * * *"

    env.apply(hourly=schedule_yaml(cron="*/30 * * * *"))
    scheduler.sync(env.repo.git("rev-parse", "HEAD"))
    after = {job.id: job for job in scheduler.scheduler.get_jobs()}
    assert after[HOURLY].trigger.cron == "*/30 * * * *"  # replaced: the digest changed
    assert after["TaskSchedule/default/daily"] is jobs["TaskSchedule/default/daily"]  # left alone

    env.apply(daily="")  # deleted from git (prune is on)
    scheduler.sync(env.repo.git("rev-parse", "HEAD"))
    assert [job.id for job in scheduler.scheduler.get_jobs()] == [HOURLY]


def test_a_started_scheduler_fires_a_schedule_through_its_job(env: Env) -> None:
    env.apply(hourly=schedule_yaml())
    enqueued = threading.Event()
    scheduler = TaskScheduler(env.store, now=lambda: T0 + SECONDS, on_enqueued=enqueued.set)
    scheduler.start()
    try:
        scheduler.sync("rev")  # a new job runs once at once, then at each slot
        assert enqueued.wait(WAIT), "the schedule's job did not enqueue its slot"
    finally:
        scheduler.shutdown()
    assert [r.digest for r in env.runs()] == ["slot:2026-03-01T10:00:00Z"]


def test_interval_jobs_run_and_survive_exceptions(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    scheduler = TaskScheduler(env.store)
    calls: list[int] = []
    recovered = threading.Event()

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        recovered.set()

    scheduler.add_interval("flaky", 0.05, flaky)
    with caplog.at_level(logging.WARNING, logger="orlojd.scheduler"):
        scheduler.start()
        try:
            assert recovered.wait(WAIT), "the interval job did not run again after failing"
        finally:
            scheduler.shutdown()
    [failure] = [r for r in caplog.records if getattr(r, "event", None) == "scheduler_job_failed"]
    assert failure.job == "flaky" and "RuntimeError: boom" in failure.getMessage()  # type: ignore[attr-defined]
    assert not scheduler.scheduler.running


def test_history_limits_keep_the_newest_finished_runs(env: Env) -> None:
    env.apply(hourly=schedule_yaml(successfulHistoryLimit="2", failedHistoryLimit="1"))
    scheduler = env.scheduler()
    queue = TaskQueue(env.store)
    for hour in range(5):
        now = T0 + hour * HOUR + SECONDS
        assert fired(scheduler.fire_due(now)), f"hour {hour}"
        if hour == 1:  # this one is cancelled: it counts against failedHistoryLimit
            (run,) = queue.active_for(HOURLY)
            assert queue.cancel_run(run.id, now)
        else:
            finish(env.store, now)
    kept = [(r.digest[-9:-4], r.state) for r in env.runs()]
    # Trimmed when a slot fires: at 14:00 the newest two successes before it (12:00, 13:00) stayed,
    # 10:00 went; the cancelled 11:00 is the one failure kept; 14:00 finished after the trim.
    assert kept == [
        ("11:00", TaskState.CANCELLED),
        ("12:00", TaskState.SUCCEEDED),
        ("13:00", TaskState.SUCCEEDED),
        ("14:00", TaskState.SUCCEEDED),
    ]
