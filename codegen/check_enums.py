"""Enum checks: member names, int64 values, no value used twice."""

from __future__ import annotations

import enum
import keyword

from . import codes
from .check_context import INT64_MAX, INT64_MIN, Context
from .load import PathKey
from .model import CEnum

#: Enum member names that would shadow IntEnum/int attributes (``name``, ``value``, ``real``)
#: or what the enum class gets from its metaclass (``mro``).
ENUM_ATTRS = frozenset(
    n
    for n in [*vars(enum.Enum), *dir(enum.IntEnum), *dir(type(enum.IntEnum)), *dir(int)]
    if not n.startswith("_")
)


def _member_reserved(member: str) -> str | None:
    """Why an enum member name cannot be used, or None."""
    if keyword.iskeyword(member):
        return "a Python keyword"
    if member.startswith("_"):
        return "enum reserves names starting with '_'"
    if member in ENUM_ATTRS:
        return "an attribute every IntEnum member or class has already"
    return None


def check_enums(ctx: Context) -> tuple[CEnum, ...]:
    """Every enum of the spec, each also recorded in ``ctx.enums`` for the checks after."""
    out = []
    for name, body in ctx.data["enums"].items():
        path: PathKey = ("enums", name)
        seen: dict[int, str] = {}
        members = []
        for member, value in body["values"].items():
            mpath = (*path, "values", member)
            why = _member_reserved(member)
            if why is not None:
                ctx.fail(
                    mpath, codes.BAD_NAME, f"enum member {member!r} is reserved: {why}", key=True
                )
            if type(value) is not int:
                ctx.fail(mpath, codes.NOT_INTEGER, f"{name}.{member} = {value!r} is not an integer")
                continue
            if not INT64_MIN <= value <= INT64_MAX:
                ctx.fail(mpath, codes.RANGE, f"{name}.{member} = {value} does not fit int64")
            if value in seen:
                ctx.fail(
                    mpath,
                    codes.DUPLICATE_VALUE,
                    f"{name}.{member} reuses value {value} of {name}.{seen[value]}",
                )
            seen[value] = member
            members.append((member, int(value)))
        e = CEnum(name, body.get("doc", ""), tuple(members))
        ctx.enums[name] = e
        out.append(e)
    return tuple(out)
