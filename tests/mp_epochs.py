"""Scenarios of the optimize mode (fields cached by an epoch) on real gloo groups, run by
tests/test_epochs_mp.py (one call per rank; JSON-able results, logs in the rank's file).

The stream: CHUNKS chunks, new conditioning every UPDATE_EVERY chunks (conditioning_epoch
+1), a hard cut at CUT (cache_epoch +1: the conditioning is sent again). A worker "calls
the generator" for a chunk once ``recv`` handed it over: that is where the digest of the
inputs it would run is taken.
"""

from __future__ import annotations

from typing import Any

import torch

from tpwire.generated import tp_control as tc
from tpwire.generated import tp_control_v2 as t2
from tpwire.runtime import tripwire
from tpwire.runtime.channel import BroadcastChannel
from tpwire.runtime.compat import CompatBroadcastChannel
from tpwire.runtime.errors import EnvelopeInvalid

CHUNKS = 16
UPDATE_EVERY = 5
CUT = 8
#: (1, T, D) bf16 of 2 MiB: over the CPU carry limit, so it travels in its own collective
COND_SHAPE = (1, 256, 4096)


def conditioning_epoch(i: int) -> int:
    return i // UPDATE_EVERY


def cache_epoch(i: int) -> int:
    return int(i >= CUT)


def carries_conditioning(i: int) -> bool:
    """Rank 0 sends the conditioning on the first chunk, on an update and on the hard cut."""
    return i % UPDATE_EVERY == 0 or i == CUT


def prompt(k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + k)
    return torch.randn(COND_SHAPE, generator=g).to(torch.bfloat16)


def inputs(i: int) -> dict[str, Any]:
    """The inputs rank 0 means for chunk i: the same for the v1 and the v2 stream."""
    g = torch.Generator().manual_seed(i)
    fresh = carries_conditioning(i)
    return dict(
        height=16,
        width=24,
        current_start_frame=i,
        init_cache=i in (0, CUT),
        manage_cache=True,
        tp_reset_kv_cache=i in (0, CUT),
        tp_reset_crossattn_cache=fresh,
        conditioning_embeds_updated=fresh,
        kv_cache_attention_bias=0.25,
        tp_do_kv_recompute=False,
        tp_num_denoise_steps=2,
        denoising_step_list=torch.tensor([1000, 500]),
        latents=torch.randn(1, 1, 4, 2, 3, generator=g).to(torch.bfloat16),
        conditioning_embeds=prompt(conditioning_epoch(i)),
        context_frames_override=None,
        base_seed=i,
    )


def v1_envelope(i: int) -> tc.InferV1GeneratorOnly:
    return tc.InferV1GeneratorOnly(tp_envelope_version=1, **inputs(i))


def v2_envelope(
    i: int, *, send: bool | None = None, epoch: int | None = None
) -> t2.InferV1GeneratorOnly:
    fields = inputs(i)
    send = carries_conditioning(i) if send is None else send
    if not send:
        fields["conditioning_embeds"] = None
    fields["tp_reset_crossattn_cache"] = fields["conditioning_embeds_updated"] = send
    return t2.InferV1GeneratorOnly(
        tp_envelope_version=2,
        conditioning_epoch=conditioning_epoch(i) if epoch is None else epoch,
        **fields,
    )


def header(proto: Any, i: int, seq: int | None = None) -> Any:
    return proto.Header(
        call_id=i + 1 if seq is None else seq,
        chunk_index=i,
        control_epoch=0,
        cache_epoch=cache_epoch(i),
        action=proto.TPAction.INFER,
    )


def digest(msg: Any) -> str:
    """What the generator would run on: conditioning and latents."""
    return f"{tripwire.digest_tensors([msg.conditioning_embeds, msg.latents]) & (2**64 - 1):016x}"


