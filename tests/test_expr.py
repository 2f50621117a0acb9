"""Tests for the spec expression language (tpwire.codegen.expr)."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping

import pytest

from tpwire.codegen import expr
from tpwire.codegen.expr import (
    BOOL,
    FLOAT,
    INT,
    STR,
    TENSOR,
    BinOp,
    BoolOp,
    Call,
    Compare,
    Const,
    EnumRef,
    ExprError,
    In,
    IsNone,
    Name,
    Neg,
    Not,
    Sym,
    Ty,
)

# ---------------------------------------------------------------------------------------------
# Fixtures shared by the type checker, printer and evaluator tests
# ---------------------------------------------------------------------------------------------

ENUMS: dict[str, list[str]] = {
    "TPPlan": ["v0_full_pipeline", "v1_generator_only"],
    "TPAction": ["NOOP", "INFER", "ERROR", "SHUTDOWN"],
}
ENUM_VALUES: dict[str, dict[str, int]] = {
    name: {member: i for i, member in enumerate(members)} for name, members in ENUMS.items()
}

SYMBOLS: dict[str, Sym] = {
    "tp_plan": Sym(Ty.of_enum("TPPlan"), nullable=False),
    "action": Sym(Ty.of_enum("TPAction"), nullable=False),
    "tp_num_denoise_steps": Sym(INT, nullable=False),
    "tp_expected_generator_calls": Sym(INT, nullable=False),
    "tp_do_kv_recompute": Sym(BOOL, nullable=False),
    "tp_reset_kv_cache": Sym(BOOL, nullable=False),
    "init_cache": Sym(BOOL, nullable=False),
    "denoising_step_list": Sym(TENSOR, nullable=False),
    "context_frames_override": Sym(TENSOR, nullable=True),
    "latent_h": Sym(INT, nullable=False),
    "height": Sym(INT, nullable=False),
    "kv_cache_attention_bias": Sym(FLOAT, nullable=False),
    "prompt": Sym(STR, nullable=True),
    "seed": Sym(INT, nullable=True),
    "x": Sym(INT, nullable=False),
    "y": Sym(INT, nullable=False),
    "f": Sym(FLOAT, nullable=False),
    "a": Sym(BOOL, nullable=False),
    "b": Sym(BOOL, nullable=False),
    "c": Sym(BOOL, nullable=False),
    "s": Sym(STR, nullable=False),
}


def check(text: str) -> Ty:
    return expr.typecheck(expr.parse(text), SYMBOLS, ENUMS)


def raises(code: str, func: object, *args: object) -> ExprError:
    assert callable(func)
    with pytest.raises(ExprError) as info:
        func(*args)
    assert info.value.code == code, info.value.message
    return info.value


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("42", Const(42)),
        ("1_000", Const(1000)),
        ("1.5", Const(1.5)),
        ("1e-3", Const(0.001)),
        ("2.5E3", Const(2500.0)),
        ("1e+2", Const(100.0)),
        ("True", Const(True)),
        ("False", Const(False)),
        ("None", Const(None)),
        ("'it\\'s'", Const("it's")),
        ('"say \\"hi\\" \\\\"', Const('say "hi" \\')),
        ('"single \' inside"', Const("single ' inside")),
        ("height", Name("height")),
        ("_private9", Name("_private9")),
        ("TPPlan.v1_generator_only", EnumRef("TPPlan", "v1_generator_only")),
        ("TPPlan . v1_generator_only", EnumRef("TPPlan", "v1_generator_only")),
        ("len(xs)", Call("len", Name("xs"))),
        ("int(a)", Call("int", Name("a"))),
        ("-x", Neg(Name("x"))),
        ("x + 1", BinOp("+", Name("x"), Const(1))),
        ("x - 1", BinOp("-", Name("x"), Const(1))),
        ("x * 8", BinOp("*", Name("x"), Const(8))),
        ("x == y", Compare("==", Name("x"), Name("y"))),
        ("x != y", Compare("!=", Name("x"), Name("y"))),
        ("x < y", Compare("<", Name("x"), Name("y"))),
        ("x <= y", Compare("<=", Name("x"), Name("y"))),
        ("x > y", Compare(">", Name("x"), Name("y"))),
        ("x >= y", Compare(">=", Name("x"), Name("y"))),
        ("a and b", BoolOp("and", (Name("a"), Name("b")))),
        ("a or b or c", BoolOp("or", (Name("a"), Name("b"), Name("c")))),
        ("not a", Not(Name("a"))),
        ("not not a", Not(Not(Name("a")))),
        ("x is None", IsNone(Name("x"), negated=False)),
        ("x is not None", IsNone(Name("x"), negated=True)),
        ("x in (1, 2)", In(Name("x"), (Const(1), Const(2)))),
        ("x in (1,)", In(Name("x"), (Const(1),))),
        ("x in (1)", In(Name("x"), (Const(1),))),
        ("x not in (1, 2,)", In(Name("x"), (Const(1), Const(2)), negated=True)),
        ("((x))", Name("x")),
        ("  x\t==\n1 ", Compare("==", Name("x"), Const(1))),
    ],
)
def test_parse_constructs(text: str, tree: expr.Node) -> None:
    assert expr.parse(text) == tree


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("not a and b", BoolOp("and", (Not(Name("a")), Name("b")))),
        ("a or b and c", BoolOp("or", (Name("a"), BoolOp("and", (Name("b"), Name("c")))))),
        ("1 + 2 * 3", BinOp("+", Const(1), BinOp("*", Const(2), Const(3)))),
        ("-x * 2", BinOp("*", Neg(Name("x")), Const(2))),
        ("x - 1 - 2", BinOp("-", BinOp("-", Name("x"), Const(1)), Const(2))),
        ("x - (1 - 2)", BinOp("-", Name("x"), BinOp("-", Const(1), Const(2)))),
        ("x - 1 < -2", Compare("<", BinOp("-", Name("x"), Const(1)), Neg(Const(2)))),
        ("not x == 1", Not(Compare("==", Name("x"), Const(1)))),
        (
            "latent_h * 8 == height",
            Compare("==", BinOp("*", Name("latent_h"), Const(8)), Name("height")),
        ),
        ("x + 1 is None", IsNone(BinOp("+", Name("x"), Const(1)))),
        ("(a or b) and c", BoolOp("and", (BoolOp("or", (Name("a"), Name("b"))), Name("c")))),
        ("(a or b) or c", BoolOp("or", (BoolOp("or", (Name("a"), Name("b"))), Name("c")))),
        (
            "a == (b is not None)",
            Compare("==", Name("a"), IsNone(Name("b"), negated=True)),
        ),
        (
            "not init_cache or tp_reset_kv_cache",
            BoolOp("or", (Not(Name("init_cache")), Name("tp_reset_kv_cache"))),
        ),
        (
            "tp_expected_generator_calls == int(tp_do_kv_recompute) + tp_num_denoise_steps",
            Compare(
                "==",
                Name("tp_expected_generator_calls"),
                BinOp("+", Call("int", Name("tp_do_kv_recompute")), Name("tp_num_denoise_steps")),
            ),
        ),
    ],
)
def test_parse_precedence(text: str, tree: expr.Node) -> None:
    assert expr.parse(text) == tree


def test_parse_records_offsets() -> None:
    tree = expr.parse("a and  x + TPPlan.v0_full_pipeline > -len(s)")
    assert isinstance(tree, BoolOp)
    assert tree.offset == 0
    cmp = tree.values[1]
    assert isinstance(cmp, Compare) and cmp.offset == 7
    assert isinstance(cmp.left, BinOp) and cmp.left.offset == 7
    assert isinstance(cmp.left.right, EnumRef) and cmp.left.right.offset == 11
    assert isinstance(cmp.right, Neg) and cmp.right.offset == 37
    assert isinstance(cmp.right.operand, Call) and cmp.right.operand.offset == 38


def test_const_equality_distinguishes_types() -> None:
    assert Const(1) != Const(True)
    assert Const(1) != Const(1.0)
    assert Const(0) != Const(False)
    assert expr.parse("x == 1") != expr.parse("x == True")
    assert len({Const(1), Const(True), Const(1.0)}) == 3


def test_offsets_do_not_affect_equality() -> None:
    assert expr.parse("x==1") == expr.parse("  x  ==  1")


@pytest.mark.parametrize(
    ("text", "offset", "fragment"),
    [
        ("(a", 2, "expected ')' but found end of expression"),
        ("len(a", 5, "expected ')' but found end of expression"),
        ("a b", 2, "unexpected token 'b'"),
        ("a == 1 )", 7, "unexpected token ')'"),
        ("a < b < c", 6, "chained comparisons are not allowed"),
        ("a == b != c", 7, "chained comparisons are not allowed"),
        ("a is None is None", 10, "chained comparisons are not allowed"),
        ("a == b in (1)", 7, "chained comparisons are not allowed"),
        ("a < b not in (1)", 6, "chained comparisons are not allowed"),
        ("", 0, "empty expression"),
        ("   ", 0, "empty expression"),
        ("== a", 0, "unexpected token '=='"),
        ("a and", 5, "expected an expression but found end of expression"),
        ("a @ b", 2, "unexpected character '@'"),
        ("a = b", 2, "use '=='"),
        ("a && b", 2, "use 'and'"),
        ("!a", 0, "use 'not'"),
        ("x / 2", 2, "division is not supported"),
        ("a\u00a0", 1, "unexpected character"),
        ("'abc", 0, "unterminated string"),
        ("x == \"abc'", 5, "unterminated string"),
        ("'ab\\", 0, "unterminated string"),
        ("'a\\nb'", 2, "unsupported escape"),
        ("1e", 0, "invalid number literal '1e'"),
        ("x + 2x", 4, "invalid number literal '2x'"),
        ("1__0", 0, "invalid number literal"),
        ("1_", 0, "invalid number literal"),
        ("len()", 4, "takes exactly one argument"),
        ("int(a, b)", 5, "takes exactly one argument"),
        ("x is 5", 5, "expected 'None' after 'is'"),
        ("x is not 5", 9, "expected 'None' after 'is not'"),
        ("x in 1", 5, "expected '(' after 'in'"),
        ("x in ()", 6, "needs at least one option"),
        ("x in (1 2)", 8, "expected ',' or ')'"),
        ("x in (1,", 8, "expected an expression"),
        ("TPPlan.", 7, "expected an enum member name"),
        ("TPPlan.None", 7, "expected an enum member name"),
        ("a not b", 2, "unexpected token 'not'"),
        ("+x", 0, "unexpected token '+'"),
        ("x == not a", 5, "unexpected token 'not'"),
        ("(" * 60 + "a" + ")" * 60, 50, "nested too deeply"),
        ("-" * 60 + "a", 50, "nested too deeply"),
        (" + ".join(["a"] * 300), 0, "too complex"),
    ],
)
def test_syntax_errors(text: str, offset: int, fragment: str) -> None:
    error = raises("expr-syntax", expr.parse, text)
    assert error.offset == offset
    assert fragment in error.message
    assert str(error) == error.message


def test_error_caret() -> None:
    error = raises("expr-syntax", expr.parse, "a < b < c")
    assert error.caret("a < b < c") == "a < b < c\n      ^"


# ---------------------------------------------------------------------------------------------
# Type checking
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ty"),
    [
        ("tp_plan == TPPlan.v1_generator_only", BOOL),
        ("tp_expected_generator_calls == int(tp_do_kv_recompute) + tp_num_denoise_steps", BOOL),
        ("tp_num_denoise_steps == len(denoising_step_list)", BOOL),
        ("context_frames_override is not None", BOOL),
        ("tp_do_kv_recompute == (context_frames_override is not None)", BOOL),
        ("action in (TPAction.INFER, TPAction.ERROR)", BOOL),
        ("action not in (TPAction.INFER,)", BOOL),
        ("not init_cache or tp_reset_kv_cache", BOOL),
        ("latent_h * 8 == height", BOOL),
        ("kv_cache_attention_bias >= 0.0 and kv_cache_attention_bias <= 1.0", BOOL),
        ("x - 1 < -2", BOOL),
        ("x in (1, 2.5, -3)", BOOL),
        ("f == 1", BOOL),
        ("s == 'abc' or s in ('x', 'y')", BOOL),
        ("a == True", BOOL),
        ("len(s) > 0", BOOL),
        ("seed is None or seed > 0", BOOL),
        ("x + 1", INT),
        ("-x * 2", INT),
        ("x * 1.5", FLOAT),
        ("-f", FLOAT),
        ("len(prompt)", INT),
        ("TPPlan.v0_full_pipeline", Ty("enum", "TPPlan")),
        ("'text'", STR),
    ],
)
def test_typecheck_ok(text: str, ty: Ty) -> None:
    assert check(text) == ty


@pytest.mark.parametrize(
    ("text", "code", "offset", "fragment"),
    [
        ("tp_num_steps == 1", "unknown-name", 0, "did you mean 'tp_num_denoise_steps'?"),
        ("x == zzzzzzzz", "unknown-name", 5, "unknown name 'zzzzzzzz'"),
        ("hieght is None", "unknown-name", 0, "did you mean 'height'?"),
        ("tp_plan == TPPlann.v1_generator_only", "unknown-enum", 11, "did you mean 'TPPlan'?"),
        (
            "tp_plan == TPPlan.v1_generator",
            "unknown-enum-member",
            11,
            "did you mean 'v1_generator_only'?",
        ),
        ("a + 1", "expr-type", 0, "cannot apply '+' to bool and int"),
        ("x * a", "expr-type", 4, "cannot apply '*' to int and bool"),
        ("-a", "expr-type", 1, "cannot apply unary '-' to bool"),
        ("s - 1", "expr-type", 0, "cannot apply '-' to str and int"),
        ("tp_plan == 1", "expr-type", 11, "cannot compare TPPlan with int"),
        ("tp_plan == TPAction.INFER", "expr-type", 11, "cannot compare TPPlan with TPAction"),
        ("x == a", "expr-type", 5, "cannot compare int with bool"),
        ("s == 1", "expr-type", 5, "cannot compare str with int"),
        ("denoising_step_list == x", "expr-type", 0, "cannot compare tensor with int"),
        ("s < 'b'", "expr-type", 0, "cannot compare str with str using '<'"),
        ("x >= a", "expr-type", 5, "cannot compare int with bool using '>='"),
        ("a and x", "expr-type", 6, "'and' needs bool operands, got int"),
        ("x or a", "expr-type", 0, "'or' needs bool operands, got int"),
        ("not x", "expr-type", 4, "'not' needs a bool operand, got int"),
        ("height is None", "expr-type", 0, "'height' can never be None"),
        ("x + 1 is not None", "expr-type", 0, "'is None' needs a field name"),
        ("x == None", "expr-type", 5, "None is only allowed in 'x is None'"),
        ("x in (1, y)", "expr-type", 9, "must be constants or enum members"),
        ("action in (TPAction.INFER, 2)", "expr-type", 27, "cannot compare TPAction with int"),
        ("x in ('a',)", "expr-type", 6, "cannot compare int with str"),
        ("denoising_step_list in (1,)", "expr-type", 0, "cannot use 'in' with tensor"),
        ("action in (TPAction.INFERR,)", "unknown-enum-member", 11, "did you mean 'INFER'?"),
        ("len(x) == 1", "expr-type", 4, "len() needs a tensor or str, got int"),
        ("int(x) == 1", "expr-type", 4, "int() needs a bool, got int"),
        ("abs(x) == 1", "unknown-function", 0, "unknown function 'abs'"),
        ("x == 1 and sqrt(f) > 0", "unknown-function", 11, "only len() and int()"),
    ],
)
def test_typecheck_errors(text: str, code: str, offset: int, fragment: str) -> None:
    error = raises(code, check, text)
    assert error.offset == offset, error.message
    assert fragment in error.message


def test_ty_str_and_validation() -> None:
    assert [str(t) for t in (INT, FLOAT, BOOL, STR, TENSOR, expr.NONE)] == [
        "int",
        "float",
        "bool",
        "str",
        "tensor",
        "None",
    ]
    assert str(Ty("enum", "TPPlan")) == "TPPlan"
    with pytest.raises(ValueError):
        Ty("enum")
    with pytest.raises(ValueError):
        Ty("list")


# ---------------------------------------------------------------------------------------------
# Name queries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "all_names", "used"),
    [
        ("x == 1", {"x"}, {"x"}),
        ("TPPlan.v0_full_pipeline == tp_plan", {"tp_plan"}, {"tp_plan"}),
        ("seed is None or seed > 0", {"seed"}, {"seed"}),
        ("seed is not None", {"seed"}, set()),
        ("a and (prompt is None) and len(s) > x", {"a", "prompt", "s", "x"}, {"a", "s", "x"}),
        ("(x + 1) is None", {"x"}, {"x"}),
        ("action in (TPAction.INFER,) and int(b) == y", {"action", "b", "y"}, {"action", "b", "y"}),
    ],
)
def test_names(text: str, all_names: set[str], used: set[str]) -> None:
    tree = expr.parse(text)
    assert expr.names(tree) == all_names
    assert expr.value_names(tree) == used


# ---------------------------------------------------------------------------------------------
# Canonical text
# ---------------------------------------------------------------------------------------------

ROUND_TRIP = [
    "tp_plan == TPPlan.v1_generator_only",
    "tp_expected_generator_calls == int(tp_do_kv_recompute) + tp_num_denoise_steps",
    "tp_num_denoise_steps == len(denoising_step_list)",
    "context_frames_override is not None",
    "tp_do_kv_recompute == (context_frames_override is not None)",
    "action in (TPAction.INFER, TPAction.ERROR)",
    "not init_cache or tp_reset_kv_cache",
    "latent_h * 8 == height",
    "kv_cache_attention_bias >= 0.0 and kv_cache_attention_bias <= 1.0",
    "x - 1 < -2",
    "x-(y-1)",
    "(x - y) - 1",
    "x * (y + 1)",
    "(x * y) * 2",
    "x * (y * 2)",
    "-(x + 1) * -y",
    "- -x",
    "-(-(-x))",
    "not (a and b)",
    "not (a or b) and c",
    "(a or b) or (c or a)",
    "a and (b and c)",
    "(a and b) and c",
    "not not a",
    "(not a) == b",
    "(x == 1) == (y == 2)",
    "(x is None) == a",
    "(x + 1) is None",
    "x not in (1, 2, 3,)",
    "x in (-1,)",
    "x in (1 + 2, 3)",
    "s == 'it\\'s' or s == \"\\\\\"",
    "f == 1e-05 or f == 2.5e+20 or f == 1e999",
    "x == 1_000_000",
    "len(s) * (int(a) + int(b or c))",
    "int(not a)",
    "a == (b != False)",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_to_text_round_trip(text: str) -> None:
    tree = expr.parse(text)
    canonical = expr.to_text(tree)
    assert expr.parse(canonical) == tree
    assert expr.to_text(expr.parse(canonical)) == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("x==1", "x == 1"),
        ("((x))  +  ((1))", "x + 1"),
        ("(a and b) or c", "a and b or c"),
        ("a or (b and c)", "a or b and c"),
        ("(not a) and b", "not a and b"),
        ("(x * y) + 1", "x * y + 1"),
        ("(x + y) * 2", "(x + y) * 2"),
        ("x - (y - 1)", "x - (y - 1)"),
        ("(-x) * 2", "-x * 2"),
        ("-(x * 2)", "-(x * 2)"),
        ("--x", "- -x"),
        ("x in (1,2,)", "x in (1, 2)"),
        ("x not in (1)", "x not in (1,)"),
        ("s == 'a\"b'", 's == "a\\"b"'),
        ("f > 1E3", "f > 1000.0"),
        ("f > 0.5e-3", "f > 0.0005"),
        ("1_000", "1000"),
        ("TPPlan . v1", "TPPlan.v1"),
        ("len( ( s ) )", "len(s)"),
        ("not(a)", "not a"),
    ],
)
def test_to_text_canonical(text: str, canonical: str) -> None:
    assert expr.to_text(expr.parse(text)) == canonical


def test_to_text_of_folded_constants() -> None:
    # partial_eval can create negative literals; they must print with the right grouping.
    tree = BinOp("-", Name("x"), Const(-2))
    assert expr.to_text(tree) == "x - -2"
    assert expr.to_text(Neg(Const(-2.5))) == "- -2.5"
    assert expr.to_text(Const(float("-inf"))) == "-1e999"
    with pytest.raises(ValueError):
        expr.to_text(Const(float("nan")))


# ---------------------------------------------------------------------------------------------
# Python code generation, checked against the interpreter
# ---------------------------------------------------------------------------------------------


class TPPlan(enum.IntEnum):
    v0_full_pipeline = 0
    v1_generator_only = 1


class TPAction(enum.IntEnum):
    NOOP = 0
    INFER = 1
    ERROR = 2
    SHUTDOWN = 3


class Msg:
    """Stands in for a generated message class in the compiled code's namespace."""

    def __init__(self, values: Mapping[str, object]) -> None:
        self.__dict__.update(values)


