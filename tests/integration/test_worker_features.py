"""The worker pool's routing and limits on both stores: per-attempt timeouts, the manifest's retry
policy carried in the payload, whole-task deadlines, labels, registration and heartbeats, and the
placeholder executor's deleted-agent check."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from pools import DEADLINE, T0, Clock, start_pool, wait_for

from orlojd.adapters.queue import ClaimedTask, TaskQueue, TaskState, TaskView
from orlojd.adapters.store import Store, Upsert
from orlojd.adapters.worker_registry import LOST_AFTER, WorkerRegistry, WorkerState
from orlojd.core.keys import ResourceKey
from orlojd.engine.executors import Placeholder, Sleep
from orlojd.engine.workers import PoolOptions, TaskFailed, WorkerPool

LEASE = timedelta(seconds=30)
NO_JITTER_HOUR = {"maxAttempts": 3, "backoff": {"initial": "1h", "max": "2h", "multiplier": 2}, "jitter": "none"}


def options(**changes: Any) -> PoolOptions:
    base: dict[str, Any] = {"size": 1, "lease": LEASE, "renew_every": timedelta(seconds=10), "idle_wait": 0.02}
    return PoolOptions(**(base | changes))


def view(queue: TaskQueue, task_id: str) -> TaskView:
    found = queue.get_one(task_id)
    assert found is not None
    return found


def settled(queue: TaskQueue, task_id: str, state: TaskState) -> bool:
    return view(queue, task_id).state == state


def test_an_attempt_over_its_timeout_fails_and_is_retried(queue: TaskQueue, pools: list[WorkerPool]) -> None:
    task_id = queue.enqueue_run(
        "Task/default/slow", "d", {"retry": NO_JITTER_HOUR}, now=T0, attempt_timeout=timedelta(milliseconds=200)
    )
    assert task_id is not None
    clock = Clock()
    start_pool(pools, WorkerPool(queue, Sleep(60_000), options(), "w", now=clock))
    wait_for(lambda: view(queue, task_id).attempts == 1 and settled(queue, task_id, TaskState.PENDING), "a timeout")
    failed = view(queue, task_id)
    assert failed.last_error == "attempt 1 timed out after 0.2s"
    assert failed.available_at == T0 + timedelta(hours=1), "the payload's policy (1h, no jitter), not the default"


def test_the_deadline_ends_retries(queue: TaskQueue, pools: list[WorkerPool]) -> None:
    task_id = queue.enqueue_run(
        "Task/default/flaky", "d", {"retry": NO_JITTER_HOUR}, now=T0, deadline_at=T0 + timedelta(minutes=30)
    )
    assert task_id is not None

    def failing(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        raise TaskFailed("provider returned 503")

    start_pool(pools, WorkerPool(queue, failing, options(), "w", now=Clock()))
    wait_for(lambda: settled(queue, task_id, TaskState.DEAD_LETTER), "the task to give up")
    assert view(queue, task_id).attempts == 1, "a retry in 1h would land after the 30 min deadline"


def test_a_pool_registers_beats_and_stops(store: Store, queue: TaskQueue, pools: list[WorkerPool]) -> None:
    registry = WorkerRegistry(store)
    clock = Clock()
    pool = start_pool(
        pools,
        WorkerPool(
            queue,
            Sleep(0),
            options(size=3, labels={"region": "eu"}, heartbeat_every=timedelta(milliseconds=20)),
            "node-a",
            now=clock,
            registry=registry,
            embedded=False,
        ),
    )
    (row,) = registry.list_all(T0, LOST_AFTER)
    assert (row.id, row.capacity, row.labels, row.embedded, row.state) == (
        "node-a",
        3,
        {"region": "eu"},
        False,
        WorkerState.LIVE,
    )
    clock.at = T0 + timedelta(minutes=5)
    wait_for(lambda: registry.list_all(clock.at, LOST_AFTER)[0].heartbeat_at == clock.at, "a heartbeat")
    assert registry.list_all(clock.at + LOST_AFTER * 2, LOST_AFTER)[0].state is WorkerState.LOST
    assert pool.drain(DEADLINE)
    assert registry.list_all(clock.at, LOST_AFTER)[0].state is WorkerState.STOPPED


def test_a_labelled_pool_runs_the_labelled_task(queue: TaskQueue, pools: list[WorkerPool]) -> None:
    gpu = queue.enqueue_run("Task/default/gpu", "d", {}, now=T0, labels={"gpu": "true"})
    assert gpu is not None
    start_pool(pools, WorkerPool(queue, Sleep(0), options(), "plain", now=Clock()))
    start_pool(pools, WorkerPool(queue, Sleep(0), options(labels={"gpu": "true"}), "gpu", now=Clock()))
    wait_for(lambda: settled(queue, gpu, TaskState.SUCCEEDED), "the gpu task")
    assert view(queue, gpu).result == {"executor": "sleep", "slept_ms": 0}


def test_a_run_whose_agent_was_deleted_dead_letters_with_a_clear_error(
    store: Store, queue: TaskQueue, pools: list[WorkerPool]
) -> None:
    kept = ResourceKey("Agent", "default", "kept")
    body = {"apiVersion": "orloj.dev/v1", "kind": "Agent", "metadata": {"name": "kept"}, "spec": {"model": "m"}}
    store.apply_run("a" * 40, [Upsert(kept, "sha256:k", body)], [], {}, {}, T0, T0, "f")
    gone = queue.enqueue_run("Task/default/orphan", "d", {}, now=T0, agent="Agent/default/gone", max_attempts=3)
    fine = queue.enqueue_run("Task/default/fine", "d", {}, now=T0, agent=str(kept))
    assert gone is not None and fine is not None
    start_pool(pools, WorkerPool(queue, Placeholder(store), options(), "w", now=Clock()))
    wait_for(lambda: settled(queue, gone, TaskState.DEAD_LETTER), "the orphan to dead-letter")
    wait_for(lambda: settled(queue, fine, TaskState.SUCCEEDED), "the other to succeed")
    orphan = view(queue, gone)
    assert orphan.attempts == 1, "not retried: the agent will not come back by waiting"
    assert orphan.last_error is not None
    assert "agent Agent/gone is not applied" in orphan.last_error and f"orlojd dlq retry {gone}" in orphan.last_error


def test_the_queue_wait_check_logs_each_overdue_task_once(
    store: Store, queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    from orlojd.engine.runtime import TaskRuntime

    clock = Clock()
    late = queue.enqueue_run("Task/default/late", "d", {}, now=T0)
    held = queue.enqueue_run("Task/default/held", "d", {}, now=T0)
    fresh = queue.enqueue_run("Task/default/fresh", "d", {}, now=T0 + timedelta(minutes=9))
    assert late is not None and held is not None and fresh is not None
    queue.pause_run(held, "p", T0)
    runtime = TaskRuntime(store, "noop", now=clock)
    clock.at = T0 + timedelta(minutes=10)
    caplog.set_level("WARNING", logger="orlojd.runtime")

    def warned() -> list[str]:
        return [
            str(getattr(r, "task_id", "")) for r in caplog.records if getattr(r, "event", "") == "queue_wait_exceeded"
        ]

    runtime.check_queue_wait()
    assert warned() == [late], "only the task due for over 5 minutes, not the paused one"
    runtime.check_queue_wait()
    assert warned() == [late], "once per task"
    assert [v.id for v in queue.overdue_all(clock.at - timedelta(minutes=5))] == [late]
