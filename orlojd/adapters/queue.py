"""The task queue in the state store: enqueue, claim under a lease, renew, finish, dead-letter.

Called by the worker pool and the scheduler (``engine``) and by ``orlojd task|dlq``. One row
per Task run in table ``tasks`` (migration 0003), unique per (task_key, digest): a Task is
enqueued once per manifest digest, whatever became of that run (run-once).

Claims. ``claim_one`` takes the first claimable row by (priority, available_at) and marks it
running in one short transaction: on PostgreSQL ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE
SKIP LOCKED LIMIT 1) RETURNING``, on SQLite an UPDATE ... RETURNING (SQLite >= 3.35) after
``BEGIN IMMEDIATE``. A claim also routes (see ``adapters/queue_sql.py``): paused rows, rows past their deadline,
rows needing labels the worker lacks and rows whose agent is at its concurrent-run cap are
skipped. ``available_at`` is when a row becomes claimable: a pending task's first
run or retry, a running task's lease end, so the same query takes over an expired lease. Every
claim counts an attempt and increments the fencing token; a running row whose last attempt is
spent is not taken over but dead-lettered by ``reap_expired_run``. The claim and the fenced
updates run precompiled on the driver's connection (``queue_sql.Prepared``).

Fencing. ``renew_run``, ``complete_run`` and ``fail_run`` name the claim by (worker, token);
after a takeover the old owner's calls match no row, return False and write nothing. A
lease that expired but was not taken over is still its owner's.

Time is passed in (``now``, timezone-aware); nothing here reads the clock. SQLAlchemy and
driver errors are re-raised as ``StoreError``. Pause and resume carry request ids
(table ``task_requests``), so a retried request is a no-op. A given-up run is dead-lettered, so
``orlojd dlq retry`` can revive it; ``waiting_approval`` and ``failed`` (a denied approval) are
written by ``adapters/approvals.py`` in the transaction that records the approval.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from orlojd.adapters.clock import utc
from orlojd.adapters.queue_sql import TASKS, Prepared, TaskState, hot_statements
from orlojd.adapters.store import Store, StoreError, stored_time
from orlojd.adapters.tables import TaskRequestRow

__all__ = ["ClaimedTask", "ControlOutcome", "TaskQueue", "TaskState", "TaskView", "released"]

SQLITE_RETURNING = (3, 35, 0)


class ControlOutcome(StrEnum):
    """What ``pause_run`` / ``resume_run`` did."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this request id was applied before: nothing changed
    UNKNOWN = "unknown"  # no such task
    FINISHED = "finished"  # the task already ended: nothing to pause or resume


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A claim: run ``payload``, then finish it with (worker id, ``fencing_token``)."""

    id: str
    task_key: str
    digest: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    fencing_token: int
    agent: str | None = None
    deadline_at: datetime | None = None
    attempt_timeout: timedelta | None = None
    worker: str = ""  # who holds the claim (with ``fencing_token``, what fenced writes name)

    @property
    def task_spec(self) -> Mapping[str, Any]:
        """The ``spec`` of the Task manifest this run was queued from (``{}`` when there is none)."""
        spec = (self.payload.get("task") or {}).get("spec") or {}
        return spec if isinstance(spec, Mapping) else {}

    @property
    def task_input(self) -> dict[str, Any]:
        """A copy of the Task's ``spec.input`` as a mapping (an input that is not one: under the key ``input``)."""
        found = self.task_spec.get("input") or {}
        return dict(found) if isinstance(found, Mapping) else {"input": found}


@dataclass(frozen=True, slots=True)
class TaskView:
    """One row as stored, for listings and ``orlojd task show``."""

    id: str
    task_key: str
    digest: str
    state: TaskState
    priority: int
    attempts: int
    max_attempts: int
    available_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    fencing_token: int
    payload: dict[str, Any]
    result: dict[str, Any] | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    agent: str | None = None
    agent_cap: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    deadline_at: datetime | None = None
    attempt_timeout_ms: int | None = None
    paused: bool = False


REQUESTS: sa.Table = TaskRequestRow.__table__  # type: ignore[attr-defined]
ACTIVE = (TaskState.PENDING, TaskState.RUNNING, TaskState.WAITING_APPROVAL)


