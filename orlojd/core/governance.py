"""The governance gate: may this agent make this tool call? allow, deny or approval_required.

Pure: no I/O, no clock. ``build_context`` (core.governance_index) indexes the manifests
once; ``decide(context, request)`` is then a few dict lookups. Every decision carries a
reason code and ``because``: the rule(s) that decided it (object key + field path), or
the absence that denied it. Any exception while deciding is a denial (internal_error).

The AgentPolicies that apply to a call are the global ones and (reference 2.1) the scoped
ones naming the call's task in ``targetTasks`` or its system in ``targetSystems`` (the
request's ``system``, else the system the indexed Task names).

Rules, checked in this order; the first denial wins, approvals are collected last:

1. Unknown agent -> deny ``agent_not_found``. An applying AgentPolicy blocks any of the
   agent's ``spec.tools``: Orloj does not start such an agent, so every call -> deny
   ``blocked_by_policy``.
2. The agent's ``spec.tools`` has no entry for the tool -> deny ``tool_not_granted``.
   orlojd never allows an ungranted tool, not even through Orloj's ``allowedTools``.
3. A selected Policy lists the tool in ``blockedTools``, or has ``allowedTools`` without
   it -> deny ``blocked_by_policy``.
4. No Tool manifest for the tool (in the agent's namespace) -> deny ``tool_not_found``.
5. Model: the request's model (else the agent's ``spec.model``, else its ModelEndpoint's
   ``defaultModel``) must be in every non-empty ``allowedModels`` of the selected Policies
   and applying AgentPolicies; an unknown model under such a list is denied too -> deny
   ``model_not_allowed``.
6. Needed pairs = the request's pairs plus the Tool's ``requires``. Each must be in the
   grant (exact pair) -> else deny ``resource_not_permitted``; and survive every selected
   Policy's ``allow`` ceiling and ``deny`` list (core.effective) -> else ``blocked_by_policy``.
7. Orloj's authorizer (AgentRole / ToolPermission, reference 2.2): ``allowedTools`` skips
   it; a missing role -> ``role_not_found``; required permissions (all/any) not held
   -> ``permission_not_held``; operation rules per access class of the call (the needed
   pairs' accesses and the Tool's ``operationClasses``, by default ``read`` for a low or
   medium risk Tool and ``write`` for a high or critical one), strictest wins: deny ->
   ``blocked_by_policy``, approval_required -> an approval requirement.
8. Budget: ``tokensEstimate`` above the minimum ``maxTokensPerRun`` of the agent, the
   selected Policies and applying AgentPolicies -> deny ``budget_exceeded``. (Per-minute,
   per-day and cost budgets are charged in the store: core.budgets, adapters/budgets.py.)
9. Approvals: a needed pair listed in (or, for an entry with a glob, matched by) the
   agent's or a selected Policy's ``requireApproval`` (or an operation rule's
   approval_required) needs a ToolApproval for (task, tool): Approved -> allow
   ``approval_granted``; Denied -> deny ``approval_denied``; Expired -> deny
   ``approval_expired``; Pending or none -> ``approval_required``. (At run time orlojd's
   own approvals, bound to the call's argument digest, decide instead: engine/gate.py.)
10. Otherwise allow ``allowed``, because of the grant entries of every needed pair.

Policies only tighten: they select agents by namespace, name and labels
(core.effective.policy_selects); grants intersect with ceilings, blocks, denials and
approval requirements add up, budgets take the minimum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from orlojd.core.effective import Pair
from orlojd.core.governance_index import (
    STRICTNESS,
    AgentIndex,
    GovernanceContext,
    OrlojToolRule,
    Provenance,
    Verdict,
    agent_wide_block,
    build_context,
)
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.base import ResourceKind, split_ref
from orlojd.core.manifests.policies import AgentPolicy
from orlojd.core.manifests.tools import RiskLevel, Tool

__all__ = [
    "CallRequest",
    "Decision",
    "GovernanceContext",
    "Provenance",
    "ReasonCode",
    "Verdict",
    "build_context",
    "context_of",
    "decide",
]

GOVERNANCE_KINDS = (
    "Agent",
    "Tool",
    "Policy",
    "AgentPolicy",
    "AgentRole",
    "ToolPermission",
    "ToolApproval",
    "ModelEndpoint",
)
"""The kinds a decision reads (``context_of`` also reads Tasks, for the system each runs)."""


class ReasonCode(StrEnum):
    ALLOWED = "allowed"
    APPROVAL_GRANTED = "approval_granted"
    AGENT_NOT_FOUND = "agent_not_found"
    TOOL_NOT_GRANTED = "tool_not_granted"
    TOOL_NOT_FOUND = "tool_not_found"
    RESOURCE_NOT_PERMITTED = "resource_not_permitted"
    BLOCKED_BY_POLICY = "blocked_by_policy"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    ROLE_NOT_FOUND = "role_not_found"
    PERMISSION_NOT_HELD = "permission_not_held"
    BUDGET_EXCEEDED = "budget_exceeded"
    APPROVAL_REQUIRED = "approval_required"
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_EXPIRED = "approval_expired"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One tool call an agent wants to make. ``task`` ('ns/name') finds its ToolApproval."""

    agent: ResourceKey
    tool: str
    needs: tuple[Pair, ...] = ()
    model: str | None = None
    tokens_estimate: int | None = None
    task: str | None = None
    system: str | None = None  # the AgentSystem the task runs, for scoped AgentPolicies (else from the index)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: ReasonCode
    because: tuple[Provenance, ...]
    message: str

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


