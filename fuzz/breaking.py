"""``tpwire breaking`` on mutated spec pairs: no traceback, deterministic, sorted.

Each input is a pair (old, new). The old spec is a seed (shipped, golden, extra and
evolution-corpus specs); the new one is the seed after one to three *evolution* edits on its
parsed tree (a bound moved, a field, dtype, member or invariant deleted or copied, a
condition swapped, negated or combined, nullability toggled, slots reordered) that mostly
keep it compiling, and now and then the hostile operators of ``fuzz.specs`` too, so the
error path runs as well. The oracle demands, for both (old, new) and (new, old):

* ``compare_texts`` returns a report, or raises ``SpecErrors`` whose errors are all located
  in one of the two files - never another exception, and within ``SLOW_S``;
* findings are sorted, name catalogue rules, print in the documented form and serialise
  to JSON; a second run gives the same findings;
* a spec compared with itself has no finding.

``python -m fuzz.breaking --seconds 60`` runs a campaign (``make fuzz`` runs it after the
other campaigns); ``tests/test_fuzz_breaking.py`` runs a short, seeded one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tpwire.codegen import breaking
from tpwire.codegen.errors import SpecErrors

from .mutators import pick
from .specs import tree_mutation
from .targets import GOLDEN_DIR, ROOT, SPEC_DIR

SLOW_S = 20.0
CRASH_DIR = ROOT / "fuzz" / "crashes" / "breaking"
_PRINTED = re.compile(
    r"^.+:\d+:\d+: error\[[A-Z_]+\] \((tightening|loosening|both|wire|policy)\): \S.*$"
)


def seed_specs() -> list[tuple[str, str]]:
    """(name, text) of every seed that compiles: shipped, golden, extra and evolution specs."""
    paths = sorted(SPEC_DIR.glob("*.yaml")) + sorted(GOLDEN_DIR.glob("*.yaml"))
    paths += sorted((ROOT / "tests" / "specs").glob("*.yaml"))
    paths += sorted((ROOT / "tests" / "evolution" / "base").glob("*.yaml"))
    out = []
    for p in paths:
        text = p.read_text("utf-8")
        try:
            breaking.load_side(text, p.name)
        except SpecErrors:
            continue
        out.append((p.relative_to(ROOT).as_posix(), text))
    return out


# --- evolution edits on the parsed tree ---------------------------------------------------

Tree = dict[str, Any]


def _fields(tree: Tree, r: random.Random) -> tuple[str, dict[str, Any]] | None:
    """(owner, fields mapping) of a random message, or of the header."""
    owners: list[tuple[str, dict[str, Any]]] = []
    for name, body in (tree.get("messages") or {}).items():
        if isinstance(body, dict) and isinstance(body.get("fields"), dict) and body["fields"]:
            owners.append((name, body["fields"]))
    header = tree.get("header")
    if isinstance(header, dict) and isinstance(header.get("fields"), dict):
        owners.append(("header", header["fields"]))
    return pick(r, owners) if owners else None


def _field(tree: Tree, r: random.Random) -> tuple[str, dict[str, Any], str, dict[str, Any]] | None:
    got = _fields(tree, r)
    if got is None:
        return None
    owner, fields = got
    name = pick(r, sorted(fields))
    body = fields[name]
    return (owner, fields, name, body) if isinstance(body, dict) else None


def _numbers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _numbers(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _numbers(v, (*path, i))
    elif isinstance(node, int | float) and not isinstance(node, bool):
        out.append(path)
    return out


def e_number(tree: Tree, r: random.Random) -> None:
    """A bound, size, id, version or enum value moved."""
    paths = _numbers(tree)
    if not paths:
        return
    path = pick(r, paths)
    parent: Any = tree
    for k in path[:-1]:
        parent = parent[k]
    v = parent[path[-1]]
    steps: list[Callable[[int], int]] = [
        lambda x: x + 1,
        lambda x: x - 1,
        lambda x: x * 2,
        lambda x: x // 2 or 1,
    ]
    step = pick(r, steps)
    parent[path[-1]] = step(v) if isinstance(v, int) else v * pick(r, [0.5, 2.0, -1.0])


def e_delete_field(tree: Tree, r: random.Random) -> None:
    got = _fields(tree, r)
    if got is not None and len(got[1]) > 1:
        del got[1][pick(r, sorted(got[1]))]


def e_copy_field(tree: Tree, r: random.Random) -> None:
    got = _field(tree, r)
    if got is not None:
        _, fields, name, body = got
        fields[f"{name}_{r.randrange(100)}"] = json.loads(json.dumps(body))


def e_rename_field(tree: Tree, r: random.Random) -> None:
    got = _field(tree, r)
    if got is not None:
        _, fields, name, _ = got
        items = [(f"{k}_r" if k == name else k, v) for k, v in fields.items()]
        fields.clear()
        fields.update(items)


def e_reorder_fields(tree: Tree, r: random.Random) -> None:
    got = _fields(tree, r)
    if got is not None:
        items = list(got[1].items())
        r.shuffle(items)
        got[1].clear()
        got[1].update(items)


def _conditions(tree: Tree) -> list[str]:
    out = []
    for body in (tree.get("messages") or {}).values():
        if not isinstance(body, dict):
            continue
        for f in (body.get("fields") or {}).values():
            if isinstance(f, dict):
                out += [f[k] for k in ("required_when", "forbidden_when", "none_unless") if k in f]
        for inv in body.get("invariants") or []:
            if isinstance(inv, dict) and isinstance(inv.get("expr"), str):
                out.append(inv["expr"])
    return [c for c in out if isinstance(c, str)]


def e_condition(tree: Tree, r: random.Random) -> None:
    """A presence condition replaced, negated, combined with another, or dropped."""
    got = _field(tree, r)
    if got is None:
        return
    _, _, _, body = got
    pool = _conditions(tree) or ["True"]
    key = pick(r, ["required_when", "forbidden_when", "none_unless"])
    old = body.get(key)
    k = r.randrange(5)
    if k == 0 or old is None:
        body[key] = pick(r, pool)
    elif k == 1:
        body[key] = f"not ({old})"
    elif k == 2:
        body[key] = f"({old}) {pick(r, ['and', 'or'])} ({pick(r, pool)})"
    elif k == 3:
        del body[key]
    else:
        body[key] = pick(r, pool)


def e_invariant(tree: Tree, r: random.Random) -> None:
    """An invariant deleted, negated, weakened, or copied from another message's."""
    msgs = [b for b in (tree.get("messages") or {}).values() if isinstance(b, dict)]
    if not msgs:
        return
    body = pick(r, msgs)
    invs = body.get("invariants")
    pool = _conditions(tree) or ["True"]
    if not isinstance(invs, list) or not invs:
        body["invariants"] = [{"id": "fz", "expr": pick(r, pool), "message": "fuzz"}]
        return
    i = r.randrange(len(invs))
    inv = invs[i]
    if not isinstance(inv, dict) or not isinstance(inv.get("expr"), str):
        return
    k = r.randrange(4)
    if k == 0:
        del invs[i]
    elif k == 1:
        inv["expr"] = f"not ({inv['expr']})"
    elif k == 2:
        inv["expr"] = f"({inv['expr']}) or ({pick(r, pool)})"
    else:
        inv["expr"] = f"({inv['expr']}) and ({pick(r, pool)})"


