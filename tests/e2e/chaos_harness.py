"""Harness for the chaos tests (tests/e2e/test_chaos.py): worker processes are killed at random
while a queue of tasks runs; afterwards ``verify`` proves every task took effect exactly once.

``Producer``: a thread queueing the tasks at a steady pace. ``Fleet``: the processes a test
started (`orlojd worker` or `orlojd serve`), each with a log file, to SIGKILL, freeze
(SIGSTOP, later SIGCONT), stop with SIGTERM, and end for sure in a ``finally`` block.
``Stalls``: a thread that holds a lock on the sink or the queue now and then (a slow
downstream), so that workers hold claims mid-execution when a kill lands and the time between
an effect and its ``complete_run`` is long enough for kills to force re-runs. ``SinkView``:
what the ``sink:PATH`` executor recorded (one ``effects`` row per task id, one ``executions``
row per execution). ``Chaos``: the seed and what was done. ``verify``: the assertions.

Chaos is driven by a seeded ``random.Random`` (``CHAOS_SEED=N`` replays a seed's choices;
process timing still varies). Waits poll the store with a deadline; the only timed sleeps
are the random chaos intervals and stall lengths themselves.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from conftest import ORLOJD
from serve_harness import clean_env, wait_for

from orlojd.adapters import clock
from orlojd.adapters.queue import TaskQueue, TaskState
from orlojd.adapters.worker_registry import LOST_AFTER, WorkerRegistry, WorkerState

TASKS = 1000
MAX_ATTEMPTS = 20  # far more than the kills one task can suffer in a run: a spent task would be dead-lettered
CAPACITY = 4  # tasks one worker process runs at once
LEASE = "2s"
ARRIVALS = 20.0  # seconds over which the tasks are queued, one after another, so the chaos has time to act
CHAOS_EVERY = (0.2, 1.0)  # seconds between two chaos actions
MID_TASK_WAIT = 1.0  # seconds an action may wait past its time for a victim holding claims
STALL_FOR = (0.1, 0.4)  # seconds a stall holds its lock: well under a third of the lease, so renewals keep up
STALL_GAP = (0.05, 0.25)
START_DEADLINE = 45.0  # seconds for the first processes to come up
RUN_DEADLINE = 60.0  # seconds for the whole queue to become terminal under chaos
POLL = 0.05
POLL_FROZEN = 0.01  # while a worker is frozen: thaw it right after its claim is taken over
STOP_GRACE = 15.0
MIN_KILLS = 3  # kills that found the victim holding claims: fewer and the run proved little
TERMINAL = {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD_LETTER, TaskState.CANCELLED}

Hold = Callable[[float, threading.Event], bool]


def chaos_seed() -> int:
    """The seed for this run: CHAOS_SEED from the environment (to replay one), else a fresh one."""
    given = os.environ.get("CHAOS_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


class Producer:
    """A thread enqueueing ``count`` distinct tasks (small payloads) with TaskQueue, paced evenly over
    ``ARRIVALS`` seconds (or as fast as the store takes them, if slower); ``ids`` are the queued ones.

    Were they all due at once, the workers would finish them in a couple of seconds, before the
    chaos had acted more than a few times and before any replacement worker had started.
    """

    def __init__(self, queue: TaskQueue, count: int = TASKS) -> None:
        self._queue = queue
        self._count = count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-producer", daemon=True)
        self.ids: set[str] = set()
        self.error: BaseException | None = None

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=STOP_GRACE)

    @property
    def done(self) -> bool:
        """Every task queued; fails the test if the producer broke."""
        assert self.error is None, f"enqueueing failed: {self.error!r}"
        return not self._thread.is_alive() and len(self.ids) == self._count

    def _run(self) -> None:
        start = time.monotonic()
        try:
            for n in range(self._count):
                if self._stop.wait(max(0.0, start + ARRIVALS * n / self._count - time.monotonic())):
                    return
                key = f"Task/chaos/t{n:04d}"
                task_id = self._queue.enqueue_run(key, "chaos-1", {"n": n}, now=clock.now(), max_attempts=MAX_ATTEMPTS)
                assert task_id is not None, f"{key} was not queued"
                self.ids.add(task_id)
        except BaseException as exc:
            self.error = exc


def wait_until(what: str, probe: Callable[[], bool], explain: Callable[[], str]) -> None:
    """Poll ``probe`` until it is true; fail after START_DEADLINE (processes start slowly on a busy machine)."""
    wait_for(what, probe, START_DEADLINE, explain)


def terminal(counts: dict[str, int]) -> bool:
    return all(count == 0 for state, count in counts.items() if TaskState(state) not in TERMINAL)


def live_workers(registry: WorkerRegistry) -> dict[int, str]:
    """pid -> worker id of every registered worker pool not marked stopped (dead ones included)."""
    return {v.pid: v.id for v in registry.list_all(clock.now(), LOST_AFTER) if v.state is WorkerState.LIVE}


def claims_by_worker(queue: TaskQueue) -> Counter[str]:
    """Running claims per worker process (its threads are ``ID/0``, ``ID/1``, ...)."""
    running = queue.list_all(TaskState.RUNNING.value, limit=10 * TASKS)
    return Counter(v.lease_owner.rpartition("/")[0] for v in running if v.lease_owner is not None)


def claims_of(queue: TaskQueue, worker_id: str) -> dict[str, int]:
    """task id -> fencing token of the running claims one worker process holds."""
    running = queue.list_all(TaskState.RUNNING.value, limit=10 * TASKS)
    return {v.id: v.fencing_token for v in running if (v.lease_owner or "").rpartition("/")[0] == worker_id}


def taken_over(queue: TaskQueue, claims: dict[str, int]) -> bool:
    """Whether another claim was made on any of these (task id -> token) since."""
    return any(
        (view := queue.get_one(task_id)) is not None and view.fencing_token > token for task_id, token in claims.items()
    )


# -- processes -------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    frozen_until: float | None = None  # monotonic time of its SIGCONT while frozen

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Fleet:
    """Every process a chaos test started; ``close`` (in ``finally``) leaves none running."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[Proc] = []
        self.stop_failures: list[str] = []

    def start(self, name: str, command: list[str], cwd: Path) -> Proc:
        log_path = self.folder / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [ORLOJD, *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env(),
                cwd=cwd,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def running(self) -> list[Proc]:
        return [p for p in self.procs if p.alive]

    def kill(self, proc: Proc) -> None:
        """SIGKILL: no drain, no last write, no lock release (the kernel drops file locks and sockets)."""
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=STOP_GRACE)
        proc.frozen_until = None

    def freeze(self, proc: Proc, seconds: float) -> None:
        """SIGSTOP, until ``thaw`` or at most ``seconds`` (``thaw_due``): a worker that stalls past its lease."""
        proc.popen.send_signal(signal.SIGSTOP)
        proc.frozen_until = time.monotonic() + seconds

    def thaw(self, proc: Proc) -> None:
        if proc.alive:
            proc.popen.send_signal(signal.SIGCONT)
        proc.frozen_until = None

    def thaw_due(self, everything: bool = False) -> list[Proc]:
        """SIGCONT the frozen processes whose time is up (all with ``everything``); which."""
        thawed = []
        for proc in self.procs:
            if proc.frozen_until is not None and (everything or time.monotonic() >= proc.frozen_until):
                self.thaw(proc)
                thawed.append(proc)
        return thawed

    def frozen(self) -> list[Proc]:
        return [p for p in self.procs if p.frozen_until is not None]

    def stop_all(self) -> None:
        """SIGTERM every live process (thawed first), then wait; a process that ignores it is recorded."""
        self.thaw_due(everything=True)
        live = self.running()
        for proc in live:
            proc.popen.send_signal(signal.SIGTERM)
        for proc in live:
            try:
                proc.popen.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.stop_failures.append(f"{proc.name} (pid {proc.pid}) ignored SIGTERM for {STOP_GRACE:.0f}s")

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive:
                proc.popen.send_signal(signal.SIGCONT)
                proc.popen.kill()
            if proc.popen.returncode is None:
                proc.popen.wait(timeout=STOP_GRACE)

    def tracebacks(self) -> list[str]:
        return [p.name for p in self.procs if "Traceback" in p.log()]

    def tails(self, count: int = 3, chars: int = 3000) -> str:
        shown = [p for p in self.procs if "Traceback" in p.log()] or self.procs[-count:]
        return "\n".join(f"--- {p.log_path} ---\n{p.log()[-chars:]}" for p in shown[:count])


