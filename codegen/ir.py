"""Stage 3 - IR: the checked spec with everything resolved for printing.

Templates only print and loop: Python spellings (type strings, compiled expressions,
literal reprs, class names), wire offsets and doc strings are computed here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tpwire.runtime.dtypes import CODEC_CONTRACT, DTYPE_CODES, REASON_WORDS, WIRE_VERSION

from . import expr
from .model import CExpr, CField, CheckedSpec, CMessage, TypeRef, variant_class_name
from .rules import (
    DerivedCheck,
    InvariantCheck,
    PresenceGroup,
    RuleIR,
    derived_checks,
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
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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
    def data_guarded(self) -> str:
        return f"({self.data_guard} and {self.data_py})" if self.data_guard else self.data_py

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
    name: str
    index: int  # presence bit
    kind: str
    enum: str | None
    type_text: str  # as the spec says it, for docs
    value_py: str  # Python type of a present value
    explicit_none: bool
    always_required: bool
    required_when: ExprIR | None
    forbidden_when: ExprIR | None
    none_unless: ExprIR | None
    derived: ExprIR | None
    range_min: str | None  # Python literal
    range_max: str | None
    range_text: str
    max_len: int | None
    dtypes: tuple[str, ...]
    dtype_codes: tuple[int, ...]
    dtypes_py: str  # tuple of torch dtypes
    dims: tuple[DimIR, ...]
    shape_text: str
    max_elements: int | None
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
    #: the epoch field this field is cached by (``cached_by``), None for most fields
    cached_by: str | None = None

    @property
    def is_tensor(self) -> bool:
        return self.kind == "tensor"

    @property
    def rules(self) -> dict[str, RuleIR]:
        """The rules this field's checks report, by kind (``codegen/rules.py``)."""
        return field_rules(self, self.rule_owner, self.rule_label)

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
        if self.kind in ("int", "float", "str"):
            parts.append(self.range_text)
        if self.is_tensor:
            parts.append(self.shape_expected)
        if self.derived is not None:
            parts.append(f"derived: {self.name} == {self.derived.text}")
        return "; ".join(parts)

    @property
    def bit(self) -> int:
        return 1 << self.index

    def strategy_py(self, version: int | None = None) -> str:
        """A hypothesis strategy for a present value (``d`` holds the drawn dimensions)."""
        if version is not None:
            return f"st.just({version})"
        if self.kind == "int":
            return f"st.integers({self.range_min}, {self.range_max})"
        if self.kind == "float":
            return (
                f"st.floats({self.range_min}, {self.range_max}, "
                "allow_nan=False, allow_infinity=False)"
            )
        if self.kind == "bool":
            return "st.booleans()"
        if self.kind == "enum":
            return f"st.sampled_from({self.enum})"
        if self.kind == "str":
            return f"_s.text({self.max_len})"
        dims = [str(x.const) if x.symbol is None else f"d[{x.symbol!r}]" for x in self.dims]
        return f"_s.tensors({self.dtypes_py}, ({''.join(f'{x}, ' for x in dims)}))"

    @property
    def trusted_range(self) -> str:
        """``trusted_range_test`` of the validators' local ``x``."""
        return self.trusted_range_test("x")

    def trusted_range_test(self, var: str) -> str:
        """The range test a decoded value still needs (the decoder fixed its type; an int64
        word always fits the full int64 range, so that test is dropped)."""
        if self.kind == "int" and (self.range_min, self.range_max) == (
            str(INT64_MIN),
            str(INT64_MAX),
        ):
            return ""
        return self.range_test(var)

    def type_fails(self, var: str) -> str:
        if self.kind == "tensor":
            return f"not _w.is_dense({var})"
        return f"type({var}) is not {self.value_py}"

    def range_test(self, var: str) -> str:
        if self.kind == "int":
            return f"{self.range_min} <= {var} <= {self.range_max}"
        if self.kind == "float":
            parts = [f"_w.finite({var})"]
            if self.range_min is not None:
                parts.append(f"{var} >= {self.range_min}")
            if self.range_max is not None:
                parts.append(f"{var} <= {self.range_max}")
            return " and ".join(parts)
        if self.kind == "str":
            return f"0 <= _w.utf8_len({var}) <= {self.max_len}"
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

    @property
    def shape_expected(self) -> str:
        bounds = [f"{d.symbol} in {d.lo}..{d.hi}" for d in self.dims if d.symbol is not None]
        seen = list(dict.fromkeys(bounds))
        text = self.shape_text
        if seen:
            text += " with " + ", ".join(seen)
        return f"{text}, at most {self.max_elements} elements"


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

    other_member: str | None = None

    @property
    def other_member_py(self) -> str:
        """Another discriminator member (a mutant that breaks the variant's plan)."""
        return f"{self.enum}.{self.other_member}" if self.other_member is not None else "None"

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
                lo = int(f.range_min) if f.range_min is not None else INT64_MIN
                hi = int(f.range_max) if f.range_max is not None else INT64_MAX
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


