"""Plans: a revision against the applied inventory, or a pull request's head against its base.

Each function lists its steps; the pure core decides (core.plan, core.effective,
core.governance_diff). A ``Planner`` keeps the last loaded commit, so the next plan
reads and parses only the paths ``git diff --name-only`` names, and reads from the
store only digests plus the bodies of objects that changed. A pull-request plan
(``plan_pull_request``) reads two commits and nothing else: no store, no writes,
policies taken from the base revision.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from orlojd.adapters.store import Store
from orlojd.core.desired import Desired
from orlojd.core.effective import all_effective
from orlojd.core.governance_diff import GovernanceChange, compare_agents, compare_policies
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.tools import Secret
from orlojd.core.plan import Action, Plan, PruneOptions, plan
from orlojd.engine.workspace import Workspace, fingerprint
from orlojd.render import PlanReport
from orlojd.sources import LoadedRevision, load_incremental, load_revision

Bodies = Mapping[ResourceKey, Mapping[str, Any]]
GOVERNING_KINDS = frozenset({"Policy", "AgentPolicy", "ModelEndpoint"})
"""Kinds whose change can alter any agent's effective rights."""


@dataclass(frozen=True)
class PlannedRevision:
    """A report plus what apply needs to carry it out."""

    report: PlanReport
    desired: Desired
    digests: dict[ResourceKey, str]


class _Targets(Mapping[ResourceKey, Sequence[ResourceKey]]):
    """Reference targets of each declared object, computed only for the objects the plan asks about."""

    def __init__(self, desired: Desired) -> None:
        self._objects = desired.objects

    def __getitem__(self, key: ResourceKey) -> Sequence[ResourceKey]:
        return [r.target for r in self._objects[key].refs]

    def __iter__(self) -> Iterator[ResourceKey]:
        return iter(self._objects)

    def __len__(self) -> int:
        return len(self._objects)


def _kept(result: Plan, bodies: Mapping[ResourceKey, Mapping[str, Any]]) -> dict[ResourceKey, Mapping[str, Any]]:
    """Objects gone from git whose deletion is skipped: they stay applied, so governance still counts them."""
    return {c.key: bodies[c.key] for c in result.changes if c.action is Action.SKIPPED and c.key in bodies}


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


def _prune(ws: Workspace, confirmed: bool) -> PruneOptions:
    prune = ws.settings.prune
    return PruneOptions(prune.enabled, confirmed, prune.max_delete_percent, prune.max_delete_count)


def governance(before: Bodies, after: Bodies) -> list[GovernanceChange]:
    """Agents' effective rights before and after, each side under its own policies."""
    return compare_agents(all_effective(before), all_effective(after)) + compare_policies(before, after)


def pull_request_governance(base: Bodies, head: Bodies) -> list[GovernanceChange]:
    """Head agents judged by base policies; the policy change itself shown as pending."""
    judged = all_effective(head, policy_bodies=base)
    main = compare_agents(all_effective(base), judged)
    pending = compare_agents(judged, all_effective(head)) + compare_policies(base, head)
    return main + [GovernanceChange(g.agent, g.change, g.widening, g.category, g.policy, pending=True) for g in pending]


