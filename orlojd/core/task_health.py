"""Conditions of a queued task that a person should see: waiting too long, paused, unschedulable.

Pure: ``task_conditions`` takes the row's facts, ``now``, the queue-wait threshold and whether
any live worker offers the labels the task requires, and returns the conditions that hold
(an empty list when all is well). `orlojd task list|show` and `orlojd status` print them;
the daemon logs ``QueueWaitExceeded`` when it first notices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class TaskCondition:
    type: str  # QueueWaitExceeded | Paused | Unschedulable
    message: str

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "status": "True", "message": self.message}


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def task_conditions(
    *,
    state: str,
    paused: bool,
    available_at: datetime,
    labels: dict[str, str],
    now: datetime,
    queue_wait: timedelta,
    labels_offered: bool,
) -> list[TaskCondition]:
    """What holds for a task in ``state`` at ``now`` (only pending tasks can wait or be unschedulable)."""
    found: list[TaskCondition] = []
    if paused and state in ("pending", "running", "waiting_approval"):
        found.append(TaskCondition("Paused", "paused: no new attempt starts until `orlojd task resume`"))
    if state != "pending" or paused:
        return found
    if labels and not labels_offered:
        found.append(
            TaskCondition(
                "Unschedulable",
                f"no live worker offers {_labels(labels)}; start one with: orlojd worker "
                + " ".join(f"--label {k}={v}" for k, v in sorted(labels.items())),
            )
        )
    waited = now - available_at
    if waited > queue_wait:
        found.append(
            TaskCondition(
                "QueueWaitExceeded",
                f"due for {int(waited.total_seconds())}s (threshold {int(queue_wait.total_seconds())}s): "
                "add workers, raise workers.size, or check per-agent caps",
            )
        )
    return found
