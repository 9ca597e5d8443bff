"""Signed audit notes: the ``refs/notes/orlojd/audit`` ref, its commits, and sharing it between writers.

Owns how lines get onto the note of an annotated commit (``AuditNotes.append``: one signed
notes commit per batch, compare-and-swap on the ref), how the notes are read back (``read``,
``history``, ``message``), how two writers' notes are joined (``merge_from``: fast-forward, or
a signed two-parent merge whose tree is the union of both, same-object notes getting the
sorted, de-duplicated union of their lines — git's ``cat_sort_uniq`` rule) and how they are
published (``push``: never forced; rejected -> fetch into a tracking ref, merge, retry).
``setup_clone`` configures a clone to fetch them. Called by the audit writer of the daemon
and by the CLI; what a line or a commit message says is the caller's business, not this module's.

Every notes commit is signed in process (``orlojd.adapters.sshsig``) and written with plumbing
(``hash-object``, a temporary index, ``write-tree``, ``update-ref NEW OLD``); never with
``git notes add/append/merge``, which write unsigned commits (see
../shared/reference/signed-notes.md, observed on git 2.39). The repository's own index and
work tree are never touched.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orlojd.adapters import clock
from orlojd.adapters.gitrepo import read_blobs, run_git
from orlojd.adapters.sshsig import SigningKey, signed_commit
from orlojd.errors import GitError

REF = "refs/notes/orlojd/audit"
TRACKING = "refs/notes/remotes/origin/orlojd/audit"
FANOUT_THRESHOLD = 256  # new notes go to "xx/<38 hex>" once a tree holds more notes than this (git's own layout)
RETRY_JITTER_SECONDS = 0.05  # upper bound of the wait before retry n is n times this; keeps racing writers apart
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_NOTES_PREFIX = "refs/notes/"


class NotesMoved(Exception):
    """The notes ref was not at the expected tip: another writer moved it first (the compare-and-swap lost)."""

    def __init__(self, ref: str, expected: str | None, actual: str | None) -> None:
        super().__init__(f"{ref} is at {actual or '(missing)'}, expected {expected or '(missing)'}")
        self.ref = ref
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class NotesCommit:
    sha: str
    parents: tuple[str, ...]
    message: str  # as stored, with its final newline


@dataclass(frozen=True)
class _Note:
    """One note blob in a notes tree: where it sits (flat or fan-out) and its blob id."""

    path: str
    blob: str


def _git(
    repo: Path, *args: str, env: Mapping[str, str] | None = None, input_bytes: bytes | None = None
) -> tuple[int, bytes, bytes]:
    """git with extra environment and no check: (exit code, stdout, stderr).

    ``run_git`` takes no environment and keeps nothing but stderr's last line on failure; this
    module needs ``GIT_INDEX_FILE`` (a private index) and the exit code of ``merge-base
    --is-ancestor`` and of a rejected ``push --porcelain``.
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=input_bytes,
            capture_output=True,
            env={**os.environ, **env} if env else None,
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed", "install git 2.30 or newer") from None
    return done.returncode, done.stdout, done.stderr


def _failed(repo: Path, args: Sequence[str], stderr: bytes, code: int) -> GitError:
    detail = stderr.decode(errors="replace").strip().splitlines()
    return GitError(f"git {args[0]} failed in {repo}: {detail[-1] if detail else f'exit {code}'}")


