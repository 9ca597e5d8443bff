"""The governance diff: who gains or loses which permission, approval, budget or model.

Pure. Compares effective rights per agent (core.effective) before and after a change,
and each Policy's own rules, and marks every finding that widens what an agent may do.
A reviewer reads this section first; `orlojd plan` exits 3 when any finding widens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from orlojd.core.effective import BUDGETS, Effective, Pair
from orlojd.core.keys import ResourceKey


@dataclass(frozen=True, slots=True)
class GovernanceChange:
    """One finding. ``agent`` is None for a finding about a Policy's own rules."""

    agent: str | None
    change: str
    widening: bool
    category: str
    policy: str | None = None
    pending: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "change": self.change,
            "widening": self.widening,
            "category": self.category,
            "policy": self.policy,
            "pending": self.pending,
        }


def _fmt(pair: Pair) -> str:
    return f"{pair[0]}:{pair[1]}"


def _limit(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g}"


def compare_agents(before: Mapping[str, Effective], after: Mapping[str, Effective]) -> list[GovernanceChange]:
    """Findings per agent, in agent order."""
    out: list[GovernanceChange] = []
    for name in sorted(set(before) | set(after)):
        out.extend(_agent(name, before.get(name), after.get(name)))
    return out


def _agent(name: str, old: Effective | None, new: Effective | None) -> Iterator[GovernanceChange]:
    if new is None:
        yield GovernanceChange(name, "agent removed: all its permissions are revoked", False, "agent")
        return
    if old is None:
        yield GovernanceChange(name, f"new agent using model {new.model}", True, "agent")
    old_tools = old.tools if old else {}
    for tool in sorted(set(old_tools) | set(new.tools)):
        if tool not in old_tools:
            pairs = ", ".join(_fmt(p) for p in sorted(new.tools[tool])) or "no resources"
            yield GovernanceChange(name, f"gains tool {tool} ({pairs})", True, "tool")
            continue
        if tool not in new.tools:
            yield GovernanceChange(name, f"loses tool {tool}", False, "tool")
            continue
        for pair in sorted(new.tools[tool] - old_tools[tool]):
            yield GovernanceChange(name, f"gains {_fmt(pair)} on tool {tool}", True, "permission")
        for pair in sorted(old_tools[tool] - new.tools[tool]):
            yield GovernanceChange(name, f"loses {_fmt(pair)} on tool {tool}", False, "permission")
    old_approvals = old.approvals if old else frozenset()
    for pair in sorted(old_approvals - new.approvals):
        yield GovernanceChange(name, f"no longer needs approval for {_fmt(pair)}", True, "approval")
    for pair in sorted(new.approvals - old_approvals):
        yield GovernanceChange(name, f"now needs approval for {_fmt(pair)}", False, "approval")
    if old is not None:
        for budget in BUDGETS:
            before, after = old.budgets.get(budget), new.budgets.get(budget)
            if before == after:
                continue
            raised = after is None or (before is not None and after > before)
            verb = "raised" if raised else "lowered"
            yield GovernanceChange(name, f"{budget} {verb}: {_limit(before)} -> {_limit(after)}", raised, "budget")
        if old.model != new.model:
            yield GovernanceChange(name, f"model changed: {old.model} -> {new.model}", False, "model")
        if old.allowed_models != new.allowed_models:
            wider = new.allowed_models is None or (
                old.allowed_models is not None and not new.allowed_models <= old.allowed_models
            )
            shown = "any" if new.allowed_models is None else ", ".join(sorted(new.allowed_models)) or "none"
            yield GovernanceChange(name, f"allowed models now {shown}", wider, "model")


Body = Mapping[str, Any]


def compare_policies(before: Mapping[ResourceKey, Body], after: Mapping[ResourceKey, Body]) -> list[GovernanceChange]:
    """Findings about each Policy's own rules: tightened or loosened."""
    out: list[GovernanceChange] = []
    keys = sorted(k for k in set(before) | set(after) if k.kind == "Policy")
    for key in keys:
        old, new = before.get(key), after.get(key)
        name = key.short
        if new is None:
            out.append(
                GovernanceChange(
                    None, f"{name} removed: its limits no longer apply (loosened)", True, "policy", key.name
                )
            )
        elif old is None:
            out.append(GovernanceChange(None, f"{name} added (tightened)", False, "policy", key.name))
        elif old != new:
            out.extend(
                GovernanceChange(None, f"{name}: {text}", wide, "policy", key.name)
                for text, wide in _policy_rules(old["spec"], new["spec"])
            )
    return out


def _pair_set(items: Any) -> set[Pair]:
    return {(a, r) for item in items or [] for a, r in item.items()}


def _policy_rules(old: Body, new: Body) -> Iterator[tuple[str, bool]]:
    for field, word in (("deny", "deny"), ("requireApproval", "approval required for")):
        for pair in sorted(_pair_set(old.get(field)) - _pair_set(new.get(field))):
            yield f"no longer {word} {_fmt(pair)} (loosened)", True
        for pair in sorted(_pair_set(new.get(field)) - _pair_set(old.get(field))):
            yield f"now {word} {_fmt(pair)} (tightened)", False
    for tool in sorted(set(old.get("blockedTools", [])) - set(new.get("blockedTools", []))):
        yield f"tool {tool} no longer blocked (loosened)", True
    for tool in sorted(set(new.get("blockedTools", [])) - set(old.get("blockedTools", []))):
        yield f"tool {tool} now blocked (tightened)", False
    for field in ("allow", "allowedTools", "allowedModels"):
        before, after = old.get(field), new.get(field)
        if field == "allowedModels":
            before, after = before or None, after or None
        if before == after:
            continue
        as_set = _pair_set if field == "allow" else (lambda v: set(v or []))
        wider = after is None or (before is not None and not as_set(after) <= as_set(before))
        yield f"{field} changed ({'loosened' if wider else 'tightened'})", wider
    old_budgets, new_budgets = old.get("budgets", {}), new.get("budgets", {})
    for budget in BUDGETS:
        before, after = old_budgets.get(budget), new_budgets.get(budget)
        if before != after:
            raised = after is None or (before is not None and after > before)
            yield (
                (
                    f"{budget} {'raised' if raised else 'lowered'}: {_limit(before)} -> {_limit(after)} "
                    f"({'loosened' if raised else 'tightened'})"
                ),
                raised,
            )
    if old.get("onDeny") != new.get("onDeny"):
        wider = new.get("onDeny") == "return_to_model"
        yield f"onDeny {old.get('onDeny')} -> {new.get('onDeny')}", wider
    if old.get("approval") != new.get("approval"):
        o, n = old.get("approval", {}), new.get("approval", {})
        before_set, after_set = set(o.get("approvers", [])), set(n.get("approvers", []))
        wider = (
            n.get("required", 1) < o.get("required", 1)
            or (bool(o.get("signed")) and not n.get("signed"))
            or (bool(before_set) and (not after_set or not after_set <= before_set))
        )
        yield f"approval rules changed ({'loosened' if wider else 'tightened'})", bool(wider)
    if old.get("selector") != new.get("selector"):
        yield "selector changed: the set of agents it governs may shrink (review)", True
    if old.get("auditLog") and not new.get("auditLog"):
        yield "audit log switched off (loosened)", True
