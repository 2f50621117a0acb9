"""Breaking rules of the "tensors" group: dtypes, rank, the sizes each shape position
admits, dimension bounds, which positions must be equal, and the element bound
(docs/evolution.md, "Rule catalogue"). Shapes are read off the fields' constraint records
(``codegen/constraints.py``: each position a literal size or a named dimension with its
bounds)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .breaking_pairs import DimPair, FieldPair, MessagePair, rule
from .constraints import DimBound


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}..{hi}"


# --- one tensor field --------------------------------------------------------------------


@rule("TENSOR_DTYPES_NARROWED", "tightening", "tensors", "dtypes removed")
def tensor_dtypes_narrowed(p: FieldPair) -> None:
    gone = [d for d in p.oc.dtypes if d not in p.nc.dtypes] if p.tensors else []
    if gone:
        text = f"{p.subject} dtypes lose {', '.join(gone)}"
        p.emit("TENSOR_DTYPES_NARROWED", text, ("dtypes",))


@rule("TENSOR_DTYPES_WIDENED", "loosening", "tensors", "dtypes added")
def tensor_dtypes_widened(p: FieldPair) -> None:
    new = [d for d in p.nc.dtypes if d not in p.oc.dtypes] if p.tensors else []
    if new:
        p.emit("TENSOR_DTYPES_WIDENED", f"{p.subject} dtypes gain {', '.join(new)}", ("dtypes",))


@rule("TENSOR_RANK_CHANGED", "both", "tensors", "a tensor's rank changed")
def tensor_rank_changed(p: FieldPair) -> None:
    a, b = p.oc, p.nc
    if p.tensors and len(a.shape) != len(b.shape):
        p.emit(
            "TENSOR_RANK_CHANGED",
            f"{p.subject} shape {a.shape_text} -> {b.shape_text} (rank {len(a.shape)} -> "
            f"{len(b.shape)})",
            ("shape",),
        )


def _positions(p: FieldPair) -> Iterator[tuple[DimBound, DimBound, str]]:
    """Each shape position of two tensors of one rank, old and new, with its text; a
    position naming one dimension on both sides is that dimension's (``DIM_RANGE_*``)."""
    if not p.tensors or len(p.oc.shape) != len(p.nc.shape):
        return
    for a, b in zip(p.oc.shape, p.nc.shape, strict=True):
        if a.symbol is not None and a.symbol == b.symbol:
            continue
        span_a, span_b = _span(a.lo, a.hi), _span(b.lo, b.hi)
        yield a, b, f"{p.subject} shape[{a.index}] {a.text} ({span_a}) -> {b.text} ({span_b})"


@rule("TENSOR_DIM_NARROWED", "tightening", "tensors", "a shape position admits fewer sizes")
def tensor_dim_narrowed(p: FieldPair) -> None:
    for a, b, text in _positions(p):
        if b.lo > a.lo or b.hi < a.hi:
            p.emit("TENSOR_DIM_NARROWED", text, ("shape", a.index))


@rule("TENSOR_DIM_WIDENED", "loosening", "tensors", "a shape position admits more sizes")
def tensor_dim_widened(p: FieldPair) -> None:
    for a, b, text in _positions(p):
        if b.lo < a.lo or b.hi > a.hi:
            p.emit("TENSOR_DIM_WIDENED", text, ("shape", a.index))


# --- dimensions and the bindings between positions ---------------------------------------


def _dim_text(p: DimPair) -> str:
    o, n = p.old, p.new
    return f"{p.message.new.name} dimension {n.name} {_span(o.min, o.max)} -> {_span(n.min, n.max)}"


def _emit_dim(p: DimPair, rule_id: str) -> None:
    m = p.message
    m.emit(rule_id, _dim_text(p), (*m.new.path, "dims", p.new.name), f"{m.new.name}.{p.new.name}")


@rule("DIM_RANGE_NARROWED", "tightening", "tensors", "a dimension symbol's bounds narrowed")
def dim_range_narrowed(p: DimPair) -> None:
    if p.new.min > p.old.min or p.new.max < p.old.max:
        _emit_dim(p, "DIM_RANGE_NARROWED")


@rule("DIM_RANGE_WIDENED", "loosening", "tensors", "a dimension symbol's bounds widened")
def dim_range_widened(p: DimPair) -> None:
    if p.new.min < p.old.min or p.new.max > p.old.max:
        _emit_dim(p, "DIM_RANGE_WIDENED")


