"""Stage 3 - IR: the checked spec with everything resolved for printing.

Templates only print and loop: Python spellings (type strings, compiled expressions,
literal reprs, class names), wire offsets and doc strings are computed here. The IR's
modules (``ir_build``, ``ir_messages``, ``ir_fields``, ``ir_expr``): docs/architecture.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tpwire.runtime.dtypes import CODEC_CONTRACT, DTYPE_CODES

from . import expr
from .constraints import INT64_MAX, INT64_MIN, FieldConstraints
from .model import CheckedSpec
from .rules import (
    DerivedCheck,
    InvariantCheck,
    PresenceGroup,
    RuleIR,
    derived_checks,
    extra_tests,
    field_rules,
    invariant_checks,
    invariant_rule,
    plan_rule,
    presence_groups,
    protocol_rules,
    tensor_field_py,
    version_rule,
)

#: Python that reads the validators' refused set (not a field or a string named ``bad``)
_READS_BAD = re.compile(r"(?<![.\w'\"])bad\b")


def _reads_bad(conds: Iterable[str]) -> bool:
    """Whether any of these conditions reads the refused set (a pass binds ``bad`` then)."""
    return any(_READS_BAD.search(c) for c in conds)


def py_tuple(items: Iterable[str]) -> str:
    """A tuple display of Python ``items``, without the trailing comma that would make the
    formatter spread it over one line per item."""
    parts = list(items)
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


#: Fixed frame 0 words before the header slots: magic/version, fingerprint.
FIXED_WORDS = 2


@dataclass(frozen=True)
class ExprIR:
    text: str  # canonical spec text, for docs and rule strings
    py: str  # Python, names spelled by the caller's context
    negated_py: str  # Python for ``not <expr>``, lint-clean
    none_guard: str  # "a is not None and b is not None" ("" when nothing is nullable)
    refs: tuple[str, ...]  # field names it reads (skip when any of them is ill-typed)
    node: expr.Node
    #: (text, python) of the values a failure report shows: both sides of a comparison,
    #: or the fields it reads
    sides: tuple[tuple[str, str], ...] = ()
    #: the same expression over plain data: fields as ``f["x"]``, dimensions as ``d["X"]``
    data_py: str = ""
    data_guard: str = ""
    #: ``(field, python)`` for each ``field == expr`` conjunct on a scalar field, so
    #: strategies can make the expression hold by construction
    solves: tuple[tuple[str, str], ...] = ()

    @property
    def data_value(self) -> str:
        """The expression's value over plain data; None when a nullable name it reads is."""
        return (
            f"({self.data_py} if {self.data_guard} else None)" if self.data_guard else self.data_py
        )

    @property
    def sides_py(self) -> str:
        return ", ".join(f"({t!r}, {p})" for t, p in self.sides)

    @property
    def guarded(self) -> str:
        """True only when every operand is present and the expression holds."""
        return f"({self.none_guard} and {self.py})" if self.none_guard else self.py

    @property
    def negated_guarded(self) -> str:
        """``not guarded``."""
        return f"not ({self.none_guard} and {self.py})" if self.none_guard else self.negated_py

    @property
    def ok_py(self) -> str:
        """True when none of the fields it reads was refused (``bad`` is the validator's
        refused set); "" when it reads no field."""
        if not self.refs:
            return ""
        if len(self.refs) == 1:
            return f"{self.refs[0]!r} not in bad"
        # an empty set is the usual case: ``not bad`` answers it without a method call
        return f"(not bad or bad.isdisjoint({py_tuple(repr(r) for r in self.refs)}))"


@dataclass(frozen=True)
class DimIR:
    index: int
    const: int | None
    symbol: str | None
    lo: int
    hi: int
    word: int  # absolute frame 0 word


