"""Git plumbing for reading desired state: revisions, trees and blobs, fast.

A whole commit is read with one ``git ls-tree -r -z -l`` and one streaming
``git cat-file --batch`` (the floor measured in bench/load.py), never a checkout.
Every failure becomes a ``GitError`` that names the repository and the revision.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orlojd.errors import GitError


@dataclass(frozen=True, slots=True)
class TreeEntry:
    path: str
    oid: str
    size: int
    mode: str = "100644"

    @property
    def is_link(self) -> bool:
        return self.mode == "120000"


def run_git(repo: Path, *args: str, input_bytes: bytes | None = None) -> bytes:
    """Run one git command in ``repo``; stdout on success, GitError with git's words otherwise."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=input_bytes,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed", "install git 2.30 or newer") from None
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed in {repo}: {detail[-1] if detail else 'exit ' + str(done.returncode)}")
    return done.stdout


def locate_repo(path: Path) -> tuple[Path, str]:
    """(repository root, path of ``path`` inside it with a trailing '/' or ''); a bare repository is its own root."""
    if not path.exists():
        raise GitError(f"{path} does not exist")
    folder = path if path.is_dir() else path.parent
    try:
        bare = run_git(folder, "rev-parse", "--is-bare-repository").decode().strip() == "true"
        if bare:
            return Path(run_git(folder, "rev-parse", "--absolute-git-dir").decode().strip()), ""
        out = run_git(folder, "rev-parse", "--show-toplevel", "--show-prefix").decode().splitlines()
    except GitError:
        raise GitError(
            f"{path} is not inside a git repository",
            "run 'git init' there, or point at a clone of your manifests repository",
        ) from None
    return Path(out[0]), out[1] if len(out) > 1 else ""


def resolve_commit(repo: Path, rev: str) -> str:
    """Full commit id for ``rev``; GitError naming the revision when it does not exist."""
    try:
        return (
            run_git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}").decode().strip()
        )
    except GitError:
        raise GitError(
            f"revision {rev!r} not found in {repo}", "check the branch or commit name with 'git log --oneline'"
        ) from None


def commit_author(repo: Path, commit: str) -> str:
    """The author email of ``commit`` (who asked for what it applies), or its author name when no email."""
    email, _, name = run_git(repo, "log", "-1", "--format=%ae%x00%an", commit, "--").decode().strip().partition("\0")
    return email or name


def list_tree(repo: Path, commit: str, prefix: str = "", paths: Sequence[str] = ()) -> list[TreeEntry]:
    """Blobs under ``prefix`` at ``commit`` (only ``paths`` when given), paths relative to ``prefix``."""
    args = ["ls-tree", "-r", "-z", "-l", "--full-tree", commit]
    if paths:
        args += ["--", *(prefix + p for p in paths)]
    elif prefix:
        args += ["--", prefix]
    out = run_git(repo, *args)
    entries: list[TreeEntry] = []
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, oid, size = meta.split()
        if kind != b"blob":
            continue
        if not size.isdigit():  # 'BAD' or '-': the object is missing from the repository
            raise GitError(f"object {oid.decode()} is missing from {repo}", "run 'git fsck'; fetch the commit again")
        path = raw_path.decode("utf-8", errors="surrogateescape")
        entries.append(TreeEntry(path[len(prefix) :], oid.decode(), int(size), mode.decode()))
    return entries


def read_blobs(repo: Path, oids: Sequence[str]) -> dict[str, bytes]:
    """Contents of many blobs through one ``git cat-file --batch``, streamed both ways."""
    if not oids:
        return {}
    try:
        proc = subprocess.Popen(
            ["git", "-C", str(repo), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise GitError("git is not installed", "install git 2.30 or newer") from None
    assert proc.stdin is not None and proc.stdout is not None

    def feed(stdin: object = proc.stdin) -> None:
        try:
            proc.stdin.write(b"".join(oid.encode() + b"\n" for oid in oids))  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    blobs: dict[str, bytes] = {}
    stdout = proc.stdout
    try:
        for oid in oids:
            header = stdout.readline().split()
            if len(header) != 3:
                raise GitError(f"object {oid} is missing from {repo}", "run 'git fsck' on the repository")
            size = int(header[2])
            blobs[oid] = stdout.read(size)
            stdout.read(1)
    finally:
        writer.join()
        stdout.close()
        proc.wait()
    return blobs


def read_files(repo: Path, commit: str, entries: Iterable[TreeEntry], max_bytes: int) -> list[tuple[str, bytes | None]]:
    """(path, content) for each entry; content is None when the blob exceeds ``max_bytes``."""
    chosen = list(entries)
    small = [e.oid for e in chosen if e.size <= max_bytes]
    blobs = read_blobs(repo, list(dict.fromkeys(small)))
    return [(e.path, blobs.get(e.oid) if e.size <= max_bytes else None) for e in chosen]


def identity_args(repo: Path, fallback_name: str) -> list[str]:
    """``-c user.*`` options for a commit: the user's identity when git has one, else ``fallback_name``."""
    args: list[str] = []
    for key, fallback in (("user.name", fallback_name), ("user.email", "orlojd@localhost")):
        try:
            run_git(repo, "config", "--get", key)
        except GitError:
            args += ["-c", f"{key}={fallback}"]
    return args


def changed_paths(repo: Path, old: str, new: str, prefix: str = "") -> list[str]:
    """Paths (relative to ``prefix``) that differ between two commits: ``git diff --name-only``."""
    args = ["diff", "--name-only", "-z", "--no-renames", old, new]
    if prefix:
        args += ["--", prefix]
    out = run_git(repo, *args)
    return [p.decode("utf-8", errors="surrogateescape")[len(prefix) :] for p in out.split(b"\0") if p]


def read_paths(
    repo: Path, commit: str, paths: Sequence[str], max_bytes: int
) -> dict[str, tuple[bytes | None, int] | None]:
    """Content and size of ``commit:path`` for each path through one ``cat-file --batch``.

    None for a path that does not exist at ``commit``; content None when larger than ``max_bytes``.
    """
    if not paths:
        return {}
    specs = b"".join(f"{commit}:{p}\n".encode() for p in paths)
    proc = subprocess.Popen(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, _ = proc.communicate(specs)
    found: dict[str, tuple[bytes | None, int] | None] = {}
    pos = 0
    for path in paths:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3 or header[-1] == b"missing":
            found[path] = None
            continue
        size = int(header[2])
        content = out[pos : pos + size]
        pos += size + 1
        found[path] = (content if size <= max_bytes else None, size)
    return found
