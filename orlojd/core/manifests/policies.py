"""Policy (orlojd's organisation-wide limits) and Orloj's governance kinds.

A Policy only tightens what an Agent declares: it selects agents by namespace, name
and labels; its ``allow`` list is a ceiling that grants intersect with; ``deny``,
``blockedTools`` and ``requireApproval`` add up; budgets take the minimum.
AgentPolicy, AgentRole, ToolPermission and ToolApproval are Orloj's kinds, kept with
Orloj's meaning (camelCase canonical, snake_case accepted).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from orlojd.core.durations import Duration
from orlojd.core.manifests.agents import Budgets
from orlojd.core.manifests.base import OrlojModel, PermissionEntry, RefName, ResourceKind, Spec


class PolicySelector(OrlojModel):
    """Which agents a Policy covers; every given criterion must match, none given means all."""

    namespaces: list[str] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)
    match_labels: dict[str, str] = Field(default_factory=dict)


class PolicyBudgets(Budgets):
    """Budgets a Policy imposes; the effective limit is the minimum over agent and policies."""

    soft_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8
    on_exceeded: Literal["fail", "wait"] = "fail"


class ApprovalRules(OrlojModel):
    approvers: list[str] = Field(default_factory=list, description="Who may approve; empty means anyone")
    required: Annotated[int, Field(ge=1, le=10)] = 1
    signed: bool = False
    timeout: Duration = "1h"


class PolicySpec(Spec):
    selector: PolicySelector = Field(default_factory=PolicySelector)
    allow: list[PermissionEntry] | None = Field(
        default=None, description="Ceiling: pairs outside it are denied even if an agent grants them"
    )
    deny: list[PermissionEntry] = Field(default_factory=list)
    allowed_tools: list[str] | None = None
    blocked_tools: list[str] = Field(default_factory=list)
    allowed_models: list[str] = Field(default_factory=list)
    require_approval: list[PermissionEntry] = Field(default_factory=list)
    approval: ApprovalRules = Field(default_factory=ApprovalRules)
    budgets: PolicyBudgets = Field(default_factory=PolicyBudgets)
    on_deny: Literal["fail_run", "return_to_model"] = "fail_run"
    audit_log: bool = True


class Policy(ResourceKind):
    kind: Literal["Policy"] = "Policy"
    spec: PolicySpec


class AgentPolicySpec(Spec):
    max_tokens_per_run: Annotated[int, Field(ge=0)] = 0
    allowed_models: list[str] = Field(default_factory=list)
    blocked_tools: list[str] = Field(default_factory=list)
    apply_mode: Literal["scoped", "global"] = "scoped"
    target_systems: list[str] = Field(default_factory=list)
    target_tasks: list[str] = Field(default_factory=list)


class AgentPolicy(ResourceKind):
    kind: Literal["AgentPolicy"] = "AgentPolicy"
    spec: AgentPolicySpec


class AgentRoleSpec(Spec):
    description: str = ""
    permissions: list[str] = Field(default_factory=list)


class AgentRole(ResourceKind):
    kind: Literal["AgentRole"] = "AgentRole"
    spec: AgentRoleSpec


class OperationRule(OrlojModel):
    operation_class: Literal["read", "write", "delete", "admin", "*"] = "*"
    verdict: Literal["allow", "deny", "approval_required"] = "allow"


class ToolPermissionSpec(Spec):
    tool_ref: RefName | None = Field(default=None, description="Defaults to metadata.name")
    action: str = "invoke"
    required_permissions: list[str] = Field(default_factory=list)
    match_mode: Literal["all", "any"] = "all"
    apply_mode: Literal["global", "scoped"] = "global"
    target_agents: list[str] = Field(default_factory=list)
    operation_rules: list[OperationRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _scoped_needs_agents(self) -> ToolPermissionSpec:
        if self.apply_mode == "scoped" and not self.target_agents:
            raise ValueError("applyMode 'scoped' needs 'targetAgents'")
        return self


class ToolPermission(ResourceKind):
    kind: Literal["ToolPermission"] = "ToolPermission"
    spec: ToolPermissionSpec


class ToolApprovalSpec(Spec):
    task_ref: RefName
    tool: str
    operation_class: str | None = None
    agent: str | None = None
    input: str | None = None
    reason: str | None = None
    ttl: Duration = "10m"


class ToolApproval(ResourceKind):
    kind: Literal["ToolApproval"] = "ToolApproval"
    spec: ToolApprovalSpec
