"""A bounded pool of worker threads that runs tasks from the queue.

What a task does is an injected ``Executor`` (the agent runtime comes later). Each of the
pool's ``size`` threads loops: claim one task under a lease, run the executor in the thread
while a renewal timer extends the lease every ``renew_every``, then finish the claim:

* success: ``complete_run``; the queue refuses the result (False) when the claim went stale;
* ``TaskHandedOff``: the executor already moved the task on (governance parked or failed it);
* ``TaskDeferred``: the task is pending again from ``until``, the attempt not counted;
* ``TaskFailed`` or any other exception: ``core.retry.decide`` (``TaskFailed(permanent=True)``
  is non-retryable) and ``fail_run`` with its ``retry_at``, or None to dead-letter.

When a renewal returns False the lease was lost (taken over after it expired) or the task was
cancelled: the ``cancelled`` event handed to the executor is set and whatever it returns is
discarded. A bug in the executor, or a store error, is logged and never ends a thread.

``drain`` stops claiming and waits for running tasks. Tasks still running when it gives up
keep their lease and go on being renewed while the process lives; when the process exits the
lease expires and another worker takes the task over. Worker threads are daemon threads.

Time for the queue comes from the injected ``now``; the renewal timer and idling wait on
real time (``threading`` waits).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from orlojd.adapters import clock
from orlojd.adapters.queue import ClaimedTask, TaskQueue
from orlojd.adapters.worker_registry import HEARTBEAT_EVERY, WorkerRegistry
from orlojd.core.manifests.agents import RetryPolicy
from orlojd.core.retry import Failure, decide

log = logging.getLogger("orlojd.workers")


class TaskFailed(Exception):
    """Raised by an executor: the attempt failed. Retried per the policy unless ``permanent``."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class TaskDeferred(Exception):
    """Raised by an executor: give the task back until ``until`` without counting the attempt
    (a model call waiting for its token budget)."""

    def __init__(self, until: datetime, message: str) -> None:
        super().__init__(message)
        self.until = until


class TaskHandedOff(Exception):
    """Raised by an executor that already moved its task on in the store (parked it for an
    approval, or failed it with the governance decision): the worker writes nothing."""


class Executor(Protocol):
    """Runs one claimed task; returns its result. Should stop early once ``cancelled`` is set."""

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PoolOptions:
    size: int = 4  # the worker's capacity: how many tasks it runs at once
    lease: timedelta = timedelta(seconds=30)
    renew_every: timedelta = timedelta(seconds=10)
    idle_wait: float = 0.2  # seconds a thread waits when the queue is empty (``wake`` cuts it short)
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # for runs whose payload carries no policy
    labels: dict[str, str] = field(default_factory=dict)  # what this worker offers (region, gpu, model, ...)
    heartbeat_every: timedelta = HEARTBEAT_EVERY

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"pool size must be >= 1, got {self.size}")
        if self.lease <= timedelta(0):
            raise ValueError(f"lease must be positive, got {self.lease}")
        if not timedelta(0) < self.renew_every < self.lease:
            raise ValueError(
                f"renew_every ({self.renew_every}) must be positive and shorter than the lease ({self.lease})"
            )
        if self.idle_wait <= 0:
            raise ValueError(f"idle_wait must be positive, got {self.idle_wait}")
        if self.heartbeat_every <= timedelta(0):
            raise ValueError(f"heartbeat_every must be positive, got {self.heartbeat_every}")


