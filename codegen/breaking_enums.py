"""Breaking rules of the "enums" group: members added, deleted, renumbered or renamed
(docs/evolution.md, "Rule catalogue"). Each finding counts for the messages that use the
member (``Context.enum_users`` in ``codegen/breaking_pairs.py``)."""

from __future__ import annotations

from .breaking_pairs import MemberAdded, MemberPair, MemberRemoved, rule


@rule("ENUM_VALUE_ADDED", "loosening", "enums", "a member added to a (closed) enum")
def enum_value_added(p: MemberAdded) -> None:
    e = p.enum
    value = e.new_values[p.name]
    if value not in e.old_by_value:  # an old value under a new name is a rename
        text = f"{e.new.name}.{p.name} = {value} added to a closed enum"
        e.emit("ENUM_VALUE_ADDED", text, p.name, f"{e.new.name}.{p.name}")


@rule("ENUM_VALUE_REMOVED", "tightening", "enums", "an enum member was deleted")
def enum_value_removed(p: MemberRemoved) -> None:
    e = p.enum
    value = e.old_values[p.name]
    if value not in e.new_by_value:  # a value another old member took is its renumbering
        subject = f"{e.old.name}.{p.name}"
        e.emit("ENUM_VALUE_REMOVED", f"{subject} = {value} deleted", p.name, subject, deleted=True)


@rule("ENUM_VALUE_RENUMBERED", "wire", "enums", "an enum member has another value")
def enum_value_renumbered(p: MemberPair) -> None:
    e = p.enum
    a, b = e.old_values[p.old], e.new_values[p.new]
    if p.old == p.new and a != b:
        subject = f"{e.old.name}.{p.old}"
        e.emit("ENUM_VALUE_RENUMBERED", f"{subject} = {a} -> {b}", p.new, subject)


@rule("ENUM_MEMBER_RENAMED", "both", "enums", "an enum value has another member name")
def enum_member_renamed(p: MemberPair) -> None:
    e = p.enum
    if p.old != p.new:
        text = f"{e.old.name} value {e.old_values[p.old]}: {p.old} -> {p.new}"
        e.emit("ENUM_MEMBER_RENAMED", text, p.new, f"{e.old.name}.{p.old}")
