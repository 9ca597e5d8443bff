"""What one Task run asks of the queue: priority, attempts, routing, deadlines; as data.

Pure: ``run_parameters`` takes a Task's normalised body (``mode: run``, or a schedule's
template), its Agent's body (None for an AgentSystem task or a missing agent) and the
revision, and returns ``RunParameters``; apply and the scheduler both enqueue through it, so
a run is the same whichever way it was started. The retry policy travels in the payload, so
a worker backs off as the manifest says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orlojd.core.durations import parse_ms
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import RetryPolicy
from orlojd.core.manifests.tasks import TaskRequirements


@dataclass(frozen=True, slots=True)
class RunParameters:
    payload: dict[str, Any]
    priority: int = 3
    max_attempts: int = 3
    agent: str | None = None
    agent_cap: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    deadline: timedelta | None = None
    attempt_timeout: timedelta | None = None

    def enqueue_options(self, now: datetime) -> dict[str, Any]:
        """Keyword arguments for ``TaskQueue.enqueue_run`` (besides key, digest and ``now``)."""
        return {
            "payload": self.payload,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "agent": self.agent,
            "agent_cap": self.agent_cap,
            "labels": self.labels,
            "deadline_at": None if self.deadline is None else now + self.deadline,
            "attempt_timeout": self.attempt_timeout,
        }


def agent_key(task_key: ResourceKey, task_spec: dict[str, Any]) -> ResourceKey | None:
    """The Agent a Task runs (``ns/name`` or ``name`` in the Task's namespace); None for a system task."""
    ref = task_spec.get("agent")
    if not ref:
        return None
    namespace, _, name = str(ref).rpartition("/")
    return ResourceKey("Agent", namespace or task_key.namespace, name)


def _duration(value: Any) -> timedelta | None:
    return None if not value else timedelta(milliseconds=parse_ms(str(value)))


def run_parameters(
    task_key: ResourceKey,
    task_body: dict[str, Any],
    agent_body: dict[str, Any] | None,
    revision: str,
    extra: dict[str, Any] | None = None,
) -> RunParameters:
    """The queue row for one run of ``task_body``; ``extra`` joins the payload (a schedule's slot)."""
    spec = task_body.get("spec", {})
    agent_spec = (agent_body or {}).get("spec", {})
    retry = spec.get("retry") or agent_spec.get("retry") or RetryPolicy().model_dump(by_alias=True, mode="json")
    limits = agent_spec.get("limits", {})
    wanted = TaskRequirements.model_validate(spec.get("requirements") or {}).worker_labels()
    agent = agent_key(task_key, spec)
    payload = {"task": task_body, "revision": revision, "retry": retry, **(extra or {})}
    return RunParameters(
        payload=payload,
        priority=int(spec.get("priority", 3)),
        max_attempts=int(retry.get("maxAttempts", RetryPolicy().max_attempts)),
        agent=None if agent is None else str(agent),
        agent_cap=limits.get("maxConcurrentRuns"),
        labels=wanted,
        deadline=_duration(spec.get("deadline")),
        attempt_timeout=_duration(limits.get("timeout")),
    )
