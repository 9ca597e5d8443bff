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
from orlojd.core.desired import Desired, FileResult, assemble, load_file, symlink_skipped
from orlojd.core.diagnostics import Diagnostic
from orlojd.core.documents import MAX_FILE_BYTES
from orlojd.core.selection import IGNORE_FILE, select
from orlojd.errors import OrlojError
from orlojd.settings import CONFIG_FILE, Settings, parse_settings

MAX_INCREMENTAL_PATHS = 1000
"""Above this many changed paths an incremental load reads the whole commit instead."""


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection during a bulk load, and none over its result afterwards.

    Parsing 10k manifests allocates millions of objects; collections triggered mid-way
    cost 20-30% of the time, and every later full collection would walk the loaded
    state again. So the collector is off while loading, and what survives the load is
    moved to the permanent generation (``gc.freeze``): refcounting still frees it when
    it is dropped, the collector just no longer rescans it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
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


def _read_worktree(root: Path) -> list[tuple[str, bytes | None, int] | str]:
    """(path, content, size) per manifest file; a bare path for a symbolic link (not followed)."""
    if root.is_symlink():
        return [root.name]
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
    files: list[tuple[str, bytes | None, int] | str] = []
    for rel in select(paths, ignore_text):
        full = root / rel
        if full.is_symlink():
            files.append(rel)
            continue
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
        results = [
            symlink_skipped(display + item) if isinstance(item, str) else load_file(display + item[0], *item[1:])
            for item in files
        ]
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


def load_incremental(
    path: Path, rev: str, previous: LoadedRevision | None, *, resolve: bool = True, subdir: str = ""
) -> LoadedRevision:
    """Load ``rev``, reading again only the paths ``git diff --name-only`` reports since ``previous``.

    ``subdir`` narrows the manifests to a folder of the repository (``repo.path`` in orlojd.yaml).
    """
    repo, prefix = gitrepo.locate_repo(path)
    if subdir.strip("/.") != "":
        prefix = f"{prefix}{subdir.strip('/')}/"
    commit = gitrepo.resolve_commit(repo, rev)
    display = _display(path if path.is_dir() else path.parent)
    if previous is None or previous.snapshot.repo != repo or previous.snapshot.prefix != prefix:
        return _load_full(path, repo, prefix, commit, display, resolve)
    if previous.commit == commit:
        return previous
    changed = gitrepo.changed_paths(repo, previous.commit, commit, prefix)
    if IGNORE_FILE in changed:
        return _load_full(path, repo, prefix, commit, display, resolve)
    wanted = select(changed, previous.ignore_text)
    if path.is_file():
        wanted = [p for p in wanted if p == path.name]
    if len(wanted) > MAX_INCREMENTAL_PATHS:
        return _load_full(path, repo, prefix, commit, display, resolve)
    entries = {e.path: e for e in gitrepo.list_tree(repo, commit, prefix, wanted)} if wanted else {}
    results = dict(previous.results)
    for rel in wanted:
        results.pop(rel, None)
    results.update(_read_entries(repo, commit, display, list(entries.values())))
    snapshot = Snapshot(path, display, commit, repo, prefix)
    return LoadedRevision(commit, results, previous.ignore_text, assemble(results.values(), resolve=resolve), snapshot)


def _read_entries(repo: Path, commit: str, display: str, entries: list[gitrepo.TreeEntry]) -> dict[str, FileResult]:
    """FileResults for tree entries: blobs read in one cat-file, symbolic links reported, not followed."""
    blobs = [e for e in entries if not e.is_link]
    contents = gitrepo.read_files(repo, commit, blobs, MAX_FILE_BYTES)
    results = {
        e.path: load_file(display + rel, content, e.size) for e, (rel, content) in zip(blobs, contents, strict=True)
    }
    results.update((e.path, symlink_skipped(display + e.path)) for e in entries if e.is_link)
    return results


def _load_full(path: Path, repo: Path, prefix: str, commit: str, display: str, resolve: bool) -> LoadedRevision:
    entries = gitrepo.list_tree(repo, commit, prefix)
    by_path = {e.path: e for e in entries}
    ignore_entry = by_path.get(IGNORE_FILE)
    ignore_text = None
    if ignore_entry is not None:
        ignore_text = gitrepo.read_blobs(repo, [ignore_entry.oid])[ignore_entry.oid].decode(errors="replace")
    chosen = [by_path[p] for p in select(by_path, ignore_text)]
    if path.is_file():  # one file, exactly as on the working-tree road
        chosen = [e for e in chosen if e.path == path.name]
    with paused_gc():
        results = _read_entries(repo, commit, display, chosen)
        desired = assemble(results.values(), resolve=resolve)
    snapshot = Snapshot(path, display, commit, repo, prefix)
    return LoadedRevision(commit, results, ignore_text, desired, snapshot)


def load(path: Path, rev: str | None = None, *, resolve: bool = True) -> tuple[Desired, Snapshot]:
    """Working tree when ``rev`` is None, otherwise the commit ``rev``; orlojd.yaml is checked too."""
    if rev is None:
        desired, snapshot = load_worktree(path, resolve=resolve)
        config = (path if path.is_dir() else path.parent) / CONFIG_FILE
        if config.is_file():
            desired.diagnostics.extend(parse_settings(snapshot.display + CONFIG_FILE, config.read_bytes())[1])
    else:
        desired, snapshot = load_revision(path, rev, resolve=resolve)
        assert snapshot.repo is not None and snapshot.commit is not None
        desired.diagnostics.extend(settings_at(snapshot.repo, snapshot.commit, snapshot.prefix, snapshot.display)[1])
    return desired, snapshot


def settings_at(
    repo: Path, commit: str, prefix: str = "", display: str | None = None
) -> tuple[Settings | None, list[Diagnostic]]:
    """orlojd.yaml as committed at ``commit`` (defaults when absent), with its problems.

    ``display`` is how findings name the folder (default: the path inside the repository).
    """
    found = gitrepo.read_paths(repo, commit, [prefix + CONFIG_FILE], MAX_FILE_BYTES)
    entry = found.get(prefix + CONFIG_FILE)
    if entry is None or entry[0] is None:
        return Settings(), []
    return parse_settings((prefix if display is None else display) + CONFIG_FILE, entry[0])