@dataclass(frozen=True)
class FieldIR:
    """One field as the templates print it. What a value may be (bounds, length, dtypes,
    shape, presence) is ``constraints`` (``codegen/constraints.py``); this class adds the
    Python spellings and the wire words."""

    name: str
    index: int  # presence bit
    constraints: FieldConstraints
    type_text: str  # as the spec says it, for docs
    value_py: str  # Python type of a present value
    required_when: ExprIR | None
    forbidden_when: ExprIR | None
    none_unless: ExprIR | None
    derived: ExprIR | None
    range_text: str
    #: frame 0: first scalar word and width, or first manifest word (dtype code)
    word: int
    width: int
    why: str
    check: str
    fm: str | None
    doc: str
    rules_text: str  # required_when column for docs
    owner: str  # the Python name of the object holding the field ("h" or "m")
    #: for the rule constants: whose field it is ("header" or the message) and its path
    rule_owner: str = ""
    rule_label: str = ""

    # --- what the record says, by the names the templates use ----------------------------

    @property
    def kind(self) -> str:
        return self.constraints.kind

    @property
    def enum(self) -> str | None:
        return self.constraints.enum

    @property
    def explicit_none(self) -> bool:
        return self.constraints.presence.explicit_none

    @property
    def always_required(self) -> bool:
        return self.constraints.presence.always

    @property
    def cached_by(self) -> str | None:
        """The epoch field this field is cached by (``cached_by``), None for most fields."""
        return self.constraints.presence.cached_by

    @property
    def range_min(self) -> str | None:
        """The lower bound as a Python literal (ints: int64 when the spec gives none)."""
        return self.constraints.lo_py

    @property
    def range_max(self) -> str | None:
        return self.constraints.hi_py

    @property
    def max_len(self) -> int | None:
        return self.constraints.max_len

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self.constraints.dtypes

    @property
    def dtype_codes(self) -> tuple[int, ...]:
        return tuple(DTYPE_CODES[d] for d in self.dtypes)

    @property
    def dtypes_py(self) -> str:
        """A tuple of torch dtypes."""
        return py_tuple(f"torch.{d}" for d in self.dtypes)

    @property
    def dims(self) -> tuple[DimIR, ...]:
        """The shape, each dimension with its manifest word (after the dtype code's)."""
        return tuple(
            DimIR(d.index, d.size, d.symbol, d.lo, d.hi, self.word + 1 + d.index)
            for d in self.constraints.shape
        )

    @property
    def shape_text(self) -> str:
        return self.constraints.shape_text

    @property
    def max_elements(self) -> int | None:
        return self.constraints.max_elements

    @property
    def shape_expected(self) -> str:
        return self.constraints.shape_expected

    # --- Python spellings -------------------------------------------------------------------

    @property
    def is_tensor(self) -> bool:
        return self.kind == "tensor"

    @property
    def rules(self) -> dict[str, RuleIR]:
        """The rules this field's checks report, by kind (``codegen/rules.py``)."""
        return field_rules(self, self.rule_owner, self.rule_label)

    @property
    def extra_tests(self) -> tuple[tuple[str, RuleIR], ...]:
        """``(test, rule)`` of each registered rule kind the field uses: Python over the
        validators' local ``x``, true when the value passes (``codegen/rules.py``)."""
        return extra_tests(self, "x")

    @property
    def tensor_const(self) -> str:
        """The generated ``_v.TensorField`` constant's name."""
        return f"_T_{self.rule_owner}_{self.name}"

    @property
    def tensor_py(self) -> str:
        return tensor_field_py(self)

    @property
    def constraints_text(self) -> str:
        parts = []
        if self.constraints.has_range:
            parts.append(self.range_text)
        if self.is_tensor:
            parts.append(self.shape_expected)
        if self.derived is not None:
            parts.append(f"derived: {self.name} == {self.derived.text}")
        return "; ".join(parts)

    @property
    def bit(self) -> int:
        return 1 << self.index

    @property
    def trusted_range(self) -> str:
        """``trusted_range_test`` of the validators' local ``x``."""
        return self.trusted_range_test("x")

    def trusted_range_test(self, var: str) -> str:
        """The range test a decoded value still needs (the decoder fixed its type; an int64
        word always fits the full int64 range, so that test is dropped)."""
        c = self.constraints
        if c.kind == "int" and (c.lo, c.hi) == (INT64_MIN, INT64_MAX):
            return ""
        return self.range_test(var)

    def type_fails(self, var: str) -> str:
        if self.kind == "tensor":
            return f"not _w.is_dense({var})"
        return f"type({var}) is not {self.value_py}"

    def range_test(self, var: str) -> str:
        c = self.constraints
        if c.kind == "int":
            return f"{c.lo_py} <= {var} <= {c.hi_py}"
        if c.kind == "float":
            parts = [f"_w.finite({var})"]
            if c.lo is not None:
                parts.append(f"{var} >= {c.lo_py}")
            if c.hi is not None:
                parts.append(f"{var} <= {c.hi_py}")
            return " and ".join(parts)
        if c.kind == "str":
            return f"0 <= _w.utf8_len({var}) <= {c.max_len}"
        return ""

    def word_of(self, var: str) -> str:
        """Python for the int64 word that carries a present scalar."""
        if self.kind == "float":
            return f"_w.float_to_word({var})"
        if self.kind in ("bool", "enum"):
            return f"int({var})"
        return var

    def read_of(self, w: str, code: str) -> str:
        """Python reading a present scalar back from frame 0 (raising WireError)."""
        at = f"{w}[{self.word}]"
        if self.kind == "float":
            return f"_w.word_to_float({at})"
        if self.kind == "bool":
            return f"_w.word_to_bool({at}, {self.word})"
        if self.kind == "enum":
            return f"_w.enum_member({self.enum}, {at}, {self.word}, {code!r})"
        if self.kind == "str":
            return f"_w.words_to_str({w}[{self.word}:{self.word + self.width}], {self.max_len}, {self.word})"
        return at

    @property
    def shape_pattern(self) -> str:
        return py_tuple(
            repr(d.const) if d.symbol is None else repr((d.symbol, d.lo, d.hi)) for d in self.dims
        )


