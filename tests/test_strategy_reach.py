"""The generated strategies reach every branch of every spec in a bounded number of draws.

The targets come from the compiled IR, not from a list here, so they follow the specs:
every message class and payload-free action; every optional field both present and absent;
every bool both ways; every enum member; every allowed dtype of every tensor; both bounds
of every drawn int/float range (solved and derived fields excepted: they follow their
operands) and of every dimension (where a tensor at that bound stays under the strategies'
element cap); strings of zero and of max_len UTF-8 bytes; and every mutant kind the spec's
rules allow, with its violation code.

Each spec gets one derandomized sampling pass; a target the pass missed is then searched
for on its own (same strategies, restricted to the envelope or mutant kind that holds it).
"""

from __future__ import annotations

import ast
import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from specs import corpus

from tpwire.codegen import expr
from tpwire.codegen.ir import FieldIR, MessageIR, ProtocolIR, VariantIR
from tpwire.runtime.dtypes import DTYPE_TABLE
from tpwire.testing import strategies as _s

Target = tuple[object, ...]

SAMPLE = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
ALL_DTYPES = {name for name, _, _ in DTYPE_TABLE}
ITEMSIZE = {name: size for name, _, size in DTYPE_TABLE}


def _literal(text: str | None) -> Any:
    return None if text is None else ast.literal_eval(text)


def _solved(m: MessageIR) -> set[str]:
    """Fields the strategies compute from others (derived, or ``field == expr``)."""
    out = {f.name for f in m.fields if f.derived is not None}
    return out | {name for i in m.invariants for name, _ in i.expr.solves}


# --- valid envelopes -----------------------------------------------------------------------------


def _required_in(m: MessageIR, v: VariantIR, f: FieldIR) -> bool:
    """``f`` is required in every envelope of ``v``: always, or by a condition on the
    discriminator alone (typed ``T | None`` when ``T`` also admits None)."""
    if f.always_required:
        return True
    if f.required_when is None or m.discriminator is None:
        return False
    node = expr.partial_eval(f.required_when.node, {m.discriminator.name: v.member_value}, _VALUES)
    return expr.is_const(node) and expr.const_value(node) is True


def _scalar_targets(where: str, f: FieldIR, solved: bool) -> set[Target]:
    out: set[Target] = set()
    if f.kind == "bool":
        out |= {(where, f.name, True), (where, f.name, False)}
    elif f.kind == "enum":
        out |= {(where, f.name, "member", m) for m in _enum_members(f)}
    elif f.kind in ("int", "float") and not solved:
        out |= {(where, f.name, "bound", b) for b in (f.range_min, f.range_max) if b is not None}
    elif f.kind == "str":
        out |= {(where, f.name, "utf8", 0), (where, f.name, "utf8", f.max_len)}
    return out


_ENUMS: dict[str, tuple[str, ...]] = {}
_VALUES: dict[str, dict[str, int]] = {}


def _enum_members(f: FieldIR) -> tuple[str, ...]:
    return _ENUMS[f.enum or ""]


def _dim_targets(ir: ProtocolIR, m: MessageIR) -> set[Target]:
    """Both bounds of each dimension a tensor can show, where every tensor holding the
    dimension at that bound (the others at their minimum) stays under its element limit."""
    lo = {d.name: d.lo for d in m.dims}
    present = {vf.field.name for v in m.variants for vf in v.fields if vf.annotation != "None"}
    out: set[Target] = set()
    for d in m.dims:
        holders = [f for f in m.tensors if any(x.symbol == d.name for x in f.dims)]
        if not any(f.name in present for f in holders):
            continue
        for bound in (d.lo, d.hi):
            sizes = {**lo, d.name: bound}
            fits = all(
                math.prod(x.const if x.symbol is None else sizes[x.symbol] for x in f.dims)
                <= min(_s.ELEMENT_CAP, f.max_elements or _s.ELEMENT_CAP)
                for f in holders
            )
            if fits:
                out.add(("dim", m.name, d.name, bound))
    return out


def valid_targets(ir: ProtocolIR) -> set[Target]:
    _ENUMS.update({e.name: tuple(n for n, _ in e.members) for e in ir.enums})
    _VALUES.update({e.name: dict(e.members) for e in ir.enums})
    out: set[Target] = set()
    for a in ir.actions:
        if a.message is None:
            out.add(("kind", a.member))
    for f in ir.header.fields:
        if f.name == ir.header.action:
            continue
        if not f.always_required:
            out |= {("header", f.name, "present"), ("header", f.name, "absent")}
        out |= _scalar_targets("header", f, solved=f.derived is not None)
    for m in ir.messages:
        solved = _solved(m)
        out |= _dim_targets(ir, m)
        for v in m.variants:
            out.add(("kind", v.class_name))
            for vf in v.fields:
                f = vf.field
                if vf.annotation == "None" or vf.annotation.startswith("Literal["):
                    continue
                if vf.annotation.endswith("| None"):
                    out.add((v.class_name, f.name, "present"))
                    if not _required_in(m, v, f):
                        out.add((v.class_name, f.name, "absent"))
                if f.name == m.version_field:
                    continue
                if f.is_tensor:
                    out |= {(v.class_name, f.name, "dtype", dt) for dt in f.dtypes}
                else:
                    out |= _scalar_targets(v.class_name, f, f.name in solved)
    return out


