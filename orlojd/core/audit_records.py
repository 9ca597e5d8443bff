"""Audit records as JSON lines in git notes: the line format, the per-writer hash chain, the
heads anchored in the signed notes commit message, and verification.

Pure: no git, no clock, no I/O. The git side (``adapters``) turns outbox events into records
with ``chain``, writes ``AuditRecord.line()`` into notes under ``refs/notes/orlojd/audit``,
puts ``heads_message`` in the signed notes commit, and merges with ``merged_heads``. The
auditor (``orlojd audit verify`` / ``log``) feeds every line of every note at the tip and the
tip's ``parse_heads`` to ``verify_chains`` and ``records_of``.

Why the chain looks like this (reference: signed-notes.md 4.1-4.3):

* **One chain per writer.** Each record carries ``w`` (writer id), ``seq`` (1, 2, 3... per
  writer, no gaps) and ``prev`` (sha256 of that writer's previous record line, 64 zeros for
  ``seq`` 1). Only writer ``w`` appends ``w``'s records, so two daemons never fork one chain.
* **Line order means nothing.** ``git notes merge -s cat_sort_uniq`` sorts lines bytewise
  (``"seq":10`` before ``"seq":2``) and drops duplicates; verification groups by ``w`` and
  sorts by integer ``seq``, so a merged or re-sorted note still verifies.
* **The head is anchored.** No chain shows a dropped tail, so every notes commit message
  names each writer's last ``seq``, the sha256 of that line and its outbox position
  (``eid``); dropping records then needs a new signature.
* **One record, one line.** ``line()`` is canonical (fixed key order, sorted ``detail`` keys,
  compact separators, UTF-8, no raw newline) and ``parse_line`` accepts nothing else, so the
  bytes hashed are the bytes a record always serializes to.

Notes reach every clone, so ``detail`` never carries prompts, model outputs, tool arguments
or secrets: ``scrubbed`` replaces them by their sha256 and size.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

ZERO = "0" * 64
FIELDS = ("w", "seq", "prev", "ts", "actor", "event", "subject", "revision", "eid", "detail")
ITEM_FIELDS = frozenset(FIELDS[3:])  # what ``chain`` takes per record; w/seq/prev are its to assign
ITEM_REQUIRED = frozenset({"ts", "actor", "event"})

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
_HEAD_LINE = re.compile(r"head w=(?P<w>\S+) seq=(?P<seq>[1-9]\d*) sha=(?P<sha>[0-9a-f]{64}) eid=(?P<eid>\d+|-)")

# ---- scrubbing -------------------------------------------------------------------------------
# A detail key is hidden when one of its words (split at _ - . and camelCase, lowercased) is in
# HIDDEN_WORDS, or the key with separators removed contains a SECRET_PART; unless its last word is
# in MEASURE_WORDS (``prompt_sha256``, ``output_bytes``, ``input_tokens`` are what we keep).
HIDDEN_WORDS = frozenset(
    {
        "prompt",
        "prompts",
        "output",
        "outputs",
        "completion",
        "completions",
        "content",
        "contents",
        "preview",
        "previews",
        "arguments",
        "args",
        "input",
        "inputs",
        "messages",
        "response",
        "responses",
    }
)
SECRET_PART = re.compile(r"secret|token|pass(word|wd|phrase)|apikey|privatekey|authori[sz]ation|credential|cookie")
MEASURE_WORDS = frozenset(
    {"sha256", "sha", "digest", "hash", "bytes", "size", "len", "length", "chars", "count", "tokens"}
)


def _words(key: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    return [w for w in re.split(r"[^a-z0-9]+", spaced) if w]


@functools.lru_cache(maxsize=4096)
def hidden_key(key: str) -> bool:
    """True if values under ``key`` must not travel in a note (see HIDDEN_WORDS, SECRET_PART)."""
    words = _words(key)
    if not words or words[-1] in MEASURE_WORDS:
        return False
    return any(w in HIDDEN_WORDS for w in words) or SECRET_PART.search("".join(words)) is not None


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _is_digest(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and set(value) == {"sha256", "bytes"}
        and isinstance(value["sha256"], str)
        and _HEX64.fullmatch(value["sha256"]) is not None
        and isinstance(value["bytes"], int)
    )


def _json_value(value: Any, path: str) -> Any:
    """``value`` as plain JSON data (dicts, lists, str, finite numbers, bools, None), or ValueError."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"detail{path} is {value}, which JSON cannot carry")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"detail{path} has a non-string key {k!r}")
            out[k] = _json_value(v, f"{path}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_json_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"detail{path} is a {type(value).__name__}, not JSON data")


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if hidden_key(k) and v is not None and not _is_digest(v):
                data = _canonical(v)
                out[k] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            else:
                out[k] = _scrub(v)
        return out
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def scrubbed(detail: Mapping[str, Any]) -> dict[str, Any]:
    """``detail`` with values under hidden keys (at any depth) replaced by
    ``{"sha256": <hex of their canonical JSON>, "bytes": <its length>}``.

    Hidden: prompts, outputs, completions, content, previews, arguments/args, inputs, messages,
    responses, and anything secret-named (secret, token, password, api key, private key,
    authorization, credential, cookie). Kept: keys ending in a measure (``*_sha256``,
    ``*_digest``, ``*_bytes``, ``*_tokens``, ``*_count``...), ``None`` values, and values that
    are already such a digest (so scrubbing twice changes nothing). ValueError if ``detail`` is
    not JSON data.
    """
    return _scrub(_json_value(detail, "")) if detail else {}


# ---- records ---------------------------------------------------------------------------------


def _check_writer(w: Any) -> None:
    if not isinstance(w, str) or not w or any(c.isspace() for c in w):
        raise ValueError(f"writer id must be a non-empty string without spaces or newlines, got {w!r}")


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "an integer" + (" or null" if optional else "")
        raise ValueError(f"{name} must be {kind} >= {minimum}, got {value!r}")


def _check_sha(name: str, value: Any) -> None:
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise ValueError(f"{name} must be 64 lowercase hex characters, got {value!r}")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record: one JSON line in a note. Constructing it checks every field (ValueError)."""

    w: str  # writer id (stable per state store, e.g. "host/3f2a..."); only writer w appends w's records
    seq: int  # 1, 2, 3... per writer, no gaps
    prev: str  # sha256 hex of this writer's previous record line (ZERO for seq 1)
    ts: str  # ISO-8601 UTC with 'Z', e.g. "2026-11-25T19:30:00.123456Z"
    actor: str  # "daemon", a worker id, an approver's identity
    event: str  # "reconcile_applied", "decision", "approval_requested", "task_completed", "model_call"...
    subject: str  # "Kind/namespace/name" and/or "task:<id>", "" if none
    revision: str | None  # the commit the record is attached to / was running
    eid: int | None  # the id of the store event this record came from (the outbox position)
    detail: Mapping[str, Any]  # JSON data; never secrets, prompts or model outputs (see ``scrubbed``)

    def __post_init__(self) -> None:
        _check_writer(self.w)
        _check_int("seq", self.seq, 1)
        _check_sha("prev", self.prev)
        if self.seq == 1 and self.prev != ZERO:
            raise ValueError("prev of seq 1 must be 64 zeros")
        if not isinstance(self.ts, str) or _TS.fullmatch(self.ts) is None:
            raise ValueError(f"ts must be ISO-8601 UTC ending in 'Z' (2026-11-25T19:30:00.123456Z), got {self.ts!r}")
        try:
            datetime.fromisoformat(self.ts[:-1])
        except ValueError:
            raise ValueError(f"ts is not a real date and time: {self.ts!r}") from None
        for name in ("actor", "event", "subject"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not self.actor or not self.event:
            raise ValueError("actor and event must not be empty")
        if self.revision is not None and not isinstance(self.revision, str):
            raise ValueError(f"revision must be a string or null, got {self.revision!r}")
        _check_int("eid", self.eid, 0, optional=True)
        if not isinstance(self.detail, Mapping):
            raise ValueError(f"detail must be a JSON object, got {self.detail!r}")
        _json_value(self.detail, "")

    def line(self) -> str:
        """The canonical line: keys in field order, detail keys sorted (at any depth), compact, no newline."""
        head = {name: getattr(self, name) for name in FIELDS[:-1]}
        text = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
        return f'{text[:-1]},"detail":{_canonical(self.detail).decode()}}}'


def parse_line(line: str) -> AuditRecord:
    """The record ``line`` holds; ValueError naming what is wrong (not JSON, a missing, ill-typed
    or extra field, or not the canonical form ``line()`` writes)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object but a {type(data).__name__}")
    missing = [f for f in FIELDS if f not in data]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(data) - set(FIELDS))
    if extra:
        raise ValueError(f"extra field(s): {', '.join(extra)}")
    record = AuditRecord(**data)
    if record.line() != line:
        raise ValueError("not in canonical form (key order, spacing, escaping or detail key order differ)")
    return record


