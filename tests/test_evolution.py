"""The spec-evolution corpus (tests/evolution/, docs/evolution.md): ``tpwire breaking``.

Each ``tests/evolution/*.yaml`` file names a base spec and a list of cases. A case makes the
old spec (the base, with ``old_edits``) and the new one (the old with ``edits``; every
``find`` must occur exactly once) and states the exact multiset of findings ``tpwire
breaking`` must report: rule id, direction and subject (and, when given, the line and which
spec it is located in). ``equivalent: true`` marks a rewrite that must give no finding;
``fingerprint`` says whether the protocol fingerprint must stay the same. The format is
language neutral (``corpus.schema.json``): another implementation can run the same cases.

Beyond the cases: every rule of the catalogue has at least one case, the corpus has at least
``MIN_CASES`` pairs, findings are deterministic and sorted, comparing a spec with itself
finds nothing, and swapping old and new turns tightening findings into loosening ones.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tpwire.codegen import breaking

CORPUS = Path(__file__).parent / "evolution"
SCHEMA = json.loads((CORPUS / "corpus.schema.json").read_text("utf-8"))
MIN_CASES = 60

#: Rules whose swap (old <-> new) is their mirror image.
MIRROR = {
    "FIELD_RANGE_NARROWED": "FIELD_RANGE_WIDENED",
    "STR_MAX_LEN_NARROWED": "STR_MAX_LEN_WIDENED",
    "TENSOR_DTYPES_NARROWED": "TENSOR_DTYPES_WIDENED",
    "DIM_RANGE_NARROWED": "DIM_RANGE_WIDENED",
    "TENSOR_MAX_ELEMENTS_NARROWED": "TENSOR_MAX_ELEMENTS_WIDENED",
    "PRESENCE_REQUIRED_WIDENED": "PRESENCE_REQUIRED_NARROWED",
    "PRESENCE_FORBIDDEN_WIDENED": "PRESENCE_FORBIDDEN_NARROWED",
    "INVARIANT_STRENGTHENED": "INVARIANT_WEAKENED",
    "FIELD_NULLABLE": "FIELD_NOT_NULLABLE",
    "ENUM_VALUE_ADDED": "ENUM_VALUE_REMOVED",
    "DERIVED_ADDED": "DERIVED_REMOVED",
    "INVARIANT_ADDED": "INVARIANT_REMOVED",
    "MESSAGE_ADDED": "MESSAGE_REMOVED",
    "HEADER_SLOT_ADDED": "HEADER_SLOT_REMOVED",
}
MIRROR |= {v: k for k, v in MIRROR.items()}


@dataclass(frozen=True)
class Case:
    file: str
    description: str
    old: str
    new: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}::{self.description}"


def _apply(text: str, edits: list[dict[str, str]], where: str) -> str:
    for e in edits:
        n = text.count(e["find"])
        if n != 1:
            raise AssertionError(f"{where}: edit finds {e['find']!r} {n} times (needs exactly 1)")
        text = text.replace(e["find"], e["replace"])
    return text


def _files() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
    return data


def _cases() -> list[Case]:
    out = []
    for path in _files():
        data = _load(path)
        base = data["base"]
        text = (path.parent / base["file"]).read_text("utf-8") if isinstance(base, dict) else base
        for c in data["cases"]:
            where = f"{path.stem}::{c['description']}"
            old = _apply(text, c.get("old_edits", []), where)
            new = _apply(old, c["edits"], where)
            out.append(Case(path.stem, c["description"], old, new, c))
    return out


CASES = _cases()


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_corpus_file_is_well_formed(path: Path) -> None:
    data = _load(path)
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    assert not errors, [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    names = [c["description"] for c in data["cases"]]
    assert len(names) == len(set(names)), "duplicate case descriptions"
    for c in data["cases"]:
        for f in c["findings"]:
            rule = breaking.RULES.get(f["rule"])
            assert rule is not None, f"{c['description']}: unknown rule {f['rule']}"
            assert rule.direction == f["direction"], f"{c['description']}: {f['rule']} direction"
        if c.get("equivalent"):
            assert not c["findings"], f"{c['description']}: an equivalence case has no findings"


@functools.cache
def _side(text: str, name: str) -> breaking.Side:
    """Each spec text is compiled once (the base of a file is the old spec of most cases)."""
    return breaking.load_side(text, name)


def _report(old: str, new: str, case: str, *, swapped: bool = False) -> breaking.Report:
    names = (f"{case}.old.yaml", f"{case}.new.yaml")
    if swapped:
        names = names[::-1]
    return breaking.breaking(_side(old, names[0]), _side(new, names[1]))


def _actual(case: Case, report: breaking.Report) -> Counter[tuple[str, str, str]]:
    policy = case.data.get("policy", False)
    return Counter(
        (f.rule, f.direction, f.subject)
        for f in report.findings
        if policy or f.rule != "BREAKING_WITHOUT_VERSION_BUMP"
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case(case: Case) -> None:
    report = _report(case.old, case.new, case.file)
    want = Counter((f["rule"], f["direction"], f["subject"]) for f in case.data["findings"])
    got = _actual(case, report)
    shown = "\n".join(str(f) for f in report.findings)
    assert got == want, f"{case.id}\n{shown}"
    for f in case.data["findings"]:
        if "line" not in f:
            continue
        file = f"{case.file}.{f.get('in', 'new')}.yaml"
        hits = [
            g
            for g in report.findings
            if (g.rule, g.subject) == (f["rule"], f["subject"]) and g.file == file
        ]
        assert any(g.line == f["line"] for g in hits), f"{case.id}: {f} at {hits}"
    if "fingerprint" in case.data:
        same = report.old.fingerprint == report.new.fingerprint
        assert same == (case.data["fingerprint"] == "same"), case.id
    # deterministic and sorted
    again = breaking.compare_texts(
        case.old, case.new, f"{case.file}.old.yaml", f"{case.file}.new.yaml"
    )
    assert again.findings == report.findings
    assert list(report.findings) == sorted(report.findings)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_swapped_case_mirrors(case: Case) -> None:
    """new -> old: every mirrored rule of the case shows up as its mirror image."""
    forward = _report(case.old, case.new, case.file)
    back = _report(case.new, case.old, case.file, swapped=True)
    rules_back = Counter(f.rule for f in back.findings)
    for f in forward.findings:
        mirror = MIRROR.get(f.rule)
        if mirror is not None:
            assert rules_back[mirror] >= 1, f"{case.id}: {f.rule} has no {mirror} when swapped"
    if not forward.findings:
        # equivalent both ways (BREAKING_WITHOUT_VERSION_BUMP needs a finding to exist)
        assert not back.findings, f"{case.id}: swapped gives {back.findings}"


def test_every_rule_has_a_case() -> None:
    covered = {f["rule"] for c in CASES for f in c.data["findings"]}
    missing = sorted(set(breaking.RULES) - covered)
    assert not missing, f"rules without a corpus case: {missing}"


def test_corpus_size_and_equivalences() -> None:
    assert len(CASES) >= MIN_CASES
    assert sum(1 for c in CASES if c.data.get("equivalent")) >= 10
    assert any(c.data.get("fingerprint") == "same" for c in CASES)


@pytest.mark.parametrize("case", CASES[:: max(1, len(CASES) // 12)], ids=lambda c: c.id)
def test_a_spec_against_itself_finds_nothing(case: Case) -> None:
    assert not _report(case.new, case.new, case.file).findings


DOC = Path(__file__).resolve().parents[1] / "docs" / "evolution.md"
_EXAMPLE = re.compile(r"^`(?P<rule>[A-Z_]+)` \((?P<direction>[a-z]+)\), from `(?P<case>[^`]+)`:$")


def test_docs_catalogue_is_real_output() -> None:
    """docs/evolution.md shows one example per rule: the output of the corpus case it names."""
    lines = DOC.read_text("utf-8").splitlines()
    by_id = {c.id: c for c in CASES}
    shown: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = _EXAMPLE.match(line)
        if m is None:
            continue
        assert lines[i + 2] == "```text", line
        rule, case = m["rule"], by_id[m["case"]]
        assert breaking.RULES[rule].direction == m["direction"]
        report = breaking.breaking(_side(case.old, "HEAD:evo.yaml"), _side(case.new, "evo.yaml"))
        assert lines[i + 3] in [str(f) for f in report.findings], f"{rule}: stale example"
        shown[rule] = case.id
    assert sorted(shown) == sorted(breaking.RULES), "rules without an example in the docs"
