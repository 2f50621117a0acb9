"""The field rule registry (codegen/field_rules.py): a new rule kind is one registered
function and its meta-schema fragment, checked like the built-in kinds.

The toy kind here, ``max_abs: <float>`` on float fields, only refuses a range that
reaches past it; it decides no ``CField`` attribute (the model has none for it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tpwire.codegen import codes
from tpwire.codegen.check import check, meta_schema
from tpwire.codegen.errors import SpecErrors
from tpwire.codegen.field_rules import (
    FieldInput,
    field_rules,
    register_field_rule,
    unregister_field_rule,
)
from tpwire.codegen.load import load_text

SPEC = """\
tpwire: 1
protocol: toy
enums:
  Act: {{values: {{NOOP: 0, RUN: 1, STOP: 2, FAIL: 3}}}}
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
    fields:
      x: {{{x}}}
"""


def _check_max_abs(f: FieldInput) -> Mapping[str, Any]:
    bound = f.body["max_abs"]
    rng = f.body.get("range", {})
    for key in ("min", "max"):
        value = rng.get(key)
        if isinstance(value, int | float) and abs(value) > bound:
            f.error("max_abs", codes.IMPOSSIBLE_RANGE, f"range {key} {value} is past max_abs")
    return {}


@pytest.fixture
def max_abs() -> Iterator[None]:
    register_field_rule("max_abs", ("float",), {"type": "number", "minimum": 0}, _check_max_abs)
    try:
        yield
    finally:
        unregister_field_rule("max_abs")


def errors(x: str) -> list[tuple[int, int, str]]:
    try:
        check(load_text(SPEC.format(x=x), "<toy>"))
    except SpecErrors as exc:
        return [(e.line, e.col, e.code) for e in exc.errors]
    return []


def test_the_built_in_kinds_are_registered() -> None:
    assert [r.key for r in field_rules()] == ["range", "max_len", "dtypes", "shape", "max_elements"]


def test_an_unregistered_key_is_unknown() -> None:
    assert errors("type: float, max_abs: 1.0") == [(19, 24, "unknown-key")]


@pytest.mark.usefixtures("max_abs")
def test_a_registered_kind_is_checked() -> None:
    assert "max_abs" in meta_schema()["$defs"]["field"]["properties"]
    assert errors("type: float, max_abs: 1.0") == []
    assert errors("type: float, max_abs: 1.0, range: {min: -2.0}") == [(19, 33, "impossible-range")]
    assert errors("type: int, max_abs: 1.0") == [(19, 22, "bad-key")]
    assert errors("type: float, max_abs: -1.0") == [(19, 33, "schema")]


def test_unregistering_restores_the_shipped_schema(max_abs: None) -> None:
    unregister_field_rule("max_abs")
    assert "max_abs" not in meta_schema()["$defs"]["field"]["properties"]
    register_field_rule("max_abs", ("float",), {"type": "number"}, _check_max_abs)


def test_a_key_registers_once(max_abs: None) -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_field_rule("max_abs", ("float",), None, _check_max_abs)
    with pytest.raises(ValueError, match="kinds must be among"):
        register_field_rule("min_abs", ("double",), None, _check_max_abs)


def test_a_check_decides_only_cfield_attributes() -> None:
    register_field_rule("toy_bound", ("float",), {"type": "number"}, lambda f: {"toy": 1})
    try:
        with pytest.raises(TypeError, match="no CField attributes"):
            errors("type: float, toy_bound: 1.0")
    finally:
        unregister_field_rule("toy_bound")


def test_kinds_add_to_cfield_extra_in_registration_order() -> None:
    """``extra`` is the one ``CField`` attribute several kinds share: each adds its pairs."""
    register_field_rule("toy_a", ("float",), {"type": "number"}, lambda f: {"extra": (("a", 1),)})
    register_field_rule("toy_b", ("float",), {"type": "number"}, lambda f: {"extra": (("b", 2),)})
    try:
        spec = check(load_text(SPEC.format(x="type: float, toy_b: 1, toy_a: 2"), "<toy>"))
    finally:
        unregister_field_rule("toy_b")
        unregister_field_rule("toy_a")
    assert spec.messages[0].field("x").extra == (("a", 1), ("b", 2))
