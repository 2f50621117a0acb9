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
