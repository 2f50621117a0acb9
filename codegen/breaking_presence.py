"""Breaking rules of the "presence" group: where a field is required or must be absent,
compared by meaning (``codegen/breaking_conditions.py``; docs/evolution.md, "How it
decides"). A field without presence rules on either side is ``FIELD_(NOT_)NULLABLE``
(``codegen/breaking_fields.py``)."""

from __future__ import annotations

from .breaking_conditions import PresenceDiff, presence_diff, same_presence_form
from .breaking_pairs import FieldPair, rule
from .constraints import Presence
from .domains import Undecided


def _compared(p: FieldPair) -> PresenceDiff | Undecided | None:
    """The two fields' presence rules compared (None: none to compare, or the same rules
    over the same names)."""
    o, n = p.oc.presence, p.nc.presence
    if not o.conditions and not n.conditions:
        return None
    if (
        [(k, c.text) for k, c in o.conditions] == [(k, c.text) for k, c in n.conditions]
        and o.always == n.always
        and not p.rename
    ):
        return None
    return presence_diff(o, n, p.old_scope, p.new_scope, p.rename)


def _rules_text(p: Presence) -> str:
    parts = ["always required"] if p.always else []
    parts += [f"{key}: {ce.text}" for key, ce in p.conditions]
    return "; ".join(parts) or "optional"


def _change(p: FieldPair) -> str:
    return f"({_rules_text(p.oc.presence)} -> {_rules_text(p.nc.presence)})"


def _where(p: FieldPair, *prefer: str) -> tuple[str, ...]:
    """The new field's key to locate a finding at: the first of ``prefer``, then of the
    presence rules, it declares (else its type)."""
    declared = {k for k, _ in p.nc.presence.conditions}
    for key in (*prefer, "required_when", "forbidden_when", "none_unless"):
        if key in declared:
            return (key,)
    return ("type",)


@rule("PRESENCE_REQUIRED_WIDENED", "tightening", "presence", "required for more envelopes")
def presence_required_widened(p: FieldPair) -> None:
    d = p.once(_compared)
    if isinstance(d, PresenceDiff) and d.required.gained:
        text = f"{p.subject} is now required when {d.required.gained} {_change(p)}"
        p.emit("PRESENCE_REQUIRED_WIDENED", text, _where(p, "required_when"))


@rule("PRESENCE_REQUIRED_NARROWED", "loosening", "presence", "required for fewer envelopes")
def presence_required_narrowed(p: FieldPair) -> None:
    d = p.once(_compared)
    if isinstance(d, PresenceDiff) and d.required.lost:
        text = f"{p.subject} is no longer required when {d.required.lost} {_change(p)}"
        p.emit("PRESENCE_REQUIRED_NARROWED", text, _where(p, "required_when"))


@rule("PRESENCE_FORBIDDEN_WIDENED", "tightening", "presence", "forbidden (or None) for more")
def presence_forbidden_widened(p: FieldPair) -> None:
    d = p.once(_compared)
    if isinstance(d, PresenceDiff) and d.forbidden.gained:
        text = f"{p.subject} must now be absent when {d.forbidden.gained} {_change(p)}"
        p.emit("PRESENCE_FORBIDDEN_WIDENED", text, _where(p, "forbidden_when", "none_unless"))


@rule("PRESENCE_FORBIDDEN_NARROWED", "loosening", "presence", "forbidden (or None) for fewer")
def presence_forbidden_narrowed(p: FieldPair) -> None:
    d = p.once(_compared)
    if isinstance(d, PresenceDiff) and d.forbidden.lost:
        text = f"{p.subject} may now be present when {d.forbidden.lost} {_change(p)}"
        p.emit("PRESENCE_FORBIDDEN_NARROWED", text, _where(p, "forbidden_when", "none_unless"))


@rule("PRESENCE_CHANGED", "both", "presence", "presence rules changed, not decided exactly")
def presence_changed(p: FieldPair) -> None:
    d = p.once(_compared)
    if not isinstance(d, Undecided):
        return
    o, n = p.oc.presence, p.nc.presence
    if not p.rename and same_presence_form(o, n):
        return  # the same normal form: equal
    if _rules_text(o) != _rules_text(n):
        text = f"{p.subject} presence {_rules_text(o)} -> {_rules_text(n)}"
        p.emit("PRESENCE_CHANGED", f"{text} (not decided exactly: {d})", _where(p))