def compile_python(tree: expr.Node) -> str:
    return expr.to_python(tree, lambda n: f"m.{n}", lambda e, m: f"{e}.{m}")


def run_python(source: str, values: Mapping[str, object]) -> object:
    # Only the test runs generated code, in a namespace holding nothing but the message.
    namespace = {
        "m": Msg(values),
        "TPPlan": TPPlan,
        "TPAction": TPAction,
        "__builtins__": {"len": len, "int": int, "float": float},
    }
    return eval(source, namespace)


SAMPLE_ROWS: list[dict[str, object]] = [
    {
        "x": x,
        "y": y,
        "f": f,
        "a": a,
        "b": b,
        "c": not a,
        "s": s,
        "seed": seed,
        "tp_plan": plan,
        "action": action,
        "denoising_step_list": [1, 2, 3][:y],
        "context_frames_override": None if b else [0],
    }
    for x, y, f, a, b, s, seed, plan, action in itertools.islice(
        itertools.product(
            [-3, 0, 2],
            [0, 2, 3],
            [0.0, 0.5, 1.5],
            [True, False],
            [True, False],
            ["", "abc"],
            [None, 7],
            list(TPPlan),
            [TPAction.INFER, TPAction.SHUTDOWN],
        ),
        0,
        None,
        37,
    )
]