def _observe_scalar(where: str, f: FieldIR, value: object) -> set[Target]:
    out: set[Target] = set()
    if value is None:
        return out
    if f.kind == "bool":
        out.add((where, f.name, value))
    elif f.kind == "enum":
        out.add((where, f.name, "member", getattr(value, "name", None)))
    elif f.kind in ("int", "float"):
        for b in (f.range_min, f.range_max):
            if b is not None and value == _literal(b):
                out.add((where, f.name, "bound", b))
    elif f.kind == "str" and isinstance(value, str):
        out.add((where, f.name, "utf8", len(value.encode("utf-8"))))
    return out


def observe(ir: ProtocolIR, envelope: tuple[Any, Any]) -> set[Target]:
    """The targets one valid envelope reaches."""
    header, msg = envelope
    out: set[Target] = set()
    for f in ir.header.fields:
        value = getattr(header, f.name)
        if not f.always_required:
            out.add(("header", f.name, "absent" if value is None else "present"))
        out |= _observe_scalar("header", f, value)
    if msg is None:
        out.add(("kind", getattr(header, ir.header.action).name))
        return out
    cls = type(msg).__name__
    out.add(("kind", cls))
    m, _ = _message_of(ir, cls)
    for f in m.fields:
        value = getattr(msg, f.name)
        out.add((cls, f.name, "absent" if value is None else "present"))
        if isinstance(value, torch.Tensor):
            out.add((cls, f.name, "dtype", str(value.dtype).removeprefix("torch.")))
            for x, size in zip(f.dims, value.shape, strict=True):
                if x.symbol is not None:
                    out.add(("dim", m.name, x.symbol, size))
        else:
            out |= _observe_scalar(cls, f, value)
    return out


def _message_of(ir: ProtocolIR, class_name: str) -> tuple[MessageIR, VariantIR]:
    return next((m, v) for m in ir.messages for v in m.variants if v.class_name == class_name)


def _holders(ir: ProtocolIR, target: Target) -> list[str]:
    """The envelope kinds that can reach ``target`` (to search for it alone)."""
    kinds = [v.class_name for m in ir.messages for v in m.variants]
    if target[0] == "kind":
        return [str(target[1])]
    if target[0] == "header":
        return kinds + [a.member for a in ir.actions if a.message is None]
    if target[0] == "dim":
        return [v.class_name for m in ir.messages if m.name == target[1] for v in m.variants]
    return [str(target[0])]


# --- mutants -------------------------------------------------------------------------------------


def _oversize_fits(m: MessageIR, v: VariantIR, f: FieldIR) -> bool:
    """A shape of ``f`` over its max_elements with every dim in bounds, changing only the
    dims no tensor the variant always carries binds, fits the mutant byte cap."""
    required = {
        vf.field.name
        for vf in v.fields
        if vf.field.is_tensor and vf.default is None and not vf.annotation.endswith("| None")
    }
    pinned = {
        x.symbol for g in m.tensors if g.name in required and g is not f for x in g.dims if x.symbol
    }
    bounds = {d.name: (d.lo, d.hi) for d in m.dims}
    sizes = {s: bounds[s][0] for s in bounds}

    def numel() -> int:
        return math.prod(y.const if y.symbol is None else sizes[y.symbol] for y in f.dims)

    limit = f.max_elements or 0
    for x in f.dims:
        if x.symbol is None or x.symbol in pinned:
            continue
        lo, hi = bounds[x.symbol]
        sizes[x.symbol] = hi
        if numel() > limit:
            while lo < hi:  # the smallest size of this dim that still overflows
                sizes[x.symbol] = mid = (lo + hi) // 2
                lo, hi = (lo, mid) if numel() > limit else (mid + 1, hi)
            sizes[x.symbol] = lo
            return numel() * min(ITEMSIZE[dt] for dt in f.dtypes) <= _s.MUTANT_BYTES_CAP
    return False