# --- expressions -------------------------------------------------------------------------


def _python_expr(
    ce: CExpr,
    ref: str,
    nullable: frozenset[str],
    fields: frozenset[str],
    scalars: frozenset[str] = frozenset(),
    tensors: frozenset[str] = frozenset(),
) -> ExprIR:
    def name(n: str) -> str:
        return f"{ref}.{n}" if n in fields else f"dim_{n}"

    def enum_member(e: str, m: str) -> str:
        return f"{e}.{m}"

    py = expr.to_python(ce.node, name, enum_member, tensors)
    guard = " and ".join(
        f"{name(n)} is not None" for n in sorted(expr.value_names(ce.node) & nullable)
    )
    refs = tuple(sorted(expr.names(ce.node) & fields))
    node = ce.node
    if isinstance(node, expr.Compare):
        sides = tuple(
            (expr.to_text(side), expr.to_python(side, name, enum_member, tensors))
            for side in (node.left, node.right)
        )
    else:
        sides = tuple((n, name(n)) for n in sorted(expr.names(node)))

    def data_name(n: str) -> str:
        return f"f[{n!r}]" if n in fields else f"d[{n!r}]"

    data_py = expr.to_python(node, data_name, enum_member)
    data_guard = " and ".join(
        f"{data_name(n)} is not None" for n in sorted(expr.value_names(node) & nullable)
    )
    solves: list[tuple[str, str]] = []
    conjuncts = node.values if isinstance(node, expr.BoolOp) and node.op == "and" else (node,)
    for part in conjuncts:
        if not (isinstance(part, expr.Compare) and part.op == "=="):
            continue
        for target, other in ((part.left, part.right), (part.right, part.left)):
            if (
                isinstance(target, expr.Name)
                and target.id in scalars
                and target.id not in expr.names(other)
            ):
                solves.append((target.id, expr.to_python(other, data_name, enum_member)))
                break
    negated = expr.to_python(expr.Not(node), name, enum_member, tensors)
    return ExprIR(
        expr.to_text(node),
        py,
        negated,
        guard,
        refs,
        node,
        sides,
        data_py,
        data_guard,
        tuple(solves),
    )


# --- fields ------------------------------------------------------------------------------


def _value_py(t: TypeRef) -> str:
    return {
        "int": "int",
        "float": "float",
        "bool": "bool",
        "str": "str",
        "tensor": "torch.Tensor",
    }.get(t.kind, t.enum or "")


def _literal(x: int | float | None) -> str | None:
    return None if x is None else repr(x)


def _range_text(f: CField) -> str:
    if f.type.kind == "int":
        # the int64 bounds go without saying (every int field is an int64 on the wire)
        lo = f.range_min if f.range_min is not None and f.range_min != INT64_MIN else None
        hi = f.range_max if f.range_max is not None and f.range_max != INT64_MAX else None
        if lo is not None and hi is not None:
            return f"{f.name} == {lo}" if lo == hi else f"{lo} <= {f.name} <= {hi}"
        if lo is not None:
            return f"{f.name} >= {lo}"
        if hi is not None:
            return f"{f.name} <= {hi}"
        return f"{f.name} fits int64"
    if f.type.kind == "float":
        parts = ["finite"]
        if f.range_min is not None:
            parts.append(f">= {f.range_min}")
        if f.range_max is not None:
            parts.append(f"<= {f.range_max}")
        return f"{f.name} " + " and ".join(parts) if len(parts) > 1 else f"{f.name} finite"
    if f.type.kind == "str":
        return f"len(utf8({f.name})) <= {f.max_len}"
    return ""


