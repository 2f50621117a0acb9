"""tpwire's CPU path per envelope: what a channel adds on top of moving the bytes.

Both ends of a broadcast ``Channel`` run in one process (a gloo group of one rank, used by the
open handshake only) over an in-memory transport: the source's ``put`` keeps the tensor it
would broadcast, the worker's ``get`` copies it into the buffer the channel hands it. That copy is the collective's own work, so it is timed and left out;
what remains is everything else: the source's preflight and layout, the worker's buffers,
frame 0 checks, views and validation. Every envelope the worker receives is compared with
the one sent (the untimed ones), so the path measured is one that works.

The worker's time is split at its head collective: the part before it (receive buffer, views
made ahead) overlaps with the source's preflight in a real stream; the part after it does
not. So a stream pays ``source + worker after`` on top of its collectives.

Three conditions: a tight loop (caches warm), 16 MiB of other memory traffic before each
envelope (a model's tensors passing through the caches), and 1 ms idle before each envelope.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import envelopes as E

#: condition -> (title, what runs before each envelope)
CONDITIONS = ("tight", "traffic", "idle")
TITLES = {
    "tight": "tight loop",
    "traffic": "after 16 MiB of memory traffic",
    "idle": "after 1 ms idle",
}
PARTS = ("source", "before", "after")  # the worker's time before and after its head


def _quantiles(xs: list[float]) -> list[float]:
    q = statistics.quantiles(xs, n=10)
    return [statistics.median(xs) * 1e6, q[0] * 1e6, q[-1] * 1e6]


def _run(port: int, kinds: tuple[str, ...], counts: dict[str, int], out: str) -> None:
    """The child process: one rank, both ends, every kind and condition."""
    import torch
    import torch.distributed as dist

    from tpwire.runtime.channel import Channel, ChannelOptions
    from tpwire.runtime.transport import BroadcastTransport

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
        timeout=timedelta(seconds=60),
    )  # fmt: skip
    torch.set_num_threads(1)
    wire: collections.deque[torch.Tensor] = collections.deque()
    marks: list[tuple[float, float]] = []  # (start, end) of every worker get
    clock = time.perf_counter

    class Source(BroadcastTransport):
        def put(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
            wire.append(tensor)  # the worker runs next: the bytes are still there

        get = put

    class Worker(BroadcastTransport):
        def get(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
            t0 = clock()
            tensor.copy_(wire.popleft())
            marks.append((t0, clock()))

        put = get

    junk = torch.zeros(16 << 20, dtype=torch.uint8)
    before_each: dict[str, Callable[[], object]] = {
        "tight": lambda: None,
        "traffic": lambda: junk.add_(1),
        "idle": lambda: time.sleep(0.001),
    }
    rows = []
    call_id = 0
    for name in kinds:
        kind = E.KINDS[name]
        proto = kind.protocol()
        msgs = [kind.message(proto, i) for i in range(24)]
        opts = ChannelOptions(poison="raise")
        source = Channel(proto, Source(src=0), opts).open()
        worker = Channel(proto, Worker(src=1), opts).open()  # rank 0 is not its source
        row: dict[str, Any] = {"kind": name}
        j = 0  # the chunk of this kind's stream (its first one carries every cached field)
        for cond in CONDITIONS:
            series: dict[str, list[float]] = {p: [] for p in PARTS}
            warmup = 30
            for i in range(warmup + counts[cond]):
                before_each[cond]()
                msg = msgs[j % len(msgs)]
                if msg is not None and kind.restamp is not None:
                    msg = kind.restamp(msg, j)
                j += 1
                call_id += 1
                header = E.header(proto, call_id, call_id)  # the caller's work, not timed
                marks.clear()
                t0 = clock()
                if msg is None:
                    source.noop()
                else:
                    source.send(msg, header)
                t1 = clock()
                got = worker.recv()
                t2 = clock()
                if i < warmup:
                    # checked on the untimed envelopes only: comparing megabytes of
                    # tensors would cool the caches of the timed ones
                    # the fields the worker kept (optimize mode) come from its cache
                    kept = dict.fromkeys(got.kept)
                    sent = dataclasses.replace(got.msg, **kept) if kept else got.msg  # type: ignore[type-var]
                    if sent != msg:
                        raise SystemExit(f"cpu_path: {name}: the worker got another envelope")
                    continue
                head_start, head_end = marks[0]
                moved = sum(b - a for a, b in marks[1:])
                series["source"].append(t1 - t0)
                series["before"].append(head_start - t1)
                series["after"].append(t2 - head_end - moved)
            row[cond] = {p: _quantiles(xs) for p, xs in series.items()}
        rows.append(row)
    Path(out).write_text(json.dumps(rows))


def measure(kinds: tuple[str, ...], n: int) -> list[dict[str, Any]]:
    """Median and 10th-90th percentile (microseconds) per kind, condition and part:
    ``n`` envelopes in the tight loop, ``n // 4`` in each of the others."""
    from bench.__main__ import _free_port

    counts = {"tight": n, "traffic": max(n // 4, 20), "idle": max(n // 4, 20)}
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp, "cpu_path.json"))
        proc = mp.get_context("spawn").Process(target=_run, args=(_free_port(), kinds, counts, out))
        proc.start()
        proc.join(300)
        if proc.is_alive():
            proc.kill()
            raise SystemExit("cpu_path: the measuring process did not finish in 300 s")
        if proc.exitcode != 0:
            raise SystemExit(f"cpu_path: the measuring process failed (exit {proc.exitcode})")
        rows: list[dict[str, Any]] = json.loads(Path(out).read_text())
    return rows
