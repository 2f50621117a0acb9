"""The catalogue of error codes a spec can fail with (``file:line:col: error[code]: ...``).

One place for every code the loader, the expression checker, the checker and the compiler
emit, each with a one-line meaning. The checker names codes through these constants, so a
misspelt code is an ``AttributeError`` (and a mypy error), not a new code; the loader and
the expression parser spell theirs as literals, which tests/test_check_codes.py holds to
this catalogue. The list in docs/spec-language.md ("Error codes") is rendered from it
(``python -m tools.codes_doc``, part of ``make gen``). Adding a code: docs/architecture.md,
"How to add a check and its error code".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """One error code: its spelling, the stage that emits it and what it means."""

    name: str
    #: "load" (reading the YAML), "schema" (the meta-schema), "expr" (an expression),
    #: "check" (the spec's meaning) or "gen" (several specs compiled together)
    stage: str
    meaning: str

    def __str__(self) -> str:
        return self.name


# -- load: reading the file into a located tree (codegen/load.py, the CLI) ----------------
IO = Code("io", "load", "the spec file cannot be read (missing, a folder, no permission)")
EMPTY = Code("empty", "load", "the spec holds nothing but blank lines and comments")
ENCODING = Code("encoding", "load", "the text is not UTF-8, or holds a lone surrogate escape")
YAML_SYNTAX = Code("yaml-syntax", "load", "the text is not valid YAML")
YAML_ALIAS = Code("yaml-alias", "load", "a YAML anchor or alias (specs spell every value out)")
YAML_TAG = Code("yaml-tag", "load", "an explicit YAML tag such as !!python/object")
YAML_VALUE = Code("yaml-value", "load", "a scalar YAML cannot read (an out-of-range timestamp)")
KEY_TYPE = Code("key-type", "load", "a mapping key that is not a plain string")
DUPLICATE_KEY = Code("duplicate-key", "load", "a key given twice in one mapping")
CONTROL_CHAR = Code("control-char", "load", "a control character in a string or key")
TOO_DEEP = Code("too-deep", "load", "nesting deeper than the loader's limit")
TOO_LARGE = Code("too-large", "load", "over the size or node limit, or too complex to check")
NOT_A_MAPPING = Code("not-a-mapping", "load", "the top level is a list or a scalar")

# -- schema: structure against codegen/meta_schema.json ---------------------------------
UNKNOWN_KEY = Code("unknown-key", "schema", "a key the spec language does not have here")
MISSING_KEY = Code(
    "missing-key", "schema", "a required key is absent (also max_len, dtypes, shape)"
)
BAD_NAME = Code("bad-name", "schema", "a name that is malformed or reserved in generated code")
SCHEMA = Code("schema", "schema", "a value of the wrong JSON type or form")

# -- expr: conditions, derived values and invariants (codegen/expr.py) ------------------
EXPR_SYNTAX = Code("expr-syntax", "expr", "an expression that does not parse")
EXPR_TYPE = Code("expr-type", "expr", "an expression of the wrong type, or an operator misused")
UNKNOWN_NAME = Code("unknown-name", "expr", "an expression reads a name that is no field or dim")
UNKNOWN_ENUM = Code("unknown-enum", "expr", "an expression names an enum the spec lacks")
UNKNOWN_ENUM_MEMBER = Code("unknown-enum-member", "expr", "an expression names a missing member")
UNKNOWN_FUNCTION = Code("unknown-function", "expr", "a call other than len() and int()")

# -- check: the spec's meaning (codegen/check*.py) --------------------------------------
UNSUPPORTED_VERSION = Code("unsupported-version", "check", "a spec-language version not read")
NOT_INTEGER = Code("not-integer", "check", "an enum value, bound or length that is no integer")
RANGE = Code("range", "check", "an enum value that does not fit int64")
DUPLICATE_VALUE = Code("duplicate-value", "check", "two members of an enum share a value")
BAD_TYPE = Code("bad-type", "check", "a type that cannot be read or is not allowed here")
UNKNOWN_TYPE = Code("unknown-type", "check", "a type that is no base type and no enum")
BAD_KEY = Code("bad-key", "check", "a field key that does not apply to the field's type")
BAD_RANGE = Code("bad-range", "check", "a bound, length or size outside what it may be")
IMPOSSIBLE_RANGE = Code("impossible-range", "check", "a range or dimension no value fits")
UNKNOWN_DTYPE = Code("unknown-dtype", "check", "a tensor dtype the wire format does not carry")
DUPLICATE_DTYPE = Code("duplicate-dtype", "check", "a dtype listed twice")
IMPOSSIBLE_SHAPE = Code("impossible-shape", "check", "a shape no tensor can have")
UNKNOWN_DIM = Code("unknown-dim", "check", "a shape names an undeclared dimension")
UNUSED_DIM = Code("unused-dim", "check", "a dimension no tensor binds")
DERIVED_CYCLE = Code("derived-cycle", "check", "derived fields that depend on themselves")
BAD_CACHED_BY = Code(
    "bad-cached-by", "check", "a cached_by field, epoch or reader the rules refuse"
)
UNKNOWN_FIELD = Code(
    "unknown-field", "check", "a name that should be a field of this header or message"
)
TOO_MANY_FIELDS = Code("too-many-fields", "check", "over the header's or a message's field limit")
SLOT_ORDER = Code("slot-order", "check", "header slots that do not list each header field once")
BAD_ROLE = Code("bad-role", "check", "a role or control action the runtime cannot use")
UNKNOWN_ACTION = Code("unknown-action", "check", "an action that is no member of the action enum")
BAD_ID = Code("bad-id", "check", "a message id that is no integer in 1..2147483647")
BAD_VERSION = Code("bad-version", "check", "a message version that is no integer in 1..2147483647")
DUPLICATE_ID = Code("duplicate-id", "check", "two messages share an id")
DUPLICATE_ACTION = Code("duplicate-action", "check", "two messages share an action")
DUPLICATE_NAME = Code("duplicate-name", "check", "two names that collide in the generated code")
DUPLICATE_INVARIANT = Code(
    "duplicate-invariant", "check", "two invariants of a message share an id"
)

# -- gen: several specs compiled into one package (codegen/compiler.py) -------------------
DUPLICATE_PROTOCOL = Code("duplicate-protocol", "gen", "two specs define the same protocol")

#: Every code, in the order docs/spec-language.md lists them (by stage).
CODES: tuple[Code, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Code))
BY_NAME: dict[str, Code] = {c.name: c for c in CODES}


def named(name: str) -> Code:
    """The catalogued code spelt ``name`` (a code computed elsewhere, like an
    ``ExprError``'s); ``KeyError`` for a code the catalogue lacks."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"error code {name!r} is not in codegen/codes.py") from None
