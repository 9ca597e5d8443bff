"""Shared fixtures: real git repositories in tmp_path, the real CLI in a subprocess, both stores.

Tiers live in folders: tests/unit (pure core), tests/integration (real git, SQLite,
PostgreSQL), tests/e2e (the installed `orlojd` command). The full suite runs all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from pools import DEADLINE as POOL_DRAIN_DEADLINE
from psycopg import sql

from orlojd.adapters.queue import TaskQueue
from orlojd.adapters.store import Store
from orlojd.engine.workers import WorkerPool

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CONFORMANCE = SHARED / "conformance" / "orloj"
EXAMPLES = ROOT / "examples"
ORLOJD = str(Path(sys.executable).with_name("orlojd"))

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity; return stdout, fail the test on error."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"
    return done.stdout.strip()


@dataclass
class GitRepo:
    """A real repository in a temporary folder, with helpers to write and commit files."""

    path: Path

    def write(self, rel: str, text: str | bytes) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)
        return target

    def remove(self, rel: str) -> None:
        (self.path / rel).unlink()

    def commit(self, message: str = "change") -> str:
        git(self.path, "add", "--all")
        git(self.path, "commit", "--quiet", "--allow-empty", "--no-gpg-sign", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def git(self, *args: str) -> str:
        return git(self.path, *args)


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch", "main")
    return GitRepo(path)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """The real `orlojd` entry point in a subprocess."""
    done = subprocess.run(
        [ORLOJD, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli() -> Callable[..., Result]:
    assert shutil.which(ORLOJD) or Path(ORLOJD).exists(), "orlojd is not installed: run scripts/bootstrap.sh"
    return run_cli


@pytest.fixture
def conformance_dir() -> Path:
    assert CONFORMANCE.is_dir(), f"conformance corpus missing at {CONFORMANCE}"
    return CONFORMANCE


# -- state stores: `db_url` runs a test on SQLite and on a throw-away PostgreSQL database --------------

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
PG_START_DEADLINE = 30.0
PG_POLL_INTERVAL = 0.1


def _pg_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=2) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def _start_postgres() -> str:
    """Start the local cluster with pg_ctlcluster; return what it said (for the failure message)."""
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        return "no cluster under /etc/postgresql"
    done = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    # Another xdist worker may have started it a moment ago: "already running" is fine, the poll decides.
    return f"exit {done.returncode}: {done.stdout.strip()} {done.stderr.strip()}"


def ensure_postgres() -> None:
    """Make sure the server accepts connections, starting it if needed; poll with a deadline, never a fixed sleep."""
    if _pg_reachable():
        return
    said = _start_postgres()
    deadline = time.monotonic() + PG_START_DEADLINE
    while time.monotonic() < deadline:
        if _pg_reachable():
            return
        time.sleep(PG_POLL_INTERVAL)
    pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} did not accept connections within {PG_START_DEADLINE}s ({said})")


@pytest.fixture(scope="session")
def postgres_server() -> None:
    ensure_postgres()


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A throw-away PostgreSQL database with a random name, dropped afterwards; its URL."""
    ensure_postgres()
    name = f"orlojd_test_{uuid.uuid4().hex}"
    assert name != "test"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty state store URL: SQLite file or a throw-away PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database only (for what runs only on PostgreSQL, such as `orlojd worker`)."""
    with fresh_postgres_database() as url:
        yield url


# -- an opened store (both kinds, via ``db_url``), its task queue, worker pools drained at teardown ------


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store.open(db_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def queue(store: Store) -> TaskQueue:
    return TaskQueue(store)


@pytest.fixture
def pools() -> Iterator[list[WorkerPool]]:
    """Pools a test starts (``pools.start_pool``); drained at teardown so no thread outlives its store."""
    started: list[WorkerPool] = []
    yield started
    for pool in started:
        assert pool.drain(POOL_DRAIN_DEADLINE), "a worker thread did not stop"
