"""Spec-loader hardening, bounded profile: hostile YAML only ever yields located SpecErrors.

Mutated seeds (shipped, golden and bad specs) go through the compiler front end under the
active hypothesis profile; a few hand-built attacks (alias bombs, deep nesting, size
limits, non-UTF-8) are checked for their exact error, time and memory; ``tpwire check``
itself is run on some of them. The long campaign is ``make fuzz`` (``fuzz.specs``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fuzz package lives at the repository root
    sys.path.insert(0, str(ROOT))

from fuzz import specs  # noqa: E402
from tpwire.codegen import load  # noqa: E402

SEEDS = specs.seed_specs()
#: t_big builds specs at the size limits (seconds each): left to the targeted tests below.
PROPERTY_OPS = sorted(set(specs.TEXT_OPS) - {"t_big"})
#: Generous: an attack takes well under a second on an idle machine; CI machines are not idle.
TIME_LIMIT_S = 5.0
MEMORY_LIMIT_MB = 64


@settings(max_examples=max(10, settings().max_examples // 3))
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    tree=st.booleans(),
    plan=st.lists(st.sampled_from(PROPERTY_OPS), min_size=1, max_size=3),
    r=st.randoms(use_true_random=False),
)
def test_mutated_specs_yield_located_errors(
    seed: int, tree: bool, plan: list[str], r: specs.Rand
) -> None:
    name, data = SEEDS[seed]
    pool = [b for _, b in SEEDS]
    if tree:
        data = specs.tree_mutation(data, r) or data
    for op in plan:
        data = specs.TEXT_OPS[op](data, r, pool)
    out = specs.run_spec(data, memory="none")
    assert out.finding is None, f"{name} {plan}: {out.finding}: {out.detail}\n{out.tb}"


def billion_laughs(levels: int = 9, width: int = 9) -> bytes:
    lines = [b"tpwire: 1", b"protocol: bomb", b"l0: &l0 [" + b",".join([b"lol"] * width) + b"]"]
    for k in range(1, levels):
        lines.append(b"l%d: &l%d [%s]" % (k, k, b",".join([b"*l%d" % (k - 1)] * width)))
    return b"\n".join(lines) + b"\n"


SHIPPED = (ROOT / "spec" / "tp_control.yaml").read_bytes()

ATTACKS = {
    # 9**9 (387 million) strings if aliases were expanded; the loader never expands one
    "billion-laughs": (billion_laughs(), "yaml-alias", (4, 10)),
    # (tracemalloc makes the deep recursion of the YAML composer ~20x slower: see DEEP)
    "deep-flow-100k": (b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "too-deep", None),
    "deep-map-20k": (b"a: " + b"{a: " * 20_000 + b"1" + b"}" * 20_000 + b"\n", "too-deep", None),
    "deep-block-200": (
        b"a:\n" + b"".join(b" " * (i + 1) + b"k:\n" for i in range(200)) + b" " * 201 + b"v\n",
        "too-deep",
        None,
    ),
    "over-1MiB": (SHIPPED + b"#" * (1 << 20), "too-large", (1, 1)),
    "huge-int": (
        SHIPPED.replace(b"{min: 1, max: 64}", b"{min: 1, max: 1" + b"0" * 5000 + b"}", 1),
        None,
        None,
    ),
    "huge-float": (
        SHIPPED.replace(b"{min: 0.0, max: 1.0}", b"{min: 0.0, max: 1e999}", 1),
        None,
        None,
    ),
    "non-utf8-line-5": (
        b"\n".join([*SHIPPED.split(b"\n")[:4], b"doc: caf\xe9", *SHIPPED.split(b"\n")[5:]]),
        "encoding",
        (5, 9),
    ),
    "duplicate-keys": (SHIPPED + b"tpwire: 1\ntpwire: 2\n", "duplicate-key", None),
    "python-tag": (b"tpwire: !!python/object/apply:os.system ['true']\n", "yaml-tag", (1, 9)),
    "nul-byte": (b"tpwire: 1\nprotocol: a\x00b\n", "yaml-syntax", (2, 12)),
    "utf16-bom": (b"\xff\xfe" + SHIPPED, "encoding", (1, 1)),
}


#: Measured by the growth of peak RSS instead of tracemalloc.
DEEP = {"deep-flow-100k", "deep-map-20k", "deep-block-200"}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_are_located_errors_in_bounded_time_and_memory(name: str) -> None:
    data, code, where = ATTACKS[name]
    out = specs.run_spec(
        data,
        "attack.yaml",
        slow_s=TIME_LIMIT_S,
        memory="rss" if name in DEEP else "tracemalloc",
        memory_mb=MEMORY_LIMIT_MB,
    )
    assert out.finding is None, f"{out.finding}: {out.detail}\n{out.tb}"
    assert out.label != "ok", "the attack was accepted"
    if code is not None:
        assert code in out.codes, out
    if where is not None:
        try:
            from tpwire.codegen.compiler import protocol_ir_from_text

            protocol_ir_from_text(data, "attack.yaml")
        except load.SpecErrors as exc:
            first = next(e for e in exc.errors if e.code == code)
            assert (first.line, first.col) == where, str(first)


def test_a_utf8_bom_is_harmless() -> None:
    out = specs.run_spec(b"\xef\xbb\xbf" + SHIPPED, memory="none")
    assert (out.finding, out.label) == (None, "ok"), out


def test_tpwire_check_prints_located_errors_not_tracebacks(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_bytes(billion_laughs())
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(ATTACKS["non-utf8-line-5"][0])
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tpwire", "check", str(bomb), str(garbage)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.perf_counter() - start < 30
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    lines = done.stderr.splitlines()
    assert re.fullmatch(r"tpwire: \d+ errors?", lines[-1])
    for line in lines[:-1]:
        assert re.fullmatch(r".+\.yaml:\d+:\d+: error\[[a-z0-9-]+\]: \S.*", line), line
    assert any("garbage.yaml:5:9: error[encoding]" in ln for ln in lines)


def test_short_spec_campaign(tmp_path: Path) -> None:
    totals = specs.run_spec_campaign(
        seconds=0,
        min_inputs=40,
        max_inputs=40,
        seed=3,
        crash_dir=tmp_path,
        cli_every=5,
        ops=PROPERTY_OPS,
    )
    assert totals.inputs == 40
    assert not totals.findings, totals.signatures
    assert len(totals.labels) >= 4  # several distinct first errors, not one early exit
    assert not list(tmp_path.iterdir())


def test_tree_mutation_stays_yaml() -> None:
    import random

    r = random.Random(5)
    for _, data in SEEDS[:4]:
        out = specs.tree_mutation(data, r)
        assert out is not None
        try:
            yaml.safe_load(out.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError):
            pass  # a lone surrogate, dumped raw, makes it non-UTF-8: that is the point


# Found by the campaign (fixed in codegen/load.py): MAX_NODES was enforced by the walker
# *after* PyYAML had composed the whole document, so a spec under the 1 MiB size limit made
# of ~500,000 flow items took ~20 s and ~330 MiB before it was refused as too-large. The
# reproducer lowers MAX_NODES so it stays cheap: it counts the nodes composed before the
# refusal.
def test_node_budget_stops_composing_early(monkeypatch: pytest.MonkeyPatch) -> None:
    composed = 0
    real = yaml.composer.Composer.compose_node

    def counting(self: yaml.composer.Composer, parent: object, index: object) -> object:
        nonlocal composed
        composed += 1
        return real(self, parent, index)  # type: ignore[arg-type]

    monkeypatch.setattr(load, "MAX_NODES", 100)
    monkeypatch.setattr(yaml.composer.Composer, "compose_node", counting)
    out = specs.run_spec(b"tpwire: 1\nmany: [" + b"1," * 5000 + b"1]\n", memory="none")
    assert out.label == "too-large", out
    assert composed <= 2 * 100, f"{composed} nodes composed before refusing a 100-node budget"
