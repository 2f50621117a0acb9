"""What every decoder outcome must satisfy, whatever the input.

``run_decoder`` hands one object to a target's ``decode`` and classifies the result:

- ``ok`` (accepted), ``invalid`` (``EnvelopeInvalid``: decoded, then refused by validation)
  or a ``WireError`` code (``ProtocolMismatch`` included) are the only legal outcomes;
- anything else raised is a finding (``exception``), as is a manifest that announces more
  than the spec allows (``over-bound``: ``Manifest.segment_nbytes`` and every dimension
  are re-checked here against bounds computed from the IR, before anything is allocated),
  a run past the time limit (``hang``, interrupted by SIGALRM, or ``slow``), and an
  accepted envelope whose re-encoding differs from the frames it came from
  (``noncanonical``: one envelope has exactly one encoding).
"""

from __future__ import annotations

import hashlib
import math
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tpwire.runtime import wire
from tpwire.runtime.errors import EnvelopeInvalid, WireError

from .targets import Target, itemsize

FINDINGS = ("exception", "over-bound", "hang", "slow", "noncanonical")
#: Default limits: one decode is ~0.1 ms; a second is a bug, ten is a hang.
SLOW_S = 1.0
HANG_S = 10.0


class Hang(BaseException):
    """Raised by the watchdog inside a run that took too long (BaseException: not swallowed)."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` with ``Hang`` (main thread only; else a no-op)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Outcome:
    label: str  # "ok", "invalid", a WireError code, or the finding kind
    finding: str | None = None
    detail: str = ""
    seconds: float = 0.0
    violations: tuple[str, ...] = ()
    where: str = ""  # innermost tpwire frame of an unexpected exception
    tb: str = field(default="", repr=False)

    @property
    def signature(self) -> str:
        """Findings with the same signature are the same bug (one example saved per few)."""
        head = self.detail.split(":")[0] if self.finding == "over-bound" else self.detail[:60]
        key = f"{self.finding}|{self.where}|{head}"
        return hashlib.sha1(key.encode()).hexdigest()[:10]


def _innermost_tpwire_frame(exc: BaseException) -> str:
    where = ""
    for fs in traceback.extract_tb(exc.__traceback__):
        if "tpwire" in fs.filename or "/runtime/" in fs.filename or "generated" in fs.filename:
            where = f"{Path(fs.filename).name}:{fs.lineno}:{fs.name}"
    return where


def check_manifest(t: Target, m: wire.Manifest) -> str | None:
    """Why ``m`` announces more than the spec allows (``None`` when it fits)."""
    sizes = tuple(m.segment_nbytes)
    if any(type(n) is not int or n < 0 for n in sizes):
        return f"segment sizes {sizes} are not all non-negative ints"
    if m.message is None:
        return None if not sizes and not m.slots else f"payload-free frame announces {sizes}"
    info = t.by_class.get(getattr(m.message, "__name__", ""))
    if info is None:
        return f"manifest names unknown class {m.message!r}"
    total = sum(sizes)
    if total > info.max_frame1_nbytes:
        return (
            f"frame 1 of {total} bytes exceeds the spec bound {info.max_frame1_nbytes} "
            f"of {info.ir.name}"
        )
    bound: dict[str, int] = {}
    seen: set[str] = set()
    for slot in m.slots:
        tb = info.tensor(slot.field)
        if tb is None or slot.field in seen:
            return f"slot {slot.field!r} is not a tensor field of {info.ir.name} (or repeated)"
        seen.add(slot.field)
        if slot.dtype.code not in tb.codes:
            return f"{slot.field}: dtype code {slot.dtype.code} not in {tb.codes}"
        if len(slot.shape) != len(tb.dims):
            return f"{slot.field}: rank {len(slot.shape)}, the spec says {len(tb.dims)}"
        for i, (d, (sym, lo, hi)) in enumerate(zip(slot.shape, tb.dims, strict=True)):
            if not lo <= d <= hi:
                return f"{slot.field}: dim {i} = {d} outside {lo}..{hi}"
            if sym is not None and bound.setdefault(sym, d) != d:
                return f"{slot.field}: dim {i} ({sym}) = {d}, but {sym} = {bound[sym]} elsewhere"
        n = math.prod(slot.shape)
        if n > tb.max_elements:
            return f"{slot.field}: {n} elements exceed {tb.max_elements}"
        if slot.nbytes != n * itemsize(slot.dtype.name):
            return f"{slot.field}: {slot.nbytes} bytes for {n} x {slot.dtype.name}"
        if not 0 <= slot.segment < len(sizes) or slot.offset + slot.nbytes > sizes[slot.segment]:
            return f"{slot.field}: bytes {slot.offset}+{slot.nbytes} outside its segment"
    return None


def _words(obj: object) -> list[int] | None:
    f0 = getattr(obj, "frame0", None)
    if isinstance(f0, torch.Tensor) and f0.dtype == torch.int64 and f0.dim() == 1:
        return [int(w) for w in f0.tolist()]
    return None


def run_decoder(
    t: Target,
    obj: object,
    *,
    slow_s: float = SLOW_S,
    hang_s: float = HANG_S,
    canonical: bool = True,
) -> Outcome:
    """Decode ``obj`` with ``t`` and classify what happened (see the module docstring)."""
    start = time.perf_counter()
    out: Outcome
    try:
        with watchdog(hang_s):
            out = _decode(t, obj, canonical)
    except Hang as exc:
        out = Outcome("hang", "hang", str(exc), tb=traceback.format_exc())
    except Exception as exc:  # the point: nothing but the typed errors may escape
        out = Outcome(
            "exception",
            "exception",
            f"{type(exc).__name__}: {exc}",
            where=_innermost_tpwire_frame(exc),
            tb="".join(traceback.format_exception(exc)),
        )
    out.seconds = time.perf_counter() - start
    if out.finding is None and out.seconds > slow_s:
        out.finding, out.label = "slow", "slow"
        out.detail = f"took {out.seconds:.2f} s (limit {slow_s:g} s), would have been {out.label}"
    return out


def _decode(t: Target, obj: object, canonical: bool) -> Outcome:
    # read_frame0 alone first: the manifest is what a receiver allocates from
    if isinstance(obj, wire.Frames):
        try:
            manifest = t.module.read_frame0(obj.frame0)
        except WireError:
            pass
        else:
            problem = check_manifest(t, manifest)
            if problem is not None:
                return Outcome("over-bound", "over-bound", problem)
    try:
        header, msg = t.module.decode(obj)
    except WireError as exc:  # ProtocolMismatch is a WireError
        return Outcome(exc.code)
    except EnvelopeInvalid as exc:
        return Outcome("invalid", violations=tuple(sorted(exc.codes)))
    if canonical:
        problem = _canonical_problem(t, obj, header, msg)
        if problem is not None:
            return Outcome("noncanonical", "noncanonical", problem)
    return Outcome("ok")


def _canonical_problem(t: Target, obj: object, header: Any, msg: Any) -> str | None:
    words = _words(obj)
    if words is None:
        return None
    try:
        again = t.module.encode(msg, header)
    except EnvelopeInvalid as exc:
        return f"decode accepted an envelope encode refuses: {exc}"
    if again.frame0.tolist() != words:
        diff = [
            i for i, (a, b) in enumerate(zip(again.frame0.tolist(), words, strict=True)) if a != b
        ]
        return f"re-encoding changes frame 0 words {diff}"
    return None
