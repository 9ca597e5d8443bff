"""Helpers for tests of the worker pool: an injected clock and waits with a deadline (never sleeps to wait)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from orlojd.engine.workers import WorkerPool

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEADLINE = 15.0  # seconds any one wait may take before the test fails


class Clock:
    """An injected ``now`` the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.at = start

    def __call__(self) -> datetime:
        return self.at


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def waited(event: threading.Event, what: str) -> None:
    assert event.wait(DEADLINE), f"timed out waiting for {what}"


def start_pool(started: list[WorkerPool], pool: WorkerPool) -> WorkerPool:
    """Start ``pool`` and remember it in the ``pools`` fixture's list, which drains it at teardown."""
    started.append(pool)
    pool.start()
    return pool
