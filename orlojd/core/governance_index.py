"""The governance index: every agent's rights precomputed once, so a decision is a few dict lookups.

Pure. Built from manifest objects; the effective grants, approvals, budgets and allowed
models come from ``core.effective`` (the same notion the plan's governance diff uses);
this module only adds *where each rule came from* (provenance) and Orloj's role /
ToolPermission rules, resolved per (agent, tool, access) ahead of time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from orlojd.core.budgets import BudgetLimits, limits_of
from orlojd.core.digest import normalised
from orlojd.core.effective import Effective, Pair, effective, policy_selects
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.base import Access, ResourceKind, split_ref
from orlojd.core.manifests.policies import AgentPolicy, AgentRole, Policy, ToolApproval, ToolPermission
from orlojd.core.manifests.tasks import Task
from orlojd.core.manifests.tools import ModelEndpoint, Tool

ACCESSES = tuple(a.value for a in Access)


class Verdict(StrEnum):
    """Ordered from weakest to strictest: the strictest wins (deny > approval_required > allow)."""

    ALLOW = "allow"
    APPROVAL_REQUIRED = "approval_required"
    DENY = "deny"


STRICTNESS = {Verdict.ALLOW: 0, Verdict.APPROVAL_REQUIRED: 1, Verdict.DENY: 2}


@dataclass(frozen=True, slots=True)
class Provenance:
    """Which rule decided: an object key and a field path; ``absent`` when a missing entry denied."""

    key: ResourceKey | None
    path: str
    absent: bool = False

    def __str__(self) -> str:
        where = self.path if self.key is None else f"{self.key.short}:{self.path}" if self.path else self.key.short
        return f"no {where}" if self.absent else where


@dataclass(frozen=True, slots=True)
class OrlojToolRule:
    """Orloj's authorizer for one (agent, tool): a static denial, or a verdict per access class."""

    denial: tuple[str, Provenance] | None
    per_access: Mapping[str, tuple[Verdict, Provenance | None]]


@dataclass(frozen=True, slots=True)
class AgentIndex:
    key: ResourceKey
    view: Effective
    model: str | None
    grants: Mapping[str, tuple[int, frozenset[Pair]]]
    tool_blocks: Mapping[str, Provenance]
    pair_blocks: Mapping[tuple[str, Pair], Provenance]
    approvals: Mapping[Pair, Provenance]
    model_rules: tuple[tuple[frozenset[str], Provenance], ...]
    token_limit: tuple[int, Provenance] | None
    budgets: BudgetLimits
    orloj: Mapping[str, OrlojToolRule]
    agent_block: Provenance | None = None  # a global AgentPolicy blocks one of spec.tools: the agent stops


@dataclass(frozen=True, slots=True)
class GovernanceContext:
    """Everything a decision reads, indexed: agents by key, tools by (namespace, name), approvals."""

    agents: Mapping[ResourceKey, AgentIndex]
    tools: Mapping[tuple[str, str], Tool]
    approvals: Mapping[tuple[str, str], tuple[tuple[ResourceKey, str | None], ...]] = field(default_factory=dict)
    approval_phases: Mapping[ResourceKey, str] = field(default_factory=dict)
    scoped: Mapping[str, tuple[AgentPolicy, ...]] = field(default_factory=dict)  # "task:<name>" / "system:<name>"
    task_systems: Mapping[str, str] = field(default_factory=dict)  # "ns/task" -> the system it runs


def norm_permission(text: str) -> str:
    """Orloj's permission normalisation: lowercase, trim, no spaces, '/', '\\', '-' become '_'."""
    out = text.strip().lower().replace(" ", "")
    for ch in "/\\-":
        out = out.replace(ch, "_")
    return out


def _key(obj: ResourceKind) -> ResourceKey:
    return ResourceKey(obj.kind, obj.metadata.namespace, obj.metadata.name)


def _stricter(
    a: tuple[Verdict, Provenance | None], b: tuple[Verdict, Provenance | None]
) -> tuple[Verdict, Provenance | None]:
    return b if STRICTNESS[b[0]] > STRICTNESS[a[0]] else a


