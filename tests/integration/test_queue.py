"""The task queue (``orlojd.adapters.queue``) against both state stores (SQLite, PostgreSQL).

Every test opens a fresh store through ``db_url`` and drives ``TaskQueue`` with explicit
times: leases expire because the test passes a later ``now``, never by sleeping. The
concurrency test claims from several threads at once, each on its own connection.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from orlojd.adapters.queue import ClaimedTask, TaskQueue, TaskState, TaskView
from orlojd.adapters.store import Store, StoreError
from orlojd.core.keys import ResourceKey

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
SECOND = timedelta(seconds=1)


def enqueue(queue: TaskQueue, name: str, now: datetime = T0, **options: object) -> str:
    task_id = queue.enqueue_run(f"Task/default/{name}", "sha256:one", {"name": name}, now=now, **options)  # type: ignore[arg-type]
    assert task_id is not None
    return task_id


def claim(queue: TaskQueue, worker: str, now: datetime = T0) -> ClaimedTask:
    claimed = queue.claim_one(worker, now, LEASE)
    assert claimed is not None
    return claimed


def view(queue: TaskQueue, task_id: str) -> TaskView:
    found = queue.get_one(task_id)
    assert found is not None
    return found


def test_enqueue_claim_complete(queue: TaskQueue) -> None:
    task_id = queue.enqueue_run("Task/default/report", "sha256:abc", {"input": "x"}, now=T0, priority=2)
    assert task_id is not None
    pending = view(queue, task_id)
    assert (pending.state, pending.priority, pending.attempts, pending.max_attempts) == (TaskState.PENDING, 2, 0, 3)
    assert (pending.available_at, pending.created_at, pending.lease_owner) == (T0, T0, None)

    claimed = claim(queue, "w1", T0 + SECOND)
    assert claimed == ClaimedTask(task_id, "Task/default/report", "sha256:abc", {"input": "x"}, 1, 3, 1, worker="w1")
    running = view(queue, task_id)
    assert (running.state, running.lease_owner, running.lease_until) == (TaskState.RUNNING, "w1", T0 + SECOND + LEASE)
    assert queue.claim_one("w2", T0 + SECOND, LEASE) is None

    assert queue.complete_run(task_id, "w1", claimed.fencing_token, T0 + 2 * SECOND, {"answer": 42})
    done = view(queue, task_id)
    assert (done.state, done.result, done.finished_at, done.lease_owner) == (
        TaskState.SUCCEEDED,
        {"answer": 42},
        T0 + 2 * SECOND,
        None,
    )
    assert queue.claim_one("w1", T0 + timedelta(days=1), LEASE) is None
    assert queue.counts_all() == {s.value: (1 if s is TaskState.SUCCEEDED else 0) for s in TaskState}


def test_a_task_is_enqueued_once_per_key_and_digest(queue: TaskQueue) -> None:
    first = queue.enqueue_run("Task/default/a", "sha256:1", {}, now=T0)
    assert first is not None
    assert queue.enqueue_run("Task/default/a", "sha256:1", {"other": True}, now=T0) is None
    assert queue.complete_run(first, "w", claim(queue, "w").fencing_token, T0, {})
    assert queue.enqueue_run("Task/default/a", "sha256:1", {}, now=T0 + timedelta(days=1)) is None
    assert queue.enqueue_run("Task/default/a", "sha256:2", {}, now=T0) not in (None, first)
    assert queue.enqueue_run("Task/default/b", "sha256:1", {}, now=T0) not in (None, first)
    assert len(queue.list_all()) == 3
    assert view(queue, first).payload == {}


def test_claims_go_by_priority_then_age(queue: TaskQueue) -> None:
    low_oldest = enqueue(queue, "low", T0, priority=5)
    normal_old = enqueue(queue, "normal-old", T0 + SECOND)
    urgent = enqueue(queue, "urgent", T0 + 3 * SECOND, priority=1)
    normal_new = enqueue(queue, "normal-new", T0 + 2 * SECOND)
    now = T0 + timedelta(minutes=1)
    order = [claim(queue, "w", now).id for _ in range(4)]
    assert order == [urgent, normal_old, normal_new, low_oldest]
    assert queue.claim_one("w", now, LEASE) is None


def test_a_task_is_not_claimable_before_available_at(queue: TaskQueue) -> None:
    later = enqueue(queue, "later", T0, available_at=T0 + timedelta(minutes=5))
    assert queue.claim_one("w", T0 + timedelta(minutes=5) - SECOND, LEASE) is None
    assert claim(queue, "w", T0 + timedelta(minutes=5)).id == later


def test_an_expired_lease_is_taken_over_by_another_worker(queue: TaskQueue) -> None:
    task_id = enqueue(queue, "slow")
    first = claim(queue, "w1", T0)
    assert queue.claim_one("w2", T0 + LEASE - SECOND, LEASE) is None
    assert queue.renew_run(task_id, "w1", first.fencing_token, T0 + 20 * SECOND, LEASE)
    assert view(queue, task_id).lease_until == T0 + 20 * SECOND + LEASE
    assert queue.claim_one("w2", T0 + LEASE + SECOND, LEASE) is None, "the renewed lease still holds"

    takeover_at = T0 + 20 * SECOND + LEASE + SECOND
    second = claim(queue, "w2", takeover_at)
    assert (second.id, second.attempts, second.fencing_token) == (task_id, 2, first.fencing_token + 1)
    taken = view(queue, task_id)
    assert (taken.lease_owner, taken.lease_until) == ("w2", takeover_at + LEASE)


def test_a_worker_that_lost_its_lease_is_fenced_off(queue: TaskQueue) -> None:
    task_id = enqueue(queue, "contested")
    old = claim(queue, "w1", T0)
    new = claim(queue, "w2", T0 + LEASE + SECOND)
    before = view(queue, task_id)
    late = T0 + LEASE + 2 * SECOND
    assert not queue.renew_run(task_id, "w1", old.fencing_token, late, LEASE)
    assert not queue.complete_run(task_id, "w1", old.fencing_token, late, {"stale": True})
    assert not queue.fail_run(task_id, "w1", old.fencing_token, late, "stale failure", None)
    assert not queue.fail_run(task_id, "w1", old.fencing_token, late, "stale failure", late)
    assert not queue.complete_run(task_id, "w2", old.fencing_token, late, {"wrong": "token"})
    assert not queue.complete_run(task_id, "w1", new.fencing_token, late, {"wrong": "worker"})
    assert view(queue, task_id) == before

    assert queue.complete_run(task_id, "w2", new.fencing_token, late, {"fresh": True})
    assert view(queue, task_id).result == {"fresh": True}
    assert not queue.complete_run(task_id, "w2", new.fencing_token, late, {"twice": True})
    assert view(queue, task_id).result == {"fresh": True}


def test_failures_retry_until_the_attempts_are_spent_then_dead_letter(queue: TaskQueue) -> None:
    task_id = enqueue(queue, "flaky", max_attempts=2)
    first = claim(queue, "w", T0)
    retry_at = T0 + timedelta(seconds=10)
    assert queue.fail_run(task_id, "w", first.fencing_token, T0 + SECOND, "timeout", retry_at)
    waiting = view(queue, task_id)
    assert (waiting.state, waiting.available_at, waiting.last_error) == (TaskState.PENDING, retry_at, "timeout")
    assert (waiting.lease_owner, waiting.finished_at) == (None, None)
    assert queue.claim_one("w", retry_at - SECOND, LEASE) is None

    second = claim(queue, "w", retry_at)
    assert second.attempts == 2
    give_up = retry_at + SECOND
    assert queue.fail_run(task_id, "w", second.fencing_token, give_up, "timeout again", give_up + SECOND)
    dead = view(queue, task_id)
    assert (dead.state, dead.attempts, dead.finished_at, dead.last_error) == (
        TaskState.DEAD_LETTER,
        2,
        give_up,
        "timeout again",
    )
    assert queue.claim_one("w", give_up + timedelta(days=1), LEASE) is None


def test_a_failure_without_retry_goes_straight_to_dead_letter(queue: TaskQueue) -> None:
    task_id = enqueue(queue, "denied", max_attempts=5)
    claimed = claim(queue, "w")
    assert queue.fail_run(task_id, "w", claimed.fencing_token, T0 + SECOND, "governance denied", None)
    assert (view(queue, task_id).state, view(queue, task_id).attempts) == (TaskState.DEAD_LETTER, 1)


def test_dead_letter_retry_and_purge(queue: TaskQueue) -> None:
    task_id = enqueue(queue, "revived", max_attempts=1)
    first = claim(queue, "w", T0)
    assert queue.fail_run(task_id, "w", first.fencing_token, T0 + SECOND, "boom", None)
    assert [t.id for t in queue.list_all(state="dead_letter")] == [task_id]
    assert not queue.retry_dead_letter_run(enqueue(queue, "alive"), T0), "only dead letters are retried"

    revived_at = T0 + timedelta(hours=1)
    assert queue.retry_dead_letter_run(task_id, revived_at)
    revived = view(queue, task_id)
    assert (revived.state, revived.attempts, revived.available_at, revived.finished_at) == (
        TaskState.PENDING,
        0,
        revived_at,
        None,
    )
    assert not queue.retry_dead_letter_run(task_id, revived_at)
    claim(queue, "other", revived_at)  # "alive" first: it is older at the same priority
    again = claim(queue, "w", revived_at)
    assert (again.id, again.attempts, again.fencing_token) == (task_id, 1, first.fencing_token + 1)
    assert queue.fail_run(task_id, "w", again.fencing_token, revived_at + SECOND, "boom", None)

    old = enqueue(queue, "old")
    assert queue.fail_run(old, "w", claim(queue, "w", T0).fencing_token, T0, "old boom", None)
    assert queue.purge_dead_letter_run(older_than=T0 + timedelta(minutes=1)) == 1
    assert queue.get_one(old) is None
    assert view(queue, task_id).state == TaskState.DEAD_LETTER
    assert queue.enqueue_run("Task/default/old", "sha256:one", {}, now=T0) is not None, "a purged run is forgotten"


def test_cancel(queue: TaskQueue) -> None:
    pending = enqueue(queue, "pending", priority=5)
    running = enqueue(queue, "running", priority=1)
    claimed = claim(queue, "w")
    assert claimed.id == running

    assert queue.cancel_run(pending, T0 + SECOND)
    assert queue.cancel_run(running, T0 + SECOND)
    assert not queue.cancel_run(running, T0 + 2 * SECOND), "already cancelled"
    assert not queue.cancel_run("no-such-task", T0)
    assert queue.claim_one("w", T0 + timedelta(days=1), LEASE) is None
    assert not queue.renew_run(running, "w", claimed.fencing_token, T0 + 2 * SECOND, LEASE)
    assert not queue.complete_run(running, "w", claimed.fencing_token, T0 + 2 * SECOND, {})
    for task_id in (pending, running):
        cancelled = view(queue, task_id)
        assert (cancelled.state, cancelled.finished_at, cancelled.lease_owner) == (
            TaskState.CANCELLED,
            T0 + SECOND,
            None,
        )
    done = enqueue(queue, "done")
    assert queue.complete_run(done, "w", claim(queue, "w", T0).fencing_token, T0, {})
    assert not queue.cancel_run(done, T0)


def test_an_expired_lease_on_the_last_attempt_is_reaped_not_taken_over(queue: TaskQueue) -> None:
    task_id = enqueue(queue, "crashy", max_attempts=1)
    claim(queue, "w1")
    after = T0 + LEASE + SECOND
    assert queue.reap_expired_run(T0 + LEASE - SECOND) == 0
    assert queue.claim_one("w2", after, LEASE) is None
    assert queue.reap_expired_run(after) == 1
    reaped = view(queue, task_id)
    assert (reaped.state, reaped.finished_at, reaped.lease_owner) == (TaskState.DEAD_LETTER, after, None)
    assert "lease expired" in (reaped.last_error or "")


def test_listing_and_counting(queue: TaskQueue) -> None:
    ids = [enqueue(queue, f"t{i}", T0 + i * SECOND) for i in range(5)]
    claim(queue, "w")
    assert [t.id for t in queue.list_all()] == ids[::-1]
    assert [t.id for t in queue.list_all(limit=2)] == ids[:2:-1]
    assert [t.id for t in queue.list_all(state="running")] == [ids[0]]
    assert queue.list_all(state=TaskState.SUCCEEDED) == []
    with pytest.raises(ValueError):
        queue.list_all(state="nonsense")
    counts = queue.counts_all()
    assert (counts["pending"], counts["running"], sum(counts.values())) == (4, 1, 5)
    assert set(counts) == {s.value for s in TaskState}
    assert queue.get_one("no-such-task") is None


def test_times_must_be_aware_and_are_stored_as_utc(queue: TaskQueue) -> None:
    with pytest.raises(ValueError, match="naive"):
        queue.enqueue_run("Task/default/x", "sha256:1", {}, now=datetime(2026, 3, 1, 12))
    with pytest.raises(ValueError, match="priority"):
        queue.enqueue_run("Task/default/x", "sha256:1", {}, now=T0, priority=6)
    berlin = T0.astimezone(timezone(timedelta(hours=2)))
    task_id = enqueue(queue, "x", berlin)
    assert view(queue, task_id).created_at == T0
    assert view(queue, task_id).created_at.tzinfo == UTC


def test_database_errors_become_store_errors(store: Store, queue: TaskQueue) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE tasks"))
    with pytest.raises(StoreError, match="task queue"):
        queue.claim_one("w", T0, LEASE)
    with pytest.raises(StoreError, match="task queue"):
        queue.enqueue_run("Task/default/x", "sha256:1", {}, now=T0)
    assert store.suspend_run(ResourceKey("Agent", "default", "a"), "the failed writes let go", T0)


def test_concurrent_workers_claim_every_task_exactly_once(queue: TaskQueue) -> None:
    total, workers = 500, 4
    for i in range(total):
        enqueue(queue, f"t{i:03}", T0 + i * timedelta(milliseconds=1), priority=1 + i % 5)
    start = threading.Barrier(workers)
    now = T0 + timedelta(minutes=1)

    def work(worker: str) -> list[str]:
        start.wait()
        claimed = []
        while (task := queue.claim_one(worker, now, LEASE)) is not None:
            claimed.append(task.id)
            assert queue.complete_run(task.id, worker, task.fencing_token, now, {"by": worker})
        return claimed

    with ThreadPoolExecutor(workers) as pool:
        per_worker = list(pool.map(work, [f"w{n}" for n in range(workers)]))
    claims = Counter(task_id for claimed in per_worker for task_id in claimed)
    assert len(claims) == total, "every task claimed"
    assert set(claims.values()) == {1}, f"claimed twice: {[t for t, n in claims.items() if n > 1]}"
    assert queue.counts_all()["succeeded"] == total
    rows = queue.list_all(limit=total)
    assert {(t.attempts, t.fencing_token) for t in rows} == {(1, 1)}
    assert sum(1 for claimed in per_worker if claimed) > 1, "the work was shared"
