"""The transports, run side by side on one gloo group (one process per rank).

Every transport moves the same envelopes over the same group, interleaved: each transport
moves envelope ``i`` (the order rotates) before any moves ``i + 1``, so drift of the machine
hits them all alike. Each iteration is timed on every rank from the end of an untimed barrier to the end of its
side (send on the source, receive + decode + validate on a worker); the iteration's latency
is the slowest rank's time.

- ``tpwire``: ``BroadcastChannel`` (steady-state framing) / ``P2PChannel`` for PP.
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
- ``carry-all`` (Scope-sized envelopes only): tpwire with no carry limit, so every segment
  of the agreed layout is copied into the head: one collective fewer, a 4 MiB copy more.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from bench import envelopes as E
from tpwire.generated import pp_contract
from tpwire.runtime.channel import BroadcastChannel, P2PChannel
from tpwire.runtime.compat import CompatBroadcastChannel

BROADCAST_TRANSPORTS = ("tpwire", "no-steady", "compat", "vllm", "floor", "floor-fresh")
#: transports run for some kinds only: where they differ from tpwire
EXTRA_TRANSPORTS = {"scope": ("carry-all",), "cond_on_update": ("carry-all",)}
PP_TRANSPORTS = ("tpwire", "vllm", "floor")


@dataclasses.dataclass
class Plan:
    kinds: tuple[str, ...]
    rounds: int
    iters: int  # rounds x iters timed iterations per transport, interleaved
    warmup: int  # untimed iterations first
    pp: bool


# --- one transport per class: setup once, then step(i) moves envelope i ------------------


class Tpwire:
    def __init__(self, kind: E.Kind, rank: int) -> None:
        self.proto = kind.protocol()
        self.kind = kind
        self.rank = rank
        self.ch = self.channel_class()(self.proto, poison="raise", **self.options).open()
        self.call_id = 0

    options: ClassVar[dict[str, Any]] = {}

    def channel_class(self) -> type[BroadcastChannel]:
        return BroadcastChannel

    def step(self, i: int, msg: Any) -> None:
        self.call_id += 1
        if self.rank == 0:
            if msg is None:
                self.ch.noop()
            else:
                self.ch.send(msg, E.header(self.proto, self.call_id, i))
        else:
            self.ch.recv()


class NoSteady(Tpwire):
    """tpwire without steady-state framing: frame 0, then one collective per segment."""

    options: ClassVar[dict[str, Any]] = {"steady_state": False}


class CarryAll(Tpwire):
    """tpwire with every segment of the agreed layout copied into the head."""

    options: ClassVar[dict[str, Any]] = {"carry_limit": 1 << 62}


class Compat(Tpwire):
    def channel_class(self) -> type[BroadcastChannel]:
        return CompatBroadcastChannel


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

    def __init__(self, kind: E.Kind, rank: int) -> None:
        self.rank = rank

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
                t = torch.empty(value[2], dtype=value[1])
                dist.broadcast(t, src=0)


class Floor:
    """One broadcast of exactly the tensor bytes; both sides know the size in advance."""

    def __init__(self, kind: E.Kind, rank: int) -> None:
        self.buffers: dict[int, torch.Tensor] = {}

    def step(self, i: int, msg: Any) -> None:
        n = max(E.tensor_bytes(msg), 8)
        buf = self.buffers.get(n)
        if buf is None:
            buf = self.buffers[n] = torch.zeros(n, dtype=torch.uint8)
        dist.broadcast(buf, src=0)


class FloorFresh:
    """The floor with a stream's memory traffic: the source sends each envelope's own bytes
    (packed once, outside the timing) and a worker receives into a new buffer every time,
    as it must when the model still holds the previous chunk's tensors."""

    def __init__(self, kind: E.Kind, rank: int) -> None:
        self.rank = rank
        self.packed: dict[int, torch.Tensor] = {}

    def step(self, i: int, msg: Any) -> None:
        n = max(E.tensor_bytes(msg), 8)
        if self.rank != 0:
            dist.broadcast(torch.empty(n, dtype=torch.uint8), src=0)
            return
        key = id(msg)
        buf = self.packed.get(key)
        if buf is None:
            parts = [
                v.reshape(-1).view(torch.uint8)
                for v in (getattr(msg, f) for f in type(msg).__dataclass_fields__)
                if isinstance(v, torch.Tensor)
            ] if msg is not None else []  # fmt: skip
            buf = torch.cat(parts) if parts else torch.zeros(8, dtype=torch.uint8)
            self.packed[key] = buf
        dist.broadcast(buf, src=0)


BROADCAST: dict[str, Callable[[E.Kind, int], Any]] = {
    "tpwire": Tpwire,
    "no-steady": NoSteady,
    "compat": Compat,
    "vllm": Vllm,
    "floor": Floor,
    "floor-fresh": FloorFresh,
    "carry-all": CarryAll,
}


