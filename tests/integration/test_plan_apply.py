"""Plan and apply against real git repositories and both state stores (SQLite, PostgreSQL).

Every test builds its own repository with the ``repo`` fixture, commits manifests, and
drives the engine (``plan_revision``, ``apply_revision``, ``commit_manifest``) or, where
the behaviour is the command's output, the real ``orlojd`` CLI. ``db_url`` runs each test
once per store.

Reference cycles: a Tool of type 'agent' delegates to an Agent (agentRef), and an Agent
refers to its Tools, so manifests can form a cycle (Agent -> Tool -> Agent);
tests/unit/test_plan.py also covers ``core.plan.order`` with arbitrary cycles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from manifests import OFFLINE_ENDPOINT

from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.core.plan import Action, FieldChange
from orlojd.engine.applying import ApplyRefused, ApplyResult, apply_revision, commit_manifest
from orlojd.engine.planning import Planner, plan_revision
from orlojd.engine.workspace import Workspace, open_workspace
from orlojd.render import PlanReport, render_json, render_markdown, render_text

SECRET_VALUE = "hunter2-supersecret"

ENDPOINT = ResourceKey("ModelEndpoint", "default", "offline")
SCAN = ResourceKey("Tool", "default", "scan")
FLAG = ResourceKey("Tool", "default", "flag")
AGENT = ResourceKey("Agent", "default", "checker")
TASK_RUN = ResourceKey("Task", "default", "run")
TASK_REPORT = ResourceKey("Task", "default", "report")
BASE_KEYS = {ENDPOINT, SCAN, FLAG, AGENT, TASK_RUN, TASK_REPORT}


def endpoint_yaml() -> str:
    return OFFLINE_ENDPOINT


def tool_yaml(name: str, access: str, resource: str, description: str = "") -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: {name}
spec:
  type: builtin
  description: "{description}"
  requires:
    - {access}: {resource}
"""


def agent_yaml(tokens: int = 8000) -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: checker
spec:
  modelRef: offline
  tools:
    - name: scan
      permissions:
        - read: docs
    - name: flag
      permissions:
        - write: tracker
  governance:
    maxTokensPerMinute: {tokens}
"""


def task_yaml(name: str, annotation: str | None = None) -> str:
    annotations = f"  annotations:\n    orloj.dev/prune: {annotation}\n" if annotation else ""
    return f"""\
apiVersion: orloj.dev/v1
kind: Task
metadata:
  name: {name}
{annotations}spec:
  agent: checker
  input:
    folder: inbox
"""


def secret_yaml(value: str = SECRET_VALUE) -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Secret
metadata:
  name: api-key
spec:
  stringData:
    token: {value}
"""


def settings_yaml(**groups: dict[str, Any]) -> str:
    return json.dumps(groups)  # JSON is YAML


@dataclass
class Env:
    """One repository and one state store URL, with the engine's entry points."""

    repo: Any
    db_url: str

    def ws(self) -> Workspace:
        # Re-opened each time: orlojd.yaml is read when the workspace opens.
        return open_workspace(self.repo.path, self.db_url)

    def store(self) -> Store:
        return Store.open(self.db_url)

    def plan(self, rev: str = "HEAD", confirm_prune: bool = False) -> PlanReport:
        store = self.store()
        try:
            return plan_revision(self.ws(), store, rev, confirm_prune).report
        finally:
            store.close()

    def apply(
        self,
        rev: str = "HEAD",
        confirm_prune: bool = False,
        saved_plan: Path | None = None,
        planner: Planner | None = None,
    ) -> ApplyResult:
        store = self.store()
        try:
            return apply_revision(self.ws(), store, rev, confirm_prune, saved_plan, planner)
        finally:
            store.close()

    def inventory(self) -> dict[ResourceKey, str]:
        store = self.store()
        try:
            return store.inventory_digests_all()
        finally:
            store.close()

    def snapshot(self) -> dict[str, Any]:
        """Everything apply writes: revision, inventory digests, status rows and history."""
        store = self.store()
        try:
            return {
                "revision": store.applied_revision_one(),
                "inventory": store.inventory_digests_all(),
                "status": [(r.key, r.digest, r.conditions) for r in store.status_all()],
                "history": store.history_all(),
            }
        finally:
            store.close()

    def bodies(self, *keys: ResourceKey) -> dict[ResourceKey, dict[str, Any]]:
        store = self.store()
        try:
            return store.inventory_bodies_some(keys)
        finally:
            store.close()


