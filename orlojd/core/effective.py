"""Effective permissions of every agent: what it may do once every Policy has tightened it.

Pure, over normalised bodies (the same dicts the plan compares), so it works alike on
a commit, on the applied inventory and on a pull request's base and head. A Policy
only tightens: its ``allow`` is a ceiling that grants intersect with, ``deny`` and
``blockedTools`` remove, ``requireApproval`` adds, budgets take the minimum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from orlojd.core.keys import ResourceKey

BUDGETS = ("maxTokensPerMinute", "maxTokensPerRun", "maxTokensPerDay", "maxCostPerRun", "maxCostPerDay")
Pair = tuple[str, str]
Body = Mapping[str, Any]


@dataclass(frozen=True)
class Effective:
    """One agent's effective rights."""

    agent: str
    model: str
    tools: Mapping[str, frozenset[Pair]]
    approvals: frozenset[Pair]
    budgets: Mapping[str, float | None]
    allowed_models: frozenset[str] | None
    policies: tuple[str, ...]


def _pairs(items: Iterable[Mapping[str, str]]) -> set[Pair]:
    return {(access, resource) for item in items for access, resource in item.items()}


def _matches(pair: Pair, patterns: Iterable[Pair]) -> bool:
    return any(pair[0] == access and fnmatchcase(pair[1], resource) for access, resource in patterns)


def policy_selects(policy: Body, agent: Body) -> bool:
    """A Policy's selector: every given criterion must hold; an empty selector selects all."""
    selector = policy["spec"].get("selector", {})
    meta = agent["metadata"]
    if selector.get("namespaces") and meta["namespace"] not in selector["namespaces"]:
        return False
    if selector.get("agents") and meta["name"] not in selector["agents"]:
        return False
    labels = meta.get("labels", {})
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _orloj_global(policy: Body) -> bool:
    return bool(policy["spec"].get("applyMode") == "global")


def effective(
    agent: Body, policies: Iterable[Body], orloj_policies: Iterable[Body], endpoints: Mapping[ResourceKey, Body]
) -> Effective:
    """Effective rights of one agent under the given policies."""
    spec, meta = agent["spec"], agent["metadata"]
    chosen = [p for p in policies if policy_selects(p, agent)]
    orloj = [p for p in orloj_policies if _orloj_global(p)]
    blocked = {t for p in chosen for t in p["spec"].get("blockedTools", [])}
    blocked |= {t for p in orloj for t in p["spec"].get("blockedTools", [])}
    allow_lists = [set(p["spec"]["allowedTools"]) for p in chosen if p["spec"].get("allowedTools") is not None]
    ceilings = [_pairs(p["spec"]["allow"]) for p in chosen if p["spec"].get("allow") is not None]
    denied = {pair for p in chosen for pair in _pairs(p["spec"].get("deny", []))}
    tools: dict[str, frozenset[Pair]] = {}
    for grant in spec.get("tools", []):
        name = grant["name"]
        if name in blocked or any(name not in allowed for allowed in allow_lists):
            continue
        pairs = {
            pair
            for pair in _pairs(grant.get("permissions", []))
            if all(_matches(pair, ceiling) for ceiling in ceilings) and not _matches(pair, denied)
        }
        tools[name] = frozenset(pairs)
    approvals = _pairs(spec.get("governance", {}).get("requireApproval", []))
    approvals |= {pair for p in chosen for pair in _pairs(p["spec"].get("requireApproval", []))}
    budgets: dict[str, float | None] = {}
    for name in BUDGETS:
        values = [spec.get("governance", {}).get(name)] + [p["spec"].get("budgets", {}).get(name) for p in chosen]
        if name == "maxTokensPerRun":
            values += [p["spec"].get("maxTokensPerRun") or None for p in orloj]
        present = [v for v in values if v is not None]
        budgets[name] = min(present) if present else None
    model_lists = [set(p["spec"]["allowedModels"]) for p in [*chosen, *orloj] if p["spec"].get("allowedModels")]
    allowed_models = frozenset(set.intersection(*model_lists)) if model_lists else None
    return Effective(
        agent=_agent_name(meta),
        model=_model(spec, meta["namespace"], endpoints),
        tools=tools,
        approvals=frozenset(approvals),
        budgets=budgets,
        allowed_models=allowed_models,
        policies=tuple(sorted(p["metadata"]["name"] for p in chosen)),
    )


def _agent_name(meta: Mapping[str, str]) -> str:
    return meta["name"] if meta["namespace"] == "default" else f"{meta['namespace']}/{meta['name']}"


def _model(spec: Body, namespace: str, endpoints: Mapping[ResourceKey, Body]) -> str:
    ref = spec.get("modelRef")
    if not ref:
        return str(spec.get("model"))
    ns, _, name = ref.rpartition("/")
    endpoint = endpoints.get(ResourceKey("ModelEndpoint", ns or namespace, name))
    if endpoint is None:
        return f"{ref} (unresolved)"
    model = spec.get("model") or endpoint["spec"]["defaultModel"]
    return f"{endpoint['spec']['provider']}/{model}"


def all_effective(
    bodies: Mapping[ResourceKey, Body], policy_bodies: Mapping[ResourceKey, Body] | None = None
) -> dict[str, Effective]:
    """Effective rights of every Agent in ``bodies``; policies from ``policy_bodies`` if given."""
    source = bodies if policy_bodies is None else policy_bodies
    policies = [b for k, b in source.items() if k.kind == "Policy"]
    orloj = [b for k, b in source.items() if k.kind == "AgentPolicy"]
    endpoints = {k: b for k, b in bodies.items() if k.kind == "ModelEndpoint"}
    out: dict[str, Effective] = {}
    for key, body in bodies.items():
        if key.kind == "Agent":
            view = effective(body, policies, orloj, endpoints)
            out[view.agent] = view
    return out
