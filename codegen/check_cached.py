"""``cached_by`` checks: a field sent only when its epoch increments (docs/spec-language.md,
"Fields cached by an epoch").

The epoch is an int field of the same message that is neither cached nor derived; the
cached field has no rule that says when it is sent (its epoch does), no ``| None`` (absent
means "unchanged") and is no epoch itself. No rule reads a cached field. The rules across
envelopes are the runtime's (``tpwire.runtime.epochs``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from . import codes, expr
from .check_context import Context, did_you_mean
from .model import CExpr, CField, CInvariant


def _epoch_problems(ctx: Context, f: CField, epoch: CField) -> bool:
    """Report what is wrong with ``f``'s epoch and ``f`` itself; whether all is well."""
    name, epoch_name = f.name, epoch.name
    at = (*f.path, "cached_by")
    ok = True
    if epoch.type.kind != "int" or epoch.type.nullable:
        ctx.fail(
            at,
            codes.BAD_CACHED_BY,
            f"cached_by of {name!r}: epoch field {epoch_name!r} must be an int "
            f"(a non-decreasing counter), got {epoch.type}",
        )
        ok = False
    elif epoch.cached_by is not None or epoch.derived is not None:
        what = "cached" if epoch.cached_by is not None else "derived"
        ctx.fail(
            at,
            codes.BAD_CACHED_BY,
            f"cached_by of {name!r}: epoch field {epoch_name!r} is {what} itself; "
            "the epoch must travel in every envelope that uses it",
        )
        ok = False
    for key, present in (
        ("required_when", f.required_when),
        ("forbidden_when", f.forbidden_when if ctx.stream_rules else None),
        ("none_unless", f.none_unless),
        ("derived", f.derived),
    ):
        if present is not None:
            ctx.fail(
                (*f.path, key),
                codes.BAD_CACHED_BY,
                f"{name!r} is cached_by {epoch_name!r}: it is sent exactly when that "
                f"epoch increments, so it cannot also declare {key}",
            )
            ok = False
    if f.type.nullable:
        ctx.fail(
            (*f.path, "type"),
            codes.BAD_CACHED_BY,
            f"{name!r} is cached_by {epoch_name!r}: absent means 'unchanged', so its "
            f"type cannot also admit None ({f.type})",
        )
        ok = False
    return ok


def check_cached(ctx: Context, fields: dict[str, CField]) -> None:
    """Each ``cached_by``, lowered to a single-envelope rule where it holds: absent
    whenever its epoch is (``none_unless``)."""
    for name, f in list(fields.items()):
        epoch_name = f.cached_by
        if epoch_name is None:
            continue
        at = (*f.path, "cached_by")
        epoch = fields.get(epoch_name)
        if epoch_name == name:
            ctx.fail(at, codes.BAD_CACHED_BY, f"{name!r} cannot be cached by itself")
            continue
        if epoch is None:
            hint = did_you_mean(epoch_name, fields)
            ctx.fail(
                at,
                codes.UNKNOWN_FIELD,
                f"cached_by of {name!r}: {epoch_name!r} is not a field of this message{hint}",
            )
            continue
        if _epoch_problems(ctx, f, epoch) and not epoch.always_required:
            # absent whenever the epoch is: the only rule one envelope can check
            source = f"{epoch_name} is not None"
            fields[name] = dataclasses.replace(f, none_unless=CExpr(source, expr.parse(source), at))


def _check_cached_dims(
    ctx: Context, fields: Mapping[str, CField], cached: Mapping[str, str]
) -> dict[str, str]:
    """A cached tensor shares its dimensions only with fields cached by the same epoch (they
    travel together). Returns dimension -> the first cached tensor that binds it."""
    binder: dict[str, str] = {}
    for name, f in fields.items():
        epoch = cached.get(name)
        if epoch is None:
            continue
        seen: set[str] = set()
        for i, d in enumerate(f.shape):
            if not isinstance(d, str) or d in seen:
                continue
            seen.add(d)
            binder.setdefault(d, name)
            other = next(
                (
                    g
                    for g in fields.values()
                    if g.name != name and d in g.shape and cached.get(g.name) != epoch
                ),
                None,
            )
            if other is None:
                continue
            how = (
                f"is cached_by {cached[other.name]!r}"
                if other.name in cached
                else "travels in every envelope"
            )
            ctx.fail(
                (*f.path, "shape", i),
                codes.BAD_CACHED_BY,
                f"dimension {d!r} of {name!r} (cached_by {epoch!r}) is also bound by "
                f"{other.name!r}, which {how}: while {name!r} is held it binds "
                f"nothing, and handed over with the kept value it must match again; "
                "a cached tensor's dimensions are its own",
            )
    return binder


def _cached_read(
    fields: Mapping[str, CField], cached: Mapping[str, str], binder: Mapping[str, str], name: str
) -> tuple[str, str] | None:
    """(what is read, how it is while held) where ``name`` is a cached field or a dimension
    a cached tensor binds; None for any other name."""
    if name in cached:
        epoch = cached[name]
        return f"{name!r}, which is cached_by {epoch!r}", f"without {name!r} while {epoch!r} holds"
    if name in binder and name not in fields:
        tensor = binder[name]
        epoch = cached[tensor]
        read = f"dimension {name!r}, bound by {tensor!r}, which is cached_by {epoch!r}"
        return read, f"unbound while {epoch!r} holds"
    return None


def check_cached_reads(
    ctx: Context, fields: Mapping[str, CField], invariants: Sequence[CInvariant]
) -> None:
    """No rule reads a field cached by an epoch, nor a dimension such a field binds.

    Every end checks an envelope as it travels, where a cached field is absent while
    its epoch holds, and a receiver hands it over with the kept value filled in: a rule
    that reads the cached field (its value or its presence) would be checked on one of
    the two and could fail on the other, so a worker would get a message its own
    ``validate`` refuses."""
    cached = {
        n: f.cached_by
        for n, f in fields.items()
        if f.cached_by is not None and f.cached_by != n and f.cached_by in fields
    }
    if not cached:
        return
    binder = _check_cached_dims(ctx, fields, cached)
    rules: list[tuple[str, CExpr]] = [
        (f"{key} of {name!r}", rule)
        for name, f in fields.items()
        if name not in cached  # a cached field's own rules: check_cached
        for key in ("required_when", "forbidden_when", "none_unless", "derived")
        if (rule := getattr(f, key)) is not None
    ]
    rules += [(f"invariant {inv.id!r}", inv.expr) for inv in invariants]
    for what, rule in rules:
        for node in expr.walk(rule.node):
            if not isinstance(node, expr.Name):
                continue
            found = _cached_read(fields, cached, binder, node.id)
            if found is None:
                continue
            read, held = found
            ctx.fail(
                rule.path,
                codes.BAD_CACHED_BY,
                f"{what} reads {read}: the envelope is checked as it travels ({held}) "
                "and handed over with the kept value, so the two could disagree; a rule "
                "cannot read a cached field",
                offset=node.offset,
            )
            break  # one error per rule
