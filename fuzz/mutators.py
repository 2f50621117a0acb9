"""Mutations of frames, aware of the wire layout and of the spec's bounds.

Every operator edits a ``Case`` in place, drawing its choices from ``r``: a
``random.Random``, hypothesis's ``st.randoms()`` (bounded properties, shrinkable) or an
adapter over atheris's ``FuzzedDataProvider`` (coverage-guided). After the operators run,
``finish`` re-seals frame 0 (recomputes the checksum) unless an operator asked not to, so
mutations reach the checks behind the checksum instead of all dying there.

Operator families: ``words`` (frame 0 contents), ``frame0`` (its length, dtype, shape),
``frame1`` (segment count, sizes, dtype, alignment, bytes) and ``objects`` (things that are
not frames at all: meta/sparse/nested tensors, ``None``, lists).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from tpwire.codegen.ir import FieldIR
from tpwire.runtime import wire

from .cases import Case, Seg, Slot, wrap64
from .targets import MessageInfo, Target

T = TypeVar("T")


class Rand(Protocol):
    """The subset of ``random.Random`` the mutators use."""

    def randrange(self, n: int, /) -> int: ...
    def randint(self, a: int, b: int, /) -> int: ...
    def random(self) -> float: ...
    def getrandbits(self, k: int, /) -> int: ...


def pick(r: Rand, seq: Sequence[T]) -> T:
    return seq[r.randrange(len(seq))]


def rbytes(r: Rand, n: int) -> bytes:
    return r.getrandbits(8 * n).to_bytes(n, "little") if n > 0 else b""


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INTERESTING: tuple[int, ...] = (
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    15,
    16,
    17,
    63,
    64,
    127,
    128,
    255,
    256,
    1023,
    1024,
    4095,
    4096,
    65535,
    65536,
    2**31 - 1,
    2**31,
    -(2**31),
    2**32,
    2**32 + 1,
    2**53,
    2**62,
    INT64_MAX,
    INT64_MAX - 1,
    INT64_MIN,
    INT64_MIN + 1,
)
#: Bit patterns of float64 values a validator must survive.
FLOAT_WORDS: tuple[int, ...] = (
    *(
        struct.unpack("<q", struct.pack("<d", x))[0]
        for x in (math.nan, -math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308)
    ),
    0x7FF0000000000001,  # a signalling NaN
    -0x0008000000000001,  # a NaN with a payload
)

Op = Callable[[Case, Target, Rand], None]


# --- layout helpers -------------------------------------------------------------------------


def _layout_ok(c: Case, t: Target) -> bool:
    return len(c.words) == t.frame0_len


def message_of(c: Case, t: Target) -> MessageInfo | None:
    if not _layout_ok(c, t):
        return None
    return t.messages.get(c.words[t.ir.layout.message_id])


def _present(c: Case, t: Target, f: FieldIR) -> bool:
    return bool(c.words[t.ir.layout.presence] & f.bit)


def fix_frame1(c: Case, t: Target, r: Rand, *, resize: bool) -> None:
    """Make the frame 1 length word (and, with ``resize``, the segments) fit the manifest."""
    info = message_of(c, t)
    if info is None:
        return
    entries: list[wire.Entry] = []
    for f in info.ir.tensors:
        if not _present(c, t, f):
            continue
        wd = wire.DTYPE_BY_CODE.get(c.words[f.word])
        shape = tuple(c.words[f.word + 1 : f.word + 1 + len(f.dims)])
        if wd is None or any(d < 0 for d in shape) or math.prod(shape) * wd.itemsize > 1 << 24:
            return  # nothing sensible to announce; leave the length word alone
        entries.append((f.name, wd, shape))
    slots, sizes = wire.plan_segments(entries)
    c.words[t.ir.layout.frame1] = sum(sizes)
    if not resize:
        return
    old = c.segments
    c.segments = []
    for i, n in enumerate(sizes):
        data = old[i].data[:n] if i < len(old) else b""
        c.segments.append(Seg(data + bytes(n - len(data))))
    for s in slots:  # a refitted frame 1 keeps its one encoding: padding is zero
        pad = -s.nbytes % wire.ALIGN if s.nbytes < wire.COALESCE_LIMIT else 0
        if pad:
            seg = c.segments[s.segment]
            at = s.offset + s.nbytes
            seg.data = seg.data[:at] + bytes(pad) + seg.data[at + pad :]
    c.slots = [Slot(s.field, s.dtype.name, s.segment, s.offset, s.nbytes) for s in slots]


def _range_ints(f: FieldIR) -> list[int]:
    out = []
    for lit in (f.range_min, f.range_max):
        if lit is not None:
            try:
                v = int(lit)
            except ValueError:
                continue
            out += [v - 1, v, v + 1]
    return out


# --- words: frame 0 contents ------------------------------------------------------------------


def w_interesting(c: Case, t: Target, r: Rand) -> None:
    if c.words:
        c.words[r.randrange(len(c.words))] = pick(r, INTERESTING + t.interesting)


def w_bitflip(c: Case, t: Target, r: Rand) -> None:
    if c.words:
        i = r.randrange(len(c.words))
        c.words[i] = wrap64(c.words[i] ^ (1 << r.randrange(64)))


def w_random(c: Case, t: Target, r: Rand) -> None:
    if c.words:
        c.words[r.randrange(len(c.words))] = wrap64(r.getrandbits(64))


def w_arith(c: Case, t: Target, r: Rand) -> None:
    if c.words:
        i = r.randrange(len(c.words))
        c.words[i] = wrap64(c.words[i] + r.randint(-16, 16))


def w_copy(c: Case, t: Target, r: Rand) -> None:
    if c.words:
        c.words[r.randrange(len(c.words))] = c.words[r.randrange(len(c.words))]


def w_swap(c: Case, t: Target, r: Rand) -> None:
    if c.words:
        i, j = r.randrange(len(c.words)), r.randrange(len(c.words))
        c.words[i], c.words[j] = c.words[j], c.words[i]


def w_region(c: Case, t: Target, r: Rand) -> None:
    """A run of words set to random or interesting values (random bytes in frame 0)."""
    if not c.words:
        return
    start = r.randrange(len(c.words))
    for i in range(start, min(len(c.words), start + 1 + r.randrange(8))):
        c.words[i] = (
            wrap64(r.getrandbits(64)) if r.random() < 0.5 else pick(r, INTERESTING + t.interesting)
        )


def w_all_random(c: Case, t: Target, r: Rand) -> None:
    """Every word random; magic and fingerprint kept half the time."""
    keep = c.words[:2] if r.random() < 0.5 else []
    c.words = [wrap64(r.getrandbits(64)) for _ in c.words]
    c.words[: len(keep)] = keep


def w_presence(c: Case, t: Target, r: Rand) -> None:
    if not _layout_ok(c, t):
        return
    at = pick(r, (t.ir.layout.header_presence, t.ir.layout.presence))
    c.words[at] = wrap64(c.words[at] ^ (1 << r.randrange(64 if r.random() < 0.2 else 24)))


def w_field_absent(c: Case, t: Target, r: Rand) -> None:
    """Clear a present field's bit and zero its words: a consistent, well-formed absence."""
    info = message_of(c, t)
    if info is None:
        return
    present = [f for f in info.ir.fields if _present(c, t, f)]
    if present:
        f = pick(r, present)
        c.words[t.ir.layout.presence] &= ~f.bit
        c.words[f.word : f.word + f.width] = [0] * f.width
        fix_frame1(c, t, r, resize=r.random() < 0.8)


