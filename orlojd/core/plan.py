"""The plan: desired objects paired with applied ones, each given an action, in apply order.

Pure. Pair first (key, desired | None, actual | None), then decide per pair:
created / configured / unchanged / deleted / skipped. Digests decide what changed;
deepdiff runs only on pairs whose digests differ and its output is wrapped into our
own frozen ``FieldChange`` values (no deepdiff object leaves this module). Order
follows references (a target before what refers to it), ties broken by stage:
Policy -> ModelEndpoint/Secret -> Tool -> Agent -> AgentSystem -> Task/TaskSchedule.
Deletions run in reverse. Prune guards live here too, so a plan that would delete
is always the same plan that apply executes.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from deepdiff import DeepDiff

from orlojd.core.annotations import PRUNE, PRUNE_CONFIRM, PRUNE_DISABLED
from orlojd.core.diagnostics import format_path
from orlojd.core.keys import ResourceKey

STAGES: dict[str, int] = {
    "Policy": 0,
    "AgentPolicy": 0,
    "AgentRole": 0,
    "ToolPermission": 0,
    "ModelEndpoint": 1,
    "Secret": 1,
    "Memory": 1,
    "McpServer": 1,
    "Worker": 1,
    "Tool": 2,
    "Agent": 3,
    "AgentSystem": 4,
    "Task": 5,
    "TaskSchedule": 5,
    "TaskWebhook": 5,
    "ToolApproval": 5,
}


class Action(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs: 'spec.tools[0].permissions[1]' added, removed or changed."""

    path: str
    op: str
    old: Any = None
    new: Any = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One side of a pair: the digest and the normalised body (defaults filled)."""

    key: ResourceKey
    digest: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    key: ResourceKey
    action: Action
    diff: tuple[FieldChange, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PruneOptions:
    enabled: bool = False
    confirmed: bool = False
    max_percent: int = 25
    max_count: int = 50


@dataclass(frozen=True)
class Plan:
    """What apply will do, in order, and why it may refuse."""

    changes: tuple[Change, ...]
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    @property
    def has_changes(self) -> bool:
        return any(c.action in (Action.CREATED, Action.CONFIGURED, Action.DELETED) for c in self.changes)

    @property
    def summary(self) -> dict[str, int]:
        return {
            "create": self.count(Action.CREATED),
            "update": self.count(Action.CONFIGURED),
            "delete": self.count(Action.DELETED),
            "unchanged": self.count(Action.UNCHANGED),
            "skipped": self.count(Action.SKIPPED),
        }


def stage_of(kind: str) -> int:
    return STAGES.get(kind, 5)


def diff_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Field-level differences of two normalised bodies, sorted by path."""
    delta = DeepDiff(old, new, view="tree", ignore_order=False, threshold_to_diff_deeper=0)
    out: list[FieldChange] = []
    for report, levels in delta.items():
        op = "added" if report.endswith("_added") else "removed" if report.endswith("_removed") else "changed"
        for level in levels:
            path = format_path(tuple(level.path(output_format="list")))
            old_value = None if op == "added" else _plain(level.t1)
            new_value = None if op == "removed" else _plain(level.t2)
            out.append(FieldChange(path, op, old_value, new_value))
    return tuple(sorted(out, key=lambda c: c.path))


def _plain(value: Any) -> Any:
    return None if type(value).__name__ == "NotPresent" else value


def order(keys: Sequence[ResourceKey], refs: Mapping[ResourceKey, Sequence[ResourceKey]]) -> list[ResourceKey]:
    """Apply order: every referenced object before its referrers; raises CycleError on a cycle."""
    present = set(keys)
    waiting: dict[ResourceKey, int] = dict.fromkeys(keys, 0)
    dependents: dict[ResourceKey, list[ResourceKey]] = {k: [] for k in keys}
    for source in keys:
        for target in set(refs.get(source, ())):
            if target in present and target != source:
                waiting[source] += 1
                dependents[target].append(source)
            elif target == source:
                raise CycleError([source, source])
    ready = [(stage_of(k.kind), k) for k, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[ResourceKey] = []
    while ready:
        _, key = heapq.heappop(ready)
        out.append(key)
        for dependent in dependents[key]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, (stage_of(dependent.kind), dependent))
    if len(out) != len(keys):
        stuck = {k for k, n in waiting.items() if n > 0}
        raise CycleError(_find_cycle(stuck, refs))
    return out


class CycleError(ValueError):
    """References that go round in a circle: nothing in the circle can be applied first."""

    def __init__(self, cycle: list[ResourceKey]) -> None:
        self.cycle = cycle
        super().__init__("reference cycle: " + " -> ".join(k.short for k in cycle))


def _find_cycle(stuck: set[ResourceKey], refs: Mapping[ResourceKey, Sequence[ResourceKey]]) -> list[ResourceKey]:
    start = min(stuck)
    path: list[ResourceKey] = []
    seen: dict[ResourceKey, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(t for t in refs.get(node, ()) if t in stuck)
    return [*path[seen[node] :], node]


def plan(
    desired: Mapping[ResourceKey, Entry],
    actual: Mapping[ResourceKey, Entry],
    refs: Mapping[ResourceKey, Sequence[ResourceKey]],
    prune: PruneOptions,
) -> Plan:
    """Pair desired with actual and decide every object's action, with prune guards applied."""
    errors: list[str] = []
    try:
        apply_order = order(sorted(desired), refs)
    except CycleError as exc:
        return Plan((), (f"{exc}; break the cycle by removing one of these references",))
    changes: list[Change] = []
    for key in apply_order:
        new, old = desired[key], actual.get(key)
        if old is None:
            changes.append(Change(key, Action.CREATED, diff_fields({}, new.body)))
        elif old.digest == new.digest:
            changes.append(Change(key, Action.UNCHANGED))
        else:
            changes.append(Change(key, Action.CONFIGURED, diff_fields(old.body, new.body)))
    gone = sorted((k for k in actual if k not in desired), key=lambda k: (stage_of(k.kind), k), reverse=True)
    deletions: list[Change] = []
    for key in gone:
        annotation = actual[key].body.get("metadata", {}).get("annotations", {}).get(PRUNE)
        removed = diff_fields(actual[key].body, {})
        if not prune.enabled:
            deletions.append(Change(key, Action.SKIPPED, removed, "prune is off in orlojd.yaml (prune.enabled)"))
        elif annotation == PRUNE_DISABLED:
            deletions.append(Change(key, Action.SKIPPED, removed, f"annotation {PRUNE}: {PRUNE_DISABLED}"))
        elif annotation == PRUNE_CONFIRM and not prune.confirmed:
            deletions.append(
                Change(key, Action.SKIPPED, removed, f"annotation {PRUNE}: {PRUNE_CONFIRM}; rerun with --confirm-prune")
            )
        else:
            deletions.append(Change(key, Action.DELETED, removed))
    deleting = sum(1 for c in deletions if c.action is Action.DELETED)
    if deleting and not prune.confirmed:
        if not desired:
            errors.append(
                f"refusing to delete all {deleting} applied objects: the revision declares none "
                "(a vanished folder or a bad path?); rerun with --confirm-prune if that is intended"
            )
        elif deleting > prune.max_count or deleting * 100 > prune.max_percent * max(len(actual), 1):
            errors.append(
                f"circuit breaker: this revision deletes {deleting} of {len(actual)} applied objects, over the "
                f"limit of {prune.max_percent}% or {prune.max_count}; review it, then rerun with --confirm-prune"
            )
    return Plan(tuple(changes + deletions), tuple(errors))
