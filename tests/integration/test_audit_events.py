"""The audit trail records every task transition (store triggers, migration 0006) and every
reconcile, in the transaction that made it, on both stores."""

from __future__ import annotations

from datetime import timedelta

from pools import T0

from orlojd.adapters.audit import AuditLog
from orlojd.adapters.queue import TaskQueue, TaskState, released
from orlojd.adapters.store import Store

LEASE = timedelta(seconds=30)


def trail(store: Store, task_id: str) -> list[tuple[str, str | None]]:
    return [(e.event, e.actor) for e in AuditLog(store).list_all(task_id=task_id)]


def test_every_task_transition_is_one_event_and_renewals_none(store: Store, queue: TaskQueue) -> None:
    task_id = queue.enqueue_run("Task/default/report", "sha256:a", {"revision": "c0ffee"}, now=T0, max_attempts=3)
    assert task_id is not None
    first = queue.claim_one("w1", T0, LEASE)
    assert first is not None
    assert queue.renew_run(task_id, "w1", first.fencing_token, T0 + timedelta(seconds=5), LEASE)
    assert queue.fail_run(task_id, "w1", first.fencing_token, T0, "boom", T0 + timedelta(seconds=1))
    second = queue.claim_one("w2", T0 + timedelta(seconds=2), LEASE)
    assert second is not None
    assert queue.defer_run(task_id, "w2", second.fencing_token, T0, T0 + timedelta(minutes=1), "budget")
    third = queue.claim_one("w1", T0 + timedelta(minutes=2), LEASE)
    assert third is not None
    assert queue.complete_run(task_id, "w1", third.fencing_token, T0 + timedelta(minutes=3), {"ok": True})
    assert trail(store, task_id) == [
        ("task_queued", "daemon"),
        ("task_started", "w1"),
        ("task_retried", "w1"),
        ("task_started", "w2"),
        ("task_deferred", "w2"),
        ("task_started", "w1"),
        ("task_completed", "w1"),
    ]
    (queued, *_rest) = AuditLog(store).list_all(task_id=task_id)
    assert (queued.revision, queued.subject, queued.detail["task_key"]) == (
        "c0ffee",
        f"task:{task_id}",
        "Task/default/report",
    )


def test_a_stale_claims_write_records_nothing(store: Store, queue: TaskQueue) -> None:
    task_id = queue.enqueue_run("Task/default/report", "sha256:a", {}, now=T0)
    assert task_id is not None
    claim = queue.claim_one("w1", T0, LEASE)
    assert claim is not None
    with store.writing() as connection:
        stale = released(task_id, "w1", claim.fencing_token + 1, TaskState.FAILED, T0, error="x")
        assert connection.execute(stale).rowcount == 0
    assert [e for e, _ in trail(store, task_id)] == ["task_queued", "task_started"]


def test_dead_letter_cancel_and_parking_are_recorded(store: Store, queue: TaskQueue) -> None:
    gone = queue.enqueue_run("Task/default/once", "sha256:b", {}, now=T0, max_attempts=1)
    parked = queue.enqueue_run("Task/default/parked", "sha256:c", {}, now=T0)
    cancelled = queue.enqueue_run("Task/default/cancelled", "sha256:d", {}, now=T0)
    assert gone and parked and cancelled
    claim = queue.claim_one("w1", T0, LEASE)
    assert claim is not None and claim.id == gone
    assert queue.fail_run(gone, "w1", claim.fencing_token, T0, "boom", None)
    claim = queue.claim_one("w1", T0, LEASE)
    assert claim is not None and claim.id == parked
    with store.writing() as connection:
        park = released(parked, "w1", claim.fencing_token, TaskState.WAITING_APPROVAL, T0, T0 + timedelta(hours=1))
        assert connection.execute(park).rowcount == 1
    assert queue.cancel_run(cancelled, T0)
    assert [e for e, _ in trail(store, gone)][-1] == "task_dead_lettered"
    assert [e for e, _ in trail(store, parked)][-1] == "task_waiting_approval"
    assert [e for e, _ in trail(store, cancelled)] == ["task_queued", "task_cancelled"]


def test_a_reconcile_is_recorded_with_its_revision(store: Store) -> None:
    store.record_reconcile_run("abc123", "superseded", {"created": 2, "note": "newer commit"}, T0, T0)
    store.record_reconcile_run("def456", "stalled", {"reason": "InvalidManifests"}, T0, T0)
    (event, failed) = [e for e in AuditLog(store).list_all() if e.event.startswith("reconcile_")]
    assert (failed.event, failed.revision, failed.detail) == (
        "reconcile_failed",
        "def456",
        {"reason": "InvalidManifests"},
    )
    assert (event.event, event.revision, event.actor, event.detail) == (
        "reconcile_superseded",
        "abc123",
        "daemon",
        {"created": 2, "note": "newer commit"},
    )
