"""Benchmark: no-op tasks claimed and completed per second, against the floor, on both stores.

Measured in the same run, each beside its floor: the same claim and complete SQL (the text
and parameters of ``TaskQueue._hot``, checked equal once) run through the raw driver in a
plain loop, with no orlojd code in the loop.

* SQLite, embedded: a ``WorkerPool`` of ``--pool-size`` threads (default 4, the daemon's
  ``workers.size``) with the ``noop`` executor and orlojd's info logging (to a file) drains
  N queued tasks from a fresh copy of the store. The clock runs from ``pool.start()`` to the
  N-th accepted ``complete_run``. Floor: one sqlite3 connection, the store's pragmas, looping
  BEGIN IMMEDIATE; claim; COMMIT; BEGIN IMMEDIATE; complete; COMMIT (what ``_driver_run``
  does) over another copy of the same N rows.
* PostgreSQL: ``--processes`` (4) ``orlojd worker --executor noop --capacity C`` processes.
  They start against an empty queue and register; then the N rows go in with one
  ``INSERT ... SELECT`` (and an ANALYZE) in one transaction, and the clock runs until no row
  is pending or running (polled every 10 ms). Floor: 4 forked processes, each with one
  psycopg connection looping claim; COMMIT; complete; COMMIT, released together once the
  same rows are in. Claim latency comes from the floor and from an in-process ``WorkerPool``
  (1 process x ``--pool-size`` threads) on its own copy: the worker processes are not timed
  inside.

Rows are queued with ``TaskQueue.enqueue_run`` and ``core.runs.run_parameters`` (not timed).
Claim latency is one ``TaskQueue.claim_one`` call (orlojd) or one claim transaction (floor),
successful claims only. Human-readable lines go first; the last line is one JSON object
(see bench/README.md).

    .venv/bin/python bench/queue.py            # 20,000 tasks, 3 repeats
    .venv/bin/python bench/queue.py --quick    # 4,000 tasks, 1 repeat, under 60 s
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

# Run as a script, bench/ is sys.path[0] and this file would shadow the standard library's
# ``queue`` (imported by multiprocessing, logging.handlers, psycopg...): search bench/ last.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import psycopg  # noqa: E402
from load import WORK, percentile, provenance  # noqa: E402
from psycopg import sql as pgsql  # noqa: E402

from orlojd.adapters.queue import ClaimedTask, TaskQueue  # noqa: E402
from orlojd.adapters.store import Store  # noqa: E402

METRIC = "queue_tasks_per_s"
TARGET_RATIO = 2.0
TARGET_RATE = {"sqlite": 1000.0, "postgres": 2000.0}
PG_ADMIN = os.environ.get("ORLOJD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
LEASE = timedelta(seconds=30)
NOOP_RESULT = '{"executor":"noop"}'  # what orlojd stores for the noop executor's result
POLL_SECONDS = 0.01  # how often the PostgreSQL run looks for the last task
RUN_TIMEOUT_S = 300.0

# ---------------------------------------------------------------------------
# Workload: N queued runs of a small Task, as apply would queue them
# ---------------------------------------------------------------------------


def task_body(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "orloj.dev/v1",
        "kind": "Task",
        "metadata": {"name": f"task-{i:05d}", "namespace": "bench", "labels": {"batch": f"b{i % 4}"}},
        "spec": {
            "agent": f"agent-{i % 30:02d}",
            "input": {"folder": f"reports/2026-q{1 + i % 4}", "limit": 100 + i % 50, "format": "markdown"},
            "priority": 3,
        },
    }


def enqueue(queue: TaskQueue, n: int, threads: int = 1) -> float:
    """Queue n runs through ``enqueue_run`` (``core.runs`` parameters), from ``threads`` threads; the seconds taken."""
    from orlojd.core.keys import ResourceKey
    from orlojd.core.runs import run_parameters

    agent = {"apiVersion": "orloj.dev/v1", "kind": "Agent", "spec": {"modelRef": "model", "prompt": "p"}}
    failures: list[BaseException] = []

    def some(numbers: range) -> None:
        try:
            for i in numbers:
                now = datetime.now(UTC)
                key = ResourceKey("Task", "bench", f"task-{i:05d}")
                params = run_parameters(key, task_body(i), agent, "0" * 40)
                queued = queue.enqueue_run(str(key), f"sha256:{i:064x}", now=now, **params.enqueue_options(now))
                assert queued is not None
        except BaseException as exc:
            failures.append(exc)

    start = time.perf_counter()
    workers = [threading.Thread(target=some, args=(range(k, n, threads),)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------


@dataclass
class Run:
    """One drain: how many tasks in how long, and the claim latencies (seconds) behind them."""

    label: str
    tasks: int
    seconds: float
    claims: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


def median_run(runs: list[Run]) -> Run:
    """The run with the median rate (the lower middle one for an even count), its latencies with it."""
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]


class TimedQueue(TaskQueue):
    """The queue with every ``claim_one`` timed and the accepted completions counted (outside the SQL)."""

    def __init__(self, store: Store, expected: int) -> None:
        super().__init__(store)
        self.expected = expected
        self.claims: list[float] = []
        self.empty_claims = 0
        self._done = itertools.count(1)  # next() on a count is atomic under the GIL
        self.finished = threading.Event()
        self.finished_at = 0.0

    def claim_one(
        self, worker_id: str, now: datetime, lease: timedelta, labels: dict[str, str] | None = None
    ) -> ClaimedTask | None:
        start = time.perf_counter()
        task = super().claim_one(worker_id, now, lease, labels)
        took = time.perf_counter() - start
        if task is None:
            self.empty_claims += 1
        else:
            self.claims.append(took)
        return task

    def complete_run(
        self, task_id: str, worker_id: str, fencing_token: int, now: datetime, result: dict[str, Any]
    ) -> bool:
        accepted = super().complete_run(task_id, worker_id, fencing_token, now, result)
        if accepted and next(self._done) == self.expected:
            self.finished_at = time.perf_counter()
            self.finished.set()
        return accepted


@contextlib.contextmanager
def daemon_logging(path: Path) -> Iterator[None]:
    """orlojd's own log setup (text, info: two lines per task), writing to ``path`` instead of stderr."""
    import logging

    from orlojd import logs

    root = logging.getLogger("orlojd")
    saved = (root.handlers[:], root.level, root.propagate)
    with path.open("w") as sink:
        with contextlib.redirect_stderr(sink):
            logs.setup("text")
        try:
            yield
        finally:
            for handler in root.handlers:
                handler.flush()
            root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def pool_drain(queue: TimedQueue, n: int, size: int, label: str, log_path: Path) -> Run:
    """A ``WorkerPool`` of ``size`` threads with the noop executor, from start to the n-th completion."""
    from orlojd.engine.executors import noop
    from orlojd.engine.workers import PoolOptions, WorkerPool

    pool = WorkerPool(queue, noop, PoolOptions(size=size, lease=LEASE, renew_every=LEASE / 3), "bench")
    with daemon_logging(log_path):
        cpu = time.process_time()
        start = time.perf_counter()
        pool.start()
        if not queue.finished.wait(RUN_TIMEOUT_S):
            pool.drain(5.0)
            raise SystemExit(f"{label}: {n} tasks not done within {RUN_TIMEOUT_S:.0f} s")
        seconds = queue.finished_at - start
        cpu = time.process_time() - cpu
        drained = pool.drain(10.0)
    assert drained, f"{label}: the pool did not drain"
    counts = queue.counts_all()
    assert counts["succeeded"] == n, f"{label}: {counts}"
    extra = {"empty_claims": queue.empty_claims, "cpu_us_per_task": round(cpu / n * 1e6, 1)}
    return Run(label, n, seconds, list(queue.claims), extra)


