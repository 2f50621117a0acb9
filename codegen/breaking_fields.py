"""Breaking rules of the "fields" group: fields added, deleted, renamed or retyped, made
nullable or required, value bounds (``range``, ``max_len``) and ``cached_by``
(docs/evolution.md, "Rule catalogue"). Bounds are read off the fields' constraint records
(``codegen/constraints.py``)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from .breaking_conditions import ever_required
from .breaking_pairs import FieldAdded, FieldPair, FieldRemoved, rule

# --- fields added and deleted ------------------------------------------------------------


def _needed_by_old_senders(p: FieldAdded) -> bool:
    m = p.message
    return ever_required(p.c.presence, m.old_scope, m.new_scope, added=True)


def _needed_by_new_senders(p: FieldRemoved) -> bool:
    m = p.message
    return ever_required(p.c.presence, m.old_scope, m.new_scope, added=False)


def _added(p: FieldAdded, rule_id: str, required: bool) -> None:
    if p.once(_needed_by_old_senders) != required:
        return
    f = p.field
    text = f"{p.message.new.name}.{f.name} added"
    if required:
        when = f"when {f.required_when.text}" if f.required_when else "when always"
        text += f" (required {'always' if f.always_required else when})"
    p.message.emit(rule_id, text, f.path, f"{p.message.new.name}.{f.name}")


def _removed(p: FieldRemoved, rule_id: str, required: bool) -> None:
    if p.once(_needed_by_new_senders) != required:
        return
    name = f"{p.message.new.name}.{p.field.name}"
    text = f"{name} deleted"
    if required:
        text += " (old receivers require it for some envelopes)"
    p.message.emit(rule_id, text, p.field.path, name, deleted=True)


@rule("FIELD_ADDED", "loosening", "fields", "a new field no old sender's envelope needs")
def field_added(p: FieldAdded) -> None:
    _added(p, "FIELD_ADDED", required=False)


@rule("REQUIRED_FIELD_ADDED", "both", "fields", "a new field some old senders' envelopes need")
def required_field_added(p: FieldAdded) -> None:
    _added(p, "REQUIRED_FIELD_ADDED", required=True)


@rule("FIELD_REMOVED", "tightening", "fields", "a field no new sender's envelope needed")
def field_removed(p: FieldRemoved) -> None:
    _removed(p, "FIELD_REMOVED", required=False)


@rule("REQUIRED_FIELD_REMOVED", "both", "fields", "a field some new senders' envelopes needed")
def required_field_removed(p: FieldRemoved) -> None:
    _removed(p, "REQUIRED_FIELD_REMOVED", required=True)


# --- a field's name, type and nullability --------------------------------------------------


@rule("FIELD_RENAMED", "both", "fields", "a field has another name")
def field_renamed(p: FieldPair) -> None:
    if p.old.name != p.new.name:
        p.emit("FIELD_RENAMED", f"{p.owner}.{p.old.name} -> {p.new.name}")


@rule("FIELD_RETYPED", "wire", "fields", "a field has another type")
def field_retyped(p: FieldPair) -> None:
    if p.retyped:
        p.emit("FIELD_RETYPED", f"{p.subject} type {p.old.type} -> {p.new.type}", ("type",))


def _plain_nullability(p: FieldPair) -> bool:
    """Neither side has presence rules (those are ``PRESENCE_*``), and the change is not
    one ``cached_by`` made (``FIELD_(UN)CACHED``)."""
    o, n = p.oc.presence, p.nc.presence
    if o.conditions or n.conditions:
        return False
    return not (o.explicit_none == n.explicit_none and o.cached_by != n.cached_by)


@rule("FIELD_NULLABLE", "loosening", "fields", "an always-required field became T | None")
def field_nullable(p: FieldPair) -> None:
    if _plain_nullability(p) and p.oc.presence.always and not p.nc.presence.always:
        text = f"{p.subject} {p.old.type} -> {p.new.type}: a new sender may leave it out"
        p.emit("FIELD_NULLABLE", text, ("type",))


@rule("FIELD_NOT_NULLABLE", "tightening", "fields", "a T | None field became always required")
def field_not_nullable(p: FieldPair) -> None:
    if _plain_nullability(p) and p.nc.presence.always and not p.oc.presence.always:
        text = f"{p.subject} {p.old.type} -> {p.new.type}: now always required"
        p.emit("FIELD_NOT_NULLABLE", text, ("type",))


# --- value bounds ------------------------------------------------------------------------


def _fmt(v: object) -> str:
    if v is None:
        return "unbounded"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        return repr(v)
    return str(v)


def _range_moves(p: FieldPair) -> Iterator[tuple[bool, str]]:
    """(narrowed, text) for each end of a number's range that moved (an int's missing end
    is int64's, a float's is unbounded); the version field's range is its version's."""
    if p.retyped or p.nc.kind not in ("int", "float"):
        return
    if p.message is not None and p.message.new.version_field == p.new.name:
        return
    name = p.new.name
    olo, nlo, ohi, nhi = p.oc.lo, p.nc.lo, p.oc.hi, p.nc.hi
    if olo != nlo:
        a = -math.inf if olo is None else olo
        b = -math.inf if nlo is None else nlo
        yield b > a, f"{name} min {_fmt(olo)} -> {_fmt(nlo)}"
    if ohi != nhi:
        a = math.inf if ohi is None else ohi
        b = math.inf if nhi is None else nhi
        yield b < a, f"{name} max {_fmt(ohi)} -> {_fmt(nhi)}"


@rule("FIELD_RANGE_NARROWED", "tightening", "fields", "min raised or max lowered")
def field_range_narrowed(p: FieldPair) -> None:
    for narrowed, text in _range_moves(p):
        if narrowed:
            p.emit("FIELD_RANGE_NARROWED", text, ("range",))


@rule("FIELD_RANGE_WIDENED", "loosening", "fields", "min lowered or max raised")
def field_range_widened(p: FieldPair) -> None:
    for narrowed, text in _range_moves(p):
        if not narrowed:
            p.emit("FIELD_RANGE_WIDENED", text, ("range",))


def _max_lens(p: FieldPair) -> tuple[int, int] | None:
    """A str field's old and new ``max_len`` where both are set and they differ."""
    a, b = p.oc.max_len, p.nc.max_len
    if p.retyped or p.nc.kind != "str" or a == b or not a or not b:
        return None
    return a, b


