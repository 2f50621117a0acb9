"""The spec's safe expression language.

Spec authors write small conditions such as ``tp_plan == TPPlan.v1_generator_only`` or
``latent_h * 8 == height`` in YAML. This module is the single place that understands them:

* a hand-written tokenizer and recursive-descent parser produce a small AST (spec text is
  never handed to Python's ``eval``/``exec``/``compile``/``ast``, so a spec cannot run code
  inside the compiler);
* ``typecheck`` checks an AST against the field types of a message;
* ``to_text`` prints canonical text for docs, ``to_python`` prints Python source for
  generated code;
* ``evaluate`` interprets an AST and ``partial_eval`` specializes it for known values.

Every error is an ``ExprError`` carrying a stable ``code`` and the character ``offset`` in
the expression text, so callers can point at the exact spot in the spec.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, assert_never

__all__ = [
    "BOOL",
    "ERROR_CODES",
    "FLOAT",
    "INT",
    "NONE",
    "STR",
    "TENSOR",
    "BinOp",
    "BoolOp",
    "Call",
    "Compare",
    "Const",
    "EnumRef",
    "ExprError",
    "In",
    "IsNone",
    "Name",
    "Neg",
    "Node",
    "Not",
    "Sym",
    "Ty",
    "const_value",
    "evaluate",
    "is_const",
    "names",
    "parse",
    "partial_eval",
    "to_python",
    "to_text",
    "typecheck",
    "value_names",
    "walk",
]

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

ERROR_CODES: Final = frozenset(
    {
        "expr-syntax",
        "unknown-name",
        "unknown-enum",
        "unknown-enum-member",
        "expr-type",
        "unknown-function",
    }
)


class ExprError(Exception):
    """A problem in an expression, located by a 0-based character offset into its text."""

    code: str
    message: str
    offset: int

    def __init__(self, code: str, message: str, offset: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.offset = offset

    def caret(self, text: str) -> str:
        """The expression text with a ``^`` under the offending character (for diagnostics)."""
        return f"{text}\n{' ' * self.offset}^"


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------

_TY_KINDS: Final = frozenset({"int", "float", "bool", "str", "enum", "tensor", "none"})


@dataclass(frozen=True)
class Ty:
    """The static type of an expression or a field."""

    kind: str
    enum: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _TY_KINDS:
            raise ValueError(f"unknown type kind {self.kind!r}")
        if (self.kind == "enum") != (self.enum is not None):
            raise ValueError("an enum name is required exactly when kind == 'enum'")

    @classmethod
    def of_enum(cls, name: str) -> Ty:
        return cls("enum", name)

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("int", "float")

    def __str__(self) -> str:
        if self.enum is not None:
            return self.enum
        return "None" if self.kind == "none" else self.kind


INT: Final = Ty("int")
FLOAT: Final = Ty("float")
BOOL: Final = Ty("bool")
STR: Final = Ty("str")
TENSOR: Final = Ty("tensor")
NONE: Final = Ty("none")


@dataclass(frozen=True)
class Sym:
    """What a name in an expression refers to: a field of some type, possibly holding None."""

    ty: Ty
    nullable: bool = False


# ---------------------------------------------------------------------------------------------
# AST
#
# Offsets are excluded from equality so that two parses of differently spaced text compare
# equal; they only matter for error messages.
# ---------------------------------------------------------------------------------------------

ConstValue: TypeAlias = int | float | bool | str | None
ArithOp: TypeAlias = Literal["+", "-", "*"]
CmpOp: TypeAlias = Literal["==", "!=", "<", "<=", ">", ">="]
BoolOpName: TypeAlias = Literal["and", "or"]


@dataclass(frozen=True)
class Const:
    value: ConstValue
    offset: int = field(default=0, compare=False)

    # Python considers 1 == 1.0 == True; the AST must not, or `x == 1` and `x == True`
    # would be "equal" expressions with different types.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Const):
            return NotImplemented
        return type(self.value) is type(other.value) and self.value == other.value

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@dataclass(frozen=True)
class Name:
    id: str
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class EnumRef:
    enum: str
    member: str
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Neg:
    operand: Node
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class BinOp:
    op: ArithOp
    left: Node
    right: Node
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Compare:
    op: CmpOp
    left: Node
    right: Node
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class BoolOp:
    op: BoolOpName
    values: tuple[Node, ...]
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Not:
    operand: Node
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class IsNone:
    operand: Node
    negated: bool = False
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class In:
    operand: Node
    options: tuple[Node, ...]
    negated: bool = False
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Call:
    # Any name is accepted by the parser; typecheck rejects all but "len" and "int" so the
    # error can say which function was meant.
    func: str
    arg: Node
    offset: int = field(default=0, compare=False)


Node: TypeAlias = Const | Name | EnumRef | Neg | BinOp | Compare | BoolOp | Not | IsNone | In | Call


def _children(node: Node) -> tuple[Node, ...]:
    match node:
        case Const() | Name() | EnumRef():
            return ()
        case Neg() | Not() | IsNone():
            return (node.operand,)
        case BinOp() | Compare():
            return (node.left, node.right)
        case BoolOp():
            return node.values
        case In():
            return (node.operand, *node.options)
        case Call():
            return (node.arg,)
        case _:
            assert_never(node)


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children, left to right."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(_children(current)))


def names(node: Node) -> frozenset[str]:
    """Every field name referenced by the expression."""
    return frozenset(n.id for n in walk(node) if isinstance(n, Name))


def value_names(node: Node) -> frozenset[str]:
    """Names whose value is used, i.e. all names except mere ``x is None`` tests.

    Callers use this to find fields that must be non-None for the expression to make sense.
    """
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, IsNone) and isinstance(current.operand, Name):
            continue
        if isinstance(current, Name):
            found.add(current.id)
        stack.extend(_children(current))
    return frozenset(found)


def is_const(node: Node) -> bool:
    """True for a literal constant (what ``partial_eval`` folds to)."""
    return isinstance(node, Const)


def const_value(node: Node) -> object:
    """The value of a ``Const`` node; ``ValueError`` for anything else."""
    if not isinstance(node, Const):
        raise ValueError(f"not a constant: {to_text(node)}")
    return node.value


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

TokenKind: TypeAlias = Literal["num", "str", "name", "kw", "op", "eof"]


@dataclass(frozen=True)
class _Token:
    kind: TokenKind
    text: str  # the source spelling, quoted back in error messages
    offset: int
    value: ConstValue = None  # the literal's value for "num" and "str" tokens

    def describe(self) -> str:
        return "end of expression" if self.kind == "eof" else f"'{self.text}'"

    def is_op(self, text: str) -> bool:
        return self.kind == "op" and self.text == text

    def is_kw(self, text: str) -> bool:
        return self.kind == "kw" and self.text == text


_KEYWORDS: Final = frozenset({"and", "or", "not", "is", "in", "None", "True", "False"})
# Longest first, so "<=" is not read as "<" followed by "=".
_OPERATORS: Final = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "(", ")", ",", ".")
_WHITESPACE: Final = frozenset(" \t\r\n")
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_RE: Final = re.compile(r"[0-9][0-9_]*(?:\.[0-9][0-9_]*)?(?:[eE][+-]?[0-9][0-9_]*)?")
_IDENT_TAIL_RE: Final = re.compile(r"[A-Za-z0-9_]*")
_STRING_ESCAPES: Final = frozenset({"\\", "'", '"'})
# Characters people reach for out of habit from other languages.
_CHAR_HINTS: Final = {
    "=": "use '==' to compare",
    "!": "use 'not' for negation",
    "&": "use 'and'",
    "|": "use 'or'",
    "/": "division is not supported",
    "%": "modulo is not supported",
    "[": "indexing is not supported",
}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in _WHITESPACE:
            i += 1
            continue
        if c.isascii() and (c.isalpha() or c == "_"):
            m = _NAME_RE.match(text, i)
            assert m is not None
            word = m.group()
            tokens.append(_Token("kw" if word in _KEYWORDS else "name", word, i))
            i = m.end()
            continue
        if "0" <= c <= "9":
            tokens.append(_number(text, i))
            i += len(tokens[-1].text)
            continue
        if c in "'\"":
            value, end = _string(text, i)
            tokens.append(_Token("str", text[i:end], i, value))
            i = end
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(_Token("op", op, i))
            i += len(op)
            continue
        hint = _CHAR_HINTS.get(c)
        shown = c if c.isprintable() else ascii(c)
        message = f"unexpected character '{shown}'" + (f"; {hint}" if hint else "")
        raise ExprError("expr-syntax", message, i)
    tokens.append(_Token("eof", "", n))
    return tokens


def _number(text: str, start: int) -> _Token:
    m = _NUMBER_RE.match(text, start)
    assert m is not None
    spelled = m.group()
    # A literal glued to letters ("1e", "2x", "0x10") is a typo, not two tokens.
    tail = _IDENT_TAIL_RE.match(text, m.end())
    if tail is not None and tail.group():
        raise ExprError("expr-syntax", f"invalid number literal '{spelled + tail.group()}'", start)
    is_float = "." in spelled or "e" in spelled or "E" in spelled
    try:
        value: int | float = float(spelled) if is_float else int(spelled)
    except ValueError:
        raise ExprError("expr-syntax", f"invalid number literal '{spelled}'", start) from None
    return _Token("num", spelled, start, value)


def _string(text: str, start: int) -> tuple[str, int]:
    """Read the string literal opening at ``start``; return its value and the end offset."""
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(chars), i + 1
        if c == "\\":
            escaped = text[i + 1 : i + 2]
            if not escaped:
                break
            if escaped not in _STRING_ESCAPES:
                raise ExprError(
                    "expr-syntax",
                    f"unsupported escape '\\{escaped}' in string; only \\\\, \\' and \\\" are allowed",
                    i,
                )
            chars.append(escaped)
            i += 2
            continue
        chars.append(c)
        i += 1
    raise ExprError("expr-syntax", "unterminated string", start)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------

_CMP_OPS: Final[dict[str, CmpOp]] = {
    "==": "==",
    "!=": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}
_SUM_OPS: Final[dict[str, ArithOp]] = {"+": "+", "-": "-"}
# Limits keep every recursive pass (here and in the printers/evaluators) far below Python's
# recursion limit; real spec expressions are nowhere near them.
_MAX_NESTING: Final = 50
_MAX_DEPTH: Final = 200


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.nesting = 0

    # -- token helpers ------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        tok = self.tokens[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def expect_op(self, text: str, after: str = "") -> _Token:
        tok = self.peek()
        if not tok.is_op(text):
            where = f" after {after}" if after else ""
            raise ExprError(
                "expr-syntax", f"expected '{text}'{where} but found {tok.describe()}", tok.offset
            )
        return self.advance()

    def unexpected(self, tok: _Token) -> ExprError:
        if tok.kind == "eof":
            return ExprError(
                "expr-syntax", "expected an expression but found end of expression", tok.offset
            )
        return ExprError("expr-syntax", f"unexpected token {tok.describe()}", tok.offset)

    def enter(self, tok: _Token) -> None:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise ExprError("expr-syntax", "expression is nested too deeply", tok.offset)

    def leave(self) -> None:
        self.nesting -= 1

    # -- grammar ------------------------------------------------------------------------------

    def parse(self) -> Node:
        node = self.parse_or()
        tok = self.peek()
        if tok.kind != "eof":
            raise self.unexpected(tok)
        return node

    def parse_or(self) -> Node:
        values = [self.parse_and()]
        while self.peek().is_kw("or"):
            self.advance()
            values.append(self.parse_and())
        return values[0] if len(values) == 1 else BoolOp("or", tuple(values), values[0].offset)

    def parse_and(self) -> Node:
        values = [self.parse_not()]
        while self.peek().is_kw("and"):
            self.advance()
            values.append(self.parse_not())
        return values[0] if len(values) == 1 else BoolOp("and", tuple(values), values[0].offset)

    def parse_not(self) -> Node:
        tok = self.peek()
        if not tok.is_kw("not"):
            return self.parse_cmp()
        self.advance()
        self.enter(tok)
        operand = self.parse_not()
        self.leave()
        return Not(operand, tok.offset)

    def starts_comparison(self) -> bool:
        tok = self.peek()
        if tok.kind == "op":
            return tok.text in _CMP_OPS
        return tok.is_kw("is") or tok.is_kw("in") or (tok.is_kw("not") and self.peek(1).is_kw("in"))

    def parse_cmp(self) -> Node:
        left = self.parse_sum()
        if not self.starts_comparison():
            return left
        tok = self.advance()
        node: Node
        if tok.kind == "op":
            node = Compare(_CMP_OPS[tok.text], left, self.parse_sum(), left.offset)
        elif tok.text == "is":
            negated = self.peek().is_kw("not")
            if negated:
                self.advance()
            none = self.peek()
            if not none.is_kw("None"):
                raise ExprError(
                    "expr-syntax",
                    f"expected 'None' after '{'is not' if negated else 'is'}' but found "
                    f"{none.describe()}; 'is' is only allowed as 'x is None' / 'x is not None'",
                    none.offset,
                )
            self.advance()
            node = IsNone(left, negated, left.offset)
        else:
            negated = tok.text == "not"
            if negated:
                self.advance()  # the 'in' after 'not'
            node = In(left, self.parse_options(), negated, left.offset)
        if self.starts_comparison():
            raise ExprError(
                "expr-syntax",
                "chained comparisons are not allowed; combine them with 'and'",
                self.peek().offset,
            )
        return node

    def parse_options(self) -> tuple[Node, ...]:
        self.expect_op("(", "'in'")
        if self.peek().is_op(")"):
            raise ExprError(
                "expr-syntax", "'in (...)' needs at least one option", self.peek().offset
            )
        options = [self.parse_sum()]
        while not self.peek().is_op(")"):
            tok = self.peek()
            if not tok.is_op(","):
                raise ExprError(
                    "expr-syntax", f"expected ',' or ')' but found {tok.describe()}", tok.offset
                )
            self.advance()
            if self.peek().is_op(")"):  # trailing comma
                break
            options.append(self.parse_sum())
        self.advance()
        return tuple(options)

    def parse_sum(self) -> Node:
        node = self.parse_prod()
        while self.peek().kind == "op" and self.peek().text in _SUM_OPS:
            op = _SUM_OPS[self.advance().text]
            node = BinOp(op, node, self.parse_prod(), node.offset)
        return node

    def parse_prod(self) -> Node:
        node = self.parse_unary()
        while self.peek().is_op("*"):
            self.advance()
            node = BinOp("*", node, self.parse_unary(), node.offset)
        return node

    def parse_unary(self) -> Node:
        tok = self.peek()
        if not tok.is_op("-"):
            return self.parse_atom()
        self.advance()
        self.enter(tok)
        operand = self.parse_unary()
        self.leave()
        return Neg(operand, tok.offset)

    def parse_atom(self) -> Node:
        tok = self.peek()
        if tok.kind in ("num", "str"):
            self.advance()
            return Const(tok.value, tok.offset)
        if tok.kind == "kw" and tok.text in ("True", "False", "None"):
            self.advance()
            return Const({"True": True, "False": False, "None": None}[tok.text], tok.offset)
        if tok.kind == "name":
            self.advance()
            if self.peek().is_op("."):
                self.advance()
                member = self.peek()
                if member.kind != "name":
                    raise ExprError(
                        "expr-syntax",
                        f"expected an enum member name after '{tok.text}.' but found "
                        f"{member.describe()}",
                        member.offset,
                    )
                self.advance()
                return EnumRef(tok.text, member.text, tok.offset)
            if self.peek().is_op("("):
                return self.parse_call(tok)
            return Name(tok.text, tok.offset)
        if tok.is_op("("):
            self.advance()
            self.enter(tok)
            inner = self.parse_or()
            self.leave()
            self.expect_op(")")
            return inner
        raise self.unexpected(tok)

    def parse_call(self, func: _Token) -> Node:
        paren = self.advance()
        arity = f"'{func.text}()' takes exactly one argument"
        if self.peek().is_op(")"):
            raise ExprError("expr-syntax", arity, self.peek().offset)
        self.enter(paren)
        arg = self.parse_or()
        self.leave()
        if self.peek().is_op(","):
            raise ExprError("expr-syntax", arity, self.peek().offset)
        self.expect_op(")")
        return Call(func.text, arg, func.offset)


def _depth(node: Node) -> int:
    deepest = 0
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in _children(current))
    return deepest


def parse(text: str) -> Node:
    """Parse expression text into an AST; raises ``ExprError("expr-syntax", ...)``."""
    if not text.strip():
        raise ExprError("expr-syntax", "empty expression", 0)
    node = _Parser(text).parse()
    # Long flat chains like `a + a + ... + a` are left-nested; bound them too.
    if _depth(node) > _MAX_DEPTH:
        raise ExprError("expr-syntax", "expression is too complex", 0)
    return node


# ---------------------------------------------------------------------------------------------
# Type checker
# ---------------------------------------------------------------------------------------------


def _eq_comparable(a: Ty, b: Ty) -> bool:
    if a.is_numeric and b.is_numeric:
        return True
    return a.kind == b.kind and a.kind in ("bool", "str", "enum") and a.enum == b.enum


def _is_literal(node: Node) -> bool:
    """Whether ``node`` may appear as an option of ``in (...)``."""
    match node:
        case Const():
            return node.value is not None
        case EnumRef():
            return True
        case Neg():
            return isinstance(node.operand, Const) and _is_number(node.operand.value)
        case _:
            return False


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    def __init__(self, symbols: Mapping[str, Sym], enums: Mapping[str, Sequence[str]]) -> None:
        self.symbols = symbols
        self.enums = enums

    def sym(self, node: Name) -> Sym:
        sym = self.symbols.get(node.id)
        if sym is None:
            hint = _did_you_mean(node.id, list(self.symbols))
            raise ExprError("unknown-name", f"unknown name '{node.id}'{hint}", node.offset)
        return sym

    def check(self, node: Node) -> Ty:
        match node:
            case Const():
                return self.const(node)
            case Name():
                return self.sym(node).ty
            case EnumRef():
                return self.enum_ref(node)
            case Neg():
                ty = self.check(node.operand)
                if not ty.is_numeric:
                    raise _type_error(f"cannot apply unary '-' to {ty}", node.operand)
                return ty
            case BinOp():
                return self.arith(node)
            case Compare():
                return self.compare(node)
            case BoolOp():
                for value in node.values:
                    ty = self.check(value)
                    if ty != BOOL:
                        raise _type_error(f"'{node.op}' needs bool operands, got {ty}", value)
                return BOOL
            case Not():
                ty = self.check(node.operand)
                if ty != BOOL:
                    raise _type_error(f"'not' needs a bool operand, got {ty}", node.operand)
                return BOOL
            case IsNone():
                return self.is_none(node)
            case In():
                return self.in_(node)
            case Call():
                return self.call(node)
            case _:
                assert_never(node)

    def const(self, node: Const) -> Ty:
        value = node.value
        # bool before int: True is an int to Python.
        if isinstance(value, bool):
            return BOOL
        if isinstance(value, int):
            return INT
        if isinstance(value, float):
            return FLOAT
        if isinstance(value, str):
            return STR
        raise _type_error("None is only allowed in 'x is None' / 'x is not None'", node)

    def enum_ref(self, node: EnumRef) -> Ty:
        members = self.enums.get(node.enum)
        if members is None:
            hint = _did_you_mean(node.enum, list(self.enums))
            raise ExprError("unknown-enum", f"unknown enum '{node.enum}'{hint}", node.offset)
        if node.member not in members:
            hint = _did_you_mean(node.member, list(members))
            raise ExprError(
                "unknown-enum-member",
                f"enum '{node.enum}' has no member '{node.member}'{hint}",
                node.offset,
            )
        return Ty.of_enum(node.enum)

    def arith(self, node: BinOp) -> Ty:
        left = self.check(node.left)
        right = self.check(node.right)
        if not (left.is_numeric and right.is_numeric):
            culprit = node.right if left.is_numeric else node.left
            raise _type_error(f"cannot apply '{node.op}' to {left} and {right}", culprit)
        return INT if left == INT and right == INT else FLOAT

    def compare(self, node: Compare) -> Ty:
        left = self.check(node.left)
        right = self.check(node.right)
        if node.op in ("==", "!="):
            if not _eq_comparable(left, right):
                culprit = node.left if left == TENSOR else node.right
                raise _type_error(f"cannot compare {left} with {right}", culprit)
        elif not (left.is_numeric and right.is_numeric):
            culprit = node.right if left.is_numeric else node.left
            raise _type_error(
                f"cannot compare {left} with {right} using '{node.op}'; only numbers are ordered",
                culprit,
            )
        return BOOL

    def is_none(self, node: IsNone) -> Ty:
        operand = node.operand
        if not isinstance(operand, Name):
            raise _type_error("'is None' needs a field name", operand)
        if not self.sym(operand).nullable:
            raise _type_error(f"'{operand.id}' can never be None", operand)
        return BOOL

    def in_(self, node: In) -> Ty:
        ty = self.check(node.operand)
        if not _eq_comparable(ty, ty):
            raise _type_error(f"cannot use 'in' with {ty}", node.operand)
        for option in node.options:
            if not _is_literal(option):
                raise _type_error("'in (...)' options must be constants or enum members", option)
            option_ty = self.check(option)
            if not _eq_comparable(ty, option_ty):
                raise _type_error(f"cannot compare {ty} with {option_ty}", option)
        return BOOL

    def call(self, node: Call) -> Ty:
        if node.func == "len":
            ty = self.check(node.arg)
            if ty not in (TENSOR, STR):
                raise _type_error(f"len() needs a tensor or str, got {ty}", node.arg)
            return INT
        if node.func == "int":
            ty = self.check(node.arg)
            if ty != BOOL:
                raise _type_error(f"int() needs a bool, got {ty}", node.arg)
            return INT
        raise ExprError(
            "unknown-function",
            f"unknown function '{node.func}'; only len() and int() are allowed",
            node.offset,
        )


def _type_error(message: str, node: Node) -> ExprError:
    return ExprError("expr-type", message, node.offset)


def typecheck(node: Node, symbols: Mapping[str, Sym], enums: Mapping[str, Sequence[str]]) -> Ty:
    """The type of ``node``; raises ``ExprError`` at the first ill-typed sub-expression.

    ``symbols`` maps field names to their types, ``enums`` maps enum names to member names.
    Callers that need a condition check the result is ``BOOL`` themselves.
    """
    return _Checker(symbols, enums).check(node)


# ---------------------------------------------------------------------------------------------
# Printers
# ---------------------------------------------------------------------------------------------

# Binding strength, loosest first; mirrors the grammar rules.
_P_OR, _P_AND, _P_NOT, _P_CMP, _P_SUM, _P_PROD, _P_UNARY, _P_ATOM = range(1, 9)


def _prec(node: Node) -> int:
    match node:
        case BoolOp():
            return _P_OR if node.op == "or" else _P_AND
        case Not():
            return _P_NOT
        case Compare() | IsNone() | In():
            return _P_CMP
        case BinOp():
            return _P_PROD if node.op == "*" else _P_SUM
        case Neg():
            return _P_UNARY
        case Const():
            # A negative literal (only partial_eval makes them) prints with a leading '-'.
            value = node.value
            if isinstance(value, float):
                negative = math.copysign(1.0, value) < 0  # -0.0 prints as "-0.0" too
            else:
                negative = isinstance(value, int) and value < 0
            return _P_UNARY if negative else _P_ATOM
        case Name() | EnumRef() | Call():
            return _P_ATOM
        case _:
            assert_never(node)


def _const_text(value: ConstValue) -> str:
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError("NaN has no spelling in the expression language")
        if math.isinf(value):
            # The tokenizer reads an overflowing literal as infinity, so this round-trips.
            return "1e999" if value > 0 else "-1e999"
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_text(node: Node) -> str:
    """Canonical spelling: single spaces around binary operators, minimal parentheses."""

    def sub(child: Node, min_prec: int) -> str:
        text = render(child)
        return f"({text})" if _prec(child) < min_prec else text

    def render(n: Node) -> str:
        match n:
            case Const():
                return _const_text(n.value)
            case Name():
                return n.id
            case EnumRef():
                return f"{n.enum}.{n.member}"
            case Neg():
                operand = sub(n.operand, _P_UNARY)
                # "- -x" rather than "--x", which reads like a decrement.
                return ("- " if operand.startswith("-") else "-") + operand
            case BinOp():
                # Left-associative: only the right operand needs parens at equal strength.
                own = _prec(n)
                return f"{sub(n.left, own)} {n.op} {sub(n.right, own + 1)}"
            case Compare():
                return f"{sub(n.left, _P_SUM)} {n.op} {sub(n.right, _P_SUM)}"
            case BoolOp():
                own = _prec(n)
                return f" {n.op} ".join(sub(v, own + 1) for v in n.values)
            case Not():
                return "not " + sub(n.operand, _P_NOT)
            case IsNone():
                return f"{sub(n.operand, _P_SUM)} is {'not ' if n.negated else ''}None"
            case In():
                options = ", ".join(sub(o, _P_SUM) for o in n.options)
                # Spelled like a Python tuple so docs readers are not misled.
                options += "," if len(n.options) == 1 else ""
                return f"{sub(n.operand, _P_SUM)} {'not ' if n.negated else ''}in ({options})"
            case Call():
                return f"{n.func}({render(n.arg)})"
            case _:
                assert_never(n)

    return render(node)


def _const_python(value: ConstValue) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value!r}")'
    text = repr(value)
    # Parenthesised so a caller's template can never bind the sign differently.
    return f"({text})" if text.startswith("-") else text


def _is_bool_const(node: Node) -> bool:
    return isinstance(node, Const) and isinstance(node.value, bool)


def to_python(
    node: Node,
    name: Callable[[str], str],
    enum_member: Callable[[str, str], str],
    tensors: frozenset[str] = frozenset(),
) -> str:
    """Python source for generated code.

    Every compound sub-expression is parenthesised so the result is correct wherever a
    template pastes it. ``name`` and ``enum_member`` spell field and enum references (e.g.
    ``m.height`` and ``TPPlan.v1_generator_only``) and must return primary expressions.
    ``len()`` of a name in ``tensors`` reads its first dimension (``.shape[0]``: a
    tensor's ``len()`` is a Python method of torch's, four times slower). The AST is
    expected to have passed ``typecheck``.
    """

    def emit(n: Node) -> str:
        match n:
            case Const():
                return _const_python(n.value)
            case Name():
                return name(n.id)
            case EnumRef():
                return enum_member(n.enum, n.member)
            case Neg():
                return f"(-{emit(n.operand)})"
            case Compare() if n.op in ("==", "!=") and _is_bool_const(n.right):
                # `x is True` for a type-checked bool: same meaning, and lint-clean (E712).
                return f"({emit(n.left)} is {'not ' if n.op == '!=' else ''}{emit(n.right)})"
            case Compare() if n.op in ("==", "!=") and _is_bool_const(n.left):
                return f"({emit(n.right)} is {'not ' if n.op == '!=' else ''}{emit(n.left)})"
            case Not(operand=IsNone() as inner):
                # `x is not None` rather than `not (x is None)`: same meaning, lint-clean (E714)
                return emit(IsNone(inner.operand, not inner.negated, n.offset))
            case Not(operand=Compare() as inner) if inner.op in ("==", "!="):
                flipped: CmpOp = "!=" if inner.op == "==" else "=="
                return emit(Compare(flipped, inner.left, inner.right, n.offset))
            case BinOp() | Compare():
                return f"({emit(n.left)} {n.op} {emit(n.right)})"
            case BoolOp():
                return "(" + f" {n.op} ".join(emit(v) for v in n.values) + ")"
            case Not():
                return f"(not {emit(n.operand)})"
            case IsNone():
                return f"({emit(n.operand)} is {'not ' if n.negated else ''}None)"
            case In():
                options = [emit(o) for o in n.options]
                # A one-element tuple needs its trailing comma in Python.
                body = options[0] + "," if len(options) == 1 else ", ".join(options)
                return f"({emit(n.operand)} {'not ' if n.negated else ''}in ({body}))"
            case Call():
                if n.func not in ("len", "int"):
                    raise ExprError("unknown-function", f"unknown function '{n.func}'", n.offset)
                if n.func == "len" and isinstance(n.arg, Name) and n.arg.id in tensors:
                    return f"{emit(n.arg)}.shape[0]"
                return f"{n.func}({emit(n.arg)})"
            case _:
                assert_never(n)

    return emit(node)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

_ARITH: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_COMPARE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _enum_value(node: EnumRef, enums: Mapping[str, Mapping[str, int]]) -> int:
    members = enums.get(node.enum)
    if members is None:
        raise ExprError("unknown-enum", f"unknown enum '{node.enum}'", node.offset)
    if node.member not in members:
        raise ExprError(
            "unknown-enum-member",
            f"enum '{node.enum}' has no member '{node.member}'",
            node.offset,
        )
    return members[node.member]


def evaluate(
    node: Node, values: Mapping[str, object], enums: Mapping[str, Mapping[str, int]]
) -> object:
    """Interpret ``node`` with Python semantics, exactly as ``to_python``'s output would run.

    Names are looked up in ``values``; an ``EnumRef`` evaluates to its member's int value.
    Errors raised by Python operators on ill-typed values (``None + 1``) propagate as-is.
    """

    def ev(n: Node) -> Any:
        match n:
            case Const():
                return n.value
            case Name():
                if n.id not in values:
                    hint = _did_you_mean(n.id, list(values))
                    raise ExprError("unknown-name", f"no value for name '{n.id}'{hint}", n.offset)
                return values[n.id]
            case EnumRef():
                return _enum_value(n, enums)
            case Neg():
                return -ev(n.operand)
            case BinOp():
                return _ARITH[n.op](ev(n.left), ev(n.right))
            case Compare():
                return _COMPARE[n.op](ev(n.left), ev(n.right))
            case BoolOp():
                # Mirrors Python's and/or: stop at the first deciding operand and return it.
                result: Any = n.op == "and"
                for value in n.values:
                    result = ev(value)
                    if bool(result) == (n.op == "or"):
                        return result
                return result
            case Not():
                return not ev(n.operand)
            case IsNone():
                return (ev(n.operand) is None) != n.negated
            case In():
                found = ev(n.operand) in tuple(ev(o) for o in n.options)
                return found != n.negated
            case Call():
                if n.func == "len":
                    return len(ev(n.arg))
                if n.func == "int":
                    return int(ev(n.arg))
                raise ExprError("unknown-function", f"unknown function '{n.func}'", n.offset)
            case _:
                assert_never(n)

    return ev(node)


def _to_const(value: object, offset: int) -> Const | None:
    """A ``Const`` holding ``value`` if it is a plain literal value, else ``None``.

    Enum members (IntEnum/StrEnum) are reduced to their plain value so printers never see
    them; non-finite floats are refused because ``to_text`` could not spell NaN and folding
    to infinity hides an overflow the runtime would otherwise show.
    """
    if value is None:
        return Const(None, offset)
    if isinstance(value, bool):
        return Const(bool(value), offset)
    if isinstance(value, int):
        return Const(int(value), offset)
    if isinstance(value, float):
        return Const(float(value), offset) if math.isfinite(value) else None
    if isinstance(value, str):
        return Const(str.__str__(value), offset)
    return None


class _PartialEvaluator:
    def __init__(self, known: Mapping[str, object], enums: Mapping[str, Mapping[str, int]]):
        self.known = known
        self.enums = enums

    def constant(self, node: Node) -> bool:
        if isinstance(node, Const):
            return True
        if isinstance(node, EnumRef):
            return node.member in self.enums.get(node.enum, {})
        return False

    def fold(self, node: Node, values: Mapping[str, object] | None = None) -> Node:
        """``node`` replaced by its value if evaluating it succeeds, else unchanged."""
        try:
            value = evaluate(node, values or {}, self.enums)
        except (ExprError, TypeError, ValueError, ArithmeticError):
            # Left for the runtime to report, where the values are real.
            return node
        const = _to_const(value, node.offset)
        return node if const is None else const

    def fold_if_constant(self, node: Node) -> Node:
        if all(self.constant(child) for child in _children(node)):
            return self.fold(node)
        return node

    def visit(self, node: Node) -> Node:
        match node:
            case Const() | EnumRef():
                return node
            case Name():
                if node.id in self.known:
                    const = _to_const(self.known[node.id], node.offset)
                    if const is not None:
                        return const
                return node
            case Neg():
                return self.fold_if_constant(Neg(self.visit(node.operand), node.offset))
            case BinOp():
                left, right = self.visit(node.left), self.visit(node.right)
                return self.fold_if_constant(BinOp(node.op, left, right, node.offset))
            case Compare():
                left, right = self.visit(node.left), self.visit(node.right)
                return self.fold_if_constant(Compare(node.op, left, right, node.offset))
            case BoolOp():
                return self.bool_op(node)
            case Not():
                return self.fold_if_constant(Not(self.visit(node.operand), node.offset))
            case IsNone():
                operand = node.operand
                if isinstance(operand, Name) and operand.id in self.known:
                    # Decidable even for values that have no Const form (tensors).
                    is_none = self.known[operand.id] is None
                    return Const(is_none != node.negated, node.offset)
                return self.fold_if_constant(IsNone(self.visit(operand), node.negated, node.offset))
            case In():
                operand = self.visit(node.operand)
                options = tuple(self.visit(o) for o in node.options)
                return self.fold_if_constant(In(operand, options, node.negated, node.offset))
            case Call():
                arg = node.arg
                if isinstance(arg, Name) and arg.id in self.known:
                    # len(tensor) is known even though the tensor itself cannot become a Const.
                    return self.fold(node, {arg.id: self.known[arg.id]})
                return self.fold_if_constant(Call(node.func, self.visit(arg), node.offset))
            case _:
                assert_never(node)

    def bool_op(self, node: BoolOp) -> Node:
        # Operands are side-effect-free bools, so order does not matter for simplification:
        # the absorbing element (False for 'and', True for 'or') decides the result wherever it
        # appears, and the identity element can be dropped.
        absorbing = node.op == "or"
        kept: list[Node] = []
        for value in node.values:
            folded = self.visit(value)
            if isinstance(folded, Const) and isinstance(folded.value, bool):
                if folded.value == absorbing:
                    return Const(absorbing, node.offset)
                continue
            kept.append(folded)
        if not kept:
            return Const(not absorbing, node.offset)
        if len(kept) == 1:
            return kept[0]
        return BoolOp(node.op, tuple(kept), node.offset)


def partial_eval(
    node: Node, known: Mapping[str, object], enums: Mapping[str, Mapping[str, int]]
) -> Node:
    """Specialize ``node`` for the ``known`` name values.

    Known names become ``Const`` nodes, fully constant sub-expressions are folded (an
    ``EnumRef`` counts as constant), and and/or/not are simplified around constants. Anything
    that cannot be decided stays as it is, so the result is equivalent to ``node`` for every
    assignment consistent with ``known``.
    """
    return _PartialEvaluator(known, enums).visit(node)
