"""The governance gate at run time (``engine/gate.py``) and the approval flow (``adapters/approvals.py``)
against the real stores: every test runs on SQLite and on PostgreSQL (the ``store`` fixture).

Manifests reach the store the real way: YAML committed to a git repository and applied with
``apply_revision``. Runs are queued with ``run_parameters`` (as apply queues them, the commit's
author as ``requested_by``) or by apply itself (``mode: run``). Time is a ``Clock`` the test moves
by hand; nothing sleeps (the pool test polls with a deadline).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import GIT_ENV, GitRepo
from manifests import ANNOUNCED_AGENT
from pools import T0, Clock, start_pool, wait_for

from orlojd.adapters.approvals import Approvals, ApprovalState, ApprovalView, VoteOutcome
from orlojd.adapters.audit import AuditEvent, AuditLog
from orlojd.adapters.budgets import BudgetLedger
from orlojd.adapters.queue import ClaimedTask, TaskQueue, TaskState, TaskView
from orlojd.adapters.store import Store
from orlojd.core.call_policy import call_digest
from orlojd.core.keys import ResourceKey
from orlojd.core.runs import run_parameters
from orlojd.engine.applying import apply_revision
from orlojd.engine.executors import Placeholder
from orlojd.engine.gate import CallOutcome, Gate
from orlojd.engine.workers import PoolOptions, TaskDeferred, TaskFailed, TaskHandedOff, WorkerPool
from orlojd.engine.workspace import open_workspace

AUTHOR = GIT_ENV["GIT_AUTHOR_EMAIL"]  # apply puts the commit's author in the payload: requested_by
ALICE, BOB, MALLORY = "alice@example.invalid", "bob@example.invalid", "mallory@example.invalid"
AGENT = "Agent/default/compliance-checker"
AGENT_KEY = ResourceKey("Agent", "default", "compliance-checker")
LEASE = timedelta(seconds=30)
# The announcement's compliance checker, with a per-run budget.
AGENT_YAML = ANNOUNCED_AGENT.replace(
    "    maxTokensPerMinute: 8000\n", "    maxTokensPerMinute: 8000\n    maxTokensPerRun: 1000\n"
)
READ_ARGS: dict[str, Any] = {"path": "reports/2026-q3"}
WRITE_ARGS: dict[str, Any] = {"issue": "missing signature on page 4", "api_key": "sk-live-0123456789"}


TOOLS_YAML = """\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: scan-documents
spec:
  requires:
    - read: compliance_docs
---
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: flag-issues
spec:
  requires:
    - write: issue_tracker
---
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: delete-everything
spec:
  requires:
    - delete: compliance_docs
"""


def policy_yaml(
    approvers: tuple[str, ...] = (ALICE, BOB),
    required: int = 1,
    signed: bool = False,
    timeout: str = "10m",
    on_deny: str | None = None,
    extra: str = "",
) -> str:
    """A Policy selecting the compliance checker; ``extra`` adds indented spec lines."""
    listed = ", ".join(approvers)
    deny = "" if on_deny is None else f"  onDeny: {on_deny}\n"
    return f"""\
apiVersion: orloj.dev/v1
kind: Policy
metadata:
  name: compliance-gate
spec:
  selector:
    agents: [compliance-checker]
  approval:
    approvers: [{listed}]
    required: {required}
    signed: {str(signed).lower()}
    timeout: {timeout}
{deny}{extra}"""


def script_task_yaml(script: str) -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Task
metadata:
  name: check-q3
spec:
  mode: run
  agent: compliance-checker
  input:
    script:
{script}"""


TASK_BODY: dict[str, Any] = {
    "apiVersion": "orloj.dev/v1",
    "kind": "Task",
    "metadata": {"name": "check-q3", "namespace": "default"},
    "spec": {"agent": "compliance-checker", "mode": "template"},
}


# -- the world: a repository applied to the store, a gate, a clock -----------------------------------------------


