"""SIGTERM while a channel is open: one TERMINATED line, then SIGTERM's own outcome
(docs/runtime.md, "SIGTERM"; runtime/terminate.py).

A launcher (torchrun's agent) SIGTERMs the surviving ranks when one dies, often before they
notice the dead peer: each survivor still says what it was doing. The hook chains to a
Python handler the user installed before the channel opened, leaves alone one installed
after it (and does not undo it at close), and is not installed from another thread. Each
case runs in its own interpreter (signal state is process-wide)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]

#: a channel of one rank (a gloo group of world 1), opened; the script goes on from there
_ONE_RANK = """
import os, signal, sys, tempfile, threading, time
import torch.distributed as dist
from tpwire.generated import tp_control as tc
from tpwire.runtime import terminate
from tpwire.runtime.channel import BroadcastChannel
store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
dist.init_process_group("gloo", store=store, rank=0, world_size=1)
def user(signum, frame):
    sys.stderr.write("user handler ran\\n"); sys.stderr.flush(); os._exit(7)
"""


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = _ONE_RANK + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_sigterm_over_the_default_prints_the_line_and_dies_of_sigterm() -> None:
    run = _run(
        """
        ch = BroadcastChannel(tc.BINDINGS).open()
        assert terminate.installed()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("not reached")
        """
    )
    assert run.returncode == -signal.SIGTERM, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("tpwire[")]
    assert lines == [
        "tpwire[rank 0]: TERMINATED by SIGTERM while between envelopes, before the first one"
    ], run.stderr
    assert "not reached" not in run.stdout


def test_the_line_names_the_step_in_flight_and_a_dropped_channel_is_not_kept() -> None:
    run = _run(
        """
        import gc, weakref
        dropped = weakref.ref(BroadcastChannel(tc.BINDINGS).open())
        gc.collect()
        assert dropped() is None  # the hook holds no channel alive
        ch = BroadcastChannel(tc.BINDINGS).open()
        with ch.guard("the model's all_reduce\\n"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        """
    )
    assert run.returncode == -signal.SIGTERM, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("tpwire[")]
    assert lines == ["tpwire[rank 0]: TERMINATED by SIGTERM while in the model's all_reduce\\n"], (
        run.stderr
    )


def test_a_handler_installed_before_the_channel_is_chained_after_the_line() -> None:
    run = _run(
        """
        signal.signal(signal.SIGTERM, user)
        ch = BroadcastChannel(tc.BINDINGS).open()
        assert terminate.installed()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        """
    )
    assert run.returncode == 7, run.stderr
    tail = run.stderr.splitlines()[-2:]
    assert tail == [
        "tpwire[rank 0]: TERMINATED by SIGTERM while between envelopes, before the first one",
        "user handler ran",
    ], run.stderr


def test_closing_puts_back_the_handler_it_replaced() -> None:
    run = _run(
        """
        signal.signal(signal.SIGTERM, user)
        with BroadcastChannel(tc.BINDINGS) as a, BroadcastChannel(tc.BINDINGS) as b:
            assert signal.getsignal(signal.SIGTERM) is terminate._on_sigterm
            a.close()
            assert terminate.installed()  # b is still open
        assert signal.getsignal(signal.SIGTERM) is user
        assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd is gone too
        ch = BroadcastChannel(tc.BINDINGS).open()
        ch.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ch = BroadcastChannel(tc.BINDINGS).open()
        ch.close()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        print("ok", flush=True)
        os._exit(0)  # no teardown: a gloo group left at exit may abort (not this test's)
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
    assert "TERMINATED" not in run.stderr


def test_a_handler_installed_after_the_channel_wins_and_stays() -> None:
    run = _run(
        """
        ch = BroadcastChannel(tc.BINDINGS).open()
        assert terminate.installed()
        signal.signal(signal.SIGTERM, user)
        ch.close()
        assert signal.getsignal(signal.SIGTERM) is user  # not undone at close
        ch = BroadcastChannel(tc.BINDINGS).open()  # over the user's: chained again
        signal.signal(signal.SIGTERM, user)  # and replaced again: the user's alone now
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        """
    )
    assert run.returncode == 7, run.stderr
    assert "TERMINATED" not in run.stderr
    assert run.stderr.splitlines()[-1] == "user handler ran"


def test_ignored_sigterm_and_other_threads_are_left_alone() -> None:
    run = _run(
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ch = BroadcastChannel(tc.BINDINGS).open()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        ch.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        opened = []
        t = threading.Thread(target=lambda: opened.append(BroadcastChannel(tc.BINDINGS).open()))
        t.start(); t.join()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # not from another thread
        opened[0].close()
        print("ok", flush=True)
        os._exit(0)  # no teardown: a gloo group left at exit may abort (not this test's)
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


# -- torchrun: a worker SIGKILLed, every survivor's line ---------------------------------

_STREAM = """
import os, signal, sys, time
from datetime import timedelta
import torch, torch.distributed as dist
from tpwire.generated import tp_control as tc
from tpwire.runtime.channel import BroadcastChannel

def envelope(i):
    header = tc.Header(call_id=i + 1, chunk_index=i, control_epoch=0, cache_epoch=0,
                       action=tc.TPAction.INFER)
    msg = tc.InferV1GeneratorOnly(
        tp_envelope_version=1, height=16, width=24, current_start_frame=3 * i,
        init_cache=i == 0, manage_cache=True, tp_reset_kv_cache=i == 0,
        tp_reset_crossattn_cache=False, conditioning_embeds_updated=False,
        kv_cache_attention_bias=0.25, tp_do_kv_recompute=False, tp_num_denoise_steps=4,
        tp_expected_generator_calls=4, denoising_step_list=torch.tensor([1000, 750, 500, 250]),
        latents=torch.zeros(1, 1, 4, 2, 3, dtype=torch.bfloat16),
        conditioning_embeds=torch.zeros(1, 2, 8, dtype=torch.float16),
        context_frames_override=None, base_seed=1234)
    return header, msg

dist.init_process_group("gloo", timeout=timedelta(seconds=60))
rank = dist.get_rank()
with BroadcastChannel(tc.BINDINGS) as ch:
    if rank == 0:
        for i in range(4):
            ch.send(*reversed(envelope(i)))
        time.sleep(60)  # the model would run here: the launcher stops this rank meanwhile
    else:
        while True:
            got = ch.recv()
            if rank == 2 and got.header.call_id == 4:
                os.kill(os.getpid(), signal.SIGKILL)  # the worker dies
"""


@pytest.mark.timeout(200)
def test_torchrun_shows_every_survivors_line_after_a_worker_is_sigkilled(
    tmp_path: Path,
) -> None:
    """The issue's acceptance: rank 2 is SIGKILLed after receiving call 4; torchrun's agent
    SIGTERMs ranks 0 and 1 at its next monitor interval, while rank 0 is in its own code
    and rank 1 waits for frame 0 inside a gloo collective: each prints its line."""
    script = tmp_path / "stream.py"
    script.write_text(_STREAM)
    journal = tmp_path / "journal"
    env = {
        **os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
        "TPWIRE_JOURNAL": str(journal),
    }  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
         "--monitor-interval", "0.1", str(script)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    lines = re.findall(r"tpwire\[rank \d\]: [A-Z]+ .*", out)
    by_rank = {int(ln[len("tpwire[rank ")]): ln for ln in lines}
    assert sorted(by_rank) == [0, 1], out
    ids = "call_id=4 chunk_index=3 cache_epoch=0"
    assert by_rank[0] in (
        f"tpwire[rank 0]: TERMINATED by SIGTERM while between envelopes, after sending {ids}",
    ) or by_rank[0].startswith(f"tpwire[rank 0]: POISONED {ids}: "), out
    assert by_rank[1] in (
        f"tpwire[rank 1]: TERMINATED by SIGTERM while waiting for frame 0 after {ids}",
    ) or by_rank[1].startswith(f"tpwire[rank 1]: POISONED {ids}: "), out
    assert "TERMINATED" in by_rank[1], out  # rank 1 waits on rank 0, alive: only SIGTERM ends it
    # and the survivors died of SIGTERM, as they would have without the line
    assert len(re.findall(r"exitcode\s*: -15 \(pid: \d+\)", out)) == 2, out
    # the journals say so too: the survivors' END records (SIGTERM), none on rank 2, which
    # journal diff names as the rank that stopped first
    diff = subprocess.run(
        [sys.executable, "-m", "tpwire", "journal", "diff", str(journal)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert diff.returncode == 1, diff.stdout + diff.stderr
    assert "differs: tp_control.rank2" in diff.stdout, diff.stdout
    from tpwire.runtime import journal_format as jf

    for rank, what in ((0, "between envelopes, after sending"), (1, "waiting for frame 0")):
        ends = [
            r.meta
            for path in sorted(journal.glob(f"tp_control.rank{rank}.*.tpj"))
            for r in jf.scan(path).records
            if r.kind == jf.END
        ]
        assert [(e["how"], e["reason"].startswith(f"SIGTERM: while {what}")) for e in ends] == [
            ("terminated", True)
        ], ends
    assert not [
        r
        for p in journal.glob("tp_control.rank2.*.tpj")
        for r in jf.scan(p).records
        if r.kind == jf.END
    ]
