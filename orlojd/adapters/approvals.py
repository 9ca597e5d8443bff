"""Approvals in the state store: a gated call waits for people, and its task waits with it.

Called by the gate at run time (``engine/gate.py``) and by ``orlojd approve|deny|approvals``.
One ``approvals`` row per (task run, tool, argument digest) (migration 0005), so the call that
runs after an approval is exactly the call approved; votes in ``approval_votes``.

Every write here changes an approval and its task together, with its audit events, in one
transaction:

* ``request_run``: the claim running the call parks its task (``waiting_approval``; lease and
  worker released, the attempt not counted) and the pending approval is recorded. A stale
  claim (``worker``/``fencing_token`` no longer the task's) changes nothing.
* ``vote_run``: one vote per person. Enough approvals (``required``) approve it and make the
  task claimable again; one denial denies it. A denied or expired approval ends the task
  ``failed`` under ``onDeny: fail_run``, or makes it claimable under ``return_to_model`` (the
  re-run's gate then tells the model the call was refused).
* ``expire_due_run``: pending approvals past ``expires_at`` expire, as a denial would.

Who may vote is checked here from the row (``CallPolicy.may_approve``: never the requester;
only the listed approvers when any are listed; a signature when one is required). Signatures
are verified by the caller (``adapters/approval_signing.py``) before ``vote_run``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orlojd.adapters.audit import AuditEvent, insert
from orlojd.adapters.clock import utc
from orlojd.adapters.queue import released
from orlojd.adapters.queue_sql import TASKS, TaskState
from orlojd.adapters.store import Store, stored_time
from orlojd.adapters.tables import ApprovalRow, ApprovalVoteRow
from orlojd.core.call_policy import CallPolicy

APPROVALS: sa.Table = ApprovalRow.__table__  # type: ignore[attr-defined]
VOTES: sa.Table = ApprovalVoteRow.__table__  # type: ignore[attr-defined]


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


class VoteOutcome(StrEnum):
    RECORDED = "recorded"  # counted; more approvals are needed
    APPROVED = "approved"
    DENIED = "denied"
    UNKNOWN = "unknown"  # no such approval
    DECIDED = "decided"  # already approved, denied or expired: nothing changed
    EXPIRED = "expired"  # it expired before this vote (and is now marked so)
    DUPLICATE = "duplicate"  # this person already voted
    REFUSED = "refused"  # this person may not vote (see ``VoteResult.message``)


@dataclass(frozen=True, slots=True)
class Vote:
    approver: str
    verdict: str
    reason: str | None
    signed: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class ApprovalView:
    id: str
    task_id: str
    agent: str
    tool: str
    digest: str
    preview: str
    needs: list[list[str]]
    because: list[dict[str, Any]]
    state: ApprovalState
    requested_by: str
    policy: CallPolicy
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decision_reason: str | None
    votes: tuple[Vote, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "agent": self.agent,
            "tool": self.tool,
            "digest": self.digest,
            "preview": self.preview,
            "needs": self.needs,
            "because": self.because,
            "state": self.state.value,
            "requested_by": self.requested_by,
            "approvers": None if self.policy.approvers is None else sorted(self.policy.approvers),
            "required": self.policy.required,
            "signed": self.policy.signed,
            "on_deny": self.policy.on_deny,
            "requested_at": self.requested_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "decided_at": None if self.decided_at is None else self.decided_at.isoformat(),
            "decision_reason": self.decision_reason,
            "votes": [
                {
                    "approver": v.approver,
                    "verdict": v.verdict,
                    "reason": v.reason,
                    "signed": v.signed,
                    "at": v.at.isoformat(),
                }
                for v in self.votes
            ],
        }


@dataclass(frozen=True, slots=True)
class VoteResult:
    outcome: VoteOutcome
    message: str
    approval: ApprovalView | None = None


class Approvals:
    """Approval requests and votes in one ``Store``; safe to share between threads."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the gate's side ---------------------------------------------------------------------

    def find_one(self, task_id: str, tool: str, digest: str) -> ApprovalView | None:
        query = sa.select(APPROVALS).where(
            APPROVALS.c.task_id == task_id, APPROVALS.c.tool == tool, APPROVALS.c.digest == digest
        )
        with self.store.reading("reading approvals") as connection:
            row = connection.execute(query).mappings().first()
            return None if row is None else _view(row, _votes(connection, row["id"]))

    def request_run(
        self,
        *,
        task_id: str,
        worker: str,
        fencing_token: int,
        agent: str,
        tool: str,
        digest: str,
        preview: str,
        needs: Sequence[Sequence[str]],
        because: Sequence[dict[str, Any]],
        policy: CallPolicy,
        requested_by: str,
        now: datetime,
        events: Sequence[AuditEvent] = (),
    ) -> ApprovalView | None:
        """Park the task and record (or find) its pending approval; None if the claim is stale."""
        now = utc(now)
        expires = now + policy.timeout
        park = released(task_id, worker, fencing_token, TaskState.WAITING_APPROVAL, now, expires)
        with self.store.writing("recording an approval request") as connection:
            if connection.execute(park).rowcount != 1:
                return None
            existing = connection.execute(
                sa.select(APPROVALS.c.id).where(
                    APPROVALS.c.task_id == task_id, APPROVALS.c.tool == tool, APPROVALS.c.digest == digest
                )
            ).scalar()
            approval_id = existing or "ap-" + uuid.uuid4().hex[:12]
            if existing is None:
                connection.execute(
                    APPROVALS.insert().values(
                        id=approval_id,
                        task_id=task_id,
                        agent=agent,
                        tool=tool,
                        digest=digest,
                        preview=preview,
                        needs=json.dumps([list(n) for n in needs]),
                        because=json.dumps(list(because)),
                        state=ApprovalState.PENDING.value,
                        requested_by=requested_by,
                        approvers=json.dumps(None if policy.approvers is None else sorted(policy.approvers)),
                        required=policy.required,
                        signed=policy.signed,
                        on_deny=policy.on_deny,
                        requested_at=now,
                        expires_at=expires,
                    )
                )
            for event in events:
                insert(connection, event)
            insert(connection, _event("approval_requested", now, task_id, agent, tool, approval_id, digest=digest))
            row = connection.execute(sa.select(APPROVALS).where(APPROVALS.c.id == approval_id)).mappings().one()
            return _view(row, _votes(connection, approval_id))

    # -- people's side ---------------------------------------------------------------------

    def vote_run(
        self, approval_id: str, approver: str, approve: bool, reason: str | None, signature: str | None, now: datetime
    ) -> VoteResult:
        now = utc(now)
        with self.store.writing("recording an approval vote") as connection:
            row = connection.execute(sa.select(APPROVALS).where(APPROVALS.c.id == approval_id)).mappings().first()
            if row is None:
                return VoteResult(VoteOutcome.UNKNOWN, f"no approval {approval_id}; list them: orlojd approvals list")
            view = _view(row, _votes(connection, approval_id))
            if view.state is not ApprovalState.PENDING:
                return VoteResult(VoteOutcome.DECIDED, f"{approval_id} is already {view.state.value}", view)
            if view.expires_at <= now:
                self._end(connection, view, ApprovalState.EXPIRED, now, f"expired at {view.expires_at.isoformat()}")
                return VoteResult(VoteOutcome.EXPIRED, f"{approval_id} expired at {view.expires_at.isoformat()}")
            refusal = view.policy.may_approve(approver, view.requested_by)
            if refusal is None and view.policy.signed and signature is None:
                refusal = f"{approval_id} must be signed: orlojd approve {approval_id} --sign-with ~/.ssh/id_ed25519"
            if refusal is not None:
                insert(
                    connection,
                    _event(
                        "approval_vote_refused",
                        now,
                        view.task_id,
                        view.agent,
                        view.tool,
                        approval_id,
                        approver=approver,
                        why=refusal,
                    ),
                )
                return VoteResult(VoteOutcome.REFUSED, refusal, view)
            if any(v.approver == approver for v in view.votes):
                return VoteResult(VoteOutcome.DUPLICATE, f"{approver} already voted on {approval_id}", view)
            verdict = "approve" if approve else "deny"
            connection.execute(
                VOTES.insert().values(
                    approval_id=approval_id,
                    approver=approver,
                    verdict=verdict,
                    reason=reason,
                    signature=signature,
                    at=now,
                )
            )
            insert(
                connection,
                _event(
                    "approval_vote",
                    now,
                    view.task_id,
                    view.agent,
                    view.tool,
                    approval_id,
                    approver=approver,
                    verdict=verdict,
                    reason=reason,
                    signed=signature is not None,
                ),
            )
            approvals = 1 + sum(v.verdict == "approve" for v in view.votes)
            if not approve:
                self._end(
                    connection,
                    view,
                    ApprovalState.DENIED,
                    now,
                    f"denied by {approver}: {reason or 'no reason'}",
                    approver,
                )
                outcome, message = VoteOutcome.DENIED, f"{approval_id} denied"
            elif approvals >= view.policy.required:
                self._end(connection, view, ApprovalState.APPROVED, now, f"approved by {approver}", approver)
                outcome, message = VoteOutcome.APPROVED, f"{approval_id} approved; task {view.task_id} resumes"
            else:
                outcome = VoteOutcome.RECORDED
                message = f"{approval_id}: {approvals} of {view.policy.required} approvals"
            row = connection.execute(sa.select(APPROVALS).where(APPROVALS.c.id == approval_id)).mappings().one()
            return VoteResult(outcome, message, _view(row, _votes(connection, approval_id)))

    def expire_due_run(self, now: datetime) -> int:
        """Expire pending approvals past their time; how many."""
        now = utc(now)
        query = sa.select(APPROVALS).where(
            APPROVALS.c.state == ApprovalState.PENDING.value, APPROVALS.c.expires_at <= now
        )
        with self.store.writing("expiring approvals") as connection:
            rows = connection.execute(query).mappings().all()
            for row in rows:
                view = _view(row, ())
                self._end(
                    connection, view, ApprovalState.EXPIRED, now, f"nobody decided by {view.expires_at.isoformat()}"
                )
            return len(rows)

    def _end(
        self,
        connection: Connection,
        view: ApprovalView,
        state: ApprovalState,
        now: datetime,
        why: str,
        actor: str = "daemon",
    ) -> None:
        """Decide the approval and move its task on, with the audit event, on ``connection``."""
        connection.execute(
            sa.update(APPROVALS)
            .where(APPROVALS.c.id == view.id, APPROVALS.c.state == ApprovalState.PENDING.value)
            .values(state=state.value, decided_at=now, decision_reason=why)
        )
        t = TASKS
        waiting = sa.update(t).where(t.c.id == view.task_id, t.c.state == TaskState.WAITING_APPROVAL.value)
        if state is ApprovalState.APPROVED or view.policy.on_deny == "return_to_model":
            connection.execute(waiting.values(state=TaskState.PENDING.value, available_at=now, updated_at=now))
        else:
            connection.execute(
                waiting.values(
                    state=TaskState.FAILED.value,
                    finished_at=now,
                    updated_at=now,
                    last_error=f"approval {view.id} for {view.tool} {state.value}: {why}",
                )
            )
        insert(
            connection,
            _event(f"approval_{state.value}", now, view.task_id, view.agent, view.tool, view.id, why=why, actor=actor),
        )

    # -- listings ---------------------------------------------------------------------------

    def get_one(self, approval_id: str) -> ApprovalView | None:
        with self.store.reading("reading approvals") as connection:
            row = connection.execute(sa.select(APPROVALS).where(APPROVALS.c.id == approval_id)).mappings().first()
            return None if row is None else _view(row, _votes(connection, approval_id))

    def list_all(self, state: ApprovalState | None = None, limit: int = 100) -> list[ApprovalView]:
        query = sa.select(APPROVALS).order_by(APPROVALS.c.requested_at.desc()).limit(limit)
        if state is not None:
            query = query.where(APPROVALS.c.state == state.value)
        with self.store.reading("reading approvals") as connection:
            return [_view(row, _votes(connection, row["id"])) for row in connection.execute(query).mappings().all()]


