"""Review checks of the compiler's extension points and `make gen` data (codegen/field_rules.py,
codegen/constraints.py with the fingerprint, codegen/reserved_probe.py, the Makefile's
freshness gate). Every registration here is removed again before the test ends."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tools import codes_doc
from tpwire.codegen import breaking_registry, constraints, reserved_probe
from tpwire.codegen.breaking_pairs import FieldPair
from tpwire.codegen.breaking_registry import Finding
from tpwire.codegen.check import check
from tpwire.codegen.field_rules import (
    SPEC_KEYS,
    FieldInput,
    field_rules,
    register_field_rule,
    shipped_field_keys,
    unregister_field_rule,
)
from tpwire.codegen.ir import build
from tpwire.codegen.load import load_text
from tpwire.codegen.model import CField
from tpwire.codegen.rules import RuleEmitter, register_emitter, unregister_emitter
from tpwire.codegen.splice import refresh

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = ["range", "max_len", "dtypes", "shape", "max_elements"]

SPEC = """\
tpwire: 1
protocol: review
enums:
  Act: {values: {NOOP: 0, RUN: 1, STOP: 2, FAIL: 3}}
header:
  slots: [seq, act]
  action: act
  roles: {sequence: seq}
  control: {noop: NOOP, shutdown: STOP, error: FAIL}
  fields:
    seq: {type: int, range: {min: 0}}
    act: {type: Act}
messages:
  Run:
    id: 1
    version: 1
    action: RUN
    fields:
      gain: {type: float, range: {min: -4.0, max: 4.0}}
"""


def _nothing(f: FieldInput) -> Mapping[str, Any]:
    return {}


@pytest.fixture
def registry_unchanged() -> Iterator[None]:
    yield
    assert [r.key for r in field_rules()] == BUILT_IN


@pytest.mark.usefixtures("registry_unchanged")
@pytest.mark.parametrize("key", sorted(SPEC_KEYS))
def test_a_spec_key_is_no_rule_kind(key: str) -> None:
    """A rule kind named ``why`` (or ``doc``, ``derived``...) would replace that key's
    meta-schema on every field of every spec, or run beside the checker's own reading."""
    with pytest.raises(ValueError, match="not a rule kind"):
        register_field_rule(key, ("int",), {"type": "integer"}, _nothing)
    with pytest.raises(ValueError, match="not a rule kind"):
        register_field_rule(key, ("int",), None, _nothing)


@pytest.mark.usefixtures("registry_unchanged")
def test_a_new_key_needs_its_value_schema() -> None:
    """Without a schema the meta-schema refuses the key as unknown: the kind could never
    be used, and nothing would say why."""
    with pytest.raises(ValueError, match="needs the schema of its value"):
        register_field_rule("toy_review_bound", ("int",), None, _nothing)


def test_the_meta_schema_keys_are_spec_keys_or_built_in_kinds() -> None:
    """What lets ``register_field_rule`` tell the two apart: every key the shipped
    meta-schema spells is a spec key or a built-in rule kind (registered without a schema)."""
    assert shipped_field_keys() == SPEC_KEYS | set(BUILT_IN)
    assert all(r.schema is None for r in field_rules())


def _fingerprint() -> str:
    return build(check(load_text(SPEC, "review.yaml"))).fingerprint


def _kind(key: str, value: float) -> constraints.RuleKind:
    def value_of(f: CField) -> float | None:
        return value if f.name == "gain" else None

    return constraints.RuleKind(key, ("float",), value_of)


def _fingerprint_with(*kinds: constraints.RuleKind) -> str:
    try:
        for k in kinds:
            constraints.register_kind(k)
        return _fingerprint()
    finally:
        for k in kinds:
            constraints.unregister_kind(k.key)


def test_the_fingerprint_does_not_depend_on_registration_order() -> None:
    """Two peers that register the same rule kinds in another order (their imports differ)
    compile the same spec to the same contract."""
    a, b = _kind("toy_review_a", 1.0), _kind("toy_review_b", 2.0)
    plain = _fingerprint()
    ab, ba = _fingerprint_with(a, b), _fingerprint_with(b, a)
    assert ab == ba != plain
    assert _fingerprint() == plain
    assert list(constraints.registered_kinds()) == []


_PROBE_WITHOUT_DATA = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name == "tpwire.codegen.reserved_names":
            raise ImportError("codegen/reserved_names.py is missing")
        return None
