"""Spec-loader hardening: mutated YAML through the compiler front end and ``tpwire check``.

Seeds are the shipped specs, the golden specs and the bad-spec corpus. Mutations work on
bytes (lines, indentation, YAML syntax characters, huge numbers, anchor/alias bombs, deep
nesting, non-UTF-8, BOMs, duplicate keys, tags, truncation, splices) and on the parsed
tree (hostile values, deleted/renamed/unknown keys, copied subtrees), then the oracle
demands: either the spec compiles, or ``SpecErrors`` whose every error is located
(``file:line:col: error[code]: message``, inside the file) - never another exception -
within a time limit and a memory limit (tracemalloc peak).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import resource
import tempfile
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tpwire import cli
from tpwire.codegen import compiler
from tpwire.codegen.errors import SpecError, SpecErrors

from .campaign import KEEP_PER_SIGNATURE, Progress, Totals
from .mutators import Rand, pick, rbytes
from .oracle import Hang, watchdog
from .targets import GOLDEN_DIR, ROOT, SPEC_DIR

BAD_SPECS = ROOT / "tests" / "bad_specs"
SLOW_S = 10.0  # a spec at the size limits (1 MiB, 50,000 nodes) takes a few seconds
HANG_S = 30.0
MEMORY_MB = 256
_CODE = re.compile(r"^[a-z0-9-]+$")
_PRINTED = re.compile(r"^.+:\d+:\d+: error\[[a-z0-9-]+\]: \S.*$")


def seed_specs() -> list[tuple[str, bytes]]:
    """(name, bytes) of every seed: shipped, golden, then the bad-spec corpus."""
    paths = sorted(SPEC_DIR.glob("*.yaml")) + sorted(GOLDEN_DIR.glob("*.yaml"))
    paths += sorted(p for p in BAD_SPECS.iterdir() if p.is_file() and p.suffix != ".expect")
    return [(p.relative_to(ROOT).as_posix(), p.read_bytes()) for p in paths]


# --- byte-level operators ---------------------------------------------------------------------

SpecOp = Callable[[bytes, Rand, Sequence[bytes]], bytes]
SYNTAX = [
    b":",
    b"-",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"&a",
    b"*a",
    b"!",
    b"!!",
    b"|",
    b">",
    b"#",
    b'"',
    b"'",
    b"\t",
    b"\n",
    b" ",
    b"%",
    b"@",
    b"`",
    b"\\",
    b"? ",
    b"<<: ",
    b"---\n",
    b"...\n",
]
HUGE = [
    b"1" + b"0" * 400,
    b"-" + b"9" * 5000,
    b"1e999",
    b"-1e999",
    b".nan",
    b".inf",
    b"-.inf",
    b"0x" + b"f" * 40,
    b"0o777777777777777777777777",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"1_000_000",
    b"0b1010",
    b"1:30:00",
    b"2001-12-14t21:59:43.10-05:00",
    b"4.9e-324",
    b"1e308",
]
TAGS = [
    b"!!python/object/apply:os.system ['true'] ",
    b"!custom ",
    b"!!binary ",
    b"!!set ",
    b"!!timestamp ",
    b"!!omap ",
    b"!!str ",
    b"!!int ",
    b"!<tag:example.com,2000:x> ",
]
BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82"]


def _lines(b: bytes) -> list[bytes]:
    return b.split(b"\n")


def _pos(b: bytes, r: Rand) -> int:
    return r.randrange(len(b) + 1)


def t_delete_line(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    ls = _lines(b)
    del ls[r.randrange(len(ls))]
    return b"\n".join(ls)


def t_dup_line(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    """Duplicating a ``key: value`` line is the classic duplicate key."""
    ls = _lines(b)
    i = r.randrange(len(ls))
    ls.insert(i, ls[i])
    return b"\n".join(ls)


def t_swap_lines(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    ls = _lines(b)
    i, j = r.randrange(len(ls)), r.randrange(len(ls))
    ls[i], ls[j] = ls[j], ls[i]
    return b"\n".join(ls)


def t_indent(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    ls = _lines(b)
    i = r.randrange(len(ls))
    k = r.randrange(4)
    if k == 0:
        ls[i] = b" " + ls[i]
    elif k == 1:
        ls[i] = ls[i][1:] if ls[i].startswith(b" ") else ls[i]
    elif k == 2:
        ls[i] = b"\t" + ls[i]
    else:
        ls[i] = ls[i].lstrip(b" ")
    return b"\n".join(ls)


def t_syntax(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    i = _pos(b, r)
    return b[:i] + pick(r, SYNTAX) + b[i:]


def t_replace_byte(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    if not b:
        return b
    i = r.randrange(len(b))
    return b[:i] + bytes([r.randrange(256)]) + b[i + 1 :]


def t_random_bytes(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    i = _pos(b, r)
    return b[:i] + rbytes(r, 1 + r.randrange(16)) + b[i:]


def t_bad_utf8(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    i = _pos(b, r)
    return b[:i] + pick(r, BAD_UTF8) + b[i:]


def t_control(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    i = _pos(b, r)
    c = pick(r, (b"\x00", b"\x07", b"\x1b", b"\x7f", b"\xc2\x85", b"\xe2\x80\xa8", b"\r"))
    return b[:i] + c + b[i:]


def t_huge_number(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    """A number (or any scalar after ``: ``) replaced by a huge or odd numeric literal."""
    spots = [m.span() for m in re.finditer(rb"-?\b\d+(\.\d+)?\b", b)]
    if not spots:
        return b
    s, e = pick(r, spots)
    return b[:s] + pick(r, HUGE) + b[e:]


def t_alias_bomb(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    """A billion-laughs chain, appended as a key or replacing a value."""
    levels = 3 + r.randrange(8)
    width = 5 + r.randrange(6)
    lines = [b"l0: &l0 [" + b",".join([b"lol"] * width) + b"]"]
    for k in range(1, levels):
        refs = b",".join([b"*l%d" % (k - 1)] * width)
        lines.append(b"l%d: &l%d [%s]" % (k, k, refs))
    bomb = b"\n".join(lines)
    if r.random() < 0.5:
        return b + b"\n" + bomb + b"\n"
    return bomb + b"\n" + b


def t_alias(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    """An anchor on one value and an alias in place of another (or a merge key)."""
    spots = [m.end() for m in re.finditer(rb": ", b)]
    if len(spots) < 2:
        return b
    i, j = sorted((pick(r, spots), pick(r, spots)))
    out = b[:i] + b"&x " + b[i:j] + pick(r, (b"*x ", b"*x\n", b"*missing ", b"<<: *x ")) + b[j:]
    return out


def t_deep(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    """Deep flow nesting at a value position (or as the whole document)."""
    n = pick(r, (33, 40, 100, 1000, 5000, 50000))
    k = r.randrange(3)
    nest = b"[" * n + b"]" * n if k == 0 else b"{a: " * n + b"1" + b"}" * n if k == 1 else b"[{" * n
    spots = [m.end() for m in re.finditer(rb": ", b)]
    if not spots or r.random() < 0.2:
        return nest + b"\n"
    i = pick(r, spots)
    end = b.find(b"\n", i)
    end = len(b) if end < 0 else end
    return b[:i] + nest + b[end:]


def t_block_deep(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    """Deep block nesting by indentation (mappings or sequences)."""
    n = pick(r, (33, 64, 200, 800))
    item = pick(r, (b"k:", b"-"))
    body = b"\n".join(b" " * i + item for i in range(n)) + b" 1\n"
    return b + b"\nextra:\n" + b"\n".join(b"  " + ln for ln in body.split(b"\n"))


def t_tag(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    spots = [m.end() for m in re.finditer(rb": ", b)]
    if not spots:
        return b
    i = pick(r, spots)
    return b[:i] + pick(r, TAGS) + b[i:]


def t_truncate(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    return b[: r.randrange(len(b) + 1)]


def t_newlines(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    return b.replace(b"\n", pick(r, (b"\r\n", b"\r", b"\n\n", b"\x85")))


def t_bom(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    return pick(r, (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf\xef\xbb\xbf")) + b


def t_splice(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    other = pick(r, pool)
    return b[: _pos(b, r)] + other[_pos(other, r) :]


def t_token(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    """An identifier replaced by another one of the file, or by a near miss."""
    words = [m.span() for m in re.finditer(rb"[A-Za-z_][A-Za-z0-9_]*", b)]
    if not words:
        return b
    s, e = pick(r, words)
    if r.random() < 0.5:
        s2, e2 = pick(r, words)
        new = b[s2:e2]
    else:
        w = bytearray(b[s:e])
        j = r.randrange(len(w))
        w[j : j + 1] = pick(r, (b"", b"_", bytes([w[j] ^ 0x20]), b"x", w[j : j + 1] * 2))
        new = bytes(w)
    return b[:s] + new + b[e:]


def t_expr(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    """An operator of an expression swapped, or a paren/call unbalanced."""
    ops = [
        b"==",
        b"!=",
        b"<=",
        b">=",
        b" and ",
        b" or ",
        b" not ",
        b" is None",
        b" in ",
        b"len(",
        b"int(",
        b"(",
        b")",
    ]
    spots = [(m.start(), m.end()) for op in ops for m in re.finditer(re.escape(op), b)]
    if not spots:
        return b
    s, e = pick(r, spots)
    new = pick(
        r, [*ops, b"=", b"===", b"**", b"//", b"lambda: ", b"__import__(", b"((((", b"1 <", b""]
    )
    return b[:s] + new + b[e:]


def t_big(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    """Past the 1 MiB size limit, or a huge number of nodes just under it."""
    k = r.randrange(3)
    if k == 0:
        return b + b"\n#" + b"x" * (1 << 20)
    if k == 1:
        return b + b"\nmany: [" + b"1," * 51000 + b"1]\n"
    return b + b"\nlong_" + b"k" * 200000 + b": 1\n"


def t_documents(b: bytes, r: Rand, pool: Sequence[bytes]) -> bytes:
    return pick(r, (b + b"\n---\n" + b, b"%YAML 1.1\n---\n" + b, b"%TAG ! tag:x,2000:\n---\n" + b))


TEXT_OPS: dict[str, SpecOp] = {
    op.__name__: op
    for op in (
        t_delete_line,
        t_dup_line,
        t_swap_lines,
        t_indent,
        t_syntax,
        t_replace_byte,
        t_random_bytes,
        t_bad_utf8,
        t_control,
        t_huge_number,
        t_alias_bomb,
        t_alias,
        t_deep,
        t_block_deep,
        t_tag,
        t_truncate,
        t_newlines,
        t_bom,
        t_splice,
        t_token,
        t_expr,
        t_big,
        t_documents,
    )
}

# --- tree-level operators (on specs that parse) -----------------------------------------------

HOSTILE_VALUES: list[Any] = [
    10**400,
    -(2**64),
    2**63,
    -(2**63) - 1,
    float("nan"),
    float("inf"),
    -0.0,
    "",
    "x" * 5000,
    "\ud800",
    "é" * 300,
    None,
    True,
    [],
    {},
    [1, [2, [3]]],
    {"min": 5, "max": 1},
    {"min": 10**30},
    "tensor | None | None",
    "int |",
    "TPPlan.nope",
    "len(len(x))",
    "1 < 2 < 3",
    "a" * 300 + " == 1",
    0,
    -1,
    65,
    4097,
]
NEAR_KEYS = [
    "tpwire",
    "protocol",
    "messages",
    "fields",
    "invariants",
    "dims",
    "type",
    "range",
    "shape",
    "dtypes",
    "max_elements",
    "required_when",
    "forbidden_when",
    "none_unless",
    "derived",
    "version",
    "id",
    "action",
    "discriminator",
    "version_field",
    "slots",
    "values",
    "typ",
    "feilds",
    "__class__",
    "",
    "1",
]


def _paths(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*path, i))
    return out


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def y_mutate(tree: Any, r: Rand) -> Any:
    """One tree edit: a hostile value, a deleted/added/renamed key, a copied subtree."""
    paths = _paths(tree)
    path = pick(r, paths)
    k = r.randrange(5)
    if not path:
        return pick(r, HOSTILE_VALUES) if k == 0 else tree
    parent = _get(tree, path[:-1])
    key = path[-1]
    if k == 0 or k == 1:
        parent[key] = pick(r, HOSTILE_VALUES)
    elif k == 2:
        del parent[key]
    elif k == 3 and isinstance(parent, dict):
        new = pick(r, NEAR_KEYS)
        parent[new] = parent.pop(key)
    else:
        other = _get(tree, pick(r, paths))
        try:
            parent[key] = json.loads(json.dumps(other))  # a copy, never an alias
        except (TypeError, ValueError):
            parent[key] = None
    return tree


def tree_mutation(b: bytes, r: Rand) -> bytes | None:
    """The spec parsed, edited by 1-3 tree operators and dumped again (None if it won't parse)."""
    try:
        tree = yaml.safe_load(b.decode("utf-8"))
    except Exception:
        return None
    if not isinstance(tree, dict):
        return None
    for _ in range(1 + r.randrange(3)):
        tree = y_mutate(tree, r)
    text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=1 << 16)
    return text.encode("utf-8", "surrogatepass")