# -- stalls ----------------------------------------------------------------------------------------


@contextmanager
def sqlite_locked(path: Path, wait: float = 0.05) -> Iterator[bool]:
    """Hold the write lock of the SQLite file at ``path`` in the block; yields False (and holds nothing)
    when the file does not exist yet or the lock stayed busy for ``wait`` seconds."""
    if not path.exists():
        yield False
        return
    connection = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=wait, isolation_level=None)
    try:
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            yield False  # busy (a frozen worker may hold it): never queue behind one
            return
        yield True
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def sqlite_hold(path: Path) -> Hold:
    """Hold the write lock of the SQLite file at ``path`` (skipped while it does not exist or is busy)."""

    def hold(seconds: float, stop: threading.Event) -> bool:
        with sqlite_locked(path) as held:
            if held:
                stop.wait(seconds)
            return held

    return hold


def postgres_hold(url: str, table: str) -> Hold:
    """Block writes to ``table`` (SHARE lock: claims, renewals and completions wait; reads go on)."""

    def hold(seconds: float, stop: threading.Event) -> bool:
        with psycopg.connect(url) as connection:
            connection.execute("SET lock_timeout = '100ms'")
            try:
                connection.execute(f"LOCK TABLE {table} IN SHARE MODE")
            except psycopg.errors.LockNotAvailable:
                connection.rollback()
                return False
            stop.wait(seconds)
            connection.rollback()
            return True

    return hold