sys.meta_path.insert(0, Blocked())
from tpwire.codegen import reserved_probe
text = reserved_probe.render(reserved_probe.probe())
assert text == reserved_probe.DATA_MODULE.read_text("utf-8"), "probe output differs"
print("ok")
"""


def test_the_probe_runs_without_the_data_it_writes() -> None:
    """``make gen`` rewrites codegen/reserved_names.py with the probe, which imports the
    checker: a missing or conflicted file must not stop it from being written again."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE_WITHOUT_DATA],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_make_fresh_holds_reserved_names_to_the_templates() -> None:
    """CI runs ``make gen`` before ``make check`` and ``make test``: the test that compares
    codegen/reserved_names.py with the probe sees the regenerated file, so only the
    freshness gate can see a stale committed one."""
    makefile = (REPO / "Makefile").read_text("utf-8")
    recipe = makefile[makefile.index("\nfresh:") :].split("\n\n")[0]
    output = re.search(r"^GEN_OUTPUT := (.*)$", makefile, re.M)
    paths = set(output.group(1).split()) if output else set()
    assert "$(GEN_OUTPUT)" in recipe and "git status --porcelain" in recipe
    assert {"generated", "docs", "examples", "codegen/reserved_names.py"} <= paths


def test_unregistering_a_new_kind_leaves_the_built_in_order() -> None:
    register_field_rule("toy_review_bound", ("int",), {"type": "integer"}, _nothing)
    unregister_field_rule("toy_review_bound")
    assert [r.key for r in field_rules()] == BUILT_IN


@pytest.mark.parametrize("key", ["plan", "version"])
def test_a_kind_cannot_rebind_the_plan_or_version_rule(key: str) -> None:
    """A kind's rule constant is ``_R_<Message>_<field>_<kind>``: a kind named ``version``
    on a message's version field would rebind ``_R_<Message>_<field>_version``, and a
    value over the kind's bound would be reported as the wrong envelope version."""
    with pytest.raises(ValueError, match="built-in"):
        constraints.register_kind(constraints.RuleKind(key, ("int", "enum")))
    with pytest.raises(ValueError, match="built-in"):
        register_emitter(RuleEmitter(key, "range", lambda v, b: "True", lambda n, b: "any"))
    assert list(constraints.registered_kinds()) == []


@pytest.mark.usefixtures("registry_unchanged")
@pytest.mark.parametrize("schema", [{"type": "nmber"}, {"enum": {1, 2}}, {"minimum": "0"}])
def test_a_value_schema_that_is_no_json_schema_is_refused(schema: dict[str, Any]) -> None:
    """Refused when registered: the checker would otherwise fail with a jsonschema error,
    not a located spec error, on the first spec that uses the key."""
    with pytest.raises(ValueError, match="no JSON Schema"):
        register_field_rule("toy_review_bound", ("int",), schema, _nothing)


def test_a_kind_on_tensor_fields_is_refused() -> None:
    """The validators run a kind's test on scalar values only: on a tensor it would be in
    the fingerprint and the rule constants, and never checked."""
    with pytest.raises(ValueError, match="scalar fields only"):
        constraints.register_kind(constraints.RuleKind("toy_review_norm", ("float", "tensor")))
    assert list(constraints.registered_kinds()) == []


@pytest.mark.parametrize("key", ["min_range", "step_type", "toy_review_q"])
def test_a_kind_whose_constants_could_be_another_rules_is_refused(key: str) -> None:
    """Field ``a`` with kind ``min_range`` and field ``a_min`` with its range would both
    bind ``_R_<Message>_a_min_range``: a value under the kind's bound was reported as
    ``a_min``'s range. The same holds between two registered kinds (``q`` and ``..._q``)."""
    constraints.register_kind(constraints.RuleKind("q", ("int",)))
    try:
        with pytest.raises(ValueError, match="rule constants could be those of rule"):
            constraints.register_kind(constraints.RuleKind(key, ("int",)))
    finally:
        constraints.unregister_kind("q")
    assert list(constraints.registered_kinds()) == []


# --- removing registrations ---------------------------------------------------------------


@pytest.mark.usefixtures("registry_unchanged")
def test_unregistering_a_missing_field_rule_is_a_no_op() -> None:
    """Like ``unregister``, ``unregister_kind`` and ``unregister_emitter``: a fixture's
    teardown after a registration that failed must not hide the failure with a KeyError."""
    unregister_field_rule("toy_review_never_registered")
    register_field_rule("toy_review_bound", ("int",), {"type": "integer"}, _nothing)
    unregister_field_rule("toy_review_bound")
    unregister_field_rule("toy_review_bound")