def mutate_spec(
    b: bytes,
    r: Rand,
    pool: Sequence[bytes],
    max_ops: int = 3,
    ops: Sequence[str] | None = None,
) -> tuple[bytes, list[str]]:
    """1-``max_ops`` byte-level operators (from ``ops``), after a tree edit 30% of the time."""
    choices = sorted(ops if ops is not None else TEXT_OPS)
    names: list[str] = []
    if r.random() < 0.3:
        out = tree_mutation(b, r)
        if out is not None:
            b = out
            names.append("tree")
    for _ in range(1 + r.randrange(max_ops)):
        name = pick(r, choices)
        b = TEXT_OPS[name](b, r, pool)
        names.append(name)
    return b, names


# --- oracle -----------------------------------------------------------------------------------


@dataclass
class SpecOutcome:
    label: str  # "ok", or the first error code
    codes: tuple[str, ...] = ()
    finding: str | None = None  # exception | unlocated | hang | slow | memory | cli
    detail: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0
    where: str = ""
    tb: str = field(default="", repr=False)
    violations: tuple[str, ...] = ()  # (Totals compatibility)

    @property
    def signature(self) -> str:
        import hashlib

        key = f"{self.finding}|{self.where}|{self.detail[:60]}"
        return hashlib.sha1(key.encode()).hexdigest()[:10]