class Stalls:
    """A thread holding one of ``holds`` for a random while, then pausing for a random while, until stopped."""

    def __init__(self, rng: random.Random, holds: Iterable[Hold]) -> None:
        self._rng = rng
        self._holds = list(holds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-stalls", daemon=True)
        self.count = 0
        self.error: BaseException | None = None

    def __enter__(self) -> Stalls:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=STOP_GRACE)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                hold = self._rng.choice(self._holds)
                if hold(self._rng.uniform(*STALL_FOR), self._stop):
                    self.count += 1
                self._stop.wait(self._rng.uniform(*STALL_GAP))
        except BaseException as exc:  # reported with the results; the chaos goes on without stalls
            self.error = exc


# -- what happened ---------------------------------------------------------------------------------


@dataclass
class Chaos:
    """What a chaos loop did, for the assertions and the report."""

    seed: int
    log_folder: Path
    kills: int = 0
    kills_with_claims: int = 0  # the victim held running claims a moment before the kill
    freezes: int = 0
    started: int = 0
    stalls: Stalls | None = None
    events: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        """Record one chaos event (with the wall time, to match the processes' logs) in ``chaos.log``."""
        now = time.time()
        line = f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now * 1000) % 1000:03d} {what}"
        self.events.append(line)
        with (self.log_folder / "chaos.log").open("a") as log:
            log.write(line + "\n")

    def summary(self) -> str:
        stalls = "none" if self.stalls is None else f"{self.stalls.count} (error: {self.stalls.error!r})"
        return (
            f"seed={self.seed} (replay: CHAOS_SEED={self.seed}) kills={self.kills} "
            f"kills_with_claims={self.kills_with_claims} freezes={self.freezes} processes_started={self.started} "
            f"stalls={stalls} logs={self.log_folder}"
        )


@dataclass(frozen=True)
class SinkView:
    """The ``sink:PATH`` executor's file: effects (task id -> token of the first execution) and executions."""

    effects: dict[str, int]
    effect_rows: int
    executions: dict[str, list[int]]
    execution_rows: int

    @classmethod
    def read(cls, path: Path) -> SinkView:
        assert path.exists(), f"the sink {path} was never created: no task ran"
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            effects = dict(connection.execute("SELECT task_id, token FROM effects").fetchall())
            effect_rows = connection.execute("SELECT count(*) FROM effects").fetchone()[0]
            executions: dict[str, list[int]] = {}
            for task_id, token in connection.execute("SELECT task_id, token FROM executions"):
                executions.setdefault(task_id, []).append(token)
            execution_rows = connection.execute("SELECT count(*) FROM executions").fetchone()[0]
        finally:
            connection.close()
        return cls(effects, effect_rows, executions, execution_rows)


