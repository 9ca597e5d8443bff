"""The pure plan: pairing, actions, field diffs, apply order, cycles and prune guards (core.plan)."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plans import Entry, plan

from orlojd.core.digest import digest_of, normalised
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.registry import validate_object
from orlojd.core.plan import STAGES, Action, CycleError, FieldChange, Plan, PruneOptions, diff_fields, order

# -- helpers -------------------------------------------------------------------------------------------------------


def entry(key: ResourceKey, body: Mapping[str, Any]) -> Entry:
    return Entry(key, digest_of(dict(body)), body)


def task_body(name: str, annotation: str | None = None, **spec: Any) -> dict[str, Any]:
    annotations = {"orloj.dev/prune": annotation} if annotation else {}
    return {
        "apiVersion": "orloj.dev/v1",
        "kind": "Task",
        "metadata": {"name": name, "namespace": "default", "labels": {}, "annotations": annotations},
        "spec": {"agent": "a", "priority": 3, **spec},
    }


def tasks(count: int, annotation: str | None = None) -> dict[ResourceKey, Entry]:
    out = {}
    for i in range(count):
        key = ResourceKey("Task", "default", f"t{i:04d}")
        out[key] = entry(key, task_body(key.name, annotation))
    return out


def loaded(doc: dict[str, Any]) -> Entry:
    """A document through the real validator and normaliser, as the planner builds its entries."""
    result = validate_object(doc)
    assert result.obj is not None, result.problems
    body = normalised(result.obj)
    key = ResourceKey(result.obj.kind, result.obj.metadata.namespace, result.obj.metadata.name)
    return Entry(key, digest_of(body), body)


def actions_of(result: Plan) -> dict[ResourceKey, Action]:
    """The plan's verdict for every object: its changes, and the identities it keeps unchanged."""
    return {**{c.key: c.action for c in result.changes}, **dict.fromkeys(result.unchanged, Action.UNCHANGED)}


# -- strategies ----------------------------------------------------------------------------------------------------

KINDS = sorted(STAGES)
keys_strategy = st.builds(
    ResourceKey,
    st.sampled_from(KINDS),
    st.sampled_from(["default", "team-a", "team-b"]),
    st.text(alphabet="abcdefgh-", min_size=1, max_size=6),
)
json_leaf = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
bodies_strategy = st.dictionaries(st.text(min_size=1, max_size=6), json_value, max_size=4)


@st.composite
def dag(draw: st.DrawFn) -> tuple[list[ResourceKey], dict[ResourceKey, list[ResourceKey]]]:
    """Unique keys and acyclic references (only to keys earlier in a random permutation), plus dangling ones."""
    keys = draw(st.lists(keys_strategy, unique=True, max_size=25))
    ranked = draw(st.permutations(keys))
    refs: dict[ResourceKey, list[ResourceKey]] = {}
    for index, source in enumerate(ranked):
        targets = draw(st.lists(st.sampled_from(ranked[:index]), max_size=4)) if index else []
        if draw(st.booleans()):
            targets.append(ResourceKey("Secret", "elsewhere", "not-in-the-plan"))
        refs[source] = targets
    return keys, refs


# -- properties ----------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    objects=st.dictionaries(keys_strategy, bodies_strategy, max_size=20),
    enabled=st.booleans(),
    confirmed=st.booleans(),
)
def test_plan_of_a_state_against_itself_is_all_unchanged(
    objects: dict[ResourceKey, dict[str, Any]], enabled: bool, confirmed: bool
) -> None:
    entries = {k: entry(k, body) for k, body in objects.items()}
    result = plan(entries, dict(entries), {}, PruneOptions(enabled, confirmed))
    assert result.errors == ()
    assert result.changes == ()
    assert sorted(result.unchanged) == sorted(entries)
    assert actions_of(result) == dict.fromkeys(entries, Action.UNCHANGED)
    assert not result.has_changes
    assert result.summary == {"create": 0, "update": 0, "delete": 0, "unchanged": len(entries), "skipped": 0}


