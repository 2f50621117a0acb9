"""The exported JSON Schema (draft 2020-12) agrees with the generated validators.

Valid envelopes drawn from each spec's generated ``valid_envelopes()`` are accepted in
their plain form (``to_plain``); mutants from ``invalid_envelopes()`` that break a rule the
schema can say (presence, range, type; not rules listed under ``x-tpwire-unchecked``) are
rejected, at the mutated field. Rules JSON Schema cannot say (cross-field arithmetic,
shapes, UTF-8 byte lengths) are listed in the schema under ``x-tpwire-unchecked``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, find, given, settings

from tpwire.codegen import compiler
from tpwire.codegen.ir import ProtocolIR
from tpwire.codegen.schema import json_schema
from tpwire.generated import pp_contract, pp_contract_strategies, tp_control, tp_control_strategies
from tpwire.runtime.plain import to_plain

REPO = Path(__file__).resolve().parents[1]

PROTOCOLS: dict[str, tuple[ModuleType, ModuleType]] = {
    "tp_control": (tp_control, tp_control_strategies),
    "pp_contract": (pp_contract, pp_contract_strategies),
}

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: Mutation codes whose rule the schema can express for non-tensor fields.
CHECKED_CODES = frozenset({"missing", "forbidden", "must_be_none", "range", "type"})
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
        ir = compiler.protocol_ir(REPO / "spec" / f"{name}.yaml")
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


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = exported(name).schema
    jsonschema.Draft202012Validator.check_schema(schema)
    module, _ = PROTOCOLS[name]
    assert schema["$id"] == f"urn:tpwire:{name}:0x{module.FINGERPRINT:016x}"
    assert set(module.MESSAGES) <= set(schema["$defs"])
    checked_in = json.loads((REPO / "docs" / "spec" / f"{name}.schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(checked_in)
    assert checked_in == schema


# --- valid envelopes are accepted ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_valid_envelopes_are_accepted(name: str) -> None:
    module, strategies = PROTOCOLS[name]
    validator = exported(name).validator
    kinds: Counter[str | None] = Counter()

    @SETTINGS
    @given(strategies.valid_envelopes())
    def check(envelope: tuple[Any, Any]) -> None:
        header, msg = envelope
        assert module.validate(msg, header) == []
        instance = plain_json(header, msg)
        errors = [e.message for e in validator.iter_errors(instance)]
        assert errors == [], (errors, instance)
        kinds[instance["message"]] += 1

    check()
    assert set(kinds) == {None, *module.MESSAGES}, kinds


# --- mutants are rejected where the schema can say so ---------------------------------------------


def schema_can_say(ex: Exported, class_name: str, code: str, field: str) -> bool:
    unchecked = ex.schema["$defs"][class_name].get("x-tpwire-unchecked", [])
    if code in PRESENCE_RULE:
        # presence is plain data (null vs object) for tensors too
        return not any(u.startswith(f"{field} {PRESENCE_RULE[code]}:") for u in unchecked)
    return field not in ex.tensors  # range/type of a tensor is dtype/shape: not in the schema


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_mutants_are_rejected(name: str) -> None:
    module, strategies = PROTOCOLS[name]
    ex = exported(name)
    checked: Counter[str] = Counter()
    skipped: Counter[str] = Counter()

    @settings(SETTINGS, max_examples=250)
    @given(strategies.invalid_envelopes())
    def check(mutant: tuple[Any, Any, frozenset[str]]) -> None:
        header, msg, codes = mutant
        violations = module.validate(msg, header)
        broken = {(v.code, v.field) for v in violations if v.code in codes}
        assert broken, (codes, violations)
        relevant = {(c, f) for c, f in broken if c in CHECKED_CODES}
        if not relevant:
            skipped["code " + "/".join(sorted(codes))] += 1
            return
        try:
            instance = plain_json(header, msg)
        except ValueError:
            # a NaN float: JSON has no NaN, the plain form cannot be sent as JSON at all
            assert any(c == "range" for c, _ in relevant)
            skipped["nan"] += 1
            return
        class_name = type(msg).__name__
        sayable = {(c, f) for c, f in relevant if schema_can_say(ex, class_name, c, f)}
        if not sayable:
            skipped["unchecked"] += 1
            return
        assert not ex.validator.is_valid(instance), (sayable, instance["fields"])
        at = error_fields(ex.validator, instance)
        for code, field in sayable:
            assert field in at, (code, field, at)
            checked[code] += 1

    check()
    assert sum(checked.values()) >= 20, (checked, skipped)
    assert len(checked) >= 3, (checked, skipped)


def test_nan_has_no_json_form() -> None:
    """NaN breaks the float range rule but has no JSON form: the schema never sees it."""
    header, msg = find(
        tp_control_strategies.valid_envelopes(),
        lambda e: isinstance(e[1], tp_control.InferV1GeneratorOnly),
        settings=SETTINGS,
    )
    assert isinstance(msg, tp_control.InferV1GeneratorOnly)
    bad = dataclasses.replace(msg, kv_cache_attention_bias=math.nan)
    assert [v.code for v in tp_control.validate(bad, header)] == ["range"]
    with pytest.raises(ValueError):
        plain_json(header, bad)


# --- documented / undocumented limitations --------------------------------------------------------


def _unchecked(schema: dict[str, Any], where: str | None) -> list[str]:
    node = schema if where is None else schema["$defs"][where]
    return list(node.get("x-tpwire-unchecked", []))


def _valid_message(name: str, class_name: str) -> tuple[Any, Any]:
    _, strategies = PROTOCOLS[name]
    envelope: tuple[Any, Any] = find(
        strategies.valid_envelopes(),
        lambda e: type(e[1]).__name__ == class_name,
        settings=SETTINGS,
    )
    return envelope


HEADER_CASES = [
    pytest.param("tp_control", "InferV1GeneratorOnly", "INFER", id="tp_control-INFER"),
    pytest.param("pp_contract", "PPEnvelope", "INFER", id="pp_contract-INFER"),
    pytest.param("pp_contract", "PPResult", "RESULT", id="pp_contract-RESULT"),
]


@pytest.mark.parametrize(("name", "class_name", "action"), HEADER_CASES)
def test_header_chunk_index_required_when(name: str, class_name: str, action: str) -> None:
    module, _ = PROTOCOLS[name]
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
    module, _ = PROTOCOLS[name]
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
    values: {NOOP: 0, RUN: 1}
header:
  slots: [action]
  action: action
  fields:
    action: {type: Action}
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
    header = module.Header(action=module.Action.RUN)
    ok, bad = module.Run(label="abcd"), module.Run(label="éééé")  # 4 chars; 4 vs 8 bytes
    assert module.validate(ok, header) == []
    assert validator.is_valid(plain_json(header, ok))
    assert [v.code for v in module.validate(bad, header)] == ["range"]
    documented = any(u.startswith("label ") for u in _unchecked(schema, "Run"))
    assert documented or not validator.is_valid(plain_json(header, bad))