def describe(queue: TaskQueue, chaos: Chaos, fleet: Fleet) -> str:
    """Everything a failure message needs: counts, the rows not succeeded, the chaos, log tails."""
    counts = queue.counts_all()
    unfinished = [v for v in queue.list_all(limit=10 * TASKS) if v.state is not TaskState.SUCCEEDED]
    rows = "\n".join(
        f"  {v.id} {v.state} attempts={v.attempts}/{v.max_attempts} token={v.fencing_token} "
        f"owner={v.lease_owner} lease_until={v.lease_until} error={v.last_error}"
        for v in unfinished[:20]
    )
    now = clock.now()
    expired = sum(1 for v in unfinished if v.state is TaskState.RUNNING and v.lease_until and v.lease_until < now)
    return (
        f"counts: {counts}\nrunning with an expired lease, not taken over: {expired}\nchaos: {chaos.summary()}\n"
        f"not succeeded ({len(unfinished)}, first 20):\n{rows}\n"
        f"last chaos events: {chaos.events[-15:]}\nprocesses with a traceback: {fleet.tracebacks()}\n"
        f"{fleet.tails()}"
    )


def verify(queue: TaskQueue, expected: set[str], sink_path: Path, chaos: Chaos, fleet: Fleet) -> str:
    """Assert exactly-once completion (see test_chaos.py); return the one-line report."""
    explain = describe(queue, chaos, fleet)
    counts = queue.counts_all()
    assert counts == {**{s.value: 0 for s in TaskState}, "succeeded": len(expected)}, f"not all succeeded\n{explain}"
    rows = {v.id: v for v in queue.list_all(limit=10 * TASKS)}
    assert set(rows) == expected, f"the queue's ids changed\n{explain}"
    sink = SinkView.read(sink_path)

    # One effect per task, for exactly the queue's tasks; every task executed at least once.
    assert sink.effect_rows == len(expected), f"{sink.effect_rows} effects for {len(expected)} tasks\n{explain}"
    assert set(sink.effects) == expected, (
        f"effects for unknown tasks: {sorted(set(sink.effects) - expected)[:5]}, "
        f"tasks without an effect: {sorted(expected - set(sink.effects))[:5]}\n{explain}"
    )
    assert set(sink.executions) == expected, (
        f"tasks never executed: {sorted(expected - set(sink.executions))[:5]}, "
        f"executions of unknown tasks: {sorted(set(sink.executions) - expected)[:5]}\n{explain}"
    )

    problems: list[str] = []
    for task_id, row in rows.items():
        tokens = sink.executions[task_id]
        result_token = (row.result or {}).get("token")
        if row.result != {"executor": "sink", "token": result_token} or result_token not in tokens:
            problems.append(f"{task_id}: result {row.result} is not from one of its executions {tokens}")
        elif row.fencing_token != result_token:
            problems.append(f"{task_id}: completed by claim {result_token}, but claim {row.fencing_token} is the last")
        if len(set(tokens)) != len(tokens):
            problems.append(f"{task_id}: one claim executed twice: tokens {sorted(tokens)}")
        if max(tokens) > row.fencing_token or min(tokens) < 1:
            problems.append(f"{task_id}: executed under tokens {sorted(tokens)}, never claimed as such")
        if row.attempts != row.fencing_token:
            problems.append(f"{task_id}: {row.attempts} attempts but fencing token {row.fencing_token}")
        if sink.effects[task_id] not in tokens:
            problems.append(f"{task_id}: effect token {sink.effects[task_id]} is from no execution")
    assert not problems, f"{len(problems)} breaches of exactly-once:\n" + "\n".join(problems[:20]) + f"\n{explain}"

    reruns = sink.execution_rows - len(expected)  # executions beyond the one that counted
    abandoned = sum(row.fencing_token for row in rows.values()) - len(expected)  # claims never completed
    report = f"re-runs={reruns} abandoned_claims={abandoned} {chaos.summary()}"
    print(f"chaos: {report}")
    chaos.note(report)
    assert reruns <= abandoned, f"more re-runs than abandoned claims: {report}"
    # A kill or a freeze abandons at most CAPACITY claims (one per worker thread). Slack of one more
    # worker's worth: on a starved machine a lease may lapse once without either (renewed every 0.67 s,
    # it lasts 2 s). A claim that takes over live leases would need far more.
    assert abandoned <= (chaos.kills + chaos.freezes + 1) * CAPACITY, (
        f"more abandoned claims than the kills and freezes can explain (leases lost without one?): {report}\n{explain}"
    )
    assert chaos.kills_with_claims >= MIN_KILLS, f"too few kills hit a worker holding claims: {report}"
    assert abandoned >= MIN_KILLS, f"too few claims were taken over after a kill: {report}"
    assert not fleet.tracebacks(), f"a process logged a traceback\n{explain}"
    assert not fleet.stop_failures, f"{fleet.stop_failures}\n{explain}"
    return report
