"""The audit outbox end to end: store events drained into signed git notes, verified, shared through
a remote by several writers, tampered with, and used to rebuild an empty store.

Real git repositories (``orlojd init`` demo repositories, a bare origin and its clones), real
stores (``store`` runs on SQLite and PostgreSQL), real keys (``sshsig.ensure_key`` under a state
folder, like the daemon's). What is checked is what an auditor sees: the note lines at the tip
of ``refs/notes/orlojd/audit`` and ``audit_verify.verify``'s verdicts.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import fresh_postgres_database, git

from orlojd.adapters import clock, sshsig
from orlojd.adapters.audit import AuditEvent, AuditLog
from orlojd.adapters.audit import insert as audit_insert
from orlojd.adapters.gitrepo import run_git
from orlojd.adapters.notes import REF, AuditNotes, read_notes, setup_clone
from orlojd.adapters.queue import TaskQueue
from orlojd.adapters.sshsig import SigningKey
from orlojd.adapters.store import Store
from orlojd.core.audit_records import AuditRecord, chain, line_hash, parse_heads, parse_line, records_of
from orlojd.engine import audit_outbox
from orlojd.engine.applying import apply_revision
from orlojd.engine.audit_outbox import AuditOutbox
from orlojd.engine.audit_verify import VerifyReport, daemon_allowed_signers, verify
from orlojd.engine.rebuild import RebuildRefused, rebuild
from orlojd.engine.workspace import open_workspace
from orlojd.scaffold import init_repository

IDENT = "orlojd <orlojd@test.invalid>"
LEASE = timedelta(seconds=30)


# -- helpers ------------------------------------------------------------------------------------------------


def daemon_key(tmp_path: Path, name: str) -> tuple[SigningKey, Path]:
    """A daemon's generated key under its own state folder; (key, state folder)."""
    state = tmp_path / f"state-{name}"
    key, generated = sshsig.ensure_key(None, None, state, {})
    assert generated
    return key, state


def signers(tmp_path: Path, *keys: SigningKey, name: str = "allowed_signers") -> Path:
    path = tmp_path / name
    path.write_text("".join(sshsig.allowed_signers_line(k, f"w{i}@test.invalid") + "\n" for i, k in enumerate(keys)))
    return path


def all_lines(repo: Path) -> list[str]:
    return [line for lines in read_notes(repo).values() for line in lines]


def noted(repo: Path, writer: str | None = None) -> list[AuditRecord]:
    """The records at the tip (of ``writer`` only, if given), by writer then seq."""
    return [r for r in records_of(all_lines(repo)) if writer is None or r.w == writer]


def events(store: Store) -> list[AuditEvent]:
    return AuditLog(store).list_all()


def decision(number: int, revision: str | None = None, task_id: str | None = None) -> AuditEvent:
    return AuditEvent(
        "decision",
        clock.now(),
        task_id=task_id,
        agent="Agent/default/compliance-checker",
        tool=f"tool-{number}",
        verdict="allow",
        reason="allowed",
        revision=revision,
        detail={"n": number, "prompt": f"secret prompt {number}"},
    )


def kinds(report: VerifyReport) -> set[str]:
    return {p.kind for p in report.problems}


@contextmanager
def another_store(db_url: str, tmp_path: Path, name: str) -> Iterator[tuple[str, Store]]:
    """A second empty store of the same kind as ``db_url`` (SQLite file, or a throw-away PostgreSQL db)."""

    @contextmanager
    def url() -> Iterator[str]:
        if db_url.startswith("sqlite"):
            yield f"sqlite:///{tmp_path / f'{name}.db'}"
        else:
            with fresh_postgres_database() as pg:
                yield pg

    with url() as found:
        opened = Store.open(found)
        try:
            yield found, opened
        finally:
            opened.close()


def applied_demo(tmp_path: Path, db_url: str, store: Store, name: str = "agents") -> tuple[Path, str]:
    """An ``orlojd init`` repository applied into ``store``; (its path, the applied commit)."""
    repo = tmp_path / name
    head = init_repository(repo)
    apply_revision(open_workspace(repo, db_url), store, "HEAD")
    return repo, head


# -- 1. drain ---------------------------------------------------------------------------------------------