PROGRAMS = [
    "x - 1 < -2",
    "x * 2 + y == 4",
    "-x * 2 > y - -1",
    "x - (y - 1) == x - y - 1",
    "f * x >= 0.5 and f <= 1.0",
    "not a and b",
    "a or b and c",
    "not (a or b) == c",
    "(a == b) != (x == y)",
    "seed is None or seed > x",
    "seed is not None and seed + x > 5",
    "x in (-3, 2)",
    "x not in (0,)",
    "s in ('abc', 'x') or len(s) == 0",
    "tp_plan == TPPlan.v1_generator_only",
    "action in (TPAction.INFER, TPAction.ERROR)",
    "action not in (TPAction.SHUTDOWN,) and tp_plan != TPPlan.v0_full_pipeline",
    "y == len(denoising_step_list)",
    "int(a) + int(b) * 2 == x",
    "a == (context_frames_override is not None)",
    "x + y * f",
    "-(x - y)",
]


@pytest.mark.parametrize("text", PROGRAMS)
def test_to_python_agrees_with_evaluate(text: str) -> None:
    tree = expr.parse(text)
    source = compile_python(tree)
    for row in SAMPLE_ROWS:
        assert run_python(source, row) == expr.evaluate(tree, row, ENUM_VALUES), (source, row)
    # The canonical text must compute the same thing as the original.
    reparsed = expr.parse(expr.to_text(tree))
    for row in SAMPLE_ROWS:
        assert expr.evaluate(reparsed, row, ENUM_VALUES) == expr.evaluate(tree, row, ENUM_VALUES)


