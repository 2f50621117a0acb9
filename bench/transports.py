"""The transports, run side by side on one gloo group (one process per rank).

Every transport moves the same envelopes over the same group, interleaved: each transport
moves envelope ``i`` (in an order shuffled every iteration) before any moves ``i + 1``, so
drift of the machine hits them all alike and no transport always follows the same one. Each
iteration is timed on every rank from the end of an untimed barrier to the end of its side
(send on the source, receive + decode + validate on a worker); the iteration's latency is
the slowest rank's time. What a caller does before it sends (the envelope's header, the
producer's writes) and what both sides of the floor know in advance (its size, the source's
bytes) happen before the barrier, untimed.

- ``tpwire``: ``BroadcastChannel`` (steady-state framing) / ``P2PChannel`` for PP.
- ``tpwire-arena``: the same channel opened with ``arena=True``: the source builds the
  envelope's tensors in the channel's send buffer (``alloc``; the producer's writes into
  them happen before the timing starts, as the floor's bytes are ready before its
  broadcast), so a steady-state envelope is one collective with no copy.
- ``no-steady``: the same channel with ``steady_state=False`` (frame 0, then one collective
  per frame 1 segment): what steady-state framing buys.
- ``compat``: ``CompatBroadcastChannel``, Scope's wire today (slot header, pickled meta via
  ``broadcast_object_list``, one broadcast per tensor), validated like tpwire.
- ``vllm``: a vLLM-style tensor dict: pickled metadata, then one broadcast per tensor, no
  validation (what ``broadcast_tensor_dict``-style helpers do).
- ``floor``: one broadcast of a buffer holding exactly the envelope's tensor bytes, no
  header at all (8 bytes for a payload-free envelope: the smallest collective), the same
  warm buffer every time on both sides.
- ``floor-fresh``: the same single broadcast with a stream's memory traffic: each
  envelope's own bytes on the source, a new buffer on every worker.
- ``floor+path``: the floor with tpwire's CPU path per side, as measured alone in one
  process (``bench.cpu_path``, after memory traffic), spun on the CPU: the source spins its
  part before the broadcast, a worker its part after. It has tpwire's collectives and
  tpwire's CPU time and nothing else of tpwire, so what it costs over the floor is what the
  machine makes of that much CPU work between collectives.
- ``arena-nocheck`` (Scope only, a diagnostic): ``tpwire-arena`` with the frame 1 digest
  patched out of this process for its own steps (the source writes 0, workers skip the
  check). The runtime has no such mode; the column measures what the check costs in a
  stream.
- ``carry-all`` (Scope-sized envelopes only): tpwire with no carry limit, so every segment
  of the agreed layout is copied into the head: one collective fewer, a 4 MiB copy more.
- ``journal-digest`` / ``journal-full`` (Scope-sized envelopes only): tpwire with the
  envelope journal on (docs/journal.md), tensors by digest / by their bytes. The journal's
  background writer is drained after each timed step, untimed (so it never runs inside
  another transport's timing); its own time per record is the ``:writer`` series.
- ``journal-written``: ``journal-digest`` with ``handover="written"``: each ``send`` and
  ``recv`` returns once the writer thread has written its record, so the write is inside
  the timing (what surviving a SIGKILL right after ``recv`` costs).
- ``tpwire-metrics`` (Scope-sized envelopes, with the ``metrics`` extra): tpwire with the
  Prometheus metrics recorder on every rank (docs/runtime.md, Metrics): counters, a
  histogram observation and gauges per envelope, on the channel's thread.

The same code runs on gloo with CPU tensors and, on a machine with several GPUs, on NCCL
with every envelope's tensors on the rank's GPU (``Plan.device == "cuda"``): then each
iteration ends with a device synchronize, since a collective returns once it is enqueued,
and compat's slot header travels on a gloo group of the same ranks (it is a CPU tensor).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import pickle
import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from bench import envelopes as E
from tpwire.generated import pp_contract
from tpwire.runtime import wire
from tpwire.runtime.channel import BroadcastChannel, Channel, P2PChannel
from tpwire.runtime.compat import CompatBroadcastChannel

BROADCAST_TRANSPORTS = (
    "tpwire",
    "tpwire-arena",
    "no-steady",
    "compat",
    "vllm",
    "floor",
    "floor-fresh",
)
#: transports run for some kinds only: where they differ from tpwire
JOURNAL_TRANSPORTS = ("journal-digest", "journal-full", "journal-written")
#: the Prometheus metrics recorder beside the journal (without the metrics extra: not run)
METRICS_TRANSPORTS = ("tpwire-metrics",) if importlib.util.find_spec("prometheus_client") else ()
EXTRA_TRANSPORTS = {
    "noop": ("floor+path",),
    "small": ("floor+path",),
    "scope": ("carry-all", "floor+path", "arena-nocheck", *JOURNAL_TRANSPORTS, *METRICS_TRANSPORTS),
    "cond_on_update": ("carry-all", *JOURNAL_TRANSPORTS, *METRICS_TRANSPORTS),
}
PP_TRANSPORTS = ("tpwire", "vllm", "floor")
#: the messages a stream of each kind cycles through
STREAM_MESSAGES = 24


@dataclasses.dataclass
class Plan:
    kinds: tuple[str, ...]
    rounds: int
    iters: int  # rounds x iters timed iterations per transport, interleaved
    warmup: int  # untimed iterations first
    pp: bool
    backend: str = "gloo"
    device: str = "cpu"  # "cuda": every rank on its own GPU (NCCL)
    #: kind -> tpwire's CPU path alone (source, worker after its head), in us (``floor+path``)
    spin_us: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Env:
    """What a transport of one rank needs to know about where it runs."""

    rank: int
    device: torch.device
    cpu_group: Any = None  # a gloo group of the same ranks, on a device backend
    spin_us: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @property
    def on_device(self) -> bool:
        return self.device.type != "cpu"

    def sync(self) -> None:
        """Wait for the device: a collective on it returns once it is enqueued."""
        if self.on_device:
            torch.cuda.synchronize(self.device)


# --- one transport per class: setup once, then step(i) moves envelope i ------------------


class Tpwire:
    def __init__(self, kind: E.Kind, env: Env) -> None:
        self.proto = kind.protocol()
        self.kind = kind
        self.rank = env.rank
        self._msg: Any = None  # the next envelope and its header (``before``)
        self._header: Any = None
        device = env.device if env.on_device else None
        options = {**self.options, **self.device_options(env)}
        self.ch = self.channel_class()(self.proto, poison="raise", device=device, **options)
        self.ch.open()
        self.call_id = 0
        #: this rank's CPU path of each envelope in the stream, in seconds (``split_cpu``)
        self.cpu: list[float] = []
        self._in_collectives = 0.0
        self._head_done = 0.0
        if self.split_cpu:
            self.ch.transport.put = self._timed_collective(self.ch.transport.put)  # type: ignore[method-assign]
            self.ch.transport.get = self._timed_collective(self.ch.transport.get)  # type: ignore[method-assign]

    options: ClassVar[dict[str, Any]] = {}
    #: record the CPU path per envelope inside the stream: the source's send less its
    #: collectives, a worker's receive after its head collective less the collectives after
    split_cpu: ClassVar[bool] = True

    def _timed_collective(self, run: Callable[..., None]) -> Callable[..., None]:
        def timed(tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
            t0 = time.perf_counter()
            try:
                run(tensor, tag, frame0=frame0)
            finally:
                t1 = time.perf_counter()
                if frame0 and self.rank != 0:
                    self._head_done = t1  # a worker's path is what follows its head
                else:
                    self._in_collectives += t1 - t0

        return timed

    def device_options(self, env: Env) -> dict[str, Any]:
        return {}

    def channel_class(self) -> Callable[..., Channel[Any, Any, Any]]:
        return BroadcastChannel

    def before(self, i: int, msg: Any) -> None:
        """The caller's part (untimed, as in ``bench.cpu_path``): the envelope as chunk ``i``
        of the stream, and its header."""
        self.call_id += 1
        if self.rank == 0 and msg is not None:
            if self.kind.restamp is not None:
                msg = self.kind.restamp(msg, i)
            self._header = E.header(self.proto, self.call_id, i)
        self._msg = msg

    def step(self, i: int, msg: Any) -> None:
        self._in_collectives = 0.0
        t0 = time.perf_counter()
        if self.rank == 0:
            if self._msg is None:
                self.ch.noop()
            else:
                self.ch.send(self._msg, self._header)
        else:
            self.ch.recv()
        if self.split_cpu:
            start = t0 if self.rank == 0 else self._head_done
            self.cpu.append(time.perf_counter() - start - self._in_collectives)


class Arena(Tpwire):
    """tpwire with copy-free sends: every tensor built where ``alloc`` places it."""

    options: ClassVar[dict[str, Any]] = {"arena": True}

    def before(self, i: int, msg: Any) -> None:
        """The caller's and the producer's part (untimed): the envelope's tensors written
        where ``alloc`` says."""
        super().before(i, msg)
        msg = self._msg
        if self.rank != 0 or msg is None:
            return
        fields = {}
        for name in type(msg).__dataclass_fields__:
            t = getattr(msg, name)
            if isinstance(t, torch.Tensor):
                fields[name] = self.ch.alloc(name, t.shape, t.dtype).copy_(t)
        self._msg = dataclasses.replace(msg, **fields)


class ArenaNoCheck(Arena):
    """``Arena`` with the frame 1 digest and its check patched out for its own steps (a
    diagnostic of the bench: what the check costs in a stream)."""

    split_cpu: ClassVar[bool] = False

    def step(self, i: int, msg: Any) -> None:
        saved = wire.frame1_digest, wire.verify_frame1
        wire.frame1_digest = _no_digest  # type: ignore[assignment]
        wire.verify_frame1 = _no_check  # type: ignore[assignment]
        try:
            super().step(i, msg)
        finally:
            wire.frame1_digest, wire.verify_frame1 = saved


def _no_digest(*args: Any) -> int:
    return 0


def _no_check(*args: Any) -> None:
    return None


class NoSteady(Tpwire):
    """tpwire without steady-state framing: frame 0, then one collective per segment."""

    options: ClassVar[dict[str, Any]] = {"steady_state": False}
    split_cpu: ClassVar[bool] = False


class CarryAll(Tpwire):
    """tpwire with every segment of the agreed layout copied into the head."""

    options: ClassVar[dict[str, Any]] = {"carry_limit": 1 << 62}
    split_cpu: ClassVar[bool] = False


class Journaled(Tpwire):
    """tpwire with the envelope journal on, into a folder of its own (bounded: 2 files of
    64 MiB); ``settle`` waits for the background writer, outside the timing."""

    mode: ClassVar[str] = "digest"
    handover: ClassVar[str] = "queued"
    folders: ClassVar[list[str]] = []
    _seen: float = 0.0

    def device_options(self, env: Env) -> dict[str, Any]:
        import tempfile

        from tpwire.runtime.journal import JournalConfig

        folder = tempfile.mkdtemp(prefix=f"tpwire-bench-journal-{self.mode}-")
        Journaled.folders.append(folder)
        return {"journal": JournalConfig(folder, self.mode, max_bytes=64 << 20, keep=2,
                                         handover=self.handover)}  # fmt: skip

    def settle(self) -> float:
        """Wait until every record is written; the writer's busy seconds since the last call."""
        journal = self.ch.journal
        assert journal is not None
        journal.drain()
        busy = journal.busy_s - self._seen
        self._seen = journal.busy_s
        return busy


