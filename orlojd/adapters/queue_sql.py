"""The task queue's hot path as SQL: the claim (with its routing) and the fenced updates.

Built once per dialect with SQLAlchemy and compiled (``Prepared``) to run on the driver's
own connection; ``adapters/queue.py`` runs them. Split from the queue so the SQL can be read
on its own:

* ``claim``: PostgreSQL ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)
  RETURNING``; SQLite the best row of each claimable state found by index seeks, in one
  UPDATE ... RETURNING after ``BEGIN IMMEDIATE``. Routing (``_routing``) skips paused rows,
  rows past their deadline, rows needing labels the worker lacks and rows whose agent is at
  its cap. The cap counts running rows with a live lease: exact on SQLite (claims are
  serialised), on PostgreSQL two claims at the same instant may each see the last free slot
  (READ COMMITTED), so an agent can briefly run one over its cap per concurrent claimer.
* ``renew``, ``complete``, ``fail_final``, ``fail_retry``: updates of the claim named by
  (id, worker, fencing token) while it runs; a stale claim matches no row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from orlojd.adapters.tables import TaskRow


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"
    CANCELLED = "cancelled"


TASKS: sa.Table = TaskRow.__table__  # type: ignore[attr-defined]
_WHEN = sa.DateTime(timezone=True)


def _routing(dialect: str, now: sa.BindParameter[Any]) -> list[sa.ColumnElement[bool]]:
    """What a claimable row must also satisfy: not paused, before its deadline, its labels
    offered by the claiming worker (bind parameter ``labels``, a JSON object), its agent
    under its concurrent-run cap."""
    t = TASKS
    labels = sa.bindparam("labels", type_=sa.Text)
    if dialect == "postgresql":
        offered: Any = sa.cast(labels, JSONB).op("@>")(sa.cast(t.c.labels, JSONB))
    else:
        # Every required (key, value) is in the worker's labels; keys are [A-Za-z0-9._/-] (validated).
        offered = sa.text(
            "NOT EXISTS (SELECT 1 FROM json_each(tasks.labels) AS wanted "
            "WHERE json_extract(:labels, '$.\"' || wanted.key || '\"') IS NOT wanted.value)"
        ).bindparams(labels)
    others = t.alias("running")
    running = (
        sa.select(sa.func.count())
        .select_from(others)
        .where(others.c.agent == t.c.agent, others.c.state == TaskState.RUNNING.value, others.c.lease_until >= now)
        .scalar_subquery()
    )
    return [
        t.c.paused == sa.false(),
        sa.or_(t.c.deadline_at.is_(None), t.c.deadline_at > now),
        sa.or_(t.c.labels == "{}", offered),
        sa.or_(t.c.agent_cap.is_(None), running < t.c.agent_cap),
    ]


def _claim_statement(dialect: str) -> sa.Update:
    """The claim, with bind parameters ``now``, ``until`` and ``worker``; built once per dialect."""
    t = TASKS
    now = sa.bindparam("now", type_=_WHEN)
    until = sa.bindparam("until", type_=_WHEN)
    expired = sa.and_(t.c.lease_until < now, t.c.attempts < t.c.max_attempts)
    routing = _routing(dialect, now)
    if dialect == "postgresql":
        # Literal states, so the planner proves the partial index ix_tasks_claim applies.
        candidate = (
            sa.select(t.c.id)
            .where(sa.text("tasks.state IN ('pending', 'running')"), t.c.available_at <= now)
            .where(sa.or_(sa.text("tasks.state = 'pending'"), expired), *routing)
            .order_by(t.c.priority, t.c.available_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    else:
        # SQLite would sort a state IN (...) scan. The best row of each state instead, each found by
        # seeks into ix_tasks_state: the priority list makes it seek past rows not yet due (backoff,
        # live leases) rather than walk them, in order, so no sort either.
        def best(state: TaskState, *extra: sa.ColumnElement[bool]) -> sa.Select[Any]:
            return (
                sa.select(t.c.id, t.c.priority, t.c.available_at)
                .where(t.c.state == state.value, sa.text("tasks.priority IN (1, 2, 3, 4, 5)"))
                .where(t.c.available_at <= now, *extra, *routing)
                .order_by(t.c.priority, t.c.available_at)
                .limit(1)
            )

        both = sa.union_all(
            sa.select(best(TaskState.PENDING).subquery()), sa.select(best(TaskState.RUNNING, expired).subquery())
        ).subquery()
        candidate = sa.select(both.c.id).order_by(both.c.priority, both.c.available_at).limit(1).scalar_subquery()
    return (
        sa.update(t)
        .where(t.c.id == candidate)
        .values(
            state=TaskState.RUNNING.value,
            lease_owner=sa.bindparam("worker"),
            lease_until=until,
            available_at=until,
            attempts=t.c.attempts + 1,
            fencing_token=t.c.fencing_token + 1,
            updated_at=now,
        )
        .returning(
            t.c.id,
            t.c.task_key,
            t.c.digest,
            t.c.payload,
            t.c.attempts,
            t.c.max_attempts,
            t.c.fencing_token,
            t.c.agent,
            t.c.deadline_at,
            t.c.attempt_timeout_ms,
        )
    )


def _fenced(**values: Any) -> sa.Update:
    """An update of the claim named by (id, worker, token) while it runs; matches nothing once it is stale."""
    t = TASKS
    return (
        sa.update(t)
        .where(t.c.id == sa.bindparam("id"), t.c.state == TaskState.RUNNING.value)
        .where(t.c.lease_owner == sa.bindparam("worker"), t.c.fencing_token == sa.bindparam("token"))
        .values(updated_at=sa.bindparam("now", type_=_WHEN), **values)
    )


def hot_statements(dialect: str) -> dict[str, sa.Update]:
    t = TASKS
    retrying = t.c.attempts < t.c.max_attempts
    when = {name: sa.bindparam(name, type_=_WHEN) for name in ("now", "until", "retry_at")}
    unleased = {"lease_owner": sa.null(), "lease_until": sa.null()}
    return {
        "claim": _claim_statement(dialect),
        "renew": _fenced(lease_until=when["until"], available_at=when["until"]),
        "complete": _fenced(
            state=TaskState.SUCCEEDED.value, result=sa.bindparam("result"), finished_at=when["now"], **unleased
        ),
        "fail_final": _fenced(
            state=TaskState.DEAD_LETTER.value, last_error=sa.bindparam("error"), finished_at=when["now"], **unleased
        ),
        "fail_retry": _fenced(
            state=sa.case((retrying, TaskState.PENDING.value), else_=TaskState.DEAD_LETTER.value),
            available_at=sa.case((retrying, when["retry_at"]), else_=t.c.available_at),
            finished_at=sa.case((retrying, sa.null()), else_=when["now"]),
            last_error=sa.bindparam("error"),
            **unleased,
        ),
    }


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled once for the engine's dialect, run on the driver's own connection.

    The claim and the fenced updates are the queue's hot path; this skips SQLAlchemy's per-call
    work (about two thirds of a claim's time on SQLite), the SQL still being built above.
    """

    sql: str
    order: tuple[str, ...] | None  # positional parameters (SQLite), None for named (psycopg)
    defaults: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]
    returns_rows: bool  # known here: psycopg builds ``cursor.description`` anew on every access

    @classmethod
    def of(cls, statement: sa.Update, dialect: Dialect) -> Prepared:
        compiled = statement.compile(dialect=dialect)
        processors: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        return cls(str(compiled), order, dict(compiled.params), processors, bool(compiled.effective_returning))

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        merged = self.defaults | values
        for name, processor in self.processors.items():
            merged[name] = processor(merged[name])
        return merged if self.order is None else tuple(merged[name] for name in self.order)
