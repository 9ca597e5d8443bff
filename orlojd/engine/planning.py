"""Plans: a revision against the applied inventory, or a pull request's head against its base.

Each function lists its steps; the pure core decides (core.plan, core.effective,
core.governance_diff). A pull-request plan (``plan_pull_request``) reads two commits
and nothing else: no store, no writes, policies taken from the base revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orlojd.adapters.store import InventoryRecord, Store
from orlojd.core.desired import Desired
from orlojd.core.effective import all_effective
from orlojd.core.governance_diff import GovernanceChange, compare_agents, compare_policies
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.tools import Secret
from orlojd.core.plan import Entry, Plan, PruneOptions, plan
from orlojd.core.references import references
from orlojd.engine.workspace import Workspace, fingerprint
from orlojd.render import PlanReport
from orlojd.sources import load_revision

Bodies = Mapping[ResourceKey, Mapping[str, Any]]


@dataclass(frozen=True)
class PlannedRevision:
    """A report plus what apply needs to carry it out."""

    report: PlanReport
    desired: Desired
    inventory: dict[ResourceKey, InventoryRecord]


def _entries(desired: Desired) -> dict[ResourceKey, Entry]:
    return {k: Entry(k, lo.digest, lo.body) for k, lo in desired.objects.items()}


def _refs(desired: Desired) -> dict[ResourceKey, list[ResourceKey]]:
    return {k: [r.target for r in references(lo.obj)] for k, lo in desired.objects.items()}


def _invalid(desired: Desired) -> tuple[str, ...]:
    return tuple(d.format() for d in desired.errors)


def _literal_secrets(desired: Desired, allowed: bool) -> tuple[str, ...]:
    if allowed:
        return ()
    return tuple(
        f"{lo.key.short} at {lo.file}:{lo.line} holds a literal value; apply refuses it. Use env, file or "
        "systemdCredential, or set secrets.allowLiteral: true in orlojd.yaml"
        for lo in desired.objects.values()
        if isinstance(lo.obj, Secret) and lo.obj.spec.is_literal
    )


def governance(before: Bodies, after: Bodies) -> list[GovernanceChange]:
    """Agents' effective rights before and after, each side under its own policies."""
    return compare_agents(all_effective(before), all_effective(after)) + compare_policies(before, after)


def pull_request_governance(base: Bodies, head: Bodies) -> list[GovernanceChange]:
    """Head agents judged by base policies; the policy change itself shown as pending."""
    judged = all_effective(head, policy_bodies=base)
    main = compare_agents(all_effective(base), judged)
    pending = compare_agents(judged, all_effective(head)) + compare_policies(base, head)
    return main + [GovernanceChange(g.agent, g.change, g.widening, g.category, g.policy, pending=True)
                   for g in pending]


def plan_revision(ws: Workspace, store: Store, rev: str, confirm_prune: bool = False) -> PlannedRevision:
    """The commit ``rev`` against the applied inventory in ``store``."""
    desired, snapshot = load_revision(ws.path, rev)
    inventory = store.inventory_all()
    applied = store.applied_revision_one()
    assert snapshot.commit is not None
    prune = PruneOptions(ws.settings.prune.enabled, confirm_prune, ws.settings.prune.max_delete_percent,
                         ws.settings.prune.max_delete_count)
    if not desired.ok:
        result = Plan((), _invalid(desired))
        changes: list[GovernanceChange] = []
    else:
        actual = {k: Entry(k, r.digest, r.body) for k, r in inventory.items()}
        result = plan(_entries(desired), actual, _refs(desired), prune)
        result = Plan(result.changes, result.errors + _literal_secrets(desired, ws.settings.secrets.allow_literal))
        before = {k: r.body for k, r in inventory.items()}
        after = {k: lo.body for k, lo in desired.objects.items()}
        changes = governance(before, after)
    report = PlanReport(result, tuple(changes), applied, snapshot.commit, "inventory",
                        fingerprint(inventory, applied), tuple(d.format() for d in desired.warnings))
    return PlannedRevision(report, desired, inventory)


def plan_pull_request(ws: Workspace, base: str, head: str) -> PlanReport:
    """Head against base: a pure evaluation of two commits. Nothing is read from or written to a store."""
    base_desired, base_snap = load_revision(ws.path, base)
    head_desired, head_snap = load_revision(ws.path, head)
    assert base_snap.commit is not None and head_snap.commit is not None
    warnings = tuple(d.format() for d in head_desired.warnings)
    if not head_desired.ok:
        return PlanReport(Plan((), _invalid(head_desired)), (), base_snap.commit, head_snap.commit,
                          "pull_request", None, warnings)
    prune = PruneOptions(ws.settings.prune.enabled, False, ws.settings.prune.max_delete_percent,
                         ws.settings.prune.max_delete_count)
    result = plan(_entries(head_desired), _entries(base_desired), _refs(head_desired), prune)
    result = Plan(result.changes, result.errors + _literal_secrets(head_desired, ws.settings.secrets.allow_literal))
    base_bodies = {k: lo.body for k, lo in base_desired.objects.items()}
    head_bodies = {k: lo.body for k, lo in head_desired.objects.items()}
    changes = pull_request_governance(base_bodies, head_bodies)
    return PlanReport(result, tuple(changes), base_snap.commit, head_snap.commit, "pull_request", None, warnings)
