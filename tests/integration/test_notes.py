"""Signed audit notes against real repositories: a bare "origin", clones of it, one key per writer.

Every notes commit orlojd writes must pass plain ``git verify-commit`` with the writers' keys in
an allowed-signers file, and plain ``git notes show`` must print what was appended: the checks
an auditor runs with nothing but git.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import GIT_ENV, GitRepo, git

from orlojd.adapters import notes as notes_module
from orlojd.adapters import sshsig
from orlojd.adapters.notes import REF, TRACKING, AuditNotes, NotesMoved, setup_clone
from orlojd.adapters.sshsig import SigningKey
from orlojd.errors import GitError

IDENT = "orlojd <orlojd@test.invalid>"


def new_key(tmp_path: Path, name: str) -> SigningKey:
    key, _ = sshsig.ensure_key(None, None, tmp_path / "keys" / name, {})
    return key


def allowed(tmp_path: Path, *keys: SigningKey) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text(
        "".join(sshsig.allowed_signers_line(k, f"writer{i}@test.invalid") + "\n" for i, k in enumerate(keys))
    )
    return path


def verify(repo: Path, signers: Path, commit: str) -> int:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", commit],
        capture_output=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    return done.returncode


def assert_all_signed(repo: Path, signers: Path, ref: str = REF) -> list[str]:
    """Every commit of the notes history verifies (the auditor's walk from tip to root); their ids."""
    commits = git(repo, "rev-list", "--topo-order", ref).split()
    assert commits
    failed = [c for c in commits if verify(repo, signers, c) != 0]
    assert not failed, f"unverified notes commits: {failed}"
    return commits


def show(repo: Path, commit: str) -> list[str]:
    return git(repo, "notes", "--ref=orlojd/audit", "show", commit).splitlines()


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, str]:
    """A bare origin with one commit on main; (its path, that commit)."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch", "main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "--quiet", str(bare), str(seed))
    (seed / "agents.yaml").write_text("kind: Agent\n")
    git(seed, "add", "agents.yaml")
    git(seed, "commit", "--quiet", "--no-gpg-sign", "-m", "first")
    git(seed, "push", "--quiet", "origin", "HEAD:main")
    return bare, git(seed, "rev-parse", "HEAD")


def clone(tmp_path: Path, origin: Path, name: str, writer: bool = True) -> Path:
    path = tmp_path / name
    git(tmp_path, "clone", "--quiet", str(origin), str(path))
    setup_clone(path, writer=writer)
    return path


# -- append ------------------------------------------------------------------------------------------------


def test_append_creates_then_extends_signed_notes(repo: GitRepo, tmp_path: Path) -> None:
    repo.write("a.yaml", "a: 1\n")
    first = repo.commit("one")
    second = repo.commit("two")
    repo.write("staged.yaml", "s: 1\n")
    repo.git("add", "staged.yaml")
    repo.write("a.yaml", "a: 2\n")  # an unstaged edit too
    status_before = repo.git("status", "--porcelain")
    index_before = (repo.path / ".git" / "index").read_bytes()
    key = new_key(tmp_path, "a")
    audit = AuditNotes(repo.path, key, IDENT)

    one = audit.append({first: ['{"seq":1}', '{"seq":2}']}, "batch 1", None, when=1_700_000_000)
    two = audit.append({first: ['{"seq":3}'], second: ['{"seq":4}']}, "batch 2\nhead w=a seq=4", one)

    assert audit.tip() == two
    assert show(repo.path, first) == ['{"seq":1}', '{"seq":2}', '{"seq":3}']
    assert show(repo.path, second) == ['{"seq":4}']
    assert audit.read() == {first: ['{"seq":1}', '{"seq":2}', '{"seq":3}'], second: ['{"seq":4}']}
    assert assert_all_signed(repo.path, allowed(tmp_path, key)) == [two, one]
    assert [(c.sha, c.parents, c.message) for c in audit.history()] == [
        (two, (one,), "batch 2\nhead w=a seq=4\n"),
        (one, (), "batch 1\n"),
    ]
    assert audit.message(two) == "batch 2\nhead w=a seq=4\n"
    assert repo.git("log", "-1", "--format=%an <%ae> %at", one) == f"{IDENT} 1700000000"
    assert repo.git("status", "--porcelain") == status_before
    assert (repo.path / ".git" / "index").read_bytes() == index_before
    assert repo.git("reflog", "-1", "--format=%gs", REF) == "orlojd audit"


def test_reading_a_missing_ref(repo: GitRepo, tmp_path: Path) -> None:
    audit = AuditNotes(repo.path, new_key(tmp_path, "a"))

    assert (audit.tip(), audit.read(), audit.history()) == (None, {}, [])


def test_stale_expected_raises_notes_moved_and_leaves_the_ref(repo: GitRepo, tmp_path: Path) -> None:
    commit = repo.commit()
    audit = AuditNotes(repo.path, new_key(tmp_path, "a"))
    one = audit.append({commit: ["1"]}, "m", None)
    two = audit.append({commit: ["2"]}, "m", one)

    with pytest.raises(NotesMoved) as stale:
        audit.append({commit: ["3"]}, "m", one)
    with pytest.raises(NotesMoved):
        audit.append({commit: ["3"]}, "m", None)

    assert (stale.value.expected, stale.value.actual) == (one, two)
    assert audit.tip() == two
    assert show(repo.path, commit) == ["1", "2"]


def test_cas_lost_at_update_ref_raises_notes_moved(
    repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer moves the ref after our check and before our update-ref: update-ref refuses."""
    commit = repo.commit()
    audit = AuditNotes(repo.path, new_key(tmp_path, "a"))
    rival = AuditNotes(repo.path, new_key(tmp_path, "b"))
    one = audit.append({commit: ["1"]}, "m", None)
    real_commit = AuditNotes._commit

    def racing(self: AuditNotes, *args: object, **kwargs: object) -> str:
        if self is audit:
            rival.append({commit: ["rival"]}, "r", one)
        return real_commit(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AuditNotes, "_commit", racing)
    with pytest.raises(NotesMoved):
        audit.append({commit: ["2"]}, "m", one)

    assert show(repo.path, commit) == ["1", "rival"]