def line_hash(line: str) -> str:
    """sha256 hex of the UTF-8 bytes of ``line`` (without a newline): what the next ``prev`` names."""
    return hashlib.sha256(line.encode()).hexdigest()


# ---- heads -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Head:
    """A writer's chain head: its last seq, that line's hash, and that record's eid."""

    w: str
    seq: int
    sha: str  # line_hash of the writer's last record
    eid: int | None  # eid of that record (how far the writer's outbox is drained)

    def __post_init__(self) -> None:
        _check_writer(self.w)
        _check_int("seq", self.seq, 1)
        _check_sha("sha", self.sha)
        _check_int("eid", self.eid, 0, optional=True)


def head_of(records: Sequence[AuditRecord]) -> Head:
    """The head after the last of ``records`` (one writer's, in seq order); ValueError otherwise."""
    if not records:
        raise ValueError("no records, so no head")
    for before, after in pairwise(records):
        if after.w != before.w:
            raise ValueError(f"records of two writers ({before.w}, {after.w}) have no single head")
        if after.seq != before.seq + 1:
            raise ValueError(f"writer {after.w}: seq {after.seq} follows seq {before.seq}")
    last = records[-1]
    return Head(last.w, last.seq, line_hash(last.line()), last.eid)


def chain(w: str, last: Head | None, items: Sequence[Mapping[str, Any]]) -> list[AuditRecord]:
    """Records for ``items``, written by ``w``, continuing its chain after ``last`` (None: the first).

    Each item has ``ts`` (the string form, or an aware UTC datetime), ``actor`` and ``event``, and
    may have ``subject`` (default ""), ``revision``, ``eid`` (default None) and ``detail``
    (default {}; always passed through ``scrubbed``). Unknown keys are a ValueError.
    """
    if last is not None and last.w != w:
        raise ValueError(f"head of writer {last.w} cannot continue the chain of writer {w}")
    seq, prev = (last.seq, last.sha) if last is not None else (0, ZERO)
    out: list[AuditRecord] = []
    for item in items:
        unknown = sorted(set(item) - ITEM_FIELDS)
        missing = sorted(ITEM_REQUIRED - set(item))
        if unknown or missing:
            raise ValueError(f"audit item: unknown keys {unknown}, missing keys {missing}")
        seq += 1
        record = AuditRecord(
            w=w,
            seq=seq,
            prev=prev,
            ts=_ts(item["ts"]),
            actor=item["actor"],
            event=item["event"],
            subject=item.get("subject", ""),
            revision=item.get("revision"),
            eid=item.get("eid"),
            detail=scrubbed(item.get("detail") or {}),
        )
        prev = line_hash(record.line())
        out.append(record)
    return out