@settings(max_examples=80, deadline=None)
@given(graph=dag())
def test_order_puts_every_reference_target_before_its_referrer(
    graph: tuple[list[ResourceKey], dict[ResourceKey, list[ResourceKey]]],
) -> None:
    keys, refs = graph
    result = order(keys, refs)
    assert sorted(result) == sorted(keys)
    position = {key: i for i, key in enumerate(result)}
    for source, targets in refs.items():
        for target in targets:
            if target in position:
                assert position[target] < position[source], f"{target} must come before {source}"


@settings(max_examples=60, deadline=None)
@given(members=st.lists(keys_strategy, unique=True, min_size=2, max_size=8), data=st.data())
def test_a_reference_cycle_raises_and_names_a_real_cycle(members: list[ResourceKey], data: st.DataObject) -> None:
    ring = data.draw(st.permutations(members))
    refs = {source: [ring[(i + 1) % len(ring)]] for i, source in enumerate(ring)}
    with pytest.raises(CycleError) as raised:
        order(members, refs)
    cycle = raised.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == set(members)
    for source, target in pairwise(cycle):
        assert target in refs[source]


# -- order and cycles, by example ----------------------------------------------------------------------------------

AGENT = ResourceKey("Agent", "default", "a")
TOOL = ResourceKey("Tool", "default", "t")
SECRET = ResourceKey("Secret", "default", "s")
OUTSIDER = ResourceKey("Task", "default", "x")


def test_order_without_references_follows_the_stages() -> None:
    keys = [
        ResourceKey("TaskSchedule", "default", "s"),
        ResourceKey("Task", "default", "t"),
        ResourceKey("AgentSystem", "default", "sys"),
        ResourceKey("Agent", "default", "a"),
        ResourceKey("Tool", "default", "tool"),
        ResourceKey("ModelEndpoint", "default", "m"),
        ResourceKey("Policy", "default", "p"),
    ]
    kinds = [k.kind for k in order(keys, {})]
    assert kinds.index("Policy") < kinds.index("ModelEndpoint") < kinds.index("Tool") < kinds.index("Agent")
    assert kinds.index("Agent") < kinds.index("AgentSystem") < kinds.index("Task")
    assert kinds.index("AgentSystem") < kinds.index("TaskSchedule")


def test_references_override_the_stage_order() -> None:
    # A Policy normally goes first; a reference to a Task forces it after that Task.
    policy, task = ResourceKey("Policy", "default", "p"), ResourceKey("Task", "default", "t")
    assert order([policy, task], {policy: [task]}) == [task, policy]
    assert order([policy, task], {}) == [policy, task]


def test_cycle_error_names_the_cycle_and_not_the_objects_waiting_on_it() -> None:
    refs = {AGENT: [TOOL], TOOL: [SECRET], SECRET: [AGENT], OUTSIDER: [AGENT]}
    with pytest.raises(CycleError) as raised:
        order([AGENT, TOOL, SECRET, OUTSIDER], refs)
    assert set(raised.value.cycle) == {AGENT, TOOL, SECRET}
    message = str(raised.value)
    assert message.startswith("reference cycle: ")
    for name in ("Agent/a", "Tool/t", "Secret/s"):
        assert name in message
    assert "Task/x" not in message


def test_self_reference_is_a_cycle() -> None:
    with pytest.raises(CycleError) as raised:
        order([AGENT], {AGENT: [AGENT]})
    assert raised.value.cycle == [AGENT, AGENT]
    assert str(raised.value) == "reference cycle: Agent/a -> Agent/a"


def test_plan_turns_a_cycle_into_a_plan_error_naming_it() -> None:
    desired = {k: entry(k, {"n": k.name}) for k in (AGENT, TOOL, SECRET)}
    result = plan(desired, {}, {AGENT: [TOOL], TOOL: [SECRET], SECRET: [AGENT]}, PruneOptions())
    assert result.changes == ()
    (error,) = result.errors
    assert error.startswith("reference cycle: ")
    assert all(name in error for name in ("Agent/a", "Tool/t", "Secret/s"))
    assert "break the cycle" in error


