"""The pure plan driven with both sides as objects, as several test modules use it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orlojd.core.keys import ResourceKey
from orlojd.core.plan import Plan, PruneOptions
from orlojd.core.plan import plan as plan_objects


@dataclass(frozen=True)
class Entry:
    """One object as the plan sees it: identity, digest and normalised body."""

    key: ResourceKey
    digest: str
    body: Mapping[str, Any]


def plan(
    desired: Mapping[ResourceKey, Entry],
    actual: Mapping[ResourceKey, Entry],
    refs: Mapping[ResourceKey, Sequence[ResourceKey]],
    prune: PruneOptions,
) -> Plan:
    """core.plan.plan with the applied side given as objects (split into digests and bodies)."""
    digests = {k: e.digest for k, e in actual.items()}
    bodies = {k: e.body for k, e in actual.items()}
    return plan_objects(desired, digests, bodies, refs, prune)
