"""`orlojd demo`: the whole GitOps loop on embedded defaults, in a throwaway folder.

init a repository, push it to a bare "origin", start ``orlojd serve`` on the origin
(a real subprocess), commit and push a change, wait for the daemon to apply it and
show ``orlojd status``. SQLite state and the offline scripted model: no key, no server.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orlojd.adapters.gitrepo import identity_args, run_git
from orlojd.adapters.store import Store, sqlite_url
from orlojd.errors import OrlojError
from orlojd.scaffold import init_repository

AGENT_FILE = "agents/compliance-checker.yaml"


def _wait_applied(state: Path, commit: str, deadline: float, daemon: subprocess.Popen[bytes]) -> float:
    """Seconds until the store shows ``commit`` applied; OrlojError at the deadline."""
    started = time.monotonic()
    store: Store | None = None
    try:
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise OrlojError(f"orlojd serve exited with code {daemon.returncode}", f"see {state}/serve.log")
            if store is None and (state / "state.db").exists():
                store = Store.open(sqlite_url(state))
            if store is not None and store.applied_revision_one() == commit:
                return time.monotonic() - started
            time.sleep(0.02)
    finally:
        if store is not None:
            store.close()
    raise OrlojError(f"{commit[:12]} was not applied in time", f"see {state}/serve.log")


def run_demo(folder: Path, say: Callable[[str], None], show_status: Callable[[Path], None]) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise OrlojError(f"{folder} already exists and is not empty", "pass a new folder")
    folder = folder.resolve()
    work, origin, state = folder / "agents-repo", folder / "origin.git", folder / "state"
    first = init_repository(work)
    say(f"== orlojd init {work}  (commit {first[:12]})")
    run_git(folder, "init", "--quiet", "--bare", str(origin))
    run_git(work, "remote", "add", "origin", str(origin))
    run_git(work, "push", "--quiet", "origin", "main")
    say(f"== git push origin main  ({origin})")
    state.mkdir(parents=True)
    log = (state / "serve.log").open("wb")
    command = [sys.executable, "-m", "orlojd", "serve", "--repo", str(origin), "--state-dir", str(state)]
    say("== orlojd serve --repo " + str(origin) + " --state-dir " + str(state))
    daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        seconds = _wait_applied(state, first, time.monotonic() + 60, daemon)
        say(f"   first revision {first[:12]} applied {seconds:.2f}s after start")
        agent = work / AGENT_FILE
        agent.write_text(agent.read_text().replace("maxTokensPerMinute: 8000", "maxTokensPerMinute: 12000"))
        run_git(
            work,
            *identity_args(work, "orlojd demo"),
            "commit",
            "--quiet",
            "--no-gpg-sign",
            "-am",
            "Raise compliance-checker's token budget",
        )
        second = run_git(work, "rev-parse", "HEAD").decode().strip()
        pushed = time.monotonic()
        run_git(work, "push", "--quiet", "origin", "main")
        say(f"== git commit -am 'Raise ...budget' && git push  (commit {second[:12]})")
        seconds = _wait_applied(state, second, pushed + 60, daemon)
        say(f"   applied {seconds * 1000:.0f} ms after the push")
        say(f"== orlojd status --state-dir {state}")
        show_status(state)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
    say(f"== stopped orlojd serve (exit {daemon.returncode}); everything is in {folder}")
    say(f"   next: orlojd plan {work} --state-dir {state}   (exit 0: nothing left to do)")
