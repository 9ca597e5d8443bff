"""One daemon per repository: a file lock beside SQLite, an advisory lock on PostgreSQL.

The lock is held for the life of the process (on PostgreSQL by a dedicated
connection: if the process dies, the server drops the connection and the lock with
it), so a second replica waits as a hot standby and takes over when the first dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from orlojd.errors import OrlojError


class LockLost(OrlojError):
    """The daemon lock could not be taken or was lost."""


def _lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock from a repository name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class DaemonLock:
    """Acquire with ``wait(stop)``: returns True once held, False if ``stop`` was set first."""

    def __init__(self, engine: Engine, state_dir: Path | None, name: str) -> None:
        self._engine = engine
        self._name = name
        self._file: Any = None
        self._connection: Any = None
        self._path = (state_dir / "daemon.lock") if state_dir is not None else None
        self.postgres = engine.dialect.name == "postgresql"

    def try_acquire(self) -> bool:
        if self.postgres:
            if self._connection is None:
                self._connection = self._engine.connect()
            held = bool(
                self._connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _lock_key(self._name)}).scalar()
            )
            self._connection.commit()
            return held
        assert self._path is not None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self._path, "a+")  # noqa: SIM115  (held open for the life of the lock)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def wait(self, stop: threading.Event, interval: float = 0.5, tick: Callable[[], object] | None = None) -> bool:
        """Block until the lock is held (a hot standby waits here) or ``stop`` is set; ``tick`` runs each round."""
        while not stop.is_set():
            if self.try_acquire():
                return True
            if tick is not None:
                tick()
            stop.wait(interval)
        return False

    def holder(self) -> str:
        """Who holds the file lock (a pid), for the standby's log line."""
        if self._path is not None and self._path.exists():
            return self._path.read_text().strip() or "unknown"
        return "another process"

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(self._name)})
                self._connection.commit()
            finally:
                self._connection.close()
                self._connection = None
