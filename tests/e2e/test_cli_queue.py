"""`orlojd task` and `orlojd dlq` through the real CLI, over a queue filled through the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orlojd.adapters.queue import TaskQueue
from orlojd.adapters.store import Store, sqlite_url

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def dead_lettered(state: Path) -> tuple[str, str]:
    """A queue with one dead-lettered task and one pending task; their ids."""
    queue = TaskQueue(Store.open(sqlite_url(state)))
    dead = queue.enqueue_run("Task/default/report", "sha256:a", {"topic": "x"}, now=NOW, max_attempts=1)
    pending = queue.enqueue_run("Task/default/other", "sha256:b", {}, now=NOW + timedelta(seconds=1))
    assert dead is not None and pending is not None
    claimed = queue.claim_one("worker-1", NOW, timedelta(seconds=30))
    assert claimed is not None and claimed.id == dead
    assert queue.fail_run(dead, "worker-1", claimed.fencing_token, NOW, "model timed out", None)
    return dead, pending


def listing(cli: Any, *args: str) -> list[dict[str, Any]]:
    done = cli(*args, "--json")
    assert done.code == 0, done.stderr
    return list(json.loads(done.stdout))


def test_dead_letter_round_trip(cli: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    dead, pending = dead_lettered(state)
    where = ("--state-dir", str(state))

    (entry,) = listing(cli, "dlq", "list", *where)
    assert entry["id"] == dead and entry["state"] == "dead_letter" and entry["last_error"] == "model timed out"
    shown = json.loads(cli("dlq", "show", dead, *where).stdout)
    assert shown["task_key"] == "Task/default/report" and shown["payload"] == {"topic": "x"}

    assert cli("dlq", "retry", dead, *where).code == 0
    assert listing(cli, "dlq", "list", *where) == []
    states = {t["id"]: t["state"] for t in listing(cli, "task", "list", *where)}
    assert states == {dead: "pending", pending: "pending"}

    assert cli("task", "cancel", pending, *where).code == 0
    assert {t["state"] for t in listing(cli, "task", "list", "--state", "cancelled", *where)} == {"cancelled"}


def test_purge_and_errors(cli: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    dead, _ = dead_lettered(state)
    where = ("--state-dir", str(state))
    assert "purged 1 dead-lettered task" in cli("dlq", "purge", *where).stdout
    assert cli("dlq", "show", dead, *where).code == 1
    for args, words in [
        (("dlq", "retry", "nope"), "not in the dead-letter queue"),
        (("task", "cancel", dead), "unknown or already finished"),
        (("task", "list", "--state", "sleeping"), "unknown state"),
        (("dlq", "purge", "--older-than", "soon"), "--older-than"),
    ]:
        done = cli(*args, *where)
        assert done.code == 1 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
