"""The random mutational decoder campaign, its seeds, tallies and saved examples.

Seeds are real frames: ``encode`` of envelopes drawn from each target's generated
``valid_envelopes()`` (a few with large dimensions, so frame 1 has several segments), plus
the labelled mutants of ``invalid_envelopes()`` encoded *without* validation (a peer that
skipped it), which the receiver must refuse. Each input is one seed copied, mutated by
1-4 operators of ``fuzz.mutators`` and re-sealed, then judged by ``fuzz.oracle``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from tpwire.runtime import wire
from tpwire.runtime.errors import WireError

from . import mutators
from .cases import Case, build, from_frames
from .oracle import Outcome, run_decoder
from .targets import ROOT, Target

T = TypeVar("T")
CRASH_DIR = ROOT / "fuzz" / "crashes"
#: Examples kept per distinct finding signature.
KEEP_PER_SIGNATURE = 3


def draw(strategy: st.SearchStrategy[T], n: int, seed: int) -> list[T]:
    """``n`` examples of ``strategy``, reproducibly (hypothesis generation only, no database)."""
    out: list[T] = []

    @hseed(seed)
    @settings(
        max_examples=n,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(x: T) -> None:
        out.append(x)

    collect()
    return out


def raw_encode(t: Target, msg: Any, header: Any) -> wire.Frames | None:
    """Frames for an envelope encoded without validation, as a careless peer would.

    Uses the generated module's private encoder table; returns ``None`` when it is gone
    or when the values cannot be encoded at all (wrong Python types, out of int64).
    """
    mod = t.module
    encoders = getattr(mod, "_ENCODERS", None)
    write_header = getattr(mod, "_write_header", None)
    if encoders is None or write_header is None:
        return None
    try:
        words = [0] * mod.FRAME0_LEN
        words[0], words[1] = wire.MAGIC_WORD, mod.FINGERPRINT
        write_header(header, words)
        if msg is None:
            return wire.Frames(wire.seal(words), ())
        tensors, slots, sizes = encoders[type(msg)](msg, words, None, None)
        words[mod.W_FRAME1] = sum(sizes)
        words[mod.W_FRAME1_DIGEST] = wire.frame1_digest(tensors, slots, sizes)
        return wire.Frames(wire.seal(words), wire.pack_segments(tensors, slots, sizes))
    except Exception:
        return None


def seed_cases(t: Target, n: int = 48, seed: int = 0) -> list[Case]:
    """Valid frames (some large) and unvalidated mutants of ``t``, as cases."""
    s = t.strategies
    valid = draw(s.valid_envelopes(), n, seed) + draw(s.valid_envelopes(40), max(1, n // 12), seed)
    cases = []
    for header, msg in valid:
        frames = t.module.encode(msg, header)
        cases.append(from_frames(t.name, frames, t.module.read_frame0(frames.frame0)))
    for header, msg, _ in draw(s.invalid_envelopes(), n // 2, seed):
        frames = raw_encode(t, msg, header)
        if frames is None:
            continue
        try:
            manifest = t.module.read_frame0(frames.frame0)
        except WireError:
            manifest = None
        cases.append(from_frames(t.name, frames, manifest))
    return cases


# --- tallies -----------------------------------------------------------------------------------


@dataclass
class Totals:
    """What one campaign did: inputs, outcome labels, findings."""

    name: str
    inputs: int = 0
    seconds: float = 0.0
    labels: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    per_target: dict[str, Counter[str]] = field(default_factory=dict)
    signatures: dict[str, dict[str, Any]] = field(default_factory=dict)
    slowest: float = 0.0

    def record(self, target: str, out: Outcome) -> None:
        self.inputs += 1
        self.labels[out.label] += 1
        self.per_target.setdefault(target, Counter())[out.label] += 1
        self.violations.update(out.violations)
        self.slowest = max(self.slowest, out.seconds)
        if out.finding:
            self.findings[out.finding] += 1
            sig = self.signatures.setdefault(
                out.signature,
                {"finding": out.finding, "detail": out.detail, "where": out.where, "count": 0},
            )
            sig["count"] += 1

    @property
    def exceptions(self) -> int:
        return self.findings["exception"]

    @property
    def hangs(self) -> int:
        return self.findings["hang"] + self.findings["slow"]

    def merge(self, other: Totals) -> None:
        self.inputs += other.inputs
        self.labels.update(other.labels)
        self.findings.update(other.findings)
        self.violations.update(other.violations)
        for k, v in other.per_target.items():
            self.per_target.setdefault(k, Counter()).update(v)
        for k, v in other.signatures.items():
            if k in self.signatures:
                self.signatures[k]["count"] += v["count"]
            else:
                self.signatures[k] = dict(v)
        self.slowest = max(self.slowest, other.slowest)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": self.inputs,
            "seconds": round(self.seconds, 2),
            "labels": dict(self.labels.most_common()),
            "findings": dict(self.findings),
            "violations": dict(self.violations.most_common()),
            "per_target": {k: dict(v.most_common()) for k, v in self.per_target.items()},
            "signatures": self.signatures,
            "slowest": self.slowest,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Totals:
        return cls(
            d["name"],
            d["inputs"],
            d["seconds"],
            Counter(d["labels"]),
            Counter(d["findings"]),
            Counter(d["violations"]),
            {k: Counter(v) for k, v in d["per_target"].items()},
            d["signatures"],
            d["slowest"],
        )


def save_example(
    crash_dir: Path, engine: str, target: str, case: Case, out: Outcome, extra: dict[str, Any]
) -> Path | None:
    """Write a reproducible example (JSON, no pickle); at most a few per signature."""
    crash_dir.mkdir(parents=True, exist_ok=True)
    same = list(crash_dir.glob(f"*-{out.signature}-*.json"))  # any engine, any target
    if len(same) >= KEEP_PER_SIGNATURE:
        return None
    stem = f"{engine}-{target.replace('/', '-')}-{out.finding}-{out.signature}"
    n = next(i for i in range(len(same) + 1) if not (crash_dir / f"{stem}-{i}.json").exists())
    path = crash_dir / f"{stem}-{n}.json"
    record = {
        "kind": "decoder",
        "engine": engine,
        "target": target,
        "finding": out.finding,
        "label": out.label,
        "detail": out.detail,
        "where": out.where,
        "seconds": out.seconds,
        "traceback": out.tb,
        "replay": f"python -m fuzz replay {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}",
        **extra,
        "case": case.to_json(),
    }
    path.write_text(json.dumps(record, indent=1) + "\n", "utf-8")
    return path


class Progress:
    """One status line every ``every`` seconds (stderr)."""

    def __init__(self, name: str, every: float = 5.0) -> None:
        self.name = name
        self.every = every
        self.start = time.monotonic()
        self.next = self.start + every

    def __call__(self, totals: Totals, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next:
            return
        self.next = now + self.every
        dt = now - self.start
        top = ", ".join(f"{k} {v}" for k, v in totals.labels.most_common(5))
        print(
            f"[{self.name} {dt:6.1f}s] {totals.inputs:>9,} inputs ({totals.inputs / max(dt, 1e-9):,.0f}/s)"
            f" | exceptions {totals.exceptions} hangs {totals.hangs}"
            f" over-bound {totals.findings['over-bound']} | {top}",
            file=sys.stderr,
            flush=True,
        )


def run_decoder_campaign(
    targets: Sequence[Target],
    *,
    seconds: float,
    min_inputs: int = 0,
    max_inputs: int | None = None,
    seed: int = 0,
    families: Sequence[str] = mutators.FAMILIES,
    crash_dir: Path | None = CRASH_DIR,
    progress: Callable[[Totals, bool], None] | None = None,
    seeds_per_target: int = 48,
) -> Totals:
    """Mutate seeds of every target until ``seconds`` have passed and ``min_inputs`` ran."""
    totals = Totals("decoder")
    pools = {t.name: seed_cases(t, seeds_per_target, seed) for t in targets}
    by_name = {t.name: t for t in targets}
    rng = random.Random(seed)
    start = time.monotonic()
    i = 0
    while True:
        elapsed = time.monotonic() - start
        if max_inputs is not None and totals.inputs >= max_inputs:
            break
        if elapsed >= seconds and totals.inputs >= min_inputs:
            break
        t = targets[i % len(targets)]
        i += 1
        input_seed = rng.getrandbits(64)
        r = random.Random(input_seed)
        source = t.name if r.random() < 0.98 else mutators.pick(r, list(pools))  # cross-protocol
        case = mutators.mutate(mutators.pick(r, pools[source]).copy(), by_name[source], r, families)
        out = run_decoder(t, build(case))
        totals.record(t.name, out)
        if out.finding and crash_dir is not None:
            save_example(
                crash_dir,
                "random",
                t.name,
                case,
                out,
                {"seed": seed, "input_seed": input_seed, "source": source},
            )
        if progress is not None:
            progress(totals, False)
    totals.seconds = time.monotonic() - start
    if progress is not None:
        progress(totals, True)
    return totals
