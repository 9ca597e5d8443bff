"""Chaos (issue 6, item 7): worker processes are SIGKILLed at random while 1,000 tasks run, on
PostgreSQL (`orlojd worker` processes) and on SQLite (`orlojd serve` with a hot standby).

Each task runs the ``sink:PATH`` executor, which records every execution in a SQLite file and
the task's effect idempotently (one ``effects`` row per task id). When the queue is done,
``chaos_harness.verify`` proves exactly-once completion:

* every task succeeded: none lost (pending, dead-lettered) or stuck (running);
* the sink holds exactly one effect per task, for exactly the queue's task ids, and every task
  was executed; executions beyond 1,000 are the re-runs the kills forced, and there are no
  more of them than abandoned claims, and no more abandoned claims than the kills (and
  freezes) times the worker capacity can explain;
* each row's result names an execution of that task, and its fencing token is that
  execution's: the claim that completed the task was its last claim, no stale worker's
  result was accepted; attempts equal claims, no claim executed twice;
* the chaos bit: at least a few kills hit a worker holding claims, and their claims were
  taken over (else the run proved nothing).

How the chaos runs. A producer thread queues the 1,000 tasks over 20 s (all at once, they
would be done before a replacement worker had even started); a kill waits, up to a second,
for a victim holding claims, and never takes the last working worker (the active daemon is
killed only while a standby waits), so the run goes on however slowly processes start. A
stall thread holds the sink's or the queue's write lock for a few hundred milliseconds now
and then, so workers sit mid-execution (claimed, effect written, completion waiting) when the
kills land. On PostgreSQL, once a few kills have landed, some actions freeze a worker
(SIGSTOP) past its lease and thaw it as soon as another worker takes one of its claims over
(the sink locked for a moment, so the new owner cannot finish first), or after 1-1.75 leases:
the stale worker must not complete those tasks. This is what catches broken fencing (without
it, only the kills, the test would pass with fencing removed: a killed worker writes nothing);
on SQLite a frozen daemon keeps the lock, so no other process can take its claims over. The seed is printed;
``CHAOS_SEED=N`` replays its choices. Each test leaves its processes' logs and ``chaos.log``
(every kill, freeze and thaw, and the final figures) under ``tmp_path/logs``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from chaos_harness import (
    CAPACITY,
    CHAOS_EVERY,
    LEASE,
    MID_TASK_WAIT,
    MIN_KILLS,
    POLL_FROZEN,
    RUN_DEADLINE,
    Chaos,
    Fleet,
    Proc,
    Producer,
    Stalls,
    chaos_seed,
    claims_by_worker,
    claims_of,
    describe,
    live_workers,
    postgres_hold,
    sqlite_hold,
    sqlite_locked,
    taken_over,
    terminal,
    verify,
    wait_until,
)
from chaos_harness import POLL as CHAOS_POLL
from conftest import GitRepo

from orlojd.adapters.queue import TaskQueue
from orlojd.adapters.store import Store, sqlite_url
from orlojd.adapters.worker_registry import WorkerRegistry
from orlojd.core.durations import parse_ms

pytestmark = pytest.mark.e2e

WORKERS = 4  # `orlojd worker` processes alive at once on PostgreSQL
STANDBYS = 2  # `orlojd serve` standbys beside the active daemon on SQLite: one is ready while the next starts
FREEZE_SHARE = 0.3  # PostgreSQL, once MIN_KILLS kills hit claims: SIGSTOP a worker past its lease, not a kill
FREEZE_FOR = (1.0, 1.75)  # leases, at most: thawed earlier when one of its claims is taken over
TRAP = 0.3  # seconds the sink stays locked after such a thaw: the new owner cannot finish the task meanwhile
LEASE_SECONDS = parse_ms(LEASE) / 1000


def run_chaos(queue: TaskQueue, chaos: Chaos, fleet: Fleet, act: Callable[[], None]) -> set[str]:
    """Queue the tasks (``Producer``) and call ``act`` every poll until every one of them is terminal;
    fail with the whole picture at the deadline. The ids of the tasks queued."""
    deadline = time.monotonic() + RUN_DEADLINE
    with Producer(queue) as producer:
        while not (producer.done and terminal(queue.counts_all())):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"tasks still not terminal after {RUN_DEADLINE:.0f}s of chaos\n{describe(queue, chaos, fleet)}"
                )
            for proc in fleet.thaw_due():
                chaos.note(f"thaw {proc.name}")
            act()
            time.sleep(POLL_FROZEN if fleet.frozen() else CHAOS_POLL)
    chaos.note("every task terminal")
    return producer.ids


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_killed_workers_on_postgresql_complete_every_task_exactly_once(tmp_path: Path, db_url: str) -> None:
    seed = chaos_seed()
    print(f"chaos seed {seed} (CHAOS_SEED={seed} replays it); logs in {tmp_path / 'logs'}")
    rng = random.Random(seed)
    sink = tmp_path / "sink.db"
    (tmp_path / "logs").mkdir()
    fleet = Fleet(tmp_path / "logs")
    chaos = Chaos(seed, fleet.folder)
    store = Store.open(db_url)
    queue, registry = TaskQueue(store), WorkerRegistry(store)

    def start_worker() -> Proc:
        chaos.started += 1
        name = f"worker-{chaos.started:03d}"
        command = ["worker", "--db", db_url, "--id", name, "--capacity", str(CAPACITY), "--lease", LEASE]
        chaos.note(f"start {name}")
        return fleet.start(name, [*command, "--drain-grace", "10s", "--executor", f"sink:{sink}"], tmp_path)

    def working() -> list[Proc]:
        """Workers whose pool is up (registered under their name), not frozen."""
        registered = live_workers(registry)
        return [p for p in fleet.running() if p.frozen_until is None and registered.get(p.pid) == p.name]

    next_action = 0.0
    frozen_claims: dict[str, dict[str, int]] = {}  # frozen worker -> the claims it held (task id -> token)

    def thaw_stale() -> None:
        """Thaw a frozen worker the moment another worker takes one of its claims over, the sink locked
        for a moment so the new owner cannot finish first: the stale worker wakes up while its task
        runs again elsewhere, and must not be able to complete it (fencing)."""
        for proc in fleet.frozen():
            if taken_over(queue, frozen_claims.get(proc.name, {})):
                with sqlite_locked(sink, wait=TRAP) as trapped:
                    fleet.thaw(proc)
                    chaos.note(f"thaw {proc.name}: a claim of it was taken over (sink locked: {trapped})")
                    time.sleep(TRAP if trapped else 0)

    def act() -> None:
        """Every 0.2-1.0 s: kill a random working worker and start another, or freeze one past its lease.

        Only while another worker is working too: a replacement takes seconds to start on a busy
        machine, and the run must go on meanwhile.
        """
        nonlocal next_action
        thaw_stale()
        if time.monotonic() < next_action:
            return
        victims = working()
        if len(victims) < 2:  # the others are still starting (or frozen): try again at the next poll
            return
        claims = claims_by_worker(queue)
        busy = [p for p in victims if claims[p.name]]
        if not busy and time.monotonic() < next_action + MID_TASK_WAIT:
            return  # rather mid-task: wait a little for one to hold claims
        victim = rng.choice(busy or victims)
        held = claims[victim.name]
        stale = claims_of(queue, victim.name)
        freeze = chaos.freezes == 0 or rng.random() < FREEZE_SHARE  # the first chance is always taken
        if chaos.kills_with_claims >= MIN_KILLS and stale and not fleet.frozen() and freeze:
            frozen_claims[victim.name] = stale
            fleet.freeze(victim, rng.uniform(*FREEZE_FOR) * LEASE_SECONDS)
            chaos.freezes += 1
            chaos.note(f"freeze {victim.name} holding {len(stale)} claims")
        else:
            fleet.kill(victim)
            chaos.kills += 1
            chaos.kills_with_claims += held > 0
            chaos.note(f"kill {victim.name} holding {held} claims")
            start_worker()
        next_action = time.monotonic() + rng.uniform(*CHAOS_EVERY)

    try:
        for _ in range(WORKERS):
            start_worker()
        wait_until("two workers registered", lambda: len(working()) >= 2, lambda: describe(queue, chaos, fleet))
        next_action = time.monotonic() + rng.uniform(*CHAOS_EVERY)
        holds = [sqlite_hold(sink), postgres_hold(db_url, "tasks")]
        with Stalls(random.Random(rng.randrange(2**32)), holds) as chaos.stalls:
            expected = run_chaos(queue, chaos, fleet, act)
        fleet.stop_all()
        verify(queue, expected, sink, chaos, fleet)
    finally:
        fleet.close()
        store.close()


def test_killed_active_daemons_on_sqlite_complete_every_task_exactly_once(tmp_path: Path, repo: GitRepo) -> None:
    seed = chaos_seed()
    print(f"chaos seed {seed} (CHAOS_SEED={seed} replays it); logs in {tmp_path / 'logs'}")
    rng = random.Random(seed)
    repo.write("orlojd.yaml", f"workers:\n  lease: {LEASE}\n")
    repo.commit("a short task lease")
    state = tmp_path / "state"
    sink = tmp_path / "sink.db"
    (tmp_path / "logs").mkdir()
    fleet = Fleet(tmp_path / "logs")
    chaos = Chaos(seed, fleet.folder)
    store = Store.open(sqlite_url(state))  # created and migrated before any daemon starts
    queue, registry = TaskQueue(store), WorkerRegistry(store)

    def start_daemon() -> Proc:
        chaos.started += 1
        name = f"serve-{chaos.started:03d}"
        command = ["serve", "--repo", str(repo.path), "--state-dir", str(state), "--workers", str(CAPACITY)]
        chaos.note(f"start {name}")
        return fleet.start(name, [*command, "--executor", f"sink:{sink}"], tmp_path)

    def roles() -> tuple[Proc | None, list[Proc]]:
        """The active daemon (its pool registered under its pid) and the standbys waiting for the lock."""
        registered = live_workers(registry)
        running = fleet.running()
        active = next((p for p in running if p.pid in registered), None)
        return active, [p for p in running if p is not active and "standby: waiting" in p.log()]

    target: Proc | None = None
    kill_at = 0.0

    def act() -> None:
        """Once the active daemon's pool is up, kill it 0.2-1.0 s later (as soon as a standby waits to take
        over) and start another standby.

        No freezes here: a frozen daemon keeps the lock, so no other process can take its claims over.
        """
        nonlocal target, kill_at
        active, standbys = roles()
        if active is None:  # a standby is taking over
            return
        if active is not target:
            target, kill_at = active, time.monotonic() + rng.uniform(*CHAOS_EVERY)
            chaos.note(f"{active.name} active")
            return
        if time.monotonic() < kill_at or not standbys:
            return
        held = claims_by_worker(queue)[live_workers(registry)[active.pid]]
        if not held and time.monotonic() < kill_at + MID_TASK_WAIT:
            return  # rather mid-task: wait a little for it to hold claims
        fleet.kill(active)
        chaos.kills += 1
        chaos.kills_with_claims += held > 0
        chaos.note(f"kill {active.name} holding {held} claims")
        start_daemon()

    def ready() -> bool:
        active, standbys = roles()
        return active is not None and bool(standbys)

    try:
        for _ in range(1 + STANDBYS):
            start_daemon()
        wait_until("an active daemon and a standby", ready, lambda: describe(queue, chaos, fleet))
        holds = [sqlite_hold(sink), sqlite_hold(state / "state.db")]
        with Stalls(random.Random(rng.randrange(2**32)), holds) as chaos.stalls:
            expected = run_chaos(queue, chaos, fleet, act)
        fleet.stop_all()
        verify(queue, expected, sink, chaos, fleet)
    finally:
        fleet.close()
        store.close()