def _line_models(data: bytes) -> list[list[str]]:
    """The file's lines as YAML counts them (CR, LF, CRLF, NEL, LS, PS end a line) and as
    ``\n``-only tools count them; an error is located if it fits either."""
    text = data.decode("utf-8", "replace")
    return [re.split("\r\n|[\r\n\x85\u2028\u2029]", text), text.split("\n")]


def _fits(line: int, col: int, lines: list[str]) -> bool:
    if not 1 <= line <= len(lines) + 1:
        return False
    width = len(lines[line - 1]) if line <= len(lines) else 0
    return 1 <= col <= width + 2


def located_problem(exc: SpecErrors, data: bytes, name: str) -> str | None:
    """Why the errors of ``exc`` are not all well located and well formed (None if they are)."""
    if not exc.errors:
        return "SpecErrors without errors"
    models = _line_models(data)
    for e in exc.errors:
        if not isinstance(e, SpecError):
            return f"not a SpecError: {e!r}"
        if e.file != name:
            return f"error names file {e.file!r}, not {name!r}"
        if not any(_fits(e.line, e.col, lines) for lines in models):
            return f"line:col {e.line}:{e.col} is not inside the file: {e}"
        if not _CODE.match(e.code):
            return f"bad code {e.code!r}"
        if not e.message.strip() or "\n" in e.message:
            return f"empty or multi-line message: {e.message!r}"
        if str(e) != f"{name}:{e.line}:{e.col}: error[{e.code}]: {e.message}":
            return f"printed form {str(e)!r}"
    return None