def test_drain_notes_every_event_once_on_its_revision_and_continues_the_chain(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    repo, head = applied_demo(tmp_path, db_url, store)
    git(repo, "commit", "--quiet", "--allow-empty", "--no-gpg-sign", "-m", "later, not applied")
    later = git(repo, "rev-parse", "HEAD")
    AuditLog(store).record_run(decision(1), decision(2, revision=later), decision(3))
    key, state = daemon_key(tmp_path, "a")
    outbox = AuditOutbox(store, repo, key, ident=IDENT)
    stored = events(store)
    assert [e.event for e in stored][:2] == ["task_queued", "reconcile_applied"]  # from the apply
    assert len(stored) == 5

    drained = outbox.drain_once()

    assert (drained.records, drained.tip, drained.pushed) == (5, git(repo, "rev-parse", REF), None)
    records = noted(repo)
    assert [r.w for r in records] == [outbox.writer] * 5
    assert outbox.writer == f"store-{store.store_id_one()}"
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert [r.eid for r in records] == [e.id for e in stored]
    assert [(r.event, r.actor) for r in records] == [(e.event, e.actor or "daemon") for e in stored]
    # attached to the revision the event names; the one without to the applied revision
    notes = read_notes(repo)
    assert sorted(notes) == sorted({head, later})
    assert [parse_line(line).eid for line in notes[later]] == [stored[3].id]
    assert [parse_line(line).eid for line in notes[head]] == [stored[i].id for i in (0, 1, 2, 4)]
    assert all(r.revision == (later if r.eid == stored[3].id else head) for r in records)
    # prompts never travel
    assert "secret prompt" not in "\n".join(all_lines(repo))
    assert records[2].detail["prompt"]["bytes"] > 0
    # progress is anchored in the signed tip
    heads = parse_heads(git(repo, "log", "-1", "--format=%B", REF))
    assert heads[outbox.writer].seq == 5 and heads[outbox.writer].eid == stored[-1].id
    allowed = daemon_allowed_signers(state, tmp_path / "daemon_signers")
    report = verify(repo, allowed)
    assert report.ok, report.problems
    assert (report.tip, report.commits, report.records) == (drained.tip, 1, 5)

    again = outbox.drain_once()
    assert (again.records, again.tip) == (0, drained.tip)
    assert noted(repo) == records

    AuditLog(store).record_run(decision(4), decision(5))
    assert outbox.drain_all() == 2
    more = noted(repo)
    assert more[:5] == records
    assert [r.seq for r in more[5:]] == [6, 7]
    assert more[5].prev == line_hash(records[4].line())
    assert more[6].prev == line_hash(more[5].line())
    assert [r.eid for r in more] == [e.id for e in events(store)]
    assert git(repo, "rev-parse", f"{REF}^") == drained.tip
    report = verify(repo, allowed)
    assert report.ok, report.problems
    assert (report.commits, report.records) == (2, 7)


# -- 2. crashes ---------------------------------------------------------------------------------------------


def test_a_crash_before_the_notes_write_loses_nothing_and_after_it_duplicates_nothing(
    tmp_path: Path, db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = applied_demo(tmp_path, db_url, store)
    AuditLog(store).record_run(*(decision(n) for n in range(4)))
    key, state = daemon_key(tmp_path, "a")
    allowed = daemon_allowed_signers(state, tmp_path / "signers")

    # events in the outbox, the process dies before draining: the next process drains them all
    crashed = AuditOutbox(store, repo, key, ident=IDENT)
    assert crashed.heads(crashed.notes.tip()) == {}
    del crashed
    restarted = AuditOutbox(store, repo, key, ident=IDENT, batch=2)
    assert restarted.drain_once().records == 2

    # the process dies inside the notes write: objects written, the ref never moved
    def crash(self: AuditNotes, new: str, expected: str | None) -> None:
        raise RuntimeError("killed between writing the notes commit and moving the ref")

    before = git(repo, "rev-parse", REF)
    with monkeypatch.context() as patch:
        patch.setattr(AuditNotes, "_swap", crash)
        with pytest.raises(RuntimeError, match="killed"):
            AuditOutbox(store, repo, key, ident=IDENT, batch=2).drain_once()
    assert git(repo, "rev-parse", REF) == before
    assert len(noted(repo)) == 2

    after_crash = AuditOutbox(store, repo, key, ident=IDENT)
    assert after_crash.drain_all() == 4
    records = noted(repo)
    assert [r.eid for r in records] == [e.id for e in events(store)]
    assert [r.seq for r in records] == list(range(1, 7))

    # the process dies right after a notes append: a new one finds its progress in the tip, notes nothing
    tip = git(repo, "rev-parse", REF)
    fresh = AuditOutbox(store, repo, key, ident=IDENT)
    assert fresh.drain_once().records == 0
    assert fresh.drain_all() == 0
    assert git(repo, "rev-parse", REF) == tip
    assert noted(repo) == records
    assert len(all_lines(repo)) == len(set(all_lines(repo))) == 6
    assert verify(repo, allowed).ok


# -- 3. two stores, one repository, a lost compare-and-swap --------------------------------------------------


def test_two_stores_on_one_repository_race_and_both_chains_stay_whole(
    tmp_path: Path, db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = applied_demo(tmp_path, db_url, store)
    key_a, _ = daemon_key(tmp_path, "a")
    key_b, _ = daemon_key(tmp_path, "b")
    with another_store(db_url, tmp_path, "b") as (url_b, store_b):
        apply_revision(open_workspace(repo, url_b), store_b, "HEAD")
        a = AuditOutbox(store, repo, key_a, ident=IDENT)
        b = AuditOutbox(store_b, repo, key_b, ident=IDENT)
        assert a.writer != b.writer

        AuditLog(store).record_run(decision(1))
        AuditLog(store_b).record_run(decision(2))
        assert a.drain_once().records == 3
        b_first = b.drain_once()
        assert b_first.records == 3
        AuditLog(store).record_run(decision(3))
        assert a.drain_once().records == 1

        # a reads the tip, b appends before a's compare-and-swap: a loses, re-reads, chains on b's tip
        AuditLog(store).record_run(decision(4), decision(5))
        AuditLog(store_b).record_run(decision(6))
        real_append = a.notes.append
        seen: list[str | None] = []
        b_tips = [b_first.tip]

        def racing_append(notes: Mapping[str, Sequence[str]], message: str, expected: str | None) -> str:
            seen.append(expected)
            if len(seen) == 1:
                raced = b.drain_once()
                assert raced.records == 1
                b_tips.append(raced.tip)
            return real_append(notes, message, expected)

        monkeypatch.setattr(a.notes, "append", racing_append)
        won = a.drain_once()
        assert won.records == 2
        assert seen == [seen[0], b_tips[-1]]  # lost once against b's commit, then chained on it
        assert git(repo, "rev-parse", f"{REF}^") == b_tips[-1]
        assert git(repo, "rev-parse", f"{REF}^^") == seen[0]

        for outbox, its_store in ((a, store), (b, store_b)):
            mine = noted(repo, outbox.writer)
            assert [r.eid for r in mine] == [e.id for e in events(its_store)]
            assert [r.seq for r in mine] == list(range(1, len(mine) + 1))
        assert Counter(r.w for r in noted(repo)) == {a.writer: 6, b.writer: 4}
        heads = parse_heads(git(repo, "log", "-1", "--format=%B", REF))
        assert {w: h.seq for w, h in heads.items()} == {a.writer: 6, b.writer: 4}

        report = verify(repo, signers(tmp_path, key_a, key_b), remember=False)
        assert report.ok, report.problems
        assert report.commits == 5
        only_a = verify(repo, signers(tmp_path, key_a, name="only_a"), remember=False)
        assert kinds(only_a) == {"unsigned"}  # every commit is checked, not only the tip
        assert {p.commit for p in only_a.problems} == set(b_tips)


# -- 4. two writers and a moving remote ---------------------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare origin holding an ``orlojd init`` repository's main branch."""
    seed = tmp_path / "seed"
    init_repository(seed)
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch", "main", str(bare))
    git(seed, "push", "--quiet", str(bare), "HEAD:main")
    return bare


def clone(tmp_path: Path, origin: Path, name: str, writer: bool) -> Path:
    path = tmp_path / name
    git(tmp_path, "clone", "--quiet", str(origin), str(path))
    setup_clone(path, writer=writer)
    return path


def test_writers_on_three_clones_share_the_notes_through_the_origin(
    tmp_path: Path, db_url: str, store: Store, origin: Path
) -> None:
    with (
        another_store(db_url, tmp_path, "two") as (url2, store2),
        another_store(db_url, tmp_path, "three") as (
            url3,
            store3,
        ),
    ):
        writers: list[tuple[Store, AuditOutbox, SigningKey]] = []
        for name, url, its_store in (("one", db_url, store), ("two", url2, store2), ("three", url3, store3)):
            path = clone(tmp_path, origin, name, writer=True)
            apply_revision(open_workspace(path, url), its_store, "HEAD")
            key, _ = daemon_key(tmp_path, name)
            writers.append((its_store, AuditOutbox(its_store, path, key, remote="origin", ident=IDENT), key))
        (s1, one, _), (s2, two, _), (s3, three, _) = writers

        AuditLog(s1).record_run(decision(1))
        AuditLog(s2).record_run(decision(2), decision(3))
        first = one.drain_once()
        assert (first.records, first.pushed) == (3, True)
        second = two.drain_once()  # rejected, fetches one's notes, merges, pushes
        assert (second.records, second.pushed) == (4, True)
        AuditLog(s1).record_run(decision(4))
        AuditLog(s3).record_run(decision(5))
        assert three.drain_once().pushed is True  # the remote moved again, in between
        moved = one.drain_once()  # one's push is rejected twice over now: merges two's and three's
        assert (moved.records, moved.pushed) == (1, True)
        AuditLog(s2).record_run(decision(6))
        assert two.drain_once().pushed is True
        assert git(origin, "rev-parse", REF) == git(two.repo, "rev-parse", REF)

        reader = clone(tmp_path, origin, "reader", writer=False)
        git(reader, "fetch", "--quiet", "origin")
        assert git(reader, "rev-parse", REF) == git(origin, "rev-parse", REF)
        lines = all_lines(reader)
        records = records_of(lines)
        assert len(lines) == len(set(lines)) == len(records)
        assert len({(r.w, r.seq) for r in records}) == len(records)
        for its_store, outbox, _ in writers:
            mine = [r for r in records if r.w == outbox.writer]
            assert [r.eid for r in mine] == [e.id for e in events(its_store)], outbox.writer
            assert [r.seq for r in mine] == list(range(1, len(mine) + 1))
        assert len(records) == sum(len(events(s)) for s, _, _ in writers) == 4 + 5 + 3
        merges = [c for c in git(reader, "rev-list", "--merges", REF).split()]
        assert merges  # the writers' histories were joined, never forced
        report = verify(reader, signers(tmp_path, *(k for _, _, k in writers)))
        assert report.ok, report.problems
        assert report.records == len(records)


# -- 5. tampering --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Drained:
    repo: Path
    key: SigningKey
    allowed: Path
    outbox: AuditOutbox
    store: Store
    annotated: str  # the commit the records are attached to


@pytest.fixture
def drained(tmp_path: Path) -> Iterator[Drained]:
    """A repository whose notes hold six records of one writer in two signed commits (SQLite: git is under test)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    opened = Store.open(url)
    try:
        repo, head = applied_demo(tmp_path, url, opened)
        key, state = daemon_key(tmp_path, "daemon")
        outbox = AuditOutbox(opened, repo, key, ident=IDENT, batch=3)
        AuditLog(opened).record_run(*(decision(n) for n in range(4)))
        assert outbox.drain_all() == 6
        allowed = daemon_allowed_signers(state, tmp_path / "daemon_signers")
        before = verify(repo, allowed, remember=False)
        assert before.ok and (before.commits, before.records) == (2, 6), before.problems
        assert list(read_notes(repo)) == [head]
        yield Drained(repo, key, allowed, outbox, opened, head)
    finally:
        opened.close()


def tree_with(repo: Path, annotated: str, lines: list[str]) -> str:
    """The tip's notes tree with ``annotated``'s note replaced by ``lines``."""
    blob = run_git(repo, "hash-object", "-w", "--stdin", input_bytes="".join(f"{x}\n" for x in lines).encode())
    entries = []
    for entry in git(repo, "ls-tree", REF).splitlines():
        meta, _, path = entry.partition("\t")
        if path == annotated:
            meta = f"100644 blob {blob.decode().strip()}"
        entries.append(f"{meta}\t{path}\n")
    return run_git(repo, "mktree", input_bytes="".join(entries).encode()).decode().strip()


def commit_over_tip(repo: Path, tree: str, key: SigningKey | None, parents: list[str] | None = None) -> str:
    """A notes commit with ``tree`` and the tip's message, signed by ``key`` (None: unsigned); the ref moved to it."""
    tip = git(repo, "rev-parse", REF)
    message = run_git(repo, "cat-file", "commit", tip).partition(b"\n\n")[2].decode()
    parents = [tip] if parents is None else parents
    if key is None:
        sha = git(repo, "commit-tree", "--no-gpg-sign", tree, *(x for p in parents for x in ("-p", p)), "-m", message)
    else:
        raw = sshsig.signed_commit(key, tree, parents, IDENT, int(clock.now().timestamp()), message)
        sha = run_git(repo, "hash-object", "-t", "commit", "-w", "--stdin", input_bytes=raw).decode().strip()
    git(repo, "update-ref", REF, sha, tip)
    return str(sha)


def edited(lines: list[str], index: int) -> list[str]:
    """One byte of record ``index`` changed (still a canonical record: only its hash differs)."""
    out = list(lines)
    assert '"actor":"daemon"' in out[index]
    out[index] = out[index].replace('"actor":"daemon"', '"actor":"daemoN"', 1)
    parse_line(out[index])
    return out


def test_an_unsigned_edit_is_unsigned(drained: Drained) -> None:
    lines = read_notes(drained.repo)[drained.annotated]
    forged = commit_over_tip(drained.repo, tree_with(drained.repo, drained.annotated, edited(lines, 2)), None)

    report = verify(drained.repo, drained.allowed, remember=False)

    unsigned = [p for p in report.problems if p.kind == "unsigned"]
    assert [p.commit for p in unsigned] == [forged]
    assert "chain" in kinds(report)  # and the edit itself shows


def test_an_edit_resigned_with_the_daemons_own_key_breaks_the_chain(drained: Drained) -> None:
    lines = read_notes(drained.repo)[drained.annotated]
    commit_over_tip(drained.repo, tree_with(drained.repo, drained.annotated, edited(lines, 2)), drained.key)

    report = verify(drained.repo, drained.allowed, remember=False)

    assert kinds(report) == {"chain"}, report.problems
    assert any("seq 4" in p.message and "prev" in p.message for p in report.problems), report.problems


def test_an_edit_of_the_last_record_resigned_breaks_the_anchored_head(drained: Drained) -> None:
    lines = read_notes(drained.repo)[drained.annotated]
    commit_over_tip(drained.repo, tree_with(drained.repo, drained.annotated, edited(lines, 5)), drained.key)

    report = verify(drained.repo, drained.allowed, remember=False)

    assert kinds(report) == {"chain"}, report.problems
    assert any("anchored head" in p.message for p in report.problems), report.problems


def test_a_deleted_record_resigned_breaks_the_chain(drained: Drained) -> None:
    lines = read_notes(drained.repo)[drained.annotated]
    commit_over_tip(drained.repo, tree_with(drained.repo, drained.annotated, lines[:3] + lines[4:]), drained.key)

    report = verify(drained.repo, drained.allowed, remember=False)

    assert kinds(report) == {"chain"}, report.problems
    assert report.records == 5


def test_two_records_bodies_swapped_keeping_their_seq_breaks_the_chain(drained: Drained) -> None:
    lines = read_notes(drained.repo)[drained.annotated]
    one, two = parse_line(lines[1]), parse_line(lines[3])
    kept = ("w", "seq", "prev")
    swapped = [
        dataclasses.replace(one, **{f: getattr(two, f) for f in AuditRecord.__dataclass_fields__ if f not in kept}),
        dataclasses.replace(two, **{f: getattr(one, f) for f in AuditRecord.__dataclass_fields__ if f not in kept}),
    ]
    assert (swapped[0].seq, swapped[0].eid, swapped[1].seq, swapped[1].eid) == (2, two.eid, 4, one.eid)
    forged = [lines[0], swapped[0].line(), lines[2], swapped[1].line(), *lines[4:]]
    commit_over_tip(drained.repo, tree_with(drained.repo, drained.annotated, forged), drained.key)

    report = verify(drained.repo, drained.allowed, remember=False)

    assert kinds(report) == {"chain"}, report.problems


def test_the_tip_resigned_with_an_unknown_key_is_unsigned(drained: Drained, tmp_path: Path) -> None:
    tip = git(drained.repo, "rev-parse", REF)
    stranger, _ = daemon_key(tmp_path, "stranger")
    forged = commit_over_tip(
        drained.repo,
        git(drained.repo, "rev-parse", f"{tip}^{{tree}}"),
        stranger,
        [git(drained.repo, "rev-parse", f"{tip}^")],
    )
    assert git(drained.repo, "rev-parse", f"{forged}^{{tree}}") == git(drained.repo, "rev-parse", f"{tip}^{{tree}}")

    report = verify(drained.repo, drained.allowed, remember=False)

    assert kinds(report) == {"unsigned"}, report.problems
    assert [p.commit for p in report.problems] == [forged]


def test_a_rollback_to_an_older_signed_tip_is_caught(drained: Drained) -> None:
    older = git(drained.repo, "rev-parse", REF)
    assert verify(drained.repo, drained.allowed).ok  # remembered
    AuditLog(drained.store).record_run(decision(10), decision(11))
    assert drained.outbox.drain_all() == 2
    newer = verify(drained.repo, drained.allowed)
    assert newer.ok and newer.records == 8, newer.problems

    git(drained.repo, "update-ref", REF, older)
    report = verify(drained.repo, drained.allowed)

    assert kinds(report) == {"rollback"}, report.problems  # every commit signed, the chains whole: only the rollback
    assert report.problems[0].commit == older
    assert not verify(drained.repo, drained.allowed).ok  # a failed check does not forget what it saw


# -- 6. rebuild ----------------------------------------------------------------------------------------------


def inventory(store: Store) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    digests = store.inventory_digests_all()
    bodies = store.inventory_bodies_some(keys=digests)
    return sorted((k.kind, k.namespace, k.name, d, bodies[k]) for k, d in digests.items())


def test_rebuild_restores_revision_inventory_and_audit_index_from_the_repository(
    tmp_path: Path, db_url: str, store: Store
) -> None:
    repo, first = applied_demo(tmp_path, db_url, store)
    ws = open_workspace(repo, db_url)
    task = repo / "tasks" / "check-q3-reports.yaml"
    task.write_text(task.read_text().replace("reports/2026-q3", "reports/2026-q4"))
    git(repo, "commit", "--quiet", "--no-gpg-sign", "-am", "next quarter")
    second = git(repo, "rev-parse", "HEAD")
    assert apply_revision(ws, store, "HEAD").written
    queue = TaskQueue(store)
    now = clock.now() + timedelta(seconds=1)
    ran: list[str] = []
    for worker in ("w1", "w2"):
        claim = queue.claim_one(worker, now, LEASE)
        assert claim is not None
        assert queue.complete_run(claim.id, worker, claim.fencing_token, now, {"ok": True})
        ran.append(claim.id)
    assert queue.claim_one("w3", now, LEASE) is None
    AuditLog(store).record_run(decision(1, task_id=ran[-1]), decision(2), decision(3, revision=first))
    key, state = daemon_key(tmp_path, "daemon")
    outbox = AuditOutbox(store, repo, key, ident=IDENT)
    assert outbox.drain_all() == len(events(store))
    original = noted(repo)
    assert {r.event for r in original} >= {"task_queued", "task_started", "task_completed", "reconcile_applied"}
    assert store.applied_revision_one() == second

    with another_store(db_url, tmp_path, "rebuilt") as (url, rebuilt):
        result = rebuild(open_workspace(repo, url), rebuilt)

        assert (result.revision, result.writer, result.events) == (second, outbox.writer, len(original))
        assert rebuilt.applied_revision_one() == store.applied_revision_one() == second
        assert inventory(rebuilt) == inventory(store)
        assert result.objects == len(inventory(store))
        assert TaskQueue(rebuilt).list_all() == []  # the tasks ran before: nothing queued again
        assert rebuilt.store_id_one() == store.store_id_one()

        restored = events(rebuilt)
        assert [(e.id, e.event, e.actor, e.subject, e.revision) for e in restored] == [
            (r.eid, r.event, r.actor, r.subject, r.revision) for r in original
        ]
        # what the outbox would make of the rebuilt events is what the notes hold, byte for byte
        regenerated = chain(outbox.writer, None, [audit_outbox._item(e, second) for e in restored])
        assert [(r.event, r.eid, r.subject, r.revision, r.actor) for r in regenerated] == [
            (r.event, r.eid, r.subject, r.revision, r.actor) for r in original
        ]
        assert [r.line() for r in regenerated] == [r.line() for r in original]

        continued = AuditOutbox(rebuilt, repo, key, ident=IDENT)
        assert continued.writer == outbox.writer
        tip = git(repo, "rev-parse", REF)
        assert continued.drain_once().records == 0
        assert git(repo, "rev-parse", REF) == tip
        AuditLog(rebuilt).record_run(decision(4))
        assert events(rebuilt)[-1].id == (original[-1].eid or 0) + 1  # the ids continue past the restored ones
        assert continued.drain_once().records == 1
        after = noted(repo)
        assert after[:-1] == original
        assert (after[-1].seq, after[-1].prev) == (len(original) + 1, line_hash(original[-1].line()))
        report = verify(repo, daemon_allowed_signers(state, tmp_path / "signers"), remember=False)
        assert report.ok, report.problems

        with pytest.raises(RebuildRefused):
            rebuild(open_workspace(repo, url), rebuilt)
    with pytest.raises(RebuildRefused):
        rebuild(ws, store)


# -- bugs found (fixed) ------------------------------------------------------------------------------------------------


def test_a_forged_tip_with_a_malformed_head_line_is_reported_not_raised(drained: Drained) -> None:
    tree = git(drained.repo, "rev-parse", f"{REF}^{{tree}}")
    tip = git(drained.repo, "rev-parse", REF)
    forged = git(drained.repo, "commit-tree", "--no-gpg-sign", tree, "-p", tip, "-m", "x\n\nhead w=someone seq=oops")
    git(drained.repo, "update-ref", REF, forged, tip)

    report = verify(drained.repo, drained.allowed, remember=False)

    assert [p.commit for p in report.problems if p.kind == "unsigned"] == [forged]


@pytest.mark.postgres
def test_an_event_committed_after_a_higher_id_is_still_noted(tmp_path: Path, pg_url: str) -> None:
    opened = Store.open(pg_url)
    try:
        repo, _ = applied_demo(tmp_path, pg_url, opened)
        key, _ = daemon_key(tmp_path, "daemon")
        outbox = AuditOutbox(opened, repo, key, ident=IDENT)
        with opened.engine.connect() as slow:  # e.g. a worker process recording a gate decision
            slow.begin()
            audit_insert(slow, decision(1))  # takes the next id, commits later
            AuditLog(opened).record_run(decision(2))  # the id after it, committed first
            # An insert in flight: nothing is final, so nothing is noted (and nothing skipped).
            assert outbox.drain_once().records == 0
            slow.commit()
        outbox.drain_all()
        assert sorted(r.eid or 0 for r in noted(repo)) == [e.id for e in events(opened)]
    finally:
        opened.close()


# -- a long-running revision ------------------------------------------------------------------------------------


def test_a_full_note_continues_on_part_objects_and_nothing_is_lost(
    tmp_path: Path, db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_outbox, "NOTE_MAX", 4000)  # a few records fill a note
    repo, head = applied_demo(tmp_path, db_url, store)
    key, state = daemon_key(tmp_path, "a")
    outbox = AuditOutbox(store, repo, key, ident=IDENT, batch=5)
    for round_ in range(6):
        AuditLog(store).record_run(*(decision(round_ * 10 + n) for n in range(10)))
        outbox.drain_all()
    notes = read_notes(repo)
    assert len(notes[head]) < 40, "the commit's own note stopped growing near NOTE_MAX"
    parts = [oid for oid in notes if oid != head]
    assert parts, "its further records went to part objects"
    for oid in parts:
        assert f"records of commit {head}, part " in git(repo, "cat-file", "-p", oid)
    records = noted(repo)
    assert sorted(r.eid or 0 for r in records) == [e.id for e in events(store)], "every event once"
    assert {r.revision for r in records} == {head}
    assert verify(repo, daemon_allowed_signers(state, tmp_path / "signers"), remember=False).ok
