"""Token usage and cost per task and per agent (budget ledger) in `orlojd task show|list` and
`orlojd status`, on both stores: the adapter's GROUP BY reads directly, the views through the real CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orlojd.adapters import clock
from orlojd.adapters.budgets import AgentUsage, BudgetLedger, TaskUsage
from orlojd.adapters.queue import TaskQueue
from orlojd.adapters.store import Store
from orlojd.core.budgets import BudgetLimits, day_start

WRITER = "Agent/default/writer"
CHECKER = "Agent/ops/checker"
PRICES = {"m": (0.001, 0.002)}  # USD per prompt token, per completion token
OUTPUT = "\n".join(f"line {n} of the report" for n in range(1, 31))  # 30 lines: text shows 20


def price(model: str, prompt: int, completion: int) -> float | None:
    rates = PRICES.get(model)
    return None if rates is None else prompt * rates[0] + completion * rates[1]


@dataclass
class Filled:
    done: str  # the writer's task: succeeded with an output, 2 settled calls
    running: str  # the checker's task: 1 settled call, 1 only reserved
    idle: str  # no calls


def fill(db_url: str) -> Filled:
    """Two agents' tasks with charges: writer 2 calls on its task today plus 1 call three days ago,
    checker 1 settled + 1 reserved (estimate 40) on its task."""
    now = clock.now()
    store = Store.open(db_url)
    try:
        queue, ledger = TaskQueue(store), BudgetLedger(store, price=price)
        done = queue.enqueue_run("Task/default/report", "d1", {}, now=now, agent=WRITER)
        running = queue.enqueue_run("Task/ops/check", "d2", {}, now=now + timedelta(seconds=1), agent=CHECKER)
        idle = queue.enqueue_run("Task/default/idle", "d3", {}, now=now + timedelta(seconds=2))
        assert done is not None and running is not None and idle is not None
        claimed = queue.claim_one("w1", now, timedelta(seconds=60))
        assert claimed is not None and claimed.id == done
        charges = [
            ("c1", WRITER, done, 100, (100, 50)),  # 150 tokens, 0.1 + 0.1 = $0.2
            ("c2", WRITER, done, 300, (200, 100)),  # 300 tokens, 0.2 + 0.2 = $0.4
            ("c3", CHECKER, running, 60, (10, 20)),  # 30 tokens, 0.01 + 0.04 = $0.05
            ("c4", CHECKER, running, 40, None),  # reserved only: 40 tokens, $0.04
        ]
        for call_id, agent, task_id, estimate, used in charges:
            assert ledger.reserve_run(call_id, agent, task_id, "m", estimate, BudgetLimits(), now).ok
            if used is not None:
                assert ledger.settle_run(call_id, used[0], used[1], "m", now)
        # an older charge of the writer (no task): in its total, not in today's
        old = day_start(now) - timedelta(days=2)
        assert ledger.reserve_run("c0", WRITER, None, "m", 10, BudgetLimits(), old).ok
        assert ledger.settle_run("c0", 1000, 0, "m", old)  # 1000 tokens, $1.0
        result = {"executor": "agent", "output": OUTPUT, "steps": 2, "usage": {"total_tokens": 450}}
        assert queue.complete_run(done, "w1", claimed.fencing_token, now, result)
    finally:
        store.close()
    return Filled(done, running, idle)


def run(cli: Any, tmp_path: Path, db_url: str, *args: str) -> str:
    done = cli(*args, "--db", db_url, cwd=tmp_path)
    assert done.code == 0, done.stderr
    return str(done.stdout)


def test_the_ledger_sums_usage_by_task_and_by_agent(db_url: str) -> None:
    filled = fill(db_url)
    store = Store.open(db_url)
    try:
        ledger = BudgetLedger(store)
        by_task = ledger.usage_by_task_all([filled.done, filled.running, filled.idle, filled.done])
        assert set(by_task) == {filled.done, filled.running}, "a task without calls is absent"
        assert by_task[filled.done] == TaskUsage(calls=2, tokens=450, cost=pytest.approx(0.6), unsettled=0)
        assert by_task[filled.running] == TaskUsage(calls=2, tokens=70, cost=pytest.approx(0.09), unsettled=1)
        assert ledger.usage_by_task_all([]) == {}

        total = ledger.usage_by_agent_all(None)
        assert total == {
            WRITER: AgentUsage(calls=3, tokens=1450, cost=pytest.approx(1.6)),
            CHECKER: AgentUsage(calls=2, tokens=70, cost=pytest.approx(0.09)),
        }
        today = ledger.usage_by_agent_all(day_start(clock.now()))
        assert today[WRITER] == AgentUsage(calls=2, tokens=450, cost=pytest.approx(0.6))
        assert ledger.usage_by_agent_all(clock.now() + timedelta(days=1)) == {}
    finally:
        store.close()


def test_task_show_has_usage_in_json_and_usage_and_output_in_text(cli: Any, db_url: str, tmp_path: Path) -> None:
    filled = fill(db_url)
    shown = json.loads(run(cli, tmp_path, db_url, "task", "show", filled.done))
    assert shown["usage"] == {"calls": 2, "tokens": 450, "cost": pytest.approx(0.6)}
    for key in ("id", "task_key", "state", "result", "conditions", "payload", "agent"):
        assert key in shown, f"task show lost its key {key}"
    assert shown["result"]["output"] == OUTPUT, "the stored output is shown whole in JSON"
    assert json.loads(run(cli, tmp_path, db_url, "task", "show", filled.done, "--json")) == shown
    idle = json.loads(run(cli, tmp_path, db_url, "task", "show", filled.idle))
    assert idle["usage"] == {"calls": 0, "tokens": 0, "cost": 0.0}

    text = run(cli, tmp_path, db_url, "task", "show", filled.done, "--format", "text")
    assert "usage: 2 calls, 450 tokens, $0.6000" in text
    assert "output:" in text and "line 1 of the report" in text and "line 20 of the report" in text
    assert "line 21 of the report" not in text and "10 more lines" in text
    text = run(cli, tmp_path, db_url, "task", "show", filled.running, "--format", "text")
    assert "usage: 2 calls, 70 tokens, $0.0900 (1 call still at the estimate)" in text
    assert "output:" not in text, "a task without a result has no output section"


def test_task_list_json_has_usage_per_task(cli: Any, db_url: str, tmp_path: Path) -> None:
    filled = fill(db_url)
    listed = {t["id"]: t for t in json.loads(run(cli, tmp_path, db_url, "task", "list", "--json"))}
    assert listed[filled.done]["usage"] == {"calls": 2, "tokens": 450, "cost": pytest.approx(0.6)}
    assert listed[filled.running]["usage"] == {"calls": 2, "tokens": 70, "cost": pytest.approx(0.09)}
    assert listed[filled.idle]["usage"] == {"calls": 0, "tokens": 0, "cost": 0.0}
    assert "conditions" in listed[filled.done] and "result" in listed[filled.done]


def test_status_shows_usage_per_agent_today_and_in_total(cli: Any, db_url: str, tmp_path: Path) -> None:
    fill(db_url)
    status = json.loads(run(cli, tmp_path, db_url, "status", "--format", "json"))
    for key in ("revision", "objects", "history", "source", "tasks", "workers"):
        assert key in status, f"status lost its key {key}"
    agents = status["usage"]["agents"]
    assert list(agents) == [WRITER, CHECKER]
    assert agents[WRITER] == {
        "calls": 3,
        "tokens": 1450,
        "cost": pytest.approx(1.6),
        "today": {"calls": 2, "tokens": 450, "cost": pytest.approx(0.6)},
    }
    assert agents[CHECKER] == {
        "calls": 2,
        "tokens": 70,
        "cost": pytest.approx(0.09),
        "today": {"calls": 2, "tokens": 70, "cost": pytest.approx(0.09)},
    }

    text = run(cli, tmp_path, db_url, "status")
    assert "CALLS TODAY" in text
    writer = next(line for line in text.splitlines() if WRITER in line).split()
    assert writer == [WRITER, "2", "450", "$0.6000", "3", "1,450", "$1.6000"]
    checker = next(line for line in text.splitlines() if CHECKER in line).split()
    assert checker == [CHECKER, "2", "70", "$0.0900", "2", "70", "$0.0900"]


def test_status_on_an_empty_ledger_has_no_agents(cli: Any, db_url: str, tmp_path: Path) -> None:
    Store.open(db_url).close()
    status = json.loads(run(cli, tmp_path, db_url, "status", "--format", "json"))
    assert status["usage"] == {"agents": {}}
    assert "CALLS TODAY" not in run(cli, tmp_path, db_url, "status")
