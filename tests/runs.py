"""Applying manifests from a real git repository and claiming a run of an agent: what several test modules share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import GitRepo

from orlojd.adapters.queue import ClaimedTask, TaskQueue
from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.core.runs import agent_key, run_parameters
from orlojd.engine.applying import apply_revision
from orlojd.engine.workspace import open_workspace


def apply_files(repo: GitRepo, store: Store, files: dict[str, str], message: str = "manifests") -> str:
    """Write ``files``, commit them and apply the commit; its revision."""
    for path, text in files.items():
        repo.write(path, text)
    revision = repo.commit(message)
    apply_revision(open_workspace(repo.path, store.url), store, "HEAD")
    return revision


def claim_run(
    store: Store,
    agent: str | None = None,
    task_input: dict[str, Any] | None = None,
    name: str = "t",
    *,
    spec: dict[str, Any] | None = None,
    now: datetime | None = None,
    revision: str | None = None,
) -> ClaimedTask:
    """A run of the applied Agent ``agent`` (or of what ``spec`` names: ``{"system": ..., "maxTurns": ...}``),
    namespace default, queued as Task ``name`` at ``now`` (default: the wall clock) and claimed by ``w1``."""
    now = now or datetime.now(UTC)
    target = {} if agent is None else {"agent": agent}
    spec = {**target, **(spec or {}), "mode": "template", "input": task_input or {}}
    key = ResourceKey("Task", "default", name)
    body = {
        "apiVersion": "orloj.dev/v1",
        "kind": "Task",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }
    member = agent_key(key, spec)
    agent_body = None if member is None else store.inventory_bodies_some(keys=[member])[member]
    applied = revision if revision is not None else store.applied_revision_one() or ""
    parameters = run_parameters(key, body, agent_body, applied)
    queue = TaskQueue(store)
    task_id = queue.enqueue_run(str(key), f"d-{name}", now=now, **parameters.enqueue_options(now))
    claimed = queue.claim_one("w1", now, timedelta(seconds=60))
    assert claimed is not None and claimed.id == task_id
    return claimed
