"""Message checks: id, version and action, dimensions, fields, the discriminator and
version field, invariants, and what the messages of one spec must not share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import codes, expr
from .check_cached import check_cached, check_cached_reads
from .check_context import INT64_MAX, MAX_FIELDS, Context, did_you_mean, short
from .check_exprs import attach_rules, check_derived_cycles, check_expr
from .check_fields import check_field
from .load import PathKey
from .model import CDim, CEnum, CField, CInvariant, CMessage


def _check_head(
    ctx: Context, path: PathKey, body: Mapping[str, Any], action_enum: CEnum | None
) -> None:
    """id and version in 1..2**31-1, an action of the action enum."""
    for key in ("id", "version"):
        v = body[key]
        if type(v) is not int or not 1 <= v <= 2**31 - 1:
            ctx.fail(
                (*path, key),
                codes.BAD_VERSION if key == "version" else codes.BAD_ID,
                f"message {key} must be an integer >= 1, got {v!r}",
            )
    action = body["action"]
    if action_enum is not None and action not in dict(action_enum.members):
        hint = did_you_mean(action, dict(action_enum.members))
        ctx.fail(
            (*path, "action"),
            codes.UNKNOWN_ACTION,
            f"{action!r} is not a member of {action_enum.name}{hint}",
        )


def _check_dims(ctx: Context, path: PathKey, body: Mapping[str, Any]) -> dict[str, CDim]:
    dims: dict[str, CDim] = {}
    for dname, dbody in body.get("dims", {}).items():
        dmin, dmax = dbody.get("min", 0), dbody["max"]
        if type(dmin) is not int or type(dmax) is not int:
            ctx.fail(
                (*path, "dims", dname),
                codes.NOT_INTEGER,
                f"dimension {dname} bounds must be integers",
            )
            continue
        for key, bound in (("min", dmin), ("max", dmax)):
            if bound > INT64_MAX:
                ctx.fail(
                    (*path, "dims", dname, key),
                    codes.BAD_RANGE,
                    f"dimension {dname} {key} {short(bound)} does not fit int64",
                )
        if dmin < 0 or dmin > dmax:
            ctx.fail(
                (*path, "dims", dname),
                codes.IMPOSSIBLE_RANGE,
                f"dimension {dname} range {dmin}..{dmax} is empty or negative",
            )
        dims[dname] = CDim(dname, dmin, dmax, dbody.get("doc", ""))
    return dims


def _check_fields(
    ctx: Context, path: PathKey, fields_body: Mapping[str, Any], dims: Mapping[str, CDim]
) -> dict[str, CField]:
    """The message's fields without their expressions; every dimension bound by a tensor."""
    if len(fields_body) > MAX_FIELDS:
        ctx.fail(
            (*path, "fields"),
            codes.TOO_MANY_FIELDS,
            f"message has {len(fields_body)} fields, the limit is {MAX_FIELDS}",
        )
    fields: dict[str, CField] = {}
    for fname, fbody in fields_body.items():
        if fname in dims:
            ctx.fail(
                (*path, "fields", fname),
                codes.DUPLICATE_NAME,
                f"{fname!r} is both a field and a dimension",
                key=True,
            )
        f = check_field(ctx, fname, fbody, (*path, "fields", fname), dims)
        if f is not None:
            fields[fname] = f
    used = {d for f in fields.values() for d in f.shape if isinstance(d, str)}
    for dname in dims:
        if dname not in used:
            ctx.fail(
                (*path, "dims", dname),
                codes.UNUSED_DIM,
                f"dimension {dname} is bound by no tensor",
                key=True,
            )
    return fields


def _symbols(fields: Mapping[str, CField], dims: Mapping[str, CDim]) -> dict[str, expr.Sym]:
    """What the message's expressions may read: its fields and dimensions, each None-able
    unless always present (a dimension is, when a tensor on every envelope binds it)."""
    symbols = {n: expr.Sym(f.type.ty, not f.always_required) for n, f in fields.items()}
    for dname in dims:
        binders = [f for f in fields.values() if dname in f.shape]
        symbols[dname] = expr.Sym(expr.INT, not any(f.always_required for f in binders))
    return symbols