def test_plan_catches_a_cycle_closed_by_one_changed_object() -> None:
    applied = {AGENT: entry(AGENT, {"tools": ["t"]}), TOOL: entry(TOOL, {"agentRef": "helper"})}
    desired = {AGENT: applied[AGENT], TOOL: entry(TOOL, {"agentRef": "a"})}
    result = plan(desired, applied, {AGENT: [TOOL], TOOL: [AGENT]}, PruneOptions())
    assert any(e.startswith("reference cycle: ") and "Agent/a" in e and "Tool/t" in e for e in result.errors)


# -- actions and diffs ---------------------------------------------------------------------------------------------


def test_plan_pairs_desired_with_applied_and_decides_each_action() -> None:
    same, edited, new, gone = (ResourceKey("Task", "default", n) for n in ("same", "edited", "new", "gone"))
    actual = {
        same: entry(same, task_body("same")),
        edited: entry(edited, task_body("edited")),
        gone: entry(gone, task_body("gone")),
    }
    desired = {
        same: entry(same, task_body("same")),
        edited: entry(edited, task_body("edited", priority=1)),
        new: entry(new, task_body("new")),
    }
    result = plan(desired, actual, {}, PruneOptions(enabled=True, max_percent=100))
    assert actions_of(result) == {
        same: Action.UNCHANGED,
        edited: Action.CONFIGURED,
        new: Action.CREATED,
        gone: Action.DELETED,
    }
    by_key = {c.key: c for c in result.changes}
    assert by_key[edited].diff == (FieldChange("spec.priority", "changed", 3, 1),)
    assert FieldChange("spec", "added", None, task_body("new")["spec"]) in by_key[new].diff
    assert same not in by_key and result.unchanged == (same,)
    assert result.summary == {"create": 1, "update": 1, "delete": 1, "unchanged": 1, "skipped": 0}


def test_deletions_come_last_in_reverse_stage_order() -> None:
    applied = [
        ResourceKey("Tool", "default", "t"),
        ResourceKey("Agent", "default", "a"),
        ResourceKey("Task", "default", "x"),
        ResourceKey("ModelEndpoint", "default", "m"),
    ]
    keep = ResourceKey("Policy", "default", "keep")
    new = ResourceKey("Policy", "default", "new")
    actual = {k: entry(k, {"n": k.name}) for k in [*applied, keep]}
    desired = {keep: actual[keep], new: entry(new, {"n": "new"})}
    result = plan(desired, actual, {}, PruneOptions(enabled=True, confirmed=True))
    kinds = [(c.key.kind, c.action) for c in result.changes]
    assert kinds[0] == ("Policy", Action.CREATED)
    assert [k for k, _ in kinds[1:]] == ["Task", "Agent", "Tool", "ModelEndpoint"]
    assert all(a is Action.DELETED for _, a in kinds[1:])
    assert result.unchanged == (keep,)


def test_diff_fields_reports_changed_added_and_removed_paths_sorted() -> None:
    old = {"spec": {"tools": [{"name": "a", "permissions": [{"read": "x"}]}], "prompt": "hi", "old": 1}}
    new = {"spec": {"tools": [{"name": "a", "permissions": [{"read": "x"}, {"write": "y"}]}], "prompt": "ho"}}
    assert diff_fields(old, new) == (
        FieldChange("spec.old", "removed", 1, None),
        FieldChange("spec.prompt", "changed", "hi", "ho"),
        FieldChange("spec.tools[0].permissions[1]", "added", None, {"write": "y"}),
    )
    assert diff_fields(new, new) == ()


def test_a_configured_object_carries_only_the_fields_that_differ() -> None:
    key = ResourceKey("Task", "default", "t")
    before = task_body("t", input={"folder": "a", "depth": 1})
    after = task_body("t", input={"folder": "b", "depth": 1})
    result = plan({key: entry(key, after)}, {key: entry(key, before)}, {}, PruneOptions())
    (change,) = result.changes
    assert change.action is Action.CONFIGURED
    assert change.diff == (FieldChange("spec.input.folder", "changed", "a", "b"),)


# -- dialects and defaults: no phantom diffs -----------------------------------------------------------------------

