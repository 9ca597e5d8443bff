"""`orlojd serve` runs what is pushed: a Task queued on apply and run by the embedded workers,
a Task whose agent was deleted dead-lettered with a clear error, a standby that runs nothing.
Real bare origin, clone and daemon subprocess (tests/e2e/serve_harness.py); polls, never sleeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from manifests import CLERK_AGENT, OFFLINE_ENDPOINT
from serve_harness import Origin, Served, wait_for

pytestmark = pytest.mark.e2e

AGENT = CLERK_AGENT


def task(name: str, agent: str = "clerk") -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Task
metadata:
  name: {name}
spec:
  agent: {agent}
  input:
    question: how much?
"""


def tasks(served: Served) -> dict[str, tuple[str, str | None, str | None]]:
    """task_key -> (state, result, last_error), read straight from the daemon's store."""
    rows = served.store.rows("SELECT task_key, state, result, last_error FROM tasks") or []
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def state_of(served: Served, key: str, state: str) -> Any:
    found = tasks(served).get(key)
    return found if found is not None and found[0] == state else None


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    made = Origin.create(tmp_path)
    made.write("models/offline.yaml", OFFLINE_ENDPOINT)
    made.write("agents/clerk.yaml", AGENT)
    made.write("orlojd.yaml", "workers:\n  size: 2\n  lease: 3s\n")
    return made


def test_a_pushed_task_runs_once_on_the_embedded_workers(tmp_path: Path, origin: Origin) -> None:
    origin.commit("base")
    origin.push()
    with Served(tmp_path, origin.bare) as served:
        origin.write("tasks/report.yaml", task("report"))
        origin.commit("a task")
        origin.push()
        _, result, _ = wait_for(
            "the task to run", lambda: state_of(served, "Task/default/report", "succeeded"), explain=served.explain
        )
        ran = json.loads(result or "{}")
        assert (ran["executor"], ran["output"]) == ("agent", "done"), "the agent loop ran it on the scripted model"
        workers = served.store.rows("SELECT capacity, embedded, stopped_at FROM workers") or []
        assert [(w[0], bool(w[1]), w[2]) for w in workers] == [(2, True, None)], "workers.size from orlojd.yaml"
        origin.write("agents/clerk.yaml", AGENT + "  prompt: be brief\n")
        head = origin.commit("the agent changes, the task does not")
        origin.push()
        served.wait_applied(head)
    # Restarted at the same revision: the task is not run again (run-once per digest).
    with Served(tmp_path, origin.bare, state_dir=served.state_dir, name="again") as again:
        again.wait_applied(head)
        assert list(tasks(again)) == ["Task/default/report"]
        assert tasks(again)["Task/default/report"][0] == "succeeded"
    stopped = served.store.rows("SELECT stopped_at FROM workers") or []
    assert stopped and all(row[0] is not None for row in stopped), "the pool marks itself stopped on SIGTERM"


def test_a_task_deleted_from_git_before_it_ran_is_cancelled(tmp_path: Path, origin: Origin) -> None:
    origin.write("orlojd.yaml", "prune:\n  enabled: true\n  maxDeletePercent: 100\nworkers:\n  size: 0\n")
    origin.write("tasks/report.yaml", task("report"))
    origin.commit("a task, no workers")
    origin.push()
    with Served(tmp_path, origin.bare) as served:
        wait_for("the run to queue", lambda: state_of(served, "Task/default/report", "pending"), explain=served.explain)
        (origin.work / "tasks/report.yaml").unlink()
        gone = origin.commit("the task is deleted")
        origin.push()
        served.wait_applied(gone)
        _, _, reason = wait_for(
            "the cancel", lambda: state_of(served, "Task/default/report", "cancelled"), explain=served.explain
        )
    assert reason == f"Task/report cancelled: deleted from git at {gone[:12]}"


SCHEDULE = """\
apiVersion: orloj.dev/v1
kind: TaskSchedule
metadata:
  name: every-minute
spec:
  taskRef: digest
  schedule: "* * * * *"
  timeZone: Europe/Prague
  startingDeadlineSeconds: 120
"""


def test_a_pushed_schedule_fires_its_current_slot_once_across_a_restart(tmp_path: Path, origin: Origin) -> None:
    origin.write("tasks/digest.yaml", task("digest").replace("spec:\n", "spec:\n  mode: template\n"))
    origin.write("schedules/every-minute.yaml", SCHEDULE)
    head = origin.commit("a schedule")
    origin.push()
    key = "TaskSchedule/default/every-minute"

    def runs(served: Served) -> list[tuple[str, str]]:
        return [
            (r[0], r[1]) for r in served.store.rows("SELECT digest, state FROM tasks WHERE task_key = :k", k=key) or []
        ]

    with Served(tmp_path, origin.bare) as served:
        wait_for(
            "a slot's run to succeed",
            lambda: any(s == "succeeded" for _, s in runs(served)) or None,
            explain=served.explain,
        )
        first = runs(served)
    with Served(tmp_path, origin.bare, state_dir=served.state_dir, name="again") as again:
        again.wait_applied(head)
        after = runs(again)
    digests = [d for d, _ in after]
    assert len(digests) == len(set(digests)), "a slot fired twice"
    assert first[0][0] in digests and first[0][0].startswith("slot:20")
    assert len(after) <= len(first) + 2, "a restart fires at most the slots that came due meanwhile"
