"""The compliance templates in policies/ against the governance gate: each README's claims, call by call.

Each template's committed policy.yaml is loaded as is (core.desired.load_file), next to a sample
agent granted every access on every resource the templates name, so the policy alone decides.
Every case names the rule that decides it (``because``: the field path in the policy), and
``test_weakening_a_template_fails_a_case`` drops each deny / requireApproval entry and the
token budget in turn: each removal must change at least one case's outcome.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from orlojd.core.desired import load_file
from orlojd.core.governance import CallRequest, ReasonCode, Verdict, build_context, decide
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.policies import Policy, ToolApproval
from orlojd.core.manifests.tools import Tool

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ("financial-services", "healthcare", "eu-ai-act-high-risk", "soc2-baseline")
RESOURCES = (
    "general_ledger",
    "payments_ledger",
    "external_email",
    "external_api",
    "internal_reports",
    "phi_records",
    "phi_lab_results",
    "prod_orders_db",
    "prod_config",
    "staging_db",
)
ACCESSES = ("read", "write", "delete", "admin")
KEY = ResourceKey("Agent", "default", "sample-agent")
TASK = "default/sample-task"
TOOL = "act"

# The sample agent: one tool, granted everything, no governance of its own (no approvals, no budget).
AGENT = Agent.model_validate(
    {
        "kind": "Agent",
        "metadata": {"name": "sample-agent", "namespace": "default"},
        "spec": {
            "model": "gpt-4",
            "tools": [{"name": TOOL, "permissions": [{a: r} for a in ACCESSES for r in RESOURCES]}],
        },
    }
)
TOOLS = [Tool.model_validate({"kind": "Tool", "metadata": {"name": TOOL, "namespace": "default"}, "spec": {}})]

# requireApproval entries are globs ("*_ledger", "*", "prod_*"), matched like deny / allow entries.


ALLOW, DENY, WAIT = Verdict.ALLOW, Verdict.DENY, Verdict.APPROVAL_REQUIRED
R = ReasonCode


@dataclass(frozen=True)
class Case:
    access: str
    resource: str
    verdict: Verdict
    reason: ReasonCode
    because: str  # a substring of one of the decision's ``because`` entries
    tokens: int | None = None
    approval: str | None = None  # the phase of a ToolApproval for (TASK, TOOL), if any

    def __str__(self) -> str:
        extra = f" tokens={self.tokens}" if self.tokens is not None else ""
        extra += f" approval={self.approval}" if self.approval else ""
        return f"{self.access}:{self.resource}{extra}"


FS, HC, EU, SOC = (
    "Policy/financial-services:",
    "Policy/healthcare:",
    "Policy/eu-ai-act-high-risk:",
    "Policy/soc2-baseline:",
)
GRANT = "Agent/sample-agent:spec.tools[0].permissions"

CASES: dict[str, list[Case]] = {
    "financial-services": [
        # Forbids: no external egress (write, delete, admin on external_*).
        Case("write", "external_email", DENY, R.BLOCKED_BY_POLICY, FS + "spec.deny[0]"),
        Case("write", "external_api", DENY, R.BLOCKED_BY_POLICY, FS + "spec.deny[0]"),
        Case("delete", "external_api", DENY, R.BLOCKED_BY_POLICY, FS + "spec.deny[1]"),
        Case("admin", "external_api", DENY, R.BLOCKED_BY_POLICY, FS + "spec.deny[2]"),
        # Forbids: ledgers are append-only (no delete, no admin).
        Case("delete", "general_ledger", DENY, R.BLOCKED_BY_POLICY, FS + "spec.deny[3]"),
        Case("admin", "payments_ledger", DENY, R.BLOCKED_BY_POLICY, FS + "spec.deny[4]"),
        # Needs approval: every ledger write (segregation of duties); approved, denied, expired.
        Case("write", "general_ledger", WAIT, R.APPROVAL_REQUIRED, FS + "spec.requireApproval[0]"),
        Case("write", "payments_ledger", WAIT, R.APPROVAL_REQUIRED, FS + "spec.requireApproval[0]"),
        Case(
            "write",
            "general_ledger",
            WAIT,
            R.APPROVAL_REQUIRED,
            FS + "spec.requireApproval[0]",
            approval="Pending",
        ),
        Case(
            "write",
            "general_ledger",
            ALLOW,
            R.APPROVAL_GRANTED,
            FS + "spec.requireApproval[0]",
            approval="Approved",
        ),
        Case(
            "write",
            "general_ledger",
            DENY,
            R.APPROVAL_DENIED,
            FS + "spec.requireApproval[0]",
            approval="Denied",
        ),
        Case(
            "write",
            "general_ledger",
            DENY,
            R.APPROVAL_EXPIRED,
            FS + "spec.requireApproval[0]",
            approval="Expired",
        ),
        # Limits: 50,000 tokens per run.
        Case("read", "internal_reports", ALLOW, R.ALLOWED, GRANT, tokens=50_000),
        Case("read", "internal_reports", DENY, R.BUDGET_EXCEEDED, FS + "spec.budgets", tokens=50_001),
        # Allows: reads of ledgers (and of external resources), writes to internal resources.
        Case("read", "general_ledger", ALLOW, R.ALLOWED, GRANT),
        Case("read", "external_api", ALLOW, R.ALLOWED, GRANT),
        Case("write", "internal_reports", ALLOW, R.ALLOWED, GRANT),
        Case("delete", "internal_reports", ALLOW, R.ALLOWED, GRANT),
    ],
    "healthcare": [
        # Forbids: PHI is read-only (no write, delete, admin on phi_*).
        Case("write", "phi_records", DENY, R.BLOCKED_BY_POLICY, HC + "spec.deny[0]"),
        Case("write", "phi_lab_results", DENY, R.BLOCKED_BY_POLICY, HC + "spec.deny[0]"),
        Case("delete", "phi_records", DENY, R.BLOCKED_BY_POLICY, HC + "spec.deny[1]"),
        Case("admin", "phi_records", DENY, R.BLOCKED_BY_POLICY, HC + "spec.deny[2]"),
        # Forbids: no disclosure outside the organisation (write on external_*).
        Case("write", "external_email", DENY, R.BLOCKED_BY_POLICY, HC + "spec.deny[3]"),
        # Allows: PHI reads, everything else the grant allows (no approvals, no budget).
        Case("read", "phi_records", ALLOW, R.ALLOWED, GRANT),
        Case("read", "phi_lab_results", ALLOW, R.ALLOWED, GRANT),
        Case("write", "internal_reports", ALLOW, R.ALLOWED, GRANT),
        Case("delete", "external_api", ALLOW, R.ALLOWED, GRANT),
        Case("read", "internal_reports", ALLOW, R.ALLOWED, GRANT, tokens=10_000_000),
    ],
    "eu-ai-act-high-risk": [
        # Needs approval (human oversight): every write, delete, admin on any resource.
        Case("write", "internal_reports", WAIT, R.APPROVAL_REQUIRED, EU + "spec.requireApproval[0]"),
        Case("write", "general_ledger", WAIT, R.APPROVAL_REQUIRED, EU + "spec.requireApproval[0]"),
        Case("delete", "staging_db", WAIT, R.APPROVAL_REQUIRED, EU + "spec.requireApproval[1]"),
        Case("admin", "prod_config", WAIT, R.APPROVAL_REQUIRED, EU + "spec.requireApproval[2]"),
        Case(
            "write",
            "internal_reports",
            ALLOW,
            R.APPROVAL_GRANTED,
            EU + "spec.requireApproval[0]",
            approval="Approved",
        ),
        Case("delete", "staging_db", DENY, R.APPROVAL_DENIED, EU + "spec.requireApproval[1]", approval="Denied"),
        Case(
            "admin",
            "prod_config",
            DENY,
            R.APPROVAL_EXPIRED,
            EU + "spec.requireApproval[2]",
            approval="Expired",
        ),
        # Allows: reads without approval; forbids nothing outright.
        Case("read", "internal_reports", ALLOW, R.ALLOWED, GRANT),
        Case("read", "phi_records", ALLOW, R.ALLOWED, GRANT),
        Case("read", "external_api", ALLOW, R.ALLOWED, GRANT),
    ],
    "soc2-baseline": [
        # Forbids: delete and admin on prod_*.
        Case("delete", "prod_orders_db", DENY, R.BLOCKED_BY_POLICY, SOC + "spec.deny[0]"),
        Case("admin", "prod_config", DENY, R.BLOCKED_BY_POLICY, SOC + "spec.deny[1]"),
        # Needs approval: production writes (change management).
        Case("write", "prod_orders_db", WAIT, R.APPROVAL_REQUIRED, SOC + "spec.requireApproval[0]"),
        Case(
            "write",
            "prod_config",
            ALLOW,
            R.APPROVAL_GRANTED,
            SOC + "spec.requireApproval[0]",
            approval="Approved",
        ),
        Case(
            "write",
            "prod_config",
            DENY,
            R.APPROVAL_EXPIRED,
            SOC + "spec.requireApproval[0]",
            approval="Expired",
        ),
        # Limits: 100,000 tokens per run.
        Case("read", "staging_db", ALLOW, R.ALLOWED, GRANT, tokens=100_000),
        Case("read", "staging_db", DENY, R.BUDGET_EXCEEDED, SOC + "spec.budgets", tokens=100_001),
        # Allows: reads (production too) and reads, writes, deletes outside production.
        Case("read", "prod_orders_db", ALLOW, R.ALLOWED, GRANT),
        Case("write", "staging_db", ALLOW, R.ALLOWED, GRANT),
        Case("delete", "staging_db", ALLOW, R.ALLOWED, GRANT),
        Case("admin", "staging_db", ALLOW, R.ALLOWED, GRANT),
    ],
}


def raw(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "policies" / name / "policy.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def load(name: str) -> Policy:
    rel = f"policies/{name}/policy.yaml"
    result = load_file(rel, (ROOT / rel).read_bytes())
    assert not [d for d in result.diagnostics if d.is_error], result.diagnostics
    [loaded] = result.objects
    assert isinstance(loaded.obj, Policy)
    return loaded.obj


def run(policy: Policy, case: Case) -> tuple[Verdict, ReasonCode, tuple[str, ...]]:
    approvals, phases = [], {}
    if case.approval is not None:
        ap = ToolApproval.model_validate(
            {
                "kind": "ToolApproval",
                "metadata": {"name": "sample-approval", "namespace": "default"},
                "spec": {"taskRef": TASK, "tool": TOOL, "agent": "sample-agent"},
            }
        )
        approvals, phases = [ap], {ResourceKey("ToolApproval", "default", "sample-approval"): case.approval}
    context = build_context([AGENT], tools=TOOLS, policies=[policy], approvals=approvals, approval_phases=phases)
    request = CallRequest(KEY, TOOL, needs=((case.access, case.resource),), tokens_estimate=case.tokens, task=TASK)
    d = decide(context, request)
    return d.verdict, d.reason, tuple(str(b) for b in d.because)


def holds(policy: Policy, case: Case) -> bool:
    verdict, reason, because = run(policy, case)
    return (verdict, reason) == (case.verdict, case.reason) and any(case.because in b for b in because)


def case_params() -> list[Any]:
    return [pytest.param(n, c, id=f"{n}-{c}") for n in TEMPLATES for c in CASES[n]]


@pytest.mark.parametrize(("name", "case"), case_params())
def test_template_decides_as_its_readme_says(name: str, case: Case) -> None:
    policy = load(name)
    got = run(policy, case)
    assert holds(policy, case), f"{name} {case}: expected {case.verdict}/{case.reason} by {case.because}, got {got}"


def test_without_a_template_the_sample_agent_may_do_everything() -> None:
    """The baseline: every denial and approval above comes from the template, not from the agent."""
    context = build_context([AGENT], tools=TOOLS)
    for access in ACCESSES:
        for resource in RESOURCES:
            d = decide(context, CallRequest(KEY, TOOL, needs=((access, resource),), tokens_estimate=10_000_000))
            assert (d.verdict, d.reason) == (ALLOW, R.ALLOWED), (access, resource, d)


def mutations(name: str) -> list[tuple[str, dict[str, Any]]]:
    """Each way of weakening a template by one line: drop a deny / requireApproval entry, the token budget."""
    base = raw(name)
    out: list[tuple[str, dict[str, Any]]] = []
    for field in ("deny", "requireApproval"):
        for i in range(len(base["spec"].get(field, []))):
            weaker = copy.deepcopy(base)
            del weaker["spec"][field][i]
            out.append((f"spec.{field}[{i}]", weaker))
    if "maxTokensPerRun" in base["spec"].get("budgets", {}):
        weaker = copy.deepcopy(base)
        del weaker["spec"]["budgets"]["maxTokensPerRun"]
        out.append(("spec.budgets.maxTokensPerRun", weaker))
    return out


def mutation_params() -> list[Any]:
    params = []
    for name in TEMPLATES:
        for removed, weaker in mutations(name):
            params.append(pytest.param(name, removed, weaker, id=f"{name}-without-{removed}"))
    return params


@pytest.mark.parametrize(("name", "removed", "weaker"), mutation_params())
def test_weakening_a_template_fails_a_case(name: str, removed: str, weaker: dict[str, Any]) -> None:
    """Only cases the committed template passes count: a weaker one must fail at least one of them."""
    committed = load(name)
    passing = [c for c in CASES[name] if holds(committed, c)]
    weaker_policy = Policy.model_validate(weaker)
    broken = [c for c in passing if not holds(weaker_policy, c)]
    assert broken, f"{name} without {removed} still decides every passing case the same way"


def test_every_template_has_mutations_and_cases() -> None:
    assert sorted(TEMPLATES) == sorted(p.name for p in (ROOT / "policies").iterdir() if p.is_dir())
    assert all(mutations(n) for n in TEMPLATES)
    assert all(len(CASES[n]) >= 10 for n in TEMPLATES)


# -- what the gate does not decide per call: the settings the README states, read from the policy --------------


def test_financial_services_settings() -> None:
    spec = load("financial-services").spec
    assert spec.selector.model_dump(exclude_defaults=True) == {}
    assert (spec.approval.approvers, spec.approval.required, spec.approval.signed) == (["finance-controllers"], 2, True)
    assert spec.approval.timeout == "24h"
    assert (spec.budgets.max_tokens_per_run, spec.budgets.max_cost_per_day, spec.budgets.on_exceeded) == (
        50_000,
        50,
        "fail",
    )
    assert (spec.on_deny, spec.audit_log) == ("fail_run", True)
    assert raw("financial-services")["spec"]["auditLog"] is True


def test_healthcare_settings() -> None:
    spec = load("healthcare").spec
    assert spec.selector.model_dump(exclude_defaults=True) == {}
    assert not spec.require_approval and spec.allow is None
    assert (spec.on_deny, spec.audit_log) == ("fail_run", True)
    assert raw("healthcare")["spec"]["auditLog"] is True


def test_eu_ai_act_settings() -> None:
    spec = load("eu-ai-act-high-risk").spec
    assert spec.selector.model_dump(exclude_defaults=True) == {}
    assert not spec.deny and spec.allow is None
    assert (spec.approval.approvers, spec.approval.required, spec.approval.signed) == (["ai-oversight"], 1, True)
    assert spec.approval.timeout == "8h"
    assert (spec.on_deny, spec.audit_log) == ("fail_run", True)
    assert raw("eu-ai-act-high-risk")["spec"]["auditLog"] is True


def test_soc2_settings() -> None:
    spec = load("soc2-baseline").spec
    b = spec.budgets
    assert spec.selector.model_dump(exclude_defaults=True) == {}
    assert (spec.approval.approvers, spec.approval.required, spec.approval.timeout) == (["change-approvers"], 1, "4h")
    assert (b.max_tokens_per_minute, b.max_tokens_per_run, b.max_tokens_per_day) == (20_000, 100_000, 2_000_000)
    assert (b.max_cost_per_run, b.max_cost_per_day, b.soft_threshold, b.on_exceeded) == (5, 100, 0.8, "fail")
    assert (spec.on_deny, spec.audit_log) == ("fail_run", True)
    assert raw("soc2-baseline")["spec"]["auditLog"] is True