class JournalDigest(Journaled):
    mode: ClassVar[str] = "digest"


class JournalFull(Journaled):
    mode: ClassVar[str] = "full"


class JournalWritten(Journaled):
    """Digest mode, each record written before the call that made it returns."""

    handover: ClassVar[str] = "written"


class Compat(Tpwire):
    split_cpu: ClassVar[bool] = False

    def channel_class(self) -> Callable[..., Channel[Any, Any, Any]]:
        return CompatBroadcastChannel

    def device_options(self, env: Env) -> dict[str, Any]:
        # its slot header is a CPU tensor: on a device backend it needs a CPU group
        return {"cpu_group": env.cpu_group} if env.on_device else {}


def _tensor_dict(msg: Any) -> tuple[dict[str, Any], list[tuple[str, torch.Tensor]]]:
    meta: dict[str, Any] = {}
    tensors = []
    for f in dataclasses.fields(msg):
        v = getattr(msg, f.name)
        if isinstance(v, torch.Tensor):
            tensors.append((f.name, v))
            meta[f.name] = ("tensor", v.dtype, tuple(v.shape))
        else:
            meta[f.name] = v
    return meta, tensors


class Vllm:
    """Pickled metadata (``broadcast_object_list``), then one broadcast per tensor."""

    def __init__(self, kind: E.Kind, env: Env) -> None:
        self.rank = env.rank
        self.device = env.device

    def step(self, i: int, msg: Any) -> None:
        if self.rank == 0:
            meta, tensors = _tensor_dict(msg) if msg is not None else ({}, [])
            dist.broadcast_object_list([meta], src=0)
            for _, t in tensors:
                dist.broadcast(t.contiguous(), src=0)
            return
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0)
        for value in box[0].values():
            if isinstance(value, tuple) and value[:1] == ("tensor",):
                t = torch.empty(value[2], dtype=value[1], device=self.device)
                dist.broadcast(t, src=0)