# ---------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------


def sqlite_time(moment: datetime) -> str:
    """A time as SQLAlchemy's SQLite DateTime stores it (checked against ``queue_sql.Prepared.parameters``)."""
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def hot_spec(queue: TaskQueue) -> tuple[dict[str, Any], datetime, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """orlojd's compiled claim and complete, sample values to check the floor's binding against, and
    the floor's spec (SQL text, positional order, defaults) taken from them."""
    hot = {name: queue._hot[name] for name in ("claim", "complete")}
    sample = datetime.now(UTC)
    claim_values = {"now": sample, "until": sample + LEASE, "worker": "w/0", "labels": "{}"}
    complete_values = {"id": "x", "worker": "w/0", "token": 1, "now": sample, "result": NOOP_RESULT}
    spec: dict[str, Any] = {
        "claim_sql": hot["claim"].sql,
        "claim_order": hot["claim"].order,
        "claim_defaults": hot["claim"].defaults,
        "complete_sql": hot["complete"].sql,
        "complete_order": hot["complete"].order,
        "complete_defaults": hot["complete"].defaults,
    }
    return hot, sample, claim_values, complete_values, spec


def sqlite_template(root: Path, n: int) -> tuple[Path, float, dict[str, Any]]:
    """A migrated SQLite store holding n queued runs, checkpointed into one file; the hot SQL with it."""
    path = root / "template.db"
    store = Store.open(f"sqlite:///{path}")
    queue = TaskQueue(store)
    seconds = enqueue(queue, n)
    hot, sample, claim_values, complete_values, spec = hot_spec(queue)
    floor_claim = sqlite_params(spec["claim_order"], spec["claim_defaults"])
    floor_complete = sqlite_params(spec["complete_order"], spec["complete_defaults"])
    # The floor binds exactly what orlojd binds.
    assert floor_claim(claim_values | {"now": sqlite_time(sample), "until": sqlite_time(sample + LEASE)}) == (
        hot["claim"].parameters(claim_values)
    )
    assert floor_complete(complete_values | {"now": sqlite_time(sample)}) == hot["complete"].parameters(complete_values)
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")
    return path, seconds, spec


def sqlite_params(order: tuple[str, ...], defaults: dict[str, Any]) -> Any:
    getter = itemgetter(*order)
    return lambda values: getter(defaults | values)


def sqlite_floor(path: Path, n: int, spec: dict[str, Any]) -> Run:
    """One raw sqlite3 connection (the store's pragmas), claim + complete in a plain loop."""
    connection = sqlite3.connect(path, timeout=30, check_same_thread=False)  # as SQLAlchemy's pysqlite connects
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=30000")
    cursor = connection.cursor()
    claim_sql, complete_sql = spec["claim_sql"], spec["complete_sql"]
    claim_params = sqlite_params(spec["claim_order"], spec["claim_defaults"])
    complete_params = sqlite_params(spec["complete_order"], spec["complete_defaults"])
    worker = "floor/0"
    claims: list[float] = []
    done = 0
    cpu = time.process_time()
    start = time.perf_counter()
    while True:
        now = datetime.now(UTC)
        params = claim_params({"now": sqlite_time(now), "until": sqlite_time(now + LEASE), "worker": worker})
        began = time.perf_counter()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(claim_sql, params)
        rows = cursor.fetchall()
        connection.commit()
        took = time.perf_counter() - began
        if not rows:
            break
        claims.append(took)
        task_id, token = rows[0][0], rows[0][6]
        params = complete_params(
            {"id": task_id, "worker": worker, "token": token, "now": sqlite_time(datetime.now(UTC))}
            | {"result": NOOP_RESULT}
        )
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(complete_sql, params)
        assert cursor.rowcount == 1
        connection.commit()
        done += 1
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    succeeded = connection.execute("SELECT count(*) FROM tasks WHERE state = 'succeeded'").fetchone()[0]
    connection.close()
    assert done == n == succeeded, f"sqlite floor: {done} done, {succeeded} succeeded, {n} expected"
    return Run("floor: 1 connection, plain loop", n, seconds, claims, {"cpu_us_per_task": round(cpu / n * 1e6, 1)})


def sqlite_orlojd(path: Path, n: int, size: int, log_path: Path) -> Run:
    store = Store.open(f"sqlite:///{path}")
    try:
        queue = TimedQueue(store, n)
        return pool_drain(queue, n, size, f"orlojd: WorkerPool, {size} threads", log_path)
    finally:
        store.close()


def bench_sqlite(root: Path, n: int, repeats: int, size: int) -> dict[str, Any]:
    template, enqueue_s, spec = sqlite_template(root, n)
    print(f"sqlite: {n:,} tasks queued with enqueue_run in {enqueue_s:.1f} s ({n / enqueue_s:,.0f}/s, not timed)")
    floors: list[Run] = []
    pools: list[Run] = []
    for r in range(repeats):  # interleaved, so that machine noise hits both alike
        fresh = root / f"floor-{r}.db"
        shutil.copyfile(template, fresh)
        floors.append(sqlite_floor(fresh, n, spec))
        fresh = root / f"orlojd-{r}.db"
        shutil.copyfile(template, fresh)
        pools.append(sqlite_orlojd(fresh, n, size, root / f"orlojd-{r}.log"))
        print(f"  repeat {r + 1}: floor {floors[-1].rate:,.0f}/s, orlojd {pools[-1].rate:,.0f}/s")
    return {"floor": floors, "orlojd": pools, "enqueue_s": enqueue_s}


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


def pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{name}"


def pg_admin(statement: pgsql.Composed) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(statement)


class PgDatabases:
    """Throw-away databases with random names, dropped at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self, template: str | None = None) -> str:
        name = f"orlojd_bench_{uuid.uuid4().hex}"
        if template is None:
            pg_admin(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
        else:
            pg_admin(
                pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(pgsql.Identifier(name), pgsql.Identifier(template))
            )
        self.names.append(name)
        return name

    def drop_all(self) -> None:
        for name in reversed(self.names):
            with contextlib.suppress(psycopg.Error):
                pg_admin(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))
        self.names.clear()


def pg_template(databases: PgDatabases, n: int) -> tuple[str, float, dict[str, Any]]:
    """A migrated database with an empty queue and n queued runs kept aside in ``bench_rows``."""
    name = databases.create()
    store = Store.open(pg_url(name))
    queue = TaskQueue(store)
    seconds = enqueue(queue, n, threads=8)  # commits wait on fsync: let them share it
    hot, _, claim_values, complete_values, spec = hot_spec(queue)
    # The floor binds exactly what orlojd binds (psycopg adapts the datetimes itself).
    assert hot["claim"].parameters(claim_values) == spec["claim_defaults"] | claim_values
    assert hot["complete"].parameters(complete_values) == spec["complete_defaults"] | complete_values
    store.close()
    with psycopg.connect(pg_url(name), autocommit=True) as connection:
        connection.execute("CREATE TABLE bench_rows AS SELECT * FROM tasks")
        connection.execute("TRUNCATE tasks")
        connection.execute("VACUUM ANALYZE")
    return name, seconds, spec


def pg_fill(url: str, limit: int | None = None) -> float:
    """Queue the rows of ``bench_rows`` (all, or the first ``limit``) in one transaction; the
    perf_counter right after the commit.

    The same transaction analyzes the table, so the claim is planned on statistics of the
    full queue, as on a long-lived table autovacuum has analyzed (on the statistics of an
    empty table PostgreSQL sorts the whole queue on every claim: 15x slower).
    """
    with psycopg.connect(url) as connection:
        if limit is None:
            connection.execute("INSERT INTO tasks SELECT * FROM bench_rows")
        else:
            connection.execute("INSERT INTO tasks SELECT * FROM bench_rows ORDER BY task_key LIMIT %s", (limit,))
        connection.execute("ANALYZE tasks")
        connection.commit()
        return time.perf_counter()


def pg_remaining(connection: psycopg.Connection[Any]) -> bool:
    row = connection.execute("SELECT EXISTS (SELECT 1 FROM tasks WHERE state IN ('pending', 'running'))").fetchone()
    return bool(row and row[0])


def pg_succeeded(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT count(*) FROM tasks WHERE state = 'succeeded'").fetchone()
        return int(row[0]) if row else 0


def floor_process(spec: dict[str, Any], url: str, worker: str, pipe: Connection, go: EventType) -> None:
    """One floor process: a plain psycopg loop of claim + complete until a claim returns nothing.

    Connects, says ``ready`` on ``pipe``, waits for ``go``, then sends back its completions,
    end time (``perf_counter``, one clock for all processes on Linux), CPU time and claim latencies.
    """
    claim_sql, complete_sql = spec["claim_sql"], spec["complete_sql"]
    claim_defaults, complete_defaults = spec["claim_defaults"], spec["complete_defaults"]
    connection = psycopg.connect(url)  # not autocommit, as SQLAlchemy's psycopg dialect connects
    cursor = connection.cursor()
    pipe.send("ready")
    go.wait()
    claims: list[float] = []
    done = 0
    cpu = time.process_time()
    while True:
        now = datetime.now(UTC)
        params = claim_defaults | {"now": now, "until": now + LEASE, "worker": worker, "labels": "{}"}
        began = time.perf_counter()
        cursor.execute(claim_sql, params)
        rows = cursor.fetchall()
        connection.commit()
        took = time.perf_counter() - began
        if not rows:
            break
        claims.append(took)
        task_id, token = rows[0][0], rows[0][6]
        params = complete_defaults | {
            "id": task_id,
            "worker": worker,
            "token": token,
            "now": datetime.now(UTC),
            "result": NOOP_RESULT,
        }
        cursor.execute(complete_sql, params)
        assert cursor.rowcount == 1
        connection.commit()
        done += 1
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    connection.close()
    pipe.send({"done": done, "end": end, "cpu": cpu, "claims": claims})


def pg_floor(url: str, n: int, processes: int, spec: dict[str, Any]) -> Run:
    """``processes`` forked processes (nothing to import, nothing of orlojd used), each running ``floor_process``."""
    context = multiprocessing.get_context("fork")
    go = context.Event()
    pipes = [context.Pipe() for _ in range(processes)]
    children = [
        context.Process(target=floor_process, args=(spec, url, f"floor-{k}/0", pipes[k][1], go), daemon=True)
        for k in range(processes)
    ]
    try:
        for child in children:
            child.start()
        for ours, _theirs in pipes:
            if not ours.poll(60) or ours.recv() != "ready":
                raise SystemExit("a floor process did not start")
        pg_fill(url)
        start = time.perf_counter()
        go.set()
        results = []
        for ours, _theirs in pipes:
            if not ours.poll(RUN_TIMEOUT_S):
                raise SystemExit(f"postgres floor: not done within {RUN_TIMEOUT_S:.0f} s")
            results.append(ours.recv())
        for child in children:
            child.join(30)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
    assert [child.exitcode for child in children] == [0] * processes, "a floor process failed"
    done = sum(r["done"] for r in results)
    succeeded = pg_succeeded(url)
    assert done == n == succeeded, f"postgres floor: {done} done, {succeeded} succeeded, {n} expected"
    seconds = max(r["end"] for r in results) - start
    claims = [c for r in results for c in r["claims"]]
    cpu = sum(r["cpu"] for r in results)
    extra = {"per_process": [r["done"] for r in results], "cpu_us_per_task": round(cpu / n * 1e6, 1)}
    return Run(f"floor: {processes} processes, plain loop", n, seconds, claims, extra)


def pg_workers(url: str, n: int, processes: int, capacity: int, logs_dir: Path) -> Run:
    """``orlojd worker`` processes: started and registered first, then the rows go in and the clock runs."""
    from orlojd.adapters.worker_registry import LOST_AFTER, WorkerRegistry, WorkerState

    store = Store.open(url)
    registry = WorkerRegistry(store)
    ids = [f"bench-{k}" for k in range(processes)]
    logs: list[IO[bytes]] = []
    workers: list[subprocess.Popen[bytes]] = []
    argv = [sys.executable, "-m", "orlojd", "worker", "--db", url, "--executor", "noop"]
    argv += ["--capacity", str(capacity), "--lease", f"{LEASE.total_seconds():g}s"]
    try:
        for worker_id in ids:
            log = (logs_dir / f"{worker_id}.log").open("wb")
            logs.append(log)
            workers.append(subprocess.Popen([*argv, "--id", worker_id], stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while True:
            live = {
                w.id for w in registry.list_all(datetime.now(UTC), LOST_AFTER) if w.state == WorkerState.LIVE
            } & set(ids)
            if len(live) == processes:
                break
            for worker in workers:
                if worker.poll() is not None:
                    raise SystemExit(f"orlojd worker exited with {worker.returncode}; see {logs_dir}")
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(live)} of {processes} workers registered within 60 s; see {logs_dir}")
            time.sleep(0.05)
        time.sleep(0.3)  # every pool thread has made its first (empty) claim and is idling
        with psycopg.connect(url, autocommit=True) as poller:
            start = pg_fill(url)
            start_wall = datetime.now(UTC)
            deadline = start + RUN_TIMEOUT_S
            while pg_remaining(poller):
                if time.perf_counter() > deadline:
                    raise SystemExit(f"postgres workers: not done within {RUN_TIMEOUT_S:.0f} s")
                time.sleep(POLL_SECONDS)
            seconds = time.perf_counter() - start
            row = poller.execute(
                "SELECT count(*), max(finished_at), min(available_at) FROM tasks WHERE state = 'succeeded'"
            ).fetchone()
        assert row is not None and row[0] == n, f"postgres workers: {row and row[0]} succeeded, {n} expected"
        last_finished, first_claim = row[1], row[2] - LEASE  # a claim sets available_at = its lease end
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes = []
        for worker in workers:
            try:
                codes.append(worker.wait(30))
            except subprocess.TimeoutExpired:
                worker.kill()
                codes.append(worker.wait())
        for sink in logs:
            sink.close()
        store.close()
    assert codes == [0] * processes, f"orlojd worker exit codes after SIGTERM: {codes}; see {logs_dir}"
    return Run(
        f"orlojd: {processes} worker processes x capacity {capacity}",
        n,
        seconds,
        [],
        {
            "seconds_by_finished_at": (last_finished - start_wall).total_seconds(),
            "pickup_s": (first_claim - start_wall).total_seconds(),
            "rate_after_first_claim": round(n / (last_finished - first_claim).total_seconds(), 1),
            "sigterm_exits": codes,
        },
    )


def pg_in_process(url: str, n: int, size: int, log_path: Path) -> Run:
    """An in-process ``WorkerPool`` of ``size`` threads on n of the rows, for claim latency (and its own rate)."""
    pg_fill(url, n)
    store = Store.open(url)
    try:
        queue = TimedQueue(store, n)
        return pool_drain(queue, n, size, f"orlojd: in-process WorkerPool, {size} threads", log_path)
    finally:
        store.close()


def bench_postgres(
    root: Path, n: int, repeats: int, processes: int, capacity: int, size: int, latency_tasks: int
) -> dict[str, Any]:
    databases = PgDatabases()
    try:
        template, enqueue_s, spec = pg_template(databases, n)
        print(f"postgres: {n:,} tasks queued with enqueue_run in {enqueue_s:.1f} s ({n / enqueue_s:,.0f}/s, not timed)")
        floors: list[Run] = []
        workers: list[Run] = []
        in_process: list[Run] = []
        for r in range(repeats):
            name = databases.create(template)
            floors.append(pg_floor(pg_url(name), n, processes, spec))
            logs_dir = root / f"pg-workers-{r}"
            logs_dir.mkdir()
            name = databases.create(template)
            workers.append(pg_workers(pg_url(name), n, processes, capacity, logs_dir))
            name = databases.create(template)
            in_process.append(pg_in_process(pg_url(name), latency_tasks, size, root / f"pg-pool-{r}.log"))
            print(
                f"  repeat {r + 1}: floor {floors[-1].rate:,.0f}/s, orlojd workers {workers[-1].rate:,.0f}/s, "
                f"in-process pool {in_process[-1].rate:,.0f}/s"
            )
            for name in databases.names[1:]:
                pg_admin(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))
            del databases.names[1:]
        return {"floor": floors, "orlojd": workers, "in_process": in_process, "enqueue_s": enqueue_s}
    finally:
        databases.drop_all()


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def latency(run: Run) -> dict[str, float] | None:
    if not run.claims:
        return None
    return {"p50_ms": ms(percentile(run.claims, 50)), "p99_ms": ms(percentile(run.claims, 99))}


def summary(store: str, result: dict[str, Any]) -> dict[str, Any]:
    floor, orlojd = median_run(result["floor"]), median_run(result["orlojd"])
    ratio = floor.rate / orlojd.rate
    timed = median_run(result.get("in_process", result["orlojd"]))
    out: dict[str, Any] = {
        "value": round(orlojd.rate, 1),
        "floor": round(floor.rate, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "target_rate": TARGET_RATE[store],
        "meets": ratio <= TARGET_RATIO and orlojd.rate >= TARGET_RATE[store],
        "orlojd": orlojd.label,
        "floor_run": floor.label,
        "seconds": round(orlojd.seconds, 3),
        "floor_seconds": round(floor.seconds, 3),
        "rates": [round(r.rate, 1) for r in result["orlojd"]],
        "floor_rates": [round(r.rate, 1) for r in result["floor"]],
        "ratios": [round(f.rate / o.rate, 3) for f, o in zip(result["floor"], result["orlojd"], strict=True)],
        "claim_latency": latency(timed),
        "claim_latency_from": timed.label,
        "floor_claim_latency": latency(floor),
        "floor_cpu_us_per_task": floor.extra.get("cpu_us_per_task"),
        "enqueue_per_s": round(orlojd.tasks / result["enqueue_s"], 1),
        **orlojd.extra,
    }
    if "in_process" in result:
        out["in_process_pool"] = {
            "rate": round(timed.rate, 1),
            "seconds": round(timed.seconds, 3),
            "cpu_us_per_task": timed.extra.get("cpu_us_per_task"),
        }
    return out


def table_rows(store: str, result: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for key in ("floor", "orlojd", "in_process"):
        if key not in result:
            continue
        run = median_run(result[key])
        lat = latency(run)
        rows.append(
            (
                store,
                run.label,
                f"{run.tasks:,}",
                f"{run.seconds:.2f}",
                f"{run.rate:,.0f}",
                f"{lat['p50_ms']:.2f}" if lat else "-",
                f"{lat['p99_ms']:.2f}" if lat else "-",
                f"{run.extra['cpu_us_per_task']:.0f}" if "cpu_us_per_task" in run.extra else "-",
            )
        )
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    head: tuple[str, ...] = ("store", "run (median of repeats)", "tasks", "seconds", "tasks/s")
    head += ("claim p50 ms", "claim p99 ms", "CPU us/task")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4,000 tasks, 1 repeat; under 60 s")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per drain (default 20,000; 4,000 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="drains of each kind (default 3; 1 with --quick)")
    parser.add_argument("--pool-size", type=int, default=4, help="threads of the embedded pool (default 4)")
    parser.add_argument("--processes", type=int, default=4, help="PostgreSQL worker processes (default 4)")
    parser.add_argument("--capacity", type=int, default=4, help="orlojd worker --capacity (default 4)")
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite files and logs in bench/.work")
    args = parser.parse_args(argv)
    n = args.tasks or (4000 if args.quick else 20000)
    repeats = args.repeats or (1 if args.quick else 3)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(stores) - set(TARGET_RATE)
    if unknown or not stores:
        parser.error(f"--stores: sqlite and/or postgres, not {args.stores!r}")

    import orlojd.engine.workers  # noqa: F401  (import cost is not part of any drain)

    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="queue-", dir=WORK))
    results: dict[str, dict[str, Any]] = {}
    began = time.perf_counter()
    try:
        if "sqlite" in stores:
            results["sqlite"] = bench_sqlite(root, n, repeats, args.pool_size)
        if "postgres" in stores:
            latency_tasks = min(n, 2000) if args.quick else n
            results["postgres"] = bench_postgres(
                root, n, repeats, args.processes, args.capacity, args.pool_size, latency_tasks
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    rows = [row for store, result in results.items() for row in table_rows(store, result)]
    print()
    print_table(rows)
    per_store = {store: summary(store, result) for store, result in results.items()}
    print()
    for store, s in per_store.items():
        verdict = "meets" if s["meets"] else "MISSES"
        print(
            f"{store}: orlojd {s['value']:,.0f} tasks/s, floor {s['floor']:,.0f} tasks/s, ratio {s['ratio']:.2f}x; "
            f"targets >= {s['target_rate']:,.0f} tasks/s and <= {TARGET_RATIO:.1f}x: {verdict}"
        )
    if "postgres" in per_store:
        extra = per_store["postgres"]
        print(
            f"postgres: first claim {extra['pickup_s'] * 1000:.0f} ms after the rows were queued (workers idle-poll "
            f"every 0.2 s); last finished_at {extra['seconds_by_finished_at']:.2f} s after; "
            f"{extra['rate_after_first_claim']:,.0f} tasks/s from the first claim on. Claim latency: from the "
            "in-process pool (the worker processes cannot be timed inside); CPU of the worker processes not measured"
        )
    # Headline: the store with the worse ratio, so a miss on either store shows.
    worst = max(per_store, key=lambda s: per_store[s]["ratio"])
    head = per_store[worst]
    result = {
        "metric": METRIC,
        "value": head["value"],
        "unit": "tasks/s",
        "floor": head["floor"],
        "ratio": head["ratio"],
        "target": TARGET_RATIO,
        "store": worst,
        "stores": per_store,
        "tasks": n,
        "repeats": repeats,
        "pool_size": args.pool_size,
        "processes": args.processes,
        "capacity": args.capacity,
        "quick": args.quick,
        "wall_seconds": round(time.perf_counter() - began, 1),
        **provenance(),
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