class Planner:
    """Plans successive revisions of one workspace against its store, reusing what it read.

    The last commit's files stay parsed (``load_incremental``), and the inventory's
    digests are read again only when the store's inventory fingerprint has moved.
    """

    def __init__(self, ws: Workspace, store: Store) -> None:
        self.ws = ws
        self.store = store
        self.loaded: LoadedRevision | None = None
        self._digests: tuple[str, dict[ResourceKey, str]] | None = None

    def forget_inventory(self) -> None:
        """Read the inventory's digests again on the next plan (a resync looking for drift)."""
        self._digests = None

    def _inventory(self) -> tuple[str | None, str, dict[ResourceKey, str]]:
        meta = self.store.meta_all()
        applied = meta.get("applied_revision")
        stored = meta.get("inventory_fingerprint")
        if stored is not None and self._digests is not None and self._digests[0] == stored:
            return applied, stored, self._digests[1]
        digests = self.store.inventory_digests_all()
        current = fingerprint(digests, applied)
        self._digests = (current, digests)
        return applied, current, digests

    def plan(self, rev: str, confirm_prune: bool = False) -> PlannedRevision:
        self.loaded = load_incremental(self.ws.path, rev, self.loaded)
        desired, commit = self.loaded.desired, self.loaded.commit
        applied, inventory_fingerprint, digests = self._inventory()
        warnings = tuple(d.format() for d in desired.warnings)
        if not desired.ok:
            report = PlanReport(
                Plan((), _invalid(desired)), (), applied, commit, "inventory", inventory_fingerprint, warnings
            )
            return PlannedRevision(report, desired, digests)
        changed = {k for k, lo in desired.objects.items() if digests.get(k) != lo.digest}
        changed |= {k for k in digests if k not in desired.objects}
        broad = any(k.kind in GOVERNING_KINDS for k in changed)
        kinds = {"Agent", *GOVERNING_KINDS} if broad else set(GOVERNING_KINDS)
        old_bodies = self.store.inventory_bodies_some(changed & digests.keys(), kinds)
        result = plan(
            desired.objects,
            digests,
            old_bodies,
            _Targets(desired),
            _prune(self.ws, confirm_prune),
            self.store.suspended_all(),
        )
        result = replace(
            result, errors=result.errors + _literal_secrets(desired, self.ws.settings.secrets.allow_literal)
        )
        # The governance diff needs governing objects and the agents that may have changed.
        wanted = None if broad else {k for k in changed if k.kind == "Agent"}
        before: dict[ResourceKey, Mapping[str, Any]] = {
            k: b for k, b in old_bodies.items() if k.kind in GOVERNING_KINDS or wanted is None or k in wanted
        }
        after: dict[ResourceKey, Mapping[str, Any]] = {
            k: lo.body
            for k, lo in desired.objects.items()
            if k.kind in GOVERNING_KINDS or (k.kind == "Agent" and (wanted is None or k in wanted))
        }
        after.update(_kept(result, before))
        report = PlanReport(
            result, tuple(governance(before, after)), applied, commit, "inventory", inventory_fingerprint, warnings
        )
        return PlannedRevision(report, desired, digests)


def plan_revision(ws: Workspace, store: Store, rev: str, confirm_prune: bool = False) -> PlannedRevision:
    """The commit ``rev`` against the applied inventory in ``store`` (a cold, one-off Planner)."""
    return Planner(ws, store).plan(rev, confirm_prune)


def plan_pull_request(ws: Workspace, base: str, head: str) -> PlanReport:
    """Head against base: a pure evaluation of two commits. Nothing is read from or written to a store."""
    base_desired, base_snap = load_revision(ws.path, base)
    head_desired, head_snap = load_revision(ws.path, head)
    assert base_snap.commit is not None and head_snap.commit is not None
    warnings = tuple(d.format() for d in head_desired.warnings)
    if not head_desired.ok:
        return PlanReport(
            Plan((), _invalid(head_desired)), (), base_snap.commit, head_snap.commit, "pull_request", None, warnings
        )
    base_digests = {k: lo.digest for k, lo in base_desired.objects.items()}
    base_bodies = {k: lo.body for k, lo in base_desired.objects.items()}
    result = plan(head_desired.objects, base_digests, base_bodies, _Targets(head_desired), _prune(ws, False))
    result = replace(result, errors=result.errors + _literal_secrets(head_desired, ws.settings.secrets.allow_literal))
    head_bodies: dict[ResourceKey, Mapping[str, Any]] = {k: lo.body for k, lo in head_desired.objects.items()}
    head_bodies.update(_kept(result, base_bodies))
    changes = pull_request_governance(base_bodies, head_bodies)
    return PlanReport(result, tuple(changes), base_snap.commit, head_snap.commit, "pull_request", None, warnings)
