"""Builders of the header's and each message's IR (:class:`~.ir.HeaderIR`,
:class:`~.ir.MessageIR`): where each field sits in frame 0, the generated classes of a
message (one per discriminator member) and its invariants (docs/wire-format.md, frame 0)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .constraints import FieldConstraints
from .ir import (
    FIXED_WORDS,
    DimDeclIR,
    FieldIR,
    HeaderIR,
    InvariantIR,
    LayoutIR,
    MessageIR,
    VariantIR,
)
from .ir_expr import python_expr
from .ir_fields import Scope, field_ir, scalar_width, variant_fields
from .model import CHeader, CMessage, variant_class_name

#: Each field's constraint record, by (message name, field name); the header's by (None, name)
Records = Mapping[tuple[str | None, str], FieldConstraints]


def header_ir(h: CHeader, records: Records) -> HeaderIR:
    """The header: one frame 0 word per field, in slot order."""
    scope = Scope(
        "h",
        frozenset(f.name for f in h.fields if not f.always_required),
        frozenset(f.name for f in h.fields),
    )
    fields = tuple(
        dataclasses.replace(
            field_ir(f, records[None, f.name], i, FIXED_WORDS + i, 1, scope),
            rule_owner="header",
            rule_label=f"header.{f.name}",
        )
        for i, f in enumerate(h.fields)
    )
    action_field = next(f for f in h.fields if f.name == h.action)
    return HeaderIR(
        fields=fields,
        action=h.action,
        action_enum=action_field.type.enum or "",
        doc=h.doc,
        presence_mask=sum(1 << f.index for f in fields if not f.always_required),
        roles=h.roles,
        control=h.control,
    )


def _placement(m: CMessage, layout: LayoutIR) -> dict[str, tuple[int, int]]:
    """Each field's first frame 0 word and width: scalars in field order from the scalar
    area, tensors' manifests (dtype code, then one word per dimension) sorted by name."""
    placed: dict[str, tuple[int, int]] = {}
    word = layout.scalars
    for f in m.fields:
        if f.type.kind != "tensor":
            placed[f.name] = (word, scalar_width(f))
            word += scalar_width(f)
    word = layout.manifest
    for f in sorted((f for f in m.fields if f.type.kind == "tensor"), key=lambda f: f.name):
        placed[f.name] = (word, 1 + len(f.shape))
        word += 1 + len(f.shape)
    return placed


def _message_fields(m: CMessage, records: Records, layout: LayoutIR) -> tuple[FieldIR, ...]:
    # a dimension is None when no well-formed tensor binds it, even a required one
    nullable = frozenset(f.name for f in m.fields if not f.always_required) | frozenset(
        d.name for d in m.dims
    )
    scope = Scope("m", nullable, frozenset(f.name for f in m.fields))
    placed = _placement(m, layout)
    fields = tuple(
        dataclasses.replace(
            field_ir(f, records[m.name, f.name], i, *placed[f.name], scope),
            rule_owner=m.name,
            rule_label=f.name,
        )
        for i, f in enumerate(m.fields)
    )
    # the version field's rule is its message's version, whatever its declared range
    return tuple(
        dataclasses.replace(f, range_text=f"{f.name} == {m.version}")
        if f.name == m.version_field
        else f
        for f in fields
    )


def _variants(
    m: CMessage,
    fields: tuple[FieldIR, ...],
    disc: FieldIR | None,
    enums: dict[str, dict[str, int]],
) -> tuple[VariantIR, ...]:
    """One generated class per discriminator member, or the message's one class."""
    if disc is None or disc.enum is None:
        return (
            VariantIR(m.name, None, None, variant_fields(m, fields, {}, enums, None, None), ""),
        )
    members = enums[disc.enum]
    return tuple(
        VariantIR(
            class_name=variant_class_name(m.name, member),
            member=member,
            member_value=value,
            fields=variant_fields(m, fields, {disc.name: value}, enums, disc.name, member),
            doc=f"{m.name} with {disc.name} = {member}.",
            enum=disc.enum,
        )
        for member, value in members.items()
    )


def _invariants(m: CMessage) -> tuple[InvariantIR, ...]:
    names = frozenset(f.name for f in m.fields)
    nullable = frozenset(f.name for f in m.fields if not f.always_required) | frozenset(
        d.name for d in m.dims
    )
    scalars = frozenset(f.name for f in m.fields if f.type.kind in ("int", "float", "bool"))
    # (a 0-d tensor keeps len(), which refuses it as it always did)
    tensors = frozenset(f.name for f in m.fields if f.type.kind == "tensor" and f.shape)
    return tuple(
        InvariantIR(
            i.id, python_expr(i.expr, "m", nullable, names, scalars, tensors), i.message, i.fm
        )
        for i in m.invariants
    )


def message_ir(
    m: CMessage, records: Records, layout: LayoutIR, enums: dict[str, dict[str, int]]
) -> MessageIR:
    fields = _message_fields(m, records, layout)
    disc = next((f for f in fields if f.name == m.discriminator), None)
    used = sorted(w for f in fields for w in range(f.word, f.word + f.width))
    dim_decls = tuple(
        DimDeclIR(d.name, d.min, d.max, d.doc, tuple(f.name for f in m.fields if d.name in f.shape))
        for d in m.dims
    )
    return MessageIR(
        name=m.name,
        id=m.id,
        version=m.version,
        action=m.action,
        doc=m.doc,
        discriminator=disc,
        version_field=m.version_field,
        fields=fields,
        scalars=tuple(f for f in fields if not f.is_tensor),
        tensors=tuple(sorted((f for f in fields if f.is_tensor), key=lambda f: f.name)),
        dims=dim_decls,
        variants=_variants(m, fields, disc, enums),
        invariants=_invariants(m),
        presence_mask=(1 << len(fields)) - 1,
        used_words=tuple(used),
        words=(layout.scalars, layout.reason),
    )
