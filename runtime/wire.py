"""Wire format support shared by the generated protocol modules (docs/wire-format.md).

Frame 0 is a fixed-length int64 vector: magic + wire version, spec fingerprint, header
slots, header presence, message id and version, field presence, scalar slots, the tensor
manifest, the byte length of frame 1 and a checksum. Frame 1 is the tensor bytes, split
into *segments* that both sides derive from the manifest alone: every tensor under
``COALESCE_LIMIT`` bytes goes into one packed segment (16-byte aligned), every larger
tensor is its own segment, sent straight from (or received straight into) its storage.

Frame 0 also carries the xxh3-64 digest of frame 1 (every segment's bytes in segment order,
padding included; 0 when frame 1 is empty). A receiver checks it, and that every padding
byte is zero, before it hands an envelope over: gloo accepts a message shorter than the
receive buffer without a word, so without the digest a short or corrupted frame 1 would be
handed over as whatever the buffer held, differently on every rank.

Nothing here unpickles, evaluates or allocates from a peer's numbers before they have
been checked against the spec's bounds.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import hashlib
import math
import struct
import threading
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import xxhash

from .dtypes import DTYPE_TABLE, REASON_TEXT_BYTES, REASON_WORDS, WIRE_VERSION
from .errors import EnvelopeInvalid, ProtocolMismatch, Violation, WireError

MAGIC = 0x74707769  # "tpwi"
MAGIC_WORD = (MAGIC << 16) | WIRE_VERSION
#: Fixed words before the header slots: magic/version, fingerprint.
W_MAGIC = 0
W_FINGERPRINT = 1
W_HEADER = 2
ALIGN = 16
COALESCE_LIMIT = 64 * 1024
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True, eq=False)  # one instance per dtype: identity is equality
class WireDtype:
    code: int
    name: str
    torch_dtype: torch.dtype
    itemsize: int


#: Every dtype the wire can carry, by stable code (0 means "tensor absent").
WIRE_DTYPES: tuple[WireDtype, ...] = tuple(
    WireDtype(code, name, getattr(torch, name), itemsize) for name, code, itemsize in DTYPE_TABLE
)
DTYPE_BY_NAME: dict[str, WireDtype] = {d.name: d for d in WIRE_DTYPES}
DTYPE_BY_CODE: dict[int, WireDtype] = {d.code: d for d in WIRE_DTYPES}
DTYPE_BY_TORCH: dict[torch.dtype, WireDtype] = {d.torch_dtype: d for d in WIRE_DTYPES}


def dtype_name(dtype: object) -> str:
    """The spec name of a torch dtype (``torch.bfloat16`` -> ``bfloat16``)."""
    wd = DTYPE_BY_TORCH.get(dtype) if isinstance(dtype, torch.dtype) else None
    return wd.name if wd is not None else str(dtype).removeprefix("torch.")


# --- scalars ---------------------------------------------------------------------------


_F64 = struct.Struct("<d")
_I64 = struct.Struct("<q")


def float_to_word(x: float) -> int:
    word: int = _I64.unpack(_F64.pack(x))[0]
    return word


def word_to_float(w: int) -> float:
    x: float = _F64.unpack(_I64.pack(w))[0]
    return x


def str_to_words(s: str, nwords: int) -> list[int]:
    """Length word + UTF-8 bytes packed little-endian into ``nwords`` words."""
    raw = s.encode("utf-8")
    padded = raw.ljust(nwords * 8, b"\0")
    return [len(raw), *struct.unpack(f"<{nwords}q", padded)]


def words_to_str(words: Sequence[int], max_len: int, word: int) -> str:
    n = words[0]
    if not 0 <= n <= max_len:
        raise WireError("scalar", f"string length {n} outside 0..{max_len}", word)
    raw = struct.pack(f"<{len(words) - 1}q", *words[1:])
    if any(raw[n:]):
        raise WireError("scalar", "string padding is not zero", word)
    try:
        return raw[:n].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("scalar", f"string is not UTF-8: {exc.reason}", word) from None


class ErrorCode(enum.IntEnum):
    """Why a sender stopped its stream with an ERROR frame (frame 0's reason code)."""

    USER = 1  # the application called ``error(reason)``
    EXCEPTION = 2  # the sender's ``with`` block or ``send`` raised
    INVALID = 3  # an envelope was refused (a relay validating before it broadcasts)
    DRIFT = 4  # a tripwire found ranks holding different inputs or outputs
    LOCKSTEP = 5  # the ranks' plans or ids no longer agree (ledger, ordering)


class Reason(NamedTuple):
    """The reason an ERROR frame carries: a code and a short text."""

    code: ErrorCode
    text: str

    def __str__(self) -> str:
        return f"{self.code.name}: {self.text}"


def clip_utf8(text: str, nbytes: int) -> str:
    """``text`` in at most ``nbytes`` of UTF-8, cut at a character boundary (lone
    surrogates, which UTF-8 cannot hold, become ``?``)."""
    raw = text.encode("utf-8", "replace")
    if len(raw) > nbytes:
        raw = raw[: nbytes - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."
    return raw.decode("utf-8")


def put_reason(words: list[int], at: int, code: ErrorCode, text: str) -> None:
    """Write an ERROR frame's reason into frame 0 words ``at``.. (``REASON_WORDS``)."""
    words[at] = int(code)
    words[at + 1 : at + REASON_WORDS] = str_to_words(
        clip_utf8(text, REASON_TEXT_BYTES), REASON_WORDS - 2
    )


def read_reason(words: Sequence[int], at: int) -> Reason | None:
    """An ERROR frame's reason (None when it carries none), checked like any scalar."""
    code = words[at]
    if code == 0:
        require_zero(words, at, at + REASON_WORDS)
        return None
    if code not in ErrorCode._value2member_map_:
        raise WireError("reason", f"unknown error reason code {code}", at)
    text = words_to_str(words[at + 1 : at + REASON_WORDS], REASON_TEXT_BYTES, at + 1)
    return Reason(ErrorCode(code), text)


def word_to_bool(w: int, word: int) -> bool:
    if w == 0:
        return False
    if w == 1:
        return True
    raise WireError("scalar", f"bool slot holds {w}, expected 0 or 1", word)


# --- frame 0 ---------------------------------------------------------------------------


def _checksum(body: bytes) -> int:
    digest = hashlib.blake2b(body, digest_size=8).digest()
    value: int = struct.unpack("<q", digest)[0]
    return value


def seal_words(words: list[int]) -> array[int]:
    """Frame 0's words as int64s, the last one set to the checksum of the others."""
    buf = array("q", words)
    buf[-1] = _checksum(buf[:-1].tobytes())
    return buf


def seal_bytes(words: list[int]) -> tuple[bytes, int]:
    """``seal_words`` as bytes (native int64s), and the checksum: one ``struct`` pack of the
    words instead of an array, a slice of it and its bytes."""
    n = len(words) - 1
    packer = _PACKERS.get(n)
    if packer is None:
        packer = _PACKERS[n] = struct.Struct(f"={n}q")
    body = packer.pack(*words[:n])
    checksum = _checksum(body)
    return body + _NATIVE_I64.pack(checksum), checksum


_PACKERS: dict[int, struct.Struct] = {}
_NATIVE_I64 = struct.Struct("=q")


def seal(words: list[int]) -> torch.Tensor:
    """Frame 0 from its words; the last word is set to the checksum of the others."""
    return torch.frombuffer(bytearray(seal_bytes(words)[0]), dtype=torch.int64)


def open_frame0(frame0: object, length: int, fingerprint: int) -> list[int]:
    """Check the envelope of frame 0 and return its words.

    Order matters for the error a peer sees: the tensor's kind, then magic, wire version and
    fingerprint (a peer compiled from another spec gets ``ProtocolMismatch``, whatever its
    frame 0 length), then the length and the checksum. Only then are the words trusted
    enough to be read as a header.
    """
    if not isinstance(frame0, torch.Tensor):
        raise WireError("frame0", f"frame 0 must be a torch.Tensor, got {type(frame0).__name__}")
    if not is_dense(frame0):  # meta/sparse/nested tensors: even .tolist() may raise
        raise WireError("frame0", "frame 0 must be a dense tensor with storage")
    if frame0.dtype is not torch.int64 or frame0.dim() != 1:
        raise WireError(
            "frame0", f"frame 0 must be a 1-D int64 tensor, got {frame0.dtype} {list(frame0.shape)}"
        )
    n = frame0.numel()
    if n == length and frame0.is_cpu and frame0.is_contiguous():
        # its raw bytes: one copy out of the tensor, read as words by the bytes path
        return open_frame0_bytes(ctypes.string_at(frame0.data_ptr(), n * 8), length, fingerprint)
    words: list[int] = frame0.tolist() if n == length else frame0[:2].tolist()
    _check_identity(words, fingerprint)
    if n != length:
        raise WireError("frame0", f"frame 0 has {n} words, this protocol uses {length}")
    return _check_sum(words, array("q", words[:-1]).tobytes(), length)


def open_frame0_bytes(raw: bytes, length: int, fingerprint: int) -> list[int]:
    """``open_frame0`` of frame 0's raw bytes (native int64s, as a channel receives them)."""
    if len(raw) != length * 8:
        if len(raw) >= 16:
            _check_identity(memoryview(raw)[:16].cast("q").tolist(), fingerprint)
        raise WireError("frame0", f"frame 0 has {len(raw)} bytes, this protocol uses {length * 8}")
    words: list[int] = memoryview(raw).cast("q").tolist()
    _check_identity(words, fingerprint)
    return _check_sum(words, raw[:-8], length)


def _check_identity(words: list[int], fingerprint: int) -> None:
    """Magic, wire version and spec fingerprint: whether the peer speaks this protocol."""
    if len(words) < 2:
        return  # too short to say; the length check refuses it
    if words[W_MAGIC] >> 16 != MAGIC:
        raise ProtocolMismatch("magic", f"bad magic {words[W_MAGIC]:#x}", W_MAGIC)
    if words[W_MAGIC] & 0xFFFF != WIRE_VERSION:
        raise ProtocolMismatch(
            "wire-version",
            f"peer speaks wire version {words[W_MAGIC] & 0xFFFF}, this side {WIRE_VERSION}",
            W_MAGIC,
        )
    if words[W_FINGERPRINT] != fingerprint:
        raise ProtocolMismatch(
            "fingerprint",
            f"peer spec fingerprint {words[W_FINGERPRINT]:#018x} != {fingerprint:#018x} "
            "(ranks run different spec revisions)",
            W_FINGERPRINT,
        )


def _check_sum(words: list[int], body: bytes, length: int) -> list[int]:
    if _checksum(body) != words[-1]:
        raise WireError("checksum", "frame 0 checksum mismatch (corrupted frame)", length - 1)
    return words


# --- tensors and frame 1 ---------------------------------------------------------------


class TensorSlot(NamedTuple):
    """One tensor of a manifest: where it lives in frame 1 and how to view it."""

    field: str
    dtype: WireDtype
    shape: tuple[int, ...]
    nbytes: int
    segment: int
    offset: int
    #: row-major strides of ``shape``, in elements
    strides: tuple[int, ...]


def row_major(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides of ``shape``, in elements."""
    out = []
    step = 1
    for d in reversed(shape):
        out.append(step)
        step *= d
    return tuple(reversed(out))


def plan_segments(
    entries: Sequence[tuple[str, WireDtype, tuple[int, ...]]],
) -> tuple[tuple[TensorSlot, ...], tuple[int, ...]]:
    """Assign each tensor (in wire order) to a segment; both sides call this."""
    key = tuple(entries)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= LAYOUT_CACHE_SIZE:
            _PLANS.clear()  # a stream repeats a few layouts; a new one costs the plan, once
        plan = _PLANS[key] = _plan(key)
    return plan


def _plan(
    entries: Sequence[tuple[str, WireDtype, tuple[int, ...]]],
) -> tuple[tuple[TensorSlot, ...], tuple[int, ...]]:
    slots: list[TensorSlot] = []
    sizes: list[int] = []
    packed = 0  # bytes of the packed segment (segment 0 when there is one)
    has_packed = False
    large = 0
    prod = math.prod
    for field, wd, shape in entries:
        nbytes = prod(shape) * wd.itemsize
        if nbytes < COALESCE_LIMIT:
            has_packed = True
            slots.append(TensorSlot(field, wd, shape, nbytes, 0, packed, row_major(shape)))
            packed += -(-nbytes // ALIGN) * ALIGN
        else:
            large += 1
            slots.append(TensorSlot(field, wd, shape, nbytes, large, 0, row_major(shape)))
            sizes.append(nbytes)
    if not has_packed:
        # no packed segment: large tensors number from 0
        return tuple(s._replace(segment=s.segment - 1) for s in slots), tuple(sizes)
    return tuple(slots), (packed, *sizes)


_PLANS: dict[tuple[Entry, ...], tuple[tuple[TensorSlot, ...], tuple[int, ...]]] = {}


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


# --- the frame 1 digest ----------------------------------------------------------------


def _hash_bytes(h: Any, t: torch.Tensor, start: int, nbytes: int) -> None:
    """Feed ``nbytes`` of ``t``'s storage from byte ``start`` on into ``h``.

    ``t`` is contiguous (``materialize``, or a receive buffer). CPU bytes are hashed where
    they lie; a device tensor's bytes are copied to the host first."""
    if not nbytes:
        return
    if not t.is_cpu:
        with _STAGING_LOCK:
            host = _staged(_as_bytes(t)[start : start + nbytes])
            h.update((ctypes.c_char * nbytes).from_address(host.data_ptr()))
        return
    h.update((ctypes.c_char * nbytes).from_address(t.data_ptr() + start))


#: Device bytes are hashed from a pinned host buffer, reused and grown up to this size (a
#: pinned copy moves several times faster than a pageable ``.cpu()``); larger go pageable.
STAGING_LIMIT = 256 << 20
_STAGING: list[torch.Tensor] = []
_STAGING_LOCK = threading.Lock()


def _staged(src: torch.Tensor) -> torch.Tensor:
    """``src``'s bytes (a device tensor of uint8) on the host, the copy complete."""
    n = src.numel()
    if n > STAGING_LIMIT or src.device.type != "cuda":
        return src.cpu()
    if not _STAGING or _STAGING[0].numel() < n:
        size = min(max(n, 2 * _STAGING[0].numel() if _STAGING else 1 << 20), STAGING_LIMIT)
        _STAGING[:] = [torch.empty(size, dtype=torch.uint8, pin_memory=True)]
    host = _STAGING[0][:n]
    host.copy_(src, non_blocking=True)
    torch.cuda.current_stream(src.device).synchronize()
    return host


_CHAR = ctypes.c_char


def signed64(u: int) -> int:
    """An unsigned 64-bit digest as the int64 a frame 0 word holds."""
    return u - (1 << 64) if u >= 1 << 63 else u


def hash_tensor(h: Any, t: torch.Tensor) -> None:
    """Feed every byte of contiguous ``t`` into ``h`` (a device tensor's via the host)."""
    _hash_bytes(h, t, 0, t.numel() * t.element_size())


def frame1_digest(
    tensors: Sequence[torch.Tensor], slots: Sequence[TensorSlot], sizes: Sequence[int]
) -> int:
    """xxh3-64 of frame 1 as the sender lays it out (packed segment with its zero padding,
    then each large segment), as a signed int64 word; 0 when frame 1 is empty."""
    if not any(sizes):
        return 0
    h = xxhash.xxh3_64()
    update = h.update
    large: list[tuple[torch.Tensor, TensorSlot]] = []
    for t, slot in zip(tensors, slots, strict=True):
        n = slot.nbytes
        if n >= COALESCE_LIMIT:
            large.append((t, slot))  # segments 1.. follow the packed segment, in order
            continue
        if n:
            if t.is_cpu:  # ``_hash_bytes``, inlined for the small tensors of every envelope
                update((_CHAR * n).from_address(t.data_ptr()))
            else:
                _hash_bytes(h, t, 0, n)
        pad = -n % ALIGN
        if pad:
            update(_ZERO_BYTES[pad])
    for t, slot in large:
        _hash_bytes(h, t, 0, slot.nbytes)
    return signed64(h.intdigest())


def buffers_digest(
    buffers: Sequence[torch.Tensor], offsets: Sequence[int] | None, sizes: Sequence[int]
) -> int:
    """``frame1_digest`` of received segments: segment ``i`` is ``sizes[i]`` bytes of
    ``buffers[i]`` from byte ``offsets[i]`` on."""
    if not any(sizes):
        return 0
    h = xxhash.xxh3_64()
    for i, n in enumerate(sizes):
        _hash_bytes(h, buffers[i], 0 if offsets is None else offsets[i], n)
    return signed64(h.intdigest())


def bytes_digest(segments: Sequence[bytes]) -> int:
    """``frame1_digest`` of segments given as bytes (tools, tests, fuzzing)."""
    if not any(segments):
        return 0
    h = xxhash.xxh3_64()
    for data in segments:
        h.update(data)
    return signed64(h.intdigest())


_ZERO_BYTES = tuple(bytes(n) for n in range(ALIGN))


def verify_frame1(
    slots: Sequence[TensorSlot],
    sizes: Sequence[int],
    buffers: Sequence[torch.Tensor],
    offsets: Sequence[int] | None,
    digest: int,
) -> None:
    """Every received frame 1 byte against frame 0: the digest, then zero padding (so a
    frame 1 has exactly one encoding), then the bytes of bool tensors (0 or 1)."""
    got = buffers_digest(buffers, offsets, sizes)
    if got != digest:
        raise WireError(
            "digest",
            f"frame 1 bytes hash to {got & _U64:#018x}, frame 0 announced {digest & _U64:#018x} "
            "(a short, long or corrupted frame 1)",
        )
    for slot in slots:
        n = slot.nbytes
        pad = -n % ALIGN if n < COALESCE_LIMIT else 0
        buf = buffers[slot.segment]
        at = slot.offset if offsets is None else slot.offset + offsets[slot.segment]
        if pad and _read(buf, at + n, pad) != _ZERO_BYTES[pad]:
            raise WireError("padding", f"{slot.field}: the padding after it is not zero")
        if n and slot.dtype.torch_dtype is torch.bool and int(buf[at : at + n].max()) > 1:
            raise WireError("frame1", f"{slot.field}: a bool tensor byte is not 0 or 1")


def _read(buf: torch.Tensor, start: int, n: int) -> bytes:
    if buf.is_cpu:
        return ctypes.string_at(buf.data_ptr() + start, n)
    return bytes(buf[start : start + n].cpu().tolist())


def pack_segments(
    tensors: Sequence[torch.Tensor], slots: Sequence[TensorSlot], sizes: Sequence[int]
) -> tuple[torch.Tensor, ...]:
    """Frame 1 segments: small tensors copied into one buffer, large ones viewed in place."""
    segments: list[torch.Tensor] = [_EMPTY] * len(sizes)
    small: list[tuple[torch.Tensor, TensorSlot]] = []
    for t, slot in zip(tensors, slots, strict=True):
        if slot.nbytes < COALESCE_LIMIT:
            small.append((t, slot))
        else:
            segments[slot.segment] = _as_bytes(t)
    if small:
        # a copy even for one tensor: the frames must not change when the caller's do
        segments[0] = _pack(small, sizes[0])
    return tuple(segments)


def _pack(small: Sequence[tuple[torch.Tensor, TensorSlot]], nbytes: int) -> torch.Tensor:
    """The packed segment, on the device of its first tensor."""
    for t, _ in small:
        if not t.is_cpu:
            break
    else:
        buf = torch.zeros(nbytes, dtype=torch.uint8)  # the padding: zero from the start
        base = buf.data_ptr()
        memmove = ctypes.memmove
        for t, slot in small:  # ``copy_in``, inlined: a new buffer holds no tensor in place
            if slot.nbytes:
                memmove(base + slot.offset, t.data_ptr(), slot.nbytes)
        return buf
    on = small[0][0].device
    parts: list[torch.Tensor] = []  # tensor bytes and zero padding
    for t, slot in small:
        if slot.nbytes:
            part = _as_bytes(t)
            parts.append(part if part.device == on else part.to(on))
        pad = -slot.nbytes % ALIGN
        if pad:
            parts.append(
                _PADS[pad] if on.type == "cpu" else torch.zeros(pad, dtype=torch.uint8, device=on)
            )
    if not parts:  # only empty tensors: a packed segment of 0 bytes
        return torch.empty(0, dtype=torch.uint8, device=on)
    return torch.cat(parts) if len(parts) > 1 else parts[0].clone()


def copy_in(
    buf: torch.Tensor, base: int | None, start: int, t: torch.Tensor, nbytes: int, pad: int
) -> None:
    """``t``'s bytes into ``buf`` from byte ``start`` on, then ``pad`` zero bytes.

    ``base`` is ``buf``'s address when it is a CPU buffer: bytes from a CPU tensor then move
    with one ``memmove`` instead of a few tensor operations. ``t`` is contiguous
    (``materialize``) and ``nbytes`` is its size, so the copy stays inside both. Bytes
    already in place (a tensor the caller built in the buffer: ``alloc``) are not moved."""
    if nbytes:
        if base is not None and t.is_cpu:
            if t.data_ptr() != base + start:
                ctypes.memmove(base + start, t.data_ptr(), nbytes)
        elif t.device != buf.device or t.data_ptr() != buf.data_ptr() + start:
            buf[start : start + nbytes].copy_(_as_bytes(t))
    if pad:
        if base is not None:
            ctypes.memset(base + start + nbytes, 0, pad)
        else:
            buf[start + nbytes : start + nbytes + pad].zero_()


_PADS = tuple(torch.zeros(n, dtype=torch.uint8) for n in range(ALIGN))
_EMPTY = torch.empty(0, dtype=torch.uint8)


def trailer_word(checksum: int) -> int:
    """The word that ends a head collective: frame 0's checksum with its low bit set, so it
    is never 0 (a receiver zeroes the trailer's place before the collective: a head shorter
    than announced leaves it 0) and belongs to this very frame 0."""
    return checksum | 1


def write_word(buf: torch.Tensor, at: int, value: int) -> None:
    """One int64 ``value`` into the uint8 buffer ``buf`` at byte ``at`` (8-aligned)."""
    if buf.is_cpu:
        ctypes.c_int64.from_address(buf.data_ptr() + at).value = value
    else:
        buf[at : at + 8].view(torch.int64).fill_(value)


def read_word(buf: torch.Tensor, at: int) -> int:
    """The int64 at byte ``at`` of the uint8 buffer ``buf``."""
    if buf.is_cpu:
        return ctypes.c_int64.from_address(buf.data_ptr() + at).value
    return int(buf[at : at + 8].view(torch.int64).item())


@dataclass(frozen=True, slots=True)
class Frames:
    """An encoded envelope: frame 0 (int64 words) and frame 1 (uint8 segments)."""

    frame0: torch.Tensor
    segments: tuple[torch.Tensor, ...] = ()

    @property
    def frame1_nbytes(self) -> int:
        return sum(int(s.numel()) for s in self.segments)

    def frame1(self) -> torch.Tensor:
        """Frame 1 as one contiguous uint8 buffer (copies when there are several segments)."""
        if len(self.segments) == 1:
            return self.segments[0]
        if not self.segments:
            return torch.empty(0, dtype=torch.uint8)
        return torch.cat(list(self.segments))


class Prepared(NamedTuple):
    """An envelope after the whole preflight of ``encode`` (validated, tensors materialized,
    segments planned, frame 0's words written but not sealed), before any byte is laid out.

    ``frames()`` lays it out as ``encode`` does; a channel lays it straight into its own
    send buffer instead (``write_into``), which saves a copy and a dozen tensor operations
    per envelope.
    """

    words: list[int]
    tensors: Sequence[torch.Tensor]
    slots: tuple[TensorSlot, ...]
    sizes: tuple[int, ...]

    def frames(self) -> Frames:
        return Frames(seal(self.words), pack_segments(self.tensors, self.slots, self.sizes))

    def segment(self, index: int) -> torch.Tensor:
        """Segment ``index`` as ``frames()`` would hold it."""
        for t, slot in zip(self.tensors, self.slots, strict=True):
            if slot.segment == index and slot.nbytes >= COALESCE_LIMIT:
                return _as_bytes(t)  # a large tensor is its own segment, sent from its storage
        return pack_segments(self.tensors, self.slots, self.sizes)[index]

    def write_into(
        self,
        buf: torch.Tensor,
        offsets: Sequence[int],
        carried: Sequence[bool],
        trailer_at: int | None = None,
    ) -> None:
        """Frame 0 at the start of ``buf``, each carried segment at its offset, and, when
        ``trailer_at`` is given, the trailer word (``trailer_word``) there.

        Bytes ``frames()`` would pad with zeros are zeroed here too; bytes past a segment's
        end are left as they are (nothing reads them). On a CPU buffer the bytes move with
        ``memmove`` from the tensors' own storage (they are contiguous: ``materialize``).
        """
        base = buf.data_ptr() if buf.is_cpu else None
        sealed, checksum = seal_bytes(self.words)
        if base is not None:
            ctypes.memmove(base, sealed, len(sealed))
        else:
            frame0 = torch.frombuffer(bytearray(sealed), dtype=torch.int64)
            buf[: len(sealed)].view(torch.int64).copy_(frame0)
        if trailer_at is not None:
            write_word(buf, trailer_at, trailer_word(checksum))
        for t, slot in zip(self.tensors, self.slots, strict=True):
            seg = slot.segment
            if carried[seg]:
                n = slot.nbytes
                pad = -n % ALIGN if n < COALESCE_LIMIT else 0
                copy_in(buf, base, offsets[seg] + slot.offset, t, n, pad)


#: an empty tensor per device and dtype: ``new()`` of it is the cheapest tensor to ``set_``
_PROTOS: dict[torch.device, dict[torch.dtype, torch.Tensor]] = {}


class Manifest(NamedTuple):
    """What frame 0 announced, checked against the spec; nothing allocated yet.

    (A named tuple: every envelope makes one, and a tuple is made at a third of the cost
    of a frozen dataclass.)"""

    header: Any
    message: type | None
    scalars: Mapping[str, object]
    slots: tuple[TensorSlot, ...]
    segment_nbytes: tuple[int, ...]
    validate: Callable[[Any, Any], list[Violation]] | None = None
    #: frame 0's digest of frame 1 (``frame1_digest``)
    digest: int = 0
    #: an ERROR frame's reason (``read_reason``)
    reason: Reason | None = None

    @property
    def frame1_nbytes(self) -> int:
        return sum(self.segment_nbytes)

    def allocate(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
        """Empty receive buffers for frame 1, sized from the checked manifest."""
        return tuple(torch.empty(n, dtype=torch.uint8, device=device) for n in self.segment_nbytes)

    def views(
        self, buffers: Sequence[torch.Tensor], offsets: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """The message's tensors as views of ``buffers`` (see ``assemble``): each a tensor of
        its dtype set on the buffer's storage at its place (zero copy, one torch call less per
        tensor than a typed view and a strided view of it). They read the buffers' bytes only
        when used, so a channel can make them before the bytes arrive."""
        out: dict[str, torch.Tensor] = {}
        seg = -1
        storage: Any = None
        start = 0
        protos: dict[torch.dtype, torch.Tensor] = {}
        for slot in self.slots:  # slots in a row in one segment share its lookup
            if slot.segment != seg:
                seg = slot.segment
                buf = buffers[seg]
                storage = buf.untyped_storage()
                start = int(buf.storage_offset()) + (0 if offsets is None else offsets[seg])
                protos = _PROTOS.get(buf.device) or _PROTOS.setdefault(buf.device, {})
            wd = slot.dtype
            at = start + slot.offset
            if at % wd.itemsize:  # not where a tensor of this dtype can start: say so
                raise WireError("frame1", f"{slot.field}: misaligned in its segment")
            proto = protos.get(wd.torch_dtype)
            if proto is None:
                proto = protos[wd.torch_dtype] = torch.empty(
                    0, dtype=wd.torch_dtype, device=buf.device
                )
            out[slot.field] = proto.new().set_(storage, at // wd.itemsize, slot.shape, slot.strides)
        return out

    def finish(self, segments: Sequence[torch.Tensor]) -> tuple[Any, Any]:
        """Rebuild the message from received segments, then validate it."""
        if len(segments) != len(self.segment_nbytes):
            raise WireError(
                "frame1",
                f"expected {len(self.segment_nbytes)} frame 1 segments, got {len(segments)}",
            )
        for i, (seg, n) in enumerate(zip(segments, self.segment_nbytes, strict=True)):
            if not is_dense(seg) or seg.dtype is not torch.uint8 or seg.dim() != 1:
                raise WireError("frame1", f"segment {i} must be a 1-D uint8 tensor")
            if seg.numel() != n:
                raise WireError(
                    "frame1", f"segment {i} holds {seg.numel()} bytes, manifest announced {n}"
                )
            if not seg.is_contiguous() or seg.storage_offset() % 8:  # (dense: never meta)
                raise WireError(
                    "frame1",
                    f"segment {i} must be a contiguous, 8-byte aligned buffer with storage",
                )
        return self.assemble(segments)

    def assemble(
        self,
        buffers: Sequence[torch.Tensor],
        offsets: Sequence[int] | None = None,
        views: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[Any, Any]:
        """``finish`` without the checks of the segments themselves, for buffers the caller
        allocated from this manifest (a channel's own receive buffers): segment ``i`` is the
        bytes of ``buffers[i]`` from byte ``offsets[i]`` on (0 when not given). ``views``:
        this manifest's ``views`` of the same buffers, when the caller made them already.
        Every byte is checked against frame 0 (``verify_frame1``), then the views, then
        the validation."""
        msg = None
        verify_frame1(self.slots, self.segment_nbytes, buffers, offsets, self.digest)
        if self.message is not None:
            values = dict(self.scalars)
            values.update(self.views(buffers, offsets) if views is None else views)
            msg = build(self.message, values)
        if self.validate is not None:
            violations = self.validate(msg, self.header)
            if violations:
                raise EnvelopeInvalid(violations)
        return self.header, msg


def build(cls: type, values: Mapping[str, object]) -> Any:
    """``cls(**values)`` of a generated message class from a value for every field, as the
    decoder has them: each slot set straight through its descriptor, at half the cost of
    the frozen dataclass ``__init__`` (which sets each through ``object.__setattr__``). Its
    ``__post_init__`` only derives a field the caller left out, and a decoder leaves none
    out, so it is not run."""
    setters = _SETTERS.get(cls)
    if setters is None:
        setters = _SETTERS[cls] = _slot_setters(cls)
    if not setters:
        return cls(**values)
    msg: Any = object.__new__(cls)
    for name, put in setters:
        put(msg, values[name])
    return msg


def _slot_setters(cls: type) -> tuple[tuple[str, Callable[[object, object], None]], ...]:
    """Each field's slot setter, or () when a field is not a plain slot (then ``build``
    calls the class)."""
    setters = []
    for f in dataclasses.fields(cls):
        slot: Any = cls.__dict__.get(f.name)
        if type(slot) is not _MEMBER_DESCRIPTOR:
            return ()
        setters.append((f.name, slot.__set__))
    return tuple(setters)


_MEMBER_DESCRIPTOR = type(Frames.__dict__["frame0"])
_SETTERS: dict[type, tuple[tuple[str, Callable[[object, object], None]], ...]] = {}


def tensors_identical(a: object, b: object) -> bool:
    """Bit-for-bit equality of two tensors (dtype, shape and bytes; NaNs included)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return a is b or (a is None and b is None)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.device != b.device:
        b = b.to(a.device)
    return bool(torch.equal(_as_bytes(a.contiguous()), _as_bytes(b.contiguous())))


def check_frames(frames: object) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    if not isinstance(frames, Frames):
        raise WireError("frame0", f"expected Frames, got {type(frames).__name__}")
    if not isinstance(frames.segments, tuple | list):
        raise WireError(
            "frame1", f"segments must be a tuple of tensors, got {type(frames.segments).__name__}"
        )
    return frames.frame0, tuple(frames.segments)


# --- helpers called by generated encoders and decoders -----------------------------------

Entry = tuple[str, WireDtype, tuple[int, ...]]
#: A dimension of a tensor pattern: a constant, or (symbol, min, max).
DimPattern = int | tuple[str, int, int]


def materialize(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    if device is not None and t.device != torch.device(device):
        t = t.to(device)
    return t.contiguous()


def put_tensor(words: list[int], word: int, field: str, t: torch.Tensor) -> Entry:
    wd = DTYPE_BY_TORCH[t.dtype]
    shape = tuple(t.shape)
    words[word] = wd.code
    words[word + 1 : word + 1 + len(shape)] = shape
    return field, wd, shape


def read_tensor(
    w: Sequence[int],
    word: int,
    field: str,
    codes: tuple[int, ...],
    pattern: tuple[DimPattern, ...],
    dims: dict[str, int],
    max_elements: int,
) -> Entry:
    """One manifest entry, checked against the spec before anything is allocated."""
    code = w[word]
    if code not in codes:
        allowed = ", ".join(DTYPE_BY_CODE[c].name for c in codes)
        raise WireError("dtype", f"{field}: dtype code {code} is not one of {allowed}", word)
    shape: list[int] = []
    for i, p in enumerate(pattern):
        d = w[word + 1 + i]
        if isinstance(p, int):
            if d != p:
                raise WireError("dim", f"{field}: dim {i} is {d}, the spec fixes {p}", word + 1 + i)
        else:
            sym, lo, hi = p
            if not lo <= d <= hi:
                raise WireError(
                    "dim", f"{field}: dim {i} ({sym}) = {d} outside {lo}..{hi}", word + 1 + i
                )
            bound = dims.setdefault(sym, d)
            if bound != d:
                raise WireError(
                    "dim",
                    f"{field}: dim {i} ({sym}) = {d}, but {sym} = {bound} elsewhere",
                    word + 1 + i,
                )
        shape.append(d)
    n = math.prod(shape)
    if n > max_elements:
        raise WireError("size", f"{field}: {n} elements exceed the bound {max_elements}", word)
    return field, DTYPE_BY_CODE[code], tuple(shape)


class _Derive:
    """The default of a derived field: computed from the others in ``__post_init__``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<derived>"


#: Typed ``Any`` so a derived field of any type can default to it.
DERIVE: Any = _Derive()


def field_values(msg: Any) -> dict[str, Any]:
    """A message's fields by name (its dataclass fields: class constants left out)."""
    return {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}


def bind_dims(
    values: Mapping[str, Any], patterns: Mapping[str, tuple[DimPattern, ...]]
) -> dict[str, int]:
    """The dimension symbols the given tensors bind (the first binding of each symbol)."""
    dims: dict[str, int] = {}
    for name, pattern in patterns.items():
        t = values.get(name)
        # nested/sparse/meta tensors have no sizes to bind
        if not isinstance(t, torch.Tensor) or not is_dense(t) or t.dim() != len(pattern):
            continue
        for i, p in enumerate(pattern):
            if not isinstance(p, int):
                dims.setdefault(p[0], int(t.shape[i]))
    return dims


def set_derived(msg: Any, values: dict[str, Any], name: str, compute: Callable[[], Any]) -> None:
    """Set a derived field to ``compute()``; to None when the fields it reads cannot give a
    value (wrong types, a dimension no tensor binds): ``validate`` then says what is wrong."""
    try:
        value = compute()
    except Exception:  # the inputs' own violations are reported by validate
        value = None
    object.__setattr__(msg, name, value)
    values[name] = value


def bool_bytes_problem(t: torch.Tensor) -> str | None:
    """Why a bool tensor's bytes are not all 0 or 1 (a uint8 tensor viewed as bool can hold
    any byte; the wire carries bytes, and a receiver refuses any but 0 and 1)."""
    if not t.numel():
        return None
    top = int(t.view(torch.uint8).max())
    return f"a byte of {list(t.shape)} holds {top}" if top > 1 else None


def shape_problem(
    t: torch.Tensor,
    pattern: tuple[DimPattern, ...],
    dims: dict[str, int],
    max_elements: int,
) -> str | None:
    """Why ``t``'s shape breaks ``pattern`` (binding symbols into ``dims`` when it fits).

    What depends on the shape alone (rank, constants, ranges, a symbol repeated within the
    pattern, the element bound) is worked out once per pattern and shape and kept
    (``_static_shape``): a stream sends the same shapes envelope after envelope. Only the
    bindings to other tensors' dimensions are checked each time."""
    shape = tuple(t.shape)
    key = (id(pattern), max_elements, shape)
    hit = _SHAPES.get(key)
    if hit is None or hit[0] is not pattern:
        if len(_SHAPES) >= 4 * LAYOUT_CACHE_SIZE:
            _SHAPES.clear()
        hit = _SHAPES[key] = (pattern, *_static_shape(shape, pattern, max_elements))
    _, at, problem, binds = hit
    if dims:
        for i, sym, d in binds:
            if i >= at:
                break
            bound = dims.get(sym)
            if bound is not None and bound != d:
                return f"{list(shape)}: dim {i} ({sym}) = {d}, but {sym} = {bound} elsewhere"
    if problem is not None:
        return problem
    for _, sym, d in binds:
        dims[sym] = d
    return None


#: (id of a pattern, element bound, shape) -> (the pattern, ``_static_shape``)
_SHAPES: dict[
    tuple[int, int, tuple[int, ...]],
    tuple[tuple[DimPattern, ...], int, str | None, tuple[tuple[int, str, int], ...]],
] = {}


def _static_shape(
    shape: tuple[int, ...], pattern: tuple[DimPattern, ...], max_elements: int
) -> tuple[int, str | None, tuple[tuple[int, str, int], ...]]:
    """What ``shape_problem`` finds without the other tensors' bindings: the index of the
    first problem (``len(pattern)`` for the element bound; past it when there is none), the
    problem, and the symbols the shape binds as (dim index, symbol, value), first
    occurrences only."""
    if len(shape) != len(pattern):
        return -1, f"rank {len(shape)} {list(shape)}", ()
    binds: list[tuple[int, str, int]] = []
    new: dict[str, int] = {}
    for i, p in enumerate(pattern):
        d = shape[i]
        if p.__class__ is int:
            if d != p:
                return i, f"{list(shape)}: dim {i} is {d}, not {p}", tuple(binds)
            continue
        sym, lo, hi = p  # type: ignore[misc]
        if not lo <= d <= hi:
            return i, f"{list(shape)}: dim {i} ({sym}) = {d} outside {lo}..{hi}", tuple(binds)
        bound = new.get(sym)
        if bound is None:
            new[sym] = d
            binds.append((i, sym, d))
        elif bound != d:
            problem = f"{list(shape)}: dim {i} ({sym}) = {d}, but {sym} = {bound} elsewhere"
            return i, problem, tuple(binds)
    n = math.prod(shape)
    if n > max_elements:
        return len(pattern), f"{list(shape)}: {n} elements exceed {max_elements}", tuple(binds)
    return len(pattern) + 1, None, tuple(binds)


#: A checked tensor layout: slots, segment sizes and the dimension bindings.
Layout = tuple[tuple[TensorSlot, ...], tuple[int, ...], dict[str, int]]
LAYOUT_CACHE_SIZE = 64


def remember(cache: dict[tuple[int, ...], Layout], key: tuple[int, ...], layout: Layout) -> Layout:
    """Keep a checked layout for the next frame with the same manifest words (bounded: a
    peer sending ever new layouts costs the checks, never unbounded memory)."""
    if len(cache) >= LAYOUT_CACHE_SIZE:
        cache.clear()
    cache[key] = layout
    return layout


def enum_member(enum: Callable[[int], Any], value: int, word: int, code: str = "scalar") -> Any:
    # the members by value (an Enum keeps the map): a lookup instead of a call of the class
    member = getattr(enum, "_value2member_map_", _NO_MAP).get(value)
    if member is not None:
        return member
    try:
        return enum(value)
    except ValueError:
        name = getattr(enum, "__name__", "enum")
        raise WireError(code, f"{value} is not a member of {name}", word) from None


_NO_MAP: dict[int, Any] = {}


def require_zero(w: Sequence[int], start: int, stop: int) -> None:
    """Absent fields and unused words are zero, so one envelope has one encoding."""
    if not any(w[start:stop]):
        return
    for i in range(start, stop):
        if w[i] != 0:
            raise WireError("presence", f"word {i} must be 0 here, holds {w[i]}", i)


def absent(w: Sequence[int], start: int, stop: int | None = None) -> Any:
    """The value of a field whose presence bit is clear: None, once its words are zero."""
    require_zero(w, start, start + 1 if stop is None else stop)
    return None


def require_zero_at(w: Sequence[int], words: Sequence[int]) -> None:
    for i in words:
        if w[i] != 0:
            raise WireError("presence", f"word {i} is unused by this message but holds {w[i]}", i)


# --- helpers called by generated validators ----------------------------------------------


def show(x: object) -> str:
    """A short, log-friendly rendering of a value (tensors by dtype and shape)."""
    if isinstance(x, torch.Tensor):
        if not is_dense(x):  # nested/sparse/meta tensors: even .shape may raise
            return f"<{type(x).__name__} layout={x.layout} device={x.device.type}>"
        return f"tensor[{dtype_name(x.dtype)}]{list(x.shape)}"
    if isinstance(x, bool) or x is None:
        return repr(x)
    if isinstance(x, int) and hasattr(x, "name"):
        return f"{type(x).__name__}.{x.name}"
    if isinstance(x, int) and not INT64_MIN <= x <= INT64_MAX:
        return f"<int of {x.bit_length()} bits>"  # repr of a huge int can raise
    if isinstance(x, int | float):
        return repr(x)
    if isinstance(x, str):
        return repr(x if len(x) <= 80 else x[:77] + "...")
    return f"<{type(x).__name__}>"


def id_of(x: object) -> int | None:
    return x if type(x) is int else None


def sides(*items: tuple[str, object]) -> str:
    return ", ".join(f"{text} = {show(value)}" for text, value in items)


def class_names(carried: type | tuple[type, ...]) -> str:
    classes = carried if isinstance(carried, tuple) else (carried,)
    return " | ".join(c.__name__ for c in classes)


def finite(x: float) -> bool:
    return math.isfinite(x)


def utf8_len(s: str) -> int:
    """UTF-8 length of ``s``; -1 when it cannot be encoded (lone surrogates)."""
    try:
        return len(s.encode("utf-8"))
    except UnicodeEncodeError:
        return -1


def is_dense(t: object) -> bool:
    """A plain strided tensor with real storage: what the wire can carry byte for byte (a
    zero tensor, ``torch._efficientzerotensor``, is strided but has no bytes to read)."""
    return (
        (type(t) is _TENSOR or type(t) is _PARAMETER)
        and t.layout is _STRIDED
        and not t.is_nested
        and not t.is_meta
        and not t.is_neg()
        and not t.is_conj()
        and not t._is_zerotensor()
    )


_TENSOR = torch.Tensor
_PARAMETER = torch.nn.Parameter
_STRIDED = torch.strided


def same_fields(a: object, b: object, fields: Mapping[str, object]) -> bool:
    """Field-wise equality where tensors compare bit for bit."""
    for name in fields:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not tensors_identical(x, y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True
