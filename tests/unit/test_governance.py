"""The governance decision function (core.governance): a table of cases and two properties."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orlojd.core.governance import CallRequest, Decision, ReasonCode, Verdict, build_context, decide
from orlojd.core.governance_index import GovernanceContext
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.policies import AgentPolicy, AgentRole, Policy, ToolApproval, ToolPermission
from orlojd.core.manifests.tools import Tool


def agent(
    name: str = "compliance-checker", ns: str = "default", labels: dict[str, str] | None = None, **spec: Any
) -> Agent:
    spec.setdefault("model", "gpt-4")
    return Agent.model_validate(
        {"kind": "Agent", "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": spec}
    )


def tool(name: str, ns: str = "default", **spec: Any) -> Tool:
    return Tool.model_validate({"kind": "Tool", "metadata": {"name": name, "namespace": ns}, "spec": spec})


def policy(name: str, ns: str = "default", **spec: Any) -> Policy:
    return Policy.model_validate({"kind": "Policy", "metadata": {"name": name, "namespace": ns}, "spec": spec})


def agent_policy(name: str, **spec: Any) -> AgentPolicy:
    return AgentPolicy.model_validate({"kind": "AgentPolicy", "metadata": {"name": name}, "spec": spec})


def role(name: str, *permissions: str) -> AgentRole:
    return AgentRole.model_validate(
        {"kind": "AgentRole", "metadata": {"name": name}, "spec": {"permissions": list(permissions)}}
    )


def tool_permission(name: str, **spec: Any) -> ToolPermission:
    return ToolPermission.model_validate({"kind": "ToolPermission", "metadata": {"name": name}, "spec": spec})


def approval(name: str, task: str, tool_name: str, **spec: Any) -> ToolApproval:
    return ToolApproval.model_validate(
        {"kind": "ToolApproval", "metadata": {"name": name}, "spec": {"taskRef": task, "tool": tool_name, **spec}}
    )


COMPLIANCE = agent(
    tools=[
        {"name": "scan-documents", "permissions": [{"read": "compliance_docs"}]},
        {"name": "flag-issues", "permissions": [{"write": "issue_tracker"}]},
    ],
    governance={"maxTokensPerMinute": 8000, "requireApproval": [{"write": "issue_tracker"}], "auditLog": True},
)
TOOLS = [
    tool("scan-documents", requires=[{"read": "compliance_docs"}]),
    tool("flag-issues", requires=[{"write": "issue_tracker"}]),
    tool("query-db"),
    tool("delete-records"),
]
KEY = ResourceKey("Agent", "default", "compliance-checker")


def ctx(*agents: Agent, tools: list[Tool] | None = None, **kinds: Any) -> GovernanceContext:
    return build_context(agents or [COMPLIANCE], tools=TOOLS if tools is None else tools, **kinds)


def call(tool_name: str, *needs: tuple[str, str], key: ResourceKey = KEY, **kw: Any) -> CallRequest:
    return CallRequest(agent=key, tool=tool_name, needs=tuple(needs), **kw)


def check(decision: Decision, verdict: Verdict, reason: ReasonCode, because: str | None = None) -> None:
    assert (decision.verdict, decision.reason) == (verdict, reason), decision
    assert decision.because, decision
    if because is not None:
        assert any(because in str(b) for b in decision.because), decision.because


ALLOW, DENY, WAIT = Verdict.ALLOW, Verdict.DENY, Verdict.APPROVAL_REQUIRED
R = ReasonCode


# -- the announcement's compliance-checker ------------------------------------------------------------------------


def test_read_compliance_docs_is_allowed() -> None:
    check(decide(ctx(), call("scan-documents", ("read", "compliance_docs"))), ALLOW, R.ALLOWED, "spec.tools[0]")


def test_read_compliance_docs_allowed_from_the_tools_requires_alone() -> None:
    check(decide(ctx(), call("scan-documents")), ALLOW, R.ALLOWED)


def test_write_issue_tracker_waits_for_approval() -> None:
    d = decide(ctx(), call("flag-issues", ("write", "issue_tracker")))
    check(d, WAIT, R.APPROVAL_REQUIRED, "Agent/compliance-checker:spec.governance.requireApproval[0]")


def test_write_analytics_db_is_denied() -> None:
    d = decide(ctx(), call("flag-issues", ("write", "analytics_db")))
    check(d, DENY, R.RESOURCE_NOT_PERMITTED, "no Agent/compliance-checker:spec.tools[1].permissions")


def test_ungranted_tool_is_denied() -> None:
    d = decide(ctx(), call("query-db", ("read", "analytics_db")))
    check(d, DENY, R.TOOL_NOT_GRANTED, "spec.tools[name=query-db]")
    assert d.because[0].absent


def test_write_on_a_read_grant_is_denied() -> None:
    check(decide(ctx(), call("scan-documents", ("write", "compliance_docs"))), DENY, R.RESOURCE_NOT_PERMITTED)


def test_unknown_agent_is_denied() -> None:
    d = decide(ctx(), call("scan-documents", key=ResourceKey("Agent", "default", "ghost")))
    check(d, DENY, R.AGENT_NOT_FOUND)


def test_agent_in_another_namespace_is_another_agent() -> None:
    d = decide(ctx(), call("scan-documents", key=ResourceKey("Agent", "prod", "compliance-checker")))
    check(d, DENY, R.AGENT_NOT_FOUND)


def test_granted_tool_without_a_tool_manifest_is_denied() -> None:
    check(decide(ctx(tools=[]), call("scan-documents")), DENY, R.TOOL_NOT_FOUND)


def test_tool_with_no_needs_is_allowed() -> None:
    a = agent(tools=[{"name": "query-db"}])
    check(decide(ctx(a), call("query-db")), ALLOW, R.ALLOWED, "spec.tools[0]")


def test_tool_requires_are_added_to_the_request() -> None:
    a = agent(tools=[{"name": "scan-documents"}])
    check(decide(ctx(a), call("scan-documents")), DENY, R.RESOURCE_NOT_PERMITTED)


# -- Policy: tightening only ---------------------------------------------------------------------------------------


def test_policy_blocked_tool() -> None:
    d = decide(ctx(policies=[policy("p", blockedTools=["scan-documents"])]), call("scan-documents"))
    check(d, DENY, R.BLOCKED_BY_POLICY, "Policy/p:spec.blockedTools[0]")


def test_policy_allowed_tools_list_without_the_tool() -> None:
    d = decide(ctx(policies=[policy("p", allowedTools=["flag-issues"])]), call("scan-documents"))
    check(d, DENY, R.BLOCKED_BY_POLICY, "no Policy/p:spec.allowedTools")


def test_policy_allowed_tools_list_with_the_tool() -> None:
    d = decide(ctx(policies=[policy("p", allowedTools=["scan-documents"])]), call("scan-documents"))
    check(d, ALLOW, R.ALLOWED)


def test_policy_deny_removes_a_granted_pair() -> None:
    d = decide(ctx(policies=[policy("p", deny=[{"read": "compliance_*"}])]), call("scan-documents"))
    check(d, DENY, R.BLOCKED_BY_POLICY, "Policy/p:spec.deny[0]")


def test_policy_ceiling_removes_pairs_outside_it() -> None:
    d = decide(ctx(policies=[policy("p", allow=[{"read": "public_*"}])]), call("scan-documents"))
    check(d, DENY, R.BLOCKED_BY_POLICY, "no Policy/p:spec.allow")


def test_policy_ceiling_keeps_pairs_inside_it() -> None:
    d = decide(ctx(policies=[policy("p", allow=[{"read": "compliance_*"}])]), call("scan-documents"))
    check(d, ALLOW, R.ALLOWED)


def test_policy_ceiling_cannot_grant_what_the_agent_lacks() -> None:
    p = policy("p", allow=[{"write": "analytics_db"}])
    check(decide(ctx(policies=[p]), call("flag-issues", ("write", "analytics_db"))), DENY, R.RESOURCE_NOT_PERMITTED)


def test_policy_require_approval_adds_up() -> None:
    p = policy("p", requireApproval=[{"read": "compliance_docs"}])
    check(
        decide(ctx(policies=[p]), call("scan-documents")), WAIT, R.APPROVAL_REQUIRED, "Policy/p:spec.requireApproval[0]"
    )


def test_policy_allowed_models_excludes_the_agents_model() -> None:
    d = decide(ctx(policies=[policy("p", allowedModels=["claude-3"])]), call("scan-documents"))
    check(d, DENY, R.MODEL_NOT_ALLOWED, "Policy/p:spec.allowedModels")


def test_policy_allowed_models_includes_the_agents_model() -> None:
    check(decide(ctx(policies=[policy("p", allowedModels=["gpt-4"])]), call("scan-documents")), ALLOW, R.ALLOWED)


def test_request_model_is_checked_rather_than_the_agents() -> None:
    c = ctx(policies=[policy("p", allowedModels=["gpt-4"])])
    check(decide(c, call("scan-documents", model="gpt-5")), DENY, R.MODEL_NOT_ALLOWED)


def test_allowed_models_intersect_across_policies() -> None:
    c = ctx(policies=[policy("a", allowedModels=["gpt-4", "x"]), policy("b", allowedModels=["x"])])
    check(decide(c, call("scan-documents")), DENY, R.MODEL_NOT_ALLOWED, "Policy/b:spec.allowedModels")


def test_unresolved_model_under_an_allowed_list_is_denied() -> None:
    a = agent(model=None, modelRef="ep", tools=[{"name": "query-db"}])
    check(decide(ctx(a, policies=[policy("p", allowedModels=["gpt-4"])]), call("query-db")), DENY, R.MODEL_NOT_ALLOWED)


def test_per_run_token_limit_of_the_policy() -> None:
    p = policy("p", budgets={"maxTokensPerRun": 1000})
    check(decide(ctx(policies=[p]), call("scan-documents", tokens_estimate=1001)), DENY, R.BUDGET_EXCEEDED, "Policy/p")
    check(decide(ctx(policies=[p]), call("scan-documents", tokens_estimate=1000)), ALLOW, R.ALLOWED)


def test_budgets_take_the_minimum() -> None:
    a = agent(tools=[{"name": "query-db"}], governance={"maxTokensPerRun": 500})
    c = ctx(a, policies=[policy("p", budgets={"maxTokensPerRun": 1000})])
    check(decide(c, call("query-db", tokens_estimate=600)), DENY, R.BUDGET_EXCEEDED, "spec.governance.maxTokensPerRun")


def test_no_estimate_no_budget_check() -> None:
    p = policy("p", budgets={"maxTokensPerRun": 1})
    check(decide(ctx(policies=[p]), call("scan-documents")), ALLOW, R.ALLOWED)


# -- Policy selection ----------------------------------------------------------------------------------------------


LABELLED = agent("labelled", ns="prod", labels={"team": "risk"}, tools=[{"name": "query-db"}])
LKEY = ResourceKey("Agent", "prod", "labelled")
PROD_TOOLS = [tool("query-db", ns="prod")]


@pytest.mark.parametrize(
    ("selector", "verdict"),
    [
        ({}, DENY),
        ({"namespaces": ["prod"]}, DENY),
        ({"namespaces": ["staging"]}, ALLOW),
        ({"matchLabels": {"team": "risk"}}, DENY),
        ({"matchLabels": {"team": "ops"}}, ALLOW),
        ({"namespaces": ["prod"], "matchLabels": {"team": "ops"}}, ALLOW),
        ({"agents": ["labelled"]}, DENY),
        ({"agents": ["other"]}, ALLOW),
    ],
)
def test_policy_selects_by_namespace_labels_and_name(selector: dict[str, Any], verdict: Verdict) -> None:
    p = policy("block", selector=selector, blockedTools=["query-db"])
    assert decide(ctx(LABELLED, tools=PROD_TOOLS, policies=[p]), call("query-db", key=LKEY)).verdict is verdict


# -- Orloj AgentPolicy ---------------------------------------------------------------------------------------------


def test_global_agent_policy_blocks_a_tool() -> None:
    ap = agent_policy("ap", applyMode="global", blockedTools=["scan-documents"])
    check(decide(ctx(agent_policies=[ap]), call("scan-documents")), DENY, R.BLOCKED_BY_POLICY, "AgentPolicy/ap")


def test_scoped_agent_policy_is_not_applied_per_call() -> None:
    ap = agent_policy("ap", targetTasks=["t"], blockedTools=["scan-documents"])
    check(decide(ctx(agent_policies=[ap]), call("scan-documents")), ALLOW, R.ALLOWED)


def test_global_agent_policy_allowed_models() -> None:
    ap = agent_policy("ap", applyMode="global", allowedModels=["claude-3"])
    check(decide(ctx(agent_policies=[ap]), call("scan-documents")), DENY, R.MODEL_NOT_ALLOWED, "AgentPolicy/ap")


def test_global_agent_policy_token_limit() -> None:
    ap = agent_policy("ap", applyMode="global", maxTokensPerRun=10)
    d = decide(ctx(agent_policies=[ap]), call("scan-documents", tokens_estimate=11))
    check(d, DENY, R.BUDGET_EXCEEDED, "AgentPolicy/ap:spec.maxTokensPerRun")


def test_agent_policy_zero_tokens_means_no_budget() -> None:
    ap = agent_policy("ap", applyMode="global", maxTokensPerRun=0)
    check(decide(ctx(agent_policies=[ap]), call("scan-documents", tokens_estimate=10**9)), ALLOW, R.ALLOWED)


# -- Orloj AgentRole and ToolPermission ----------------------------------------------------------------------------


SEARCHER = agent("searcher", roles=["reader"], tools=[{"name": "web-search", "permissions": [{"read": "web"}]}])
SKEY = ResourceKey("Agent", "default", "searcher")
WEB = [tool("web-search", capabilities=["web.read"], operationClasses=["read"])]


def test_missing_role_is_denied() -> None:
    check(decide(ctx(SEARCHER, tools=WEB), call("web-search", key=SKEY)), DENY, R.ROLE_NOT_FOUND, "spec.roles[0]")


def test_role_without_the_default_permissions_is_denied() -> None:
    c = ctx(SEARCHER, tools=WEB, roles=[role("reader", "tool:web_search:invoke")])
    check(decide(c, call("web-search", key=SKEY)), DENY, R.PERMISSION_NOT_HELD)


def test_role_with_the_default_permissions_is_allowed_normalised() -> None:
    c = ctx(SEARCHER, tools=WEB, roles=[role("reader", "TOOL:web-search:invoke", "capability:web.read")])
    check(decide(c, call("web-search", key=SKEY)), ALLOW, R.ALLOWED)


def test_no_roles_no_rules_governance_is_opt_in() -> None:
    a = agent("searcher", tools=[{"name": "web-search"}])
    check(decide(ctx(a, tools=WEB), call("web-search", key=SKEY)), ALLOW, R.ALLOWED)


@pytest.mark.parametrize(
    ("mode", "held", "verdict"),
    [
        ("all", ["a", "b"], ALLOW),
        ("all", ["a"], DENY),
        ("any", ["a"], ALLOW),
        ("any", ["c"], DENY),
    ],
)
def test_tool_permission_match_mode(mode: str, held: list[str], verdict: Verdict) -> None:
    tp = tool_permission("web-search", requiredPermissions=["a", "b"], matchMode=mode)
    c = ctx(SEARCHER, tools=WEB, roles=[role("reader", *held)], tool_permissions=[tp])
    d = decide(c, call("web-search", key=SKEY))
    assert d.verdict is verdict
    if verdict is DENY:
        check(d, DENY, R.PERMISSION_NOT_HELD, "ToolPermission/web-search:spec.requiredPermissions")


def test_scoped_tool_permission_for_another_agent_does_not_apply() -> None:
    tp = tool_permission("web-search", requiredPermissions=["x"], applyMode="scoped", targetAgents=["other"])
    a = agent("searcher", tools=[{"name": "web-search"}])
    check(decide(ctx(a, tools=WEB, tool_permissions=[tp]), call("web-search", key=SKEY)), ALLOW, R.ALLOWED)


def test_allowed_tools_bypasses_roles_but_not_the_grant() -> None:
    a = agent("searcher", roles=["missing"], allowedTools=["Web-Search"], tools=[{"name": "web-search"}])
    check(decide(ctx(a, tools=WEB), call("web-search", key=SKEY)), ALLOW, R.ALLOWED)
    b = agent("searcher", allowedTools=["web-search"])
    check(decide(ctx(b, tools=WEB), call("web-search", key=SKEY)), DENY, R.TOOL_NOT_GRANTED)


def _ops(*rules: tuple[str, str]) -> ToolPermission:
    return tool_permission(
        "tp", toolRef="web-search", operationRules=[{"operationClass": c, "verdict": v} for c, v in rules]
    )


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([("read", "allow")], (ALLOW, R.ALLOWED)),
        ([("read", "deny")], (DENY, R.BLOCKED_BY_POLICY)),
        ([("read", "approval_required")], (WAIT, R.APPROVAL_REQUIRED)),
        ([("*", "deny"), ("read", "allow")], (ALLOW, R.ALLOWED)),
        ([("*", "approval_required")], (WAIT, R.APPROVAL_REQUIRED)),
        ([("write", "deny")], (ALLOW, R.ALLOWED)),
    ],
)
def test_operation_rules_exact_then_star(rules: list[tuple[str, str]], expected: tuple[Verdict, ReasonCode]) -> None:
    a = agent("searcher", tools=[{"name": "web-search", "permissions": [{"read": "web"}]}])
    d = decide(ctx(a, tools=WEB, tool_permissions=[_ops(*rules)]), call("web-search", ("read", "web"), key=SKEY))
    check(d, *expected)


def test_deny_beats_approval_beats_allow_across_rules() -> None:
    a = agent("searcher", tools=[{"name": "web-search", "permissions": [{"read": "web"}, {"write": "web"}]}])
    wait, deny = (
        _ops(("read", "approval_required")),
        tool_permission("tp2", toolRef="web-search", operationRules=[{"operationClass": "write", "verdict": "deny"}]),
    )
    c = ctx(a, tools=WEB, tool_permissions=[wait, deny])
    check(decide(c, call("web-search", ("read", "web"), key=SKEY)), WAIT, R.APPROVAL_REQUIRED, "ToolPermission/tp")
    check(decide(c, call("web-search", ("read", "web"), ("write", "web"), key=SKEY)), DENY, R.BLOCKED_BY_POLICY, "tp2")


def test_policy_denial_beats_an_approval_requirement() -> None:
    p = policy("p", blockedTools=["flag-issues"])
    check(decide(ctx(policies=[p]), call("flag-issues")), DENY, R.BLOCKED_BY_POLICY)


# -- ToolApproval ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Approved", (ALLOW, R.APPROVAL_GRANTED)),
        ("Denied", (DENY, R.APPROVAL_DENIED)),
        ("Expired", (DENY, R.APPROVAL_EXPIRED)),
        ("Pending", (WAIT, R.APPROVAL_REQUIRED)),
    ],
)
def test_tool_approval_phase(phase: str, expected: tuple[Verdict, ReasonCode]) -> None:
    ap = approval("ta-1", "default/audit", "flag-issues")
    c = ctx(approvals=[ap], approval_phases={ResourceKey("ToolApproval", "default", "ta-1"): phase})
    check(decide(c, call("flag-issues", task="audit")), *expected, "ToolApproval/ta-1:status.phase")


def test_approval_for_another_task_does_not_count() -> None:
    ap = approval("ta-1", "other", "flag-issues")
    c = ctx(approvals=[ap], approval_phases={ResourceKey("ToolApproval", "default", "ta-1"): "Approved"})
    check(decide(c, call("flag-issues", task="audit")), WAIT, R.APPROVAL_REQUIRED)


def test_approval_never_opens_a_denied_call() -> None:
    ap = approval("ta-1", "audit", "flag-issues")
    c = ctx(approvals=[ap], approval_phases={ResourceKey("ToolApproval", "default", "ta-1"): "Approved"})
    check(decide(c, call("flag-issues", ("write", "analytics_db"), task="audit")), DENY, R.RESOURCE_NOT_PERMITTED)


# -- failing closed ----------------------------------------------------------------------------------------------------


class Exploding(Mapping[Any, Any]):
    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_an_exception_while_deciding_is_a_denial() -> None:
    broken = dataclasses.replace(ctx(), tools=Exploding())
    d = decide(broken, call("scan-documents"))
    check(d, DENY, R.INTERNAL_ERROR)
    assert "RuntimeError" in d.message


def test_malformed_request_is_a_denial() -> None:
    d = decide(ctx(), CallRequest(agent=KEY, tool="scan-documents", needs=(("read",),)))  # type: ignore[arg-type]
    check(d, DENY, R.INTERNAL_ERROR)


# -- properties -----------------------------------------------------------------------------------------------------


RESOURCES = ["docs", "db", "tracker"]
ACCESS = ["read", "write", "delete"]
PAIRS = st.tuples(st.sampled_from(ACCESS), st.sampled_from(RESOURCES))
TOOL_NAMES = ["t1", "t2", "t3"]
PROP_TOOLS = [tool(n) for n in TOOL_NAMES]
PKEY = ResourceKey("Agent", "default", "a")


def _perm(pair: tuple[str, str]) -> dict[str, str]:
    return {pair[0]: pair[1]}


grants_st = st.dictionaries(st.sampled_from(TOOL_NAMES), st.sets(PAIRS, max_size=4), max_size=3)
policy_st = st.builds(
    lambda i, deny, allow, blocked, approve, limit, models: policy(
        f"p{i}",
        deny=[_perm(p) for p in deny],
        allow=None if allow is None else [_perm(p) for p in allow],
        blockedTools=blocked,
        requireApproval=[_perm(p) for p in approve],
        budgets={"maxTokensPerRun": limit},
        allowedModels=models,
    ),
    st.integers(0, 10**6),
    st.sets(PAIRS, max_size=2),
    st.none() | st.sets(PAIRS, max_size=4),
    st.lists(st.sampled_from(TOOL_NAMES), max_size=1),
    st.sets(PAIRS, max_size=2),
    st.none() | st.integers(1, 2000),
    st.sampled_from([[], ["m"], ["other"]]),
)
request_st = st.builds(
    lambda t, needs, tokens: CallRequest(agent=PKEY, tool=t, needs=tuple(needs), model="m", tokens_estimate=tokens),
    st.sampled_from(TOOL_NAMES),
    st.lists(PAIRS, max_size=3),
    st.none() | st.integers(0, 3000),
)


def _prop_agent(grants: dict[str, set[tuple[str, str]]]) -> Agent:
    return agent("a", model="m", tools=[{"name": t, "permissions": [_perm(p) for p in ps]} for t, ps in grants.items()])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(grants_st, st.lists(policy_st, max_size=2), request_st)
def test_nothing_is_allowed_unless_every_needed_pair_is_granted(
    grants: dict[str, set[tuple[str, str]]], policies: list[Policy], request: CallRequest
) -> None:
    d = decide(build_context([_prop_agent(grants)], tools=PROP_TOOLS, policies=policies), request)
    assert d.reason is not R.INTERNAL_ERROR
    if d.verdict is ALLOW:
        assert request.tool in grants
        assert set(request.needs) <= grants[request.tool]


ORDER = {ALLOW: 0, WAIT: 1, DENY: 2}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(grants_st, st.lists(policy_st, max_size=2), policy_st, request_st)
def test_adding_a_policy_never_widens_a_decision(
    grants: dict[str, set[tuple[str, str]]], policies: list[Policy], extra: Policy, request: CallRequest
) -> None:
    a = _prop_agent(grants)
    extra = extra.model_copy(update={"metadata": extra.metadata.model_copy(update={"name": "extra"})})
    before = decide(build_context([a], tools=PROP_TOOLS, policies=policies), request)
    after = decide(build_context([a], tools=PROP_TOOLS, policies=[*policies, extra]), request)
    assert ORDER[after.verdict] >= ORDER[before.verdict], (before, after)