def worker_loop(ch: Any, *, forget_before: int | None = None) -> dict[str, Any]:
    """Receive until a terminal action: the digest per chunk handed over (a "generator
    call"), the chunks whose conditioning came from the cache, the refusals."""
    out: dict[str, Any] = {"calls": {}, "kept": [], "refused": [], "end": None}
    while True:
        if forget_before is not None and ch.last_header is not None:
            if ch.last_header.chunk_index == forget_before - 1:
                ch.forget_cached()  # this worker restarts with an empty cache
                forget_before = None
        try:
            got = ch.recv()
        except EnvelopeInvalid as exc:
            # refused after the whole envelope arrived: no generator call for it
            out["refused"].append(
                {
                    "chunk": exc.violations[0].id("chunk_index"),
                    "violations": [
                        [v.code, v.field, v.fm, v.expected, v.actual, v.message]
                        for v in exc.violations
                    ],
                }
            )
            continue
        if got.msg is not None:
            i = got.header.chunk_index
            out["calls"][str(i)] = digest(got.msg)
            if got.kept:
                out["kept"].append(i)
        if got.action in (ch.protocol.shutdown, ch.protocol.error):
            out["end"] = got.action.name
            out["reason"] = got.reason.text if got.reason is not None else None
            return out


def stream(rank: int, world: int) -> Any:
    """The same inputs as a v1 stream, then as an optimize-mode stream (3 ranks)."""
    if rank == 0:
        with BroadcastChannel(tc, poison="raise", watchdog_s=30) as ch:
            for i in range(CHUNKS):
                ch.send(v1_envelope(i), header(tc, i))
        meant = {str(i): digest(v1_envelope(i)) for i in range(CHUNKS)}
        sent = []
        with BroadcastChannel(t2, poison="raise", watchdog_s=30) as ch2:
            for i in range(CHUNKS):
                msg = v2_envelope(i)
                sent.append(msg.conditioning_embeds is not None)
                ch2.send(msg, header(t2, i))
        # the same optimize-mode stream over Scope's current (pickle) wire
        with CompatBroadcastChannel(t2, poison="raise", watchdog_s=30) as ch3:
            for i in range(CHUNKS):
                ch3.send(v2_envelope(i), header(t2, i))
        return {"meant": meant, "sent_conditioning": sent}
    v1 = worker_loop(BroadcastChannel(tc, poison="raise", watchdog_s=30).open())
    v2 = worker_loop(BroadcastChannel(t2, poison="raise", watchdog_s=30).open())
    compat = worker_loop(CompatBroadcastChannel(t2, poison="raise", watchdog_s=30).open())
    return {"v1": v1, "v2": v2, "compat": compat}


def refusals(rank: int, world: int, case: str) -> Any:
    """``sender``: rank 0 bumps conditioning_epoch at chunk 3 without the tensor;
    ``forged``: a rank 0 that skipped its own check sends such frames anyway;
    ``restart``: worker rank 2 loses its cache before chunk 3 (a held chunk)."""
    if rank == 0:
        out: dict[str, Any] = {}
        try:
            with BroadcastChannel(t2, poison="raise", watchdog_s=30) as ch:
                for i in range(3):
                    ch.send(v2_envelope(i), header(t2, i))
                if case == "sender":
                    # the bug: a new prompt's epoch, the tensor forgotten; never sent
                    ch.send(v2_envelope(3, send=False, epoch=1), header(t2, 3))
                elif case == "forged":
                    bad = v2_envelope(3, send=False, epoch=1)
                    ch.sender.transmit(t2.prepare(bad, header(t2, 3)), header(t2, 3))
                for i in range(4 if case == "forged" else 3, 7):
                    ch.send(v2_envelope(i), header(t2, i, seq=i + 2))
        except EnvelopeInvalid as exc:
            out["refused"] = [[v.code, v.field, v.fm, v.message] for v in exc.violations]
        return out
    forget = 3 if case == "restart" and rank == 2 else None
    return worker_loop(
        BroadcastChannel(t2, poison="raise", watchdog_s=30).open(), forget_before=forget
    )
