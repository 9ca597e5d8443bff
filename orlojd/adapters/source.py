"""Where desired state comes from: a local repository (watched) or a remote URL (polled).

``GitSource`` answers one question, "what is the tip of the tracked branch now?", and
makes that commit readable locally. A local repository, bare or not, is read in
place and watched with watchfiles on its refs and its ``packed-refs`` file (a ref that
``git pack-refs`` or gc moved lives only there). A remote URL is mirrored into the
state folder; ``git ls-remote`` is polled and ``git fetch`` runs only when the tip
moved. Every git failure is a ``GitError``, which the daemon treats as transient.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orlojd.adapters.gitrepo import run_git
from orlojd.errors import GitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Location:
    """The repository orlojd reads commits from, and the folder of manifests inside it."""

    repo: Path
    gitdir: Path
    bare: bool
    remote: str | None


def _is_url(text: str) -> bool:
    return "://" in text or (":" in text and not Path(text).exists() and "@" in text.split(":", 1)[0])


class GitSource:
    """The tracked branch of one repository: its tip, made readable locally."""

    def __init__(self, repo: str, branch: str, state_dir: Path) -> None:
        self.branch = branch
        self.ref = f"refs/heads/{branch}"
        if _is_url(repo):
            mirror = state_dir / "mirror.git"
            if not (mirror / "HEAD").exists():
                mirror.parent.mkdir(parents=True, exist_ok=True)
                run_git(mirror.parent, "init", "--quiet", "--bare", str(mirror))
            self.location = Location(mirror, mirror, True, repo)
        else:
            path = Path(repo).resolve()
            if not path.exists():
                raise GitError(f"repository {repo} does not exist", "pass --repo a local path or a URL")
            bare = run_git(path, "rev-parse", "--is-bare-repository").decode().strip() == "true"
            gitdir = Path(run_git(path, "rev-parse", "--absolute-git-dir").decode().strip())
            root = gitdir if bare else Path(run_git(path, "rev-parse", "--show-toplevel").decode().strip())
            self.location = Location(root, gitdir, bare, None)

    @property
    def is_remote(self) -> bool:
        return self.location.remote is not None

    def local_tip(self) -> str | None:
        """The branch tip as this machine has it (None when the branch does not exist yet)."""
        try:
            out = run_git(self.location.repo, "rev-parse", "--verify", "--quiet", f"{self.ref}^{{commit}}")
        except GitError:
            return None
        return out.decode().strip() or None

    def refresh(self) -> str | None:
        """Tip of the branch now; for a remote, ls-remote first and fetch only when it moved."""
        if self.location.remote is None:
            return self.local_tip()
        out = run_git(self.location.repo, "ls-remote", "--", self.location.remote, self.ref).decode().split()
        remote_tip = out[0] if out else None
        if remote_tip is None:
            return None
        if remote_tip != self.local_tip():
            run_git(
                self.location.repo, "fetch", "--quiet", "--no-tags", self.location.remote, f"+{self.ref}:{self.ref}"
            )
        return self.local_tip()

    def commits_between(self, old: str | None, new: str, limit: int = 50) -> list[str]:
        """Commits after ``old`` up to and excluding ``new``, newest first (what a burst skipped)."""
        if old is None:
            return []
        try:
            out = run_git(self.location.repo, "rev-list", f"--max-count={limit}", f"{old}..{new}")
        except GitError:
            return []
        return [c for c in out.decode().split() if c != new]

    def watch(self, on_change: Callable[[], None], stop: threading.Event, step_ms: int = 10) -> threading.Thread:
        """Call ``on_change`` when refs or packed-refs change (local repositories only)."""
        import watchfiles

        gitdir = self.location.gitdir

        def relevant(_change: object, path: str) -> bool:
            rel = Path(path).relative_to(gitdir).as_posix() if path.startswith(str(gitdir)) else ""
            return rel == "packed-refs" or rel.startswith("refs/") or rel == "refs"

        def run() -> None:
            try:
                for _changes in watchfiles.watch(
                    gitdir,
                    watch_filter=relevant,
                    debounce=20,
                    step=step_ms,
                    stop_event=stop,
                    raise_interrupt=False,
                    rust_timeout=1000,
                    yield_on_timeout=False,
                ):
                    on_change()
            except Exception as exc:  # the watcher is an accelerator; polling still runs
                log.warning("watch stopped: %s", exc, extra={"event": "watch_failed"})

        thread = threading.Thread(target=run, name="orlojd-watch", daemon=True)
        thread.start()
        return thread
