"""Fixtures of the integration tier: an opened store (both kinds, via ``db_url``), its queue, worker pools."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pools import DEADLINE

from orlojd.adapters.queue import TaskQueue
from orlojd.adapters.store import Store
from orlojd.engine.workers import WorkerPool


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store.open(db_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def queue(store: Store) -> TaskQueue:
    return TaskQueue(store)


@pytest.fixture
def pools() -> Iterator[list[WorkerPool]]:
    """Pools a test starts (``start_pool``); drained at teardown so no thread outlives its store."""
    started: list[WorkerPool] = []
    yield started
    for pool in started:
        assert pool.drain(DEADLINE), "a worker thread did not stop"
