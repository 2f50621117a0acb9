"""Break a TP stream on purpose and read what each rank says (run under torchrun, 3 ranks).

    python -m torch.distributed.run --standalone --nproc-per-node 3 examples/break_it.py --fault plan
    ... --fault extra-call    # rank 2 runs one generator call more than the plan says
    ... --fault dead-worker   # rank 2 is killed (SIGKILL) after the first chunk
    ... --fault none          # three chunks, then SHUTDOWN

Every rank runs the generator (rank 0 too, as in Scope): each call is one TP collective
(an all_reduce standing for the model's own) inside ``ch.guard(...)``, counted by a
``Ledger`` bound to the channel. Whatever breaks, every rank ends with one line naming the
ids and the reason, and an exit code that says why (86 poisoned, 87 watchdog): no rank is
left waiting in a collective.
"""

from __future__ import annotations

import argparse
import os
import signal
from datetime import timedelta

import torch
import torch.distributed as dist

from tpwire.generated import tp_control as tc
from tpwire.runtime.channel import BroadcastChannel
from tpwire.runtime.lockstep import Ledger


def chunk(i: int, *, bad_plan: bool = False) -> tuple[tc.Header, tc.InferV1GeneratorOnly]:
    header = tc.Header(
        call_id=i + 1, chunk_index=i, control_epoch=0, cache_epoch=0, action=tc.TPAction.INFER
    )
    steps = [1000, 750, 500] if bad_plan else [1000, 750, 500, 250]
    msg = tc.InferV1GeneratorOnly(
        tp_envelope_version=1,
        height=64,
        width=64,
        current_start_frame=3 * i,
        init_cache=i == 0,
        manage_cache=True,
        tp_reset_kv_cache=i == 0,
        tp_reset_crossattn_cache=i == 0,
        conditioning_embeds_updated=i == 0,
        kv_cache_attention_bias=0.3,
        tp_do_kv_recompute=False,
        tp_num_denoise_steps=4,
        denoising_step_list=torch.tensor(steps),
        latents=torch.zeros(1, 3, 16, 8, 8, dtype=torch.bfloat16),
        conditioning_embeds=torch.zeros(1, 8, 64, dtype=torch.bfloat16),
        context_frames_override=None,
        base_seed=1234,
    )
    return header, msg


def generate(
    ch: BroadcastChannel[tc.Header, tc.Message],
    msg: tc.InferV1GeneratorOnly,
    h: tc.Header,
    extra: int,
) -> None:
    ledger = Ledger(channel=ch)
    ledger.begin(msg.tp_expected_generator_calls, h)
    n = msg.tp_expected_generator_calls
    for k in range(n + extra):
        with ch.guard(f"generator call {k + 1} of {n}", header=h):
            ledger.call()  # refuses the call the plan does not have, before its collective
            dist.all_reduce(torch.ones(4))  # the model's TP collective
    ledger.check_ranks()
    ledger.end()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=["none", "plan", "extra-call", "dead-worker"])
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        run(args.fault)
    except Exception:  # the channel has logged the root cause (the FAILED line)
        raise SystemExit(1) from None
    dist.destroy_process_group()


def run(fault: str) -> None:
    rank = dist.get_rank()
    with BroadcastChannel(tc.BINDINGS, watchdog_s=10.0) as ch:
        for i in range(3):
            if rank == 0:
                header, msg = chunk(i, bad_plan=fault == "plan" and i == 1)
                ch.send(msg, header)
            else:
                got = ch.recv()
                if not isinstance(got.msg, tc.InferV1GeneratorOnly):
                    return  # SHUTDOWN or ERROR: the channel has logged why
                header, msg = got.header, got.msg
            if fault == "dead-worker" and rank == 2 and i == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            extra = int(fault == "extra-call" and rank == 2 and i == 1)
            generate(ch, msg, header, extra)
            print(f"[rank{rank}] chunk {i} done", flush=True)
        if rank != 0:
            ch.recv()  # SHUTDOWN, sent when rank 0 leaves its with block


if __name__ == "__main__":
    main()
