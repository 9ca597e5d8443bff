"""Benchmark: audit records from the store's outbox into signed, pushed git notes, beside the floors.

Measured in the same run, on the same records (the same JSON lines on the same annotated commits):

* Throughput: N events already in a SQLite store's ``governance_events`` table; a fresh
  ``AuditOutbox(store, repo, key, remote="origin")`` runs ``drain_all()`` until the outbox is
  empty. Timed: reading the events, chaining them, one signed notes commit per batch (2,000)
  written with git plumbing, and ``git push`` of the notes ref to a local bare origin after each.
* Lag at 1,000 events/s: a producer thread records 10 events every 10 ms (``record_run``, one
  transaction each) while the drain loop calls ``drain_once`` on a fixed-rate tick (0.5 s, the
  daemon's ``audit_every``; and 0.2 s); a tick is skipped while a drain still runs, as the
  scheduler's job does. Lag of an event: from its ``at`` to the return of the ``drain_once``
  that noted and pushed it (and, also reported, to the moment its notes commit was written).
* Floor (a): ``git notes --ref=<floor> append -m <line> <commit>``, one git process per record,
  timed on a sample and extrapolated to a rate.
* Floor (b): ``git fast-import`` of all the notes (each commit's lines as one note) in one
  unsigned commit, no push.

Floor and orlojd runs alternate, so machine noise hits both alike; rates are medians of the
repeats. Human-readable lines go first; the last line is one JSON object (see bench/README.md).

    .venv/bin/python bench/audit.py            # 20,000 records x 3 repeats, 10 s lag runs; under 3 min
    .venv/bin/python bench/audit.py --quick    # 5,000 records x 1, 5 s lag runs; under 60 s
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, bench/ is sys.path[0] and bench/queue.py would shadow the standard library's
# ``queue`` (imported by logging.handlers, concurrent.futures...): search bench/ last.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

from load import GIT_ENV, WORK, git, percentile, provenance  # noqa: E402

from orlojd.adapters.audit import AuditEvent, AuditLog  # noqa: E402
from orlojd.adapters.notes import REF, read_notes  # noqa: E402
from orlojd.adapters.sshsig import SigningKey, ensure_key  # noqa: E402
from orlojd.adapters.store import Store  # noqa: E402
from orlojd.engine.audit_outbox import BATCH, AuditOutbox  # noqa: E402

METRIC = "audit_records_per_s"
TARGET_RATE = 5000.0
TARGET_LAG_P99_S = 1.0
TARGET = ">= 5000 records/s batched; lag p99 < 1 s at 1000 events/s"
COMMITS = 10  # records are attached to one of this many commits, as a daemon's running revisions
PRODUCER_RATE = 1000  # events/s in the lag runs
PRODUCER_STEP_S = 0.01  # one record_run of PRODUCER_RATE * PRODUCER_STEP_S events every step
INTERVALS = (0.5, 0.2)  # drain ticks: the daemon's audit_every, and a shorter one
SETTLE_S = 10.0  # after the producer stops, how long the drain loop may take to catch up
GROWN = (0, 20_000, 100_000)  # records already in the notes before one more batch
FLOOR_SAMPLE = 300  # per-record `git notes append` calls timed per repeat (100 with --quick)
# Measured earlier on this machine: ../shared/reference/perf-floors.md, part c.
REFERENCE: dict[str, dict[str, Any]] = {
    "notes_add_per_record": {"per_s": 322, "what": "git notes add once per record, 1k records"},
    "fast_import_1k": {"per_s": 26_933, "what": "git fast-import, one commit with 1k `N inline` notes"},
    "fast_import_10k": {"per_s": 41_083, "what": "git fast-import, one commit with 10k `N inline` notes"},
    "plumbing_1k_10k": {"per_s": [13_506, 10_264], "what": "hash-object + mktree + commit-tree + update-ref"},
}

# ---------------------------------------------------------------------------
# Workload: a repository with COMMITS commits and a bare origin; events on those commits
# ---------------------------------------------------------------------------


def make_repo(root: Path) -> tuple[Path, list[str]]:
    """A repository with COMMITS commits on main, pushed to a bare ``origin`` beside it; (repo, commit ids)."""
    repo, origin = root / "repo", root / "origin.git"
    git(root, "init", "--quiet", "--bare", str(origin))
    git(root, "init", "--quiet", "--initial-branch", "main", str(repo))
    for k in range(COMMITS):
        (repo / "agents.yaml").write_text(f"# revision {k}\n")
        git(repo, "add", "agents.yaml")
        git(repo, "commit", "--quiet", "-m", f"revision {k}")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "--quiet", "origin", "main")
    commits = git(repo, "rev-list", "--reverse", "main").decode().split()
    assert len(commits) == COMMITS
    return repo, commits


def event(i: int, commits: list[str], at: datetime) -> AuditEvent:
    """Event i: mostly gate decisions, some task transitions, on commit i % COMMITS (about 390 bytes a line)."""
    task = f"{i // 7:032x}"
    revision = commits[i % len(commits)]
    if i % 5 == 4:
        return AuditEvent(
            event="task_completed",
            at=at,
            task_id=task,
            revision=revision,
            actor=f"worker-{i % 4}",
            subject=f"Task/team-{i % 5}/report-{i % 97}",
            detail={"attempt": 1, "duration_ms": 100 + i % 900, "output_bytes": 2048 + i % 500, "state": "succeeded"},
        )
    tool = f"tool-{i % 10:02d}"
    return AuditEvent(
        event="decision",
        at=at,
        task_id=task,
        agent=f"Agent/team-{i % 5}/agent-{i % 10:02d}",
        tool=tool,
        verdict="allow" if i % 3 else "deny",
        reason="allowed" if i % 3 else "blocked_by_policy",
        revision=revision,
        actor="daemon",
        detail={
            "message": "granted by the agent's tool permissions" if i % 3 else "denied by policy",
            "because": [{"kind": "Agent", "namespace": f"team-{i % 5}", "name": f"agent-{i % 10:02d}"}],
            "needs": [["write", f"out_{i % 10:02d}"], ["read", f"data_{i % 10:02d}"]],
        },
    )


def fill(store: Store, commits: list[str], n: int, chunk: int = 500) -> None:
    """n events in the store, ``chunk`` per transaction (not timed)."""
    log = AuditLog(store)
    for start in range(0, n, chunk):
        now = datetime.now(UTC)
        log.record_run(*(event(i, commits, now) for i in range(start, min(n, start + chunk))))


@dataclass
class Setup:
    root: Path
    repo: Path
    commits: list[str]
    store: Store


def fresh(parent: Path, name: str) -> Setup:
    root = parent / name
    root.mkdir()
    repo, commits = make_repo(root)
    store = Store.open(f"sqlite:///{root / 'state.db'}")
    return Setup(root, repo, commits, store)


# ---------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------


def notes_commits(repo: Path, ref: str = REF) -> int:
    return int(git(repo, "rev-list", "--count", ref).decode())


def ref_at(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", "--verify", ref).decode().strip()


class StampedOutbox(AuditOutbox):
    """The outbox with the moment each push starts noted (the notes commit is written by then)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noted_at = 0.0
        self.push_seconds: list[float] = []

    def _push(self) -> bool:
        self.noted_at = time.time()
        pushed = super()._push()
        self.push_seconds.append(time.time() - self.noted_at)
        return pushed


