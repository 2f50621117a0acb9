"""What a checked field allows, as one typed record (:class:`FieldConstraints`).

The checker (``codegen/check.py``) turns a spec field into a :class:`~.model.CField`;
:func:`constraints_of` reads it once and says, in values rather than Python spellings, what
a present value may be (numeric bounds, UTF-8 length, dtypes, shape and element bound,
enum members) and when the field must or must not be present. The IR carries the record
(``FieldIR.constraints``); the JSON-schema export (``codegen/schema.py``), the strategies
template (``codegen/templates/strategies.py.j2``) and the evolution rules
(``codegen/breaking.py``) read it instead of re-deriving bounds from the ``CField``.

Rule kinds beyond the built-in ones are an extension point (:func:`register_kind`): a kind
names the spec key it reads and a function from the checked field to its value; the values
of the kinds a field uses are the record's :attr:`FieldConstraints.extra`, in registration
order, and the fingerprint covers them (``codegen/ir.py``, ``_canonical``). See the "how to
add a rule kind" recipe in docs/architecture.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from .model import CExpr, CField

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class DimBound:
    """One dimension of a tensor field's shape: a literal size, or a named dimension with
    the bounds its message declares (a literal ``n`` is ``lo == hi == n``)."""

    index: int
    size: int | None  # the literal size, None for a named dimension
    symbol: str | None  # the dimension's name, None for a literal size
    lo: int
    hi: int

    @property
    def text(self) -> str:
        """As the spec writes it: ``4`` or ``T``."""
        return str(self.size) if self.symbol is None else self.symbol


@dataclass(frozen=True)
class Presence:
    """When the field must, may or must not hold a value (docs/spec-language.md, fields).

    ``always``: the field is never None; otherwise the conditions below decide (each the
    checked expression, its canonical text at ``.text`` and its tree at ``.node``).
    """

    always: bool
    #: the spec wrote ``T | None``: None is a legal, explicitly given value
    explicit_none: bool
    required_when: CExpr | None = None
    forbidden_when: CExpr | None = None
    none_unless: CExpr | None = None
    #: the epoch field this field is cached by (sent when that field increments)
    cached_by: str | None = None

    @property
    def conditions(self) -> tuple[tuple[str, CExpr], ...]:
        """The presence conditions the field declares, as ``(spec key, expression)``."""
        pairs = (
            ("required_when", self.required_when),
            ("forbidden_when", self.forbidden_when),
            ("none_unless", self.none_unless),
        )
        return tuple((k, e) for k, e in pairs if e is not None)


@dataclass(frozen=True)
class FieldConstraints:
    """Everything a present value of one field must satisfy, and when it may be absent.

    Numeric bounds are the effective ones: an int field without a spec bound is bounded by
    int64 (every int is an int64 word on the wire, docs/wire-format.md); ``spec_lo`` and
    ``spec_hi`` keep what the spec wrote. A float is finite, and within ``lo``/``hi`` where
    given. Both ends are inclusive today (``range: {min, max}``); the flags say so, so a
    reader that compares ranges needs no assumption.
    """

    name: str
    kind: str  # int | float | bool | str | enum | tensor
    presence: Presence
    lo: int | float | None = None
    hi: int | float | None = None
    spec_lo: int | float | None = None
    spec_hi: int | float | None = None
    lo_inclusive: bool = True
    hi_inclusive: bool = True
    #: a str field's bound on its UTF-8 encoding, in bytes (not characters)
    max_len: int | None = None
    enum: str | None = None
    #: the enum's (member, value) pairs, in declaration order
    enum_members: tuple[tuple[str, int], ...] = ()
    dtypes: tuple[str, ...] = ()
    shape: tuple[DimBound, ...] = ()
    #: ``max_elements`` as the spec wrote it (None: unset)
    spec_max_elements: int | None = None
    #: the most elements a valid tensor holds: the product of the dimensions' upper
    #: bounds, capped by ``max_elements`` (None for scalars)
    max_elements: int | None = None
    derived: CExpr | None = None
    #: ``(kind, value)`` of each registered rule kind the field uses (:func:`register_kind`)
    extra: tuple[tuple[str, object], ...] = ()

    @property
    def finite(self) -> bool:
        """A present value must be a finite number (floats; ints always are)."""
        return self.kind == "float"

    @property
    def has_range(self) -> bool:
        """The field has a value test beyond its type (a range or a length)."""
        return self.kind in ("int", "float", "str")

    @property
    def lo_py(self) -> str | None:
        """``lo`` as a Python literal (None when unbounded)."""
        return None if self.lo is None else repr(self.lo)

    @property
    def hi_py(self) -> str | None:
        return None if self.hi is None else repr(self.hi)

    @property
    def shape_text(self) -> str:
        """``[B, 4]``: the shape as the spec writes it."""
        return "[" + ", ".join(d.text for d in self.shape) + "]"

    @property
    def dim_bounds(self) -> tuple[tuple[str, int, int], ...]:
        """Each named dimension once, in first-use order, with its bounds."""
        seen = dict.fromkeys((d.symbol, d.lo, d.hi) for d in self.shape if d.symbol is not None)
        return tuple((s, lo, hi) for s, lo, hi in seen if s is not None)

    @property
    def range_text(self) -> str:
        """The value rule as the docs and violation rules state it (``0 <= n <= 16``,
        ``x finite and >= 0.0``, ``len(utf8(s)) <= 12``); "" for other kinds. The int64
        bounds go without saying."""
        n = self.name
        if self.kind == "int":
            lo = self.spec_lo if self.spec_lo is not None and self.spec_lo != INT64_MIN else None
            hi = self.spec_hi if self.spec_hi is not None and self.spec_hi != INT64_MAX else None
            if lo is not None and hi is not None:
                return f"{n} == {lo}" if lo == hi else f"{lo} <= {n} <= {hi}"
            if lo is not None:
                return f"{n} >= {lo}"
            if hi is not None:
                return f"{n} <= {hi}"
            return f"{n} fits int64"
        if self.kind == "float":
            parts = ["finite"]
            if self.spec_lo is not None:
                parts.append(f">= {self.spec_lo}")
            if self.spec_hi is not None:
                parts.append(f"<= {self.spec_hi}")
            return f"{n} " + " and ".join(parts) if len(parts) > 1 else f"{n} finite"
        if self.kind == "str":
            return f"len(utf8({n})) <= {self.max_len}"
        return ""

    @property
    def shape_expected(self) -> str:
        """``[B, 4] with B in 1..8, at most 32 elements``: what a shape violation expects."""
        text = self.shape_text
        if self.dim_bounds:
            text += " with " + ", ".join(f"{s} in {lo}..{hi}" for s, lo, hi in self.dim_bounds)
        return f"{text}, at most {self.max_elements} elements"

    def get(self, kind: str) -> object | None:
        """The value of registered rule kind ``kind`` on this field, None when unused."""
        return next((v for k, v in self.extra if k == kind), None)


# --- rule kinds beyond the built-in ones --------------------------------------------------


@dataclass(frozen=True)
class RuleKind:
    """A rule kind registered from outside: its spec key, the field kinds it applies to and
    how to read its value off a checked field (None: the field does not use it). By default
    the value is the checked field's ``extra`` entry under ``key``, where the kind's field
    check (``codegen/field_rules.py``) puts it."""

    key: str
    field_kinds: tuple[str, ...]
    value_of: Callable[[CField], object | None] | None = None

    def value(self, f: CField) -> object | None:
        if self.value_of is not None:
            return self.value_of(f)
        extra: tuple[tuple[str, object], ...] = getattr(f, "extra", ())
        return next((v for k, v in extra if k == self.key), None)


_KINDS: dict[str, RuleKind] = {}

#: The rules a validator reports for a field (``codegen/rules.py``), by the suffix of their
#: constants' names.
_RULE_NAMES: tuple[str, ...] = (
    *("type", "range", "dtype", "shape", "bool", "missing", "forbidden", "none"),
    *("derived", "plan", "version"),
)

#: The spec's own field keys and the rule names a validator's checks use
#: (``codegen/rules.py``: ``field_rules``, and ``plan_rule``/``version_rule``, whose constants
#: ``_R_<Message>_<field>_plan``/``_version`` a kind's ``_R_<Message>_<field>_<kind>`` would
#: rebind): a registered kind may not take one of them.
BUILTIN_KEYS = frozenset(
    (
        *("type", "range", "max_len", "dtypes", "shape", "max_elements", "derived"),
        *("required_when", "forbidden_when", "none_unless", "cached_by"),
        *("doc", "why", "check", "fm"),
        *("dtype", "bool", "missing", "forbidden", "none", "plan", "version"),
    )
)


def register_kind(kind: RuleKind) -> None:
    """Add a rule kind to every record built from now on (its key must be new).

    A kind applies to scalar fields only: the validators run a kind's test on a scalar's
    value (``codegen/templates/macros/validate.j2``), a tensor's checks are its dtypes,
    shape and element bound, so a kind on a tensor would be fingerprinted but never run."""
    if kind.key in BUILTIN_KEYS:
        raise ValueError(f"{kind.key!r} is a built-in field key, not a new rule kind")
    if "tensor" in kind.field_kinds:
        raise ValueError(f"rule kind {kind.key!r}: the validators run kinds on scalar fields only")
    if kind.key in _KINDS:
        raise ValueError(f"rule kind {kind.key!r} is already registered")
    # a rule's constant is _R_<owner>_<field>_<rule>: field ``a`` with kind ``min_range``
    # and field ``a_min`` with its ``range`` would both be _R_<owner>_a_min_range
    for other in (*_RULE_NAMES, *_KINDS):
        if kind.key.endswith(f"_{other}") or other.endswith(f"_{kind.key}"):
            raise ValueError(
                f"rule kind {kind.key!r}: its rule constants could be those of rule {other!r} "
                "of another field (a key may not end in _<rule>, nor a rule in _<key>)"
            )
    _KINDS[kind.key] = kind


def unregister_kind(key: str) -> None:
    """Remove a registered rule kind (a no-op when it is not registered). A built-in key
    raises ``ValueError``: the built-in rules are ``FieldConstraints`` attributes, never
    registered, so there is nothing of theirs to remove."""
    if key in BUILTIN_KEYS:
        raise ValueError(f"{key!r} is a built-in field key; only a registered kind is removed")
    _KINDS.pop(key, None)


def registered_kinds() -> Iterator[RuleKind]:
    """The registered rule kinds, in registration order."""
    return iter(tuple(_KINDS.values()))


def _extra(f: CField) -> tuple[tuple[str, object], ...]:
    out = []
    for k in registered_kinds():
        if f.type.kind in k.field_kinds:
            value = k.value(f)
            if value is not None:
                out.append((k.key, value))
    return tuple(out)


# --- building the record ------------------------------------------------------------------


def _shape(f: CField, dims: Mapping[str, tuple[int, int]]) -> tuple[DimBound, ...]:
    out = []
    for i, d in enumerate(f.shape):
        if isinstance(d, int):
            out.append(DimBound(i, d, None, d, d))
        else:
            lo, hi = dims[d]
            out.append(DimBound(i, None, d, lo, hi))
    return tuple(out)


def constraints_of(
    f: CField,
    dims: Mapping[str, tuple[int, int]] | None = None,
    enums: Mapping[str, tuple[tuple[str, int], ...]] | None = None,
) -> FieldConstraints:
    """The record of checked field ``f``; ``dims`` are its message's dimensions as
    ``{name: (min, max)}`` (the header has none), ``enums`` the spec's enums' members."""
    kind = f.type.kind
    lo, hi = f.range_min, f.range_max
    if kind == "int":
        lo = INT64_MIN if lo is None else lo
        hi = INT64_MAX if hi is None else hi
    shape = _shape(f, dims or {}) if kind == "tensor" else ()
    max_el = None
    if kind == "tensor":
        bound = math.prod(d.hi for d in shape)
        max_el = min(bound, f.max_elements) if f.max_elements is not None else bound
    members = (enums or {}).get(f.type.enum, ()) if f.type.enum is not None else ()
    return FieldConstraints(
        name=f.name,
        kind=kind,
        presence=Presence(
            always=f.always_required,
            explicit_none=f.type.nullable,
            required_when=f.required_when,
            forbidden_when=f.forbidden_when,
            none_unless=f.none_unless,
            cached_by=f.cached_by,
        ),
        lo=lo,
        hi=hi,
        spec_lo=f.range_min,
        spec_hi=f.range_max,
        max_len=f.max_len,
        enum=f.type.enum,
        enum_members=tuple(members),
        dtypes=f.dtypes,
        shape=shape,
        spec_max_elements=f.max_elements,
        max_elements=max_el,
        derived=f.derived,
        extra=_extra(f),
    )
