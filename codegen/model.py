"""The checked spec: what stage 2 (check) hands to stage 3 (IR).

Everything here is resolved and known to be consistent: types are parsed, names exist,
expressions are parsed and type-checked. No wire layout or Python spelling yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import expr
from .load import PathKey


def variant_class_name(message: str, member: str) -> str:
    """``Infer`` + ``v1_generator_only`` -> ``InferV1GeneratorOnly``."""
    return message + "".join(p[:1].upper() + p[1:] for p in member.split("_") if p)


@dataclass(frozen=True)
class TypeRef:
    kind: str  # int | float | bool | str | enum | tensor
    enum: str | None = None
    #: the spec wrote ``T | None``: None is a legal, explicitly given value
    nullable: bool = False

    @property
    def ty(self) -> expr.Ty:
        return expr.Ty(self.kind, self.enum)

    def __str__(self) -> str:
        base = self.enum if self.kind == "enum" and self.enum else self.kind
        return f"{base} | None" if self.nullable else base


@dataclass(frozen=True)
class CExpr:
    source: str
    node: expr.Node
    path: PathKey

    @property
    def text(self) -> str:
        return expr.to_text(self.node)


@dataclass(frozen=True)
class CField:
    name: str
    path: PathKey
    type: TypeRef
    always_required: bool
    range_min: int | float | None = None
    range_max: int | float | None = None
    max_len: int | None = None
    dtypes: tuple[str, ...] = ()
    shape: tuple[int | str, ...] = ()
    max_elements: int | None = None
    required_when: CExpr | None = None
    forbidden_when: CExpr | None = None
    none_unless: CExpr | None = None
    derived: CExpr | None = None
    #: the epoch field this field is cached by (``cached_by``): sent when it increments
    cached_by: str | None = None
    #: ``(key, value)`` of rule kinds registered from outside (``codegen/field_rules.py``);
    #: ``codegen/constraints.py`` reads each registered kind's into ``FieldConstraints.extra``
    extra: tuple[tuple[str, object], ...] = ()
    doc: str = ""
    why: str = ""
    check: str = ""
    fm: str | None = None


@dataclass(frozen=True)
class CDim:
    name: str
    min: int
    max: int
    doc: str = ""


@dataclass(frozen=True)
class CInvariant:
    id: str
    expr: CExpr
    message: str
    fm: str | None = None


@dataclass(frozen=True)
class CMessage:
    name: str
    path: PathKey
    id: int
    version: int
    action: str
    discriminator: str | None
    version_field: str | None
    doc: str
    dims: tuple[CDim, ...]
    fields: tuple[CField, ...]
    invariants: tuple[CInvariant, ...]

    def field(self, name: str) -> CField:
        return next(f for f in self.fields if f.name == name)


@dataclass(frozen=True)
class CEnum:
    name: str
    doc: str
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CHeader:
    slots: tuple[str, ...]
    action: str
    fields: tuple[CField, ...]  # in slot order
    doc: str
    #: role -> header field, in ROLES order (sequence first; chunk and epoch when declared)
    roles: tuple[tuple[str, str], ...] = ()
    #: control role -> action member, in CONTROLS order (noop when declared)
    control: tuple[tuple[str, str], ...] = ()


#: The header roles a spec may declare (docs/spec-language.md, roles), in the order ids are shown.
ROLES = ("sequence", "chunk", "epoch")
#: The control actions a channel sends on its own.
CONTROLS = ("noop", "shutdown", "error")


@dataclass(frozen=True)
class CheckedSpec:
    file: str
    sha256: str
    protocol: str
    doc: str
    enums: tuple[CEnum, ...]
    header: CHeader
    messages: tuple[CMessage, ...]

    def enum(self, name: str) -> CEnum:
        return next(e for e in self.enums if e.name == name)
