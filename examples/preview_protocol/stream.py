"""Stream preview frames over a protocol of one's own (run under torchrun from any folder).

    tpwire gen                      # in this folder: spec/preview.yaml -> preview_wire/
    python -m torch.distributed.run --standalone --nproc-per-node 2 stream.py --chunks 6

Rank 0 sends one ``Preview`` per chunk; a new prompt starts a new ``stream_epoch``. The
workers check every envelope (the spec's rules, the ids, the epoch) before they see it and
print one line per chunk.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

# the generated package lies beside this file (a project would install or vendor it)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from preview_wire import preview as pv

from tpwire.runtime.channel import BroadcastChannel

NEW_PROMPT_EVERY = 4


def envelope(i: int) -> tuple[pv.Header, pv.Preview]:
    epoch = i // NEW_PROMPT_EVERY
    frames = torch.full((2, 48, 64, 3), i % 256, dtype=torch.uint8)
    header = pv.Header(seq=i, op=pv.Op.FRAME, stream_epoch=epoch)
    msg = pv.Preview(
        prompt_id=f"prompt-{epoch}",
        codec=pv.Codec.jpeg,
        quality=85,
        num_frames=frames.shape[0],
        frames=frames,
    )
    return header, msg


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chunks", type=int, default=6)
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    # typed from the module: BroadcastChannel[pv.Header, pv.Message, pv.Op] (mypy --strict)
    ch = BroadcastChannel(pv, watchdog_s=30.0).open()
    if rank == 0:
        for i in range(args.chunks):
            header, msg = envelope(i)
            ch.send(msg, header)
        ch.shutdown()
        print(f"[rank0] sent {args.chunks} previews", flush=True)
    else:
        while True:
            got = ch.recv()
            if got.action is pv.Op.STOP:
                print(f"[rank{rank}] STOP seq={got.header.seq}: leaving", flush=True)
                break
            preview = got.msg
            assert isinstance(preview, pv.Preview)
            print(
                f"[rank{rank}] seq={got.header.seq} epoch={got.header.stream_epoch} "
                f"{preview.prompt_id} frames={tuple(preview.frames.shape)} "
                f"first byte={int(preview.frames[0, 0, 0, 0])}",
                flush=True,
            )
    ch.close(destroy_group=True)


if __name__ == "__main__":
    main()
