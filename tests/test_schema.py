"""The exported JSON Schema (draft 2020-12) agrees with the generated validators, for every
spec: the shipped ones and the extra corpus (``specs/corpus.py``).

Valid envelopes drawn from each spec's generated ``valid_envelopes()`` are accepted in
their plain form (``to_plain``). Labelled mutants from ``mutants()`` and ``plain_mutants()``
are rejected, at the broken field, wherever the schema can say the rule they break; every
rule it cannot say (cross-field arithmetic, shapes, UTF-8 byte lengths, invariants) must be
listed under ``x-tpwire-unchecked``: a documented limitation, never a silent one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from specs import corpus

from tpwire.codegen import compiler
from tpwire.codegen.ir import ProtocolIR
from tpwire.codegen.schema import json_schema
from tpwire.generated import tp_control
from tpwire.runtime.plain import from_plain, to_plain

REPO = Path(__file__).resolve().parents[1]

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: Presence codes: the rule kind the schema lists under x-tpwire-unchecked when it cannot say it.
PRESENCE_RULE = {
    "missing": "required_when",
    "forbidden": "forbidden_when",
    "must_be_none": "none_unless",
}


@dataclasses.dataclass(frozen=True)
class Exported:
    ir: ProtocolIR
    schema: dict[str, Any]
    validator: jsonschema.Draft202012Validator
    tensors: frozenset[str]


_CACHE: dict[str, Exported] = {}


def exported(name: str) -> Exported:
    if name not in _CACHE:
        ir = corpus.ir(name)
        schema = json_schema(ir)
        tensors = frozenset(f.name for m in ir.messages for f in m.tensors)
        _CACHE[name] = Exported(ir, schema, jsonschema.Draft202012Validator(schema), tensors)
    return _CACHE[name]


def plain_json(header: Any, msg: Any) -> Any:
    """The plain form as strict JSON would carry it (raises ValueError on NaN/inf)."""
    return json.loads(json.dumps(to_plain(header, msg), allow_nan=False))


def _flat(errors: Iterable[jsonschema.ValidationError]) -> Iterator[jsonschema.ValidationError]:
    for e in errors:
        yield e
        yield from _flat(e.context)


def error_fields(validator: jsonschema.Draft202012Validator, instance: Any) -> set[str]:
    """The last path element of every (nested) schema error."""
    return {
        str(e.absolute_path[-1]) for e in _flat(validator.iter_errors(instance)) if e.absolute_path
    }


# --- the schema itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", corpus.params())
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = exported(name).schema
    jsonschema.Draft202012Validator.check_schema(schema)
    module = corpus.load(name).module
    assert schema["$id"] == f"urn:tpwire:{name}:0x{module.FINGERPRINT:016x}"
    assert set(module.MESSAGES) <= set(schema["$defs"])
    if corpus.load(name).shipped:
        checked_in = json.loads((REPO / "docs" / "spec" / f"{name}.schema.json").read_text("utf-8"))
        jsonschema.Draft202012Validator.check_schema(checked_in)
        assert checked_in == schema


# --- valid envelopes are accepted ----------------------------------------------------------------


@pytest.mark.parametrize("name", corpus.params())
def test_valid_envelopes_are_accepted(name: str) -> None:
    spec = corpus.load(name)
    validator = exported(name).validator

    @settings(SETTINGS, max_examples=corpus.examples(name, 100, 40))
    @given(spec.strategies.valid_envelopes())
    def check(envelope: tuple[Any, Any]) -> None:
        header, msg = envelope
        assert spec.module.validate(msg, header) == []
        instance = plain_json(header, msg)
        errors = [e.message for e in validator.iter_errors(instance)]
        assert errors == [], (errors, instance)

    check()  # every kind is reached: tests/test_strategy_reach.py


# --- mutants are rejected where the schema can say so ---------------------------------------------


def _documented(ex: Exported, where: str, prefix: str) -> bool:
    node = ex.schema["$defs"].get(where, {}) if where else ex.schema
    return any(u.startswith(prefix) for u in node.get("x-tpwire-unchecked", []))


def sayable(ex: Exported, class_name: str, code: str, field: str, value: Any) -> bool:
    """Whether the schema can say the rule behind (code, field); a rule it cannot say must be
    listed under x-tpwire-unchecked (asserted here)."""
    where, name = (
        ("Header", field.removeprefix("header."))
        if field.startswith("header.")
        else (class_name, field)
    )
    if code in PRESENCE_RULE:
        # presence is plain data (null vs object) for tensors too
        return not _documented(ex, where, f"{name} {PRESENCE_RULE[code]}:")
    if code in ("unknown_field", "version") or field == f"header.{ex.ir.header.action}":
        return True  # the action selects the message: one if/then branch per action
    if code == "invariant":
        derived = _documented(ex, where, f"{name} derived:")
        invariants = [
            f"invariant {i.id}:"
            for m in ex.ir.messages
            for i in m.invariants
            if ", ".join(i.expr.refs) == field
        ]
        assert derived or any(_documented(ex, where, i) for i in invariants), field
        return False
    if where != "Header" and name in ex.tensors:
        assert _documented(ex, where, f"{name} dtype/shape:"), field
        return False  # a tensor's type, dtype and shape are not in the schema
    if code == "range" and isinstance(value, str):
        f = _field(ex, class_name, field)
        if f.max_len is not None and len(value) <= f.max_len:
            # over max_len UTF-8 bytes (or none at all), not over max_len characters
            assert _documented(ex, where, f"{name} max_len:"), field
            return False
    return True


def _field(ex: Exported, class_name: str, label: str) -> Any:
    """The FieldIR behind a violation's field ("header.<name>" or a field of class_name)."""
    fields = ex.ir.header.fields
    if not label.startswith("header."):
        fields = next(
            m for m in ex.ir.messages for v in m.variants if v.class_name == class_name
        ).fields
    return next(f for f in fields if f.name == label.removeprefix("header."))