@pytest.mark.parametrize(
    ("text", "python"),
    [
        ("int(a)", "int(m.a)"),
        ("len(denoising_step_list)", "len(m.denoising_step_list)"),
        ("x is None", "(m.x is None)"),
        ("x is not None", "(m.x is not None)"),
        ("x in (1, y)", "(m.x in (1, m.y))"),
        ("x not in (1)", "(m.x not in (1,))"),
        ("not a and b", "((not m.a) and m.b)"),
        ("x - 1 < -2", "((m.x - 1) < (-2))"),
        ("tp_plan == TPPlan.v1", "(m.tp_plan == TPPlan.v1)"),
        ("s == 'q'", "(m.s == 'q')"),
    ],
)
def test_to_python_shape(text: str, python: str) -> None:
    assert compile_python(expr.parse(text)) == python


def test_to_python_negative_and_special_constants() -> None:
    assert compile_python(BinOp("-", Name("x"), Const(-2))) == "(m.x - (-2))"
    assert compile_python(Const(float("inf"))) == 'float("inf")'
    assert compile_python(Const(float("-inf"))) == 'float("-inf")'


def test_to_python_context_independent() -> None:
    # Pasted next to a higher-precedence operator, the generated text keeps its meaning.
    source = compile_python(expr.parse("x + 1"))
    assert run_python(f"{source} * 2", {"x": 3}) == 8
    source = compile_python(expr.parse("a or b"))
    assert run_python(f"not {source}", {"a": False, "b": True}) is False


