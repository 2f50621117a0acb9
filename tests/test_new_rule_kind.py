"""A new rule kind, end to end, registered from this file alone: ``max_abs: <bound>`` on
float fields (``abs(value) <= bound``).

Four registrations (docs/architecture.md, "How to add a rule kind"): the field check
(``codegen/field_rules.py``: the bound must be a positive finite number, on float fields
only), the constraint (``codegen/constraints.py``: the bound lands in the field's
``FieldConstraints.extra`` and in the fingerprint), the emitter (``codegen/rules.py``: the
condition the generated validator checks, with its violation code) and the breaking rule
(``codegen/breaking_registry.py``: ``MAX_ABS_NARROWED``, a tightening). The fixture removes
them again; without them the key is refused as unknown.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tpwire.codegen import codes
from tpwire.codegen.breaking import compare_texts
from tpwire.codegen.breaking_pairs import FieldPair
from tpwire.codegen.breaking_registry import RULES, rule, unregister
from tpwire.codegen.compiler import compile, protocol_ir_from_text
from tpwire.codegen.constraints import (
    RuleKind,
    register_kind,
    registered_kinds,
    unregister_kind,
)
from tpwire.codegen.errors import SpecErrors
from tpwire.codegen.field_rules import (
    FieldInput,
    field_rules,
    register_field_rule,
    unregister_field_rule,
)
from tpwire.codegen.rules import RuleEmitter, register_emitter, unregister_emitter

KEY = "max_abs"


def spec(bound: object = 2.0, kind: str = "float") -> str:
    """A spec whose ``gain`` field carries ``max_abs: bound`` (None: no such key)."""
    rule = "" if bound is None else f", {KEY}: {bound}"
    return f"""\
tpwire: 1
protocol: toy_abs
enums:
  Act:
    values: {{IDLE: 0, RUN: 1, STOP: 2, FAIL: 3}}
header:
  slots: [seq, act]
  action: act
  roles: {{sequence: seq}}
  control: {{noop: IDLE, shutdown: STOP, error: FAIL}}
  fields:
    seq: {{type: int, range: {{min: 0}}}}
    act: {{type: Act}}
messages:
  Job:
    id: 1
    version: 1
    action: RUN
    fields:
      gain: {{type: {kind}{rule}}}
      steps: {{type: int, range: {{min: 0, max: 10}}}}
"""


#: the line of ``gain`` in every spec above (1-based), where a located error points
GAIN_LINE = spec().splitlines().index("      gain: {type: float, max_abs: 2.0}") + 1


def _check_max_abs(f: FieldInput) -> Mapping[str, Any]:
    """(b) the check: a positive finite number; its value goes to ``CField.extra``."""
    bound = f.body[KEY]
    ok = type(bound) in (int, float) and math.isfinite(bound) and bound > 0
    if not ok:
        f.error(KEY, codes.BAD_RANGE, f"{KEY} must be a positive finite number, got {bound!r}")
        return {}
    return {"extra": ((KEY, float(bound)),)}


def _max_abs_narrowed(p: FieldPair) -> None:
    """(d) the breaking rule: a lower bound refuses values the old one let through."""
    old, new = p.oc.get(KEY), p.nc.get(KEY)
    if isinstance(new, float) and (old is None or (isinstance(old, float) and new < old)):
        p.emit("MAX_ABS_NARROWED", f"{p.subject} {KEY} {old or 'unset'} -> {new}", (KEY,))


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The four registrations of ``max_abs``, removed again on the way out: each removal is
    pushed as soon as its registration succeeds, so one that fails leaves none behind."""
    with contextlib.ExitStack() as undo:
        register_field_rule(
            KEY, ("float",), {"type": "number", "$comment": "toy rule kind"}, _check_max_abs
        )
        undo.callback(unregister_field_rule, KEY)
        register_kind(RuleKind(KEY, ("float",)))  # (a) the constraint, read from CField.extra
        undo.callback(unregister_kind, KEY)
        register_emitter(  # (c) the validator's condition
            RuleEmitter(
                KEY,
                "range",
                lambda var, bound: f"abs({var}) <= {bound!r}",
                lambda name, bound: f"abs({name}) <= {bound!r}",
            )
        )
        undo.callback(unregister_emitter, KEY)
        rule("MAX_ABS_NARROWED", "tightening", "fields", "a float field's max_abs lowered")(
            _max_abs_narrowed
        )
        undo.callback(unregister, "MAX_ABS_NARROWED")
        yield


@pytest.fixture
def max_abs() -> Iterator[None]:
    with registered():
        yield


def _errors(text: str) -> list[Any]:
    with pytest.raises(SpecErrors) as exc:
        protocol_ir_from_text(text, "toy_abs.yaml")
    return list(exc.value.errors)


def test_unregistered_key_is_refused_as_unknown() -> None:
    errors = _errors(spec())
    assert [(e.code, e.line) for e in errors] == [("unknown-key", GAIN_LINE)]
    assert KEY in errors[0].message
    # and again once registered and removed: the registrations leave nothing behind
    with registered():
        assert "MAX_ABS_NARROWED" in RULES
        protocol_ir_from_text(spec())
    assert "MAX_ABS_NARROWED" not in RULES
    assert [e.code for e in _errors(spec())] == ["unknown-key"]