@pytest.mark.usefixtures("registry_unchanged")
@pytest.mark.parametrize("key", BUILT_IN)
def test_a_built_in_field_rule_is_not_unregistered(key: str) -> None:
    """Registered again it would come last: the checks, ``CField.extra`` and the
    meta-schema follow registration order."""
    with pytest.raises(ValueError, match=f"field rule '{key}' is built in"):
        unregister_field_rule(key)


def test_a_built_in_breaking_rule_is_not_unregistered() -> None:
    """Registered again it would come last in its group: the catalogue, docs/evolution.md's
    tables and the order the rules run in would change."""
    before = list(breaking_registry.RULES)
    for rule_id in ("FIELD_ADDED", "BREAKING_WITHOUT_VERSION_BUMP"):
        with pytest.raises(ValueError, match=f"rule {rule_id} is built in"):
            breaking_registry.unregister(rule_id)
    assert list(breaking_registry.RULES) == before
    breaking_registry.unregister("TOY_REVIEW_NEVER_REGISTERED")  # still a no-op


@pytest.mark.parametrize("key", ["range", "max_len", "version"])
def test_a_built_in_key_has_no_kind_or_emitter_to_unregister(key: str) -> None:
    """The built-in rules are ``FieldConstraints`` attributes and ``field_rules`` entries,
    never registered (``register_kind`` and ``register_emitter`` refuse their keys), so
    removing one is a caller's mistake, said plainly."""
    with pytest.raises(ValueError, match="built-in"):
        constraints.unregister_kind(key)
    with pytest.raises(ValueError, match="built-in"):
        unregister_emitter(key)
    unregister_emitter("toy_review_never_registered")  # a registered kind's: a no-op
    constraints.unregister_kind("toy_review_never_registered")


def _toy_rule(p: FieldPair) -> None:
    p.emit("TOY_REVIEW_GONE", f"{p.subject} changed", ("doc",))


def test_a_finding_outlives_its_rule() -> None:
    """A finding carries its catalogue entry: made before its rule is unregistered, it
    still prints and exports with the direction and summary it was made with."""
    breaking_registry.rule("TOY_REVIEW_GONE", "wire", "fields", "a toy rule")(_toy_rule)
    try:
        found = Finding("x.yaml", 3, 5, "TOY_REVIEW_GONE", "Run.gain changed")
    finally:
        breaking_registry.unregister("TOY_REVIEW_GONE")
    assert "TOY_REVIEW_GONE" not in breaking_registry.RULES
    assert found.direction == "wire" and found.entry.summary == "a toy rule"
    assert str(found) == (
        "x.yaml:3:5: error[TOY_REVIEW_GONE] (wire): Run.gain changed: "
        f"{breaking_registry.CONSEQUENCE['wire']}"
    )
    assert found.as_dict()["direction"] == "wire"
    # the entry is no part of a finding's identity, order or repr
    assert hash(found) == hash(("x.yaml", 3, 5, "TOY_REVIEW_GONE", "Run.gain changed"))
    assert "entry" not in repr(found)


# --- make gen's write-or-check helper ------------------------------------------------------


def test_refresh_writes_or_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``codegen/splice.py``'s ``refresh``, behind ``python -m tpwire.codegen.reserved_probe``
    and ``python -m tools.codes_doc``: ``--check`` reports a stale file and writes nothing."""
    target = tmp_path / "data.py"
    assert refresh(target, lambda old: "new\n", ["--check"], "data.py is stale") == 1
    assert not target.exists() and capsys.readouterr().err == "data.py is stale\n"
    assert refresh(target, lambda old: "new\n", [], "data.py is stale") == 0
    assert target.read_text("utf-8") == "new\n"
    assert capsys.readouterr().out == f"wrote {target}\n"
    # fresh: nothing written, nothing said, with or without --check
    for argv in ([], ["--check"]):
        assert refresh(target, lambda old: old, argv, "stale") == 0
    assert capsys.readouterr() == ("", "")


def test_the_generators_check_their_files_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    assert codes_doc.main(["--check"]) == 0
    assert reserved_probe.main(["--check"]) == 0
    assert capsys.readouterr() == ("", "")