def write_base(repo: Any) -> None:
    repo.write("models/offline.yaml", endpoint_yaml())
    repo.write("tools/scan.yaml", tool_yaml("scan", "read", "docs"))
    repo.write("tools/flag.yaml", tool_yaml("flag", "write", "tracker"))
    repo.write("agents/checker.yaml", agent_yaml())
    repo.write("tasks/run.yaml", task_yaml("run"))
    repo.write("tasks/report.yaml", task_yaml("report"))


def enable_prune(repo: Any, **extra: Any) -> None:
    repo.write("orlojd.yaml", settings_yaml(prune={"enabled": True, **extra}))


@pytest.fixture
def env(repo: Any, db_url: str) -> Env:
    return Env(repo, db_url)


def actions(report: PlanReport) -> dict[ResourceKey, Action]:
    """The plan's verdict for every object: its changes, and the identities it keeps unchanged."""
    verdicts = {c.key: c.action for c in report.plan.changes}
    return {**verdicts, **dict.fromkeys(report.plan.unchanged, Action.UNCHANGED)}


def change_of(report: PlanReport, key: ResourceKey) -> Any:
    (found,) = [c for c in report.plan.changes if c.key == key]
    return found


def ready(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [c for c in conditions if c["type"] == "Ready"]
    return found


# -- create, edit, rename, move ------------------------------------------------------------------------------------


def test_first_plan_creates_everything_in_reference_order_and_apply_makes_it_ready(env: Env) -> None:
    write_base(env.repo)
    head = env.repo.commit("base")

    report = env.plan()
    assert actions(report) == dict.fromkeys(BASE_KEYS, Action.CREATED)
    order = [c.key for c in report.plan.changes]
    assert order.index(ENDPOINT) < order.index(AGENT)
    assert order.index(SCAN) < order.index(AGENT) and order.index(FLAG) < order.index(AGENT)
    assert order.index(AGENT) < order.index(TASK_RUN) and order.index(AGENT) < order.index(TASK_REPORT)
    assert report.base is None and report.head == head
    assert report.exit_code == 3  # a new agent widens governance

    result = env.apply()
    assert result.written
    state = env.snapshot()
    assert state["revision"] == head
    assert set(state["inventory"]) == BASE_KEYS
    for key, digest, conditions in state["status"]:
        assert digest == state["inventory"][key]
        assert ready(conditions)["status"] == "True"
        assert ready(conditions)["lastAppliedRevision"] == head

    again = env.plan()
    assert set(actions(again).values()) == {Action.UNCHANGED}
    assert again.exit_code == 0


def test_edit_is_configured_with_the_field_diff(env: Env) -> None:
    write_base(env.repo)
    env.repo.commit("base")
    env.apply()
    env.repo.write("agents/checker.yaml", agent_yaml(tokens=12000))
    head = env.repo.commit("raise the budget")

    report = env.plan()
    assert actions(report) == {**dict.fromkeys(BASE_KEYS, Action.UNCHANGED), AGENT: Action.CONFIGURED}
    assert change_of(report, AGENT).diff == (FieldChange("spec.governance.maxTokensPerMinute", "changed", 8000, 12000),)
    assert "~ spec.governance.maxTokensPerMinute: 8000 -> 12000" in render_text(report)

    env.apply()
    state = env.snapshot()
    assert state["revision"] == head
    agent_status = next(conditions for key, _, conditions in state["status"] if key == AGENT)
    assert ready(agent_status)["lastAppliedRevision"] == head
    assert ready(agent_status)["observedGeneration"] == 2
    assert env.plan().exit_code == 0


@pytest.mark.parametrize(
    ("old", "new"),
    [("agents/checker.yaml", "agents/renamed.yaml"), ("tools/scan.yaml", "elsewhere/deeper/scan.yaml")],
    ids=["rename-file", "move-to-another-folder"],
)
def test_renaming_or_moving_a_file_leaves_objects_unchanged(env: Env, old: str, new: str) -> None:
    write_base(env.repo)
    env.repo.commit("base")
    planner = Planner(env.ws(), env.store())  # a warm planner: the next plan loads incrementally
    try:
        env.apply(planner=planner)
        (env.repo.path / new).parent.mkdir(parents=True, exist_ok=True)
        env.repo.git("mv", old, new)
        env.repo.commit(f"move {old} to {new}")
        warm = planner.plan("HEAD").report
    finally:
        planner.store.close()
    cold = env.plan()
    for report in (warm, cold):
        assert report.plan.errors == ()
        assert set(actions(report).values()) == {Action.UNCHANGED}
        assert set(actions(report)) == BASE_KEYS
        assert report.exit_code == 0


# -- deletion and its guards ---------------------------------------------------------------------------------------


def test_deleted_manifest_is_skipped_while_prune_is_off(env: Env) -> None:
    write_base(env.repo)
    env.repo.commit("base")
    env.apply()
    env.repo.remove("tasks/run.yaml")
    env.repo.commit("drop a task")

    report = env.plan()
    skipped = change_of(report, TASK_RUN)
    assert skipped.action is Action.SKIPPED
    assert "prune.enabled" in skipped.reason
    assert report.plan.summary["delete"] == 0

    env.apply()
    assert TASK_RUN in env.inventory()
    assert TASK_RUN in {key for key, _, _ in env.snapshot()["status"]}


def test_skipped_agent_deletion_is_not_reported_as_a_governance_change(env: Env) -> None:
    write_base(env.repo)
    env.repo.commit("base")
    env.apply()
    for rel in ("tasks/run.yaml", "tasks/report.yaml", "agents/checker.yaml"):
        env.repo.remove(rel)
    env.repo.commit("drop the agent and its tasks")
    env.apply()
    assert AGENT in env.inventory()  # prune is off: the agent keeps every permission

    report = env.plan()
    assert change_of(report, AGENT).action is Action.SKIPPED
    assert [g.change for g in report.governance] == []
    assert report.exit_code == 0


def test_deleted_manifest_is_deleted_with_prune_on(env: Env) -> None:
    write_base(env.repo)
    enable_prune(env.repo)
    env.repo.commit("base, prune on")
    env.apply()
    env.repo.remove("tasks/run.yaml")
    env.repo.commit("drop a task")

    report = env.plan()
    deleted = change_of(report, TASK_RUN)
    assert deleted.action is Action.DELETED
    removed = {f.path: f.old for f in deleted.diff if f.op == "removed"}
    assert removed["kind"] == "Task" and removed["spec"]["agent"] == "checker"  # the body comes from the store
    assert report.plan.summary["delete"] == 1
    assert report.plan.errors == ()

    env.apply()
    state = env.snapshot()
    assert TASK_RUN not in state["inventory"]
    assert TASK_RUN not in {key for key, _, _ in state["status"]}
    assert state["history"][0]["summary"]["delete"] == 1


def test_circuit_breaker_refuses_a_large_deletion_unless_confirmed(env: Env) -> None:
    write_base(env.repo)
    enable_prune(env.repo)
    first = env.repo.commit("base, prune on")
    env.apply()
    env.repo.remove("tasks/run.yaml")
    env.repo.remove("tasks/report.yaml")
    env.repo.commit("drop both tasks: 2 of 6 applied objects, over 25%")

    report = env.plan()
    assert report.exit_code == 1
    (error,) = report.plan.errors
    assert "circuit breaker" in error and "2 of 6" in error and "--confirm-prune" in error
    before = env.snapshot()
    with pytest.raises(ApplyRefused, match="circuit breaker"):
        env.apply()
    assert env.snapshot() == before
    assert before["revision"] == first

    confirmed = env.plan(confirm_prune=True)
    assert confirmed.plan.errors == ()
    assert confirmed.exit_code == 2
    env.apply(confirm_prune=True)
    assert set(env.inventory()) == BASE_KEYS - {TASK_RUN, TASK_REPORT}


def test_circuit_breaker_lets_a_small_deletion_through(env: Env) -> None:
    write_base(env.repo)
    enable_prune(env.repo)
    env.repo.commit("base, prune on")
    env.apply()
    env.repo.remove("tasks/run.yaml")
    env.repo.commit("drop one task: 1 of 6 applied objects")

    report = env.plan()
    assert report.plan.errors == ()
    env.apply()
    assert TASK_RUN not in env.inventory()


def test_empty_revision_never_prunes_everything_without_confirmation(env: Env) -> None:
    write_base(env.repo)
    # Breaker limits wide open, so only the empty-revision guard can refuse.
    enable_prune(env.repo, maxDeletePercent=100, maxDeleteCount=1000)
    env.repo.commit("base, prune on")
    env.apply()
    for rel in ("models/offline.yaml", "tools/scan.yaml", "tools/flag.yaml", "agents/checker.yaml"):
        env.repo.remove(rel)
    env.repo.remove("tasks/run.yaml")
    env.repo.remove("tasks/report.yaml")
    env.repo.write("README.md", "manifests moved away\n")
    env.repo.commit("every manifest gone")

    report = env.plan()
    assert report.exit_code == 1
    (error,) = report.plan.errors
    assert "refusing to delete all 6 applied objects" in error and "declares none" in error
    before = env.snapshot()
    with pytest.raises(ApplyRefused, match="declares none"):
        env.apply()
    assert env.snapshot() == before

    env.apply(confirm_prune=True)
    assert env.inventory() == {}


def test_prune_annotations_disabled_and_confirm(env: Env) -> None:
    write_base(env.repo)
    env.repo.write("tasks/run.yaml", task_yaml("run", annotation="disabled"))
    env.repo.write("tasks/report.yaml", task_yaml("report", annotation="confirm"))
    enable_prune(env.repo, maxDeletePercent=100)
    env.repo.commit("base, prune on, guarded tasks")
    env.apply()
    env.repo.remove("tasks/run.yaml")
    env.repo.remove("tasks/report.yaml")
    env.repo.commit("drop both guarded tasks")

    unconfirmed = env.plan()
    assert change_of(unconfirmed, TASK_RUN).action is Action.SKIPPED
    assert "orloj.dev/prune: disabled" in change_of(unconfirmed, TASK_RUN).reason
    assert change_of(unconfirmed, TASK_REPORT).action is Action.SKIPPED
    assert "orloj.dev/prune: confirm" in change_of(unconfirmed, TASK_REPORT).reason

    confirmed = env.plan(confirm_prune=True)
    assert change_of(confirmed, TASK_RUN).action is Action.SKIPPED  # disabled means never, even confirmed
    assert change_of(confirmed, TASK_REPORT).action is Action.DELETED

    env.apply()
    assert {TASK_RUN, TASK_REPORT} <= set(env.inventory())
    env.apply(confirm_prune=True)
    inventory = env.inventory()
    assert TASK_RUN in inventory
    assert TASK_REPORT not in inventory


# -- reference cycles ----------------------------------------------------------------------------------------------


def delegating_agent_yaml(name: str, tool: str | None) -> str:
    tools = f"  tools:\n    - name: {tool}\n" if tool else ""
    return f"apiVersion: orloj.dev/v1\nkind: Agent\nmetadata:\n  name: {name}\nspec:\n  modelRef: offline\n{tools}"


def delegate_tool_yaml(target: str) -> str:
    return (
        "apiVersion: orloj.dev/v1\nkind: Tool\nmetadata:\n  name: delegate\n"
        f"spec:\n  type: agent\n  agentRef: {target}\n"
    )


def test_reference_cycle_is_a_plan_error_naming_the_cycle(env: Env) -> None:
    env.repo.write("models/offline.yaml", endpoint_yaml())
    env.repo.write("agents/lead.yaml", delegating_agent_yaml("lead", "delegate"))
    env.repo.write("tools/delegate.yaml", delegate_tool_yaml("lead"))  # lead -> delegate -> lead
    env.repo.commit("an agent that delegates to itself through a tool")

    report = env.plan()
    assert report.exit_code == 1
    (error,) = report.plan.errors
    assert error.startswith("reference cycle: ")
    assert "Agent/lead -> Tool/delegate -> Agent/lead" in error
    assert "ModelEndpoint/offline" not in error
    with pytest.raises(ApplyRefused, match="reference cycle"):
        env.apply()
    assert env.snapshot()["inventory"] == {}


def test_reference_cycle_closed_by_editing_one_object_is_a_plan_error(env: Env) -> None:
    env.repo.write("models/offline.yaml", endpoint_yaml())
    env.repo.write("agents/lead.yaml", delegating_agent_yaml("lead", "delegate"))
    env.repo.write("agents/helper.yaml", delegating_agent_yaml("helper", None))
    env.repo.write("tools/delegate.yaml", delegate_tool_yaml("helper"))  # lead -> delegate -> helper
    env.repo.commit("lead delegates to helper")
    env.apply()
    env.repo.write("tools/delegate.yaml", delegate_tool_yaml("lead"))  # now lead -> delegate -> lead
    env.repo.commit("delegate back to lead")

    report = env.plan()
    assert any("Agent/lead -> Tool/delegate -> Agent/lead" in e for e in report.plan.errors)
    assert report.exit_code == 1
    with pytest.raises(ApplyRefused, match="reference cycle"):
        env.apply()


# -- idempotency and saved plans -----------------------------------------------------------------------------------


def test_second_apply_of_the_same_revision_writes_nothing(env: Env, cli: Any) -> None:
    write_base(env.repo)
    env.repo.commit("base")
    assert env.apply().written
    before = env.snapshot()
    assert len(before["history"]) == 1

    assert env.apply().written is False
    done = cli("apply", "--db", env.db_url, cwd=env.repo.path)
    assert done.code == 0, done.stderr
    assert "nothing to do" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert env.snapshot() == before


def test_apply_with_a_saved_plan_refuses_when_head_or_inventory_moved(env: Env, tmp_path: Path) -> None:
    def save(report: PlanReport, name: str) -> Path:
        path = tmp_path / name
        path.write_text(render_json(report))
        return path

    write_base(env.repo)
    first = env.repo.commit("base")
    fresh = save(env.plan(), "fresh.json")
    assert env.apply(saved_plan=fresh).written
    assert env.snapshot()["revision"] == first

    env.repo.write("agents/checker.yaml", agent_yaml(tokens=9000))
    second = env.repo.commit("edit")
    stale_head = save(env.plan(), "stale-head.json")
    env.repo.write("tools/scan.yaml", tool_yaml("scan", "read", "docs", description="moved on"))
    third = env.repo.commit("another edit")
    before = env.snapshot()
    with pytest.raises(ApplyRefused, match=f"saved plan is for {second[:12]}"):
        env.apply(saved_plan=stale_head)
    assert env.snapshot() == before

    stale_inventory = save(env.plan(), "stale-inventory.json")
    env.apply(rev=second)  # another apply moves the inventory under the saved plan
    before = env.snapshot()
    with pytest.raises(ApplyRefused, match="inventory changed"):
        env.apply(saved_plan=stale_inventory)
    assert env.snapshot() == before

    current = save(env.plan(), "current.json")
    assert env.apply(saved_plan=current).written
    assert env.snapshot()["revision"] == third


# -- apply -f, literal secrets, invalid manifests ------------------------------------------------------------------


def test_apply_file_commits_the_manifest_then_applies_it(env: Env, cli: Any, tmp_path: Path) -> None:
    write_base(env.repo)
    env.repo.commit("base")
    outside = tmp_path / "incoming" / "notify.yaml"
    outside.parent.mkdir()
    outside.write_text(tool_yaml("notify", "write", "chat"))

    done = cli("apply", "-f", str(outside), "--db", env.db_url, cwd=env.repo.path)
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    head = env.repo.git("rev-parse", "HEAD")
    assert f"committed {outside} as {head[:12]}" in done.stdout
    assert env.repo.git("log", "-1", "--format=%s") == "orlojd apply -f: Tool/notify"
    assert env.repo.git("show", "--name-only", "--format=", "HEAD") == "tools/notify.yaml"
    assert env.repo.git("show", "HEAD:tools/notify.yaml") == outside.read_text().rstrip("\n")
    state = env.snapshot()
    assert state["revision"] == head
    assert ResourceKey("Tool", "default", "notify") in state["inventory"]
    assert set(state["inventory"]) == BASE_KEYS | {ResourceKey("Tool", "default", "notify")}

    # An object that already lives in the repository goes back to its own file.
    edited = tmp_path / "incoming" / "checker.yaml"
    edited.write_text(agent_yaml(tokens=4000))
    commit = commit_manifest(env.ws(), edited)
    assert env.repo.git("show", "--name-only", "--format=", commit) == "agents/checker.yaml"
    assert env.repo.git("log", "-1", "--format=%s", commit) == "orlojd apply -f: Agent/checker"
    report = env.apply(rev=commit).planned.report
    assert change_of(report, AGENT).action is Action.CONFIGURED
    assert env.snapshot()["revision"] == commit


def test_literal_secret_is_refused_by_apply_unless_allowed(env: Env) -> None:
    write_base(env.repo)
    env.repo.write("secrets/api-key.yaml", secret_yaml())
    env.repo.commit("a literal secret")

    report = env.plan()
    assert report.exit_code == 1
    assert any("Secret/api-key" in e and "literal value" in e for e in report.plan.errors)
    rendered = render_text(report) + render_json(report) + "".join(render_markdown(report))
    assert SECRET_VALUE not in rendered
    with pytest.raises(ApplyRefused, match="literal value") as refused:
        env.apply()
    assert SECRET_VALUE not in str(refused.value)
    assert env.inventory() == {}

    env.repo.write("orlojd.yaml", settings_yaml(secrets={"allowLiteral": True}))
    env.repo.commit("allow literal secrets")
    assert env.apply().written
    key = ResourceKey("Secret", "default", "api-key")
    assert key in env.inventory()
    stored = env.bodies(key)[key]
    assert stored["spec"]["stringData"]["token"].startswith("sha256:")
    assert SECRET_VALUE not in json.dumps(stored)


def test_invalid_manifest_fails_the_plan_and_leaves_the_inventory_intact(env: Env) -> None:
    write_base(env.repo)
    first = env.repo.commit("base")
    env.apply()
    before = env.snapshot()
    env.repo.write("agents/checker.yaml", agent_yaml(tokens=16000))  # a valid change...
    env.repo.write("tools/broken.yaml", tool_yaml("broken", "read", "x").replace("requires:", "requirez:"))
    env.repo.commit("one valid edit, one broken file")

    report = env.plan()
    assert report.exit_code == 1
    assert report.plan.changes == ()
    assert any("tools/broken.yaml" in e and "requirez" in e for e in report.plan.errors)
    with pytest.raises(ApplyRefused, match="requirez"):
        env.apply()
    after = env.snapshot()
    assert after == before
    assert after["revision"] == first


def test_reconcile_history_keeps_the_newest_ten(env: Env) -> None:
    write_base(env.repo)
    revisions = []
    for tokens in range(12):
        env.repo.write("agents/checker.yaml", agent_yaml(tokens=1000 + tokens))
        revisions.append(env.repo.commit(f"budget {tokens}"))
        env.apply()
    history = env.snapshot()["history"]
    assert len(history) == 10
    assert [h["revision"] for h in history] == revisions[::-1][:10]  # newest first, the two oldest dropped
