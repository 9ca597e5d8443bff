"""AgentSystem runs (``engine/agent_systems.py``) end to end: pipeline, hierarchical (an agent as a tool),
loop, fan-out with a quorum join; every hop an agent run through the real gate, on a real store.

Manifests are committed to a git repository and applied with ``apply_revision``; runs are queued with
``run_parameters`` and claimed, as in ``test_agent_loop.py``, and run by the ``agent`` executor
(``executor_named``). The offline scripted model answers each agent from the Task's inline
``spec.input.script_turns`` (agent name -> turns; a list of lists: one list per run of that agent).
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import GitRepo
from manifests import OFFLINE_ENDPOINT
from pools import T0, Clock
from runs import apply_files, claim_run
from test_agent_loop import call

from orlojd.adapters import clock
from orlojd.adapters.audit import AuditEvent, AuditLog
from orlojd.adapters.budgets import BudgetLedger
from orlojd.adapters.model_client import ModelTarget
from orlojd.adapters.queue import ClaimedTask, TaskQueue, TaskState
from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.engine.agent_loop import AgentLoop
from orlojd.engine.agent_systems import AgentExecutor
from orlojd.engine.executors import executor_named
from orlojd.engine.gate import Gate
from orlojd.engine.workers import TaskFailed, TaskHandedOff

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def doc(kind: str, name: str, spec: str) -> str:
    return f"apiVersion: orloj.dev/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"


def agent(name: str, *tools: str, extra: str = "") -> str:
    grants = "".join(f"    - name: {t}\n" for t in tools) or "    []\n"
    return doc(
        "Agent",
        name,
        f"  modelRef: offline\n  prompt: You are {name}.\n  tools:\n{grants}  limits:\n    maxSteps: 4\n{extra}",
    )


def system(name: str, agents: list[str], graph: str = "", extra: str = "") -> str:
    return doc("AgentSystem", name, f"  agents: [{', '.join(agents)}]\n{graph}{extra}")


FAN_GRAPH = """\
  graph:
    lead:
      edges: [{to: s1}, {to: s2}, {to: flaky}]
    s1: {next: editor}
    s2: {next: editor}
    flaky: {next: editor}
    editor:
      join: {mode: quorum, quorum_count: 2, on_failure: %s}
