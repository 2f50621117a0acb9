"""Small collectives of the runtime (handshake, tripwires, ledger) on any backend.

NCCL only moves CUDA tensors and gloo moves CPU tensors: these exchanges put their few
int64 words on the device the group's backend needs and read the result back on the host.
"""

from __future__ import annotations

import ctypes

import torch
import torch.distributed as dist


def device_for(group: dist.ProcessGroup | None) -> torch.device:
    """Where a tensor must live to take part in a collective of ``group``."""
    if str(dist.get_backend(group)).lower() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_ints(values: list[int], group: dist.ProcessGroup | None = None) -> list[list[int]]:
    """Every rank's ``values`` (the same length on every rank), by rank."""
    device = device_for(group)
    mine = torch.tensor(values, dtype=torch.int64, device=device)
    world = dist.get_world_size(group)
    out = [torch.zeros(len(values), dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(out, mine, group=group)
    return [t.tolist() for t in out]


class LengthsRefused(ValueError):
    """Some rank announced a byte string outside ``0..limit``; ``bad`` maps rank -> length."""

    def __init__(self, bad: dict[int, int], limit: int) -> None:
        self.bad = bad
        self.limit = limit
        shown = ", ".join(f"rank {r}: {n}" for r, n in bad.items())
        super().__init__(f"byte lengths outside 0..{limit}: {shown}")


def all_gather_bytes(
    raw: bytes, group: dist.ProcessGroup | None = None, *, limit: int
) -> list[bytes]:
    """Every rank's ``raw`` bytes (lengths may differ, at most ``limit``), by rank: two
    all-gathers. A length outside ``0..limit`` (this rank's or a peer's) raises
    ``LengthsRefused`` on every rank after the first: every rank saw the same lengths, so
    none is left waiting in the second, and nothing is allocated from a peer's number."""
    device = device_for(group)
    lengths = [n for (n,) in all_gather_ints([len(raw)], group)]
    bad = {r: n for r, n in enumerate(lengths) if not 0 <= n <= limit}
    if bad:
        raise LengthsRefused(bad, limit)
    size = max(lengths)
    mine = torch.zeros(size, dtype=torch.uint8)
    if raw:
        mine[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    out = [torch.zeros(size, dtype=torch.uint8, device=device) for _ in lengths]
    dist.all_gather(out, mine.to(device), group=group)
    return [_bytes_of(t[:n]) for t, n in zip(out, lengths, strict=True)]


def _bytes_of(t: torch.Tensor) -> bytes:
    t = t.cpu().contiguous()
    return ctypes.string_at(t.data_ptr(), t.numel()) if t.numel() else b""
