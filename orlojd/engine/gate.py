"""The governance gate at run time: every tool call and model call of a run passes here first.

Fail closed: a call the gate does not allow never reaches the tool or the model. The gate
decides with ``core.governance.decide`` over the applied manifests (indexed once per applied
revision) and records every decision in the audit trail:

* ``tool_call``: allow -> returns; approval required -> the run's task is parked
  (``waiting_approval``, lease released) together with the approval request and the decision
  event, people are told (log line, optional webhook), and ``TaskHandedOff`` ends the attempt;
  when the task runs again the same call (same argument digest) finds its approval: approved ->
  allowed, denied or expired -> denied. A denial under ``onDeny: fail_run`` fails the task in
  the transaction that records the decision (``TaskHandedOff``); under ``return_to_model`` the
  denial is returned for the model to read.
* ``model_call``: the model must be allowed (else the run fails with the decision's event,
  in one transaction), then the token budget is reserved on the estimate
  (``adapters/budgets.py``, shared by all workers); over budget -> ``TaskDeferred`` until the
  window frees up (``onExceeded: wait``) or a permanent failure. ``charge`` settles the call with
  the usage the provider reported. ``call_id`` is stable for a step of a run, so a retried call
  is charged once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from orlojd.adapters import clock
from orlojd.adapters.approvals import Approvals, ApprovalState, ApprovalView
from orlojd.adapters.audit import AuditEvent, AuditLog, decision_event, insert
from orlojd.adapters.budgets import BudgetLedger
from orlojd.adapters.queue import ClaimedTask, TaskState, released
from orlojd.adapters.store import Store
from orlojd.core.call_policy import CallPolicy, call_digest, call_policy, redacted_preview
from orlojd.core.effective import Pair
from orlojd.core.governance import (
    GOVERNANCE_KINDS,
    CallRequest,
    Decision,
    GovernanceContext,
    Provenance,
    ReasonCode,
    Verdict,
    context_of,
    decide,
)
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.base import split_ref
from orlojd.core.manifests.policies import Policy
from orlojd.core.manifests.registry import validate_object
from orlojd.engine.workers import TaskDeferred, TaskFailed, TaskHandedOff

log = logging.getLogger("orlojd.gate")

Notify = Callable[[ApprovalView], None]


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """An allowed call, or a denial the model is told about (``onDeny: return_to_model``)."""

    allowed: bool
    decision: Decision
    approval: str | None = None


@dataclass(frozen=True, slots=True)
class _Indexed:
    revision: str | None
    context: GovernanceContext
    policies: Mapping[ResourceKey, CallPolicy]


class Gate:
    """The gate for the runs of one store; safe to share between worker threads."""

    def __init__(self, store: Store, now: Callable[[], datetime] = clock.now, notify: Notify | None = None) -> None:
        self.store = store
        self.now = now
        self.notify = notify
        self.approvals = Approvals(store)
        self.ledger = BudgetLedger(store)
        self.audit = AuditLog(store)
        self._lock = threading.Lock()
        self._indexed: _Indexed | None = None

    # -- the manifests -----------------------------------------------------------------------

    def indexed(self) -> _Indexed:
        """The applied manifests, indexed; rebuilt when the applied revision changes."""
        revision = self.store.applied_revision_one()
        with self._lock:
            if self._indexed is not None and self._indexed.revision == revision:
                return self._indexed
        bodies = self.store.inventory_bodies_some(kinds=GOVERNANCE_KINDS)
        objects = []
        for key, body in bodies.items():
            checked = validate_object(body)
            if checked.obj is None:  # fail closed: an object the gate cannot read stops every call
                raise ValueError(f"applied {key.short} no longer validates: {checked.problems[0].message}")
            objects.append(checked.obj)
        policies = [o for o in objects if isinstance(o, Policy)]
        call_policies = {
            ResourceKey("Agent", o.namespace, o.name): call_policy(o, policies) for o in objects if isinstance(o, Agent)
        }
        fresh = _Indexed(revision, context_of(objects), call_policies)
        with self._lock:
            self._indexed = fresh
        return fresh

    # -- tool calls -------------------------------------------------------------------------

    def tool_call(
        self,
        task: ClaimedTask,
        tool: str,
        arguments: Mapping[str, Any],
        needs: tuple[Pair, ...] = (),
        *,
        agent: ResourceKey | None = None,
    ) -> CallOutcome:
        """May this run call ``tool`` with ``arguments``? See the module doc for what each answer does.
        ``agent``: the calling agent when it is not the task's own (an AgentSystem's member)."""
        agent = agent or _agent_of(task)
        request = CallRequest(
            agent,
            tool,
            needs,
            task=task.task_key.split("/", 1)[1] if "/" in task.task_key else None,
            system=task.task_spec.get("system"),
        )
        now = self.now()
        try:
            indexed = self.indexed()
            decision = decide(indexed.context, request)
            policy = indexed.policies.get(agent, CallPolicy())
        except Exception as exc:  # fail closed
            indexed, policy = None, CallPolicy()
            decision = Decision(
                Verdict.DENY,
                ReasonCode.INTERNAL_ERROR,
                (Provenance(None, "orlojd.engine.gate"),),
                f"cannot read the applied manifests ({exc}); denied",
            )
        revision = None if indexed is None else indexed.revision
        approval: ApprovalView | None = None
        if decision.verdict is Verdict.APPROVAL_REQUIRED:
            assert indexed is not None
            request = replace(request, needs=_all_needs(indexed.context, request))  # what approvers are shown
            digest = call_digest(str(agent), tool, arguments)
            approval = self.approvals.find_one(task.id, tool, digest)
            if approval is None or approval.state is ApprovalState.PENDING:
                self._ask(task, request, decision, policy, digest, arguments, revision, now)
            assert approval is not None  # _ask raised otherwise
            decision = _settled(decision, approval)
            policy = approval.policy
        detail = {} if approval is None else {"approval": approval.id, "digest": approval.digest}
        event = decision_event(decision, request, now, task.id, revision, detail, task.worker or None)
        if decision.allowed:
            self.audit.record_run(event)
            return CallOutcome(True, decision, None if approval is None else approval.id)
        if policy.on_deny == "return_to_model":
            self.audit.record_run(event)
            return CallOutcome(False, decision, None if approval is None else approval.id)
        self._fail(task, event, f"{tool}: {decision.reason.value}: {decision.message}", now)
        raise TaskHandedOff(f"denied: {decision.message}")

    def _ask(
        self,
        task: ClaimedTask,
        request: CallRequest,
        decision: Decision,
        policy: CallPolicy,
        digest: str,
        arguments: Mapping[str, Any],
        revision: str | None,
        now: datetime,
    ) -> None:
        """Park the task with its approval request; always ends the attempt (``TaskHandedOff``)."""
        event = decision_event(decision, request, now, task.id, revision, {"digest": digest}, task.worker or None)
        view = self.approvals.request_run(
            task_id=task.id,
            worker=task.worker,
            fencing_token=task.fencing_token,
            agent=str(request.agent),
            tool=request.tool,
            digest=digest,
            preview=redacted_preview(arguments),
            needs=[list(p) for p in request.needs],
            because=event.detail["because"],
            policy=policy,
            requested_by=str(task.payload.get("requested_by") or f"task {task.task_key}"),
            now=now,
            events=[event],
        )
        if view is None:
            raise TaskHandedOff("the claim went stale while asking for approval")
        log.warning(
            "task %s waits for approval %s: %s calls %s; approve with: orlojd approve %s",
            task.id,
            view.id,
            request.agent.short,
            request.tool,
            view.id,
            extra={
                "event": "approval_requested",
                "approval": view.id,
                "task_id": task.id,
                "agent": str(request.agent),
                "tool": request.tool,
                "expires_at": view.expires_at.isoformat(),
            },
        )
        if self.notify is not None:
            try:
                self.notify(view)
            except Exception as exc:  # a notification is best effort: the approval is recorded
                log.warning("approval webhook failed: %s", exc, extra={"event": "approval_notify_error"})
        raise TaskHandedOff(f"waiting for approval {view.id}")

    def _fail(self, task: ClaimedTask, event: AuditEvent, error: str, now: datetime) -> None:
        """End the run ``failed`` with the decision's audit event, in one transaction (fenced)."""
        statement = released(task.id, task.worker, task.fencing_token, TaskState.FAILED, now, error=error)
        with self.store.writing("failing a denied run") as connection:
            if connection.execute(statement).rowcount == 1:
                insert(connection, event)
        log.warning(
            "task %s failed: %s", task.id, error, extra={"event": "call_denied", "task_id": task.id, "tool": event.tool}
        )

    # -- model calls ------------------------------------------------------------------------

    def model_call(
        self,
        task: ClaimedTask,
        call_id: str,
        model: str | None,
        estimate_tokens: int,
        *,
        agent: ResourceKey | None = None,
    ) -> str:
        """Admit a model call (``model`` None: the agent's); returns the model. The model must be
        allowed and the budget is reserved; raises when the call may not go ahead. ``agent``: as in
        ``tool_call``."""
        agent = agent or _agent_of(task)
        try:
            entry = self.indexed().context.agents.get(agent)
        except Exception as exc:  # fail closed
            raise TaskFailed(f"cannot read the applied manifests ({exc}); model call denied", permanent=True) from None
        if entry is None:
            raise TaskFailed(f"{agent.short} is not applied; model call denied", permanent=True)
        model = model or entry.model or ""
        for allowed_models, where in entry.model_rules:
            if model not in allowed_models:
                message = f"model {model} is not allowed by {where}"
                denied = Decision(Verdict.DENY, ReasonCode.MODEL_NOT_ALLOWED, (where,), message)
                request = CallRequest(agent, "", model=model)
                worker = task.worker or None
                event = decision_event(denied, request, self.now(), task.id, None, {"model": model}, worker)
                event = replace(event, tool=None)
                self._fail(task, event, message, self.now())
                raise TaskHandedOff(f"denied: {message}")
        verdict = self.ledger.reserve_run(
            call_id, str(agent), task.id, model, estimate_tokens, entry.budgets, self.now(), actor=task.worker or None
        )
        for warning in verdict.warnings:
            log.warning("%s: %s", agent.short, warning, extra={"event": "budget_warning", "agent": str(agent)})
        if verdict.ok:
            return model
        if verdict.retry_at is not None:
            raise TaskDeferred(verdict.retry_at, verdict.message)
        raise TaskFailed(verdict.message, permanent=True)

    def tool_done(
        self,
        task: ClaimedTask,
        tool: str,
        outcome: str,
        detail: Mapping[str, Any] | None = None,
        *,
        agent: ResourceKey | None = None,
    ) -> None:
        """Record what an allowed tool call did (``outcome``: ok, error, ...): the audit event ``tool_call``.
        Only sizes and digests belong in ``detail``; the notes scrub anything else."""
        self.audit.record_run(
            AuditEvent(
                event="tool_call",
                at=self.now(),
                task_id=task.id,
                agent=task.agent if agent is None else str(agent),
                tool=tool,
                detail={"outcome": outcome, **(detail or {})},
                actor=task.worker or None,
            )
        )

    def charge(
        self, call_id: str, prompt_tokens: int, completion_tokens: int, model: str, *, actor: str | None = None
    ) -> bool:
        """Charge a finished model call with the usage the provider reported (once per call id); ``actor``: the
        worker that made it."""
        return self.ledger.settle_run(call_id, prompt_tokens, completion_tokens, model, self.now(), actor=actor)

    def handoff(
        self,
        task: ClaimedTask,
        sender: str | None,
        receiver: ResourceKey,
        content: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Record that ``content`` went from agent ``sender`` (None: the task's input) to ``receiver``: the
        audit event ``handoff`` with the content's sha256 and size, never the content itself. ``detail``:
        where in the run (branch, turn, system, via), no content."""
        data = content.encode("utf-8")
        self.audit.record_run(
            AuditEvent(
                event="handoff",
                at=self.now(),
                task_id=task.id,
                agent=str(receiver),
                detail={
                    "from": sender,
                    "to": receiver.name,
                    **(detail or {}),
                    "content_sha256": hashlib.sha256(data).hexdigest(),
                    "content_bytes": len(data),
                },
                actor=task.worker or None,
            )
        )


def _all_needs(context: GovernanceContext, request: CallRequest) -> tuple[Pair, ...]:
    """The pairs the call needs: the request's and the Tool's ``requires`` (as the decision saw them)."""
    tool = context.tools.get(split_ref(request.tool, request.agent.namespace))
    required = () if tool is None else tuple((p.access.value, p.resource) for p in tool.spec.requires)
    return tuple(dict.fromkeys((*request.needs, *required)))


def _agent_of(task: ClaimedTask) -> ResourceKey:
    if not task.agent:
        raise TaskFailed(f"task {task.task_key} names no agent; nothing may call tools or models", permanent=True)
    return ResourceKey.parse(task.agent)


def _settled(decision: Decision, approval: ApprovalView) -> Decision:
    """The decision once people have decided the approval it waited for."""
    because = (Provenance(None, f"approval {approval.id}"), *decision.because)
    if approval.state is ApprovalState.APPROVED:
        who = ", ".join(v.approver for v in approval.votes if v.verdict == "approve")
        return Decision(Verdict.ALLOW, ReasonCode.APPROVAL_GRANTED, because, f"approved by {who} ({approval.id})")
    if approval.state is ApprovalState.DENIED:
        return Decision(
            Verdict.DENY, ReasonCode.APPROVAL_DENIED, because, approval.decision_reason or f"{approval.id} denied"
        )
    return Decision(Verdict.DENY, ReasonCode.APPROVAL_EXPIRED, because, approval.decision_reason or "expired")


def webhook_notifier(url: str, timeout: float = 5.0) -> Notify:
    """POST each approval request as JSON to ``url`` (best effort; failures are logged)."""

    def notify(view: ApprovalView) -> None:
        body = json.dumps({"event": "approval_requested", "approval": view.as_json()}).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    return notify
