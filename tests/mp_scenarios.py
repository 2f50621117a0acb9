"""Scenarios run by tests/test_channel.py on real gloo process groups (one call per rank).

Each returns JSON-able data the test asserts on; logs go to the rank's log file.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from tpwire.generated import tp_control as tc
from tpwire.runtime import wire
from tpwire.runtime.channel import BroadcastChannel, ChannelPoisoned, OrderingError
from tpwire.runtime.errors import EnvelopeInvalid
from tpwire.runtime.parity import ParityMismatch


def header(
    call_id: int, chunk: int | None = None, epoch: int = 0, action: str = "INFER"
) -> tc.Header:
    return tc.Header(
        call_id=call_id,
        chunk_index=chunk if chunk is not None else call_id,
        control_epoch=0,
        cache_epoch=epoch,
        action=tc.TPAction[action],
    )


def envelope(seed: int, *, recompute: bool = False, **changes: Any) -> tc.InferV1GeneratorOnly:
    """A small but complete v1 envelope, the same on every rank for the same seed."""
    g = torch.Generator().manual_seed(seed)
    fields: dict[str, Any] = dict(
        tp_envelope_version=1,
        height=16,
        width=24,
        current_start_frame=seed,
        init_cache=seed == 0,
        manage_cache=True,
        tp_reset_kv_cache=seed == 0,
        tp_reset_crossattn_cache=False,
        conditioning_embeds_updated=False,
        kv_cache_attention_bias=0.25,
        tp_do_kv_recompute=recompute,
        tp_num_denoise_steps=4,
        tp_expected_generator_calls=4 + int(recompute),
        denoising_step_list=torch.tensor([1000, 750, 500, 250]),
        latents=torch.randn(1, 1, 4, 2, 3, generator=g).to(torch.bfloat16),
        conditioning_embeds=torch.randn(1, 2, 8, generator=g).to(torch.float16),
        context_frames_override=(
            torch.randn(1, 1, 4, 2, 3, generator=g).to(torch.bfloat16) if recompute else None
        ),
        base_seed=seed,
    )
    fields.update(changes)
    return tc.InferV1GeneratorOnly(**fields)


def stream(rank: int, world: int, n: int = 4, compat: bool = False) -> Any:
    """n envelopes, a NOOP and SHUTDOWN; ``compat`` uses Scope's current (pickle) wire."""
    from tpwire.runtime.compat import CompatBroadcastChannel

    kind = CompatBroadcastChannel if compat else BroadcastChannel
    ch = kind(tc, poison="raise").open()
    if rank == 0:
        for i in range(n):
            ch.send(envelope(i, recompute=i % 2 == 1), header(i + 1, chunk=i))
        ch.noop()
        ch.shutdown()
        return {"sent": n}
    seen = []
    while True:
        got = ch.recv()
        row: dict[str, Any] = {"action": got.action.name, "call_id": got.header.call_id}
        if got.msg is not None:
            i = got.header.chunk_index
            row["equal"] = got.msg == envelope(i, recompute=i % 2 == 1)
        seen.append(row)
        if got.action is tc.TPAction.SHUTDOWN:
            return seen


def preflight(rank: int, world: int) -> Any:
    """OM-01, OM-02, OM-03 (both sides) and OM-10: refused before frame 0, no peer stranded."""
    ch = BroadcastChannel(tc, poison="raise").open()
    if rank == 0:
        refused = {}
        attempts = {
            "OM-01": envelope(1, base_seed=lambda: 0),  # unserializable value in the meta
            "OM-02": envelope(1, latents=torch.zeros(1, 1, 4, 2, 3, dtype=torch.bool)),
            "OM-03": envelope(1, tp_num_denoise_steps=5),
            "OM-10": envelope(1, recompute=True, context_frames_override=None),
        }
        for om, msg in attempts.items():
            try:
                ch.send(msg, header(1))
            except EnvelopeInvalid as exc:
                refused[om] = sorted({(v.code, v.field) for v in exc.violations})
        ch.send(envelope(1), header(1))  # the worker gets this one next
        # a buggy rank 0 that skipped validation: the worker must refuse before any work
        frames = tc.encode(envelope(2), header(2))
        words = frames.frame0.tolist()
        steps = next(i for i in range(tc.W_SCALARS, tc.W_MANIFEST) if words[i] == 4)
        words[steps] = 5
        ch.sender.transmit(wire.Frames(wire.seal(words), frames.segments), header(2))
        ch.send(envelope(3), header(3))
        ch.shutdown()
        return refused
    out: dict[str, Any] = {"received": []}
    while True:
        try:
            got = ch.recv()
        except EnvelopeInvalid as exc:
            out["worker_refused"] = sorted({(v.code, v.field) for v in exc.violations})
            out["refused_ids"] = [
                exc.violations[0].id("call_id"),
                exc.violations[0].id("chunk_index"),
            ]
            continue
        out["received"].append([got.action.name, got.header.call_id])
        if got.action is tc.TPAction.SHUTDOWN:
            return out