class Floor:
    """One broadcast of exactly the tensor bytes; both sides know the size in advance."""

    def __init__(self, kind: E.Kind, env: Env) -> None:
        self.device = env.device
        self.buffers: dict[int, torch.Tensor] = {}
        self.buf = torch.zeros(8, dtype=torch.uint8)

    def before(self, i: int, msg: Any) -> None:
        """Untimed: the buffer of this envelope's size (both sides know it in advance)."""
        n = max(E.tensor_bytes(msg), 8)
        buf = self.buffers.get(n)
        if buf is None:
            buf = self.buffers[n] = torch.zeros(n, dtype=torch.uint8, device=self.device)
        self.buf = buf

    def step(self, i: int, msg: Any) -> None:
        dist.broadcast(self.buf, src=0)


def _spin(us: float) -> None:
    """Keep this core busy for ``us`` microseconds (what a CPU path does to the machine)."""
    end = time.perf_counter_ns() + int(us * 1e3)
    while time.perf_counter_ns() < end:
        pass


class FloorPath(Floor):
    """The floor plus tpwire's CPU path per side, spun: the source before its broadcast, a
    worker after it (``Plan.spin_us``, measured alone by ``bench.cpu_path``)."""

    def __init__(self, kind: E.Kind, env: Env) -> None:
        super().__init__(kind, env)
        self.rank = env.rank
        self.source_us, self.worker_us = env.spin_us.get(kind.name, (0.0, 0.0))

    def step(self, i: int, msg: Any) -> None:
        if self.rank == 0:
            _spin(self.source_us)
            super().step(i, msg)
        else:
            super().step(i, msg)
            _spin(self.worker_us)


