"""Benchmark: orlojd's own cost per agent step (governance, bookkeeping, store writes), the model answering at once.

* Workload: one Agent (``modelRef`` to a ``provider: scripted`` ModelEndpoint, one granted Tool
  ``local-scan`` of ``type: builtin``, which has no executor in this runtime: the loop answers
  ``error: tool local-scan has no executor`` at once, after the gate admitted the call and before
  ``tool_done`` records it), token budgets that never bind, applied with ``apply_revision`` from a
  git repository into a SQLite store in a temp dir (as tests/integration/test_agent_loop.py does).
  Each run is a fresh Task (``run_parameters``, ``enqueue_run``, ``claim_one``: not timed) whose
  ``spec.input.script_turns`` is K tool-call turns then a final text: K+1 steps (model calls).
* orlojd: ``AgentLoop(store, Gate(store))(claimed_task, Event())``, wall time of the whole call
  (loading the agent, every gate call, every ledger and audit write, every litellm call).
* Floor: the same K+1 ``litellm.acompletion`` calls to the same scripted model (same messages
  growth, same tools list, same tool answers), on a long-lived event loop the calling thread
  submits to (``adapters/model_client.ModelClient.run``, the transport AgentLoop uses); no gate,
  no store, no audit, no retries.
* Per-step cost = (orlojd run - floor run) / steps, paired per repeat (floor, orlojd, floor,
  orlojd...); the figure is the median of the repeats. Target: under 2 ms per step.
  ``ratio`` = orlojd run time / floor run time. The same pairs are also timed in this process's
  CPU time (``cpu_value``): other processes on the machine do not move it, so it shows what a
  wall-time figure taken on a busy machine is made of (SQLite commits do not wait on the disk
  with ``synchronous=NORMAL``, so on a quiet machine the two agree). The load average at the
  start is in the JSON.
* PostgreSQL (``--stores sqlite,postgres``, the default; skipped when the server at
  ``ORLOJD_BENCH_PG`` does not answer): the same pairs on a fresh database with a random name,
  dropped at the end; an extra line and ``results.postgres``. The headline is SQLite's.
* ``--profile``: one more orlojd run under cProfile (top functions), and a split of the loop's
  time by gate call, with the SQL statements and commits per step (SQLite's statement trace:
  the hot paths run plain SQL on the driver's cursor, which SQLAlchemy's events do not see).

Human-readable lines go first; the last line is one JSON object (see bench/README.md).

    .venv/bin/python bench/runtime.py            # about 35 s on 2 cores (with PostgreSQL)
    .venv/bin/python bench/runtime.py --quick    # about 15 s
    .venv/bin/python bench/runtime.py --profile  # also the profile of one run
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

# Run as a script, bench/ is sys.path[0] and bench/queue.py would shadow the standard library's
# ``queue``: search bench/ last, as the other benchmarks do.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import psycopg  # noqa: E402
from load import GIT_ENV, WORK, provenance  # noqa: E402
from psycopg import sql as pgsql  # noqa: E402
from sqlalchemy import event as sa_event  # noqa: E402

from orlojd.adapters import scripted_model  # noqa: E402
from orlojd.adapters.model_client import ModelClient  # noqa: E402
from orlojd.adapters.queue import ClaimedTask, TaskQueue  # noqa: E402
from orlojd.adapters.store import Store  # noqa: E402
from orlojd.core.keys import ResourceKey  # noqa: E402
from orlojd.core.runs import run_parameters  # noqa: E402
from orlojd.engine.agent_loop import AgentLoop, assistant_message  # noqa: E402
from orlojd.engine.applying import apply_revision  # noqa: E402
from orlojd.engine.gate import Gate  # noqa: E402
from orlojd.engine.workspace import open_workspace  # noqa: E402

PG_ADMIN = os.environ.get("ORLOJD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
METRIC = "agent_step_overhead_ms"
TARGET_MS = 2.0
TARGET = "< 2 ms of orlojd per step"
AGENT_KEY = ResourceKey("Agent", "default", "checker")
TOOL = "local-scan"
MODEL = "demo"

TOOL_YAML = f"""\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: {TOOL}
spec:
  type: builtin
  description: {TOOL} tool
  inputSchema: {{type: object, properties: {{path: {{type: string}}}}}}
  requires:
    - read: compliance_docs
