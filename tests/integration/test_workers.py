"""The worker pool (``orlojd.engine.workers``) against both state stores, with injected executors.

Nothing sleeps to wait: the tests poll the queue (or an event) until a condition holds or a
deadline passes. Retry delays are checked under an injected clock that the test advances.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pools import DEADLINE, T0, Clock, start_pool, wait_for, waited

from orlojd.adapters.queue import ClaimedTask, TaskQueue, TaskState, TaskView
from orlojd.core.manifests.agents import RetryPolicy
from orlojd.engine.workers import PoolOptions, TaskDeferred, TaskFailed, TaskHandedOff, WorkerPool

LEASE = timedelta(seconds=30)
FAST = PoolOptions(size=1, lease=LEASE, renew_every=timedelta(seconds=10), idle_wait=0.02)


def enqueue(queue: TaskQueue, name: str, now: datetime = T0, max_attempts: int = 3) -> str:
    task_id = queue.enqueue_run(
        f"Task/default/{name}", "sha256:one", {"name": name}, now=now, max_attempts=max_attempts
    )
    assert task_id is not None
    return task_id


def view(queue: TaskQueue, task_id: str) -> TaskView:
    found = queue.get_one(task_id)
    assert found is not None
    return found


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(getattr(record, "event", "")) for record in caplog.records if record.name == "orlojd.workers"]


def test_fifty_tasks_complete_exactly_once_with_a_pool_of_four(queue: TaskQueue, pools: list[WorkerPool]) -> None:
    effects: Counter[str] = Counter()
    lock = threading.Lock()

    def sink(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        with lock:  # the idempotent sink: one effect per task id, counted
            effects[task.id] += 1
        return {"name": task.payload["name"]}

    ids = [enqueue(queue, f"t{n}", datetime.now(UTC)) for n in range(50)]
    pool = start_pool(pools, WorkerPool(queue, sink, PoolOptions(size=4, idle_wait=0.02), "node-a"))
    pool.wake()
    wait_for(lambda: queue.counts_all()[TaskState.SUCCEEDED] == 50, "50 tasks to succeed")
    assert pool.drain(DEADLINE)
    assert effects == Counter({task_id: 1 for task_id in ids})
    for n, task_id in enumerate(ids):
        done = view(queue, task_id)
        assert (done.attempts, done.result) == (1, {"name": f"t{n}"})
    owners = {record.lease_owner for record in queue.list_all()}
    assert owners == {None}


def test_a_failing_task_retries_with_the_policy_then_dead_letters(queue: TaskQueue, pools: list[WorkerPool]) -> None:
    clock = Clock()
    calls: list[int] = []
    policy = RetryPolicy.model_validate({"maxAttempts": 3, "backoff": {"initial": "2s", "multiplier": 2}})

    def failing(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        calls.append(task.attempts)
        raise TaskFailed(f"model timed out on attempt {task.attempts}")

    task_id = enqueue(queue, "flaky", max_attempts=3)
    options = PoolOptions(size=1, lease=LEASE, renew_every=timedelta(seconds=10), idle_wait=0.02, retry=policy)
    pool = start_pool(pools, WorkerPool(queue, failing, options, "node-a", now=clock, draw=lambda: 0.5))

    def failed_after(attempts: int) -> bool:
        current = view(queue, task_id)
        return current.attempts == attempts and current.state == TaskState.PENDING

    # Full jitter with draw 0.5: half of 2 s after attempt 1, half of 4 s after attempt 2.
    for attempt, delay in ((1, 1), (2, 2)):
        wait_for(functools.partial(failed_after, attempt), f"attempt {attempt} to fail")
        pending = view(queue, task_id)
        assert pending.available_at == clock.at + timedelta(seconds=delay)
        assert pending.last_error == f"model timed out on attempt {attempt}"
        assert queue.claim_one("probe", clock.at, LEASE) is None, "not claimable before the backoff ends"
        clock.at = pending.available_at
        pool.wake()

    wait_for(lambda: view(queue, task_id).state == TaskState.DEAD_LETTER, "the task to dead-letter")
    dead = view(queue, task_id)
    assert (dead.attempts, dead.last_error, dead.lease_owner) == (3, "model timed out on attempt 3", None)
    assert calls == [1, 2, 3]


def test_a_permanent_failure_dead_letters_at_once(queue: TaskQueue, pools: list[WorkerPool]) -> None:
    calls: list[str] = []

    def denied(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        calls.append(task.id)
        raise TaskFailed("governance denied the tool call", permanent=True)

    task_id = enqueue(queue, "denied", max_attempts=5)
    start_pool(pools, WorkerPool(queue, denied, FAST, "node-a", now=Clock()))
    wait_for(lambda: view(queue, task_id).state == TaskState.DEAD_LETTER, "the task to dead-letter")
    dead = view(queue, task_id)
    assert (dead.attempts, dead.max_attempts, dead.last_error) == (1, 5, "governance denied the tool call")
    assert calls == [task_id]


def test_an_executor_bug_does_not_kill_the_thread(
    queue: TaskQueue, pools: list[WorkerPool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orlojd.workers")

    def buggy(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        if task.payload["name"] == "bug":
            raise KeyError("oops")
        return {"ok": True}

    bug = enqueue(queue, "bug", max_attempts=1)
    fine = enqueue(queue, "fine", T0 + timedelta(seconds=1))
    start_pool(pools, WorkerPool(queue, buggy, FAST, "node-a", now=Clock(T0 + timedelta(seconds=2))))
    wait_for(lambda: view(queue, fine).state == TaskState.SUCCEEDED, "the second task to succeed on the same thread")
    assert (view(queue, bug).state, view(queue, bug).last_error) == (TaskState.DEAD_LETTER, "KeyError: 'oops'")
    assert "executor_error" in events(caplog)


def test_a_worker_that_lost_its_lease_has_its_result_refused(
    queue: TaskQueue, pools: list[WorkerPool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orlojd.workers")
    clock = Clock()
    started, release = threading.Event(), threading.Event()

    def slow(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        started.set()
        waited(release, "the test to release the executor")
        return {"from": "node-a"}

    task_id = enqueue(queue, "slow")
    start_pool(pools, WorkerPool(queue, slow, FAST, "node-a", now=clock))
    waited(started, "the executor to start")
    first = view(queue, task_id)
    assert (first.lease_owner, first.fencing_token) == ("node-a/0", 1)

    clock.at = T0 + LEASE + timedelta(seconds=1)  # the lease ran out (no renewal within 10 s of real time)
    takeover = queue.claim_one("node-b/0", clock.at, LEASE)
    assert takeover is not None and takeover.fencing_token == 2
    release.set()

    wait_for(lambda: "result_refused" in events(caplog), "node-a's result to be refused")
    after = view(queue, task_id)
    assert (after.state, after.lease_owner, after.result) == (TaskState.RUNNING, "node-b/0", None)
    assert queue.complete_run(task_id, "node-b/0", takeover.fencing_token, clock.at, {"from": "node-b"})
    assert view(queue, task_id).result == {"from": "node-b"}


def test_a_cancelled_task_is_told_by_the_renewal_and_its_result_discarded(
    queue: TaskQueue, pools: list[WorkerPool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orlojd.workers")
    started, saw_cancel = threading.Event(), threading.Event()

    def cooperative(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        started.set()
        if cancelled.wait(DEADLINE):
            saw_cancel.set()
        return {"partial": True}

    task_id = enqueue(queue, "cancel-me")
    options = PoolOptions(size=1, lease=LEASE, renew_every=timedelta(milliseconds=20), idle_wait=0.02)
    start_pool(pools, WorkerPool(queue, cooperative, options, "node-a", now=Clock()))
    waited(started, "the executor to start")
    assert queue.cancel_run(task_id, T0)
    waited(saw_cancel, "the renewal to set the cancelled event")
    wait_for(lambda: "result_discarded" in events(caplog), "the result to be discarded")
    after = view(queue, task_id)
    assert (after.state, after.result) == (TaskState.CANCELLED, None)
    assert events(caplog).index("lease_lost") < events(caplog).index("result_discarded")


def test_drain_stops_claiming_and_returns_true_once_running_tasks_finish(
    queue: TaskQueue, pools: list[WorkerPool]
) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocking(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        ran.append(task.payload["name"])
        started.set()
        waited(release, "the test to release the executor")
        return {}

    first = enqueue(queue, "first")
    second = enqueue(queue, "second", T0 + timedelta(seconds=1))
    pool = start_pool(pools, WorkerPool(queue, blocking, FAST, "node-a", now=Clock(T0 + timedelta(seconds=2))))
    waited(started, "the first task to start")

    assert pool.drain(0.05) is False, "the first task is still running"
    running = view(queue, first)
    assert (running.state, running.lease_owner) == (TaskState.RUNNING, "node-a/0"), "it keeps its lease"
    release.set()
    assert pool.drain(DEADLINE) is True

    assert view(queue, first).state == TaskState.SUCCEEDED
    untouched = view(queue, second)
    assert (untouched.state, untouched.attempts) == (TaskState.PENDING, 0)
    assert ran == ["first"]


def test_a_deferred_task_waits_until_its_time_without_spending_an_attempt(
    queue: TaskQueue, pools: list[WorkerPool]
) -> None:
    clock = Clock(T0)
    until = T0 + timedelta(seconds=60)
    calls: list[int] = []

    def budget_bound(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        calls.append(task.attempts)
        if len(calls) == 1:
            raise TaskDeferred(until, "maxTokensPerMinute reached; retry when the minute frees up")
        return {"ran": True}

    task_id = enqueue(queue, "bounded", max_attempts=1)
    pool = start_pool(pools, WorkerPool(queue, budget_bound, FAST, "node-a", now=clock))
    wait_for(lambda: view(queue, task_id).available_at == until, "the task to be deferred")
    deferred = view(queue, task_id)
    assert (deferred.state, deferred.attempts, deferred.lease_owner) == (TaskState.PENDING, 0, None)
    assert deferred.last_error is not None and "maxTokensPerMinute" in deferred.last_error
    clock.at = until
    pool.wake()
    wait_for(lambda: view(queue, task_id).state is TaskState.SUCCEEDED, "the deferred task to run on its one attempt")
    assert calls == [1, 1]


def test_a_task_the_executor_handed_off_is_left_as_the_executor_wrote_it(
    queue: TaskQueue, pools: list[WorkerPool]
) -> None:
    handed = threading.Event()

    def hands_off(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        handed.set()  # the governance gate has moved the task on in the store itself (parked or failed it)
        raise TaskHandedOff("waiting for approval ap-1")

    task_id = enqueue(queue, "handed")
    start_pool(pools, WorkerPool(queue, hands_off, FAST, "node-a", now=Clock(T0)))
    waited(handed, "the executor to hand the task off")
    assert pools[0].drain(DEADLINE)
    left = view(queue, task_id)
    assert (left.state, left.attempts, left.last_error) == (TaskState.RUNNING, 1, None), (
        "the worker wrote nothing: no failure, no retry"
    )
