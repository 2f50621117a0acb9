"""Name checks: the protocol name, and module-scope names (enums, messages, variant
classes) that would collide with each other or with what the generated modules bind.

What the generated modules bind is data (``codegen/reserved_names.py``), written by
``codegen/reserved_probe.py`` from the templates' own output, so this stage never
imports the stages after it.
"""

from __future__ import annotations

import builtins
import keyword
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from . import codes
from .check_context import Context
from .load import PathKey
from .model import CMessage, variant_class_name

#: Names a generated module sees without binding them: ``None``, ``NotImplemented``, ``len``...
BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class GeneratedNames:
    """What the generated modules bind at module scope, read off the templates' output."""

    #: module ("the generated module", "the generated strategies module") -> its own names
    fixed: Mapping[str, frozenset[str]]
    #: (module, "enum" or "message", pattern): a name the module spells from an enum's or a
    #: message's name, ``{}`` standing for that name (``_validate_{}``)
    patterns: frozenset[tuple[str, str, str]]

    def clash(self, name: str, kind: str) -> str | None:
        """Why ``name`` (an enum, message or class name) cannot be used, or None."""
        for where, names in self.fixed.items():
            if name in names:
                return f"a name {where} defines"
        for where, of, pattern in sorted(self.patterns):
            spelled = pattern.replace("{}", name)
            if of == kind and spelled in self.fixed[where]:
                return f"{where} would bind {spelled!r} for it, a name it defines already"
        return None


@cache
def generated_names() -> GeneratedNames:
    """The module-scope names of the generated bindings and strategies modules (the data
    ``make gen`` keeps in codegen/reserved_names.py)."""
    # imported here, not at the top: ``python -m tpwire.codegen.reserved_probe`` imports this
    # module to write that file, so a missing or broken one must not stop it (make gen)
    from . import reserved_names

    return GeneratedNames(dict(reserved_names.FIXED), reserved_names.PATTERNS)


def reserved(ctx: Context, name: str, kind: str) -> str | None:
    """Why a module-scope name from the spec would break the generated modules, or None."""
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "a Python keyword"
    if name in BUILTINS:
        return "a Python builtin"
    return None if ctx.names is None else ctx.names.clash(name, kind)


def check_names(ctx: Context, messages: list[CMessage]) -> None:
    """Names that would collide in the generated modules."""
    protocol = ctx.data["protocol"]
    if keyword.iskeyword(protocol) or protocol.endswith("_strategies"):
        ctx.fail(("protocol",), codes.BAD_NAME, f"protocol name {protocol!r} is reserved")
    taken: dict[str, str] = {}

    def claim(name: str, path: PathKey, what: str, kind: str) -> None:
        why = reserved(ctx, name, kind)
        if why is not None:
            ctx.fail(path, codes.BAD_NAME, f"{what} {name!r} is reserved: {why}", key=True)
        elif name in taken:
            ctx.fail(
                path,
                codes.DUPLICATE_NAME,
                f"{what} {name!r} collides with {taken[name]}",
                key=True,
            )
        else:
            taken[name] = f"{what} {name!r}"

    for name in ctx.enums:
        claim(name, ("enums", name), "enum", "enum")
    for m in messages:
        claim(m.name, m.path, "message", "message")
        disc = next((f for f in m.fields if f.name == m.discriminator), None)
        if disc is not None and disc.type.enum in ctx.enums:
            for member, _ in ctx.enums[disc.type.enum].members:
                claim(
                    variant_class_name(m.name, member),
                    m.path,
                    f"class of {m.name}.{member}",
                    "class",
                )