def w_field_present(c: Case, t: Target, r: Rand) -> None:
    """Set an absent field's bit and give it a plausible (not necessarily valid) value."""
    info = message_of(c, t)
    if info is None:
        return
    absent = [f for f in info.ir.fields if not _present(c, t, f)]
    if not absent:
        return
    f = pick(r, absent)
    c.words[t.ir.layout.presence] |= f.bit
    if f.kind == "tensor":
        c.words[f.word] = pick(r, f.dtype_codes)
        for i, d in enumerate(f.dims):
            hi = d.hi if d.const is None else d.const
            c.words[f.word + 1 + i] = d.lo if d.const is None else d.const
            if d.const is None and r.random() < 0.5:
                c.words[f.word + 1 + i] = r.randint(d.lo, min(hi, d.lo + 3))
        fix_frame1(c, t, r, resize=r.random() < 0.8)
    else:
        c.words[f.word] = pick(r, (0, 1, *_range_ints(f), *INTERESTING))


def w_header(c: Case, t: Target, r: Rand) -> None:
    if _layout_ok(c, t):
        i = t.ir.layout.header + r.randrange(len(t.ir.header.fields))
        c.words[i] = pick(r, INTERESTING + t.interesting)


def w_action(c: Case, t: Target, r: Rand) -> None:
    """Another action, with or without the message id that goes with it."""
    if not _layout_ok(c, t):
        return
    names = [f.name for f in t.ir.header.fields]
    at = t.ir.layout.header + names.index(t.ir.header.action)
    action = pick(r, t.ir.actions)
    c.words[at] = action.value if r.random() < 0.8 else pick(r, INTERESTING)
    mid = action.message.id if action.message is not None else 0
    if r.random() < 0.7:
        c.words[t.ir.layout.message_id] = mid
    else:
        c.words[t.ir.layout.message_id] = pick(r, (*t.messages, 0, -1, 99))


