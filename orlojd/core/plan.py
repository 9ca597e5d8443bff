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
from typing import Any, NamedTuple, Protocol

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


class Declared(Protocol):
    """A desired object as the plan sees it: its digest and normalised body (defaults filled)."""

    @property
    def digest(self) -> str: ...

    @property
    def body(self) -> Mapping[str, Any]: ...


class Change(NamedTuple):
    """One object's action, with its field diff (a NamedTuple: plans hold thousands)."""

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
    """What apply will do, in order, and why it may refuse.

    ``changes`` holds every object that is created, configured, deleted or whose
    deletion is skipped, in apply order; ``unchanged`` only the identities of the rest
    (a plan of 10,000 objects with one change holds one Change, not 10,000).
    """

    changes: tuple[Change, ...]
    errors: tuple[str, ...] = ()
    unchanged: tuple[ResourceKey, ...] = field(default=())

    def count(self, action: Action) -> int:
        if action is Action.UNCHANGED:
            return len(self.unchanged)
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


def _reachable(
    start: Sequence[ResourceKey], refs: Mapping[ResourceKey, Sequence[ResourceKey]], present: Mapping[ResourceKey, Any]
) -> list[ResourceKey]:
    """``start`` and every declared object reachable from it through references."""
    seen = dict.fromkeys(start)
    stack = list(start)
    while stack:
        for target in refs.get(stack.pop(), ()):
            if target in present and target not in seen:
                seen[target] = None
                stack.append(target)
    return list(seen)


def _suspension(key: ResourceKey, body: Mapping[str, Any], suspended: frozenset[ResourceKey]) -> str:
    """Why ``key`` must not be changed now, or '' when it may."""
    if key in suspended:
        return "suspended with 'orlojd suspend'; resume with 'orlojd resume'"
    if body.get("spec", {}).get("suspend") is True:
        return "suspended (spec.suspend: true)"
    return ""


def _whole(body: Mapping[str, Any], op: str) -> tuple[FieldChange, ...]:
    """A created or deleted object's fields, top level only (no deep diff needed)."""
    if op == "added":
        return tuple(FieldChange(k, op, None, v) for k, v in sorted(body.items()))
    return tuple(FieldChange(k, op, v, None) for k, v in sorted(body.items()))


def plan(
    desired: Mapping[ResourceKey, Declared],
    actual_digests: Mapping[ResourceKey, str],
    actual_bodies: Mapping[ResourceKey, Mapping[str, Any]],
    refs: Mapping[ResourceKey, Sequence[ResourceKey]],
    prune: PruneOptions,
    suspended: frozenset[ResourceKey] = frozenset(),
) -> Plan:
    """Pair desired with applied objects by identity and decide every object's action.

    ``actual_bodies`` is needed only for objects whose digest differs or that are gone;
    ``refs`` is read only for objects reachable from a changing one. A new reference cycle
    must pass through a changing object (apply refuses cycles), so ordering the objects
    reachable from the changing ones finds every cycle without walking the whole graph.

    A suspended object (``spec.suspend: true`` in git or in the applied copy, or named in
    ``suspended`` by ``orlojd suspend``) is planned and shown with its diff, but skipped.
    """
    changing = [k for k, d in desired.items() if actual_digests.get(k) != d.digest]
    try:
        apply_order = order(_reachable(changing, refs, desired), refs)
    except CycleError as exc:
        return Plan((), (f"{exc}; break the cycle by removing one of these references",))
    moving = set(changing)
    apply_order = [k for k in apply_order if k in moving]
    changes: list[Change] = []
    for key in apply_order:
        new = desired[key]
        hold = _suspension(key, new.body, suspended)
        if key not in actual_digests:
            change = Change(key, Action.CREATED, _whole(new.body, "added"))
        else:
            change = Change(key, Action.CONFIGURED, diff_fields(actual_bodies.get(key, {}), new.body))
        # Switching suspend itself on is applied (so the applied copy, and the scheduler, know);
        # any other change to a suspended object waits.
        if hold and not (change.action is Action.CONFIGURED and [f.path for f in change.diff] == ["spec.suspend"]):
            change = change._replace(action=Action.SKIPPED, reason=hold)
        changes.append(change)
    unchanged = tuple(k for k, d in desired.items() if actual_digests.get(k) == d.digest)
    gone = sorted((k for k in actual_digests if k not in desired), key=lambda k: (stage_of(k.kind), k), reverse=True)
    deletions: list[Change] = []
    for key in gone:
        body = actual_bodies.get(key, {})
        annotation = body.get("metadata", {}).get("annotations", {}).get(PRUNE)
        removed = _whole(body, "removed")
        hold = _suspension(key, body, suspended)
        if hold:
            deletions.append(Change(key, Action.SKIPPED, removed, hold))
        elif not prune.enabled:
            deletions.append(Change(key, Action.SKIPPED, removed, "prune is off in orlojd.yaml (prune.enabled)"))
        elif annotation == PRUNE_DISABLED:
            deletions.append(Change(key, Action.SKIPPED, removed, f"annotation {PRUNE}: {PRUNE_DISABLED}"))
        elif annotation == PRUNE_CONFIRM and not prune.confirmed:
            deletions.append(
                Change(key, Action.SKIPPED, removed, f"annotation {PRUNE}: {PRUNE_CONFIRM}; rerun with --confirm-prune")
            )
        else:
            deletions.append(Change(key, Action.DELETED, removed))
    guard = _prune_guard(deletions, len(desired), len(actual_digests), prune)
    return Plan(tuple(changes + deletions), guard, unchanged)


def _prune_guard(deletions: Sequence[Change], desired: int, applied: int, prune: PruneOptions) -> tuple[str, ...]:
    deleting = sum(1 for c in deletions if c.action is Action.DELETED)
    if not deleting or prune.confirmed:
        return ()
    if not desired:
        return (
            f"refusing to delete all {deleting} applied objects: the revision declares none "
            "(a vanished folder or a bad path?); rerun with --confirm-prune if that is intended",
        )
    if deleting > prune.max_count or deleting * 100 > prune.max_percent * max(applied, 1):
        return (
            f"circuit breaker: this revision deletes {deleting} of {applied} applied objects, over the "
            f"limit of {prune.max_percent}% or {prune.max_count}; review it, then rerun with --confirm-prune",
        )
    return ()