def test_a_registration_that_fails_leaves_the_earlier_ones_removed() -> None:
    """The breaking rule, registered last, is taken already: the three registrations before
    it are removed again, so the rest of this worker's tests see the key as unknown."""
    rule("MAX_ABS_NARROWED", "tightening", "fields", "taken")(_max_abs_narrowed)
    try:
        with pytest.raises(ValueError, match="already registered"), registered():
            pass
    finally:
        unregister("MAX_ABS_NARROWED")
    assert [r.key for r in field_rules() if r.key == KEY] == []
    assert KEY not in [k.key for k in registered_kinds()]
    assert [e.code for e in _errors(spec())] == ["unknown-key"]
    register_emitter(RuleEmitter(KEY, "range", lambda v, b: "True", lambda n, b: "any"))
    unregister_emitter(KEY)  # the emitter was removed: registering it again works


@pytest.mark.usefixtures("max_abs")
@pytest.mark.parametrize(
    ("bound", "code"),
    [("-1.5", "bad-range"), ("0", "bad-range"), (".inf", "bad-range"), ("'big'", "schema")],
)
def test_check_refuses_a_bad_bound_where_it_is(bound: str, code: str) -> None:
    [e] = _errors(spec(bound))
    # at the bound itself: line and column of the value
    column = spec(bound).splitlines()[GAIN_LINE - 1].index(bound) + 1
    assert (e.file, e.line, e.col, e.code) == ("toy_abs.yaml", GAIN_LINE, column, code)
    if code == "bad-range":
        assert e.message.startswith(f"{KEY} must be a positive finite number")


@pytest.mark.usefixtures("max_abs")
def test_check_refuses_it_off_float_fields() -> None:
    errors = _errors(spec(2, kind="int"))
    assert [(e.code, e.line) for e in errors] == [("bad-key", GAIN_LINE)]


@pytest.mark.usefixtures("max_abs")
def test_the_compiled_module_checks_the_bound() -> None:
    m = compile(spec(2.0))
    header = m.Header(seq=0, act=m.Act.RUN)
    ok = m.Job(gain=-1.75, steps=3)
    assert m.validate(ok, header) == []
    assert m.decode(m.encode(ok, header))[1] == ok

    over = m.Job(gain=2.5, steps=3)
    [v] = m.validate(over, header)
    assert (v.code, v.field, v.expected) == ("range", "gain", "abs(gain) <= 2.0")
    assert v.rule == f"{KEY}: abs(gain) <= 2.0"
    with pytest.raises(m.EnvelopeInvalid) as exc:
        m.encode(over, header)
    assert [x.field for x in exc.value.violations] == ["gain"]
    # the range test comes first: a NaN is out of range, not over the bound
    assert [x.rule for x in m.validate(m.Job(gain=math.nan, steps=3), header)] == [
        "range: gain finite"
    ]


@pytest.mark.usefixtures("max_abs")
def test_decode_checks_the_bound_too() -> None:
    """A peer whose validator let a value over the bound through (the same spec, so the
    same fingerprint: the emitter is not part of it) is refused on decode."""
    strict = compile(spec(2.0))
    unregister_emitter(KEY)
    register_emitter(RuleEmitter(KEY, "range", lambda var, bound: "True", lambda n, b: "any"))
    loose = compile(spec(2.0))
    assert loose.FINGERPRINT == strict.FINGERPRINT
    frames = loose.encode(loose.Job(gain=2.5, steps=1), loose.Header(seq=0, act=loose.Act.RUN))
    with pytest.raises(strict.EnvelopeInvalid) as exc:
        strict.decode(frames)
    assert [(v.field, v.rule) for v in exc.value.violations] == [
        ("gain", f"{KEY}: abs(gain) <= 2.0")
    ]


@pytest.mark.usefixtures("max_abs")
def test_the_strategies_respect_the_bound() -> None:
    from hypothesis import HealthCheck, given, settings

    m = compile(spec(0.5))
    strategies = m.strategies  # rendered now, while the kind is registered

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategies.valid_envelopes())
    def valid(env: tuple[Any, Any]) -> None:
        header, msg = env
        assert m.validate(msg, header) == []
        if msg is not None:
            assert abs(msg.gain) <= 0.5

    valid()


@pytest.mark.usefixtures("max_abs")
def test_the_fingerprint_includes_the_bound() -> None:
    plain = protocol_ir_from_text(spec(None))
    two, one = protocol_ir_from_text(spec(2.0)), protocol_ir_from_text(spec(1.0))
    assert len({plain.fingerprint, two.fingerprint, one.fingerprint}) == 3
    assert f'"extra":[["{KEY}",2.0]]' in two.canonical


@pytest.mark.usefixtures("max_abs")
def test_breaking_reports_a_lower_bound() -> None:
    def found(old: str, new: str) -> set[str]:
        return {f.rule for f in compare_texts(old, new).findings}

    assert "MAX_ABS_NARROWED" in found(spec(2.0), spec(1.0))
    assert "MAX_ABS_NARROWED" in found(spec(None), spec(1.0))
    assert "MAX_ABS_NARROWED" not in found(spec(1.0), spec(2.0))
    assert "MAX_ABS_NARROWED" not in found(spec(2.0), spec(2.0))
