"""The pairing framework of ``tpwire breaking``: what is compared with what, and who runs
the rules (docs/evolution.md, "How it decides").

Two checked specs are walked once; each old element is paired with its new counterpart and
every rule registered over that pair's kind (``codegen/breaking_registry.py``) is run on it:

* :class:`SpecPair` (the two specs) and :class:`HeaderPair` (the two headers);
* header slots by name (:class:`SlotAdded`, :class:`SlotRemoved`), header fields by name
  (:class:`FieldPair`);
* enum members by name, then a deleted member by its value (a rename,
  :class:`MemberPair`), the rest alone (:class:`MemberAdded`, :class:`MemberRemoved`);
* messages by name, then a deleted message by its id (a rename, :class:`MessagePair`), the
  rest alone (:class:`MessageAdded`, :class:`MessageRemoved`);
* within a message pair: dimensions by name (:class:`DimPair`); fields by name, then a
  deleted field and an added one at the same position with the same contract (a rename,
  :class:`FieldPair`), the rest alone (:class:`FieldAdded`, :class:`FieldRemoved`);
  invariants by id, then by expression, except those whose group admits the same envelopes
  in both (:class:`InvariantPair`, one side None for an added or deleted invariant).

A rule emits through its pair (``p.emit(...)``), located in the new spec (the old one for
what the new spec deleted); it may emit only its own id (:class:`Context`). Findings are
sorted and deduplicated, so the order rules run in does not show.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .breaking_conditions import settled_invariants
from .breaking_registry import Finding, Pair, UnknownRuleError, rule, rules_over, unregister
from .constraints import FieldConstraints, constraints_of
from .domains import Scope
from .load import LoadedSpec, PathKey
from .model import CDim, CEnum, CField, CHeader, CheckedSpec, CInvariant, CMessage

__all__ = [
    "Context",
    "DimPair",
    "EnumPair",
    "FieldAdded",
    "FieldPair",
    "FieldRemoved",
    "HeaderPair",
    "InvariantPair",
    "MemberAdded",
    "MemberPair",
    "MemberRemoved",
    "MessageAdded",
    "MessagePair",
    "MessageRemoved",
    "Pair",
    "Side",
    "SlotAdded",
    "SlotRemoved",
    "SpecPair",
    "Verdict",
    "compare_sides",
    "judge",
    "rule",
    "unregister",
]


@dataclass(frozen=True)
class Side:
    """One compiled spec with its source positions."""

    loaded: LoadedSpec
    spec: CheckedSpec
    fingerprint: int

    @property
    def file(self) -> str:
        return self.loaded.file


class Context:
    """The comparison in progress: both sides, the findings so far, the rule running now."""

    def __init__(self, old: Side, new: Side) -> None:
        self.old, self.new = old, new
        self.findings: list[Finding] = []
        self.all_messages = tuple(m.name for m in new.spec.messages)
        self.running: str | None = None  # the rule being run: the only id it may emit

    def run(self, pair: Pair) -> None:
        """Every rule registered over ``pair``'s kind, on ``pair``."""
        for rule_id, check in rules_over(type(pair)):
            self.running = rule_id
            try:
                check(pair)
            finally:
                self.running = None

    def emit(
        self,
        rule: str,
        text: str,
        path: PathKey,
        *,
        subject: str,
        affects: Iterable[str] = (),
        deleted: bool = False,
        key: bool = True,
    ) -> None:
        """One finding at ``path`` (of the old spec when ``deleted``; at its key when
        ``key``); ``affects``: the new spec's messages whose version it calls for bumping."""
        if rule != self.running:
            raise UnknownRuleError(f"rule {self.running} emitted {rule}: a rule emits its own id")
        side = self.old if deleted else self.new
        m = side.loaded.mark(path, key=key)
        self.findings.append(
            Finding(side.file, m.line, m.col, rule, text, subject, tuple(sorted(set(affects))))
        )

    @functools.cached_property
    def _action_enum(self) -> str | None:
        h = self.new.spec.header
        action = next((f for f in h.fields if f.name == h.action), None)
        return None if action is None else action.type.enum

    def enum_users(self, enum: str, member: str) -> tuple[str, ...]:
        """The messages whose version a change to ``enum.member`` calls for bumping."""
        spec = self.new.spec
        if self._action_enum == enum:
            # an action member stands for the message it carries (none: a control action)
            return tuple(m.name for m in spec.messages if m.action == member)
        if any(f.type.enum == enum for f in spec.header.fields):
            return self.all_messages
        return tuple(m.name for m in spec.messages if any(f.type.enum == enum for f in m.fields))


# --- the spec, the header, enums ---------------------------------------------------------


@dataclass(eq=False)
class SpecPair(Pair):
    ctx: Context
    old: CheckedSpec
    new: CheckedSpec


