"""Worker processes in the state store: registration, heartbeats, lost workers.

Every worker pool (the one embedded in ``orlojd serve`` and each ``orlojd worker``) registers
one row in table ``workers`` (migration 0004) with its labels and capacity, beats every few
seconds while it lives, and marks itself stopped on a clean exit. A worker whose last beat is
older than ``lost_after`` is *lost*: it was killed or cut off. Nothing needs to chase a lost
worker's tasks: their leases expire and other workers take them over (``adapters/queue.py``).

``worker_state`` (pure) decides live / lost / stopped from the row and ``now``; listings use it,
and ``offering_all`` tells whether any live worker offers a set of labels, so a task that
requires labels nobody offers is reported rather than left waiting silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from orlojd.adapters.store import Store, stored_time
from orlojd.adapters.tables import WorkerRow

WORKERS: sa.Table = WorkerRow.__table__  # type: ignore[attr-defined]
HEARTBEAT_EVERY = timedelta(seconds=10)
LOST_AFTER = 3 * HEARTBEAT_EVERY  # three missed beats
STOPPED_KEPT = timedelta(days=1)  # stopped or lost rows older than this are deleted on registration


class WorkerState(StrEnum):
    LIVE = "live"
    LOST = "lost"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class WorkerView:
    id: str
    hostname: str
    pid: int
    labels: dict[str, str]
    capacity: int
    embedded: bool
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    state: WorkerState = WorkerState.LIVE


def worker_state(
    heartbeat_at: datetime, stopped_at: datetime | None, now: datetime, lost_after: timedelta
) -> WorkerState:
    """Stopped if it said so; lost if its last beat is older than ``lost_after``; else live."""
    if stopped_at is not None:
        return WorkerState.STOPPED
    return WorkerState.LOST if now - heartbeat_at > lost_after else WorkerState.LIVE


def offers(worker_labels: dict[str, str], wanted: dict[str, str]) -> bool:
    """Whether a worker with ``worker_labels`` may run a task that requires ``wanted``."""
    return all(worker_labels.get(key) == value for key, value in wanted.items())


class WorkerRegistry:
    """The ``workers`` table of one store; safe to share between threads."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def register_run(
        self,
        worker_id: str,
        *,
        hostname: str,
        pid: int,
        labels: dict[str, str],
        capacity: int,
        embedded: bool,
        now: datetime,
    ) -> None:
        """Insert or replace this worker's row (a restarted worker with the same id starts afresh)."""
        t = WORKERS
        row = {
            "id": worker_id,
            "hostname": hostname,
            "pid": pid,
            "labels": json.dumps(labels, sort_keys=True),
            "capacity": capacity,
            "embedded": embedded,
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
        }
        with self._store.writing("worker registry") as connection:
            connection.execute(sa.delete(t).where(t.c.id == worker_id))
            connection.execute(sa.delete(t).where(t.c.heartbeat_at < now - STOPPED_KEPT))
            connection.execute(sa.insert(t).values(**row))

    def heartbeat_run(self, worker_id: str, now: datetime) -> bool:
        """Record a beat; False when the row is gone (deleted as long lost): the caller registers again."""
        t = WORKERS
        with self._store.writing("worker registry") as connection:
            updated = connection.execute(
                sa.update(t).where(t.c.id == worker_id).values(heartbeat_at=now, stopped_at=None)
            ).rowcount
        return updated == 1

    def stop_run(self, worker_id: str, now: datetime) -> None:
        t = WORKERS
        with self._store.writing("worker registry") as connection:
            connection.execute(sa.update(t).where(t.c.id == worker_id).values(stopped_at=now, heartbeat_at=now))

    def list_all(self, now: datetime, lost_after: timedelta) -> list[WorkerView]:
        """Every known worker with its state, live ones first, then by id."""
        with self._store.reading("worker registry") as connection:
            rows = [dict(r._mapping) for r in connection.execute(sa.select(WORKERS))]
        views = []
        for row in rows:
            for name in ("started_at", "heartbeat_at", "stopped_at"):
                row[name] = stored_time(row[name])
            row["labels"] = json.loads(row["labels"])
            row["embedded"] = bool(row["embedded"])
            state = worker_state(row["heartbeat_at"], row["stopped_at"], now, lost_after)
            views.append(WorkerView(**row, state=state))
        order = {WorkerState.LIVE: 0, WorkerState.LOST: 1, WorkerState.STOPPED: 2}
        return sorted(views, key=lambda v: (order[v.state], v.id))

    def offering_all(self, wanted: dict[str, str], now: datetime, lost_after: timedelta) -> list[WorkerView]:
        """The live workers that offer every label in ``wanted``."""
        return [v for v in self.list_all(now, lost_after) if v.state is WorkerState.LIVE and offers(v.labels, wanted)]
