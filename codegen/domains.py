"""Exact comparison of spec conditions by enumerating the finite domains they read.

``tpwire breaking`` asks questions such as "is there an envelope an old receiver accepts and a
new receiver refuses?" about presence conditions, invariants and derived formulas. Those
expressions read bools, enum members, bounded ints, tensor presence and ``len()`` of tensors,
so the question is decidable by brute force over a small set of *assignments*:

* ``bool``: both values; an enum: every member value of the old and the new enum;
* an ``int`` (field, dimension symbol, or ``len(tensor)``): every value when its range has at
  most ``ENUMERATE_LIMIT`` values; otherwise, when every use compares it with a constant
  (``x < 8``, ``x in (1, 2)``), the constants, their neighbours and the range ends, which
  cover every region in which those comparisons keep their truth values; floats and strings
  likewise from their constants;
* ``None`` for a name that may be absent (the spec's rule: a condition that reads an absent
  value is false, an invariant that reads one is not evaluated).

Each variable ranges over the union of its old and new domains, so an assignment may not be
reachable by a real envelope (a dimension and the tensor that binds it are independent
here); findings are never missed, and the witness shows the assignment. Anything else (a
variable compared with another one in arithmetic over a wide range, a name whose type
changed, more than ``MAX_ASSIGNMENTS`` assignments) raises ``Undecided`` with the reason,
and the caller falls back to a conservative "changed" finding that says so.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import expr
from .model import CField, CheckedSpec, CMessage

#: Ranges with at most this many values are enumerated whole.
ENUMERATE_LIMIT = 64
#: The largest number of assignments one comparison may enumerate.
MAX_ASSIGNMENTS = 20_000

Value = object
Assignment = Mapping[str, Value]


class Undecided(Exception):
    """The comparison cannot be decided by enumeration (the message says why)."""


@dataclass(frozen=True)
class Var:
    """What a name means in one spec's scope (a message, or the header)."""

    kind: str  # bool | enum | int | float | str | tensor | dim
    nullable: bool
    enum: str | None = None
    members: tuple[tuple[str, int], ...] = ()
    lo: int | float | None = None
    hi: int | float | None = None
    #: tensor: bounds of dimension 0 (what ``len()`` reads); None for a 0-d tensor
    len_lo: int | None = None
    len_hi: int | None = None


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Scope:
    """The names an expression of one message (or the header) can read, with their domains."""

    def __init__(self, spec: CheckedSpec, message: CMessage | None) -> None:
        self.enums: dict[str, dict[str, int]] = {e.name: dict(e.members) for e in spec.enums}
        self.vars: dict[str, Var] = {}
        #: each field's presence rules: (always required, required_when, forbidden_when,
        #: none_unless), what a sender of this spec obeys
        self.presence: dict[str, tuple[bool, expr.Node | None, expr.Node | None, expr.Node | None]]
        self.presence = {}
        fields = message.fields if message is not None else spec.header.fields
        for f in fields:
            self.vars[f.name] = self._field_var(spec, f, message)
            self.presence[f.name] = (
                f.always_required,
                f.required_when.node if f.required_when else None,
                f.forbidden_when.node if f.forbidden_when else None,
                f.none_unless.node if f.none_unless else None,
            )
        if message is not None:
            for d in message.dims:
                binders = [f for f in message.fields if d.name in f.shape]
                self.vars[d.name] = Var(
                    "dim", not any(f.always_required for f in binders), lo=d.min, hi=d.max
                )

    @staticmethod
    def _field_var(spec: CheckedSpec, f: CField, message: CMessage | None) -> Var:
        nullable = not f.always_required
        kind = f.type.kind
        if kind == "enum":
            members = next((e.members for e in spec.enums if e.name == f.type.enum), ())
            return Var("enum", nullable, enum=f.type.enum, members=members)
        if kind == "int":
            lo = INT64_MIN if f.range_min is None else int(f.range_min)
            hi = INT64_MAX if f.range_max is None else int(f.range_max)
            return Var("int", nullable, lo=lo, hi=hi)
        if kind == "float":
            return Var("float", nullable, lo=f.range_min, hi=f.range_max)
        if kind == "tensor":
            if not f.shape:
                return Var("tensor", nullable)
            d0 = f.shape[0]
            if isinstance(d0, int):
                return Var("tensor", nullable, len_lo=d0, len_hi=d0)
            dims = {d.name: d for d in message.dims} if message is not None else {}
            dim = dims.get(d0)
            if dim is None:
                return Var("tensor", nullable, len_lo=0, len_hi=INT64_MAX)
            return Var("tensor", nullable, len_lo=dim.min, len_hi=dim.max)
        return Var(kind, nullable)


