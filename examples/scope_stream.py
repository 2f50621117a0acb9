"""Stream Scope-sized v1 envelopes from rank 0 to its TP workers (run under torchrun).

    make demo        # 2 ranks on CPU/gloo, 20 chunks
    python -m torch.distributed.run --standalone --nproc-per-node 2 examples/scope_stream.py --chunks 20

Every chunk carries latents [1,3,16,40,72] bf16, conditioning_embeds [1,512,4096] bf16 and 4
denoising steps; chunk 10 is a hard cut (cache_epoch + 1, caches reset) and every third
chunk recomputes the KV cache (context frames attached, one more generator call). Each rank
prints one line per chunk with the ids, the epoch and the microseconds its side took.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from tpwire.generated import tp_control as tc
from tpwire.runtime.channel import BroadcastChannel
from tpwire.runtime.lockstep import Ledger

HARD_CUT = 10
RECOMPUTE_EVERY = 3


def chunk(i: int, epoch: int, cut: bool) -> tuple[tc.Header, tc.InferV1GeneratorOnly]:
    recompute = i % RECOMPUTE_EVERY == RECOMPUTE_EVERY - 1
    g = torch.Generator().manual_seed(i)
    header = tc.Header(
        call_id=i + 1, chunk_index=i, control_epoch=0, cache_epoch=epoch, action=tc.TPAction.INFER
    )
    msg = tc.InferV1GeneratorOnly(
        tp_envelope_version=1,
        height=320,
        width=576,
        current_start_frame=3 * i,
        init_cache=cut,
        manage_cache=True,
        tp_reset_kv_cache=cut,
        tp_reset_crossattn_cache=cut,
        conditioning_embeds_updated=cut,
        kv_cache_attention_bias=0.3,
        tp_do_kv_recompute=recompute,
        tp_num_denoise_steps=4,
        tp_expected_generator_calls=4 + int(recompute),
        denoising_step_list=torch.tensor([1000, 750, 500, 250]),
        latents=torch.randn(1, 3, 16, 40, 72, generator=g).to(torch.bfloat16),
        conditioning_embeds=torch.randn(1, 512, 4096, generator=g).to(torch.bfloat16),
        context_frames_override=(
            torch.randn(1, 1, 16, 40, 72, generator=g).to(torch.bfloat16) if recompute else None
        ),
        base_seed=1234,
    )
    return header, msg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    ch = BroadcastChannel(
        tc, watchdog_s=30.0, parity_flags={"tp_plan": "v1_generator_only", "compile": False}
    ).open()
    if rank == 0:
        epoch = 0
        for i in range(args.chunks):
            cut = i == HARD_CUT
            epoch += int(cut)
            header, msg = chunk(i, epoch, cut or i == 0)
            start = time.perf_counter()
            ch.send(msg, header)
            us = (time.perf_counter() - start) * 1e6
            print(
                f"[rank0] chunk {i:2d} call_id={header.call_id:2d} cache_epoch={epoch} "
                f"recompute={int(msg.tp_do_kv_recompute)} sent in {us:8.0f} us",
                flush=True,
            )
        ch.shutdown()
    else:
        ledger = Ledger(tc.BINDINGS)
        while True:
            start = time.perf_counter()
            got = ch.recv()
            us = (time.perf_counter() - start) * 1e6
            if got.action is tc.TPAction.SHUTDOWN:
                print(f"[rank{rank}] SHUTDOWN call_id={got.header.call_id}: leaving", flush=True)
                break
            msg = got.msg
            assert isinstance(msg, tc.InferV1GeneratorOnly)
            ledger.begin(msg.tp_expected_generator_calls, got.header)
            for _ in range(msg.tp_expected_generator_calls):
                ledger.call()  # the generator forward would run here
            ledger.end()
            h = got.header
            print(
                f"[rank{rank}] chunk {h.chunk_index:2d} call_id={h.call_id:2d} "
                f"cache_epoch={h.cache_epoch} calls={ledger.observed} recv (waiting included) "
                f"{us:8.0f} us",
                flush=True,
            )
    ch.close(destroy_group=True)


if __name__ == "__main__":
    main()