def parity_flags(rank: int, world: int) -> Any:
    plan = "v1_generator_only" if rank == 0 else "v0_full_pipeline"
    try:
        BroadcastChannel(tc, parity_flags={"tp_plan": plan, "compile": True}).open()
    except ParityMismatch as exc:
        return {"diff": list(exc.diff)}
    return {"diff": None}


def parity_env(rank: int, world: int) -> Any:
    try:
        BroadcastChannel(tc, parity_env=("SCOPE_TP_INPUT_DIGEST", "SCOPE_KV_BIAS_BACKEND")).open()
    except ParityMismatch as exc:
        return {"diff": list(exc.diff)}
    return {"diff": None}


def sender_dies(rank: int, world: int, watchdog_s: float) -> Any:
    """OM-13: rank 0 is killed mid-stream; the worker exits within the watchdog window."""
    ch = BroadcastChannel(tc, watchdog_s=watchdog_s).open()
    if rank == 0:
        for i in range(2):
            ch.send(envelope(i), header(i + 1, chunk=i))
        time.sleep(0.2)
        os._exit(9)  # killed: no SHUTDOWN, no goodbye
    while True:
        ch.recv()  # the channel exits the process when rank 0 is gone


def worker_dies(rank: int, world: int, watchdog_s: float) -> Any:
    """A worker is killed mid-stream; rank 0 exits instead of waiting on it forever."""
    ch = BroadcastChannel(tc, watchdog_s=watchdog_s).open()
    if rank == 1:
        ch.recv()
        ch.recv()
        os._exit(9)
    for i in range(10_000):
        ch.send(envelope(i), header(i + 1, chunk=i))
    return {"sent_all": True}  # must not get here


def bad_order(rank: int, world: int, call_id: int) -> Any:
    """A duplicate or regressing call_id reaches the worker (rank 0 forges it)."""
    ch = BroadcastChannel(tc, poison="raise").open()
    if rank == 0:
        ch.send(envelope(0), header(5, chunk=0))
        noop = header(call_id, action="NOOP")
        ch.sender.transmit(tc.encode(None, noop), noop)
        return {}
    first = ch.recv()
    try:
        ch.recv()
    except ChannelPoisoned as exc:
        return {"first": first.header.call_id, "poisoned": str(exc)}
    return {"poisoned": None}


def bad_fingerprint(rank: int, world: int) -> Any:
    """Frame 0 from a rank that runs another spec revision."""
    ch = BroadcastChannel(tc, poison="raise").open()
    if rank == 0:
        noop = header(1, action="NOOP")
        words = tc.encode(None, noop).frame0.tolist()
        words[1] ^= 0x5A5A
        ch.sender.transmit(wire.Frames(wire.seal(words), ()), noop)
        return {}
    try:
        ch.recv()
    except ChannelPoisoned as exc:
        return {"poisoned": str(exc)}
    return {"poisoned": None}


def heartbeat(rank: int, world: int) -> Any:
    """An idle rank 0 keeps its workers' watchdogs fed with NOOPs (on a frame 0 group)."""
    import torch.distributed as dist

    cpu = dist.new_group(backend="gloo")
    if rank == 0:
        try:
            BroadcastChannel(tc, heartbeat_s=0.2)  # refused: no group of its own for NOOPs
            BroadcastChannel(tc, heartbeat_s=0.2).open()
        except ValueError as exc:
            refused = str(exc)
        ch = BroadcastChannel(tc, cpu_group=cpu, heartbeat_s=0.2).open()
        time.sleep(1.2)
        ch.send(envelope(0), header(ch.next_call_id(), chunk=0))
        ch.shutdown()
        return {"refused": refused}
    ch = BroadcastChannel(tc, cpu_group=cpu, watchdog_s=0.8).open()
    actions = []
    while True:
        got = ch.recv()
        actions.append(got.action.name)
        if got.action is tc.TPAction.SHUTDOWN:
            return {"actions": actions}