# --- uses of a variable ------------------------------------------------------------------


def _is_target(node: expr.Node, name: str, tensor: bool) -> bool:
    if tensor:
        return (
            isinstance(node, expr.Call)
            and node.func == "len"
            and isinstance(node.arg, expr.Name)
            and node.arg.id == name
        )
    return isinstance(node, expr.Name) and node.id == name


_NO = object()


def _const_of(node: expr.Node) -> object:
    """The value of a literal (``3``, ``-3``), or ``_NO``."""
    if isinstance(node, expr.Const):
        return node.value
    if isinstance(node, expr.Neg) and isinstance(node.operand, expr.Const):
        v = node.operand.value
        if isinstance(v, int | float) and not isinstance(v, bool):
            return -v
    return _NO


def _simple_constants(node: expr.Node, name: str, tensor: bool, out: set[object]) -> bool:
    """Collect the constants ``name`` is compared with; False when it is used otherwise."""
    if isinstance(node, expr.Compare):
        for target, other in ((node.left, node.right), (node.right, node.left)):
            if _is_target(target, name, tensor) and (c := _const_of(other)) is not _NO:
                out.add(c)
                return True
    if isinstance(node, expr.In) and _is_target(node.operand, name, tensor):
        values = [_const_of(o) for o in node.options]
        if all(v is not _NO for v in values):
            out.update(values)
            return True
        return False
    if isinstance(node, expr.IsNone) and isinstance(node.operand, expr.Name):
        return True  # presence only
    if _is_target(node, name, tensor):
        return False
    if not tensor and isinstance(node, expr.Name):
        return True
    if tensor and isinstance(node, expr.Name) and node.id == name:
        return True  # a bare tensor name outside len() only ever tests presence
    return all(_simple_constants(c, name, tensor, out) for c in expr._children(node))


Uses = Sequence[tuple[expr.Node, str]]


def _reads_len(uses: Uses) -> bool:
    return any(_is_target(n, name, True) for node, name in uses for n in expr.walk(node))


def _constants(uses: Uses, tensor: bool) -> set[object] | None:
    """The constants every use compares the name with; None when some use does more."""
    out: set[object] = set()
    if all(_simple_constants(node, name, tensor, out) for node, name in uses):
        return out
    return None


# --- domains -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    """A present tensor, as the expressions see it: only ``len()`` and presence."""

    length: int

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"<tensor len {self.length}>"


def _int_points(lo: int, hi: int, constants: set[object]) -> list[int]:
    points = {lo, hi}
    for c in constants:
        if isinstance(c, bool) or not isinstance(c, int | float):
            continue
        if isinstance(c, float) and not math.isfinite(c):
            continue
        base = math.floor(c)
        points.update((base - 1, base, base + 1, math.ceil(c), math.ceil(c) + 1))
    return sorted(p for p in points if lo <= p <= hi)


def _float_points(lo: float, hi: float, constants: set[object]) -> list[float]:
    points = {lo, hi, 0.0}
    for c in constants:
        if isinstance(c, bool) or not isinstance(c, int | float):
            continue
        c = float(c)
        if math.isfinite(c):
            points.update((math.nextafter(c, -math.inf), c, math.nextafter(c, math.inf)))
    return sorted(p for p in points if lo <= p <= hi)


