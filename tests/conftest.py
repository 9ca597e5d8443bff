"""Shared fixtures: real git repositories in tmp_path, the real CLI in a subprocess.

Tiers live in folders: tests/unit (pure core), tests/integration (real git, SQLite,
PostgreSQL), tests/e2e (the installed `orlojd` command). The full suite runs all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

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
