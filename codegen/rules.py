"""The rules a generated validator reports, as named constants (IR values, spelled here).

Each check a validator runs has one module-level ``_v.Rule`` constant in the generated code
(its code, field path, what it expects, its rule text, FM id and message), and a failure is
one short call on the pass's report: ``r.refuse(_R_Infer_height_range, x)``. What is fixed
per rule lives in the constant; only the value seen (and, for derived fields and plans, the
value wanted) is computed when the rule fails.

The rules pass is spelled here too: presence checks grouped under their shared condition
(evaluated once), derived fields and invariants, each as a condition and its Python.
A registered rule kind's check (``register_emitter``): docs/architecture.md, "How to add a
rule kind".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .constraints import BUILTIN_KEYS

if TYPE_CHECKING:
    from .ir import ExprIR, FieldIR, InvariantIR, MessageIR, ProtocolIR


@dataclass(frozen=True)
class RuleIR:
    const: str  # the generated constant's name
    code: str
    field: str  # field path as violations show it ("header.call_id", "height")
    expected: str | None  # None: computed when the rule fails (derived value, plan member)
    rule: str
    fm: str | None = None
    message: str = ""

    @property
    def py(self) -> str:
        """``_w.Rule(...)``: code, field, expected; then what differs from the defaults (the
        rule text ``code: expected``, no FM id, no message) by keyword."""
        args = [repr(self.code), repr(self.field), repr(self.expected or "")]
        if self.rule != f"{self.code}: {self.expected}":
            args.append(f"rule={self.rule!r}")
        if self.fm is not None:
            args.append(f"fm={self.fm!r}")
        if self.message:
            args.append(f"message={self.message!r}")
        return f"_v.Rule({', '.join(args)})"


def _ident(text: str) -> str:
    return re.sub(r"\W", "_", text)


# --- rule kinds beyond the built-in ones --------------------------------------------------


@dataclass(frozen=True)
class RuleEmitter:
    """How the validators check a registered rule kind (``codegen/constraints.py``,
    ``register_kind``): the violation code it reports, the Python that is true when a
    present, well-typed value passes (``test(var, value)``, ``value`` the field's
    constraint) and the text of what it expects (``expected(name, value)``)."""

    kind: str
    code: str
    test: Callable[[str, object], str]
    expected: Callable[[str, object], str]


_EMITTERS: dict[str, RuleEmitter] = {}


def register_emitter(emitter: RuleEmitter) -> None:
    """Make the validators check ``emitter.kind`` wherever a field's record carries it."""
    if emitter.kind in BUILTIN_KEYS:
        raise ValueError(f"{emitter.kind!r} is a built-in rule, not a registered rule kind")
    if emitter.kind in _EMITTERS:
        raise ValueError(f"an emitter for rule kind {emitter.kind!r} is already registered")
    _EMITTERS[emitter.kind] = emitter


def unregister_emitter(kind: str) -> None:
    """Remove the emitter of ``kind`` (a no-op when there is none). A built-in rule raises
    ``ValueError``: its rule is spelled in ``field_rules`` below, not registered."""
    if kind in BUILTIN_KEYS:
        raise ValueError(
            f"{kind!r} is a built-in rule; only a registered kind's emitter is removed"
        )
    _EMITTERS.pop(kind, None)


def _extra_rules(f: FieldIR) -> list[tuple[RuleEmitter, object]]:
    return [(_EMITTERS[k], v) for k, v in f.constraints.extra if k in _EMITTERS]


def extra_tests(f: FieldIR, var: str) -> tuple[tuple[str, RuleIR], ...]:
    """``(test, rule)`` for each registered rule kind ``f`` uses, in the record's order:
    ``test`` is Python over ``var``, true when the value passes. They run after the range
    test, on a value of the right type within its range."""
    r = f.rules
    return tuple((e.test(var, v), r[e.kind]) for e, v in _extra_rules(f))


def field_rules(f: FieldIR, owner: str, label: str) -> dict[str, RuleIR]:
    """The rules ``f``'s checks report, by kind; ``owner`` names the header or message."""
    base = f"_R_{owner}_{f.name}"
    fm = f.fm

    def rule(kind: str, code: str, expected: str | None, text: str) -> RuleIR:
        return RuleIR(f"{base}_{kind}", code, label, expected, text, fm)

    c = f.constraints
    out = {"type": rule("type", "type", f.type_text, f"type: {f.type_text}")}
    if c.has_range:
        out["range"] = rule("range", "range", f.range_text, f"range: {f.range_text}")
    if f.is_tensor:
        out["dtype"] = rule(
            "dtype", "dtype", " | ".join(c.dtypes), "dtypes: " + ", ".join(c.dtypes)
        )
        out["shape"] = rule("shape", "shape", c.shape_expected, f"shape: {c.shape_text}")
        if "bool" in c.dtypes:
            out["bool"] = rule("bool", "range", "bool bytes 0 or 1", "bool tensor bytes: 0 or 1")
    if c.presence.always:
        out["missing"] = rule("missing", "missing", "a value", "required: always")
    elif f.required_when is not None:
        out["missing"] = rule(
            "missing", "missing", "a value", f"required_when: {f.required_when.text}"
        )
    if f.forbidden_when is not None:
        out["forbidden"] = rule(
            "forbidden", "forbidden", "absent", f"forbidden_when: {f.forbidden_when.text}"
        )
    if f.none_unless is not None:
        out["none"] = rule("none", "must_be_none", "None", f"none_unless: {f.none_unless.text}")
    if f.derived is not None:
        out["derived"] = rule(
            "derived", "invariant", None, f"derived: {f.name} == {f.derived.text}"
        )
    for e, value in _extra_rules(f):
        expected = e.expected(f.name, value)
        out[e.kind] = rule(e.kind, e.code, expected, f"{e.kind}: {expected}")
    return out