def e_nullable(tree: Tree, r: random.Random) -> None:
    got = _field(tree, r)
    if got is not None and isinstance(got[3].get("type"), str):
        t = got[3]["type"]
        got[3]["type"] = t.removesuffix(" | None") if t.endswith(" | None") else f"{t} | None"


def e_dtypes(tree: Tree, r: random.Random) -> None:
    got = _field(tree, r)
    if got is None or not isinstance(got[3].get("dtypes"), list):
        return
    dtypes = got[3]["dtypes"]
    if len(dtypes) > 1 and r.random() < 0.5:
        dtypes.pop(r.randrange(len(dtypes)))
    else:
        dtypes.append(pick(r, ["float32", "float16", "bfloat16", "int64", "uint8", "bool"]))


def e_shape(tree: Tree, r: random.Random) -> None:
    got = _field(tree, r)
    if got is None or not isinstance(got[3].get("shape"), list) or not got[3]["shape"]:
        return
    shape = got[3]["shape"]
    i = r.randrange(len(shape))
    k = r.randrange(3)
    if k == 0:
        shape[i] = pick(r, shape)
    elif k == 1:
        shape.pop(i)
    else:
        shape[i] = 1 + r.randrange(4)


def e_enum_member(tree: Tree, r: random.Random) -> None:
    enums = [b for b in (tree.get("enums") or {}).values() if isinstance(b, dict)]
    if not enums:
        return
    values = pick(r, enums).get("values")
    if not isinstance(values, dict) or not values:
        return
    k = r.randrange(3)
    if k == 0:
        values[f"m{r.randrange(100)}"] = 100 + r.randrange(100)
    elif k == 1 and len(values) > 1:
        del values[pick(r, sorted(values))]
    else:
        name = pick(r, sorted(values))
        values[f"{name}_x"] = values.pop(name)