@dataclass(frozen=True)
class VariantFieldIR:
    field: FieldIR
    annotation: str
    default: str | None  # Python literal, None = no default


@dataclass(frozen=True)
class VariantIR:
    class_name: str
    member: str | None  # discriminator member
    member_value: int | None
    fields: tuple[VariantFieldIR, ...]
    doc: str
    enum: str | None = None

    @property
    def required_names(self) -> tuple[str, ...]:
        return tuple(
            f"`{vf.field.name}`"
            for vf in self.fields
            if vf.default is None and not vf.annotation.endswith("| None")
        )

    @property
    def absent_names(self) -> tuple[str, ...]:
        return tuple(f"`{vf.field.name}`" for vf in self.fields if vf.annotation == "None")

    @property
    def derived(self) -> tuple[FieldIR, ...]:
        """Fields computed from the others when the caller leaves them out."""
        return tuple(vf.field for vf in self.fields if vf.default == "_w.DERIVE")

    @property
    def member_py(self) -> str:
        return f"{self.enum}.{self.member}" if self.member is not None else "None"


@dataclass(frozen=True)
class InvariantIR:
    id: str
    expr: ExprIR
    message: str
    fm: str | None


@dataclass(frozen=True)
class DimDeclIR:
    name: str
    lo: int
    hi: int
    doc: str
    binders: tuple[str, ...]