def _ts(value: Any) -> Any:
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None:
            raise ValueError(f"ts {value!r} has no time zone; audit times are UTC")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def heads_message(heads: Mapping[str, Head], summary: str = "orlojd audit") -> str:
    """The notes commit message: ``summary``, a blank line, then one line per writer sorted by id:
    ``head w=<w> seq=<n> sha=<64 hex> eid=<n|->``."""
    if not summary.strip() or "\n" in summary or "\r" in summary or _HEAD_LINE.fullmatch(summary.strip()):
        raise ValueError(f"summary must be one non-empty line that is not a head line, got {summary!r}")
    lines = []
    for w in sorted(heads):
        head = heads[w]
        if head.w != w:
            raise ValueError(f"heads[{w!r}] is the head of writer {head.w}")
        eid = "-" if head.eid is None else str(head.eid)
        lines.append(f"head w={w} seq={head.seq} sha={head.sha} eid={eid}")
    return f"{summary}\n" + ("\n" + "\n".join(lines) + "\n" if lines else "")


def parse_heads(message: str) -> dict[str, Head]:
    """The heads in a notes commit message; lines not starting with ``head`` are ignored.
    ValueError on a malformed head line or a writer named twice."""
    heads: dict[str, Head] = {}
    for raw in message.splitlines():
        line = raw.strip()
        if line != "head" and not line.startswith("head "):
            continue
        m = _HEAD_LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"malformed head line {line[:120]!r} (want 'head w=<w> seq=<n> sha=<64 hex> eid=<n|->')")
        w = m["w"]
        if w in heads:
            raise ValueError(f"writer {w} has two head lines")
        heads[w] = Head(w, int(m["seq"]), m["sha"], None if m["eid"] == "-" else int(m["eid"]))
    return heads


