"""Breaking rules of the "derived" group: a field that became derived, is no longer derived,
or whose formula computes other values, compared by meaning (``codegen/breaking_conditions.py``;
docs/evolution.md, "How it decides")."""

from __future__ import annotations

from . import domains
from .breaking_conditions import derived_difference
from .breaking_pairs import FieldPair, rule
from .domains import Undecided
from .model import CExpr


def _formulas(p: FieldPair) -> tuple[CExpr | None, CExpr | None]:
    """The old and new formulas; a retyped field's are not compared (``FIELD_RETYPED``)."""
    return (None, None) if p.retyped else (p.oc.derived, p.nc.derived)


@rule("DERIVED_ADDED", "tightening", "derived", "a field became derived")
def derived_added(p: FieldPair) -> None:
    old, new = _formulas(p)
    if old is None and new is not None:
        p.emit("DERIVED_ADDED", f"{p.subject} is now derived: {new.text}", ("derived",))


@rule("DERIVED_REMOVED", "loosening", "derived", "a field is no longer derived")
def derived_removed(p: FieldPair) -> None:
    old, new = _formulas(p)
    if old is not None and new is None:
        p.emit("DERIVED_REMOVED", f"{p.subject} is no longer derived (was {old.text})")


@rule("DERIVED_CHANGED", "both", "derived", "a derived formula computes other values")
def derived_changed(p: FieldPair) -> None:
    old, new = _formulas(p)
    if old is None or new is None or (old.text == new.text and not p.rename):
        return
    where = derived_difference(old, new, p.old_scope, p.new_scope, p.rename)
    change = f"{p.subject} derived {old.text} -> {new.text}"
    if isinstance(where, Undecided):
        if old.text != new.text and (p.rename or not domains.same_form(old.node, new.node)):
            p.emit("DERIVED_CHANGED", f"{change} (not decided exactly: {where})", ("derived",))
    elif where is not None:
        p.emit("DERIVED_CHANGED", f"{change} (they differ when {where})", ("derived",))
