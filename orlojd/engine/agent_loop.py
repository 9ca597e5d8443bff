"""The agent runtime: one run of an Agent, a model driving tools through litellm, every call through the gate.

This module owns ``AgentLoop``, the ``Executor`` that runs a claimed task as an agent (``run_agent`` runs any
agent within a task: AgentSystems in ``engine/agent_systems.py`` run their members through it):

* It loads the Agent, its ModelEndpoint (``spec.modelRef``) with the endpoint's ``fallbacks``, and the Tools
  it is granted from the applied inventory. Each endpoint becomes a ``ModelTarget``
  (``adapters/model_client.py``): litellm model ``<provider>/<agent.spec.model or defaultModel>``
  (``openai-compatible`` is litellm's ``openai`` with ``baseUrl``), the API key read from ``auth.secretRef``
  now (``adapters/secrets.py``; a Secret that cannot be read fails the run for good, naming it; a fallback's
  is skipped instead, with a warning, and named in the run's error if every other endpoint failed), its
  ``timeout`` and ``retry``. An agent with ``spec.model`` and no ``modelRef`` calls litellm with that id as
  is. The model the gate and the budget see is the bare id (what ``allowedModels`` lists).
* The conversation starts with the agent's prompt (system) and the input as JSON (user). Every granted Tool
  is offered as an OpenAI function tool (name, description, ``inputSchema``, else ``{"type": "object"}``).
  Only ``tools=`` is ever passed: no provider-side tools (web search and the like) are enabled, so nothing
  runs that the gate did not see.
* Each step (at most ``spec.limits.maxSteps``): the gate admits the model call and reserves its token
  estimate (``Gate.model_call``, call id ``<task id>/<scope><step>``), litellm answers, the gate charges the
  usage reported. A transient provider error (rate limit, 5xx, connection, timeout) is tried again on the
  same endpoint after ``core/retry.provider_wait`` (backoff, never sooner than ``Retry-After``; the same
  call id, so charged once), then on each fallback in turn, each admitted by the gate under its own call id
  (``<call id>~<n>``). A reply without tool calls ends the run with its text. Each tool call asks the gate
  (``Gate.tool_call``): a denial under ``onDeny: return_to_model`` goes back to the model as
  ``denied: <reason>: <message>``; an allowed call runs and its output or error goes back to the model;
  ``Gate.tool_done`` records what it did. The executor comes from ``engine/tool_specs.ToolResolver``
  (http with auth headers, command, python, mcp); a Tool of ``type: agent`` runs its ``agentRef`` agent
  under that agent's own identity (a delegation), its answer the tool's result. Bad arguments (not a JSON
  object, or not matching the Tool's ``requires`` templates), a Tool with no executor, or one whose Secret
  or McpServer cannot be resolved are told to the model, never executed.
* Failures: ``maxSteps`` used up -> permanent; a transient provider error left after retries and fallbacks
  -> retryable (the task's own retry policy decides); any other provider error -> permanent with the
  provider's message; cancellation (between steps, during a provider wait, or while a model call is in
  flight: the call is abandoned) -> ``TaskFailed("cancelled")``. The gate's own
  ``TaskFailed`` / ``TaskDeferred`` / ``TaskHandedOff`` pass through unchanged.

Delivery of tool calls is at least once, not exactly once: a run that crashes, loses its lease, waits for
an approval or is retried runs its steps again, and may repeat a tool call whose effect already happened.
Every call carries the idempotency key ``task:<task id>/step:<step>/attempt:<attempt>`` (the
``Idempotency-Key`` header, ``ORLOJD_IDEMPOTENCY_KEY``, an MCP request's ``_meta`` or a Python tool's
second argument); deduplicating effects by it is the tool's job.

The offline ``scripted`` provider (``adapters/scripted_model.py``): the script is the run's inline
``script_turns`` (the Task's ``spec.input.script_turns``: tests; registered under
``<model>.<agent>.<task id>`` so concurrent runs never share a script), else the ModelEndpoint's ``script``
(registered under ``<namespace>.<endpoint>.<model>`` as applied now), else its ``options.script``, an
absolute path to a YAML/JSON fixture, else whatever is registered under the model name, else an empty
script (the model answers ``done`` at once). ``script_turns`` is left out of the user message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from orlojd.adapters import scripted_model
from orlojd.adapters.model_client import CallCancelled, ModelTarget, ProviderError, shared_client
from orlojd.adapters.queue import ClaimedTask
from orlojd.adapters.secrets import SecretError, SecretResolver
from orlojd.adapters.store import Store
from orlojd.core.durations import parse_ms
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.base import split_ref
from orlojd.core.manifests.registry import validate_object
from orlojd.core.manifests.tools import ModelEndpoint, Tool
from orlojd.core.retry import provider_wait
from orlojd.core.tool_templates import needs_of
from orlojd.engine.gate import Gate
from orlojd.engine.tool_executors import ToolCall, run_tool
from orlojd.engine.tool_specs import ToolMapper, ToolResolver
from orlojd.engine.workers import TaskFailed

__all__ = ["OUTPUT_CAP", "AgentAnswer", "AgentLoop", "script_for", "validated"]

OUTPUT_CAP = 64 * 1024  # bytes of the final answer (and of each tool message) kept
MODEL_TIMEOUT = 120.0  # seconds one model call may take
DEFAULT_TOOL_TIMEOUT = 30.0

log = logging.getLogger("orlojd.agent")
T = TypeVar("T")


def _cap(text: str, limit: int = OUTPUT_CAP) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


@dataclass(frozen=True, slots=True)
class AgentAnswer:
    """How one agent's run ended: its final text (capped), the model calls it took and their tokens."""

    output: str
    steps: int
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Run:
    """What one run needs: the agent, the model names, the granted tools by the name the model uses."""

    key: ResourceKey
    agent: Agent
    targets: list[ModelTarget]  # the endpoint's model, then its fallbacks'
    tools: dict[str, Tool] = field(default_factory=dict)


