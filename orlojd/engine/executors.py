"""What a worker does with a claimed task: the executors, and the choice of one by name.

The agent runtime (model calls through litellm, tools, governance) plugs in here later as
one more ``Executor``. Until then a run is checked and recorded, not executed:

* ``placeholder`` (the default): checks the run's agent is still applied, then runs the
  Task's offline script (``spec.input.script``, see ``script_steps``) through the governance
  gate (``engine/gate.py``): each step is a model call (budget reserved, then charged) or a
  tool call (allowed, denied, or parked for approval). Without a script it succeeds with a
  result that says no agent runtime ran. A run whose agent was deleted fails for good with
  an error naming the agent, and lands in the dead-letter queue (``orlojd dlq retry`` once
  the agent is back).
* ``agent``: the agent loop on litellm (``engine/agent_loop.py``): model calls and the tool calls
  the model asks for, every one through the governance gate; a Task naming an AgentSystem runs its
  graph of agents (``engine/agent_systems.py``). Not the default yet.
* ``noop``: succeeds at once (benchmarks).
* ``sleep:MS``: sleeps MS milliseconds, stopping early when cancelled (tests of leases and
  timeouts).
* ``sink:PATH``: records the run in the SQLite file PATH, idempotently: one ``effects`` row
  per task id (the effect) and one ``executions`` row per attempt (how often it ran). The
  chaos test counts effects with it.

``executor_named(spec, store)`` builds one from its name; a bad name is a ``ConfigError``.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orlojd.adapters.queue import ClaimedTask
from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.engine.agent_loop import AgentLoop
from orlojd.engine.agent_systems import AgentExecutor
from orlojd.engine.gate import Gate
from orlojd.engine.workers import Executor, TaskFailed
from orlojd.errors import ConfigError

NAMES = "agent, placeholder, noop, sleep:MS or sink:PATH"


def noop(task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
    return {"executor": "noop"}


class Placeholder:
    """Checks the run's agent exists in the applied inventory; runs its offline script, if any, through the gate."""

    def __init__(self, store: Store, gate: Gate | None = None) -> None:
        self.store = store
        self.gate = gate or Gate(store)

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        if task.agent is not None:
            key = ResourceKey.parse(task.agent)
            if not self.store.inventory_bodies_some(keys=[key]):
                raise TaskFailed(
                    f"agent {key.short} is not applied (deleted or renamed); restore it in git, "
                    f"then: orlojd dlq retry {task.id}",
                    permanent=True,
                )
        steps = script_steps(task.task_input)
        if not steps:
            return {"executor": "placeholder", "note": "checked and recorded; no agent runtime ran"}
        done: list[dict[str, Any]] = []
        for index, step in enumerate(steps):
            if cancelled.is_set():
                raise TaskFailed("cancelled")
            if step.tool is None:
                call_id = f"{task.id}/{index}"
                model = self.gate.model_call(task, call_id, step.model, step.tokens)
                self.gate.charge(call_id, step.prompt_tokens, step.completion_tokens, model, actor=task.worker or None)
                done.append({"step": index, "model": model, "tokens": step.prompt_tokens + step.completion_tokens})
                continue
            outcome = self.gate.tool_call(task, step.tool, step.arguments, step.needs)
            if outcome.allowed:  # the offline script runs no tool: it records that the call went through
                self.gate.tool_done(task, step.tool, "scripted", {"step": index})
            entry = {"step": index, "tool": step.tool, "allowed": outcome.allowed, "reason": outcome.decision.reason}
            if outcome.approval is not None:
                entry["approval"] = outcome.approval
            done.append(entry)
        return {"executor": "placeholder", "script": done}


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """One step of an offline script: a tool call (``tool``) or else a model call."""

    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    needs: tuple[tuple[str, str], ...] = ()
    model: str | None = None
    tokens: int = 0  # the estimate the budget is checked on
    prompt_tokens: int = 0  # the usage "reported" afterwards
    completion_tokens: int = 0


def script_steps(task_input: dict[str, Any]) -> list[ScriptStep]:
    """The Task's ``spec.input.script``: a list of steps, each either

    ``{tool: NAME, args: {...}, read: RESOURCE, write: RESOURCE}`` (read/write optional) or
    ``{model: NAME or null, tokens: ESTIMATE, usage: {prompt: N, completion: M}}``.
    A malformed script fails the run for good, naming the step and the field.
    """
    script = task_input.get("script")
    if script is None:
        return []
    if not isinstance(script, list):
        raise TaskFailed("spec.input.script must be a list of steps", permanent=True)
    steps: list[ScriptStep] = []
    for i, raw in enumerate(script):
        where = f"spec.input.script[{i}]"
        if not isinstance(raw, dict):
            raise TaskFailed(f"{where} must be a mapping with 'tool' or 'model'", permanent=True)
        try:
            if "tool" in raw:
                needs = tuple(
                    (access, str(raw[access])) for access in ("read", "write", "delete", "admin") if access in raw
                )
                steps.append(ScriptStep(tool=str(raw["tool"]), arguments=dict(raw.get("args") or {}), needs=needs))
            elif "model" in raw:
                usage: dict[str, Any] = raw.get("usage") or {}
                steps.append(
                    ScriptStep(
                        model=None if raw["model"] is None else str(raw["model"]),
                        tokens=int(raw.get("tokens", 0)),
                        prompt_tokens=int(usage.get("prompt") or raw.get("tokens") or 0),
                        completion_tokens=int(usage.get("completion") or 0),
                    )
                )
            else:
                raise ValueError("a step needs 'tool' or 'model'")
        except (TypeError, ValueError) as exc:
            raise TaskFailed(f"{where}: {exc}", permanent=True) from None
    return steps


class Sleep:
    def __init__(self, milliseconds: int) -> None:
        self.seconds = milliseconds / 1000

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        if cancelled.wait(self.seconds):
            raise TaskFailed("cancelled")
        return {"executor": "sleep", "slept_ms": int(self.seconds * 1000)}


class Sink:
    """An idempotent side effect in a SQLite file, one effect per task id, every execution counted."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS effects (task_id TEXT PRIMARY KEY, token INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS executions (task_id TEXT NOT NULL, token INTEGER NOT NULL)",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as connection:
            for statement in self.SCHEMA:
                connection.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        return connection

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO executions VALUES (?, ?)", (task.id, task.fencing_token))
            connection.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (task.id, task.fencing_token))
            connection.execute("COMMIT")
        finally:
            connection.close()
        return {"executor": "sink", "token": task.fencing_token}


def known(spec: str) -> bool:
    """Whether ``spec`` names an executor (checked before anything is opened)."""
    name, _, argument = spec.partition(":")
    return (
        (name in ("agent", "placeholder", "noop") and not argument)
        or (name == "sleep" and argument.isdigit())
        or (name == "sink" and bool(argument))
    )


def executor_named(spec: str, store: Store, gate: Gate | None = None) -> Executor:
    """The executor called ``spec`` (see the module doc); ``gate`` governs the placeholder's calls."""
    if not known(spec):
        raise ConfigError(f"--executor {spec!r}: unknown executor", f"use {NAMES}")
    name, _, argument = spec.partition(":")
    if name == "agent":  # an AgentSystem task through its graph, an Agent task through the agent loop
        return AgentExecutor(AgentLoop(store, gate or Gate(store)))
    if name == "placeholder":
        return Placeholder(store, gate)
    if name == "sleep":
        return Sleep(int(argument))
    if name == "sink":
        return Sink(Path(argument))
    return noop