def _event(
    name: str, now: datetime, task_id: str, agent: str, tool: str, approval_id: str, **detail: Any
) -> AuditEvent:
    verdict = {"approval_approved": "allow", "approval_denied": "deny", "approval_expired": "deny"}.get(name)
    reason = {
        "approval_approved": "approval_granted",
        "approval_denied": "approval_denied",
        "approval_expired": "approval_expired",
        "approval_requested": "approval_required",
    }.get(name)
    actor = str(detail.pop("actor", None) or detail.get("approver") or "daemon")
    return AuditEvent(
        name,
        now,
        task_id,
        agent,
        tool,
        verdict,
        reason,
        None,
        {"approval": approval_id, **detail},
        actor=actor,
        subject=f"task:{task_id}",
    )


def _votes(connection: Connection, approval_id: str) -> tuple[Vote, ...]:
    rows = connection.execute(
        sa.select(VOTES).where(VOTES.c.approval_id == approval_id).order_by(VOTES.c.at, VOTES.c.approver)
    ).mappings()
    return tuple(
        Vote(r["approver"], r["verdict"], r["reason"], r["signature"] is not None, _when(r["at"])) for r in rows
    )


def _when(value: Any) -> datetime:
    moment = stored_time(value)
    assert moment is not None
    return moment


def _view(row: Any, votes: Sequence[Vote]) -> ApprovalView:
    approvers = json.loads(row["approvers"])
    requested, expires = _when(row["requested_at"]), _when(row["expires_at"])
    return ApprovalView(
        id=row["id"],
        task_id=row["task_id"],
        agent=row["agent"],
        tool=row["tool"],
        digest=row["digest"],
        preview=row["preview"],
        needs=json.loads(row["needs"]),
        because=json.loads(row["because"]),
        state=ApprovalState(row["state"]),
        requested_by=row["requested_by"],
        policy=CallPolicy(
            approvers=None if approvers is None else frozenset(approvers),
            required=row["required"],
            signed=bool(row["signed"]),
            timeout=timedelta(0) if expires < requested else expires - requested,
            on_deny=row["on_deny"],
        ),
        requested_at=requested,
        expires_at=expires,
        decided_at=None if row["decided_at"] is None else _when(row["decided_at"]),
        decision_reason=row["decision_reason"],
        votes=tuple(votes),
    )