"""

AGENT_YAML = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: checker
spec:
  modelRef: offline
  prompt: You check compliance documents.
  tools:
    - name: {tool}
      permissions:
        - read: compliance_docs
  governance:
    maxTokensPerMinute: 1000000000
    maxTokensPerDay: 1000000000
  limits:
    maxSteps: {max_steps}
"""

ENDPOINT_YAML = f"""\
apiVersion: orloj.dev/v1
kind: ModelEndpoint
metadata:
  name: offline
spec:
  provider: scripted
  defaultModel: {MODEL}
"""

ns_clock = time.perf_counter_ns
cpu_clock = time.process_time_ns


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **GIT_ENV}, check=True
    )
    return done.stdout.strip()


def script_turns(steps: int) -> list[dict[str, Any]]:
    """``steps - 1`` tool-call turns, then a final text: ``steps`` model calls."""
    calls = [{"tool_calls": [{"name": TOOL, "arguments": {"path": f"reports/q{i}"}}]} for i in range(steps - 1)]
    return [*calls, {"content": "2 issues found", "usage": {"prompt": 30, "completion": 7}}]


class World:
    """A store (SQLite in ``root`` unless ``url``) with the agent applied, and fresh claimed runs of it."""

    def __init__(self, root: Path, steps: int, url: str | None = None) -> None:
        self.steps = steps
        repo = root / "repo"
        repo.mkdir(parents=True)
        git(repo, "init", "--quiet", "--initial-branch", "main")
        for rel, text in {
            "tools/tools.yaml": TOOL_YAML,
            "agents/checker.yaml": AGENT_YAML.format(tool=TOOL, max_steps=steps + 5),
            "models/offline.yaml": ENDPOINT_YAML,
        }.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        git(repo, "add", "--all")
        git(repo, "commit", "--quiet", "--no-gpg-sign", "-m", "the checker")
        self.revision = git(repo, "rev-parse", "HEAD")
        self.store = Store.open(url or f"sqlite:///{root / 'state.db'}")
        apply_revision(open_workspace(repo, self.store.url), self.store, "HEAD")
        self.queue = TaskQueue(self.store)
        self.gate = Gate(self.store)
        self.loop = AgentLoop(self.store, self.gate)
        self.runs = 0

    def started(self) -> ClaimedTask:
        self.runs += 1
        name = f"check-{self.runs}"
        body = {
            "apiVersion": "orloj.dev/v1",
            "kind": "Task",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "agent": "checker",
                "mode": "template",
                "input": {"quarter": "q3", "script_turns": script_turns(self.steps)},
            },
        }
        agent_body = self.store.inventory_bodies_some(keys=[AGENT_KEY])[AGENT_KEY]
        key = ResourceKey("Task", "default", name)
        parameters = run_parameters(key, body, agent_body, self.revision)
        now = datetime.now(UTC)
        task_id = self.queue.enqueue_run(str(key), "d1", now=now, **parameters.enqueue_options(now))
        claimed = self.queue.claim_one("w1", now, timedelta(minutes=10))
        assert claimed is not None and claimed.id == task_id
        return claimed

    def run(self, claim: ClaimedTask) -> dict[str, Any]:
        result = self.loop(claim, threading.Event())
        assert result["steps"] == self.steps and result["output"] == "2 issues found", result
        return result


# ---------------------------------------------------------------------------
# The floor: the same litellm calls, AgentLoop's locking and event-loop pattern, nothing else
# ---------------------------------------------------------------------------

FLOOR_CLIENT = ModelClient()
FLOOR_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL,
            "description": f"{TOOL} tool",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]
NO_EXECUTOR = f"error: tool {TOOL} has no executor in this runtime"


def floor_run(steps: int, name: str) -> int:
    """The model calls of one run with nothing around them; returns the steps taken."""
    scripted_model.register({name: scripted_model.load_script({"turns": script_turns(steps)})})
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You check compliance documents."},
        {"role": "user", "content": json.dumps({"quarter": "q3"}, sort_keys=True)},
    ]
    import litellm

    model = f"{scripted_model.PROVIDER}/{name}"
    for step in range(steps + 5):
        options = {"model": model, "messages": messages, "timeout": 120.0, "num_retries": 0, "tools": FLOOR_TOOLS}
        response = FLOOR_CLIENT.run(litellm.acompletion(**options), 125.0)
        message = response.choices[0].message
        calls = list(getattr(message, "tool_calls", None) or [])
        if not calls:
            return step + 1
        messages.append(assistant_message(message.content, calls))  # the same turn the loop feeds back
        for c in calls:
            messages.append({"role": "tool", "tool_call_id": c.id, "content": NO_EXECUTOR})
    raise AssertionError("the script did not end")