@dataclass(frozen=True)
class MessageIR:
    name: str
    id: int
    version: int
    action: str
    doc: str
    discriminator: FieldIR | None
    version_field: str | None
    fields: tuple[FieldIR, ...]
    scalars: tuple[FieldIR, ...]
    tensors: tuple[FieldIR, ...]  # wire order: sorted by name
    dims: tuple[DimDeclIR, ...]
    variants: tuple[VariantIR, ...]
    invariants: tuple[InvariantIR, ...]
    presence_mask: int
    used_words: tuple[int, ...]
    words: tuple[int, int]  # [first scalar word, frame-1 length word)

    @property
    def required_mask(self) -> int:
        return sum(f.bit for f in self.fields if f.always_required)

    @property
    def field_tensors(self) -> tuple[FieldIR, ...]:
        """The tensor fields in field order (``tensors`` is wire order): the order of the
        ``_v.TensorGroup``, in which the first to hold a dimension binds it."""
        return tuple(f for f in self.fields if f.is_tensor)

    @property
    def tensor_group(self) -> str:
        """The generated ``_v.TensorGroup`` constant's name (its tensors in field order: the
        order in which they bind dimensions)."""
        return f"_TS_{self.name}"

    @property
    def plan_rule(self) -> RuleIR | None:
        return plan_rule(self)

    @property
    def version_rule(self) -> RuleIR | None:
        return version_rule(self)

    def invariant_rule(self, inv: InvariantIR) -> RuleIR:
        return invariant_rule(self, inv)

    @property
    def presence_groups(self) -> tuple[PresenceGroup, ...]:
        return presence_groups(self.fields)

    @property
    def derived_checks(self) -> tuple[DerivedCheck, ...]:
        return derived_checks(self.fields)

    @property
    def invariant_checks(self) -> tuple[InvariantCheck, ...]:
        return invariant_checks(self)

    @property
    def rules_read_bad(self) -> bool:
        """Whether the rules pass reads the refused set (it binds ``bad`` only then)."""
        conds = [g.cond for g in self.presence_groups]
        conds += [c.cond for c in self.derived_checks] + [c.cond for c in self.invariant_checks]
        return bool(self.version_field) or _reads_bad(conds)

    @property
    def unused_words(self) -> tuple[int, ...]:
        """Scalar and manifest words this message leaves unused (they must be zero)."""
        return tuple(w for w in range(self.words[0], self.words[1]) if w not in self.used_words)

    @property
    def derived_order(self) -> tuple[FieldIR, ...]:
        """The derived fields, each after the derived fields it reads (the checker refuses
        cycles), so a chain declared in any order is filled in one pass."""
        derived = {f.name: f for f in self.fields if f.derived is not None}
        done: dict[str, FieldIR] = {}

        def visit(f: FieldIR) -> None:
            if f.name in done:
                return
            assert f.derived is not None
            for name in sorted(expr.names(f.derived.node) & derived.keys()):
                if name != f.name and name not in done:
                    visit(derived[name])
            done[f.name] = f

        for f in derived.values():
            visit(f)
        return tuple(done.values())

    @property
    def derived_reads_dims(self) -> bool:
        """Whether a derived field is computed from a dimension (bound from the tensors)."""
        return any(f.derived is not None and "d[" in f.derived.data_py for f in self.fields)

    @property
    def tensor_words_end(self) -> int:
        """One past the last manifest word of this message's tensors."""
        return max(f.word + f.width for f in self.tensors)

    @property
    def expr_dims(self) -> tuple[str, ...]:
        """Dimension symbols some expression reads (bound to locals in the validator)."""
        exprs = [i.expr for i in self.invariants] + [
            e
            for f in self.fields
            for e in (f.required_when, f.forbidden_when, f.none_unless, f.derived)
            if e is not None
        ]
        names = {n for e in exprs for n in expr.names(e.node)}
        return tuple(d.name for d in self.dims if d.name in names)


@dataclass(frozen=True)
class EnumIR:
    name: str
    doc: str
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class HeaderIR:
    fields: tuple[FieldIR, ...]  # slot order
    action: str
    action_enum: str
    doc: str
    presence_mask: int
    #: (role, header field), sequence first: the ids a violation and a log line carry
    roles: tuple[tuple[str, str], ...]
    #: (control role, action member): noop (when declared), shutdown, error
    control: tuple[tuple[str, str], ...]

    def role(self, name: str) -> str | None:
        return dict(self.roles).get(name)

    def control_member(self, name: str) -> str | None:
        return dict(self.control).get(name)

    @property
    def presence_groups(self) -> tuple[PresenceGroup, ...]:
        return presence_groups(self.fields)

    @property
    def derived_checks(self) -> tuple[DerivedCheck, ...]:
        return derived_checks(self.fields)

    @property
    def rules_read_bad(self) -> bool:
        conds = [g.cond for g in self.presence_groups] + [c.cond for c in self.derived_checks]
        return _reads_bad(conds)


@dataclass(frozen=True)
class ActionIR:
    member: str
    value: int
    message: MessageIR | None


@dataclass(frozen=True)
class LayoutIR:
    header: int
    header_presence: int
    message_id: int
    message_version: int
    presence: int
    scalars: int
    manifest: int
    reason: int  # an ERROR frame's reason code, then its text (REASON_WORDS in all)
    frame1: int
    frame1_digest: int
    checksum: int
    length: int