# ---------------------------------------------------------------------------
# 1. Throughput: N events in the store -> drain_all()
# ---------------------------------------------------------------------------


@dataclass
class Drain:
    records: int
    seconds: float
    commits: int
    push_seconds: float
    notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def orlojd_drain(parent: Path, name: str, key: SigningKey, n: int, batch: int) -> Drain:
    s = fresh(parent, name)
    try:
        fill(s.store, s.commits, n)
        outbox = StampedOutbox(s.store, s.repo, key, remote="origin", batch=batch)
        start = time.perf_counter()
        total = outbox.drain_all()
        seconds = time.perf_counter() - start
        assert total == n, f"{name}: {total} records noted, {n} expected"
        origin = s.root / "origin.git"
        assert ref_at(origin, REF) == ref_at(s.repo, REF), f"{name}: the notes did not reach origin"
        notes = read_notes(s.repo)
        assert sum(len(lines) for lines in notes.values()) == n
        return Drain(total, seconds, notes_commits(s.repo), sum(outbox.push_seconds), notes)
    finally:
        s.store.close()


def floor_fast_import(repo: Path, ref: str, notes: dict[str, list[str]]) -> tuple[float, int]:
    """All notes in one unsigned commit on a new ref with ``git fast-import``; (seconds, records)."""
    start = time.perf_counter()
    parts = [f"commit {ref}\ncommitter floor <floor@example.invalid> 1700000000 +0000\ndata 6\nfloor\n".encode()]
    records = 0
    for oid, lines in notes.items():
        content = "".join(line + "\n" for line in lines).encode()
        parts.append(f"N inline {oid}\ndata {len(content)}\n".encode() + content + b"\n")
        records += len(lines)
    done = subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"],
        input=b"".join(parts),
        capture_output=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"git fast-import failed: {done.stderr.decode(errors='replace')}")
    return seconds, records