class FloorFresh:
    """The floor with a stream's memory traffic: the source sends each envelope's own bytes
    (packed once, outside the timing) and a worker receives into a new buffer every time,
    as it must when the model still holds the previous chunk's tensors."""

    def __init__(self, kind: E.Kind, env: Env) -> None:
        self.rank = env.rank
        self.device = env.device
        self.packed: dict[int, torch.Tensor] = {}
        self.nbytes = 8
        self.buf = torch.zeros(8, dtype=torch.uint8)

    def before(self, i: int, msg: Any) -> None:
        """Untimed: the envelope's size, and on the source its bytes packed (once each)."""
        self.nbytes = max(E.tensor_bytes(msg), 8)
        if self.rank != 0:
            return
        key = id(msg)
        buf = self.packed.get(key)
        if buf is None:
            parts = [
                v.reshape(-1).view(torch.uint8)
                for v in (getattr(msg, f) for f in type(msg).__dataclass_fields__)
                if isinstance(v, torch.Tensor)
            ] if msg is not None else []  # fmt: skip
            buf = (
                torch.cat(parts) if parts else torch.zeros(8, dtype=torch.uint8, device=self.device)
            )
            self.packed[key] = buf
        self.buf = buf

    def step(self, i: int, msg: Any) -> None:
        if self.rank != 0:  # a new buffer every time, as a stream's worker needs
            dist.broadcast(torch.empty(self.nbytes, dtype=torch.uint8, device=self.device), src=0)
            return
        dist.broadcast(self.buf, src=0)


class Metered(Tpwire):
    """tpwire with the Prometheus metrics recorder (runtime/metrics.py) on every rank, in a
    registry of its own, not served: what counting each envelope costs the channel."""

    split_cpu: ClassVar[bool] = False

    def device_options(self, env: Env) -> dict[str, Any]:
        from tpwire.runtime.metrics import MetricsRecorder

        return {"recorders": [MetricsRecorder()]}


