"""`orlojd demo`: the whole story on embedded defaults, in a throwaway folder, offline.

``orlojd init`` a repository (an Agent, its Tools, the offline scripted model, a Policy and a Task), push
it to a bare "origin", start ``orlojd serve`` on the origin (a real subprocess). The Task runs on the
scripted model: scan-documents is allowed and runs, flag-issues waits for approval (shown with
``orlojd approvals list --format json``, released with ``orlojd approve``), export-analytics was never
granted and is denied (the Policy's ``onDeny: return_to_model`` hands the denial back, the model finishes).
Then a pushed change is applied, ``orlojd task show`` gives the result and its token usage, the auditor
fetches the signed notes and reads them with ``orlojd audit log``, and ``orlojd status`` ends it.
Every command shown is the real CLI, run as a subprocess. SQLite state: no key, no server, no network.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orlojd.adapters.gitrepo import identity_args, run_git
from orlojd.adapters.queue import TaskQueue, TaskState, TaskView
from orlojd.adapters.store import Store, sqlite_url
from orlojd.errors import OrlojError
from orlojd.scaffold import init_repository

AGENT_FILE = "agents/compliance-checker.yaml"
TASK_NAME = "check-q3-reports"
APPROVER = "reviewer@example.com"
DEADLINE = 60.0  # seconds any one step may take


class _Daemon:
    """The ``orlojd serve`` subprocess and a read-only view of its SQLite store."""

    def __init__(self, state: Path, process: subprocess.Popen[bytes]) -> None:
        self.state = state
        self.process = process
        self._store: Store | None = None

    def wait(self, what: str, check: Callable[[Store], bool]) -> float:
        """Seconds until ``check(store)`` holds; OrlojError at the deadline or when the daemon exits."""
        started = time.monotonic()
        while time.monotonic() < started + DEADLINE:
            if self.process.poll() is not None:
                raise OrlojError(f"orlojd serve exited with code {self.process.returncode}", self._log_hint())
            if self._store is None and (self.state / "state.db").exists():
                self._store = Store.open(sqlite_url(self.state))
            if self._store is not None and check(self._store):
                return time.monotonic() - started
            time.sleep(0.02)
        raise OrlojError(f"timed out waiting for {what}", self._log_hint())

    def task(self) -> TaskView | None:
        if self._store is None:
            return None
        found = [t for t in TaskQueue(self._store).list_all() if t.task_key.endswith(f"/{TASK_NAME}")]
        return found[0] if found else None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def _log_hint(self) -> str:
        return f"see {self.state}/serve.log"


def _task_in(daemon: _Daemon, *states: TaskState) -> Callable[[Store], bool]:
    def check(store: Store) -> bool:
        task = daemon.task()
        if task is not None and task.state in (TaskState.FAILED, TaskState.DEAD_LETTER) and task.state not in states:
            raise OrlojError(f"task {TASK_NAME} {task.state.value}: {task.last_error}", daemon._log_hint())
        return task is not None and task.state in states

    return check


def run_demo(folder: Path, say: Callable[[str], None], show_status: Callable[[Path], None]) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise OrlojError(f"{folder} already exists and is not empty", "pass a new folder")
    folder = folder.resolve()
    work, origin, state = folder / "agents-repo", folder / "origin.git", folder / "state"

    def orlojd(*args: str) -> str:
        """Run the real CLI; print the command and its output."""
        shown = " ".join(a if " " not in a else repr(a) for a in args)
        done = _cli(*args)
        say(f"$ orlojd {shown}")
        say(done.stdout.rstrip())
        if done.returncode != 0:
            raise OrlojError(f"orlojd {shown} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    first = init_repository(work)
    say(f"== orlojd init {work}  (commit {first[:12]}: an Agent, its Tools, the offline model, a Policy, a Task)")
    run_git(folder, "init", "--quiet", "--bare", str(origin))
    run_git(work, "remote", "add", "origin", str(origin))
    run_git(work, "push", "--quiet", "origin", "main")
    say(f"== git push origin main  ({origin})")
    state.mkdir(parents=True)
    log = (state / "serve.log").open("wb")
    command = [sys.executable, "-m", "orlojd", "serve", "--repo", str(origin), "--state-dir", str(state)]
    say(f"== orlojd serve --repo {origin} --state-dir {state}")
    daemon = _Daemon(state, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    try:
        seconds = daemon.wait("the first revision", lambda store: store.applied_revision_one() == first)
        say(f"   {first[:12]} applied {seconds:.2f}s after start; Task {TASK_NAME} queued")
        daemon.wait(f"{TASK_NAME} to ask for approval", _task_in(daemon, TaskState.WAITING_APPROVAL))
        say("   the model called scan-documents (allowed, ran), then flag-issues: write issue_tracker needs a person")
        pending = json.loads(orlojd("approvals", "list", "--format", "json", "--state-dir", str(state)))
        approval = pending[0]["id"]
        orlojd("approve", approval, "--as", APPROVER, "--reason", "finding checked", "--state-dir", str(state))
        daemon.wait(f"{TASK_NAME} to finish", _task_in(daemon, TaskState.SUCCEEDED))
        task = daemon.task()
        assert task is not None
        say("   re-run: flag-issues allowed (approval_granted); export-analytics denied (tool_not_granted),")
        say("   the denial went back to the model (onDeny: return_to_model), which finished")
        orlojd("task", "show", task.id, "--format", "text", "--state-dir", str(state))

        agent = work / AGENT_FILE
        agent.write_text(agent.read_text().replace("maxTokensPerMinute: 8000", "maxTokensPerMinute: 12000"))
        message = "Raise compliance-checker's token budget"
        run_git(work, *identity_args(work, "orlojd demo"), "commit", "--quiet", "--no-gpg-sign", "-am", message)
        second = run_git(work, "rev-parse", "HEAD").decode().strip()
        run_git(work, "push", "--quiet", "origin", "main")
        say(f"== git commit -am '{message}' && git push  (commit {second[:12]})")
        seconds = daemon.wait(f"{second[:12]} to be applied", lambda store: store.applied_revision_one() == second)
        say(f"   applied {seconds * 1000:.0f} ms after the push")

        say("== the audit trail: signed git notes, pushed to origin by the daemon")
        orlojd("notes", "setup", "--repo", str(work))
        trail = _wait_for_trail(work, task.id)
        say(f"$ git fetch origin && orlojd audit log --repo {work} --subject task:{task.id}")
        say(trail.rstrip())
        orlojd("audit", "verify", "--repo", str(work), "--state-dir", str(state))
        say(f"== orlojd status --state-dir {state}")
        show_status(state)
    finally:
        daemon.close()
        daemon.process.send_signal(signal.SIGTERM)
        try:
            daemon.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
        log.close()
    say(f"== stopped orlojd serve (exit {daemon.process.returncode}); everything is in {folder}")
    say(f"   next: orlojd plan {work} --state-dir {state}   (exit 0: nothing left to do)")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``orlojd`` CLI in a subprocess, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "orlojd", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def _wait_for_trail(work: Path, task_id: str) -> str:
    """``orlojd audit log`` for the task once its completion has been noted and pushed (fetched until then)."""
    started = time.monotonic()
    while time.monotonic() < started + DEADLINE:
        run_git(work, "fetch", "--quiet", "origin")
        done = _cli("audit", "log", "--repo", str(work), "--subject", f"task:{task_id}")
        if done.returncode == 0 and "task_completed" in done.stdout:
            return done.stdout
        time.sleep(0.2)
    raise OrlojError("the audit notes of the task did not reach origin in time", "see the daemon's serve.log")
