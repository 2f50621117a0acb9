"""Spec expressions lowered to :class:`~.ir.ExprIR`: the Python a validator evaluates, over
the object holding the fields and over plain data (the strategies' form), with the guards
that keep a nullable operand from being read as a value (docs/spec-language.md,
expressions)."""

from __future__ import annotations

from collections.abc import Callable

from . import expr
from .ir import ExprIR
from .model import CExpr


def python_expr(
    ce: CExpr,
    ref: str,
    nullable: frozenset[str],
    fields: frozenset[str],
    scalars: frozenset[str] = frozenset(),
    tensors: frozenset[str] = frozenset(),
) -> ExprIR:
    """``ce`` with fields read from ``ref`` (``h`` or ``m``) and dimensions from their
    ``dim_<name>`` locals; ``nullable`` names the operands that may be None, ``scalars`` the
    fields an equality conjunct may solve for, ``tensors`` those ``len()`` reads."""

    def name(n: str) -> str:
        return f"{ref}.{n}" if n in fields else f"dim_{n}"

    def enum_member(e: str, m: str) -> str:
        return f"{e}.{m}"

    node = ce.node
    py = expr.to_python(node, name, enum_member, tensors)
    guard = " and ".join(
        f"{name(n)} is not None" for n in sorted(expr.value_names(node) & nullable)
    )
    refs = tuple(sorted(expr.names(node) & fields))
    if isinstance(node, expr.Compare):
        sides = tuple(
            (expr.to_text(side), expr.to_python(side, name, enum_member, tensors))
            for side in (node.left, node.right)
        )
    else:
        sides = tuple((n, name(n)) for n in sorted(expr.names(node)))

    def data_name(n: str) -> str:
        return f"f[{n!r}]" if n in fields else f"d[{n!r}]"

    data_py = expr.to_python(node, data_name, enum_member)
    data_guard = " and ".join(
        f"{data_name(n)} is not None" for n in sorted(expr.value_names(node) & nullable)
    )
    negated = expr.to_python(expr.Not(node), name, enum_member, tensors)
    return ExprIR(
        expr.to_text(node),
        py,
        negated,
        guard,
        refs,
        node,
        sides,
        data_py,
        data_guard,
        _solves(node, scalars, data_name, enum_member),
    )


def _solves(
    node: expr.Node,
    scalars: frozenset[str],
    data_name: Callable[[str], str],
    enum_member: Callable[[str, str], str],
) -> tuple[tuple[str, str], ...]:
    """``(field, python)`` for each ``field == expr`` conjunct on a scalar field that the
    other side does not read: the strategies make the expression hold by assigning it."""
    solves: list[tuple[str, str]] = []
    conjuncts = node.values if isinstance(node, expr.BoolOp) and node.op == "and" else (node,)
    for part in conjuncts:
        if not (isinstance(part, expr.Compare) and part.op == "=="):
            continue
        for target, other in ((part.left, part.right), (part.right, part.left)):
            if (
                isinstance(target, expr.Name)
                and target.id in scalars
                and target.id not in expr.names(other)
            ):
                solves.append((target.id, expr.to_python(other, data_name, enum_member)))
                break
    return tuple(solves)