@dataclass
class World:
    repo: GitRepo
    store: Store
    queue: TaskQueue
    clock: Clock
    revision: str = ""
    notified: list[ApprovalView] = field(default_factory=list)
    gate: Gate = field(init=False)
    approvals: Approvals = field(init=False)
    audit: AuditLog = field(init=False)
    runs: int = 0

    def __post_init__(self) -> None:
        self.gate = Gate(self.store, now=self.clock, notify=self.notified.append)
        self.approvals = Approvals(self.store)
        self.audit = AuditLog(self.store)

    def apply(self, policy: str | None = None, task: str | None = None) -> None:
        """Commit the agent, its tools, ``policy`` and ``task`` (when given), apply HEAD."""
        self.repo.write("agents/compliance-checker.yaml", AGENT_YAML)
        self.repo.write("tools/tools.yaml", TOOLS_YAML)
        if policy is not None:
            self.repo.write("policies/compliance-gate.yaml", policy)
        if task is not None:
            self.repo.write("tasks/check-q3.yaml", task)
        self.revision = self.repo.commit("the compliance checker")
        apply_revision(open_workspace(self.repo.path, self.store.url), self.store, "HEAD")
        assert self.store.applied_revision_one() == self.revision

    def enqueue(self) -> str:
        """Queue one run of the agent as apply would (the commit's author as requested_by); its id."""
        self.runs += 1
        agent_body = self.store.inventory_bodies_some(keys=[AGENT_KEY])[AGENT_KEY]
        parameters = run_parameters(
            ResourceKey("Task", "default", f"check-{self.runs}"),
            TASK_BODY,
            agent_body,
            self.revision,
            extra={"requested_by": AUTHOR},
        )
        task_id = self.queue.enqueue_run(
            f"Task/default/check-{self.runs}", "d1", now=self.clock(), **parameters.enqueue_options(self.clock())
        )
        assert task_id is not None
        return task_id

    def claim(self, worker: str = "w1") -> ClaimedTask:
        claimed = self.queue.claim_one(worker, self.clock(), LEASE)
        assert claimed is not None, "nothing claimable"
        assert claimed.agent == AGENT
        return claimed

    def started(self) -> ClaimedTask:
        """A fresh run of the agent, claimed."""
        task_id = self.enqueue()
        claimed = self.claim()
        assert claimed.id == task_id
        return claimed

    def view(self, task_id: str) -> TaskView:
        found = self.queue.get_one(task_id)
        assert found is not None
        return found

    def events(self, task_id: str, name: str | None = None) -> list[AuditEvent]:
        """The run's governance events (its task_* transitions, written by the store's triggers, left out)."""
        found = self.audit.list_all(task_id=task_id)
        return [e for e in found if not e.event.startswith("task_") and (name is None or e.event == name)]

    def parked(self, claim: ClaimedTask, tool: str = "flag-issues", args: dict[str, Any] | None = None) -> ApprovalView:
        """Make the call that needs an approval; the task parks; the pending approval."""
        with pytest.raises(TaskHandedOff, match="waiting for approval"):
            self.gate.tool_call(claim, tool, WRITE_ARGS if args is None else args)
        assert self.view(claim.id).state is TaskState.WAITING_APPROVAL
        found = self.approvals.find_one(claim.id, tool, call_digest(AGENT, tool, WRITE_ARGS if args is None else args))
        assert found is not None and found.state is ApprovalState.PENDING
        return found


@pytest.fixture
def world(repo: GitRepo, store: Store, queue: TaskQueue) -> Iterator[World]:
    yield World(repo, store, queue, Clock(T0))


def causes(event: AuditEvent) -> list[tuple[str | None, str | None, str | None]]:
    """The provenance of a decision event: (kind/name, field) per rule."""
    return [(b["kind"], b["name"], b["field"]) for b in event.detail["because"]]


# -- 1-3: allow, deny (fail_run, fenced), deny returned to the model ----------------------------------------------


def test_an_allowed_call_returns_and_is_audited_with_its_grant(world: World) -> None:
    world.apply()
    claim = world.started()
    outcome = world.gate.tool_call(claim, "scan-documents", READ_ARGS, (("read", "compliance_docs"),))
    assert isinstance(outcome, CallOutcome)
    assert outcome.allowed and outcome.approval is None
    assert outcome.decision.reason.value == "allowed"
    [event] = world.events(claim.id)
    assert (event.event, event.verdict, event.reason, event.tool) == ("decision", "allow", "allowed", "scan-documents")
    assert event.agent == AGENT and event.revision == world.revision
    assert causes(event) == [("Agent", "compliance-checker", "spec.tools[0].permissions")]
    running = world.view(claim.id)
    assert running.state is TaskState.RUNNING and running.lease_owner == "w1"


