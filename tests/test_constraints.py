"""The per-field constraint record (``codegen/constraints.py``): what ``constraints_of``
says of each kind of field, that the IR carries the record it built once, and the
extension point for rule kinds (``register_kind``), fingerprint included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tpwire.codegen import constraints as c
from tpwire.codegen.check import check
from tpwire.codegen.ir import ProtocolIR, build
from tpwire.codegen.ir_build import records_of
from tpwire.codegen.load import load_text
from tpwire.codegen.model import CheckedSpec

SPEC = """\
tpwire: 1
protocol: cons
enums:
  Act:
    values: {IDLE: 0, RUN: 1, STOP: 2, FAIL: 3}
  Mode:
    values: {fast: 0, careful: 1}
header:
  slots: [seq, act]
  action: act
  roles: {sequence: seq}
  control: {noop: IDLE, shutdown: STOP, error: FAIL}
  fields:
    seq: {type: int, range: {min: 0}}
    act: {type: Act}
messages:
  Job:
    id: 1
    version: 1
    action: RUN
    dims:
      N: {min: 1, max: 16}
      K: {min: 2, max: 4}
    fields:
      mode: {type: Mode}
      free: {type: int}
      exact: {type: int, range: {min: 3, max: 3}}
      scale: {type: float, range: {min: 0.0}}
      ratio: {type: float | None}
      name: {type: str, max_len: 12, required_when: mode == Mode.careful}
      gone: {type: bool, forbidden_when: mode == Mode.fast}
      data: {type: tensor, dtypes: [float32, bfloat16], shape: [N, K, 3], max_elements: 100}
      rows: {type: tensor, dtypes: [int32], shape: [N]}
"""


def _spec(text: str = SPEC) -> CheckedSpec:
    return check(load_text(text, "cons.yaml"))


@pytest.fixture(scope="module")
def records() -> dict[tuple[str | None, str], c.FieldConstraints]:
    return records_of(_spec())


def _job(
    records: dict[tuple[str | None, str], c.FieldConstraints], name: str
) -> c.FieldConstraints:
    return records["Job", name]


def test_int_bounds_default_to_int64(
    records: dict[tuple[str | None, str], c.FieldConstraints],
) -> None:
    free = _job(records, "free")
    assert (free.lo, free.hi) == (c.INT64_MIN, c.INT64_MAX)
    assert (free.spec_lo, free.spec_hi) == (None, None)
    assert free.lo_inclusive and free.hi_inclusive
    assert free.range_text == "free fits int64"
    seq = records[None, "seq"]
    assert (seq.lo, seq.hi, seq.range_text) == (0, c.INT64_MAX, "seq >= 0")
    assert _job(records, "exact").range_text == "exact == 3"


def test_float_and_str(records: dict[tuple[str | None, str], c.FieldConstraints]) -> None:
    scale = _job(records, "scale")
    assert (scale.lo, scale.hi, scale.finite) == (0.0, None, True)
    assert (scale.lo_py, scale.hi_py) == ("0.0", None)
    assert scale.range_text == "scale finite and >= 0.0"
    ratio = _job(records, "ratio")
    assert ratio.presence.explicit_none and not ratio.presence.always
    assert ratio.range_text == "ratio finite"
    name = _job(records, "name")
    assert name.max_len == 12 and name.range_text == "len(utf8(name)) <= 12"
    assert name.presence.required_when is not None
    assert name.presence.required_when.text == "mode == Mode.careful"
    assert [k for k, _ in name.presence.conditions] == ["required_when"]


def test_presence_and_enum(records: dict[tuple[str | None, str], c.FieldConstraints]) -> None:
    mode = _job(records, "mode")
    assert mode.presence.always
    assert mode.enum == "Mode" and mode.enum_members == (("fast", 0), ("careful", 1))
    gone = _job(records, "gone")
    assert not gone.presence.always
    assert [(k, e.text) for k, e in gone.presence.conditions] == [
        ("forbidden_when", "mode == Mode.fast")
    ]
    assert not gone.has_range and gone.range_text == ""


def test_tensor_shape_and_elements(
    records: dict[tuple[str | None, str], c.FieldConstraints],
) -> None:
    data = _job(records, "data")
    assert data.dtypes == ("float32", "bfloat16")
    assert [(d.size, d.symbol, d.lo, d.hi) for d in data.shape] == [
        (None, "N", 1, 16),
        (None, "K", 2, 4),
        (3, None, 3, 3),
    ]
    assert data.shape_text == "[N, K, 3]"
    assert data.dim_bounds == (("N", 1, 16), ("K", 2, 4))
    # the dims allow 16 * 4 * 3 = 192; max_elements caps it
    assert (data.spec_max_elements, data.max_elements) == (100, 100)
    assert data.shape_expected == "[N, K, 3] with N in 1..16, K in 2..4, at most 100 elements"
    rows = _job(records, "rows")
    assert (rows.spec_max_elements, rows.max_elements) == (None, 16)


def test_ir_carries_the_record() -> None:
    spec = _spec()
    ir = build(spec)
    recs = records_of(spec)
    job = ir.messages[0]
    for f in job.fields:
        assert f.constraints == recs["Job", f.name]
        assert f.kind == f.constraints.kind and f.max_len == f.constraints.max_len
    free = next(f for f in job.fields if f.name == "free")
    assert (free.range_min, free.range_max) == (repr(c.INT64_MIN), repr(c.INT64_MAX))
    data = next(f for f in job.fields if f.name == "data")
    assert [d.word for d in data.dims] == [data.word + 1, data.word + 2, data.word + 3]
    assert data.max_elements == 100
    assert [f.constraints for f in ir.header.fields] == [recs[None, "seq"], recs[None, "act"]]


# --- registered rule kinds ----------------------------------------------------------------

BOUNDS = {"scale": 2.5, "free": 9}


@pytest.fixture
def kind() -> Iterator[c.RuleKind]:
    k = c.RuleKind("toy_bound", ("float",), lambda f: BOUNDS.get(f.name))
    c.register_kind(k)
    try:
        yield k
    finally:
        c.unregister_kind(k.key)


def _fingerprint() -> ProtocolIR:
    return build(_spec())


def test_registered_kind_lands_in_extra(kind: c.RuleKind) -> None:
    recs = records_of(_spec())
    assert recs["Job", "scale"].extra == (("toy_bound", 2.5),)
    assert recs["Job", "scale"].get("toy_bound") == 2.5
    # an int field is not a kind the rule applies to; a float without a bound has none
    assert recs["Job", "free"].extra == ()
    assert recs["Job", "ratio"].get("toy_bound") is None
    assert kind in list(c.registered_kinds())


def test_registration_is_checked(kind: c.RuleKind) -> None:
    with pytest.raises(ValueError, match="already registered"):
        c.register_kind(kind)
    with pytest.raises(ValueError, match="built-in field key"):
        c.register_kind(c.RuleKind("range", ("int",), lambda f: None))


def test_fingerprint_covers_registered_kinds() -> None:
    plain = _fingerprint()
    k = c.RuleKind("toy_bound", ("float",), lambda f: BOUNDS.get(f.name))
    c.register_kind(k)
    try:
        marked = _fingerprint()
    finally:
        c.unregister_kind(k.key)
    assert '"extra":[["toy_bound",2.5]]' in marked.canonical
    assert marked.fingerprint != plain.fingerprint
    # unregistered, the spec fingerprints as it did
    assert _fingerprint().fingerprint == plain.fingerprint
    assert "extra" not in plain.canonical
