"""The catalogue of error codes (codegen/codes.py) is complete, used and documented.

Complete: every code the sources pass (a literal in the loader, the expression parser and
the compiler, ``codes.X`` in the checker) and every code tests/bad_specs/ expects is in
it. Used: every catalogued code is emitted somewhere. Documented: the table in
docs/spec-language.md ("Error codes") is the catalogue's (``make gen`` rewrites it).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools import codes_doc
from tpwire.codegen import codes
from tpwire.codegen.check import check
from tpwire.codegen.errors import SpecErrors
from tpwire.codegen.load import load_text

REPO = Path(__file__).resolve().parents[1]
CODEGEN = REPO / "codegen"
BAD_SPECS = REPO / "tests" / "bad_specs"

#: callables that take an error code as a positional argument, and its index
CODE_ARG = {
    "SpecError": 3,
    "_err": 3,
    "_fail": 1,
    "fail": 1,
    "error": 1,
    "ExprError": 0,
}
#: the CLI prints a few located errors itself (io, encoding of a file it cannot read)
CLI = REPO / "src" / "tpwire" / "cli.py"
_PRINTED = re.compile(r"error\[([a-z0-9-]+)\]")
#: catalogued codes no spec under tests/bad_specs/ produces, and why
NOT_IN_CORPUS = {
    "io": "a file that cannot be read (tests/test_cli.py)",
    "duplicate-protocol": "needs two specs (tests/test_cli.py)",
    "too-large": "a spec over the size limit (tests/test_fuzz_specs.py)",
    "unknown-enum": "tests/test_expr.py",
    **dict.fromkeys(
        ("duplicate-dtype", "unused-dim", "too-many-fields", "duplicate-action"),
        "SMALL_CASES below",
    ),
}
#: A spec that checks, and the edits that make it fail with one code each.
SMALL_SPEC = """\
tpwire: 1
protocol: tiny
enums:
  Act: {{values: {{NOOP: 0, RUN: 1, STOP: 2, FAIL: 3, GO: 4}}}}
header:
  slots: [seq, act]
  action: act
  roles: {{sequence: seq}}
  control: {{noop: NOOP, shutdown: STOP, error: FAIL}}
  fields:
    seq: {{type: int, range: {{min: 0}}}}
    act: {{type: Act}}
messages:
  Run:
    id: 1
    version: 1
    action: RUN
    dims: {{N: {{min: 1, max: 4}}{dims}}}
    fields:
      data: {{type: tensor, dtypes: [float32{dtypes}], shape: [N]}}
{fields}{messages}"""
SMALL_CASES = {
    "duplicate-dtype": {"dtypes": ", float32"},
    "unused-dim": {"dims": ", M: {min: 1, max: 2}"},
    "too-many-fields": {"fields": "".join(f"      f{i}: {{type: bool}}\n" for i in range(62))},
    "duplicate-action": {
        "messages": "  Go: {id: 2, version: 1, action: RUN, fields: {ok: {type: bool}}}\n"
    },
}


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def literal_codes(path: Path) -> Iterator[tuple[int, str]]:
    """(line, code) of every string literal passed as a code in ``path``."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        index = CODE_ARG.get(_callee(node) or "")
        if index is None:
            continue
        arg = node.args[index] if index < len(node.args) else None
        arg = arg or next((k.value for k in node.keywords if k.arg == "code"), None)
        for value in (arg.body, arg.orelse) if isinstance(arg, ast.IfExp) else (arg,):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                yield node.lineno, value.value