def w_version(c: Case, t: Target, r: Rand) -> None:
    if _layout_ok(c, t):
        at = t.ir.layout.message_version
        c.words[at] = pick(r, (c.words[at] - 1, c.words[at] + 1, 0, *INTERESTING))


def w_magic(c: Case, t: Target, r: Rand) -> None:
    """Wrong magic, wrong wire version, or another spec's fingerprint."""
    if len(c.words) < 2:
        return
    k = r.randrange(4)
    if k == 0:
        c.words[0] = wrap64(r.getrandbits(64))
    elif k == 1:
        c.words[0] = (wire.MAGIC << 16) | pick(r, (0, 2, 0xFFFF, wire.MAGIC_WORD & 0xFFFF ^ 1))
    elif k == 2:
        c.words[1] = wrap64(c.words[1] ^ (1 << r.randrange(64)))
    else:
        c.words[1] = pick(r, INTERESTING)


def _present_tensors(c: Case, t: Target) -> list[FieldIR]:
    info = message_of(c, t)
    return [] if info is None else [f for f in info.ir.tensors if _present(c, t, f)]


def w_dim(c: Case, t: Target, r: Rand) -> None:
    """A dimension set past a bound, to a bound, negative or overflowing; frame 1 refitted
    (and the segments resized) or not. Choices are ordered so that zeros, what
    hypothesis's randoms favour, make the most telling mutation."""
    tensors = _present_tensors(c, t)
    if not tensors:
        return
    f = pick(r, tensors)
    dims = [d for d in f.dims if d.const is None] + [d for d in f.dims if d.const is not None]
    d = pick(r, dims)
    lo, hi = (d.lo, d.hi) if d.const is None else (d.const, d.const)
    value = pick(
        r,
        (hi + 1, lo - 1, 2 * hi, hi, lo, 0, -1, 2**31, 2**32 + 1, 2**62, INT64_MAX, INT64_MIN),
    )
    if r.random() > 0.75:
        value = r.randint(lo, hi)  # in bounds, but maybe another binding of the symbol
    c.words[d.word] = value
    k = r.randrange(3)
    if k < 2:
        fix_frame1(c, t, r, resize=k == 0)


