"""Routing in the queue (``orlojd.adapters.queue``) on both stores: worker labels, per-agent caps,
deadlines, pause/resume by request id, and the worker registry (live, lost, stopped).

Explicit times throughout: a lease or a deadline passes because the test passes a later ``now``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orlojd.adapters.queue import ControlOutcome, TaskQueue, TaskState
from orlojd.adapters.store import Store
from orlojd.adapters.worker_registry import LOST_AFTER, WorkerRegistry, WorkerState, offers

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
SECOND = timedelta(seconds=1)


def enqueue(queue: TaskQueue, name: str, now: datetime = T0, **options: object) -> str:
    task_id = queue.enqueue_run(f"Task/default/{name}", "sha256:one", {"name": name}, now=now, **options)  # type: ignore[arg-type]
    assert task_id is not None
    return task_id


def test_a_task_runs_only_on_a_worker_offering_every_label_it_requires(queue: TaskQueue) -> None:
    gpu_eu = enqueue(queue, "gpu-eu", labels={"gpu": "true", "region": "eu"})
    anywhere = enqueue(queue, "anywhere", now=T0 + SECOND)
    now = T0 + 2 * SECOND

    plain = queue.claim_one("plain", now, LEASE)
    assert plain is not None and plain.id == anywhere
    assert queue.claim_one("plain", now, LEASE) is None, "a worker without labels took a task that requires some"
    assert queue.claim_one("eu-only", now, LEASE, {"region": "eu"}) is None, "gpu=true is required too"
    assert queue.claim_one("us-gpu", now, LEASE, {"region": "us", "gpu": "true"}) is None, "the region differs"
    claimed = queue.claim_one("eu-gpu", now, LEASE, {"region": "eu", "gpu": "true", "model": "x"})
    assert claimed is not None and claimed.id == gpu_eu, "extra labels on the worker do not matter"


def test_per_agent_cap_leaves_room_for_other_agents(queue: TaskQueue) -> None:
    noisy = [
        enqueue(queue, f"noisy-{n}", now=T0 + n * SECOND, agent="Agent/default/noisy", agent_cap=2) for n in range(5)
    ]
    quiet = enqueue(queue, "quiet", now=T0 + 10 * SECOND, agent="Agent/default/quiet", agent_cap=2)
    now = T0 + 20 * SECOND

    first = [queue.claim_one(f"w{n}", now, LEASE) for n in range(4)]
    claimed = [c.id for c in first if c is not None]
    assert claimed == [noisy[0], noisy[1], quiet], "the cap of 2 holds the other noisy runs back for quiet"
    assert first[0] is not None and first[0].agent == "Agent/default/noisy"

    assert queue.complete_run(noisy[0], "w0", first[0].fencing_token, now, {})
    after = queue.claim_one("w5", now, LEASE)
    assert after is not None and after.id == noisy[2], "a finished run frees a slot under the cap"

    # Runs whose lease expired no longer count against the cap (their workers are gone).
    later = now + LEASE + SECOND
    taken = [queue.claim_one(f"x{n}", later, LEASE) for n in range(4)]
    ids = [t.id for t in taken if t is not None]
    assert len([i for i in ids if i in noisy]) == 2, "two noisy runs again, whoever held them before"
    assert quiet in ids, "quiet's expired lease is taken over"
    assert len(ids) == 3


def test_deadline_stops_claims_and_the_reaper_dead_letters(queue: TaskQueue) -> None:
    late = enqueue(queue, "late", deadline_at=T0 + 10 * SECOND)
    running = enqueue(queue, "running", now=T0 + SECOND, deadline_at=T0 + 10 * SECOND)
    claim = queue.claim_one("w1", T0 + 2 * SECOND, LEASE)
    assert claim is not None and claim.id == late and claim.deadline_at == T0 + 10 * SECOND
    claim2 = queue.claim_one("w1", T0 + 2 * SECOND, LEASE)
    assert claim2 is not None and claim2.id == running
    assert queue.fail_run(late, "w1", claim.fencing_token, T0 + 3 * SECOND, "boom", T0 + 4 * SECOND)

    past = T0 + 11 * SECOND
    assert queue.claim_one("w2", past, LEASE) is None, "a task past its deadline is not claimed"
    assert queue.reap_expired_run(past) == 2
    for task_id in (late, running):
        view = queue.get_one(task_id)
        assert view is not None and view.state is TaskState.DEAD_LETTER
        assert view.last_error is not None and "deadline" in view.last_error
    assert not queue.renew_run(running, "w1", claim2.fencing_token, past, LEASE), "its worker learns on renew"


def test_pause_and_resume_are_idempotent_per_request_id(queue: TaskQueue) -> None:
    task_id = enqueue(queue, "report")
    assert queue.pause_run(task_id, "req-1", T0) is ControlOutcome.APPLIED
    assert queue.claim_one("w1", T0 + SECOND, LEASE) is None, "a paused task is not claimed"
    assert queue.resume_run(task_id, "req-2", T0 + SECOND) is ControlOutcome.APPLIED
    # The pause is retried (a client timed out and sent it again): it must not undo the resume.
    assert queue.pause_run(task_id, "req-1", T0 + 2 * SECOND) is ControlOutcome.DUPLICATE
    view = queue.get_one(task_id)
    assert view is not None and not view.paused
    claimed = queue.claim_one("w1", T0 + 3 * SECOND, LEASE)
    assert claimed is not None and claimed.id == task_id

    assert queue.pause_run("nope", "req-3", T0) is ControlOutcome.UNKNOWN
    assert queue.complete_run(task_id, "w1", claimed.fencing_token, T0 + 4 * SECOND, {})
    assert queue.pause_run(task_id, "req-4", T0 + 5 * SECOND) is ControlOutcome.FINISHED
    with pytest.raises(ValueError):
        queue.pause_run(task_id, "", T0)


def test_a_paused_running_task_finishes_its_attempt_but_does_not_retry(queue: TaskQueue) -> None:
    task_id = enqueue(queue, "report")
    claimed = queue.claim_one("w1", T0, LEASE)
    assert claimed is not None
    assert queue.pause_run(task_id, "p", T0 + SECOND) is ControlOutcome.APPLIED
    assert queue.renew_run(task_id, "w1", claimed.fencing_token, T0 + 2 * SECOND, LEASE)
    assert queue.fail_run(task_id, "w1", claimed.fencing_token, T0 + 3 * SECOND, "flaky", T0 + 4 * SECOND)
    assert queue.claim_one("w2", T0 + 10 * SECOND, LEASE) is None, "no retry while paused"
    queue.resume_run(task_id, "r", T0 + 11 * SECOND)
    again = queue.claim_one("w2", T0 + 12 * SECOND, LEASE)
    assert again is not None and again.attempts == 2


def test_active_for_lists_unfinished_runs_of_one_key(queue: TaskQueue) -> None:
    first = queue.enqueue_run("TaskSchedule/default/nightly", "slot:a", {}, now=T0)
    second = queue.enqueue_run("TaskSchedule/default/nightly", "slot:b", {}, now=T0 + SECOND)
    enqueue(queue, "other")
    assert first is not None and second is not None
    queue.cancel_run(first, T0 + 2 * SECOND)
    assert [v.id for v in queue.active_for("TaskSchedule/default/nightly")] == [second]


def test_worker_registry_live_lost_stopped(store: Store) -> None:
    registry = WorkerRegistry(store)
    common = {"hostname": "h", "pid": 1, "capacity": 4, "embedded": False}
    registry.register_run("a", labels={"region": "eu"}, now=T0, **common)  # type: ignore[arg-type]
    registry.register_run("b", labels={}, now=T0, **common)  # type: ignore[arg-type]
    registry.register_run("c", labels={"gpu": "true"}, now=T0, **common)  # type: ignore[arg-type]
    later = T0 + LOST_AFTER + SECOND
    assert registry.heartbeat_run("a", later)
    registry.stop_run("c", later)
    states = {v.id: v.state for v in registry.list_all(later, LOST_AFTER)}
    assert states == {"a": WorkerState.LIVE, "b": WorkerState.LOST, "c": WorkerState.STOPPED}
    assert [v.id for v in registry.offering_all({"region": "eu"}, later, LOST_AFTER)] == ["a"]
    assert registry.offering_all({"gpu": "true"}, later, LOST_AFTER) == [], "a stopped worker offers nothing"
    (a,) = [v for v in registry.list_all(later, LOST_AFTER) if v.id == "a"]
    assert (a.labels, a.capacity, a.embedded, a.heartbeat_at) == ({"region": "eu"}, 4, False, later)

    # Re-registering an id starts afresh; rows silent for over a day are cleared out.
    registry.register_run("a", labels={}, now=T0 + timedelta(days=2), **common)  # type: ignore[arg-type]
    assert [v.id for v in registry.list_all(T0 + timedelta(days=2), LOST_AFTER)] == ["a"]
    assert not registry.heartbeat_run("gone", T0), "a beat for an unknown worker says so"


def test_offers() -> None:
    assert offers({"region": "eu", "gpu": "true"}, {"region": "eu"})
    assert offers({}, {})
    assert not offers({"region": "eu"}, {"region": "us"})
    assert not offers({}, {"gpu": "true"})