def test_an_ungranted_tool_fails_the_run_with_its_decision_in_one_fenced_transaction(world: World) -> None:
    world.apply()
    stale = world.started()
    # The lease runs out and another worker takes the task over: the first claim is stale.
    world.clock.at += LEASE + timedelta(seconds=1)
    current = world.claim("w2")
    assert current.id == stale.id and current.fencing_token > stale.fencing_token

    with pytest.raises(TaskHandedOff, match="denied"):
        world.gate.tool_call(stale, "query-db", {})
    untouched = world.view(stale.id)
    assert (untouched.state, untouched.lease_owner, untouched.last_error) == (TaskState.RUNNING, "w2", None)
    assert world.events(stale.id) == [], "a stale claim writes neither the failure nor its decision"

    with pytest.raises(TaskHandedOff, match="denied"):
        world.gate.tool_call(current, "query-db", {})
    failed = world.view(current.id)
    assert failed.state is TaskState.FAILED and failed.lease_owner is None and failed.finished_at == world.clock()
    assert failed.last_error is not None and failed.last_error.startswith("query-db: tool_not_granted:")
    [event] = world.events(current.id)
    assert (event.event, event.verdict, event.reason) == ("decision", "deny", "tool_not_granted")
    assert event.tool == "query-db" and event.detail["message"] == f"{AGENT_KEY.short} is not granted tool query-db"
    assert causes(event) == [("Agent", "compliance-checker", "spec.tools[name=query-db]")]
    # The run is over: the worker's own failure would be refused (nothing left to fence).
    assert not world.queue.fail_run(current.id, "w2", current.fencing_token, world.clock(), "late", None)


def test_on_deny_return_to_model_tells_the_model_and_keeps_the_claim(world: World) -> None:
    world.apply(policy_yaml(on_deny="return_to_model"))
    claim = world.started()
    outcome = world.gate.tool_call(claim, "query-db", {})
    assert not outcome.allowed and outcome.decision.reason.value == "tool_not_granted"
    assert "not granted tool query-db" in outcome.decision.message
    running = world.view(claim.id)
    assert (running.state, running.lease_owner, running.fencing_token) == (TaskState.RUNNING, "w1", claim.fencing_token)
    [event] = world.events(claim.id)
    assert (event.event, event.verdict, event.reason) == ("decision", "deny", "tool_not_granted")
    # The run goes on under the same claim: an allowed call, then its result is accepted.
    assert world.gate.tool_call(claim, "scan-documents", READ_ARGS).allowed
    assert world.queue.complete_run(claim.id, "w1", claim.fencing_token, world.clock(), {"ok": True})


# -- 4-8: approvals ---------------------------------------------------------------------------------------------------


def test_a_call_needing_approval_parks_the_task_with_its_request(world: World) -> None:
    world.apply(policy_yaml())
    task_id = world.enqueue()
    assert world.view(task_id).attempts == 0
    claim = world.claim()
    assert world.view(task_id).attempts == 1

    with pytest.raises(TaskHandedOff, match="waiting for approval ap-"):
        world.gate.tool_call(claim, "flag-issues", WRITE_ARGS, (("write", "issue_tracker"),))
    parked = world.view(task_id)
    assert parked.state is TaskState.WAITING_APPROVAL
    assert parked.lease_owner is None and parked.lease_until is None
    assert parked.attempts == 0, "waiting for people is not a failed attempt"

    [approval] = world.approvals.list_all()
    assert approval.state is ApprovalState.PENDING and approval.task_id == task_id
    assert (approval.agent, approval.tool) == (AGENT, "flag-issues")
    assert approval.digest == call_digest(AGENT, "flag-issues", WRITE_ARGS)
    assert '"api_key":"[redacted]"' in approval.preview and "sk-live" not in approval.preview
    assert "missing signature on page 4" in approval.preview
    assert approval.requested_by == AUTHOR
    assert approval.policy.approvers == frozenset({ALICE, BOB}) and approval.policy.required == 1
    assert approval.requested_at == T0 and approval.expires_at == T0 + timedelta(minutes=10)
    assert approval.needs == [["write", "issue_tracker"]]

    decision, requested = world.events(task_id)
    assert (decision.event, decision.verdict, decision.reason) == ("decision", "approval_required", "approval_required")
    assert decision.detail["digest"] == approval.digest
    assert ("Agent", "compliance-checker", "spec.governance.requireApproval[0]") in causes(decision)
    assert (requested.event, requested.detail["approval"]) == ("approval_requested", approval.id)
    assert [v.id for v in world.notified] == [approval.id]

    # Parked: its old worker cannot finish it, and no worker claims it, not even past its expiry.
    assert not world.queue.complete_run(task_id, "w1", claim.fencing_token, world.clock(), {})
    assert world.queue.claim_one("w2", T0 + timedelta(hours=2), LEASE) is None


