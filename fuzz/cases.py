"""Frames as plain data: what the mutators edit, what a saved example holds.

A ``Case`` describes the object handed to ``decode`` (normally ``Frames(frame0, segments)``)
with nothing but ints, strings and bytes, so every input of a campaign can be written to
JSON and rebuilt bit for bit by ``python -m fuzz replay``. No pickle anywhere.
"""

from __future__ import annotations

import base64
import copy
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tpwire.runtime import wire

I64 = 1 << 64

#: How frame 0 is presented (``tensor`` = the normal 1-D int64 vector).
F0_KINDS = (
    "tensor",
    "int32",
    "float64",
    "uint8",
    "bool",
    "2d",
    "strided",
    "list",
    "none",
    "str",
    "meta",
    "sparse",
    "nested",
)
SEG_KINDS = ("tensor", "meta", "sparse", "none", "bytes", "nested")
#: How the segments container and the frames object are presented.
SEGS_KINDS = ("tuple", "list", "none", "int")
FRAMES_KINDS = ("frames", "tuple", "none")


def wrap64(x: int) -> int:
    """``x`` as a signed int64 (two's complement wrap)."""
    return ((x + (1 << 63)) % I64) - (1 << 63)


@dataclass
class Seg:
    """One frame 1 segment: bytes plus how the tensor holding them is laid out."""

    data: bytes
    dtype: str = "uint8"
    offset: int = 0  # storage offset in bytes (8-byte alignment is required)
    step: int = 1  # >1: a strided, non-contiguous view
    rows: int = 0  # >0: a 2-D view with this many rows
    kind: str = "tensor"


@dataclass
class Slot:
    """Where one tensor of the seed envelope lives in frame 1 (for slot-aware mutations)."""

    field: str
    dtype: str
    segment: int
    offset: int
    nbytes: int


@dataclass
class Case:
    target: str
    words: list[int]
    segments: list[Seg]
    f0: str = "tensor"
    segs: str = "tuple"
    frames: str = "frames"
    reseal: bool = True  # recompute the checksum after mutating (reaches the deeper checks)
    ops: list[str] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)

    def copy(self) -> Case:
        return copy.deepcopy(self)

    def seal(self) -> None:
        """Set the frame 1 digest word (the one before the last) to the digest of the
        segments as they are now, and the last word to the checksum of the others, as
        ``encode`` does: mutations then reach the checks behind both."""
        if self.words:
            self.words = [wrap64(w) for w in self.words]
            if len(self.words) >= 2:
                self.words[-2] = wire.bytes_digest([s.data for s in self.segments])
            self.words[-1] = int(wire.seal(self.words)[-1])

    # --- JSON -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["segments"] = [
            {**asdict(s), "data": base64.b64encode(s.data).decode("ascii")} for s in self.segments
        ]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Case:
        d = dict(d)
        d["segments"] = [
            Seg(**{**s, "data": base64.b64decode(s["data"])}) for s in d.get("segments", [])
        ]
        d["slots"] = [Slot(**s) for s in d.get("slots", [])]
        return cls(**d)


def from_frames(target: str, frames: wire.Frames, manifest: wire.Manifest | None = None) -> Case:
    """A case holding exactly the bytes of ``frames`` (tensors moved to the CPU)."""
    words = [int(w) for w in frames.frame0.tolist()]
    segs = [Seg(bytes(s.detach().cpu().contiguous().numpy().tobytes())) for s in frames.segments]
    slots = []
    if manifest is not None:
        slots = [Slot(s.field, s.dtype.name, s.segment, s.offset, s.nbytes) for s in manifest.slots]
    return Case(target, words, segs, slots=slots)


# --- building the objects decode receives ---------------------------------------------------


def _frame0(words: list[int], kind: str) -> object:
    t = torch.tensor([wrap64(w) for w in words], dtype=torch.int64)
    if kind == "tensor":
        return t
    if kind in ("int32", "float64", "uint8", "bool"):
        return t.to(getattr(torch, kind))
    if kind == "2d":
        return t.reshape(1, -1)
    if kind == "strided":  # a non-contiguous but otherwise valid vector
        return torch.stack([t, torch.zeros_like(t)], dim=1)[:, 0]
    if kind == "list":
        return list(words)
    if kind == "none":
        return None
    if kind == "str":
        return " ".join(map(str, words))
    if kind == "meta":
        return torch.empty(len(words), dtype=torch.int64, device="meta")
    if kind == "sparse":
        return t.to_sparse()
    if kind == "nested":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.nested.nested_tensor([t, t])
    raise ValueError(f"unknown frame 0 kind {kind!r}")


def _segment(s: Seg) -> object:
    if s.kind == "none":
        return None
    if s.kind == "bytes":
        return bytes(s.data)
    n = len(s.data)
    if s.kind == "meta":
        return torch.empty(n, dtype=torch.uint8, device="meta")
    step = max(1, s.step)
    offset = max(0, s.offset)
    buf = bytearray(offset + n * step)
    buf[offset : offset + n * step : step] = s.data
    if len(buf):
        base = torch.frombuffer(buf, dtype=torch.uint8)
    else:
        base = torch.empty(0, dtype=torch.uint8)
    t = base[offset : offset + n * step : step]
    if s.kind == "sparse":
        return t.to_sparse()
    if s.kind == "nested":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.nested.nested_tensor([t.clone(), t.clone()])
    if s.dtype != "uint8":
        dtype = getattr(torch, s.dtype)
        size = torch.empty((), dtype=dtype).element_size()
        if step == 1 and n % size == 0 and offset % size == 0:
            t = t.view(dtype)
        else:
            t = t.to(dtype)
    if s.rows > 0 and t.numel() % s.rows == 0:
        t = t.reshape(s.rows, -1)
    return t


def build(case: Case) -> object:
    """The object handed to ``decode``: normally ``Frames(frame0, segments)``."""
    f0 = _frame0(case.words, case.f0)
    segs = [_segment(s) for s in case.segments]
    container: object
    if case.segs == "tuple":
        container = tuple(segs)
    elif case.segs == "list":
        container = list(segs)
    elif case.segs == "none":
        container = None
    else:
        container = len(segs)
    if case.frames == "frames":
        return wire.Frames(f0, container)  # type: ignore[arg-type]
    if case.frames == "tuple":
        return (f0, container)
    return None
