"""`orlojd audit verify`: are the audit notes of a repository intact, signed and complete?

Three checks, all by exit status or git's one-letter verdict, never by message text:

1. Every commit in the notes history (not only the tip; merges included) is signed by a key in
   the allowed_signers file: ``git log --format='%H %G?'`` with ``gpg.ssh.allowedSignersFile``
   set; only ``G`` (good and trusted) passes.
2. Every writer's chain is whole (``core.audit_records.verify_chains``): records grouped by
   writer and ordered by ``seq`` (so merges that reorder lines do not matter), each ``prev`` the
   hash of the record before, and the last one equal to the head anchored in the signed tip, so
   an edited, deleted, reordered or truncated record is found.
3. The ref was not rolled back: the tip verified last time (kept in the repository's git dir,
   ``orlojd/audit-verified``) must be an ancestor of (or equal to) the tip now.

The allowed_signers file is the one given, else ``audit.allowedSigners`` of orlojd.yaml, else
the daemon's own public key from its state folder (``audit_ed25519.pub``).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orlojd.adapters.gitrepo import run_git
from orlojd.adapters.notes import REF, read_notes
from orlojd.core.audit_records import ChainProblem, parse_heads, verify_chains
from orlojd.errors import ConfigError, GitError

VERIFIED_FILE = "orlojd/audit-verified"


@dataclass(frozen=True)
class Problem:
    kind: str  # "unsigned" | "chain" | "rollback"
    message: str
    commit: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    tip: str | None
    commits: int
    records: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(repo: Path, allowed_signers: Path, remember: bool = True) -> VerifyReport:
    """Check the notes of ``repo`` (see the module doc); remembers the tip when everything passed."""
    if not allowed_signers.is_file():
        raise ConfigError(
            f"allowed_signers file {allowed_signers} does not exist",
            "pass --allowed-signers, set audit.allowedSigners in orlojd.yaml, or run where the daemon's "
            "state folder is (its key is audit_ed25519.pub there)",
        )
    tip = _tip(repo)
    if tip is None:
        return VerifyReport(None, 0, 0)
    problems: list[Problem] = []
    letters = run_git(
        repo, "-c", f"gpg.ssh.allowedSignersFile={allowed_signers.resolve()}", "log", "--format=%H %G?", tip
    ).decode()
    commits = [line.split() for line in letters.splitlines() if line.strip()]
    for sha, letter in reversed(commits):  # oldest first: the first bad one is named first
        if letter != "G":
            problems.append(
                Problem("unsigned", f"notes commit {sha[:12]} is not signed by an allowed key ({letter})", sha)
            )
    message = run_git(repo, "log", "-1", "--format=%B", tip).decode()
    lines = [line for note in read_notes(repo).values() for line in note]
    try:
        heads = parse_heads(message)
    except ValueError as exc:  # a forged tip: reported with the rest, never a crash
        problems.append(Problem("chain", f"notes commit {tip[:12]} has malformed heads: {exc}", tip))
        heads = {}
    chain_problems: list[ChainProblem] = verify_chains(lines, heads)
    problems += [Problem("chain", p.message) for p in chain_problems]
    last = _remembered(repo)
    if last is not None and last != tip and not _is_ancestor(repo, last, tip):
        problems.append(
            Problem(
                "rollback",
                f"{REF} is at {tip[:12]}, which does not contain {last[:12]} verified before: "
                "the notes were rolled back or rewritten",
                tip,
            )
        )
    report = VerifyReport(tip, len(commits), len(lines), problems)
    if report.ok and remember:
        _remember(repo, tip)
    return report


def _tip(repo: Path) -> str | None:
    try:
        return run_git(repo, "rev-parse", "--verify", "--quiet", REF).decode().strip() or None
    except GitError:
        return None


def _is_ancestor(repo: Path, old: str, new: str) -> bool:
    done = subprocess.run(
        ["git", "-C", str(repo), "merge-base", "--is-ancestor", old, new], capture_output=True, check=False
    )
    return done.returncode == 0


def _state_file(repo: Path) -> Path:
    gitdir = Path(run_git(repo, "rev-parse", "--absolute-git-dir").decode().strip())
    return gitdir / VERIFIED_FILE


def _remembered(repo: Path) -> str | None:
    path = _state_file(repo)
    return path.read_text().strip() or None if path.is_file() else None


def _remember(repo: Path, tip: str) -> None:
    path = _state_file(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
        handle.write(tip + "\n")
    Path(handle.name).replace(path)


def daemon_allowed_signers(state_dir: Path, into: Path) -> Path:
    """An allowed_signers file trusting the daemon's own key (``audit_ed25519.pub`` in its state folder)."""
    public = state_dir / "audit_ed25519.pub"
    if not public.is_file():
        raise ConfigError(
            f"no allowed_signers given and no daemon key at {public}",
            "pass --allowed-signers FILE, or set audit.allowedSigners in orlojd.yaml",
        )
    into.write_text(f'orlojd namespaces="git" {public.read_text().strip()}\n')
    return into
