"""Harness for the `orlojd serve` end-to-end tests.

``Origin``: a bare repository (``git init --bare``) and a working clone that commits and
pushes to it. ``Served``: ``orlojd serve`` as a real subprocess with its own state folder
(and a free port when it listens), stdout and stderr in a log file under tmp_path,
stopped with SIGTERM on exit. ``StoreView`` reads the state store directly with plain
SQL (SQLite or PostgreSQL), never migrating it, so a test cannot race the daemon's own
migration. Every wait polls with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest
from conftest import GIT_ENV, ORLOJD
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from orlojd.adapters.store import normalise_url

DEADLINE = 30.0  # generous: a daemon start (imports, migrations) takes ~2 s on an idle machine
POLL = 0.03
STOP_GRACE = 15.0
_INHERITED_NOISE = ("ORLOJD_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_", "CREDENTIALS_DIRECTORY")

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The test's environment without settings that would change the daemon (ORLOJD_*, systemd)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_NOISE)}
    return {**env, **GIT_ENV}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=clean_env(), check=False)
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"
    return done.stdout.strip()


def wait_for(
    what: str, probe: Callable[[], T | None], deadline: float = DEADLINE, explain: Callable[[], str] = str
) -> T:
    """Call ``probe`` every POLL seconds until it returns something other than None/False."""
    end = time.monotonic() + deadline
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:.0f}s waiting for {what}\n{explain()}")
        time.sleep(POLL)


# -- the repository --------------------------------------------------------------------------------


@dataclass
class Origin:
    """A bare origin and a working clone; ``commit`` then ``push`` is how a deploy starts."""

    bare: Path
    work: Path

    @classmethod
    def create(cls, folder: Path) -> Origin:
        bare, work = folder / "origin.git", folder / "work"
        git(folder, "init", "--quiet", "--bare", "--initial-branch", "main", str(bare))
        git(folder, "init", "--quiet", "--initial-branch", "main", str(work))
        git(work, "remote", "add", "origin", str(bare))
        return cls(bare, work)

    @property
    def url(self) -> str:
        return self.bare.as_uri()  # file:///...: the daemon treats it as remote (mirror + ls-remote)

    def write(self, rel: str, content: str) -> None:
        target = self.work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)

    def commit(self, message: str, signing_key: Path | None = None) -> str:
        git(self.work, "add", "--all")
        if signing_key is None:
            git(self.work, "commit", "--quiet", "--allow-empty", "--no-gpg-sign", "-m", message)
        else:
            signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={signing_key}"]
            git(self.work, *signing, "commit", "--quiet", "--allow-empty", "-S", "-m", message)
        return git(self.work, "rev-parse", "HEAD")

    def push(self) -> None:
        git(self.work, "push", "--quiet", "origin", "main")


# -- the state store, read directly -------------------------------------------------------------------


class StoreView:
    """Read-only SQL on the daemon's store; None while the database or its tables do not exist yet."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self._sqlite_file = Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None
        self._engine: Engine | None = None

    def _engine_now(self) -> Engine | None:
        if self._engine is None:
            if self._sqlite_file is not None and not self._sqlite_file.exists():
                return None  # never create the file the daemon is about to create and migrate
            self._engine = create_engine(self.url, poolclass=NullPool)
        return self._engine

    def rows(self, sql: str, **params: Any) -> list[Any] | None:
        engine = self._engine_now()
        if engine is None:
            return None
        try:
            with engine.connect() as connection:
                return list(connection.execute(text(sql), params).all())
        except SQLAlchemyError:
            return None  # not migrated yet, or locked for a moment

    def execute(self, sql: str, **params: Any) -> int:
        """A write in its own transaction (the drift test edits the store behind the daemon's back)."""
        engine = self._engine_now()
        assert engine is not None, f"no store at {self.url}"
        with engine.begin() as connection:
            return int(connection.execute(text(sql), params).rowcount)

    def meta(self, key: str) -> str | None:
        found = self.rows("SELECT value FROM store_meta WHERE key = :key", key=key)
        return found[0][0] if found else None

    def applied_revision(self) -> str | None:
        return self.meta("applied_revision")

    def source_status(self) -> dict[str, Any] | None:
        raw = self.meta("source_status")
        return json.loads(raw) if raw else None

    def history(self) -> list[dict[str, Any]]:
        """Newest first, as `orlojd status` shows it."""
        found = self.rows("SELECT revision, result, summary FROM reconcile_history ORDER BY id DESC") or []
        return [{"revision": r[0], "result": r[1], "summary": json.loads(r[2])} for r in found]

    def inventory(self) -> dict[tuple[str, str, str], tuple[str, str]]:
        """(kind, namespace, name) -> (digest, body as stored)."""
        found = self.rows("SELECT kind, namespace, name, digest, body FROM inventory") or []
        return {(r[0], r[1], r[2]): (r[3], r[4]) for r in found}

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def condition(status: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The source condition of type ``kind`` (Ready, Reconciling, Stalled) if it is True."""
    for item in (status or {}).get("conditions", []):
        if item.get("type") == kind and item.get("status") == "True":
            return dict(item)
    return None


# -- the daemon --------------------------------------------------------------------------------------


class Served:
    """``orlojd serve`` in a subprocess: a context manager that stops it with SIGTERM on exit."""

    def __init__(
        self,
        tmp_path: Path,
        repo: str | Path,
        *args: str,
        state_dir: Path | None = None,
        db: str | None = None,
        listen: bool = False,
        name: str = "serve",
    ) -> None:
        self.repo = str(repo)
        self.state_dir = state_dir or tmp_path / f"{name}-state"
        self.db = db
        self.port = free_port() if listen else None
        self.log_path = tmp_path / f"{name}.log"
        self.cwd = tmp_path
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.store = StoreView(db or f"sqlite:///{self.state_dir.resolve() / 'state.db'}")

    # -- life cycle

    def __enter__(self) -> Served:
        command = [ORLOJD, "serve", "--repo", self.repo, "--state-dir", str(self.state_dir)]
        if self.db:
            command += ["--db", self.db]
        if self.port is not None:
            command += ["--listen", f"127.0.0.1:{self.port}"]
        command += list(self.args)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=clean_env(), cwd=self.cwd
            )
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.running:
                self.terminate()
        finally:
            self.store.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM, then the exit code; SIGKILL (and a test failure) if it outlives ``grace``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"orlojd serve ignored SIGTERM for {grace:.0f}s\n{self.explain()}")

    def kill(self) -> None:
        """SIGKILL: no drain, no lock release, no last log line."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=STOP_GRACE)

    # -- observation

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def explain(self) -> str:
        code = None if self.process is None else self.process.poll()
        return (
            f"daemon exit code: {code}\napplied revision: {self.store.applied_revision()}\n"
            f"source status: {json.dumps(self.store.source_status(), indent=1)}\n"
            f"history: {self.store.history()}\n--- {self.log_path.name} ---\n{self.log()[-4000:]}"
        )

    def _alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"orlojd serve exited early\n{self.explain()}")

    def wait_applied(self, revision: str, deadline: float = DEADLINE) -> None:
        """Until the store's applied revision is ``revision``."""

        def probe() -> bool:
            self._alive()
            return self.store.applied_revision() == revision

        wait_for(f"{revision[:12]} applied", probe, deadline, self.explain)

    def wait_condition(
        self, kind: str, reason: str, revision_seen: str | None = None, deadline: float = DEADLINE
    ) -> dict[str, Any]:
        """Until the source condition ``kind`` is True with ``reason`` (for the tip ``revision_seen``); returns it."""

        def probe() -> dict[str, Any] | None:
            self._alive()
            status = self.store.source_status()
            found = condition(status, kind)
            if found is None or found["reason"] != reason:
                return None
            if revision_seen is not None and (status or {}).get("revision_seen") != revision_seen:
                return None
            return found

        return wait_for(f"source condition {kind}/{reason}", probe, deadline, self.explain)

    def wait_log(self, needle: str, deadline: float = DEADLINE) -> str:
        def probe() -> str | None:
            log = self.log()
            if needle in log:
                return log
            self._alive()
            return None

        return wait_for(f"{needle!r} in {self.log_path.name}", probe, deadline, self.explain)

    def status_json(self) -> dict[str, Any]:
        """`orlojd status --format json` on this daemon's store, through the real CLI."""
        where = ["--db", self.db] if self.db else ["--state-dir", str(self.state_dir)]
        done = subprocess.run(
            [ORLOJD, "status", *where, "--format", "json"],
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data