def plan_rule(m: MessageIR) -> RuleIR | None:
    d = m.discriminator
    if d is None:
        return None
    return RuleIR(
        f"_R_{m.name}_{d.name}_plan", "type", d.name, None, "discriminator selects the class", d.fm
    )


def version_rule(m: MessageIR) -> RuleIR | None:
    if m.version_field is None:
        return None
    return RuleIR(
        f"_R_{m.name}_{m.version_field}_version",
        "version",
        m.version_field,
        str(m.version),
        f"version: {m.name} v{m.version}",
        None,
        "unknown envelope version",
    )


def invariant_rule(m: MessageIR, inv: InvariantIR) -> RuleIR:
    return RuleIR(
        f"_I_{m.name}_{_ident(inv.id)}",  # apart from field rules: a field may be named `inv`
        "invariant",
        ", ".join(inv.expr.refs),
        inv.expr.text,
        f"invariant {inv.id}: {inv.expr.text}",
        inv.fm,
        inv.message,
    )


def protocol_rules(p: ProtocolIR) -> tuple[RuleIR, ...]:
    """Every rule constant of a protocol, in the order the validators use them."""
    out: list[RuleIR] = []
    for f in p.header.fields:
        out += f.rules.values()
    for m in p.messages:
        for f in m.fields:
            out += f.rules.values()
        for r in (plan_rule(m), version_rule(m)):
            if r is not None:
                out.append(r)
        out += [invariant_rule(m, inv) for inv in m.invariants]
    return tuple(out)


@dataclass(frozen=True)
class PresenceCheck:
    test: str  # Python, true when the rule is broken
    rule: str  # the rule constant
    value: str  # Python of the value the violation shows


@dataclass(frozen=True)
class PresenceGroup:
    cond: str  # Python the checks share ("" when they always run)
    checks: tuple[PresenceCheck, ...]


def _when(e: ExprIR, test: str) -> str:
    return " and ".join(part for part in (e.ok_py, test) if part)


def presence_groups(fields: tuple[FieldIR, ...]) -> tuple[PresenceGroup, ...]:
    """Required, forbidden and none-unless checks, grouped by the condition they share (in
    the order the condition first appears), so each condition is evaluated once."""
    groups: dict[str, list[PresenceCheck]] = {}
    for f in fields:
        value = f"{f.owner}.{f.name}"
        r = f.rules
        if f.always_required:
            groups.setdefault("", []).append(
                PresenceCheck(f"{value} is None", r["missing"].const, "None")
            )
        elif f.required_when is not None:
            groups.setdefault(_when(f.required_when, f.required_when.guarded), []).append(
                PresenceCheck(f"{value} is None", r["missing"].const, "None")
            )
        if f.forbidden_when is not None:
            groups.setdefault(_when(f.forbidden_when, f.forbidden_when.guarded), []).append(
                PresenceCheck(f"{value} is not None", r["forbidden"].const, value)
            )
        if f.none_unless is not None:
            groups.setdefault(_when(f.none_unless, f.none_unless.negated_guarded), []).append(
                PresenceCheck(f"{value} is not None", r["none"].const, value)
            )
    return tuple(PresenceGroup(cond, tuple(checks)) for cond, checks in groups.items())


@dataclass(frozen=True)
class DerivedCheck:
    name: str
    cond: str  # Python: the field is present and well-typed, and its inputs are usable
    want: str  # Python computing the value it must hold
    rule: str


def derived_checks(fields: tuple[FieldIR, ...]) -> tuple[DerivedCheck, ...]:
    out = []
    for f in fields:
        d = f.derived
        if d is None:
            continue
        parts = [f"(x := {f.owner}.{f.name}) is not None", f"{f.name!r} not in bad", d.ok_py]
        parts.append(d.none_guard)
        cond = " and ".join(p for p in parts if p)
        out.append(DerivedCheck(f.name, cond, d.py, f.rules["derived"].const))
    return tuple(out)


@dataclass(frozen=True)
class InvariantCheck:
    cond: str  # Python, true when the invariant is broken (and every input is usable)
    rule: str
    sides: str  # Python: the (text, value) pairs the violation shows


def invariant_checks(m: MessageIR) -> tuple[InvariantCheck, ...]:
    out = []
    for inv in m.invariants:
        e = inv.expr
        cond = " and ".join(p for p in (e.ok_py, e.none_guard, e.negated_py) if p)
        out.append(InvariantCheck(cond, invariant_rule(m, inv).const, e.sides_py))
    return tuple(out)


def tensor_field_py(f: FieldIR) -> str:
    """``_v.TensorField(...)``: name, manifest word, dtypes, shape pattern, element bound and
    the rules its checks report (type, dtype, shape, and bool bytes for a bool dtype)."""
    r = f.rules
    rules = [r["type"].const, r["dtype"].const, r["shape"].const]
    if "bool" in r:
        rules.append(r["bool"].const)
    return (
        f"_v.TensorField({f.name!r}, {f.word}, {f.dtypes_py}, {f.shape_pattern}, "
        f"{f.max_elements}, ({', '.join(rules)}))"
    )