def test_an_approval_lets_exactly_the_approved_call_through(world: World) -> None:
    world.apply(policy_yaml())
    claim = world.started()
    approval = world.parked(claim)
    world.clock.at += timedelta(minutes=1)
    voted = world.approvals.vote_run(approval.id, ALICE, True, "fine", None, world.clock())
    assert voted.outcome is VoteOutcome.APPROVED
    resumed = world.view(claim.id)
    assert resumed.state is TaskState.PENDING and resumed.available_at == world.clock()

    again = world.claim("w2")
    assert again.id == claim.id and again.attempts == 1
    outcome = world.gate.tool_call(again, "flag-issues", WRITE_ARGS)
    assert outcome.allowed and outcome.approval == approval.id
    assert outcome.decision.reason.value == "approval_granted" and ALICE in outcome.decision.message
    granted = world.events(claim.id, "decision")[-1]
    assert (granted.verdict, granted.reason, granted.detail["approval"]) == ("allow", "approval_granted", approval.id)

    # The same run, other arguments: not what was approved; a new request, the task parks again.
    other = {**WRITE_ARGS, "issue": "something else entirely"}
    with pytest.raises(TaskHandedOff, match="waiting for approval"):
        world.gate.tool_call(again, "flag-issues", other)
    assert world.view(claim.id).state is TaskState.WAITING_APPROVAL
    second = world.approvals.find_one(claim.id, "flag-issues", call_digest(AGENT, "flag-issues", other))
    assert second is not None and second.id != approval.id and second.state is ApprovalState.PENDING
    assert len(world.approvals.list_all()) == 2


def test_who_may_vote_and_how_many_must(world: World) -> None:
    world.apply(policy_yaml(approvers=(AUTHOR, ALICE, BOB), required=2))
    claim = world.started()
    approval = world.parked(claim)
    now = world.clock()

    for self_approval in (AUTHOR, AUTHOR.upper()):
        refused = world.approvals.vote_run(approval.id, self_approval, True, None, None, now)
        assert refused.outcome is VoteOutcome.REFUSED and "nobody approves their own request" in refused.message
    outsider = world.approvals.vote_run(approval.id, MALLORY, True, None, None, now)
    assert outsider.outcome is VoteOutcome.REFUSED and "not an approver" in outsider.message
    unchanged = world.approvals.get_one(approval.id)
    assert unchanged is not None and unchanged.state is ApprovalState.PENDING and unchanged.votes == ()
    assert world.view(claim.id).state is TaskState.WAITING_APPROVAL
    assert len(world.events(claim.id, "approval_vote_refused")) == 3

    first = world.approvals.vote_run(approval.id, ALICE, True, None, None, now)
    assert first.outcome is VoteOutcome.RECORDED and "1 of 2" in first.message
    assert world.view(claim.id).state is TaskState.WAITING_APPROVAL, "one of two approvals resumes nothing"
    twice = world.approvals.vote_run(approval.id, ALICE, True, None, None, now)
    assert twice.outcome is VoteOutcome.DUPLICATE
    second = world.approvals.vote_run(approval.id, BOB, True, None, None, now)
    assert second.outcome is VoteOutcome.APPROVED
    assert second.approval is not None and [v.approver for v in second.approval.votes] == [ALICE, BOB]
    assert world.view(claim.id).state is TaskState.PENDING
    late = world.approvals.vote_run(approval.id, AUTHOR, False, None, None, now)
    assert late.outcome is VoteOutcome.DECIDED


