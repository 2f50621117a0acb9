"""JSON Schema (draft 2020-12) of an envelope's non-tensor fields, in plain-data form.

Plain data: ``{"header": {...}, "message": "<class name>", "fields": {...}}`` with enums
by member name, tensors as ``{"dtype": ..., "shape": [...]}`` (not checked here) and
None as null. Rules that JSON Schema can say (ranges, required/forbidden under simple
equality conditions, the discriminator) are translated; the rest (arithmetic, ``len``,
invariants, shapes) is listed under ``x-tpwire-unchecked``: a documented limitation.
"""

from __future__ import annotations

from typing import Any

from . import expr
from .ir import FieldIR, MessageIR, ProtocolIR, VariantIR
from .stamp import GENERATED_MARK, GENERATOR_VERSION

Schema = dict[str, Any]


def _value_schema(f: FieldIR) -> Schema:
    """What JSON Schema can say of a present value, from the field's constraint record."""
    c = f.constraints
    if c.kind == "int":
        return {"type": "integer", "minimum": int(c.lo or 0), "maximum": int(c.hi or 0)}
    if c.kind == "float":
        s: Schema = {"type": "number"}
        if c.lo is not None:
            s["minimum"] = float(c.lo)
        if c.hi is not None:
            s["maximum"] = float(c.hi)
        return s
    if c.kind == "bool":
        return {"type": "boolean"}
    if c.kind == "str":
        return {"type": "string", "maxLength": c.max_len}
    if c.kind == "enum":
        return {"enum": [name for name, _ in c.enum_members]}
    return {"type": "object", "description": "tensor (not checked by this schema)"}


def _const(node: expr.Node) -> tuple[bool, Any]:
    if isinstance(node, expr.Const) and node.value is not None:
        return True, node.value
    if isinstance(node, expr.EnumRef):
        return True, node.member
    return False, None


def _condition(node: expr.Node, tensors: set[str]) -> Schema | None:
    """An ``if`` subschema equivalent to a condition, or None when JSON Schema cannot say it."""
    if isinstance(node, expr.Compare) and node.op == "==":
        for a, b in ((node.left, node.right), (node.right, node.left)):
            ok, value = _const(b)
            if isinstance(a, expr.Name) and ok and a.id not in tensors:
                return {"properties": {a.id: {"const": value}}, "required": [a.id]}
        return None
    if isinstance(node, expr.BoolOp):
        parts = [_condition(v, tensors) for v in node.values]
        if any(p is None for p in parts):
            return None
        return {"allOf" if node.op == "and" else "anyOf": parts}
    if isinstance(node, expr.IsNone) and isinstance(node.operand, expr.Name):
        name = node.operand.id
        if node.negated:
            return {"properties": {name: {"not": {"type": "null"}}}, "required": [name]}
        return {"properties": {name: {"type": "null"}}}
    return None


def _presence_rules(
    f: FieldIR,
    known: dict[str, object],
    values: dict[str, dict[str, int]],
    tensors: set[str],
    rules: list[Schema],
    unchecked: list[str],
) -> None:
    """if/then rules for a nullable field's required_when / forbidden_when / none_unless."""
    present: Schema = {"properties": {f.name: {"not": {"type": "null"}}}, "required": [f.name]}
    absent: Schema = {"properties": {f.name: {"type": "null"}}}
    for kind, e in f.constraints.presence.conditions:
        node = expr.partial_eval(e.node, known, values)
        if expr.is_const(node):
            held = expr.const_value(node)
            if (kind == "none_unless") != (held is False):
                continue  # never applies here (or is already in the type)
        cond = _condition(node, tensors)
        if cond is None:
            unchecked.append(f"{f.name} {kind}: {e.text}")
        elif kind == "required_when":
            rules.append({"if": cond, "then": present})
        elif kind == "forbidden_when":
            rules.append({"if": cond, "then": absent})
        else:
            rules.append({"if": {"not": cond}, "then": absent})


def _object(
    props: Schema, required: list[str], rules: list[Schema], unchecked: list[str]
) -> Schema:
    schema: Schema = {
        "type": "object",
        "properties": props,
        "required": sorted(required),
        "additionalProperties": False,
    }
    if rules:
        schema["allOf"] = rules
    if unchecked:
        schema["x-tpwire-unchecked"] = unchecked
    return schema