@dataclass(eq=False)
class HeaderPair(Pair):
    ctx: Context
    old: CHeader
    new: CHeader

    def emit(
        self,
        rule: str,
        text: str,
        path: PathKey,
        subject: str,
        *,
        deleted: bool = False,
        key: bool = True,
    ) -> None:
        """A header finding: it counts for every message."""
        every = self.ctx.all_messages
        self.ctx.emit(rule, text, path, subject=subject, affects=every, deleted=deleted, key=key)


@dataclass(eq=False)
class SlotAdded(Pair):
    header: HeaderPair
    name: str
    index: int  # in the new header's slots


@dataclass(eq=False)
class SlotRemoved(Pair):
    header: HeaderPair
    name: str
    index: int  # in the old header's slots


@dataclass(eq=False)
class EnumPair:
    """An enum both specs declare (one deleted retypes the fields using it: no pair)."""

    ctx: Context
    old: CEnum
    new: CEnum

    def __post_init__(self) -> None:
        self.old_values = dict(self.old.members)
        self.new_values = dict(self.new.members)
        self.old_by_value = {v: m for m, v in self.old.members}
        self.new_by_value = {v: m for m, v in self.new.members}

    def emit(
        self, rule: str, text: str, member: str, subject: str, *, deleted: bool = False
    ) -> None:
        """A finding at ``member`` (of the old enum when ``deleted``); it counts for the
        messages that use that member (:meth:`Context.enum_users`)."""
        self.ctx.emit(
            rule,
            text,
            ("enums", self.old.name if deleted else self.new.name, "values", member),
            subject=subject,
            affects=self.ctx.enum_users(self.new.name, member),
            deleted=deleted,
        )


@dataclass(eq=False)
class MemberPair(Pair):
    """An old member and its new counterpart: the same name, or a deleted name whose value
    a new name (not an old one) carries."""

    enum: EnumPair
    old: str
    new: str


@dataclass(eq=False)
class MemberAdded(Pair):
    enum: EnumPair
    name: str


@dataclass(eq=False)
class MemberRemoved(Pair):
    enum: EnumPair
    name: str


# --- messages ----------------------------------------------------------------------------


@dataclass(eq=False)
class MessageAdded(Pair):
    ctx: Context
    message: CMessage


@dataclass(eq=False)
class MessageRemoved(Pair):
    ctx: Context
    message: CMessage


@dataclass(eq=False)
class MessagePair(Pair):
    """A message of both specs (by name, else by id) with what its comparisons share: the
    names its expressions read (:class:`~.domains.Scope`) and the fields it renames."""

    ctx: Context
    old: CMessage
    new: CMessage

    def __post_init__(self) -> None:
        self.old_scope = Scope(self.ctx.old.spec, self.old)
        self.new_scope = Scope(self.ctx.new.spec, self.new)
        #: new field name -> old field name, for fields renamed in place
        self.rename = _renamed_fields(self.old, self.new)
        self.affects = (self.new.name,)

    @functools.cached_property
    def fields(self) -> tuple[FieldPair | FieldAdded | FieldRemoved, ...]:
        """The message's fields paired: old fields in order (paired or deleted), then the
        added ones."""
        return tuple(_field_pairs(self))

    def emit(
        self,
        rule: str,
        text: str,
        path: PathKey,
        subject: str = "",
        *,
        deleted: bool = False,
        key: bool = True,
    ) -> None:
        """A finding on this message (``subject`` defaults to its name); it counts for this
        message only."""
        subject = subject or self.new.name
        self.ctx.emit(
            rule, text, path, subject=subject, affects=self.affects, deleted=deleted, key=key
        )


@dataclass(eq=False)
class DimPair(Pair):
    message: MessagePair
    old: CDim
    new: CDim


@dataclass(eq=False)
class FieldAdded(Pair):
    message: MessagePair
    field: CField

    @functools.cached_property
    def c(self) -> FieldConstraints:
        """What the added field allows (``codegen/constraints.py``)."""
        return _constraints(self.field, self.message.new)


@dataclass(eq=False)
class FieldRemoved(Pair):
    message: MessagePair
    field: CField

    @functools.cached_property
    def c(self) -> FieldConstraints:
        """What the deleted field allowed."""
        return _constraints(self.field, self.message.old)


