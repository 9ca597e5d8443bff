"""The task side of `orlojd serve`: the embedded worker pool, the scheduler and their periodic jobs.

The daemon (``engine/daemon.py``) creates one ``TaskRuntime`` once it holds the repository
lock (so a standby neither schedules nor claims) and ``start``s it: the scheduler runs its
periodic jobs from then on: the lease reaper (dead-letters runs whose last lease expired, and
runs past their deadline; expires approval requests nobody decided in time), the queue-wait
check (logs tasks waiting longer than ``workers.queueWaitWarning``) and the daemon's own (the
resync). The daemon calls ``applied`` after every successful pass; the first call starts the
worker pool, sized by ``workers.size`` in orlojd.yaml at that commit (``--workers`` overrides
it; later changes take effect at the next start). Every call re-syncs the TaskSchedules, points
the governance gate at ``approvals.webhook`` and wakes the pool, since apply may have queued
runs. ``stop`` stops scheduling first, then drains the pool.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from orlojd.adapters import clock
from orlojd.adapters.approvals import Approvals
from orlojd.adapters.queue import TaskQueue
from orlojd.adapters.store import Store
from orlojd.adapters.systemd import Notifier
from orlojd.adapters.worker_registry import WorkerRegistry
from orlojd.core.durations import parse_ms
from orlojd.engine.executors import executor_named
from orlojd.engine.gate import Gate, webhook_notifier
from orlojd.engine.workers import PoolOptions, WorkerPool
from orlojd.settings import Settings

if TYPE_CHECKING:
    from orlojd.engine.scheduler import TaskScheduler

log = logging.getLogger("orlojd.runtime")

REAP_EVERY = 5.0
QUEUE_WAIT_CHECK_EVERY = 30.0


def default_worker_id(prefix: str) -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}"


def pool_options(settings: Settings, size: int) -> PoolOptions:
    """Pool options from orlojd.yaml's ``workers`` group, with ``size`` threads (>= 1)."""
    lease = timedelta(milliseconds=parse_ms(settings.workers.lease))
    return PoolOptions(size=size, lease=lease, renew_every=lease / 3, labels=dict(settings.workers.labels))


class TaskRuntime:
    def __init__(
        self,
        store: Store,
        executor: str = "agent",
        workers: int | None = None,
        now: Callable[[], datetime] = clock.now,
        periodic: Sequence[tuple[str, float, Callable[[], None]]] = (),
    ) -> None:
        self.store = store
        self.queue = TaskQueue(store)
        self.gate = Gate(store, now=now)
        self.approvals = Approvals(store)
        self.executor = executor_named(executor, store, self.gate)
        self.workers = workers
        self.now = now
        self.periodic = periodic
        self.pool: WorkerPool | None = None
        self.pool_decided = False  # the pool starts once, at the first applied revision
        self.scheduler: TaskScheduler | None = None
        self.queue_wait = timedelta(minutes=5)
        self._warned: set[str] = set()

    def start(self) -> None:
        """Start the scheduler with its periodic jobs (the lease reaper, the queue-wait check, the daemon's)."""
        from orlojd.engine.scheduler import TaskScheduler

        self.scheduler = TaskScheduler(self.store, now=self.now, on_enqueued=self._wake)
        self.scheduler.add_interval("lease-reaper", REAP_EVERY, self.reap)
        self.scheduler.add_interval("queue-wait", QUEUE_WAIT_CHECK_EVERY, self.check_queue_wait)
        for name, seconds, job in self.periodic:
            self.scheduler.add_interval(name, seconds, job)
        self.scheduler.start()

    def applied(self, settings: Settings, revision: str) -> None:
        """After a successful pass at ``revision``: start the pool if not yet, re-sync schedules, wake workers."""
        self.queue_wait = timedelta(milliseconds=parse_ms(settings.workers.queue_wait_warning))
        webhook = settings.approvals.webhook
        self.gate.notify = None if webhook is None else webhook_notifier(webhook)
        if not self.pool_decided:
            self.pool_decided = True
            self._start_pool(settings)
        if self.scheduler is not None:
            self.scheduler.sync(revision)
        self._wake()

    def _start_pool(self, settings: Settings) -> None:
        size = settings.workers.size if self.workers is None else self.workers
        if size == 0:
            log.info("no embedded workers (workers.size: 0)", extra={"event": "pool_disabled"})
            return
        self.pool = WorkerPool(
            self.queue,
            self.executor,
            pool_options(settings, size),
            default_worker_id("serve"),
            now=self.now,
            registry=WorkerRegistry(self.store),
            embedded=True,
        )
        self.pool.start()

    def _wake(self) -> None:
        if self.pool is not None:
            self.pool.wake()

    def reap(self) -> None:
        now = self.now()
        reaped = self.queue.reap_expired_run(now)
        if reaped:
            log.warning("dead-lettered %d tasks that can no longer run", reaped, extra={"event": "tasks_reaped"})
        expired = self.approvals.expire_due_run(now)
        if expired:
            log.warning("%d approval requests expired undecided", expired, extra={"event": "approvals_expired"})
            self._wake()

    def check_queue_wait(self) -> None:
        """Log each task once when it first waits longer than ``workers.queueWaitWarning``."""
        now = self.now()
        overdue = self.queue.overdue_all(now - self.queue_wait)
        self._warned &= {view.id for view in overdue}  # forget tasks that got a worker (or were lost from view)
        for view in overdue:
            waited = now - view.available_at
            if view.id in self._warned:
                continue
            self._warned.add(view.id)
            log.warning(
                "task %s has waited %ds for a worker",
                view.id,
                int(waited.total_seconds()),
                extra={"event": "queue_wait_exceeded", "task_id": view.id, "task_key": view.task_key},
            )

    def stop(self, grace: float) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
        if self.pool is not None:
            self.pool.drain(grace)


def run_worker(
    store: Store,
    options: PoolOptions,
    worker_id: str,
    executor: str,
    stop: threading.Event,
    notifier: Notifier,
    drain_grace: float,
) -> int:
    """`orlojd worker`: claim from the shared queue until ``stop`` is set, then drain; the exit code."""
    pool = WorkerPool(
        TaskQueue(store),
        executor_named(executor, store),
        options,
        worker_id,
        registry=WorkerRegistry(store),
        embedded=False,
    )
    pool.start()
    notifier.ready(f"worker {worker_id}: {options.size} slots")
    tick = notifier.watchdog_interval or 1.0
    while not stop.wait(tick):
        notifier.watchdog()
    notifier.stopping("draining")
    finished = pool.drain(drain_grace)
    return 0 if finished else 1
