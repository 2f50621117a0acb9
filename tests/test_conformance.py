"""The language-neutral conformance corpus (tests/conformance/, docs/conformance.md).

Every ``tests/conformance/*.yaml`` file holds one small spec and a list of cases: a plain
envelope (``runtime/plain.py`` form) and the verdict tpwire must reach, ``valid: true`` or
``valid: false`` with the exact set of violation ``codes`` (and, when given, the exact set
of ``(code, field)`` pairs). Each file is checked against ``corpus.schema.json`` first.

For each case this runner compiles the file's spec (once per file), builds the typed
envelope with ``from_plain`` (which also runs ``validate``) and compares the verdict. It
then checks the bindings agree with themselves: a valid envelope must survive
``encode`` -> ``decode`` bit for bit; an invalid one must be refused by ``encode`` with the
codes ``validate`` reports, and ``validate(..., fail_fast=True)`` must stop at one of them.

Cases named in ``expected_failures.yaml`` are strict xfails: a listed case that passes
fails the run, so the list cannot go stale.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tpwire.codegen.compiler import compile as compile_spec
from tpwire.codegen.errors import SpecErrors
from tpwire.runtime.errors import VIOLATION_CODES, EnvelopeInvalid
from tpwire.runtime.plain import from_plain

CORPUS = Path(__file__).parent / "conformance"
SCHEMA_PATH = CORPUS / "corpus.schema.json"
XFAIL_PATH = CORPUS / "expected_failures.yaml"
MIN_CASES = 60
#: Rule kinds that only an invalid envelope can exercise.
ONLY_INVALID = {"none_where_required", "unknown_field"}


@dataclass(frozen=True)
class Case:
    file: str  # the corpus file's stem
    description: str
    rules: tuple[str, ...]
    envelope: Any
    valid: bool
    codes: frozenset[str]
    violations: frozenset[tuple[str, str]] | None

    @property
    def id(self) -> str:
        return f"{self.file}::{self.description}"


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    data: Any
    problems: tuple[str, ...]  # schema and consistency problems; empty when well formed

    @property
    def stem(self) -> str:
        return self.path.stem


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text("utf-8"))
    return schema


def _consistency(data: dict[str, Any]) -> list[str]:
    """What the schema cannot say: unique descriptions, codes that agree with the pairs."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, case in enumerate(data["cases"]):
        where = f"/cases/{i} ({case['description']!r})"
        if case["description"] in seen:
            problems.append(f"{where}: duplicate description")
        seen.add(case["description"])
        pairs = case.get("violations")
        if pairs is not None and {p["code"] for p in pairs} != set(case["codes"]):
            problems.append(f"{where}: the codes of 'violations' differ from 'codes'")
    return problems


def _problem(e: jsonschema.ValidationError) -> str:
    why = e.schema.get("description") if isinstance(e.schema, dict) else None
    return f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" + (f" ({why})" if why else "")


def _load(path: Path) -> CorpusFile:
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return CorpusFile(path, None, (f"not readable YAML: {exc}",))
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_problem(e) for e in errors]
    if not problems:
        problems = _consistency(data)
    return CorpusFile(path, data, tuple(problems))


def _corpus() -> list[CorpusFile]:
    return [_load(p) for p in sorted(CORPUS.glob("*.yaml")) if p != XFAIL_PATH]


def _cases(f: CorpusFile) -> list[Case]:
    if f.problems:
        return []
    return [
        Case(
            file=f.stem,
            description=c["description"],
            rules=tuple(c["rules"]),
            envelope=c["envelope"],
            valid=c["valid"],
            codes=frozenset(c.get("codes", ())),
            violations=(
                frozenset((v["code"], v["field"]) for v in c["violations"])
                if "violations" in c
                else None
            ),
        )
        for c in f.data["cases"]
    ]


def _expected_failures() -> tuple[dict[str, str], tuple[str, ...]]:
    """``{case id: reason}`` and the problems of the file's format (then no entries)."""
    data = yaml.safe_load(XFAIL_PATH.read_text("utf-8"))
    validator = jsonschema.Draft202012Validator(_schema()["$defs"]["expected_failures"])
    problems = tuple(_problem(e) for e in validator.iter_errors(data))
    if problems:
        return {}, problems
    return {e["case"]: e["reason"] for e in data["expected_failures"]}, ()


FILES = _corpus()
CASES = [c for f in FILES for c in _cases(f)]
XFAILS, XFAIL_PROBLEMS = _expected_failures()


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks = []
        if case.id in XFAILS:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAILS[case.id]))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@functools.cache
def _module(stem: str) -> ModuleType:
    spec = next(f for f in FILES if f.stem == stem).data["spec"]
    text = spec if isinstance(spec, str) else json.dumps(spec, indent=1) + "\n"
    try:
        return compile_spec(text)
    except SpecErrors as exc:
        lines = "\n".join(str(e) for e in exc.errors)
        pytest.fail(f"{stem}: the spec does not compile:\n{lines}", pytrace=False)


def _report(violations: list[Any]) -> str:
    if not violations:
        return "  (none)"
    return "\n".join(
        f"  - {v.code} {v.field!r}: expected {v.expected}, got {v.actual} ({v.rule})"
        for v in violations
    )


