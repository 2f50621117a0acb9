"""Support for the generated hypothesis strategies (``*_strategies`` modules).

A generated strategies module declares its protocol as data (:class:`Protocol`: every
field's :class:`Rule`, the dimensions, invariants, derived fields, variants and actions,
with each spec expression compiled over plain data); everything else is shared and lives
here:

- **valid envelopes**: values drawn from each field's range with its edges (range bounds,
  dimensions at their bounds, ``-0.0``, full-length and multi-byte strings, every allowed
  dtype), presence from the rules, ``field == expr`` invariants and derived fields solved;
- **a reference verdict** (:func:`verdict`): the violations the spec's rules predict for a
  candidate envelope, computed from the declared rules over plain data - independent of
  the generated ``validate``, which the properties compare against it;
- **labelled mutants** (:class:`Mutant`, :class:`PlainMutant`): a valid envelope with one
  named rule broken (see :data:`MUTANT_KINDS`), carrying the violations it must produce.
  Where a spec makes one rule imply another (``none_unless`` and an iff invariant on the
  same field) a mutant breaks both and carries both; otherwise it breaks exactly one.

Each field's :class:`Rule` is filled from its constraint record (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy as SearchStrategy

from tpwire.runtime.plain import to_plain
from tpwire.runtime.wire import WIRE_DTYPES

Fields = dict[str, Any]
Dims = dict[str, Any]  # a dimension is None when no well-formed present tensor binds it
Fn = Callable[[Fields, Dims], Any]
#: (violation code, field) as ``validate`` reports it: header fields as ``header.<name>``,
#: invariants as their fields joined by ``", "``
Found = frozenset[tuple[str, str]]

#: Tensors in valid envelopes stay at or under this many elements (edges included), or
#: ``(max_extra + 1) ** 4`` when that is more: a caller asking for large dims gets them.
ELEMENT_CAP = 1 << 14
#: Mutant tensors (shapes past their bounds) are allocated, never filled: at most this many bytes.
MUTANT_BYTES_CAP = 1 << 26

#: Every mutant kind, with the violation code it must produce.
MUTANT_KINDS: dict[str, str] = {
    "none_where_required": "missing",  # a required field set to None
    "missing_key": "missing",  # plain form only: a required (or explicit-None) key left out
    "forbidden_present": "forbidden",
    "must_be_none_present": "must_be_none",
    "wrong_type": "type",
    "wrong_member": "type",  # the discriminator names another variant than the class
    "wrong_dtype": "dtype",
    "wrong_rank": "shape",
    "dim_out_of_bounds": "shape",  # a symbolic dim past its bounds, or a constant dim off by one
    "dim_mismatch": "shape",  # a dimension symbol bound to two sizes
    "too_many_elements": "shape",  # every dim legal, the product over max_elements
    "range_below": "range",
    "range_above": "range",
    "not_finite": "range",
    "too_long_utf8": "range",  # at most max_len characters, over max_len UTF-8 bytes
    "unencodable": "range",  # a lone surrogate: no UTF-8 form at all
    "invariant_above": "invariant",  # one operand of an invariant or derived field + 1 (or 1 ulp)
    "invariant_below": "invariant",  # ... - 1 (or 1 ulp)
    "invariant_flip": "invariant",  # a bool operand negated
    "version_above": "version",
    "version_below": "version",
    "action_mismatch": "invariant",  # the header action does not select the message
    "unknown_field": "unknown_field",  # plain form only
}


# --- the protocol, as data ---------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """A spec expression over plain data: ``f["field"]`` and ``d["DIM"]``."""

    fn: Fn
    #: every nullable operand is present (the expression can be evaluated)
    guard: Fn
    #: the fields it reads: it is skipped when one of them already broke its own rule
    refs: tuple[str, ...] = ()

    def holds(self, f: Fields, d: Dims) -> bool:
        """True only when every operand is present and the expression holds."""
        return bool(self.guard(f, d)) and bool(self.fn(f, d))


@dataclass(frozen=True)
class Rule:
    """What the strategies know about one field."""

    name: str
    kind: str  # int | float | bool | str | enum | tensor
    always: bool = False
    required: Expr | None = None
    forbidden: Expr | None = None
    none_unless: Expr | None = None
    derived: Expr | None = None
    lo: float | None = None  # ints: always set (int64 when the spec gives no bound)
    hi: float | None = None
    max_len: int | None = None
    enum: Any = None  # the enum class
    dtypes: tuple[torch.dtype, ...] = ()
    shape: tuple[int | str, ...] = ()  # constants and dimension symbols
    max_elements: int | None = None
    #: the field's registered rule kinds (``codegen/rules.py``, ``RuleEmitter``), in the
    #: order the validator runs them: (violation code, true when a value in range passes)
    checks: tuple[tuple[str, Callable[[Any], bool]], ...] = ()

    def passes(self, v: Any) -> bool:
        """``v`` passes every registered rule kind of the field."""
        return all(ok(v) for _, ok in self.checks)


@dataclass(frozen=True)
class Invariant:
    id: str
    expr: Expr


@dataclass(frozen=True)
class Solve:
    """Make ``field == expr`` hold: used for derived fields and equality invariants."""

    field: str
    value: Fn
    ready: Fn


class Record:
    """The header or one message: its fields in validation order, dims and cross-field rules.

    (Plain classes, not dataclasses, from here on: hypothesis prints the arguments of
    strategies, and a protocol printed field by field runs to megabytes.)
    """

    def __init__(
        self,
        name: str,
        rules: tuple[Rule, ...],
        dims: Mapping[str, tuple[int, int]] | None = None,
        invariants: tuple[Invariant, ...] = (),
        solvers: tuple[Solve, ...] = (),
        discriminator: str | None = None,
        version_field: str | None = None,
        version: int = 0,
    ) -> None:
        self.name = name
        self.rules = rules
        self.dims: Mapping[str, tuple[int, int]] = dict(dims or {})
        self.invariants = invariants
        self.solvers = solvers
        self.discriminator = discriminator
        self.version_field = version_field
        self.version = version

    def __repr__(self) -> str:
        return f"Record({self.name!r})"

    def rule(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)


class Variant:
    """One generated message class."""

    def __init__(
        self,
        cls: type,
        member: Any = None,
        absent: tuple[str, ...] = (),
        explicit: tuple[str, ...] = (),
    ) -> None:
        self.cls = cls
        self.member = member  # its discriminator member
        self.absent = absent  # fields typed ``None`` in this class
        #: ``T | None`` fields without a default: in plain form the key must be given
        self.explicit = explicit

    def __repr__(self) -> str:
        return f"Variant({self.cls.__name__})"


class Action:
    def __init__(
        self, member: Any, record: Record | None = None, variants: tuple[Variant, ...] = ()
    ) -> None:
        self.member = member
        self.record = record
        self.variants = variants

    def __repr__(self) -> str:
        return f"Action({self.member!r})"


class Protocol:
    """A protocol as the strategies see it (the generated module's ``PROTOCOL``)."""

    def __init__(
        self,
        header_cls: type,
        header: Record,
        action_field: str,
        action_enum: Any,
        actions: tuple[Action, ...],
    ) -> None:
        self.header_cls = header_cls
        self.header = header
        self.action_field = action_field
        self.action_enum = action_enum
        self.actions = actions

    def __repr__(self) -> str:
        return f"Protocol({self.header_cls.__module__})"

    def action(self, member: Any) -> Action:
        return next(a for a in self.actions if a.member is member)

    def variant(self, class_name: str) -> tuple[Action, Variant]:
        return next(
            (a, v) for a in self.actions for v in a.variants if v.cls.__name__ == class_name
        )


# --- values ------------------------------------------------------------------------------------


def _float_edges(lo: float | None, hi: float | None) -> list[float]:
    big = 1.7976931348623157e308
    edges = [float(lo) if lo is not None else -big, float(hi) if hi is not None else big]
    for x in (-0.0, 5e-324, -5e-324):  # signed zero and the smallest subnormals
        if (lo is None or x >= lo) and (hi is None or x <= hi):
            edges.append(x)
    return edges


def _text_edges(max_len: int) -> list[str]:
    return [
        "",
        "x" * max_len,
        "\0" * max_len,
        "é" * (max_len // 2) + "x" * (max_len % 2),  # 2-byte characters up to the limit
        "\U0001f600" * (max_len // 4) + "x" * (max_len % 4),  # 4-byte characters
    ]


def text(max_len: int) -> st.SearchStrategy[str]:
    """A string of at most ``max_len`` UTF-8 bytes, sometimes exactly ``max_len``."""
    drawn = st.text(max_size=max_len).filter(lambda s: len(s.encode("utf-8")) <= max_len)
    return drawn | st.sampled_from(_text_edges(max_len))


def tensors(dtypes: Sequence[torch.dtype], shape: Sequence[int]) -> st.SearchStrategy[torch.Tensor]:
    """A tensor of one of ``dtypes`` with arbitrary bit patterns (NaNs included)."""
    return st.tuples(_choice(tuple(dtypes)), _SEEDS).map(lambda ds: _bits(ds[0], ds[1], shape))


_SEEDS = st.integers(0, 2**32 - 1)


@functools.cache
def _choice(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


def _bits(dtype: torch.dtype, seed: int, shape: Sequence[int]) -> torch.Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    n = math.prod(shape) * itemsize
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=gen)
    if dtype == torch.bool:
        raw = raw & 1
    return raw.view(dtype).reshape(tuple(shape))


def _draw_tensor(draw: st.DrawFn, r: Rule, d: Mapping[str, Any]) -> torch.Tensor:
    return _bits(draw(_choice(r.dtypes)), draw(_SEEDS), _shape_of(r, d))


def _shape_of(r: Rule, d: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(x if isinstance(x, int) else int(d[x]) for x in r.shape)


def value(r: Rule, d: Dims) -> st.SearchStrategy[Any]:
    """A legal present value of ``r`` (edges included); ``d`` holds the drawn dimensions."""
    if r.kind == "tensor":
        return tensors(r.dtypes, _shape_of(r, d))
    return _scalar(r)


@functools.cache
def _scalar(r: Rule) -> st.SearchStrategy[Any]:
    @st.composite
    def scalar(draw: st.DrawFn) -> Any:
        return _draw_scalar(draw, r)

    return scalar()


def _edges(r: Rule) -> tuple[Any, ...]:
    """The values at the edge of what the rule allows (each drawn as often as anything else)."""
    if r.kind == "int":
        return (int(r.lo or 0), int(r.hi or 0))
    if r.kind == "float":
        return tuple(_float_edges(r.lo, r.hi))
    if r.kind == "str":
        return tuple(_text_edges(r.max_len or 0))
    return ()


@functools.cache
def _free(r: Rule) -> st.SearchStrategy[Any]:
    if r.kind == "int":
        return st.integers(int(r.lo or 0), int(r.hi or 0))
    if r.kind == "float":
        return st.floats(r.lo, r.hi, allow_nan=False, allow_infinity=False)
    if r.kind == "bool":
        return st.booleans()
    if r.kind == "str":
        return st.text(max_size=r.max_len).filter(
            lambda s: len(s.encode("utf-8")) <= (r.max_len or 0)
        )
    return st.sampled_from(list(r.enum))


def _draw_scalar(draw: st.DrawFn, r: Rule) -> Any:
    # an explicit index, not one_of: hypothesis draws a branch of one_of far less evenly
    edges = _edges(r)
    if r.checks:
        edges = tuple(e for e in edges if r.passes(e))
    i = draw(_ints(0, len(edges) + 2)) if edges else len(edges)
    if i < len(edges):
        return edges[i]
    return draw(_free(r).filter(r.passes)) if r.checks else draw(_free(r))


def _draw_value(draw: st.DrawFn, r: Rule, d: Dims) -> Any:
    return _draw_tensor(draw, r, d) if r.kind == "tensor" else _draw_scalar(draw, r)


def _numel(shape: Sequence[int | str], d: Mapping[str, Any]) -> int:
    return math.prod(x if isinstance(x, int) else int(d[x]) for x in shape)


def tensor_limit(r: Rule, max_extra: int = 3) -> int:
    """The most elements a valid envelope's tensor of ``r`` has here."""
    cap = max(ELEMENT_CAP, (max_extra + 1) ** 4)
    return min(cap, r.max_elements) if r.max_elements is not None else cap


@functools.cache
def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


@st.composite
def dims(draw: st.DrawFn, rec: Record, max_extra: int) -> Dims:
    """Each dimension near its minimum or at one of its bounds, every tensor under its limit
    (:func:`tensor_limit`): the dimensions of an oversized tensor fall back to their minimum,
    the last ones and the ones not at their maximum first."""
    d: Dims = {}
    for name, (lo, hi) in rec.dims.items():
        i = draw(_ints(0, 5))  # at a bound one time in three
        d[name] = (lo, hi)[i] if i < 2 else draw(_ints(lo, min(hi, lo + max_extra)))
    for r in rec.rules:
        if r.kind != "tensor":
            continue
        syms = list(dict.fromkeys(x for x in reversed(r.shape) if isinstance(x, str)))
        # dims off their maximum give way first, so a dimension at its maximum survives
        for sym in sorted(syms, key=lambda s: d[s] == rec.dims[s][1]):
            if _numel(r.shape, d) <= tensor_limit(r, max_extra):
                break
            d[sym] = rec.dims[sym][0]
    return d


# --- presence and solving ----------------------------------------------------------------------


def _required(r: Rule, f: Fields, d: Dims) -> bool:
    return r.always or (r.required is not None and r.required.holds(f, d))


def _blocked(r: Rule, f: Fields, d: Dims) -> bool:
    """The field must be absent: forbidden, or its none_unless condition fails."""
    if r.forbidden is not None and r.forbidden.holds(f, d):
        return True
    return r.none_unless is not None and not r.none_unless.holds(f, d)


def bound_dims(rec: Record, f: Fields, d: Dims) -> Dims:
    """The dimensions as the validator sees them: bound only by present tensors."""
    present = [r for r in rec.rules if r.kind == "tensor" and f.get(r.name) is not None]
    return {name: (d[name] if any(name in r.shape for r in present) else None) for name in rec.dims}


def solve(f: Fields, d: Dims, solvers: Sequence[Solve], only: str | None = None) -> None:
    # twice: a solved field may feed the next equation (steps -> expected calls)
    for _ in range(2):
        for s in solvers:
            if (only is None or s.field == only) and f.get(s.field) is not None and s.ready(f, d):
                f[s.field] = s.value(f, d)


def settle(draw: st.DrawFn, rec: Record, f: Fields, d_all: Dims) -> Dims:
    """Presence from the rules (free fields by a coin flip), then solve, until stable."""
    d = bound_dims(rec, f, d_all)
    for r in rec.rules:
        if f.get(r.name) is None or _required(r, f, d):
            continue
        if _blocked(r, f, d) or not draw(st.booleans()):
            f[r.name] = None
    for _ in range(4):
        d = bound_dims(rec, f, d_all)
        solve(f, d, rec.solvers)
        dropped = [
            r
            for r in rec.rules
            if f.get(r.name) is not None and _blocked(r, f, d) and not _required(r, f, d)
        ]
        for r in dropped:
            f[r.name] = None
        if not dropped:
            break
    return bound_dims(rec, f, d_all)


# --- the reference verdict ---------------------------------------------------------------------


def _dense(v: object) -> bool:
    return isinstance(v, torch.Tensor) and v.layout is torch.strided


_SCALAR_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


def _scalar_code(r: Rule, v: Any) -> str | None:
    code = _builtin_scalar_code(r, v)
    if code is None:
        # a registered rule kind runs on a value of the right type within its range
        code = next((c for c, ok in r.checks if not ok(v)), None)
    return code


def _builtin_scalar_code(r: Rule, v: Any) -> str | None:
    t = type(v)
    if r.kind == "enum":
        return None if t is r.enum else "type"
    if t is not _SCALAR_TYPES[r.kind]:
        return "type"
    if r.kind == "int":
        return None if r.lo is not None and r.hi is not None and r.lo <= v <= r.hi else "range"
    if r.kind == "float":
        ok = math.isfinite(v) and (r.lo is None or v >= r.lo) and (r.hi is None or v <= r.hi)
        return None if ok else "range"
    if r.kind == "str":
        try:
            n = len(v.encode("utf-8"))
        except UnicodeEncodeError:
            return "range"
        return None if n <= (r.max_len or 0) else "range"
    return None


def _shape_fits(
    t: torch.Tensor, r: Rule, rec: Record, dims: dict[str, int]
) -> dict[str, int] | None:
    """The dimensions ``t`` binds, or None when its shape breaks the rule."""
    shape = tuple(t.shape)
    if len(shape) != len(r.shape):
        return None
    new: dict[str, int] = {}
    for n, p in zip(shape, r.shape, strict=True):
        if isinstance(p, int):
            if n != p:
                return None
            continue
        lo, hi = rec.dims[p]
        seen = dims.get(p, new.get(p))
        if not lo <= n <= hi or (seen is not None and seen != n):
            return None
        new[p] = n
    if r.max_elements is not None and math.prod(shape) > r.max_elements:
        return None
    return new


def _own_codes(r: Rule, v: Any, rec: Record, bound: dict[str, int]) -> list[str]:
    """The codes of a present value's own rules (type, range, dtype, shape); a well-formed
    tensor binds its dimensions into ``bound``."""
    if r.kind != "tensor":
        code = _scalar_code(r, v)
        return [code] if code is not None else []
    if not _dense(v):
        return ["type"]
    codes = ["dtype"] if v.dtype not in r.dtypes else []
    new = _shape_fits(v, r, rec, bound)
    if new is None:
        codes.append("shape")
    elif not codes:
        bound.update(new)
    return codes


def check_record(rec: Record, f: Fields, member: Any, prefix: str = "") -> set[tuple[str, str]]:
    """The violations of one record's own rules (header or message), as the spec defines them.

    Each field's type, range, dtype and shape come first (tensors bind dimensions in field
    order); then presence, derived fields and invariants, skipping any rule that reads a
    field which already broke its own rule (or an always-required field that is None).
    """
    found: set[tuple[str, str]] = set()
    bad: set[str] = set()
    bound: dict[str, int] = {}
    for r in rec.rules:
        v = f.get(r.name)
        if v is None:
            if r.always:
                bad.add(r.name)
            continue
        codes = _own_codes(r, v, rec, bound)
        if codes:
            bad.add(r.name)
            found.update((c, prefix + r.name) for c in codes)
    disc = rec.discriminator
    if disc is not None and member is not None and disc not in bad and f.get(disc) != member:
        bad.add(disc)  # rules do not read a plan the class denies
        found.add(("type", prefix + disc))
    vf = rec.version_field
    if vf is not None and f.get(vf) is not None and vf not in bad and f[vf] != rec.version:
        found.add(("version", prefix + vf))
    d: Dims = {name: bound.get(name) for name in rec.dims}

    def ok(e: Expr) -> bool:
        return bad.isdisjoint(e.refs)

    for r in rec.rules:
        v = f.get(r.name)
        label = prefix + r.name
        if v is None:
            if r.always or (r.required is not None and ok(r.required) and r.required.holds(f, d)):
                found.add(("missing", label))
            continue
        if r.forbidden is not None and ok(r.forbidden) and r.forbidden.holds(f, d):
            found.add(("forbidden", label))
        if r.none_unless is not None and ok(r.none_unless) and not r.none_unless.holds(f, d):
            found.add(("must_be_none", label))
        e = r.derived
        if e is not None and r.name not in bad and ok(e) and e.guard(f, d) and v != e.fn(f, d):
            found.add(("invariant", label))
    for inv in rec.invariants:
        e = inv.expr
        if ok(e) and e.guard(f, d) and not e.fn(f, d):
            found.add(("invariant", prefix + ", ".join(e.refs)))
    return found


def verdict(
    proto: Protocol, hf: Fields, f: Fields | None, rec: Record | None, variant: Variant | None
) -> Found:
    """Every (code, field) the spec's rules say ``validate`` must report for this envelope
    (header fields ``hf``; message fields ``f`` of ``variant``, or None for no message)."""
    found = check_record(proto.header, hf, None, "header.")
    if f is not None and rec is not None and variant is not None:
        found |= check_record(rec, f, variant.member, "")
    action = hf.get(proto.action_field)
    if type(action) is proto.action_enum:
        carried = proto.action(action).variants
        cls = variant.cls if f is not None and variant is not None else None
        if (cls is None) != (not carried) or (
            cls is not None and cls not in {v.cls for v in carried}
        ):
            found.add(("invariant", f"header.{proto.action_field}"))
    return frozenset(found)


# --- valid envelopes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Drawn:
    """A valid envelope and what it was drawn from (mutants start here)."""

    header: Any
    hf: Fields
    hfull: Fields  # every header field's drawn value, before presence
    msg: Any = None
    record: Record | None = None
    variant: Variant | None = None
    f: Fields = dataclasses.field(default_factory=dict)
    full: Fields = dataclasses.field(default_factory=dict)  # before presence and variant
    d: Dims = dataclasses.field(default_factory=dict)  # every drawn dimension


@st.composite
def _header_fields(draw: st.DrawFn, proto: Protocol, action: Any) -> tuple[Fields, Fields]:
    rec = proto.header
    full: Fields = {
        r.name: action if r.name == proto.action_field else _draw_value(draw, r, {})
        for r in rec.rules
    }
    f = dict(full)
    settle(draw, rec, f, {})
    assume(not check_record(rec, f, None))
    return f, full


def valid_headers(proto: Protocol, action: Any) -> st.SearchStrategy[Any]:
    """A header that follows every header rule for ``action``."""
    return _header_fields(proto, action).map(lambda ff: proto.header_cls(**ff[0]))


@st.composite
def _drawn_message(draw: st.DrawFn, proto: Protocol, class_name: str, max_extra: int) -> Drawn:
    act, variant = proto.variant(class_name)
    rec = act.record
    assert rec is not None
    hf, hfull = draw(_header_fields(proto, act.member))
    d_all = draw(dims(rec, max_extra))
    full: Fields = {}
    for r in rec.rules:
        if r.name == rec.discriminator:
            full[r.name] = variant.member
        elif r.name == rec.version_field:
            full[r.name] = rec.version
        else:
            full[r.name] = _draw_value(draw, r, d_all)
    f = {name: None if name in variant.absent else v for name, v in full.items()}
    settle(draw, rec, f, d_all)
    assume(not verdict(proto, hf, f, rec, variant))
    header = proto.header_cls(**hf)
    return Drawn(header, hf, hfull, variant.cls(**f), rec, variant, f, full, d_all)


@st.composite
def _drawn_payload_free(draw: st.DrawFn, proto: Protocol, members: Sequence[Any]) -> Drawn:
    hf, hfull = draw(_header_fields(proto, draw(st.sampled_from(members))))
    assume(not verdict(proto, hf, None, None, None))
    return Drawn(proto.header_cls(**hf), hf, hfull)


def envelope_kinds(proto: Protocol) -> tuple[str, ...]:
    """One kind per message class, one per payload-free action."""
    classes = [v.cls.__name__ for a in proto.actions for v in a.variants]
    return (*classes, *(a.member.name for a in proto.actions if a.record is None))


def drawn(
    proto: Protocol, max_extra: int = 3, kinds: Iterable[str] | None = None
) -> st.SearchStrategy[Drawn]:
    """Valid envelopes of every kind (or of ``kinds``), each kind as likely as any other;
    the payload-free actions count as one kind."""
    wanted = set(envelope_kinds(proto) if kinds is None else kinds)
    unknown = wanted - set(envelope_kinds(proto))
    if unknown:
        raise ValueError(f"unknown envelope kinds {sorted(unknown)}")
    parts: list[st.SearchStrategy[Drawn]] = [
        _drawn_message(proto, v.cls.__name__, max_extra)
        for a in proto.actions
        for v in a.variants
        if v.cls.__name__ in wanted
    ]
    free = [a.member for a in proto.actions if a.record is None and a.member.name in wanted]
    if free:
        parts.append(_drawn_payload_free(proto, free))
    return st.one_of(parts)


def valid_envelopes(
    proto: Protocol, max_extra: int = 3, kinds: Iterable[str] | None = None
) -> st.SearchStrategy[tuple[Any, Any]]:
    return drawn(proto, max_extra, kinds).map(lambda dr: (dr.header, dr.msg))


def type_strategy(proto: Protocol, cls: type) -> st.SearchStrategy[Any]:
    """What ``st.from_type(cls)`` draws for a class of the protocol: valid messages of a
    message class, valid headers (of any action) for the header class."""
    if cls is proto.header_cls:
        return valid_envelopes(proto).map(lambda e: e[0])
    if not any(v.cls is cls for a in proto.actions for v in a.variants):
        raise ValueError(f"{cls!r} is not a class of {proto!r}")
    return valid_envelopes(proto, kinds=[cls.__name__]).map(lambda e: e[1])


def register_types(proto: Protocol) -> None:
    """Make ``st.from_type`` draw valid values of the protocol's classes
    (:func:`type_strategy`). The generated ``*_strategies`` modules call it on import."""
    for action in proto.actions:
        for v in action.variants:
            st.register_type_strategy(v.cls, type_strategy(proto, v.cls))
    st.register_type_strategy(proto.header_cls, type_strategy(proto, proto.header_cls))


# --- mutants -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """A valid envelope with one named rule broken (:data:`MUTANT_KINDS`)."""

    header: Any
    msg: Any
    codes: frozenset[str]  # the violation codes ``validate`` must report, no more, no fewer
    violations: Found  # ... and the (code, field) pairs
    kind: str
    field: str  # the field the mutation changed ("header.<name>" for header fields)


@dataclass(frozen=True)
class PlainMutant:
    """A valid envelope's plain form (:func:`tpwire.runtime.plain.to_plain`) with one key
    added or left out; ``from_plain`` must report exactly ``violations``."""

    data: dict[str, Any]
    codes: frozenset[str]
    violations: Found
    kind: str
    field: str


@dataclass(frozen=True)
class _Candidate:
    kind: str
    target: str  # header | message | drop (the message)
    name: str
    make: Callable[[], Any]
    #: the violation it must cause (None: any field with the kind's code)
    field: str | None = None
    #: no other violation allowed (else the fewest other violations are preferred)
    exact: bool = False


def _just(x: Any) -> Callable[[], Any]:
    return lambda: x


def _blank_later(shape: Sequence[int], dtype: torch.dtype) -> Callable[[], Any]:
    return lambda: _blank(shape, dtype)


def _other_dtypes(allowed: Sequence[torch.dtype]) -> list[torch.dtype]:
    return [w.torch_dtype for w in WIRE_DTYPES if w.torch_dtype not in allowed]


def _blank(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor | None:
    """A tensor of ``shape`` (zeros when small, unfilled when large), None when too large."""
    n = math.prod(shape)
    if n * torch.empty((), dtype=dtype).element_size() > MUTANT_BYTES_CAP:
        return None
    return (
        torch.zeros(tuple(shape), dtype=dtype)
        if n <= ELEMENT_CAP
        else torch.empty(tuple(shape), dtype=dtype)
    )


def oversize_shape(
    r: Rule, rec: Record, current: Mapping[str, Any], free: Iterable[str]
) -> tuple[int, ...] | None:
    """A shape of ``r`` with every dimension in bounds and more than ``max_elements``
    elements, changing only the ``free`` symbols (smallest such; None when there is none)."""
    if r.max_elements is None:
        return None
    d = {s: int(current[s]) for s in r.shape if isinstance(s, str)}
    for sym in [s for s in dict.fromkeys(r.shape) if isinstance(s, str) and s in set(free)]:
        lo, hi = rec.dims[sym]
        d[sym] = hi
        if _numel(r.shape, d) > r.max_elements:
            while lo < hi:  # the smallest value of sym that still overflows
                mid = (lo + hi) // 2
                d[sym] = mid
                if _numel(r.shape, d) > r.max_elements:
                    hi = mid
                else:
                    lo = mid + 1
            d[sym] = lo
            return _shape_of(r, d)
    return None


def _tensor_candidates(
    r: Rule, v: torch.Tensor, rec: Record, f: Fields, d: Dims, target: str, label: str
) -> list[_Candidate]:
    out: list[_Candidate] = []
    shape = tuple(v.shape)

    def add(kind: str, new_shape: Sequence[int], dtype: torch.dtype = v.dtype) -> None:
        out.append(_Candidate(kind, target, r.name, _blank_later(new_shape, dtype), label))

    for dt in _other_dtypes(r.dtypes):
        add("wrong_dtype", shape, dt)
    add("wrong_rank", (*shape, 1))
    if shape:
        add("wrong_rank", shape[:-1])
    for i, p in enumerate(r.shape):
        lo, hi = (p, p) if isinstance(p, int) else rec.dims[p]
        for n in (lo - 1, hi + 1):
            if n >= 0:
                add("dim_out_of_bounds", (*shape[:i], n, *shape[i + 1 :]))
    present = [q for q in rec.rules if q.kind == "tensor" and f.get(q.name) is not None]
    others = {s for q in present if q is not r for s in q.shape if isinstance(s, str)}
    for sym in dict.fromkeys(s for s in r.shape if isinstance(s, str)):
        binders = [q.name for q in present if sym in q.shape]
        lo, hi = rec.dims[sym]
        if len(binders) > 1 and binders[-1] == r.name and lo < hi:
            n = d[sym] + 1 if d[sym] < hi else d[sym] - 1
            add(
                "dim_mismatch",
                tuple(n if p == sym else x for p, x in zip(r.shape, shape, strict=True)),
            )
    big = oversize_shape(r, rec, d, [s for s in r.shape if isinstance(s, str) and s not in others])
    if big is not None:
        add("too_many_elements", big)
    return out


def _wrong_types(r: Rule) -> list[Any]:
    if r.kind == "tensor":
        return [[1, 2, 3], torch.zeros(2).to_sparse()]
    if r.kind == "enum":
        return ["?", int(next(iter(r.enum)))]
    return {
        "int": ["1", True],
        "float": ["1.0", 1],
        "bool": [1, "true"],
        "str": [1, b"x"],
    }[r.kind]


def _operand_candidates(r: Rule, v: Any, target: str) -> list[_Candidate]:
    """One operand of an invariant or derived field moved by the smallest step."""
    if type(v) is bool:
        return [_Candidate("invariant_flip", target, r.name, lambda: not v)]
    up: Any
    down: Any
    if type(v) is int:
        up, down = v + 1, v - 1
    elif type(v) is float:
        up, down = math.nextafter(v, math.inf), math.nextafter(v, -math.inf)
    else:
        return []
    return [
        _Candidate("invariant_above", target, r.name, lambda: up),
        _Candidate("invariant_below", target, r.name, lambda: down),
    ]


def _record_candidates(
    rec: Record, f: Fields, full: Fields, d_all: Dims, target: str, prefix: str
) -> list[_Candidate]:
    out: list[_Candidate] = []
    d = bound_dims(rec, f, d_all)
    for r in rec.rules:
        v = f.get(r.name)
        label = prefix + r.name
        if v is None:
            w = full.get(r.name)
            if w is None:
                continue

            def present(w: Any = w, name: str = r.name) -> Any:
                g = {**f, name: w}
                solve(g, bound_dims(rec, g, d_all), rec.solvers, only=name)
                return g[name]

            if r.forbidden is not None and r.forbidden.holds(f, d):
                out.append(_Candidate("forbidden_present", target, r.name, present, label))
            if r.none_unless is not None and not r.none_unless.holds(f, d):
                out.append(_Candidate("must_be_none_present", target, r.name, present, label))
            continue
        if _required(r, f, d):
            out.append(_Candidate("none_where_required", target, r.name, _just(None), label))
        for w in _wrong_types(r):
            out.append(_Candidate("wrong_type", target, r.name, _just(w), label))
        if r.name == rec.discriminator:
            for m in r.enum:
                if m != v:
                    out.append(_Candidate("wrong_member", target, r.name, _just(m), label, True))
        if r.name == rec.version_field:
            for kind, n in (("version_above", rec.version + 1), ("version_below", rec.version - 1)):
                out.append(_Candidate(kind, target, r.name, _just(n), label))
        if r.kind == "tensor":
            out += _tensor_candidates(r, v, rec, f, d_all, target, label)
        else:
            out += _bound_candidates(r, target, label)
    return out + _invariant_candidates(rec, f, target)


def _bound_candidates(r: Rule, target: str, label: str) -> list[_Candidate]:
    """A scalar just past its range or length, or not finite, or not encodable."""
    out: list[_Candidate] = []
    if r.kind == "int":
        lo, hi = int(r.lo or 0), int(r.hi or 0)
        out.append(_Candidate("range_below", target, r.name, _just(lo - 1), label))
        out.append(_Candidate("range_above", target, r.name, _just(hi + 1), label))
    elif r.kind == "float":
        if r.lo is not None:
            below = math.nextafter(float(r.lo), -math.inf)
            out.append(_Candidate("range_below", target, r.name, _just(below), label))
        if r.hi is not None:
            above = math.nextafter(float(r.hi), math.inf)
            out.append(_Candidate("range_above", target, r.name, _just(above), label))
        for x in (math.nan, math.inf, -math.inf):
            out.append(_Candidate("not_finite", target, r.name, _just(x), label))
    elif r.kind == "str":
        n = r.max_len or 0
        out.append(_Candidate("range_above", target, r.name, _just("x" * (n + 1)), label))
        utf8 = "x" * (n - 1) + "é"
        out.append(_Candidate("too_long_utf8", target, r.name, _just(utf8), label))
        out.append(_Candidate("unencodable", target, r.name, _just("\ud800"), label))
    return out


def _invariant_candidates(rec: Record, f: Fields, target: str) -> list[_Candidate]:
    """Each present operand of an invariant or derived field nudged (a scalar by one or one
    ulp, a bool negated, a tensor one row longer or shorter)."""
    out: list[_Candidate] = []
    operands: dict[str, None] = {}
    for e in [i.expr for i in rec.invariants] + [r.derived for r in rec.rules if r.derived]:
        operands.update(dict.fromkeys(e.refs))
    for r in rec.rules:
        if r.derived is not None:
            operands[r.name] = None
    for name in operands:
        r = rec.rule(name)
        v = f.get(name)
        if v is None:
            continue
        if r.kind != "tensor":
            out += _operand_candidates(r, v, target)
            continue
        # a tensor operand one longer or shorter (len(x) is its first dimension)
        first = r.shape[0] if r.shape else None
        if (
            isinstance(first, str)
            and sum(first in q.shape for q in rec.rules if f.get(q.name) is not None) == 1
        ):
            lo, hi = rec.dims[first]
            for kind, n in (
                ("invariant_above", v.shape[0] + 1),
                ("invariant_below", v.shape[0] - 1),
            ):
                if lo <= n <= hi and r.shape.count(first) == 1:
                    shape, dtype = (n, *v.shape[1:]), v.dtype
                    out.append(_Candidate(kind, target, name, _blank_later(shape, dtype)))
    return out


def _candidates(proto: Protocol, dr: Drawn) -> list[_Candidate]:
    out = _record_candidates(proto.header, dr.hf, dr.hfull, {}, "header", "header.")
    action = dr.hf[proto.action_field]
    label = f"header.{proto.action_field}"
    for a in proto.actions:
        if a.member is not action:
            out.append(
                _Candidate("action_mismatch", "header", proto.action_field, _just(a.member), label)
            )
    if dr.record is not None:
        out.append(_Candidate("action_mismatch", "drop", "", _just(None), label))
        out += _record_candidates(dr.record, dr.f, dr.full, dr.d, "message", "")
    return out


def _apply(proto: Protocol, dr: Drawn, c: _Candidate) -> tuple[Any, Any, Found]:
    hf, f, header, msg = dr.hf, dr.f, dr.header, dr.msg
    new = c.make()
    if c.target == "header":
        hf = {**hf, c.name: new}
        header = dataclasses.replace(header, **{c.name: new})
    elif c.target == "message":
        f = {**f, c.name: new}
        msg = dataclasses.replace(msg, **{c.name: new})
    else:
        msg = None
    fields = f if msg is not None else None
    return header, msg, verdict(proto, hf, fields, dr.record, dr.variant)


def record_kinds(rec: Record, absent: Iterable[str] = ()) -> set[str]:
    """The mutant kinds a record's declarations allow (whether a drawn envelope offers one
    also depends on its values: a ``forbidden_when`` that holds, a field left out, ...)."""
    gone = set(absent)
    rules = [r for r in rec.rules if r.name not in gone]
    kinds = {k for k, present in _RECORD_KINDS if any(present(r, rec) for r in rules)}
    if any(r.forbidden is not None for r in rec.rules):
        kinds.add("forbidden_present")
    if any(r.none_unless is not None for r in rec.rules):
        kinds.add("must_be_none_present")
    if rec.discriminator is not None and len(rec.rule(rec.discriminator).enum) > 1:
        kinds.add("wrong_member")
    if rec.version_field is not None:
        kinds |= {"version_above", "version_below"}
    symbols = [s for r in rules if r.kind == "tensor" for s in set(r.shape) if isinstance(s, str)]
    if any(symbols.count(s) > 1 and rec.dims[s][0] < rec.dims[s][1] for s in symbols):
        kinds.add("dim_mismatch")
    operands = {n for i in rec.invariants for n in i.expr.refs}
    operands |= {n for r in rec.rules if r.derived is not None for n in (r.name, *r.derived.refs)}
    for r in rules:
        if r.name not in operands:
            continue
        if r.kind == "bool":
            kinds.add("invariant_flip")
        elif r.kind in ("int", "float") or (
            r.kind == "tensor" and r.shape and isinstance(r.shape[0], str)
        ):
            kinds |= {"invariant_above", "invariant_below"}
    return kinds


_RECORD_KINDS: tuple[tuple[str, Callable[[Rule, Record], bool]], ...] = (
    ("none_where_required", lambda r, rec: r.always or r.required is not None),
    ("wrong_type", lambda r, rec: True),
    ("range_below", lambda r, rec: r.kind == "int" or (r.kind == "float" and r.lo is not None)),
    (
        "range_above",
        lambda r, rec: r.kind in ("int", "str") or (r.kind == "float" and r.hi is not None),
    ),
    ("not_finite", lambda r, rec: r.kind == "float"),
    ("too_long_utf8", lambda r, rec: r.kind == "str"),
    ("unencodable", lambda r, rec: r.kind == "str"),
    ("wrong_dtype", lambda r, rec: r.kind == "tensor" and bool(_other_dtypes(r.dtypes))),
    ("wrong_rank", lambda r, rec: r.kind == "tensor"),
    ("dim_out_of_bounds", lambda r, rec: r.kind == "tensor" and bool(r.shape)),
    (
        "too_many_elements",
        lambda r, rec: (
            r.kind == "tensor"
            and oversize_shape(r, rec, {s: lo for s, (lo, _) in rec.dims.items()}, rec.dims)
            is not None
        ),
    ),
)


def envelope_mutant_kinds(proto: Protocol) -> dict[str, set[str]]:
    """For each envelope kind, the mutant kinds its declarations allow."""
    header = record_kinds(proto.header) | ({"action_mismatch"} if len(proto.actions) > 1 else set())
    out: dict[str, set[str]] = {}
    for a in proto.actions:
        if a.record is None:
            out[a.member.name] = set(header)
        for v in a.variants:
            assert a.record is not None
            out[v.cls.__name__] = header | {"action_mismatch"} | record_kinds(a.record, v.absent)
    return out


@st.composite
def _mutant(
    draw: st.DrawFn, proto: Protocol, sources: Mapping[str, st.SearchStrategy[Drawn]]
) -> Mutant:
    # the mutant kind first (every kind as likely as any other), then an envelope that may carry it
    kind = draw(st.sampled_from(sorted(sources)))
    dr = draw(sources[kind])
    code = MUTANT_KINDS[kind]
    scored: list[tuple[int, _Candidate, Any, Any, Found]] = []
    for c in _candidates(proto, dr):
        if c.kind != kind:
            continue
        header, msg, found = _apply(proto, dr, c)
        if not any(k == code and (c.field is None or fld == c.field) for k, fld in found):
            continue  # not a violation here (a value that happens to be legal)
        rank = 0 if len(found) == 1 else 1 if {k for k, _ in found} == {code} else 2
        if c.exact and rank:
            continue
        scored.append((rank, c, header, msg, found))
    assume(scored)
    best = min(s[0] for s in scored)
    rank, c, header, msg, found = draw(st.sampled_from([s for s in scored if s[0] == best]))
    field = c.field or next(fld for k, fld in sorted(found) if k == code)
    return Mutant(header, msg, frozenset(k for k, _ in found), found, kind, field)


def mutants(
    proto: Protocol,
    max_extra: int = 3,
    kinds: Iterable[str] | None = None,
    mutant_kinds: Iterable[str] | None = None,
) -> st.SearchStrategy[Mutant]:
    """Labelled mutants of valid envelopes of every kind (or of ``kinds``), of every mutant
    kind the spec allows (or of ``mutant_kinds``), each mutant kind as likely as any other."""
    allowed = envelope_mutant_kinds(proto)
    envelope = set(allowed if kinds is None else kinds)
    wanted = set(MUTANT_KINDS if mutant_kinds is None else mutant_kinds)
    sources = {
        k: drawn(proto, max_extra, sorted(e for e in envelope if k in allowed[e]))
        for k in sorted(wanted)
        if any(k in allowed[e] for e in envelope if e in allowed)
    }
    if not sources:
        raise ValueError("no mutant of these kinds for these envelopes")
    return _mutant(proto, sources)


def _unknown_keys(names: Sequence[str]) -> list[str]:
    taken = set(names)
    out = [n + "s" for n in names[:1]] + [n[:-1] for n in names[-1:]] + ["x_unknown"]
    return [k for k in dict.fromkeys(out) if k and k not in taken]


@st.composite
def _plain_mutant(
    draw: st.DrawFn, proto: Protocol, source: st.SearchStrategy[Drawn]
) -> PlainMutant:
    dr = draw(source)
    data = to_plain(dr.header, dr.msg)
    options: list[tuple[str, str, str]] = [("unknown_field", "", "x_unknown")]
    names = [r.name for r in proto.header.rules]
    options += [("unknown_field", "header", k) for k in _unknown_keys(names)]
    # leaving out a key means None (or the class default): only a change when it held a value
    options += [("missing_key", "header", n) for n in names if dr.hf.get(n) is not None]
    if dr.record is not None and dr.variant is not None:
        names = [r.name for r in dr.record.rules]
        computed = {r.name for r in dr.record.rules if r.derived is not None}
        options += [("unknown_field", "fields", k) for k in _unknown_keys(names)]
        # a derived field left out is computed from the others, not missing
        options += [
            ("missing_key", "fields", n)
            for n in names
            if n != dr.record.discriminator
            and n not in computed
            and (dr.f.get(n) is not None or n in dr.variant.explicit)
        ]
    else:
        options.append(("unknown_field", "fields", "x_unknown"))  # fields without a message
    kind = draw(st.sampled_from(sorted({o[0] for o in options})))
    _, section, key = draw(st.sampled_from([o for o in options if o[0] == kind]))
    prefix = "header." if section == "header" else ""
    if kind == "unknown_field":
        if section:
            data = {**data, section: {**(data[section] or {}), key: 0}}
        else:
            data = {**data, key: 0}  # a key next to header, message and fields
        found: Found = frozenset({("unknown_field", prefix + key)})
    else:
        data = {**data, section: {k: v for k, v in data[section].items() if k != key}}
        hf, f = dr.hf, dr.f
        if section == "header":
            hf = {**hf, key: None}
        else:
            f = {**f, key: None}
        found = verdict(proto, hf, f if dr.record is not None else None, dr.record, dr.variant)
        if section == "fields" and dr.variant is not None and key in dr.variant.explicit:
            found |= {("missing", key)}  # T | None: the key must be given, even as null
        assume(found)
    return PlainMutant(data, frozenset(k for k, _ in found), found, kind, prefix + key)


def plain_mutants(proto: Protocol, max_extra: int = 3) -> st.SearchStrategy[PlainMutant]:
    """Mutants only the plain form can carry: an unknown key, a key left out."""
    return _plain_mutant(proto, drawn(proto, max_extra))