def sender_hangs(rank: int, world: int, watchdog_s: float) -> Any:
    """Rank 0 is alive but wedged (no error reaches the worker): the watchdog fires."""
    ch = BroadcastChannel(tc, watchdog_s=watchdog_s).open()
    if rank == 0:
        ch.send(envelope(0), header(1, chunk=0))
        time.sleep(watchdog_s + 3.0)
        os._exit(0)
    ch.recv()
    started = time.monotonic()
    ch.recv()  # never completes: the watchdog exits the process
    return {"waited": time.monotonic() - started}


def drift(rank: int, world: int) -> Any:
    """OM-11: one rank's input is perturbed after the broadcast (test-only)."""
    from tpwire.runtime.tripwire import DriftDetected

    ch = BroadcastChannel(tc, tripwires=True, poison="raise").open()
    h = header(1, chunk=0)
    if rank == 0:
        msg = envelope(0)
        ch.send(msg, h)
    else:
        msg = ch.recv().msg
    ch.check_inputs(msg, h)  # identical: passes
    if rank == 0:
        msg.latents.view(-1)[0] += 1  # Franken-model in the making
    try:
        ch.check_inputs(msg, h)
    except DriftDetected as exc:
        return {"drift": str(exc)}
    return {"drift": None}


def ledger_counts(rank: int, world: int) -> Any:
    from tpwire.runtime.lockstep import Ledger, LockstepError

    ledger = Ledger(tc)
    ledger.begin(5, header(1, chunk=0))
    for _ in range(5 if rank == 0 else 4):
        ledger.call()
    try:
        ledger.check_ranks()
    except LockstepError as exc:
        return {"error": str(exc)}
    return {"error": None}


def tripwire_on_one_rank(rank: int, world: int) -> Any:
    try:
        BroadcastChannel(tc, tripwires=rank == 0).open()
    except ParityMismatch as exc:
        return {"diff": list(exc.diff)}
    return {"diff": None}


def pp_envelope(i: int, *, init: bool = False) -> Any:
    from tpwire.generated import pp_contract as pp

    g = torch.Generator().manual_seed(i)
    return pp.PPEnvelope(
        pp_envelope_version=1, height=16, width=24, current_start_frame=i, init_cache=init,
        reset_kv_cache=init, reset_crossattn_cache=False, kv_cache_attention_bias=0.5,
        do_kv_recompute=False, num_denoise_steps=2, expected_generator_calls=2,
        denoising_step_list=torch.tensor([900, 400]),
        latents_in=torch.randn(1, 1, 4, 2, 3, generator=g).to(torch.bfloat16),
        conditioning_embeds=torch.randn(1, 2, 8, generator=g).to(torch.bfloat16),
        context_frames=None, input_digest=None,
    )  # fmt: skip


def pp_header(call_id: int, chunk: int, epoch: int, action: str) -> Any:
    from tpwire.generated import pp_contract as pp

    return pp.Header(
        call_id=call_id, chunk_index=chunk, cache_epoch=epoch, action=pp.PPAction[action]
    )


def pp_hard_cut(rank: int, world: int) -> Any:
    """OM-09 over real p2p: results of the old epoch arrive after the hard cut and are dropped."""
    from tpwire.generated import pp_contract as pp
    from tpwire.runtime.channel import P2PChannel
    from tpwire.runtime.lockstep import Ledger, ResultGate

    ch = P2PChannel(pp, peer=1 - rank, poison="raise").open()
    if rank == 0:
        gate = ResultGate(pp, max_pending=2)
        used = []
        for call_id, chunk in ((1, 0), (2, 1)):
            h = pp_header(call_id, chunk, 0, "INFER")
            ch.send(pp_envelope(chunk), h)
            gate.expect(h)
        flushed = gate.hard_cut(1)
        for _ in range(2):
            got = ch.recv()
            if gate.accept(got.header):
                used.append(got.header.call_id)
        h = pp_header(3, 2, 1, "INFER")
        ch.send(pp_envelope(2, init=True), h)
        gate.expect(h)
        got = ch.recv()
        if gate.accept(got.header):
            used.append(got.header.call_id)
        ch.shutdown()
        return {
            "flushed": [i.seq for i in flushed],
            "dropped": [[i.seq, why] for i, why in gate.dropped],
            "used": used,
        }
    ledger = Ledger(pp)
    pending = []
    while True:
        got = ch.recv()
        if got.action is pp.PPAction.SHUTDOWN:
            return {"ok": True}
        pending.append(got)
        if len(pending) == 2 or got.header.cache_epoch == 1:
            for env in pending:  # stage 1 runs them late: the cut already happened
                ledger.begin(env.msg.expected_generator_calls, env.header)
                for _ in range(env.msg.num_denoise_steps):
                    ledger.call()
                ledger.end()
                out = pp.PPResult(
                    pp_result_version=1, latents_out=env.msg.latents_in,
                    observed_generator_calls=ledger.observed, output_digest=None,
                )  # fmt: skip
                h = env.header
                ch.send(out, pp_header(h.call_id, h.chunk_index, h.cache_epoch, "RESULT"))
            pending.clear()