BROADCAST: dict[str, Callable[[E.Kind, Env], Any]] = {
    "tpwire": Tpwire,
    "tpwire-arena": Arena,
    "no-steady": NoSteady,
    "compat": Compat,
    "vllm": Vllm,
    "floor": Floor,
    "floor-fresh": FloorFresh,
    "carry-all": CarryAll,
    "journal-digest": JournalDigest,
    "journal-full": JournalFull,
    "journal-written": JournalWritten,
    "tpwire-metrics": Metered,
    "floor+path": FloorPath,
    "arena-nocheck": ArenaNoCheck,
}


# --- PP: an envelope one way, its result back (ranks 0 and 1) ----------------------------


class PPTpwire:
    def __init__(self, env: Env, group: Any) -> None:
        self.rank = env.rank
        device = env.device if env.on_device else None
        self.ch = P2PChannel(
            pp_contract.BINDINGS, peer=1 - self.rank, group=group, device=device, poison="raise"
        ).open()
        self.call_id = 0

    def step(self, i: int, env: Any, res: Any) -> None:
        self.call_id += 1
        h = pp_contract.Header(
            call_id=self.call_id, chunk_index=i, cache_epoch=0, action=pp_contract.PPAction.INFER
        )
        if self.rank == 0:
            self.ch.send(env, h)
            self.ch.recv()
        else:
            self.ch.recv()
            self.ch.send(res, dataclasses.replace(h, action=pp_contract.PPAction.RESULT))


class PPVllm:
    def __init__(self, env: Env, group: Any) -> None:
        self.rank = env.rank
        self.peer = 1 - self.rank
        self.device = env.device

    def _send(self, msg: Any) -> None:
        meta, tensors = _tensor_dict(msg)
        raw = torch.frombuffer(bytearray(pickle.dumps(meta)), dtype=torch.uint8)
        dist.send(torch.tensor([raw.numel()], device=self.device), dst=self.peer)
        dist.send(raw.to(self.device), dst=self.peer)
        for _, t in tensors:
            dist.send(t.contiguous(), dst=self.peer)

    def _recv(self) -> None:
        n = torch.empty(1, dtype=torch.int64, device=self.device)
        dist.recv(n, src=self.peer)
        raw = torch.empty(int(n), dtype=torch.uint8, device=self.device)
        dist.recv(raw, src=self.peer)
        meta = pickle.loads(raw.cpu().numpy().tobytes())  # the baseline's unsafe step
        for value in meta.values():
            if isinstance(value, tuple) and value[:1] == ("tensor",):
                dist.recv(torch.empty(value[2], dtype=value[1], device=self.device), src=self.peer)

    def step(self, i: int, env: Any, res: Any) -> None:
        if self.rank == 0:
            self._send(env)
            self._recv()
        else:
            self._recv()
            self._send(res)


class PPFloor:
    def __init__(self, env: Env, group: Any) -> None:
        self.rank = env.rank
        self.peer = 1 - self.rank
        nbytes = E.tensor_bytes(E.pp_envelope(0)), E.tensor_bytes(E.pp_result(0))
        self.env = torch.zeros(nbytes[0], dtype=torch.uint8, device=env.device)
        self.res = torch.zeros(nbytes[1], dtype=torch.uint8, device=env.device)

    def step(self, i: int, env: Any, res: Any) -> None:
        if self.rank == 0:
            dist.send(self.env, dst=self.peer)
            dist.recv(self.res, src=self.peer)
        else:
            dist.recv(self.env, src=self.peer)
            dist.send(self.res, dst=self.peer)


PP: dict[str, Callable[[Env, Any], Any]] = {"tpwire": PPTpwire, "vllm": PPVllm, "floor": PPFloor}


# --- the rank's main loop --------------------------------------------------------------


def _timed(
    barrier: Callable[[], None],
    step: Callable[[], None],
    sync: Callable[[], None],
    before: Callable[[], None] | None = None,
) -> float:
    if before is not None:
        before()  # untimed: what a transport's caller does before it sends (``Arena``)
    barrier()
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - t0