def e_slots(tree: Tree, r: random.Random) -> None:
    header = tree.get("header")
    if isinstance(header, dict) and isinstance(header.get("slots"), list):
        r.shuffle(header["slots"])


def e_doc(tree: Tree, r: random.Random) -> None:
    tree["doc"] = f"fuzzed doc {r.randrange(1000)}"


EDITS: dict[str, Callable[[Tree, random.Random], None]] = {
    f.__name__: f
    for f in (
        e_number,
        e_delete_field,
        e_copy_field,
        e_rename_field,
        e_reorder_fields,
        e_condition,
        e_invariant,
        e_nullable,
        e_dtypes,
        e_shape,
        e_enum_member,
        e_slots,
        e_doc,
    )
}


def evolve(text: str, r: random.Random) -> tuple[str, list[str]]:
    """1-3 evolution edits (a hostile tree mutation 10% of the time)."""
    if r.random() < 0.1:
        out = tree_mutation(text.encode("utf-8"), r)
        if out is not None:
            return out.decode("utf-8", "replace"), ["hostile"]
    tree = yaml.safe_load(text)
    names = []
    for _ in range(1 + r.randrange(3)):
        name = pick(r, sorted(EDITS))
        try:
            EDITS[name](tree, r)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            pass  # an edit that does not apply to this tree
        names.append(name)
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=1 << 16), names


# --- the oracle -----------------------------------------------------------------------------


@dataclass
class PairOutcome:
    label: str  # "findings", "clean", "spec-errors"
    rules: tuple[str, ...] = ()
    finding: str | None = None  # exception | unlocated | unsorted | nondeterministic | ...
    detail: str = ""
    tb: str = field(default="", repr=False)
    seconds: float = 0.0


def _located(exc: SpecErrors, names: tuple[str, str]) -> str | None:
    for e in exc.errors:
        if e.file not in names or e.line < 1 or e.col < 1:
            return f"error not located in either spec: {e}"
    return None if exc.errors else "SpecErrors without errors"


