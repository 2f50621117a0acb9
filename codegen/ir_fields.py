"""Builders of the field-level IR: :class:`~.ir.FieldIR` from a checked field and its
constraint record, and the fields of each generated class of a message
(:class:`~.ir.VariantFieldIR`)."""

from __future__ import annotations

from dataclasses import dataclass

from . import expr
from .constraints import FieldConstraints
from .ir import ExprIR, FieldIR, VariantFieldIR
from .ir_expr import python_expr
from .model import CExpr, CField, CMessage, TypeRef


@dataclass(frozen=True)
class Scope:
    """What a field's expressions may read: the object holding the fields (``h`` or ``m``),
    the names that may be None and the field names (the rest are dimensions)."""

    ref: str
    nullable: frozenset[str]
    fields: frozenset[str]

    def lower(self, ce: CExpr | None) -> ExprIR | None:
        return None if ce is None else python_expr(ce, self.ref, self.nullable, self.fields)


def field_ir(
    f: CField, c: FieldConstraints, index: int, word: int, width: int, scope: Scope
) -> FieldIR:
    """``f`` (record ``c``) at presence bit ``index``, in frame 0 words ``word`` onwards."""
    return FieldIR(
        name=f.name,
        index=index,
        constraints=c,
        type_text=_type_text(f),
        value_py=_value_py(f.type),
        required_when=scope.lower(f.required_when),
        forbidden_when=scope.lower(f.forbidden_when),
        none_unless=scope.lower(f.none_unless),
        derived=scope.lower(f.derived),
        range_text=c.range_text,
        word=word,
        width=width,
        why=f.why,
        check=f.check,
        fm=f.fm,
        doc=f.doc,
        rules_text=_rules_text(f),
        owner=scope.ref,
    )


def scalar_width(f: CField) -> int:
    """The frame 0 words a scalar takes: one, or a length word and the UTF-8 bytes of a
    str field at its ``max_len`` (docs/wire-format.md)."""
    if f.type.kind == "str":
        return 1 + -(-(f.max_len or 0) // 8)
    return 1


def _value_py(t: TypeRef) -> str:
    return {
        "int": "int",
        "float": "float",
        "bool": "bool",
        "str": "str",
        "tensor": "torch.Tensor",
    }.get(t.kind, t.enum or "")


def _type_text(f: CField) -> str:
    base = f.type.enum if f.type.kind == "enum" else f.type.kind
    if f.type.kind == "tensor":
        base = f"tensor[{'/'.join(f.dtypes)}]{list(f.shape)}".replace("'", "")
    elif f.type.kind == "str":
        base = f"str[{f.max_len}]"
    return f"{base} | None" if f.type.nullable else str(base)


def _rules_text(f: CField) -> str:
    parts = []
    if f.always_required:
        parts.append("always")
    if f.required_when is not None:
        parts.append(f.required_when.text)
    if f.forbidden_when is not None:
        parts.append(f"must be absent when {f.forbidden_when.text}")
    if f.cached_by is not None:
        e = f.cached_by
        parts.append(
            f"cached by {e}: sent exactly when {e} increments (and on the first envelope, "
            f"and after a hard cut), never otherwise; the receiver keeps the last one"
        )
        if f.none_unless is not None:
            parts.append(f"absent while {e} is None")
    elif f.none_unless is not None:
        parts.append(f"None unless {f.none_unless.text}")
    if not parts:
        parts.append("optional")
    return "; ".join(parts)


def variant_fields(
    m: CMessage,
    fields: tuple[FieldIR, ...],
    known: dict[str, object],
    enums: dict[str, dict[str, int]],
    disc: str | None,
    disc_member: str | None,
) -> tuple[VariantFieldIR, ...]:
    """The fields of one generated class: each with its annotation and default, given the
    values ``known`` in that class (its discriminator member)."""
    out = []
    for cf, f in zip(m.fields, fields, strict=True):
        if disc is not None and f.name == disc and disc_member is not None:
            lit = f"{f.enum}.{disc_member}"
            out.append(VariantFieldIR(f, f"Literal[{lit}]", lit))
            continue

        def const(ce: CExpr | None) -> object:
            if ce is None:
                return None
            node = expr.partial_eval(ce.node, known, enums)
            return expr.const_value(node) if expr.is_const(node) else None

        required = cf.always_required or const(cf.required_when) is True
        forbidden = const(cf.forbidden_when) is True or (
            cf.none_unless is not None and const(cf.none_unless) is False
        )
        if forbidden and not required:
            out.append(VariantFieldIR(f, "None", "None"))
        elif cf.derived is not None:
            # computed from the others when not given (``__post_init__``)
            annotation = f"{f.value_py} | None" if not required or cf.type.nullable else f.value_py
            out.append(VariantFieldIR(f, annotation, "_w.DERIVE"))
        elif required and not cf.type.nullable:
            out.append(VariantFieldIR(f, f.value_py, None))
        elif cf.type.nullable:
            out.append(VariantFieldIR(f, f"{f.value_py} | None", None))
        else:
            out.append(VariantFieldIR(f, f"{f.value_py} | None", "None"))
    # kw_only dataclasses accept defaults before non-defaults; keep spec order
    return tuple(out)
