"""Breaking rules of the "invariants" group: invariants added, deleted, strengthened,
weakened, or changed where enumeration cannot decide (docs/evolution.md, "How it decides").
``codegen/breaking_pairs.py`` pairs only the invariants whose group of invariants (those
sharing names) admits other envelopes in the new spec than in the old one."""

from __future__ import annotations

from . import domains
from .breaking_conditions import invariant_diff
from .breaking_pairs import InvariantPair, rule
from .domains import Diff, Undecided


def _compared(p: InvariantPair) -> Diff | Undecided | None:
    """What the new invariant admits against the old one (None: the same text, no field
    renamed)."""
    o, n, m = p.old, p.new, p.message
    if o is not None and n is not None and o.expr.text == n.expr.text and not m.rename:
        return None
    return invariant_diff(o, n, m.old_scope, m.new_scope, m.rename)


@rule("INVARIANT_ADDED", "tightening", "invariants", "a new invariant")
def invariant_added(p: InvariantPair) -> None:
    if p.old is not None or p.new is None:
        return
    diff = p.once(_compared)
    text = f"invariant {p.new.id} added: {p.new.expr.text}"
    if isinstance(diff, Undecided):
        p.emit("INVARIANT_ADDED", text)
    elif diff is not None and diff.lost:
        p.emit("INVARIANT_ADDED", f"{text} (refuses {diff.lost})")


@rule("INVARIANT_REMOVED", "loosening", "invariants", "an invariant was deleted")
def invariant_removed(p: InvariantPair) -> None:
    if p.new is not None or p.old is None:
        return
    diff = p.once(_compared)
    text = f"invariant {p.old.id} deleted (was {p.old.expr.text}"
    if isinstance(diff, Undecided):
        p.emit("INVARIANT_REMOVED", f"{text})")
    elif diff is not None and diff.gained:
        p.emit("INVARIANT_REMOVED", f"{text}; old receivers refuse {diff.gained})")


def _change(p: InvariantPair) -> str:
    assert p.old is not None and p.new is not None
    return f"invariant {p.name}: {p.old.expr.text} -> {p.new.expr.text}"


@rule("INVARIANT_STRENGTHENED", "tightening", "invariants", "an invariant admits less")
def invariant_strengthened(p: InvariantPair) -> None:
    diff = p.once(_compared) if p.old is not None and p.new is not None else None
    if isinstance(diff, Diff) and diff.lost:
        p.emit("INVARIANT_STRENGTHENED", f"{_change(p)} (now refuses {diff.lost})")


@rule("INVARIANT_WEAKENED", "loosening", "invariants", "an invariant admits more")
def invariant_weakened(p: InvariantPair) -> None:
    diff = p.once(_compared) if p.old is not None and p.new is not None else None
    if isinstance(diff, Diff) and diff.gained:
        p.emit("INVARIANT_WEAKENED", f"{_change(p)} (now admits {diff.gained})")


@rule("INVARIANT_CHANGED", "both", "invariants", "an invariant changed, not decided exactly")
def invariant_changed(p: InvariantPair) -> None:
    o, n = p.old, p.new
    if o is None or n is None or not isinstance(p.once(_compared), Undecided):
        return
    if not p.message.rename and domains.same_form(o.expr.node, n.expr.node):
        return  # the same normal form: equal
    if o.expr.text != n.expr.text:
        p.emit("INVARIANT_CHANGED", f"{_change(p)} (not decided exactly: {p.once(_compared)})")
