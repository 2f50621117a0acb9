"""Review of the channel core over its parts (runtime/channel.py, sender.py, receiver.py,
policy.py, recorder.py, journal_recorder.py, handshake.py, compat.py): behaviour that differs
from the single-class channel it replaced, each with the case that shows it.

- with no journal, the journal recorder still counts as an active recorder: every envelope
  pays for an event (frame 0's bytes copied, an ``EnvelopeEvent``, a call per recorder);
- a recorder whose ``wants_segments`` raises escapes ``send`` after frame 0 left (the
  sender's layout, order and ids never move on) instead of being switched off;
- ``observe`` with a bad argument switched the journal off for the rest of the run (no END
  record either) instead of raising to the caller;
- poison, the watchdog or SIGTERM during the open handshake left the journal file set up
  for it (the old channel abandoned it: no file);
- ``close`` twice tells the recorders "closed" twice;
- a compat receiver encodes every envelope it receives again (``prepare``) for the
  recorders' frame 0, even with no journal.

Single-rank cases run in their own interpreter on a gloo group of one; the compat case runs
on real gloo groups under hard timeouts (tests/mp.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from mp import run_ranks

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]

#: a gloo group of world 1 and the stream helpers; the script goes on from there
_ONE_RANK = """
import os, signal, sys, tempfile, time
sys.path.insert(0, {tests!r})
import torch.distributed as dist
from mp_scenarios import envelope, header
from tpwire.generated import tp_control as tc
from tpwire.runtime import journal as jr
from tpwire.runtime import journal_format as jf
from tpwire.runtime.channel import BroadcastChannel
from tpwire.runtime.recorder import Recorder
store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
dist.init_process_group("gloo", store=store, rank=0, world_size=1)
def plan(i):
    return envelope(i), header(i + 1, chunk=i, epoch=0)