# ---------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------


@contextmanager
def collected() -> Iterator[None]:
    gc.collect()
    yield


def timed(work: Callable[[], Any]) -> float:
    return timed_both(work)[0]


def timed_both(work: Callable[[], Any]) -> tuple[float, float]:
    """Wall time and this process's CPU time of ``work``, in ms."""
    with collected():
        start, cpu = ns_clock(), cpu_clock()
        work()
        return (ns_clock() - start) / 1e6, (cpu_clock() - cpu) / 1e6


def bench(world: World, repeats: int, prefix: str = "floor") -> dict[str, Any]:
    steps = world.steps
    floor_ms: list[float] = []
    loop_ms: list[float] = []
    floor_cpu: list[float] = []
    loop_cpu: list[float] = []
    for i in range(repeats):  # interleaved: floor, orlojd, floor, orlojd...
        name = f"{prefix}-{i}"
        wall, cpu = timed_both(partial(floor_run, steps, name))
        floor_ms.append(wall)
        floor_cpu.append(cpu)
        claim = world.started()
        wall, cpu = timed_both(partial(world.run, claim))
        loop_ms.append(wall)
        loop_cpu.append(cpu)
    per_step = [(o - f) / steps for o, f in zip(loop_ms, floor_ms, strict=True)]
    per_step_cpu = [(o - f) / steps for o, f in zip(loop_cpu, floor_cpu, strict=True)]
    return {
        "per_step_ms": per_step,
        "loop_ms": loop_ms,
        "floor_ms": floor_ms,
        "cpu_value": statistics.median(per_step_cpu),
        "cpu_floor_per_step": statistics.median(floor_cpu) / steps,
        "value": statistics.median(per_step),
        "loop_per_step": statistics.median(loop_ms) / steps,
        "floor_per_step": statistics.median(floor_ms) / steps,
        "ratio": statistics.median(loop_ms) / statistics.median(floor_ms),
    }


# ---------------------------------------------------------------------------
# Where the time goes: the loop's calls split, SQL per step, cProfile
# ---------------------------------------------------------------------------

PARTS = (
    ("loop", "_load"),
    ("loop", "_complete"),
    ("gate", "model_call"),
    ("gate", "charge"),
    ("gate", "tool_call"),
    ("gate", "tool_done"),
    ("gate", "indexed"),
)


def split(world: World, runs: int) -> dict[str, Any]:
    """Wall time per step of each loop and gate method (instance attributes wrap them: no orlojd edit)."""
    spent: dict[str, int] = {f"{o}.{m}": 0 for o, m in PARTS}
    calls: dict[str, int] = dict.fromkeys(spent, 0)
    counts = {"statements": 0, "commits": 0, "writes": 0}

    def wrap(owner: Any, method: str, label: str) -> None:
        original = getattr(owner, method)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = ns_clock()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += ns_clock() - start
                calls[label] += 1

        setattr(owner, method, timed_call)

    def on_statement(statement: str) -> None:  # SQLite's trace: every statement, also those run on the cursor
        word = (statement.split(None, 1) or [""])[0].upper()
        if word.startswith("--") or word in {"BEGIN", "ROLLBACK"}:  # a trigger's own statement; transactions
            return
        if word == "COMMIT":
            counts["commits"] += 1
            return
        counts["statements"] += 1
        if word in {"INSERT", "UPDATE", "DELETE"}:
            counts["writes"] += 1

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(on_statement)

    owners = {"loop": world.loop, "gate": world.gate}
    for o, m in PARTS:
        wrap(owners[o], m, f"{o}.{m}")
    world.store.engine.dispose()  # the pool's connections are made again, traced
    sa_event.listen(world.store.engine, "connect", on_connect)
    total = 0
    run_counts = dict(counts)
    try:
        for _ in range(runs):
            claim = world.started()
            counts.update(dict.fromkeys(counts, 0))
            total += int(timed(partial(world.run, claim)) * 1e6)
            run_counts = dict(counts)
    finally:
        sa_event.remove(world.store.engine, "connect", on_connect)
        world.store.engine.dispose()
        for o, m in PARTS:
            owners[o].__dict__.pop(m, None)
    n = runs * world.steps
    out: dict[str, Any] = {
        "per_step_us": {k: round(v / n / 1000, 1) for k, v in spent.items()},
        "calls_per_step": {k: round(v / n, 2) for k, v in calls.items()},
        "loop_per_step_us": round(total / n / 1000, 1),
        "sql_per_step": {k: round(v / world.steps, 2) for k, v in run_counts.items()},
    }
    gate_parts = ("gate.model_call", "gate.charge", "gate.tool_call", "gate.tool_done")
    out["gate_per_step_us"] = round(sum(out["per_step_us"][k] for k in gate_parts), 1)
    out["other_per_step_us"] = round(
        out["loop_per_step_us"] - out["gate_per_step_us"] - out["per_step_us"]["loop._complete"], 1
    )
    return out