class AgentLoop:
    """Runs a claimed task as its Agent: model and tool calls, each through the gate (see the module doc)."""

    def __init__(self, store: Store, gate: Gate, tools: ToolMapper | None = None) -> None:
        self.store = store
        self.gate = gate
        self.secrets = SecretResolver(store)
        self.tools: ToolMapper = tools or ToolResolver(store, self.secrets)
        self.client = shared_client()
        self.draw: Callable[[], float] = random.random  # jitter of the provider retries

    # -- loading ------------------------------------------------------------------------------------

    def _load(self, task: ClaimedTask, agent_key: ResourceKey, script_turns: Any = None) -> _Run:
        """The agent ``agent_key`` of this run, its endpoint and granted tools, from the applied inventory.
        ``script_turns``: an inline script for a ``scripted`` endpoint (see the module doc)."""
        bodies = self.store.inventory_bodies_some(keys=[agent_key])
        if agent_key not in bodies:
            raise TaskFailed(
                f"agent {agent_key.short} is not applied (deleted or renamed); restore it in git, "
                f"then: orlojd dlq retry {task.id}",
                permanent=True,
            )
        agent = validated(bodies[agent_key], agent_key, Agent)
        endpoint_key = None
        if agent.spec.model_ref is not None:
            endpoint_key = ResourceKey("ModelEndpoint", *split_ref(agent.spec.model_ref, agent_key.namespace))
        tool_keys = {g.name: ResourceKey("Tool", *split_ref(g.name, agent_key.namespace)) for g in agent.spec.tools}
        wanted = [*tool_keys.values(), *([endpoint_key] if endpoint_key else [])]
        found = self.store.inventory_bodies_some(keys=wanted) if wanted else {}
        tools = {n: validated(found[k], k, Tool) for n, k in tool_keys.items() if k in found}
        if endpoint_key is None:
            assert agent.spec.model is not None  # the manifest needs model or modelRef
            model = agent.spec.model
            return _Run(agent_key, agent, [ModelTarget(f"{agent_key.short} spec.model", model, model)], tools)
        if endpoint_key not in found:
            raise TaskFailed(f"{agent_key.short}: model endpoint {endpoint_key.short} is not applied", permanent=True)
        endpoint = validated(found[endpoint_key], endpoint_key, ModelEndpoint)
        primary = self._target(task, endpoint, agent.spec.model, script_turns, agent_key.name)
        fallbacks = [ResourceKey("ModelEndpoint", *split_ref(f, endpoint.namespace)) for f in endpoint.spec.fallbacks]
        bodies = self.store.inventory_bodies_some(keys=fallbacks) if fallbacks else {}
        targets = [primary]
        for key in fallbacks:
            if key not in bodies:
                raise TaskFailed(f"{endpoint_key.short}: fallback {key.short} is not applied", permanent=True)
            fallback = validated(bodies[key], key, ModelEndpoint)
            try:
                targets.append(self._target(task, fallback, None, None, agent_key.name))
            except TaskFailed as exc:  # a fallback that cannot be called must not stop a primary that answers
                where = f"{key.namespace}/{key.name}"
                targets.append(ModelTarget(where, fallback.spec.default_model, "", unusable=str(exc)))
        return _Run(agent_key, agent, targets, tools)

    def _target(
        self, task: ClaimedTask, endpoint: ModelEndpoint, model: str | None, turns: Any, agent: str
    ) -> ModelTarget:
        """How to call ``endpoint`` (its ``defaultModel`` unless the agent names ``model``): its API key read
        from its Secret now (a Secret that cannot be read fails the run for good, naming it; ``_load`` keeps a
        fallback's failure as its ``unusable`` instead)."""
        spec = endpoint.spec
        model = model or spec.default_model
        where = f"{endpoint.namespace}/{endpoint.name}"
        if spec.provider == scripted_model.PROVIDER:
            litellm_model = _scripted(task, endpoint, model, turns, agent)
        elif spec.provider == "openai-compatible":
            litellm_model = f"openai/{model}"
        else:
            litellm_model = f"{spec.provider}/{model}"
        key = None
        if spec.auth is not None:
            try:
                key = self.secrets(spec.auth.secret_ref, endpoint.namespace)
            except SecretError as exc:
                raise TaskFailed(f"model endpoint {where}: {exc}", permanent=True) from None
        timeout = parse_ms(spec.timeout) / 1000 or MODEL_TIMEOUT
        return ModelTarget(where, model, litellm_model, timeout, spec.retry, spec.base_url, key)

    # -- the loop -----------------------------------------------------------------------------------

    def __call__(self, task: ClaimedTask, cancelled: threading.Event) -> dict[str, Any]:
        if not task.agent:
            raise TaskFailed(f"task {task.task_key} names no agent; nothing to run", permanent=True)
        task_input = task.task_input
        turns = task_input.pop("script_turns", None)
        answer = self.run_agent(task, ResourceKey.parse(task.agent), task_input, cancelled, script_turns=turns)
        return {
            "executor": "agent",
            "output": answer.output,
            "steps": answer.steps,
            "usage": {"prompt": answer.prompt_tokens, "completion": answer.completion_tokens},
        }

    def run_agent(
        self,
        task: ClaimedTask,
        agent_key: ResourceKey,
        task_input: Mapping[str, Any],
        cancelled: threading.Event,
        *,
        scope: str = "",
        script_turns: Any = None,
    ) -> AgentAnswer:
        """Run ``agent_key`` on ``task_input`` (its user message, as JSON) within ``task``'s claim until it
        answers. Every model and tool call goes through the gate as that agent. ``scope`` keeps call ids
        and idempotency keys apart when one task runs several agents (``<task id>/<scope><step>``)."""
        run = self._load(task, agent_key, script_turns)
        try:
            return self._run(task, run, task_input, cancelled, scope)
        finally:
            for target in run.targets:
                if target.litellm_model.endswith(f".{task.id}"):  # the run's own inline script: not kept for ever
                    scripted_model.unregister(target.litellm_model.split("/", 1)[1])

    def _run(
        self, task: ClaimedTask, run: _Run, task_input: Mapping[str, Any], cancelled: threading.Event, scope: str
    ) -> AgentAnswer:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": run.agent.spec.prompt},
            {"role": "user", "content": json.dumps(task_input, sort_keys=True, default=str)},
        ]
        offered = [_function(name, tool) for name, tool in run.tools.items()]
        prompt_total = completion_total = 0
        max_steps = run.agent.spec.limits.max_steps
        for step in range(max_steps):
            if cancelled.is_set():
                raise TaskFailed("cancelled")
            call_id = f"{task.id}/{scope}{step}"
            estimate = len(json.dumps(messages, default=str)) // 4 + 256
            response, model, charged = self._model_call(task, run, call_id, estimate, messages, offered, cancelled)
            prompt, completion = _usage(response)
            prompt_total += prompt
            completion_total += completion
            self.gate.charge(charged, prompt, completion, model, actor=task.worker or None)
            message = response.choices[0].message
            content = message.content or ""
            calls = list(getattr(message, "tool_calls", None) or [])
            if not calls:
                return AgentAnswer(_cap(content), step + 1, prompt_total, completion_total)
            messages.append(assistant_message(message.content, calls))
            for c in calls:
                answer = self._tool(task, run, f"{scope}{step}", str(c.function.name), c.function.arguments, cancelled)
                messages.append({"role": "tool", "tool_call_id": c.id, "content": _cap(answer)})
        raise TaskFailed(f"{run.key.short}: maxSteps {max_steps} reached", permanent=True)

    def _tool(
        self,
        task: ClaimedTask,
        run: _Run,
        step: str,
        name: str,
        raw: Any,
        cancelled: threading.Event | None = None,
    ) -> str:
        """One tool call of the model: asked, maybe run, recorded; what the model reads back."""
        try:
            arguments = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
        except ValueError as exc:
            arguments = exc
        if not isinstance(arguments, dict):
            problem = f"{arguments}" if isinstance(arguments, ValueError) else "not a JSON object"
            self.gate.tool_done(task, name, "bad_arguments", {"error": problem[:200]}, agent=run.key)
            return f"error: the arguments of {name} are not a JSON object ({problem})"
        manifest = run.tools.get(name)
        requires = () if manifest is None else tuple((p.access.value, p.resource) for p in manifest.spec.requires)
        try:
            needs = needs_of(requires, arguments)
        except ValueError as exc:
            self.gate.tool_done(task, name, "bad_arguments", {"error": str(exc)[:200]}, agent=run.key)
            return f"error: bad arguments for {name}: {exc}"
        outcome = self.gate.tool_call(task, name, arguments, needs, agent=run.key)
        if not outcome.allowed:
            return f"denied: {outcome.decision.reason.value}: {outcome.decision.message}"
        if manifest is not None and manifest.spec.agent_ref is not None:
            # An agent as a tool (type: agent): the worker runs under its own identity, the arguments its input,
            # its answer the result. Scope ``<step>><worker>.<args digest>/``: the '>'s count the depth.
            worker = ResourceKey("Agent", *split_ref(manifest.spec.agent_ref, run.key.namespace))
            if step.count(">") >= 4:
                error = f"{name}: delegation to {worker.short} refused: 4 agents deep already; answer without it"
                self.gate.tool_done(task, name, "error", {"error": error, "agent": str(worker)}, agent=run.key)
                return f"error: {error}"
            sent = json.dumps(arguments, sort_keys=True, default=str)
            scope = f"{step}>{worker.name}.{hashlib.sha256(sent.encode()).hexdigest()[:8]}/"
            self.gate.handoff(task, run.key.name, worker, sent, {"via": "tool", "tool": name, "step": step})
            try:
                answer = self.run_agent(
                    task,
                    worker,
                    arguments,
                    cancelled or threading.Event(),  # the run's: a cancelled task stops its delegates too
                    scope=scope,
                    script_turns=script_for(task, worker, ""),
                )
            except TaskFailed as exc:
                if not exc.permanent or str(exc) == "cancelled":
                    raise
                self.gate.tool_done(task, name, "error", {"error": str(exc)[:200], "agent": str(worker)}, agent=run.key)
                return f"error: agent {worker.short} failed: {exc}"
            detail = {"agent": str(worker), "steps": answer.steps, "bytes": len(answer.output.encode())}
            self.gate.tool_done(task, name, "ok", detail, agent=run.key)
            return answer.output
        try:
            spec = None if manifest is None else self.tools(manifest)
        except ValueError as exc:  # a Secret or an McpServer it needs cannot be resolved: nothing runs
            self.gate.tool_done(task, name, "error", {"error": str(exc)[:200]}, agent=run.key)
            return f"error: {exc}"
        if spec is None:
            error = f"tool {name} has no executor in this runtime"
            self.gate.tool_done(task, name, "error", {"error": error}, agent=run.key)
            return f"error: {error}"
        timeout = DEFAULT_TOOL_TIMEOUT
        if manifest is not None:
            timeout = parse_ms(manifest.spec.runtime.timeout) / 1000 or DEFAULT_TOOL_TIMEOUT
        key = f"task:{task.id}/step:{step}/attempt:{task.attempts}"
        result = run_tool(spec, ToolCall(name, arguments, key, timeout))
        detail = {"error": result.error, "bytes": result.size, "ms": result.duration_ms}
        self.gate.tool_done(task, name, "ok" if result.ok else "error", detail, agent=run.key)
        if result.ok:
            return result.output
        return f"error: {result.error}" + (f"\n{result.output}" if result.output else "")

    # -- model calls --------------------------------------------------------------------------------

    def _model_call(
        self,
        task: ClaimedTask,
        run: _Run,
        call_id: str,
        estimate: int,
        messages: list[dict[str, Any]],
        offered: list[dict[str, Any]],
        cancelled: threading.Event,
    ) -> tuple[Any, str, str]:
        """One model call of a step: the endpoint, retried on transient errors (``provider_wait``: backoff,
        ``Retry-After``), then each fallback in turn. Every endpoint's call is admitted by the gate first,
        under its own call id (``<call id>~<n>`` for the n-th fallback), so its model must be allowed and
        its budget reserved. Returns the response, the model and the call id to charge."""
        failure: ProviderError | None = None
        skipped: list[str] = []
        for index, target in enumerate(run.targets):
            if target.unusable is not None:  # a fallback whose key cannot be read: said, never called
                log.warning(
                    "%s: fallback skipped: %s",
                    run.key.short,
                    target.unusable,
                    extra={"event": "model_fallback_skipped", "task_id": task.id, "endpoint": target.endpoint},
                )
                skipped.append(target.unusable)
                continue
            this_call = call_id if index == 0 else f"{call_id}~{index}"
            model = self.gate.model_call(task, this_call, target.model, estimate, agent=run.key)
            attempt = 1
            while True:
                try:
                    return self._complete(replace(target, cancelled=cancelled), messages, offered), model, this_call
                except CallCancelled:
                    raise TaskFailed("cancelled") from None
                except ProviderError as exc:
                    if not exc.transient:
                        raise TaskFailed(str(exc), permanent=True) from None
                    failure = exc
                wait = provider_wait(target.retry, attempt, self.draw(), failure.retry_after)
                if wait is None:
                    break
                log.warning(
                    "%s: %s; trying again in %.1fs",
                    run.key.short,
                    failure,
                    wait,
                    extra={"event": "model_retry", "task_id": task.id, "endpoint": target.endpoint},
                )
                if cancelled.wait(wait):
                    raise TaskFailed("cancelled")
                attempt += 1
            if index + 1 < len(run.targets):
                log.warning(
                    "%s: %s gave up (%s); falling back to %s",
                    run.key.short,
                    target.endpoint,
                    failure,
                    run.targets[index + 1].endpoint,
                    extra={"event": "model_fallback", "task_id": task.id, "endpoint": target.endpoint},
                )
        assert failure is not None  # the first target is the agent's own endpoint: never skipped
        raise TaskFailed("; ".join([str(failure), *(f"skipped {s}" for s in skipped)]))  # transient: retried

    def _complete(self, target: ModelTarget, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        """One attempt at one endpoint (the seam tests spy on)."""
        return self.client.complete(target, messages, tools)


def validated(body: dict[str, Any], key: ResourceKey, kind: type[T]) -> T:
    """The applied ``body`` of ``key`` as a ``kind``; one that no longer validates fails the run for good."""
    checked = validate_object(body)
    if not isinstance(checked.obj, kind):
        problem = checked.problems[0].message if checked.problems else f"not a {kind.__name__}"
        raise TaskFailed(f"applied {key.short} no longer validates: {problem}", permanent=True)
    return checked.obj


def script_for(task: ClaimedTask, agent: ResourceKey, ref: str, run: int = 0) -> Any:
    """The inline scripted turns of ``agent`` (listed as ``ref``) for its ``run``-th run in this task, or None: the
    Task's ``spec.input.script_turns`` maps agent names to turns, and a list of lists gives the agent's k-th run
    the k-th list (the last one repeats), since each run starts a fresh conversation."""
    turns = task.task_input.get("script_turns")
    if not isinstance(turns, Mapping) or "turns" in turns:
        return None
    mine = turns.get(ref, turns.get(agent.name))
    if isinstance(mine, list) and mine and all(isinstance(t, list) for t in mine):
        return mine[min(run, len(mine) - 1)]
    return mine


def _scripted(task: ClaimedTask, endpoint: ModelEndpoint, model: str, inline: Any, agent: str) -> str:
    """The litellm model of a scripted endpoint, its script registered (see the module doc)."""
    try:
        if inline is not None:
            name = f"{model}.{agent}.{task.id}".replace("/", "_")
            turns = {"turns": inline} if isinstance(inline, list) else inline
            scripted_model.register({name: scripted_model.load_script(turns)})
            return f"{scripted_model.PROVIDER}/{name}"
        if endpoint.spec.script is not None:  # the manifest's own script, registered as applied now
            name = f"{endpoint.metadata.namespace}.{endpoint.metadata.name}.{model}".replace("/", "_")
            scripted_model.register({name: scripted_model.load_script({"turns": endpoint.spec.script})})
            return f"{scripted_model.PROVIDER}/{name}"
        path = endpoint.spec.options.get("script")
        if path:
            if not Path(path).is_absolute():
                raise ValueError(f"options.script must be an absolute path, got {path!r}")
            scripted_model.register({model: scripted_model.load_script(Path(path))})
        elif model not in scripted_model.registered():  # no script anywhere: the model answers "done" at once
            scripted_model.register({model: scripted_model.Script(turns=())})
    except (OSError, TypeError, ValueError) as exc:
        raise TaskFailed(f"scripted model {model}: {exc}", permanent=True) from None
    return f"{scripted_model.PROVIDER}/{model}"


def _function(name: str, tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": tool.spec.description,
            "parameters": tool.spec.input_schema or {"type": "object"},
        },
    }


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def assistant_message(content: str | None, calls: Sequence[Any]) -> dict[str, Any]:
    """The assistant turn fed back to the model: its text and its tool calls (OpenAI format)."""
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments or ""},
            }
            for c in calls
        ],
    }
