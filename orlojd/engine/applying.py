"""Apply: carry out a revision's plan against the store, in stage order; idempotent.

``apply_revision`` refuses when the plan has errors (invalid manifests, circuit
breaker, literal secrets) or when a saved plan no longer matches (head moved, or the
inventory changed since it was made). ``commit_manifest`` is ``apply -f``: the file
goes into the repository as a commit first, so git stays the system of record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orlojd.adapters import clock, gitrepo
from orlojd.adapters.store import Store, Upsert
from orlojd.core.conditions import applied_conditions
from orlojd.core.desired import load_file
from orlojd.core.keys import ResourceKey
from orlojd.core.plan import Action
from orlojd.core.runs import agent_key, run_parameters
from orlojd.engine.planning import PlannedRevision, Planner
from orlojd.engine.workspace import Workspace, fingerprint
from orlojd.errors import GitError, OrlojError
from orlojd.render import FORMAT_VERSION
from orlojd.sources import load_revision


class ApplyRefused(OrlojError):
    """The plan cannot be applied as it stands; nothing was written."""


@dataclass(frozen=True)
class ApplyResult:
    planned: PlannedRevision
    written: bool


def check_saved_plan(saved_path: Path, planned: PlannedRevision) -> None:
    """Refuse when the saved plan's head or inventory fingerprint has moved."""
    try:
        saved: dict[str, Any] = json.loads(saved_path.read_text())
    except (OSError, ValueError) as exc:
        raise ApplyRefused(
            f"cannot read saved plan {saved_path}: {exc}", "write one with: orlojd plan --out FILE"
        ) from None
    if saved.get("format_version") != FORMAT_VERSION or saved.get("mode") != "inventory":
        raise ApplyRefused(
            f"{saved_path} is not a saved inventory plan (format_version {FORMAT_VERSION})",
            "write one with: orlojd plan --out FILE",
        )
    report = planned.report
    if saved.get("head") != report.head:
        raise ApplyRefused(
            f"the saved plan is for {str(saved.get('head'))[:12]}, but the revision is now {report.head[:12]}",
            "make a new plan and review it",
        )
    if saved.get("inventory_fingerprint") != report.fingerprint:
        raise ApplyRefused(
            "the applied inventory changed since the plan was saved (another apply ran)",
            "make a new plan and review it",
        )


def apply_revision(
    ws: Workspace,
    store: Store,
    rev: str,
    confirm_prune: bool = False,
    saved_plan: Path | None = None,
    planner: Planner | None = None,
    hold: frozenset[ResourceKey] = frozenset(),
    restore: bool = False,
) -> ApplyResult:
    """Apply the commit ``rev``; return whether anything was written.

    ``hold`` names objects not to write this time (the daemon's drift-loop breaker).
    ``restore`` (``orlojd state rebuild``): write the inventory only: no Task is queued (they ran
    before) and no history or audit event is recorded (those come back from the notes).
    """
    started = clock.now()
    planned = (planner or Planner(ws, store)).plan(rev, confirm_prune)
    report = planned.report
    if report.plan.errors:
        raise ApplyRefused("apply refused:\n  " + "\n  ".join(report.plan.errors))
    if saved_plan is not None:
        check_saved_plan(saved_plan, planned)
    objects = planned.desired.objects
    upserts = [
        Upsert(c.key, objects[c.key].digest, objects[c.key].body)
        for c in report.plan.changes
        if c.action in (Action.CREATED, Action.CONFIGURED) and c.key not in hold
    ]
    deletes = [c.key for c in report.plan.changes if c.action is Action.DELETED and c.key not in hold]
    if not upserts and not deletes and report.base == report.head:
        return ApplyResult(planned, False)
    now = clock.now()
    stamp = now.isoformat().replace("+00:00", "Z")
    conditions = {u.key: applied_conditions(0, report.head, stamp) for u in upserts}
    summary = {**report.plan.summary, "widening": report.widening}
    after = dict(planned.digests)
    after.update((u.key, u.digest) for u in upserts)
    for key in deletes:
        after.pop(key, None)
    # Queue first: if recording the apply then fails, the retry re-plans the same changes and the
    # queue's (task, digest) uniqueness makes the second enqueue a no-op. Nothing is lost either way.
    author = _author(ws, report.head) if not restore and any(u.key.kind == "Task" for u in upserts) else None
    if not restore:
        enqueue_tasks(store, planned, upserts, now, author)
    store.apply_run(
        report.head,
        upserts,
        deletes,
        conditions,
        summary,
        started,
        now,
        fingerprint(after, report.head),
        history=not restore,
    )
    cancel_deleted_tasks(store, deletes, report.head, now)  # after: a failed apply cancels nothing
    return ApplyResult(planned, True)