def test_a_policy_asking_for_signatures_refuses_unsigned_votes(world: World) -> None:
    world.apply(policy_yaml(signed=True))
    claim = world.started()
    approval = world.parked(claim)
    assert approval.policy.signed
    unsigned = world.approvals.vote_run(approval.id, ALICE, True, None, None, world.clock())
    assert unsigned.outcome is VoteOutcome.REFUSED and "must be signed" in unsigned.message
    assert world.view(claim.id).state is TaskState.WAITING_APPROVAL
    signed = world.approvals.vote_run(approval.id, ALICE, True, None, "ssh-signature", world.clock())
    assert signed.outcome is VoteOutcome.APPROVED
    assert signed.approval is not None and signed.approval.votes[0].signed


def test_a_denied_approval_fails_the_run(world: World) -> None:
    world.apply(policy_yaml())
    claim = world.started()
    approval = world.parked(claim)
    voted = world.approvals.vote_run(approval.id, BOB, False, "not before the audit", None, world.clock())
    assert voted.outcome is VoteOutcome.DENIED
    failed = world.view(claim.id)
    assert failed.state is TaskState.FAILED and failed.finished_at == world.clock()
    assert failed.last_error is not None
    assert approval.id in failed.last_error and "not before the audit" in failed.last_error
    assert [e.reason for e in world.events(claim.id, "approval_denied")] == ["approval_denied"]
    assert world.queue.claim_one("w2", world.clock() + timedelta(hours=2), LEASE) is None


def test_a_denied_approval_under_return_to_model_is_told_to_the_rerun(world: World) -> None:
    world.apply(policy_yaml(on_deny="return_to_model"))
    claim = world.started()
    approval = world.parked(claim)
    assert approval.policy.on_deny == "return_to_model"
    world.approvals.vote_run(approval.id, BOB, False, "wrong tracker", None, world.clock())
    assert world.view(claim.id).state is TaskState.PENDING

    again = world.claim("w2")
    outcome = world.gate.tool_call(again, "flag-issues", WRITE_ARGS)
    assert not outcome.allowed and outcome.approval == approval.id
    assert outcome.decision.reason.value == "approval_denied" and "wrong tracker" in outcome.decision.message
    assert world.view(claim.id).state is TaskState.RUNNING and world.view(claim.id).lease_owner == "w2"
    denied = world.events(claim.id, "decision")[-1]
    assert (denied.verdict, denied.reason) == ("deny", "approval_denied")


def test_an_undecided_approval_expires_after_the_policy_timeout(world: World) -> None:
    world.apply(policy_yaml(timeout="10m"))
    claim = world.started()
    approval = world.parked(claim)

    world.clock.at = T0 + timedelta(minutes=9)
    assert world.approvals.expire_due_run(world.clock()) == 0, "the Policy's 10m, not before"
    world.clock.at = T0 + timedelta(minutes=11)
    assert world.approvals.expire_due_run(world.clock()) == 1
    expired = world.approvals.get_one(approval.id)
    assert expired is not None and expired.state is ApprovalState.EXPIRED and expired.decided_at == world.clock()
    failed = world.view(claim.id)
    assert failed.state is TaskState.FAILED and failed.last_error is not None and approval.id in failed.last_error
    assert [e.reason for e in world.events(claim.id, "approval_expired")] == ["approval_expired"]
    after = world.approvals.vote_run(approval.id, ALICE, True, None, None, world.clock())
    assert after.outcome is VoteOutcome.DECIDED
    assert world.approvals.expire_due_run(world.clock()) == 0


def test_a_vote_after_the_timeout_expires_the_approval(world: World) -> None:
    world.apply(policy_yaml(timeout="10m"))
    claim = world.started()
    approval = world.parked(claim)
    world.clock.at = T0 + timedelta(minutes=10)
    late = world.approvals.vote_run(approval.id, ALICE, True, None, None, world.clock())
    assert late.outcome is VoteOutcome.EXPIRED
    expired = world.approvals.get_one(approval.id)
    assert expired is not None and expired.state is ApprovalState.EXPIRED and expired.votes == ()
    assert world.view(claim.id).state is TaskState.FAILED


def test_expiry_compares_instants_not_wall_clock_text(world: World) -> None:
    world.apply(policy_yaml(timeout="10m"))
    claim = world.started()
    approval = world.parked(claim)
    five_minutes_in = (T0 + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=2)))
    assert world.approvals.expire_due_run(five_minutes_in) == 0, "5 of the 10 minutes have passed"
    still = world.approvals.get_one(approval.id)
    assert still is not None and still.state is ApprovalState.PENDING


