"""The breaking-rule registry (``codegen/breaking_registry.py``) is the single source of the
catalogue: every rule has a direction, a group and a summary; only registered ids make
findings; a rule registered from outside runs; docs/evolution.md lists exactly the
registered rules.

Rules registered here are unregistered before the test ends (other tests, in the same
process under pytest-xdist, hold the catalogue to the corpus and the docs).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tpwire.codegen import breaking, breaking_pairs, breaking_registry, constraints
from tpwire.codegen.breaking_pairs import FieldPair, MessagePair
from tpwire.codegen.breaking_registry import GROUPS, RULES, Finding, UnknownRuleError
from tpwire.codegen.model import CField

REPO = Path(__file__).resolve().parents[1]
BASE = (REPO / "tests" / "evolution" / "base" / "evo.yaml").read_text("utf-8")
DOC = REPO / "docs" / "evolution.md"
BUILT_IN = list(RULES)


@pytest.fixture
def scratch_rules() -> Iterator[list[str]]:
    """Rule ids a test registers (append them); unregistered afterwards."""
    ids: list[str] = []
    yield ids
    for rule_id in ids:
        breaking_pairs.unregister(rule_id)
    assert list(RULES) == BUILT_IN


def _edit(find: str, replace: str) -> str:
    assert BASE.count(find) == 1, find
    return BASE.replace(find, replace)


# --- the catalogue -----------------------------------------------------------------------


def test_every_rule_has_a_direction_group_and_summary() -> None:
    assert len(RULES) == 59
    for rule_id, r in RULES.items():
        assert r.id == rule_id
        assert r.direction in breaking.DIRECTIONS, rule_id
        assert r.group in GROUPS, rule_id
        assert r.summary.strip() and "\n" not in r.summary, rule_id
    # the catalogue is in group order, as --list-rules prints it
    groups = [GROUPS.index(r.group) for r in RULES.values()]
    assert groups == sorted(groups)
    assert breaking.RULES is RULES


def test_every_rule_has_a_function_over_a_pair_kind() -> None:
    for rule_id in RULES:
        assert issubclass(breaking_registry.pair_kind(rule_id), breaking_registry.Pair)


def _string_ids(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+", node.value):
                yield node.lineno, node.value


def test_every_id_the_rule_modules_name_is_registered() -> None:
    """Every UPPER_SNAKE string in the comparison's modules is a registered rule id (what
    they emit, and the ids the policy skips)."""
    files = sorted((REPO / "codegen").glob("breaking*.py"))
    assert len(files) >= 10
    named = [(f.name, line, s) for f in files for line, s in _string_ids(f)]
    assert len({s for _, _, s in named}) >= len(RULES)
    assert [n for n in named if n[2] not in RULES] == []


def test_a_finding_with_an_unregistered_id_raises() -> None:
    with pytest.raises(UnknownRuleError, match="NOT_A_RULE"):
        Finding("x.yaml", 1, 1, "NOT_A_RULE", "text")
    assert Finding("x.yaml", 1, 1, "FIELD_ADDED", "text").direction == "loosening"


def test_a_rule_emits_only_its_own_id(scratch_rules: list[str]) -> None:
    @breaking_pairs.rule("TEST_WRONG_ID", "both", "identity", "emits another rule's id")
    def wrong_id(p: MessagePair) -> None:
        p.emit("MESSAGE_RENAMED", "not mine", p.new.path)

    scratch_rules.append("TEST_WRONG_ID")
    with pytest.raises(UnknownRuleError, match="TEST_WRONG_ID emitted MESSAGE_RENAMED"):
        breaking.compare_texts(BASE, BASE)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("lower_case", "both", "fields", "x"), "UPPER_SNAKE_CASE"),
        (("FIELD_ADDED", "loosening", "fields", "x"), "already registered"),
        (("TEST_RULE", "sideways", "fields", "x"), "direction"),
        (("TEST_RULE", "both", "nowhere", "x"), "group"),
        (("TEST_RULE", "both", "fields", " "), "summary"),
    ],
)
def test_a_bad_registration_is_refused(args: tuple[str, str, str, str], problem: str) -> None:
    def check(p: FieldPair) -> None:
        pass

    with pytest.raises(ValueError, match=problem):
        breaking_pairs.rule(*args)(check)
    assert list(RULES) == BUILT_IN


def test_a_rule_needs_a_pair_kind() -> None:
    def untyped(p):  # type: ignore[no-untyped-def]
        pass

    def two(p: FieldPair, q: FieldPair) -> None:
        pass

    for check in (untyped, two):
        with pytest.raises(TypeError, match="pair kind"):
            breaking_pairs.rule("TEST_RULE", "both", "fields", "x")(cast(Any, check))
    assert "TEST_RULE" not in RULES


# --- a rule registered from outside ------------------------------------------------------


def test_a_registered_rule_runs(scratch_rules: list[str]) -> None:
    """A toy rule over a field's doc: it runs, its finding is located, directed, counted by
    the version-bump policy and known to ``--allow``; unregistered, it is gone."""

    @breaking_pairs.rule("TEST_FIELD_DOC_CHANGED", "both", "fields", "a field's doc changed")
    def doc_changed(p: FieldPair) -> None:
        if p.old.why != p.new.why:
            p.emit("TEST_FIELD_DOC_CHANGED", f"{p.subject} why changed", ("why",))

    scratch_rules.append("TEST_FIELD_DOC_CHANGED")
    ids = list(RULES)
    assert ids.index("FIELD_CACHE_EPOCH_CHANGED") + 1 == ids.index("TEST_FIELD_DOC_CHANGED")
    assert breaking.unknown_rule("TEST_FIELD_DOC_CHANGED") is None
    new = _edit("mode: {type: Mode, why: dispatch}", "mode: {type: Mode, why: routing}")
    report = breaking.compare_texts(BASE, new, "HEAD:evo.yaml", "evo.yaml")
    assert [str(f) for f in report.findings] == [
        "evo.yaml:25:5: error[BREAKING_WITHOUT_VERSION_BUMP] (policy): Job breaks "
        "(TEST_FIELD_DOC_CHANGED) but its version stays 1; a deliberate break passes with "
        "Job.version bumped (and job_version with it) and --allow TEST_FIELD_DOC_CHANGED "
        "--allow MESSAGE_VERSION_CHANGED (the bump is a finding too), or with --allow "
        "TEST_FIELD_DOC_CHANGED and the version kept: receivers cannot tell the two "
        "contracts apart by version",
        "evo.yaml:36:26: error[TEST_FIELD_DOC_CHANGED] (both): Job.mode why changed: old and "
        "new peers may refuse each other's envelopes",
    ]
    allowed = breaking.compare_texts(BASE, new, allow=["TEST_FIELD_DOC_CHANGED"])
    assert not allowed.findings and [f.rule for f in allowed.allowed] == ["TEST_FIELD_DOC_CHANGED"]

    breaking_pairs.unregister("TEST_FIELD_DOC_CHANGED")
    assert "TEST_FIELD_DOC_CHANGED" not in RULES
    assert not breaking.compare_texts(BASE, new).findings


def test_a_rule_over_a_registered_constraint_kind(scratch_rules: list[str]) -> None:
    """A constraint kind (``codegen/constraints.py``, ``register_kind``) and a rule that
    reads it through ``FieldPair.numbers``, in the shape of a ``MAX_ABS_NARROWED`` rule
    (here the kind's value is computed from the range)."""

    def max_abs(f: CField) -> int | None:
        lo, hi = f.range_min, f.range_max
        return None if lo is None or hi is None else max(abs(int(lo)), abs(int(hi)))

    constraints.register_kind(constraints.RuleKind("test_max_abs", ("int",), max_abs))
    try:

        @breaking_pairs.rule("TEST_MAX_ABS_NARROWED", "tightening", "fields", "max_abs lowered")
        def max_abs_narrowed(p: FieldPair) -> None:
            if (n := p.numbers("test_max_abs")) and n[1] < n[0]:
                p.emit(
                    "TEST_MAX_ABS_NARROWED",
                    f"{p.subject} test_max_abs {n[0]} -> {n[1]}",
                    ("range",),
                )

        scratch_rules.append("TEST_MAX_ABS_NARROWED")
        new = _edit("range: {min: 1, max: 64}, fm", "range: {min: 1, max: 32}, fm")
        report = breaking.compare_texts(BASE, new, "HEAD:evo.yaml", "evo.yaml")
        found = [(f.rule, f.text) for f in report.findings if f.rule != "FIELD_RANGE_NARROWED"]
        assert ("TEST_MAX_ABS_NARROWED", "Job.steps test_max_abs 64.0 -> 32.0") in found
        swapped = breaking.compare_texts(new, BASE)
        assert "TEST_MAX_ABS_NARROWED" not in {f.rule for f in swapped.findings}
    finally:
        constraints.unregister_kind("test_max_abs")


# --- docs/evolution.md ------------------------------------------------------------------


def _catalogue() -> str:
    text = DOC.read_text("utf-8")
    start = text.index("\n## Rule catalogue\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_docs_catalogue_lists_exactly_the_registered_rules() -> None:
    """Each group's table in docs/evolution.md is the registry's (``catalogue_table``),
    under the group's heading, and no other rule id has a row."""
    catalogue = _catalogue()
    for group in GROUPS:
        heading = f"\n### {group.title()}\n"
        assert heading in catalogue, heading
        section = catalogue[catalogue.index(heading) :].split("\n### ")[1]
        table = breaking_registry.catalogue_table(group)
        assert table in section, f"docs/evolution.md, {heading.strip()}: the table is\n{table}"
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", catalogue, re.M)
    assert rows == list(RULES)
