"""The audit outbox: events already in the store, drained in batches into signed git notes.

The store's ``governance_events`` table is the outbox: every event is written there in the
transaction of the change it explains (``adapters/audit.py``, the store's task triggers). The
daemon drains it into ``refs/notes/orlojd/audit`` of the repository it runs (the mirror of a
remote, or the local repository), one signed notes commit per batch, and pushes the notes to
the origin.

Where the drain stands is kept in the notes themselves, never beside them: each notes commit's
message anchors every writer's chain head (``core.audit_records``: seq, hash and the ``eid`` of
the last event noted). A drain reads its writer's head from the tip, takes the events after that
``eid``, chains them on, and moves the ref with a compare-and-swap. So a crash anywhere loses
nothing and duplicates nothing: events not yet in a notes commit are drained by the next run;
events that are in one are skipped. A lost race (another process moved the ref) re-reads the tip
and retries. The writer id is the store's own id (``store-<16 hex>``): one chain per store.

Records are attached to the commit that was running when the event happened (its
``revision``); events without one (a vote cast from the CLI) to the applied revision at drain
time. Once a commit's note reaches NOTE_MAX (1 MiB), its further records go to the notes of
"part" objects (small blobs naming the commit and part), so a long-running revision does not
make every batch rewrite an ever larger note. Details are scrubbed of prompts, outputs,
previews and secrets (``core.audit_records``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orlojd.adapters.audit import AuditEvent, AuditLog
from orlojd.adapters.gitrepo import run_git
from orlojd.adapters.notes import AuditNotes, NotesMoved
from orlojd.adapters.sshsig import SigningKey
from orlojd.adapters.store import Store
from orlojd.core.audit_records import Head, chain, head_of, heads_message, merged_heads, parse_heads
from orlojd.errors import GitError, OrlojError

log = logging.getLogger("orlojd.audit")

BATCH = 2000  # events per notes commit, at most
NOTE_MAX = 1 << 20  # bytes a commit's note grows to before its records continue on a part object
CAS_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Drained:
    records: int  # noted by this drain
    tip: str | None  # the notes ref after it
    pushed: bool | None  # None: nothing to push, or no remote


class AuditOutbox:
    """Drains one store's events into the notes of one repository; one drain at a time per process."""

    def __init__(
        self,
        store: Store,
        repo: Path,
        key: SigningKey,
        remote: str | None = None,
        ident: str = "orlojd <orlojd@localhost>",
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.repo = repo
        self.remote = remote
        self.batch = batch
        self.writer = f"store-{store.store_id_one()}"
        self.notes = AuditNotes(repo, key, ident)
        self.audit = AuditLog(store)
        self._unpushed = remote is not None  # after a restart, push whatever an earlier run could not
        self._parts: dict[tuple[str, int], str] = {}
        self._heads: tuple[str, dict[str, Head]] | None = None  # the last tip read and its heads (commits never change)

    def heads(self, tip: str | None) -> dict[str, Head]:
        """The writers' heads anchored in ``tip``; an unreadable anchor stops the drain (never guessed)."""
        if tip is None:
            return {}
        if self._heads is not None and self._heads[0] == tip:  # an idle drain reads the same tip every tick
            return dict(self._heads[1])
        try:
            heads = parse_heads(self.notes.message(tip))
        except ValueError as exc:
            raise OrlojError(
                f"the audit notes tip {tip[:12]} has malformed heads ({exc}); not writing on top of it",
                f"run orlojd audit verify --repo {self.repo}; restore {self.notes.ref} to the last good tip",
            ) from None
        self._heads = (tip, heads)
        return dict(heads)

    def drain_once(self, push: bool = True) -> Drained:
        """Note the events after this writer's head (one batch), then push (unless ``push`` is
        False: ``drain_all`` pushes once at the end); see the module doc."""
        for _ in range(CAS_ATTEMPTS):
            tip = self.notes.tip()
            heads = self.heads(tip)
            mine = heads.get(self.writer)
            events = self.audit.drainable_all(after_id=(mine.eid or 0) if mine else 0, limit=self.batch)
            fallback = self.store.applied_revision_one() or _head_commit(self.repo)
            if not events or (fallback is None and any(e.revision is None for e in events)):
                # nothing new, or nothing to attach it to yet (no commit at all): the events wait
                return Drained(0, tip, self._push() if push and self._unpushed else None)
            records = chain(self.writer, mine, [_item(e, fallback) for e in events])
            notes: dict[str, list[str]] = defaultdict(list)
            sizes = self.notes.sizes(tip)
            for record in records:
                assert record.revision is not None  # every event has one, or the fallback
                notes[self._target(record.revision, sizes)].append(record.line())
            message = heads_message({**heads, self.writer: head_of(records)}, f"orlojd audit: {len(records)} records")
            try:
                tip = self.notes.append(notes, message, tip)
            except NotesMoved:
                continue  # another process wrote first: read its tip and chain on from there
            self._unpushed = self.remote is not None
            log.debug(
                "noted %d audit records",
                len(records),
                extra={"event": "audit_noted", "records": len(records), "tip": tip, "writer": self.writer},
            )
            return Drained(len(records), tip, self._push() if push and self._unpushed else None)
        raise NotesMoved(self.notes.ref, None, self.notes.tip())  # kept moving: CAS_ATTEMPTS appends lost the race

    def _target(self, revision: str, sizes: dict[str, int]) -> str:
        """The object whose note takes ``revision``'s records: the commit itself until its note
        reaches NOTE_MAX, then part objects, each a small blob naming the commit and its part
        number (every record carries its revision anyway). Without this, each batch would
        rewrite a note that grows for as long as one revision runs: quadratic."""
        target, part = revision, 1
        while sizes.get(target, 0) >= NOTE_MAX:
            part += 1
            target = self._part(revision, part)
        return target

    def _part(self, revision: str, part: int) -> str:
        name = (revision, part)
        if name not in self._parts:
            text = f"orlojd audit records of commit {revision}, part {part}\n".encode()
            self._parts[name] = run_git(self.repo, "hash-object", "-w", "--stdin", input_bytes=text).decode().strip()
        return self._parts[name]

    def drain_all(self, rounds: int = 1000) -> int:
        """Drain batch after batch until the outbox is empty, then push once; how many records
        were noted. The daemon's periodic job, so a backlog (after a restart) goes out at once."""
        total = 0
        for _ in range(rounds):
            drained = self.drain_once(push=False)
            total += drained.records
            if drained.records == 0:
                break
        if self._unpushed:
            self._push()
        return total

    def _push(self) -> bool:
        assert self.remote is not None
        try:
            pushed = self.notes.push(self.remote, message_for_merge=self._merge_message)
        except GitError as exc:
            log.warning("pushing audit notes failed: %s", exc, extra={"event": "audit_push_error"})
            return False
        self._unpushed = not pushed
        if not pushed:
            log.warning("audit notes not pushed yet; retrying on the next drain", extra={"event": "audit_push_retry"})
        return pushed

    def _merge_message(self, local: str, remote: str) -> str:
        return heads_message(merged_heads(self.heads(local), self.heads(remote)), "orlojd audit merge")


def _item(event: AuditEvent, fallback: str | None) -> dict[str, Any]:
    """One store event as the fields of an audit record (``core.audit_records.chain``)."""
    detail: dict[str, Any] = dict(event.detail)
    for name in ("verdict", "reason", "tool", "agent"):
        value = getattr(event, name)
        if value is not None:
            detail[name] = value
    subject = event.subject or (f"task:{event.task_id}" if event.task_id else event.agent or "")
    return {
        "ts": event.at,
        "actor": event.actor or "daemon",
        "event": event.event,
        "subject": subject,
        "revision": event.revision or fallback,
        "eid": event.id,
        "detail": detail,
    }


def _head_commit(repo: Path) -> str | None:
    try:
        return run_git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}").decode().strip() or None
    except GitError:
        return None


def periodic_drain(outbox: Callable[[], AuditOutbox | None]) -> Callable[[], None]:
    """A scheduler job: drain once if there is an outbox yet; errors are logged, never raised."""

    def job() -> None:
        current = outbox()
        if current is None:
            return
        try:
            current.drain_all(rounds=50)
        except Exception as exc:  # the events stay in the store; the next run retries
            log.warning("audit drain failed: %s", exc, extra={"event": "audit_drain_error"})

    return job