def _orloj_rule(
    agent: Agent,
    tool_name: str,
    tool: Tool | None,
    roles: Mapping[tuple[str, str], AgentRole],
    permissions: Mapping[str, list[ToolPermission]],
) -> OrlojToolRule:
    """Orloj's AgentToolAuthorizer (reference 2.2), resolved for every access class at once."""
    allow_all: dict[str, tuple[Verdict, Provenance | None]] = {a: (Verdict.ALLOW, None) for a in ACCESSES}
    akey, spec = _key(agent), agent.spec
    if tool_name.lower() in {t.strip().lower() for t in spec.allowed_tools}:
        return OrlojToolRule(None, allow_all)
    held: set[str] = set()
    for i, ref in enumerate(spec.roles):
        role = roles.get(split_ref(ref, agent.namespace))
        if role is None:
            return OrlojToolRule(("role_not_found", Provenance(akey, f"spec.roles[{i}]")), allow_all)
        held |= {norm_permission(p) for p in role.spec.permissions}
    capabilities = tool.spec.capabilities if tool else []
    rules = permissions.get(tool_name.lower(), [])

    def default_set(action: str) -> set[str]:
        return {norm_permission(f"tool:{tool_name}:{action}")} | {
            norm_permission(f"capability:{c}") for c in capabilities
        }

    if not rules:
        if spec.roles and not default_set("invoke") <= held:
            return OrlojToolRule(("permission_not_held", Provenance(akey, "spec.roles")), allow_all)
        return OrlojToolRule(None, allow_all)
    per_access = dict(allow_all)
    for rule in rules:
        rkey, rs = _key(rule), rule.spec
        required = {norm_permission(p) for p in rs.required_permissions}
        if not required and not rs.operation_rules:
            required = default_set(rs.action)
        ok = (required <= held) if rs.match_mode == "all" else (not required or bool(required & held))
        if not ok:
            return OrlojToolRule(("permission_not_held", Provenance(rkey, "spec.requiredPermissions")), allow_all)
        for access in ACCESSES:
            chosen = next((i for i, o in enumerate(rs.operation_rules) if o.operation_class == access), None)
            if chosen is None:
                chosen = next((i for i, o in enumerate(rs.operation_rules) if o.operation_class == "*"), None)
            if chosen is not None:
                verdict = Verdict(rs.operation_rules[chosen].verdict)
                per_access[access] = _stricter(
                    per_access[access], (verdict, Provenance(rkey, f"spec.operationRules[{chosen}]"))
                )
    return OrlojToolRule(None, per_access)


def _agent_index(
    agent: Agent,
    policies: list[Policy],
    orloj_policies: list[AgentPolicy],
    tools: Mapping[tuple[str, str], Tool],
    roles: Mapping[tuple[str, str], AgentRole],
    tool_permissions: list[ToolPermission],
    bodies: Mapping[ResourceKey, dict[str, Any]],
    endpoints: Mapping[tuple[str, str], ModelEndpoint],
) -> AgentIndex:
    akey, spec = _key(agent), agent.spec
    body = normalised(agent)
    chosen = [p for p in policies if policy_selects(bodies[_key(p)], body)]
    global_orloj = [p for p in orloj_policies if p.spec.apply_mode == "global"]
    gating: list[Policy | AgentPolicy] = [*chosen, *global_orloj]
    view = effective(body, [bodies[_key(p)] for p in chosen], [normalised(p) for p in global_orloj], {})

    grants = {
        g.name: (i, frozenset((p.access.value, p.resource) for p in g.permissions)) for i, g in enumerate(spec.tools)
    }
    tool_blocks: dict[str, Provenance] = {}
    pair_blocks: dict[tuple[str, Pair], Provenance] = {}
    for name, (_, pairs) in grants.items():
        for pol in gating:
            if name in pol.spec.blocked_tools:
                tool_blocks.setdefault(
                    name, Provenance(_key(pol), f"spec.blockedTools[{pol.spec.blocked_tools.index(name)}]")
                )
        for pol in chosen:
            if pol.spec.allowed_tools is not None and name not in pol.spec.allowed_tools:
                tool_blocks.setdefault(name, Provenance(_key(pol), "spec.allowedTools", absent=True))
        for pair in pairs - view.tools.get(name, frozenset()):
            pair_blocks[(name, pair)] = _pair_block(pair, chosen)

    approvals: dict[Pair, Provenance] = {}
    for i, p in enumerate(spec.governance.require_approval):
        approvals.setdefault((p.access.value, p.resource), Provenance(akey, f"spec.governance.requireApproval[{i}]"))
    for pol in chosen:
        for i, p in enumerate(pol.spec.require_approval):
            approvals.setdefault((p.access.value, p.resource), Provenance(_key(pol), f"spec.requireApproval[{i}]"))

    model_rules = tuple(
        (frozenset(p.spec.allowed_models), Provenance(_key(p), "spec.allowedModels"))
        for p in gating
        if p.spec.allowed_models
    )
    budgets = limits_of(
        (spec.governance, Provenance(akey, "spec.governance")),
        [(p.spec.budgets, Provenance(_key(p), "spec.budgets")) for p in chosen],
        [(p.spec.max_tokens_per_run, Provenance(_key(p), "spec.maxTokensPerRun")) for p in global_orloj],
    )
    per_run = budgets.per_run_tokens
    token_limit = (int(per_run.value), per_run.where) if per_run is not None else None

    by_tool: dict[str, list[ToolPermission]] = {}
    for tp in tool_permissions:
        if tp.namespace != agent.namespace:
            continue
        if tp.spec.apply_mode == "scoped" and agent.name not in tp.spec.target_agents:
            continue
        ref = tp.spec.tool_ref or tp.metadata.name
        by_tool.setdefault(split_ref(ref, tp.namespace)[1].lower(), []).append(tp)
    orloj = {
        name: _orloj_rule(agent, name, tools.get(split_ref(name, agent.namespace)), roles, by_tool) for name in grants
    }
    endpoint = endpoints.get(split_ref(spec.model_ref, agent.namespace)) if spec.model_ref else None
    return AgentIndex(
        key=akey,
        view=view,
        model=spec.model or (endpoint.spec.default_model if endpoint is not None else None),
        grants=grants,
        tool_blocks=tool_blocks,
        pair_blocks=pair_blocks,
        approvals=approvals,
        model_rules=model_rules,
        token_limit=token_limit,
        budgets=budgets,
        orloj=orloj,
        agent_block=next(filter(None, (agent_wide_block(grants, p) for p in global_orloj)), None),
    )