@dataclass(eq=False)
class FieldPair(Pair):
    """A field of both specs: of a message pair, or of the header (``message`` None)."""

    ctx: Context
    old: CField
    new: CField
    owner: str  # the message's new name, or "header"
    message: MessagePair | None
    old_scope: Scope
    new_scope: Scope

    @property
    def subject(self) -> str:
        return f"{self.owner}.{self.new.name}"

    @property
    def rename(self) -> dict[str, str]:
        """The message's renamed fields (new name -> old name); none in the header."""
        return self.message.rename if self.message is not None else {}

    @property
    def retyped(self) -> bool:
        """Another kind or enum: the value rules of the old type say nothing of the new one."""
        return self.oc.kind != self.nc.kind or self.oc.enum != self.nc.enum

    @property
    def tensors(self) -> bool:
        """Two tensor fields of a message pair: their dtypes and shapes compare."""
        return self.message is not None and self.nc.kind == "tensor" and not self.retyped

    @functools.cached_property
    def oc(self) -> FieldConstraints:
        """What the old field allows (``codegen/constraints.py``)."""
        return _constraints(self.old, self.message.old if self.message else None)

    @functools.cached_property
    def nc(self) -> FieldConstraints:
        """What the new field allows."""
        return _constraints(self.new, self.message.new if self.message else None)

    def numbers(self, kind: str) -> tuple[float, float] | None:
        """The old and new values of registered constraint kind ``kind``
        (``codegen/constraints.py``, ``register_kind``) where both fields use it, both are
        numbers and they differ; None otherwise."""
        a, b = self.oc.get(kind), self.nc.get(kind)
        number = (int, float)
        if isinstance(a, number) and isinstance(b, number) and a != b:
            return float(a), float(b)
        return None

    def emit(self, rule: str, text: str, sub: tuple[str | int, ...] = ()) -> None:
        """A finding at ``sub`` below the new field."""
        affects = self.message.affects if self.message else self.ctx.all_messages
        self.ctx.emit(rule, text, (*self.new.path, *sub), subject=self.subject, affects=affects)


@dataclass(eq=False)
class InvariantPair(Pair):
    """An invariant of both messages (by id, else by expression), or one side alone (None
    on the other): compared by meaning, an added invariant against admitting everything."""

    message: MessagePair
    old: CInvariant | None
    new: CInvariant | None

    @property
    def name(self) -> str:
        either = self.new if self.new is not None else self.old
        return either.id if either is not None else "?"

    def emit(self, rule: str, text: str) -> None:
        """A finding at the new invariant's expression (the old invariant when deleted)."""
        m = self.message
        if self.new is not None:
            path: PathKey = (*m.new.path, "invariants", m.new.invariants.index(self.new), "expr")
        else:
            assert self.old is not None
            path = (*m.old.path, "invariants", m.old.invariants.index(self.old))
        m.emit(
            rule,
            text,
            path,
            f"{m.new.name}.invariants.{self.name}",
            deleted=self.new is None,
            key=False,
        )


@dataclass(eq=False)
class Verdict(Pair):
    """The findings of a whole comparison that are not allowed (``--allow``): what rules on
    the verdict itself read (the version-bump policy, ``codegen/breaking_policy.py``)."""

    ctx: Context
    findings: tuple[Finding, ...]


def _constraints(f: CField, message: CMessage | None) -> FieldConstraints:
    dims = {d.name: (d.min, d.max) for d in message.dims} if message is not None else {}
    return constraints_of(f, dims)


# --- pairing -----------------------------------------------------------------------------


def _contract(f: CField) -> tuple[object, ...]:
    """Everything about a field but its name and docs (a pure rename keeps all of it)."""
    rules = tuple(
        None if c is None else c.text
        for c in (f.required_when, f.forbidden_when, f.none_unless, f.derived)
    )
    return (
        str(f.type),
        f.always_required,
        f.range_min,
        f.range_max,
        f.max_len,
        f.dtypes,
        f.shape,
        f.max_elements,
        rules,
    )


def _renamed_fields(om: CMessage, nm: CMessage) -> dict[str, str]:
    """A field deleted and one added at the same position with the same contract: a rename
    (new name -> old name)."""
    olds = {f.name for f in om.fields}
    news = {f.name for f in nm.fields}
    o_index = {f.name: i for i, f in enumerate(om.fields)}
    n_index = {f.name: i for i, f in enumerate(nm.fields)}
    added = [f for f in nm.fields if f.name not in olds]
    rename: dict[str, str] = {}
    for of in (f for f in om.fields if f.name not in news):
        for nf in added:
            if (
                nf.name not in rename
                and n_index[nf.name] == o_index[of.name]
                and _contract(nf) == _contract(of)
            ):
                rename[nf.name] = of.name
                break
    return rename


def _members(enum: EnumPair) -> Iterator[Pair]:
    renamed: set[str] = set()
    for member, value in enum.old.members:
        target = enum.new_by_value.get(value)
        if member in enum.new_values:
            yield MemberPair(enum, member, member)
        elif target is not None and target not in enum.old_values:
            renamed.add(target)
            yield MemberPair(enum, member, target)
        else:
            yield MemberRemoved(enum, member)
    for member, _ in enum.new.members:
        if member not in enum.old_values and member not in renamed:
            yield MemberAdded(enum, member)