class _Renewal:
    """Renews the claim a worker thread is running every ``renew_every``; sets ``cancelled`` when a
    renewal is refused, or when the attempt outlives its timeout (``timed_out``: the attempt has failed).

    One per worker thread, reused for each of its claims (``with renewal.renewing(task):``). Its
    helper thread starts with the first claim and sleeps until the current claim's next step is
    due, so a claim costs no thread of its own (starting and joining one took longer than a short
    task). ``renewing`` wakes the helper only when the new claim is due before the helper's next
    wake-up (an attempt timeout shorter than ``renew_every``). A step (a renewal, or the timeout)
    runs under the lock: leaving ``renewing`` waits for one in progress, and after that nothing
    changes ``cancelled`` or ``timed_out`` of that claim. ``close`` ends the helper.
    """

    def __init__(self, pool: WorkerPool, worker: str) -> None:
        self._pool = pool
        self._worker = worker
        self._every = pool.options.renew_every.total_seconds()
        self._lock = threading.Condition()
        self._task: ClaimedTask | None = None  # the claim being renewed, None between claims
        self._started = 0.0  # when it was claimed (monotonic)
        self._due = 0.0  # when its next step is due (monotonic)
        self._wake_at = float("inf")  # when the helper wakes next, at the latest
        self._closed = False
        self._thread: threading.Thread | None = None
        self.cancelled = threading.Event()
        self.timed_out = False

    def renewing(self, task: ClaimedTask) -> _Renewal:
        """Start renewing ``task``, this thread's new claim, until the ``with`` block ends."""
        with self._lock:
            self._task = task
            self._started = time.monotonic()
            self._due = self._started + self._interval(task, self._started)
            self.cancelled = threading.Event()
            self.timed_out = False
            if self._thread is not None and self._due < self._wake_at:
                self._lock.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"renew-{self._worker}", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> _Renewal:
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._task = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._task = None
            self._lock.notify()
        if self._thread is not None:
            self._thread.join()

    def _interval(self, task: ClaimedTask, now: float) -> float:
        if task.attempt_timeout is None:
            return self._every
        return min(self._every, max(0.0, self._started + task.attempt_timeout.total_seconds() - now))

    def _run(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                task = self._task
                if task is None:  # between claims; a claim due sooner than this wakes the helper
                    self._wake_at = now + self._every
                    self._lock.wait(self._every)
                elif now < self._due:
                    self._wake_at = self._due
                    self._lock.wait(self._due - now)
                else:
                    try:
                        self._step(task, now)
                    except Exception:  # a bug here ends this claim's renewals, not the helper
                        log.exception("renewing task %s failed", task.id, extra={"event": "renew_error"})
                        self._task = None

    def _step(self, task: ClaimedTask, now: float) -> None:
        """The claim's next step is due: its timeout, or a renewal. Runs under the lock."""
        pool = self._pool
        if task.attempt_timeout is not None and now - self._started >= task.attempt_timeout.total_seconds():
            self.timed_out = True
            self.cancelled.set()
            self._task = None
            return
        try:
            renewed = pool.queue.renew_run(task.id, self._worker, task.fencing_token, pool.now(), pool.options.lease)
        except Exception as exc:  # the store may come back before the lease runs out: keep trying
            log.warning("renewing task %s failed: %s", task.id, exc, extra={"event": "renew_error", "task_id": task.id})
            renewed = True
        if not renewed:
            log.warning(
                "task %s: lease lost or task cancelled; its result will be discarded",
                task.id,
                extra={"event": "lease_lost", "task_id": task.id, "worker": self._worker},
            )
            self.cancelled.set()
            self._task = None
            return
        now = time.monotonic()
        self._due = now + self._interval(task, now)


class WorkerPool:
    """``options.size`` threads claiming from ``queue`` and running ``executor``; see the module doc."""

    def __init__(
        self,
        queue: TaskQueue,
        executor: Executor,
        options: PoolOptions,
        worker_id: str,
        now: Callable[[], datetime] = clock.now,
        draw: Callable[[], float] = random.random,
        registry: WorkerRegistry | None = None,
        embedded: bool = True,
    ) -> None:
        self.queue = queue
        self.executor = executor
        self.options = options
        self.worker_id = worker_id
        self.now = now
        self.draw = draw
        self.registry = registry
        self.embedded = embedded
        self._beating = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._generation = 0  # bumped by wake(), so a wake between an empty claim and the wait is not lost
        self._idle = threading.Condition()

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("the worker pool was already started")
        if self.registry is not None:
            self._register()
            beat = threading.Thread(target=self._heartbeat, name=f"heartbeat-{self.worker_id}", daemon=True)
            beat.start()
        for n in range(self.options.size):
            worker = f"{self.worker_id}/{n}"
            thread = threading.Thread(target=self._loop, args=(worker,), name=f"worker-{worker}", daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info(
            "worker pool started with %d threads",
            self.options.size,
            extra={"event": "pool_started", "worker": self.worker_id, "size": self.options.size},
        )

    def wake(self) -> None:
        """New work was enqueued: idle threads claim now rather than after ``idle_wait``."""
        with self._idle:
            self._generation += 1
            self._idle.notify_all()

    def drain(self, grace: float) -> bool:
        """Stop claiming; wait up to ``grace`` seconds for running tasks; True if every thread finished.

        May be called again (say with a longer grace) after it returned False.
        """
        with self._idle:
            self._stopping = True
            self._generation += 1
            self._idle.notify_all()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(thread.is_alive() for thread in self._threads)
        if finished and self.registry is not None and not self._beating.is_set():
            self._beating.set()
            try:
                self.registry.stop_run(self.worker_id, self.now())
            except Exception as exc:
                log.warning("cannot mark worker stopped: %s", exc, extra={"event": "worker_stop_error"})
        log.info(
            "worker pool drained" if finished else "worker pool drain timed out; running tasks keep their lease",
            extra={"event": "pool_drained" if finished else "pool_drain_timeout", "worker": self.worker_id},
        )
        return finished

    # -- registration ----------------------------------------------------------------------------

    def _register(self) -> None:
        assert self.registry is not None
        self.registry.register_run(
            self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            labels=dict(self.options.labels),
            capacity=self.options.size,
            embedded=self.embedded,
            now=self.now(),
        )
        log.info(
            "worker registered",
            extra={"event": "worker_registered", "worker": self.worker_id, "labels": dict(self.options.labels)},
        )

    def _heartbeat(self) -> None:
        """Beat every ``heartbeat_every`` until drained; register again if the row went missing."""
        assert self.registry is not None
        while not self._beating.wait(self.options.heartbeat_every.total_seconds()):
            try:
                if not self.registry.heartbeat_run(self.worker_id, self.now()):
                    self._register()
            except Exception as exc:  # the store may come back; a missed beat only makes us look lost
                log.warning("heartbeat failed: %s", exc, extra={"event": "heartbeat_error", "worker": self.worker_id})

    # -- one thread ----------------------------------------------------------------------------

    def _loop(self, worker: str) -> None:
        renewal = _Renewal(self, worker)
        try:
            while True:
                with self._idle:
                    if self._stopping:
                        return
                    generation = self._generation
                try:
                    task = self.queue.claim_one(worker, self.now(), self.options.lease, self.options.labels)
                except Exception as exc:
                    log.warning("claiming failed: %s", exc, extra={"event": "claim_error", "worker": worker})
                    task = None
                if task is None:
                    with self._idle:
                        if not self._stopping and self._generation == generation:
                            self._idle.wait(self.options.idle_wait)
                    continue
                try:
                    self._run_one(worker, task, renewal)
                except Exception:  # a store error while finishing: the lease expires and the task is taken over
                    log.exception(
                        "finishing task %s failed", task.id, extra={"event": "finish_error", "task_id": task.id}
                    )
        finally:
            renewal.close()

    def _run_one(self, worker: str, task: ClaimedTask, renewal: _Renewal) -> None:
        ids = {"task_id": task.id, "task_key": task.task_key, "worker": worker, "attempt": task.attempts}
        log.debug("running task %s (attempt %d)", task.id, task.attempts, extra={"event": "task_started", **ids})
        result: dict[str, Any] | None = None
        error: BaseException | None = None
        with renewal.renewing(task):
            try:
                result = self.executor(task, renewal.cancelled)
            except Exception as exc:
                error = exc
        if renewal.timed_out:
            assert task.attempt_timeout is not None
            error = TaskFailed(f"attempt {task.attempts} timed out after {task.attempt_timeout.total_seconds():g}s")
            self._fail(worker, task, error, ids)
            return
        if renewal.cancelled.is_set():
            log.warning(
                "task %s: result discarded, the lease was lost or the task cancelled",
                task.id,
                extra={"event": "result_discarded", **ids},
            )
            return
        if isinstance(error, TaskHandedOff):
            log.info("task %s: %s", task.id, error, extra={"event": "task_handed_off", **ids})
            return
        if isinstance(error, TaskDeferred):
            if self.queue.defer_run(task.id, worker, task.fencing_token, self.now(), error.until, str(error)):
                log.info(
                    "task %s deferred until %s: %s",
                    task.id,
                    error.until.isoformat(),
                    error,
                    extra={"event": "task_deferred", "until": error.until.isoformat(), **ids},
                )
            return
        if error is None:
            assert result is not None
            if self.queue.complete_run(task.id, worker, task.fencing_token, self.now(), result):
                log.info("task %s succeeded", task.id, extra={"event": "task_succeeded", **ids})
            else:
                log.warning(
                    "task %s: result refused, the claim is no longer this worker's",
                    task.id,
                    extra={"event": "result_refused", **ids},
                )
            return
        self._fail(worker, task, error, ids)

    def _fail(self, worker: str, task: ClaimedTask, error: BaseException, ids: dict[str, Any]) -> None:
        permanent = isinstance(error, TaskFailed) and error.permanent
        if not isinstance(error, TaskFailed):
            log.error(
                "executor raised %s on task %s",
                type(error).__name__,
                task.id,
                exc_info=error,
                extra={"event": "executor_error", **ids},
            )
        message = str(error) if isinstance(error, TaskFailed) else f"{type(error).__name__}: {error}"
        policy = self.options.retry
        if isinstance(task.payload.get("retry"), dict):
            try:
                policy = RetryPolicy.model_validate(task.payload["retry"])
            except ValueError:
                log.warning("task %s: unreadable retry policy; using the default", task.id, extra=ids)
        if task.max_attempts < policy.max_attempts:  # the row's cap, set at enqueue, wins when tighter
            policy = policy.model_copy(update={"max_attempts": task.max_attempts})
        now = self.now()
        decision = decide(
            policy,
            task.attempts,
            Failure.NON_RETRYABLE if permanent else Failure.RETRYABLE,
            now,
            task.deadline_at,
            self.draw(),
        )
        accepted = self.queue.fail_run(task.id, worker, task.fencing_token, now, message, decision.retry_at)
        if not accepted:
            log.warning(
                "task %s: failure refused, the claim is no longer this worker's",
                task.id,
                extra={"event": "result_refused", **ids},
            )
        elif decision.retry_at is not None:
            log.info(
                "task %s failed (%s); retrying at %s",
                task.id,
                message,
                decision.retry_at.isoformat(),
                extra={"event": "task_retry", "retry_at": decision.retry_at.isoformat(), **ids},
            )
        else:
            log.warning(
                "task %s failed (%s); dead-lettered: %s",
                task.id,
                message,
                decision.give_up,
                extra={"event": "task_dead_letter", "give_up": str(decision.give_up), **ids},
            )
