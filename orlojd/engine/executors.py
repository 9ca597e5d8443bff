"""What a worker does with a claimed task: the executors, and the choice of one by name.

The agent runtime (model calls through litellm, tools, governance) plugs in here later as
one more ``Executor``. Until then a run is checked and recorded, not executed:

* ``placeholder`` (the default): checks the run's agent is still applied, then succeeds with
  a result that says no agent runtime ran. A run whose agent was deleted fails for good with
  an error naming the agent, and lands in the dead-letter queue (``orlojd dlq retry`` once
  the agent is back).
* ``noop``: succeeds at once (benchmarks).
* ``sleep:MS``: sleeps MS milliseconds, stopping early when cancelled (tests of leases and
  timeouts).
* ``sink:PATH``: records the run in the SQLite file PATH, idempotently: one ``effects`` row
  per task id (the effect) and one ``executions`` row per attempt (how often it ran). The
  chaos test counts effects with it.

``executor_named(spec, store)`` builds one from its name; a bad name is a ``ConfigError``.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from orlojd.adapters.queue import ClaimedTask
from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.engine.workers import Executor, TaskFailed
from orlojd.errors import ConfigError

NAMES = "placeholder, noop, sleep:MS or sink:PATH"


def noop(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
    return {"executor": "noop"}


class Placeholder:
    """Checks the run's agent exists in the applied inventory; runs nothing yet."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        if task.agent is not None:
            kind, namespace, name = task.agent.split("/", 2)
            key = ResourceKey(kind, namespace, name)
            if not self.store.inventory_bodies_some(keys=[key]):
                raise TaskFailed(
                    f"agent {key.short} is not applied (deleted or renamed); restore it in git, "
                    f"then: orlojd dlq retry {task.id}",
                    permanent=True,
                )
        return {"executor": "placeholder", "note": "checked and recorded; no agent runtime ran"}


class Sleep:
    def __init__(self, milliseconds: int) -> None:
        self.seconds = milliseconds / 1000

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        if cancelled.wait(self.seconds):
            raise TaskFailed("cancelled")
        return {"executor": "sleep", "slept_ms": int(self.seconds * 1000)}


class Sink:
    """An idempotent side effect in a SQLite file, one effect per task id, every execution counted."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS effects (task_id TEXT PRIMARY KEY, token INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS executions (task_id TEXT NOT NULL, token INTEGER NOT NULL)",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as connection:
            for statement in self.SCHEMA:
                connection.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        return connection

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO executions VALUES (?, ?)", (task.id, task.fencing_token))
            connection.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (task.id, task.fencing_token))
            connection.execute("COMMIT")
        finally:
            connection.close()
        return {"executor": "sink", "token": task.fencing_token}


def known(spec: str) -> bool:
    """Whether ``spec`` names an executor (checked before anything is opened)."""
    name, _, argument = spec.partition(":")
    return (
        (name in ("placeholder", "noop") and not argument)
        or (name == "sleep" and argument.isdigit())
        or (name == "sink" and bool(argument))
    )


def executor_named(spec: str, store: Store) -> Executor:
    """The executor called ``spec`` (see the module doc)."""
    if not known(spec):
        raise ConfigError(f"--executor {spec!r}: unknown executor", f"use {NAMES}")
    name, _, argument = spec.partition(":")
    if name == "placeholder":
        return Placeholder(store)
    if name == "sleep":
        return Sleep(int(argument))
    if name == "sink":
        return Sink(Path(argument))
    return noop