def floor_per_record(repo: Path, ref: str, notes: dict[str, list[str]], sample: int) -> tuple[float, int]:
    """``git notes --ref=<ref> append -m <line> <commit>``, one process per record, for ``sample`` records."""
    pairs = [(oid, line) for oid, lines in notes.items() for line in lines[: sample // len(notes) + 1]][:sample]
    env = {**os.environ, **GIT_ENV}
    start = time.perf_counter()
    for oid, line in pairs:
        subprocess.run(
            ["git", "-C", str(repo), "notes", f"--ref={ref}", "append", "-m", line, oid],
            capture_output=True,
            env=env,
            check=True,
        )
    return time.perf_counter() - start, len(pairs)


def bench_throughput(
    parent: Path, key: SigningKey, n: int, repeats: int, batch: int, sample: int
) -> tuple[dict[str, Any], Drain]:
    drains: list[Drain] = []
    fast: list[float] = []
    per_record: list[float] = []
    for r in range(repeats):  # interleaved: orlojd, fast-import, per-record, orlojd...
        drain = orlojd_drain(parent, f"drain-{r}", key, n, batch)
        drains.append(drain)
        repo = parent / f"drain-{r}" / "repo"  # the same commits, the same lines, a ref of its own
        seconds, records = floor_fast_import(repo, f"refs/notes/floor-fast-{r}", drain.notes)
        assert records == n
        fast.append(records / seconds)
        seconds, records = floor_per_record(repo, f"floor-each-{r}", drain.notes, sample)
        per_record.append(records / seconds)
        print(
            f"  repeat {r + 1}: orlojd {drain.rate:,.0f} records/s ({drain.seconds:.2f} s, {drain.commits} notes "
            f"commits, pushes {drain.push_seconds:.2f} s) | fast-import {fast[-1]:,.0f}/s | "
            f"notes append per record {per_record[-1]:,.0f}/s ({records} timed)"
        )
    ordered = sorted(drains, key=lambda d: d.rate)
    middle = ordered[(len(ordered) - 1) // 2]
    value, floor_fast = statistics.median(d.rate for d in drains), statistics.median(fast)
    floor_each = statistics.median(per_record)
    line_bytes = sum(len(line) + 1 for lines in middle.notes.values() for line in lines) / n
    out = {
        "value": round(value, 1),
        "unit": "records/s",
        "floor": round(floor_fast, 1),
        "floor_is": "git fast-import of the same notes (each commit's lines as one note) in one unsigned commit",
        "ratio": round(floor_fast / value, 2),
        "target_rate": TARGET_RATE,
        "meets": value >= TARGET_RATE,
        "seconds": round(middle.seconds, 3),
        "rates": [round(d.rate, 1) for d in drains],
        "floor_rates": [round(f, 1) for f in fast],
        "records": n,
        "batch": batch,
        "notes_commits": middle.commits,
        "records_per_notes_commit": round(n / middle.commits, 1),
        "push_seconds": round(middle.push_seconds, 3),
        "annotated_commits": COMMITS,
        "line_bytes_avg": round(line_bytes, 1),
        "per_record_floor": round(floor_each, 1),
        "per_record_floor_is": (
            f"git notes --ref=floor append -m LINE COMMIT, one process per record; {sample} records timed "
            "per repeat, rate extrapolated"
        ),
        "per_record_floor_rates": [round(f, 1) for f in per_record],
        "vs_per_record": round(value / floor_each, 1),
    }
    return out, middle


# ---------------------------------------------------------------------------
# 2. Lag at 1,000 events/s
# ---------------------------------------------------------------------------


def producer(
    store: Store, commits: list[str], seconds: float, stop: threading.Event, failures: list[BaseException]
) -> None:
    """10 events every 10 ms on an absolute schedule (one record_run each), for ``seconds``."""
    log = AuditLog(store)
    per_step = round(PRODUCER_RATE * PRODUCER_STEP_S)
    steps = round(seconds / PRODUCER_STEP_S)
    i = 0
    try:
        began = time.perf_counter()
        for step in range(steps):
            delay = began + step * PRODUCER_STEP_S - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            now = datetime.now(UTC)
            log.record_run(*(event(i + k, commits, now) for k in range(per_step)))
            i += per_step
    except BaseException as exc:
        failures.append(exc)
    finally:
        stop.set()


def bench_lag(parent: Path, key: SigningKey, interval: float, seconds: float) -> dict[str, Any]:
    s = fresh(parent, f"lag-{interval:g}")
    try:
        outbox = StampedOutbox(s.store, s.repo, key, remote="origin")
        landed: list[tuple[int, float, float]] = []  # (head eid, noted at, pushed at) per drain that noted something
        drain_seconds: list[float] = []
        stop = threading.Event()
        failures: list[BaseException] = []
        thread = threading.Thread(target=producer, args=(s.store, s.commits, seconds, stop, failures))
        thread.start()
        began = time.perf_counter()
        tick = 0
        settle_until = math.inf
        while True:
            now = time.perf_counter()
            if stop.is_set() and settle_until == math.inf:
                settle_until = now + SETTLE_S
            due = began + tick * interval
            if due > now:
                time.sleep(due - now)
            start = time.perf_counter()
            drained = outbox.drain_once()
            pushed_at = time.time()
            drain_seconds.append(time.perf_counter() - start)
            if drained.records:
                head = outbox.heads(drained.tip)[outbox.writer]
                assert head.eid is not None
                landed.append((head.eid, outbox.noted_at, pushed_at))
            elif stop.is_set() or time.perf_counter() > settle_until:
                break
            # fixed rate; a tick that passed while the drain ran is skipped (APScheduler, max_instances=1)
            tick = max(tick + 1, math.ceil((time.perf_counter() - began) / interval))
        thread.join()
        if failures:
            raise failures[0]
        events = AuditLog(s.store).list_all(limit=10_000_000)
    finally:
        s.store.close()
    produced = round(seconds / PRODUCER_STEP_S) * round(PRODUCER_RATE * PRODUCER_STEP_S)
    assert len(events) == produced, (len(events), produced)
    assert landed and landed[-1][0] == events[-1].id, "not every event was noted"
    lag_pushed: list[float] = []
    lag_noted: list[float] = []
    k = 0
    for e in events:
        assert e.id is not None
        while landed[k][0] < e.id:
            k += 1
        at = e.at.timestamp()
        lag_noted.append(landed[k][1] - at)
        lag_pushed.append(landed[k][2] - at)
    busy = drain_seconds
    out = {
        "interval_s": interval,
        "events": len(events),
        "events_per_s": PRODUCER_RATE,
        "producer_seconds": seconds,
        "p50_ms": round(percentile(lag_pushed, 50) * 1000, 1),
        "p99_ms": round(percentile(lag_pushed, 99) * 1000, 1),
        "max_ms": round(max(lag_pushed) * 1000, 1),
        "noted_p50_ms": round(percentile(lag_noted, 50) * 1000, 1),
        "noted_p99_ms": round(percentile(lag_noted, 99) * 1000, 1),
        "noted_max_ms": round(max(lag_noted) * 1000, 1),
        "drains": len(drain_seconds),
        "notes_commits": len(landed),
        "records_per_notes_commit": round(len(events) / len(landed), 1),
        "drain_p50_ms": round(percentile(busy, 50) * 1000, 1),
        "drain_max_ms": round(max(busy) * 1000, 1),
        "push_p50_ms": round(percentile(outbox.push_seconds, 50) * 1000, 1),
        "meets": percentile(lag_pushed, 99) < TARGET_LAG_P99_S,
        "lag_is": "event `at` to the return of the drain_once that noted and pushed it (noted_*: to the push start)",
    }
    print(
        f"  every {interval:g} s: lag p50 {out['p50_ms']:,.0f} ms  p99 {out['p99_ms']:,.0f} ms  max "
        f"{out['max_ms']:,.0f} ms (commit written: p99 {out['noted_p99_ms']:,.0f} ms) | {out['notes_commits']} "
        f"commits of ~{out['records_per_notes_commit']:.0f} records, drain p50 {out['drain_p50_ms']:.0f} ms "
        f"(push {out['push_p50_ms']:.0f} ms), max {out['drain_max_ms']:.0f} ms | "
        f"{'meets' if out['meets'] else 'MISSES'} p99 < 1 s"
    )
    return out


# ---------------------------------------------------------------------------
# 3. One batch on top of notes that already hold many records
# ---------------------------------------------------------------------------


def bench_grown(parent: Path, key: SigningKey, lines: list[str], held: int, batch: int) -> dict[str, Any]:
    """One ``drain_once`` of ``batch`` events when the notes of the same commits already hold ``held`` lines.

    The held lines (real record lines of the throughput run, repeated) go in with ``git fast-import``
    and are pushed before the clock starts; the tip's message names no writer, so the drain chains
    from seq 1 on top of it.
    """
    s = fresh(parent, f"grown-{held}")
    try:
        if held:
            per_commit = held // len(s.commits)
            notes = {c: [lines[(k + j) % len(lines)] for j in range(per_commit)] for k, c in enumerate(s.commits)}
            floor_fast_import(s.repo, REF, notes)
            git(s.repo, "push", "--quiet", "origin", f"{REF}:{REF}")
        fill(s.store, s.commits, batch)
        outbox = StampedOutbox(s.store, s.repo, key, remote="origin", batch=batch)
        start = time.perf_counter()
        drained = outbox.drain_once()
        seconds = time.perf_counter() - start
        assert drained.records == batch and drained.pushed, drained
        note_bytes = len(git(s.repo, "notes", f"--ref={REF}", "show", s.commits[0]))
    finally:
        s.store.close()
    out = {
        "held_records": held,
        "batch": batch,
        "seconds": round(seconds, 3),
        "rate": round(batch / seconds, 1),
        "push_seconds": round(outbox.push_seconds[-1], 3),
        "note_bytes_after": note_bytes,
    }
    print(
        f"  {held:>7,} records held ({note_bytes / 1e6:5.2f} MB a note): one drain of {batch:,} "
        f"{seconds * 1000:,.0f} ms = {out['rate']:,.0f} records/s (push {out['push_seconds'] * 1000:,.0f} ms)"
    )
    return out


# ---------------------------------------------------------------------------
# Profile
# ---------------------------------------------------------------------------


def profile_once(parent: Path, key: SigningKey, n: int, batch: int, top: int = 25) -> str:
    s = fresh(parent, "profile")
    try:
        fill(s.store, s.commits, n)
        outbox = AuditOutbox(s.store, s.repo, key, remote="origin", batch=batch)
        profiler = cProfile.Profile()
        profiler.enable()
        outbox.drain_all()
        profiler.disable()
    finally:
        s.store.close()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    return text.getvalue()


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def timed(label: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    print(f"  ({label}: {time.perf_counter() - start:.1f} s)")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 records x 1, 5 s lag runs; under 60 s")
    parser.add_argument("--records", type=int, default=None, help="records per drain (20,000; 5,000 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="throughput repeats (3; 1 quick)")
    parser.add_argument("--lag-seconds", type=float, default=None, help="producer time per lag run (10; 5 quick)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"AuditOutbox batch (default {BATCH})")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one drain_all")
    parser.add_argument("--keep", action="store_true", help="keep the repositories and stores in bench/.work")
    args = parser.parse_args(argv)
    n = args.records or (5_000 if args.quick else 20_000)
    repeats = args.repeats or (1 if args.quick else 3)
    lag_seconds = args.lag_seconds or (5.0 if args.quick else 10.0)
    sample = 100 if args.quick else FLOOR_SAMPLE

    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="audit-", dir=WORK))
    began = time.perf_counter()
    try:
        key, _ = ensure_key(None, None, root / "state", os.environ)
        print(f"throughput: {n:,} events in the store -> drain_all() (batch {args.batch:,}), {repeats} repeats")
        throughput, middle = bench_throughput(root, key, n, repeats, args.batch, sample)
        lag: dict[str, Any] = {}
        print(f"lag: {PRODUCER_RATE:,} events/s for {lag_seconds:g} s (10 per record_run every 10 ms)")
        for interval in INTERVALS:
            lag[f"{interval:g}"] = bench_lag(root, key, interval, lag_seconds)
        lines = [line for note in middle.notes.values() for line in note]
        print("one batch on top of grown notes (a note stops at NOTE_MAX, 1 MiB; records then go to part objects)")
        grown = [bench_grown(root, key, lines, held, args.batch) for held in GROWN]
        if args.profile:
            print(profile_once(root, key, n, args.batch))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    t = throughput
    print()
    print(
        f"throughput: {t['value']:,.0f} records/s ({t['records']:,} records in {t['seconds']:.2f} s, "
        f"{t['notes_commits']} signed notes commits of ~{t['records_per_notes_commit']:,.0f} records, pushed; "
        f"{t['line_bytes_avg']:.0f} B a line)"
    )
    print(
        f"  floors: fast-import {t['floor']:,.0f} records/s (ratio {t['ratio']:.2f}x); notes append per record "
        f"{t['per_record_floor']:,.0f} records/s (orlojd is {t['vs_per_record']:,.0f}x faster)"
    )
    ref = {name: figure["per_s"] for name, figure in REFERENCE.items()}
    print(
        f"  earlier on this machine (perf-floors.md c.): per-record notes add {ref['notes_add_per_record']}/s; "
        f"fast-import {ref['fast_import_1k']:,}-{ref['fast_import_10k']:,}/s"
    )
    meeting = [k for k, v in lag.items() if v["meets"]]
    print(
        "lag p99: "
        + ", ".join(f"every {k} s {v['p99_ms']:,.0f} ms" for k, v in lag.items())
        + f"; target < 1 s met by: {', '.join(f'{k} s' for k in meeting) or 'none'}"
    )
    verdict = "meets" if t["meets"] and lag["0.5"]["meets"] else "MISSES"
    print(
        f"headline: {t['value']:,.0f} records/s (target >= {TARGET_RATE:,.0f}), "
        f"lag p99 {lag['0.5']['p99_ms']:,.0f} ms at 0.5 s: {verdict}"
    )
    result = {
        "metric": METRIC,
        "value": t["value"],
        "unit": "records/s",
        "floor": t["floor"],
        "ratio": t["ratio"],
        "target": TARGET,
        "meets": verdict == "meets",
        "results": {
            "throughput": t,
            "lag": lag,
            "grown": grown,
            "lag_target_met_by_interval_s": [float(k) for k in meeting],
            "reference_floors": REFERENCE,
        },
        "quick": args.quick,
        "repeats": repeats,
        "wall_seconds": round(time.perf_counter() - began, 1),
        **provenance(),
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