def agent_wide_block(tools: Iterable[str], policy: AgentPolicy) -> Provenance | None:
    """Orloj (reference 2.1): an agent one of whose ``spec.tools`` a matched AgentPolicy blocks
    does not run at all; the rule that stops it, or None."""
    blocked = [t.strip().lower() for t in policy.spec.blocked_tools]
    for name in tools:
        if name.lower() in blocked:
            return Provenance(_key(policy), f"spec.blockedTools[{blocked.index(name.lower())}]")
    return None


def _pair_block(pair: Pair, chosen: list[Policy]) -> Provenance:
    """The Policy rule that removed a granted pair: a deny entry, or a ceiling it falls outside."""
    for pol in chosen:
        for i, p in enumerate(pol.spec.deny):
            if p.access.value == pair[0] and fnmatchcase(pair[1], p.resource):
                return Provenance(_key(pol), f"spec.deny[{i}]")
    for pol in chosen:
        if pol.spec.allow is not None and not any(
            p.access.value == pair[0] and fnmatchcase(pair[1], p.resource) for p in pol.spec.allow
        ):
            return Provenance(_key(pol), "spec.allow", absent=True)
    return Provenance(None, "policy", absent=True)  # unreachable while effective() and this agree


def build_context(
    agents: Iterable[Agent],
    tools: Iterable[Tool] = (),
    policies: Iterable[Policy] = (),
    agent_policies: Iterable[AgentPolicy] = (),
    roles: Iterable[AgentRole] = (),
    tool_permissions: Iterable[ToolPermission] = (),
    approvals: Iterable[ToolApproval] = (),
    approval_phases: Mapping[ResourceKey, str] | None = None,
    endpoints: Iterable[ModelEndpoint] = (),
    tasks: Iterable[Task] = (),
) -> GovernanceContext:
    """Index the manifests once. ``approval_phases`` is each ToolApproval's status phase (from the store);
    ``endpoints`` resolve an agent's ``modelRef`` to its model; ``tasks`` tell which system a task runs."""
    tool_map = {(t.namespace, t.name): t for t in tools}
    role_map = {(r.namespace, r.name): r for r in roles}
    endpoint_map = {(e.namespace, e.name): e for e in endpoints}
    policy_list, orloj_list, tp_list = list(policies), list(agent_policies), list(tool_permissions)
    bodies = {_key(p): normalised(p) for p in policy_list}
    index = {
        _key(a): _agent_index(a, policy_list, orloj_list, tool_map, role_map, tp_list, bodies, endpoint_map)
        for a in agents
    }
    scoped: dict[str, list[AgentPolicy]] = {}
    for orloj_policy in orloj_list:
        if orloj_policy.spec.apply_mode == "scoped":
            for name in orloj_policy.spec.target_tasks:
                scoped.setdefault(f"task:{name.strip().lower()}", []).append(orloj_policy)
            for name in orloj_policy.spec.target_systems:
                scoped.setdefault(f"system:{name.strip().lower()}", []).append(orloj_policy)
    by_task: dict[tuple[str, str], list[tuple[ResourceKey, str | None]]] = {}
    for ap in approvals:
        task = "/".join(split_ref(ap.spec.task_ref, ap.namespace))
        by_task.setdefault((task, ap.spec.tool.lower()), []).append((_key(ap), ap.spec.agent))
    return GovernanceContext(
        agents=index,
        tools=tool_map,
        approvals={k: tuple(v) for k, v in by_task.items()},
        approval_phases=dict(approval_phases or {}),
        scoped={k: tuple(v) for k, v in scoped.items()},
        task_systems={
            f"{t.namespace}/{t.name}": split_ref(t.spec.system, t.namespace)[1] for t in tasks if t.spec.system
        },
    )
