"""Scenarios of copy-free sends (``arena=True``, ``alloc``) on real gloo process groups.

Run by tests/test_arena.py through tests/mp.py (one call per rank, hard timeout). Every rank
counts the collectives it runs; workers compare every envelope they got, bit for bit, with
the one the source meant to send, after the whole stream (a view a worker still holds must
keep its bytes whatever the channel received after it).
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from typing import Any

import torch
from mp_scenarios import envelope, header

from tpwire.generated import tp_control as tc
from tpwire.runtime.arena import ArenaError
from tpwire.runtime.channel import BroadcastChannel
from tpwire.runtime.errors import EnvelopeInvalid

#: A: latents 128 KiB and conditioning 64 KiB (one segment each), the step list packed.
#: R: A with context frames (a recompute chunk: one more segment, a one-off layout).
#: G: another geometry (latents 32 KiB, packed): a layout change that lasts.
#: P: A from the caller's own tensors (no alloc).


def message(i: int, kind: str) -> tc.InferV1GeneratorOnly:
    """Envelope ``i`` of ``kind``, the same on every rank."""
    g = torch.Generator().manual_seed(100 + i)
    side = 32 if kind == "G" else 64
    latents = torch.randn(1, 1, 16, side, side, generator=g).to(torch.bfloat16)
    cond = torch.randn(1, 8, 4096, generator=g).to(torch.float16)
    ctx = torch.randn(1, 1, 16, side, side, generator=g).to(torch.bfloat16)
    return envelope(
        i,
        recompute=kind == "R",
        height=side * 8,
        width=side * 8,
        latents=latents,
        conditioning_embeds=cond,
        context_frames_override=ctx if kind == "R" else None,
    )


def _counted(ch: Any, counts: list[int]) -> None:
    """Count every collective the channel runs (sends and receives alike)."""

    def counting(run: Any) -> Any:
        def counted(tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
            counts[-1] += 1
            run(tensor, tag, frame0=frame0)

        return counted

    ch.transport.put = counting(ch.transport.put)
    ch.transport.get = counting(ch.transport.get)


def built_in_arena(ch: BroadcastChannel[Any, Any], msg: Any) -> Any:
    """``msg`` with each tensor written into what ``alloc`` gave for it (the way a source
    builds its tensors in place), the other fields as they are."""
    fields = {}
    for name in ("latents", "conditioning_embeds", "context_frames_override"):
        t = getattr(msg, name)
        if t is not None:
            fields[name] = ch.alloc(name, t.shape, t.dtype).copy_(t)
    return dataclasses.replace(msg, **fields)


def stream(rank: int, world: int, plan: str = "AAARAA.APAGGGAA") -> Any:
    """The plan's envelopes (``.`` a NOOP), then SHUTDOWN; the source builds every tensor but
    P's with ``alloc``. Returns the collectives per envelope, the source's arena counts per
    envelope and the worker's comparisons."""
    ch = BroadcastChannel(tc, poison="raise", arena=True).open()
    counts: list[int] = []
    _counted(ch, counts)
    stats: list[dict[str, int]] = []
    kept = []
    for i, kind in enumerate([*plan, "SHUTDOWN"]):
        counts.append(0)
        if rank == 0:
            before = ch.arena_stats.as_dict()
            if kind == ".":
                ch.noop()
            elif kind == "SHUTDOWN":
                ch.shutdown()
            else:
                msg = message(i, kind)
                ch.send(msg if kind == "P" else built_in_arena(ch, msg), header(i + 1, chunk=i))
            after = ch.arena_stats.as_dict()
            stats.append({k: after[k] - before[k] for k in after})
        else:
            got = ch.recv()
            if got.msg is not None:
                kept.append((i, kind, got.msg))
    equal = [msg == message(i, kind) for i, kind, msg in kept]
    return {"counts": counts, "stats": stats, "equal": equal}