def _ints(lo: int, hi: int, uses: Uses, tensor: bool, what: str) -> list[int]:
    if hi - lo + 1 <= ENUMERATE_LIMIT:
        return list(range(lo, hi + 1))
    constants = _constants(uses, tensor)
    if constants is not None:
        return _int_points(lo, hi, constants)
    raise Undecided(f"{what} spans {lo}..{hi} and is used other than in comparisons with constants")


def _domain(name: str, infos: Sequence[Var], uses: Uses) -> tuple[tuple[Value, ...], Var]:
    kinds = {v.kind for v in infos}
    if len(kinds) != 1:
        raise Undecided(f"{name!r} changed its type")
    v = infos[0]
    nullable = any(i.nullable for i in infos)
    values: list[Value]
    if v.kind == "bool":
        values = [False, True]
    elif v.kind == "enum":
        values = list(sorted({val for i in infos for _, val in i.members}))
    elif v.kind in ("int", "dim"):
        lo = min(int(i.lo if i.lo is not None else INT64_MIN) for i in infos)
        hi = max(int(i.hi if i.hi is not None else INT64_MAX) for i in infos)
        values = list(_ints(lo, hi, uses, False, repr(name)))
    elif v.kind == "float":
        flo = min((float(i.lo) if i.lo is not None else -math.inf) for i in infos)
        fhi = max((float(i.hi) if i.hi is not None else math.inf) for i in infos)
        flo = max(flo, -1.7976931348623157e308)
        fhi = min(fhi, 1.7976931348623157e308)
        constants = _constants(uses, False)
        if constants is None:
            raise Undecided(f"float {name!r} is used other than in comparisons with constants")
        values = list(_float_points(flo, fhi, constants))
    elif v.kind == "str":
        constants = _constants(uses, False)
        if constants is None:
            raise Undecided(f"str {name!r} is used other than in comparisons with constants")
        strs = sorted(c for c in constants if isinstance(c, str))
        values = ["", *strs, "\x00" * (1 + max((len(s) for s in strs), default=0))]
        values = list(dict.fromkeys(values))
    elif v.kind == "tensor":
        if _reads_len(uses):
            bounds = [i for i in infos if i.len_lo is not None and i.len_hi is not None]
            if not bounds:
                raise Undecided(f"len() of 0-d tensor {name!r}")
            lo = min(int(i.len_lo or 0) for i in bounds)
            hi = max(int(i.len_hi or 0) for i in bounds)
            values = [_Tensor(n) for n in _ints(lo, hi, uses, True, f"len({name})")]
        else:
            values = [_Tensor(1)]
    else:
        raise Undecided(f"{name!r} has an unknown kind {v.kind}")
    if nullable:
        values = [None, *values]
    return tuple(values), v


