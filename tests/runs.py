"""Applying manifests from a real git repository and claiming a run of an agent: what several test modules share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import GitRepo

from orlojd.adapters.queue import ClaimedTask, TaskQueue
from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.core.runs import run_parameters
from orlojd.engine.applying import apply_revision
from orlojd.engine.workspace import open_workspace


def apply_files(repo: GitRepo, store: Store, files: dict[str, str]) -> str:
    """Write ``files``, commit them and apply the commit; its revision."""
    for path, text in files.items():
        repo.write(path, text)
    revision = repo.commit("manifests")
    apply_revision(open_workspace(repo.path, store.url), store, "HEAD")
    return revision


def claim_run(store: Store, agent: str, task_input: dict[str, Any] | None = None, name: str = "t") -> ClaimedTask:
    """A run of the applied Agent ``agent`` (namespace default) queued as Task ``name`` and claimed by ``w1``."""
    agent_key = ResourceKey("Agent", "default", agent)
    body = {
        "apiVersion": "orloj.dev/v1",
        "kind": "Task",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"agent": agent, "mode": "template", "input": task_input or {}},
    }
    agent_body = store.inventory_bodies_some(keys=[agent_key])[agent_key]
    key = ResourceKey("Task", "default", name)
    now = datetime.now(UTC)
    queue = TaskQueue(store)
    parameters = run_parameters(key, body, agent_body, store.applied_revision_one() or "")
    queue.enqueue_run(str(key), f"d-{name}", now=now, **parameters.enqueue_options(now))
    claimed = queue.claim_one("w1", now, timedelta(seconds=60))
    assert claimed is not None
    return claimed