def test_invalid_input_is_refused(repo: GitRepo, tmp_path: Path) -> None:
    commit = repo.commit()
    audit = AuditNotes(repo.path, new_key(tmp_path, "a"))

    with pytest.raises(ValueError, match="full lowercase object id"):
        audit.append({commit[:12]: ["x"]}, "m", None)
    with pytest.raises(ValueError, match="line break"):
        audit.append({commit: ["two\nlines"]}, "m", None)
    assert audit.tip() is None


def plumb(repo: Path, *args: str, stdin: str = "", index: Path | None = None) -> str:
    """git plumbing with stdin (and a private index when given); stdout, stripped."""
    env = {**os.environ, **GIT_ENV, **({"GIT_INDEX_FILE": str(index)} if index else {})}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin.encode(), capture_output=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


def build_fanout_note(repo: GitRepo, commit: str, text: str) -> str:
    """An (unsigned) notes commit holding ``text`` for ``commit`` at the fan-out path xx/<38 hex>."""
    blob = plumb(repo.path, "hash-object", "-w", "--stdin", stdin=text)
    inner = plumb(repo.path, "mktree", stdin=f"100644 blob {blob}\t{commit[2:]}\n")
    outer = plumb(repo.path, "mktree", stdin=f"040000 tree {inner}\t{commit[:2]}\n")
    notes_commit = repo.git("commit-tree", "-m", "fan-out", outer)
    repo.git("update-ref", REF, notes_commit, "")
    return notes_commit


def test_append_keeps_a_fanout_note_at_its_path(repo: GitRepo, tmp_path: Path) -> None:
    commit = repo.commit("one")
    other = repo.commit("two")
    base = build_fanout_note(repo, commit, "old\n")
    assert show(repo.path, commit) == ["old"]  # git reads the fan-out layout
    audit = AuditNotes(repo.path, new_key(tmp_path, "a"))

    audit.append({commit: ["new"], other: ["first"]}, "m", base)

    paths = repo.git("ls-tree", "-r", "--name-only", REF).splitlines()
    assert paths == sorted([f"{commit[:2]}/{commit[2:]}", f"{other[:2]}/{other[2:]}"])  # new notes follow the layout
    assert show(repo.path, commit) == ["old", "new"]
    assert [line.split()[1] for line in repo.git("notes", "--ref=orlojd/audit", "list").splitlines()].count(commit) == 1