def profile(world: World, top: int = 20) -> tuple[str, list[dict[str, Any]]]:
    """One orlojd run under cProfile: orlojd's functions by cumulative time, then every function by own time."""
    claim = world.started()
    profiler = cProfile.Profile()
    profiler.enable()
    world.run(claim)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats("orlojd/", top)
    stats.sort_stats("tottime").print_stats(top)
    rows = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (path, line, func), (_, ncalls, _tottime, cumtime, _) in raw.items():
        if "/orlojd/" in path:
            where = f"{path.split('/orlojd/', 1)[1]}:{line}({func})"
            rows.append({"function": where, "calls": ncalls, "cum_ms": round(cumtime * 1e3, 2)})
    rows.sort(key=lambda r: -float(r["cum_ms"]))
    return text.getvalue(), rows[:top]


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def summary(measured: dict[str, Any], steps: int, store: str) -> dict[str, Any]:
    value = measured["value"]
    return {
        "value": round(value, 3),
        "unit": "ms/step",
        "floor": round(measured["floor_per_step"], 3),
        "floor_is": (
            "the same litellm.acompletion calls to the scripted model (same messages, tools), on one long-lived "
            "event loop (ModelClient.run, AgentLoop's transport); no gate, store, audit or retries"
        ),
        "ratio": round(measured["ratio"], 2),
        "cpu_value": round(measured["cpu_value"], 3),
        "cpu_floor": round(measured["cpu_floor_per_step"], 3),
        "loop_ms_per_step": round(measured["loop_per_step"], 3),
        "per_step_ms_runs": [round(v, 3) for v in measured["per_step_ms"]],
        "loop_ms_runs": [round(v, 1) for v in measured["loop_ms"]],
        "floor_ms_runs": [round(v, 1) for v in measured["floor_ms"]],
        "steps": steps,
        "tool": f"{TOOL} (type builtin: no executor, answered at once)",
        "store": store,
        "target": TARGET,
        "meets": value < TARGET_MS,
    }


def report(r: dict[str, Any], measured: dict[str, Any]) -> None:
    print(
        f"  orlojd {r['loop_ms_per_step']:.2f} ms/step (run {statistics.median(measured['loop_ms']):.1f} ms) | "
        f"floor {r['floor']:.2f} ms/step (run {statistics.median(measured['floor_ms']):.1f} ms) | "
        f"{r['ratio']:.2f}x | orlojd's own {r['value']:.2f} ms/step, in CPU time {r['cpu_value']:.2f} ms/step "
        f"(floor {r['cpu_floor']:.2f})"
    )
    print(f"  orlojd's own per run pair, ms/step: {r['per_step_ms_runs']}")


def warmed(world: World, prefix: str) -> World:
    for i in range(2):  # warm: imports, litellm's first-call setup, the gate's index, the store's pool
        floor_run(world.steps, f"{prefix}-warm-{i}")
        world.run(world.started())
    return world


