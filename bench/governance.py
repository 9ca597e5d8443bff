"""Benchmark: the governance gate in process, the full check with its audit event, the cold policy
load and budget checks on SQLite and PostgreSQL, each beside its floor in the same run.

* Decisions: ``core.governance.decide(context, CallRequest(...))`` over 50 agents and 50 tools
  (5 namespaces) under 1 Policy and under 100 Policies, on the allow path and two deny paths
  (``resource_not_permitted``, ``blocked_by_policy``). Floor: a bare dict lookup of the same
  request objects in a table of their decisions (``table[request]``), same loop shape.
* Full check with audit: ``decide`` + ``adapters.audit.decision_event`` +
  ``AuditLog(store).record_run`` (one SQLite transaction per event). Floor: a raw sqlite3
  ``BEGIN IMMEDIATE; INSERT`` of the same row; ``COMMIT`` with the store's pragmas.
* Cold policy load: manifest dicts (or YAML text) to a ready ``GovernanceContext``
  (``validate_object`` + ``context_of``). Floor: ``yaml.load_all(CSafeLoader)`` of the same text.
* Budget checks: ``BudgetLedger(store, price=0).reserve_run`` (fresh ``call_id`` each) on SQLite
  and PostgreSQL. Floor: the raw driver in a plain loop, one transaction of (PostgreSQL:
  ``pg_advisory_xact_lock``) + the usage SUM query + the INSERT.

Floor and orlojd blocks alternate, so machine noise hits both alike; rates are medians of the
repeats, latencies percentiles of every timed call. Human-readable lines go first; the last
line is one JSON object (see bench/README.md).

    .venv/bin/python bench/governance.py            # about 2 min on 2 cores
    .venv/bin/python bench/governance.py --quick    # under 60 s
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Run as a script, bench/ is sys.path[0] and bench/queue.py would shadow the standard library's
# ``queue`` (which psycopg imports): search bench/ last, as bench/queue.py does.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import psycopg  # noqa: E402
import yaml  # noqa: E402
from load import WORK, percentile, provenance  # noqa: E402
from psycopg import sql as pgsql  # noqa: E402

from orlojd.adapters.audit import AuditLog, decision_event  # noqa: E402
from orlojd.adapters.budgets import BudgetLedger  # noqa: E402
from orlojd.adapters.store import Store  # noqa: E402
from orlojd.core.budgets import BudgetLimits, Limit  # noqa: E402
from orlojd.core.governance import (  # noqa: E402
    CallRequest,
    Decision,
    GovernanceContext,
    ReasonCode,
    context_of,
    decide,
)
from orlojd.core.governance_index import Provenance  # noqa: E402
from orlojd.core.keys import ResourceKey  # noqa: E402
from orlojd.core.manifests.base import ResourceKind  # noqa: E402
from orlojd.core.manifests.registry import validate_object  # noqa: E402

METRIC = "governance_decisions_per_s"
TARGET_RATE = 100_000.0
TARGET_P99_US = 50.0
TARGET = ">= 100000/s, p99 < 50 us"
PG_ADMIN = os.environ.get("ORLOJD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Published figures this benchmark is compared with.
PEER_ONE_RULE = {"p50_ms": 0.011, "what": "published peer: one rule, p50"}
PEER_FULL_CHECK = {"p50_ms": 0.103, "what": "published peer: full check with audit, p50"}
PEER_LOAD = {"ms": 8.4, "what": "published peer: policy load"}
# Cedar (cedarpy) measured on this machine: ../shared/reference/perf-floors.md lines 113-117.
CEDAR_DECIDE = {
    1: {"per_s": 24_800, "p50_us": 39, "p99_us": 77, "what": "cedarpy is_authorized, 1 policy, pre-parsed"},
    100: {"per_s": 8_100, "p50_us": 113, "p99_us": 237, "what": "cedarpy is_authorized, 100 policies, pre-parsed"},
}
CEDAR_LOAD = {
    1: {"ms": 0.040, "what": "cedarpy PolicySet.from_str, 1 policy (policies only; entities 0.22 ms more)"},
    100: {"ms": 2.3, "what": "cedarpy PolicySet.from_str, 100 policies (policies only; entities 0.22 ms more)"},
}

NAMESPACES = 5
AGENTS_PER_NS = 10
TOOLS_PER_NS = 10
GRANTS_PER_AGENT = 5
SELECTING = 6  # of the 100 Policies, this many select (some of) the agents; the rest select none
BUDGET_AGENTS = 50
ESTIMATE_TOKENS = 100
HUGE = 1e12  # budget limits that never bind (no refusal, no warning: no audit event on the ledger's path)

# ---------------------------------------------------------------------------
# Workload: 50 agents, 50 tools, 1 or 100 Policies, as manifest dicts
# ---------------------------------------------------------------------------


def ns_of(t: int) -> str:
    return f"team-{t}"


def agent_doc(t: int, i: int) -> dict[str, Any]:
    tools = []
    for k in range(GRANTS_PER_AGENT):
        j = (i + k) % TOOLS_PER_NS
        tools.append(
            {
                "name": f"tool-{j:02d}",
                "permissions": [{"read": f"data_{j:02d}"}, {"write": f"out_{j:02d}"}, {"write": f"secret_{j:02d}"}],
            }
        )
    return {
        "apiVersion": "orloj.dev/v1",
        "kind": "Agent",
        "metadata": {
            "name": f"agent-{i:02d}",
            "namespace": ns_of(t),
            "labels": {"team": ns_of(t), "tier": "gold" if i % 2 == 0 else "silver"},
        },
        "spec": {
            "model": "gpt-4o",
            "prompt": "You check reports.",
            "tools": tools,
            "governance": {"maxTokensPerMinute": 100_000, "requireApproval": [{"write": "payments_*"}]},
        },
    }


def tool_doc(t: int, j: int) -> dict[str, Any]:
    return {
        "apiVersion": "orloj.dev/v1",
        "kind": "Tool",
        "metadata": {"name": f"tool-{j:02d}", "namespace": ns_of(t)},
        "spec": {
            "type": "http",
            "endpoint": f"https://tools.example.invalid/{j}",
            "requires": [{"read": f"data_{j:02d}"}],
            "riskLevel": "medium" if j % 3 else "low",
        },
    }


def policy_doc(k: int) -> dict[str, Any]:
    """Policy k of 100: the first SELECTING select agents (all, by namespace or by label), the others none."""
    teams = [ns_of(t) for t in range(NAMESPACES)]
    specs: list[dict[str, Any]] = [
        {"selector": {}, "deny": [{"write": "secret_*"}], "blockedTools": ["legacy-export"]},
        {"selector": {"namespaces": teams}, "deny": [{"write": "secret_*"}, {"delete": "*"}]},
        {
            "selector": {"matchLabels": {"tier": "gold"}},
            "allow": [{"read": "data_*"}, {"write": "out_*"}, {"write": "secret_*"}],
        },
        {"selector": {"namespaces": teams}, "blockedTools": ["legacy-export", "shell"]},
        {"selector": {"matchLabels": {"tier": "silver"}}, "allowedModels": ["gpt-4o", "gpt-4o-mini"]},
        {"selector": {}, "budgets": {"maxTokensPerRun": 50_000}, "requireApproval": [{"write": "payments_*"}]},
    ]
    if k < SELECTING:
        spec = specs[k]
    elif k % 3 == 0:
        spec = {"selector": {"namespaces": [f"other-{k}"]}, "deny": [{"write": f"x{k}_*"}], "blockedTools": ["x"]}
    elif k % 3 == 1:
        spec = {"selector": {"matchLabels": {"team": f"nobody-{k}"}}, "allow": [{"read": f"y{k}_*"}]}
    else:
        spec = {"selector": {"agents": [f"ghost-{k}"]}, "requireApproval": [{"write": f"z{k}_*"}]}
    return {
        "apiVersion": "orloj.dev/v1",
        "kind": "Policy",
        "metadata": {"name": f"policy-{k:03d}", "namespace": "governance"},
        "spec": spec,
    }


def manifests(policies: int) -> list[dict[str, Any]]:
    docs = [agent_doc(t, i) for t in range(NAMESPACES) for i in range(AGENTS_PER_NS)]
    docs += [tool_doc(t, j) for t in range(NAMESPACES) for j in range(TOOLS_PER_NS)]
    docs += [policy_doc(k) for k in range(policies)]
    return docs


def validated(docs: list[dict[str, Any]]) -> list[ResourceKind]:
    out: list[ResourceKind] = []
    for doc in docs:
        result = validate_object(doc)
        assert result.obj is not None, result.problems
        out.append(result.obj)
    return out


def load_context(docs: list[dict[str, Any]]) -> GovernanceContext:
    """What the cold load times: manifest dicts to a ready context."""
    return context_of(validated(docs))


PATHS: dict[str, ReasonCode] = {
    "allow": ReasonCode.ALLOWED,
    "resource_not_permitted": ReasonCode.RESOURCE_NOT_PERMITTED,
    "blocked_by_policy": ReasonCode.BLOCKED_BY_POLICY,
}


def requests(path: str) -> list[CallRequest]:
    """Every (agent, granted tool) once: 250 distinct requests of one path."""
    out = []
    for t in range(NAMESPACES):
        for i in range(AGENTS_PER_NS):
            key = ResourceKey("Agent", ns_of(t), f"agent-{i:02d}")
            for k in range(GRANTS_PER_AGENT):
                j = (i + k) % TOOLS_PER_NS
                need = {
                    "allow": ("write", f"out_{j:02d}"),  # + the Tool's requires (read data_j): two pairs
                    "resource_not_permitted": ("write", "prod_db"),  # never granted
                    "blocked_by_policy": ("write", f"secret_{j:02d}"),  # granted, removed by a deny glob
                }[path]
                out.append(CallRequest(key, f"tool-{j:02d}", (need,), task="reports/run-1"))
    return out


# ---------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------

ns_clock = time.perf_counter_ns


@dataclass
class Timed:
    """Rates (per second, one per repeat) and single-call latencies (ns) of one side of a comparison."""

    rates: list[float]
    latencies: list[int]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def p(self, q: float) -> float:
        return percentile([float(v) for v in self.latencies], q)


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Start a timed block from a collected heap (the collector stays on: the gate allocates, that counts)."""
    gc.collect()
    yield