def misuse(rank: int, world: int) -> Any:
    """Each misuse raises before frame 0 and sends nothing; the stream goes on afterwards.
    The worker records every envelope it gets (call id and whether its bytes are right)."""
    ch = BroadcastChannel(tc, poison="raise", arena=True).open()
    counts: list[int] = [0]
    _counted(ch, counts)
    if rank != 0:
        seen = []
        while True:
            got = ch.recv()
            row: dict[str, Any] = {"call_id": got.header.call_id, "action": got.action.name}
            if got.msg is not None:
                row["equal"] = got.msg == message(got.header.chunk_index, "A")
            seen.append(row)
            if got.action is tc.TPAction.SHUTDOWN:
                return {"seen": seen, "collectives": counts[0]}
    out: dict[str, Any] = {}

    def send(msg: Any, chunk: int) -> None:
        ch.send(msg, header(ch.next_sequence(), chunk=chunk))  # call ids 0, 1, ...

    def refused(what: str, fn: Any) -> None:
        n = counts[0]
        try:
            fn()
        except (ArenaError, EnvelopeInvalid, RuntimeError) as exc:
            out[what] = {"error": type(exc).__name__, "text": str(exc), "sent": counts[0] - n}
        else:
            out[what] = {"error": None, "sent": counts[0] - n}

    # before a layout is agreed: an ordinary tensor, not a view
    first = ch.alloc("latents", (1, 1, 16, 64, 64), torch.bfloat16)
    out["first_is_view"] = first.untyped_storage().data_ptr() == _head(ch)
    send(message(0, "A"), 0)
    send(message(1, "A"), 1)  # agreed from here on
    refused("unknown_field", lambda: ch.alloc("nope", (1,), torch.float16))
    refused("scalar_field", lambda: ch.alloc("height", (1,), torch.int64))
    refused("bad_dtype", lambda: ch.alloc("latents", (1,), torch.complex64))
    m2 = built_in_arena(ch, message(2, "A"))
    out["view_in_head"] = m2.latents.untyped_storage().data_ptr() == _head(ch)
    out["same_view_twice"] = ch.alloc("latents", m2.latents.shape, m2.latents.dtype) is m2.latents
    # a refused envelope sends nothing and keeps the views valid
    bad = dataclasses.replace(m2, tp_num_denoise_steps=3, tp_expected_generator_calls=3)
    refused("invalid", lambda: send(bad, 2))
    # a tensor made from a view (not the view itself) is refused
    made = dataclasses.replace(m2, latents=m2.latents.reshape(m2.latents.shape))
    refused("made_from_view", lambda: send(made, 2))
    refused("ordering", lambda: ch.send(m2, header(0, chunk=2)))  # call id 0 again
    refused("valid_after_refusals", lambda: send(m2, 2))
    # the views of the envelope just sent are spent
    stale = dataclasses.replace(message(3, "A"), latents=m2.latents)
    out["stale_bytes_kept"] = bool(torch.equal(m2.latents, message(2, "A").latents))
    refused("stale", lambda: send(stale, 3))
    # a view of one field passed as another (same shape and dtype)
    view = ch.alloc("latents", (1, 1, 16, 64, 64), torch.bfloat16)
    recompute = dataclasses.replace(
        message(3, "A"), tp_do_kv_recompute=True, tp_expected_generator_calls=5,
        context_frames_override=view,
    )  # fmt: skip
    refused("other_field", lambda: send(recompute, 3))
    refused("after_other_field", lambda: send(built_in_arena(ch, message(3, "A")), 3))
    # a NOOP (a heartbeat) between alloc and send writes only frame 0 and the trailer: the
    # views stay valid and are sent from their place
    before = ch.arena_stats.in_place
    m4 = built_in_arena(ch, message(4, "A"))
    ch.noop()
    refused("after_noop", lambda: send(m4, 4))
    out["in_place_after_noop"] = ch.arena_stats.in_place - before
    # bytes in the head that are no live view: a view spent by a send and collected (no
    # view alive at all), and an alias of a live view with a storage of its own (dlpack)
    spent = m4.latents[0]
    m2 = m4 = made = bad = stale = view = recompute = None
    gc.collect()
    out["views_alive"] = len(ch.sender.arena.handed)  # type: ignore[union-attr]
    want = message(5, "A")
    spent.copy_(want.latents[0])
    refused("spent_slice", lambda: send(dataclasses.replace(want, latents=spent.unsqueeze(0)), 5))
    live = ch.alloc("latents", tuple(want.latents.shape), want.latents.dtype)
    alias = torch.from_dlpack(live)
    alias.copy_(want.latents)
    refused("dlpack_alias", lambda: send(dataclasses.replace(want, latents=alias), 5))
    plain = BroadcastChannel(tc, poison="raise")  # not opened: no collective
    refused("no_arena", lambda: plain.alloc("latents", (1,), torch.bfloat16))
    ch.shutdown()
    out["collectives"] = counts[0]
    out["stats"] = ch.arena_stats.as_dict()
    return out