@dataclass(frozen=True)
class ProtocolIR:
    name: str
    module: str
    doc: str
    source: str  # display path of the spec
    sha256: str
    fingerprint: int
    canonical: str
    enums: tuple[EnumIR, ...]
    header: HeaderIR
    messages: tuple[MessageIR, ...]
    actions: tuple[ActionIR, ...]
    layout: LayoutIR

    @property
    def fingerprint_hex(self) -> str:
        return f"{self.fingerprint:#018x}"

    @property
    def codec_contract(self) -> int:
        """The runtime contract the generated module is made for (not part of the wire)."""
        return CODEC_CONTRACT

    @property
    def rules(self) -> tuple[RuleIR, ...]:
        """Every rule constant the validators report (``codegen/rules.py``)."""
        return protocol_rules(self)

    @property
    def all_classes(self) -> tuple[str, ...]:
        return tuple(v.class_name for m in self.messages for v in m.variants)

    @property
    def exported(self) -> tuple[str, ...]:
        """``__all__``, in the isort-style order ruff (RUF022) expects."""
        names = [e.name for e in self.enums] + list(self.all_classes)
        names += [m.name for m in self.messages if m.discriminator is not None]
        names += [
            "ACTION_ENUM",
            "ACTION_FIELD",
            "BINDINGS",
            "FINGERPRINT",
            "FRAME0_LEN",
            "PAYLOAD_ACTIONS",
            "MESSAGES",
            "PROTOCOL",
            "EnvelopeInvalid",
            "Frames",
            "Header",
            "Manifest",
            "Message",
            "ProtocolMismatch",
            "Violation",
            "WireError",
            "check",
            "decode",
            "encode",
            "prepare",
            "read_frame0",
            "read_frame0_bytes",
            "validate",
            "validate_header",
        ]

        def key(n: str) -> tuple[int, str]:
            # ruff files a one-letter capital with the CamelCase names
            return (0 if n.isupper() and len(n) > 1 else 1 if n[:1].isupper() else 2, n)

        return tuple(sorted(set(names), key=key))

    @property
    def message_union(self) -> str:
        return " | ".join(m.name for m in self.messages) or "None"

    @property
    def header_ids_py(self) -> str:
        """The role ids a violation carries, by the spec's field names, from header ``h``."""
        parts = [f"({f!r}, _w.id_of(h.{f}))" for _, f in self.header.roles]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"

    @property
    def header_defaults_py(self) -> str:
        """A legal value of each header field, for the control headers a channel builds
        before anything was sent (None where the field may be absent)."""
        members = {e.name: min(e.members, key=lambda m: m[1])[0] for e in self.enums}
        parts = []
        for f in self.header.fields:
            if not f.always_required:
                value = "None"
            elif f.kind == "bool":
                value = "False"
            elif f.kind == "enum" and f.enum is not None:
                value = f"{f.enum}.{members[f.enum]}"
            elif f.kind == "int":
                lo, hi = int(f.constraints.lo or 0), int(f.constraints.hi or 0)
                value = str(min(max(0, lo), hi))
            else:
                value = "None"
            parts.append(f"{f.name!r}: {value}")
        return "{" + ", ".join(parts) + "}"

    @property
    def enums_py(self) -> str:
        return "{" + ", ".join(f"{e.name!r}: {e.name}" for e in self.enums) + "}"

    @property
    def variants_py(self) -> str:
        """Each message class and the classes of its message (its variants)."""
        parts = []
        for m in self.messages:
            classes = py_tuple(v.class_name for v in m.variants)
            parts += [f"{v.class_name}: {classes}" for v in m.variants]
        return "{" + ", ".join(parts) + "}"

    @property
    def cached_py(self) -> str:
        """Each message class with fields cached by an epoch and those fields
        (``runtime.bindings.Cached``); empty when the spec declares none."""
        parts = []
        for m in self.messages:
            by_name = {f.name: f for f in m.fields}
            cached = [
                f"_b.Cached({m.name!r}, {f.name!r}, {f.cached_by!r}, "
                f"{f.fm or by_name[f.cached_by].fm!r})"
                for f in m.fields
                if f.cached_by is not None
            ]
            if cached:
                parts += [f"{v.class_name}: ({', '.join(cached)},)" for v in m.variants]
        return "{" + ", ".join(parts) + "}" if parts else ""

    @property
    def no_ids_py(self) -> str:
        """``header_ids_py`` when there is no header to read them from."""
        parts = [f"({f!r}, None)" for _, f in self.header.roles]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def build(spec: CheckedSpec, source: str | None = None) -> ProtocolIR:
    """The IR of a checked spec (``codegen/ir_build.py`` holds the builders)."""
    from .ir_build import build_protocol  # the builders import this module's classes

    return build_protocol(spec, source)