def loop_decide(context: GovernanceContext, reqs: list[CallRequest]) -> float:
    go = decide
    with quiet_gc():
        start = ns_clock()
        for r in reqs:
            go(context, r)
        took = ns_clock() - start
    return len(reqs) / (took / 1e9)


def loop_floor(table: dict[CallRequest, Decision], reqs: list[CallRequest]) -> float:
    with quiet_gc():
        start = ns_clock()
        for r in reqs:
            table[r]
        took = ns_clock() - start
    return len(reqs) / (took / 1e9)


def each_decide(context: GovernanceContext, reqs: list[CallRequest], out: list[int]) -> None:
    go, clock = decide, ns_clock
    with quiet_gc():
        for r in reqs:
            start = clock()
            go(context, r)
            out.append(clock() - start)


def each_floor(table: dict[CallRequest, Decision], reqs: list[CallRequest], out: list[int]) -> None:
    clock = ns_clock
    with quiet_gc():
        for r in reqs:
            start = clock()
            table[r]
            out.append(clock() - start)


def timer_overhead_ns(n: int = 20_000) -> float:
    clock = ns_clock
    samples = []
    for _ in range(n):
        start = clock()
        samples.append(clock() - start)
    return percentile([float(s) for s in samples], 50)


# ---------------------------------------------------------------------------
# 1. Decisions in process
# ---------------------------------------------------------------------------