def merged_heads(a: Mapping[str, Head], b: Mapping[str, Head]) -> dict[str, Head]:
    """Per writer, the head with the higher seq. ValueError if both name the same seq but differ:
    that writer forked (two daemons share its id, or someone rewrote its records)."""
    out = dict(a)
    for w, head in b.items():
        mine = out.get(w)
        if mine is None or head.seq > mine.seq:
            out[w] = head
        elif head.seq == mine.seq and head != mine:
            raise ValueError(f"writer {w} has two different heads at seq {head.seq}: {mine.sha} and {head.sha}")
    return out


# ---- verification ----------------------------------------------------------------------------


class ChainReason(StrEnum):
    UNPARSEABLE = "unparseable"  # a line that is not a canonical record
    SEQ_GAP = "seq_gap"  # a seq is missing (a record deleted, or the chain does not start at 1)
    PREV_MISMATCH = "prev_mismatch"  # prev is not the hash of the writer's previous line (that line was edited)
    DUPLICATE_SEQ = "duplicate_seq"  # two different lines claim the same (writer, seq)
    HEAD_MISMATCH = "head_mismatch"  # the anchored head is not the last record (tail dropped or edited)
    HEAD_MISSING = "head_missing"  # a writer has records but no anchored head
    BEYOND_HEAD = "beyond_head"  # a record past the anchored head (appended without a signed commit)


@dataclass(frozen=True, slots=True)
class ChainProblem:
    writer: str  # "" when an unparseable line does not even say
    seq: int | None
    reason: ChainReason
    message: str  # a sentence naming writer, seq and what is wrong

    @property
    def sort_key(self) -> tuple[str, int, str, str]:
        return (self.writer, -1 if self.seq is None else self.seq, self.reason, self.message)


def _excerpt(line: str) -> str:
    """The first 80 characters of ``line``; of a record's line, from ``ts`` on (w, seq and prev are named already)."""
    start = line.find(',"ts":')
    text = line[start + 1 :] if line.startswith('{"w":') and start > 0 else line
    return text if len(text) <= 80 else text[:80] + "..."


def _unparseable(line: str, error: str) -> ChainProblem:
    writer, seq = "", None
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if isinstance(data, dict):
        writer = data["w"] if isinstance(data.get("w"), str) else ""
        raw_seq = data.get("seq")
        seq = raw_seq if isinstance(raw_seq, int) and not isinstance(raw_seq, bool) else None
    where = f"writer {writer or '?'} seq {'?' if seq is None else seq}"
    return ChainProblem(writer, seq, ChainReason.UNPARSEABLE, f"{where}: unreadable line ({error}): {_excerpt(line)}")


