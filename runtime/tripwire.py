"""Drift tripwires: ranks that should hold identical bytes compare digests (Franken-models).

A digest is blake2b over the canonical encoding (frame 0 words + tensor bytes), so two
ranks agree exactly when their envelopes are bit-identical. The comparison is one
all-gather of int64 digests; every rank sees every value, so a mismatch raises on all
ranks with the same per-rank diff. The collective only runs when the channel was opened
with the tripwire flag, which the handshake checks on every rank (FM-03).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

from .bindings import bindings_of
from .groups import all_gather_ints


class DriftDetected(RuntimeError):
    """Ranks hold different bytes where they must hold the same."""

    def __init__(self, what: str, digests: list[int]) -> None:
        self.what = what
        self.digests = digests
        shown = ", ".join(f"rank{i}={d:#018x}" for i, d in enumerate(digests))
        odd = [i for i, d in enumerate(digests) if d != digests[0]]
        super().__init__(
            f"drift in {what}: digests differ ({shown}); ranks {odd} differ from rank 0"
        )


def _bytes(t: torch.Tensor) -> bytes:
    t = t.detach().resolve_conj().resolve_neg().contiguous().cpu()
    return bytes(t.reshape(-1).view(torch.uint8).numpy().tobytes()) if t.numel() else b""


def digest_tensors(tensors: Iterable[torch.Tensor]) -> int:
    h = hashlib.blake2b(digest_size=8)
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(_bytes(t))
    value: int = struct.unpack("<q", h.digest())[0]
    return value


def digest_envelope(protocol: Any, msg: Any, header: Any) -> int:
    """The digest of what a rank is about to run: its canonical encoding."""
    frames = bindings_of(protocol).encode(msg, header)
    return digest_tensors([frames.frame0, *frames.segments])


def safely(compute: Callable[[], int]) -> tuple[int, BaseException | None]:
    """A digest, or a sentinel and the error: the caller still joins the collective."""
    try:
        return compute(), None
    except Exception as exc:
        digest = hashlib.blake2b(repr(exc).encode(), digest_size=8).digest()
        sentinel: int = struct.unpack("<q", digest)[0]
        return sentinel, exc


def compare(value: int, what: str, group: dist.ProcessGroup | None = None) -> list[int]:
    """All-gather ``value``; raise ``DriftDetected`` (on every rank) unless all are equal."""
    digests = [v for (v,) in all_gather_ints([value], group)]
    if len(set(digests)) > 1:
        raise DriftDetected(what, digests)
    return digests
