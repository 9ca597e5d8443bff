"""The governance diff (core.effective, core.governance_diff) and the three renderings of a plan (render)."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from typing import Any

import pytest
from plans import Entry, plan

from orlojd.core.desired import build_desired
from orlojd.core.digest import normalised
from orlojd.core.effective import all_effective
from orlojd.core.governance_diff import GovernanceChange, compare_agents, compare_policies
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.registry import validate_object
from orlojd.core.plan import Action, Change, FieldChange, Plan, PruneOptions
from orlojd.render import MARKDOWN_PART_LIMIT, PlanReport, closing_line, render_json, render_markdown, render_text

HEAD = "c" * 40
BASE = "b" * 40
SECRET_VALUE = "hunter2-supersecret"


# -- building bodies through the real validator --------------------------------------------------------------------


def body(doc: dict[str, Any]) -> dict[str, Any]:
    result = validate_object(doc)
    assert result.obj is not None, result.problems
    return normalised(result.obj)


def key_of(b: dict[str, Any]) -> ResourceKey:
    return ResourceKey(b["kind"], b["metadata"]["namespace"], b["metadata"]["name"])


def agent(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "gpt-test",
        "tools": [{"name": "ledger", "permissions": [{"read": "ledger"}]}],
        "governance": {"maxTokensPerRun": 1000, "requireApproval": [{"write": "ledger"}]},
    }
    base.update(spec)
    return body({"kind": "Agent", "metadata": {"name": "clerk"}, "spec": base})


def policy(name: str = "guard", **spec: Any) -> dict[str, Any]:
    return body({"kind": "Policy", "metadata": {"name": name}, "spec": spec})


def bodies(*items: dict[str, Any]) -> dict[ResourceKey, dict[str, Any]]:
    return {key_of(b): b for b in items}


def agent_findings(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[GovernanceChange]:
    return compare_agents(all_effective(bodies(*before)), all_effective(bodies(*after)))


BASE_AGENT = agent()

# -- widening and tightening for an agent --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (
            agent(
                tools=[
                    {"name": "ledger", "permissions": [{"read": "ledger"}]},
                    {"name": "mail", "permissions": [{"write": "mail"}]},
                ]
            ),
            "gains tool mail (write:mail)",
        ),
        (
            agent(tools=[{"name": "ledger", "permissions": [{"read": "ledger"}, {"write": "ledger"}]}]),
            "gains write:ledger on tool ledger",
        ),
        (agent(governance={"maxTokensPerRun": 1000}), "no longer needs approval for write:ledger"),
        (
            agent(governance={"maxTokensPerRun": 2000, "requireApproval": [{"write": "ledger"}]}),
            "maxTokensPerRun raised: 1000 -> 2000",
        ),
        (agent(governance={"requireApproval": [{"write": "ledger"}]}), "maxTokensPerRun raised: 1000 -> unlimited"),
    ],
    ids=["tool-gained", "pair-gained", "approval-removed", "budget-raised", "budget-removed"],
)
def test_widening_is_flagged(after: dict[str, Any], expected: str) -> None:
    findings = agent_findings([BASE_AGENT], [after])
    assert [(g.agent, g.change, g.widening) for g in findings] == [("clerk", expected, True)]


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (agent(tools=[]), "loses tool ledger"),
        (agent(tools=[{"name": "ledger", "permissions": []}]), "loses read:ledger on tool ledger"),
        (
            agent(governance={"maxTokensPerRun": 1000, "requireApproval": [{"write": "ledger"}, {"read": "ledger"}]}),
            "now needs approval for read:ledger",
        ),
        (
            agent(governance={"maxTokensPerRun": 500, "requireApproval": [{"write": "ledger"}]}),
            "maxTokensPerRun lowered: 1000 -> 500",
        ),
    ],
    ids=["tool-lost", "pair-lost", "approval-added", "budget-lowered"],
)
def test_tightening_is_not_widening(after: dict[str, Any], expected: str) -> None:
    findings = agent_findings([BASE_AGENT], [after])
    assert [(g.change, g.widening) for g in findings] == [(expected, False)]


def test_unchanged_agent_has_no_findings_and_a_new_agent_widens() -> None:
    assert agent_findings([BASE_AGENT], [copy.deepcopy(BASE_AGENT)]) == []
    new = agent_findings([], [BASE_AGENT])
    assert new[0].change == "new agent using model gpt-test" and new[0].widening
    assert ("gains tool ledger (read:ledger)", True) in [(g.change, g.widening) for g in new]
    removed = agent_findings([BASE_AGENT], [])
    assert [(g.change, g.widening) for g in removed] == [("agent removed: all its permissions are revoked", False)]


# -- what a Policy does to an agent --------------------------------------------------------------------------------

WIDE_AGENT = agent(tools=[{"name": "ledger", "permissions": [{"read": "ledger"}, {"write": "ledger"}]}])


def test_policy_allow_is_a_ceiling_for_grants() -> None:
    ceiling = policy(allow=[{"read": "*"}])
    (view,) = all_effective(bodies(WIDE_AGENT, ceiling)).values()
    assert view.tools == {"ledger": frozenset({("read", "ledger")})}
    assert view.policies == ("guard",)
    (free,) = all_effective(bodies(WIDE_AGENT)).values()
    assert free.tools == {"ledger": frozenset({("read", "ledger"), ("write", "ledger")})}


def test_policy_deny_removes_matching_pairs() -> None:
    deny = policy(deny=[{"write": "led*"}])
    (view,) = all_effective(bodies(WIDE_AGENT, deny)).values()
    assert view.tools == {"ledger": frozenset({("read", "ledger")})}


def test_policy_only_applies_to_the_agents_it_selects() -> None:
    elsewhere = policy(selector={"namespaces": ["other"]}, deny=[{"write": "ledger"}])
    (view,) = all_effective(bodies(WIDE_AGENT, elsewhere)).values()
    assert ("write", "ledger") in view.tools["ledger"]
    assert view.policies == ()


def test_policy_budget_takes_the_minimum_and_blocked_tools_drop_the_grant() -> None:
    strict = policy(budgets={"maxTokensPerRun": 300}, blockedTools=["ledger"])
    (view,) = all_effective(bodies(BASE_AGENT, strict)).values()
    assert view.budgets["maxTokensPerRun"] == 300
    assert view.tools == {}


def test_policy_loosening_widens_the_agents_it_governs() -> None:
    before = [WIDE_AGENT, policy(deny=[{"write": "ledger"}])]
    after = [WIDE_AGENT, policy()]
    findings = agent_findings(before, after)
    assert [(g.change, g.widening) for g in findings] == [("gains write:ledger on tool ledger", True)]


POLICY_BASE = {
    "deny": [{"write": "ledger"}],
    "requireApproval": [{"delete": "ledger"}],
    "blockedTools": ["shell"],
    "allow": [{"read": "*"}, {"write": "ledger"}],
    "budgets": {"maxCostPerDay": 10},
    "approval": {"approvers": ["alice", "bob"], "required": 2},
}


@pytest.mark.parametrize(
    ("edit", "expected", "widening"),
    [
        ({"deny": []}, "no longer deny write:ledger (loosened)", True),
        ({"requireApproval": []}, "no longer approval required for delete:ledger (loosened)", True),
        ({"blockedTools": []}, "tool shell no longer blocked (loosened)", True),
        ({"allow": None}, "allow changed (loosened)", True),
        ({"allow": [{"read": "*"}, {"write": "*"}]}, "allow changed (loosened)", True),
        ({"budgets": {"maxCostPerDay": 20}}, "maxCostPerDay raised: 10 -> 20 (loosened)", True),
        ({"budgets": {}}, "maxCostPerDay raised: 10 -> unlimited (loosened)", True),
        ({"approval": {"approvers": ["alice", "bob"], "required": 1}}, "approval rules changed (loosened)", True),
        ({"onDeny": "return_to_model"}, "onDeny fail_run -> return_to_model", True),
        ({"auditLog": False}, "audit log switched off (loosened)", True),
        ({"deny": [{"write": "ledger"}, {"admin": "*"}]}, "now deny admin:* (tightened)", False),
        ({"blockedTools": ["shell", "mail"]}, "tool mail now blocked (tightened)", False),
        ({"allow": [{"read": "*"}]}, "allow changed (tightened)", False),
        ({"budgets": {"maxCostPerDay": 5}}, "maxCostPerDay lowered: 10 -> 5 (tightened)", False),
        ({"approval": {"approvers": ["alice"], "required": 2}}, "approval rules changed (tightened)", False),
    ],
)
def test_policy_rules_loosened_or_tightened(edit: dict[str, Any], expected: str, widening: bool) -> None:
    old = policy(**POLICY_BASE)
    new = policy(**{**POLICY_BASE, **edit})
    findings = compare_policies(bodies(old), bodies(new))
    assert [(g.agent, g.change, g.widening, g.policy) for g in findings] == [
        (None, f"Policy/guard: {expected}", widening, "guard")
    ]


def test_policy_added_tightens_and_policy_removed_loosens() -> None:
    guard = policy(**POLICY_BASE)
    (added,) = compare_policies({}, bodies(guard))
    assert (added.change, added.widening) == ("Policy/guard added (tightened)", False)
    (removed,) = compare_policies(bodies(guard), {})
    assert removed.widening and "removed" in removed.change and "loosened" in removed.change
    assert compare_policies(bodies(guard), bodies(copy.deepcopy(guard))) == []


# -- rendering -----------------------------------------------------------------------------------------------------


def key(kind: str, name: str) -> ResourceKey:
    return ResourceKey(kind, "default", name)


def sample_report(errors: tuple[str, ...] = ()) -> PlanReport:
    changes = (
        Change(key("Tool", "a"), Action.CREATED, (FieldChange("spec", "added", None, {"type": "http"}),)),
        Change(key("Tool", "b"), Action.CREATED),
        Change(key("Agent", "c"), Action.CREATED),
        Change(key("Agent", "d"), Action.CONFIGURED, (FieldChange("spec.prompt", "changed", "old", "new"),)),
        Change(key("Task", "f"), Action.SKIPPED, (FieldChange("spec", "removed", {"agent": "c"}, None),), "prune off"),
    )
    governance = (
        GovernanceChange("c", "gains tool a (read:x)", True, "tool"),
        GovernanceChange("d", "now needs approval for write:y", False, "approval"),
    )
    return PlanReport(Plan(changes, errors, unchanged=(key("Task", "e"),)), governance, BASE, HEAD)


def test_text_ends_with_the_exact_closing_line() -> None:
    report = sample_report()
    expected = "Plan: 3 to create, 1 to update, 0 to delete; governance: 1 permission widened"
    assert closing_line(report) == expected
    text = render_text(report)
    assert text.splitlines()[-1] == expected
    assert text.splitlines()[0] == f"orlojd plan: {BASE[:12]} -> {HEAD[:12]} (inventory)"
    assert "~ Agent/d" in text and '    ~ spec.prompt: "old" -> "new"' in text
    assert "# Task/f  (delete skipped: prune off)" in text
    assert "! c: gains tool a (read:x)  (widening)" in text
    assert "Task/e" not in text  # unchanged objects are hidden by default
    assert "\x1b[" not in text


def test_closing_line_counts_widening_in_the_plural() -> None:
    two = (GovernanceChange("a", "x", True, "tool"), GovernanceChange("b", "y", True, "tool"))
    report = PlanReport(Plan(()), two, None, HEAD)
    assert closing_line(report) == "Plan: 0 to create, 0 to update, 0 to delete; governance: 2 permissions widened"
    assert closing_line(PlanReport(Plan(()), (), None, HEAD)).endswith("governance: 0 permissions widened")


@pytest.mark.parametrize(
    ("report", "code"),
    [
        (PlanReport(Plan(()), (), None, HEAD), 0),
        (PlanReport(Plan((), unchanged=(key("Task", "t"),)), (), None, HEAD), 0),
        (PlanReport(Plan((Change(key("Task", "t"), Action.CREATED),)), (), None, HEAD), 2),
        (sample_report(), 3),
        (sample_report(errors=("broken",)), 1),
    ],
    ids=["empty", "unchanged", "changes", "widening", "error"],
)
def test_exit_code(report: PlanReport, code: int) -> None:
    assert report.exit_code == code
    assert json.loads(render_json(report))["exit_code"] == code


def test_json_keys() -> None:
    data = json.loads(render_json(sample_report()))
    assert {"format_version", "base", "head", "summary", "changes", "governance"} <= set(data)
    assert data["format_version"] == 1
    assert (data["base"], data["head"]) == (BASE, HEAD)
    assert {"create", "update", "delete", "unchanged"} <= set(data["summary"])
    assert data["summary"]["create"] == 3 and data["summary"]["update"] == 1 and data["summary"]["unchanged"] == 1
    for change in data["changes"]:
        assert {"kind", "namespace", "name", "action", "diff"} <= set(change)
    assert [c["name"] for c in data["changes"]] == ["a", "b", "c", "d", "f"]  # unchanged objects left out
    configured = next(c for c in data["changes"] if c["name"] == "d")
    assert configured["action"] == "configured"
    assert configured["diff"] == [{"path": "spec.prompt", "op": "changed", "old": "old", "new": "new"}]
    for finding in data["governance"]:
        assert {"agent", "change", "widening"} <= set(finding)
    assert data["governance"][0] == {**data["governance"][0], "agent": "c", "widening": True}
    assert data["widening"] is True


def test_markdown_has_one_collapsible_section_per_kind() -> None:
    (part,) = render_markdown(sample_report())
    assert f"**{closing_line(sample_report())}**" in part
    assert part.count("<details>") == 3
    assert "<details><summary>Tool (2 changed)</summary>" in part
    assert "<details><summary>Agent (2 changed)</summary>" in part
    assert "<details><summary>Task (1 changed)</summary>" in part  # the skipped one; unchanged e is not counted
    assert part.count("</details>") == 3
    assert ":warning: **widening** `c`: gains tool a (read:x)" in part


def _bulk_report(count: int, with_agents: bool) -> PlanReport:
    changes: list[Change] = []
    for i in range(count):
        changes.append(
            Change(
                key("Tool", f"tool-{i:05d}"),
                Action.CREATED,
                (
                    FieldChange("spec.description", "added", None, f"tool number {i} " + "x" * 60),
                    FieldChange("spec.requires[0]", "added", None, {"read": f"resource-{i}"}),
                ),
            )
        )
        changes.append(
            Change(key("Task", f"task-{i:05d}"), Action.CONFIGURED, (FieldChange("spec.priority", "changed", 3, 1),))
        )
    governance: list[GovernanceChange] = []
    if with_agents:
        for i in range(count):
            changes.append(Change(key("Agent", f"agent-{i:05d}"), Action.CREATED))
            governance.append(GovernanceChange(f"agent-{i:05d}", "new agent using model scripted/demo", True, "agent"))
            governance.append(GovernanceChange(f"agent-{i:05d}", f"gains tool tool-{i:05d} (read:r)", True, "tool"))
    return PlanReport(Plan(tuple(changes)), tuple(governance), BASE, HEAD)


def _assert_parts_fit(report: PlanReport) -> list[str]:
    parts = render_markdown(report)
    assert len(parts) > 1
    for index, part in enumerate(parts, start=1):
        assert len(part) < 60_000, f"part {index}/{len(parts)} has {len(part)} characters"
        assert part.startswith(f"<!-- orlojd-plan part {index}/{len(parts)} -->")
    # Change lines inside the diff blocks ("+ Kind/name"), not governance bullets ("- `agent`: ...").
    listed = Counter(re.findall(r"^[-+~#] ([A-Z]\w+/\S+)", "\n".join(parts), flags=re.MULTILINE))
    shown = [c.key.short for c in report.plan.changes if c.action is not Action.UNCHANGED]
    assert listed == Counter(shown)  # every change once, in exactly one part
    return parts


def test_markdown_with_thousands_of_changes_is_split_into_parts_below_the_limit() -> None:
    assert MARKDOWN_PART_LIMIT <= 60_000
    parts = _assert_parts_fit(_bulk_report(3000, with_agents=False))
    joined = "\n".join(parts)
    assert re.search(r"<details><summary>Tool \(3000 changed\), 1/\d+</summary>", joined)
    assert re.search(r"<details><summary>Task \(3000 changed\), 1/\d+</summary>", joined)
    assert joined.count("<details>") == joined.count("</details>")


def test_markdown_governance_section_for_thousands_of_agents_stays_below_the_limit() -> None:
    _assert_parts_fit(_bulk_report(3000, with_agents=True))


# -- secret values never reach a rendering -------------------------------------------------------------------------


def _secret_yaml(field: str, value: str) -> bytes:
    return (
        f"apiVersion: orloj.dev/v1\nkind: Secret\nmetadata:\n  name: api-key\nspec:\n  {field}:\n    token: {value}\n"
    ).encode()


def _entries(files: list[tuple[str, bytes]]) -> tuple[dict[ResourceKey, Entry], tuple[str, ...]]:
    desired = build_desired(files)
    assert desired.ok, [d.format() for d in desired.errors]
    entries = {k: Entry(k, lo.digest, lo.body) for k, lo in desired.objects.items()}
    return entries, tuple(d.format() for d in desired.warnings)


def _all_renderings(report: PlanReport) -> str:
    return (
        render_text(report, show_unchanged=True)
        + render_text(report, colour=True)
        + "\n".join(render_markdown(report))
        + render_json(report)
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("stringData", SECRET_VALUE), ("data", "aHVudGVyMi1zdXBlcnNlY3JldA==")],
)
def test_secret_values_never_appear_in_any_rendering(field: str, value: str) -> None:
    secret, warnings = _entries([("secrets/api-key.yaml", _secret_yaml(field, value))])
    other, _ = _entries([("secrets/api-key.yaml", _secret_yaml(field, "something-else"))])
    (secret_key,) = secret
    assert secret[secret_key].digest != other[secret_key].digest  # a changed value is still a change
    assert warnings and any("literal secret" in w for w in warnings)
    reports = [
        PlanReport(plan(secret, {}, {}, PruneOptions()), (), None, HEAD, warnings=warnings),  # created
        PlanReport(plan(other, secret, {}, PruneOptions()), (), BASE, HEAD),  # configured
        PlanReport(plan(secret, other, {}, PruneOptions()), (), BASE, HEAD),  # configured, the other way
        PlanReport(plan({}, secret, {}, PruneOptions(enabled=True, confirmed=True)), (), BASE, HEAD),  # deleted
        PlanReport(plan({}, secret, {}, PruneOptions()), (), BASE, HEAD),  # skipped
        PlanReport(plan(secret, secret, {}, PruneOptions()), (), BASE, HEAD),  # unchanged
    ]
    assert [r.plan.changes[0].action if r.plan.changes else r.plan.unchanged for r in reports] == [
        Action.CREATED,
        Action.CONFIGURED,
        Action.CONFIGURED,
        Action.DELETED,
        Action.SKIPPED,
        (secret_key,),
    ]
    for report in reports:
        rendered = _all_renderings(report)
        assert "Secret/api-key" in rendered
        assert value not in rendered
        assert SECRET_VALUE not in rendered
    configured = render_text(reports[1])
    assert re.search(rf"~ spec\.{field}\.token: \"sha256:[0-9a-f]{{64}}\" -> \"sha256:[0-9a-f]{{64}}\"", configured)
