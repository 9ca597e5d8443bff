"""`orlojd approve`, `orlojd deny`, `orlojd approvals list|show`: people deciding gated calls.

Thin commands over ``adapters.approvals.Approvals`` in the state store (``--state-dir DIR |
--db URL`` as for `orlojd task`). Who votes: ``--as``, else ``ORLOJD_USER``, else git's
``user.email``, else the login name. ``--sign-with KEY`` signs the vote with the person's own
SSH key; the signature is checked against ``approvals.allowedSigners`` of orlojd.yaml, and the
principal it belongs to is who votes. Exit 0 when the vote counted, 1 when it did not (refused,
already decided, expired, unknown), with the reason.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orlojd.cli_options import DbOption, StateDirOption, fail, wants_json

if TYPE_CHECKING:
    from orlojd.adapters.approvals import Approvals, ApprovalView

approvals_app = typer.Typer(
    help="Calls waiting for people: list, show. Decide with orlojd approve / orlojd deny.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

IdArgument = Annotated[str, typer.Argument(metavar="ID", help="Approval id (ap-...), from orlojd approvals list")]
AsOption = Annotated[
    str | None, typer.Option("--as", help="Who votes (default: ORLOJD_USER, git user.email, login name)")
]
SignOption = Annotated[
    Path | None, typer.Option("--sign-with", help="Sign the vote with this SSH key (private key, or .pub in an agent)")
]
FormatOption = Annotated[str, typer.Option("--format", help="text or json")]


def _approvals(db: str | None, state_dir: Path | None) -> Approvals:
    from orlojd.adapters.approvals import Approvals
    from orlojd.adapters.store import Store
    from orlojd.engine.workspace import store_url

    return Approvals(Store.open(store_url(Path("."), db, state_dir)))


def _identity(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("ORLOJD_USER"):
        return os.environ["ORLOJD_USER"]
    try:
        done = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True, check=False, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return getpass.getuser()


def _signed(view: ApprovalView, approve: bool, voter: str, explicit: bool, key: Path) -> tuple[str, str]:
    """(voter, signature): the vote signed with ``key`` and verified; the voter is the key's principal."""
    from orlojd.adapters.approval_signing import SignatureRejected, approval_message, sign, verify
    from orlojd.settings import load_settings

    allowed = load_settings(Path(".")).approvals.allowed_signers
    if not allowed:
        fail(
            "signed approvals need an allowed_signers file",
            'set approvals.allowedSigners in orlojd.yaml (lines: EMAIL namespaces="orlojd-approval" KEY)',
        )
    verdict = "approve" if approve else "deny"
    signature = sign(approval_message(view.id, view.digest, verdict, voter), key)
    try:
        found = verify(approval_message(view.id, view.digest, verdict, voter), signature, Path(allowed)).principal
    except SignatureRejected as exc:
        fail(exc.message, exc.hint)
    if found != voter:
        if explicit:
            fail(f"{key} belongs to {found} in {allowed}, not {voter}", f"use --as {found}, or your own key")
        voter = found
        signature = sign(approval_message(view.id, view.digest, verdict, voter), key)
        verify(approval_message(view.id, view.digest, verdict, voter), signature, Path(allowed))
    return voter, signature


def _vote(
    approval_id: str,
    approve: bool,
    reason: str | None,
    who: str | None,
    key: Path | None,
    output: str,
    db: str | None,
    state_dir: Path | None,
) -> None:
    from orlojd.adapters import clock
    from orlojd.adapters.approvals import VoteOutcome

    as_json = wants_json(output)
    approvals = _approvals(db, state_dir)
    view = approvals.get_one(approval_id)
    if view is None:
        fail(f"no approval {approval_id}", "list them: orlojd approvals list")
    voter = _identity(who)
    signature = None
    if key is not None:
        voter, signature = _signed(view, approve, voter, who is not None, key)
    result = approvals.vote_run(approval_id, voter, approve, reason, signature, clock.now())
    counted = result.outcome in (VoteOutcome.RECORDED, VoteOutcome.APPROVED, VoteOutcome.DENIED)
    if as_json:
        state = None if result.approval is None else result.approval.state.value
        typer.echo(
            json.dumps(
                {
                    "approval": approval_id,
                    "outcome": result.outcome.value,
                    "state": state,
                    "voter": voter,
                    "signed": signature is not None,
                    "message": result.message,
                },
                indent=2,
            )
        )
    elif counted:
        typer.echo(result.message)
    else:
        typer.echo(f"error: {result.message}", err=True)
    raise typer.Exit(0 if counted else 1)