def worker_alloc(rank: int, world: int) -> Any:
    """``alloc`` is the source's: a worker calling it gets a clear error, nothing hangs."""
    ch = BroadcastChannel(tc, poison="raise", arena=True).open()
    if rank == 0:
        ch.send(message(0, "A"), header(1, chunk=0))
        ch.shutdown()
        return {}
    try:
        ch.alloc("latents", (1, 1, 16, 64, 64), torch.bfloat16)
    except RuntimeError as exc:
        error = str(exc)
    actions = [ch.recv().action.name, ch.recv().action.name]
    return {"error": error, "actions": actions}


def alloc_beside_heartbeat(rank: int, world: int) -> Any:
    """With a cpu_group (heartbeats) no layout is ever agreed, so ``alloc`` has no view to
    hand out and does not wait for the send lock a heartbeat's NOOP holds while the workers
    compute: it never trips the watchdog's wait for that lock."""
    cpu = torch.distributed.new_group(backend="gloo")
    ch = BroadcastChannel(tc, poison="raise", arena=True, cpu_group=cpu, watchdog_s=1.0).open()
    if rank != 0:
        actions = []
        while (got := ch.recv()).action is not tc.TPAction.SHUTDOWN:
            actions.append(got.action.name)
        return {"actions": actions}
    held = threading.Event()
    release = threading.Event()

    def heartbeat_in_flight() -> None:  # the lock held, as a NOOP to busy workers holds it
        with ch.policy.lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=heartbeat_in_flight)
    holder.start()
    held.wait(10)
    started = time.monotonic()
    tensor = ch.alloc("latents", (1, 1, 16, 64, 64), torch.bfloat16)
    waited = time.monotonic() - started
    try:
        ch.alloc("nope", (1,), torch.float16)
    except ArenaError as exc:
        error = str(exc)
    release.set()
    holder.join()
    want = message(0, "A")
    tensor.copy_(want.latents)
    ch.send(dataclasses.replace(want, latents=tensor), header(ch.next_sequence(), chunk=0))
    ch.shutdown()
    return {"waited": waited, "error": error, "stats": ch.arena_stats.as_dict()}


def _head(ch: BroadcastChannel[Any, Any]) -> int:
    return ch.sender.framing.send_buffer(torch.device("cpu")).untyped_storage().data_ptr()


def p2p(rank: int, world: int, n: int = 5) -> Any:
    """A pipeline stage builds its envelopes in the arena of a p2p channel; the next stage
    gets them bit for bit; from the third on, each is one send and no copy."""
    from mp_scenarios import pp_envelope, pp_header

    from tpwire.generated import pp_contract as pp
    from tpwire.runtime.channel import P2PChannel

    ch = P2PChannel(pp, peer=1 - rank, poison="raise", arena=True).open()
    counts: list[int] = []
    _counted(ch, counts)
    equal = []
    for i in range(n):
        counts.append(0)
        msg = pp_envelope(i, init=i == 0)
        if rank == 0:
            fields = {
                name: ch.alloc(name, t.shape, t.dtype).copy_(t)
                for name in ("latents_in", "conditioning_embeds", "denoising_step_list")
                if (t := getattr(msg, name)) is not None
            }
            ch.send(dataclasses.replace(msg, **fields), pp_header(i + 1, i, 0, "INFER"))
        else:
            equal.append(ch.recv().msg == msg)
    return {"counts": counts, "equal": equal, "stats": ch.arena_stats.as_dict()}