# ---------------------------------------------------------------------------------------------
# Interpreter
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values", "result"),
    [
        ("1 + 2 * 3", {}, 7),
        ("-x * 2", {"x": 3}, -6),
        ("x * 0.5", {"x": 3}, 1.5),
        ("a or b and c", {"a": False, "b": True, "c": False}, False),
        ("not a and b", {"a": False, "b": True}, True),
        ("a and b", {"a": True, "b": True}, True),
        ("a or b", {"a": False, "b": False}, False),
        ("seed is None", {"seed": None}, True),
        ("seed is not None", {"seed": 0}, True),
        ("x in (1, 2)", {"x": 2}, True),
        ("x not in (1, 2)", {"x": 2}, False),
        ("tp_plan == TPPlan.v1_generator_only", {"tp_plan": 1}, True),
        ("tp_plan == TPPlan.v1_generator_only", {"tp_plan": TPPlan.v0_full_pipeline}, False),
        ("len(xs)", {"xs": [1, 2, 3]}, 3),
        ("len(s)", {"s": "abcd"}, 4),
        ("int(a) + 1", {"a": True}, 2),
        ("s == 'a\"b'", {"s": 'a"b'}, True),
        ("f >= 0.0 and f <= 1.0", {"f": 1.0}, True),
    ],
)
def test_evaluate(text: str, values: dict[str, object], result: object) -> None:
    value = expr.evaluate(expr.parse(text), values, ENUM_VALUES)
    assert value == result
    assert type(value) is type(result)