def approve(
    approval_id: IdArgument,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the audit trail)")] = None,
    who: AsOption = None,
    sign_with: SignOption = None,
    output: FormatOption = "text",
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Approve a waiting call; once enough people approve, its task resumes and the call runs."""
    _vote(approval_id, True, reason, who, sign_with, output, db, state_dir)


def deny(
    approval_id: IdArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why (required; kept in the audit trail)")],
    who: AsOption = None,
    sign_with: SignOption = None,
    output: FormatOption = "text",
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Deny a waiting call: its task fails (onDeny: fail_run) or the model is told (return_to_model)."""
    _vote(approval_id, False, reason, who, sign_with, output, db, state_dir)


@approvals_app.command("list")
def list_approvals(
    state: Annotated[str, typer.Option("--state", help="pending, approved, denied, expired or all")] = "pending",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table (= --format json)")] = False,
    output: FormatOption = "text",
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Approval requests, newest first (pending ones by default)."""
    from orlojd.adapters.approvals import ApprovalState

    as_json = wants_json(output, as_json)
    if state != "all" and state not in {s.value for s in ApprovalState}:
        fail(f"unknown --state {state!r}", "use pending, approved, denied, expired or all")
    views = _approvals(db, state_dir).list_all(None if state == "all" else ApprovalState(state), limit)
    if as_json:
        typer.echo(json.dumps([v.as_json() for v in views], indent=2))
        return
    if not views:
        typer.echo(f"no {'' if state == 'all' else state + ' '}approvals")
        return
    typer.echo(f"{'ID':<16} {'STATE':<9} {'AGENT':<28} {'TOOL':<20} {'VOTES':<6} {'EXPIRES':<25} TASK")
    for v in views:
        votes = f"{sum(x.verdict == 'approve' for x in v.votes)}/{v.policy.required}"
        agent = v.agent.removeprefix("Agent/")
        expires = v.expires_at.isoformat()
        typer.echo(f"{v.id:<16} {v.state.value:<9} {agent:<28} {v.tool:<20} {votes:<6} {expires:<25} {v.task_id}")


@approvals_app.command("show")
def show_approval(
    approval_id: IdArgument,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text (= --format json)")] = False,
    output: FormatOption = "text",
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """One approval request: the exact call (tool, argument digest, redacted preview), rules and votes."""
    as_json = wants_json(output, as_json)
    view = _approvals(db, state_dir).get_one(approval_id)
    if view is None:
        fail(f"no approval {approval_id}", "list them: orlojd approvals list --state all")
    if as_json:
        typer.echo(json.dumps(view.as_json(), indent=2))
        return
    data = view.as_json()
    for key in (
        "id",
        "state",
        "task_id",
        "agent",
        "tool",
        "digest",
        "preview",
        "needs",
        "requested_by",
        "approvers",
        "required",
        "signed",
        "on_deny",
        "requested_at",
        "expires_at",
        "decided_at",
        "decision_reason",
    ):
        typer.echo(f"{key + ':':<17}{data[key] if data[key] is not None else '-'}")
    for vote in view.votes:
        signed = " (signed)" if vote.signed else ""
        typer.echo(
            f"vote:            {vote.approver} {vote.verdict}{signed} at {vote.at.isoformat()}: {vote.reason or ''}"
        )