def bench_decisions(contexts: dict[int, GovernanceContext], size: int, repeats: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for policies, context in contexts.items():
        for path, reason in PATHS.items():
            distinct = requests(path)
            table = {r: decide(context, r) for r in distinct}
            for r, d in table.items():
                assert d.reason is reason, (policies, path, r, d)
            reqs = (distinct * (size // len(distinct) + 1))[:size]
            floor, orlojd = Timed([], []), Timed([], [])
            for _ in range(repeats):  # interleaved: floor, orlojd, floor, orlojd...
                floor.rates.append(loop_floor(table, reqs))
                orlojd.rates.append(loop_decide(context, reqs))
                each_floor(table, reqs, floor.latencies)
                each_decide(context, reqs, orlojd.latencies)
            name = f"decisions_{policies}_{path}"
            out[name] = {
                "value": round(orlojd.rate),
                "unit": "decisions/s",
                "floor": round(floor.rate),
                "floor_is": "bare dict lookup table[request] of the same requests, same loop",
                "ratio": round(floor.rate / orlojd.rate, 2),
                "p50_us": round(orlojd.p(50) / 1000, 2),
                "p99_us": round(orlojd.p(99) / 1000, 2),
                "floor_p50_us": round(floor.p(50) / 1000, 3),
                "floor_p99_us": round(floor.p(99) / 1000, 3),
                "rates": [round(r) for r in orlojd.rates],
                "floor_rates": [round(r) for r in floor.rates],
                "target": TARGET,
                "meets": orlojd.rate >= TARGET_RATE and orlojd.p(99) / 1000 < TARGET_P99_US,
                "peers": [CEDAR_DECIDE[policies]] + ([PEER_ONE_RULE] if policies == 1 else []),
                "policies": policies,
                "path": path,
                "requests_per_repeat": size,
            }
            v = out[name]
            print(
                f"  {policies:>3} policies, {path:<22} orlojd {v['value']:>9,}/s  p50 {v['p50_us']:6.2f} us  "
                f"p99 {v['p99_us']:6.2f} us | floor {v['floor']:>11,}/s  p50 {v['floor_p50_us']:.3f} us | "
                f"{v['ratio']:.1f}x"
            )
    return out


# ---------------------------------------------------------------------------
# 2. Full check with audit on SQLite
# ---------------------------------------------------------------------------


def sqlite_time(moment: datetime) -> str:
    """A time as SQLAlchemy's SQLite DateTime stores it."""
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A raw connection with the store's pragmas (``store._sqlite_pragmas``), as SQLAlchemy's pysqlite connects."""
    connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


INSERT_EVENT = (
    "INSERT INTO governance_events (at, event, task_id, agent, tool, verdict, reason, revision, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
TASK_ID = uuid.UUID(int=7).hex
REVISION = "0" * 40


def event_row(context: GovernanceContext, r: CallRequest) -> tuple[Any, ...]:
    """The row ``record_run`` writes for this request's event, without its time (not timed)."""
    event = decision_event(decide(context, r), r, datetime.now(UTC), TASK_ID, REVISION)
    detail = json.dumps(dict(event.detail), sort_keys=True, separators=(",", ":"))
    return (event.event, event.task_id, event.agent, event.tool, event.verdict, event.reason, event.revision, detail)


def bench_full_check(
    root: Path, contexts: dict[int, GovernanceContext], size: int, repeats: int
) -> dict[str, dict[str, Any]]:
    path = root / "audit" / "state.db"
    store = Store.open(f"sqlite:///{path}")
    audit = AuditLog(store)
    raw = sqlite_connect(path)
    cursor = raw.cursor()
    out: dict[str, dict[str, Any]] = {}
    try:
        for policies, context in contexts.items():
            distinct = requests("allow")
            rows = {r: event_row(context, r) for r in distinct}
            reqs = (distinct * (size // len(distinct) + 1))[:size]
            floor, orlojd = Timed([], []), Timed([], [])
            parts: dict[str, list[int]] = {"clock_and_decide": [], "decision_event": [], "record_run": []}
            for _ in range(repeats):
                with quiet_gc():
                    began = ns_clock()
                    for r in reqs:
                        start = ns_clock()
                        now = datetime.now(UTC)
                        cursor.execute("BEGIN IMMEDIATE")
                        cursor.execute(INSERT_EVENT, (sqlite_time(now), *rows[r]))
                        raw.commit()
                        floor.latencies.append(ns_clock() - start)
                    floor.rates.append(len(reqs) / ((ns_clock() - began) / 1e9))
                with quiet_gc():
                    began = ns_clock()
                    for r in reqs:
                        start = ns_clock()
                        now = datetime.now(UTC)
                        decision = decide(context, r)
                        decided = ns_clock()
                        event = decision_event(decision, r, now, TASK_ID, REVISION)
                        built = ns_clock()
                        audit.record_run(event)
                        done = ns_clock()
                        orlojd.latencies.append(done - start)
                        parts["clock_and_decide"].append(decided - start)
                        parts["decision_event"].append(built - decided)
                        parts["record_run"].append(done - built)
                    orlojd.rates.append(len(reqs) / ((ns_clock() - began) / 1e9))
            name = f"full_check_audit_sqlite_{policies}"
            out[name] = {
                "value": round(orlojd.p(50) / 1e6, 4),
                "unit": "ms p50",
                "floor": round(floor.p(50) / 1e6, 4),
                "floor_is": "raw sqlite3 BEGIN IMMEDIATE; INSERT of the same row; COMMIT (store pragmas)",
                "ratio": round(orlojd.p(50) / floor.p(50), 2),
                "p50_ms": round(orlojd.p(50) / 1e6, 4),
                "p99_ms": round(orlojd.p(99) / 1e6, 4),
                "floor_p50_ms": round(floor.p(50) / 1e6, 4),
                "floor_p99_ms": round(floor.p(99) / 1e6, 4),
                "per_s": round(orlojd.rate),
                "floor_per_s": round(floor.rate),
                "parts_p50_us": {k: round(percentile([float(x) for x in v], 50) / 1000, 2) for k, v in parts.items()},
                "peers": [PEER_FULL_CHECK],
                "meets_peer": orlojd.p(50) / 1e6 < PEER_FULL_CHECK["p50_ms"],  # type: ignore[operator]
                "policies": policies,
                "checks_per_repeat": size,
            }
            v = out[name]
            print(
                f"  {policies:>3} policies, allow + audit   orlojd p50 {v['p50_ms']:.3f} ms  p99 {v['p99_ms']:.3f} ms "
                f"({v['per_s']:,}/s) | floor p50 {v['floor_p50_ms']:.3f} ms ({v['floor_per_s']:,}/s) | "
                f"{v['ratio']:.1f}x | parts p50 us {v['parts_p50_us']} | peer {PEER_FULL_CHECK['p50_ms']} ms"
            )
    finally:
        raw.close()
        store.close()
    return out


# ---------------------------------------------------------------------------
# 3. Cold policy load
# ---------------------------------------------------------------------------


def load_times(policies: int, repeats: int) -> tuple[dict[str, list[float]], int, int]:
    """ms of each way to a ready context (and of the parse floor), interleaved; the manifest counts."""
    docs = manifests(policies)
    text = yaml.safe_dump_all(docs, sort_keys=False)
    policy_docs = [d for d in docs if d["kind"] == "Policy"]
    objects = validated(docs)
    work: dict[str, Callable[[], object]] = {
        "floor": lambda: list(yaml.load_all(text, Loader=yaml.CSafeLoader)),
        "yaml": lambda: load_context(list(yaml.load_all(text, Loader=yaml.CSafeLoader))),
        "dicts": lambda: load_context(docs),
        "policies_only": lambda: validated(policy_docs),
        "index": lambda: context_of(objects),
    }
    times: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(repeats):
        for name, run in work.items():
            with quiet_gc():
                start = ns_clock()
                run()
                times[name].append((ns_clock() - start) / 1e6)
    return times, len(docs), len(policy_docs)


LOAD_WHAT = {
    "yaml": "YAML text -> CSafeLoader -> validate_object -> context_of",
    "dicts": "manifest dicts -> validate_object -> context_of",
    "policies_only": "validate_object of the Policies alone (what Cedar's PolicySet.from_str does)",
    "index": "context_of of already validated objects (the index build alone)",
}


def bench_load(repeats: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for policies in (1, 100):
        times, manifest_count, policy_count = load_times(policies, repeats)
        floor = statistics.median(times["floor"])
        for kind, what in LOAD_WHAT.items():
            value = statistics.median(times[kind])
            name = f"policy_load_{kind}_{policies}"
            out[name] = {
                "value": round(value, 3),
                "unit": "ms",
                "floor": round(floor, 3),
                "floor_is": "yaml.load_all(CSafeLoader) of the same manifests as text (parse only)",
                "ratio": round(value / floor, 2),
                "first_ms": round(times[kind][0], 3),
                "runs_ms": [round(t, 3) for t in times[kind]],
                "what": what,
                "manifests": policy_count if kind == "policies_only" else manifest_count,
                "policies": policies,
                "peers": [PEER_LOAD, CEDAR_LOAD[policies]],
            }
            v = out[name]
            print(
                f"  {policies:>3} policies, {kind:<14} {v['value']:8.2f} ms (first {v['first_ms']:.2f}) | "
                f"parse floor {floor:.2f} ms | {v['ratio']:.2f}x | peer {PEER_LOAD['ms']} ms, "
                f"Cedar {CEDAR_LOAD[policies]['ms']} ms"
            )
    return out


# ---------------------------------------------------------------------------
# 4. Budget checks on SQLite and PostgreSQL
# ---------------------------------------------------------------------------

BENCH_WHERE = Provenance(None, "bench")
LIMITS = BudgetLimits(per_minute_tokens=Limit(HUGE, BENCH_WHERE), per_day_tokens=Limit(HUGE, BENCH_WHERE))
AGENTS = [
    str(ResourceKey("Agent", ns_of(a % NAMESPACES), f"agent-{a // NAMESPACES:02d}")) for a in range(BUDGET_AGENTS)
]
TASKS = [uuid.UUID(int=a + 1).hex for a in range(BUDGET_AGENTS)]


def usage_sql(mark: Callable[[str], str]) -> str:
    """The ledger's usage query (``adapters/budgets._usage``) as plain SQL, one placeholder style per driver."""
    m, d, t, a, since = mark("minute"), mark("day"), mark("task"), mark("agent"), mark("since")
    return (
        f"SELECT coalesce(sum(CASE WHEN at > {m} THEN tokens ELSE 0 END), 0), "
        f"min(CASE WHEN at > {m} THEN at END), "
        f"coalesce(sum(CASE WHEN task_id = {t} THEN tokens ELSE 0 END), 0), "
        f"coalesce(sum(CASE WHEN at >= {d} THEN tokens ELSE 0 END), 0), "
        f"coalesce(sum(CASE WHEN task_id = {t} THEN cost ELSE 0 END), 0), "
        f"coalesce(sum(CASE WHEN at >= {d} THEN cost ELSE 0 END), 0) "
        f"FROM budget_charges WHERE agent = {a} AND (at >= {since} OR task_id = {t})"
    )


def insert_sql(mark: Callable[[str], str]) -> str:
    cols = ("call_id", "agent", "task_id", "at", "estimate", "tokens", "cost", "settled")
    return f"INSERT INTO budget_charges ({', '.join(cols)}) VALUES ({', '.join(mark(c) for c in cols)})"


def lock_key(agent: str) -> int:
    """``adapters.budgets.budget_lock_key``, written out so the floor runs no orlojd code."""
    digest = hashlib.blake2b(agent.encode(), digest_size=8, person=b"orlojd-budget").digest()
    return int.from_bytes(digest, "big", signed=True)


def midnight(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


class Ids:
    """Fresh call ids for the whole run (floor and orlojd share the table, never an id)."""

    def __init__(self) -> None:
        self.n = 0

    def take(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:08d}"


def floor_sqlite_budget(path: Path, n: int, ids: Ids, latencies: list[int]) -> float:
    connection = sqlite_connect(path)
    cursor = connection.cursor()
    usage, insert = usage_sql(lambda name: f":{name}"), insert_sql(lambda name: f":{name}")
    try:
        with quiet_gc():
            began = ns_clock()
            for i in range(n):
                start = ns_clock()
                agent, task = AGENTS[i % BUDGET_AGENTS], TASKS[i % BUDGET_AGENTS]
                now = datetime.now(UTC)
                minute, day = now - timedelta(seconds=60), midnight(now)
                cursor.execute("BEGIN IMMEDIATE")
                params = {"minute": sqlite_time(minute), "day": sqlite_time(day), "task": task, "agent": agent}
                row = cursor.execute(usage, params | {"since": sqlite_time(min(minute, day))}).fetchone()
                assert row[0] + ESTIMATE_TOKENS <= HUGE and row[3] + ESTIMATE_TOKENS <= HUGE
                cursor.execute(
                    insert,
                    {"call_id": ids.take("floor"), "agent": agent, "task_id": task, "at": sqlite_time(now)}
                    | {"estimate": ESTIMATE_TOKENS, "tokens": ESTIMATE_TOKENS, "cost": 0.0, "settled": False},
                )
                connection.commit()
                latencies.append(ns_clock() - start)
            return n / ((ns_clock() - began) / 1e9)
    finally:
        connection.close()


def floor_pg_budget(url: str, n: int, ids: Ids, latencies: list[int]) -> float:
    usage, insert = usage_sql(lambda name: f"%({name})s"), insert_sql(lambda name: f"%({name})s")
    with psycopg.connect(url) as connection, quiet_gc():  # not autocommit, as SQLAlchemy connects
        began = ns_clock()
        for i in range(n):
            start = ns_clock()
            agent, task = AGENTS[i % BUDGET_AGENTS], TASKS[i % BUDGET_AGENTS]
            now = datetime.now(UTC)
            minute, day = now - timedelta(seconds=60), midnight(now)
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(agent),))
            params = {"minute": minute, "day": day, "task": task, "agent": agent, "since": min(minute, day)}
            row = connection.execute(usage, params).fetchone()
            assert row is not None and row[0] + ESTIMATE_TOKENS <= HUGE and row[3] + ESTIMATE_TOKENS <= HUGE
            connection.execute(
                insert,
                {"call_id": ids.take("floor"), "agent": agent, "task_id": task, "at": now}
                | {"estimate": ESTIMATE_TOKENS, "tokens": ESTIMATE_TOKENS, "cost": 0.0, "settled": False},
            )
            connection.commit()
            latencies.append(ns_clock() - start)
        return n / ((ns_clock() - began) / 1e9)


def orlojd_budget(ledger: BudgetLedger, n: int, ids: Ids, latencies: list[int]) -> float:
    reserve = ledger.reserve_run
    with quiet_gc():
        began = ns_clock()
        for i in range(n):
            start = ns_clock()
            verdict = reserve(
                ids.take("orlojd"),
                AGENTS[i % BUDGET_AGENTS],
                TASKS[i % BUDGET_AGENTS],
                "gpt-4o",
                ESTIMATE_TOKENS,
                LIMITS,
                datetime.now(UTC),
            )
            latencies.append(ns_clock() - start)
            assert verdict.ok and not verdict.warnings, verdict
        return n / ((ns_clock() - began) / 1e9)


def no_price(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    return 0.0


def budget_summary(store: str, floor: Timed, orlojd: Timed, rows: int, n: int) -> dict[str, Any]:
    return {
        "value": round(orlojd.rate),
        "unit": "checks/s",
        "floor": round(floor.rate),
        "floor_is": (
            "raw driver, one transaction: "
            + ("pg_advisory_xact_lock + " if store == "postgres" else "BEGIN IMMEDIATE + ")
            + "the usage SUM query + INSERT, COMMIT"
        ),
        "ratio": round(floor.rate / orlojd.rate, 2),
        "p50_ms": round(orlojd.p(50) / 1e6, 3),
        "p99_ms": round(orlojd.p(99) / 1e6, 3),
        "floor_p50_ms": round(floor.p(50) / 1e6, 3),
        "floor_p99_ms": round(floor.p(99) / 1e6, 3),
        "rates": [round(r) for r in orlojd.rates],
        "floor_rates": [round(r) for r in floor.rates],
        "checks_per_repeat": n,
        "agents": BUDGET_AGENTS,
        "rows_at_end": rows,
        "pricing": "price=lambda: 0.0 (litellm's table not loaded)",
    }


def print_budget(store: str, r: dict[str, Any]) -> None:
    print(
        f"  {store:<8} orlojd {r['value']:>6,} checks/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms | "
        f"floor {r['floor']:>6,}/s  p50 {r['floor_p50_ms']:.3f} ms | {r['ratio']:.2f}x | {r['rows_at_end']:,} rows"
    )


def bench_budget_sqlite(root: Path, n: int, repeats: int) -> dict[str, Any]:
    path = root / "budget" / "state.db"
    store = Store.open(f"sqlite:///{path}")
    ledger = BudgetLedger(store, price=no_price)
    ids = Ids()
    floor, orlojd = Timed([], []), Timed([], [])
    try:
        orlojd_budget(ledger, 200, ids, [])  # warm the pool and the compiled statements
        floor_sqlite_budget(path, 200, ids, [])
        for _ in range(repeats):
            floor.rates.append(floor_sqlite_budget(path, n, ids, floor.latencies))
            orlojd.rates.append(orlojd_budget(ledger, n, ids, orlojd.latencies))
    finally:
        store.close()
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT count(*) FROM budget_charges").fetchone()[0]
    result = budget_summary("sqlite", floor, orlojd, rows, n)
    print_budget("sqlite", result)
    return result


def pg_admin(statement: pgsql.Composed | pgsql.SQL) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(statement)


def bench_budget_postgres(n: int, repeats: int) -> dict[str, Any]:
    try:
        pg_admin(pgsql.SQL("SELECT 1"))
    except psycopg.Error as exc:
        print(f"  postgres: skipped ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})")
        return {"skipped": f"PostgreSQL unreachable at {PG_ADMIN}: {type(exc).__name__}"}
    name = f"orlojd_bench_{uuid.uuid4().hex}"
    pg_admin(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        store = Store.open(url)
        ledger = BudgetLedger(store, price=no_price)
        ids = Ids()
        floor, orlojd = Timed([], []), Timed([], [])
        try:
            orlojd_budget(ledger, 200, ids, [])
            floor_pg_budget(url, 200, ids, [])
            for _ in range(repeats):
                floor.rates.append(floor_pg_budget(url, n, ids, floor.latencies))
                orlojd.rates.append(orlojd_budget(ledger, n, ids, orlojd.latencies))
        finally:
            store.close()
        with psycopg.connect(url) as connection:
            counted = connection.execute("SELECT count(*) FROM budget_charges").fetchone()
        result = budget_summary("postgres", floor, orlojd, counted[0] if counted else 0, n)
        result["database"] = "fresh database with a random name, dropped at the end"
        print_budget("postgres", result)
        return result
    finally:
        pg_admin(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats; under 60 s")
    parser.add_argument("--decisions", type=int, default=None, help="requests per repeat (20,000; 10,000 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each comparison (7; 3 quick)")
    parser.add_argument("--checks", type=int, default=None, help="full checks and budget checks per repeat")
    parser.add_argument("--stores", default="sqlite,postgres", help="budget checks on: sqlite, postgres")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite files in bench/.work")
    args = parser.parse_args(argv)
    size = args.decisions or (10_000 if args.quick else 20_000)
    repeats = args.repeats or (3 if args.quick else 7)
    checks = args.checks or (1_000 if args.quick else 2_000)
    stores = {s.strip() for s in args.stores.split(",") if s.strip()}
    if not stores <= {"sqlite", "postgres"}:
        parser.error(f"--stores: sqlite and/or postgres, not {args.stores!r}")

    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="governance-", dir=WORK))
    began = time.perf_counter()
    results: dict[str, Any] = {}
    try:
        contexts = {p: load_context(manifests(p)) for p in (1, 100)}
        overhead = timer_overhead_ns()
        print(f"decisions in process ({size:,} requests x {repeats} repeats; perf_counter_ns costs {overhead:.0f} ns)")
        results.update(bench_decisions(contexts, size, repeats))
        print(f"full check with audit on SQLite ({checks:,} checks x {repeats} repeats)")
        results.update(bench_full_check(root, contexts, checks, repeats))
        print(f"cold policy load (50 agents, 50 tools; {max(repeats * 2, 5)} repeats)")
        results.update(bench_load(max(repeats * 2, 5)))
        budget_repeats = max(repeats // 2, 2)  # 3 (2 quick): the slowest section
        print(f"budget checks, reserve_run ({checks:,} x {budget_repeats} repeats, {BUDGET_AGENTS} agents)")
        if "sqlite" in stores:
            results["budget_checks_sqlite"] = bench_budget_sqlite(root, checks, budget_repeats)
        if "postgres" in stores:
            results["budget_checks_postgres"] = bench_budget_postgres(checks, budget_repeats)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    head = results["decisions_1_allow"]
    print()
    verdict = "meets" if head["meets"] else "MISSES"
    print(
        f"headline: {head['value']:,} decisions/s (1 policy, allow), p50 {head['p50_us']} us, p99 {head['p99_us']} us; "
        f"bare dict lookup {head['floor']:,}/s ({head['ratio']}x); target {TARGET}: {verdict}"
    )
    result = {
        "metric": METRIC,
        "value": head["value"],
        "unit": "decisions/s",
        "floor": head["floor"],
        "ratio": head["ratio"],
        "target": TARGET,
        "meets": head["meets"],
        "p50_us": head["p50_us"],
        "p99_us": head["p99_us"],
        "timer_overhead_ns": overhead,
        "results": results,
        "quick": args.quick,
        "repeats": repeats,
        "wall_seconds": round(time.perf_counter() - began, 1),
        **provenance(),
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
