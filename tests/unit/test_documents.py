"""YAML guards: every kind of bad input is a located Diagnostic, never an exception.

``parse_file`` turns one file's bytes into documents; ``build_desired`` runs the
whole pipeline over several files. Property tests feed both arbitrary bytes and
arbitrary YAML-able structures and check that nothing escapes.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from manifests import OFFLINE_ENDPOINT
from pydantic.alias_generators import to_snake

from orlojd.core.desired import Desired, build_desired
from orlojd.core.diagnostics import Diagnostic
from orlojd.core.documents import MAX_FILE_BYTES, parse_file
from orlojd.core.manifests.registry import KINDS

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MODEL = OFFLINE_ENDPOINT.encode()

AGENT = b"""\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: checker
spec:
  modelRef: offline
"""


def only(path: str, content: bytes) -> Diagnostic:
    """The single finding for a file that must not parse."""
    documents, found = parse_file(path, content)
    assert documents == [] and len(found) == 1, (documents, found)
    assert found[0].is_error and found[0].file == path
    return found[0]


def where(diagnostic: Diagnostic) -> tuple[int, int]:
    return diagnostic.line, diagnostic.column


# -- broken YAML, wrong types -----------------------------------------------------------------


def test_broken_yaml_is_an_error_with_its_place() -> None:
    found = only("broken.yaml", b"kind: Agent\nspec:\n  tools: [a, b\n  prompt: x\n")
    assert found.message.startswith("invalid YAML: ")
    assert found.line == 4 and found.column >= 1


def test_unclosed_quote_is_an_error() -> None:
    found = only("q.yaml", b'kind: Agent\nmetadata:\n  name: "checker\n')
    assert found.message.startswith("invalid YAML: ")
    assert found.line >= 3


@pytest.mark.parametrize(
    ("content", "start"),
    [
        (b"- kind: Agent\n- kind: Tool\n", "a manifest is a mapping, got a list"),
        (b"just some words\n", "a manifest is a mapping, got a string"),
        (b"42\n", "a manifest is a mapping, got a number"),
    ],
)
def test_a_document_of_the_wrong_type_is_an_error(content: bytes, start: str) -> None:
    desired = build_desired([("t.yaml", content)])
    [error] = desired.errors
    assert error.message.startswith(start)
    assert (error.file, error.line, error.column) == ("t.yaml", 1, 1)


@pytest.mark.parametrize(
    ("old", "new", "field", "line"),
    [
        (b"  modelRef: offline\n", b"  modelRef: [offline]\n", "spec.modelRef", 6),
        (b"  name: checker\n", b"  name: {first: checker}\n", "metadata.name", 4),
        (b"spec:\n  modelRef: offline\n", b"spec: [offline]\n", "spec", 5),
        (b"  modelRef: offline\n", b"  modelRef: offline\n  limits: {maxSteps: lots}\n", "spec.limits.maxSteps", 7),
    ],
)
def test_wrong_types_are_errors_at_their_field(old: bytes, new: bytes, field: str, line: int) -> None:
    content = AGENT.replace(old, new)
    assert content != AGENT
    desired = build_desired([("agent.yaml", content)], resolve=False)
    [error] = desired.errors
    assert (error.field, error.line) == (field, line)
    assert (error.kind, error.name) == ("Agent", "checker" if field != "metadata.name" else "")


# -- tabs, duplicate keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "column"),
    [
        (b"kind: Agent\nspec:\n\tmodel: gpt-4\n", 3, 1),
        (b"kind: Agent\nspec:\n  model: gpt-4\n\tprompt: hi\n", 4, 1),
        (b"kind: Agent\nspec:\n  tools:\n  - a\n \t- b\n", 5, 2),
    ],
)
def test_tab_indentation_is_an_error_that_mentions_tabs(content: bytes, line: int, column: int) -> None:
    found = only("tabs.yaml", content)
    assert "tab" in found.message
    assert "indent with spaces" in found.message
    assert where(found) == (line, column)


def test_tabs_inside_values_are_fine() -> None:
    documents, found = parse_file("ok.yaml", b'prompt: "a\\tb"\nother: "x\ty"\n')
    assert found == []
    assert documents[0].data == {"prompt": "a\tb", "other": "x\ty"}


def test_duplicate_key_is_an_error_at_the_duplicate() -> None:
    content = b"kind: Agent\nmetadata:\n  name: a\nspec:\n  model: gpt-4\n  prompt: x\n  model: gpt-5\n"
    found = only("dup.yaml", content)
    assert where(found) == (7, 3)
    assert "duplicate key 'model'" in found.message
    assert "first at line 5" in found.message


def test_duplicate_top_level_key_is_an_error() -> None:
    found = only("dup.yaml", b"kind: Agent\nkind: Tool\n")
    assert where(found) == (2, 1) and "duplicate key 'kind'" in found.message


def test_same_key_in_different_mappings_is_not_a_duplicate() -> None:
    documents, found = parse_file("ok.yaml", b"a: {name: x}\nb: {name: y}\n")
    assert found == [] and documents[0].data == {"a": {"name": "x"}, "b": {"name": "y"}}


def test_merge_keys_still_work() -> None:
    documents, found = parse_file("merge.yaml", b"base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
    assert found == []
    assert documents[0].data["other"] == {"x": 1, "y": 3}


# -- binary, size, alias bombs, encodings -----------------------------------------------------


def test_binary_file_is_an_error_at_the_nul_byte() -> None:
    found = only("logo.yaml", b"kind: Agent\nspec: \x89PNG\x00\x01\x02\n")
    assert "binary" in found.message and "NUL" in found.message
    assert where(found) == (2, 11)


def test_utf16_file_is_reported_not_parsed() -> None:
    found = only("u16.yaml", "kind: Agent\n".encode("utf-16"))
    assert "binary" in found.message


def test_fifty_megabyte_file_is_an_error_and_is_not_parsed() -> None:
    # valid YAML, so if it were parsed it would yield a document
    content = b"kind: Agent\n" + b"# " + b"x" * (50 * 1024 * 1024) + b"\n"
    assert len(content) > MAX_FILE_BYTES
    found = only("huge.yaml", content)
    assert f"{len(content):,} bytes" in found.message
    assert f"{MAX_FILE_BYTES:,}" in found.message
    desired = build_desired([("huge.yaml", content), ("m.yaml", MODEL)])
    assert [e.file for e in desired.errors] == ["huge.yaml"]
    assert len(desired.objects) == 1


def test_file_at_the_size_limit_is_parsed() -> None:
    content = MODEL + b"#" * (MAX_FILE_BYTES - len(MODEL) - 1) + b"\n"
    assert len(content) == MAX_FILE_BYTES
    documents, found = parse_file("big.yaml", content)
    assert found == [] and len(documents) == 1


def billion_laughs(levels: int) -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels + 1):
        prev = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{','.join([prev] * 9)}]")
    return ("\n".join(lines) + "\n").encode()


def test_alias_bomb_is_an_error() -> None:
    found = only("bomb.yaml", billion_laughs(9))
    assert "alias bomb" in found.message
    assert "200,000 nodes" in found.message


def test_alias_bomb_in_a_later_document_names_that_document() -> None:
    documents, found = parse_file("bomb.yaml", MODEL + b"---\n" + billion_laughs(9))
    assert [d.data["kind"] for d in documents] == ["ModelEndpoint"]
    assert len(found) == 1 and "document 2 " in found[0].message


@pytest.mark.parametrize("content", [b"a: &a [*a]\n", b"&a {self: *a}\n", b"x: &x {y: [1, {z: *x}]}\n"])
def test_self_referential_alias_is_an_error(content: bytes) -> None:
    found = only("loop.yaml", content)
    assert "refers to itself" in found.message


def test_modest_alias_reuse_is_allowed() -> None:
    content = b"defaults: &d {maxSteps: 4, timeout: 30s}\na: *d\nb: *d\nc: [*d, *d]\n"
    documents, found = parse_file("ok.yaml", content)
    assert found == []
    assert documents[0].data["c"] == [{"maxSteps": 4, "timeout": "30s"}] * 2


def test_non_utf8_bytes_are_an_error_at_the_bad_byte() -> None:
    found = only("latin1.yaml", b"kind: Agent\nmetadata:\n  name: caf\xe9\n")
    assert "UTF-8" in found.message and "0xe9" in found.message
    assert where(found) == (3, 12)


def test_utf8_byte_order_mark_is_accepted() -> None:
    documents, found = parse_file("bom.yaml", b"\xef\xbb\xbf" + MODEL)
    assert found == [] and documents[0].data["kind"] == "ModelEndpoint"


def test_control_character_is_located_on_one_line() -> None:
    found = only("ctrl.yaml", b"kind: Agent\nmetadata:\n  name: a\x07b\n")
    assert where(found) == (3, 10)
    assert "\n" not in found.message and "\n" not in found.format()


# -- scalars, documents -----------------------------------------------------------------------


def test_yaml_timestamps_stay_strings() -> None:
    documents, found = parse_file("t.yaml", b"day: 2026-01-01\nat: 2026-01-01T10:00:00Z\nspaced: 2026-01-01 10:00:00\n")
    assert found == []
    assert documents[0].data == {"day": "2026-01-01", "at": "2026-01-01T10:00:00Z", "spaced": "2026-01-01 10:00:00"}


def test_timestamp_in_task_input_is_valid_and_stays_a_string() -> None:
    content = b"kind: Task\nmetadata: {name: t}\nspec:\n  agent: a\n  input: {due: 2026-01-01}\n"
    desired = build_desired([("t.yaml", content)], resolve=False)
    assert desired.ok, desired.errors
    [loaded] = desired.objects.values()
    assert loaded.body["spec"]["input"] == {"due": "2026-01-01"}


def test_multi_document_file_yields_every_document() -> None:
    content = b"# leading comment\n---\n" + MODEL + b"---\n---\n# only a comment\n---\n" + AGENT + b"...\n"
    documents, found = parse_file("multi.yaml", content)
    assert found == []
    assert [d.data["kind"] for d in documents] == ["ModelEndpoint", "Agent"]
    desired = build_desired([("multi.yaml", content)])
    assert desired.ok and {k.kind for k in desired.objects} == {"ModelEndpoint", "Agent"}


def test_errors_in_later_documents_carry_their_own_lines() -> None:
    tool = b"kind: Tool\nmetadata: {name: t}\nspec:\n  type: nope\n"
    content = MODEL + b"---\n" + AGENT.replace(b"modelRef", b"modelRf") + b"---\n" + tool
    desired = build_desired([("multi.yaml", content)], resolve=False)
    found = [(e.kind, e.field, e.line, e.column) for e in desired.errors]
    assert found == [("Agent", "spec.modelRf", 14, 3), ("Tool", "spec.type", 19, 3)]
    assert [k.kind for k in desired.objects] == ["ModelEndpoint"]


def test_empty_and_comment_only_files_yield_nothing() -> None:
    for content in (b"", b"# nothing here\n", b"---\n...\n", b"\n\n"):
        assert parse_file("empty.yaml", content) == ([], [])


# -- one bad file never stops the others ------------------------------------------------------

BAD_FILES: dict[str, bytes] = {
    "broken.yaml": b"kind: Agent\nspec: [a, b\n",
    "tabs.yaml": b"kind: Agent\nspec:\n\tmodel: gpt-4\n",
    "dup.yaml": b"kind: Tool\nkind: Agent\n",
    "binary.yaml": b"\x00\x01\x02",
    "latin1.yaml": b"kind: Agent\nname: caf\xe9\n",
    "bomb.yaml": billion_laughs(9),
    "loop.yaml": b"a: &a [*a]\n",
    "huge.yaml": b"#" * (MAX_FILE_BYTES + 1),
    "invalid.yaml": AGENT.replace(b"name: checker", b"name: other").replace(b"modelRef", b"modelRf"),
    "kindless.yaml": b"metadata: {name: x}\n",
}


def test_every_bad_file_is_reported_at_once_and_good_files_still_load() -> None:
    files: list[tuple[str, bytes | None]] = [("a-model.yaml", MODEL), *BAD_FILES.items(), ("z-agent.yaml", AGENT)]
    desired = build_desired(files)
    assert desired.files == len(files)
    assert sorted({e.file for e in desired.errors}) == sorted(BAD_FILES)
    assert len(desired.errors) == len(BAD_FILES)
    assert {(k.kind, k.name) for k in desired.objects} == {("ModelEndpoint", "offline"), ("Agent", "checker")}
    for error in desired.errors:
        assert error.line >= 1 and error.column >= 1
        assert error.format().startswith(f"{error.file}:{error.line}:{error.column}: ")


def test_file_read_as_too_large_is_reported() -> None:
    desired = build_desired([("gone.yaml", None), ("m.yaml", MODEL)])
    assert [e.file for e in desired.errors] == ["gone.yaml"]
    assert "limited to" in desired.errors[0].message


# -- properties: nothing escapes --------------------------------------------------------------


def assert_only_diagnostics(desired: Desired) -> None:
    assert isinstance(desired, Desired)
    for diagnostic in desired.diagnostics:
        assert isinstance(diagnostic, Diagnostic)
        assert diagnostic.file == "x.yaml"
        assert diagnostic.line >= 1 and diagnostic.column >= 1
        diagnostic.format()


@PROPERTY
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert_only_diagnostics(build_desired([("x.yaml", data)]))


YAMLISH = string.ascii_letters[:8] + string.digits[:4] + " :-[]{},&*!|>'\"#?%@`\n\t\\.~=" + "é\u2028\x85"


@PROPERTY
@given(st.text(alphabet=YAMLISH, max_size=400))
def test_yaml_like_text_never_raises(text: str) -> None:
    assert_only_diagnostics(build_desired([("x.yaml", text.encode("utf-8"))]))


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=10),
)
STRUCTURES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers(), st.booleans()), inner, max_size=5),
    ),
    max_leaves=30,
)


@PROPERTY
@given(st.lists(STRUCTURES, min_size=1, max_size=3))
def test_arbitrary_structures_never_raise(documents: list[Any]) -> None:
    data = yaml.safe_dump_all(documents, allow_unicode=True).encode()
    assert_only_diagnostics(build_desired([("x.yaml", data)]))


FIELD_NAMES = sorted(
    {info.alias or name for model in KINDS.values() for name, info in model.model_fields.items()}
    | {
        "modelRef",
        "model_ref",
        "tools",
        "permissions",
        "governance",
        "retry",
        "backoff",
        "max_attempts",
        "initial",
        "graph",
        "agents",
        "next",
        "edges",
        "to",
        "schedule",
        "time_zone",
        "timeZone",
        "taskRef",
        "stringData",
        "env",
        "priority",
        "agent",
        "system",
        "input",
        "requires",
        "read",
        "write",
        "selector",
        "budgets",
        "limits",
        "maxSteps",
        "timeout",
        "memory",
        "message_retry",
        "runtime",
        "auth",
        "secretRef",
        "defaultModel",
    }
    | {to_snake(n) for n in ("requireApproval", "maxTokensPerMinute", "riskLevel", "isolationMode")}
)
# Infinite floats are left out here: a duration of .inf has its own test
# (tests/unit/test_durations_cron.py).
FIELD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["2s", "1m30s", "0 2 * * *", "Europe/Prague", "read", "high", "gpt-4", "ns/name", "x", ""]),
)
FIELD_VALUES = st.recursive(
    FIELD_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=5),
    ),
    max_leaves=25,
)
MANIFESTS = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(sorted(KINDS)),
        "metadata": st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "bad name", ""])}),
        "spec": st.dictionaries(st.sampled_from(FIELD_NAMES), FIELD_VALUES, max_size=8),
    },
    optional={"apiVersion": st.sampled_from(["orloj.dev/v1", "v2"]), "status": FIELD_VALUES},
)


@PROPERTY
@given(st.lists(MANIFESTS, min_size=1, max_size=4))
def test_manifest_shaped_structures_never_raise(documents: list[dict[str, Any]]) -> None:
    data = yaml.safe_dump_all(documents, allow_unicode=True).encode()
    desired = build_desired([("x.yaml", data)])
    assert_only_diagnostics(desired)
    for loaded in desired.objects.values():
        assert loaded.digest.startswith("sha256:")
