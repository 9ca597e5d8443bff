"""Integration fixtures: ``db_url`` runs a test against both state stores.

sqlite -> a fresh ``sqlite:///<tmp_path>/state.db``; postgres -> a fresh database with a
random name on the local server (started first if it is not running), dropped afterwards.
The shared ``test`` database is never touched.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty state store URL: SQLite file or a throw-away PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    request.getfixturevalue("postgres_server")
    name = f"orlojd_test_{uuid.uuid4().hex}"
    assert name != "test"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