class _TempIndex:
    """A throw-away index file in a private temporary folder: trees are edited here, never in the repo's index."""

    def __init__(self, repo: Path, folder: Path) -> None:
        self.repo = repo
        self.folder = folder
        self.env = {"GIT_INDEX_FILE": str(folder / "index")}

    def run(self, *args: str, input_bytes: bytes | None = None) -> bytes:
        code, out, err = _git(self.repo, *args, env=self.env, input_bytes=input_bytes)
        if code != 0:
            raise _failed(self.repo, args, err, code)
        return out

    def write_blobs(self, contents: Sequence[bytes]) -> list[str]:
        """Store many blobs with one ``hash-object -w --stdin-paths``; their ids in order."""
        if not contents:
            return []
        paths = []
        for number, content in enumerate(contents):
            path = self.folder / f"blob-{number}"
            path.write_bytes(content)
            paths.append(str(path))
        out = run_git(
            self.repo, "hash-object", "-w", "--no-filters", "--stdin-paths", input_bytes="\n".join(paths).encode()
        )
        return out.decode().split()

    def apply(self, placed: Mapping[str, str], removed: Sequence[str]) -> str:
        """Set ``path -> blob`` and drop ``removed`` paths in the index; the id of the resulting tree."""
        lines = [f"0 {'0' * 40}\t{path}\n" for path in removed]
        lines += [f"100644 blob {blob}\t{path}\n" for path, blob in placed.items()]
        if lines:
            self.run("update-index", "--index-info", input_bytes="".join(lines).encode())
        return self.run("write-tree").decode().strip()


@contextmanager
def _temp_index(repo: Path, tree: str | None) -> Iterator[_TempIndex]:
    with tempfile.TemporaryDirectory(prefix="orlojd-notes-") as folder:
        index = _TempIndex(repo, Path(folder))
        if tree is not None:
            index.run("read-tree", f"{tree}^{{tree}}")
        yield index


def _terminated(content: bytes) -> bytes:
    return content if not content or content.endswith(b"\n") else content + b"\n"


def _lines(content: bytes) -> list[bytes]:
    return [line for line in content.split(b"\n") if line]


def _check_batch(notes: Mapping[str, Sequence[str]]) -> None:
    for oid, lines in notes.items():
        if not _OBJECT_ID.fullmatch(oid):
            raise ValueError(f"{oid!r} is not a full lowercase object id; notes are keyed by the annotated commit's id")
        for line in lines:
            if not line or "\n" in line or "\r" in line:
                raise ValueError(f"note line {line!r} for {oid} must be non-empty and hold no line break")


def read_notes(repo: Path, ref: str = REF) -> dict[str, list[str]]:
    """Every note at the tip of ``ref`` in ``repo`` (annotated id -> its lines); for readers (no key)."""
    return AuditNotes(repo, None, ref=ref).read()


