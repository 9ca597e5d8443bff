"""`orlojd state rebuild`: an empty store made again from the repository alone (manifests and notes).

Disaster recovery: the store is a cache and a queue, the repository the system of record. From
the audit notes (``refs/notes/orlojd/audit``) this restores:

* the applied revision: the newest ``reconcile_applied`` record's (else the branch tip), and the
  inventory at it, applied with ``restore=True`` (no Task is queued again: they ran before; no
  history or event is recorded twice);
* the audit index: one ``governance_events`` row per record of the writer being restored, with
  its original id (``eid``), time, actor, subject and revision, so the store's outbox continues
  that writer's chain where the notes end (the store takes the writer's id as its own).

The store must be empty (nothing applied, no events): a rebuild never merges into live state.
What the notes never held is not restored: the task queue, approvals in flight, budget charges,
and the detail the records scrub (prompts, previews, arguments: only their digests are kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orlojd.adapters.audit import EVENTS
from orlojd.adapters.notes import read_notes
from orlojd.adapters.store import Store
from orlojd.adapters.tables import MetaRow
from orlojd.core.audit_records import AuditRecord, records_of
from orlojd.engine.applying import apply_revision
from orlojd.engine.workspace import Workspace
from orlojd.errors import OrlojError

META: sa.Table = MetaRow.__table__  # type: ignore[attr-defined]
DECISION_FIELDS = ("verdict", "reason", "tool", "agent")


class RebuildRefused(OrlojError):
    exit_code = 1


@dataclass(frozen=True)
class Rebuilt:
    revision: str
    objects: int
    events: int
    writer: str | None


def rebuild(ws: Workspace, store: Store, rev: str | None = None, writer: str | None = None) -> Rebuilt:
    """Restore ``store`` (empty) from ``ws``'s repository; see the module doc."""
    if store.applied_revision_one() is not None or _count(store) > 0:
        raise RebuildRefused(
            f"the store {store.url} is not empty",
            "rebuild writes into an empty store: point --db or --state-dir at a new one",
        )
    records = records_of(line for lines in read_notes(ws.repo).values() for line in lines)
    writers = sorted({r.w for r in records})
    if writer is None and len(writers) > 1:
        raise RebuildRefused(
            f"the notes hold {len(writers)} writers' records ({', '.join(writers)})",
            "name the store to restore with --writer",
        )
    chosen = writer or (writers[0] if writers else None)
    mine = [r for r in records if r.w == chosen]
    applied = [r for r in mine if r.event == "reconcile_applied" and r.revision]
    revision = rev or (max(applied, key=lambda r: (r.ts, r.seq)).revision if applied else "HEAD")
    assert revision is not None
    result = apply_revision(ws, store, revision, restore=True)
    with store.writing("restoring the audit index") as connection:
        rows = [_row(r) for r in sorted(mine, key=lambda r: r.seq) if r.eid is not None]
        if rows:
            connection.execute(EVENTS.insert(), rows)
            if store.engine.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT setval(pg_get_serial_sequence('governance_events', 'id'), :n)"),
                    {"n": max(int(row["id"]) for row in rows)},
                )
        if chosen is not None and chosen.startswith("store-"):
            connection.execute(META.delete().where(META.c.key == "store_id"))
            connection.execute(META.insert(), [{"key": "store_id", "value": chosen.removeprefix("store-")}])
    return Rebuilt(result.planned.report.head, len(result.planned.desired.objects), len(rows), chosen)


def _count(store: Store) -> int:
    with store.reading("reading audit events") as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(EVENTS)).scalar() or 0)


def _row(record: AuditRecord) -> dict[str, Any]:
    """A store event from its record: what the outbox read, as far as the record kept it."""
    detail = dict(record.detail)
    fields = {name: detail.pop(name, None) for name in DECISION_FIELDS}
    task_id = record.subject.removeprefix("task:") if record.subject.startswith("task:") else None
    return {
        "id": record.eid,
        "at": datetime.fromisoformat(record.ts.replace("Z", "+00:00")),
        "event": record.event,
        "task_id": task_id,
        "agent": fields["agent"],
        "tool": fields["tool"],
        "verdict": fields["verdict"],
        "reason": fields["reason"],
        "revision": record.revision,
        "detail": json.dumps(detail, sort_keys=True, separators=(",", ":")),
        "actor": record.actor,
        "subject": record.subject,
    }