def _rules_text(f: CField) -> str:
    parts = []
    if f.always_required:
        parts.append("always")
    if f.required_when is not None:
        parts.append(f.required_when.text)
    if f.forbidden_when is not None:
        parts.append(f"must be absent when {f.forbidden_when.text}")
    if f.cached_by is not None:
        e = f.cached_by
        parts.append(
            f"cached by {e}: sent exactly when {e} increments (and on the first envelope, "
            f"and after a hard cut), never otherwise; the receiver keeps the last one"
        )
        if f.none_unless is not None:
            parts.append(f"absent while {e} is None")
    elif f.none_unless is not None:
        parts.append(f"None unless {f.none_unless.text}")
    if not parts:
        parts.append("optional")
    return "; ".join(parts)


def _field_ir(
    f: CField,
    index: int,
    word: int,
    width: int,
    dims: dict[str, tuple[int, int]],
    nullable: frozenset[str],
    fields: frozenset[str],
    ref: str,
) -> FieldIR:
    def conv(ce: CExpr | None) -> ExprIR | None:
        return None if ce is None else _python_expr(ce, ref, nullable, fields)

    dim_irs = []
    for i, d in enumerate(f.shape):
        if isinstance(d, int):
            dim_irs.append(DimIR(i, d, None, d, d, word + 1 + i))
        else:
            lo, hi = dims[d]
            dim_irs.append(DimIR(i, None, d, lo, hi, word + 1 + i))
    max_el = None
    if f.type.kind == "tensor":
        bound = math.prod(d.hi for d in dim_irs)
        max_el = min(bound, f.max_elements) if f.max_elements is not None else bound
    rmin, rmax = f.range_min, f.range_max
    if f.type.kind == "int":
        rmin = INT64_MIN if rmin is None else rmin
        rmax = INT64_MAX if rmax is None else rmax
    return FieldIR(
        name=f.name,
        index=index,
        kind=f.type.kind,
        enum=f.type.enum,
        type_text=_type_text(f),
        value_py=_value_py(f.type),
        explicit_none=f.type.nullable,
        always_required=f.always_required,
        required_when=conv(f.required_when),
        forbidden_when=conv(f.forbidden_when),
        none_unless=conv(f.none_unless),
        derived=conv(f.derived),
        range_min=_literal(rmin),
        range_max=_literal(rmax),
        range_text=_range_text(f),
        max_len=f.max_len,
        dtypes=f.dtypes,
        dtype_codes=tuple(DTYPE_CODES[d] for d in f.dtypes),
        dtypes_py=py_tuple(f"torch.{d}" for d in f.dtypes),
        dims=tuple(dim_irs),
        shape_text="[" + ", ".join(str(d) for d in f.shape) + "]",
        max_elements=max_el,
        word=word,
        width=width,
        why=f.why,
        check=f.check,
        fm=f.fm,
        doc=f.doc,
        rules_text=_rules_text(f),
        owner=ref,
        cached_by=f.cached_by,
    )


def _type_text(f: CField) -> str:
    base = f.type.enum if f.type.kind == "enum" else f.type.kind
    if f.type.kind == "tensor":
        base = f"tensor[{'/'.join(f.dtypes)}]{list(f.shape)}".replace("'", "")
    elif f.type.kind == "str":
        base = f"str[{f.max_len}]"
    return f"{base} | None" if f.type.nullable else str(base)


