"""Breaking rules of the "identity" group: the protocol, messages as wholes (added, deleted,
renamed, their id, version, action, discriminator and version field) and the header (slots,
action field, roles, control actions). docs/evolution.md, "Rule catalogue"."""

from __future__ import annotations

from collections.abc import Mapping

from .breaking_pairs import (
    HeaderPair,
    MessageAdded,
    MessagePair,
    MessageRemoved,
    SlotAdded,
    SlotRemoved,
    SpecPair,
    rule,
)

# --- the protocol and messages -----------------------------------------------------------


@rule("PROTOCOL_RENAMED", "wire", "identity", "the protocol name changed")
def protocol_renamed(p: SpecPair) -> None:
    if p.old.protocol != p.new.protocol:
        p.ctx.emit(
            "PROTOCOL_RENAMED",
            f"protocol {p.old.protocol} -> {p.new.protocol}",
            ("protocol",),
            subject="protocol",
            affects=p.ctx.all_messages,
            key=False,
        )


@rule("MESSAGE_ADDED", "loosening", "identity", "a new message")
def message_added(p: MessageAdded) -> None:
    m = p.message
    text = f"message {m.name} (id {m.id}, action {m.action}) added"
    p.ctx.emit("MESSAGE_ADDED", text, m.path, subject=m.name)


@rule("MESSAGE_REMOVED", "tightening", "identity", "a message was deleted")
def message_removed(p: MessageRemoved) -> None:
    m = p.message
    text = f"message {m.name} (id {m.id}) deleted"
    p.ctx.emit("MESSAGE_REMOVED", text, m.path, subject=m.name, deleted=True)


@rule("MESSAGE_RENAMED", "both", "identity", "a message id now carries another name")
def message_renamed(p: MessagePair) -> None:
    if p.old.name != p.new.name:
        text = f"message id {p.old.id}: {p.old.name} -> {p.new.name}"
        p.emit("MESSAGE_RENAMED", text, p.new.path)


def _changed(p: MessagePair, rule_id: str, key: str, old: object, new: object) -> None:
    """``Name key old -> new`` at the message's ``key``, when the two differ."""
    if old != new:
        p.emit(rule_id, f"{p.new.name} {key} {old} -> {new}", (*p.new.path, key))


@rule("MESSAGE_ID_CHANGED", "wire", "identity", "a message's wire id changed")
def message_id_changed(p: MessagePair) -> None:
    _changed(p, "MESSAGE_ID_CHANGED", "id", p.old.id, p.new.id)


@rule("MESSAGE_VERSION_CHANGED", "both", "identity", "a message's version changed")
def message_version_changed(p: MessagePair) -> None:
    o, n = p.old.version, p.new.version
    if o != n:
        how = "bumped" if n > o else "lowered"
        p.emit(
            "MESSAGE_VERSION_CHANGED",
            f"{p.new.name} version {o} -> {n} ({how}; receivers refuse the other version)",
            (*p.new.path, "version"),
        )


@rule("MESSAGE_ACTION_CHANGED", "wire", "identity", "another action carries the message")
def message_action_changed(p: MessagePair) -> None:
    _changed(p, "MESSAGE_ACTION_CHANGED", "action", p.old.action, p.new.action)


@rule("DISCRIMINATOR_CHANGED", "wire", "identity", "the message's discriminator changed")
def discriminator_changed(p: MessagePair) -> None:
    o, n = p.old.discriminator or "(none)", p.new.discriminator or "(none)"
    _changed(p, "DISCRIMINATOR_CHANGED", "discriminator", o, n)


@rule("VERSION_FIELD_CHANGED", "both", "identity", "the message's version_field changed")
def version_field_changed(p: MessagePair) -> None:
    o, n = p.old.version_field or "(none)", p.new.version_field or "(none)"
    _changed(p, "VERSION_FIELD_CHANGED", "version_field", o, n)


# --- the header --------------------------------------------------------------------------


def _slot_counts(h: HeaderPair) -> str:
    return f"{len(h.old.slots)} -> {len(h.new.slots)} slots"


@rule("HEADER_SLOT_ADDED", "wire", "identity", "a header slot was added")
def header_slot_added(p: SlotAdded) -> None:
    p.header.emit(
        "HEADER_SLOT_ADDED",
        f"header slot {p.name} added at position {p.index} ({_slot_counts(p.header)})",
        ("header", "slots", p.index),
        f"header.{p.name}",
        key=False,
    )


@rule("HEADER_SLOT_REMOVED", "wire", "identity", "a header slot was deleted")
def header_slot_removed(p: SlotRemoved) -> None:
    p.header.emit(
        "HEADER_SLOT_REMOVED",
        f"header slot {p.name} deleted ({_slot_counts(p.header)})",
        ("header", "slots", p.index),
        f"header.{p.name}",
        deleted=True,
        key=False,
    )


@rule("HEADER_SLOTS_REORDERED", "wire", "identity", "header slots changed order")
def header_slots_reordered(p: HeaderPair) -> None:
    common_old = [s for s in p.old.slots if s in p.new.slots]
    common_new = [s for s in p.new.slots if s in p.old.slots]
    if common_old != common_new:
        p.emit(
            "HEADER_SLOTS_REORDERED",
            f"header slots [{', '.join(common_old)}] -> [{', '.join(common_new)}]",
            ("header", "slots"),
            "header.slots",
        )


@rule("HEADER_ACTION_CHANGED", "wire", "identity", "another header field names the action")
def header_action_changed(p: HeaderPair) -> None:
    if p.old.action != p.new.action:
        text = f"header action field {p.old.action} -> {p.new.action}"
        p.emit("HEADER_ACTION_CHANGED", text, ("header", "action"), "header.action")


def _names_changed(
    p: HeaderPair, rule_id: str, kind: str, old: Mapping[str, str], new: Mapping[str, str]
) -> None:
    """``kind.name: a -> b`` for each name the two header tables map differently."""
    for name in sorted(set(old) | set(new), key=str):
        a, b = old.get(name), new.get(name)
        if a != b:
            p.emit(
                rule_id,
                f"{kind}.{name}: {a or '(none)'} -> {b or '(none)'}",
                ("header", kind, name) if b is not None else ("header", kind),
                f"header.{kind}.{name}",
            )


@rule("ROLE_CHANGED", "both", "identity", "a header role names another field")
def role_changed(p: HeaderPair) -> None:
    _names_changed(p, "ROLE_CHANGED", "roles", dict(p.old.roles), dict(p.new.roles))


@rule("CONTROL_CHANGED", "both", "identity", "a control action names another member")
def control_changed(p: HeaderPair) -> None:
    _names_changed(p, "CONTROL_CHANGED", "control", dict(p.old.control), dict(p.new.control))