def test_append_folds_a_duplicate_flat_and_fanout_note(repo: GitRepo, tmp_path: Path) -> None:
    """A note at both paths (git concatenates them on read) becomes one note at the first path."""
    commit = repo.commit()
    base = build_fanout_note(repo, commit, "fan\n")
    flat_blob = plumb(repo.path, "hash-object", "-w", "--stdin", stdin="flat\n")
    index = tmp_path / "index"
    plumb(repo.path, "read-tree", base, index=index)
    plumb(repo.path, "update-index", "--add", "--cacheinfo", f"100644,{flat_blob},{commit}", index=index)
    tree = plumb(repo.path, "write-tree", index=index)
    both = repo.git("commit-tree", "-p", base, "-m", "both", tree)
    repo.git("update-ref", REF, both, base)
    audit = AuditNotes(repo.path, new_key(tmp_path, "a"))
    assert audit.read() == {commit: ["fan", "flat"]}

    audit.append({commit: ["new"]}, "m", both)

    assert repo.git("ls-tree", "-r", "--name-only", REF).splitlines() == [f"{commit[:2]}/{commit[2:]}"]
    assert show(repo.path, commit) == ["fan", "flat", "new"]


def test_many_notes_switch_new_ones_to_fanout(repo: GitRepo, tmp_path: Path) -> None:
    commit = repo.commit()
    audit = AuditNotes(repo.path, new_key(tmp_path, "a"))
    fake_ids = [f"{n:040x}" for n in range(notes_module.FANOUT_THRESHOLD)]  # notes may name absent objects
    first = audit.append({oid: ["x"] for oid in fake_ids}, "bulk", None)
    assert "/" not in repo.git("ls-tree", "--name-only", first).splitlines()[0]

    audit.append({commit: ["y"]}, "one more", first)

    assert f"{commit[:2]}/{commit[2:]}" in repo.git("ls-tree", "-r", "--name-only", REF).splitlines()
    assert show(repo.path, commit) == ["y"]
    assert len(audit.read()) == notes_module.FANOUT_THRESHOLD + 1


# -- merge_from --------------------------------------------------------------------------------------------


def test_merge_from_fast_forwards_and_ignores_ancestors(repo: GitRepo, tmp_path: Path) -> None:
    commit = repo.commit()
    key = new_key(tmp_path, "a")
    side = AuditNotes(repo.path, key, ref="refs/notes/orlojd/side")
    one = side.append({commit: ["1"]}, "m", None)
    two = side.append({commit: ["2"]}, "m", one)
    audit = AuditNotes(repo.path, key)

    assert audit.merge_from(one, "merge") == one  # missing ref: fast-forward
    assert audit.merge_from(two, "merge") == two  # behind: fast-forward
    assert audit.merge_from(one, "merge") == two  # already contained: nothing
    assert audit.tip() == two
    assert [c.sha for c in audit.history()] == [two, one]


def test_merge_from_diverged_writes_a_signed_union(repo: GitRepo, tmp_path: Path) -> None:
    shared, ours_only, theirs_only = repo.commit("a"), repo.commit("b"), repo.commit("c")
    key_a, key_b = new_key(tmp_path, "a"), new_key(tmp_path, "b")
    audit = AuditNotes(repo.path, key_a)
    side = AuditNotes(repo.path, key_b, ref="refs/notes/orlojd/side")
    base = audit.append({shared: ['{"w":"A","seq":1}']}, "base", None)
    repo.git("update-ref", side.ref, base)
    ours = audit.append({shared: ['{"w":"A","seq":2}'], ours_only: ["z", "a"]}, "a", base)
    theirs = side.append({shared: ['{"w":"B","seq":1}', '{"w":"A","seq":1}'], theirs_only: ["9", "1"]}, "b", base)

    merged = audit.merge_from(theirs, "merge side\nheads ...")

    assert git(repo.path, "rev-list", "--parents", "-1", merged).split() == [merged, ours, theirs]
    assert audit.message(merged) == "merge side\nheads ...\n"
    assert show(repo.path, shared) == ['{"w":"A","seq":1}', '{"w":"A","seq":2}', '{"w":"B","seq":1}']  # sorted, once
    assert show(repo.path, ours_only) == ["z", "a"]  # changed on one side only: order kept
    assert show(repo.path, theirs_only) == ["9", "1"]
    assert assert_all_signed(repo.path, allowed(tmp_path, key_a, key_b))
    signer = repo.git(
        "-c", f"gpg.ssh.allowedSignersFile={tmp_path / 'allowed_signers'}", "log", "-1", "--format=%GK", REF
    )
    assert signer == key_a.fingerprint