class Space:
    """The assignments of every name two sets of expressions read (old and new).

    ``rename`` maps a new name to the old name it stands for (a renamed field), so both
    sides see the same value.
    """

    def __init__(
        self,
        old: Scope,
        new: Scope,
        old_nodes: Sequence[expr.Node],
        new_nodes: Sequence[expr.Node],
        rename: Mapping[str, str] | None = None,
    ) -> None:
        self.old, self.new = old, new
        self.rename = dict(rename or {})
        back = {o: n for n, o in self.rename.items()}
        self.old_nodes, self.new_nodes = tuple(old_nodes), tuple(new_nodes)
        keys: set[str] = set()
        for n in self.old_nodes:
            keys |= expr.names(n)
        for n in self.new_nodes:
            keys |= {self.rename.get(x, x) for x in expr.names(n)}
        self.keys = tuple(sorted(keys))
        self.new_name = {k: back.get(k, k) for k in self.keys}
        self.domains: list[tuple[Value, ...]] = []
        self.kinds: dict[str, Var] = {}
        #: each name as the old and the new spec declare it (None: not there)
        self.sides: dict[str, list[Var | None]] = {"old": [], "new": []}
        total = 1
        for k in self.keys:
            infos = []
            if k in old.vars:
                infos.append(old.vars[k])
            nk = self.new_name[k]
            if nk in new.vars:
                infos.append(new.vars[nk])
            if not infos:
                raise Undecided(f"{k!r} is not a field or dimension")
            # each side spells the name its own way (a renamed field)
            uses = [(n, k) for n in self.old_nodes] + [(n, nk) for n in self.new_nodes]
            values, var = _domain(k, infos, uses)
            self.sides["old"].append(old.vars.get(k))
            self.sides["new"].append(new.vars.get(nk))
            self.domains.append(values)
            self.kinds[k] = var
            total *= len(values)
            if total > MAX_ASSIGNMENTS:
                raise Undecided(f"over {MAX_ASSIGNMENTS} assignments of {', '.join(self.keys)}")
        self.size = total

    def assignments(self) -> Iterator[tuple[dict[str, Value], dict[str, Value]]]:
        """(old view, new view) of every assignment, in a fixed order."""
        renamed = any(k != n for k, n in self.new_name.items())
        for combo in itertools.product(*self.domains):
            old = dict(zip(self.keys, combo, strict=True))
            yield old, ({self.new_name[k]: v for k, v in old.items()} if renamed else old)

    def sendable(self, old_view: Assignment, new_view: Assignment, side: str | None) -> bool:
        """Whether a sender of ``side`` ("old"/"new") can produce these values (None: any):
        each within its declared domain, and present or absent as its own presence rules
        demand where those rules read only names of this space."""
        if side is None:
            return True
        view = old_view if side == "old" else new_view
        scope = self.old if side == "old" else self.new
        known = frozenset(view)
        for k, var in zip(self.keys, self.sides[side], strict=True):
            value = old_view[k]
            if not _allows(var, value):
                return False
            name = k if side == "old" else self.new_name[k]
            rules = scope.presence.get(name)
            if rules is None:
                continue
            always, rw, fw, nu = rules

            def holds(node: expr.Node | None) -> bool | None:
                if node is None or not expr.names(node) <= known:
                    return None  # reads a name outside the space: no constraint
                return condition(node, view, scope.enums)

            if value is None and (always or holds(rw) is True):
                return False
            if value is not None and (holds(fw) is True or holds(nu) is False):
                return False
        return True

    def describe(self, assignment: Assignment) -> str:
        """``tp_plan = v1_generator_only, x = None`` (enum members by name)."""
        parts = []
        for k in self.keys:
            v = assignment[k]
            var = self.kinds[k]
            if v is None:
                text = "absent"
            elif var.kind == "enum":
                names = {val: m for m, val in self.old.vars.get(k, var).members}
                nk = self.new_name[k]
                if nk in self.new.vars:
                    names.update({val: m for m, val in self.new.vars[nk].members})
                text = names.get(v, repr(v))  # type: ignore[call-overload]
            elif isinstance(v, _Tensor):
                text = f"present, len {v.length}"
            else:
                text = repr(v)
            parts.append(f"{k} = {text}")
        return ", ".join(parts) or "every envelope"


def _allows(var: Var | None, value: Value) -> bool:
    """Whether ``value`` is within what ``var`` declares (a missing name is always absent)."""
    if var is None:
        return value is None  # a sender never sends a field its spec lacks
    if value is None:
        return var.nullable
    if var.kind == "enum":
        return value in {v for _, v in var.members}
    if var.kind in ("int", "dim", "float") and isinstance(value, int | float):
        lo_ok = var.lo is None or value >= var.lo
        return lo_ok and (var.hi is None or value <= var.hi)
    if var.kind == "tensor" and isinstance(value, _Tensor) and var.len_lo is not None:
        return (
            var.len_lo <= value.length <= (var.len_hi if var.len_hi is not None else value.length)
        )
    return True


# --- evaluation --------------------------------------------------------------------------


