"""Apply queues a run of each applied Task with mode: run, once per manifest digest (run-once)."""

from __future__ import annotations

from pathlib import Path

from conftest import git

from orlojd.adapters.queue import TaskQueue
from orlojd.adapters.store import Store
from orlojd.engine.applying import apply_revision
from orlojd.engine.workspace import open_workspace
from orlojd.scaffold import init_repository


def queued(store: Store) -> list[tuple[str, str, int, int]]:
    return sorted((t.task_key, t.state.value, t.priority, t.max_attempts) for t in TaskQueue(store).list_all())


def test_apply_queues_run_tasks_once_per_digest(tmp_path: Path, db_url: str) -> None:
    repo = tmp_path / "agents"
    init_repository(repo)
    ws = open_workspace(repo, db_url)
    store = Store.open(db_url)
    try:
        apply_revision(ws, store, "HEAD")
        # The demo's run Task is queued with its priority and the agent's maxAttempts; the template is not.
        assert queued(store) == [("Task/default/check-q3-reports", "pending", 2, 3)]

        apply_revision(ws, store, "HEAD")  # same revision again
        agent = repo / "agents" / "compliance-checker.yaml"
        agent.write_text(agent.read_text().replace("maxTokensPerMinute: 8000", "maxTokensPerMinute: 9000"))
        git(repo, "commit", "--quiet", "-am", "budget")
        apply_revision(ws, store, "HEAD")  # another object changed, the Task did not
        assert len(queued(store)) == 1

        task = repo / "tasks" / "check-q3-reports.yaml"
        task.write_text(task.read_text().replace("reports/2026-q3", "reports/2026-q4"))
        git(repo, "commit", "--quiet", "-am", "next quarter")
        apply_revision(ws, store, "HEAD")  # the Task changed: one new run
        assert [t[0] for t in queued(store)] == ["Task/default/check-q3-reports"] * 2
    finally:
        store.close()
