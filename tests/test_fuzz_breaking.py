"""``tpwire breaking`` on mutated spec pairs, bounded: no traceback, sorted, deterministic.

A short, seeded run of the ``fuzz.breaking`` campaign (``make fuzz`` runs the long one):
evolution edits of the shipped, golden, extra and evolution-corpus specs, each pair compared
both ways; every outcome is a report or located ``SpecErrors``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fuzz package lives at the repository root
    sys.path.insert(0, str(ROOT))

from fuzz import breaking as fb  # noqa: E402


def test_mutated_pairs_never_crash() -> None:
    totals = fb.run_breaking_campaign(seconds=0, min_pairs=40, max_pairs=40, seed=20240611)
    assert totals.pairs == 40
    assert not totals.findings, totals.findings
    # the edits reach the comparison, not only the compiler's errors
    assert totals.labels["findings"] >= 10 and len(totals.rules) >= 10, totals.labels


def test_every_seed_against_itself() -> None:
    for name, text in fb.seed_specs():
        out = fb.check_pair(text, text)
        assert out.finding is None and out.label == "clean", (name, out)