def relay_error(rank: int, world: int) -> Any:
    """OM-07: the mesh leader refuses an invalid envelope and broadcasts ERROR to its mesh."""
    import torch.distributed as dist

    from tpwire.generated import pp_contract as pp
    from tpwire.runtime.channel import P2PChannel

    link = dist.new_group([0, 1])
    mesh = dist.new_group([1, 2])
    if rank == 0:
        ch = P2PChannel(pp, peer=1, group=link, poison="raise").open()
        h = pp_header(1, 0, 0, "INFER")
        frames = pp.encode(pp_envelope(0), h)
        words = frames.frame0.tolist()
        words[pp.W_SCALARS] = 2  # pp_envelope_version 2: a rank 0 from the future
        ch.sender.transmit(wire.Frames(wire.seal(words), frames.segments), h)
        return {}
    mesh_ch = BroadcastChannel(tc, group=mesh, src=1, watchdog_s=10).open()
    if rank == 1:
        ch = P2PChannel(pp, peer=0, group=link, poison="raise").open()
        try:
            ch.recv()
        except EnvelopeInvalid as exc:
            reason = f"invalid envelope from stage 0: {exc.violations[0]}"
            mesh_ch.error(reason)  # validate-before-bcast: the mesh gets a terminal action
            return {"relayed": reason}
        return {"relayed": None}
    got = mesh_ch.recv()
    return {"action": got.action.name}


def drift_invalid(rank: int, world: int) -> Any:
    """A rank whose local envelope does not even validate still joins the digest check."""
    from tpwire.runtime.tripwire import DriftDetected

    ch = BroadcastChannel(tc, tripwires=True, poison="raise").open()
    msg = envelope(0) if rank == 0 else envelope(0, tp_num_denoise_steps=5)
    try:
        ch.check_inputs(msg, header(1, chunk=0))
    except DriftDetected as exc:
        return {"drift": str(exc)}
    return {"drift": None}


def with_block(rank: int, world: int) -> Any:
    """A sender that fails inside ``with`` tells its workers (ERROR) instead of vanishing;
    a refused send it survived is not taken for the root cause of the later failure."""
    if rank == 0:
        try:
            with BroadcastChannel(tc) as ch:
                try:
                    ch.send(envelope(0, tp_num_denoise_steps=5), header(1, chunk=0))
                except EnvelopeInvalid:
                    pass  # refused before frame 0: the stream goes on
                ch.send(envelope(0), header(1, chunk=0))
                raise RuntimeError("the model crashed")
        except RuntimeError:
            return {}
    ch = BroadcastChannel(tc, watchdog_s=10).open()
    actions = [ch.recv().action.name, ch.recv().action.name]
    return {"actions": actions, "closed": ch.closed}


