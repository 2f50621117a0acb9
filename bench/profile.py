"""``python -m bench.profile``: where one rank's time goes while tpwire streams envelopes.

Two ranks (gloo, one process each) move one kind of envelope through ``BroadcastChannel``
for ``--seconds``, each iteration after a barrier as in ``make bench``. py-spy samples both
processes, and the report attributes each rank's samples inside ``send`` / ``recv`` to the
innermost tpwire line, apart from the samples inside the collectives themselves: the CPU path
an envelope costs on top of moving its bytes.

python -m bench.profile --kind small --seconds 8
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import envelopes as E
from bench.__main__ import _free_port

#: (rank, the channel method whose samples count)
SIDES = ((0, "Sender.send"), (1, "Receiver.recv"))
_COLLECTIVE = ("BroadcastTransport.put", "BroadcastTransport.get")


def _stream(rank: int, port: int, kind_name: str, ready: str, stop: str) -> None:
    import torch
    import torch.distributed as dist

    from tpwire.runtime.channel import BroadcastChannel

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
        timeout=timedelta(seconds=120),
    )  # fmt: skip
    torch.set_num_threads(1)
    kind = E.KINDS[kind_name]
    proto = kind.protocol()
    msgs = [kind.message(proto, i) for i in range(24)]
    ch: BroadcastChannel[Any, Any] = BroadcastChannel(proto, poison="raise").open()
    Path(ready, str(rank)).write_text(str(os.getpid()))
    i = 0
    while True:
        flag = torch.tensor([int(rank == 0 and os.path.exists(stop))])
        dist.broadcast(flag, src=0)  # both ranks stop at the same iteration
        if flag.item():
            break
        dist.barrier()
        msg = msgs[i % len(msgs)]
        if rank == 0:
            ch.noop() if msg is None else ch.send(msg, E.header(proto, i + 1, i))
        else:
            ch.recv()
        i += 1
    dist.barrier()
    os._exit(0)


def attribute(raw: str, method: str) -> tuple[int, int, int, collections.Counter[str]]:
    """(all samples, samples in ``method`` outside collectives, in collectives, per line)."""
    total = ours = collective = 0
    lines: collections.Counter[str] = collections.Counter()
    for row in raw.splitlines():
        stack, _, count = row.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        at = next((i for i, f in enumerate(frames) if f.startswith(method)), None)
        if at is None:
            continue
        inner = frames[at:]
        if any(f.startswith(_COLLECTIVE) for f in inner):
            collective += n
            continue
        ours += n
        tp = [f for f in inner if "tpwire" in f]
        lines[tp[-1] if tp else inner[-1]] += n
    return total, ours, collective, lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--kind", choices=sorted(E.KINDS), default="small")
    ap.add_argument("--seconds", type=int, default=8, help="how long py-spy samples")
    ap.add_argument("--rate", type=int, default=1000, help="samples per second")
    ap.add_argument("--top", type=int, default=15, help="lines listed per rank")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("bench.profile: py-spy is not installed (pip install -e '.[bench]')")
        return 2
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        ready, stop = Path(tmp, "ready"), Path(tmp, "stop")
        ready.mkdir()
        port = _free_port()
        procs = [
            ctx.Process(target=_stream, args=(r, port, args.kind, str(ready), str(stop)))
            for r in (0, 1)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 120
        while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # past the first envelopes: steady state
        spies = []
        for rank, _ in SIDES:
            pid = Path(ready, str(rank)).read_text()
            out = Path(tmp, f"rank{rank}.txt")
            cmd = [spy, "record", "-p", pid, "-r", str(args.rate), "-d", str(args.seconds)]
            spies.append((out, subprocess.Popen([*cmd, "-f", "raw", "-o", str(out)],
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE)))  # fmt: skip
        for _, s in spies:
            s.wait(timeout=args.seconds + 60)
        stop.write_text("")
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
        for (rank, method), (out, s) in zip(SIDES, spies, strict=True):
            if not out.exists():
                err = s.stderr.read().decode() if s.stderr else ""
                print(f"bench.profile: py-spy failed on rank {rank}: {err.strip()}")
                return 1
            total, ours, coll, lines = attribute(out.read_text(), method)
            print(
                f"rank {rank} ({method.split('.')[-1]}, {args.kind}): {total} samples; "
                f"tpwire's CPU path {ours} ({ours / max(total, 1):.0%}), "
                f"inside collectives {coll} ({coll / max(total, 1):.0%})"
            )
            for where, n in lines.most_common(args.top):
                print(f"  {n / max(total, 1):6.1%}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