def _class_name(msg: Any) -> str:
    return type(msg).__name__ if msg is not None else ""


@pytest.mark.parametrize("name", corpus.params())
def test_mutants_are_rejected(name: str) -> None:
    spec = corpus.load(name)
    ex = exported(name)
    checked: Counter[str] = Counter()
    skipped: Counter[str] = Counter()

    @settings(SETTINGS, max_examples=corpus.examples(name, 250, 100))
    @given(spec.strategies.mutants())
    def check(m: Any) -> None:
        assert {(v.code, v.field) for v in spec.module.validate(m.msg, m.header)} == m.violations
        try:
            instance = plain_json(m.header, m.msg)
        except (ValueError, TypeError):
            # NaN/inf, bytes: values JSON has no form for
            assert m.kind in ("not_finite", "wrong_type"), m.kind
            skipped["no JSON form"] += 1
            return
        if m.kind == "wrong_type" and _json_number_for_float(ex, m):
            skipped["JSON has one number type"] += 1
            return  # see test_integral_number_for_a_float_field
        holder = m.header if m.field.startswith("header.") else m.msg
        value = getattr(holder, m.field.removeprefix("header."), None)
        say = {
            (c, f)
            for c, f in m.violations
            if sayable(ex, _class_name(m.msg), c, f, value if f == m.field else None)
        }
        if not say:
            skipped["unchecked " + "/".join(sorted(m.codes))] += 1
            return
        assert not ex.validator.is_valid(instance), (m.kind, say, instance)
        at = error_fields(ex.validator, instance)
        for code, field in say:
            if code in ("unknown_field", "version", "type", "range") or code in PRESENCE_RULE:
                if field != f"header.{ex.ir.header.action}":
                    assert field.removeprefix("header.") in at, (m.kind, code, field, at)
            checked[code] += 1

    check()
    # a sixth: mutants of tensors (dtype, shape) and of what JSON cannot say (UTF-8 byte
    # lengths, lone surrogates, NaN) dominate odd.yaml
    assert sum(checked.values()) >= corpus.examples(name, 250, 100) // 6, (checked, skipped)


