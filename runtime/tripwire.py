"""Drift tripwires: ranks that should hold identical bytes compare digests (Franken-models).

An envelope's digest is xxh3-64 of its sealed frame 0 words, which hold the xxh3-64 of
frame 1 (every tensor byte, ``wire.frame1_digest``): two ranks agree exactly when their
canonical encodings are bit-identical, for the cost of ``prepare``. A tensor's digest is
xxh3-64 of its dtype, shape and bytes, hashed where they lie on the host (a device tensor
is copied to the host first). xxh3 is not cryptographic: the tripwires detect drift (a
perturbed input, a rank that took another branch), not an adversary; two different
envelopes collide with probability about 2^-64 per comparison.

The comparison is one all-gather of int64 digests; every rank sees every value, so a
mismatch raises on all ranks with the same per-rank diff. The collective only runs when the
channel was opened with the tripwire flag, which the handshake checks on every rank (FM-03).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
import xxhash

from . import wire
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


def digest_tensors(tensors: Iterable[torch.Tensor]) -> int:
    """xxh3-64 of each tensor's dtype, shape and bytes, in order."""
    h = xxhash.xxh3_64()
    for t in tensors:
        t = t.detach().resolve_conj().resolve_neg().contiguous()
        if t._is_zerotensor():  # zeros with no bytes to read: the same zeros, with bytes
            t = t.clone()
        elif t.layout is not torch.strided or t.is_nested or t.is_meta:  # no bytes to hash
            raise ValueError(f"cannot digest a {t.layout} tensor on {t.device}")
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        wire.hash_tensor(h, t)
    return wire.signed64(h.intdigest())


def digest_envelope(protocol: Any, msg: Any, header: Any) -> int:
    """The digest of what a rank is about to run: its sealed frame 0, which carries the
    digest of frame 1."""
    prepared = bindings_of(protocol).prepare(msg, header)
    return wire.bytes_digest([wire.seal_words(prepared.words).tobytes()])


def digest_fields(msg: Any) -> dict[str, int]:
    """Each field of a message: the digest of a tensor's dtype, shape and bytes, or of a
    scalar's ``repr`` (so ``journal diff`` can say which field of an input differs)."""
    out: dict[str, int] = {}
    if not dataclasses.is_dataclass(msg):
        return out
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, torch.Tensor):
            out[f.name] = digest_tensors([value])
        else:
            out[f.name] = wire.signed64(xxhash.xxh3_64_intdigest(repr(value).encode()))
    return out


def safely(compute: Callable[[], int]) -> tuple[int, BaseException | None]:
    """A digest, or a sentinel and the error: the caller still joins the collective."""
    try:
        return compute(), None
    except Exception as exc:
        return wire.signed64(xxhash.xxh3_64_intdigest(repr(exc).encode())), exc


def compare(value: int, what: str, group: dist.ProcessGroup | None = None) -> list[int]:
    """All-gather ``value``; raise ``DriftDetected`` (on every rank) unless all are equal."""
    digests = [v for (v,) in all_gather_ints([value], group)]
    if len(set(digests)) > 1:
        raise DriftDetected(what, digests)
    return digests