def steady(
    rank: int,
    world: int,
    steady_state: bool = True,
    carry_limit: int | None = None,
    guess_fails: bool = False,
) -> Any:
    """Layouts A A A B A A, a NOOP, A, SHUTDOWN; every rank counts its collectives.
    ``guess_fails``: a worker's buffers made ahead of a head (for the last layout) cannot
    be allocated (out of memory)."""
    ch = BroadcastChannel(
        tc, poison="raise", steady_state=steady_state, carry_limit=carry_limit
    ).open()
    failed = [0]
    if guess_fails and rank != 0:
        views_ahead = ch.receiver.framing.views_ahead

        def out_of_memory(head: torch.Tensor, device: torch.device | None) -> Any:
            if ch.receiver.framing.ahead is not None:
                failed[0] += 1
                raise MemoryError("no room for the buffers of the last layout")
            return views_ahead(head, device)

        ch.receiver.framing.views_ahead = out_of_memory  # type: ignore[method-assign]
    counts: list[int] = []
    put = ch.transport.put

    def counted(tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        counts[-1] += 1
        put(tensor, tag, frame0=frame0)

    ch.transport.put = counted  # type: ignore[method-assign]
    ch.transport.get = counted  # type: ignore[method-assign]
    # B: an update chunk whose conditioning is 64 KiB (its own segment): another layout
    plan = ["A", "A", "A", "B", "A", "A", "NOOP", "A", "SHUTDOWN"]

    def make(i: int, kind: str) -> tc.InferV1GeneratorOnly:
        if kind == "B":
            g = torch.Generator().manual_seed(i)
            cond = torch.randn(1, 8, 4096, generator=g).to(torch.float16)
            return envelope(i, conditioning_embeds=cond, conditioning_embeds_updated=True)
        return envelope(i)

    kept = []
    for i, kind in enumerate(plan):
        counts.append(0)
        if rank == 0:
            if kind in ("NOOP", "SHUTDOWN"):
                getattr(ch, kind.lower())()
            else:
                ch.send(make(i, kind), header(i + 1, chunk=i))
        else:
            got = ch.recv()
            assert got.action.name == ("INFER" if kind in "AB" else kind)
            if got.msg is not None:
                kept.append((i, kind, got.msg))
    # compared only now: every envelope a worker still holds keeps its bytes, whatever the
    # channel received after it (receive buffers are reused only when nothing views them)
    equal = [msg == make(i, kind) for i, kind, msg in kept]
    return {"counts": counts, "equal": equal, "guesses_failed": failed[0]}


def steady_on_one_rank(rank: int, world: int) -> Any:
    """Framing decides the collectives: ranks that disagree on it must not start."""
    try:
        BroadcastChannel(tc, steady_state=rank == 0).open()
    except ParityMismatch as exc:
        return {"diff": list(exc.diff)}
    return {"diff": None}


def p2p_with_block(rank: int, world: int) -> Any:
    """Both pipeline ends leave their with-blocks: neither may wait on the other's receive."""
    from tpwire.generated import pp_contract as pp
    from tpwire.runtime.channel import P2PChannel

    with P2PChannel(pp, peer=1 - rank, poison="raise", watchdog_s=20) as ch:
        if rank == 0:
            ch.send(pp_envelope(0, init=True), pp_header(1, 0, 0, "INFER"))
        else:
            got = ch.recv()
            assert got.action is pp.PPAction.INFER
    return {"closed": ch.closed}


# --- wire integrity: a raw peer on rank 0 -------------------------------------------------


def _big_envelope() -> tc.InferV1GeneratorOnly:
    """An envelope with a packed segment and a 131072-byte latents segment of its own."""
    g = torch.Generator().manual_seed(7)
    latents = torch.randn(1, 1, 16, 64, 64, generator=g).to(torch.bfloat16)
    conditioning = torch.randn(1, 3, 5, generator=g).to(torch.float16)  # 30 bytes: 2 of padding
    return envelope(0, height=512, width=512, latents=latents, conditioning_embeds=conditioning)


def _flip(t: torch.Tensor, at: int, value: int | None = None) -> torch.Tensor:
    t = t.clone()
    t[at] = (int(t[at]) ^ 1) if value is None else value
    return t


def raw_peer(rank: int, world: int, kind: str) -> Any:
    """Rank 0 opens a channel, then sends one hostile envelope; workers must refuse it with a
    named wire error and the poison line, never hand it over."""
    ch = BroadcastChannel(tc).open()
    hdr = header(0)
    if rank != 0:
        got = ch.recv()
        print(f"HANDED OVER {got.header}", flush=True)
        return {"handed_over": True}
    msg = _big_envelope()
    frames = tc.encode(msg, hdr)
    packed, large = frames.segments[0], frames.segments[1]
    assert large.numel() == 131072, [s.numel() for s in frames.segments]
    manifest = tc.read_frame0(frames.frame0)
    pad_at = next(s.offset + s.nbytes for s in manifest.slots if s.segment == 0 and s.nbytes % 16)
    words = frames.frame0.tolist()
    if kind == "short-packed":
        segments = (packed[:-16], large)
    elif kind == "short-large":
        segments = (packed, large[:-4096])
    elif kind == "long-packed":
        segments = (torch.cat([packed, torch.zeros(16, dtype=torch.uint8)]), large)
    elif kind == "long-large":
        segments = (packed, torch.cat([large, torch.zeros(4096, dtype=torch.uint8)]))
    elif kind == "flipped":
        segments = (packed, _flip(large, 1000))
    elif kind == "padding":  # a sender that hashed its non-zero padding: the digest holds
        segments = (_flip(packed, pad_at, 0x5A), large)
        words[tc.W_FRAME1_DIGEST] = wire.buffers_digest(segments, None, [len(s) for s in segments])
        frames = wire.Frames(wire.seal(words), frames.segments)
    elif kind == "head-long":  # frame 0 plus 64 bytes more than the head the workers expect
        head = torch.zeros(ch.sender.framing.head_nbytes + 64, dtype=torch.uint8)
        head[: tc.FRAME0_LEN * 8] = frames.frame0.view(torch.uint8)
        ch.transport.put(head, 0, frame0=True)
        return {}
    elif kind == "head-short":  # frame 0 alone, without the trailer that ends a head
        ch.transport.put(frames.frame0.view(torch.uint8).clone(), 0, frame0=True)
        for i, s in enumerate(frames.segments):
            ch.transport.put(s, i + 1, frame0=False)
        return {}
    else:
        raise ValueError(kind)
    ch.sender.transmit(wire.Frames(frames.frame0, segments), hdr)
    return {}


def shutdown_through_send(rank: int, world: int) -> Any:
    """A SHUTDOWN sent with send() closes the sender as shutdown() does."""
    ch = BroadcastChannel(tc, poison="raise", watchdog_s=20).open()
    if rank != 0:
        actions = []
        while True:
            got = ch.recv()
            actions.append(got.action.name)
            if got.action.name == "SHUTDOWN":
                return {"actions": actions}
    ch.send(envelope(0), header(0))
    ch.send(None, header(1, chunk=0, action="SHUTDOWN"))
    try:
        ch.send(envelope(1), header(2, chunk=1))
    except RuntimeError as exc:
        return {"refused": str(exc), "closed": ch.closed}
    return {"refused": None}


def hostile_record(rank: int, world: int, kind: str) -> Any:
    """The last rank shows a parity record of a hostile length or shape in the handshake."""
    import resource

    from tpwire.runtime import groups

    if rank == world - 1:
        if kind == "deep-json":  # 200k deep: refused by its length, before its bytes move
            groups.all_gather_ints([400_000])
        elif kind == "deep-json-in-bound":  # 4000 deep: within the bound, too deep to parse
            groups.all_gather_bytes(b"[" * 4000 + b"]" * 4000, limit=1 << 20)
        elif kind == "not-utf8":
            groups.all_gather_bytes(b"\xff\xfe{}", limit=1 << 20)
        elif kind == "list":
            groups.all_gather_bytes(b"[1, 2]", limit=1 << 20)
        else:
            claimed = {"128MiB": 128 << 20, "2**40": 1 << 40, "-1": -1}[kind]
            groups.all_gather_ints([claimed])
        return {}
    ch = BroadcastChannel(tc)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak so far, KiB
    try:
        ch.open()
    except ParityMismatch as exc:
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        return {"mismatch": list(exc.diff), "grew_mib": grew / 1024}
    return {"mismatch": None}


# --- a protocol with names of its own (tests/specs/relay.yaml) -----------------------------


def _relay() -> Any:
    from pathlib import Path

    from tpwire.codegen import compile as compile_spec

    return compile_spec(Path(__file__).parent / "specs" / "relay.yaml")


def relay_envelope(proto: Any, seq: int, batch: int, generation: int = 0) -> tuple[Any, Any]:
    """(message, header) of one RUN."""
    header = proto.Header(seq=seq, batch=batch, generation=generation, step=proto.Step.RUN)
    latents = torch.full((2, 4, 8, 8), float(seq), dtype=torch.float16)
    return proto.Decode(frames=2, latents=latents, scale=1.0, tiled=True), header


def other_names(rank: int, world: int, case: str) -> Any:
    """The relay protocol over a broadcast channel: ordering, control actions and ids by the
    spec's roles (seq, batch, generation; IDLE/HALT/FAIL), never by Scope's names."""
    proto = _relay()
    ch = BroadcastChannel(proto.BINDINGS, poison="raise", watchdog_s=30).open()
    if rank == 0:
        out: dict[str, Any] = {}
        ch.send(*relay_envelope(proto, 0, 0))
        out["next"] = ch.next_sequence()
        try:
            ch.send(*relay_envelope(proto, 0, 1))  # a duplicate seq
        except OrderingError as exc:
            out["duplicate"] = str(exc)
        if case == "order":
            ch.send(*relay_envelope(proto, 1, 1, generation=1))
            msg, header = relay_envelope(proto, 2, 2, generation=0)  # generation goes back
            ch.sender.transmit(proto.encode(msg, header), header)  # forged: skips the order check
        elif case == "shutdown":
            ch.noop()
            ch.shutdown()
        elif case == "error":
            try:
                with ch:
                    ch.send(*relay_envelope(proto, 5, 1))
                    raise ValueError("decoder out of memory")
            except ValueError:
                pass
        return out
    got = []
    try:
        while True:
            r = ch.recv()
            got.append([r.action.name, r.header.seq])
            if r.action in (proto.Step.HALT, proto.Step.FAIL):
                return {"got": got, "reason": None if r.reason is None else list(r.reason)}
    except ChannelPoisoned as exc:
        return {"got": got, "poisoned": str(exc)}


# --- CUDA: device channels over gloo, every rank on cuda:0 (tests/test_gpu.py, gpu-check) ---


def scope_envelope(seed: int, *, recompute: bool = False) -> tc.InferV1GeneratorOnly:
    """A Scope-sized v1 envelope (320x576 latents, 4 MiB of conditioning), the same on
    every rank for the same seed."""
    g = torch.Generator().manual_seed(seed)
    return envelope(
        seed,
        recompute=recompute,
        height=320,
        width=576,
        latents=torch.randn(1, 3, 16, 40, 72, generator=g).to(torch.bfloat16),
        conditioning_embeds=torch.randn(1, 512, 4096, generator=g).to(torch.bfloat16),
        context_frames_override=(
            torch.randn(1, 1, 16, 40, 72, generator=g).to(torch.bfloat16) if recompute else None
        ),
    )


def _tensor_fields(msg: Any) -> dict[str, torch.Tensor]:
    return {
        name: v
        for name in type(msg).__dataclass_fields__
        if isinstance(v := getattr(msg, name), torch.Tensor)
    }


def on_device(msg: tc.InferV1GeneratorOnly, device: torch.device) -> tc.InferV1GeneratorOnly:
    """``msg`` with every tensor on ``device``."""
    import dataclasses

    moved = {name: v.to(device) for name, v in _tensor_fields(msg).items()}
    return dataclasses.replace(msg, **moved)  # type: ignore[arg-type]


def received_as_sent(got: Any, want: tc.InferV1GeneratorOnly, device_type: str) -> dict[str, bool]:
    """Whether every tensor of ``got`` lies on ``device_type`` and every field equals
    ``want``'s (tensors bit for bit, compared on the host)."""
    tensors = _tensor_fields(got) if got is not None else {}
    equal = got is not None and type(got) is type(want)
    for name in type(want).__dataclass_fields__:
        if not equal:
            break
        a, b = getattr(got, name), getattr(want, name)
        if isinstance(b, torch.Tensor):
            equal = (
                isinstance(a, torch.Tensor)
                and (a.dtype, a.shape) == (b.dtype, b.shape)
                and torch.equal(
                    a.cpu().reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)
                )
            )
        else:
            equal = a == b
    return {
        "on_device": bool(tensors) and all(t.device.type == device_type for t in tensors.values()),
        "equal": equal,
    }