def w_dims_max(c: Case, t: Target, r: Rand) -> None:
    """Every symbolic dimension of a tensor near its maximum: each in bounds, the product
    maybe not (the element bound)."""
    tensors = _present_tensors(c, t)
    if not tensors:
        return
    f = pick(r, tensors)
    for d in f.dims:
        if d.const is None:
            c.words[d.word] = d.hi if r.random() < 0.7 else r.randint(d.lo, d.hi)
    if r.random() < 0.5:
        fix_frame1(c, t, r, resize=False)


def w_dtype(c: Case, t: Target, r: Rand) -> None:
    tensors = _present_tensors(c, t)
    if not tensors:
        return
    f = pick(r, tensors)
    codes = [w.code for w in wire.WIRE_DTYPES]
    c.words[f.word] = pick(r, (*f.dtype_codes, *codes, 0, -1, max(codes) + 1, 2**40))
    k = r.randrange(3)
    if k < 2:
        fix_frame1(c, t, r, resize=k == 0)


def w_frame1(c: Case, t: Target, r: Rand) -> None:
    if not _layout_ok(c, t):
        return
    at = t.ir.layout.frame1
    cur = c.words[at]
    big = t.max_frame1_nbytes
    c.words[at] = pick(
        r, (0, -1, cur - 1, cur + 1, cur + 16, cur - 16, big, big + 1, 2**62, INT64_MIN)
    )


def w_scalar(c: Case, t: Target, r: Rand) -> None:
    """A present scalar set to what its kind must refuse or survive."""
    info = message_of(c, t)
    if info is None:
        return
    scalars = [f for f in info.ir.scalars if _present(c, t, f)]
    if not scalars:
        return
    f = pick(r, scalars)
    if f.kind == "float":
        c.words[f.word] = pick(r, FLOAT_WORDS)
    elif f.kind == "bool":
        c.words[f.word] = pick(r, (2, -1, 256, INT64_MIN))
    elif f.kind == "str":
        k = r.randrange(4)
        if k == 0:  # length word beyond max_len, or negative
            c.words[f.word] = pick(r, (-1, (f.max_len or 0) + 1, INT64_MAX, INT64_MIN))
        elif k == 1:  # invalid UTF-8
            n = 1 + r.randrange(f.width - 1 or 1)
            raw = bytes(pick(r, (0xFF, 0xC3, 0xED, 0x80)) for _ in range(n))
            c.words[f.word] = n
            padded = raw.ljust((f.width - 1) * 8, b"\0")[: (f.width - 1) * 8]
            c.words[f.word + 1 : f.word + f.width] = list(struct.unpack(f"<{f.width - 1}q", padded))
        elif k == 2:  # non-zero padding
            c.words[f.word] = 0
            if f.width > 1:
                c.words[f.word + f.width - 1] = pick(r, (1, -1, INT64_MIN))
        else:
            c.words[f.word + r.randrange(f.width)] = wrap64(r.getrandbits(64))
    else:  # int, enum
        c.words[f.word] = pick(r, (*_range_ints(f), *INTERESTING))


def w_no_reseal(c: Case, t: Target, r: Rand) -> None:
    """Keep the old checksum: a corrupted frame (one flipped bit, or the checksum itself)."""
    c.reseal = False
    if c.words:
        i = r.randrange(len(c.words))
        c.words[i] = wrap64(c.words[i] ^ (1 << r.randrange(64)))


# --- frame 0 as a whole ----------------------------------------------------------------------


def f0_truncate(c: Case, t: Target, r: Rand) -> None:
    c.words = c.words[: r.randrange(len(c.words))] if c.words else []


def f0_extend(c: Case, t: Target, r: Rand) -> None:
    c.words += [pick(r, (0, wrap64(r.getrandbits(64)))) for _ in range(1 + r.randrange(9))]