def _json_number_for_float(ex: Exported, m: Any) -> bool:
    """An int given for a float field: JSON has one number type."""
    name = m.field.removeprefix("header.")
    value = getattr(m.header if m.field.startswith("header.") else m.msg, name)
    return type(value) is int and _field(ex, _class_name(m.msg), m.field).kind == "float"


@pytest.mark.parametrize("name", corpus.params())
def test_plain_mutants_are_rejected(name: str) -> None:
    """Unknown keys and keys left out: additionalProperties and required in the schema."""
    spec = corpus.load(name)
    ex = exported(name)
    checked: Counter[str] = Counter()

    @settings(SETTINGS, max_examples=corpus.examples(name, 100, 40))
    @given(spec.strategies.plain_mutants())
    def check(m: Any) -> None:
        _, msg, violations = from_plain(spec.module, m.data)
        assert {(v.code, v.field) for v in violations} == m.violations
        say = {(c, f) for c, f in m.violations if sayable(ex, _class_name(msg), c, f, None)}
        if m.data.get("message") is None and m.data.get("fields"):
            return  # see test_fields_without_a_message
        if say:
            assert not ex.validator.is_valid(json.loads(json.dumps(m.data))), (m.kind, say)
            checked[m.kind] += 1

    check()
    assert set(checked) == {"unknown_field", "missing_key"}, checked


def test_integral_number_for_a_float_field() -> None:
    header, msg = _valid_message("tp_control", "InferV1GeneratorOnly")
    data = json.loads(json.dumps(to_plain(header, msg)))
    data["fields"]["kv_cache_attention_bias"] = 1
    _, _, violations = from_plain(tp_control, data)
    documented = _documented(
        exported("tp_control"), "InferV1GeneratorOnly", "kv_cache_attention_bias"
    )
    schema_says = not exported("tp_control").validator.is_valid(data)
    assert documented or schema_says == bool(violations), violations


def test_fields_without_a_message() -> None:
    header = {"call_id": 0, "chunk_index": None, "control_epoch": 0, "cache_epoch": 0}
    data = {"header": {**header, "action": "NOOP"}, "message": None, "fields": {"x_unknown": 0}}
    _, _, violations = from_plain(tp_control, data)
    assert [(v.code, v.field) for v in violations] == [("unknown_field", "x_unknown")]
    assert not exported("tp_control").validator.is_valid(data)


def test_nan_has_no_json_form() -> None:
    """NaN breaks the float range rule but has no JSON form: the schema never sees it."""
    header, msg = _valid_message("tp_control", "InferV1GeneratorOnly")
    bad = dataclasses.replace(msg, kv_cache_attention_bias=math.nan)
    assert [v.code for v in tp_control.validate(bad, header)] == ["range"]
    with pytest.raises(ValueError):
        plain_json(header, bad)


# --- documented / undocumented limitations --------------------------------------------------------


def _unchecked(schema: dict[str, Any], where: str | None) -> list[str]:
    node = schema if where is None else schema["$defs"][where]
    return list(node.get("x-tpwire-unchecked", []))


def _valid_message(name: str, class_name: str) -> tuple[Any, Any]:
    """The first valid envelope of ``class_name`` the strategies draw."""
    drawn: list[tuple[Any, Any]] = []

    @settings(SETTINGS, max_examples=1, phases=[Phase.generate])
    @given(corpus.load(name).strategies.valid_envelopes(kinds=[class_name]))
    def grab(envelope: tuple[Any, Any]) -> None:
        drawn.append(envelope)

    grab()
    return drawn[0]


HEADER_CASES = [
    pytest.param("tp_control", "InferV1GeneratorOnly", "INFER", id="tp_control-INFER"),
    pytest.param("pp_contract", "PPEnvelope", "INFER", id="pp_contract-INFER"),
    pytest.param("pp_contract", "PPResult", "RESULT", id="pp_contract-RESULT"),
]