CUDA_VARIANTS = ("cuda", "cuda-host", "cpu", "floor-cuda", "floor-cpu")


def cuda_channel(
    rank: int, world: int, small: int = 4, scope: int = 3, warmup: int = 1, device: str = "cuda"
) -> Any:
    """Envelopes over gloo with device tensors, every rank on cuda:0, beside a CPU channel.

    For each kind (``small``, ``scope``) and iteration, after an untimed barrier, in turn
    (the order rotates): ``cuda`` (a device channel, device tensors), ``cuda-host`` (the
    same channel, host tensors: the sender's ``encode`` moves them), ``cpu`` (a CPU
    channel), ``floor-cuda`` and ``floor-cpu`` (one broadcast of exactly the tensor bytes).
    Every rank returns its time per step (seconds, to a device synchronize after it) and
    every worker what it received, checked after the timing. Then refusals on the device
    channel: an envelope the sender refuses before frame 0, and a forged one (a sender that
    skipped validation) that the worker refuses after the receive, still in lockstep.
    ``device="cpu"`` runs the same steps without a GPU (the scenario's own test on CPU CI).
    """
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(0)
    dev = torch.device(device, 0) if device == "cuda" else torch.device(device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    ch_dev = BroadcastChannel(tc.BINDINGS, poison="raise", device=dev, watchdog_s=60).open()
    ch_cpu = BroadcastChannel(tc.BINDINGS, poison="raise", watchdog_s=60).open()
    hosts = {
        "small": [envelope(i, recompute=i % 2 == 1) for i in range(4)],
        "scope": [scope_envelope(i, recompute=i % 3 == 2) for i in range(3)],
    }
    devs = {k: [on_device(m, dev) for m in ms] for k, ms in hosts.items()}
    calls = {"cuda": 0, "cpu": 0}
    floors: dict[tuple[str, int], torch.Tensor] = {}
    out: dict[str, Any] = {"rank": rank, "series": {}, "received": [], "problems": []}

    def step(kind: str, variant: str, i: int) -> Any:
        want = hosts[kind][i % len(hosts[kind])]
        if variant.startswith("floor"):
            n = sum(t.numel() * t.element_size() for t in _tensor_fields(want).values())
            buf = floors.get((variant, n))
            if buf is None:
                where = dev if variant == "floor-cuda" else torch.device("cpu")
                buf = floors[variant, n] = torch.zeros(n, dtype=torch.uint8, device=where)
            dist.broadcast(buf, src=0)
            return None
        which = "cpu" if variant == "cpu" else "cuda"
        ch = ch_cpu if variant == "cpu" else ch_dev
        calls[which] += 1
        if rank == 0:
            msg = devs[kind][i % len(devs[kind])] if variant == "cuda" else want
            ch.send(msg, header(calls[which]))
            return None
        return ch.recv()

    for kind, n in (("small", small), ("scope", scope)):
        for j in range(warmup + n):
            k = j % len(CUDA_VARIANTS)
            for variant in CUDA_VARIANTS[k:] + CUDA_VARIANTS[:k]:
                dist.barrier()
                sync()
                t0 = time.perf_counter()
                got = step(kind, variant, j)
                sync()
                dt = time.perf_counter() - t0
                if j >= warmup:
                    out["series"].setdefault(f"{kind}/{variant}", []).append(dt)
                if rank != 0 and not variant.startswith("floor"):
                    want = hosts[kind][j % len(hosts[kind])]
                    on = "cpu" if variant == "cpu" else dev.type
                    row = {"kind": kind, "variant": variant, "call_id": got.header.call_id}
                    row.update(received_as_sent(got.msg, want, on))
                    out["received"].append(row)
    # refusals on the device channel
    if rank == 0:
        try:
            bad = on_device(envelope(50, tp_num_denoise_steps=5), dev)
            ch_dev.send(bad, header(calls["cuda"] + 1))
            out["problems"].append("the sender accepted an inconsistent plan")
        except EnvelopeInvalid as exc:
            out["sender_refused"] = sorted({(v.code, v.field) for v in exc.violations})
        # a buggy rank 0 that skipped validation: frames of device tensors, one word changed
        calls["cuda"] += 1
        forged = header(calls["cuda"])
        frames = tc.encode(on_device(envelope(51), dev), forged, device=dev)
        words = frames.frame0.tolist()
        steps = next(i for i in range(tc.W_SCALARS, tc.W_MANIFEST) if words[i] == 4)
        words[steps] = 5
        ch_dev.sender.transmit(wire.Frames(wire.seal(words), frames.segments), forged)
        calls["cuda"] += 1
        ch_dev.send(devs["small"][0], header(calls["cuda"]))
        ch_dev.shutdown()
        ch_cpu.shutdown()
        return out
    try:
        ch_dev.recv()
        out["problems"].append("the worker accepted a forged envelope")
    except EnvelopeInvalid as exc:
        out["worker_refused"] = sorted({(v.code, v.field) for v in exc.violations})
    after = ch_dev.recv()
    out["after_refusal"] = {"action": after.action.name}
    out["after_refusal"].update(received_as_sent(after.msg, hosts["small"][0], dev.type))
    out["last"] = [ch_dev.recv().action.name, ch_cpu.recv().action.name]
    return out


# --- control actions of specs other than the shipped two (issue 14, finding 1) -------------


def control_actions(rank: int, world: int, spec: str, case: str) -> Any:
    """Heartbeats, then a with-block that ends in SHUTDOWN or ERROR, on a spec whose control
    actions and bool header fields are its own (tests/specs/codec.yaml, telemetry.yaml)."""
    from pathlib import Path

    import torch.distributed as dist

    from tpwire.codegen import compile as compile_spec

    proto = compile_spec(Path(__file__).parent / "specs" / spec)
    cpu = dist.new_group(backend="gloo")
    if rank == 0:
        ch = BroadcastChannel(proto, cpu_group=cpu, heartbeat_s=0.2)
        try:
            with ch:
                time.sleep(1.0)  # idle: heartbeats keep the workers' watchdogs fed
                if case == "error":
                    raise ValueError("the encoder failed")
        except ValueError:
            pass
        return {}
    ch = BroadcastChannel(proto, cpu_group=cpu, watchdog_s=3.0).open()
    actions = []
    while True:
        got = ch.recv()
        actions.append(got.action.name)
        if got.action in (proto.BINDINGS.shutdown, proto.BINDINGS.error):
            reason = None if got.reason is None else [got.reason.code.name, got.reason.text]
            return {"actions": actions, "reason": reason}