def f0_random(c: Case, t: Target, r: Rand) -> None:
    """Frame 0 of random bytes, at, near or far from the protocol's length."""
    n = pick(r, (t.frame0_len, t.frame0_len - 1, t.frame0_len + 1, r.randrange(2 * t.frame0_len)))
    c.words = [wrap64(r.getrandbits(64)) for _ in range(max(0, n))]


def f0_dtype(c: Case, t: Target, r: Rand) -> None:
    c.f0 = pick(r, ("int32", "float64", "uint8", "bool", "2d", "strided"))


# --- frame 1 ----------------------------------------------------------------------------------


def _seg(c: Case, r: Rand) -> Seg | None:
    return pick(r, c.segments) if c.segments else None


def s_drop(c: Case, t: Target, r: Rand) -> None:
    if c.segments:
        del c.segments[r.randrange(len(c.segments))]


def s_add(c: Case, t: Target, r: Rand) -> None:
    n = pick(r, (0, 1, 8, 16, 64))
    c.segments.insert(r.randrange(len(c.segments) + 1), Seg(rbytes(r, n)))


def s_swap(c: Case, t: Target, r: Rand) -> None:
    if len(c.segments) > 1:
        i, j = r.randrange(len(c.segments)), r.randrange(len(c.segments))
        c.segments[i], c.segments[j] = c.segments[j], c.segments[i]


def s_truncate(c: Case, t: Target, r: Rand) -> None:
    s = _seg(c, r)
    if s is not None and s.data:
        s.data = s.data[: len(s.data) - 1 - r.randrange(min(len(s.data), 17))]


def s_extend(c: Case, t: Target, r: Rand) -> None:
    s = _seg(c, r)
    if s is not None:
        s.data += rbytes(r, pick(r, (1, 7, 8, 16)))


def s_clear(c: Case, t: Target, r: Rand) -> None:
    c.segments = []


def s_dtype(c: Case, t: Target, r: Rand) -> None:
    s = _seg(c, r)
    if s is not None:
        s.dtype = pick(r, ("int8", "bool", "int16", "int32", "float16", "float32", "int64"))


def s_misalign(c: Case, t: Target, r: Rand) -> None:
    s = _seg(c, r)
    if s is not None:
        s.offset = pick(r, (1, 2, 3, 4, 7, 8, 16))


def s_stride(c: Case, t: Target, r: Rand) -> None:
    s = _seg(c, r)
    if s is not None:
        s.step = pick(r, (2, 3))


def s_2d(c: Case, t: Target, r: Rand) -> None:
    s = _seg(c, r)
    if s is not None:
        s.rows = pick(r, (1, 2))


def s_flip(c: Case, t: Target, r: Rand) -> None:
    """A few random bits of frame 1 flipped (what validation sees after a clean frame 0)."""
    s = _seg(c, r)
    if s is None or not s.data:
        return
    data = bytearray(s.data)
    for _ in range(1 + r.randrange(8)):
        data[r.randrange(len(data))] ^= 1 << r.randrange(8)
    s.data = bytes(data)


def s_random(c: Case, t: Target, r: Rand) -> None:
    """A window (up to 512 bytes) of a segment replaced by random bytes."""
    s = _seg(c, r)
    if s is None or not s.data:
        return
    n = min(len(s.data), 512)
    start = r.randrange(len(s.data) - n + 1)
    s.data = s.data[:start] + rbytes(r, n) + s.data[start + n :]