# -- 9: model calls ---------------------------------------------------------------------------------------------------


def test_a_model_call_over_the_runs_token_budget_fails_for_good(world: World) -> None:
    world.apply()
    claim = world.started()
    assert world.gate.model_call(claim, f"{claim.id}/0", None, 600) == "gpt-4"
    assert world.gate.charge(f"{claim.id}/0", 500, 200, "gpt-4")
    assert not world.gate.charge(f"{claim.id}/0", 500, 200, "gpt-4"), "a call is settled once"
    assert not world.gate.charge(f"{claim.id}/9", 1, 1, "gpt-4"), "a call never admitted is not charged"
    usage = BudgetLedger(world.store).usage_one(AGENT, claim.id, world.clock())
    assert usage.run_tokens == 700

    with pytest.raises(TaskFailed, match="maxTokensPerRun") as refused:
        world.gate.model_call(claim, f"{claim.id}/1", None, 400)
    assert refused.value.permanent
    assert [e.event for e in world.events(claim.id)] == ["model_call", "model_usage", "budget_exceeded"]
    # A retried call (same call id) was admitted before: not charged again, not refused.
    assert world.gate.model_call(claim, f"{claim.id}/0", None, 600) == "gpt-4"
    # Another run of the same agent has its own per-run budget.
    world.queue.complete_run(claim.id, "w1", claim.fencing_token, world.clock(), {})
    other = world.started()
    assert world.gate.model_call(other, f"{other.id}/0", None, 400) == "gpt-4"


def test_a_policy_minute_budget_with_on_exceeded_wait_defers_the_call(world: World) -> None:
    budgets = "  budgets:\n    maxTokensPerMinute: 500\n    onExceeded: wait\n"
    world.apply(policy_yaml(extra=budgets))
    claim = world.started()
    first_at = world.clock()
    world.gate.model_call(claim, f"{claim.id}/0", None, 300)
    world.clock.at += timedelta(seconds=20)
    with pytest.raises(TaskDeferred) as deferred:
        world.gate.model_call(claim, f"{claim.id}/1", None, 300)
    assert deferred.value.until == first_at + timedelta(seconds=60)
    assert world.queue.defer_run(claim.id, "w1", claim.fencing_token, world.clock(), deferred.value.until, "budget")
    assert world.queue.claim_one("w2", first_at + timedelta(seconds=59), LEASE) is None
    world.clock.at = first_at + timedelta(seconds=61)
    again = world.claim("w2")
    assert world.gate.model_call(again, f"{claim.id}/1", None, 300) == "gpt-4"


def test_a_model_outside_the_policys_allowed_models_fails_the_run_with_its_decision(world: World) -> None:
    world.apply(policy_yaml(extra="  allowedModels: [gpt-4]\n"))
    claim = world.started()
    assert world.gate.model_call(claim, f"{claim.id}/0", None, 10) == "gpt-4"
    [admitted] = world.events(claim.id)
    assert (admitted.event, admitted.verdict, admitted.reason) == ("model_call", "allow", "allowed")

    with pytest.raises(TaskHandedOff, match=r"model gpt-3\.5-turbo is not allowed by Policy/compliance-gate"):
        world.gate.model_call(claim, f"{claim.id}/1", "gpt-3.5-turbo", 10)
    failed = world.view(claim.id)
    assert failed.state is TaskState.FAILED and failed.lease_owner is None
    assert failed.last_error is not None and "gpt-3.5-turbo is not allowed" in failed.last_error
    denied = world.events(claim.id)[-1]
    assert (denied.event, denied.verdict, denied.reason) == ("decision", "deny", "model_not_allowed")
    assert denied.detail["model"] == "gpt-3.5-turbo" and causes(denied) == [
        ("Policy", "compliance-gate", "spec.allowedModels")
    ]
    assert BudgetLedger(world.store).usage_one(AGENT, claim.id, world.clock()).run_tokens == 10, "nothing reserved"


# -- 10: fail closed --------------------------------------------------------------------------------------------------