def _check_special_fields(
    ctx: Context, path: PathKey, body: Mapping[str, Any], fields: Mapping[str, CField]
) -> None:
    """The discriminator is a required enum field, the version field an int field."""
    disc = body.get("discriminator")
    if disc is not None:
        f = fields.get(disc)
        if f is None:
            ctx.fail(
                (*path, "discriminator"),
                codes.UNKNOWN_FIELD,
                f"discriminator {disc!r} is not a field{did_you_mean(disc, fields)}",
            )
        elif f.type.kind != "enum" or not f.always_required:
            ctx.fail(
                (*path, "discriminator"),
                codes.BAD_TYPE,
                f"discriminator {disc!r} must be a required enum field without rules",
            )
    vfield = body.get("version_field")
    if vfield is not None:
        f = fields.get(vfield)
        if f is None:
            ctx.fail(
                (*path, "version_field"),
                codes.UNKNOWN_FIELD,
                f"version_field {vfield!r} is not a field{did_you_mean(vfield, fields)}",
            )
        elif f.type.kind != "int":
            ctx.fail(
                (*path, "version_field"),
                codes.BAD_TYPE,
                f"version_field {vfield!r} must be an int field",
            )


def _check_invariants(
    ctx: Context, path: PathKey, body: Mapping[str, Any], symbols: Mapping[str, expr.Sym]
) -> list[CInvariant]:
    invariants = []
    seen_ids: set[str] = set()
    for i, inv in enumerate(body.get("invariants", [])):
        ipath = (*path, "invariants", i)
        if inv["id"] in seen_ids:
            ctx.fail(
                (*ipath, "id"),
                codes.DUPLICATE_INVARIANT,
                f"invariant id {inv['id']!r} is used twice",
            )
        seen_ids.add(inv["id"])
        ce = check_expr(
            ctx, inv["expr"], (*ipath, "expr"), symbols, expr.BOOL, f"invariant {inv['id']!r}"
        )
        if ce is not None:
            invariants.append(CInvariant(inv["id"], ce, inv["message"], inv.get("fm")))
    return invariants


def check_message(
    ctx: Context, name: str, body: Mapping[str, Any], action_enum: CEnum | None
) -> CMessage | None:
    path: PathKey = ("messages", name)
    _check_head(ctx, path, body, action_enum)
    dims = _check_dims(ctx, path, body)
    fields_body: dict[str, Any] = body["fields"]
    fields = _check_fields(ctx, path, fields_body, dims)
    symbols = _symbols(fields, dims)
    ctx.scalar_tensors = frozenset(
        n for n, f in fields.items() if f.type.kind == "tensor" and not f.shape
    )
    for fname, f in list(fields.items()):
        fields[fname] = attach_rules(ctx, f, fields_body[fname], symbols)
    check_derived_cycles(ctx, fields)
    check_cached(ctx, fields)
    _check_special_fields(ctx, path, body, fields)
    invariants = _check_invariants(ctx, path, body, symbols)
    if ctx.stream_rules:
        check_cached_reads(ctx, fields, invariants)
    return CMessage(
        name=name,
        path=path,
        id=body["id"],
        version=body["version"],
        action=body["action"],
        discriminator=body.get("discriminator"),
        version_field=body.get("version_field"),
        doc=body.get("doc", ""),
        dims=tuple(dims.values()),
        fields=tuple(fields.values()),
        invariants=tuple(invariants),
    )


def check_messages(
    ctx: Context, action_enum: CEnum | None
) -> tuple[list[CMessage], dict[str, str]]:
    """Every message, and no id or action used twice; also action member -> its message."""
    messages = []
    ids: dict[int, str] = {}
    actions: dict[str, str] = {}
    for name, body in ctx.data["messages"].items():
        m = check_message(ctx, name, body, action_enum)
        if m is None:
            continue
        if m.id in ids:
            ctx.fail(
                (*m.path, "id"),
                codes.DUPLICATE_ID,
                f"message id {m.id} is already used by {ids[m.id]}",
            )
        ids[m.id] = name
        if m.action in actions:
            ctx.fail(
                (*m.path, "action"),
                codes.DUPLICATE_ACTION,
                f"action {m.action} already carries {actions[m.action]}",
            )
        actions[m.action] = name
        messages.append(m)
    return messages, actions
