"""Stage 1 - load: spec bytes -> a plain tree plus the position of every node.

PyYAML's composer gives nodes with marks; we walk them ourselves so that duplicate
keys, aliases, custom tags, garbage bytes, huge numbers and deep nesting all become
located ``SpecError``s instead of tracebacks or silent overwrites. The stages after this one:
docs/architecture.md.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError, SpecErrors

PathKey = tuple[str | int, ...]

#: A spec is a small document; anything larger is a mistake or an attack.
MAX_BYTES = 1 << 20
MAX_NODES = 50_000
MAX_DEPTH = 32

_SAFE_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
)


@dataclass(frozen=True, slots=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based
    #: offset of the scalar's text from ``col`` (1 for quoted scalars, -1 when unknown)
    text_offset: int = 0


@dataclass
class LoadedSpec:
    """A spec document as plain data, with marks for values and mapping keys."""

    file: str
    text: str
    sha256: str
    data: dict[str, Any]
    marks: dict[PathKey, Mark] = field(default_factory=dict)
    key_marks: dict[PathKey, Mark] = field(default_factory=dict)

    def mark(self, path: PathKey, *, key: bool = False) -> Mark:
        """The mark of ``path`` (its key when ``key``), or of its closest ancestor."""
        table = self.key_marks if key else self.marks
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if p in self.marks:
                return self.marks[p]
            p = p[:-1]
        return self.marks.get((), Mark(1, 1))

    def error(
        self,
        path: PathKey,
        code: str,
        message: str,
        *,
        key: bool = False,
        offset: int | None = None,
    ) -> SpecError:
        m = self.mark(path, key=key)
        col = m.col
        if offset is not None and m.text_offset >= 0:
            col += m.text_offset + offset
        return SpecError(self.file, m.line, col, code, message)


def _err(file: str, line: int, col: int, code: str, message: str) -> SpecErrors:
    return SpecErrors([SpecError(file, line, col, code, message)])


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, col


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8")
        line, col = _line_col(good, len(good))
        raise _err(
            file, line, col, "encoding", f"spec is not valid UTF-8 (byte {raw[exc.start]:#04x})"
        ) from None


def _unencodable(value: object) -> bool:
    """A double-quoted ``"\\ud800"`` escape yields a lone surrogate, which no output can hold."""
    return isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value)


#: Control characters a string may hold: a YAML escape (``"\0"``, ``"\x1b"``, ``"\r"``) can
#: spell any other, and NUL in a docstring would make the generated module fail to import.
_ALLOWED_CONTROLS = frozenset("\t\n")


def _control_char(value: object) -> str | None:
    """The first control character in a string other than tab and newline, if any."""
    if not isinstance(value, str):
        return None
    return next(
        (c for c in value if c not in _ALLOWED_CONTROLS and unicodedata.category(c) == "Cc"),
        None,
    )


def _control_message(what: str, c: str) -> str:
    return f"{what} holds control character U+{ord(c):04X}; only tab and newline are allowed"


def printable_name(name: str) -> str:
    """A spec's file name with every unprintable character escaped (``\\n``, ``\\x00``,
    ``\\udcff``): the name goes into error lines and into the header comments of generated
    files, where a newline would start a line of its own (code, in a generated module)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in name)


class _AliasNode(yaml.ScalarNode):
    """Stands for an alias at the alias's own position (PyYAML would share the anchored node)."""


class _TooManyNodes(Exception):
    def __init__(self, mark: Any) -> None:
        self.mark = mark


class _Loader(yaml.SafeLoader):
    nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # count while composing: a flat list of a million items must be refused before
        # PyYAML has built (and the process paid for) all of it
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooManyNodes(self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            event: Any = self.get_event()  # type: ignore[no-untyped-call]
            return _AliasNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)
        return super().compose_node(parent, index)