def context_of(
    objects: Iterable[ResourceKind], approval_phases: Mapping[ResourceKey, str] | None = None
) -> GovernanceContext:
    """Index the governance kinds among ``objects`` (any mix of manifests)."""
    by_kind: dict[str, list[Any]] = {kind: [] for kind in (*GOVERNANCE_KINDS, "Task")}
    for obj in objects:
        if obj.kind in by_kind:
            by_kind[obj.kind].append(obj)
    return build_context(
        by_kind["Agent"],
        by_kind["Tool"],
        by_kind["Policy"],
        by_kind["AgentPolicy"],
        by_kind["AgentRole"],
        by_kind["ToolPermission"],
        by_kind["ToolApproval"],
        approval_phases,
        by_kind["ModelEndpoint"],
        by_kind["Task"],
    )


def _deny(reason: ReasonCode, because: Provenance, message: str) -> Decision:
    return Decision(Verdict.DENY, reason, (because,), message)


def decide(context: GovernanceContext, request: CallRequest) -> Decision:
    """The verdict for one call; fails closed: any exception is deny/internal_error."""
    try:
        return _decide(context, request)
    except Exception as exc:  # fail closed, by design
        return Decision(
            Verdict.DENY,
            ReasonCode.INTERNAL_ERROR,
            (Provenance(None, "orlojd.core.governance.decide"),),
            f"internal error while deciding ({type(exc).__name__}); denied",
        )


def _decide(context: GovernanceContext, request: CallRequest) -> Decision:
    agent = context.agents.get(request.agent)
    if agent is None:
        return _deny(ReasonCode.AGENT_NOT_FOUND, Provenance(request.agent, "", absent=True), "unknown agent")
    tool, akey = request.tool, agent.key
    scoped = _scoped(context, request, akey)
    stop = agent.agent_block or next(filter(None, (agent_wide_block(agent.grants, p) for p in scoped)), None)
    if stop is not None:
        return _deny(ReasonCode.BLOCKED_BY_POLICY, stop, f"{akey.short} does not run: {stop} blocks one of its tools")
    grant = agent.grants.get(tool)
    if grant is None:
        return _deny(
            ReasonCode.TOOL_NOT_GRANTED,
            Provenance(akey, f"spec.tools[name={tool}]", absent=True),
            f"{akey.short} is not granted tool {tool}",
        )
    block = agent.tool_blocks.get(tool)
    if block is not None:
        return _deny(ReasonCode.BLOCKED_BY_POLICY, block, f"tool {tool} is blocked by {block}")
    tool_obj = context.tools.get(split_ref(tool, akey.namespace))
    if tool_obj is None:
        return _deny(
            ReasonCode.TOOL_NOT_FOUND,
            Provenance(ResourceKey("Tool", *split_ref(tool, akey.namespace)), "", absent=True),
            f"tool {tool} is not defined",
        )
    model = request.model or agent.model
    model_rules = agent.model_rules + tuple(
        (frozenset(p.spec.allowed_models), Provenance(_key_of(p), "spec.allowedModels"))
        for p in scoped
        if p.spec.allowed_models
    )
    for allowed_models, where in model_rules:
        if model not in allowed_models:
            return _deny(
                ReasonCode.MODEL_NOT_ALLOWED, where, f"model {model or '(unresolved)'} is not allowed by {where}"
            )

    needs = dict.fromkeys(request.needs)
    needs.update(dict.fromkeys((p.access.value, p.resource) for p in tool_obj.spec.requires))
    index, granted = grant
    effective_pairs = agent.view.tools.get(tool, frozenset())
    for pair in needs:
        if pair not in granted:
            return _deny(
                ReasonCode.RESOURCE_NOT_PERMITTED,
                Provenance(akey, f"spec.tools[{index}].permissions", absent=True),
                f"tool {tool} is not granted {pair[0]}: {pair[1]}",
            )
        if pair not in effective_pairs:
            where = agent.pair_blocks.get((tool, pair), Provenance(None, "policy", absent=True))
            return _deny(ReasonCode.BLOCKED_BY_POLICY, where, f"{pair[0]}: {pair[1]} is removed by {where}")

    approvals: list[Provenance] = []
    orloj_decision = _orloj(agent.orloj[tool], needs, operation_classes(tool_obj), approvals)
    if orloj_decision is not None:
        return orloj_decision

    token_limit = agent.token_limit
    for p in scoped:
        if p.spec.max_tokens_per_run > 0 and (token_limit is None or p.spec.max_tokens_per_run < token_limit[0]):
            token_limit = (p.spec.max_tokens_per_run, Provenance(_key_of(p), "spec.maxTokensPerRun"))
    if token_limit is not None and request.tokens_estimate is not None:
        limit, where = token_limit
        if request.tokens_estimate > limit:
            return _deny(
                ReasonCode.BUDGET_EXCEEDED, where, f"{request.tokens_estimate} tokens exceed the per-run limit {limit}"
            )

    approvals += _approval_rules(agent.approvals, needs)
    if approvals:
        return _approval(context, request, agent, approvals)
    path = f"spec.tools[{index}].permissions" if needs else f"spec.tools[{index}]"
    return Decision(Verdict.ALLOW, ReasonCode.ALLOWED, (Provenance(akey, path),), "allowed")