class AuditNotes:
    """The audit notes ref of one repository, written with one signing key (None: read only)."""

    def __init__(
        self, repo: Path, key: SigningKey | None, ident: str = "orlojd <orlojd@localhost>", ref: str = REF
    ) -> None:
        if not ref.startswith(_NOTES_PREFIX):
            raise ValueError(f"{ref!r} is not a notes ref (refs/notes/...)")
        self.repo = repo
        self.key = key
        self.ident = ident
        self.ref = ref

    # -- reading ----------------------------------------------------------------------------------------------

    def tracking_ref(self, remote: str = "origin") -> str:
        """Where ``push`` fetches the remote's notes: refs/notes/remotes/<remote>/<name> (TRACKING for origin)."""
        return f"{_NOTES_PREFIX}remotes/{remote}/{self.ref.removeprefix(_NOTES_PREFIX)}"

    def _resolve(self, ref: str) -> str | None:
        out = run_git(self.repo, "for-each-ref", "--format=%(objectname) %(refname)", ref)
        for line in out.decode().splitlines():
            oid, _, name = line.partition(" ")
            if name == ref:
                return oid
        return None

    def tip(self) -> str | None:
        """The commit the notes ref points at; None when it does not exist yet."""
        return self._resolve(self.ref)

    def message(self, commit: str) -> str:
        """A notes commit's message, as stored (with its final newline)."""
        raw = run_git(self.repo, "cat-file", "commit", commit)
        return raw.partition(b"\n\n")[2].decode(errors="replace")

    def _notes(self, commit: str | None) -> dict[str, list[_Note]]:
        """annotated id -> its note blob(s) in ``commit``'s tree; two only when a flat and a fan-out path coexist."""
        if commit is None:
            return {}
        found: dict[str, list[_Note]] = {}
        for record in run_git(self.repo, "ls-tree", "-r", "-z", "--full-tree", commit).split(b"\0"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            _, kind, blob = meta.decode().split()
            path = raw_path.decode(errors="surrogateescape")
            name = path.replace("/", "")
            if kind == "blob" and _OBJECT_ID.fullmatch(name):  # anything else is not a note: left alone
                found.setdefault(name, []).append(_Note(path, blob))
        return found

    def sizes(self, commit: str | None) -> dict[str, int]:
        """annotated id -> bytes of its note in ``commit``'s tree (one ``ls-tree -l``; no blob read)."""
        if commit is None:
            return {}
        found: dict[str, int] = {}
        for record in run_git(self.repo, "ls-tree", "-r", "-z", "-l", "--full-tree", commit).split(b"\0"):
            meta, _, raw_path = record.partition(b"\t")
            fields = meta.decode().split()
            name = raw_path.decode(errors="surrogateescape").replace("/", "")
            if len(fields) == 4 and fields[1] == "blob" and _OBJECT_ID.fullmatch(name):
                found[name] = found.get(name, 0) + int(fields[3])
        return found

    def read(self, ref: str | None = None) -> dict[str, list[str]]:
        """Every note at the tip of ``ref`` (default: this ref): annotated id -> its non-empty lines, in order."""
        tip = self._resolve(ref or self.ref)
        notes = self._notes(tip)
        blobs = read_blobs(self.repo, list(dict.fromkeys(n.blob for found in notes.values() for n in found)))
        return {
            oid: [line.decode(errors="replace") for n in found for line in _lines(blobs[n.blob])]
            for oid, found in notes.items()
        }

    def history(self, ref: str | None = None) -> list[NotesCommit]:
        """Every commit reachable from ``ref`` (default: this ref), children before parents, newest first."""
        tip = self._resolve(ref or self.ref)
        if tip is None:
            return []
        rows = [
            line.split()
            for line in run_git(self.repo, "rev-list", "--parents", "--topo-order", tip).decode().splitlines()
        ]
        objects = read_blobs(self.repo, [row[0] for row in rows])
        return [
            NotesCommit(row[0], tuple(row[1:]), objects[row[0]].partition(b"\n\n")[2].decode(errors="replace"))
            for row in rows
        ]

    # -- writing ----------------------------------------------------------------------------------------------

    def _commit(self, tree: str, parents: Sequence[str], message: str, when: int | None, expected: str | None) -> str:
        """Sign and store a notes commit, then move the ref from ``expected`` to it (compare-and-swap)."""
        moment = int(clock.now().timestamp()) if when is None else when
        if self.key is None:
            raise ValueError("these notes were opened read-only (no signing key)")
        raw = signed_commit(self.key, tree, parents, self.ident, moment, message)
        new = run_git(self.repo, "hash-object", "-t", "commit", "-w", "--stdin", input_bytes=raw).decode().strip()
        self._swap(new, expected)
        return new

    def _swap(self, new: str, expected: str | None) -> None:
        try:
            run_git(self.repo, "update-ref", "-m", "orlojd audit", self.ref, new, expected or "")
        except GitError:
            actual = self.tip()
            if actual != expected:
                raise NotesMoved(self.ref, expected, actual) from None
            raise

    def append(
        self, notes: Mapping[str, Sequence[str]], message: str, expected: str | None, when: int | None = None
    ) -> str:
        """One signed notes commit on top of ``expected`` adding the lines to each annotated id's note; the new tip.

        ``expected`` None means the ref must not exist yet. Lines go after those already in the
        note, one per line, at the path the note already has (flat or fan-out). NotesMoved when
        the ref is elsewhere; then nothing but unreachable objects was written.
        """
        _check_batch(notes)
        actual = self.tip()
        if actual != expected:
            raise NotesMoved(self.ref, expected, actual)
        existing = self._notes(expected)
        touched = [n for oid in notes for n in existing.get(oid, [])]
        blobs = read_blobs(self.repo, list(dict.fromkeys(n.blob for n in touched)))
        fanout = any("/" in n.path for found in existing.values() for n in found) or (
            len(existing.keys() | notes.keys()) > FANOUT_THRESHOLD
        )
        contents: dict[str, bytes] = {}
        removed: list[str] = []
        for oid, lines in notes.items():
            if not lines:
                continue
            found = existing.get(oid, [])
            old = b"".join(_terminated(blobs[n.blob]) for n in found)
            path = found[0].path if found else (f"{oid[:2]}/{oid[2:]}" if fanout else oid)
            contents[path] = old + "".join(line + "\n" for line in lines).encode()
            removed += [n.path for n in found[1:]]  # a duplicate path for the same object folds into the first
        with _temp_index(self.repo, expected) as index:
            placed = dict(zip(contents, index.write_blobs(list(contents.values())), strict=True))
            tree = index.apply(placed, removed)
        return self._commit(tree, [expected] if expected else [], message, when, expected)

    def _is_ancestor(self, older: str, newer: str) -> bool:
        code, _, err = _git(self.repo, "merge-base", "--is-ancestor", older, newer)
        if code not in (0, 1):
            raise _failed(self.repo, ["merge-base"], err, code)
        return code == 0

    def _merge_base(self, one: str, other: str) -> str | None:
        code, out, err = _git(self.repo, "merge-base", one, other)
        if code == 1:  # unrelated histories: two writers each started the ref
            return None
        if code != 0:
            raise _failed(self.repo, ["merge-base"], err, code)
        return out.decode().strip()

    def merge_from(self, other_tip: str, message: str, when: int | None = None) -> str:
        """Join another writer's notes (e.g. the fetched tracking ref) into this ref; the new tip.

        ``other_tip`` already contained: nothing to do. This ref missing or contained in
        ``other_tip``: fast-forward (its commits are signed by their writer). Otherwise a signed
        two-parent merge commit with ``message``: notes of different objects from both sides; a
        note changed on one side only takes that side; changed on both, the bytewise sorted,
        de-duplicated union of the lines. Nothing is ever dropped. NotesMoved if the ref moves meanwhile.
        """
        other = self._commit_id(other_tip)
        current = self.tip()
        if current is None:
            self._swap(other, None)
            return other
        if current == other or self._is_ancestor(other, current):
            return current
        if self._is_ancestor(current, other):
            self._swap(other, current)
            return other
        ours, theirs = self._notes(current), self._notes(other)
        base = self._notes(self._merge_base(current, other))
        placed: dict[str, str] = {}
        removed: list[str] = []
        unions: dict[str, tuple[list[_Note], list[_Note]]] = {}
        for oid, their_notes in theirs.items():
            our_notes = ours.get(oid, [])
            mine = [n.blob for n in our_notes]
            yours = [n.blob for n in their_notes]
            old = [n.blob for n in base.get(oid, [])]
            if mine == yours or (our_notes and yours == old):
                continue  # same on both sides, or only we changed it (a note we lack is never "changed": it is kept)
            if (not our_notes or mine == old) and len(their_notes) == 1:
                path = our_notes[0].path if our_notes else their_notes[0].path
                placed[path] = their_notes[0].blob  # only they changed it (or only they have it)
                removed += [n.path for n in our_notes[1:]]
                continue
            unions[oid] = (our_notes, their_notes)
        blobs = read_blobs(self.repo, list(dict.fromkeys(n.blob for pair in unions.values() for x in pair for n in x)))
        contents: dict[str, bytes] = {}
        for our_notes, their_notes in unions.values():
            lines = sorted({line for n in (*our_notes, *their_notes) for line in _lines(blobs[n.blob])})
            target = our_notes[0].path if our_notes else their_notes[0].path
            contents[target] = b"".join(line + b"\n" for line in lines)
            removed += [n.path for n in our_notes[1:]]
        with _temp_index(self.repo, current) as index:
            placed.update(zip(contents, index.write_blobs(list(contents.values())), strict=True))
            tree = index.apply(placed, removed)
        return self._commit(tree, [current, other], message, when, current)

    def _commit_id(self, rev: str) -> str:
        code, out, _ = _git(self.repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
        if code != 0:
            raise GitError(
                f"notes commit {rev!r} not found in {self.repo}",
                f"fetch the notes first: git fetch origin '+{self.ref}:{self.tracking_ref()}'",
            )
        return out.decode().strip()

    # -- sharing ----------------------------------------------------------------------------------------------

    def remote_exists(self, remote: str = "origin") -> bool:
        return remote in run_git(self.repo, "remote").decode().split()

    def _push_once(self, remote: str) -> bool:
        """True when the remote took the ref (or already had it); False when it refused; GitError otherwise."""
        args = ("push", "--porcelain", remote, f"{self.ref}:{self.ref}")
        code, out, err = _git(self.repo, *args)
        if code == 0:
            return True
        for line in out.decode(errors="replace").splitlines():
            flag, _, rest = line.partition("\t")
            if flag == "!" and rest.startswith(f"{self.ref}:{self.ref}\t"):
                return False  # [rejected] (fetch first / non-fast-forward) or [remote rejected]
        raise _failed(self.repo, args, err, code)

    def push(
        self, remote: str = "origin", attempts: int = 5, message_for_merge: Callable[[str, str], str] | None = None
    ) -> bool:
        """Publish the notes ref to ``remote``, never forced; True once pushed, False after ``attempts``.

        On each rejection: fetch the remote's notes into the tracking ref, ``merge_from`` it (the
        merge message from ``message_for_merge(local_tip, remote_tip)``, or a default), retry
        after a short random wait. A missing remote or an unreachable one is a GitError.
        """
        source = f"+{self.ref.rsplit('/', 1)[0]}/*:{self.tracking_ref(remote).rsplit('/', 1)[0]}/*"
        for attempt in range(attempts):
            if self.tip() is None:
                return True  # nothing written yet, nothing to publish
            if self._push_once(remote):
                return True
            if attempt == attempts - 1:
                break
            time.sleep(random.uniform(0, RETRY_JITTER_SECONDS * (attempt + 1)))
            run_git(self.repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote, source)
            theirs, local = self._resolve(self.tracking_ref(remote)), self.tip()
            if theirs is None or local is None:
                continue
            text = message_for_merge(local, theirs) if message_for_merge else f"orlojd audit: merge {remote}\n"
            try:
                self.merge_from(theirs, text)
            except NotesMoved:
                continue  # a local append won the race; the next round merges again
        return False


def setup_clone(repo: Path, remote: str = "origin", writer: bool = False) -> list[str]:
    """Configure an existing clone to fetch the audit notes; the config lines it added ("key=value"), [] if none.

    Reader: ``+refs/notes/orlojd/*:refs/notes/orlojd/*`` (forced: a reader has no records of its own).
    Writer: the same notes into ``refs/notes/remotes/<remote>/orlojd/*``, merged by ``AuditNotes.push``;
    a reader mapping is removed from a writer (lines "unset key=value"), since a forced fetch into
    the ref itself would replace records not pushed yet. Both: ``notes.displayRef`` so ``git log`` shows them.
    """
    if remote not in run_git(repo, "remote").decode().split():
        raise GitError(f"{repo} has no remote {remote!r}", f"add it first: git -C {repo} remote add {remote} URL")
    key = f"remote.{remote}.fetch"
    direct = "+refs/notes/orlojd/*:refs/notes/orlojd/*"
    tracking = f"+refs/notes/orlojd/*:refs/notes/remotes/{remote}/orlojd/*"
    changed: list[str] = []

    def values(name: str) -> list[str]:
        code, out, err = _git(repo, "config", "--local", "--get-all", name)
        if code not in (0, 1):  # 1: not set
            raise _failed(repo, ["config"], err, code)
        return out.decode().splitlines()

    def add(name: str, value: str) -> None:
        if value not in values(name):
            run_git(repo, "config", "--local", "--add", name, value)
            changed.append(f"{name}={value}")

    add(key, tracking if writer else direct)
    if writer and direct in values(key):
        run_git(repo, "config", "--local", "--fixed-value", "--unset-all", key, direct)
        changed.append(f"unset {key}={direct}")
    add("notes.displayRef", REF)
    return changed