class TaskQueue:
    """The queue in one ``Store`` (SQLite or PostgreSQL); safe to share between threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._engine = store.engine
        self._sqlite = store.engine.dialect.name == "sqlite"
        self._local = threading.local()
        self._hot = {
            name: Prepared.of(statement, store.engine.dialect)
            for name, statement in hot_statements(store.engine.dialect.name).items()
        }
        if self._sqlite and sqlite3.sqlite_version_info < SQLITE_RETURNING:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old for the task queue (UPDATE ... RETURNING)",
                "use a Python built with SQLite 3.35 or newer, or a postgresql:// store",
            )

    # -- writes ------------------------------------------------------------------------------

    def enqueue_run(
        self,
        task_key: str,
        digest: str,
        payload: dict[str, Any],
        *,
        now: datetime,
        priority: int = 3,
        max_attempts: int = 3,
        available_at: datetime | None = None,
        agent: str | None = None,
        agent_cap: int | None = None,
        labels: dict[str, str] | None = None,
        deadline_at: datetime | None = None,
        attempt_timeout: timedelta | None = None,
    ) -> str | None:
        """Queue a run; its id, or None when (task_key, digest) was queued before (run-once).

        ``labels`` are worker labels the run requires; ``agent_cap`` caps how many runs of
        ``agent`` may run at once; ``deadline_at`` ends the task across all its attempts;
        ``attempt_timeout`` bounds each attempt.
        """
        if not 1 <= priority <= 5:
            raise ValueError(f"priority must be 1..5, got {priority}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        now = utc(now)
        insert = postgresql.insert if not self._sqlite else sqlite.insert
        statement = (
            insert(TASKS)
            .values(
                id=uuid.uuid4().hex,
                task_key=task_key,
                digest=digest,
                state=TaskState.PENDING.value,
                priority=priority,
                attempts=0,
                max_attempts=max_attempts,
                available_at=utc(available_at) if available_at is not None else now,
                fencing_token=0,
                payload=_dumps(payload),
                created_at=now,
                updated_at=now,
                agent=agent,
                agent_cap=agent_cap,
                labels=_dumps(labels or {}),
                deadline_at=None if deadline_at is None else utc(deadline_at),
                attempt_timeout_ms=None if attempt_timeout is None else int(attempt_timeout.total_seconds() * 1000),
            )
            .on_conflict_do_nothing(index_elements=["task_key", "digest"])
            .returning(TASKS.c.id)
        )
        with self._write() as connection:
            task_id = connection.execute(statement).scalar()
        return None if task_id is None else str(task_id)

    def claim_one(
        self, worker_id: str, now: datetime, lease: timedelta, labels: dict[str, str] | None = None
    ) -> ClaimedTask | None:
        """Claim the first runnable task (pending and due, or running with an expired lease), or None.

        Only rows this worker may run: not paused, before their deadline, whose required labels
        are all in ``labels``, whose agent is under its concurrent-run cap.
        """
        now = utc(now)
        values = {"now": now, "until": now + lease, "worker": worker_id, "labels": _dumps(labels or {})}
        rows, _ = self._driver_run("claim", values)
        if not rows:
            return None
        row = rows[0]
        timeout = None if row[9] is None else timedelta(milliseconds=row[9])
        return ClaimedTask(
            row[0],
            row[1],
            row[2],
            json.loads(row[3]),
            row[4],
            row[5],
            row[6],
            row[7],
            stored_time(row[8]),
            timeout,
            worker_id,
        )

    def renew_run(self, task_id: str, worker_id: str, fencing_token: int, now: datetime, lease: timedelta) -> bool:
        """Extend the lease to now + lease; False when the claim is no longer this worker's (or it was cancelled)."""
        claim = {"id": task_id, "worker": worker_id, "token": fencing_token}
        return self._driver_run("renew", {**claim, "now": utc(now), "until": utc(now) + lease})[1] == 1

    def complete_run(
        self, task_id: str, worker_id: str, fencing_token: int, now: datetime, result: dict[str, Any]
    ) -> bool:
        """Mark the run succeeded with its result; False (nothing written) for a stale claim."""
        claim = {"id": task_id, "worker": worker_id, "token": fencing_token}
        return self._driver_run("complete", {**claim, "now": utc(now), "result": _dumps(result)})[1] == 1

    def fail_run(
        self, task_id: str, worker_id: str, fencing_token: int, now: datetime, error: str, retry_at: datetime | None
    ) -> bool:
        """Record a failed attempt; False (nothing written) for a stale claim.

        With ``retry_at`` the task is pending again from then on, unless its attempts are
        spent; without it (the caller gives up, or the error is not retryable) and after the
        last attempt it goes to dead_letter, where ``retry_dead_letter_run`` can revive it.
        """
        values = {"id": task_id, "worker": worker_id, "token": fencing_token, "now": utc(now), "error": error}
        if retry_at is None:
            return self._driver_run("fail_final", values)[1] == 1
        return self._driver_run("fail_retry", {**values, "retry_at": utc(retry_at)})[1] == 1

    def defer_run(
        self, task_id: str, worker_id: str, fencing_token: int, now: datetime, until: datetime, reason: str
    ) -> bool:
        """Give the claim back until ``until`` without counting its attempt (a call waiting for its
        token budget); False (nothing written) for a stale claim."""
        statement = released(task_id, worker_id, fencing_token, TaskState.PENDING, now, until, reason)
        with self._write() as connection:
            return connection.execute(statement).rowcount == 1

    def reap_expired_run(self, now: datetime) -> int:
        """Dead-letter tasks that can no longer run; how many.

        Running tasks whose lease expired on their last attempt, and pending, running or
        waiting_approval tasks whose whole-task deadline passed (a running one's worker learns it
        on its next renew).
        """
        t = TASKS
        now = utc(now)
        late = (
            sa.update(t)
            .where(t.c.state.in_([s.value for s in ACTIVE]), t.c.deadline_at <= now)
            .values(**_ended(TaskState.DEAD_LETTER, now, "the task's deadline passed before it finished"))
        )
        statement = (
            sa.update(t)
            .where(t.c.state == TaskState.RUNNING.value, t.c.lease_until < now, t.c.attempts >= t.c.max_attempts)
            .values(
                **_ended(
                    TaskState.DEAD_LETTER, now, "lease expired on the last attempt (the worker stopped or was too slow)"
                )
            )
        )
        with self._write() as connection:
            return connection.execute(late).rowcount + connection.execute(statement).rowcount

    def pause_run(self, task_id: str, request_id: str, now: datetime) -> ControlOutcome:
        """Hold a task before its next attempt (an attempt already running finishes).

        Idempotent per ``request_id``: a request seen before changes nothing, so a retried
        pause cannot undo a resume that came after it.
        """
        return self._control(task_id, request_id, "pause", True, now)

    def resume_run(self, task_id: str, request_id: str, now: datetime) -> ControlOutcome:
        """Let a paused task be claimed again; idempotent per ``request_id`` like ``pause_run``."""
        return self._control(task_id, request_id, "resume", False, now)

    def _control(self, task_id: str, request_id: str, action: str, paused: bool, now: datetime) -> ControlOutcome:
        if not request_id or len(request_id) > 100:
            raise ValueError("a request id is 1 to 100 characters")
        t, r = TASKS, REQUESTS
        now = utc(now)
        with self._write() as connection:
            state = connection.execute(sa.select(t.c.state).where(t.c.id == task_id)).scalar()
            if state is None:
                return ControlOutcome.UNKNOWN
            seen = connection.execute(
                sa.select(r.c.action).where(r.c.task_id == task_id, r.c.request_id == request_id)
            ).first()
            if seen is not None:
                return ControlOutcome.DUPLICATE
            if TaskState(state) not in ACTIVE:
                return ControlOutcome.FINISHED
            connection.execute(sa.insert(r).values(task_id=task_id, request_id=request_id, action=action, at=now))
            connection.execute(sa.update(t).where(t.c.id == task_id).values(paused=paused, updated_at=now))
        return ControlOutcome.APPLIED

    def cancel_run(self, task_id: str, now: datetime) -> bool:
        """Cancel a pending, running or waiting task; False when it is unknown or already finished.

        A running task's worker learns it on its next renew (False) and its result is refused.
        """
        t = TASKS
        now = utc(now)
        statement = (
            sa.update(t)
            .where(t.c.id == task_id, t.c.state.in_([s.value for s in ACTIVE]))
            .values(**_ended(TaskState.CANCELLED, now))
        )
        with self._write() as connection:
            return connection.execute(statement).rowcount == 1

    def cancel_key_run(self, task_key: str, now: datetime, reason: str) -> int:
        """Cancel every unfinished run of ``task_key`` (its Task was deleted from git), noting why; how many."""
        t = TASKS
        now = utc(now)
        statement = (
            sa.update(t)
            .where(t.c.task_key == task_key, t.c.state.in_([s.value for s in ACTIVE]))
            .values(**_ended(TaskState.CANCELLED, now, reason))
        )
        with self._write() as connection:
            return connection.execute(statement).rowcount

    def trim_finished_run(self, task_key: str, keep_succeeded: int, keep_failed: int) -> int:
        """Delete the finished runs of ``task_key`` beyond the newest ``keep_succeeded`` succeeded and the
        newest ``keep_failed`` failed, dead-lettered or cancelled ones (a schedule's history limits); how many."""
        t = TASKS
        buckets = (
            ([TaskState.SUCCEEDED.value], keep_succeeded),
            ([TaskState.FAILED.value, TaskState.DEAD_LETTER.value, TaskState.CANCELLED.value], keep_failed),
        )
        deleted = 0
        with self._write() as connection:
            for states, keep in buckets:
                newest = (
                    sa.select(t.c.id)
                    .where(t.c.task_key == task_key, t.c.state.in_(states))
                    .order_by(t.c.finished_at.desc(), t.c.id.desc())
                    .limit(keep)
                )
                kept = {row[0] for row in connection.execute(newest)}
                statement = sa.delete(t).where(t.c.task_key == task_key, t.c.state.in_(states))
                if kept:
                    statement = statement.where(t.c.id.not_in(kept))
                deleted += connection.execute(statement).rowcount
        return deleted

    def retry_dead_letter_run(self, task_id: str, now: datetime) -> bool:
        """Move a dead-lettered task back to pending with its attempts reset; False if it is not dead-lettered."""
        t = TASKS
        now = utc(now)
        statement = (
            sa.update(t)
            .where(t.c.id == task_id, t.c.state == TaskState.DEAD_LETTER.value)
            .values(state=TaskState.PENDING.value, attempts=0, available_at=now, finished_at=None, updated_at=now)
        )
        with self._write() as connection:
            return connection.execute(statement).rowcount == 1

    def purge_dead_letter_run(self, older_than: datetime) -> int:
        """Delete dead-lettered tasks finished before ``older_than``; how many.

        A purged (task_key, digest) is forgotten, so it may be enqueued again.
        """
        t = TASKS
        statement = sa.delete(t).where(t.c.state == TaskState.DEAD_LETTER.value, t.c.finished_at < utc(older_than))
        with self._write() as connection:
            return connection.execute(statement).rowcount

    # -- reads -------------------------------------------------------------------------------

    def get_one(self, task_id: str) -> TaskView | None:
        with self._read() as connection:
            row = connection.execute(sa.select(TASKS).where(TASKS.c.id == task_id)).first()
        return None if row is None else _view(row._mapping)

    def list_all(self, state: str | None = None, limit: int = 100) -> list[TaskView]:
        """Tasks, newest first, optionally in one state."""
        statement = sa.select(TASKS).order_by(TASKS.c.created_at.desc(), TASKS.c.id).limit(limit)
        if state is not None:
            statement = statement.where(TASKS.c.state == TaskState(state).value)
        with self._read() as connection:
            return [_view(row._mapping) for row in connection.execute(statement)]

    def overdue_all(self, due_before: datetime, limit: int = 100) -> list[TaskView]:
        """Pending, unpaused tasks due since before ``due_before``, longest waiting first."""
        t = TASKS
        statement = (
            sa.select(t)
            .where(t.c.state == TaskState.PENDING.value, t.c.paused == sa.false(), t.c.available_at < utc(due_before))
            .order_by(t.c.available_at, t.c.id)
            .limit(limit)
        )
        with self._read() as connection:
            return [_view(row._mapping) for row in connection.execute(statement)]

    def active_for(self, task_key: str) -> list[TaskView]:
        """The runs of ``task_key`` not yet finished (pending, running, waiting), oldest first."""
        statement = (
            sa.select(TASKS)
            .where(TASKS.c.task_key == task_key, TASKS.c.state.in_([s.value for s in ACTIVE]))
            .order_by(TASKS.c.created_at, TASKS.c.id)
        )
        with self._read() as connection:
            return [_view(row._mapping) for row in connection.execute(statement)]

    def counts_all(self) -> dict[str, int]:
        """Tasks per state, every state present (zero when none)."""
        counts = {s.value: 0 for s in TaskState}
        with self._read() as connection:
            for state, count in connection.execute(sa.select(TASKS.c.state, sa.func.count()).group_by(TASKS.c.state)):
                counts[state] = count
        return counts

    # -- transactions ------------------------------------------------------------------------

    def _driver_run(self, name: str, values: dict[str, Any]) -> tuple[Sequence[Any], int]:
        """Run a prepared hot statement in its own transaction: (returned rows, rowcount)."""
        prepared = self._hot[name]
        with self.store.errors("task queue"):
            if not self._sqlite:
                connection = self._engine.raw_connection()
                try:
                    cursor = connection.cursor()
                    cursor.execute(prepared.sql, prepared.parameters(values))
                    rows = cursor.fetchall() if prepared.returns_rows else []
                    count = cursor.rowcount
                    connection.commit()
                finally:
                    connection.close()  # the pool rolls back whatever was not committed
                return rows, count
            connection = self._thread_connection()
            try:
                cursor = connection.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute(prepared.sql, prepared.parameters(values))
                rows = cursor.fetchall() if prepared.returns_rows else []
                count = cursor.rowcount
                connection.commit()
            except BaseException:
                self._local.connection = None  # a connection in an unknown state is not reused
                connection.close()
                raise
        return rows, count

    def _thread_connection(self) -> Any:
        """SQLite: this thread's own connection for the hot statements, detached from the pool.

        Reusing one connection per thread keeps its page cache warm and skips the pool's
        checkout (together about a tenth of a claim on SQLite); it is closed when the thread
        or this queue goes away.
        """
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._engine.raw_connection()
            connection.detach()
            self._local.connection = connection
        return connection

    def _write(self) -> AbstractContextManager[Connection]:
        return self.store.writing("task queue")

    def _read(self) -> AbstractContextManager[Connection]:
        return self.store.reading("task queue")