def _key_of(obj: ResourceKind) -> ResourceKey:
    return ResourceKey(obj.kind, obj.metadata.namespace, obj.metadata.name)


def _scoped(context: GovernanceContext, request: CallRequest, akey: ResourceKey) -> list[AgentPolicy]:
    """The scoped AgentPolicies matching the call's task (by name) or system (reference 2.1)."""
    if not context.scoped or request.task is None:
        return []
    namespace, name = split_ref(request.task, akey.namespace)
    system = request.system or context.task_systems.get(f"{namespace}/{name}")
    found = list(context.scoped.get(f"task:{name.lower()}", ()))
    if system:
        found += [p for p in context.scoped.get(f"system:{system.lower()}", ()) if p not in found]
    return found


def operation_classes(tool: Tool) -> list[str]:
    """The Tool's ``operationClasses``; when none are declared, Orloj's default by risk level:
    ``read`` for low and medium, ``write`` for high and critical (reference 2.2)."""
    if tool.spec.operation_classes:
        return [c.value for c in tool.spec.operation_classes]
    return ["write"] if tool.spec.risk_level in (RiskLevel.HIGH, RiskLevel.CRITICAL) else ["read"]


def _approval_rules(rules: Mapping[Pair, Provenance], needs: Iterable[Pair]) -> list[Provenance]:
    """The requireApproval entry each needed pair falls under: an exact entry, else the first glob
    (``write: "*_ledger"``) that matches, as ``deny`` and ``allow`` entries match."""
    found: list[Provenance] = []
    for pair in needs:
        exact = rules.get(pair)
        if exact is not None:
            found.append(exact)
            continue
        for (access, pattern), where in rules.items():
            if access == pair[0] and fnmatchcase(pair[1], pattern):
                found.append(where)
                break
    return found


def _orloj(
    rule: OrlojToolRule, needs: dict[Pair, None], classes: list[str], approvals: list[Provenance]
) -> Decision | None:
    if rule.denial is not None:
        code, origin = rule.denial
        return _deny(ReasonCode(code), origin, f"{code.replace('_', ' ')}: {origin}")
    verdict: Verdict = Verdict.ALLOW
    where: Provenance | None = None
    for access in dict.fromkeys([*(p[0] for p in needs), *classes]):
        candidate = rule.per_access[access]
        if STRICTNESS[candidate[0]] > STRICTNESS[verdict]:
            verdict, where = candidate
    if verdict is Verdict.DENY and where is not None:
        return _deny(ReasonCode.BLOCKED_BY_POLICY, where, f"denied by {where}")
    if verdict is Verdict.APPROVAL_REQUIRED and where is not None:
        approvals.append(where)
    return None


def _approval(
    context: GovernanceContext, request: CallRequest, agent: AgentIndex, required: list[Provenance]
) -> Decision:
    pending = Decision(Verdict.APPROVAL_REQUIRED, ReasonCode.APPROVAL_REQUIRED, tuple(required), "waiting for approval")
    if request.task is None:
        return pending
    task = "/".join(split_ref(request.task, agent.key.namespace))
    for key, for_agent in context.approvals.get((task, request.tool.lower()), ()):
        if for_agent is not None and for_agent not in (agent.key.name, f"{agent.key.namespace}/{agent.key.name}"):
            continue
        phase = context.approval_phases.get(key, "Pending").lower()
        because = (Provenance(key, "status.phase"), *required)
        if phase == "approved":
            return Decision(Verdict.ALLOW, ReasonCode.APPROVAL_GRANTED, because, f"approved by {key.short}")
        if phase == "denied":
            return Decision(Verdict.DENY, ReasonCode.APPROVAL_DENIED, because, f"denied by {key.short}")
        if phase == "expired":
            return Decision(Verdict.DENY, ReasonCode.APPROVAL_EXPIRED, because, f"{key.short} expired")
        return Decision(Verdict.APPROVAL_REQUIRED, ReasonCode.APPROVAL_REQUIRED, because, f"waiting for {key.short}")
    return pending
