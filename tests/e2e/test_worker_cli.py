"""`orlojd worker` (scale-out on PostgreSQL), `orlojd task pause|resume` and the workers in
`orlojd status`, through the real entry point."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ORLOJD
from serve_harness import DEADLINE, POLL, clean_env

from orlojd.adapters import clock
from orlojd.adapters.queue import TaskQueue, TaskState
from orlojd.adapters.store import Store, sqlite_url
from orlojd.adapters.worker_registry import LOST_AFTER, WorkerRegistry, WorkerState


def poll(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL)


@pytest.mark.postgres
def test_a_worker_registers_runs_labelled_tasks_and_drains_on_sigterm(cli: Any, pg_url: str, tmp_path: Path) -> None:
    store = Store.open(pg_url)
    queue, registry = TaskQueue(store), WorkerRegistry(store)
    now = clock.now()
    wanted = queue.enqueue_run("Task/default/eu", "d", {}, now=now, labels={"region": "eu"})
    elsewhere = queue.enqueue_run("Task/default/us", "d", {}, now=now, labels={"region": "us"})
    assert wanted is not None and elsewhere is not None
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [ORLOJD, "worker", "--db", pg_url, "--id", "eu-1", "--capacity", "2", "--label", "region=eu"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**clean_env(), "ORLOJD_EXECUTOR": "noop"},
    )
    try:
        poll(lambda: queue.counts_all()[TaskState.SUCCEEDED] == 1, "the eu task to run")
        done = queue.get_one(wanted)
        assert done is not None and done.state is TaskState.SUCCEEDED and done.result == {"executor": "noop"}
        other = queue.get_one(elsewhere)
        assert other is not None and other.state is TaskState.PENDING, "the us task is not for this worker"
        (row,) = registry.list_all(clock.now(), LOST_AFTER)
        assert (row.id, row.state, row.capacity, row.labels, row.embedded) == (
            "eu-1",
            WorkerState.LIVE,
            2,
            {"region": "eu"},
            False,
        )

        status = json.loads(cli("status", "--db", pg_url, "--format", "json").stdout)
        assert [(w["id"], w["state"]) for w in status["workers"]] == [("eu-1", "live")]
        assert status["tasks"]["succeeded"] == 1 and status["tasks"]["pending"] == 1
        (unschedulable,) = json.loads(cli("task", "show", elsewhere, "--db", pg_url).stdout)["conditions"]
        assert unschedulable["type"] == "Unschedulable" and "--label region=us" in unschedulable["message"]
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=DEADLINE)
        log.close()
    assert code == 0, (tmp_path / "worker.log").read_text()
    (row,) = registry.list_all(clock.now(), LOST_AFTER)
    assert row.state is WorkerState.STOPPED
    store.close()


def test_worker_refuses_bad_input(cli: Any, tmp_path: Path) -> None:
    for args, words in [
        ((), "needs --db postgresql://"),
        (("--db", f"sqlite:///{tmp_path}/state.db"), "runs only against PostgreSQL"),
        (("--db", "postgresql://x@127.0.0.1:1/none", "--label", "region"), "--label 'region': use KEY=VALUE"),
        (("--db", "postgresql://x@127.0.0.1:1/none", "--lease", "soon"), "--lease"),
        (("--db", "postgresql://x@127.0.0.1:1/none", "--executor", "magic"), "unknown executor"),
        (("--db", "postgresql://x@127.0.0.1:1/none", "--capacity", "0"), "--capacity"),
    ]:
        done = cli("worker", *args, env={"ORLOJD_DB": ""})
        assert done.code != 0 and words in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert "on SQLite the workers live inside orlojd serve" in cli("worker", "--db", "sqlite:///x.db").stderr


def test_pause_and_resume_through_the_cli(cli: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    queue = TaskQueue(Store.open(sqlite_url(state)))
    task_id = queue.enqueue_run("Task/default/report", "d", {}, now=clock.now())
    assert task_id is not None
    where = ("--state-dir", str(state))

    paused = cli("task", "pause", task_id, "--request-id", "r1", *where)
    assert paused.code == 0 and f"paused {task_id} (request r1)" in paused.stdout
    shown = json.loads(cli("task", "show", task_id, *where).stdout)
    assert shown["paused"] is True and [c["type"] for c in shown["conditions"]] == ["Paused"]
    assert cli("task", "resume", task_id, "--request-id", "r2", *where).code == 0
    retried = cli("task", "pause", task_id, "--request-id", "r1", *where)
    assert retried.code == 0 and "already applied" in retried.stdout
    assert json.loads(cli("task", "show", task_id, *where).stdout)["paused"] is False, "the retried pause changed it"

    fresh = cli("task", "pause", task_id, *where)
    assert fresh.code == 0 and "(request " in fresh.stdout, "an id is made up and printed when none is given"
    for args, words in [(("task", "pause", "nope"), "no task 'nope'"), (("task", "resume", "nope"), "no task")]:
        done = cli(*args, *where)
        assert done.code == 1 and words in done.stderr