def _wire_bytes(frames: Any) -> list[bytes]:
    return [t.numpy().tobytes() for t in (frames.frame0, *frames.segments)]


# --- the corpus itself ---------------------------------------------------------------------


@pytest.mark.parametrize("f", FILES, ids=[f.stem for f in FILES])
def test_corpus_file_is_well_formed(f: CorpusFile) -> None:
    assert not f.problems, f"{f.path.name} breaks corpus.schema.json:\n" + "\n".join(f.problems)


def test_corpus_is_large_enough_and_covers_every_rule_kind() -> None:
    assert len(CASES) >= MIN_CASES, f"{len(CASES)} cases, want at least {MIN_CASES}"
    kinds = _schema()["$defs"]["rule"]["enum"]
    covered = {r for c in CASES for r in c.rules}
    assert set(kinds) - covered == set(), "rule kinds without a case"
    invalid = {r for c in CASES if not c.valid for r in c.rules}
    assert set(kinds) - invalid == set(), "rule kinds without an invalid case"
    valid = {r for c in CASES if c.valid for r in c.rules}
    assert set(kinds) - valid == ONLY_INVALID, "rule kinds without a valid case"


def test_schema_codes_are_the_runtime_codes() -> None:
    assert tuple(_schema()["$defs"]["code"]["enum"]) == VIOLATION_CODES


def test_expected_failures_name_real_cases() -> None:
    assert not XFAIL_PROBLEMS, f"{XFAIL_PATH.name} is malformed:\n" + "\n".join(XFAIL_PROBLEMS)
    ids = {c.id for c in CASES}
    assert set(XFAILS) - ids == set(), "expected_failures.yaml names unknown cases"


def test_a_malformed_corpus_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "description: d\nspec: 'x'\ncases:\n"
        "  - {description: c, rules: [range], envelope: {header: {}}, valid: false}\n"
        "  - {description: c, rules: [nope], envelope: {header: {}}, valid: true, codes: [x]}\n",
        "utf-8",
    )
    f = _load(bad)
    assert [p.split(":")[0] for p in f.problems] == [
        "/cases/0",  # an invalid case without codes
        "/cases/1/codes",  # codes on a valid case
        "/cases/1/codes/0",  # an unknown code
        "/cases/1/rules/0",  # an unknown rule kind
        "/spec",  # neither spec text (it has no newline) nor a mapping
    ]
    assert _cases(f) == []  # no case of a malformed file runs
    bad.write_text(
        "description: d\nspec: {tpwire: 1}\ncases:\n"
        "  - {description: c, rules: [range], envelope: {header: {}}, valid: false,\n"
        "     codes: [range], violations: [{code: type, field: x}]}\n"
        "  - {description: c, rules: [range], envelope: {header: {}}, valid: true}\n",
        "utf-8",
    )
    assert _load(bad).problems == (
        "/cases/0 ('c'): the codes of 'violations' differ from 'codes'",
        "/cases/1 ('c'): duplicate description",
    )


def _outcome(case: Case) -> str:
    try:
        test_case(case)
    except AssertionError:
        return "fails"
    return "passes"


def test_every_case_fails_when_its_verdict_is_flipped() -> None:
    """The comparison is exact: no case can pass whatever the bindings say."""
    for case in CASES:
        if case.id in XFAILS:
            continue
        flipped = dataclasses.replace(
            case,
            valid=not case.valid,
            codes=frozenset({"forbidden"} if case.valid else ()),
            violations=None,
        )
        assert _outcome(flipped) == "fails", case.id
        if case.violations is not None:
            moved = frozenset((code, field + "_") for code, field in case.violations)
            assert _outcome(dataclasses.replace(case, violations=moved)) == "fails", case.id


# --- the cases ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params())
def test_case(case: Case) -> None:
    mod = _module(case.file)
    header, msg, found = from_plain(mod, case.envelope)
    codes = {v.code for v in found}
    pairs = {(v.code, v.field) for v in found}
    want = "valid" if case.valid else f"invalid with codes {sorted(case.codes)}"
    assert codes == set(case.codes), f"expected {want}, got:\n{_report(found)}"
    if case.violations is not None:
        assert pairs == set(case.violations), f"expected {sorted(case.violations)}, got:\n" + (
            _report(found)
        )

    if case.valid:
        frames = mod.encode(msg, header)
        header2, msg2 = mod.decode(frames)
        assert header2 == header
        assert type(msg2) is type(msg)
        assert msg2 == msg, "decode(encode(x)) != x"
        # bit for bit, scalars too (== cannot tell -0.0 from 0.0)
        assert _wire_bytes(mod.encode(msg2, header2)) == _wire_bytes(frames)
        return
    direct = mod.validate(msg, header)  # what the typed objects alone break
    if direct:
        with pytest.raises(EnvelopeInvalid) as refused:
            mod.encode(msg, header)
        assert refused.value.codes == {v.code for v in direct}
        first = mod.validate(msg, header, fail_fast=True)
        assert len(first) == 1 and first[0] in direct