# --- PP: an envelope one way, its result back (ranks 0 and 1) ----------------------------


class PPTpwire:
    def __init__(self, rank: int, group: Any) -> None:
        self.rank = rank
        self.ch = P2PChannel(pp_contract, peer=1 - rank, group=group, poison="raise").open()
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
    def __init__(self, rank: int, group: Any) -> None:
        self.rank = rank
        self.peer = 1 - rank

    def _send(self, msg: Any) -> None:
        meta, tensors = _tensor_dict(msg)
        raw = torch.frombuffer(bytearray(pickle.dumps(meta)), dtype=torch.uint8)
        dist.send(torch.tensor([raw.numel()]), dst=self.peer)
        dist.send(raw, dst=self.peer)
        for _, t in tensors:
            dist.send(t.contiguous(), dst=self.peer)

    def _recv(self) -> None:
        n = torch.empty(1, dtype=torch.int64)
        dist.recv(n, src=self.peer)
        raw = torch.empty(int(n), dtype=torch.uint8)
        dist.recv(raw, src=self.peer)
        meta = pickle.loads(raw.numpy().tobytes())  # the baseline's unsafe step
        for value in meta.values():
            if isinstance(value, tuple) and value[:1] == ("tensor",):
                dist.recv(torch.empty(value[2], dtype=value[1]), src=self.peer)

    def step(self, i: int, env: Any, res: Any) -> None:
        if self.rank == 0:
            self._send(env)
            self._recv()
        else:
            self._recv()
            self._send(res)


class PPFloor:
    def __init__(self, rank: int, group: Any) -> None:
        self.rank = rank
        self.peer = 1 - rank
        self.env = torch.zeros(E.tensor_bytes(E.pp_envelope(0)), dtype=torch.uint8)
        self.res = torch.zeros(E.tensor_bytes(E.pp_result(0)), dtype=torch.uint8)

    def step(self, i: int, env: Any, res: Any) -> None:
        if self.rank == 0:
            dist.send(self.env, dst=self.peer)
            dist.recv(self.res, src=self.peer)
        else:
            dist.recv(self.env, src=self.peer)
            dist.send(self.res, dst=self.peer)


PP: dict[str, Callable[[int, Any], Any]] = {"tpwire": PPTpwire, "vllm": PPVllm, "floor": PPFloor}


# --- the rank's main loop --------------------------------------------------------------


def _timed(barrier: Callable[[], None], step: Callable[[], None]) -> float:
    barrier()
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def _interleaved(
    transports: dict[str, Any],
    step: Callable[[Any, int], None],
    barrier: Callable[[], None],
    plan: Plan,
    series: dict[str, list[float]],
    prefix: str,
) -> None:
    """Every transport moves envelope ``i`` in turn before any moves ``i + 1`` (the order
    rotates each iteration), so a drift of the machine hits them all alike and each
    transport's CPU path runs as cold as in a stream, after the others' work."""
    names = list(transports)
    for j in range(plan.warmup + plan.rounds * plan.iters):
        k = j % len(names)
        for name in names[k:] + names[:k]:
            dt = _timed(barrier, lambda t=transports[name], j=j: step(t, j))
            if j >= plan.warmup:
                series.setdefault(f"{prefix}/{name}", []).append(dt)


def run_rank(rank: int, world: int, port: int, plan: Plan) -> dict[str, list[float]]:
    """Every (kind, transport) series of this rank, in seconds, iteration by iteration."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    torch.set_num_threads(1)
    series: dict[str, list[float]] = {}
    messages = {
        k: [E.KINDS[k].message(E.KINDS[k].protocol(), i) for i in range(24)] for k in plan.kinds
    }
    for kind_name in plan.kinds:
        kind = E.KINDS[kind_name]
        msgs = messages[kind_name]
        names = BROADCAST_TRANSPORTS + EXTRA_TRANSPORTS.get(kind_name, ())
        transports = {name: BROADCAST[name](kind, rank) for name in names}
        _interleaved(
            transports,
            lambda t, i, msgs=msgs: t.step(i, msgs[i % len(msgs)]),
            dist.barrier,
            plan,
            series,
            kind_name,
        )
    if plan.pp:
        group = dist.new_group([0, 1])
        if rank < 2:
            envs = [E.pp_envelope(i) for i in range(8)]
            res = [E.pp_result(i) for i in range(8)]
            pp = {name: PP[name](rank, group) for name in PP_TRANSPORTS}

            def barrier() -> None:
                dist.barrier(group=group)

            _interleaved(
                pp,
                lambda t, i: t.step(i, envs[i % 8], res[i % 8]),
                barrier,
                plan,
                series,
                "pp",
            )
    dist.barrier()
    return series


def rank_entry(rank: int, world: int, port: int, plan: Plan, out: str) -> None:
    import json

    series = run_rank(rank, world, port, plan)
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(series, f)
    os._exit(0)