ORLOJ_AGENT = {
    "apiVersion": "orloj.dev/v1",
    "kind": "agent",
    "metadata": {"name": "checker"},
    "spec": {
        "model_ref": "offline",
        "tools": ["scan"],
        "allowed_tools": ["scan"],
        "limits": {"max_steps": 0},
        "retry": {"max_attempts": 3, "backoff": "1s"},
        "governance": {"max_tokens_per_minute": 8000, "require_approval": ["write:tracker"]},
    },
}
CANONICAL_AGENT = {
    "apiVersion": "orloj.dev/v1",
    "kind": "Agent",
    "metadata": {"name": "checker", "namespace": "default"},
    "spec": {
        "modelRef": "offline",
        "tools": [{"name": "scan", "permissions": []}],
        "allowedTools": ["scan"],
        "limits": {"maxSteps": 10},
        "governance": {"maxTokensPerMinute": 8000, "requireApproval": [{"write": "tracker"}], "auditLog": True},
    },
}
ORLOJ_SCHEDULE = {
    "apiVersion": "orloj.dev/v1",
    "kind": "TaskSchedule",
    "metadata": {"name": "nightly"},
    "spec": {"task_ref": "scan", "schedule": "0 2 * * *", "time_zone": "UTC", "concurrency_policy": "forbid"},
}
CANONICAL_SCHEDULE = {
    "apiVersion": "orloj.dev/v1",
    "kind": "TaskSchedule",
    "metadata": {"name": "nightly"},
    "spec": {"taskRef": "scan", "schedule": "0 2 * * *"},
}
ORLOJ_TASK = {
    "kind": "Task",
    "metadata": {"name": "run"},
    "spec": {"agent": "checker", "priority": "high", "max_turns": 0},
}
CANONICAL_TASK = {
    "apiVersion": "orloj.dev/v1",
    "kind": "Task",
    "metadata": {"name": "run"},
    "spec": {"agent": "checker", "priority": 2, "mode": "run", "input": {}},
}


@pytest.mark.parametrize(
    ("orloj", "canonical"),
    [(ORLOJ_AGENT, CANONICAL_AGENT), (ORLOJ_SCHEDULE, CANONICAL_SCHEDULE), (ORLOJ_TASK, CANONICAL_TASK)],
    ids=["agent", "task-schedule", "task"],
)
def test_orloj_snake_case_and_camel_case_with_defaults_plan_as_unchanged(
    orloj: dict[str, Any], canonical: dict[str, Any]
) -> None:
    applied, desired = loaded(orloj), loaded(canonical)
    assert applied.key == desired.key
    result = plan({desired.key: desired}, {applied.key: applied}, {}, PruneOptions())
    assert actions_of(result) == {desired.key: Action.UNCHANGED}


def test_a_real_difference_between_dialects_is_one_field_not_a_phantom_diff() -> None:
    applied = loaded(ORLOJ_AGENT)
    changed = {**CANONICAL_AGENT, "spec": {**CANONICAL_AGENT["spec"], "limits": {"maxSteps": 20}}}
    desired = loaded(changed)
    result = plan({desired.key: desired}, {applied.key: applied}, {}, PruneOptions())
    (change,) = result.changes
    assert change.action is Action.CONFIGURED
    assert change.diff == (FieldChange("spec.limits.maxSteps", "changed", 10, 20),)


# -- prune guards --------------------------------------------------------------------------------------------------

GONE = ResourceKey("Task", "default", "t0000")