class _Walker:
    def __init__(self, loaded: LoadedSpec, loader: yaml.SafeLoader) -> None:
        self.loaded = loaded
        self.loader = loader
        self.errors: list[SpecError] = []
        self.seen: set[int] = set()
        self.count = 0

    def _mark(self, node: yaml.Node) -> Mark:
        style = getattr(node, "style", None)
        offset = 1 if style in ("'", '"') else (0 if style is None else -1)
        start, end = node.start_mark, node.end_mark
        if isinstance(node, yaml.ScalarNode) and offset >= 0:
            # Offsets into the value map onto the source only when the source spells the
            # value verbatim (one line, no escapes); otherwise point at the scalar itself.
            source = self.loaded.text[start.index + offset : end.index - offset]
            if source != node.value:
                offset = -1
        return Mark(start.line + 1, start.column + 1, offset)

    def _fail(self, node: yaml.Node, code: str, message: str) -> None:
        m = self._mark(node)
        self.errors.append(SpecError(self.loaded.file, m.line, m.col, code, message))

    def walk(self, node: yaml.Node, path: PathKey) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _err(self.loaded.file, 1, 1, "too-large", f"spec has over {MAX_NODES} nodes")
        if len(path) > MAX_DEPTH:
            self._fail(node, "too-deep", f"nesting deeper than {MAX_DEPTH} levels")
            return None
        if isinstance(node, _AliasNode) or id(node) in self.seen:
            self._fail(node, "yaml-alias", "YAML aliases are not allowed in specs")
            return None
        self.seen.add(id(node))
        self.loaded.marks[path] = self._mark(node)
        if node.tag not in _SAFE_TAGS:
            self._fail(node, "yaml-tag", f"unsupported YAML tag {node.tag!r}")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
        if _unencodable(node.value):
            self._fail(node, "encoding", "string holds a lone surrogate escape (not valid UTF-8)")
            return None
        if (c := _control_char(node.value)) is not None:
            self._fail(node, "control-char", _control_message("string", c))
            return None
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, yaml.YAMLError) as exc:
            self._fail(node, "yaml-value", f"cannot read scalar: {str(exc).splitlines()[0]}")
            return None

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                self._fail(key_node, "key-type", "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            if _unencodable(key):
                self._fail(
                    key_node, "encoding", "key holds a lone surrogate escape (not valid UTF-8)"
                )
                continue
            if (c := _control_char(key)) is not None:
                self._fail(key_node, "control-char", _control_message("key", c))
                continue
            if key in first:
                prev = first[key].start_mark.line + 1
                self._fail(
                    key_node, "duplicate-key", f"duplicate key {key!r} (first at line {prev})"
                )
                continue
            first[key] = key_node
            self.loaded.key_marks[(*path, key)] = self._mark(key_node)
            out[key] = self.walk(value_node, (*path, key))
        return out


def load_text(source: str | bytes, file: str = "<spec>") -> LoadedSpec:
    """Parse spec text into a located tree; raises ``SpecErrors`` for anything unusable."""
    raw = source.encode("utf-8") if isinstance(source, str) else bytes(source)
    file = printable_name(file)
    if len(raw) > MAX_BYTES:
        raise _err(file, 1, 1, "too-large", f"spec is {len(raw)} bytes, the limit is {MAX_BYTES}")
    text = _decode(raw, file)
    loaded = LoadedSpec(file, text, hashlib.sha256(raw).hexdigest(), {})
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise _err(file, 1, 1, "empty", "spec is empty")
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise _err(
            file, line, col, "yaml-syntax", f"unacceptable character #x{exc.character:04x}"
        ) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = exc.problem or "invalid YAML"
            if exc.context:
                problem = f"{exc.context}: {problem}"
            raise _err(file, line, col, "yaml-syntax", problem) from None
        except yaml.YAMLError as exc:
            raise _err(file, 1, 1, "yaml-syntax", str(exc).splitlines()[0]) from None
        except RecursionError:
            raise _err(file, 1, 1, "too-deep", "spec nesting is too deep") from None
        except _TooManyNodes as exc:
            line, col = exc.mark.line + 1, exc.mark.column + 1
            raise _err(file, line, col, "too-large", f"spec has over {MAX_NODES} nodes") from None
        if root is None:
            raise _err(file, 1, 1, "empty", "spec is empty")
        walker = _Walker(loaded, loader)
        try:
            data = walker.walk(root, ())
        except RecursionError:
            raise _err(file, 1, 1, "too-deep", "spec nesting is too deep") from None
    finally:
        loader.dispose()
    if walker.errors:
        raise SpecErrors(walker.errors)
    if not isinstance(data, Mapping):
        m = loaded.mark(())
        kind = "a list" if isinstance(data, list) else f"a scalar ({type(data).__name__})"
        raise _err(file, m.line, m.col, "not-a-mapping", f"a spec must be a mapping, got {kind}")
    loaded.data = dict(data)
    return loaded


def load_path(path: str | Path, display: str | None = None) -> LoadedSpec:
    p = Path(path)
    name = printable_name(display or str(path))
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise _err(name, 1, 1, "io", f"cannot read spec: {exc.strerror or exc}") from None
    return load_text(raw, name)