"""


def _run(body: str) -> subprocess.CompletedProcess[str]:
    # the group destroyed before exit: a process leaving a live gloo group may abort in
    # torch's teardown ("terminate called without an active exception"), with or without tpwire
    script = (
        _ONE_RANK.format(tests=str(REPO / "tests"))
        + textwrap.dedent(body)
        + "\nif dist.is_initialized():\n    dist.destroy_process_group()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TPWIRE_JOURNAL"}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env=env,
    )


def _lines(run: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in run.stderr.splitlines() if ln.startswith("tpwire[")]


# -- the hot path without a journal ----------------------------------------------------------


def test_without_a_journal_no_recorder_is_active_and_no_event_is_made() -> None:
    """The old channel's hot path asked ``self.journal is not None`` and did nothing more;
    ``if ch.recorders`` must be as cheap: no recorder active, no event built per envelope."""
    run = _run(
        """
        from tpwire.runtime import sender
        made = []
        real = sender.Sender.record
        def record(self, *a, **k):
            made.append(1)
            return real(self, *a, **k)
        sender.Sender.record = record
        ch = BroadcastChannel(tc.BINDINGS, poison="raise").open()
        for i in range(3):
            ch.send(*plan(i))
        print("ACTIVE", len(ch.recorders.active), "EVENTS", len(made))
        """
    )
    assert run.returncode == 0, run.stderr
    assert "ACTIVE 0 EVENTS 0" in run.stdout, run.stdout


# -- a recorder that raises -------------------------------------------------------------------


def test_a_recorder_whose_wants_segments_raises_is_switched_off_and_the_send_commits() -> None:
    """runtime/recorder.py: "A recorder that raises is switched off with one line; the stream
    goes on." ``Recorders.wants_segments`` reads each recorder's property outside ``_call``:
    the exception leaves ``Sender.transmit`` after frame 0 is on the wire, before ``after``
    (layout, order, ``last_sent``): the sender is out of step with its receivers."""
    run = _run(
        """
        class Bad(Recorder):
            name = "bad"
            @property
            def wants_segments(self):
                raise RuntimeError("boom")
        ch = BroadcastChannel(tc.BINDINGS, poison="raise", recorders=[Bad()]).open()
        for i in range(3):
            ch.send(*plan(i))
        print("LAST", ch.last_sent.call_id, "NEXT", ch.next_sequence())
        """
    )
    assert run.returncode == 0, run.stderr
    assert "LAST 3 NEXT 4" in run.stdout, run.stderr
    (off,) = [ln for ln in _lines(run) if "bad off" in ln]
    assert "RuntimeError: boom" in off


def test_observe_with_a_bad_count_raises_to_the_caller_and_the_journal_goes_on(
    tmp_path: Path,
) -> None:
    """The old ``observe`` built the record in the caller (``int(v)`` of each count): a bad
    argument raised there and the journal went on. Now the record is built inside the
    journal recorder's event: the recorder is switched off for the rest of the run, so the
    journal gets no further envelope and no END record (and ``close`` never closes it)."""
    run = _run(
        f"""
        ch = BroadcastChannel(tc.BINDINGS, poison="raise", journal=jr.JournalConfig({str(tmp_path)!r})).open()
        msg, h = plan(0)
        ch.send(msg, h)
        try:
            ch.observe(h, inputs=msg, generator_calls="four")
        except ValueError:
            print("RAISED")
        ch.send(*plan(1))
        ch.shutdown()
        ch.close()
        """
    )
    assert run.returncode == 0, run.stderr
    assert not [ln for ln in _lines(run) if "journal off" in ln], run.stderr
    assert "RAISED" in run.stdout
    (path,) = tmp_path.glob("*.tpj")
    from tpwire.runtime import journal_format as jf

    kinds = [r.kind_name for r in jf.scan(path).records]
    assert kinds.count("ENVELOPE") == 3 and kinds[-1] == "END", kinds


# -- the open handshake and the journal set up for it -----------------------------------------


@pytest.mark.parametrize("how", ["poison", "sigterm"])
def test_a_handshake_that_dies_leaves_no_journal_file(tmp_path: Path, how: str) -> None:
    """The old ``_poison`` and ``_journal_terminated`` ended in ``_journal_end``, which
    abandoned the writer still pending for the handshake (no file left). Now poison, the
    watchdog and SIGTERM tell only the active recorders: the pending journal's file stays,
    with an OPEN record and no END."""
    fail = (
        "raise RuntimeError('peer gone')"
        if how == "poison"
        else "os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)"
    )
    run = _run(
        f"""
        from tpwire.runtime import parity
        def check(*a, **k):
            {fail}
        parity.check = check
        BroadcastChannel(tc.BINDINGS, journal=jr.JournalConfig({str(tmp_path)!r})).open()
        """
    )
    expected = 86 if how == "poison" else -signal.SIGTERM
    assert run.returncode == expected, run.stderr
    assert not list(tmp_path.glob("*.tpj")), run.stderr


# -- events -----------------------------------------------------------------------------------


def test_closing_twice_tells_the_recorders_once() -> None:
    """``with ch:`` after an explicit ``close`` (or ``close`` twice) emits "closed" twice;
    the old journal END/close was idempotent, a recorder now sees the stream end twice."""
    run = _run(
        """
        seen = []
        class Count(Recorder):
            name = "count"
            def closed(self):
                seen.append("closed")
        with BroadcastChannel(tc.BINDINGS, poison="raise", recorders=[Count()]) as ch:
            ch.send(*plan(0))
            ch.shutdown()
            ch.close()
        ch.close()
        print("CLOSED", len(seen))
        """
    )
    assert run.returncode == 0, run.stderr
    assert "CLOSED 1" in run.stdout, run.stdout


def test_a_recorder_named_like_a_status_key_is_not_refused_by_it() -> None:
    """The handshake's status holds each recorder's setup problem under its name, and the
    rank under "rank": a recorder named "rank" has its status overwritten by the rank
    number, which ``agree`` reads as every rank's problem (the recorder goes off
    everywhere). Two recorders of one name share one status the same way."""
    run = _run(
        """
        class Rank(Recorder):
            name = "rank"
        ch = BroadcastChannel(tc.BINDINGS, poison="raise", recorders=[Rank()]).open()
        print("ACTIVE", [r.name for r in ch.recorders.active])
        """
    )
    assert run.returncode == 0, run.stderr
    assert "ACTIVE ['rank']" in run.stdout, run.stderr


# -- compat -----------------------------------------------------------------------------------


def compat_prepares(rank: int, world: int) -> Any:
    """A compat stream with no journal: how many times the receiver calls ``prepare``."""
    import dataclasses

    from mp_scenarios import envelope, header

    from tpwire.generated import tp_control as tc
    from tpwire.runtime.compat import CompatBroadcastChannel

    calls = [0]
    real = tc.BINDINGS.prepare

    def prepare(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        return real(*a, **k)

    counted = dataclasses.replace(tc.BINDINGS, prepare=prepare)
    with CompatBroadcastChannel(counted, poison="raise") as ch:
        if rank == 0:
            for i in range(3):
                ch.send(envelope(i), header(i + 1, chunk=i, epoch=0))
        else:
            while ch.recv().action is not tc.TPAction.SHUTDOWN:
                pass
    return {"prepare": calls[0]}


@pytest.mark.timeout(180)
def test_a_compat_receiver_does_not_encode_what_it_received(tmp_path: Path) -> None:
    """``Receiver._record`` makes a compat envelope's frame 0 by ``prepare`` (validation,
    every tensor materialized and copied) for each received envelope whenever
    ``ch.recorders`` is true, which is always (the journal recorder is active without a
    journal): the compat baseline of the benchmarks pays a full encode per envelope."""
    results = run_ranks(
        "compat_prepares", tmp_path, world=2, timeout=150, module="test_review_core"
    )
    for r in results:
        assert r.exitcode == 0, r.log
    assert results[1].result["prepare"] == 0, results[1].result


def compat_source_dies_mid_envelope(rank: int, world: int) -> Any:
    """Both ranks first build a p2p channel with a heartbeat (refused: its message); then
    rank 0 opens a compat channel, puts one envelope's header slots (call_id 1) on the wire
    and dies before its payload; rank 1 is in the middle of receiving that envelope."""
    import torch
    import torch.distributed as dist
    from mp_scenarios import header

    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import ChannelPoisoned, P2PChannel
    from tpwire.runtime.compat import CompatBroadcastChannel

    try:
        P2PChannel(tc.BINDINGS, 1 - rank, heartbeat_s=1.0)
        p2p = "no error"
    except ValueError as exc:
        p2p = str(exc)
    ch = CompatBroadcastChannel(tc.BINDINGS, poison="raise", watchdog_s=20.0).open()
    if rank == 0:
        h = header(1, chunk=1)
        slots = [h.call_id, h.chunk_index, h.control_epoch, h.cache_epoch, int(h.action)]
        dist.broadcast(torch.tensor(slots, dtype=torch.int64), src=0)
        os._exit(0)
    try:
        ch.recv()
        line = "no poison"
    except ChannelPoisoned as exc:
        line = str(exc)
    return {"p2p": p2p, "line": line}


@pytest.mark.timeout(180)
def test_compat_poison_mid_payload_names_the_envelope_and_keeps_its_words(
    tmp_path: Path,
) -> None:
    """The old compat ``recv`` parsed the header first and poisoned with its ids: "compat
    payload failed: ..." (a watchdog: "the payload of <its ids>"). ``CompatWire.receive``
    raises before handing the header back, so the line names the envelope before it (here
    none) and says "receive failed". And the p2p heartbeat refusal kept its words."""
    results = run_ranks(
        "compat_source_dies_mid_envelope", tmp_path, world=2, timeout=150,
        module="test_review_core",
    )  # fmt: skip
    worker = results[1]
    assert worker.exitcode == 0, worker.log
    assert worker.result["p2p"] == "p2p channels have no heartbeat; use watchdog_s on both ends"
    line = worker.result["line"]
    assert "call_id=1 chunk_index=1 cache_epoch=0" in line, line
    assert "compat payload failed" in line or "the payload of" in line, line