def _parsed(lines: Iterable[str]) -> tuple[dict[str, dict[int, list[tuple[str, AuditRecord]]]], list[ChainProblem]]:
    """Distinct non-blank lines grouped by writer, then seq (several lines at one seq: a fork)."""
    by_writer: dict[str, dict[int, list[tuple[str, AuditRecord]]]] = defaultdict(lambda: defaultdict(list))
    problems: list[ChainProblem] = []
    for line in sorted({line for line in lines if line.strip()}):
        try:
            record = parse_line(line)
        except ValueError as e:
            problems.append(_unparseable(line, str(e)))
            continue
        by_writer[record.w][record.seq].append((line, record))
    return by_writer, problems


def _verify_writer(w: str, seqs: Mapping[int, list[tuple[str, AuditRecord]]], head: Head | None) -> list[ChainProblem]:
    problems: list[ChainProblem] = []

    def problem(seq: int | None, reason: ChainReason, text: str) -> None:
        problems.append(ChainProblem(w, seq, reason, f"writer {w} seq {seq}: {text}"))

    expected, before = 1, {ZERO}  # hashes the next record's prev may name
    for seq in sorted(seqs):
        candidates = seqs[seq]
        if len(candidates) > 1:
            shown = "; ".join(_excerpt(line) for line, _ in candidates)
            problem(seq, ChainReason.DUPLICATE_SEQ, f"{len(candidates)} different records claim this seq: {shown}")
        if seq != expected:
            problem(seq, ChainReason.SEQ_GAP, f"expected seq {expected} next, found {seq} (records missing)")
        else:
            for line, record in candidates:
                if record.prev not in before:
                    what = "64 zeros" if seq == 1 else f"the hash of seq {seq - 1}"
                    problem(seq, ChainReason.PREV_MISMATCH, f"prev is not {what} (edited earlier?): {_excerpt(line)}")
        expected, before = seq + 1, {line_hash(line) for line, _ in candidates}

    last = max(seqs, default=0)
    if head is None:
        if seqs:
            problem(last, ChainReason.HEAD_MISSING, f"no anchored head for this writer's {len(seqs)} record(s)")
        return problems
    for seq in sorted(s for s in seqs if s > head.seq):
        problem(seq, ChainReason.BEYOND_HEAD, f"record past the anchored head seq {head.seq} (appended unsigned?)")
    at_head = seqs.get(head.seq, [])
    if not at_head:
        found = f"records end at seq {last}" if seqs else "there are no records"
        problem(head.seq, ChainReason.HEAD_MISMATCH, f"the anchored head is seq {head.seq} but {found} (tail dropped?)")
    elif not any(line_hash(line) == head.sha and record.eid == head.eid for line, record in at_head):
        problem(
            head.seq,
            ChainReason.HEAD_MISMATCH,
            f"the record differs from the anchored head (sha {head.sha[:12]}..., eid {head.eid}): "
            f"{_excerpt(at_head[0][0])}",
        )
    return problems


def verify_chains(lines: Iterable[str], heads: Mapping[str, Head]) -> list[ChainProblem]:
    """Every problem with the chains in ``lines`` (all lines of all notes at the tip, any order)
    against ``heads`` (the tip's anchored heads), sorted by (writer, seq); empty means valid.

    Blank lines are skipped and identical lines count once (``cat_sort_uniq`` dedups anyway).
    """
    by_writer, problems = _parsed(lines)
    for w in sorted(set(by_writer) | set(heads)):
        problems.extend(_verify_writer(w, by_writer.get(w, {}), heads.get(w)))
    return sorted(problems, key=lambda p: p.sort_key)


def records_of(lines: Iterable[str]) -> list[AuditRecord]:
    """The records in ``lines``, by writer then seq (for ``orlojd audit log``); blank and repeated
    lines skipped. ValueError on an unreadable line: run ``verify_chains`` to see them all."""
    by_writer, problems = _parsed(lines)
    if problems:
        raise ValueError(f"{len(problems)} unreadable line(s); first: {problems[0].message}")
    return [record for w in sorted(by_writer) for seq in sorted(by_writer[w]) for _, record in by_writer[w][seq]]