def mutant_targets(ir: ProtocolIR) -> set[str]:
    fields = list(ir.header.fields) + [f for m in ir.messages for f in m.fields]
    kinds = {"none_where_required", "wrong_type", "missing_key", "unknown_field"}
    if len(ir.actions) > 1:
        kinds.add("action_mismatch")
    for f in fields:
        if f.kind == "int":
            kinds |= {"range_below", "range_above"}
        if f.kind == "float":
            kinds.add("not_finite")
            kinds |= {"range_below"} if f.range_min is not None else set()
            kinds |= {"range_above"} if f.range_max is not None else set()
        if f.kind == "str":
            kinds |= {"range_above", "too_long_utf8", "unencodable"}
        if f.forbidden_when is not None:
            kinds.add("forbidden_present")
        if f.none_unless is not None:
            kinds.add("must_be_none_present")
        if f.is_tensor:
            kinds.add("wrong_rank")
            kinds |= {"dim_out_of_bounds"} if f.dims else set()
            kinds |= {"wrong_dtype"} if set(f.dtypes) != ALL_DTYPES else set()
    for m in ir.messages:
        if m.discriminator is not None and len(m.variants) > 1:
            kinds.add("wrong_member")
        if m.version_field is not None:
            kinds |= {"version_above", "version_below"}
        symbols = [s for f in m.tensors for s in {x.symbol for x in f.dims} if s is not None]
        if any(symbols.count(d.name) > 1 and d.lo < d.hi for d in m.dims):
            kinds.add("dim_mismatch")
        for v in m.variants:
            for vf in v.fields:
                if (
                    vf.field.is_tensor
                    and vf.annotation != "None"
                    and _oversize_fits(m, v, vf.field)
                ):
                    kinds.add("too_many_elements")
        by_name = {f.name: f for f in m.fields}
        equations = [f.derived for f in m.fields if f.derived is not None]
        equations += [i.expr for i in m.invariants if i.expr.solves]
        operands = {n for e in equations for n in e.refs}
        operands |= {f.name for f in m.fields if f.derived is not None}
        if any(by_name[n].kind in ("int", "float") for n in operands):
            kinds |= {"invariant_above", "invariant_below"}
        flips = operands | {n for i in m.invariants for n in i.expr.refs}
        if any(by_name[n].kind == "bool" for n in flips):
            kinds.add("invariant_flip")
    return kinds


# --- the tests -----------------------------------------------------------------------------------


class _Done(Exception):
    """Every wanted target was seen: stop drawing."""


def sample(
    strategy: Any,
    observe_one: Callable[[Any], Iterable[object]],
    wanted: set[object],
    max_examples: int,
) -> set[object]:
    """What ``max_examples`` derandomized draws reach, stopping once ``wanted`` is seen."""
    seen: set[object] = set()

    @settings(SAMPLE, max_examples=max_examples)
    @given(strategy)
    def run(x: Any) -> None:
        seen.update(observe_one(x))
        if wanted <= seen:
            raise _Done

    with contextlib.suppress(_Done, Unsatisfiable):  # Unsatisfiable: nothing drawn at all
        run()
    return seen


@pytest.mark.parametrize("name", corpus.params())
def test_valid_envelopes_reach_every_branch(name: str) -> None:
    ir = corpus.ir(name)
    strategies = corpus.load(name).strategies
    targets = valid_targets(ir)
    assert targets, name
    seen = sample(strategies.valid_envelopes(), lambda e: observe(ir, e), targets, 80)
    missed = targets - seen
    # then each kind of envelope on its own, for what it alone holds
    groups: dict[tuple[str, ...], set[Target]] = {}
    for t in missed:
        groups.setdefault(tuple(_holders(ir, t)), set()).add(t)
    for kinds, wanted in sorted(groups.items()):
        strategy = strategies.valid_envelopes(kinds=kinds)
        seen |= sample(strategy, lambda e: observe(ir, e), wanted, 200)
    # and what is still missing, one target at a time
    for t in sorted(targets - seen, key=repr):
        strategy = strategies.valid_envelopes(kinds=_holders(ir, t))
        seen |= sample(strategy, lambda e: observe(ir, e), {t}, 1000)
    unreached = sorted(targets - seen, key=repr)
    assert unreached == [], f"{len(missed)} missed by the first pass, unreachable: {unreached}"


@pytest.mark.parametrize("name", corpus.params())
def test_mutants_reach_every_rule_kind_and_code(name: str) -> None:
    ir = corpus.ir(name)
    strategies = corpus.load(name).strategies
    expected = mutant_targets(ir)
    plain = {"missing_key", "unknown_field"}
    # the kinds mutants() draws from (one at a time, each as likely as any other) ...
    offered = set().union(*_s.envelope_mutant_kinds(strategies.PROTOCOL).values())
    assert expected - plain <= offered

    # ... each of which it produces, with its code
    def labels(m: Any) -> list[object]:
        return [m.kind, *(("code", c) for c in m.codes)]

    seen: set[object] = set()
    for kind in sorted(expected - plain):
        seen |= sample(strategies.mutants(mutant_kinds=[kind]), labels, {kind}, 30)
    seen |= sample(strategies.plain_mutants(), labels, plain, 60)
    assert expected <= seen, sorted(expected - seen)
    assert {("code", _s.MUTANT_KINDS[k]) for k in expected} <= seen
