"""How the envelopes of one direction of a channel travel: the head collective and its
slots (docs/wire-format.md, steady state; docs/architecture.md, framing)."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import NamedTuple

import torch

from .errors import WireError
from .wire import (
    _U64,
    ALIGN,
    Frames,
    Manifest,
    Prepared,
    TensorSlot,
    read_word,
    trailer_word,
    write_word,
)

#: Largest segment a CPU channel copies into the head in steady state (bytes).
CPU_CARRY_LIMIT = 1 << 20
#: The head collective ends in one int64 trailer word (``Framing``).
TRAILER_NBYTES = 8
#: The tag of frame 0 (p2p transports tag frame 1 segments from the envelope's ids).
FRAME0_TAG = 0


class Ahead(NamedTuple):
    """Receive buffers and views made before an envelope arrives (``Framing.views_ahead``)."""

    slots: tuple[TensorSlot, ...]  # the checked layout they were made for
    buffers: list[torch.Tensor]  # per segment: the head, or a buffer of its own
    offsets: list[int]  # where each segment starts in its buffer
    views: dict[str, torch.Tensor]


class Framing:
    """How the envelopes of one direction of a channel travel (docs/wire-format.md).

    Every envelope starts with one *head* collective whose size both ends already know:
    frame 0 plus, in steady state, one slot per frame 1 segment of the agreed layout.
    Segment ``i`` of an envelope rides in slot ``i`` when it fits there; the segments that
    do not fit follow, one collective each. So an envelope of the agreed layout is one
    collective, and an envelope that differs (a recompute chunk with context frames, an
    update chunk carrying conditioning) costs only its extra segments. A payload layout
    becomes the agreed one once two payload envelopes in a row have it, so a one-off
    envelope does not reshape the head for the envelopes around it. Both ends derive every
    size from frame 0 contents they have already checked and from the envelopes before,
    never from guesses, so every rank runs the same sequence of collectives. A segment
    over ``carry_limit`` bytes gets no slot: it always travels on its own, from and into
    its own storage.

    The head ends in a trailer word (``wire.trailer_word`` of frame 0's checksum). A
    receiver zeroes its place before the collective and checks it after: gloo accepts a
    message shorter than the receive buffer silently, and the trailer is how a head that
    arrived short is told from one that arrived whole. (A longer message makes gloo abort
    the process: ``abort_guard`` turns that into the poison line.)
    """

    def __init__(self, frame0_words: int, *, steady: bool, carry_limit: int) -> None:
        self.frame0_nbytes = frame0_words * 8
        self.steady = steady
        self.carry_limit = carry_limit
        self.agreed: tuple[int, ...] = ()
        self.slots: tuple[int, ...] = ()  # capacity per segment; 0: never carried
        self.offsets: tuple[int, ...] = ()
        self.trailer_at = self.frame0_nbytes
        self.head_nbytes = self.trailer_at + TRAILER_NBYTES
        self._last: tuple[int, ...] | None = None
        self._send_buffer: torch.Tensor | None = None
        self._send_device: torch.device | None = None
        # a receive buffer no envelope's tensors view (a NOOP's, say) serves the next one,
        # with the device it was made for
        self._spare: tuple[torch.Tensor, torch.device] | None = None
        #: the last payload envelope's manifest: the next is likely laid out alike
        self.ahead: Manifest | None = None
        self._carried: tuple[tuple[int, ...], tuple[bool, ...]] | None = None

    def carried(self, sizes: tuple[int, ...]) -> tuple[bool, ...]:
        """For each segment of an envelope: whether it rides in the head."""
        last = self._carried
        if last is not None and last[0] == sizes:
            return last[1]  # a stream repeats its layouts: asked three times per envelope
        slots = self.slots
        carried = tuple(
            i < len(slots) and n <= slots[i] and (n == 0 or slots[i] > 0)
            for i, n in enumerate(sizes)
        )
        self._carried = (sizes, carried)
        return carried

    def after(self, payload: bool, sizes: tuple[int, ...]) -> None:
        """Both ends call this after each envelope, with what its frame 0 announced."""
        if not (self.steady and payload):
            return
        if sizes == self._last and sizes != self.agreed:
            self.agreed = sizes
            # a segment over the limit keeps its own collective: copying it into the head
            # would cost more than the collective it saves (gloo: ~100 us per MB copied)
            self.slots = tuple(n if n <= self.carry_limit else 0 for n in sizes)
            offsets, off = [], -(-self.frame0_nbytes // ALIGN) * ALIGN
            for n in self.slots:
                offsets.append(off)
                off += -(-n // ALIGN) * ALIGN
            self.offsets = tuple(offsets)
            self.trailer_at = off
            self.head_nbytes = off + TRAILER_NBYTES
            self._carried = None
            self._send_buffer = None
            self._spare = None
            self.ahead = None
        self._last = sizes

    def send_buffer(self, device: torch.device) -> torch.Tensor:
        """The buffer the next head is laid into (the arena hands out views of it)."""
        return self._head_buffer(device)

    def _head_buffer(self, device: torch.device) -> torch.Tensor:
        # kept while the layout holds, so nothing is allocated in steady state; bytes of a
        # slot the envelope leaves unused are stale and never read
        buf = self._send_buffer
        if buf is None or self._send_device != device:
            buf = self._send_buffer = torch.zeros(
                self.head_nbytes, dtype=torch.uint8, device=device
            )
            self._send_device = device  # "cuda" and buf.device ("cuda:0") never compare equal
        return buf

    def head_to_send(
        self, frames: Frames | Prepared, carried: Sequence[bool], device: torch.device
    ) -> torch.Tensor:
        """The head: frame 0, then the carried segments in their slots."""
        buf = self._head_buffer(device)
        if isinstance(frames, Prepared):
            frames.write_into(buf, self.offsets, carried, self.trailer_at)
            return buf
        buf[: self.frame0_nbytes].view(torch.int64).copy_(frames.frame0)
        for off, seg, here in zip(self.offsets, frames.segments, carried, strict=False):
            if here:
                buf[off : off + seg.numel()].copy_(seg)
        write_word(buf, self.trailer_at, trailer_word(int(frames.frame0[-1])))
        return buf

    def head_to_receive(self, device: torch.device) -> torch.Tensor:
        """A receive buffer for the head, its trailer's place zeroed."""
        spare, self._spare = self._spare, None
        # the device asked for, not the buffer's: "cuda" and "cuda:0" never compare equal
        if spare is None or spare[1] != device or spare[0].numel() != self.head_nbytes:
            head = torch.empty(self.head_nbytes, dtype=torch.uint8, device=device)
        else:
            head = spare[0]
        write_word(head, self.trailer_at, 0)
        return head

    def check_trailer(self, head: torch.Tensor, frame0: bytes) -> None:
        """Raise ``WireError`` unless the head arrived whole: its trailer belongs to the frame 0
        at its start."""
        checksum = int.from_bytes(frame0[-8:], "little", signed=True)
        got = read_word(head, self.trailer_at)
        if got != trailer_word(checksum):
            raise WireError(
                "length",
                f"the head collective ended short of its {self.head_nbytes} bytes "
                f"(trailer word {got & _U64:#x}, expected {trailer_word(checksum) & _U64:#x})",
            )

    def views_ahead(self, head: torch.Tensor, device: torch.device | None) -> Ahead | None:
        """Receive buffers and tensor views for an envelope laid out like ``ahead``, made
        before its bytes arrive: ``head`` for the segments that ride in it, an empty buffer
        of its own for each other one. Usable for an envelope whose manifest has the very
        same checked slots (so the same sizes, and the same segments in the head)."""
        ahead = self.ahead
        if ahead is None:
            return None
        sizes = ahead.segment_nbytes
        carried = self.carried(sizes)
        buffers: list[torch.Tensor] = []
        offsets: list[int] = []
        for i, n in enumerate(sizes):
            if carried[i]:
                buffers.append(head)
                offsets.append(self.offsets[i])
            else:
                buffers.append(torch.empty(n, dtype=torch.uint8, device=device))
                offsets.append(0)
        return Ahead(ahead.slots, buffers, offsets, ahead.views(buffers, offsets))

    def keep_spare(self, head: torch.Tensor, device: torch.device) -> None:
        """``head`` (``head_to_receive(device)``) is free again: nothing handed out views it."""
        self._spare = (head, device)


def sizes_of(segments: Sequence[torch.Tensor]) -> tuple[int, ...]:
    return tuple(int(s.numel()) for s in segments)


def frame0_bytes(head: torch.Tensor, nbytes: int) -> bytes:
    """Frame 0's bytes from the head buffer (a copy: the buffer may be reused)."""
    if not head.is_cpu:
        head = head[:nbytes].cpu()
    return ctypes.string_at(head.data_ptr(), nbytes)
