"""The audit trail in the state store: one ``governance_events`` row per governance event.

Events are gate decisions, approval steps (requested, approved, denied, expired, vote) and
budget events (reserved, exceeded, warning). ``insert`` writes one on a connection that is
already inside the transaction of the state change it explains (an approval parked, a charge
reserved), so the event and the change commit or roll back together; ``AuditLog.record_run``
is for events that explain no other write (an allowed call). Issue 8 exports these rows as
signed git notes.

``decision_event`` (pure) turns a gate ``Decision`` into an event: reason code, verdict and the
provenance of the rule that decided (object key, field path, absent or not).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from orlojd.adapters.sql import Sql, execute_one
from orlojd.adapters.store import Store, stored_time
from orlojd.adapters.tables import GovernanceEventRow
from orlojd.core.governance import CallRequest, Decision
from orlojd.core.governance_index import Provenance

EVENTS: sa.Table = GovernanceEventRow.__table__  # type: ignore[attr-defined]
OUTBOX_LOCK = 7_466_017_220_331_418_709  # PostgreSQL advisory lock: event inserts shared, the drain exclusive
_COLUMNS = "at, event, task_id, agent, tool, verdict, reason, revision, detail, actor, subject"
_VALUES = ", ".join(f":{c}" for c in _COLUMNS.split(", "))
# Plain SQL on the transaction's cursor: no statement building or compiling per event.
INSERT_EVENT = Sql(f"INSERT INTO governance_events ({_COLUMNS}) VALUES ({_VALUES})")
# PostgreSQL, one round trip: the shared outbox lock is taken in the FROM item, which runs before the
# row (and its id from the sequence) is made, and is held until the transaction ends, as before.
INSERT_EVENT_LOCKED = Sql(
    f"INSERT INTO governance_events ({_COLUMNS}) SELECT {_VALUES.replace(':at', 'CAST(:at AS timestamptz)')} "
    "FROM (SELECT pg_advisory_xact_lock_shared(:outbox_lock)) AS outbox_lock"
)
_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # the encoder json.dumps would build per call
FENCE_WAIT_MS = 1000  # how long a drain waits for event inserts in flight before trying again later


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One governance event; ``id`` is set once stored (its order in the trail)."""

    event: str
    at: datetime
    task_id: str | None = None
    agent: str | None = None
    tool: str | None = None
    verdict: str | None = None
    reason: str | None = None
    revision: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None
    actor: str | None = None  # who: the daemon, a worker id, an approver
    subject: str | None = None  # what about: Kind/namespace/name, task:<id>

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "event": self.event,
            "task_id": self.task_id,
            "agent": self.agent,
            "tool": self.tool,
            "verdict": self.verdict,
            "reason": self.reason,
            "revision": self.revision,
            "actor": self.actor,
            "subject": self.subject,
            "detail": dict(self.detail),
        }


def provenance_json(because: Sequence[Provenance]) -> list[dict[str, Any]]:
    """``because`` as JSON: the object (kind, namespace, name), the field path and whether it was absent."""
    return [
        {
            "kind": p.key.kind if p.key else None,
            "namespace": p.key.namespace if p.key else None,
            "name": p.key.name if p.key else None,
            "field": p.path,
            "absent": p.absent,
        }
        for p in because
    ]


def decision_event(
    decision: Decision,
    request: CallRequest,
    now: datetime,
    task_id: str | None = None,
    revision: str | None = None,
    detail: Mapping[str, Any] | None = None,
    actor: str | None = None,
) -> AuditEvent:
    """The audit event recording one gate decision (pure); ``actor``: the worker that asked."""
    return AuditEvent(
        event="decision",
        at=now,
        task_id=task_id,
        agent=str(request.agent),
        tool=request.tool,
        verdict=decision.verdict.value,
        reason=decision.reason.value,
        revision=revision,
        detail={
            "message": decision.message,
            "because": provenance_json(decision.because),
            "needs": [list(p) for p in request.needs],
            **(detail or {}),
        },
        actor=actor,
    )


def insert(connection: Connection, event: AuditEvent) -> None:
    """Write ``event`` inside the caller's transaction (on PostgreSQL holding ``OUTBOX_LOCK`` shared)."""
    postgres = connection.dialect.name == "postgresql"
    execute_one(
        connection,
        INSERT_EVENT_LOCKED if postgres else INSERT_EVENT,
        {
            "outbox_lock": OUTBOX_LOCK,
            "at": event.at,
            "event": event.event,
            "task_id": event.task_id,
            "agent": event.agent,
            "tool": event.tool,
            "verdict": event.verdict,
            "reason": event.reason,
            "revision": event.revision,
            "detail": _JSON.encode(dict(event.detail)),
            "actor": event.actor,
            "subject": event.subject,
        },
    )


class AuditLog:
    """Reads the trail and records events that explain no other write."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record_run(self, *events: AuditEvent) -> None:
        with self.store.writing("recording audit events") as connection:
            for event in events:
                insert(connection, event)

    def list_all(self, task_id: str | None = None, after_id: int = 0, limit: int = 1000) -> list[AuditEvent]:
        """Events in the order they were written, oldest first; ``after_id`` pages on."""
        query = sa.select(EVENTS).where(EVENTS.c.id > after_id).order_by(EVENTS.c.id).limit(limit)
        if task_id is not None:
            query = query.where(EVENTS.c.task_id == task_id)
        with self.store.reading("reading audit events") as connection:
            rows = connection.execute(query).mappings().all()
        return [_event(row) for row in rows]

    def drainable_all(self, after_id: int = 0, limit: int = 1000) -> list[AuditEvent]:
        """The events after ``after_id`` that are final: no insert with a lower id can still commit.

        SQLite commits in id order (one writer at a time). PostgreSQL takes ids at INSERT and shows
        rows at COMMIT, so id n can appear after id n+1: every event insert holds the shared
        advisory lock ``OUTBOX_LOCK`` until its commit, and this takes it exclusively for an
        instant, when no insert is in flight, to read the highest id; only ids up to it are read.
        Inserts still in flight after ``FENCE_WAIT_MS``: nothing is returned (never a guess).
        """
        if self.store.engine.dialect.name != "postgresql":
            return self.list_all(after_id=after_id, limit=limit)
        with self.store.errors("fencing the audit outbox"), self.store.engine.connect() as connection:
            connection.execute(sa.text(f"SET LOCAL lock_timeout = '{FENCE_WAIT_MS}ms'"))
            try:
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": OUTBOX_LOCK})
            except OperationalError:  # inserts kept it busy: nothing is final yet, the next drain tries again
                connection.rollback()
                return []
            final = connection.execute(sa.select(sa.func.max(EVENTS.c.id))).scalar() or 0
            connection.commit()
        query = sa.select(EVENTS).where(EVENTS.c.id > after_id, EVENTS.c.id <= final).order_by(EVENTS.c.id).limit(limit)
        with self.store.reading("reading audit events") as connection:
            rows = connection.execute(query).mappings().all()
        return [_event(row) for row in rows]


def _event(row: Any) -> AuditEvent:
    at = stored_time(row["at"])
    assert at is not None
    return AuditEvent(
        event=row["event"],
        at=at,
        task_id=row["task_id"],
        agent=row["agent"],
        tool=row["tool"],
        verdict=row["verdict"],
        reason=row["reason"],
        revision=row["revision"],
        detail=json.loads(row["detail"]),
        id=row["id"],
        actor=row["actor"],
        subject=row["subject"],
    )