def test_evaluate_short_circuits() -> None:
    # The right-hand side would fail (len of None) if it were evaluated.
    tree = expr.parse("seed is None or len(seed) > 0")
    assert expr.evaluate(tree, {"seed": None}, {}) is True
    tree = expr.parse("seed is not None and len(seed) > 0")
    assert expr.evaluate(tree, {"seed": None}, {}) is False


def test_evaluate_len_of_tensor() -> None:
    torch = pytest.importorskip("torch")
    tree = expr.parse("n == len(t)")
    assert expr.evaluate(tree, {"n": 4, "t": torch.zeros(4, 2)}, {}) is True


@pytest.mark.parametrize(
    ("text", "values", "code"),
    [
        ("x + 1", {}, "unknown-name"),
        ("x == E.a", {"x": 1}, "unknown-enum"),
        ("x == TPPlan.nope", {"x": 1}, "unknown-enum-member"),
        ("abs(x)", {"x": 1}, "unknown-function"),
    ],
)
def test_evaluate_errors(text: str, values: dict[str, object], code: str) -> None:
    raises(code, expr.evaluate, expr.parse(text), values, ENUM_VALUES)


# ---------------------------------------------------------------------------------------------
# Partial evaluation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "known", "result"),
    [
        ("tp_plan == TPPlan.v1_generator_only", {"tp_plan": 1}, "True"),
        ("tp_plan == TPPlan.v1_generator_only", {"tp_plan": TPPlan.v0_full_pipeline}, "False"),
        ("tp_plan == TPPlan.v1_generator_only and x > 0", {"tp_plan": 1}, "x > 0"),
        ("tp_plan == TPPlan.v1_generator_only and x > 0", {"tp_plan": 0}, "False"),
        ("tp_plan == TPPlan.v1_generator_only or x > 0", {"tp_plan": 1}, "True"),
        ("tp_plan == TPPlan.v1_generator_only or x > 0", {"tp_plan": 0}, "x > 0"),
        ("x > 0 and a", {"a": False}, "False"),
        ("x > 0 or a", {"a": True}, "True"),
        ("a and b and c", {"b": True}, "a and c"),
        ("a or b or c", {"a": False, "c": False}, "b"),
        ("a and b", {"a": True, "b": True}, "True"),
        ("a or b", {"a": False, "b": False}, "False"),
        ("not a", {"a": True}, "False"),
        ("not (a and b)", {"a": True}, "not b"),
        ("x * 8 == height", {"x": 4}, "32 == height"),
        ("x * 8 == height", {"x": 4, "height": 32}, "True"),
        ("1 + 2 * 3 == y", {}, "7 == y"),
        ("x - 1 < -2", {}, "x - 1 < -2"),
        ("-2 * f", {}, "-2 * f"),
        ("y == int(a) + x", {"a": True, "x": 2}, "y == 3"),
        ("seed is None or seed > 0", {"seed": None}, "True"),
        ("seed is None or seed > 0", {"seed": 5}, "True"),
        ("seed is not None and seed > x", {"seed": 5}, "5 > x"),
        ("n == len(t)", {"t": [1, 2, 3]}, "n == 3"),
        ("t is None", {"t": object()}, "False"),
        ("len(s) > 0", {"s": ""}, "False"),
        ("action in (TPAction.INFER, TPAction.ERROR)", {"action": 2}, "True"),
        ("action not in (TPAction.INFER,) and a", {"action": 1}, "False"),
        ("TPPlan.v0_full_pipeline == TPPlan.v1_generator_only", {}, "False"),
        ("s == 'x' or b", {"s": "x"}, "True"),
        ("x + 1 > y", {"x": 1.5}, "2.5 > y"),
        ("tp_plan == TPPlan.v1_generator_only", {}, "tp_plan == TPPlan.v1_generator_only"),
    ],
)
def test_partial_eval(text: str, known: dict[str, object], result: str) -> None:
    folded = expr.partial_eval(expr.parse(text), known, ENUM_VALUES)
    assert expr.to_text(folded) == result


