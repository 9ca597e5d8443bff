"""Audit records in git notes (core.audit_records): canonical lines, per-writer chains, anchored
heads, scrubbing, and verification catching each kind of tampering."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orlojd.core.audit_records import (
    FIELDS,
    ZERO,
    AuditRecord,
    ChainProblem,
    Head,
    chain,
    head_of,
    heads_message,
    line_hash,
    merged_heads,
    parse_heads,
    parse_line,
    records_of,
    scrubbed,
    verify_chains,
)

T0 = datetime(2026, 11, 25, 19, 30, tzinfo=UTC)
A, B = "host/a", "host/b"

# ---- strategies ------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text()
safe_keys = st.sampled_from(["reason", "verdict", "kind", "note", "x", "é", "n\nl", "path", "count"])
json_data = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(safe_keys | st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
details = st.dictionaries(safe_keys | st.text(max_size=8), json_data, max_size=4)
items = st.builds(
    dict,
    ts=st.integers(0, 10**9).map(lambda us: T0 + timedelta(microseconds=us)),
    actor=st.sampled_from(["daemon", "worker-1", "alice@example.com", "Zoë"]),
    event=st.sampled_from(["reconcile_applied", "decision", "approval_requested", "task_completed", "model_call"]),
    subject=st.sampled_from(["", "Agent/default/writer", "task:42", "Agent/ns/a task:7"]),
    revision=st.none() | st.text("0123456789abcdef", min_size=40, max_size=40),
    eid=st.none() | st.integers(0, 10**6),
    detail=details,
)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
writers = st.sampled_from([A, B, "fp/SHA256:abc+/=", "hôte/ü"])


def item(n: int, **over: Any) -> dict[str, Any]:
    return {
        "ts": T0 + timedelta(seconds=n),
        "actor": "daemon",
        "event": "reconcile_applied",
        "subject": f"Agent/default/a{n}",
        "revision": "ab" * 20,
        "eid": n,
        "detail": {"reason": "ok", "n": n},
    } | over


def book(w: str, n: int) -> list[AuditRecord]:
    return chain(w, None, [item(i) for i in range(1, n + 1)])


def lines_of(records: list[AuditRecord]) -> list[str]:
    return [r.line() for r in records]


def heads_for(*chains: list[AuditRecord]) -> dict[str, Head]:
    return {c[0].w: head_of(c) for c in chains}


def problems(lines: list[str], heads: dict[str, Head]) -> list[tuple[str, int | None, str]]:
    return [(p.writer, p.seq, p.reason) for p in verify_chains(lines, heads)]


# ---- lines -----------------------------------------------------------------------------------


@given(w=writers, its=st.lists(items, min_size=1, max_size=5))
def test_line_round_trips_through_parse_line_and_has_no_newline(w: str, its: list[dict[str, Any]]) -> None:
    for record in chain(w, None, its):
        line = record.line()
        assert "\n" not in line and "\r" not in line
        assert parse_line(line) == record
        assert parse_line(line).line() == line


def test_line_has_fixed_key_order_sorted_detail_keys_and_escapes_newlines() -> None:
    record = chain(A, None, [item(1, detail={"zeta": {"b": 1, "a": 2}, "alpha": "two\nlines", "mid": "é"})])[0]
    line = record.line()
    pairs = json.loads(line, object_pairs_hook=lambda kv: kv)
    assert [k for k, _ in pairs] == list(FIELDS)
    detail = dict(pairs)["detail"]
    assert [k for k, _ in detail] == ["alpha", "mid", "zeta"]
    assert [k for k, _ in dict(detail)["zeta"]] == ["a", "b"]
    assert line.startswith('{"w":"host/a","seq":1,"prev":"' + ZERO + '","ts":"2026-11-25T19:30:01.000000Z",')
    assert '"alpha":"two\\nlines"' in line and '"mid":"é"' in line  # escaped newline, UTF-8 kept
    assert ", " not in line and ": " not in line


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda d: "not json", "not JSON"),
        (lambda d: json.dumps([1, 2]), "not a JSON object"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "event"}, separators=(",", ":")), "event"),
        (lambda d: json.dumps(d | {"extra": 1}, separators=(",", ":")), "extra"),
        (lambda d: json.dumps(d | {"seq": "1"}, separators=(",", ":")), "seq"),
        (lambda d: json.dumps(d | {"seq": 0}, separators=(",", ":")), "seq"),
        (lambda d: json.dumps(d | {"prev": "xyz"}, separators=(",", ":")), "prev"),
        (lambda d: json.dumps(d | {"ts": "2026-11-25 19:30:00"}, separators=(",", ":")), "ts"),
        (lambda d: json.dumps(d | {"ts": "2026-02-30T00:00:00Z"}, separators=(",", ":")), "ts"),
        (lambda d: json.dumps(d | {"w": "two words"}, separators=(",", ":")), "writer id"),
        (lambda d: json.dumps(d | {"eid": True}, separators=(",", ":")), "eid"),
        (lambda d: json.dumps(d | {"detail": []}, separators=(",", ":")), "detail"),
        (lambda d: json.dumps(d | {"revision": 5}, separators=(",", ":")), "revision"),
        (lambda d: json.dumps(d), "canonical"),  # spaces after separators
        (lambda d: json.dumps(dict(reversed(list(d.items()))), separators=(",", ":")), "canonical"),
    ],
)
def test_parse_line_names_what_is_wrong(mutate: Any, named: str) -> None:
    good = json.loads(book(A, 1)[0].line())
    with pytest.raises(ValueError, match=named):
        parse_line(mutate(good))


def test_line_hash_is_sha256_of_the_utf8_line() -> None:
    assert line_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert line_hash("é") == hashlib.sha256(b"\xc3\xa9").hexdigest()  # UTF-8 bytes, not a newline added
    assert line_hash("é") != line_hash("é\n")


# ---- chain and heads -------------------------------------------------------------------------


def test_chain_links_each_record_to_the_previous_line_and_continues_after_a_head() -> None:
    first = chain(A, None, [item(1), item(2)])
    assert [r.seq for r in first] == [1, 2]
    assert first[0].prev == ZERO
    assert first[1].prev == line_hash(first[0].line())
    more = chain(A, head_of(first), [item(3)])
    assert more[0].seq == 3 and more[0].prev == line_hash(first[1].line())
    assert verify_chains(lines_of(first + more), heads_for(first + more)) == []


def test_chain_scrubs_detail_and_formats_datetimes_as_utc_z() -> None:
    plus2 = timezone(timedelta(hours=2))
    record = chain(A, None, [item(1, ts=datetime(2026, 1, 1, 2, 0, tzinfo=plus2), detail={"prompt": "hi"})])[0]
    assert record.ts == "2026-01-01T00:00:00.000000Z"
    assert set(record.detail["prompt"]) == {"sha256", "bytes"}


def test_chain_refuses_bad_items_and_another_writers_head() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        chain(A, None, [item(1, sequence=3)])
    with pytest.raises(ValueError, match="missing keys"):
        chain(A, None, [{"ts": "2026-11-25T19:30:00Z", "actor": "daemon"}])
    with pytest.raises(ValueError, match="time zone"):
        chain(A, None, [item(1, ts=datetime(2026, 1, 1))])
    with pytest.raises(ValueError, match="cannot continue"):
        chain(B, head_of(book(A, 2)), [item(3)])


def test_head_of_names_the_last_record() -> None:
    records = book(A, 3)
    assert head_of(records) == Head(A, 3, line_hash(records[2].line()), 3)
    with pytest.raises(ValueError):
        head_of([])
    with pytest.raises(ValueError, match="two writers"):
        head_of(records[:1] + book(B, 2)[1:])
    with pytest.raises(ValueError, match="follows"):
        head_of([records[0], records[2]])


@given(
    heads=st.dictionaries(
        writers,
        st.tuples(st.integers(1, 10**6), hex64, st.none() | st.integers(0)),
        max_size=4,
    )
)
def test_heads_message_round_trips(heads: dict[str, tuple[int, str, int | None]]) -> None:
    built = {w: Head(w, seq, sha, eid) for w, (seq, sha, eid) in heads.items()}
    message = heads_message(built, summary="orlojd audit: 3 records")
    assert message.splitlines()[0] == "orlojd audit: 3 records"
    assert parse_heads(message) == built


def test_heads_message_format_sorted_by_writer() -> None:
    heads = {B: Head(B, 4, "b" * 64, None), A: Head(A, 12, "a" * 64, 99)}
    assert heads_message(heads) == (
        f"orlojd audit\n\nhead w={A} seq=12 sha={'a' * 64} eid=99\nhead w={B} seq=4 sha={'b' * 64} eid=-\n"
    )


def test_heads_refuse_bad_writer_ids_and_malformed_head_lines() -> None:
    with pytest.raises(ValueError, match="writer id"):
        Head("two words", 1, "a" * 64, None)
    with pytest.raises(ValueError, match="writer id"):
        Head("a\nb", 1, "a" * 64, None)
    with pytest.raises(ValueError, match="head of writer"):
        heads_message({A: Head(B, 1, "a" * 64, None)})
    with pytest.raises(ValueError, match="summary"):
        heads_message({}, summary="two\nlines")
    assert parse_heads("signed by orlojd\n\nSigned-off-by: x\nheadline trivia\n") == {}
    for bad in (f"head w={A} seq=0 sha={'a' * 64} eid=-", f"head w={A} seq=1 sha=abc eid=-", "head of the trail"):
        with pytest.raises(ValueError, match="malformed head line"):
            parse_heads(f"orlojd audit\n\n{bad}\n")
    twice = f"head w={A} seq=1 sha={'a' * 64} eid=-"
    with pytest.raises(ValueError, match="two head lines"):
        parse_heads(f"s\n\n{twice}\n{twice}\n")


def test_merged_heads_takes_the_higher_seq_per_writer() -> None:
    a = {A: Head(A, 5, "1" * 64, 5), B: Head(B, 2, "2" * 64, None)}
    b = {A: Head(A, 3, "3" * 64, 3), B: Head(B, 7, "4" * 64, 70), "host/c": Head("host/c", 1, "5" * 64, 1)}
    assert merged_heads(a, b) == {A: a[A], B: b[B], "host/c": b["host/c"]}
    assert merged_heads(b, a) == merged_heads(a, b)
    assert merged_heads(a, a) == a
    with pytest.raises(ValueError, match="two different heads"):
        merged_heads(a, {A: Head(A, 5, "9" * 64, 5)})


# ---- scrubbing -------------------------------------------------------------------------------


def test_scrubbed_hides_prompts_outputs_previews_arguments_and_secrets_at_any_depth() -> None:
    detail = {
        "reason": "allowed",
        "prompt": "tell me the launch codes",
        "call": {"tool": "http", "arguments": {"url": "x"}, "args": [1, 2], "preview": "..."},
        "model": {"systemPrompt": "s", "output": "o", "completion": "c", "messages": [{"role": "u"}], "content": "x"},
        "steps": [{"input": "q", "name": "s1"}, {"apiKey": "k", "auth": {"password": "p", "Authorization": "Bearer"}}],
        "env": {"DB_PASSWORD": "p", "access_token": "t", "client_secret": "s", "private_key": "k"},
    }
    out = scrubbed(detail)
    text = json.dumps(out)
    for leaked in ("launch codes", '"x"', '"o"', '"Bearer"', '"k"', '"t"', '"q"', "role"):
        assert leaked not in text
    assert out["reason"] == "allowed" and out["call"]["tool"] == "http" and out["steps"][0]["name"] == "s1"
    data = json.dumps("tell me the launch codes", ensure_ascii=False).encode()
    assert out["prompt"] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    for hidden in (
        out["call"]["arguments"],
        out["call"]["args"],
        out["call"]["preview"],
        out["model"]["systemPrompt"],
        out["model"]["messages"],
        out["steps"][1]["apiKey"],
        out["steps"][1]["auth"]["password"],
        out["steps"][1]["auth"]["Authorization"],
        out["env"]["DB_PASSWORD"],
        out["env"]["access_token"],
        out["env"]["client_secret"],
        out["env"]["private_key"],
    ):
        assert set(hidden) == {"sha256", "bytes"}


def test_scrubbed_keeps_digests_sizes_counts_and_none() -> None:
    kept = {
        "prompt_sha256": "ab" * 32,
        "output_bytes": 1234,
        "input_tokens": 10,
        "outputTokens": 20,
        "arguments_digest": "sha256:00",
        "token_count": 3,
        "tokens": 30,
        "output": None,
        "verdict": "allow",
    }
    assert scrubbed(kept) == kept


@given(detail=details)
def test_scrubbed_is_idempotent_and_hides_every_hidden_key(detail: dict[str, Any]) -> None:
    once = scrubbed({"outer": detail, "output": detail})
    assert scrubbed(once) == once
    if detail:
        assert set(once["output"]) == {"sha256", "bytes"}


def test_scrubbed_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match="nan"):
        scrubbed({"x": float("nan")})
    with pytest.raises(ValueError, match="non-string key"):
        scrubbed({"x": {1: 2}})
    with pytest.raises(ValueError, match="not JSON data"):
        scrubbed({"x": {1, 2}})


# ---- verification: valid ---------------------------------------------------------------------


@settings(max_examples=60)
@given(
    data=st.data(),
    per_writer=st.dictionaries(writers, st.lists(items, min_size=1, max_size=12), min_size=1, max_size=3),
)
def test_random_chains_verify_in_any_line_order(data: st.DataObject, per_writer: dict[str, list[Any]]) -> None:
    chains = [chain(w, None, its) for w, its in per_writer.items()]
    lines = [line for c in chains for line in lines_of(c)]
    heads = heads_for(*chains)
    shuffled = data.draw(st.permutations(lines))
    assert verify_chains(lines, heads) == []
    assert verify_chains(shuffled, heads) == []
    assert verify_chains(sorted(set(lines)), heads) == []  # what cat_sort_uniq leaves
    assert verify_chains(lines + lines[:3] + ["", ""], heads) == []  # union-style repeats, blank lines
    assert records_of(shuffled) == [r for w in sorted(per_writer) for c in chains if c[0].w == w for r in c]


def test_bytewise_sorting_puts_seq_10_before_2_and_still_verifies() -> None:
    records = book(A, 12)
    lines = sorted(lines_of(records))
    assert [parse_line(line).seq for line in lines] != list(range(1, 13))
    assert verify_chains(lines, heads_for(records)) == []


def test_two_writers_chained_separately_merge_cleanly() -> None:
    a, b = book(A, 12), book(B, 4)
    a2 = a + chain(A, head_of(a), [item(13)])
    merged = sorted(set(lines_of(a) + lines_of(b)) | set(lines_of(a2)))
    heads = merged_heads(heads_for(a), heads_for(b, a2))
    assert verify_chains(merged, heads) == []


# ---- verification: tampering -----------------------------------------------------------------


def tamper_actor(line: str) -> str:
    edited = line.replace('"actor":"daemon"', '"actor":"daemoN"', 1)  # one byte
    assert edited != line and parse_line(edited)
    return edited


@given(n=st.integers(1, 12), data=st.data())
def test_one_edited_byte_breaks_the_next_prev_or_the_head(n: int, data: st.DataObject) -> None:
    records, other = book(A, n), book(B, 3)
    i = data.draw(st.integers(0, n - 1))
    lines = lines_of(records)
    lines[i] = tamper_actor(lines[i])
    expected = (A, i + 2, "prev_mismatch") if i < n - 1 else (A, n, "head_mismatch")
    assert problems(lines + lines_of(other), heads_for(records, other)) == [expected]


@given(n=st.integers(1, 12), data=st.data())
def test_a_deleted_record_is_a_seq_gap_or_a_head_mismatch(n: int, data: st.DataObject) -> None:
    records = book(A, n)
    i = data.draw(st.integers(0, n - 1))
    lines = lines_of(records)
    del lines[i]
    expected = [(A, i + 2, "seq_gap")] if i < n - 1 else [(A, n, "head_mismatch")]
    assert problems(lines, heads_for(records)) == expected


def test_a_deleted_record_message_names_the_missing_seq() -> None:
    records = book(A, 12)
    lines = lines_of(records)
    del lines[4]
    [problem] = verify_chains(lines, heads_for(records))
    assert problem == ChainProblem(A, 6, problem.reason, problem.message)
    assert "host/a" in problem.message and "seq 6" in problem.message and "expected seq 5" in problem.message


def test_swapping_two_lines_in_the_file_is_fine() -> None:
    records = book(A, 12)
    lines = lines_of(records)
    lines[3], lines[4] = lines[4], lines[3]
    assert verify_chains(lines, heads_for(records)) == []


@pytest.mark.parametrize(("i", "j"), [(3, 4), (0, 7), (2, 11)])
def test_swapping_two_records_contents_is_caught(i: int, j: int) -> None:
    records = book(A, 12)
    swapped = list(records)
    swapped[i] = replace(records[i], subject=records[j].subject, eid=records[j].eid, detail=records[j].detail)
    swapped[j] = replace(records[j], subject=records[i].subject, eid=records[i].eid, detail=records[i].detail)
    expected = {(A, i + 2, "prev_mismatch"), (A, j + 2, "prev_mismatch") if j < 11 else (A, 12, "head_mismatch")}
    assert set(problems(lines_of(swapped), heads_for(records))) == expected


@given(n=st.integers(2, 12), data=st.data())
def test_dropping_the_tail_is_a_head_mismatch(n: int, data: st.DataObject) -> None:
    records = book(A, n)
    drop = data.draw(st.integers(1, n - 1))
    kept = lines_of(records)[:-drop]
    [problem] = verify_chains(kept, heads_for(records))
    assert (problem.writer, problem.seq, problem.reason) == (A, n, "head_mismatch")
    assert f"records end at seq {n - drop}" in problem.message


def test_dropping_every_record_of_an_anchored_writer_is_a_head_mismatch() -> None:
    a, b = book(A, 3), book(B, 2)
    assert problems(lines_of(b), heads_for(a, b)) == [(A, 3, "head_mismatch")]


def test_a_head_with_another_eid_is_a_head_mismatch() -> None:
    records = book(A, 3)
    head = head_of(records)
    assert problems(lines_of(records), {A: replace(head, eid=99)}) == [(A, 3, "head_mismatch")]


def test_a_record_appended_without_updating_heads_is_beyond_head() -> None:
    records = book(A, 13)
    heads = heads_for(records[:12])
    assert problems(lines_of(records), heads) == [(A, 13, "beyond_head")]
    assert problems(lines_of(records), heads_for(records[:11])) == [(A, 12, "beyond_head"), (A, 13, "beyond_head")]


def test_a_writer_without_an_anchored_head_is_head_missing() -> None:
    a, b = book(A, 3), book(B, 2)
    assert problems(lines_of(a) + lines_of(b), heads_for(a)) == [(B, 2, "head_missing")]


@pytest.mark.parametrize("k", [0, 5, 11])
def test_a_forged_duplicate_seq_is_caught(k: int) -> None:
    records = book(A, 12)
    forged = replace(records[k], actor="mallory", detail={"reason": "forged"})  # same w, seq and prev
    [problem] = verify_chains([*lines_of(records), forged.line()], heads_for(records))
    assert (problem.writer, problem.seq, problem.reason) == (A, k + 1, "duplicate_seq")
    assert "mallory" in problem.message


def test_a_garbage_line_is_unparseable_and_nothing_else() -> None:
    records = book(A, 4)
    partial = json.dumps({"w": B, "seq": 3, "prev": ZERO})
    found = verify_chains([*lines_of(records), "not a record at all", partial], heads_for(records))
    assert [(p.writer, p.seq, p.reason) for p in found] == [("", None, "unparseable"), (B, 3, "unparseable")]
    assert "not a record at all" in found[0].message
    with pytest.raises(ValueError, match="unreadable"):
        records_of([*lines_of(records), "not a record at all"])


def test_a_wrong_first_prev_and_a_chain_not_starting_at_one() -> None:
    records = book(A, 3)
    bad_first = AuditRecord(**(json.loads(records[0].line()) | {"seq": 2, "prev": "f" * 64}))
    assert problems([bad_first.line()], {A: head_of(records[:1])}) == [
        (A, 1, "head_mismatch"),
        (A, 2, "beyond_head"),
        (A, 2, "seq_gap"),
    ]


def test_problems_are_sorted_by_writer_then_seq_across_writers() -> None:
    a, b = book(A, 6), book(B, 6)
    la, lb = lines_of(a), lines_of(b)
    lb[1] = tamper_actor(lb[1])
    del la[3]
    mixed = lb + la
    random.Random(7).shuffle(mixed)
    assert problems(mixed, heads_for(a, b)) == [(A, 5, "seq_gap"), (B, 3, "prev_mismatch")]