def _where(exc: BaseException) -> str:
    frames = [
        f"{Path(fs.filename).name}:{fs.lineno}:{fs.name}"
        for fs in traceback.extract_tb(exc.__traceback__)
        if "codegen" in fs.filename or "tpwire" in fs.filename
    ]
    return frames[-1] if frames else ""


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_spec(
    data: bytes,
    name: str = "fuzz.yaml",
    *,
    slow_s: float = SLOW_S,
    hang_s: float = HANG_S,
    memory_mb: float = MEMORY_MB,
    memory: str = "rss",
) -> SpecOutcome:
    """Load, check and lower ``data`` (the front end of ``tpwire check``) and judge it.

    ``memory``: ``"tracemalloc"`` measures the peak of Python allocations (exact, but
    slows parsing several times), ``"rss"`` the growth of the process's peak RSS (cheap;
    only an input that pushes the high-water mark up by ``memory_mb`` is caught),
    ``"none"`` skips it.
    """
    start = time.perf_counter()
    rss0 = _maxrss_mb()
    if memory == "tracemalloc":
        tracemalloc.start()
    out: SpecOutcome
    try:
        with watchdog(hang_s):
            try:
                compiler.protocol_ir_from_text(data, name)
            except SpecErrors as exc:
                codes = tuple(sorted({e.code for e in exc.errors}))
                problem = located_problem(exc, data, name)
                label = exc.errors[0].code if exc.errors else "?"
                out = SpecOutcome(label, codes)
                if problem is not None:
                    out = SpecOutcome("unlocated", codes, "unlocated", problem)
            else:
                out = SpecOutcome("ok")
    except Hang as exc:
        out = SpecOutcome("hang", (), "hang", str(exc), tb=traceback.format_exc())
    except Exception as exc:  # RecursionError, MemoryError, ...: all findings
        out = SpecOutcome(
            "exception",
            (),
            "exception",
            f"{type(exc).__name__}: {str(exc)[:300]}",
            where=_where(exc),
            tb="".join(traceback.format_exception(exc)),
        )
    finally:
        peak = 0.0
        if memory == "tracemalloc":
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        elif memory == "rss":
            peak = _maxrss_mb() - rss0
    out.seconds = time.perf_counter() - start
    out.peak_mb = peak
    if out.finding is None and out.peak_mb > memory_mb:
        out.finding, out.label = "memory", "memory"
        out.detail = f"memory grew {out.peak_mb:.0f} MiB ({memory}; limit {memory_mb:g} MiB)"
    if out.finding is None and out.seconds > slow_s:
        out.finding, out.label = "slow", "slow"
        out.detail = f"took {out.seconds:.2f} s (limit {slow_s:g} s)"
    return out