def test_merge_from_unrelated_histories(repo: GitRepo, tmp_path: Path) -> None:
    commit = repo.commit()
    audit = AuditNotes(repo.path, new_key(tmp_path, "a"))
    side = AuditNotes(repo.path, new_key(tmp_path, "b"), ref="refs/notes/orlojd/side")
    mine = audit.append({commit: ["a1"]}, "m", None)
    theirs = side.append({commit: ["b1"]}, "m", None)

    merged = audit.merge_from(theirs, "merge")

    assert git(repo.path, "rev-list", "--parents", "-1", merged).split() == [merged, mine, theirs]
    assert show(repo.path, commit) == ["a1", "b1"]


def test_merge_from_never_drops_a_note_removed_on_one_side(repo: GitRepo, tmp_path: Path) -> None:
    kept, other = repo.commit("a"), repo.commit("b")
    audit = AuditNotes(repo.path, new_key(tmp_path, "a"))
    side = AuditNotes(repo.path, new_key(tmp_path, "b"), ref="refs/notes/orlojd/side")
    base = audit.append({kept: ["1"]}, "base", None)
    repo.git("update-ref", side.ref, base)
    repo.git("notes", "--ref=orlojd/audit", "remove", kept)  # someone deleted a record by hand (unsigned)
    theirs = side.append({other: ["2"]}, "b", base)

    audit.merge_from(theirs, "merge")

    assert audit.read() == {kept: ["1"], other: ["2"]}


def test_merge_from_unknown_commit(repo: GitRepo, tmp_path: Path) -> None:
    repo.commit()
    with pytest.raises(GitError, match="not found"):
        AuditNotes(repo.path, new_key(tmp_path, "a")).merge_from("f" * 40, "m")


# -- push between writers ----------------------------------------------------------------------------------


def test_two_writers_push_merge_and_converge(origin: tuple[Path, str], tmp_path: Path) -> None:
    bare, commit = origin
    key_a, key_b = new_key(tmp_path, "a"), new_key(tmp_path, "b")
    writer_a = AuditNotes(clone(tmp_path, bare, "a"), key_a, "a <a@test.invalid>")
    writer_b = AuditNotes(clone(tmp_path, bare, "b"), key_b, "b <b@test.invalid>")
    merges: list[tuple[str, str]] = []

    def message(local: str, remote: str) -> str:
        merges.append((local, remote))
        return f"merge heads local={local} remote={remote}"

    a1 = writer_a.append({commit: ['{"w":"A","seq":1}']}, "a1", None)
    assert writer_a.push()
    b1 = writer_b.append({commit: ['{"w":"B","seq":1}']}, "b1", None)
    assert writer_b.push(message_for_merge=message)
    writer_a.append({commit: ['{"w":"A","seq":2}']}, "a2", writer_a.tip())
    assert writer_a.push(message_for_merge=message)

    assert merges[0] == (b1, a1)  # b was rejected once, merged, retried
    assert len(merges) == 2
    on_origin = AuditNotes(bare, key_a)
    lines = on_origin.read()[commit]
    assert sorted(lines) == ['{"w":"A","seq":1}', '{"w":"A","seq":2}', '{"w":"B","seq":1}']
    signers = allowed(tmp_path, key_a, key_b)
    history = on_origin.history()
    assert assert_all_signed(bare, signers) == [c.sha for c in history]
    assert sum(len(c.parents) == 2 for c in history) == 2
    assert history[0].message.startswith("merge heads local=")
    assert on_origin.tip() == writer_a.tip()


