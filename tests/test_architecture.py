"""docs/architecture.md stays true, and the code keeps the shape it describes.

- every module of runtime/, codegen/ and testing/ is named in the document, and every
  module path (``runtime/x.py``) or dotted name (``tpwire.runtime.x``) it names exists;
- no class in runtime/ or codegen/ is over ``MAX_CLASS_LINES`` lines;
- no function of the modules one envelope passes through on ``send`` and ``recv`` is over
  ``MAX_PATH_FUNCTION_LINES`` lines;
- comments and docstrings cite the project's own docs, never a design card or a folder
  outside the repository;
- a header's role ids are read in one place, ``Bindings.role_ids`` (runtime/bindings.py).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"

#: the folders whose modules the document names, one by one
PACKAGES = ("runtime", "codegen", "testing")

MAX_CLASS_LINES = 310
MAX_PATH_FUNCTION_LINES = 60

#: the modules an envelope passes through on ``send`` and ``recv`` (docs/architecture.md,
#: "One envelope's path")
SEND_RECV_PATH = (
    "channel",
    "sender",
    "receiver",
    "policy",
    "framing",
    "ordering",
    "transport",
    "recorder",
    "journal_recorder",
    "handshake",
    "epochs",
    "arena",
    "wire",
)

#: where comments and docstrings must cite only the project's own docs
CITING = ("runtime", "codegen", "testing", "src", "tools", "bench")
FOREIGN_CITATION = re.compile(r"\bDESIGN\b|\.\./shared|\bseeds/")

#: a role id read off a header by the role's field name
ROLE_GETATTR = re.compile(r"getattr\(\s*(?:header|h)\s*,\s*roles\.")


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).glob("*.py") if p.name != "__init__.py")


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _spans(path: Path, kinds: tuple[type[ast.AST], ...]) -> Iterator[tuple[str, int, int]]:
    """(name, first line, line count) of every node of ``kinds`` in ``path``, nested ones
    included (a method is a function)."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, kinds):
            assert isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            end = node.end_lineno if node.end_lineno is not None else node.lineno
            yield node.name, node.lineno, end - node.lineno + 1


# --- the document names every module, and only modules that exist ---------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_named(package: str) -> None:
    text = _doc()
    missing = [_rel(p) for p in _modules(package) if _rel(p) not in text]
    assert not missing, f"docs/architecture.md does not name {missing}"


_PATH = re.compile(r"(?<![\w/.])((?:runtime|codegen|testing)/\w+\.py)\b(?!\.\w)")
_DOTTED = re.compile(r"\btpwire\.(runtime|codegen|testing)\.(\w+)")


def _exported(package: str) -> set[str]:
    """Names a package's ``__init__`` binds or lists (``tpwire.testing.check_transport``)."""
    tree = ast.parse((REPO / package / "__init__.py").read_text("utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name)
    return names


def _dotted_exists(package: str, name: str) -> bool:
    folder = REPO / package
    return (
        (folder / f"{name}.py").is_file() or (folder / name).is_dir() or name in _exported(package)
    )


def test_every_named_module_exists() -> None:
    text = _doc()
    paths = set(_PATH.findall(text))
    assert paths, "the pattern finds no module path in docs/architecture.md"
    missing = sorted(p for p in paths if not (REPO / p).is_file())
    missing += sorted(
        f"tpwire.{pkg}.{name}"
        for pkg, name in set(_DOTTED.findall(text))
        if not _dotted_exists(pkg, name)
    )
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


# --- sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["runtime", "codegen"])
def test_no_class_is_too_long(package: str) -> None:
    long = [
        f"{_rel(p)}:{line} class {name}: {n} lines"
        for p in _modules(package)
        for name, line, n in _spans(p, (ast.ClassDef,))
        if n > MAX_CLASS_LINES
    ]
    assert not long, f"classes over {MAX_CLASS_LINES} lines: {long}"


@pytest.mark.parametrize("module", SEND_RECV_PATH)
def test_no_function_on_the_envelope_path_is_too_long(module: str) -> None:
    path = REPO / "runtime" / f"{module}.py"
    long = [
        f"{_rel(path)}:{line} {name}: {n} lines"
        for name, line, n in _spans(path, (ast.FunctionDef, ast.AsyncFunctionDef))
        if n > MAX_PATH_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_PATH_FUNCTION_LINES} lines: {long}"


# --- what comments cite --------------------------------------------------------------------


def _comments_and_docstrings(path: Path) -> Iterator[tuple[int, str]]:
    source = path.read_text("utf-8")
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                yield (node.body[0].lineno, doc)


def _cited_files() -> list[Path]:
    return sorted(p for folder in CITING for p in (REPO / folder).rglob("*.py"))


def test_the_citing_folders_have_files() -> None:
    for folder in CITING:
        assert list((REPO / folder).rglob("*.py")), folder


def test_comments_cite_the_project_docs() -> None:
    found = [
        f"{_rel(p)}:{line}: {m.group(0)!r}"
        for p in _cited_files()
        for line, text in _comments_and_docstrings(p)
        for m in FOREIGN_CITATION.finditer(text)
    ]
    # the templates print comments into generated code: the same holds for them
    for p in sorted((REPO / "codegen" / "templates").rglob("*.j2")):
        for i, line in enumerate(p.read_text("utf-8").splitlines(), 1):
            found += [f"{_rel(p)}:{i}: {m.group(0)!r}" for m in FOREIGN_CITATION.finditer(line)]
    assert not found, f"cite docs/*.md instead: {found}"


def test_the_citation_pattern() -> None:
    for bad in ("see DESIGN.md", "DESIGN section 4", "../shared/notes.md", "seeds/004.yaml"):
        assert FOREIGN_CITATION.search(bad), bad
    for fine in ("seed 004's optimize mode", "designed", "docs/architecture.md", "shared/"):
        assert not FOREIGN_CITATION.search(fine), fine


# --- role ids ------------------------------------------------------------------------------


def test_role_ids_are_read_in_bindings_only() -> None:
    found = [
        f"{_rel(p)}:{i}: {line.strip()}"
        for p in sorted((REPO / "runtime").glob("*.py"))
        if p.name != "bindings.py"
        for i, line in enumerate(p.read_text("utf-8").splitlines(), 1)
        if ROLE_GETATTR.search(line)
    ]
    assert not found, f"read role ids with Bindings.role_ids: {found}"
    assert ROLE_GETATTR.search((REPO / "runtime" / "bindings.py").read_text("utf-8"))