"""
LOOP_GRAPH = "  graph:\n    planner: {next: researcher}\n    researcher: {next: planner}\n"


def manifests(marker: Path) -> dict[str, str]:
    touch = shutil.which("touch") or "/usr/bin/touch"
    tools = [
        doc("Tool", "ask-worker", "  type: agent\n  agentRef: worker\n  description: ask the worker\n"),
        *(doc("Tool", f"ask-c{i}", f"  type: agent\n  agentRef: c{i}\n  description: ask c{i}\n") for i in range(1, 6)),
        doc("Tool", "mark", f"  type: command\n  command:\n    argv: [{touch}, {marker}]\n"),
    ]
    agents = [
        agent("planner"),
        agent("researcher"),
        agent("writer", "mark"),
        agent("manager", "ask-worker"),
        agent("boss"),  # not granted ask-worker
        agent("worker"),
        *(agent(f"c{i}", f"ask-c{i + 1}") for i in range(5)),
        agent("c5"),
        *(agent(n) for n in ("lead", "s1", "s2", "editor")),
        agent("flaky", extra="  governance:\n    maxTokensPerRun: 1\n"),  # fails for good at its first call
    ]
    systems = [
        system(
            "pipeline",
            ["planner", "researcher", "writer"],
            "  graph:\n    planner: {next: researcher}\n    researcher: {next: writer}\n",
        ),
        system("hier", ["manager"]),
        system("chain", ["c0"]),
        system("hier-denied", ["boss"]),
        system("fan-partial", ["lead", "s1", "s2", "flaky", "editor"], FAN_GRAPH % "continue_partial"),
        system("fan-deadletter", ["lead", "s1", "s2", "flaky", "editor"], FAN_GRAPH % "deadletter"),
        system("loop", ["planner", "researcher"], LOOP_GRAPH),
        system("loop-until", ["planner", "researcher"], LOOP_GRAPH, "  stopWhen: {outputContains: DONE}\n"),
    ]
    files = {"models/offline.yaml": OFFLINE_ENDPOINT}
    for i, text in enumerate([*tools, *agents, *systems]):
        files[f"objects/{i:02d}.yaml"] = text
    return files


RETURN_TO_MODEL = doc("Policy", "tell-the-boss", "  selector:\n    agents: [boss]\n  onDeny: return_to_model\n")
NO_MARK_IN_PIPELINE = doc("AgentPolicy", "no-mark-in-pipeline", "  targetSystems: [pipeline]\n  blockedTools: [mark]\n")


@dataclass
class World:
    repo: GitRepo
    store: Store
    marker: Path
    clock: Clock = field(default_factory=lambda: Clock(T0))
    revision: str = ""
    runs: int = 0

    def __post_init__(self) -> None:
        self.queue = TaskQueue(self.store)
        self.gate = Gate(self.store, now=self.clock)
        self.executor = executor_named("agent", self.store, self.gate)

    def apply(self, *extra: str) -> None:
        files = {**manifests(self.marker), **{f"extra/{i}.yaml": text for i, text in enumerate(extra)}}
        self.revision = apply_files(self.repo, self.store, files, "the systems")

    def started(self, turns: Any, **spec: Any) -> ClaimedTask:
        """A run of ``spec`` (``system=`` or ``agent=``) whose agents answer ``turns``, claimed."""
        self.runs += 1
        task_input = {"topic": "copilots", "script_turns": turns}
        name = f"run-{self.runs}"
        return claim_run(
            self.store, task_input=task_input, name=name, spec=spec, now=self.clock(), revision=self.revision
        )

    def run(self, claim: ClaimedTask) -> dict[str, Any]:
        return self.executor(claim, threading.Event())

    def events(self, task_id: str, kind: str) -> list[AuditEvent]:
        return [e for e in AuditLog(self.store).list_all(task_id=task_id) if e.event == kind]

    def callers(self, task_id: str) -> list[str]:
        """The agents whose model calls were admitted, in order."""
        return [ResourceKey.parse(e.agent or "").name for e in self.events(task_id, "model_call")]


@pytest.fixture
def world(repo: GitRepo, store: Store, tmp_path: Path) -> World:
    return World(repo, store, tmp_path / "marked")


def said(text: str) -> dict[str, Any]:
    return {"content": text, "usage": {"prompt": 20, "completion": 5}}


def spy(world: World) -> list[tuple[str, dict[str, Any]]]:
    """Record each agent run's user message (the agent's input) as (model, input)."""
    loop = world.executor.loop  # type: ignore[attr-defined]
    seen: list[tuple[str, dict[str, Any]]] = []
    original = loop._complete

    def complete(target: ModelTarget, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        if sum(1 for m in messages if m.get("role") == "assistant") == 0:
            seen.append((target.litellm_model.split(".")[1], json.loads(messages[1]["content"])))
        return original(target, messages, tools)

    loop._complete = complete
    return seen


# -- pipeline ---------------------------------------------------------------------------------------------------------


def test_a_pipeline_hands_each_output_to_the_next_agent(world: World) -> None:
    """The Task is in git (mode: run): apply enqueues it, the agent executor runs the system."""
    turns = {"planner": [said("plan: 3 parts")], "researcher": [said("facts on 3 parts")], "writer": [said("report")]}
    task = doc(
        "Task", "weekly", f"  system: pipeline\n  input:\n    topic: copilots\n    script_turns: {json.dumps(turns)}\n"
    )
    world.apply(task)
    claim = world.queue.claim_one("w1", clock.now(), timedelta(seconds=30))
    assert claim is not None and claim.agent is None
    seen = spy(world)
    result = world.run(claim)
    assert result == {
        "executor": "agent",
        "system": "pipeline",
        "output": "report",
        "outputs": {"writer": "report"},
        "hops": 3,
        "handoffs": 2,
        "stopped": "done",
        "usage": {"prompt": 60, "completion": 15},
    }
    assert [who for who, _ in seen] == ["planner", "researcher", "writer"]
    assert seen[0][1] == {"topic": "copilots"}, "the entry agent reads the task's input"
    assert seen[1][1] == {
        "input": {"topic": "copilots"},
        "from": "planner",
        "content": "plan: 3 parts",
        "branch": "b001",
        "turn": 2,
    }
    assert seen[2][1]["from"] == "researcher" and seen[2][1]["content"] == "facts on 3 parts"
    assert world.callers(claim.id) == ["planner", "researcher", "writer"], "each hop runs as its own agent"
    handoffs = world.events(claim.id, "handoff")
    assert [(e.detail["from"], e.detail["to"], e.detail["turn"]) for e in handoffs] == [
        (None, "planner", 1),
        ("planner", "researcher", 1),
        ("researcher", "writer", 2),
    ]
    second = handoffs[1].detail
    assert second["content_bytes"] == len(b"plan: 3 parts") and len(second["content_sha256"]) == 64
    assert "plan: 3 parts" not in json.dumps([e.as_json() for e in handoffs]), "never the content itself"
    assert BudgetLedger(world.store).usage_by_task_all([claim.id])[claim.id].calls == 3


# -- hierarchical -----------------------------------------------------------------------------------------------------


def test_a_manager_delegates_to_a_worker_agent_as_a_tool(world: World) -> None:
    world.apply()
    turns = {
        "manager": [call("ask-worker", question="which vendors?"), said("summary: vendor A")],
        "worker": [said("vendor A")],
    }
    seen = spy(world)
    claim = world.started(turns, system="hier")
    result = world.run(claim)
    assert result["output"] == "summary: vendor A" and result["hops"] == 1
    assert [who for who, _ in seen] == ["manager", "worker"]
    assert seen[1][1] == {"question": "which vendors?"}, "the call's arguments are the worker's input"
    assert world.callers(claim.id) == ["manager", "worker", "manager"]
    [done] = world.events(claim.id, "tool_call")
    assert (done.tool, done.agent, done.detail["outcome"]) == ("ask-worker", "Agent/default/manager", "ok")
    [handoff] = [e for e in world.events(claim.id, "handoff") if e.detail.get("via") == "tool"]
    assert (handoff.detail["from"], handoff.detail["to"]) == ("manager", "worker")


@sqlite_only
def test_cancelling_the_task_stops_a_delegated_worker_between_its_steps(world: World) -> None:
    world.apply(doc("Policy", "tell-the-worker", "  selector:\n    agents: [worker]\n  onDeny: return_to_model\n"))
    turns = {
        "manager": [call("ask-worker", question="which vendors?"), said("summary")],
        "worker": [call("ask-worker-tool-that-never-runs"), said("vendor A")],
    }
    cancelled = threading.Event()
    loop = world.executor.loop  # type: ignore[attr-defined]
    original = loop._complete

    def complete(target: ModelTarget, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        answer = original(target, messages, tools)
        if ".worker." in target.litellm_model:
            cancelled.set()  # the task is cancelled while its delegate works
        return answer

    loop._complete = complete
    claim = world.started(turns, system="hier")
    with pytest.raises(TaskFailed, match="cancelled"):
        world.executor(claim, cancelled)
    assert world.callers(claim.id) == ["manager", "worker"], "the worker stopped before its second model call"


def test_a_delegation_that_is_not_granted_never_runs_the_worker(world: World) -> None:
    world.apply(RETURN_TO_MODEL)
    turns = {"boss": [call("ask-worker", question="x"), said("did it myself")], "worker": [said("never")]}
    claim = world.started(turns, system="hier-denied")
    assert world.run(claim)["output"] == "did it myself"
    assert world.callers(claim.id) == ["boss", "boss"], "the worker made no call"
    [decision] = world.events(claim.id, "decision")
    assert (decision.verdict, decision.tool) == ("deny", "ask-worker")
    assert not world.events(claim.id, "tool_call")
    assert not [e for e in world.events(claim.id, "handoff") if e.detail.get("to") == "worker"]


@sqlite_only
def test_delegation_stops_at_the_depth_limit(world: World) -> None:
    """c0 asks c1 asks c2 ... (a reference cycle is refused at apply; a deep chain is not): the fifth level of
    delegation is refused and told to c4, which answers, and the chain answers back."""
    world.apply()
    turns = {f"c{i}": [call(f"ask-c{i + 1}", q="deeper"), said(f"c{i} ok")] for i in range(6)}
    claim = world.started(turns, system="chain")
    result = world.run(claim)
    assert result["output"] == "c0 ok"
    assert world.callers(claim.id) == ["c0", "c1", "c2", "c3", "c4", "c4", "c3", "c2", "c1", "c0"]
    done = world.events(claim.id, "tool_call")
    assert [(e.tool, e.detail["outcome"]) for e in done] == [
        ("ask-c5", "error"),
        ("ask-c4", "ok"),
        ("ask-c3", "ok"),
        ("ask-c2", "ok"),
        ("ask-c1", "ok"),
    ]
    assert "4 agents deep" in done[0].detail["error"]


# -- loops ------------------------------------------------------------------------------------------------------------


def test_a_loop_of_two_agents_stops_at_max_turns(world: World) -> None:
    world.apply()
    turns = {"planner": [[said("plan v1")], [said("plan v2")]], "researcher": [[said("notes 1")], [said("notes 2")]]}
    seen = spy(world)
    claim = world.started(turns, system="loop", maxTurns=4)
    result = world.run(claim)
    assert (result["hops"], result["stopped"], result["output"]) == (4, "max_turns", "notes 2")
    assert result["outputs"] == {"planner": "plan v2", "researcher": "notes 2"}
    assert [who for who, _ in seen] == ["planner", "researcher", "planner", "researcher"]
    assert seen[2][1]["content"] == "notes 1" and seen[3][1]["content"] == "plan v2"
    assert BudgetLedger(world.store).usage_by_task_all([claim.id])[claim.id].calls == 4, "one charge per hop"


def test_a_loop_stops_early_at_its_stop_condition(world: World) -> None:
    world.apply()
    turns = {"planner": [[said("plan v1")], [said("plan v2: DONE")]], "researcher": [said("notes")]}
    claim = world.started(turns, system="loop-until", maxTurns=10)
    result = world.run(claim)
    assert (result["hops"], result["stopped"], result["output"]) == (3, "stop_when", "plan v2: DONE")
    assert world.callers(claim.id) == ["planner", "researcher", "planner"]


def test_a_cycle_without_max_turns_is_a_clear_permanent_error(world: World) -> None:
    world.apply()
    claim = world.started({}, system="loop")
    with pytest.raises(TaskFailed) as failed:
        world.run(claim)
    assert failed.value.permanent
    message = str(failed.value)
    assert "AgentSystem/loop" in message and "spec.max_turns" in message
    assert "planner -> researcher -> planner" in message
    assert not world.events(claim.id, "model_call")


# -- fan-out and fan-in -----------------------------------------------------------------------------------------------


def fan_turns() -> dict[str, Any]:
    return {n: [said(f"{n} says")] for n in ("lead", "s1", "s2", "flaky", "editor")}


def test_a_quorum_join_continues_with_the_branches_that_succeeded(world: World) -> None:
    world.apply()
    seen = spy(world)
    claim = world.started(fan_turns(), system="fan-partial")
    result = world.run(claim)
    assert result["output"] == "editor says" and result["hops"] == 5, "flaky's run counts: it failed"
    assert [who for who, _ in seen] == ["lead", "s1", "s2", "editor"]
    editor = seen[-1][1]
    assert editor["content"] == {"s1": "s1 says", "s2": "s2 says"} and editor["missing"] == ["flaky"]
    assert editor["branch"] == "b001"
    handoffs = [(e.detail["from"], e.detail["to"], e.detail["branch"]) for e in world.events(claim.id, "handoff")]
    assert handoffs == [
        (None, "lead", "b001"),
        ("lead", "s1", "b001.1"),
        ("lead", "s2", "b001.2"),
        ("lead", "flaky", "b001.3"),
        ("s1", "editor", "b001.1"),
        ("s2", "editor", "b001.2"),
    ]


def test_a_failed_branch_under_deadletter_fails_the_task(world: World) -> None:
    world.apply()
    claim = world.started(fan_turns(), system="fan-deadletter")
    with pytest.raises(TaskFailed) as failed:
        world.run(claim)
    assert failed.value.permanent
    assert "flaky failed" in str(failed.value) and "editor has join.on_failure deadletter" in str(failed.value)
    assert "editor" not in world.callers(claim.id)


# -- governance -------------------------------------------------------------------------------------------------------


def test_a_policy_targeting_the_system_denies_a_member_tool_call(world: World) -> None:
    world.apply(NO_MARK_IN_PIPELINE)
    alone = world.started([call("mark"), said("marked")], agent="writer")
    assert world.run(alone)["output"] == "marked"
    assert world.marker.exists(), "outside the system the writer may call mark"
    world.marker.unlink()

    turns = {"planner": [said("p")], "researcher": [said("r")], "writer": [call("mark"), said("marked")]}
    claim = world.started(turns, system="pipeline")
    with pytest.raises(TaskHandedOff, match="denied"):
        world.run(claim)
    assert not world.marker.exists(), "the denied call never ran"
    assert world.queue.get_one(claim.id).state is TaskState.FAILED  # type: ignore[union-attr]
    [decision] = world.events(claim.id, "decision")
    assert (decision.verdict, decision.agent, decision.tool) == ("deny", "Agent/default/writer", "mark")


@sqlite_only
def test_a_system_that_is_not_applied_fails_naming_it(world: World) -> None:
    world.apply()
    claim = world.started({}, system="ghost")
    with pytest.raises(TaskFailed, match=r"spec.system: AgentSystem/ghost is not applied") as failed:
        world.run(claim)
    assert failed.value.permanent


@sqlite_only
def test_the_agent_executor_still_runs_agent_tasks(world: World) -> None:
    world.apply()
    assert isinstance(world.executor, AgentExecutor) and isinstance(world.executor.loop, AgentLoop)
    claim = world.started([said("alone")], agent="worker")
    assert world.run(claim) == {
        "executor": "agent",
        "output": "alone",
        "steps": 1,
        "usage": {"prompt": 20, "completion": 5},
    }


@sqlite_only
def test_a_member_agent_that_is_not_applied_fails_the_task_naming_it(world: World) -> None:
    """The inventory lost the writer (a bad restore, a hand edit): the run fails before any agent runs."""
    import sqlalchemy as sa

    from orlojd.adapters.tables import InventoryRow

    world.apply()
    table = InventoryRow.__table__  # type: ignore[attr-defined]
    with world.store.writing("losing the writer") as connection:
        connection.execute(sa.delete(table).where(table.c.kind == "Agent", table.c.name == "writer"))
    claim = world.started({}, system="pipeline")
    with pytest.raises(TaskFailed, match=r"AgentSystem/pipeline: spec.agents: agent Agent/writer is not applied") as e:
        world.run(claim)
    assert e.value.permanent and not world.events(claim.id, "model_call")
