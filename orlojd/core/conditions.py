"""kstatus-style conditions: Ready, Reconciling, Stalled, each with reason and message.

Pure values; the store keeps them as JSON and `orlojd status` prints them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Reason(StrEnum):
    APPLIED = "Applied"
    APPLY_FAILED = "ApplyFailed"
    PROGRESSING = "Progressing"
    INVALID = "ValidationFailed"
    PRUNE_SKIPPED = "PruneSkipped"


@dataclass(frozen=True, slots=True)
class Condition:
    type: ConditionType
    status: bool
    reason: Reason
    message: str
    observed_generation: int
    last_applied_revision: str
    last_transition_time: str

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = self.type.value
        data["status"] = "True" if self.status else "False"
        data["reason"] = self.reason.value
        return {
            "type": data["type"],
            "status": data["status"],
            "reason": data["reason"],
            "message": data["message"],
            "observedGeneration": data["observed_generation"],
            "lastAppliedRevision": data["last_applied_revision"],
            "lastTransitionTime": data["last_transition_time"],
        }


def applied_conditions(generation: int, revision: str, now_iso: str) -> list[Condition]:
    """An object written by a successful apply: Ready, not reconciling, not stalled."""
    message = f"applied at revision {revision[:12]}"
    return [
        Condition(ConditionType.READY, True, Reason.APPLIED, message, generation, revision, now_iso),
        Condition(ConditionType.RECONCILING, False, Reason.APPLIED, message, generation, revision, now_iso),
        Condition(ConditionType.STALLED, False, Reason.APPLIED, message, generation, revision, now_iso),
    ]
