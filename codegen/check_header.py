"""Header checks: slots, fields, the action field, roles and control actions
(docs/spec-language.md, "Roles and control actions")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import codes, expr
from .check_context import MAX_HEADER_FIELDS, Context, did_you_mean
from .check_exprs import attach_rules, check_derived_cycles
from .check_fields import check_field
from .load import PathKey
from .model import CONTROLS, ROLES, CEnum, CField, CHeader

HEADER: PathKey = ("header",)


def _check_slots(ctx: Context, slots: list[str], fields_body: Mapping[str, Any]) -> None:
    """The slots list each header field exactly once."""
    if len(fields_body) > MAX_HEADER_FIELDS:
        ctx.fail(
            (*HEADER, "fields"),
            codes.TOO_MANY_FIELDS,
            f"header has over {MAX_HEADER_FIELDS} fields",
        )
    seen: set[str] = set()
    for i, s in enumerate(slots):
        if s in seen:
            ctx.fail((*HEADER, "slots", i), codes.SLOT_ORDER, f"slot {s!r} listed twice")
        elif s not in fields_body:
            hint = did_you_mean(s, fields_body)
            ctx.fail(
                (*HEADER, "slots", i), codes.SLOT_ORDER, f"slot {s!r} is not a header field{hint}"
            )
        seen.add(s)
    for name in fields_body:
        if name not in seen:
            ctx.fail(
                (*HEADER, "fields", name),
                codes.SLOT_ORDER,
                f"header field {name!r} has no slot",
                key=True,
            )


def _header_fields(ctx: Context, fields_body: Mapping[str, Any]) -> dict[str, CField]:
    """The header's fields that are int, bool or an enum and not cached."""
    fields: dict[str, CField] = {}
    for name, fbody in fields_body.items():
        f = check_field(ctx, name, fbody, (*HEADER, "fields", name), {})
        if f is None:
            continue
        if f.cached_by is not None:
            ctx.fail(
                (*HEADER, "fields", name, "cached_by"),
                codes.BAD_CACHED_BY,
                f"header field {name!r} cannot be cached_by an epoch: only message fields "
                "are (the header travels with every frame)",
            )
            continue
        if f.type.kind not in ("int", "bool", "enum"):
            ctx.fail(
                (*HEADER, "fields", name, "type"),
                codes.BAD_TYPE,
                f"header field {name!r} must be int, bool or an enum, got {f.type}",
            )
            continue
        fields[name] = f
    return fields


def check_header(ctx: Context) -> CHeader | None:
    body = ctx.data["header"]
    fields_body: dict[str, Any] = body["fields"]
    slots: list[str] = body["slots"]
    _check_slots(ctx, slots, fields_body)
    fields = _header_fields(ctx, fields_body)
    action = body["action"]
    if action not in fields_body:
        ctx.fail(
            (*HEADER, "action"),
            codes.UNKNOWN_FIELD,
            f"action field {action!r} is not a header field{did_you_mean(action, fields_body)}",
        )
    elif action in fields and (
        fields[action].type.kind != "enum" or not fields[action].always_required
    ):
        ctx.fail(
            (*HEADER, "action"), codes.BAD_TYPE, f"action field {action!r} must be a required enum"
        )
    symbols = {n: expr.Sym(f.type.ty, not f.always_required) for n, f in fields.items()}
    for name, f in list(fields.items()):
        fields[name] = attach_rules(ctx, f, fields_body[name], symbols)
    check_derived_cycles(ctx, fields)
    ordered = tuple(fields[s] for s in slots if s in fields)
    roles = check_roles(ctx, body["roles"], fields_body, fields)
    return CHeader(tuple(slots), action, ordered, body.get("doc", ""), roles)


def _role_problem(ctx: Context, role: str, f: CField) -> tuple[PathKey, str] | None:
    """(where, why) ``f`` cannot play ``role``, or None."""
    name = f.name
    path: PathKey = (*HEADER, "roles", role)
    if f.type.kind != "int":
        return path, f"{role} role: {name!r} must be an int, got {f.type}"
    if f.range_min is None or f.range_min < 0:
        return path, f"{role} role: {name!r} must be non-negative (range: {{min: 0}} or more)"
    if role != "chunk" and not f.always_required:
        return path, (
            f"{role} role: {name!r} must be on every envelope (a required int, not "
            f"{f.type}{' with required_when' if f.required_when else ''})"
        )
    if role == "sequence" and f.derived is not None and ctx.stream_rules:
        return f.derived.path, (
            f"sequence role: {name!r} cannot be derived: a control frame (heartbeat, "
            "shutdown, error) takes the next sequence id and keeps the other header "
            "fields of the envelope before it, so a value computed from them could "
            "not increase with every envelope"
        )
    return None


def check_roles(
    ctx: Context,
    body: Mapping[str, str],
    fields_body: Mapping[str, Any],
    fields: dict[str, CField],
) -> tuple[tuple[str, str], ...]:
    """Each role names a header int field that never goes negative; sequence and epoch
    are on every envelope (a chunk id may be absent where no payload follows)."""
    out: list[tuple[str, str]] = []
    taken: dict[str, str] = {}
    for role in ROLES:
        name = body.get(role)
        if name is None:
            continue
        path: PathKey = (*HEADER, "roles", role)
        if name not in fields_body:
            hint = did_you_mean(name, fields_body)
            ctx.fail(
                path, codes.UNKNOWN_FIELD, f"{role} role: {name!r} is not a header field{hint}"
            )
            continue
        if name in taken:
            ctx.fail(path, codes.BAD_ROLE, f"{role} role: {name!r} already plays {taken[name]}")
            continue
        taken[name] = role
        f = fields.get(name)
        if f is None:
            continue  # its own error is reported already
        problem = _role_problem(ctx, role, f)
        if problem is not None:
            ctx.fail(problem[0], codes.BAD_ROLE, problem[1])
            continue
        out.append((role, name))
    return tuple(out)


def check_control(
    ctx: Context, body: Mapping[str, str], action_enum: CEnum | None, actions: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """Each control role names an action member that carries no message."""
    out: list[tuple[str, str]] = []
    taken: dict[str, str] = {}
    members = dict(action_enum.members) if action_enum is not None else {}
    for role in CONTROLS:
        member = body.get(role)
        if member is None:
            continue
        path: PathKey = (*HEADER, "control", role)
        if action_enum is not None and member not in members:
            hint = did_you_mean(member, members)
            ctx.fail(
                path,
                codes.UNKNOWN_ACTION,
                f"{role} control: {member!r} is not a member of {action_enum.name}{hint}",
            )
            continue
        if member in taken:
            ctx.fail(path, codes.BAD_ROLE, f"{role} control: {member} is already {taken[member]}")
            continue
        taken[member] = role
        if member in actions:
            ctx.fail(
                path,
                codes.BAD_ROLE,
                f"{role} control: {member} carries {actions[member]}; control actions carry "
                "no message",
            )
            continue
        out.append((role, member))
    return tuple(out)