Fn = Callable[[Assignment], Any]
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _closure(node: expr.Node, enums: Mapping[str, Mapping[str, int]]) -> Fn:
    """The expression as nested closures: ``expr.evaluate``'s semantics, compiled once."""
    match node:
        case expr.Const():
            c: Any = node.value
            return lambda a: c
        case expr.Name():
            k = node.id
            return lambda a: a[k]
        case expr.EnumRef():
            v = enums[node.enum][node.member]
            return lambda a: v
        case expr.Neg():
            f = _closure(node.operand, enums)
            return lambda a: -f(a)
        case expr.BinOp() | expr.Compare():
            op = _ARITH[node.op] if isinstance(node, expr.BinOp) else _CMP[node.op]
            left, right = _closure(node.left, enums), _closure(node.right, enums)
            return lambda a: op(left(a), right(a))
        case expr.BoolOp():
            parts = tuple(_closure(v, enums) for v in node.values)
            stop = node.op == "or"

            def boolop(a: Assignment) -> Any:
                result: Any = not stop
                for p in parts:
                    result = p(a)
                    if bool(result) == stop:
                        return result
                return result

            return boolop
        case expr.Not():
            f = _closure(node.operand, enums)
            return lambda a: not f(a)
        case expr.IsNone():
            f, neg = _closure(node.operand, enums), node.negated
            return lambda a: (f(a) is None) != neg
        case expr.In():
            f, neg = _closure(node.operand, enums), node.negated
            opts = tuple(_closure(o, enums) for o in node.options)
            return lambda a: (f(a) in tuple(o(a) for o in opts)) != neg
        case expr.Call():
            f = _closure(node.arg, enums)
            if node.func == "len":
                return lambda a: len(f(a))
            if node.func == "int":
                return lambda a: int(f(a))
            raise Undecided(f"unknown function {node.func}")
        case _:
            raise Undecided(f"cannot evaluate {node!r}")


_COMPILED: dict[tuple[int, int], tuple[expr.Node, object, Fn, tuple[str, ...]]] = {}


def _compiled(
    node: expr.Node, enums: Mapping[str, Mapping[str, int]]
) -> tuple[Fn, tuple[str, ...]]:
    key = (id(node), id(enums))
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is node and hit[1] is enums:
        return hit[2], hit[3]
    if len(_COMPILED) > 4096:
        _COMPILED.clear()
    try:
        fn = _closure(node, enums)
    except KeyError as exc:
        raise Undecided(f"cannot evaluate {expr.to_text(node)}: unknown {exc}") from None
    guard = tuple(sorted(expr.value_names(node)))
    _COMPILED[key] = (node, enums, fn, guard)
    return fn, guard


def evaluate(node: expr.Node, values: Assignment, enums: Mapping[str, Mapping[str, int]]) -> object:
    """The expression's value, or None when a name whose value it uses is absent."""
    fn, guard = _compiled(node, enums)
    for n in guard:
        if values.get(n) is None:
            return None
    try:
        return fn(values)
    except Exception as exc:  # ill-typed under the other spec's domain, overflow, ...
        raise Undecided(f"cannot evaluate {expr.to_text(node)}: {type(exc).__name__}") from None


def condition(
    node: expr.Node | None, values: Assignment, enums: Mapping[str, Mapping[str, int]]
) -> bool:
    """A presence condition: false when it reads an absent value."""
    if node is None:
        return False
    return bool(evaluate(node, values, enums))


def invariant(
    node: expr.Node | None, values: Assignment, enums: Mapping[str, Mapping[str, int]]
) -> bool:
    """An invariant holds unless it is evaluated and false."""
    if node is None:
        return True
    v = evaluate(node, values, enums)
    return True if v is None else bool(v)


@dataclass(frozen=True)
class Diff:
    """Witnesses of a change between two predicates over the same assignments."""

    gained: str | None  # an assignment where the new predicate holds and the old one not
    lost: str | None  # an assignment where the old predicate holds and the new one not

    @property
    def same(self) -> bool:
        return self.gained is None and self.lost is None


Pred = Callable[[Assignment], object]


def compare(
    space: Space,
    old: Pred,
    new: Pred,
    gained_by: str | None = None,
    lost_by: str | None = None,
) -> Diff:
    """Where two predicates over the same assignments differ (first witness each way).

    ``gained_by``/``lost_by`` ("old"/"new") keep only witnesses that sender can produce: a
    tightening matters for what old senders send, a loosening for what new senders send.
    """
    gained = lost = None
    for o_view, n_view in space.assignments():
        a, b = bool(old(o_view)), bool(new(n_view))
        if b and not a and gained is None and space.sendable(o_view, n_view, gained_by):
            gained = space.describe(o_view)
        elif a and not b and lost is None and space.sendable(o_view, n_view, lost_by):
            lost = space.describe(o_view)
        if gained is not None and lost is not None:
            break
    return Diff(gained, lost)


