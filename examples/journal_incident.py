"""A journaled stream on 3 ranks, and an incident to find with ``tpwire journal diff``.

    TPWIRE_JOURNAL=/tmp/incident python -m torch.distributed.run --standalone \\
        --nproc-per-node 3 examples/journal_incident.py --perturb 2:17
    tpwire journal diff /tmp/incident

Rank 0 streams 30 small v1 envelopes (a hard cut at chunk 15, a recompute every third chunk)
to its TP workers; every rank runs each envelope (a ledger counts the planned generator
calls, a stand-in model makes an output) and journals what it did (``observe``). The
launcher's ``TPWIRE_JOURNAL`` turns the journal on for every rank (it is in the parity
record). ``--perturb RANK:CHUNK``: that rank adds 1 to the first latent of that chunk after
the broadcast (OM-11, a Franken-model in the making); nothing fails, the stream completes,
and only the journals tell.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

import torch
import torch.distributed as dist

from tpwire.generated import tp_control as tc
from tpwire.runtime.channel import BroadcastChannel
from tpwire.runtime.lockstep import Ledger

HARD_CUT = 15


def chunk(i: int) -> tuple[tc.Header, tc.InferV1GeneratorOnly]:
    cut = i in (0, HARD_CUT)
    recompute = i % 3 == 2 and not cut
    g = torch.Generator().manual_seed(i)
    header = tc.Header(
        call_id=i + 1,
        chunk_index=i,
        control_epoch=0,
        cache_epoch=int(i >= HARD_CUT),
        action=tc.TPAction.INFER,
    )
    msg = tc.InferV1GeneratorOnly(
        tp_envelope_version=1,
        height=16,
        width=24,
        current_start_frame=3 * i,
        init_cache=cut,
        manage_cache=True,
        tp_reset_kv_cache=cut,
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
        base_seed=1234,
    )
    return header, msg


def run(
    ch: BroadcastChannel[tc.Header, tc.Message], msg: tc.InferV1GeneratorOnly, h: tc.Header
) -> None:
    """The envelope's planned generator calls and an output; then journal what was done."""
    ledger = Ledger(channel=ch)
    ledger.begin(msg.tp_expected_generator_calls, h)
    out = msg.latents.float()
    for _ in range(msg.tp_expected_generator_calls):
        ledger.call()
        out = out * 0.5 + msg.conditioning_embeds.float().mean()  # the generator would run here
    ledger.end()
    ch.observe(h, inputs=msg, outputs={"latents_out": out})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=30)
    parser.add_argument("--perturb", metavar="RANK:CHUNK", help="OM-11 on that rank and chunk")
    args = parser.parse_args()
    perturb = tuple(int(x) for x in args.perturb.split(":")) if args.perturb else None
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    with BroadcastChannel(tc.BINDINGS, watchdog_s=30.0) as ch:
        if rank == 0:
            for i in range(args.chunks):
                header, msg = chunk(i)
                ch.send(msg, header)
                run(ch, msg, header)
        else:
            while True:
                got = ch.recv()
                if got.action is tc.TPAction.SHUTDOWN:
                    break
                assert isinstance(got.msg, tc.InferV1GeneratorOnly)
                if perturb == (rank, got.header.chunk_index):
                    got.msg.latents.view(-1)[0] += 1
                run(ch, got.msg, got.header)
    print(f"[rank{rank}] done; journal: {ch.journal.path if ch.journal else 'off'}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