def _variant_schema(m: MessageIR, v: VariantIR, values: dict[str, dict[str, int]]) -> Schema:
    known: dict[str, object] = (
        {m.discriminator.name: v.member_value}
        if m.discriminator is not None and v.member_value is not None
        else {}
    )
    tensors = {f.name for f in m.tensors}
    props: Schema = {}
    required: list[str] = []
    rules: list[Schema] = []
    unchecked: list[str] = []
    for vf in v.fields:
        f = vf.field
        c = f.constraints
        if vf.annotation == "None":
            props[f.name] = {"type": "null"}
            continue
        base = _value_schema(f)
        if f.name == m.version_field:
            base = {"const": m.version}
        if c.kind == "str":
            unchecked.append(
                f"{f.name} max_len: UTF-8 bytes <= {c.max_len} (maxLength counts characters)"
            )
        if c.kind == "float":
            unchecked.append(_FLOAT_TYPE.format(f.name))
        if vf.annotation.startswith("Literal["):
            props[f.name] = {"const": v.member}
            required.append(f.name)
            continue
        nullable = vf.annotation.endswith("| None")
        props[f.name] = {"anyOf": [base, {"type": "null"}]} if nullable else base
        if not nullable or c.presence.explicit_none:
            required.append(f.name)
        if nullable:
            _presence_rules(f, known, values, tensors, rules, unchecked)
        if c.derived is not None:
            unchecked.append(f"{f.name} derived: {c.derived.text}")
        if c.kind == "tensor":
            unchecked.append(f"{f.name} dtype/shape: {c.shape_text}")
        unchecked += [f"{f.name} {k}: {v!r}" for k, v in c.extra]
    unchecked += [f"invariant {i.id}: {i.expr.text}" for i in m.invariants]
    return _object(props, required, rules, unchecked)


#: JSON Schema has one number type (1.0 is an integer to it): it cannot refuse ``1``.
_FLOAT_TYPE = "{} type: a float; an integral JSON number (1) passes here, the bindings want 1.0"


def _header_schema(p: ProtocolIR, values: dict[str, dict[str, int]]) -> Schema:
    props: Schema = {}
    required = []
    rules: list[Schema] = []
    unchecked: list[str] = []
    for f in p.header.fields:
        base = _value_schema(f)
        if f.constraints.kind == "float":
            unchecked.append(_FLOAT_TYPE.format(f.name))
        unchecked += [f"{f.name} {k}: {v!r}" for k, v in f.constraints.extra]
        if f.constraints.presence.always:
            props[f.name] = base
            required.append(f.name)
            continue
        props[f.name] = {"anyOf": [base, {"type": "null"}]}
        _presence_rules(f, {}, values, set(), rules, unchecked)
    return _object(props, required, rules, unchecked)


def _action_branches(p: ProtocolIR) -> list[Schema]:
    """The message classes each action carries; no message, no fields."""
    branches: list[Schema] = []
    for a in p.actions:
        carried: list[str | None] = (
            [v.class_name for v in a.message.variants] if a.message is not None else [None]
        )
        branches.append(
            {
                "if": {
                    "properties": {
                        "header": {"properties": {p.header.action: {"const": a.member}}}
                    },
                    "required": ["header"],
                },
                "then": {"properties": {"message": {"enum": carried}}},
            }
        )
    # no message: nothing may be given as its fields
    branches.append(
        {
            "if": {"properties": {"message": {"const": None}}},
            "then": {
                "properties": {
                    "fields": {"anyOf": [{"type": "null"}, {"type": "object", "maxProperties": 0}]}
                }
            },
        }
    )
    return branches


def json_schema(p: ProtocolIR) -> Schema:
    # the owner, as in the other headers (``compiler.SpecIR``; a spec's text has none)
    project = getattr(p, "project", None)
    owner = f" (project {project})" if isinstance(project, str) else ""
    values = {e.name: dict(e.members) for e in p.enums}
    defs: Schema = {"Header": _header_schema(p, values)}
    branches = _action_branches(p)
    for m in p.messages:
        for v in m.variants:
            defs[v.class_name] = _variant_schema(m, v, values)
            branches.append(
                {
                    "if": {
                        "properties": {"message": {"const": v.class_name}},
                        "required": ["message"],
                    },
                    "then": {
                        "properties": {"fields": {"$ref": f"#/$defs/{v.class_name}"}},
                        "required": ["fields"],
                    },
                }
            )
    return {
        "$comment": f"{GENERATED_MARK} {GENERATOR_VERSION} from {p.source}{owner} - do not edit",
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:tpwire:{p.name}:{p.fingerprint_hex}",
        "title": f"{p.name}: envelope non-tensor fields",
        "type": "object",
        "properties": {
            "header": {"$ref": "#/$defs/Header"},
            "message": {"enum": [None, *p.all_classes]},
            "fields": {"type": ["object", "null"]},
        },
        "required": ["header"],
        "additionalProperties": False,
        "allOf": branches,
        "$defs": defs,
    }