def test_partial_eval_folds_negation_to_negative_literal() -> None:
    folded = expr.partial_eval(expr.parse("x * -2"), {"x": 3}, {})
    assert folded == Const(-6)
    assert expr.is_const(folded) and expr.const_value(folded) == -6
    assert expr.partial_eval(expr.parse("-2"), {}, {}) == Const(-2)


def test_partial_eval_normalizes_enum_members() -> None:
    folded = expr.partial_eval(expr.parse("tp_plan"), {"tp_plan": TPPlan.v1_generator_only}, {})
    assert folded == Const(1)
    assert type(expr.const_value(folded)) is int


def test_partial_eval_leaves_unfoldable_parts() -> None:
    # A tensor has no literal form, and an unresolvable enum or ill-typed value is left to the
    # runtime rather than raising here.
    tree = expr.parse("t == u")
    assert expr.partial_eval(tree, {"t": object()}, {}) == tree
    tree = expr.parse("x == E.missing")
    assert expr.partial_eval(tree, {"x": 1}, {}) == expr.parse("1 == E.missing")
    tree = expr.parse("x + 1 > 0")
    assert expr.partial_eval(tree, {"x": None}, {}) == Compare(
        ">", BinOp("+", Const(None), Const(1)), Const(0)
    )
    tree = expr.parse("f * 1e308 * 10 > 0")
    assert expr.to_text(expr.partial_eval(tree, {"f": 1.0}, {})) == "1e+308 * 10 > 0"


@pytest.mark.parametrize("text", PROGRAMS)
def test_partial_eval_preserves_meaning(text: str) -> None:
    tree = expr.parse(text)
    for row in SAMPLE_ROWS[:12]:
        for known_names in (("x",), ("a", "b"), ("seed", "tp_plan"), tuple(row)):
            known = {name: row[name] for name in known_names}
            folded = expr.partial_eval(tree, known, ENUM_VALUES)
            expected = expr.evaluate(tree, row, ENUM_VALUES)
            assert expr.evaluate(folded, row, ENUM_VALUES) == expected
            if set(known_names) >= expr.names(tree):
                # Fully known: folds all the way down, keeping the result's exact type.
                assert isinstance(folded, Const)
                assert type(folded.value) is type(expected) and folded.value == expected


def test_const_value_rejects_non_constants() -> None:
    assert not expr.is_const(Name("x"))
    with pytest.raises(ValueError):
        expr.const_value(Name("x"))


def test_walk_visits_every_node_in_order() -> None:
    tree = expr.parse("a and x + 1 in (2, -y)")
    kinds = [type(n).__name__ for n in expr.walk(tree)]
    assert kinds == ["BoolOp", "Name", "In", "BinOp", "Name", "Const", "Const", "Neg", "Name"]