@pytest.mark.parametrize(
    ("enabled", "confirmed", "annotation", "expected", "reason"),
    [
        (False, False, None, Action.SKIPPED, "prune.enabled"),
        (False, True, None, Action.SKIPPED, "prune.enabled"),
        (False, True, "confirm", Action.SKIPPED, "prune.enabled"),
        (True, False, None, Action.DELETED, ""),
        (True, True, None, Action.DELETED, ""),
        (True, False, "disabled", Action.SKIPPED, "orloj.dev/prune: disabled"),
        (True, True, "disabled", Action.SKIPPED, "orloj.dev/prune: disabled"),
        (True, False, "confirm", Action.SKIPPED, "rerun with --confirm-prune"),
        (True, True, "confirm", Action.DELETED, ""),
    ],
)
def test_prune_guard_matrix(
    enabled: bool, confirmed: bool, annotation: str | None, expected: Action, reason: str
) -> None:
    actual = tasks(10)
    actual[GONE] = entry(GONE, task_body(GONE.name, annotation))
    desired = {k: v for k, v in actual.items() if k != GONE}
    result = plan(desired, actual, {}, PruneOptions(enabled, confirmed))
    assert result.errors == ()
    (change,) = [c for c in result.changes if c.key == GONE]
    assert change.action is expected
    assert reason in change.reason
    if expected is Action.DELETED:
        assert change.reason == ""
    assert change.diff  # what a deletion removes is always shown, skipped or not
    assert result.summary["delete"] == (1 if expected is Action.DELETED else 0)
    assert result.summary["skipped"] == (1 if expected is Action.SKIPPED else 0)


@pytest.mark.parametrize(
    ("applied", "removed", "options", "refused"),
    [
        (4, 1, PruneOptions(enabled=True), False),  # exactly 25%: allowed
        (4, 2, PruneOptions(enabled=True), True),  # 50% > 25%
        (1000, 50, PruneOptions(enabled=True), False),  # exactly 50 objects: allowed
        (1000, 51, PruneOptions(enabled=True), True),  # 51 > 50 even though only 5.1%
        (4, 2, PruneOptions(enabled=True, max_percent=50), False),  # the limit comes from orlojd.yaml
        (10, 2, PruneOptions(enabled=True, max_percent=100, max_count=1), True),
        (4, 3, PruneOptions(enabled=True, confirmed=True), False),  # --confirm-prune passes the breaker
    ],
    ids=["25pct", "50pct", "50-of-1000", "51-of-1000", "custom-percent", "custom-count", "confirmed"],
)
def test_circuit_breaker(applied: int, removed: int, options: PruneOptions, refused: bool) -> None:
    actual = tasks(applied)
    desired = dict(list(actual.items())[removed:])
    result = plan(desired, actual, {}, options)
    assert result.count(Action.DELETED) == removed  # the plan still shows what it would delete
    if refused:
        (error,) = result.errors
        assert error.startswith("circuit breaker: ")
        assert f"deletes {removed} of {applied} applied objects" in error
        assert "--confirm-prune" in error
    else:
        assert result.errors == ()


def test_circuit_breaker_counts_only_real_deletions_not_skipped_ones() -> None:
    actual = tasks(4)
    protected = tasks(2, annotation="disabled")
    renamed = {ResourceKey("Task", "default", f"p{k.name}"): v for k, v in protected.items()}
    actual.update({k: Entry(k, v.digest, v.body) for k, v in renamed.items()})  # 6 applied, 2 of them protected
    desired = {k: v for k, v in actual.items() if k.name not in ("t0000", "pt0000", "pt0001")}
    result = plan(desired, actual, {}, PruneOptions(enabled=True))
    assert result.count(Action.DELETED) == 1 and result.count(Action.SKIPPED) == 2
    assert result.errors == ()  # 1 of 6 deleted, below 25%


def test_an_empty_revision_is_never_pruned_without_confirmation() -> None:
    actual = tasks(3)
    wide_open = PruneOptions(enabled=True, max_percent=100, max_count=1000)
    result = plan({}, actual, {}, wide_open)
    (error,) = result.errors
    assert "refusing to delete all 3 applied objects" in error and "declares none" in error
    assert "--confirm-prune" in error

    confirmed = plan({}, actual, {}, PruneOptions(enabled=True, confirmed=True, max_percent=100, max_count=1000))
    assert confirmed.errors == ()
    assert confirmed.count(Action.DELETED) == 3

    prune_off = plan({}, actual, {}, PruneOptions())
    assert prune_off.errors == ()
    assert prune_off.count(Action.SKIPPED) == 3 and prune_off.count(Action.DELETED) == 0


def test_nothing_applied_and_nothing_desired_is_an_empty_plan() -> None:
    result = plan({}, {}, {}, PruneOptions(enabled=True))
    assert result.changes == () and result.errors == ()
    assert not result.has_changes
