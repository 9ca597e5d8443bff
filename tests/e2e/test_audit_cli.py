"""What happened is committed beside what was declared: `orlojd serve` notes every audit event
in signed git notes on the origin, a kill -9 loses none of them, and an auditor's fresh clone
checks them with `orlojd notes setup` and `orlojd audit verify|log`.

Real bare origin, clones and daemon subprocesses (tests/e2e/serve_harness.py); polls, never sleeps.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from manifests import CLERK_AGENT, OFFLINE_ENDPOINT
from serve_harness import Origin, Served, git, wait_for

from orlojd.core.audit_records import records_of

pytestmark = pytest.mark.e2e

REF = "refs/notes/orlojd/audit"
AGENT = CLERK_AGENT
TASK = """\
apiVersion: orloj.dev/v1
kind: Task
metadata:
  name: report
spec:
  agent: clerk
"""


def origin_lines(origin: Origin) -> list[str] | None:
    """Every audit line in the origin's notes (None while it has none)."""
    tip = subprocess.run(
        ["git", "-C", str(origin.bare), "rev-parse", "--verify", "--quiet", REF], capture_output=True, text=True
    ).stdout.strip()
    if not tip:
        return None
    listing = git(origin.bare, "ls-tree", "-r", tip)
    lines: list[str] = []
    for entry in listing.splitlines():
        blob = entry.split()[2]
        lines += [line for line in git(origin.bare, "cat-file", "-p", blob).splitlines() if line]
    return lines


def store_event_ids(served: Served) -> set[int]:
    return {int(r[0]) for r in served.store.rows("SELECT id FROM governance_events") or []}


def test_kill_9_loses_no_audit_record_and_a_fresh_clone_verifies_them(cli: Any, tmp_path: Path) -> None:
    origin = Origin.create(tmp_path)
    origin.write("models/offline.yaml", OFFLINE_ENDPOINT)
    origin.write("agents/clerk.yaml", AGENT)
    origin.write("orlojd.yaml", "workers:\n  size: 1\n  lease: 5s\n")
    origin.commit("base")
    origin.push()
    # A drain that never comes while it runs: the events stay in the outbox (the store) only.
    with Served(tmp_path, origin.url, "--audit-every", "1h") as served:
        origin.write("tasks/report.yaml", TASK)
        head = origin.commit("a task")
        origin.push()
        served.wait_applied(head)
        wait_for(
            "the task to finish",
            lambda: served.store.rows("SELECT 1 FROM governance_events WHERE event = 'task_completed'") or None,
            explain=served.explain,
        )
        served.kill()  # kill -9: no shutdown flush
        written = store_event_ids(served)
        assert origin_lines(origin) is None, "nothing was noted before the kill"
        names = {r[0] for r in served.store.rows("SELECT event FROM governance_events") or []}
        assert {"reconcile_applied", "task_queued", "task_started", "task_completed"} <= names
        state_dir = served.state_dir

    with Served(tmp_path, origin.url, state_dir=state_dir, name="again") as again:

        def all_noted() -> list[str] | None:
            lines = origin_lines(origin)
            if lines is None:
                return None
            eids = {r.eid for r in records_of(lines)}
            return lines if written <= eids else None

        lines = wait_for("every event noted on the origin", all_noted, explain=again.explain)
    records = records_of(lines)
    eids = [r.eid for r in records]
    assert len(eids) == len(set(eids)), "no record twice"
    assert {r.w for r in records} == {records[0].w} and sorted(r.seq for r in records) == list(
        range(1, len(records) + 1)
    )
    completed = [r for r in records if r.event == "task_completed"]
    assert len(completed) == 1 and completed[0].revision == head

    # The auditor: a fresh clone gets no notes until `orlojd notes setup`; then verify and log.
    clone = tmp_path / "auditor"
    git(tmp_path, "clone", "--quiet", str(origin.bare), str(clone))
    assert git(clone, "for-each-ref", "refs/notes") == ""
    setup = cli("notes", "setup", "--repo", str(clone))
    assert setup.code == 0 and "remote.origin.fetch" in setup.stdout
    git(clone, "fetch", "--quiet", "origin")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'orlojd namespaces="git" {(state_dir / "audit_ed25519.pub").read_text().strip()}\n')
    verified = cli("audit", "verify", "--repo", str(clone), "--allowed-signers", str(signers), "--format", "json")
    assert verified.code == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] is True and report["records"] == len(records)
    log = cli("audit", "log", "--repo", str(clone), "--subject", f"task:{completed[0].subject[5:]}", "--format", "json")
    assert [json.loads(line)["event"] for line in log.stdout.splitlines()][-1] == "task_completed"

    # Someone without the key edits the notes: the unsigned commit is named, exit 1.
    git(clone, "notes", "--ref=orlojd/audit", "add", "-f", "-m", '{"forged":true}', head)
    forged = cli("audit", "verify", "--repo", str(clone), "--allowed-signers", str(signers))
    assert forged.code == 1 and "is not signed by an allowed key" in forged.stderr
