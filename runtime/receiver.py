"""A channel's receiving end (docs/architecture.md, one envelope's path through ``recv``).

Frame 0 first, into a head buffer whose size both ends know; it is checked against the
spec (and its trailer word: the head arrived whole) before anything is sized from it.
Then the segments that did not ride in the head, into buffers sized from the checked
manifest; then the ordering rules, the full validation and the rules across envelopes.
A failure before the whole envelope arrived poisons (this rank can no longer keep step);
an envelope refused after it arrived raises ``EnvelopeInvalid`` and the channel stays in
lockstep.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic

import torch

from .bindings import A, H, M
from .epochs import EpochCache
from .errors import EnvelopeInvalid, WireError
from .escape import printable
from .framing import FRAME0_TAG, Ahead, Framing, frame0_bytes
from .ordering import Ordering
from .policy import describe, log
from .recorder import EnvelopeEvent, tensor_bytes
from .wire import Manifest, Reason, seal_words

if TYPE_CHECKING:
    from .channel import Channel


@dataclass(frozen=True)
class Received(Generic[H, M, A]):
    """What ``recv`` hands over: the action (the protocol's action enum), the header and the
    typed message (or None); for the spec's error action, the reason the source gave (a code
    and a short text)."""

    action: A
    header: H
    msg: M | None
    reason: Reason | None = None
    #: the fields cached by an epoch (``cached_by``) that this envelope did not carry:
    #: ``msg`` holds the value the receiver kept for them
    kept: frozenset[str] = frozenset()


@dataclass(slots=True)
class Arrival:
    """One envelope on its way in: its head, its checked frame 0, where its segments are."""

    head: torch.Tensor
    raw: bytes
    manifest: Manifest
    header: Any
    started: float
    ahead: Ahead | None
    #: segment i: the bytes of buffers[i] from offsets[i] on (the head's slot, or its own)
    buffers: list[torch.Tensor] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    nbytes: int = 0
    #: when the head arrived, and the seconds the other segments' collectives took
    head_at: float = 0.0
    frame1_s: float = 0.0
    #: no segment rides in the head: nothing handed out views it, the next envelope may reuse it
    head_free: bool = True
    segments: list[bytes] | None = None  # copies for the recorders that want them


class Receiver:
    """What one channel end keeps for the envelopes it receives."""

    def __init__(self, channel: Channel[Any, Any, Any], framing: Framing) -> None:
        self.channel = channel
        self.bindings = channel.protocol
        self.framing = framing
        self.order = Ordering(self.bindings)
        self.terminal = self.bindings.terminal  # (a property: made once, not per envelope)
        self.cache = EpochCache(self.bindings, keep_values=True) if self.bindings.cached else None

    def recv(self) -> Received[Any, Any, Any]:
        """``Channel.recv``: the next envelope, checked."""
        self.channel.ready(sender=False)
        if self.channel.carrier is not None:
            return self._recv_carried()
        arrival = self._frame0()
        problem = self.order.problem(arrival.header)
        self._frame1(arrival)
        self._settle(arrival)
        if problem is not None:  # frame 1 is drained: the sender is not stranded
            self._refused(arrival, f"ordering: {problem}", state="received", code="ordering")
            self.channel.policy.poison(arrival.header, f"ordering: {problem}")
        self._commit(arrival.header)
        header, msg = self._assemble(arrival)
        msg, kept = self._accept(arrival, msg, header)
        return self._deliver(arrival, header, msg, kept)

    # -- the steps ----------------------------------------------------------------------

    def _frame0(self) -> Arrival:
        """The head collective, frame 0 checked against the spec and the trailer."""
        ch, framing = self.channel, self.framing
        head = framing.head_to_receive(ch.frame0_device)
        # while the source is still preparing its envelope: the buffers and tensor views of
        # the layout the last envelope had, used if this one has it too (same checked slots)
        try:
            ahead = framing.views_ahead(head, ch.device)
        except Exception:  # a guess (out of memory, say): the manifest's buffers follow it
            ahead = None
        started = time.perf_counter()
        with ch.policy.deadline(
            lambda: f"a header after {ch.ids(ch.last_header)}",
            waiting=lambda: f"waiting for frame 0 after {ch.ids(ch.last_header)}",
        ):
            try:
                ch.transport.get(head, FRAME0_TAG, frame0=True)
            except BaseException as exc:
                ch.policy.poison(ch.last_header, f"waiting for frame 0 failed: {describe(exc)}")
        arrived = time.perf_counter()
        raw = b""
        try:
            raw = frame0_bytes(head, framing.frame0_nbytes)
            manifest = self.bindings.read_frame0_bytes(raw)
        except BaseException as exc:  # frame 1 may follow: this rank can no longer keep step
            if raw and ch.recorders.active:
                event = EnvelopeEvent(
                    None, None, "refused", raw, len(raw), 0.0, error=describe(exc), code="frame0"
                )
                ch.recorders.emit("refused", event)
            ch.policy.poison(ch.last_header, f"frame 0 refused: {exc}")
        try:
            framing.check_trailer(head, raw)
        except WireError as exc:
            ch.policy.poison(manifest.header, f"head refused: {exc}")
        if ahead is not None and manifest.slots is not ahead.slots:
            ahead = None  # made for another layout
        arrival = Arrival(head, raw, manifest, manifest.header, started, ahead)
        arrival.head_at = arrived
        return arrival

    def _frame1(self, a: Arrival) -> None:
        """The segments: those in the head, and one collective for each other one."""
        ch, framing = self.channel, self.framing
        sizes = a.manifest.segment_nbytes
        carried = framing.carried(tuple(sizes))
        rest = []
        for i, n in enumerate(sizes):
            a.buffers.append(a.head)  # its own buffer for a segment in ``rest``, below
            a.offsets.append(framing.offsets[i] if carried[i] else 0)
            if not carried[i]:
                rest.append(i)
            elif n:
                a.head_free = False
        a.nbytes = framing.head_nbytes
        if not rest:  # (a head that carried everything: no collective to watch)
            return
        header = a.header
        getting = time.perf_counter()
        with ch.policy.deadline(lambda: f"frame 1 of {ch.ids(header)}", header=header):
            try:
                for i in rest:
                    if a.ahead is not None:
                        segment = a.ahead.buffers[i]  # sized for these very slots
                    else:  # sized from the checked manifest, bounded by the spec
                        segment = torch.empty(sizes[i], dtype=torch.uint8, device=ch.device)
                    a.buffers[i] = segment
                    ch.transport.get(segment, ch.segment_tag(header, i), frame0=False)
                    a.nbytes += sizes[i]
            except BaseException as exc:
                ch.policy.poison(header, f"frame 1 receive failed: {describe(exc)}")
        a.frame1_s = time.perf_counter() - getting

    def _settle(self, a: Arrival) -> None:
        """The layout moves on; a head nothing views is kept for the next envelope."""
        ch, framing = self.channel, self.framing
        sizes = tuple(a.manifest.segment_nbytes)
        payload = self.bindings.action_of(a.header) in self.bindings.payload_actions
        framing.after(payload, sizes)
        if payload and a.manifest.slots and framing.steady:
            framing.ahead = a.manifest
        if a.head_free:
            framing.keep_spare(a.head, ch.frame0_device)
        if ch.recorders.active and ch.recorders.wants_segments:
            a.segments = [tensor_bytes(a.buffers[i], a.offsets[i], n) for i, n in enumerate(sizes)]

    def _commit(self, header: Any) -> None:
        self.order.commit(header)
        self.channel.last_header = header

    def _assemble(self, a: Arrival) -> tuple[Any, Any]:
        """The typed envelope (the full validation), from buffers this channel owns."""
        try:
            return a.manifest.assemble(
                a.buffers, a.offsets, a.ahead.views if a.ahead is not None else None
            )
        except WireError as exc:
            self._refused(a, describe(exc), code="wire")
            self.channel.policy.poison(a.header, f"frame 1 refused: {exc}")
        except EnvelopeInvalid as exc:
            first = exc.violations[0]
            self._refused(a, describe(exc), code=first.code, fm=first.fm)
            self._refused_line(a.header, exc)
            raise

    def _accept(self, a: Arrival | None, msg: Any, header: Any) -> tuple[Any, frozenset[str]]:
        """The rules across envelopes (fields ``cached_by`` an epoch) against this end's
        cache, after the whole envelope arrived (refusing it keeps the channel in lockstep):
        ``EnvelopeInvalid``, or the message with the kept values filled in and their names."""
        cache = self.cache
        if cache is None:
            return msg, frozenset()
        across = cache.check(msg, header)
        if across:
            refused = EnvelopeInvalid(across)
            if a is not None:
                self._refused(a, describe(refused), code=across[0].code, fm=across[0].fm)
            self._refused_line(header, refused)
            raise refused
        kept = cache.kept(msg)
        return cache.commit(msg, header), kept

    def _deliver(
        self, a: Arrival | None, header: Any, msg: Any, kept: frozenset[str]
    ) -> Received[Any, Any, Any]:
        ch = self.channel
        action = self.bindings.action_of(header)
        reason = a.manifest.reason if a is not None else None
        if ch.recorders.active:
            self._record(a, action, header, msg, reason)
        if action in self.terminal:
            ch.closed = True  # terminal actions: no further frame will come
        if action is self.bindings.error:
            # the peer's text, escaped: a newline in it would forge a log line
            why = printable(reason) if reason is not None else "no reason given"
            log(
                f"tpwire[rank {ch.rank}]: {action.name} from the source {ch.ids(header)}: "
                f"{why}; stopping for the source's reason"
            )
        return Received(action, header, msg, reason, kept)

    # -- what the recorders and the log hear --------------------------------------------

    def _record(
        self, a: Arrival | None, action: enum.IntEnum, header: Any, msg: Any, reason: Any
    ) -> None:
        text = str(reason) if reason is not None else None
        if a is None:  # a wire of its own: frame 0 as tpwire's frames would have had it
            raw = self._frame0_of(msg, header)
            event = EnvelopeEvent(header, action, "validated", raw, 0, 0.0, None, text)
        else:
            now = time.perf_counter()
            waited, cpu = a.head_at - a.started, now - a.head_at - a.frame1_s
            event = EnvelopeEvent(
                header, action, "validated", a.raw, a.nbytes, now - a.started, a.segments, text,
                waited=waited, cpu=cpu,
            )  # fmt: skip
        self.channel.recorders.emit("received", event)

    def _frame0_of(self, msg: Any, header: Any) -> bytes:
        try:
            return seal_words(self.bindings.prepare(msg, header).words).tobytes()
        except Exception:
            return b""

    def _refused(
        self,
        a: Arrival,
        error: str,
        *,
        state: str = "refused",
        code: str | None = None,
        fm: str | None = None,
    ) -> None:
        ch = self.channel
        if ch.recorders.active:
            action = self.bindings.action_of(a.header)
            seconds = time.perf_counter() - a.started
            event = EnvelopeEvent(
                a.header,
                action,
                state,
                a.raw,
                a.nbytes,
                seconds,
                a.segments,
                error=error,
                code=code,
                fm=fm,
            )
            ch.recorders.emit("refused", event)

    def _refused_line(self, header: Any, exc: EnvelopeInvalid) -> None:
        log(
            f"tpwire[rank {self.channel.rank}]: envelope refused after receive "
            f"{self.channel.ids(header)}: {len(exc.violations)} violation(s), first: "
            f"{exc.violations[0]}"
        )

    # -- a wire of its own (compat) -----------------------------------------------------

    def _recv_carried(self) -> Received[Any, Any, Any]:
        ch = self.channel
        assert ch.carrier is not None
        with ch.policy.deadline(lambda: f"a header after {ch.ids(ch.last_header)}"):
            try:
                header = ch.carrier.receive_header()
            except BaseException as exc:
                ch.policy.poison(ch.last_header, f"waiting for the header failed: {describe(exc)}")
        with ch.policy.deadline(lambda: f"the payload of {ch.ids(header)}", header=header):
            try:
                msg = ch.carrier.receive_payload(header)
            except BaseException as exc:  # the sender is mid-message: this rank cannot follow
                kind = ch.transport.kind
                ch.policy.poison(header, f"{kind} payload failed: {describe(exc)}")
        problem = self.order.problem(header)
        if problem is not None:
            ch.policy.poison(header, f"ordering: {problem}")
        self._commit(header)
        violations = self.bindings.validate(msg, header)
        if violations:
            refused = EnvelopeInvalid(violations)
            self._refused_line(header, refused)
            raise refused
        msg, kept = self._accept(None, msg, header)
        return self._deliver(None, header, msg, kept)

    def forget(self) -> None:
        if self.cache is not None:
            self.cache.forget()
