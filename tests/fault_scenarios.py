"""Fault injection on real gloo groups (tests/test_faults.py): one scenario, every cell.

Every rank runs the same TP-shaped stream over a ``BroadcastChannel``: the open handshake,
then ``CHUNKS`` chunks of (envelope: frame 0 and frame 1; the input tripwire; generator
calls, each a TP ``all_reduce`` inside ``ch.guard``; the ledger check). The heartbeat step
puts an idle stretch before the last chunk, rank 0 feeding its workers NOOPs. One rank, the
victim, sends itself a real signal (SIGKILL or SIGSTOP) at the start of the cell's step of
the last chunk, while the others enter that step; it first writes the monotonic time of the
fault to ``fault.json`` so the test can time the survivors from it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from mp_scenarios import envelope, header

from tpwire.generated import tp_control as tc
from tpwire.runtime.channel import BroadcastChannel, ChannelPoisoned
from tpwire.runtime.lockstep import Ledger

#: the kinds of step a fault can strike, in the order a stream runs them
STEPS = ("handshake", "heartbeat", "frame0", "frame1", "tripwire", "guard", "ledger")
SIGNALS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}
CHUNKS = 2  # the fault strikes in the last one, after a whole chunk has run
CALLS = 3  # generator calls per chunk; the guard fault strikes before call 2
HEARTBEAT_S = 0.25
IDLE_S = 1.5  # rank 0's idle stretch in the heartbeat step; the fault strikes into it
STRIKE_AFTER_S = 0.5


def cell(
    rank: int,
    world: int,
    step: str,
    signal_name: str,
    victim: int,
    watchdog_s: float,
    out: str,
    poison: str = "exit",
) -> Any:
    """One cell of the matrix on this rank: rank ``victim`` sends itself ``signal_name``
    ("kill" or "stop"; "raise": the victim's code raises instead, its model crashing) at
    ``step`` of the last chunk. Returns only if no fault reached this rank, or, under
    ``poison="raise"``, with the ``ChannelPoisoned`` it caught."""
    fault_file = Path(out) / "fault.json"

    def strike(at: str) -> None:
        if rank != victim:
            return
        fault_file.write_text(json.dumps({"at": at, "t": time.monotonic(), "rank": rank}))
        if signal_name == "raise":
            print(f"FAULT: rank {rank} raises at {at}", flush=True)
            raise RuntimeError(f"the model crashed at {at}")
        sig = SIGNALS[signal_name]
        print(f"FAULT: rank {rank} sends itself {sig.name} at {at}", flush=True)
        os.kill(os.getpid(), sig)

    cpu_group = dist.new_group(backend="gloo") if step == "heartbeat" else None
    # every rank is done with the store (rank 0 hosts it) before any fault: a rank still in
    # init_process_group or new_group when rank 0 stops would wait there, out of tpwire's reach
    dist.barrier()
    ch: BroadcastChannel[Any, Any] = BroadcastChannel(
        tc,
        watchdog_s=watchdog_s,
        poison=poison,
        tripwires=True,
        steady_state=False,  # frame 1 is a collective of its own, after frame 0's
        cpu_group=cpu_group,
        heartbeat_s=HEARTBEAT_S if cpu_group is not None else None,
    )
    if step in ("frame0", "frame1"):  # strike inside send/recv, at frame 0 or between frames
        move = ch.transport.put if rank == 0 else ch.transport.get
        heads = {"n": 0}

        def faulty(tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
            heads["n"] += frame0
            if heads["n"] == CHUNKS and frame0 == (step == "frame0"):
                strike(f"{'frame 0' if frame0 else 'frame 1'} of chunk {CHUNKS - 1}")
            move(tensor, tag, frame0=frame0)

        if rank == 0:
            ch.transport.put = faulty  # type: ignore[method-assign]
        else:
            ch.transport.get = faulty  # type: ignore[method-assign]
    try:
        stream(ch, rank, step, strike)
    except ChannelPoisoned as exc:  # poison="raise": the same line, as an exception
        return {"poisoned": str(exc)}
    return {"finished": True}


def stream(
    ch: BroadcastChannel[Any, Any], rank: int, step: str, strike: Callable[[str], None]
) -> None:
    """The handshake, then ``CHUNKS`` chunks; ``strike`` at ``step`` of the last one."""
    if step == "handshake":
        strike("the open handshake")
    ch.open()
    ledger = Ledger(channel=ch)
    reduced = torch.zeros(4)
    for c in range(CHUNKS):
        striking = c == CHUNKS - 1
        if step == "heartbeat" and striking:
            # rank 0 idles (heartbeats flow); the victim strikes into the idle stretch
            timer = threading.Timer(STRIKE_AFTER_S, strike, args=("an idle stretch",))
            timer.daemon = True
            timer.start()
            if rank == 0:
                time.sleep(IDLE_S)
        if rank == 0:
            hdr = header(ch.next_call_id(), chunk=c)
            msg: tc.InferV1GeneratorOnly | None = envelope(c)
            ch.send(msg, hdr)
        else:
            while True:
                got = ch.recv()
                if got.action is tc.TPAction.INFER:
                    break
            hdr, msg = got.header, got.msg
        if step == "tripwire" and striking:
            strike("the input tripwire")
        ch.check_inputs(msg, hdr)
        ledger.begin(CALLS, hdr)
        for k in range(1, CALLS + 1):
            ledger.call()
            with ch.guard(f"generator call {k} of {CALLS}", header=hdr):
                if step == "guard" and striking and k == 2:
                    strike(f"generator call {k} of {CALLS}")
                reduced += 1
                dist.all_reduce(reduced)  # the model's TP collective
        if step == "ledger" and striking:
            strike("the ledger check")
        ledger.check_ranks()
        ledger.end()
    if rank == 0:
        ch.shutdown()
    else:
        while ch.recv().action is not tc.TPAction.SHUTDOWN:
            pass