@dataclass(frozen=True)
class _Position:
    """One shape position of a tensor field both messages have, with the same rank."""

    field: FieldPair
    old: DimBound
    new: DimBound

    @property
    def label(self) -> str:
        return f"{self.field.new.name}[{self.new.index}]"


def _all_positions(m: MessagePair) -> list[_Position]:
    """Every such position, in the new message's field order."""
    pairs = [f for f in m.fields if isinstance(f, FieldPair) and f.oc.kind == f.nc.kind == "tensor"]
    order = {f.name: i for i, f in enumerate(m.new.fields)}
    pairs.sort(key=lambda f: order[f.new.name])
    return [
        _Position(f, a, b)
        for f in pairs
        if len(f.oc.shape) == len(f.nc.shape)
        for a, b in zip(f.oc.shape, f.nc.shape, strict=True)
    ]


def _tied(x: DimBound, y: DimBound) -> bool:
    """Two positions must hold the same size: one dimension, or one fixed size."""
    if x.symbol is not None and x.symbol == y.symbol:
        return True
    return x.lo == x.hi and y.lo == y.hi and x.lo == y.lo


def _new_ties(m: MessagePair, rule_id: str, verb: str, *, added: bool) -> None:
    """Positions tied on one side (the new one when ``added``) and not on the other, where
    the tying side names a dimension there; each pair once, at the later position."""
    positions = m.once(_all_positions)
    seen: set[str] = set()
    for i, p in enumerate(positions):
        for q in positions[i + 1 :]:
            now = (p.new, q.new) if added else (p.old, q.old)
            before = (p.old, q.old) if added else (p.new, q.new)
            if not _tied(*now) or _tied(*before) or now[0].symbol is None:
                continue
            label = f"{p.label} and {q.label}"
            if label in seen:
                continue
            seen.add(label)
            shapes = f"{p.field.nc.shape_text}, {q.field.nc.shape_text}"
            m.emit(
                rule_id,
                f"{m.new.name} sizes {label} {verb} (shape {shapes})",
                (*q.field.new.path, "shape", q.new.index),
                f"{m.new.name}.{q.field.new.name}",
                key=False,
            )


@rule("TENSOR_DIM_BINDING_ADDED", "tightening", "tensors", "two sizes must now be equal")
def tensor_dim_binding_added(p: MessagePair) -> None:
    _new_ties(p, "TENSOR_DIM_BINDING_ADDED", "must now be equal", added=True)


@rule("TENSOR_DIM_BINDING_REMOVED", "loosening", "tensors", "two sizes need no longer be equal")
def tensor_dim_binding_removed(p: MessagePair) -> None:
    _new_ties(p, "TENSOR_DIM_BINDING_REMOVED", "need no longer be equal", added=False)


# --- the element bound -------------------------------------------------------------------


def _element_bounds(p: FieldPair) -> tuple[int, int] | None:
    """The most elements old and new tensors hold, where ``max_elements`` changed them."""
    a, b = p.oc, p.nc
    if not p.tensors or a.spec_max_elements == b.spec_max_elements:
        return None
    if a.max_elements is None or b.max_elements is None or a.max_elements == b.max_elements:
        return None
    return a.max_elements, b.max_elements


def _emit_elements(p: FieldPair, rule_id: str, bounds: tuple[int, int]) -> None:
    a, b = p.oc.spec_max_elements, p.nc.spec_max_elements
    p.emit(
        rule_id,
        f"{p.subject} max_elements {a or 'unset'} -> {b or 'unset'} (element bound "
        f"{bounds[0]} -> {bounds[1]})",
        ("max_elements",),
    )


@rule("TENSOR_MAX_ELEMENTS_NARROWED", "tightening", "tensors", "element bound lowered")
def tensor_max_elements_narrowed(p: FieldPair) -> None:
    bounds = _element_bounds(p)
    if bounds is not None and bounds[1] < bounds[0]:
        _emit_elements(p, "TENSOR_MAX_ELEMENTS_NARROWED", bounds)


@rule("TENSOR_MAX_ELEMENTS_WIDENED", "loosening", "tensors", "element bound raised")
def tensor_max_elements_widened(p: FieldPair) -> None:
    bounds = _element_bounds(p)
    if bounds is not None and bounds[1] > bounds[0]:
        _emit_elements(p, "TENSOR_MAX_ELEMENTS_WIDENED", bounds)
