"""A channel's sending end: preflight, the commitment, control frames, heartbeats and
copy-free sends (docs/architecture.md, one envelope's path through ``send``).

The whole preflight (the rules across envelopes, ``prepare``: validation and every byte)
runs before the first collective. Then, under the send lock, the ordering check and the
commitment: frame 0 (the head) and the segments that did not fit in it. From the first
byte of frame 0 on, any failure poisons the channel.
"""

from __future__ import annotations

import ctypes
import enum
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .arena import Arena, ArenaError, tensor_specs
from .epochs import EpochCache
from .errors import EnvelopeInvalid
from .escape import printable
from .framing import FRAME0_TAG, Framing, sizes_of
from .ordering import Ordering, OrderingError
from .policy import ChannelPoisoned, describe, log
from .recorder import EnvelopeEvent, tensor_bytes
from .wire import Frames, Prepared, Reason, put_reason, seal_words

if TYPE_CHECKING:
    from .channel import Channel

#: frame 1 segments that follow the head: (segment index, its bytes)
Rest = list[tuple[int, torch.Tensor]]


class Sender:
    """What one channel end keeps for the envelopes it sends."""

    def __init__(self, channel: Channel[Any, Any, Any], framing: Framing) -> None:
        self.channel = channel
        self.bindings = channel.protocol
        self.framing = framing
        self.order = Ordering(self.bindings)
        self.terminal = self.bindings.terminal  # (a property: made once, not per envelope)
        # fields cached by an epoch: the rules across envelopes, against what this end sent
        self.cache = EpochCache(self.bindings, keep_values=False) if self.bindings.cached else None
        #: copy-free sends (``alloc``); None unless the channel was opened with ``arena=True``
        self.arena = Arena(tensor_specs(self.bindings)) if channel.options.arena else None
        self.last_send = time.monotonic()
        #: the exception a ``send`` raised and its header (the ids of a root cause)
        self.failure: tuple[int, Any] | None = None
        self.heartbeat: Heartbeat | None = None

    # -- envelopes ----------------------------------------------------------------------

    def send(self, msg: Any, header: Any) -> None:
        """Preflight everything, then commit: frame 0, frame 1."""
        ch = self.channel
        ch.ready(sender=True)
        began = time.perf_counter()  # the CPU path starts (the recorders' ``cpu``)
        try:
            prepared = self.preflight(msg, header)
            prepared_s = time.perf_counter() - began  # (waiting for the lock is not in it)
            with ch.policy.locked():  # check and commit atomically: a heartbeat may take an id
                ch.ready(sender=True)
                self.check_order(header)
                self.transmit(prepared, header, msg=msg, cpu_before=prepared_s)
                if self.cache is not None:
                    self.cache.commit(msg, header)
        except BaseException as exc:
            # its id, not the exception: a traceback would keep the refused tensors alive
            self.failure = (id(exc), header)
            raise
        self.failure = None

    def preflight(self, msg: Any, header: Any) -> Prepared:
        """Every violation, those across envelopes (cached fields) first, or the frames."""
        across = self.cache.check(msg, header) if self.cache is not None else []
        try:
            prepared: Prepared = self.bindings.prepare(msg, header, device=self.channel.device)
        except EnvelopeInvalid as exc:
            self.refused(header, [*across, *exc.violations])
            if across:
                raise EnvelopeInvalid([*across, *exc.violations]) from None
            raise
        if across:
            self.refused(header, across)
            raise EnvelopeInvalid(across)
        return prepared

    def refused(self, header: Any, violations: Sequence[Any]) -> None:
        log(
            f"tpwire[rank {self.channel.rank}]: refused before frame 0 "
            f"{self.channel.ids(header)}: {len(violations)} violation(s), first: "
            f"{violations[0] if violations else None}"
        )
        ch = self.channel
        if ch.recorders.active:  # nothing went out: no frame 0 bytes (the journal skips it)
            first = violations[0] if violations else None
            code = getattr(first, "code", None)
            action = getattr(header, self.bindings.action_field, None)  # may be ill-typed
            action = action if isinstance(action, enum.IntEnum) else None
            event = EnvelopeEvent(
                header, action, "unsent", b"", 0, 0.0, error=str(first), code=code,
                fm=getattr(first, "fm", None),
            )  # fmt: skip
            ch.recorders.emit("refused", event)

    def check_order(self, header: Any) -> None:
        problem = self.order.problem(header)
        if problem is not None:
            line = f"refused before frame 0 {self.channel.ids(header)}: {problem}"
            log(f"tpwire[rank {self.channel.rank}]: {line}")
            raise OrderingError(line)

    # -- the commitment -----------------------------------------------------------------

    def transmit(
        self,
        frames: Frames | Prepared,
        header: Any,
        *,
        watched: bool = True,
        msg: Any = None,
        cpu_before: float = 0.0,
    ) -> None:
        """After the first byte of frame 0, any failure poisons. ``frames`` built elsewhere
        (``Frames``) are sent as they are: tests send hostile ones this way. ``cpu_before``:
        the seconds its preflight took (for the recorders)."""
        ch = self.channel
        started = time.perf_counter()
        action = self.bindings.action_of(header)
        # a wire of its own builds everything first: a failure here sent nothing
        staged = ch.carrier.stage(msg, header) if ch.carrier is not None else None
        putting = time.perf_counter()
        ch.policy.in_flight = header  # a heartbeat may wait as long as workers compute
        with ch.policy.deadline(
            lambda: f"send of {action.name} {ch.ids(header)}", armed=watched, header=header
        ):
            sizes: tuple[int, ...] = ()
            head: torch.Tensor | None = None
            rest: Rest = []
            if ch.carrier is not None:
                self._carried(header, action, staged)
            else:
                frames, head, rest, sizes = self.lay_out(frames)
                putting = time.perf_counter()
                self._put(header, action, head, rest)
        ch.policy.in_flight = None
        if ch.recorders.active:
            timing = (time.perf_counter() - putting, cpu_before + putting - started)
            self.record(frames, head, rest, header, action, timing)
        self.after(frames, header, action, sizes)

    def lay_out(
        self, frames: Frames | Prepared
    ) -> tuple[Frames | Prepared, torch.Tensor, Rest, tuple[int, ...]]:
        """The head to put and the segments that follow it (an arena's views settled)."""
        framing, arena = self.framing, self.arena
        device = self.channel.frame0_device
        if isinstance(frames, Prepared):
            sizes = frames.sizes
            carried = framing.carried(sizes)
            if arena is not None and frames.tensors:  # before any byte moves (ArenaError)
                frames = arena.settle(frames, framing.send_buffer(device), framing.offsets, carried)
            rest = [(i, frames.segment(i)) for i, here in enumerate(carried) if not here]
        else:
            sizes = sizes_of(frames.segments)
            carried = framing.carried(sizes)
            rest = [(i, s) for i, s in enumerate(frames.segments) if not carried[i]]
        return frames, framing.head_to_send(frames, carried, device), rest, sizes

    def _put(self, header: Any, action: enum.IntEnum, head: torch.Tensor, rest: Rest) -> None:
        ch = self.channel
        put = ch.transport.put
        try:
            put(head, FRAME0_TAG, frame0=True)
        except BaseException as exc:  # a peer is gone, the group is broken, an interrupt
            ch.policy.poison(header, f"frame 0 send of {action.name} failed: {describe(exc)}")
        try:
            for i, segment in rest:
                put(segment, ch.segment_tag(header, i), frame0=False)
        except BaseException as exc:
            ch.policy.poison(
                header, f"frame 1 send of {action.name} failed after frame 0: {describe(exc)}"
            )

    def _carried(self, header: Any, action: enum.IntEnum, staged: Any) -> None:
        ch = self.channel
        assert ch.carrier is not None
        try:
            ch.carrier.send_header(staged)
        except BaseException as exc:
            ch.policy.poison(header, f"header send of {action.name} failed: {describe(exc)}")
        try:
            ch.carrier.send_payload(staged)
        except BaseException as exc:
            ch.policy.poison(
                header, f"payload send of {action.name} failed after the header: {describe(exc)}"
            )

    def after(
        self, frames: Frames | Prepared, header: Any, action: enum.IntEnum, sizes: tuple[int, ...]
    ) -> None:
        """The envelope is out: the layout, the arena, the order and the ids move on."""
        ch = self.channel
        payload = action in self.bindings.payload_actions
        self.framing.after(payload, sizes)
        if self.arena is not None and payload and isinstance(frames, Prepared):
            self.arena.sent(frames, self.framing.agreed)
        self.order.commit(header)
        ch.last_sent = header
        self.last_send = time.monotonic()
        if action in self.terminal:
            # however it was sent (send(), shutdown(), error()): the workers have left their
            # receive loops, so a further frame 0 would strand this rank
            ch.closed = True

    def record(
        self,
        frames: Frames | Prepared,
        head: torch.Tensor | None,
        rest: Rest,
        header: Any,
        action: enum.IntEnum,
        timing: tuple[float, float],
    ) -> None:
        """Tell the recorders. ``timing``: the collectives' seconds and the CPU path's."""
        ch = self.channel
        frame0 = _frame0_sent(frames, head, self.framing.frame0_nbytes)
        segments = _segments_sent(frames) if ch.recorders.wants_segments else None
        reason = None
        if action is self.bindings.error:
            reason = str(self.bindings.read_frame0_bytes(frame0).reason)
        nbytes = int((head.numel() if head is not None else 0) + sum(s.numel() for _, s in rest))
        seconds, cpu = timing
        event = EnvelopeEvent(
            header, action, "sent", frame0, nbytes, seconds, segments, reason, cpu=cpu
        )
        ch.recorders.emit("sent", event)

    # -- control frames and heartbeats --------------------------------------------------

    def send_action(self, action: enum.IntEnum, reason: Reason | None = None) -> Any:
        # a terminal action closes the channel in ``after``, inside the lock: no heartbeat
        # follows it
        ch = self.channel
        ch.ready(sender=True)
        with ch.policy.locked():
            ch.ready(sender=True)  # a heartbeat may have poisoned it meanwhile
            began = time.perf_counter()
            header, prepared = self.control_frame(action)
            if reason is not None:
                put_reason(prepared.words, self.bindings.w_reason, reason.code, reason.text)
            self.transmit(prepared, header, cpu_before=time.perf_counter() - began)
        return header

    def control_frame(self, action: enum.IntEnum) -> tuple[Any, Prepared]:
        """The next control frame: the header as the last one was, unless the header's
        rules refuse that for ``action`` (then the checked build, which raises
        ``ValueError`` when no valid header exists). Nothing is sent."""
        bindings = self.bindings
        header = bindings.control_header(self.channel.last_sent, action, checked=False)
        try:
            return header, bindings.prepare(None, header)
        except EnvelopeInvalid:
            header = bindings.control_header(self.channel.last_sent, action)
            return header, bindings.prepare(None, header)

    def noop_action(self) -> enum.IntEnum:
        noop: enum.IntEnum | None = self.bindings.noop
        if noop is None:
            raise RuntimeError(
                f"protocol {self.bindings.protocol} declares no noop control action "
                "(header.control.noop): no heartbeats"
            )
        return noop

    def start_heartbeat(self, seconds: float) -> None:
        self.heartbeat = Heartbeat(self, seconds)

    # -- copy-free sends ----------------------------------------------------------------

    def alloc(self, field: str, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """``Channel.alloc``: a view of the next head buffer, or a fresh tensor."""
        arena = self.arena
        if arena is None:
            raise ArenaError("alloc needs a channel opened with arena=True")
        ch = self.channel
        ch.ready(sender=True)
        dims = arena.check(field, shape, dtype)  # before anything is allocated
        if not self.framing.steady:
            # no layout is ever agreed (steady_state=False, or a cpu_group: heartbeats), so
            # no view: nothing to wait for the send lock for (a heartbeat's NOOP holds it
            # while the workers compute)
            arena.stats.fresh += 1
            return torch.empty(dims, dtype=dtype, device=ch.device)
        with ch.policy.locked():  # a heartbeat's NOOP may be laying out the same buffer
            framing = self.framing
            slot = None
            if framing.agreed and arena.layout is not None:
                slot = arena.place(field, dims, dtype, framing.carried(framing.agreed))
            if slot is None:
                arena.stats.fresh += 1
                return torch.empty(dims, dtype=dtype, device=ch.device)
            live = arena.live.get(field)
            if live is not None:
                return live  # asked twice before a send: the same view
            buf = framing.send_buffer(ch.frame0_device)
            return arena.view(field, buf, framing.offsets[slot.segment] + slot.offset, slot)


def _frame0_sent(frames: Frames | Prepared, head: torch.Tensor | None, nbytes: int) -> bytes:
    """Frame 0's bytes as they went out (a copy, for the recorders)."""
    if head is not None and head.is_cpu:
        return ctypes.string_at(head.data_ptr(), nbytes)
    if isinstance(frames, Prepared):
        return seal_words(frames.words).tobytes()
    return tensor_bytes(frames.frame0.cpu().contiguous().view(torch.uint8))


def _segments_sent(frames: Frames | Prepared) -> list[bytes]:
    """Each frame 1 segment's bytes (copies, for a recorder that wants them)."""
    if isinstance(frames, Prepared):
        packed = frames.frames().segments if frames.sizes else ()
    else:
        packed = frames.segments
    return [tensor_bytes(s.contiguous()) for s in packed]


class Heartbeat:
    """NOOPs from a thread of their own while the sender is idle ``seconds`` (a ``cpu_group``
    carries them, so workers waiting in the model's collectives are not disturbed)."""

    def __init__(self, sender: Sender, seconds: float) -> None:
        self.sender = sender
        self.seconds = seconds
        self.thread = threading.Thread(target=self._beat, name="tpwire-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        try:
            while self._beat_once():
                pass
        except ChannelPoisoned:
            return  # poison="raise": the line is logged; the main thread's next call raises

    def _idle(self) -> bool:
        ch = self.sender.channel
        live = not ch.closed and not ch.policy.poisoned
        return live and time.monotonic() - self.sender.last_send >= self.seconds

    def _beat_once(self) -> bool:
        """Sleep a little, then send a NOOP if the sender was idle; False: stop."""
        sender = self.sender
        ch = sender.channel
        time.sleep(min(self.seconds / 4, 0.25))
        if ch.closed or ch.policy.poisoned:
            return False
        if not self._idle():
            return True
        with ch.policy.lock:
            if not self._idle():
                return not (ch.closed or ch.policy.poisoned)
            try:
                began = time.perf_counter()
                header, prepared = sender.control_frame(sender.noop_action())
            except (ValueError, EnvelopeInvalid) as exc:  # nothing sent: stop beating
                log(f"tpwire[rank {ch.rank}]: heartbeats stopped: {printable(exc)}")
                return False
            except BaseException as exc:
                ch.policy.poison(ch.last_sent, f"a heartbeat failed: {describe(exc)}")
            cpu = time.perf_counter() - began
            sender.transmit(prepared, header, watched=False, cpu_before=cpu)
        return True