def test_push_converges_while_the_remote_keeps_moving(origin: tuple[Path, str], tmp_path: Path) -> None:
    bare, commit = origin
    keys = [new_key(tmp_path, name) for name in ("a", "b", "c")]
    writer_a = AuditNotes(clone(tmp_path, bare, "a"), keys[0])
    writer_b = AuditNotes(clone(tmp_path, bare, "b"), keys[1])
    third = AuditNotes(clone(tmp_path, bare, "c"), keys[2])
    writer_a.append({commit: ["a1"]}, "a1", None)
    assert writer_a.push()
    writer_b.append({commit: ["b1"]}, "b1", None)
    calls: list[str] = []

    def remote_moves(local: str, remote: str) -> str:
        """Between b's fetch and b's push, a third writer publishes (twice, on the first two rounds)."""
        calls.append(remote)
        if len(calls) <= 2:
            third.append({commit: [f"c{len(calls)}"]}, "c", third.tip())
            assert third.push()
        return "merge"

    assert writer_b.push(message_for_merge=remote_moves)

    assert len(calls) == 3
    merged = AuditNotes(bare, keys[0]).read()[commit]
    assert sorted(merged) == ["a1", "b1", "c1", "c2"]
    assert assert_all_signed(bare, allowed(tmp_path, *keys))
    assert git(bare, "rev-parse", REF) == writer_b.tip()


def test_push_gives_up_without_raising_when_always_refused(origin: tuple[Path, str], tmp_path: Path) -> None:
    bare, commit = origin
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'notes are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    writer = AuditNotes(clone(tmp_path, bare, "a"), new_key(tmp_path, "a"))
    writer.append({commit: ["1"]}, "m", None)

    assert writer.push(attempts=2) is False
    assert git(bare, "for-each-ref", "refs/notes") == ""


def test_push_without_notes_or_remote(repo: GitRepo, tmp_path: Path) -> None:
    commit = repo.commit()
    writer = AuditNotes(repo.path, new_key(tmp_path, "a"))

    assert writer.push() is True  # nothing to publish
    assert not writer.remote_exists()
    writer.append({commit: ["1"]}, "m", None)
    with pytest.raises(GitError, match="push"):
        writer.push()


# -- clone setup -------------------------------------------------------------------------------------------


def test_setup_clone_reader_fetches_notes(origin: tuple[Path, str], tmp_path: Path) -> None:
    bare, commit = origin
    writer = AuditNotes(clone(tmp_path, bare, "writer"), new_key(tmp_path, "a"))
    writer.append({commit: ['{"seq":1}']}, "m", None)
    assert writer.push()
    reader = tmp_path / "reader"
    git(tmp_path, "clone", "--quiet", str(bare), str(reader))
    assert git(reader, "for-each-ref", "refs/notes") == ""  # clones do not get notes

    first = setup_clone(reader)
    again = setup_clone(reader)
    git(reader, "fetch", "--quiet", "origin")

    assert first == ["remote.origin.fetch=+refs/notes/orlojd/*:refs/notes/orlojd/*", f"notes.displayRef={REF}"]
    assert again == []
    assert git(reader, "config", "--get-all", "remote.origin.fetch").splitlines() == [
        "+refs/heads/*:refs/remotes/origin/*",
        "+refs/notes/orlojd/*:refs/notes/orlojd/*",
    ]
    assert git(reader, "config", "--get-all", "notes.displayRef") == REF
    assert show(reader, commit) == ['{"seq":1}']
    assert '{"seq":1}' in git(reader, "log", "-1", commit)  # displayRef: plain git log shows the record


def test_setup_clone_writer_fetches_into_tracking_ref(origin: tuple[Path, str], tmp_path: Path) -> None:
    bare, commit = origin
    writer = AuditNotes(clone(tmp_path, bare, "writer"), new_key(tmp_path, "a"))
    writer.append({commit: ["1"]}, "m", None)
    assert writer.push()
    second = tmp_path / "second"
    git(tmp_path, "clone", "--quiet", str(bare), str(second))
    setup_clone(second)  # first a reader, then promoted

    changed = setup_clone(second, writer=True)
    git(second, "fetch", "--quiet", "origin")

    assert changed == [
        "remote.origin.fetch=+refs/notes/orlojd/*:refs/notes/remotes/origin/orlojd/*",
        "unset remote.origin.fetch=+refs/notes/orlojd/*:refs/notes/orlojd/*",
    ]
    assert setup_clone(second, writer=True) == []
    assert git(second, "rev-parse", TRACKING) == writer.tip()
    assert AuditNotes(second, new_key(tmp_path, "b")).read(TRACKING) == {commit: ["1"]}


def test_setup_clone_unknown_remote(repo: GitRepo) -> None:
    with pytest.raises(GitError, match="no remote 'origin'"):
        setup_clone(repo.path)