def catalogue_refs(path: Path) -> Iterator[tuple[int, str]]:
    """(line, attribute) of every ``codes.X`` in ``path``."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "codes"
        ):
            yield node.lineno, node.attr


def sources() -> list[Path]:
    return sorted(p for p in CODEGEN.glob("*.py") if p.name != "codes.py")


def emitted() -> set[str]:
    """Every code the sources emit, literal or through the catalogue."""
    out = {code for p in sources() for _, code in literal_codes(p)}
    out |= {
        getattr(codes, attr).name
        for p in sources()
        for _, attr in catalogue_refs(p)
        if isinstance(getattr(codes, attr, None), codes.Code)
    }
    out |= set(_PRINTED.findall(CLI.read_text("utf-8"))) - {"code"}
    return out


def corpus_codes() -> dict[str, list[str]]:
    """code -> the bad specs that expect it."""
    out: dict[str, list[str]] = {}
    for path in sorted(BAD_SPECS.iterdir()):
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        for line in text.splitlines():
            if "expect:" in line:
                for code in _PRINTED.findall(line):
                    out.setdefault(code, []).append(path.name)
    return out


def test_the_catalogue_is_well_formed() -> None:
    names = [c.name for c in codes.CODES]
    assert len(names) == len(set(names))
    assert codes.BY_NAME == {c.name: c for c in codes.CODES}
    for c in codes.CODES:
        assert re.fullmatch(r"[a-z][a-z0-9-]*", c.name), c
        assert c.stage in {"load", "schema", "expr", "check", "gen"}, c
        assert c.meaning and "\n" not in c.meaning and "|" not in c.meaning, c


def test_the_checker_names_codes_through_the_catalogue() -> None:
    """check*.py spell no code as a string, and every ``codes.X`` they use exists."""
    for path in [CODEGEN / "check.py", *sorted(CODEGEN.glob("check_*.py"))]:
        assert not list(literal_codes(path)), f"{path.name}: use codes.X, not a string"
    for path in sources():
        for line, attr in catalogue_refs(path):
            if attr in {"Code", "CODES", "BY_NAME", "named"}:
                continue
            assert isinstance(getattr(codes, attr, None), codes.Code), (
                f"{path.name}:{line}: codes.{attr} is not in the catalogue"
            )


def test_every_emitted_code_is_catalogued() -> None:
    unknown = sorted(emitted() - set(codes.BY_NAME))
    assert not unknown, f"add these codes to codegen/codes.py: {unknown}"


def test_every_catalogued_code_is_emitted() -> None:
    unused = sorted(set(codes.BY_NAME) - emitted())
    assert not unused, f"codes no source emits (remove them from codegen/codes.py): {unused}"


def test_the_bad_specs_expect_only_catalogued_codes() -> None:
    found = corpus_codes()
    unknown = {c: specs for c, specs in found.items() if c not in codes.BY_NAME}
    assert not unknown, f"bad specs expect codes the catalogue lacks: {unknown}"
    uncovered = sorted(set(codes.BY_NAME) - set(found) - set(NOT_IN_CORPUS))
    assert not uncovered, f"no bad spec produces {uncovered}: add one, or list it in NOT_IN_CORPUS"
    stale = sorted(set(NOT_IN_CORPUS) & set(found))
    assert not stale, f"now in the corpus, remove from NOT_IN_CORPUS: {stale}"


def _small(**edits: str) -> str:
    return SMALL_SPEC.format(**{"dims": "", "dtypes": "", "fields": "", "messages": "", **edits})


def test_the_small_spec_checks() -> None:
    check(load_text(_small(), "<tiny>"))


@pytest.mark.parametrize("code", sorted(SMALL_CASES))
def test_codes_outside_the_corpus(code: str) -> None:
    with pytest.raises(SpecErrors) as info:
        check(load_text(_small(**SMALL_CASES[code]), "<tiny>"))
    assert [e.code for e in info.value.errors] == [code], info.value


def test_named_refuses_an_unknown_code() -> None:
    assert codes.named("bad-name") is codes.BAD_NAME
    try:
        codes.named("bad-nmae")
    except KeyError as exc:
        assert "codegen/codes.py" in str(exc)
    else:
        raise AssertionError("named() accepted a code the catalogue lacks")


def test_the_documented_codes_are_fresh() -> None:
    page = codes_doc.PAGE.read_text("utf-8")
    assert codes_doc.spliced(page) == page, (
        "docs/spec-language.md's error codes are stale: run make gen (python -m tools.codes_doc)"
    )
    for c in codes.CODES:
        assert f"| `{c.name}` |" in page