def _interleaved(
    transports: dict[str, Any],
    step: Callable[[Any, int], None],
    barrier: Callable[[], None],
    plan: Plan,
    series: dict[str, list[float]],
    prefix: str,
    sync: Callable[[], None],
    before: Callable[[Any, int], None] | None = None,
) -> None:
    """Every transport moves envelope ``i`` in turn before any moves ``i + 1``, in an order
    shuffled each iteration (the same on every rank: seeded by the iteration), so a drift
    of the machine hits them all alike and each transport runs after the others' work, as
    cold as in a stream, behind a different transport each time (a fixed neighbour would
    leave one transport's code warm for the next)."""
    names = list(transports)
    for j in range(plan.warmup + plan.rounds * plan.iters):
        order = names[:]
        random.Random(j).shuffle(order)
        for name in order:
            t = transports[name]
            prep = functools.partial(before, t, j) if before and hasattr(t, "before") else None
            dt = _timed(barrier, functools.partial(step, t, j), sync, prep)
            settle = getattr(t, "settle", None)
            busy = settle() if settle is not None else None  # untimed: a journal's writer
            if j >= plan.warmup:
                series.setdefault(f"{prefix}/{name}", []).append(dt)
                if busy is not None:
                    series.setdefault(f"{prefix}/{name}:writer", []).append(busy)
    for name, t in transports.items():
        if getattr(t, "cpu", None):  # the CPU path inside the stream, per side
            side = "source" if t.rank == 0 else "worker"
            series[f"{prefix}/{name}:cpu-{side}"] = t.cpu[plan.warmup :]


def _stream(msgs: list[Any]) -> Callable[[Any, int], None]:
    """Moves envelope ``i`` of ``msgs`` (cycling) with a transport."""

    def step(transport: Any, i: int) -> None:
        transport.step(i, msgs[i % len(msgs)])

    return step


def _before(msgs: list[Any]) -> Callable[[Any, int], None]:
    """A transport's untimed part of envelope ``i`` of ``msgs`` (``Arena.before``)."""

    def before(transport: Any, i: int) -> None:
        transport.before(i, msgs[i % len(msgs)])

    return before


def _environment(rank: int, world: int, port: int, plan: Plan) -> Env:
    dist.init_process_group(
        plan.backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    torch.set_num_threads(1)
    if plan.device == "cpu":
        return Env(rank, torch.device("cpu"), spin_us=plan.spin_us)
    torch.cuda.set_device(rank)
    return Env(
        rank,
        torch.device(plan.device, rank),
        cpu_group=dist.new_group(backend="gloo"),
        spin_us=plan.spin_us,
    )


def run_rank(rank: int, world: int, port: int, plan: Plan) -> dict[str, list[float]]:
    """Every (kind, transport) series of this rank, in seconds, iteration by iteration."""
    env = _environment(rank, world, port, plan)
    series: dict[str, list[float]] = {}
    messages = {
        k: [E.to_device(E.KINDS[k].message(E.KINDS[k].protocol(), i), env.device)
            for i in range(STREAM_MESSAGES)]
        for k in plan.kinds
    }  # fmt: skip
    for kind_name in plan.kinds:
        kind = E.KINDS[kind_name]
        msgs = messages[kind_name]
        # a device channel has no carry limit: carry-all would be tpwire itself
        extra = () if env.on_device else EXTRA_TRANSPORTS.get(kind_name, ())
        names = BROADCAST_TRANSPORTS + extra
        transports = {name: BROADCAST[name](kind, env) for name in names}
        _interleaved(
            transports,
            _stream(msgs),
            dist.barrier,
            plan,
            series,
            kind_name,
            env.sync,
            _before(msgs),
        )
    if plan.pp:
        group = dist.new_group([0, 1])
        if rank < 2:
            envs = [E.to_device(E.pp_envelope(i), env.device) for i in range(8)]
            res = [E.to_device(E.pp_result(i), env.device) for i in range(8)]
            pp = {name: PP[name](env, group) for name in PP_TRANSPORTS}

            def barrier() -> None:
                dist.barrier(group=group)

            _interleaved(
                pp,
                lambda t, i: t.step(i, envs[i % 8], res[i % 8]),
                barrier,
                plan,
                series,
                "pp",
                env.sync,
            )
    dist.barrier()
    return series


def rank_entry(rank: int, world: int, port: int, plan: Plan, out: str) -> None:
    import json
    import shutil

    series = run_rank(rank, world, port, plan)
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(series, f)
    for folder in Journaled.folders:
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)