def _scalar_width(f: CField) -> int:
    if f.type.kind == "str":
        return 1 + -(-(f.max_len or 0) // 8)
    return 1


# --- variants ----------------------------------------------------------------------------


def _variant_fields(
    m: CMessage,
    fields: tuple[FieldIR, ...],
    known: dict[str, object],
    enums: dict[str, dict[str, int]],
    disc: str | None,
    disc_member: str | None,
) -> tuple[VariantFieldIR, ...]:
    out = []
    for cf, f in zip(m.fields, fields, strict=True):
        if disc is not None and f.name == disc and disc_member is not None:
            lit = f"{f.enum}.{disc_member}"
            out.append(VariantFieldIR(f, f"Literal[{lit}]", lit))
            continue

        def const(ce: CExpr | None) -> object:
            if ce is None:
                return None
            node = expr.partial_eval(ce.node, known, enums)
            return expr.const_value(node) if expr.is_const(node) else None

        required = cf.always_required or const(cf.required_when) is True
        forbidden = const(cf.forbidden_when) is True or (
            cf.none_unless is not None and const(cf.none_unless) is False
        )
        if forbidden and not required:
            out.append(VariantFieldIR(f, "None", "None"))
        elif cf.derived is not None:
            # computed from the others when not given (``__post_init__``)
            annotation = f"{f.value_py} | None" if not required or cf.type.nullable else f.value_py
            out.append(VariantFieldIR(f, annotation, "_w.DERIVE"))
        elif required and not cf.type.nullable:
            out.append(VariantFieldIR(f, f.value_py, None))
        elif cf.type.nullable:
            out.append(VariantFieldIR(f, f"{f.value_py} | None", None))
        else:
            out.append(VariantFieldIR(f, f"{f.value_py} | None", "None"))
    # kw_only dataclasses accept defaults before non-defaults; keep spec order
    return tuple(out)


# --- the protocol ------------------------------------------------------------------------


def _canonical(spec: CheckedSpec) -> str:
    """Wire-relevant content only: docs may change without breaking peers."""

    def field(f: CField) -> dict[str, Any]:
        # a cached field's epoch is wire-relevant; the key exists only where one is declared,
        # so the fingerprints of specs without cached fields stay what they were
        cached = {"cached_by": f.cached_by} if f.cached_by is not None else {}
        return {
            **cached,
            "name": f.name,
            "type": str(f.type),
            "always": f.always_required,
            "range": [f.range_min, f.range_max],
            "max_len": f.max_len,
            "dtypes": list(f.dtypes),
            "shape": list(f.shape),
            "max_elements": f.max_elements,
            "rules": {
                k: (ce.text if ce is not None else None)
                for k, ce in (
                    ("required_when", f.required_when),
                    ("forbidden_when", f.forbidden_when),
                    ("none_unless", f.none_unless),
                    ("derived", f.derived),
                )
            },
        }

    doc = {
        "wire_version": WIRE_VERSION,
        "protocol": spec.protocol,
        "enums": [[e.name, [list(m) for m in e.members]] for e in spec.enums],
        "header": {
            "slots": list(spec.header.slots),
            "action": spec.header.action,
            "roles": [list(r) for r in spec.header.roles],
            "control": [list(c) for c in spec.header.control],
            "fields": [field(f) for f in spec.header.fields],
        },
        "messages": [
            {
                "name": m.name,
                "id": m.id,
                "version": m.version,
                "action": m.action,
                "discriminator": m.discriminator,
                "version_field": m.version_field,
                "dims": [[d.name, d.min, d.max] for d in m.dims],
                "fields": [field(f) for f in m.fields],
                "invariants": [[i.id, i.expr.text] for i in m.invariants],
            }
            for m in spec.messages
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def build(spec: CheckedSpec, source: str | None = None) -> ProtocolIR:
    enums = {e.name: dict(e.members) for e in spec.enums}
    canonical = _canonical(spec)
    digest = hashlib.sha256(canonical.encode()).digest()
    fingerprint = int.from_bytes(digest[:8], "big") & INT64_MAX

    h = spec.header
    nh = len(h.fields)
    w_hpres = FIXED_WORDS + nh
    w_mid, w_mver, w_pres = w_hpres + 1, w_hpres + 2, w_hpres + 3
    scalar_base = w_hpres + 4
    nscalar = max(
        (sum(_scalar_width(f) for f in m.fields if f.type.kind != "tensor") for m in spec.messages),
        default=0,
    )
    manifest_base = scalar_base + nscalar
    nmanifest = max(
        (sum(1 + len(f.shape) for f in m.fields if f.type.kind == "tensor") for m in spec.messages),
        default=0,
    )
    w_reason = manifest_base + nmanifest
    w_frame1 = w_reason + REASON_WORDS
    layout = LayoutIR(
        header=FIXED_WORDS,
        header_presence=w_hpres,
        message_id=w_mid,
        message_version=w_mver,
        presence=w_pres,
        scalars=scalar_base,
        manifest=manifest_base,
        reason=w_reason,
        frame1=w_frame1,
        frame1_digest=w_frame1 + 1,
        checksum=w_frame1 + 2,
        length=w_frame1 + 3,
    )

    hnullable = frozenset(f.name for f in h.fields if not f.always_required)
    hnames = frozenset(f.name for f in h.fields)
    hfields = tuple(
        dataclasses.replace(
            _field_ir(f, i, FIXED_WORDS + i, 1, {}, hnullable, hnames, "h"),
            rule_owner="header",
            rule_label=f"header.{f.name}",
        )
        for i, f in enumerate(h.fields)
    )
    action_field = next(f for f in h.fields if f.name == h.action)
    action_enum = action_field.type.enum or ""
    header = HeaderIR(
        fields=hfields,
        action=h.action,
        action_enum=action_enum,
        doc=h.doc,
        presence_mask=sum(1 << f.index for f in hfields if not f.always_required),
        roles=h.roles,
        control=h.control,
    )

    messages = []
    for m in spec.messages:
        dims = {d.name: (d.min, d.max) for d in m.dims}
        names = frozenset(f.name for f in m.fields)
        # a dimension is None when no well-formed tensor binds it, even a required one
        nullable = frozenset(f.name for f in m.fields if not f.always_required) | frozenset(
            d.name for d in m.dims
        )
        word = scalar_base
        placed: dict[str, tuple[int, int]] = {}
        for f in m.fields:
            if f.type.kind != "tensor":
                placed[f.name] = (word, _scalar_width(f))
                word += _scalar_width(f)
        word = manifest_base
        for f in sorted((f for f in m.fields if f.type.kind == "tensor"), key=lambda f: f.name):
            placed[f.name] = (word, 1 + len(f.shape))
            word += 1 + len(f.shape)
        fields = tuple(
            dataclasses.replace(
                _field_ir(f, i, *placed[f.name], dims, nullable, names, "m"),
                rule_owner=m.name,
                rule_label=f.name,
            )
            for i, f in enumerate(m.fields)
        )
        if m.version_field is not None:
            # the version field's rule is its message's version, whatever its declared range
            fields = tuple(
                dataclasses.replace(f, range_text=f"{f.name} == {m.version}")
                if f.name == m.version_field
                else f
                for f in fields
            )
        used = sorted(w for f in fields for w in range(f.word, f.word + f.width))
        disc = next((f for f in fields if f.name == m.discriminator), None)
        variants = []
        if disc is not None and disc.enum is not None:
            for member, value in enums[disc.enum].items():
                known: dict[str, object] = {disc.name: value}
                variants.append(
                    VariantIR(
                        class_name=variant_class_name(m.name, member),
                        member=member,
                        member_value=value,
                        fields=_variant_fields(m, fields, known, enums, disc.name, member),
                        doc=f"{m.name} with {disc.name} = {member}.",
                        enum=disc.enum,
                        other_member=next((o for o in enums[disc.enum] if o != member), None),
                    )
                )
        else:
            variants.append(
                VariantIR(m.name, None, None, _variant_fields(m, fields, {}, enums, None, None), "")
            )
        scalar_names = frozenset(
            f.name for f in m.fields if f.type.kind in ("int", "float", "bool")
        )
        # (a 0-d tensor keeps len(), which refuses it as it always did)
        tensor_names = frozenset(f.name for f in m.fields if f.type.kind == "tensor" and f.shape)
        invariants = tuple(
            InvariantIR(
                i.id,
                _python_expr(i.expr, "m", nullable, names, scalar_names, tensor_names),
                i.message,
                i.fm,
            )
            for i in m.invariants
        )
        dim_decls = tuple(
            DimDeclIR(
                d.name, d.min, d.max, d.doc, tuple(f.name for f in m.fields if d.name in f.shape)
            )
            for d in m.dims
        )
        messages.append(
            MessageIR(
                name=m.name,
                id=m.id,
                version=m.version,
                action=m.action,
                doc=m.doc,
                discriminator=disc,
                version_field=m.version_field,
                fields=fields,
                scalars=tuple(f for f in fields if not f.is_tensor),
                tensors=tuple(sorted((f for f in fields if f.is_tensor), key=lambda f: f.name)),
                dims=dim_decls,
                variants=tuple(variants),
                invariants=invariants,
                presence_mask=(1 << len(fields)) - 1,
                used_words=tuple(used),
                words=(scalar_base, w_reason),
            )
        )
    by_action = {m.action: m for m in messages}
    actions = tuple(
        ActionIR(member, value, by_action.get(member))
        for member, value in enums[action_enum].items()
    )
    return ProtocolIR(
        name=spec.protocol,
        module=spec.protocol,
        doc=spec.doc,
        source=source or spec.file,
        sha256=spec.sha256,
        fingerprint=fingerprint,
        canonical=canonical,
        enums=tuple(EnumIR(e.name, e.doc, e.members) for e in spec.enums),
        header=header,
        messages=tuple(messages),
        actions=actions,
        layout=layout,
    )
