"""`make demo`'s stream, shortened: torchrun, two ranks on CPU/gloo, Scope-sized chunks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
def test_demo_streams_scope_sized_chunks_under_torchrun() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "examples/scope_stream.py", "--chunks", "12"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert out.count("[rank0] chunk") == 12 and out.count("[rank1] chunk") == 12
    assert "[rank0] chunk 10 call_id=11 cache_epoch=1" in out  # the hard cut
    assert "[rank1] chunk  2 call_id= 3 cache_epoch=0 calls=5" in out  # a recompute chunk
    assert "[rank1] SHUTDOWN call_id=13: leaving" in out


@pytest.mark.timeout(180)
def test_the_out_of_tree_example_streams_its_own_protocol(tmp_path: Path) -> None:
    """examples/preview_protocol: a protocol of its own, its own package, run from elsewhere."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(ROOT / "examples" / "preview_protocol" / "stream.py"), "--chunks", "6"],
        cwd=tmp_path, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "[rank1] seq=4 epoch=1 prompt-1 frames=(2, 48, 64, 3) first byte=4" in out
    assert "[rank0] sent 6 previews" in out and "[rank1] STOP seq=6: leaving" in out


def _break_it(fault: str) -> tuple[int, str]:
    done = subprocess.run(
        # torchrun stops every rank once one has died: let the survivors print their lines
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
         "--monitor-interval", "5", "examples/break_it.py", "--fault", fault],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


@pytest.mark.timeout(180)
def test_break_it_without_a_fault_runs_three_chunks() -> None:
    code, out = _break_it("none")
    assert code == 0, out
    assert all(f"[rank{r}] chunk 2 done" in out for r in range(3)), out


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("fault", "lines"),
    [
        (
            "plan",
            [
                "tpwire[rank 0]: FAILED while sending call_id=2 chunk_index=1 cache_epoch=0: "
                "EnvelopeInvalid: 1 violation(s), first: invariant",
                "tpwire[rank 0]: ERROR sent call_id=2",
                "tpwire[rank 1]: ERROR from the source call_id=2",
                "tpwire[rank 2]: ERROR from the source call_id=2",
            ],
        ),
        (
            "extra-call",
            [
                "tpwire[rank 2]: POISONED call_id=2 chunk_index=1 cache_epoch=0: generator call 5 "
                "of 4 failed: LockstepError: call_id=2 chunk_index=1 cache_epoch=0: generator call "
                "5 exceeds the plan's expected 4 calls; exiting 86",
            ],
        ),
        (
            "dead-worker",
            ["tpwire[rank 0]: POISONED call_id=2 chunk_index=1 cache_epoch=0: "],
        ),
    ],
)
def test_break_it_ends_every_rank_with_a_line(fault: str, lines: list[str]) -> None:
    """The README's "Break it" runs: each fault ends the job with the lines shown there, no
    rank waits until gloo's timeout, and no gloo source path or advice reaches a line."""
    code, out = _break_it(fault)
    assert code != 0, out
    for line in lines:
        assert line in out, out
    assert "pair.cc" not in out and "GLHF" not in out, out
