"""A ``make bench`` run against the run before it: tpwire's own figures, old and new, and
which of them moved beyond run-to-run noise.

The figures are the ones a change to tpwire moves: the codec's medians in one process, and
each channel's median over the floor's median of the same run (the floor itself moves by a
quarter from run to run, and a ratio to it cancels what moves both). Baselines (pickle,
jsonschema, the hand-written path, compat, vllm) are not tpwire's figures and are left out,
and so is the CPU path per envelope: its tight loop moved by up to 2.1x between runs of one
commit, so one run cannot tell a change of it from the machine.

Each family of figures has its noise (``NOISE``): the largest relative change between three
full runs of one commit on the project's two-core machine, rounded up. A figure is slower or
faster when it moved by more than that, and within noise otherwise; a figure slower in one
run is a reason to run again, slower in two a regression. A ``--quick`` run takes fewer
samples than the runs the noise was measured on, so its verdicts are rougher.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any, Literal, NamedTuple

from bench import envelopes as E

Family = Literal["codec", "codec, MiB of tensors", "channel"]

#: Three runs of one commit moved the codec medians of small envelopes (and every envelope's
#: ``validate``, which reads no tensor bytes) by up to 6%; the steps that move MiB of tensor
#: bytes by up to 39% (their decode and frame 1 check land in one of two modes for a whole
#: run: where the buffers fall in the caches); channel ratios to the floor by up to 38%
#: (small, world 2).
NOISE: dict[Family, float] = {"codec": 0.10, "codec, MiB of tensors": 0.45, "channel": 0.45}
#: Envelopes from this many tensor bytes on are timed as the memory moves, not as the code runs
LARGE_BYTES = 1 << 20

#: The codec steps compared (``bench.codec.measure``'s columns that time tpwire itself).
CODEC_STEPS = ("validate", "prepare", "encode", "decode", "digest", "check")
#: The channels compared against the floor of the same run.
CHANNELS = ("tpwire", "tpwire-arena")
TITLES = {**{k: v.title for k, v in E.KINDS.items()}, "pp": "PP envelope + result over p2p"}


class Figure(NamedTuple):
    family: Family
    name: str
    value: float
    unit: str  # "us" or "x" (a ratio to the floor)


class Change(NamedTuple):
    figure: Figure
    before: float
    verdict: Literal["slower", "faster", "within noise"]

    @property
    def relative(self) -> float:
        return self.figure.value / self.before - 1.0


def figures(result: dict[str, Any]) -> dict[str, Figure]:
    """tpwire's figures of one run (``benchmarks.json``), by name."""
    out: list[Figure] = []
    for row in result.get("codec") or ():
        title = TITLES.get(row["kind"], row["kind"])
        large = _number(row.get("tensor_bytes", 0)) >= LARGE_BYTES
        for step in CODEC_STEPS:
            if step in row:
                family: Family = (
                    "codec, MiB of tensors" if large and step != "validate" else "codec"
                )
                out.append(Figure(family, f"{step}, {title}", _number(row[step][0]), "us"))
    for world, stats in (result.get("transports") or {}).items():
        for key, floor in stats.items():
            kind, _, transport = key.partition("/")
            if transport != "floor":
                continue
            for channel in CHANNELS:
                s = stats.get(f"{kind}/{channel}")
                if s is not None and _number(floor["median_us"]) > 0:
                    ratio = _number(s["median_us"]) / floor["median_us"]
                    name = f"world {world}: {channel} / floor, {TITLES.get(kind, kind)}"
                    out.append(Figure("channel", name, ratio, "x"))
    return {f.name: f for f in out}


def _number(x: object) -> float:
    """A figure as the json holds it: a finite number (not a string, not a bool)."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise TypeError(f"{x!r} is not a finite number")
    return float(x)


def compare(before: dict[str, Figure], after: dict[str, Figure]) -> list[Change]:
    """Every figure both runs have, in the order of ``after``, with its verdict."""
    changes = []
    for name, fig in after.items():
        old = before.get(name)
        if old is None or old.value <= 0:
            continue
        rel = fig.value / old.value - 1.0
        # a figure either run counts among the noisier ones is held to that noise (an older
        # run without tensor sizes counts every envelope as small)
        noise = max(NOISE[fig.family], NOISE[old.family])
        verdict: Literal["slower", "faster", "within noise"] = (
            "slower" if rel > noise else "faster" if rel < -noise else "within noise"
        )
        changes.append(Change(fig, old.value, verdict))
    return changes


class Unreadable(Exception):
    """A ``--against`` file that is not a ``make bench`` result."""


def load(path: Path) -> dict[str, Any]:
    """A run's ``benchmarks.json``; ``Unreadable`` says why it cannot be compared with."""
    try:
        result = json.loads(path.read_text())
        if not isinstance(result, dict):
            raise TypeError("not a JSON object")
        if not figures(result):
            raise ValueError("no codec or channel figure in it")
    except (
        OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError
    ) as exc:  # fmt: skip
        raise Unreadable(f"{path}: not a make bench result ({type(exc).__name__}: {exc})") from None
    return result


