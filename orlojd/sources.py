"""Reading desired state from the working tree or from a git revision.

Both roads end in the same list of manifest files, filtered by the same rule
(core.selection), so ``orlojd validate PATH`` and ``orlojd validate PATH --rev HEAD``
see exactly the same objects when the tree is clean. ``load_incremental`` keeps each
commit's FileResults so the next commit reads and parses only the paths that
``git diff --name-only`` names.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orlojd.adapters import gitrepo
from orlojd.core.desired import Desired, FileResult, assemble, load_file
from orlojd.core.documents import MAX_FILE_BYTES
from orlojd.core.selection import IGNORE_FILE, select
from orlojd.errors import OrlojError
from orlojd.settings import CONFIG_FILE, parse_settings


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection during a bulk load: parsing 10k manifests allocates
    millions of objects, and collections triggered mid-way cost 20-30% of the time.
    Refcounting still frees memory; cycles are collected when the block ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True)
class Snapshot:
    """Where the manifests were read from: a folder, or a commit of a repository."""

    root: Path
    display: str
    commit: str | None
    repo: Path | None = None
    prefix: str = ""


def _display(path: Path) -> str:
    text = str(path)
    return "" if text in (".", "") else text.rstrip("/") + "/"


def _read_worktree(root: Path) -> list[tuple[str, bytes | None, int]]:
    if root.is_file():
        size = root.stat().st_size
        return [(root.name, root.read_bytes() if size <= MAX_FILE_BYTES else None, size)]
    if not root.is_dir():
        raise OrlojError(f"{root} does not exist", "pass the folder that holds your manifests")
    paths: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative = os.path.relpath(folder, root)
        for name in names:
            paths.append(name if relative == "." else f"{relative}/{name}".replace(os.sep, "/"))
    ignore = root / IGNORE_FILE
    ignore_text = ignore.read_text(errors="replace") if ignore.is_file() else None
    files: list[tuple[str, bytes | None, int]] = []
    for rel in select(paths, ignore_text):
        full = root / rel
        try:
            size = full.stat().st_size
            files.append((rel, full.read_bytes() if size <= MAX_FILE_BYTES else None, size))
        except OSError as exc:
            raise OrlojError(f"cannot read {full}: {exc.strerror}") from None
    return files


def load_worktree(path: Path, *, resolve: bool = True) -> tuple[Desired, Snapshot]:
    """Manifests under ``path`` on disk (a folder or a single file)."""
    display = _display(path if path.is_dir() else path.parent)
    files = _read_worktree(path)
    with paused_gc():
        results = [load_file(display + rel, content, size) for rel, content, size in files]
        desired = assemble(results, resolve=resolve)
    return desired, Snapshot(path, display, None)


def load_revision(path: Path, rev: str, *, resolve: bool = True) -> tuple[Desired, Snapshot]:
    """Manifests under ``path`` as committed at ``rev``; the working tree is not read."""
    loaded = load_incremental(path, rev, None, resolve=resolve)
    return loaded.desired, loaded.snapshot


@dataclass
class LoadedRevision:
    """One commit's FileResults by path: the starting point of the next incremental load."""

    commit: str
    results: dict[str, FileResult]
    ignore_text: str | None
    desired: Desired
    snapshot: Snapshot


def load_incremental(path: Path, rev: str, previous: LoadedRevision | None, *, resolve: bool = True) -> LoadedRevision:
    """Load ``rev``, reading again only the paths ``git diff --name-only`` reports since ``previous``."""
    repo, prefix = gitrepo.locate_repo(path)
    commit = gitrepo.resolve_commit(repo, rev)
    display = _display(path if path.is_dir() else path.parent)
    if previous is None or previous.snapshot.repo != repo or previous.snapshot.prefix != prefix:
        return _load_full(path, repo, prefix, commit, display, resolve)
    if previous.commit == commit:
        return previous
    changed = gitrepo.changed_paths(repo, previous.commit, commit, prefix)
    if IGNORE_FILE in changed:
        return _load_full(path, repo, prefix, commit, display, resolve)
    wanted = [p for p in select(changed, previous.ignore_text)]
    contents = gitrepo.read_paths(repo, commit, [prefix + p for p in wanted], MAX_FILE_BYTES)
    results = dict(previous.results)
    for rel in wanted:
        found = contents[prefix + rel]
        if found is None:
            results.pop(rel, None)
        else:
            content, size = found
            results[rel] = load_file(display + rel, content, size)
    snapshot = Snapshot(path, display, commit, repo, prefix)
    return LoadedRevision(commit, results, previous.ignore_text, assemble(results.values(), resolve=resolve), snapshot)


def _load_full(path: Path, repo: Path, prefix: str, commit: str, display: str, resolve: bool) -> LoadedRevision:
    entries = gitrepo.list_tree(repo, commit, prefix)
    by_path = {e.path: e for e in entries}
    ignore_entry = by_path.get(IGNORE_FILE)
    ignore_text = None
    if ignore_entry is not None:
        ignore_text = gitrepo.read_blobs(repo, [ignore_entry.oid])[ignore_entry.oid].decode(errors="replace")
    chosen = [by_path[p] for p in select(by_path, ignore_text)]
    contents = gitrepo.read_files(repo, commit, chosen, MAX_FILE_BYTES)
    with paused_gc():
        results = {
            entry.path: load_file(display + rel, content, entry.size)
            for entry, (rel, content) in zip(chosen, contents, strict=True)
        }
        desired = assemble(results.values(), resolve=resolve)
    snapshot = Snapshot(path, display, commit, repo, prefix)
    return LoadedRevision(commit, results, ignore_text, desired, snapshot)


def load(path: Path, rev: str | None = None, *, resolve: bool = True) -> tuple[Desired, Snapshot]:
    """Working tree when ``rev`` is None, otherwise the commit ``rev``; orlojd.yaml is checked too."""
    if rev is None:
        desired, snapshot = load_worktree(path, resolve=resolve)
        config = (path if path.is_dir() else path.parent) / CONFIG_FILE
        content = config.read_bytes() if config.is_file() else None
    else:
        desired, snapshot = load_revision(path, rev, resolve=resolve)
        assert snapshot.repo is not None and snapshot.commit is not None
        found = gitrepo.read_paths(snapshot.repo, snapshot.commit, [snapshot.prefix + CONFIG_FILE], MAX_FILE_BYTES)
        entry = found.get(snapshot.prefix + CONFIG_FILE)
        content = entry[0] if entry is not None else None
    if content is not None:
        desired.diagnostics.extend(parse_settings(snapshot.display + CONFIG_FILE, content)[1])
    return desired, snapshot
