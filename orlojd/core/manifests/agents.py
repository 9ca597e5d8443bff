"""Agent and its parts: tool grants, governance, limits and the task retry policy.

Canonical form is the announcement's (``tools: [{name, permissions: [- read: x]}]``,
``governance.maxTokensPerMinute``); Orloj's ``model_ref``, plain tool-name lists, roles,
``allowed_tools``, memory and execution contracts load into the same model.
"""

from __future__ import annotations

from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from orlojd.core.durations import Duration
from orlojd.core.manifests.base import (
    OrlojModel,
    PermissionEntry,
    RefName,
    ResourceKind,
    Spec,
    inert,
)


class Jitter(StrEnum):
    FULL = "full"
    EQUAL = "equal"
    NONE = "none"


class Backoff(OrlojModel):
    """Capped exponential backoff: initial x multiplier^(attempt-1), never above max."""

    initial: Duration = "1s"
    max: Duration = "5m"
    multiplier: Annotated[float, Field(ge=1.0, le=10.0)] = 2.0


class RetryPolicy(OrlojModel):
    """How often a failed task is tried again, and how long to wait between tries.

    Attempts are always capped (every retried model call costs money). Orloj's
    ``retry: {max_attempts, backoff: 2s}`` loads as ``backoff.initial``.
    """

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    backoff: Backoff = Field(default_factory=Backoff)
    jitter: Jitter = Jitter.FULL

    @model_validator(mode="before")
    @classmethod
    def _orloj_backoff_string(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("backoff"), str | int | float):
            data = {**data, "backoff": {"initial": data["backoff"]}}
        return data


class ToolGrant(OrlojModel):
    """A tool the agent may call, and the (access, resource) pairs it may use it for."""

    name: RefName
    permissions: list[PermissionEntry] = Field(default_factory=list)


def _tool_name_to_grant(value: Any) -> Any:
    if isinstance(value, str):
        return {"name": value}
    return value


class Budgets(OrlojModel):
    """Token and cost limits, each optional (None: no limit). Agents and Policies share them."""

    max_tokens_per_minute: Annotated[int, Field(ge=1)] | None = None
    max_tokens_per_run: Annotated[int, Field(ge=1)] | None = None
    max_tokens_per_day: Annotated[int, Field(ge=1)] | None = None
    max_cost_per_run: Annotated[float, Field(gt=0)] | None = None
    max_cost_per_day: Annotated[float, Field(gt=0)] | None = None


class AgentGovernance(Budgets):
    """Limits the runtime enforces before every call; a Policy can only tighten them."""

    require_approval: list[PermissionEntry] = Field(default_factory=list)
    audit_log: bool = True


class AgentLimits(OrlojModel):
    max_steps: Annotated[int, Field(ge=1, le=1000)] = 10
    timeout: Duration | None = Field(default=None, description="Per-attempt timeout of this agent's task runs")
    max_concurrent_runs: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="At most this many runs of this agent at once (none: no cap)"
    )

    @model_validator(mode="before")
    @classmethod
    def _orloj_zero_steps(cls, data: Any) -> Any:
        # Orloj: max_steps <= 0 means the default of 10.
        if isinstance(data, dict):
            steps = data.get("max_steps", data.get("maxSteps"))
            if isinstance(steps, int) and not isinstance(steps, bool) and steps <= 0:
                data = {k: v for k, v in data.items() if k not in ("max_steps", "maxSteps")}
        return data


class AgentMemory(OrlojModel):
    ref: RefName | None = None
    allow: list[Literal["read", "write", "search", "list", "ingest"]] = Field(default_factory=list)
    type: str | None = None
    provider: str | None = None


def _marker_text(value: Any) -> Any:
    # "- AUTH_PATH:" in YAML is a one-key map with a null value; Orloj means the string.
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if inner is None:
            return f"{key}:"
    return value


class AgentExecution(OrlojModel):
    profile: Literal["dynamic", "contract"] = "dynamic"
    tool_sequence: list[str] = Field(default_factory=list)
    required_output_markers: list[Annotated[str, BeforeValidator(_marker_text)]] = Field(default_factory=list)
    duplicate_tool_call_policy: Literal["short_circuit", "deny"] = "short_circuit"
    on_contract_violation: Literal["non_retryable_error", "observe"] = "non_retryable_error"
    tool_use_behavior: Literal["run_llm_again", "stop_on_first_tool"] = "run_llm_again"


class AgentSpec(Spec):
    """What an agent is: its model, prompt, granted tools, governance and retry policy."""

    model: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Model id; overrides the endpoint's defaultModel"
    )
    model_ref: RefName | None = Field(default=None, description="ModelEndpoint to call the model through")
    prompt: str = ""
    tools: list[Annotated[ToolGrant, BeforeValidator(_tool_name_to_grant)]] = Field(default_factory=list)
    allowed_tools: list[str] = Field(default_factory=list)
    roles: list[RefName] = Field(default_factory=list)
    governance: AgentGovernance = Field(default_factory=AgentGovernance)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    limits: AgentLimits = Field(default_factory=AgentLimits)
    memory: AgentMemory | None = inert("Orloj agent memory; kept, not used by orlojd yet", default=None)
    execution: AgentExecution | None = inert("Orloj execution contract; kept, not enforced by orlojd yet", default=None)

    @model_validator(mode="after")
    def _needs_a_model(self) -> AgentSpec:
        if self.model is None and self.model_ref is None:
            raise ValueError("an agent needs 'model' (a model id) or 'modelRef' (a ModelEndpoint)")
        names = [grant.name for grant in self.tools]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"tool {duplicated[0]!r} is listed twice; merge its permissions into one entry")
        return self


class Agent(ResourceKind):
    kind: Literal["Agent"] = "Agent"
    spec: AgentSpec

    def ungranted_approvals(self) -> list[int]:
        """Indexes of ``governance.requireApproval`` entries that no granted tool permission matches:
        a typo there would make the approval never fire, so the plan refuses them."""
        granted = [(p.access, p.resource) for grant in self.spec.tools for p in grant.permissions]
        return [
            i
            for i, wanted in enumerate(self.spec.governance.require_approval)
            if not any(a == wanted.access and fnmatchcase(r, wanted.resource) for a, r in granted)
        ]