def first_difference(space: Space, old: Pred, new: Pred) -> str | None:
    """An assignment where two value functions differ (None: they agree everywhere)."""
    for o_view, n_view in space.assignments():
        a, b = old(o_view), new(n_view)
        if (a is None) != (b is None) or (a is not None and a != b):
            return space.describe(o_view)
    return None


# --- normal form (the fallback where enumeration cannot decide) ---------------------------

_FLIP: dict[str, expr.CmpOp] = {">": "<", ">=": "<="}
_NEGATE: dict[str, expr.CmpOp] = {
    "==": "!=",
    "!=": "==",
    "<": ">=",
    "<=": ">",
    ">": "<=",
    ">=": "<",
}


def _key(node: expr.Node) -> str:
    return expr.to_text(node)


def normalize(node: expr.Node) -> expr.Node:
    """A normal form under rewrites that keep the meaning: operands of ``and``/``or``
    flattened, deduplicated and sorted, negations pushed inwards (De Morgan), ``>``/``>=``
    flipped, operands of ``==``, ``!=``, ``+``, ``*`` and ``in`` options sorted.

    Equal normal forms mean equal expressions (a name read anywhere is guarded as a whole,
    so the rewrites inside keep the spec's absent-operand rule); different ones decide
    nothing.
    """
    match node:
        case expr.Not():
            inner = node.operand
            if isinstance(inner, expr.Not):
                return normalize(inner.operand)
            if isinstance(inner, expr.BoolOp):
                other: expr.BoolOpName = "or" if inner.op == "and" else "and"
                return normalize(expr.BoolOp(other, tuple(expr.Not(v) for v in inner.values)))
            if isinstance(inner, expr.Compare):
                return normalize(expr.Compare(_NEGATE[inner.op], inner.left, inner.right))
            if isinstance(inner, expr.IsNone):
                return normalize(expr.IsNone(inner.operand, not inner.negated))
            if isinstance(inner, expr.In):
                return normalize(expr.In(inner.operand, inner.options, not inner.negated))
            return expr.Not(normalize(inner))
        case expr.BoolOp():
            parts: dict[str, expr.Node] = {}
            for v in node.values:
                n = normalize(v)
                subs = n.values if isinstance(n, expr.BoolOp) and n.op == node.op else (n,)
                for s in subs:
                    parts.setdefault(_key(s), s)
            ordered = tuple(parts[k] for k in sorted(parts))
            return ordered[0] if len(ordered) == 1 else expr.BoolOp(node.op, ordered)
        case expr.Compare():
            left, right = normalize(node.left), normalize(node.right)
            op = node.op
            if op in _FLIP:
                left, right, op = right, left, _FLIP[op]
            if op in ("==", "!=") and _key(right) < _key(left):
                left, right = right, left
            return expr.Compare(op, left, right)
        case expr.BinOp():
            left, right = normalize(node.left), normalize(node.right)
            if node.op in ("+", "*") and _key(right) < _key(left):
                left, right = right, left
            return expr.BinOp(node.op, left, right)
        case expr.In():
            opts = {_key(o): normalize(o) for o in node.options}
            return expr.In(
                normalize(node.operand), tuple(opts[k] for k in sorted(opts)), node.negated
            )
        case expr.Neg():
            return expr.Neg(normalize(node.operand))
        case expr.IsNone():
            return expr.IsNone(normalize(node.operand), node.negated)
        case expr.Call():
            return expr.Call(node.func, normalize(node.arg))
        case _:
            return node


def same_form(a: expr.Node | None, b: expr.Node | None) -> bool:
    """True when both are absent, or both have the same normal form."""
    if a is None or b is None:
        return a is None and b is None
    return normalize(a) == normalize(b)
