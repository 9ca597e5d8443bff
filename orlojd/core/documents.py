"""YAML bytes to documents, safely: every kind of bad input becomes a Diagnostic, never an exception.

Parsing uses libyaml (CSafeLoader) for speed. Positions are not kept on the fast
path: when a check needs a line and column, the file is composed again (only files
with findings pay for that). Guards: size limit, binary content, non-UTF-8 bytes,
duplicate keys, alias bombs (billion laughs), tabs; YAML timestamps stay strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from orlojd.core.diagnostics import Diagnostic, Path

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_EXPANDED_NODES = 200_000

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _AliasBomb(Exception):
    pass


class _ManifestLoader(_Loader):  # type: ignore[misc]
    """Safe loader that refuses duplicate keys and keeps timestamps as text."""

    alias_hits = 0

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    first = seen[key_node.value].start_mark
                    raise _DuplicateKey(
                        None,
                        None,
                        f"duplicate key {key_node.value!r} (first at line {first.line + 1}); "
                        "YAML keeps only the last one, so remove or merge one of them",
                        key_node.start_mark,
                    )
                seen[key_node.value] = key_node
        return super().construct_mapping(node, deep)


class _AnchoredLoader(_ManifestLoader):
    """For text with anchors: also counts alias reuse, so alias bombs are caught."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects:
            self.alias_hits += 1
        return super().construct_object(node, deep)


_ManifestLoader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)


@dataclass
class SourceFile:
    """One file's text and, on demand, the YAML node trees that give positions."""

    path: str
    text: str
    _nodes: list[yaml.Node | None] | None = field(default=None, repr=False)

    def nodes(self) -> list[yaml.Node | None]:
        if self._nodes is None:
            try:
                self._nodes = list(yaml.compose_all(self.text, Loader=_Loader))
            except yaml.YAMLError:
                self._nodes = []
        return self._nodes

    def position(self, index: int, path: Path) -> tuple[int, int]:
        """1-based (line, column) of the deepest node on ``path`` in document ``index``."""
        nodes = self.nodes()
        if index >= len(nodes) or nodes[index] is None:
            return 1, 1
        node = nodes[index]
        assert node is not None
        best = node.start_mark
        for part in path:
            child = _child(node, part)
            if child is None:
                break
            key_mark, node = child
            best = key_mark
        return best.line + 1, best.column + 1


def _norm(key: str) -> str:
    return key.replace("_", "").lower()


def _child(node: yaml.Node, part: str | int) -> tuple[Any, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key == part or (isinstance(key, str) and isinstance(part, str) and _norm(key) == _norm(part)):
                return key_node.start_mark, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item = node.value[part]
        return item.start_mark, item
    return None


@dataclass(frozen=True, slots=True)
class RawDocument:
    """One parsed YAML document and where it came from."""

    source: SourceFile
    index: int
    data: Any


def _line_of_offset(content: bytes, offset: int) -> tuple[int, int]:
    before = content[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return line, column


def _codepoint(character: object) -> str:
    number = ord(character) if isinstance(character, str) else int(str(character))
    return f"U+{number:04X}"


def _line_of_text_offset(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """Node count with every alias written out; a recursive alias counts as unbounded."""
    key = id(value)
    if key in memo:
        if memo[key] < 0:
            raise _AliasBomb()
        return memo[key]
    memo[key] = -1
    if isinstance(value, dict):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in value.items())
    elif isinstance(value, list):
        size = 1 + sum(_expanded_size(v, memo) for v in value)
    else:
        size = 1
    memo[key] = size
    return size


def too_large(path: str, size: int) -> Diagnostic:
    return Diagnostic(
        f"file is {size:,} bytes; manifests are limited to {MAX_FILE_BYTES:,} bytes "
        "(split it, or list it in .orlojignore)",
        path,
    )


def parse_file(path: str, content: bytes) -> tuple[list[RawDocument], list[Diagnostic]]:
    """Split a file into documents. Empty documents are skipped; findings come back as values."""
    if len(content) > MAX_FILE_BYTES:
        return [], [too_large(path, len(content))]
    nul = content.find(b"\0")
    if nul >= 0:
        line, column = _line_of_offset(content, nul)
        return [], [
            Diagnostic("binary file (contains a NUL byte), not YAML; list it in .orlojignore", path, line, column)
        ]
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_of_offset(content, exc.start)
        return [], [
            Diagnostic(f"not valid UTF-8 (byte 0x{content[exc.start]:02x}); save the file as UTF-8", path, line, column)
        ]
    text = text.removeprefix("\ufeff")
    source = SourceFile(path, text)
    documents: list[RawDocument] = []
    # Aliases need an anchor ('&'); text without one skips the per-node alias accounting.
    loader = _AnchoredLoader(text) if "&" in text else _ManifestLoader(text)
    index = 0
    try:
        while loader.check_data():
            data = loader.get_data()
            if loader.alias_hits and _expanded_size(data, {}) > MAX_EXPANDED_NODES:
                raise _AliasBomb()
            loader.alias_hits = 0
            if data is not None:
                documents.append(RawDocument(source, index, data))
            index += 1
    except yaml.MarkedYAMLError as exc:
        return documents, [_yaml_diagnostic(path, text, exc)]
    except yaml.reader.ReaderError as exc:
        line, column = _line_of_text_offset(text, exc.position)
        return documents, [
            Diagnostic(
                f"invalid YAML: control character {_codepoint(exc.character)} is not allowed; remove it",
                path,
                line,
                column,
            )
        ]
    except _AliasBomb:
        return documents, [
            Diagnostic(
                f"document {index + 1} expands to more than {MAX_EXPANDED_NODES:,} nodes through aliases, "
                "or refers to itself (an alias bomb); write the values out instead of nesting anchors",
                path,
            )
        ]
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
        return documents, [Diagnostic(f"cannot read YAML: {type(exc).__name__}: {exc}", path)]
    finally:
        loader.dispose()
    return documents, []


def _yaml_diagnostic(path: str, text: str, exc: yaml.MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "invalid YAML"
    if exc.context and not isinstance(exc, _DuplicateKey):
        problem = f"{exc.context}: {problem}"
    if mark is not None and 0 <= mark.index < len(text) and text[mark.index] == "\t":
        problem += "; YAML does not allow tabs here, indent with spaces"
    return Diagnostic(f"invalid YAML: {problem}", path, line, column)
