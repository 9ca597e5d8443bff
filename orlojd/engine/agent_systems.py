"""Runs a Task that names an AgentSystem: its graph in the worker thread, every hop an agent run through the gate.

This module owns ``SystemRunner`` (the run of a system task) and ``AgentExecutor`` (the ``agent`` executor:
a Task naming a ``system`` runs here, one naming an ``agent`` in ``AgentLoop``).

* Loading: the AgentSystem ``spec.system`` (``name`` or ``namespace/name``, in the Task's namespace) and
  every member agent (in the system's namespace) must be applied and valid, and the graph must be
  runnable with the Task's ``max_turns`` (``core/agent_graph.problems``: a cycle needs ``max_turns > 0``);
  otherwise the task fails for good with an error naming the object and field.
* The graph runs as ``core/agent_graph.Schedule`` decides: entry agents get the Task's input as their
  user message (as an agent task would); every other run gets
  ``{"input": <task input>, "from": <agent>, "content": <its output>, "branch": "b001", "turn": n}``,
  and a node with several upstream agents (a join)
  ``{"input": ..., "from": [<agents that answered>], "content": {<agent>: <output>}, "missing":
  [<agents that failed or were dropped>], "branch": ..., "turn": n}``. Fan-out runs each target in
  turn; joins, ``on_failure`` and branch ids are as the schedule's module doc says.
* Every run is ``AgentLoop.run_agent`` under the member's own identity: its grants, budgets,
  ``allowedModels`` and the Policies targeting the system (``targetSystems``) apply to each call it
  makes. Its call scope is ``<agent>.<turn>/`` (call ids ``<task id>/<agent>.<turn>/<step>``), unique
  within the run, so budgets and idempotency keys never collide.
* Each handoff (the task's input to an entry agent, an output to the next agent) is the audit event
  ``handoff`` (``Gate.handoff``: from, to, branch, turn, system; the content's sha256 and size only).
* A member's permanent failure is its branch's failure (``join.on_failure`` of the agents it feeds:
  ``deadletter`` fails the task for good, ``skip`` drops the branch, ``continue_partial`` joins what
  succeeded; a terminal agent's failure fails the task). Retryable failures, deferrals (budget wait),
  approvals and ``fail_run`` denials end the attempt as for an agent task: a retried attempt runs the
  graph again from the start, with the same call ids.
* The run ends when nothing is left to run, after ``max_turns`` agent runs (when > 0; a cycle
  needs it), or as soon as an output contains the system's ``spec.stopWhen.outputContains``.
  Result: ``{"executor": "agent", "system": <name>, "output": <last terminal agent's output>, "outputs":
  {<terminal agent>: <output>}, "hops": <agent runs>, "handoffs": n, "stopped": "done" | "max_turns" |
  "stop_when", "usage": {"prompt": n, "completion": m}}``; in a loop with no terminal agent, ``outputs``
  holds every agent's last output. Outputs are capped at ``OUTPUT_CAP`` bytes in all.
* Inline scripts (tests): ``spec.input.script_turns`` maps an agent's name to its scripted turns; a
  list of lists gives the agent's k-th run the k-th list (the last one repeats), since each run starts
  a fresh conversation. ``script_turns`` never reaches an agent's input.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from orlojd.adapters.queue import ClaimedTask
from orlojd.core.agent_graph import Hop, Schedule, graph_of, problems
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.base import split_ref
from orlojd.core.manifests.registry import validate_object
from orlojd.core.manifests.systems import AgentSystem
from orlojd.engine.agent_loop import OUTPUT_CAP, AgentLoop, script_for, validated
from orlojd.engine.gate import Gate
from orlojd.engine.workers import TaskFailed

__all__ = ["AgentExecutor", "SystemRunner"]


def _capped(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[: max(limit, 0)].decode("utf-8", errors="ignore")


class SystemRunner:
    """Runs system tasks with ``loop``'s agents (see the module doc)."""

    def __init__(self, loop: AgentLoop) -> None:
        self.loop = loop

    @property
    def gate(self) -> Gate:
        return self.loop.gate

    def _load(self, task: ClaimedTask) -> tuple[AgentSystem, dict[str, ResourceKey]]:
        """The applied AgentSystem of ``task`` and its members' keys; fails for good naming what is wrong."""
        spec = task.task_spec
        task_key = ResourceKey.parse(task.task_key)
        ref = str(spec.get("system") or "")
        if not ref:
            raise TaskFailed(f"task {task.task_key} names no system; nothing to run", permanent=True)
        key = ResourceKey("AgentSystem", *split_ref(ref, task_key.namespace))
        retry = f"then: orlojd dlq retry {task.id}"
        body = self.loop.store.inventory_bodies_some(keys=[key]).get(key)
        if body is None:
            raise TaskFailed(
                f"{task_key.short}: spec.system: {key.short} is not applied (deleted or renamed); "
                f"restore it in git, {retry}",
                permanent=True,
            )
        system = validated(body, key, AgentSystem)
        max_turns = int(spec.get("max_turns") or spec.get("maxTurns") or 0)
        found = problems(system.spec, max_turns)
        if found:
            where = f"{task_key.short} (max_turns {max_turns}) runs {key.short}"
            raise TaskFailed(f"{where}: {'; '.join(map(str, found))}; fix it in git, {retry}", permanent=True)
        members = {a: ResourceKey("Agent", *split_ref(a, key.namespace)) for a in system.spec.agents}
        bodies = self.loop.store.inventory_bodies_some(keys=list(members.values()))
        for member in members.values():
            if member not in bodies:
                raise TaskFailed(
                    f"{key.short}: spec.agents: agent {member.short} is not applied; add it in git, {retry}",
                    permanent=True,
                )
            agent = validate_object(bodies[member])
            if not isinstance(agent.obj, Agent):
                problem = agent.problems[0].message if agent.problems else "not an Agent"
                raise TaskFailed(
                    f"{key.short}: spec.agents: applied agent {member.short} no longer validates: {problem}",
                    permanent=True,
                )
        return system, members

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        system, members = self._load(task)
        spec = task.task_spec
        max_turns = int(spec.get("max_turns") or spec.get("maxTurns") or 0)
        task_input = task.task_input
        task_input.pop("script_turns", None)
        graph = graph_of(system.spec)
        schedule = Schedule(graph, max_turns)
        marker = system.spec.stop_when.output_contains if system.spec.stop_when else None
        where = {"system": system.metadata.name}
        runs: dict[str, int] = {}
        prompt = completion = handoffs = 0
        while (hop := schedule.next_hop()) is not None:
            if cancelled.is_set():
                raise TaskFailed("cancelled")
            key = members[hop.node]
            message = task_input if hop.kickoff else self._message(graph.joins[hop.node].expected > 1, hop, task_input)
            if hop.kickoff:
                content = json.dumps(task_input, sort_keys=True, default=str)
                self.gate.handoff(task, None, key, content, {**where, "branch": hop.branch, "turn": hop.turn})
            script = script_for(task, key, hop.node, runs.get(hop.node, 0))
            runs[hop.node] = runs.get(hop.node, 0) + 1
            try:
                answer = self.loop.run_agent(
                    task, key, message, cancelled, scope=f"{key.name}.{hop.turn}/", script_turns=script
                )
            except TaskFailed as exc:
                if not exc.permanent or str(exc) == "cancelled":
                    raise
                schedule.failed(hop, str(exc))
                if schedule.failure is not None:
                    raise TaskFailed(
                        f"AgentSystem {system.metadata.name}: {schedule.failure}", permanent=True
                    ) from None
                continue
            prompt += answer.prompt_tokens
            completion += answer.completion_tokens
            if marker is not None and marker in answer.output:
                schedule.stop("stop_when")
            for receiver, branch in schedule.succeeded(hop, answer.output):
                handoffs += 1
                detail = {**where, "branch": branch, "turn": hop.turn}
                self.gate.handoff(task, hop.node, members[receiver], answer.output, detail)
        if schedule.failure is not None:
            raise TaskFailed(f"AgentSystem {system.metadata.name}: {schedule.failure}", permanent=True)
        if schedule.last is None:
            raise TaskFailed(
                f"AgentSystem {system.metadata.name}: no agent produced an output (every branch was dropped)",
                permanent=True,
            )
        output, outputs = schedule.result()
        share = OUTPUT_CAP // max(len(outputs), 1)
        return {
            "executor": "agent",
            "system": system.metadata.name,
            "output": _capped(output, OUTPUT_CAP),
            "outputs": {name: _capped(text, share) for name, text in outputs.items()},
            "hops": schedule.turns,
            "handoffs": handoffs,
            "stopped": schedule.stopped,
            "usage": {"prompt": prompt, "completion": completion},
        }

    @staticmethod
    def _message(join: bool, hop: Hop, task_input: Mapping[str, Any]) -> dict[str, Any]:
        """What a non-entry agent reads: the task's input and what its upstream agents said."""
        ok = [d for d in hop.inbox if d.status == "ok"]
        if not join:
            return {
                "input": task_input,
                "from": ok[0].sender,
                "content": ok[0].content,
                "branch": hop.branch,
                "turn": hop.turn,
            }
        return {
            "input": task_input,
            "from": [d.sender for d in ok],
            "content": {d.sender: d.content for d in ok},
            "missing": [d.sender for d in hop.inbox if d.status != "ok"],
            "branch": hop.branch,
            "turn": hop.turn,
        }


class AgentExecutor:
    """The ``agent`` executor: a Task naming a ``system`` runs its AgentSystem, one naming an ``agent`` that agent."""

    def __init__(self, loop: AgentLoop) -> None:
        self.loop = loop
        self.systems = SystemRunner(loop)

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        if task.task_spec.get("system"):
            return self.systems(task, cancelled)
        return self.loop(task, cancelled)