def released(
    task_id: str,
    worker_id: str,
    fencing_token: int,
    state: TaskState,
    now: datetime,
    available_at: datetime | None = None,
    error: str | None = None,
) -> sa.Update:
    """The fenced update that takes a running claim out of its worker's hands: ``failed`` (ended,
    with ``error``), or back to ``state`` from ``available_at`` without counting the attempt
    (``pending``: a deferred call; ``waiting_approval``: a parked one). Matches no row when the
    claim is stale. Run it in the transaction that records why (an approval, an audit event)."""
    t = TASKS
    now = utc(now)
    if state is TaskState.FAILED:
        values = _ended(state, now, error)
    else:
        assert available_at is not None, "a released claim needs the time it is claimable again"
        values = {
            "state": state.value,
            "lease_owner": None,
            "lease_until": None,
            "attempts": t.c.attempts - 1,
            "available_at": utc(available_at),
            "updated_at": now,
        }
        if error is not None:
            values["last_error"] = error
    return (
        sa.update(t)
        .where(
            t.c.id == task_id,
            t.c.lease_owner == worker_id,
            t.c.fencing_token == fencing_token,
            t.c.state == TaskState.RUNNING.value,
        )
        .values(**values)
    )


def _ended(state: TaskState, now: datetime, error: str | None = None) -> dict[str, Any]:
    """The column values of a run that ends in ``state`` at ``now`` (lease released), with its error if any."""
    values: dict[str, Any] = {
        "state": state.value,
        "lease_owner": None,
        "lease_until": None,
        "finished_at": now,
        "updated_at": now,
    }
    if error is not None:
        values["last_error"] = error
    return values


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _view(row: Any) -> TaskView:
    fields = dict(row)
    for name in ("available_at", "lease_until", "created_at", "updated_at", "finished_at", "deadline_at"):
        fields[name] = stored_time(fields[name])
    fields["state"] = TaskState(fields["state"])
    fields["payload"] = json.loads(fields["payload"])
    fields["result"] = None if fields["result"] is None else json.loads(fields["result"])
    fields["labels"] = json.loads(fields["labels"])
    fields["paused"] = bool(fields["paused"])
    return TaskView(**fields)
