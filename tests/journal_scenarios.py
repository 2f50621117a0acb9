"""Journaled streams on real gloo process groups (run by tests/test_journal.py).

Every rank "runs" each envelope it is given: a ledger counts the planned generator calls,
a stand-in model makes an output from the latents, and the channel journals what the rank
saw (``observe``). OM-11: one worker's input is perturbed after the broadcast.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from mp_scenarios import envelope, header

from tpwire.generated import tp_control as tc
from tpwire.runtime import journal as jr
from tpwire.runtime import tripwire
from tpwire.runtime.channel import BroadcastChannel, Received
from tpwire.runtime.lockstep import Ledger

#: a hard cut (cache_epoch 0 -> 1) at this envelope index
CUT_AT = 15


def plan(i: int) -> tuple[tc.InferV1GeneratorOnly, tc.Header]:
    """Envelope i of the stream (call ids leave room for a heartbeat)."""
    epoch = 0 if i < CUT_AT else 1
    msg = envelope(i, recompute=i % 3 == 2)
    if i == CUT_AT:  # the hard cut: the caches start over
        msg = envelope(i, recompute=False, init_cache=True, tp_reset_kv_cache=True)
    return msg, header(i + 2 if i >= 10 else i + 1, chunk=i, epoch=epoch)


def run_model(ch: Any, msg: Any, h: Any) -> None:
    """What a rank does with an envelope: the planned generator calls, an output."""
    ledger = Ledger(channel=ch)
    ledger.begin(msg.tp_expected_generator_calls, h)
    out = msg.latents.float()
    for _ in range(msg.tp_expected_generator_calls):
        ledger.call()
        out = out * 0.5 + msg.conditioning_embeds.float().mean()
    ledger.end()
    ch.observe(h, inputs=msg, outputs={"latents_out": out}, generator_calls=ledger.observed)


def stream(
    rank: int,
    world: int,
    journal: str,
    mode: str = "digest",
    n: int = 30,
    perturb: tuple[int, int] | None = None,
    kill_at: int | None = None,
) -> Any:
    """``n`` envelopes from rank 0 (a NOOP after the 10th, a hard cut at ``CUT_AT``), then
    SHUTDOWN. ``perturb``: (rank, envelope index) whose latents that rank perturbs after
    receiving it (OM-11). ``kill_at``: rank 1 SIGKILLs itself while writing the journal
    record of that envelope index (half the record is on disk)."""
    cfg = jr.JournalConfig(journal, mode)
    ch = BroadcastChannel(tc, poison="raise", journal=cfg).open()
    if kill_at is not None and rank == 1:
        _tear_when_writing(kill_at)
    received = 0
    if rank == 0:
        for i in range(n):
            msg, h = plan(i)
            ch.send(msg, h)
            run_model(ch, msg, h)
            if i == 9:
                ch.noop()
        ch.shutdown()
        ch.close()
        return {"sent": n}
    while True:
        got: Received[tc.Header, Any] = ch.recv()
        if got.action is tc.TPAction.SHUTDOWN:
            break
        if got.msg is None:
            continue
        received += 1
        msg = got.msg
        if perturb is not None and perturb == (rank, got.header.chunk_index):
            msg.latents.view(-1)[0] += 1  # OM-11: a Franken-model in the making
        run_model(ch, msg, got.header)
    ch.close()
    return {"received": received}


def _tear_when_writing(index: int) -> None:
    """Make the journal writer SIGKILL this process halfway through writing the record of
    the envelope with chunk index ``index``: a worker killed mid-write, deterministically."""
    original = jr.JournalWriter._write

    def tearing(fd: int, parts: list[bytes | memoryview]) -> int:
        data = b"".join(bytes(p) for p in parts)
        head = jr.HEAD.unpack_from(data, 0)
        kind, chunk = head[2], head[6]
        if kind == jr.ENVELOPE and chunk == index:
            os.write(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)
        return original(fd, parts)

    jr.JournalWriter._write = staticmethod(tearing)  # type: ignore[method-assign]


def replay_feed(
    rank: int, world: int, files: list[str], journal: str, start_epoch: int | None
) -> Any:
    """Rank 0 is a replay source feeding a recorded full-mode journal; rank 1 a worker that
    journals (digest mode) and runs what it is given."""
    from tpwire.runtime.replay import ReplaySource

    ch = BroadcastChannel(tc, poison="raise", journal=jr.JournalConfig(journal)).open()
    if rank == 0:
        source = ReplaySource(files, tc, start_epoch=start_epoch)
        fed = source.feed(ch)
        ch.close()
        return {"fed": fed, "skipped": source.skipped}
    seen = []
    while True:
        got = ch.recv()
        if got.action is tc.TPAction.SHUTDOWN:
            break
        if got.msg is None:
            continue
        digest = tripwire.digest_envelope(tc, got.msg, got.header)
        seen.append([got.header.call_id, jr.hex64(digest)])
        run_model(ch, got.msg, got.header)
    ch.close()
    return {"seen": seen}


def pp_stream(rank: int, world: int, journal: str, n: int = 6) -> Any:
    """pp_contract over p2p, both ends journaling in full mode: rank 0 sends ``n`` envelopes
    (a hard cut half way), stage 1 answers each with a RESULT carrying its ids."""
    from mp_scenarios import pp_envelope, pp_header

    from tpwire.generated import pp_contract as pp
    from tpwire.runtime.channel import P2PChannel

    cfg = jr.JournalConfig(journal, "full")
    ch = P2PChannel(pp, peer=1 - rank, poison="raise", journal=cfg).open()
    if rank == 0:
        outs = []
        for i in range(n):
            epoch = int(i >= n // 2)
            ch.send(pp_envelope(i, init=i in (0, n // 2)), pp_header(i + 1, i, epoch, "INFER"))
            got = ch.recv()
            outs.append(got.header.call_id)
        ch.shutdown()
        ch.close()
        return {"results": outs}
    while True:
        got = ch.recv()
        if got.action is pp.PPAction.SHUTDOWN:
            ch.close()
            return {"ok": True}
        env = got.msg
        ledger = Ledger(channel=ch)
        ledger.begin(env.expected_generator_calls, got.header)
        for _ in range(env.num_denoise_steps):
            ledger.call()
        ledger.end()
        out = pp.PPResult(
            pp_result_version=1, latents_out=env.latents_in * 2,
            observed_generator_calls=ledger.observed, output_digest=None,
        )  # fmt: skip
        h = got.header
        ch.observe(h, inputs=env, outputs={"latents_out": out.latents_out})
        ch.send(out, pp_header(h.call_id, h.chunk_index, h.cache_epoch, "RESULT"))


def parity_one_rank(rank: int, world: int) -> Any:
    """Only rank 0 journals: the handshake refuses, naming the flag on every rank."""
    from tpwire.runtime.parity import ParityMismatch

    try:  # rank 0 by the launcher's variable (TPWIRE_JOURNAL), rank 1 not at all
        BroadcastChannel(tc).open()
    except ParityMismatch as exc:
        return {"diff": list(exc.diff)}
    return {"diff": None}


def killed_from_outside(rank: int, world: int, journal: str, at: int = 12) -> Any:
    """Rank 0 SIGKILLs rank 1 (its pid read from rank 1's journal, OPEN record) right after
    sending envelope ``at``: a kill at whatever moment rank 1 is in, mid-write or not."""
    cfg = jr.JournalConfig(journal, "full")
    ch = BroadcastChannel(tc, poison="raise", journal=cfg).open()
    if rank == 0:
        for i in range(30):
            msg, h = plan(i)
            ch.send(msg, h)
            if i == at:
                (victim,) = [j for j in _journals(journal) if j.opening.get("rank") == 1]
                os.kill(int(victim.opening["pid"]), signal.SIGKILL)
                time.sleep(0.5)
        ch.shutdown()
        return {"sent": 30}
    while True:
        got = ch.recv()
        if got.action is tc.TPAction.SHUTDOWN:
            return {"ok": True}
        if got.msg is not None:
            run_model(ch, got.msg, got.header)


def _journals(folder: str) -> Any:
    from tpwire.runtime.replay import load

    return load([folder])
