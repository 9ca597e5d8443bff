"""The governance gate (core.governance) as one table: every row is a world of manifests, one call, one decision.

Each world is YAML text loaded by the real loader (core.desired.load_file), so the manifests go
through the same parsing and validation as a repository's files. Each row asserts the verdict,
the reason code and the provenance of the deciding rule (``because[0]``: object key, field path,
absent flag), and for approval decisions the rest of ``because`` as well.

Rule order and semantics: the module docstring of orlojd/core/governance.py and
../shared/reference/orloj.md (2.1, 2.2, 2.4). Rows where the gate disagrees with either are
``xfail(strict=True)`` with the documented outcome; the reason names the rule.

The second table runs named calls against the real Orloj manifests of the conformance corpus.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from _pytest.mark.structures import ParameterSet
from manifests import ANNOUNCED_AGENT

from orlojd.core import governance
from orlojd.core.desired import load_file
from orlojd.core.diagnostics import Severity
from orlojd.core.governance import CallRequest, Decision, ReasonCode, Verdict, decide
from orlojd.core.governance_index import GovernanceContext, Provenance
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.base import ResourceKind
from orlojd.core.manifests.policies import AgentRole, ToolPermission
from orlojd.sources import load

ALLOW, DENY, WAIT = Verdict.ALLOW, Verdict.DENY, Verdict.APPROVAL_REQUIRED
R = ReasonCode

# -- manifests as YAML text ------------------------------------------------------------------------------------------

# The same agent with a per-run budget: the gate's budget rule reads maxTokensPerRun only.
BUDGETED_AGENT = ANNOUNCED_AGENT.replace(
    "    maxTokensPerMinute: 8000\n", "    maxTokensPerMinute: 8000\n    maxTokensPerRun: 4000\n"
)
assert BUDGETED_AGENT != ANNOUNCED_AGENT


def manifest(kind: str, name: str, spec: str, ns: str = "default", labels: str = "{}") -> str:
    """One manifest; ``spec`` is a YAML flow mapping, e.g. ``{deny: [{read: 'x_*'}]}``."""
    return (
        f"apiVersion: orloj.dev/v1\nkind: {kind}\n"
        f"metadata:\n  name: {name}\n  namespace: {ns}\n  labels: {labels}\nspec: {spec}\n"
    )


def policy(name: str, spec: str, ns: str = "default") -> str:
    return manifest("Policy", name, spec, ns)


def agent_policy(name: str, spec: str, ns: str = "default") -> str:
    return manifest("AgentPolicy", name, spec, ns)


def role(name: str, *permissions: str, ns: str = "default") -> str:
    quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in permissions)
    return manifest("AgentRole", name, f"{{permissions: [{quoted}]}}", ns)


def tool_permission(name: str, spec: str, ns: str = "default") -> str:
    return manifest("ToolPermission", name, spec, ns)


def approval(name: str, task: str, tool: str, extra: str = "") -> str:
    return manifest("ToolApproval", name, f"{{taskRef: {task}, tool: {tool}{extra}}}")


TOOLS = (
    manifest("Tool", "scan-documents", "{requires: [{read: compliance_docs}]}"),
    manifest("Tool", "flag-issues", "{requires: [{write: issue_tracker}]}"),
    manifest("Tool", "query-db", "{}"),
)
ANNOUNCED = (ANNOUNCED_AGENT, *TOOLS)
BUDGETED = (BUDGETED_AGENT, *TOOLS)

# Orloj's authorizer lab: web-search carries a capability and an operation class (reference 2.2).
WEB_TOOL = manifest("Tool", "web-search", "{capabilities: [web.read], operationClasses: [read]}")
RW_TOOL = manifest("Tool", "web-search", "{capabilities: [web.read], operationClasses: [read, write]}")
WRITE_TOOL = manifest("Tool", "web-search", "{capabilities: [web.read], operationClasses: [write]}")
DEFAULTS = ("tool:web_search:invoke", "capability:web.read")  # the default permission set of web-search


def searcher(spec: str = "", ns: str = "default") -> str:
    """Agent 'searcher' granted web-search (read: web, write: web); ``spec`` adds flow-mapping entries."""
    grant = "tools: [{name: web-search, permissions: [{read: web}, {write: web}]}]"
    return manifest("Agent", "searcher", "{model: gpt-4, " + grant + (", " + spec if spec else "") + "}", ns)


def lab(*docs: str, agent_spec: str = "", tool: str = WEB_TOOL) -> tuple[str, ...]:
    return (searcher(agent_spec), tool, *docs)


# A labelled agent in another namespace, for Policy selectors.
LABELLED = (
    manifest("Agent", "labelled", "{model: gpt-4, tools: [query-db]}", ns="prod", labels="{team: risk}"),
    manifest("Tool", "query-db", "{}", ns="prod"),
)


def load_world(docs: tuple[str, ...]) -> list[ResourceKind]:
    """YAML text to model objects through the real loader; a manifest that fails to load fails the test."""
    result = load_file("world.yaml", "---\n".join(docs).encode())
    errors = [d.format() for d in result.diagnostics if d.severity is Severity.ERROR]
    assert errors == [], errors
    assert len(result.objects) == len(docs)
    return [loaded.obj for loaded in result.objects]


def context_of(objects: list[Any], phases: Mapping[ResourceKey, str] | None = None) -> GovernanceContext:
    return governance.context_of(objects, phases)


def key(text: str) -> ResourceKey:
    """'Kind/name' (namespace default) or 'Kind/ns/name'."""
    parts = text.split("/")
    if len(parts) == 2:
        return ResourceKey(parts[0], "default", parts[1])
    kind, ns, name = parts
    return ResourceKey(kind, ns, name)


# -- the case record ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    tool: str
    needs: tuple[tuple[str, str], ...] = ()
    agent: str = "compliance-checker"  # 'name' (namespace default) or 'ns/name'
    model: str | None = None
    tokens: int | None = None
    task: str | None = None

    def request(self) -> CallRequest:
        ns, _, name = self.agent.rpartition("/")
        return CallRequest(
            agent=ResourceKey("Agent", ns or "default", name),
            tool=self.tool,
            needs=self.needs,
            model=self.model,
            tokens_estimate=self.tokens,
            task=self.task,
        )


@dataclass(frozen=True)
class Expect:
    verdict: Verdict
    reason: ReasonCode
    key: str | None  # the deciding rule's object ('Kind/name' or 'Kind/ns/name'); None for no object
    path: str  # its field path
    absent: bool = False  # True when a missing entry decided
    more: tuple[str, ...] = ()  # str() of because[1:], when the decision carries more than one rule

    def check(self, decision: Decision) -> None:
        assert (decision.verdict, decision.reason) == (self.verdict, self.reason), decision
        assert decision.allowed is (self.verdict is ALLOW)
        assert decision.because, decision
        expected = Provenance(None if self.key is None else key(self.key), self.path, self.absent)
        assert decision.because[0] == expected, decision.because
        if self.more or self.reason in (R.APPROVAL_GRANTED, R.APPROVAL_DENIED, R.APPROVAL_EXPIRED):
            assert tuple(str(b) for b in decision.because[1:]) == self.more, decision.because
        assert decision.message


def allowed(key_: str, path: str) -> Expect:
    return Expect(ALLOW, R.ALLOWED, key_, path)


def denied(reason: ReasonCode, key_: str | None, path: str, absent: bool = False) -> Expect:
    return Expect(DENY, reason, key_, path, absent)


def waits(key_: str, path: str, more: tuple[str, ...] = ()) -> Expect:
    return Expect(WAIT, R.APPROVAL_REQUIRED, key_, path, more=more)


@dataclass(frozen=True)
class Case:
    world: tuple[str, ...]
    call: Call
    expect: Expect
    phases: Mapping[str, str] = field(default_factory=dict)  # ToolApproval name (namespace default) -> phase
    breaks: Callable[[GovernanceContext], GovernanceContext] | None = None


def case(
    id_: str,
    world: tuple[str, ...],
    call: Call,
    expect: Expect,
    *,
    phases: Mapping[str, str] | None = None,
    breaks: Callable[[GovernanceContext], GovernanceContext] | None = None,
    xfail: str | None = None,
) -> ParameterSet:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(world, call, expect, dict(phases or {}), breaks), id=id_, marks=marks)


class Exploding(Mapping[Any, Any]):
    """A mapping that raises on every lookup: a deliberately broken context."""

    def __getitem__(self, item: Any) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


CC = "Agent/compliance-checker"
SEARCHER = "Agent/searcher"
APPROVAL = "ToolApproval/ta-1"
FLAG = Call("flag-issues", (("write", "issue_tracker"),), task="audit-run")
FLAG_APPROVED = approval("ta-1", "audit-run", "flag-issues")
NEEDS_APPROVAL = f"{CC}:spec.governance.requireApproval[0]"
READ_WEB = (("read", "web"),)

# -- 1. the announcement's compliance-checker ---------------------------------------------------------------------

ANNOUNCEMENT = [
    case(
        "announced/read-compliance_docs-allowed",
        ANNOUNCED,
        Call("scan-documents", (("read", "compliance_docs"),)),
        allowed(CC, "spec.tools[0].permissions"),
    ),
    case(
        "announced/read-from-the-tools-requires-alone-allowed",
        ANNOUNCED,
        Call("scan-documents"),
        allowed(CC, "spec.tools[0].permissions"),
    ),
    case(
        "announced/write-issue_tracker-waits-for-approval",
        ANNOUNCED,
        Call("flag-issues", (("write", "issue_tracker"),)),
        waits(CC, "spec.governance.requireApproval[0]"),
    ),
    case(
        "announced/write-analytics_db-not-permitted",
        ANNOUNCED,
        Call("flag-issues", (("write", "analytics_db"),)),
        denied(R.RESOURCE_NOT_PERMITTED, CC, "spec.tools[1].permissions", absent=True),
    ),
    case(
        "announced/read-analytics_db-not-permitted",
        ANNOUNCED,
        Call("scan-documents", (("read", "analytics_db"),)),
        denied(R.RESOURCE_NOT_PERMITTED, CC, "spec.tools[0].permissions", absent=True),
    ),
    case(
        "announced/write-on-a-read-grant-not-permitted",
        ANNOUNCED,
        Call("scan-documents", (("write", "compliance_docs"),)),
        denied(R.RESOURCE_NOT_PERMITTED, CC, "spec.tools[0].permissions", absent=True),
    ),
    case(
        "announced/ungranted-tool-query-db",
        ANNOUNCED,
        Call("query-db", (("read", "analytics_db"),)),
        denied(R.TOOL_NOT_GRANTED, CC, "spec.tools[name=query-db]", absent=True),
    ),
    case(
        "announced/tool-names-are-exact",
        ANNOUNCED,
        Call("Scan-Documents"),
        denied(R.TOOL_NOT_GRANTED, CC, "spec.tools[name=Scan-Documents]", absent=True),
    ),
    # maxTokensPerMinute is a rate over time, charged by the engine; the gate has no clock (docstring) and its
    # budget rule (8) reads maxTokensPerRun only.
    case(
        "announced/per-minute-limit-is-not-a-per-call-limit",
        ANNOUNCED,
        Call("scan-documents", tokens=9000),
        allowed(CC, "spec.tools[0].permissions"),
    ),
    case(
        "budgeted/over-maxTokensPerRun-denied",
        BUDGETED,
        Call("scan-documents", tokens=4001),
        denied(R.BUDGET_EXCEEDED, CC, "spec.governance.maxTokensPerRun"),
    ),
    case(
        "budgeted/at-maxTokensPerRun-allowed",
        BUDGETED,
        Call("scan-documents", tokens=4000),
        allowed(CC, "spec.tools[0].permissions"),
    ),
    case(
        "budgeted/no-estimate-no-budget-check",
        BUDGETED,
        Call("scan-documents"),
        allowed(CC, "spec.tools[0].permissions"),
    ),
    case(
        "budgeted/budget-is-checked-before-approvals",
        (*BUDGETED, FLAG_APPROVED),
        dataclasses.replace(FLAG, tokens=4001),
        denied(R.BUDGET_EXCEEDED, CC, "spec.governance.maxTokensPerRun"),
        phases={"ta-1": "Approved"},
    ),
    case(
        "approval/approved",
        (*ANNOUNCED, FLAG_APPROVED),
        FLAG,
        Expect(ALLOW, R.APPROVAL_GRANTED, APPROVAL, "status.phase", more=(NEEDS_APPROVAL,)),
        phases={"ta-1": "Approved"},
    ),
    case(
        "approval/denied",
        (*ANNOUNCED, FLAG_APPROVED),
        FLAG,
        Expect(DENY, R.APPROVAL_DENIED, APPROVAL, "status.phase", more=(NEEDS_APPROVAL,)),
        phases={"ta-1": "Denied"},
    ),
    case(
        "approval/expired",
        (*ANNOUNCED, FLAG_APPROVED),
        FLAG,
        Expect(DENY, R.APPROVAL_EXPIRED, APPROVAL, "status.phase", more=(NEEDS_APPROVAL,)),
        phases={"ta-1": "Expired"},
    ),
    case(
        "approval/pending",
        (*ANNOUNCED, FLAG_APPROVED),
        FLAG,
        waits(APPROVAL, "status.phase", more=(NEEDS_APPROVAL,)),
        phases={"ta-1": "Pending"},
    ),
    case(
        "approval/no-status-yet-is-pending",
        (*ANNOUNCED, FLAG_APPROVED),
        FLAG,
        waits(APPROVAL, "status.phase", more=(NEEDS_APPROVAL,)),
    ),
    case(
        "approval/phase-is-case-insensitive",
        (*ANNOUNCED, FLAG_APPROVED),
        FLAG,
        Expect(ALLOW, R.APPROVAL_GRANTED, APPROVAL, "status.phase", more=(NEEDS_APPROVAL,)),
        phases={"ta-1": "approved"},
    ),
    case(
        "approval/qualified-task-ref-matches-a-bare-task",
        (*ANNOUNCED, approval("ta-1", "default/audit-run", "flag-issues")),
        FLAG,
        Expect(ALLOW, R.APPROVAL_GRANTED, APPROVAL, "status.phase", more=(NEEDS_APPROVAL,)),
        phases={"ta-1": "Approved"},
    ),
    case(
        "approval/for-this-agent-by-qualified-name",
        (*ANNOUNCED, approval("ta-1", "audit-run", "flag-issues", ", agent: default/compliance-checker")),
        FLAG,
        Expect(ALLOW, R.APPROVAL_GRANTED, APPROVAL, "status.phase", more=(NEEDS_APPROVAL,)),
        phases={"ta-1": "Approved"},
    ),
    case(
        "approval/for-another-agent-does-not-count",
        (*ANNOUNCED, approval("ta-1", "audit-run", "flag-issues", ", agent: other-agent")),
        FLAG,
        waits(CC, "spec.governance.requireApproval[0]"),
        phases={"ta-1": "Approved"},
    ),
    case(
        "approval/for-another-task-does-not-count",
        (*ANNOUNCED, approval("ta-1", "other-run", "flag-issues")),
        FLAG,
        waits(CC, "spec.governance.requireApproval[0]"),
        phases={"ta-1": "Approved"},
    ),
    case(
        "approval/for-another-tool-does-not-count",
        (*ANNOUNCED, approval("ta-1", "audit-run", "scan-documents")),
        FLAG,
        waits(CC, "spec.governance.requireApproval[0]"),
        phases={"ta-1": "Approved"},
    ),
    case(
        "approval/call-without-a-task-waits",
        (*ANNOUNCED, FLAG_APPROVED),
        dataclasses.replace(FLAG, task=None),
        waits(CC, "spec.governance.requireApproval[0]"),
        phases={"ta-1": "Approved"},
    ),
    case(
        "approval/never-opens-an-unpermitted-pair",
        (*ANNOUNCED, FLAG_APPROVED),
        dataclasses.replace(FLAG, needs=(("write", "analytics_db"),)),
        denied(R.RESOURCE_NOT_PERMITTED, CC, "spec.tools[1].permissions", absent=True),
        phases={"ta-1": "Approved"},
    ),
    case(
        "approval/not-needed-no-approval-in-because",
        (*ANNOUNCED, approval("ta-1", "audit-run", "scan-documents")),
        Call("scan-documents", task="audit-run"),
        allowed(CC, "spec.tools[0].permissions"),
        phases={"ta-1": "Denied"},
    ),
]

# -- 2. Policies only tighten -------------------------------------------------------------------------------------

P = "Policy/p"
SCAN = Call("scan-documents")
SCAN_OK = allowed(CC, "spec.tools[0].permissions")  # the outcome when a Policy changes nothing

POLICIES = [
    case(
        "policy/ceiling-keeps-pairs-inside-it",
        (*ANNOUNCED, policy("p", "{allow: [{read: 'compliance_*'}]}")),
        SCAN,
        SCAN_OK,
    ),
    case(
        "policy/ceiling-removes-pairs-outside-it",
        (*ANNOUNCED, policy("p", "{allow: [{read: 'public_*'}]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.allow", absent=True),
    ),
    case(
        "policy/ceiling-of-another-access-removes-the-pair",
        (*ANNOUNCED, policy("p", "{allow: [{write: compliance_docs}]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.allow", absent=True),
    ),
    case(
        "policy/ceiling-cannot-grant-what-the-agent-lacks",
        (*ANNOUNCED, policy("p", "{allow: [{write: analytics_db}, {write: issue_tracker}]}")),
        Call("flag-issues", (("write", "analytics_db"),)),
        denied(R.RESOURCE_NOT_PERMITTED, CC, "spec.tools[1].permissions", absent=True),
    ),
    case(
        "policy/deny-glob-removes-a-granted-pair",
        (*ANNOUNCED, policy("p", "{deny: [{read: 'compliance_*'}]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.deny[0]"),
    ),
    case(
        "policy/deny-star-glob",
        (*ANNOUNCED, policy("p", "{deny: [{admin: '*'}, {read: '*'}]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.deny[1]"),
    ),
    case(
        "policy/deny-glob-of-another-access-changes-nothing",
        (*ANNOUNCED, policy("p", "{deny: [{write: 'compliance_*'}]}")),
        SCAN,
        SCAN_OK,
    ),
    case(
        "policy/deny-glob-that-does-not-match-changes-nothing",
        (*ANNOUNCED, policy("p", "{deny: [{read: 'finance_*'}]}")),
        SCAN,
        SCAN_OK,
    ),
    case(
        "policy/deny-wins-over-a-ceiling-that-admits-the-pair",
        (*ANNOUNCED, policy("p", "{allow: [{read: compliance_docs}], deny: [{read: '*_docs'}]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.deny[0]"),
    ),
    case(
        "policy/blockedTools",
        (*ANNOUNCED, policy("p", "{blockedTools: [query-db, scan-documents]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.blockedTools[1]"),
    ),
    case(
        "policy/blockedTools-beats-an-approval-requirement",
        (*ANNOUNCED, policy("p", "{blockedTools: [flag-issues]}")),
        Call("flag-issues", (("write", "issue_tracker"),)),
        denied(R.BLOCKED_BY_POLICY, P, "spec.blockedTools[0]"),
    ),
    case(
        "policy/blockedTools-is-checked-before-the-tool-manifest",
        (ANNOUNCED_AGENT, policy("p", "{blockedTools: [scan-documents]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.blockedTools[0]"),
    ),
    case(
        "policy/allowedTools-without-the-tool",
        (*ANNOUNCED, policy("p", "{allowedTools: [flag-issues]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.allowedTools", absent=True),
    ),
    case(
        "policy/allowedTools-with-the-tool",
        (*ANNOUNCED, policy("p", "{allowedTools: [scan-documents]}")),
        SCAN,
        SCAN_OK,
    ),
    case(
        "policy/allowedTools-empty-list-allows-no-tool",
        (*ANNOUNCED, policy("p", "{allowedTools: []}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.allowedTools", absent=True),
    ),
    case(
        "policy/allowedTools-cannot-grant-an-ungranted-tool",
        (*ANNOUNCED, policy("p", "{allowedTools: [query-db]}")),
        Call("query-db"),
        denied(R.TOOL_NOT_GRANTED, CC, "spec.tools[name=query-db]", absent=True),
    ),
    case(
        "policy/allowedModels-without-the-agents-model",
        (*ANNOUNCED, policy("p", "{allowedModels: [claude-3]}")),
        SCAN,
        denied(R.MODEL_NOT_ALLOWED, P, "spec.allowedModels"),
    ),
    case(
        "policy/allowedModels-with-the-agents-model",
        (*ANNOUNCED, policy("p", "{allowedModels: [claude-3, gpt-4]}")),
        SCAN,
        SCAN_OK,
    ),
    case(
        "policy/allowedModels-checks-the-requests-model",
        (*ANNOUNCED, policy("p", "{allowedModels: [gpt-4]}")),
        Call("scan-documents", model="gpt-5"),
        denied(R.MODEL_NOT_ALLOWED, P, "spec.allowedModels"),
    ),
    case(
        "policy/allowedModels-admits-the-requests-model",
        (*ANNOUNCED, policy("p", "{allowedModels: [gpt-5]}")),
        Call("scan-documents", model="gpt-5"),
        SCAN_OK,
    ),
    case(
        "policy/allowedModels-intersect-across-policies",
        (*ANNOUNCED, policy("a", "{allowedModels: [gpt-4, x]}"), policy("b", "{allowedModels: [x]}")),
        SCAN,
        denied(R.MODEL_NOT_ALLOWED, "Policy/b", "spec.allowedModels"),
    ),
    case(
        "policy/model-is-checked-before-resources",
        (*ANNOUNCED, policy("p", "{allowedModels: [claude-3]}")),
        Call("flag-issues", (("write", "analytics_db"),)),
        denied(R.MODEL_NOT_ALLOWED, P, "spec.allowedModels"),
    ),
    case(
        "policy/unresolved-model-under-allowedModels-denied",
        (
            manifest("Agent", "compliance-checker", "{modelRef: ep, tools: [query-db]}"),
            *TOOLS,
            policy("p", "{allowedModels: [gpt-4]}"),
        ),
        Call("query-db"),
        denied(R.MODEL_NOT_ALLOWED, P, "spec.allowedModels"),
    ),
    case(
        "policy/requireApproval-exact",
        (*ANNOUNCED, policy("p", "{requireApproval: [{read: compliance_docs}]}")),
        SCAN,
        waits(P, "spec.requireApproval[0]"),
    ),
    case(
        "policy/requireApproval-glob",
        (*ANNOUNCED, policy("p", "{requireApproval: [{write: '*_ledger'}, {read: 'compliance_*'}]}")),
        SCAN,
        waits(P, "spec.requireApproval[1]"),
    ),
    case(
        "policy/requireApproval-star",
        (*ANNOUNCED, policy("p", "{requireApproval: [{read: '*'}]}")),
        SCAN,
        waits(P, "spec.requireApproval[0]"),
    ),
    case(
        "policy/requireApproval-glob-of-another-access-changes-nothing",
        (*ANNOUNCED, policy("p", "{requireApproval: [{write: '*'}]}")),
        SCAN,
        SCAN_OK,
    ),
    case(
        "policy/requireApproval-adds-to-the-agents-own",
        (*ANNOUNCED, policy("p", "{requireApproval: [{write: issue_tracker}]}")),
        Call("flag-issues", (("write", "issue_tracker"),)),
        waits(CC, "spec.governance.requireApproval[0]"),
    ),
    case(
        "policy/budget-alone",
        (*ANNOUNCED, policy("p", "{budgets: {maxTokensPerRun: 1000}}")),
        Call("scan-documents", tokens=1001),
        denied(R.BUDGET_EXCEEDED, P, "spec.budgets.maxTokensPerRun"),
    ),
    case(
        "policy/budget-min-is-the-agents",
        (*BUDGETED, policy("p", "{budgets: {maxTokensPerRun: 5000}}")),
        Call("scan-documents", tokens=4500),
        denied(R.BUDGET_EXCEEDED, CC, "spec.governance.maxTokensPerRun"),
    ),
    case(
        "policy/budget-min-is-the-policys",
        (*BUDGETED, policy("p", "{budgets: {maxTokensPerRun: 3000}}")),
        Call("scan-documents", tokens=3500),
        denied(R.BUDGET_EXCEEDED, P, "spec.budgets.maxTokensPerRun"),
    ),
    case(
        "policy/budget-min-across-policies",
        (
            *ANNOUNCED,
            policy("a", "{budgets: {maxTokensPerRun: 3000}}"),
            policy("b", "{budgets: {maxTokensPerRun: 2000}}"),
        ),
        Call("scan-documents", tokens=2001),
        denied(R.BUDGET_EXCEEDED, "Policy/b", "spec.budgets.maxTokensPerRun"),
    ),
    case(
        "selector/namespace-selects",
        (*ANNOUNCED, policy("p", "{selector: {namespaces: [default]}, blockedTools: [scan-documents]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.blockedTools[0]"),
    ),
    case(
        "selector/other-namespace-changes-nothing",
        (
            *ANNOUNCED,
            policy(
                "p",
                "{selector: {namespaces: [prod]}, blockedTools: [scan-documents], "
                "deny: [{read: '*'}], allowedModels: [x], budgets: {maxTokensPerRun: 1}}",
            ),
        ),
        Call("scan-documents", tokens=10),
        SCAN_OK,
    ),
    case(
        "selector/agent-name-selects",
        (*ANNOUNCED, policy("p", "{selector: {agents: [compliance-checker]}, deny: [{read: '*'}]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, P, "spec.deny[0]"),
    ),
    case(
        "selector/other-agent-name-changes-nothing",
        (*ANNOUNCED, policy("p", "{selector: {agents: [other]}, deny: [{read: '*'}], requireApproval: [{read: '*'}]}")),
        SCAN,
        SCAN_OK,
    ),
    case(
        "selector/matchLabels-selects",
        (*LABELLED, policy("p", "{selector: {matchLabels: {team: risk}}, blockedTools: [query-db]}")),
        Call("query-db", agent="prod/labelled"),
        denied(R.BLOCKED_BY_POLICY, P, "spec.blockedTools[0]"),
    ),
    case(
        "selector/other-labels-change-nothing",
        (*LABELLED, policy("p", "{selector: {matchLabels: {team: ops}}, blockedTools: [query-db]}")),
        Call("query-db", agent="prod/labelled"),
        allowed("Agent/prod/labelled", "spec.tools[0]"),
    ),
    case(
        "selector/every-criterion-must-match",
        (
            *LABELLED,
            policy("p", "{selector: {namespaces: [prod], matchLabels: {team: ops}}, blockedTools: [query-db]}"),
        ),
        Call("query-db", agent="prod/labelled"),
        allowed("Agent/prod/labelled", "spec.tools[0]"),
    ),
    case(
        "selector/unlabelled-agent-is-not-selected-by-labels",
        (*ANNOUNCED, policy("p", "{selector: {matchLabels: {team: risk}}, blockedTools: [scan-documents]}")),
        SCAN,
        SCAN_OK,
    ),
    case(
        "agentpolicy/global-blockedTools",
        (*ANNOUNCED, agent_policy("ap", "{applyMode: global, blockedTools: [query-db, scan-documents]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, "AgentPolicy/ap", "spec.blockedTools[1]"),
    ),
    case(
        "agentpolicy/global-allowedModels",
        (*ANNOUNCED, agent_policy("ap", "{applyMode: global, allowedModels: [gpt-4o]}")),
        SCAN,
        denied(R.MODEL_NOT_ALLOWED, "AgentPolicy/ap", "spec.allowedModels"),
    ),
    case(
        "agentpolicy/global-maxTokensPerRun",
        (*ANNOUNCED, agent_policy("ap", "{applyMode: global, maxTokensPerRun: 100}")),
        Call("scan-documents", tokens=101),
        denied(R.BUDGET_EXCEEDED, "AgentPolicy/ap", "spec.maxTokensPerRun"),
    ),
    case(
        "agentpolicy/global-maxTokensPerRun-below-the-agents",
        (*BUDGETED, agent_policy("ap", "{applyMode: global, maxTokensPerRun: 100}")),
        Call("scan-documents", tokens=101),
        denied(R.BUDGET_EXCEEDED, "AgentPolicy/ap", "spec.maxTokensPerRun"),
    ),
    case(
        "agentpolicy/zero-tokens-means-no-budget",
        (*ANNOUNCED, agent_policy("ap", "{applyMode: global, maxTokensPerRun: 0}")),
        Call("scan-documents", tokens=10**9),
        SCAN_OK,
    ),
    # reference 2.1: "Policies are listed across the store (no namespace filter in the matcher)".
    case(
        "agentpolicy/global-in-another-namespace-applies",
        (*ANNOUNCED, agent_policy("ap", "{apply_mode: global, blocked_tools: [scan-documents]}", ns="ops")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, "AgentPolicy/ops/ap", "spec.blockedTools[0]"),
    ),
    # reference 2.1: apply_mode empty -> scoped; scoped matches only by task / system.
    case(
        "agentpolicy/default-mode-is-scoped-not-applied",
        (*ANNOUNCED, agent_policy("ap", "{blockedTools: [scan-documents], allowedModels: [x]}")),
        SCAN,
        SCAN_OK,
    ),
    case(
        "agentpolicy/scoped-to-a-system-not-applied-per-call",
        (*ANNOUNCED, agent_policy("ap", "{targetSystems: [report-system], blockedTools: [scan-documents]}")),
        Call("scan-documents", task="weekly-report"),
        SCAN_OK,
    ),
    case(
        "agentpolicy/scoped-to-another-task-not-applied",
        (*ANNOUNCED, agent_policy("ap", "{targetTasks: [other-run], blockedTools: [scan-documents]}")),
        Call("scan-documents", task="audit-run"),
        SCAN_OK,
    ),
    case(
        "agentpolicy/scoped-to-the-calls-task-applies",
        (*ANNOUNCED, agent_policy("ap", "{targetTasks: [audit-run], blockedTools: [scan-documents]}")),
        Call("scan-documents", task="audit-run"),
        denied(R.BLOCKED_BY_POLICY, "AgentPolicy/ap", "spec.blockedTools[0]"),
    ),
    case(
        "agentpolicy/blocked-tool-in-spec-tools-stops-the-whole-agent",
        (*ANNOUNCED, agent_policy("ap", "{applyMode: global, blockedTools: [flag-issues]}")),
        SCAN,
        denied(R.BLOCKED_BY_POLICY, "AgentPolicy/ap", "spec.blockedTools[0]"),
    ),
]

# -- 3. Orloj's authorizer: AgentRole, ToolPermission (reference 2.2) --------------------------------------------

TP = "ToolPermission/tp"
WEB = Call("web-search", READ_WEB, agent="searcher")
WEB_OK = allowed(SEARCHER, "spec.tools[0].permissions")
HOLDS_DEFAULTS = role("reader", *DEFAULTS)

AUTHORIZER = [
    case("orloj/no-roles-no-rules-is-opt-in", lab(), WEB, WEB_OK),
    case(
        "orloj/missing-role",
        lab(agent_spec="roles: [reader]"),
        WEB,
        denied(R.ROLE_NOT_FOUND, SEARCHER, "spec.roles[0]"),
    ),
    case(
        "orloj/second-role-missing",
        lab(HOLDS_DEFAULTS, agent_spec="roles: [reader, auditor]"),
        WEB,
        denied(R.ROLE_NOT_FOUND, SEARCHER, "spec.roles[1]"),
    ),
    case(
        "orloj/role-in-another-namespace-is-not-found",
        lab(role("reader", *DEFAULTS, ns="ops"), agent_spec="roles: [reader]"),
        WEB,
        denied(R.ROLE_NOT_FOUND, SEARCHER, "spec.roles[0]"),
    ),
    case(
        "orloj/qualified-role-ref-finds-it",
        lab(role("reader", *DEFAULTS, ns="ops"), agent_spec="roles: [ops/reader]"),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/no-rules-role-holds-the-default-set",
        lab(HOLDS_DEFAULTS, agent_spec="roles: [reader]"),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/no-rules-role-lacks-the-capability",
        lab(role("reader", "tool:web_search:invoke"), agent_spec="roles: [reader]"),
        WEB,
        denied(R.PERMISSION_NOT_HELD, SEARCHER, "spec.roles"),
    ),
    case(
        "orloj/no-rules-role-lacks-invoke",
        lab(role("reader", "capability:web.read"), agent_spec="roles: [reader]"),
        WEB,
        denied(R.PERMISSION_NOT_HELD, SEARCHER, "spec.roles"),
    ),
    case(
        "orloj/default-set-held-across-two-roles",
        lab(role("a", "tool:web_search:invoke"), role("b", "capability:web.read"), agent_spec="roles: [a, b]"),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/normalise-case-and-dash",
        lab(role("reader", "TOOL:Web-Search:INVOKE", "Capability:Web.Read"), agent_spec="roles: [reader]"),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/normalise-spaces-are-removed",
        lab(role("reader", "  tool : web_search : invoke ", "capability: web.read"), agent_spec="roles: [reader]"),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/normalise-slash-and-backslash",
        lab(role("reader", "tool:web/search:invoke", "capability:web.read"), agent_spec="roles: [reader]"),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/normalise-backslash",
        lab(role("reader", "tool:web\\search:invoke", "capability:web.read"), agent_spec="roles: [reader]"),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/normalise-does-not-invent-underscores-for-spaces",
        lab(role("reader", "tool:web search:invoke", "capability:web.read"), agent_spec="roles: [reader]"),
        WEB,
        denied(R.PERMISSION_NOT_HELD, SEARCHER, "spec.roles"),
    ),
    case(
        "orloj/matchMode-all-holds-all",
        lab(
            role("reader", "a", "b"),
            tool_permission("tp", "{toolRef: web-search, requiredPermissions: [a, b]}"),
            agent_spec="roles: [reader]",
        ),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/matchMode-all-holds-one",
        lab(
            role("reader", "a"),
            tool_permission("tp", "{toolRef: web-search, requiredPermissions: [a, b]}"),
            agent_spec="roles: [reader]",
        ),
        WEB,
        denied(R.PERMISSION_NOT_HELD, TP, "spec.requiredPermissions"),
    ),
    case(
        "orloj/matchMode-any-holds-one",
        lab(
            role("reader", "b"),
            tool_permission("tp", "{toolRef: web-search, requiredPermissions: [a, b], matchMode: any}"),
            agent_spec="roles: [reader]",
        ),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/matchMode-any-holds-none",
        lab(
            role("reader", "c"),
            tool_permission("tp", "{toolRef: web-search, requiredPermissions: [a, b], matchMode: any}"),
            agent_spec="roles: [reader]",
        ),
        WEB,
        denied(R.PERMISSION_NOT_HELD, TP, "spec.requiredPermissions"),
    ),
    case(
        "orloj/required-permissions-are-normalised",
        lab(
            role("reader", "reports_read"),
            tool_permission("tp", "{toolRef: web-search, requiredPermissions: [Reports-Read]}"),
            agent_spec="roles: [reader]",
        ),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/rules-apply-to-agents-without-roles",
        lab(tool_permission("tp", "{toolRef: web-search, requiredPermissions: [a]}")),
        WEB,
        denied(R.PERMISSION_NOT_HELD, TP, "spec.requiredPermissions"),
    ),
    case(
        "orloj/toolRef-defaults-to-metadata-name",
        lab(tool_permission("web-search", "{requiredPermissions: [a]}")),
        WEB,
        denied(R.PERMISSION_NOT_HELD, "ToolPermission/web-search", "spec.requiredPermissions"),
    ),
    case(
        "orloj/toolRef-is-case-insensitive",
        lab(tool_permission("tp", "{toolRef: Web-Search, requiredPermissions: [a]}")),
        WEB,
        denied(R.PERMISSION_NOT_HELD, TP, "spec.requiredPermissions"),
    ),
    case(
        "orloj/rule-for-another-tool-does-not-apply",
        lab(tool_permission("tp", "{toolRef: other-tool, requiredPermissions: [a]}")),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/rule-in-another-namespace-does-not-apply",
        lab(tool_permission("tp", "{toolRef: web-search, requiredPermissions: [a]}", ns="ops")),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/scoped-rule-for-another-agent-does-not-apply",
        lab(
            tool_permission(
                "tp", "{toolRef: web-search, requiredPermissions: [a], applyMode: scoped, targetAgents: [other]}"
            )
        ),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/scoped-rule-for-this-agent-applies",
        lab(
            tool_permission(
                "tp", "{toolRef: web-search, requiredPermissions: [a], applyMode: scoped, targetAgents: [searcher]}"
            )
        ),
        WEB,
        denied(R.PERMISSION_NOT_HELD, TP, "spec.requiredPermissions"),
    ),
    case(
        "orloj/empty-rule-requires-the-default-set-held",
        lab(HOLDS_DEFAULTS, tool_permission("tp", "{toolRef: web-search}"), agent_spec="roles: [reader]"),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/empty-rule-requires-the-default-set-of-its-action",
        lab(HOLDS_DEFAULTS, tool_permission("tp", "{toolRef: web-search, action: call}"), agent_spec="roles: [reader]"),
        WEB,
        denied(R.PERMISSION_NOT_HELD, TP, "spec.requiredPermissions"),
    ),
    case(
        "orloj/operation-rule-deny",
        lab(tool_permission("tp", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: deny}]}")),
        WEB,
        denied(R.BLOCKED_BY_POLICY, TP, "spec.operationRules[0]"),
    ),
    case(
        "orloj/operation-rule-approval_required",
        lab(
            tool_permission(
                "tp", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: approval_required}]}"
            )
        ),
        WEB,
        waits(TP, "spec.operationRules[0]"),
    ),
    case(
        "orloj/operation-rule-allow",
        lab(tool_permission("tp", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: allow}]}")),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/operation-rule-exact-class-beats-star",
        lab(
            tool_permission(
                "tp",
                "{toolRef: web-search, operationRules: [{operationClass: '*', verdict: deny}, "
                "{operationClass: read, verdict: allow}]}",
            )
        ),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/operation-rule-star-when-no-exact",
        lab(
            tool_permission(
                "tp",
                "{toolRef: web-search, operationRules: [{operationClass: write, verdict: allow}, "
                "{verdict: approval_required}]}",
            )
        ),
        WEB,
        waits(TP, "spec.operationRules[1]"),
    ),
    case(
        "orloj/operation-rule-for-another-class-changes-nothing",
        lab(tool_permission("tp", "{toolRef: web-search, operationRules: [{operationClass: delete, verdict: deny}]}")),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/strictest-across-rules-deny-beats-approval",
        lab(
            tool_permission(
                "tp", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: approval_required}]}"
            ),
            tool_permission("tp2", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: deny}]}"),
        ),
        WEB,
        denied(R.BLOCKED_BY_POLICY, "ToolPermission/tp2", "spec.operationRules[0]"),
    ),
    case(
        "orloj/strictest-across-rules-approval-beats-allow",
        lab(
            tool_permission("tp", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: allow}]}"),
            tool_permission(
                "tp2", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: approval_required}]}"
            ),
        ),
        WEB,
        waits("ToolPermission/tp2", "spec.operationRules[0]"),
    ),
    case(
        "orloj/strictest-across-classes-of-the-tool",
        lab(
            tool_permission(
                "tp",
                "{toolRef: web-search, operationRules: [{operationClass: read, verdict: "
                "approval_required}, {operationClass: write, verdict: deny}]}",
            ),
            tool=RW_TOOL,
        ),
        WEB,
        denied(R.BLOCKED_BY_POLICY, TP, "spec.operationRules[1]"),
    ),
    case(
        "orloj/tool-operation-class-applies-without-needs",
        lab(
            tool_permission(
                "tp", "{toolRef: web-search, operationRules: [{operationClass: write, verdict: approval_required}]}"
            ),
            tool=WRITE_TOOL,
        ),
        Call("web-search", agent="searcher"),
        waits(TP, "spec.operationRules[0]"),
    ),
    case(
        "orloj/needed-access-is-an-operation-class-too",
        lab(tool_permission("tp", "{toolRef: web-search, operationRules: [{operationClass: write, verdict: deny}]}")),
        Call("web-search", (("write", "web"),), agent="searcher"),
        denied(R.BLOCKED_BY_POLICY, TP, "spec.operationRules[0]"),
    ),
    # reference 2.2 (Tool): operation_classes default [read] for low/medium risk, [write] for high/critical.
    case(
        "orloj/default-operation-class-of-a-low-risk-tool-is-read",
        (
            searcher(),
            manifest("Tool", "web-search", "{riskLevel: low}"),
            tool_permission("tp", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: deny}]}"),
        ),
        Call("web-search", agent="searcher"),
        denied(R.BLOCKED_BY_POLICY, TP, "spec.operationRules[0]"),
    ),
    case(
        "orloj/default-operation-class-of-a-high-risk-tool-is-write",
        (
            searcher(),
            manifest("Tool", "web-search", "{riskLevel: high}"),
            tool_permission(
                "tp", "{toolRef: web-search, operationRules: [{operationClass: write, verdict: approval_required}]}"
            ),
        ),
        Call("web-search", agent="searcher"),
        waits(TP, "spec.operationRules[0]"),
    ),
    case(
        "orloj/operation-rule-approval-then-approved",
        (
            *lab(
                tool_permission(
                    "tp", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: approval_required}]}"
                )
            ),
            approval("ta-1", "lab-run", "web-search"),
        ),
        dataclasses.replace(WEB, task="lab-run"),
        Expect(ALLOW, R.APPROVAL_GRANTED, APPROVAL, "status.phase", more=(f"{TP}:spec.operationRules[0]",)),
        phases={"ta-1": "Approved"},
    ),
    case(
        "orloj/operation-rule-deny-is-checked-before-the-budget",
        lab(
            tool_permission("tp", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: deny}]}"),
            agent_spec="governance: {maxTokensPerRun: 10}",
        ),
        dataclasses.replace(WEB, tokens=11),
        denied(R.BLOCKED_BY_POLICY, TP, "spec.operationRules[0]"),
    ),
    case(
        "orloj/missing-role-is-checked-before-the-budget",
        lab(agent_spec="roles: [reader], governance: {maxTokensPerRun: 10}"),
        dataclasses.replace(WEB, tokens=11),
        denied(R.ROLE_NOT_FOUND, SEARCHER, "spec.roles[0]"),
    ),
    case(
        "orloj/policy-block-is-checked-before-roles",
        lab(policy("p", "{blockedTools: [web-search]}"), agent_spec="roles: [reader]"),
        WEB,
        denied(R.BLOCKED_BY_POLICY, P, "spec.blockedTools[0]"),
    ),
    case(
        "orloj/allowedTools-bypasses-a-missing-role",
        lab(agent_spec="roles: [reader], allowedTools: [Web-Search]"),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/allowedTools-bypasses-requiredPermissions",
        lab(
            tool_permission("tp", "{toolRef: web-search, requiredPermissions: [a]}"),
            agent_spec="allowedTools: [' web-search ']",
        ),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/allowedTools-bypasses-operation-rules",
        lab(
            tool_permission("tp", "{toolRef: web-search, operationRules: [{operationClass: read, verdict: deny}]}"),
            agent_spec="allowedTools: [web-search]",
        ),
        WEB,
        WEB_OK,
    ),
    case(
        "orloj/allowedTools-for-another-tool-bypasses-nothing",
        lab(agent_spec="roles: [reader], allowedTools: [other-tool]"),
        WEB,
        denied(R.ROLE_NOT_FOUND, SEARCHER, "spec.roles[0]"),
    ),
    case(
        "orloj/allowedTools-never-grants-a-tool-outside-spec-tools",
        (manifest("Agent", "searcher", "{model: gpt-4, allowedTools: [web-search]}"), WEB_TOOL),
        Call("web-search", agent="searcher"),
        denied(R.TOOL_NOT_GRANTED, SEARCHER, "spec.tools[name=web-search]", absent=True),
    ),
    case(
        "orloj/allowedTools-never-grants-an-ungranted-pair",
        lab(agent_spec="allowedTools: [web-search]"),
        Call("web-search", (("delete", "web"),), agent="searcher"),
        denied(R.RESOURCE_NOT_PERMITTED, SEARCHER, "spec.tools[0].permissions", absent=True),
    ),
    # reference 2.2 step 1: allowed_tools skips the authorizer, "AgentPolicy still applies".
    case(
        "orloj/allowedTools-does-not-bypass-an-agent-policy",
        lab(
            agent_policy("ap", "{applyMode: global, blockedTools: [web-search]}"),
            agent_spec="allowedTools: [web-search]",
        ),
        WEB,
        denied(R.BLOCKED_BY_POLICY, "AgentPolicy/ap", "spec.blockedTools[0]"),
    ),
]

# -- 4. fail closed ------------------------------------------------------------------------------------------------

INTERNAL = denied(R.INTERNAL_ERROR, None, "orlojd.core.governance.decide")

FAIL_CLOSED = [
    case(
        "closed/unknown-agent",
        ANNOUNCED,
        Call("scan-documents", agent="ghost"),
        denied(R.AGENT_NOT_FOUND, "Agent/ghost", "", absent=True),
    ),
    case(
        "closed/same-name-in-another-namespace-is-another-agent",
        ANNOUNCED,
        Call("scan-documents", agent="prod/compliance-checker"),
        denied(R.AGENT_NOT_FOUND, "Agent/prod/compliance-checker", "", absent=True),
    ),
    case(
        "closed/granted-tool-without-a-tool-manifest",
        (ANNOUNCED_AGENT, TOOLS[1]),
        SCAN,
        denied(R.TOOL_NOT_FOUND, "Tool/scan-documents", "", absent=True),
    ),
    case(
        "closed/tool-manifest-in-another-namespace-is-not-found",
        (*LABELLED[:1], TOOLS[2]),
        Call("query-db", agent="prod/labelled"),
        denied(R.TOOL_NOT_FOUND, "Tool/prod/query-db", "", absent=True),
    ),
    case(
        "closed/context-whose-agents-raise",
        ANNOUNCED,
        SCAN,
        INTERNAL,
        breaks=lambda c: dataclasses.replace(c, agents=Exploding()),
    ),
    case(
        "closed/context-whose-tools-raise",
        ANNOUNCED,
        SCAN,
        INTERNAL,
        breaks=lambda c: dataclasses.replace(c, tools=Exploding()),
    ),
    case(
        "closed/context-whose-approvals-raise-while-waiting",
        (*ANNOUNCED, FLAG_APPROVED),
        FLAG,
        INTERNAL,
        breaks=lambda c: dataclasses.replace(c, approvals=Exploding()),
    ),
    case(
        "closed/not-a-context-at-all",
        ANNOUNCED,
        SCAN,
        INTERNAL,
        breaks=lambda c: cast(GovernanceContext, object()),
    ),
]

CASES = [*ANNOUNCEMENT, *POLICIES, *AUTHORIZER, *FAIL_CLOSED]


def test_the_table_is_large_and_ids_are_unique() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) >= 50
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("row", CASES)
def test_decision(row: Case) -> None:
    phases = {ResourceKey("ToolApproval", "default", name): phase for name, phase in row.phases.items()}
    context = context_of(load_world(row.world), phases)
    if row.breaks is not None:
        context = row.breaks(context)
    row.expect.check(decide(context, row.call.request()))


def test_a_wrong_expectation_fails() -> None:
    """The checker is not a tautology: the right verdict with the wrong rule, or the wrong absent flag, fails."""
    decision = decide(context_of(load_world(ANNOUNCED)), Call("flag-issues", (("write", "analytics_db"),)).request())
    denied(R.RESOURCE_NOT_PERMITTED, CC, "spec.tools[1].permissions", absent=True).check(decision)
    for wrong in (
        denied(R.RESOURCE_NOT_PERMITTED, CC, "spec.tools[1].permissions"),
        denied(R.RESOURCE_NOT_PERMITTED, CC, "spec.tools[0].permissions", absent=True),
        denied(R.BLOCKED_BY_POLICY, CC, "spec.tools[1].permissions", absent=True),
        denied(R.RESOURCE_NOT_PERMITTED, "Agent/ops/compliance-checker", "spec.tools[1].permissions", absent=True),
    ):
        with pytest.raises(AssertionError):
            wrong.check(decision)


# -- 5. the real Orloj manifests of the conformance corpus ----------------------------------------------------------


@functools.cache
def corpus_objects(corpus: Path) -> tuple[Any, ...]:
    """Every object of the corpus, through the loader test_conformance uses (sources.load)."""
    desired, _ = load(corpus, resolve=False)
    assert desired.errors == []
    return tuple(lo.obj for lo in desired.objects.values())


@dataclass(frozen=True)
class CorpusCase:
    call: Call
    expect: Expect
    extra: tuple[str, ...] = ()  # manifests added to the corpus (a ToolApproval Orloj would create at runtime)
    phases: Mapping[str, str] = field(default_factory=dict)  # 'ns/name' of a ToolApproval -> phase


def corpus_case(id_: str, call: Call, expect: Expect, *, xfail: str | None = None, **kw: Any) -> ParameterSet:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(CorpusCase(call, expect, **kw), id=id_, marks=marks)


RESOURCES = "examples/resources"
APPROVAL_NS = "rr-real-tool-approval"
APPROVAL_AGENT = f"{APPROVAL_NS}/rr-real-approval-agent"
APPROVAL_TOOL = "rr-real-approval-smoke-tool"
APPROVAL_RULE = f"ToolPermission/{APPROVAL_NS}/rr-real-approval-perm"
RUNTIME_APPROVAL = manifest(
    "ToolApproval", "ta-0c0ffee0", f"{{task_ref: rr-real-approval-task, tool: {APPROVAL_TOOL}}}", ns=APPROVAL_NS
)

CORPUS_CASES = [
    # agents/research_agent_governed_allow.yaml:10-15 roles [analyst-role, vector-reader-role], tools [web_search,
    # vector_db]; agent-roles/analyst_role.yaml:7-9 holds tool:web_search:invoke + capability:web.read, exactly
    # tool-permissions/web_search_invoke_permission.yaml:10-12 (match_mode all); tools/web_search_tool.yaml has no
    # requires -> no needed pairs -> allowed by the grant entry itself.
    corpus_case(
        "research-agent-governed-allow/web_search",
        Call("web_search", agent="research-agent-governed-allow"),
        allowed("Agent/research-agent-governed-allow", "spec.tools[0]"),
    ),
    # agent-roles/vector_reader_role.yaml:7-8 holds tool:vector_db:invoke = vector_db_invoke_permission.yaml:10-11.
    corpus_case(
        "research-agent-governed-allow/vector_db",
        Call("vector_db", agent="research-agent-governed-allow"),
        allowed("Agent/research-agent-governed-allow", "spec.tools[1]"),
    ),
    # agents/research_agent_governed.yaml:10-11 roles [analyst-role] only: web_search allowed as above ...
    corpus_case(
        "research-agent-governed/web_search",
        Call("web_search", agent="research-agent-governed"),
        allowed("Agent/research-agent-governed", "spec.tools[0]"),
    ),
    # ... but vector_db_invoke_permission.yaml:10-11 requires tool:vector_db:invoke, which analyst_role.yaml:7-9
    # does not hold (reference 2.2 step 5: match_mode all, failure -> deny).
    corpus_case(
        "research-agent-governed/vector_db",
        Call("vector_db", agent="research-agent-governed"),
        denied(R.PERMISSION_NOT_HELD, "ToolPermission/vector-db-invoke", "spec.requiredPermissions"),
    ),
    # agents/research_agent.yaml:10-12 has no roles, but a global ToolPermission for web_search exists
    # (web_search_invoke_permission.yaml:9-12): rules exist, so step 4's opt-in does not apply; nothing is held.
    corpus_case(
        "research-agent/web_search-rules-apply-without-roles",
        Call("web_search", agent="research-agent"),
        denied(R.PERMISSION_NOT_HELD, "ToolPermission/web-search-invoke", "spec.requiredPermissions"),
    ),
    # research_agent_governed.yaml:12-14 does not list filesystem_delete; the only AgentPolicy
    # (agent-policies/cost_policy.yaml:6-13) is scoped, and nothing grants the tool anyway.
    corpus_case(
        "research-agent-governed/filesystem_delete-not-granted",
        Call("filesystem_delete", agent="research-agent-governed"),
        denied(R.TOOL_NOT_GRANTED, "Agent/research-agent-governed", "spec.tools[name=filesystem_delete]", absent=True),
    ),
    # blueprints/pipeline/agents/research_agent.yaml declares no tools at all.
    corpus_case(
        "bp-pipeline-research-agent/web_search-not-granted",
        Call("web_search", agent="bp-pipeline-research-agent"),
        denied(R.TOOL_NOT_GRANTED, "Agent/bp-pipeline-research-agent", "spec.tools[name=web_search]", absent=True),
    ),
    # scenarios-real/09-governance-real-deny: deny_agent.yaml:8-11 role rr-real-gov-limited-role, which holds only
    # capability:docs.write (agent_role.yaml:8-9); tool_permission.yaml:9-13 requires the tool's invoke permission
    # and capability:stub.read (match_mode all) -> the deny path the scenario is named after.
    corpus_case(
        "rr-real-gov-deny-agent/governed-smoke-tool",
        Call("rr-real-governed-smoke-tool", agent="rr-real-gov-deny/rr-real-gov-deny-agent"),
        denied(
            R.PERMISSION_NOT_HELD,
            "ToolPermission/rr-real-gov-deny/rr-real-governed-smoke-invoke",
            "spec.requiredPermissions",
        ),
    ),
    # scenarios-real/17-tool-approval-live: agent_role.yaml:8-10 holds both permissions tool_permission.yaml:11-13
    # requires; its operation_rules (lines 14-16) make write approval_required, and tool_smoke.yaml:9-10 declares
    # operation_classes [write] -> the call waits for a ToolApproval.
    corpus_case(
        "rr-real-approval-agent/smoke-tool-waits",
        Call(APPROVAL_TOOL, agent=APPROVAL_AGENT, task="rr-real-approval-task"),
        waits(APPROVAL_RULE, "spec.operationRules[0]"),
    ),
    # ... and once the ToolApproval Orloj creates for (task, tool) is Approved (reference 2.4 Resume), it is allowed.
    corpus_case(
        "rr-real-approval-agent/smoke-tool-approved",
        Call(APPROVAL_TOOL, agent=APPROVAL_AGENT, task="rr-real-approval-task"),
        Expect(
            ALLOW,
            R.APPROVAL_GRANTED,
            f"ToolApproval/{APPROVAL_NS}/ta-0c0ffee0",
            "status.phase",
            more=(f"{APPROVAL_RULE}:spec.operationRules[0]",),
        ),
        extra=(RUNTIME_APPROVAL,),
        phases={f"{APPROVAL_NS}/ta-0c0ffee0": "Approved"},
    ),
    # ... Denied (reference 2.4 Fail: task Failed "tool approval denied").
    corpus_case(
        "rr-real-approval-agent/smoke-tool-denied",
        Call(APPROVAL_TOOL, agent=APPROVAL_AGENT, task="rr-real-approval-task"),
        Expect(
            DENY,
            R.APPROVAL_DENIED,
            f"ToolApproval/{APPROVAL_NS}/ta-0c0ffee0",
            "status.phase",
            more=(f"{APPROVAL_RULE}:spec.operationRules[0]",),
        ),
        extra=(RUNTIME_APPROVAL,),
        phases={f"{APPROVAL_NS}/ta-0c0ffee0": "Denied"},
    ),
    # scenarios-real/04-tool-call-smoke: analyst_agent.yaml:28-29 lists the tool, no roles, and the rr-real-tool
    # namespace has no ToolPermission -> governance is opt-in (reference 2.2 step 4).
    corpus_case(
        "rr-real-tool-analyst-agent/http-smoke-tool",
        Call("rr-real-http-smoke-tool", agent="rr-real-tool/rr-real-tool-analyst-agent"),
        allowed("Agent/rr-real-tool/rr-real-tool-analyst-agent", "spec.tools[0]"),
    ),
    # scenarios-real/14-mcp-tool-smoke: mcp_tool_agent.yaml lists rr-real-mcp-everything--echo, a Tool the McpServer
    # controller generates at runtime; no manifest declares it -> fail closed.
    corpus_case(
        "rr-real-mcp-tool-agent/generated-tool-not-found",
        Call("rr-real-mcp-everything--echo", agent="rr-real-mcp/rr-real-mcp-tool-agent"),
        denied(R.TOOL_NOT_FOUND, "Tool/rr-real-mcp/rr-real-mcp-everything--echo", "", absent=True),
    ),
    # Agents are namespaced: research-agent-governed-allow lives in default only.
    corpus_case(
        "research-agent-governed-allow/other-namespace-not-found",
        Call("web_search", agent="rr-real-tool/research-agent-governed-allow"),
        denied(R.AGENT_NOT_FOUND, "Agent/rr-real-tool/research-agent-governed-allow", "", absent=True),
    ),
    # agent-policies/cost_policy.yaml:6-11 is scoped to report-system (which runs research-agent,
    # agent-systems/report_system.yaml:10-13; task weekly-report, tasks/weekly_report_task.yaml:4-6) and allows
    # only gpt-4o, while research-agent's endpoint serves gpt-4o-mini (model-endpoints/openai_default.yaml:8):
    # reference 2.1 fails the agent with "policy disallows model" before any tool call.
    corpus_case(
        "research-agent/cost-policy-disallows-its-model-in-weekly-report",
        Call("web_search", agent="research-agent", model="gpt-4o-mini", task="weekly-report"),
        denied(R.MODEL_NOT_ALLOWED, "AgentPolicy/cost-policy", "spec.allowedModels"),
    ),
]


def test_the_corpus_holds_the_governance_manifests_the_cases_name(conformance_dir: Path) -> None:
    objects = corpus_objects(conformance_dir)
    kinds = {type(o).__name__ for o in objects}
    assert kinds >= {"Agent", "Tool", "AgentPolicy", "AgentRole", "ToolPermission"}
    assert sum(isinstance(o, ToolPermission) for o in objects) == 4
    assert sum(isinstance(o, AgentRole) for o in objects) == 4


@pytest.mark.parametrize("row", CORPUS_CASES)
def test_corpus_decision(row: CorpusCase, conformance_dir: Path) -> None:
    objects = [*corpus_objects(conformance_dir), *(load_world(row.extra) if row.extra else [])]
    phases = {key("ToolApproval/" + name): phase for name, phase in row.phases.items()}
    row.expect.check(decide(context_of(objects, phases), row.call.request()))