def against(previous: dict[str, Any], source: str) -> dict[str, Any]:
    """What a run keeps of the run before it (``result["against"]``): where it came from and
    its figures, so the comparison renders again from the new run's json alone."""
    return {
        "source": source,
        "revision": previous.get("revision"),
        "command": previous.get("command"),
        "plan": previous.get("plan"),
        "figures": {name: [f.family, f.value, f.unit] for name, f in figures(previous).items()},
    }


def changes_of(result: dict[str, Any]) -> list[Change] | None:
    """The comparison a run recorded (None when it had no run before it)."""
    prev = result.get("against")
    if not prev:
        return None
    before = {n: Figure(fam, n, v, unit) for n, (fam, v, unit) in prev["figures"].items()}
    return compare(before, figures(result))


def revision(root: Path) -> str | None:
    """The checkout's commit (``git describe --always --dirty``), when it is a git one."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=root, capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return text if done.returncode == 0 and text else None


def _value(value: float, unit: str) -> str:
    return f"{value:.2f}x" if unit == "x" else f"{value:.1f}"


def _what(prev: dict[str, Any]) -> str:
    rev = prev.get("revision")
    return f"`{prev.get('command') or 'make bench'}` at {rev}" if rev else prev["source"]


def markdown(result: dict[str, Any]) -> list[str]:
    """The report's section: the counts, the figures that moved beyond noise, then every
    figure compared."""
    changes = changes_of(result)
    prev = result.get("against")
    if changes is None or prev is None:
        return []
    moved = [c for c in changes if c.verdict != "within noise"]
    noise = "; ".join(f"{fam} {tol:.0%}" for fam, tol in NOISE.items())
    out = [
        "## Against the previous run",
        "",
        f"This run (`{result.get('command', 'make bench')}`) against {_what(prev)}, figure by "
        "figure: the codec's medians in microseconds, each channel as its median over the "
        "same run's floor. A figure moved when it changed by more than runs of the same code "
        f"do on the project's two-core machine ({noise}); one that moved in one run is a "
        "reason to run again. Baselines are not compared, nor is the CPU path per envelope, "
        "which moves by up to 2.1x between runs of one commit.",
        "",
        " ".join([f"{_counts(changes)}.", *_caveats(result, changes)]),
        "",
    ]
    head = ["| figure | before | this run | change | verdict |", "|---|---:|---:|---:|---|"]
    if moved:
        out += [*head, *(_row(c) for c in moved), ""]
    out += [
        "<details><summary>Every figure compared</summary>",
        "",
        *head,
        *(_row(c) for c in changes),
        "",
        "</details>",
        "",
    ]
    return out


def _row(c: Change) -> str:
    f = c.figure
    return (
        f"| {f.family}: {f.name} | {_value(c.before, f.unit)} | {_value(f.value, f.unit)} "
        f"| {c.relative:+.0%} | {c.verdict} |"
    )


def _caveats(result: dict[str, Any], changes: list[Change]) -> list[str]:
    """What makes the two runs less comparable: another command or plan, figures only one
    of them has."""
    prev = result["against"]
    out = []
    if prev.get("command") and prev.get("command") != result.get("command"):
        out.append(
            f"The runs were made by different commands (`{prev['command']}` before, "
            f"`{result.get('command')}` now): fewer samples make the verdicts rougher."
        )
    elif prev.get("plan") and result.get("plan") and prev["plan"] != result["plan"]:
        out.append("The runs had different plans: fewer samples make the verdicts rougher.")
    only_now = len(figures(result)) - len(changes)
    only_before = len(prev["figures"]) - len(changes)
    if only_now or only_before:
        out.append(
            f"{only_now} figures of this run and {only_before} of the previous one have no "
            "counterpart in the other (other world sizes or envelopes)."
        )
    return out


def _counts(changes: list[Change]) -> str:
    n = {v: sum(c.verdict == v for c in changes) for v in ("slower", "faster", "within noise")}
    return (
        f"{len(changes)} figures compared: {n['slower']} slower beyond noise, "
        f"{n['faster']} faster beyond noise, {n['within noise']} within noise"
    )


def summary(result: dict[str, Any]) -> str:
    """Lines for the terminal: the counts, then every figure that got slower."""
    changes = changes_of(result)
    prev = result.get("against")
    if changes is None or prev is None:
        return "bench: no previous run to compare with"
    lines = [f"bench: against {_what(prev)}: {_counts(changes)}"]
    lines += [f"  {line}" for line in _caveats(result, changes)]
    for c in changes:
        if c.verdict == "slower":
            f = c.figure
            lines.append(
                f"  SLOWER {f.family}: {f.name}: {_value(c.before, f.unit)} -> "
                f"{_value(f.value, f.unit)} ({c.relative:+.0%})"
            )
    return "\n".join(lines)


def regressed(result: dict[str, Any]) -> bool:
    return any(c.verdict == "slower" for c in changes_of(result) or ())
