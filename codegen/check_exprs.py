"""Expression checks: conditions, derived values and invariants, typed against the fields.

The expression language itself (parsing, typing) is ``codegen/expr.py``; here each
expression of a spec is checked where it stands, its errors located inside its text
(docs/spec-language.md, "Expressions").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from . import codes, expr
from .check_context import Context, assignable
from .load import PathKey
from .model import CExpr, CField

#: The conditions that say when a field is sent, in the order they are attached.
CONDITIONS = ("required_when", "forbidden_when", "none_unless")


def check_expr(
    ctx: Context,
    source: str,
    path: PathKey,
    symbols: Mapping[str, expr.Sym],
    want: expr.Ty | None,
    what: str,
) -> CExpr | None:
    enums = {e.name: [m for m, _ in e.members] for e in ctx.enums.values()}
    try:
        node = expr.parse(source)
        ty = expr.typecheck(node, symbols, enums)
    except expr.ExprError as exc:
        ctx.fail(path, codes.named(exc.code), f"{what}: {exc.message}", offset=exc.offset)
        return None
    if want is not None and not assignable(ty, want):
        ctx.fail(path, codes.EXPR_TYPE, f"{what} must be {want}, got {ty}", offset=0)
        return None
    for sub in expr.walk(node):
        if (
            isinstance(sub, expr.Call)
            and sub.func == "len"
            and isinstance(sub.arg, expr.Name)
            and sub.arg.id in ctx.scalar_tensors
        ):
            ctx.fail(
                path,
                codes.EXPR_TYPE,
                f"{what}: len() of 0-d tensor {sub.arg.id!r}",
                offset=sub.offset,
            )
            return None
    return CExpr(source, node, path)


def attach_rules(
    ctx: Context, field: CField, body: Mapping[str, Any], symbols: Mapping[str, expr.Sym]
) -> CField:
    """The field with its conditions and derived value, each checked."""
    rules: dict[str, CExpr | None] = {}
    for key in CONDITIONS:
        if key in body:
            rules[key] = check_expr(
                ctx,
                body[key],
                (*field.path, key),
                symbols,
                expr.BOOL,
                f"{key} of {field.name!r}",
            )
    # 'derived' on other kinds is already reported as bad-key (and Ty("enum") would raise).
    if "derived" in body and field.type.kind in ("int", "float", "bool"):
        rules["derived"] = node = check_expr(
            ctx,
            body["derived"],
            (*field.path, "derived"),
            symbols,
            field.type.ty,
            f"derived of {field.name!r}",
        )
        if node is not None and field.name in expr.names(node.node):
            at = next(
                n.offset
                for n in expr.walk(node.node)
                if isinstance(n, expr.Name) and n.id == field.name
            )
            ctx.fail(
                (*field.path, "derived"),
                codes.DERIVED_CYCLE,
                f"{field.name!r} is derived from itself",
                offset=at,
            )
    return dataclasses.replace(
        field,
        required_when=rules.get("required_when"),
        forbidden_when=rules.get("forbidden_when"),
        none_unless=rules.get("none_unless"),
        derived=rules.get("derived"),
    )


def _chain(deps: Mapping[str, list[str]], order: Mapping[str, int], start: str) -> list[str] | None:
    """The shortest chain of derived fields from ``start`` back to itself."""
    came: dict[str, str] = {start: start}
    frontier = [start]
    while frontier:
        nxt = []
        for n in frontier:
            for d in sorted(deps[n], key=order.__getitem__):
                if d == start:
                    chain = [n]
                    while chain[-1] != start:
                        chain.append(came[chain[-1]])
                    return chain[::-1]
                if d not in came:
                    came[d] = n
                    nxt.append(d)
        frontier = nxt
    return None


def check_derived_cycles(ctx: Context, fields: Mapping[str, CField]) -> None:
    """Derived fields that depend on each other in a cycle (one error per cycle, at the
    first field of it in spec order; a field derived from itself is reported already)."""
    deps = {
        n: [d for d in expr.names(f.derived.node) if d != n and d in fields and fields[d].derived]
        for n, f in fields.items()
        if f.derived is not None
    }
    order = {n: i for i, n in enumerate(fields)}
    reported: set[str] = set()
    for name in deps:
        if name in reported:
            continue
        chain = _chain(deps, order, name)
        if chain is None or len(chain) < 2:
            continue
        reported.update(chain)
        derived = fields[name].derived
        assert derived is not None
        at = next(
            n.offset
            for n in expr.walk(derived.node)
            if isinstance(n, expr.Name) and n.id == chain[1]
        )
        loop = " -> ".join(repr(n) for n in [*chain, name])
        ctx.fail(
            derived.path,
            codes.DERIVED_CYCLE,
            f"derived fields depend on each other in a cycle: {loop}",
            offset=at,
        )
