"""Suspension: a suspended object is still planned and reported (with its diff), never changed.

Two ways to suspend: ``spec.suspend: true`` in git, and ``orlojd suspend`` (a set of
identities from the store). Switching ``spec.suspend`` itself on is applied, so the
applied copy (and the scheduler) know; every other change waits.
"""

from __future__ import annotations

from typing import Any

from orlojd.core.digest import digest_of
from orlojd.core.keys import ResourceKey
from orlojd.core.plan import Action, Plan, PruneOptions, plan
from orlojd.render import PlanReport, render_text

KEY = ResourceKey("Task", "default", "t")
PRUNE_ON = PruneOptions(enabled=True, confirmed=True)


class Entry:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.digest = digest_of(body)


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "orloj.dev/v1",
        "kind": "Task",
        "metadata": {"name": "t", "namespace": "default", "labels": {}, "annotations": {}},
        "spec": {"agent": "a", "priority": 3, "suspend": False, **spec},
    }


def run(
    desired: dict[str, Any] | None, applied: dict[str, Any] | None, suspended: frozenset[ResourceKey] = frozenset()
) -> Plan:
    want = {KEY: Entry(desired)} if desired is not None else {}
    digests = {KEY: digest_of(applied)} if applied is not None else {}
    bodies = {KEY: applied} if applied is not None else {}
    return plan(want, digests, bodies, {}, PRUNE_ON, suspended)


def test_a_change_to_an_object_suspended_in_git_is_shown_but_skipped() -> None:
    result = run(body(priority=1, suspend=True), body(suspend=True))
    (change,) = result.changes
    assert change.action is Action.SKIPPED and "spec.suspend" in change.reason
    assert [f.path for f in change.diff] == ["spec.priority"]
    assert not result.has_changes


def test_switching_suspend_on_is_applied_by_itself() -> None:
    (change,) = run(body(suspend=True), body()).changes
    assert change.action is Action.CONFIGURED and [f.path for f in change.diff] == ["spec.suspend"]


def test_switching_suspend_on_together_with_another_change_waits() -> None:
    (change,) = run(body(suspend=True, priority=1), body()).changes
    assert change.action is Action.SKIPPED


def test_resuming_in_git_applies_the_change() -> None:
    (change,) = run(body(priority=1), body(suspend=True)).changes
    assert change.action is Action.CONFIGURED


def test_orlojd_suspend_holds_updates_creations_and_deletions() -> None:
    held = frozenset({KEY})
    assert run(body(priority=1), body(), held).changes[0].action is Action.SKIPPED
    assert run(body(), None, held).changes[0].action is Action.SKIPPED
    assert run(None, body(), held).changes[0].action is Action.SKIPPED
    assert run(body(priority=1), body()).changes[0].action is Action.CONFIGURED  # not held: applied


def test_a_suspended_applied_copy_is_not_pruned() -> None:
    (change,) = run(None, body(suspend=True)).changes
    assert change.action is Action.SKIPPED and "suspend" in change.reason


def test_the_text_plan_says_what_was_skipped_and_shows_the_diff() -> None:
    result = run(body(priority=1), body(), frozenset({KEY}))
    text = render_text(PlanReport(result, (), "a" * 40, "b" * 40))
    assert "# Task/t  (update skipped: suspended with 'orlojd suspend'" in text
    assert "~ spec.priority: 3 -> 1" in text