def run_cli_check(data: bytes, workdir: Path) -> str | None:
    """``tpwire check`` in-process on ``data``: exit 0/1 and compiler-style lines only."""
    path = workdir / "fuzz_spec.yaml"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["check", str(path)])
    lines = err.getvalue().splitlines()
    if rc == 0:
        return None if ": ok (" in out.getvalue() and not lines else f"rc 0 with {lines!r}"
    if rc != 1:
        return f"tpwire check exited {rc}: {err.getvalue()[:300]}"
    if not lines or not re.match(r"^tpwire: \d+ errors?$", lines[-1]):
        return f"no summary line: {lines[-1:]!r}"
    bad = [ln for ln in lines[:-1] if not _PRINTED.match(ln)]
    return f"not compiler-style: {bad[0]!r}" if bad else None


# --- campaign ---------------------------------------------------------------------------------


def save_spec_example(
    crash_dir: Path, data: bytes, out: SpecOutcome, extra: dict[str, Any]
) -> None:
    crash_dir.mkdir(parents=True, exist_ok=True)
    stem = f"spec-{out.finding}-{out.signature}"
    existing = sorted(crash_dir.glob(f"{stem}-*.yaml"))
    if len(existing) >= KEEP_PER_SIGNATURE:
        return
    path = crash_dir / f"{stem}-{len(existing)}.yaml"
    path.write_bytes(data)
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    record = {
        "kind": "spec",
        "finding": out.finding,
        "detail": out.detail,
        "where": out.where,
        "seconds": out.seconds,
        "peak_mb": out.peak_mb,
        "traceback": out.tb,
        "spec": path.name,
        "replay": f"python -m fuzz replay {rel.with_suffix('.json')}",
        **extra,
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n", "utf-8")


def run_spec_campaign(
    *,
    seconds: float,
    min_inputs: int = 0,
    max_inputs: int | None = None,
    seed: int = 0,
    crash_dir: Path | None = None,
    cli_every: int = 10,
    progress: Progress | None = None,
    ops: Sequence[str] | None = None,
) -> Totals:
    """Mutate the seed specs until ``seconds`` have passed and ``min_inputs`` ran."""
    totals = Totals("spec")
    seeds = seed_specs()
    pool = [b for _, b in seeds]
    rng = random.Random(seed)
    start = time.monotonic()
    codes: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="tpwire-fuzz-") as tmp:
        while True:
            if max_inputs is not None and totals.inputs >= max_inputs:
                break
            if time.monotonic() - start >= seconds and totals.inputs >= min_inputs:
                break
            input_seed = rng.getrandbits(64)
            r = random.Random(input_seed)
            # shipped and golden specs (the first seeds) reach the deeper stages: favour them
            name, base = seeds[r.randrange(4)] if r.random() < 0.6 else pick(r, seeds)
            data, applied = mutate_spec(base, r, pool, ops=ops)
            out = run_spec(data)
            if out.finding is None and cli_every and totals.inputs % cli_every == 0:
                problem = run_cli_check(data, Path(tmp))
                if problem is not None:
                    out = SpecOutcome("cli", out.codes, "cli", problem)
            codes.update(out.codes)
            totals.record("spec", out)
            if out.finding and crash_dir is not None:
                save_spec_example(
                    crash_dir,
                    data,
                    out,
                    {"seed": seed, "input_seed": input_seed, "base": name, "ops": applied},
                )
            if progress is not None:
                progress(totals)
    totals.seconds = time.monotonic() - start
    totals.violations = codes  # every error code seen, counted once per input
    if progress is not None:
        progress(totals, True)
    return totals
