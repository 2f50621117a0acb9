"""``tpwire breaking``: what a spec change breaks, for whom, located in the spec.

Two checked specs (old, new) are compared element by element: identity (protocol, message
ids, names, versions, actions, discriminators, header slots, roles, control actions), enums,
fields, presence rules, ranges, tensors, derived formulas and invariants. Presence rules,
invariants and derived formulas are compared by meaning, not by text: ``codegen/domains.py``
enumerates the finite domains the expressions read, so an equivalent rewrite is no finding
and a real change comes with a witness (an assignment where old and new disagree).

Every finding has a stable rule id and a direction (``RULES``):

* ``tightening``: a new receiver refuses what an old sender may send;
* ``loosening``: an old receiver refuses what a new sender may send;
* ``both``: either way; ``wire``: the same bytes mean something else to old and new peers;
* ``policy``: ``BREAKING_WITHOUT_VERSION_BUMP``, a message broken without a version bump.

Findings are located in the new spec (the old one for what the new spec deleted) and sorted.
See docs/evolution.md for the catalogue with one example each and the rollout guide.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import domains, expr
from .check import check
from .domains import Scope, Space, Undecided
from .errors import SpecError, SpecErrors
from .ir import build
from .load import LoadedSpec, PathKey, load_text
from .model import CExpr, CField, CheckedSpec, CInvariant, CMessage

DIRECTIONS = ("tightening", "loosening", "both", "wire", "policy")

#: What each direction means for a mixed deployment (the tail of every finding's text).
CONSEQUENCE = {
    "tightening": "an old sender may send what a new receiver refuses",
    "loosening": "a new sender may send what an old receiver refuses",
    "both": "old and new peers may refuse each other's envelopes",
    "wire": "the same bytes mean something else to old and new peers",
    "policy": "receivers cannot tell the two contracts apart by version",
}


@dataclass(frozen=True)
class Rule:
    id: str
    direction: str
    group: str
    summary: str


def _rules(*rows: tuple[str, str, str, str]) -> dict[str, Rule]:
    return {r[0]: Rule(*r) for r in rows}


#: The rule catalogue: stable ids (docs/evolution.md shows one example each).
RULES: dict[str, Rule] = _rules(
    # identity
    ("PROTOCOL_RENAMED", "wire", "identity", "the protocol name changed"),
    ("MESSAGE_ADDED", "loosening", "identity", "a new message"),
    ("MESSAGE_REMOVED", "tightening", "identity", "a message was deleted"),
    ("MESSAGE_RENAMED", "both", "identity", "a message id now carries another name"),
    ("MESSAGE_ID_CHANGED", "wire", "identity", "a message's wire id changed"),
    ("MESSAGE_VERSION_CHANGED", "both", "identity", "a message's version changed"),
    ("MESSAGE_ACTION_CHANGED", "wire", "identity", "another action carries the message"),
    ("DISCRIMINATOR_CHANGED", "wire", "identity", "the message's discriminator changed"),
    ("VERSION_FIELD_CHANGED", "both", "identity", "the message's version_field changed"),
    ("HEADER_SLOT_ADDED", "wire", "identity", "a header slot was added"),
    ("HEADER_SLOT_REMOVED", "wire", "identity", "a header slot was deleted"),
    ("HEADER_SLOTS_REORDERED", "wire", "identity", "header slots changed order"),
    ("HEADER_ACTION_CHANGED", "wire", "identity", "another header field names the action"),
    ("ROLE_CHANGED", "both", "identity", "a header role names another field"),
    ("CONTROL_CHANGED", "both", "identity", "a control action names another member"),
    # enums
    ("ENUM_VALUE_ADDED", "loosening", "enums", "a member added to a (closed) enum"),
    ("ENUM_VALUE_REMOVED", "tightening", "enums", "an enum member was deleted"),
    ("ENUM_VALUE_RENUMBERED", "wire", "enums", "an enum member has another value"),
    ("ENUM_MEMBER_RENAMED", "both", "enums", "an enum value has another member name"),
    # fields
    ("FIELD_ADDED", "loosening", "fields", "a new field no old sender's envelope needs"),
    ("REQUIRED_FIELD_ADDED", "both", "fields", "a new field some old senders' envelopes need"),
    ("FIELD_REMOVED", "tightening", "fields", "a field no new sender's envelope needed"),
    ("REQUIRED_FIELD_REMOVED", "both", "fields", "a field some new senders' envelopes needed"),
    ("FIELD_RENAMED", "both", "fields", "a field has another name"),
    ("FIELD_RETYPED", "wire", "fields", "a field has another type"),
    ("FIELD_NULLABLE", "loosening", "fields", "an always-required field became T | None"),
    ("FIELD_NOT_NULLABLE", "tightening", "fields", "a T | None field became always required"),
    ("FIELD_RANGE_NARROWED", "tightening", "fields", "min raised or max lowered"),
    ("FIELD_RANGE_WIDENED", "loosening", "fields", "min lowered or max raised"),
    ("STR_MAX_LEN_NARROWED", "tightening", "fields", "a str field's max_len lowered"),
    ("STR_MAX_LEN_WIDENED", "loosening", "fields", "a str field's max_len raised"),
    ("FIELD_CACHED", "loosening", "fields", "a field became cached_by an epoch"),
    ("FIELD_UNCACHED", "tightening", "fields", "a field is no longer cached_by an epoch"),
    ("FIELD_CACHE_EPOCH_CHANGED", "both", "fields", "a cached field follows another epoch"),
    # presence
    ("PRESENCE_REQUIRED_WIDENED", "tightening", "presence", "required for more envelopes"),
    ("PRESENCE_REQUIRED_NARROWED", "loosening", "presence", "required for fewer envelopes"),
    ("PRESENCE_FORBIDDEN_WIDENED", "tightening", "presence", "forbidden (or None) for more"),
    ("PRESENCE_FORBIDDEN_NARROWED", "loosening", "presence", "forbidden (or None) for fewer"),
    ("PRESENCE_CHANGED", "both", "presence", "presence rules changed, not decided exactly"),
    # tensors
    ("TENSOR_DTYPES_NARROWED", "tightening", "tensors", "dtypes removed"),
    ("TENSOR_DTYPES_WIDENED", "loosening", "tensors", "dtypes added"),
    ("TENSOR_RANK_CHANGED", "both", "tensors", "a tensor's rank changed"),
    ("TENSOR_DIM_NARROWED", "tightening", "tensors", "a shape position admits fewer sizes"),
    ("TENSOR_DIM_WIDENED", "loosening", "tensors", "a shape position admits more sizes"),
    ("DIM_RANGE_NARROWED", "tightening", "tensors", "a dimension symbol's bounds narrowed"),
    ("DIM_RANGE_WIDENED", "loosening", "tensors", "a dimension symbol's bounds widened"),
    ("TENSOR_DIM_BINDING_ADDED", "tightening", "tensors", "two sizes must now be equal"),
    ("TENSOR_DIM_BINDING_REMOVED", "loosening", "tensors", "two sizes need no longer be equal"),
    ("TENSOR_MAX_ELEMENTS_NARROWED", "tightening", "tensors", "element bound lowered"),
    ("TENSOR_MAX_ELEMENTS_WIDENED", "loosening", "tensors", "element bound raised"),
    # derived and invariants
    ("DERIVED_ADDED", "tightening", "derived", "a field became derived"),
    ("DERIVED_REMOVED", "loosening", "derived", "a field is no longer derived"),
    ("DERIVED_CHANGED", "both", "derived", "a derived formula computes other values"),
    ("INVARIANT_ADDED", "tightening", "invariants", "a new invariant"),
    ("INVARIANT_REMOVED", "loosening", "invariants", "an invariant was deleted"),
    ("INVARIANT_STRENGTHENED", "tightening", "invariants", "an invariant admits less"),
    ("INVARIANT_WEAKENED", "loosening", "invariants", "an invariant admits more"),
    ("INVARIANT_CHANGED", "both", "invariants", "an invariant changed, not decided exactly"),
    # policy
    (
        "BREAKING_WITHOUT_VERSION_BUMP",
        "policy",
        "policy",
        "a message broken without a version bump",
    ),
)

#: Findings that do not call for a version bump (the bump itself, whole messages).
_NO_BUMP_NEEDED = frozenset({"MESSAGE_VERSION_CHANGED", "MESSAGE_ADDED", "MESSAGE_REMOVED"})


@dataclass(frozen=True, order=True)
class Finding:
    file: str
    line: int
    col: int
    rule: str
    text: str
    subject: str = field(default="", compare=False)
    #: the new spec's messages whose version this finding calls for bumping
    affects: tuple[str, ...] = field(default=(), compare=False)

    @property
    def direction(self) -> str:
        return RULES[self.rule].direction

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}:{self.col}: error[{self.rule}] ({self.direction}): "
            f"{self.text}: {CONSEQUENCE[self.direction]}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "rule": self.rule,
            "direction": self.direction,
            "subject": self.subject,
            "message": self.text,
            "consequence": CONSEQUENCE[self.direction],
        }


@dataclass(frozen=True)
class Side:
    """One compiled spec with its source positions."""

    loaded: LoadedSpec
    spec: CheckedSpec
    fingerprint: int

    @property
    def file(self) -> str:
        return self.loaded.file


def load_side(source: str | bytes, name: str, *, old: bool = False) -> Side:
    """Load, check and fingerprint a spec (``SpecErrors`` when it does not compile). The
    ``old`` side is what peers ran: the rules on what can carry a stream, added after specs
    that break them were committed, are not applied to it (``check``'s ``stream_rules``)."""
    loaded = load_text(source, name)
    spec = check(loaded, stream_rules=not old)
    return Side(loaded, spec, build(spec, name).fingerprint)


# --- the comparison ----------------------------------------------------------------------


def _fmt(v: object) -> str:
    if v is None:
        return "unbounded"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        return repr(v)
    return str(v)


class _Emit(Protocol):
    """The per-field emit callback: rule, text, and a path below the field."""

    def __call__(self, rule: str, text: str, sub: tuple[str | int, ...] = ()) -> None: ...


class _Comparer:
    def __init__(self, old: Side, new: Side) -> None:
        self.old, self.new = old, new
        self.findings: list[Finding] = []
        self.all_messages = tuple(m.name for m in new.spec.messages)

    # -- recording ------------------------------------------------------------------

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
        side = self.old if deleted else self.new
        m = side.loaded.mark(path, key=key)
        self.findings.append(
            Finding(side.file, m.line, m.col, rule, text, subject, tuple(sorted(set(affects))))
        )

    def enum_users(self, enum: str, member: str) -> tuple[str, ...]:
        """The messages whose version a change to ``enum.member`` calls for bumping."""
        spec = self.new.spec
        action = next((f for f in spec.header.fields if f.name == spec.header.action), None)
        if action is not None and action.type.enum == enum:
            # an action member stands for the message it carries (none: a control action)
            return tuple(m.name for m in spec.messages if m.action == member)
        if any(f.type.enum == enum for f in spec.header.fields):
            return self.all_messages
        return tuple(m.name for m in spec.messages if any(f.type.enum == enum for f in m.fields))

    # -- top level ------------------------------------------------------------------

    def run(self) -> list[Finding]:
        o, n = self.old.spec, self.new.spec
        if o.protocol != n.protocol:
            self.emit(
                "PROTOCOL_RENAMED",
                f"protocol {o.protocol} -> {n.protocol}",
                ("protocol",),
                subject="protocol",
                affects=self.all_messages,
                key=False,
            )
        self.enums()
        self.header()
        self.messages()
        return sorted(set(self.findings))

    # -- enums ----------------------------------------------------------------------

    def enums(self) -> None:
        new_enums = {e.name: e for e in self.new.spec.enums}
        for oe in self.old.spec.enums:
            ne = new_enums.get(oe.name)
            if ne is None:
                continue  # fields typed with it are retyped; an unused enum is no contract
            ov, nv = dict(oe.members), dict(ne.members)
            o_by_val = {v: m for m, v in oe.members}
            n_by_val = {v: m for m, v in ne.members}
            base: PathKey = ("enums", ne.name, "values")
            for member, value in oe.members:
                subject = f"{oe.name}.{member}"
                if member in nv:
                    if nv[member] != value:
                        self.emit(
                            "ENUM_VALUE_RENUMBERED",
                            f"{subject} = {value} -> {nv[member]}",
                            (*base, member),
                            subject=subject,
                            affects=self.enum_users(ne.name, member),
                        )
                elif value in n_by_val and n_by_val[value] not in ov:
                    self.emit(
                        "ENUM_MEMBER_RENAMED",
                        f"{oe.name} value {value}: {member} -> {n_by_val[value]}",
                        (*base, n_by_val[value]),
                        subject=subject,
                        affects=self.enum_users(ne.name, n_by_val[value]),
                    )
                elif value not in n_by_val:
                    self.emit(
                        "ENUM_VALUE_REMOVED",
                        f"{subject} = {value} deleted",
                        ("enums", oe.name, "values", member),
                        subject=subject,
                        affects=self.enum_users(ne.name, member),
                        deleted=True,
                    )
            for member, value in ne.members:
                if member in ov or value in o_by_val:
                    continue
                self.emit(
                    "ENUM_VALUE_ADDED",
                    f"{ne.name}.{member} = {value} added to a closed enum",
                    (*base, member),
                    subject=f"{ne.name}.{member}",
                    affects=self.enum_users(ne.name, member),
                )

    # -- header ---------------------------------------------------------------------

    def header(self) -> None:
        oh, nh = self.old.spec.header, self.new.spec.header
        every = self.all_messages
        for i, s in enumerate(nh.slots):
            if s not in oh.slots:
                self.emit(
                    "HEADER_SLOT_ADDED",
                    f"header slot {s} added at position {i} ({len(oh.slots)} -> {len(nh.slots)} slots)",
                    ("header", "slots", i),
                    subject=f"header.{s}",
                    affects=every,
                    key=False,
                )
        for i, s in enumerate(oh.slots):
            if s not in nh.slots:
                self.emit(
                    "HEADER_SLOT_REMOVED",
                    f"header slot {s} deleted ({len(oh.slots)} -> {len(nh.slots)} slots)",
                    ("header", "slots", i),
                    subject=f"header.{s}",
                    affects=every,
                    deleted=True,
                    key=False,
                )
        common_old = [s for s in oh.slots if s in nh.slots]
        common_new = [s for s in nh.slots if s in oh.slots]
        if common_old != common_new:
            self.emit(
                "HEADER_SLOTS_REORDERED",
                f"header slots [{', '.join(common_old)}] -> [{', '.join(common_new)}]",
                ("header", "slots"),
                subject="header.slots",
                affects=every,
            )
        if oh.action != nh.action:
            self.emit(
                "HEADER_ACTION_CHANGED",
                f"header action field {oh.action} -> {nh.action}",
                ("header", "action"),
                subject="header.action",
                affects=every,
            )
        for kind, rule, o_map, n_map in (
            ("roles", "ROLE_CHANGED", dict(oh.roles), dict(nh.roles)),
            ("control", "CONTROL_CHANGED", dict(oh.control), dict(nh.control)),
        ):
            for role in sorted(set(o_map) | set(n_map), key=str):
                a, b = o_map.get(role), n_map.get(role)
                if a != b:
                    self.emit(
                        rule,
                        f"{kind}.{role}: {a or '(none)'} -> {b or '(none)'}",
                        ("header", kind, role) if b is not None else ("header", kind),
                        subject=f"header.{kind}.{role}",
                        affects=every,
                    )
        old_scope = Scope(self.old.spec, None)
        new_scope = Scope(self.new.spec, None)
        new_fields = {f.name: f for f in nh.fields}
        for of in oh.fields:
            nf = new_fields.get(of.name)
            if nf is not None:
                self.field(of, nf, "header", old_scope, new_scope, {}, None, None, every)

    # -- messages -------------------------------------------------------------------

    def messages(self) -> None:
        olds = {m.name: m for m in self.old.spec.messages}
        news = {m.name: m for m in self.new.spec.messages}
        pairs: list[tuple[CMessage, CMessage]] = []
        lone_old = [m for m in self.old.spec.messages if m.name not in news]
        lone_new = {m.id: m for m in self.new.spec.messages if m.name not in olds}
        for om in self.old.spec.messages:
            if om.name in news:
                pairs.append((om, news[om.name]))
        for om in lone_old:
            nm = lone_new.pop(om.id, None)
            if nm is not None:
                self.emit(
                    "MESSAGE_RENAMED",
                    f"message id {om.id}: {om.name} -> {nm.name}",
                    nm.path,
                    subject=nm.name,
                    affects=(nm.name,),
                )
                pairs.append((om, nm))
            else:
                self.emit(
                    "MESSAGE_REMOVED",
                    f"message {om.name} (id {om.id}) deleted",
                    om.path,
                    subject=om.name,
                    deleted=True,
                )
        for nm in sorted(lone_new.values(), key=lambda m: m.name):
            self.emit(
                "MESSAGE_ADDED",
                f"message {nm.name} (id {nm.id}, action {nm.action}) added",
                nm.path,
                subject=nm.name,
            )
        for om, nm in pairs:
            self.message(om, nm)

    def message(self, om: CMessage, nm: CMessage) -> None:
        mine = (nm.name,)
        p = nm.path

        def ident(rule: str, what: str, a: object, b: object, key: str) -> None:
            if a != b:
                self.emit(
                    rule, f"{nm.name} {what} {a} -> {b}", (*p, key), subject=nm.name, affects=mine
                )

        ident("MESSAGE_ID_CHANGED", "id", om.id, nm.id, "id")
        if om.version != nm.version:
            how = "bumped" if nm.version > om.version else "lowered"
            self.emit(
                "MESSAGE_VERSION_CHANGED",
                f"{nm.name} version {om.version} -> {nm.version} ({how}; receivers refuse "
                "the other version)",
                (*p, "version"),
                subject=nm.name,
                affects=mine,
            )
        ident("MESSAGE_ACTION_CHANGED", "action", om.action, nm.action, "action")
        ident(
            "DISCRIMINATOR_CHANGED",
            "discriminator",
            om.discriminator or "(none)",
            nm.discriminator or "(none)",
            "discriminator",
        )
        ident(
            "VERSION_FIELD_CHANGED",
            "version_field",
            om.version_field or "(none)",
            nm.version_field or "(none)",
            "version_field",
        )
        old_scope, new_scope = Scope(self.old.spec, om), Scope(self.new.spec, nm)
        olds = {f.name: f for f in om.fields}
        news = {f.name: f for f in nm.fields}
        # a field deleted and one added at the same place with the same type: a rename
        rename: dict[str, str] = {}  # new name -> old name
        gone = [f for f in om.fields if f.name not in news]
        added = [f for f in nm.fields if f.name not in olds]
        o_index = {f.name: i for i, f in enumerate(om.fields)}
        n_index = {f.name: i for i, f in enumerate(nm.fields)}
        for of in gone:
            for nf in added:
                if (
                    nf.name not in rename
                    and n_index[nf.name] == o_index[of.name]
                    and _contract(nf) == _contract(of)
                ):
                    rename[nf.name] = of.name
                    break
        back = {o: n for n, o in rename.items()}
        for of in om.fields:
            found = news.get(of.name) or (news.get(back[of.name]) if of.name in back else None)
            if found is None:
                required = self._ever_required(of, old_scope, new_scope, added=False)
                self.emit(
                    "REQUIRED_FIELD_REMOVED" if required else "FIELD_REMOVED",
                    f"{nm.name}.{of.name} deleted"
                    + (" (old receivers require it for some envelopes)" if required else ""),
                    of.path,
                    subject=f"{nm.name}.{of.name}",
                    affects=mine,
                    deleted=True,
                )
                continue
            nf = found
            if nf.name != of.name:
                self.emit(
                    "FIELD_RENAMED",
                    f"{nm.name}.{of.name} -> {nf.name}",
                    nf.path,
                    subject=f"{nm.name}.{nf.name}",
                    affects=mine,
                )
            self.field(of, nf, nm.name, old_scope, new_scope, rename, om, nm, mine)
        for nf in nm.fields:
            if nf.name in olds or nf.name in rename:
                continue
            required = self._ever_required(nf, old_scope, new_scope, added=True)
            self.emit(
                "REQUIRED_FIELD_ADDED" if required else "FIELD_ADDED",
                f"{nm.name}.{nf.name} added"
                + (
                    f" (required {'always' if nf.always_required else 'when ' + _rule_text(nf)})"
                    if required
                    else ""
                ),
                nf.path,
                subject=f"{nm.name}.{nf.name}",
                affects=mine,
            )
        self.dims(om, nm, mine)
        self.bindings(om, nm, rename, mine)
        self.invariants(om, nm, old_scope, new_scope, rename, mine)

    @staticmethod
    def _ever_required(f: CField, old_scope: Scope, new_scope: Scope, *, added: bool) -> bool:
        """Whether the other side's senders can produce an envelope that needs ``f``: old
        senders for a field the new spec adds, new senders for one it deletes."""
        if f.always_required:
            return True
        if f.required_when is None:
            return False
        node = f.required_when.node
        try:
            space = Space(old_scope, new_scope, [] if added else [node], [node] if added else [])
        except Undecided:
            return True
        enums = (new_scope if added else old_scope).enums
        side = "old" if added else "new"
        return any(
            space.sendable(o, n, side) and domains.condition(node, n if added else o, enums)
            for o, n in space.assignments()
        )

    # -- fields ---------------------------------------------------------------------

    def field(
        self,
        of: CField,
        nf: CField,
        owner: str,
        old_scope: Scope,
        new_scope: Scope,
        rename: Mapping[str, str],
        om: CMessage | None,
        nm: CMessage | None,
        affects: Sequence[str],
    ) -> None:
        subject = f"{owner}.{nf.name}"

        def emit(rule: str, text: str, sub: tuple[str | int, ...] = ()) -> None:
            self.emit(rule, text, (*nf.path, *sub), subject=subject, affects=affects)

        ok, nk = of.type, nf.type
        retyped = ok.kind != nk.kind or ok.enum != nk.enum
        if retyped:
            emit("FIELD_RETYPED", f"{subject} type {ok} -> {nk}", ("type",))
        self.presence(of, nf, subject, old_scope, new_scope, rename, emit)
        self.cached(of, nf, subject, rename, emit)
        if retyped:
            return
        version_field = nm is not None and nm.version_field == nf.name
        if nk.kind in ("int", "float") and not version_field:
            self.ranges(of, nf, subject, emit)
        if nk.kind == "str" and of.max_len != nf.max_len and of.max_len and nf.max_len:
            rule = "STR_MAX_LEN_NARROWED" if nf.max_len < of.max_len else "STR_MAX_LEN_WIDENED"
            emit(rule, f"{subject} max_len {of.max_len} -> {nf.max_len}", ("max_len",))
        if nk.kind == "tensor" and om is not None and nm is not None:
            self.tensor(of, nf, subject, om, nm, emit)
        self.derived(of, nf, subject, old_scope, new_scope, rename, emit)

    def cached(
        self, of: CField, nf: CField, subject: str, rename: Mapping[str, str], emit: _Emit
    ) -> None:
        """``cached_by``: a rule across envelopes, so presence rules alone do not show it. A
        new sender of a newly cached field leaves it out while its epoch holds (an old
        receiver expects it every time); an old sender of a field no longer cached does."""
        old = of.cached_by
        new = nf.cached_by
        if new is not None and rename.get(new, new) == old:
            return
        if old is None and new is not None:
            emit(
                "FIELD_CACHED",
                f"{subject} is now cached_by {new}: a new sender leaves it out while {new} holds",
                ("cached_by",),
            )
        elif old is not None and new is None:
            emit(
                "FIELD_UNCACHED",
                f"{subject} is no longer cached_by {old}: an old sender leaves it out while "
                f"{old} holds",
            )
        elif old is not None and new is not None:
            emit(
                "FIELD_CACHE_EPOCH_CHANGED",
                f"{subject} cached_by {old} -> {new}: old and new peers send it on other chunks",
                ("cached_by",),
            )

    def ranges(self, of: CField, nf: CField, subject: str, emit: _Emit) -> None:
        is_int = nf.type.kind == "int"
        lo_default = domains.INT64_MIN if is_int else None
        hi_default = domains.INT64_MAX if is_int else None
        olo = of.range_min if of.range_min is not None else lo_default
        nlo = nf.range_min if nf.range_min is not None else lo_default
        ohi = of.range_max if of.range_max is not None else hi_default
        nhi = nf.range_max if nf.range_max is not None else hi_default
        name = nf.name
        if olo != nlo:
            a = -math.inf if olo is None else olo
            b = -math.inf if nlo is None else nlo
            rule = "FIELD_RANGE_NARROWED" if b > a else "FIELD_RANGE_WIDENED"
            emit(rule, f"{name} min {_fmt(olo)} -> {_fmt(nlo)}", ("range",))
        if ohi != nhi:
            a = math.inf if ohi is None else ohi
            b = math.inf if nhi is None else nhi
            rule = "FIELD_RANGE_NARROWED" if b < a else "FIELD_RANGE_WIDENED"
            emit(rule, f"{name} max {_fmt(ohi)} -> {_fmt(nhi)}", ("range",))

    def presence(
        self,
        of: CField,
        nf: CField,
        subject: str,
        old_scope: Scope,
        new_scope: Scope,
        rename: Mapping[str, str],
        emit: _Emit,
    ) -> None:
        o_rules = [c for c in (of.required_when, of.forbidden_when, of.none_unless) if c]
        n_rules = [c for c in (nf.required_when, nf.forbidden_when, nf.none_unless) if c]
        if not o_rules and not n_rules:
            if of.type.nullable == nf.type.nullable and of.cached_by != nf.cached_by:
                return  # presence follows the epoch now (or no longer): FIELD_(UN)CACHED
            if of.always_required and not nf.always_required:
                emit(
                    "FIELD_NULLABLE",
                    f"{subject} {of.type} -> {nf.type}: a new sender may leave it out",
                    ("type",),
                )
            elif nf.always_required and not of.always_required:
                emit(
                    "FIELD_NOT_NULLABLE",
                    f"{subject} {of.type} -> {nf.type}: now always required",
                    ("type",),
                )
            return
        if [(c.text) for c in o_rules] == [(c.text) for c in n_rules] and (
            of.always_required == nf.always_required
            and _rule_keys(of) == _rule_keys(nf)
            and not rename
        ):
            return
        oe, ne = old_scope.enums, new_scope.enums

        def required(f: CField, enums: Mapping[str, Mapping[str, int]]) -> domains.Pred:
            node = f.required_when.node if f.required_when else None
            return lambda v: f.always_required or domains.condition(node, v, enums)

        def forbidden(f: CField, enums: Mapping[str, Mapping[str, int]]) -> domains.Pred:
            fw = f.forbidden_when.node if f.forbidden_when else None
            nu = f.none_unless.node if f.none_unless else None
            return lambda v: (
                domains.condition(fw, v, enums)
                or (nu is not None and not domains.condition(nu, v, enums))
            )

        try:
            space = Space(
                old_scope,
                new_scope,
                [c.node for c in o_rules],
                [c.node for c in n_rules],
                rename,
            )
            # more required or forbidden: what old senders send; less: what new ones send
            req = domains.compare(space, required(of, oe), required(nf, ne), "old", "new")
            forb = domains.compare(space, forbidden(of, oe), forbidden(nf, ne), "old", "new")
        except Undecided as exc:
            if (
                not rename
                and of.always_required == nf.always_required
                and all(
                    domains.same_form(_node(getattr(of, k)), _node(getattr(nf, k)))
                    for k in ("required_when", "forbidden_when", "none_unless")
                )
            ):
                return
            if _rules_text(of) != _rules_text(nf):
                emit(
                    "PRESENCE_CHANGED",
                    f"{subject} presence {_rules_text(of)} -> {_rules_text(nf)} "
                    f"(not decided exactly: {exc})",
                    _first_rule_key(nf),
                )
            return
        if req.gained:
            emit(
                "PRESENCE_REQUIRED_WIDENED",
                f"{subject} is now required when {req.gained} "
                f"({_rules_text(of)} -> {_rules_text(nf)})",
                _first_rule_key(nf, "required_when"),
            )
        if req.lost:
            emit(
                "PRESENCE_REQUIRED_NARROWED",
                f"{subject} is no longer required when {req.lost} "
                f"({_rules_text(of)} -> {_rules_text(nf)})",
                _first_rule_key(nf, "required_when"),
            )
        if forb.gained:
            emit(
                "PRESENCE_FORBIDDEN_WIDENED",
                f"{subject} must now be absent when {forb.gained} "
                f"({_rules_text(of)} -> {_rules_text(nf)})",
                _first_rule_key(nf, "forbidden_when", "none_unless"),
            )
        if forb.lost:
            emit(
                "PRESENCE_FORBIDDEN_NARROWED",
                f"{subject} may now be present when {forb.lost} "
                f"({_rules_text(of)} -> {_rules_text(nf)})",
                _first_rule_key(nf, "forbidden_when", "none_unless"),
            )

    def derived(
        self,
        of: CField,
        nf: CField,
        subject: str,
        old_scope: Scope,
        new_scope: Scope,
        rename: Mapping[str, str],
        emit: _Emit,
    ) -> None:
        od, nd = of.derived, nf.derived
        if od is None and nd is None:
            return
        if od is None and nd is not None:
            emit("DERIVED_ADDED", f"{subject} is now derived: {nd.text}", ("derived",))
            return
        if nd is None and od is not None:
            emit("DERIVED_REMOVED", f"{subject} is no longer derived (was {od.text})")
            return
        assert od is not None and nd is not None
        if od.text == nd.text and not rename:
            return
        oe, ne = old_scope.enums, new_scope.enums
        try:
            space = Space(old_scope, new_scope, [od.node], [nd.node], rename)
            where = domains.first_difference(
                space,
                lambda v: domains.evaluate(od.node, v, oe),
                lambda v: domains.evaluate(nd.node, v, ne),
            )
        except Undecided as exc:
            if od.text != nd.text and (rename or not domains.same_form(od.node, nd.node)):
                emit(
                    "DERIVED_CHANGED",
                    f"{subject} derived {od.text} -> {nd.text} (not decided exactly: {exc})",
                    ("derived",),
                )
            return
        if where is not None:
            emit(
                "DERIVED_CHANGED",
                f"{subject} derived {od.text} -> {nd.text} (they differ when {where})",
                ("derived",),
            )

    # -- tensors --------------------------------------------------------------------

    def tensor(
        self, of: CField, nf: CField, subject: str, om: CMessage, nm: CMessage, emit: _Emit
    ) -> None:
        gone = [d for d in of.dtypes if d not in nf.dtypes]
        new = [d for d in nf.dtypes if d not in of.dtypes]
        if gone:
            emit("TENSOR_DTYPES_NARROWED", f"{subject} dtypes lose {', '.join(gone)}", ("dtypes",))
        if new:
            emit("TENSOR_DTYPES_WIDENED", f"{subject} dtypes gain {', '.join(new)}", ("dtypes",))
        if len(of.shape) != len(nf.shape):
            emit(
                "TENSOR_RANK_CHANGED",
                f"{subject} shape {_shape(of)} -> {_shape(nf)} (rank {len(of.shape)} -> "
                f"{len(nf.shape)})",
                ("shape",),
            )
        else:
            odims = {d.name: (d.min, d.max) for d in om.dims}
            ndims = {d.name: (d.min, d.max) for d in nm.dims}
            for i, (a, b) in enumerate(zip(of.shape, nf.shape, strict=True)):
                if isinstance(a, str) and isinstance(b, str) and a == b:
                    continue  # the symbol's own bounds are compared once (DIM_RANGE_*)
                lo_a, hi_a = (a, a) if isinstance(a, int) else odims.get(a, (0, 0))
                lo_b, hi_b = (b, b) if isinstance(b, int) else ndims.get(b, (0, 0))
                what = (
                    f"{subject} shape[{i}] {a} ({_span(lo_a, hi_a)}) -> {b} ({_span(lo_b, hi_b)})"
                )
                if lo_b > lo_a or hi_b < hi_a:
                    emit("TENSOR_DIM_NARROWED", what, ("shape", i))
                if lo_b < lo_a or hi_b > hi_a:
                    emit("TENSOR_DIM_WIDENED", what, ("shape", i))
        if of.max_elements != nf.max_elements:
            a_el, b_el = _elements(of, om), _elements(nf, nm)
            if a_el != b_el:
                rule = (
                    "TENSOR_MAX_ELEMENTS_NARROWED" if b_el < a_el else "TENSOR_MAX_ELEMENTS_WIDENED"
                )
                emit(
                    rule,
                    f"{subject} max_elements {of.max_elements or 'unset'} -> "
                    f"{nf.max_elements or 'unset'} (element bound {a_el} -> {b_el})",
                    ("max_elements",),
                )

    def dims(self, om: CMessage, nm: CMessage, affects: Sequence[str]) -> None:
        odims = {d.name: d for d in om.dims}
        for d in nm.dims:
            o = odims.get(d.name)
            if o is None or (o.min, o.max) == (d.min, d.max):
                continue
            text = f"{nm.name} dimension {d.name} {_span(o.min, o.max)} -> {_span(d.min, d.max)}"
            path = (*nm.path, "dims", d.name)
            if d.min > o.min or d.max < o.max:
                self.emit(
                    "DIM_RANGE_NARROWED", text, path, subject=f"{nm.name}.{d.name}", affects=affects
                )
            if d.min < o.min or d.max > o.max:
                self.emit(
                    "DIM_RANGE_WIDENED", text, path, subject=f"{nm.name}.{d.name}", affects=affects
                )

    def bindings(
        self, om: CMessage, nm: CMessage, rename: Mapping[str, str], affects: Sequence[str]
    ) -> None:
        """Which shape positions must be equal (bound to one symbol), old against new."""
        olds = {f.name: f for f in om.fields if f.type.kind == "tensor"}
        odims = {d.name: (d.min, d.max) for d in om.dims}
        ndims = {d.name: (d.min, d.max) for d in nm.dims}
        positions: list[tuple[str, int, CField, int | str, int | str]] = []
        for nf in nm.fields:
            of = olds.get(rename.get(nf.name, nf.name))
            if nf.type.kind != "tensor" or of is None or len(of.shape) != len(nf.shape):
                continue
            for i, (a, b) in enumerate(zip(of.shape, nf.shape, strict=True)):
                positions.append((nf.name, i, nf, a, b))

        def fixed(sym: int | str, dims: Mapping[str, tuple[int, int]]) -> int | None:
            if isinstance(sym, int):
                return sym
            lo, hi = dims.get(sym, (0, -1))
            return lo if lo == hi else None

        def tied(x: int | str, y: int | str, dims: Mapping[str, tuple[int, int]]) -> bool:
            if isinstance(x, str) and x == y:
                return True
            fx, fy = fixed(x, dims), fixed(y, dims)
            return fx is not None and fx == fy

        seen: set[tuple[str, str]] = set()
        for i, p in enumerate(positions):
            for q in positions[i + 1 :]:
                for rule, new_tie, old_tie, sym in (
                    (
                        "TENSOR_DIM_BINDING_ADDED",
                        tied(p[4], q[4], ndims),
                        tied(p[3], q[3], odims),
                        p[4],
                    ),
                    (
                        "TENSOR_DIM_BINDING_REMOVED",
                        tied(p[3], q[3], odims),
                        tied(p[4], q[4], ndims),
                        p[3],
                    ),
                ):
                    if not new_tie or old_tie or not isinstance(sym, str):
                        continue
                    label = f"{p[0]}[{p[1]}] and {q[0]}[{q[1]}]"
                    if (rule, label) in seen:
                        continue
                    seen.add((rule, label))
                    verb = (
                        "must now be equal" if rule.endswith("ADDED") else "need no longer be equal"
                    )
                    field = q[2]
                    self.emit(
                        rule,
                        f"{nm.name} sizes {label} {verb} (shape {_shape(p[2])}, {_shape(field)})",
                        (*field.path, "shape", q[1]),
                        subject=f"{nm.name}.{field.name}",
                        affects=affects,
                        key=False,
                    )

    # -- invariants -----------------------------------------------------------------

    def invariants(
        self,
        om: CMessage,
        nm: CMessage,
        old_scope: Scope,
        new_scope: Scope,
        rename: Mapping[str, str],
        affects: Sequence[str],
    ) -> None:
        olds = {i.id: (k, i) for k, i in enumerate(om.invariants)}
        news = {i.id: (k, i) for k, i in enumerate(nm.invariants)}
        if [i.expr.text for i in om.invariants] == [i.expr.text for i in nm.invariants] and (
            not rename
        ):
            return
        # First the conjunction, one group of invariants sharing names at a time (groups
        # over disjoint names are independent): splitting, merging, reordering or renaming
        # invariants that admit the same envelopes is no finding.
        settled: set[int] = set()  # ids (Python) of invariants in groups that agree
        if not rename:  # an invariant kept as it was agrees with itself
            n_texts = {i.expr.text for i in nm.invariants}
            o_texts = {i.expr.text for i in om.invariants}
            settled.update(id(i) for i in om.invariants if i.expr.text in n_texts)
            settled.update(id(i) for i in nm.invariants if i.expr.text in o_texts)
        o_rest = [i for i in om.invariants if id(i) not in settled]
        n_rest = [i for i in nm.invariants if id(i) not in settled]
        for o_group, n_group in _groups(o_rest, n_rest, rename):
            if self._same_group(o_group, n_group, old_scope, new_scope, rename):
                settled.update(id(i) for i in (*o_group, *n_group))
        if len(settled) == len(om.invariants) + len(nm.invariants):
            return
        pairs: list[tuple[CInvariant | None, CInvariant | None]] = []
        lone_old = [i for i in om.invariants if i.id not in news]
        lone_new = [i for i in nm.invariants if i.id not in olds]
        for i in om.invariants:
            if i.id in news:
                pairs.append((i, news[i.id][1]))
        for i in lone_old:
            twin = next((j for j in lone_new if j.expr.text == i.expr.text), None)
            if twin is not None:
                lone_new.remove(twin)
                pairs.append((i, twin))
            else:
                pairs.append((i, None))
        pairs.extend((None, j) for j in lone_new)
        for oi, ni in pairs:
            if all(i is None or id(i) in settled for i in (oi, ni)):
                continue
            self.invariant(nm, oi, ni, old_scope, new_scope, rename, affects, om)

    @staticmethod
    def _same_group(
        olds: Sequence[CInvariant],
        news: Sequence[CInvariant],
        old_scope: Scope,
        new_scope: Scope,
        rename: Mapping[str, str],
    ) -> bool:
        oe, ne = old_scope.enums, new_scope.enums
        try:
            space = Space(
                old_scope,
                new_scope,
                [i.expr.node for i in olds],
                [i.expr.node for i in news],
                rename,
            )
            return domains.compare(
                space,
                lambda v: all(domains.invariant(i.expr.node, v, oe) for i in olds),
                lambda v: all(domains.invariant(i.expr.node, v, ne) for i in news),
                "new",
                "old",
            ).same
        except Undecided:
            return not rename and {_norm_key(i) for i in olds} == {_norm_key(i) for i in news}

    def invariant(
        self,
        nm: CMessage,
        oi: CInvariant | None,
        ni: CInvariant | None,
        old_scope: Scope,
        new_scope: Scope,
        rename: Mapping[str, str],
        affects: Sequence[str],
        om: CMessage,
    ) -> None:
        oe, ne = old_scope.enums, new_scope.enums
        on = oi.expr.node if oi else None
        nn = ni.expr.node if ni else None
        either = ni if ni is not None else oi
        name = either.id if either is not None else "?"
        subject = f"{nm.name}.invariants.{name}"
        if ni is not None:
            idx = nm.invariants.index(ni)
            path: PathKey = (*nm.path, "invariants", idx, "expr")
            deleted = False
        else:
            assert oi is not None
            path = (*om.path, "invariants", om.invariants.index(oi))
            deleted = True

        def emit(rule: str, text: str) -> None:
            self.emit(
                rule, text, path, subject=subject, affects=affects, deleted=deleted, key=False
            )

        if oi is not None and ni is not None and oi.expr.text == ni.expr.text and not rename:
            return
        try:
            space = Space(old_scope, new_scope, [on] if on else [], [nn] if nn else [], rename)
            diff = domains.compare(
                space,
                lambda v: domains.invariant(on, v, oe),
                lambda v: domains.invariant(nn, v, ne),
                "new",  # admits more: what new senders send
                "old",  # admits less: what old senders send
            )
        except Undecided as exc:
            if oi is not None and ni is not None and not rename and domains.same_form(on, nn):
                return
            if oi is None and ni is not None:
                emit("INVARIANT_ADDED", f"invariant {ni.id} added: {ni.expr.text}")
            elif ni is None and oi is not None:
                emit("INVARIANT_REMOVED", f"invariant {oi.id} deleted (was {oi.expr.text})")
            elif oi is not None and ni is not None and oi.expr.text != ni.expr.text:
                emit(
                    "INVARIANT_CHANGED",
                    f"invariant {name}: {oi.expr.text} -> {ni.expr.text} "
                    f"(not decided exactly: {exc})",
                )
            return
        if oi is None and ni is not None:
            if diff.lost:
                emit(
                    "INVARIANT_ADDED",
                    f"invariant {ni.id} added: {ni.expr.text} (refuses {diff.lost})",
                )
            return
        if ni is None and oi is not None:
            if diff.gained:
                emit(
                    "INVARIANT_REMOVED",
                    f"invariant {oi.id} deleted (was {oi.expr.text}; old receivers refuse "
                    f"{diff.gained})",
                )
            return
        assert oi is not None and ni is not None
        change = f"invariant {name}: {oi.expr.text} -> {ni.expr.text}"
        if diff.lost:
            emit("INVARIANT_STRENGTHENED", f"{change} (now refuses {diff.lost})")
        if diff.gained:
            emit("INVARIANT_WEAKENED", f"{change} (now admits {diff.gained})")


def _groups(
    olds: Sequence[CInvariant], news: Sequence[CInvariant], rename: Mapping[str, str]
) -> list[tuple[list[CInvariant], list[CInvariant]]]:
    """Old and new invariants grouped by the names they share (connected components)."""
    items = [(True, i, set(expr.names(i.expr.node))) for i in olds]
    items += [(False, i, {rename.get(n, n) for n in expr.names(i.expr.node)}) for i in news]
    parent = list(range(len(items)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    owner: dict[str, int] = {}
    for k, (_, _, names) in enumerate(items):
        for n in sorted(names):
            if n in owner:
                parent[find(k)] = find(owner[n])
            else:
                owner[n] = k
    groups: dict[int, tuple[list[CInvariant], list[CInvariant]]] = {}
    for k, (is_old, inv, _) in enumerate(items):
        g = groups.setdefault(find(k), ([], []))
        g[0 if is_old else 1].append(inv)
    return [groups[k] for k in sorted(groups)]


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


def _node(ce: CExpr | None) -> expr.Node | None:
    return None if ce is None else ce.node


def _norm_key(i: CInvariant) -> str:
    return expr.to_text(domains.normalize(i.expr.node))


def _shape(f: CField) -> str:
    return "[" + ", ".join(str(d) for d in f.shape) + "]"


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _elements(f: CField, m: CMessage) -> int:
    dims = {d.name: d.max for d in m.dims}
    bound = math.prod(d if isinstance(d, int) else dims.get(d, 0) for d in f.shape)
    return min(bound, f.max_elements) if f.max_elements is not None else bound


def _rule_keys(f: CField) -> tuple[bool, bool, bool]:
    return (f.required_when is not None, f.forbidden_when is not None, f.none_unless is not None)


def _rules_text(f: CField) -> str:
    parts = []
    if f.always_required:
        parts.append("always required")
    for key, ce in (
        ("required_when", f.required_when),
        ("forbidden_when", f.forbidden_when),
        ("none_unless", f.none_unless),
    ):
        if ce is not None:
            parts.append(f"{key}: {ce.text}")
    return "; ".join(parts) or "optional"


def _rule_text(f: CField) -> str:
    return f.required_when.text if f.required_when else "always"


def _first_rule_key(f: CField, *prefer: str) -> tuple[str, ...]:
    for key in (*prefer, "required_when", "forbidden_when", "none_unless"):
        if getattr(f, key) is not None:
            return (key,)
    return ("type",)


def compare(old: Side, new: Side) -> list[Finding]:
    """Every finding of ``new`` against ``old``, sorted (policy findings not included)."""
    return _Comparer(old, new).run()


def policy(findings: Sequence[Finding], old: Side, new: Side) -> list[Finding]:
    """``BREAKING_WITHOUT_VERSION_BUMP`` for each message broken without a bump."""
    olds = {m.name: m for m in old.spec.messages}
    by_id = {m.id: m for m in old.spec.messages}
    rules: dict[str, set[str]] = {}
    for f in findings:
        if f.rule in _NO_BUMP_NEEDED or f.rule == "BREAKING_WITHOUT_VERSION_BUMP":
            continue
        for name in f.affects:
            rules.setdefault(name, set()).add(f.rule)
    out = []
    for m in new.spec.messages:
        broken = rules.get(m.name)
        if not broken:
            continue
        om = olds.get(m.name) or by_id.get(m.id)
        if om is None or m.version > om.version:
            continue
        mark = new.loaded.mark((*m.path, "version"), key=True)
        also = f" (and {m.version_field} with it)" if m.version_field else ""
        names = ", ".join(sorted(broken))
        allow = " ".join(f"--allow {r}" for r in sorted(broken))
        # What passes, exactly: a bump alone leaves the findings and adds the bump's own
        # (MESSAGE_VERSION_CHANGED, both), so the bump needs it allowed too; the rules
        # allowed without a bump lift this finding with them (it counts only findings that
        # are not allowed).
        out.append(
            Finding(
                new.file,
                mark.line,
                mark.col,
                "BREAKING_WITHOUT_VERSION_BUMP",
                f"{m.name} breaks ({names}) but its version stays {m.version}; a deliberate "
                f"break passes with {m.name}.version bumped{also} and {allow} --allow "
                f"MESSAGE_VERSION_CHANGED (the bump is a finding too), or with {allow} and "
                "the version kept",
                m.name,
                (m.name,),
            )
        )
    return sorted(out)


def unknown_rule(rule: str) -> str | None:
    """None for a known rule id, else a one-line error naming the nearest known id(s): a
    close spelling (difflib), else the ids sharing a word with it (``VERSION``), else the
    nearest id at all, and where the catalogue is listed."""
    if rule in RULES:
        return None
    key = rule.strip().upper().replace("-", "_").replace(" ", "_")

    def ratio(r: str) -> float:
        return difflib.SequenceMatcher(None, key, r).ratio()

    close = [key] if key in RULES else difflib.get_close_matches(key, list(RULES), 3, 0.6)
    close = [r for r in close if ratio(r) >= ratio(close[0]) - 0.1]  # the near ones only
    if not close:
        words = set(key.split("_")) - {""}
        sharing = [r for r in RULES if words & set(r.split("_"))]
        close = difflib.get_close_matches(key, sharing, n=3, cutoff=0.0)
    if close:
        names = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
        hint = f"did you mean {names}?"
    else:
        nearest = difflib.get_close_matches(key, list(RULES), n=1, cutoff=0.0)
        hint = f"the nearest known rule id is {nearest[0]}" if nearest else "no rule is near"
    return f"unknown rule {rule!r}; {hint} (tpwire breaking --list-rules lists all {len(RULES)})"


@dataclass(frozen=True)
class Report:
    old: Side
    new: Side
    findings: tuple[Finding, ...]  # after --allow / ignore
    allowed: tuple[Finding, ...]


def breaking(old: Side, new: Side, allow: Iterable[str] = ()) -> Report:
    """The full verdict: comparison, allow list, then the version-bump policy."""
    allowed_rules = frozenset(allow)
    found = compare(old, new)
    kept = [f for f in found if f.rule not in allowed_rules]
    pol = policy(kept, old, new)
    everything = sorted([*found, *pol])
    return Report(
        old,
        new,
        tuple(f for f in everything if f.rule not in allowed_rules),
        tuple(f for f in everything if f.rule in allowed_rules),
    )


def to_accept(reports: Iterable[Report]) -> list[str]:
    """The rules that, allowed as well, leave ``reports`` with no finding: every rule found
    but the policy's (allowing what a message breaks with lifts the policy finding too)."""
    return sorted(
        {f.rule for r in reports for f in r.findings if f.rule != "BREAKING_WITHOUT_VERSION_BUMP"}
    )


def compare_texts(
    old_text: str | bytes,
    new_text: str | bytes,
    old_name: str = "<old>",
    new_name: str = "<new>",
    allow: Iterable[str] = (),
) -> Report:
    """Compile both specs (``SpecErrors`` with every error of both) and compare them."""
    errors: list[SpecError] = []
    sides: list[Side] = []
    for text, name, old in ((old_text, old_name, True), (new_text, new_name, False)):
        try:
            sides.append(load_side(text, name, old=old))
        except SpecErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise SpecErrors(errors)
    return breaking(sides[0], sides[1], allow)