def enum_pairs(ctx: Context) -> Iterator[Pair]:
    new_enums = {e.name: e for e in ctx.new.spec.enums}
    for oe in ctx.old.spec.enums:
        ne = new_enums.get(oe.name)
        if ne is not None:  # a deleted enum retypes its fields; an unused one is no contract
            yield from _members(EnumPair(ctx, oe, ne))


def header_pairs(ctx: Context) -> Iterator[Pair]:
    oh, nh = ctx.old.spec.header, ctx.new.spec.header
    header = HeaderPair(ctx, oh, nh)
    yield header
    yield from (SlotAdded(header, s, i) for i, s in enumerate(nh.slots) if s not in oh.slots)
    yield from (SlotRemoved(header, s, i) for i, s in enumerate(oh.slots) if s not in nh.slots)
    old_scope, new_scope = Scope(ctx.old.spec, None), Scope(ctx.new.spec, None)
    new_fields = {f.name: f for f in nh.fields}
    for of in oh.fields:
        nf = new_fields.get(of.name)
        if nf is not None:
            yield FieldPair(ctx, of, nf, "header", None, old_scope, new_scope)


def message_pairs(ctx: Context) -> Iterator[Pair]:
    olds = {m.name for m in ctx.old.spec.messages}
    news = {m.name: m for m in ctx.new.spec.messages}
    lone_new = {m.id: m for m in ctx.new.spec.messages if m.name not in olds}
    for om in ctx.old.spec.messages:
        nm = news.get(om.name) or lone_new.pop(om.id, None)
        if nm is None:
            yield MessageRemoved(ctx, om)
        else:
            yield from _message_parts(MessagePair(ctx, om, nm))
    yield from (MessageAdded(ctx, nm) for nm in lone_new.values())


def _message_parts(m: MessagePair) -> Iterator[Pair]:
    yield m
    yield from m.fields
    odims = {d.name: d for d in m.old.dims}
    yield from (DimPair(m, odims[d.name], d) for d in m.new.dims if d.name in odims)
    yield from _invariant_pairs(m)


def _field_pairs(m: MessagePair) -> Iterator[FieldPair | FieldAdded | FieldRemoved]:
    news = {f.name: f for f in m.new.fields}
    back = {o: n for n, o in m.rename.items()}
    for of in m.old.fields:
        nf = news.get(of.name) or (news.get(back[of.name]) if of.name in back else None)
        if nf is None:
            yield FieldRemoved(m, of)
        else:
            yield FieldPair(m.ctx, of, nf, m.new.name, m, m.old_scope, m.new_scope)
    olds = {f.name for f in m.old.fields}
    for nf in m.new.fields:
        if nf.name not in olds and nf.name not in m.rename:
            yield FieldAdded(m, nf)


def _invariant_pairs(m: MessagePair) -> Iterator[InvariantPair]:
    om, nm = m.old, m.new
    if [i.expr.text for i in om.invariants] == [i.expr.text for i in nm.invariants] and (
        not m.rename
    ):
        return
    settled = settled_invariants(om, nm, m.old_scope, m.new_scope, m.rename)
    if len(settled) == len(om.invariants) + len(nm.invariants):
        return
    news = {i.id: i for i in nm.invariants}
    old_ids = {i.id for i in om.invariants}
    lone_new = [i for i in nm.invariants if i.id not in old_ids]
    pairs: list[tuple[CInvariant | None, CInvariant | None]] = []
    for i in om.invariants:
        twin = news.get(i.id) or next((j for j in lone_new if j.expr.text == i.expr.text), None)
        if twin is not None and i.id not in news:
            lone_new.remove(twin)
        pairs.append((i, twin))
    pairs.extend((None, j) for j in lone_new)
    for oi, ni in pairs:
        if not all(i is None or id(i) in settled for i in (oi, ni)):
            yield InvariantPair(m, oi, ni)


def compare_sides(old: Side, new: Side) -> list[Finding]:
    """Every finding of ``new`` against ``old`` from every registered rule, sorted."""
    ctx = Context(old, new)
    ctx.run(SpecPair(ctx, old.spec, new.spec))
    for pairs in (enum_pairs(ctx), header_pairs(ctx), message_pairs(ctx)):
        for pair in pairs:
            ctx.run(pair)
    return sorted(set(ctx.findings))


def judge(findings: Iterable[Finding], old: Side, new: Side) -> list[Finding]:
    """The findings of the rules over the verdict (:class:`Verdict`), sorted."""
    ctx = Context(old, new)
    ctx.run(Verdict(ctx, tuple(findings)))
    return sorted(set(ctx.findings))