@rule("STR_MAX_LEN_NARROWED", "tightening", "fields", "a str field's max_len lowered")
def str_max_len_narrowed(p: FieldPair) -> None:
    lens = _max_lens(p)
    if lens is not None and lens[1] < lens[0]:
        text = f"{p.subject} max_len {lens[0]} -> {lens[1]}"
        p.emit("STR_MAX_LEN_NARROWED", text, ("max_len",))


@rule("STR_MAX_LEN_WIDENED", "loosening", "fields", "a str field's max_len raised")
def str_max_len_widened(p: FieldPair) -> None:
    lens = _max_lens(p)
    if lens is not None and lens[1] > lens[0]:
        text = f"{p.subject} max_len {lens[0]} -> {lens[1]}"
        p.emit("STR_MAX_LEN_WIDENED", text, ("max_len",))


# --- cached_by ---------------------------------------------------------------------------
# A rule across envelopes, so presence rules alone do not show it: a new sender of a newly
# cached field leaves it out while its epoch holds (an old receiver expects it every time);
# an old sender of a field no longer cached does (docs/spec-language.md, cached_by).


def _epochs(p: FieldPair) -> tuple[str | None, str | None]:
    """The old and new ``cached_by`` epochs, (None, None) when they are the same field."""
    old, new = p.oc.presence.cached_by, p.nc.presence.cached_by
    if new is not None and p.rename.get(new, new) == old:
        return None, None
    return old, new


@rule("FIELD_CACHED", "loosening", "fields", "a field became cached_by an epoch")
def field_cached(p: FieldPair) -> None:
    old, new = _epochs(p)
    if old is None and new is not None:
        text = f"{p.subject} is now cached_by {new}: a new sender leaves it out while {new} holds"
        p.emit("FIELD_CACHED", text, ("cached_by",))


@rule("FIELD_UNCACHED", "tightening", "fields", "a field is no longer cached_by an epoch")
def field_uncached(p: FieldPair) -> None:
    old, new = _epochs(p)
    if old is not None and new is None:
        text = f"{p.subject} is no longer cached_by {old}: an old sender leaves it out"
        p.emit("FIELD_UNCACHED", f"{text} while {old} holds")


@rule("FIELD_CACHE_EPOCH_CHANGED", "both", "fields", "a cached field follows another epoch")
def field_cache_epoch_changed(p: FieldPair) -> None:
    old, new = _epochs(p)
    if old is not None and new is not None:
        text = f"{p.subject} cached_by {old} -> {new}: old and new peers send it on other chunks"
        p.emit("FIELD_CACHE_EPOCH_CHANGED", text, ("cached_by",))