def _author(ws: Workspace, commit: str) -> str | None:
    try:
        return gitrepo.commit_author(ws.repo, commit) or None
    except GitError:
        return None


def enqueue_tasks(
    store: Store, planned: PlannedRevision, upserts: list[Upsert], now: datetime, requested_by: str | None = None
) -> list[str]:
    """Queue a run of every applied Task with ``mode: run``: once per manifest digest, ever.

    ``requested_by`` (the author of the commit applied) travels in the payload: the person who
    may not approve this run's calls.

    The queue's (task, digest) uniqueness makes this run-once across applies and restarts:
    re-applying the same Task queues nothing; changing it queues one new run.
    """
    from orlojd.adapters.queue import TaskQueue

    queue: TaskQueue | None = None
    queued: list[str] = []
    for item in upserts:
        spec = item.body.get("spec", {})
        if item.key.kind != "Task" or spec.get("mode") != "run" or spec.get("suspend"):
            continue
        queue = queue or TaskQueue(store)
        agent = agent_key(item.key, spec)
        agent_object = None if agent is None else planned.desired.objects.get(agent)
        parameters = run_parameters(
            item.key,
            item.body,
            None if agent_object is None else agent_object.body,
            planned.report.head,
            extra=None if requested_by is None else {"requested_by": requested_by},
        )
        task_id = queue.enqueue_run(str(item.key), item.digest, now=now, **parameters.enqueue_options(now))
        if task_id is not None:
            queued.append(task_id)
    return queued


def cancel_deleted_tasks(store: Store, deletes: list[ResourceKey], revision: str, now: datetime) -> int:
    """Cancel the unfinished runs of Tasks (and TaskSchedules) pruned from git: what is gone does not run."""
    from orlojd.adapters.queue import TaskQueue

    gone = [k for k in deletes if k.kind in ("Task", "TaskSchedule")]
    if not gone:
        return 0
    queue = TaskQueue(store)
    reason = f"cancelled: deleted from git at {revision[:12]}"
    return sum(queue.cancel_key_run(str(key), now, f"{key.short} {reason}") for key in gone)


def _target_path(ws: Workspace, file: Path) -> str:
    """Where in the repository (relative to the manifests folder) the file's objects belong."""
    if not file.is_file():
        raise OrlojError(f"{file} does not exist", "pass the manifest file to commit and apply")
    result = load_file(file.name, file.read_bytes(), file.stat().st_size)
    errors = [d for d in result.diagnostics if d.is_error]
    if errors:
        raise ApplyRefused(f"{file} is invalid; nothing was committed:\n  " + "\n  ".join(d.format() for d in errors))
    if not result.objects:
        raise ApplyRefused(f"{file} holds no manifest")
    head, snapshot = load_revision(ws.path, "HEAD", resolve=False)
    homes = {head.objects[o.key].file for o in result.objects if o.key in head.objects}
    if len(homes) > 1:
        raise ApplyRefused(
            f"the objects in {file} live in several files: {', '.join(sorted(homes))}",
            "edit those files in git instead",
        )
    if homes:
        home = homes.pop()
        declared = [k for k, lo in head.objects.items() if lo.file == home]
        if len(declared) > len(result.objects):
            raise ApplyRefused(
                f"{home} declares more objects than {file}; replacing it would delete them",
                f"edit {home} in git instead",
            )
        return home[len(snapshot.display) :]
    first = result.objects[0].key
    plural = first.kind.lower()[:-1] + "ies" if first.kind.endswith("y") else first.kind.lower() + "s"
    folder = plural if first.namespace == "default" else f"{first.namespace}/{plural}"
    return f"{folder}/{first.name}.yaml" if len(result.objects) == 1 else file.name


def commit_manifest(ws: Workspace, file: Path) -> str:
    """``apply -f``: write the manifest into the repository and commit it; return the commit id."""
    relative = _target_path(ws, file)
    folder = ws.path if ws.path.is_dir() else ws.path.parent
    target = folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(file.read_bytes())
    inside = str(target.resolve().relative_to(ws.repo.resolve()))
    result = load_file(file.name, file.read_bytes())
    names = ", ".join(o.key.short for o in result.objects)
    gitrepo.run_git(ws.repo, "add", "--", inside)
    staged = gitrepo.run_git(ws.repo, "diff", "--cached", "--name-only", "--", inside).strip()
    if staged:
        gitrepo.run_git(
            ws.repo,
            *gitrepo.identity_args(ws.repo, "orlojd"),
            "commit",
            "--quiet",
            "--no-gpg-sign",
            "-m",
            f"orlojd apply -f: {names}",
            "--",
            inside,
        )
    return gitrepo.run_git(ws.repo, "rev-parse", "HEAD").decode().strip()