def check_pair(old: str, new: str) -> PairOutcome:
    """Run ``breaking`` on (old, new) and check everything the oracle demands."""
    names = ("old.yaml", "new.yaml")
    start = time.monotonic()
    try:
        report = breaking.compare_texts(old, new, *names)
    except SpecErrors as exc:
        problem = _located(exc, names)
        if problem is not None:
            return PairOutcome("spec-errors", finding="unlocated", detail=problem)
        return PairOutcome("spec-errors", seconds=time.monotonic() - start)
    except Exception as exc:
        return PairOutcome(
            "exception",
            finding="exception",
            detail=f"{type(exc).__name__}: {exc}"[:300],
            tb=traceback.format_exc(),
        )
    seconds = time.monotonic() - start
    found = report.findings
    out = PairOutcome("findings" if found else "clean", tuple(f.rule for f in found))
    out.seconds = seconds
    if seconds > SLOW_S:
        out.finding, out.detail = "slow", f"{seconds:.1f} s"
    elif list(found) != sorted(found):
        out.finding, out.detail = "unsorted", str(found[:3])
    elif any(f.rule not in breaking.RULES for f in found):
        out.finding, out.detail = "unknown-rule", str(found)
    elif any(not _PRINTED.match(str(f)) or "\n" in str(f) for f in found):
        out.finding = "printed-form"
        out.detail = next(str(f) for f in found if not _PRINTED.match(str(f)) or "\n" in str(f))
    else:
        try:
            json.dumps([f.as_dict() for f in found])
            again = breaking.compare_texts(old, new, *names)
            if again.findings != found:
                out.finding, out.detail = "nondeterministic", f"{found} != {again.findings}"
            same = breaking.compare_texts(new, new, *names)
            if same.findings:
                out.finding, out.detail = "self-findings", str(same.findings[:3])
        except Exception as exc:
            out.finding, out.detail = "exception", f"{type(exc).__name__}: {exc}"[:300]
            out.tb = traceback.format_exc()
    return out


@dataclass
class BreakingTotals:
    pairs: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    findings: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    slowest: float = 0.0


def _save(crash_dir: Path, old: str, new: str, out: PairOutcome, meta: dict[str, Any]) -> Path:
    key = hashlib.sha256((old + "\0" + new).encode()).hexdigest()[:12]
    d = crash_dir / f"{out.finding}-{key}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "old.yaml").write_text(old, "utf-8")
    (d / "new.yaml").write_text(new, "utf-8")
    (d / "outcome.json").write_text(
        json.dumps({**meta, "finding": out.finding, "detail": out.detail, "tb": out.tb}, indent=1),
        "utf-8",
    )
    return d


def run_breaking_campaign(
    *,
    seconds: float,
    seed: int = 0,
    max_pairs: int | None = None,
    min_pairs: int = 0,
    crash_dir: Path | None = None,
) -> BreakingTotals:
    """Mutated spec pairs through ``breaking`` (both ways) until the budget is spent."""
    totals = BreakingTotals()
    seeds = seed_specs()
    rng = random.Random(seed)
    start = time.monotonic()
    while True:
        if max_pairs is not None and totals.pairs >= max_pairs:
            break
        if time.monotonic() - start >= seconds and totals.pairs >= min_pairs:
            break
        input_seed = rng.getrandbits(64)
        r = random.Random(input_seed)
        name, old = pick(r, seeds)
        new, edits = evolve(old, r)
        for a, b in ((old, new), (new, old)):
            out = check_pair(a, b)
            totals.pairs += 1
            totals.labels[out.label] += 1
            totals.rules.update(out.rules)
            totals.slowest = max(totals.slowest, out.seconds)
            if out.finding is not None:
                meta = {"seed": seed, "input_seed": input_seed, "base": name, "edits": edits}
                where = _save(crash_dir, a, b, out, meta) if crash_dir else None
                totals.findings.append(
                    {**meta, "finding": out.finding, "detail": out.detail, "saved": str(where)}
                )
    totals.seconds = time.monotonic() - start
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fuzz.breaking", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--crash-dir", type=Path, default=CRASH_DIR)
    args = ap.parse_args(argv)
    totals = run_breaking_campaign(
        seconds=args.seconds, seed=args.seed, crash_dir=args.crash_dir, min_pairs=20
    )
    print(
        f"tpwire fuzz breaking: {totals.pairs} pairs in {totals.seconds:.0f} s (seed {args.seed}, "
        f"slowest {totals.slowest:.2f} s): "
        + ", ".join(f"{k} {v}" for k, v in sorted(totals.labels.items()))
    )
    print(f"  {len(totals.rules)} distinct rules reported: " + ", ".join(sorted(totals.rules)))
    for f in totals.findings:
        print(f"  FINDING {f['finding']}: {f['detail']} ({f['base']} {f['edits']}) -> {f['saved']}")
    print(f"  findings: {len(totals.findings)}")
    return 1 if totals.findings else 0


if __name__ == "__main__":
    sys.exit(main())