def s_slot(c: Case, t: Target, r: Rand) -> None:
    """Slot-aware: non-0/1 bool bytes, NaN/inf floats, extreme ints in one tensor."""
    slots = [s for s in c.slots if s.nbytes and s.segment < len(c.segments)]
    if not slots:
        return
    slot = pick(r, slots)
    seg = c.segments[slot.segment]
    if slot.offset + slot.nbytes > len(seg.data):
        return
    data = bytearray(seg.data)
    at = slot.offset + r.randrange(slot.nbytes)
    if slot.dtype == "bool":
        data[at] = pick(r, (2, 3, 0x80, 0xFF))
    elif slot.dtype == "float64":
        at -= (at - slot.offset) % 8
        data[at : at + 8] = struct.pack("<q", pick(r, FLOAT_WORDS))
    elif slot.dtype == "float32":
        at -= (at - slot.offset) % 4
        data[at : at + 4] = pick(r, (b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x01\x00\x80\xff"))
    elif slot.dtype in ("float16", "bfloat16"):
        at -= (at - slot.offset) % 2
        data[at : at + 2] = pick(r, (b"\x00\x7e", b"\x00\x7c", b"\x80\x7f", b"\xff\xff"))
    else:
        data[at] = pick(r, (0x00, 0x7F, 0x80, 0xFF))
    seg.data = bytes(data)


# --- objects that are not frames ----------------------------------------------------------------


def o_frame0(c: Case, t: Target, r: Rand) -> None:
    c.f0 = pick(r, ("list", "none", "str", "meta", "sparse", "nested"))


def o_segment(c: Case, t: Target, r: Rand) -> None:
    if not c.segments:
        c.segments.append(Seg(b""))
    pick(r, c.segments).kind = pick(r, ("meta", "sparse", "none", "bytes", "nested"))


def o_container(c: Case, t: Target, r: Rand) -> None:
    if r.random() < 0.6:
        c.segs = pick(r, ("list", "none", "int"))
    else:
        c.frames = pick(r, ("tuple", "none"))


OPS: dict[str, dict[str, Op]] = {
    "words": {
        op.__name__: op
        for op in (
            w_interesting,
            w_bitflip,
            w_random,
            w_arith,
            w_copy,
            w_swap,
            w_region,
            w_all_random,
            w_presence,
            w_field_absent,
            w_field_present,
            w_header,
            w_action,
            w_version,
            w_magic,
            w_dim,
            w_dims_max,
            w_dtype,
            w_frame1,
            w_scalar,
            w_no_reseal,
        )
    },
    "frame0": {op.__name__: op for op in (f0_truncate, f0_extend, f0_random, f0_dtype)},
    "frame1": {
        op.__name__: op
        for op in (
            s_drop,
            s_add,
            s_swap,
            s_truncate,
            s_extend,
            s_clear,
            s_dtype,
            s_misalign,
            s_stride,
            s_2d,
            s_flip,
            s_random,
            s_slot,
        )
    },
    "objects": {op.__name__: op for op in (o_frame0, o_segment, o_container)},
}
FAMILIES = tuple(OPS)
#: How often each family is drawn (words dominate: they reach the most checks).
WEIGHTS = {"words": 12, "frame0": 2, "frame1": 5, "objects": 1}
ALL_OPS: dict[str, Op] = {name: op for fam in OPS.values() for name, op in fam.items()}


def op_names(families: Sequence[str] = FAMILIES) -> list[str]:
    """Operator names, each family repeated by its weight (for uniform draws)."""
    out: list[str] = []
    for fam in families:
        out += list(OPS[fam]) * WEIGHTS[fam]
    return out


def apply(c: Case, t: Target, r: Rand, names: Sequence[str]) -> Case:
    """Run the named operators on ``c``, then re-seal frame 0 (unless one said not to)."""
    for name in names:
        ALL_OPS[name](c, t, r)
        c.ops.append(name)
    c.words = [wrap64(w) for w in c.words]
    if c.reseal:
        c.seal()
    return c


def mutate(
    c: Case, t: Target, r: Rand, families: Sequence[str] = FAMILIES, max_ops: int = 4
) -> Case:
    """1..``max_ops`` operators drawn from ``families`` (by weight)."""
    names = op_names(families)
    return apply(c, t, r, [pick(r, names) for _ in range(1 + r.randrange(max_ops))])