@pytest.mark.parametrize(("name", "class_name", "action"), HEADER_CASES)
def test_header_chunk_index_required_when(name: str, class_name: str, action: str) -> None:
    module = corpus.load(name).module
    ex = exported(name)
    header, msg = _valid_message(name, class_name)
    bad = dataclasses.replace(header, chunk_index=None)
    assert getattr(bad.action, "name", None) == action
    assert [(v.code, v.field) for v in module.validate(msg, bad)] == [
        ("missing", "header.chunk_index")
    ]
    documented = any(u.startswith("chunk_index") for u in _unchecked(ex.schema, "Header"))
    assert documented or not ex.validator.is_valid(plain_json(bad, msg))


@pytest.mark.parametrize(
    "case", ["payload-free-action-with-message", "payload-action-without-message"]
)
def test_action_selects_message(case: str) -> None:
    ex = exported("tp_control")
    header, msg = _valid_message("tp_control", "InferV1GeneratorOnly")
    if case == "payload-free-action-with-message":
        bad_header, bad_msg = dataclasses.replace(header, action=tp_control.TPAction.NOOP), msg
    else:
        bad_header, bad_msg = header, None
    codes = [(v.code, v.field) for v in tp_control.validate(bad_msg, bad_header)]
    assert codes == [("invariant", "header.action")]
    documented = any("action" in u for u in _unchecked(ex.schema, None))
    assert documented or not ex.validator.is_valid(plain_json(bad_header, bad_msg))


VERSION_CASES = [
    pytest.param("tp_control", "InferV1GeneratorOnly", "tp_envelope_version", id="tp_control"),
    pytest.param("pp_contract", "PPEnvelope", "pp_envelope_version", id="pp_contract-envelope"),
    pytest.param("pp_contract", "PPResult", "pp_result_version", id="pp_contract-result"),
]


@pytest.mark.parametrize(("name", "class_name", "field"), VERSION_CASES)
def test_version_field_must_match(name: str, class_name: str, field: str) -> None:
    module = corpus.load(name).module
    ex = exported(name)
    header, msg = _valid_message(name, class_name)
    bad = dataclasses.replace(msg, **{field: 2})
    assert [(v.code, v.field) for v in module.validate(bad, header)] == [("version", field)]
    documented = any(u.startswith(f"{field} ") for u in _unchecked(ex.schema, class_name))
    assert documented or not ex.validator.is_valid(plain_json(header, bad))


STR_SPEC = """\
tpwire: 1
protocol: labelled
enums:
  Action:
    values: {NOOP: 0, RUN: 1, STOP: 2, FAIL: 3}
header:
  slots: [action, seq]
  action: action
  roles: {sequence: seq}
  control: {noop: NOOP, shutdown: STOP, error: FAIL}
  fields:
    action: {type: Action}
    seq: {type: int, range: {min: 0}}
messages:
  Run:
    id: 1
    version: 1
    action: RUN
    fields:
      label: {type: str, max_len: 4}
"""


def test_str_max_len_counts_utf8_bytes(tmp_path: Path) -> None:
    spec = tmp_path / "labelled.yaml"
    spec.write_text(STR_SPEC, "utf-8")
    module = compiler.compile(spec)
    schema = json_schema(compiler.protocol_ir(spec))
    validator = jsonschema.Draft202012Validator(schema)
    header = module.Header(action=module.Action.RUN, seq=0)
    ok, bad = module.Run(label="abcd"), module.Run(label="éééé")  # 4 chars; 4 vs 8 bytes
    assert module.validate(ok, header) == []
    assert validator.is_valid(plain_json(header, ok))
    assert [v.code for v in module.validate(bad, header)] == ["range"]
    documented = any(u.startswith("label ") for u in _unchecked(schema, "Run"))
    assert documented or not validator.is_valid(plain_json(header, bad))