def bench_postgres(root: Path, steps: int, repeats: int) -> dict[str, Any]:
    """The same pairs on a fresh PostgreSQL database (dropped at the end); skipped when unreachable."""
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        print(f"postgres: skipped ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})")
        return {"skipped": f"PostgreSQL unreachable at {PG_ADMIN}: {type(exc).__name__}"}
    name = f"orlojd_bench_{uuid.uuid4().hex}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    try:
        world = World(root / "postgres", steps, PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
        try:
            print(f"agent loop, {steps} steps a run, {repeats} repeats, PostgreSQL (fresh database)")
            measured = bench(warmed(world, "pg"), repeats, "pg-floor")
        finally:
            world.store.close()
        result = summary(measured, steps, "postgresql")
        report(result, measured)
        return result
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats; under 60 s")
    parser.add_argument("--steps", type=int, default=21, help="model calls per run: steps-1 tool calls + 1 (21)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each side (61; 21 quick)")
    parser.add_argument("--stores", default="sqlite,postgres", help="sqlite, and postgres as an extra line")
    parser.add_argument("--profile", action="store_true", help="also profile one orlojd run and split its time")
    parser.add_argument("--keep", action="store_true", help="keep the store and repository in bench/.work")
    args = parser.parse_args(argv)
    repeats = args.repeats or (21 if args.quick else 61)
    steps = max(args.steps, 1)
    stores = {s.strip() for s in args.stores.split(",") if s.strip()}
    if not stores <= {"sqlite", "postgres"}:
        parser.error(f"--stores: sqlite and/or postgres, not {args.stores!r}")

    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="runtime-", dir=WORK))
    began = time.perf_counter()
    load = os.getloadavg()
    results: dict[str, Any] = {}
    try:
        world = World(root, steps)
        import litellm  # noqa: F401  (seconds to import: before the clock)

        warmed(world, "sqlite")
        print(
            f"agent loop, {steps} steps a run ({steps - 1} tool calls + final text), {repeats} repeats, SQLite "
            f"(load average {load[0]:.2f} on {os.cpu_count()} cores)"
        )
        measured = bench(world, repeats)
        results["per_step"] = summary(measured, steps, "sqlite")
        report(results["per_step"], measured)
        if args.profile:
            parts = split(world, max(repeats // 3, 2))
            results["split"] = parts
            print("where a step goes (us per step, wall time of each call, all calls of a run / steps):")
            for label, us in parts["per_step_us"].items():
                print(f"  {label:<16} {us:8.1f} us  ({parts['calls_per_step'][label]} calls/step)")
            print(
                f"  gate total {parts['gate_per_step_us']} us; loop {parts['loop_per_step_us']} us; "
                f"rest of the loop (JSON estimate, messages, load) {parts['other_per_step_us']} us"
            )
            print(f"  SQL per step: {parts['sql_per_step']}")
            text, top = profile(world)
            results["profile_top"] = top
            print("cProfile of one orlojd run (cumulative):")
            print("\n".join(line.rstrip() for line in text.splitlines() if line.strip()))
        if "postgres" in stores:
            results["postgres"] = bench_postgres(root, steps, max(repeats // 2, 3))
    finally:
        scripted_model._SCRIPTS.clear()
        if "world" in locals():
            world.store.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    head = results["per_step"]
    print()
    verdict = "meets" if head["meets"] else "MISSES"
    print(
        f"headline: orlojd's own cost {head['value']} ms/step (loop {head['loop_ms_per_step']} ms/step, floor "
        f"{head['floor']} ms/step, {head['ratio']}x); target {TARGET}: {verdict}"
    )
    pg = results.get("postgres") or {}
    if "value" in pg:
        print(
            f"postgresql: orlojd's own cost {pg['value']} ms/step (loop {pg['loop_ms_per_step']} ms/step, floor "
            f"{pg['floor']} ms/step, {pg['ratio']}x; CPU time {pg['cpu_value']} ms/step)"
        )
    result = {
        "metric": METRIC,
        "value": head["value"],
        "unit": "ms/step",
        "floor": head["floor"],
        "floor_unit": "ms/step (model calls alone)",
        "ratio": head["ratio"],
        "target": TARGET,
        "meets": head["meets"],
        "loop_ms_per_step": head["loop_ms_per_step"],
        "cpu_value": head["cpu_value"],
        "load_average": [round(x, 2) for x in load],
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