def test_an_applied_manifest_that_no_longer_validates_denies_every_call(world: World) -> None:
    world.apply()
    claim = world.started()
    assert world.gate.tool_call(claim, "scan-documents", READ_ARGS).allowed  # indexed at this revision
    with world.store.writing("corrupting the inventory") as connection:
        connection.execute(
            sa.text("UPDATE inventory SET body = :body WHERE kind = 'Agent' AND name = 'compliance-checker'"),
            {"body": '{"kind":"Agent"}'},
        )
        connection.execute(sa.text("UPDATE store_meta SET value = 'tampered' WHERE key = 'applied_revision'"))

    with pytest.raises(TaskFailed, match="cannot read the applied manifests") as model_refused:
        world.gate.model_call(claim, f"{claim.id}/0", None, 10)
    assert model_refused.value.permanent
    with pytest.raises(TaskHandedOff, match="denied"):
        world.gate.tool_call(claim, "scan-documents", READ_ARGS)
    failed = world.view(claim.id)
    assert failed.state is TaskState.FAILED
    assert failed.last_error is not None and "scan-documents: internal_error" in failed.last_error
    denied = world.events(claim.id, "decision")[-1]
    assert (denied.verdict, denied.reason) == ("deny", "internal_error")

    # A gate built afresh (another process) reads the same broken inventory and denies too.
    fresh = world.started()
    with pytest.raises(TaskHandedOff):
        Gate(world.store, now=world.clock).tool_call(fresh, "scan-documents", READ_ARGS)
    assert world.view(fresh.id).state is TaskState.FAILED


# -- 11: the worker pool end to end -----------------------------------------------------------------------------------

SCRIPT = """\
      - model: null
        tokens: 100
        usage: {prompt: 80, completion: 20}
      - tool: scan-documents
        args: {path: reports/2026-q3}
        read: compliance_docs
      - tool: flag-issues
        args: {issue: missing signature, api_key: sk-live-0123456789}
        write: issue_tracker
"""


def test_the_pool_parks_a_scripted_run_for_approval_and_finishes_it(world: World, pools: list[WorkerPool]) -> None:
    world.apply(policy_yaml(), task=script_task_yaml(SCRIPT))
    [queued] = world.queue.list_all()
    assert queued.payload["requested_by"] == AUTHOR, "apply names the commit's author"
    world.clock.at = queued.available_at
    options = PoolOptions(size=1, lease=LEASE, renew_every=timedelta(seconds=10), idle_wait=0.02)
    placeholder = Placeholder(world.store, world.gate)
    pool = start_pool(pools, WorkerPool(world.queue, placeholder, options, "w", now=world.clock))

    wait_for(lambda: world.view(queued.id).state is TaskState.WAITING_APPROVAL, "the run to park")
    [approval] = world.approvals.list_all()
    assert approval.tool == "flag-issues" and "[redacted]" in approval.preview
    assert world.approvals.vote_run(approval.id, AUTHOR, True, None, None, world.clock()).outcome is VoteOutcome.REFUSED
    assert world.approvals.vote_run(approval.id, ALICE, True, None, None, world.clock()).outcome is VoteOutcome.APPROVED
    pool.wake()

    wait_for(lambda: world.view(queued.id).state is TaskState.SUCCEEDED, "the run to finish")
    done = world.view(queued.id)
    assert done.result is not None
    assert done.result["script"] == [
        {"step": 0, "model": "gpt-4", "tokens": 100},
        {"step": 1, "tool": "scan-documents", "allowed": True, "reason": "allowed"},
        {"step": 2, "tool": "flag-issues", "allowed": True, "reason": "approval_granted", "approval": approval.id},
    ]
    assert done.attempts == 1, "the wait for approval did not count as an attempt"
    usage = BudgetLedger(world.store).usage_one(AGENT, queued.id, world.clock())
    assert usage.run_tokens == 100, "the model step ran twice (before and after the approval) and was charged once"
    reasons = [(e.event, e.reason) for e in world.events(queued.id) if e.event != "approval_vote_refused"]
    assert reasons == [
        ("model_call", "allowed"),  # the model step's retry after the approval is not admitted (nor audited) twice
        ("model_usage", None),
        ("decision", "allowed"),
        ("tool_call", None),
        ("decision", "approval_required"),
        ("approval_requested", "approval_required"),
        ("approval_vote", None),
        ("approval_approved", "approval_granted"),
        ("decision", "allowed"),
        ("tool_call", None),
        ("decision", "approval_granted"),
        ("tool_call", None),
    ]
