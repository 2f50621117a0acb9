"""Generated bindings over a ``torch.distributed`` group: the anti-stranding channels.

``BroadcastChannel`` (TP: one source rank -> every rank of a group) and ``P2PChannel``
(PP: stage <-> stage, envelopes one way and results the other). The sender runs the
whole preflight (``encode``: validate, materialize, every byte) before the first
collective; frame 0 then frame 1 follow. Anything that goes wrong after frame 0 poisons
the channel: one log line with the ids and the reason, then ``os._exit`` with a distinct
code (or ``ChannelPoisoned`` under ``poison="raise"``), because a peer may already be
committed to the next collective. Crash, never hang.
"""

from __future__ import annotations

import ctypes
import enum
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, NoReturn, Self, TypeVar

import torch
import torch.distributed as dist

from . import abort_guard, parity, terminate, tripwire
from . import journal as _journal
from .arena import Arena, ArenaError, ArenaStats, tensor_specs
from .bindings import A, Bindings, GeneratedModule, H, M, bindings_of
from .epochs import EpochCache
from .errors import EnvelopeInvalid, ProtocolMismatch, WireError
from .escape import printable
from .watchdog import Watchdog
from .wire import (
    _U64,
    ALIGN,
    ErrorCode,
    Frames,
    Manifest,
    Prepared,
    Reason,
    TensorSlot,
    put_reason,
    read_word,
    seal_words,
    trailer_word,
    write_word,
)

#: Largest segment a CPU channel copies into the head in steady state (bytes).
CPU_CARRY_LIMIT = 1 << 20
#: The head collective ends in one int64 trailer word (``Framing``).
TRAILER_NBYTES = 8

T = TypeVar("T")

#: Distinct exit codes, so a supervisor can tell why a rank died.
EXIT_POISONED = 86
EXIT_WATCHDOG = 87


class ChannelPoisoned(RuntimeError):
    """The channel can no longer be trusted to be in lockstep with its peers."""


class OrderingError(RuntimeError):
    """A header broke the ordering rules (the spec's sequence, chunk and epoch roles)."""


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


def error_code(exc: BaseException) -> ErrorCode:
    """The reason code an ERROR frame gives for ``exc``."""
    from .lockstep import LockstepError  # lockstep imports nothing of the channel's

    if isinstance(exc, EnvelopeInvalid):
        return ErrorCode.INVALID
    if isinstance(exc, tripwire.DriftDetected):
        return ErrorCode.DRIFT
    if isinstance(exc, LockstepError | OrderingError):
        return ErrorCode.LOCKSTEP
    return ErrorCode.EXCEPTION


#: gloo's ``[/path/to/pair.cc:553] `` prefix and its advice suffix, around the message
_BACKEND_NOISE = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\] |\. This is typically caused by .*$")


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line (a backend's source path and advice
    left out; an envelope's violations by their count and the first one's code and field)."""
    if isinstance(exc, EnvelopeInvalid) and exc.violations:
        first = exc.violations[0]
        text = f"{len(exc.violations)} violation(s), first: {first.code} {first.field}"
    else:
        text = _BACKEND_NOISE.sub("", " ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _log(line: str) -> None:
    # stderr, flushed: the process may os._exit right after
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Ordering:
    """The spec's roles over a stream: the sequence id strictly increasing over all
    actions, the chunk id increasing over payload actions, the epoch never decreasing (it
    is bumped on hard cuts). Problems name the spec's own fields."""

    def __init__(self, bindings: Bindings[Any, Any]) -> None:
        self.payload_actions = bindings.payload_actions
        self.action_field = bindings.action_field
        roles = bindings.roles
        self.seq_field, self.chunk_field, self.epoch_field = (
            roles.sequence,
            roles.chunk,
            roles.epoch,
        )
        self.seq: int | None = None
        self.chunk: int | None = None
        self.epoch: int | None = None

    def _get(self, header: Any, field: str | None) -> int | None:
        return getattr(header, field, None) if field is not None else None

    def problem(self, header: Any) -> str | None:
        seq = self._get(header, self.seq_field)
        if self.seq is not None and seq is not None and seq <= self.seq:
            kind = "duplicate" if seq == self.seq else "regressing"
            return f"{kind} {self.seq_field} {seq} after {self.seq}"
        epoch = self._get(header, self.epoch_field)
        if self.epoch is not None and epoch is not None and epoch < self.epoch:
            return f"{self.epoch_field} went back from {self.epoch} to {epoch}"
        chunk = self._get(header, self.chunk_field)
        payload = getattr(header, self.action_field) in self.payload_actions
        if payload and self.chunk is not None and chunk is not None and chunk <= self.chunk:
            return f"{self.chunk_field} {chunk} after {self.chunk}"
        return None

    def commit(self, header: Any) -> None:
        seq = self._get(header, self.seq_field)
        epoch = self._get(header, self.epoch_field)
        self.seq = seq if seq is not None else self.seq
        self.epoch = epoch if epoch is not None else self.epoch
        if getattr(header, self.action_field) in self.payload_actions:
            chunk = self._get(header, self.chunk_field)
            self.chunk = chunk if chunk is not None else self.chunk


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


def _sizes(segments: Sequence[torch.Tensor]) -> tuple[int, ...]:
    return tuple(int(s.numel()) for s in segments)


class _Channel(Generic[H, M, A]):
    """What both channels share: preflight, the commitment, poison, ordering, watchdog."""

    def __init__(
        self,
        protocol: Bindings[H, M, A] | GeneratedModule[H, M, A],
        group: dist.ProcessGroup | None,
        device: torch.device | str | None,
        cpu_group: dist.ProcessGroup | None,
        parity_env: Sequence[str],
        parity_flags: Mapping[str, object] | None,
        watchdog_s: float | None,
        heartbeat_s: float | None,
        poison: str,
        tripwires: bool,
        steady_state: bool,
        carry_limit: int | None,
        journal: _journal.JournalArg = None,
        arena: bool = False,
    ) -> None:
        if poison not in ("exit", "raise"):
            raise ValueError("poison must be 'exit' or 'raise'")
        self.protocol: Bindings[H, M, A] = bindings_of(protocol)
        bindings = self.protocol
        self.group = group
        self.device = torch.device(device) if device is not None else None
        self.cpu_group = cpu_group
        self.parity_env = tuple(parity_env)
        # the tripwire collectives run only if every rank agrees they do (FM-03)
        self.tripwires = tripwires
        self.parity_flags = {**dict(parity_flags or {}), "tpwire.tripwires": tripwires}
        # journaling runs no collective, but every rank should agree whether it records
        self.journal_config = _journal.resolve(journal)
        self.parity_flags["tpwire.journal"] = (
            self.journal_config.mode if self.journal_config is not None else "off"
        )
        #: this rank's journal writer (opened with the channel; None when not journaling)
        self.journal: _journal.JournalWriter | None = None
        self._journal_pending: _journal.JournalWriter | None = None
        if watchdog_s is not None and not (
            isinstance(watchdog_s, int | float)
            and not isinstance(watchdog_s, bool)
            and 0 < watchdog_s <= threading.TIMEOUT_MAX
        ):
            raise ValueError(
                f"watchdog_s must be a number of seconds in (0, {threading.TIMEOUT_MAX:g}], "
                f"or None for no watchdog; got {watchdog_s!r}"
            )
        self.watchdog_s = watchdog_s
        self._watchdog = Watchdog("tpwire-watchdog")
        self.heartbeat_s = heartbeat_s
        self.poison = poison
        self.rank = dist.get_rank()
        #: what the channel is doing, for the TERMINATED line (``terminate``), and its token
        self._activity = terminate.Activity()
        self._terminate_token: int | None = None
        self.opened = False
        self.closed = False
        self.poisoned = False
        #: the last header sent and the last one received (ids for logs and heartbeats)
        self.last_sent: H | None = None
        self.last_header: H | None = None
        #: the exception a ``send`` raised and its header (the ids of a root cause), and the
        #: header whose frames are on the wire (a heartbeat's too)
        self._send_failure: tuple[int, H] | None = None  # (id of the exception, its header)
        self._in_flight: H | None = None
        self._terminal = bindings.terminal
        for action in (bindings.noop, bindings.shutdown, bindings.error):
            if action is not None:  # a control frame the spec cannot express: say so now
                bindings.control_header(None, action)
        self._sent_order = Ordering(bindings)
        self._recv_order = Ordering(bindings)
        # fields cached by an epoch: the rules across envelopes, at each end (none for
        # protocols without such fields: their hot path pays nothing)
        self._sent_cache: EpochCache[H, M] | None = None
        self._recv_cache: EpochCache[H, M] | None = None
        if bindings.cached:
            self._sent_cache = EpochCache(bindings, keep_values=False)
            self._recv_cache = EpochCache(bindings, keep_values=True)
        self._lock = threading.Lock()
        self._send_lock = _SendLock(self)
        self._last_send = time.monotonic()
        self._heartbeat: threading.Thread | None = None
        if cpu_group is not None and _members(cpu_group) != _members(group):
            raise ValueError("cpu_group must hold exactly the ranks of group")
        # frame 0 travels on the CPU group when there is one (small, needs no device copy);
        # then it cannot share a collective with frame 1, so there is no steady state
        self._frame0_device = (
            torch.device("cpu") if cpu_group is not None or self.device is None else self.device
        )
        steady = steady_state and cpu_group is None
        if carry_limit is None and arena:
            carry_limit = 1 << 62  # the head carries every segment: alloc places them there
        if carry_limit is None:
            # a device copy is nearly free next to a collective; a host copy is not
            on_device = self.device is not None and self.device.type != "cpu"
            carry_limit = 1 << 62 if on_device else CPU_CARRY_LIMIT
        self.parity_flags["tpwire.steady_state"] = steady
        self.parity_flags["tpwire.carry_limit"] = carry_limit
        abort_guard.set_exit_code(EXIT_POISONED)
        self._tx = Framing(bindings.frame0_len, steady=steady, carry_limit=carry_limit)
        self._rx = Framing(bindings.frame0_len, steady=steady, carry_limit=carry_limit)
        #: copy-free sends (``alloc``); None unless the channel was opened with ``arena=True``
        self._arena = Arena(tensor_specs(bindings)) if arena else None

    # transport: what each channel kind does with one tensor of one frame
    def _put(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        raise NotImplementedError

    def _get(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        raise NotImplementedError

    def _handshake_group(self) -> dist.ProcessGroup | None:
        return self.cpu_group if self.cpu_group is not None else self.group

    def _check_role(self, sender: bool) -> None:
        """Broadcast channels have one sender; p2p ends both send and receive."""

    def _segment_tag(self, header: H, index: int) -> int:
        """Tags of frame 1 segments, derived from the ids frame 0 announced (epoch and
        sequence roles), so a stale or misordered frame cannot be taken for the current one."""
        roles = self.protocol.roles
        epoch = (getattr(header, roles.epoch, 0) or 0) if roles.epoch is not None else 0
        seq = getattr(header, roles.sequence, 0) or 0
        return 1 + ((epoch * 1_000_003 + seq) * 16 + index) % (1 << 24)

    # -- lifecycle ----------------------------------------------------------------------

    def _ids(self, header: object) -> str:
        """The envelope's ids for a log line, by the spec's own field names."""
        return self.protocol.ids_text(header)

    def open(self) -> Self:
        """The handshake: parity of spec, plan, env keys and flags on every rank."""
        if self.heartbeat_s and self.cpu_group is None:
            # a heartbeat on the data group would take the slot of whatever collective the
            # workers run next on it (tripwires, the model's own): give frame 0 its own group
            raise ValueError("heartbeat_s needs a cpu_group used only by this channel")
        # the journal is set up before the handshake and its outcome shown in it, so the
        # ranks decide together: all journal, or (one rank cannot) all run without one
        problem = self._journal_setup()
        rec = parity.record(
            self.protocol,
            self.parity_env,
            self.parity_flags,
            status={"journal": problem, "rank": self.rank},
        )
        # from here on, SIGTERM (a launcher stopping the job) prints what the rank was doing
        self._terminate_token = terminate.register(
            self.rank, self._terminated_text, self._journal_terminated
        )
        try:
            records = self._collective(
                "the open handshake",
                lambda: parity.check(rec, self._handshake_group()),
                agreed=(parity.ParityMismatch, ProtocolMismatch),
            )
        except parity.ParityMismatch as exc:
            # one line on every rank, in words; the exception, for callers who catch it, is
            # that line (its diff kept), and raised from here: a traceback of the caller's
            # frames, none of the handshake's
            self._journal_abandon()
            self._terminate_release()
            refused = parity.ParityMismatch(exc.diff, exc.words, rank=self.rank)
            _log(str(refused))
            raise refused from None
        except BaseException:
            self._journal_abandon()
            self._terminate_release()
            raise
        self.opened = True
        self._journal_agree(records)
        if self.heartbeat_s and self._may_send():
            self._heartbeat = threading.Thread(
                target=self._beat, name="tpwire-heartbeat", daemon=True
            )
            self._heartbeat.start()
        return self

    def _may_send(self) -> bool:
        return True

    def _journal_setup(self) -> str | None:
        """Create this rank's journal (its folder and first file); None, or why it cannot
        be (one line, reported in the handshake). The writer waits in ``_journal_pending``
        for the ranks' agreement."""
        if self.journal_config is None:
            return None
        try:
            self._journal_pending = _journal.JournalWriter(
                self.journal_config,
                self.protocol,
                rank=self.rank,
                world=dist.get_world_size(self.group),
                name=self._journal_name(),
                source=self._journal_source(),
            )
        except _journal.JournalUnavailable as exc:  # one line already
            return str(exc)[:300]
        except Exception as exc:  # never out of open() on one rank alone (its peers would
            # wait in the handshake): shown in it like any other journal failure
            return printable(f"cannot set up the journal: {type(exc).__name__}: {exc}", 300)
        return None

    def _journal_abandon(self) -> None:
        """The channel did not open: the writer set up for it goes, leaving no file."""
        pending, self._journal_pending = self._journal_pending, None
        if pending is not None:
            pending.abandon()

    def _journal_agree(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Every rank journals, or, where one cannot, none does: one line on each."""
        ranks = parity.statuses(records, "rank")
        problems = [  # a peer's text, on one visible line
            f"rank {printable(ranks[i] if ranks[i] is not None else i)}: {printable(p, 300)}"
            for i, p in enumerate(parity.statuses(records, "journal"))
            if p is not None
        ]
        if not problems:
            self.journal, self._journal_pending = self._journal_pending, None
            return
        self._journal_abandon()
        _log(
            f"tpwire[rank {self.rank}]: journal off on every rank (the stream goes on): "
            + "; ".join(problems)
        )

    def _journal_name(self) -> str:
        return f"rank{self.rank}"

    def _journal_source(self) -> int | None:
        return None

    def observe(
        self,
        header: H,
        *,
        inputs: M | None = None,
        outputs: Mapping[str, torch.Tensor] | None = None,
        state: str = "completed",
        **counts: int,
    ) -> None:
        """Journal what this rank did with the envelope of ``header`` (no collective; a
        no-op when the channel does not journal): the digest of the ``inputs`` it ran (and of
        each of their fields), the digest of each of its ``outputs``, integer ``counts`` and
        its commit ``state``. ``tpwire journal diff`` compares them across ranks."""
        if self.journal is None:
            return
        meta: dict[str, Any] = {"what": "observed", "state": state}
        if inputs is not None:
            meta["inputs"] = _journal.hex64(tripwire.digest_envelope(self.protocol, inputs, header))
            meta["fields"] = _journal.field_digests(inputs)
        if outputs:
            meta["outputs"] = {
                k: _journal.hex64(tripwire.digest_tensors([t])) for k, t in sorted(outputs.items())
            }
        if counts:
            meta["counts"] = {k: int(v) for k, v in sorted(counts.items())}
        self.journal.observe(header, meta)

    def _journal_end(self, how: str, reason: str | None, header: Any = None) -> None:
        """The stream ended (a terminal action, poison, the watchdog, close): journal why
        and write what is queued (at most 2 s: the process may be about to exit). The
        writer stays open for observations until the channel is closed, unless the process
        exits now (the watchdog, poison "exit")."""
        journal = self.journal
        if journal is None:
            self._journal_abandon()  # the handshake itself failed
            return
        journal.end(how, reason, header)
        if how in ("closed", "watchdog", "terminated") or (
            how == "poisoned" and self.poison == "exit"
        ):
            journal.close(timeout=2.0)
        else:
            journal.drain(timeout=2.0)

    def _sends_on_exit(self) -> bool:
        return self._may_send()

    def close(self, *, destroy_group: bool = False) -> None:
        """Stop using the channel (after SHUTDOWN); optionally destroy its process group.

        Never call it on a poisoned channel with ``destroy_group``: a peer may still be
        blocked in a collective of that group (refs/03, crash-only).
        """
        self.closed = True
        self._terminate_release()
        self._journal_end("closed", None)
        if destroy_group and not self.poisoned:
            dist.destroy_process_group(self.group)

    def _terminate_release(self) -> None:
        token, self._terminate_token = self._terminate_token, None
        terminate.unregister(token)

    def _terminated_text(self) -> str:
        """What the TERMINATED line says this channel was doing (after "while")."""
        now = self._activity.now
        if now is not None:
            return now()
        if self.poisoned:
            return "holding a poisoned channel"
        if self.last_sent is not None:
            return f"between envelopes, after sending {self._ids(self.last_sent)}"
        if self.last_header is not None:
            return f"between envelopes, after receiving {self._ids(self.last_header)}"
        return "between envelopes, before the first one"

    def _journal_terminated(self, what: str) -> None:
        """SIGTERM ends the process: the journal's END says so (``journal diff`` then tells
        the ranks the launcher stopped from the one that died first). The reason's class is
        "SIGTERM", whatever each rank was doing, so ranks all stopped by the launcher agree."""
        self._journal_end("terminated", f"SIGTERM: while {what}")

    def __enter__(self) -> Self:
        return self if self.opened else self.open()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if isinstance(exc, BaseException) and not isinstance(exc, ChannelPoisoned):
            self._root_cause(exc)  # first, before anything else can fail
        # a sender leaving the block never strands its workers: SHUTDOWN, or ERROR on failure
        if self.opened and not self.closed and not self.poisoned and self._sends_on_exit():
            if not isinstance(exc, BaseException):
                self.shutdown()
            else:
                self.error(describe(exc), error_code(exc))
        self.close()

    def _root_cause(self, exc: BaseException) -> None:
        failure = self._send_failure
        if failure is not None and failure[0] == id(exc):
            where = f"while sending {self._ids(failure[1])}"
        elif self.last_sent is not None:
            where = f"after sending {self._ids(self.last_sent)}"
        elif self.last_header is not None:
            where = f"after receiving {self._ids(self.last_header)}"
        else:
            where = "before the first envelope"
        _log(f"tpwire[rank {self.rank}]: FAILED {where}: {printable(describe(exc))}")

    # -- sender -------------------------------------------------------------------------

    def send(self, msg: M | None, header: H) -> None:
        """Preflight everything, then commit: frame 0, frame 1."""
        self._ready(sender=True)
        cache = self._sent_cache
        try:
            # the rules across envelopes (cached fields) against what this end sent before
            across = cache.check(msg, header) if cache is not None else []
            try:
                prepared: Prepared = self.protocol.prepare(msg, header, device=self.device)
            except EnvelopeInvalid as exc:
                self._refused(header, [*across, *exc.violations])
                if across:  # every violation, those across envelopes first
                    raise EnvelopeInvalid([*across, *exc.violations]) from None
                raise
            if across:
                self._refused(header, across)
                raise EnvelopeInvalid(across)
            with self._locked():  # check and commit atomically: a heartbeat may have taken an id
                self._ready(sender=True)
                self._check_order(header)
                self._transmit(prepared, header)
                if cache is not None:
                    cache.commit(msg, header)
        except BaseException as exc:
            # its id, not the exception: a traceback would keep the refused tensors alive
            self._send_failure = (id(exc), header)
            raise
        self._send_failure = None

    def _refused(self, header: H, violations: Sequence[Any]) -> None:
        _log(
            f"tpwire[rank {self.rank}]: refused before frame 0 {self._ids(header)}: "
            f"{len(violations)} violation(s), first: {violations[0] if violations else None}"
        )

    def next_sequence(self) -> int:
        """The smallest sequence id (the spec's sequence role) the next send may use
        (heartbeats consume ids too)."""
        with self._locked():
            last = self._sent_order.seq
            return 0 if last is None else last + 1

    #: ``next_sequence`` under the name of Scope's sequence field
    next_call_id = next_sequence

    def alloc(self, field: str, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """A tensor for ``field`` of the next envelope, to fill and send (``arena=True``).

        While a layout is agreed (two payload envelopes in a row alike) and it places
        ``field`` with this shape and dtype, this is a view of that place in the channel's
        next head buffer: sent from there, with no copy. Otherwise it is an ordinary new
        tensor, sent the usual way. Either way its bytes are unspecified until written. A
        view is valid until the next payload ``send``; ``arena_stats`` counts what happened.
        Raises ``ArenaError`` for a field that is not a tensor field of the protocol, and
        ``AllocRefused`` for a dtype or shape its spec does not allow (nothing allocated)."""
        arena = self._arena
        if arena is None:
            raise ArenaError("alloc needs a channel opened with arena=True")
        self._ready(sender=True)
        dims = arena.check(field, shape, dtype)  # before anything is allocated
        if not self._tx.steady:
            # no layout is ever agreed (steady_state=False, or a cpu_group: heartbeats), so
            # no view: nothing to wait for the send lock for (a heartbeat's NOOP holds it
            # while the workers compute)
            arena.stats.fresh += 1
            return torch.empty(dims, dtype=dtype, device=self.device)
        with self._locked():  # a heartbeat's NOOP may be laying out the same buffer
            framing = self._tx
            slot = None
            if framing.agreed and arena.layout is not None:
                carried = framing.carried(framing.agreed)
                slot = arena.place(field, dims, dtype, carried)
            if slot is None:
                arena.stats.fresh += 1
                return torch.empty(dims, dtype=dtype, device=self.device)
            live = arena.live.get(field)
            if live is not None:
                return live  # asked twice before a send: the same view
            buf = framing.send_buffer(self._frame0_device)
            return arena.view(field, buf, framing.offsets[slot.segment] + slot.offset, slot)

    @property
    def arena_stats(self) -> ArenaStats:
        """What ``alloc`` and the sends did with the arena (``arena=True`` channels)."""
        if self._arena is None:
            raise ArenaError("the channel was opened without arena=True")
        return self._arena.stats

    def _check_order(self, header: Any) -> None:
        problem = self._sent_order.problem(header)
        if problem is not None:
            line = f"refused before frame 0 {self._ids(header)}: {problem}"
            _log(f"tpwire[rank {self.rank}]: {line}")
            raise OrderingError(line)

    def noop(self) -> None:
        """A heartbeat: frame 0 only (the spec's noop control action)."""
        self._send_action(self._noop_action())

    def _noop_action(self) -> enum.IntEnum:
        noop = self.protocol.noop
        if noop is None:
            raise RuntimeError(
                f"protocol {self.protocol.protocol} declares no noop control action "
                "(header.control.noop): no heartbeats"
            )
        return noop

    def shutdown(self) -> None:
        """Tell every rank to leave its receive loop; the channel is closed afterwards."""
        self._send_action(self.protocol.shutdown)

    def error(self, reason: str, code: ErrorCode = ErrorCode.USER) -> None:
        """A terminal error frame, so peers exit cleanly instead of being stranded. It
        carries ``code`` and ``reason`` (cut to 64 bytes of UTF-8): every worker logs them
        and ``recv`` hands them over as ``Received.reason``."""
        header = self._send_action(self.protocol.error, Reason(code, reason))
        _log(
            f"tpwire[rank {self.rank}]: {self.protocol.error.name} sent {self._ids(header)}: "
            f"{printable(f'{code.name}: {reason}')}"
        )

    def _send_action(self, action: enum.IntEnum, reason: Reason | None = None) -> H:
        # a terminal action closes the channel in ``_transmit``, inside the lock: no
        # heartbeat follows it
        self._ready(sender=True)
        with self._locked():
            self._ready(sender=True)  # a heartbeat may have poisoned it meanwhile
            header, prepared = self._control_frame(action)
            if reason is not None:
                put_reason(prepared.words, self.protocol.w_reason, reason.code, reason.text)
            self._transmit(prepared, header)
        return header

    def _control_frame(self, action: enum.IntEnum) -> tuple[H, Prepared]:
        """The next control frame: the header as the last one was, unless the header's
        rules refuse that for ``action`` (then the checked build, which raises
        ``ValueError`` when no valid header exists). Nothing is sent."""
        bindings = self.protocol
        header = bindings.control_header(self.last_sent, action, checked=False)
        try:
            return header, bindings.prepare(None, header)
        except EnvelopeInvalid:
            header = bindings.control_header(self.last_sent, action)
            return header, bindings.prepare(None, header)

    def _transmit(self, frames: Frames | Prepared, header: H, *, watched: bool = True) -> None:
        """The commitment: after the first byte of frame 0, any failure poisons."""
        framing = self._tx
        arena = self._arena
        if isinstance(frames, Prepared):
            sizes = frames.sizes
            carried = framing.carried(sizes)
            if arena is not None and frames.tensors:  # before any byte moves (ArenaError)
                buf = framing.send_buffer(self._frame0_device)
                frames = arena.settle(frames, buf, framing.offsets, carried)
            rest = [(i, frames.segment(i)) for i, here in enumerate(carried) if not here]
        else:  # frames built elsewhere (tests send hostile ones)
            sizes = _sizes(frames.segments)
            carried = framing.carried(sizes)
            rest = [(i, s) for i, s in enumerate(frames.segments) if not carried[i]]
        head = framing.head_to_send(frames, carried, self._frame0_device)
        action = self.protocol.action_of(header)
        # a heartbeat may wait for busy workers as long as they compute: not a wedged send
        self._in_flight = header
        with self._deadline(
            lambda: f"send of {action.name} {self._ids(header)}", armed=watched, header=header
        ):
            try:
                self._put(head, FRAME0_TAG, frame0=True)
            except BaseException as exc:  # a peer is gone, the group is broken, an interrupt
                self._poison(header, f"frame 0 send of {action.name} failed: {describe(exc)}")
            try:
                for i, segment in rest:
                    self._put(segment, self._segment_tag(header, i), frame0=False)
            except BaseException as exc:
                self._poison(
                    header, f"frame 1 send of {action.name} failed after frame 0: {describe(exc)}"
                )
        self._in_flight = None
        if self.journal is not None:
            self._journal_sent(frames, head, header, action)
        payload = action in self.protocol.payload_actions
        framing.after(payload, sizes)
        if arena is not None and payload and isinstance(frames, Prepared):
            arena.sent(frames, framing.agreed)
        self._sent_order.commit(header)
        self.last_sent = header
        self._last_send = time.monotonic()
        if action in self._terminal:
            # however it was sent (send(), shutdown(), error()): the workers have left their
            # receive loops, so a further frame 0 would strand this rank
            self.closed = True

    def _journal_sent(
        self, frames: Frames | Prepared, head: torch.Tensor, header: H, action: enum.IntEnum
    ) -> None:
        journal = self.journal
        assert journal is not None
        if head.is_cpu:
            frame0 = ctypes.string_at(head.data_ptr(), self._tx.frame0_nbytes)
        elif isinstance(frames, Prepared):
            frame0 = seal_words(frames.words).tobytes()
        else:
            frame0 = _journal.tensor_bytes(frames.frame0.cpu().contiguous().view(torch.uint8))
        segments = None
        if journal.full and journal.active:  # no copies for a journal that stopped
            if isinstance(frames, Prepared):
                n = len(frames.sizes)
                packed = frames.frames().segments if n else ()
                segments = [_journal.tensor_bytes(s.contiguous()) for s in packed]
            else:
                segments = [_journal.tensor_bytes(s.contiguous()) for s in frames.segments]
        journal.envelope(header, frame0, sent=True, state="sent", segments=segments)
        if action in self._terminal:
            reason = None
            if action is self.protocol.error:
                reason = str(self.protocol.read_frame0_bytes(frame0).reason)
            self._journal_end(action.name, reason, header)

    def _beat(self) -> None:
        try:
            self._beat_until_closed()
        except ChannelPoisoned:
            return  # poison="raise": the line is logged; the main thread's next call raises

    def _beat_until_closed(self) -> None:
        assert self.heartbeat_s is not None
        while not self.closed and not self.poisoned:
            time.sleep(min(self.heartbeat_s / 4, 0.25))
            if self.closed or self.poisoned:
                return
            if time.monotonic() - self._last_send >= self.heartbeat_s:
                with self._lock:
                    if (
                        self.closed
                        or self.poisoned
                        or time.monotonic() - self._last_send < self.heartbeat_s
                    ):
                        continue
                    try:
                        header, prepared = self._control_frame(self._noop_action())
                    except (ValueError, EnvelopeInvalid) as exc:  # nothing sent: stop beating
                        _log(f"tpwire[rank {self.rank}]: heartbeats stopped: {printable(exc)}")
                        return
                    except BaseException as exc:
                        self._poison(self.last_sent, f"a heartbeat failed: {describe(exc)}")
                    self._transmit(prepared, header, watched=False)

    # -- receiver -----------------------------------------------------------------------

    def recv(self) -> Received[H, M, A]:
        """The next envelope: frame 0 checked against the spec and the ordering rules, frame 1
        into buffers sized from the checked manifest, then the full validation.

        ``EnvelopeInvalid`` is raised after the whole envelope has been received, so the
        channel stays in lockstep and the caller decides (a relay broadcasts ERROR).
        """
        self._ready(sender=False)
        framing = self._rx
        head = framing.head_to_receive(self._frame0_device)
        # while the source is still preparing its envelope: the buffers and tensor views of
        # the layout the last envelope had, used if this one has it too (same checked slots)
        try:
            ahead = framing.views_ahead(head, self.device)
        except Exception:  # a guess (out of memory, say): the manifest's buffers follow it
            ahead = None
        with self._deadline(
            lambda: f"a header after {self._ids(self.last_header)}",
            waiting=lambda: f"waiting for frame 0 after {self._ids(self.last_header)}",
        ):
            try:
                self._get(head, FRAME0_TAG, frame0=True)
            except BaseException as exc:
                self._poison(self.last_header, f"waiting for frame 0 failed: {describe(exc)}")
        raw = b""
        try:
            raw = _frame0_bytes(head, framing.frame0_nbytes)
            manifest = self.protocol.read_frame0_bytes(raw)
        except BaseException as exc:  # frame 1 may follow: this rank can no longer keep step
            if self.journal is not None and raw:
                self.journal.envelope(None, raw, sent=False, state="refused", error=describe(exc))
            self._poison(self.last_header, f"frame 0 refused: {exc}")
        header = manifest.header
        try:
            framing.check_trailer(head, raw)
        except WireError as exc:
            self._poison(header, f"head refused: {exc}")
        problem = self._recv_order.problem(header)
        sizes = tuple(manifest.segment_nbytes)
        if ahead is not None and manifest.slots is not ahead.slots:
            ahead = None
        carried = framing.carried(sizes)
        # segment i: the bytes of buffers[i] from offsets[i] on (the head's slot, or its own)
        buffers: list[torch.Tensor] = []
        offsets: list[int] = []
        head_free = True
        rest: list[int] = []  # the segments that follow the head, one collective each
        for i, n in enumerate(sizes):
            if carried[i]:
                buffers.append(head)
                offsets.append(framing.offsets[i])
                head_free = head_free and not n
                continue
            buffers.append(head)  # its own buffer, below
            offsets.append(0)
            rest.append(i)
        if rest:  # (a head that carried everything: no collective to watch)
            with self._deadline(lambda: f"frame 1 of {self._ids(header)}", header=header):
                try:
                    for i in rest:
                        if ahead is not None:
                            segment = ahead.buffers[i]  # sized for these very slots
                        else:
                            # sized from the checked manifest, bounded by the spec
                            segment = torch.empty(sizes[i], dtype=torch.uint8, device=self.device)
                        buffers[i] = segment
                        self._get(segment, self._segment_tag(header, i), frame0=False)
                except BaseException as exc:
                    self._poison(header, f"frame 1 receive failed: {describe(exc)}")
        action = self.protocol.action_of(header)
        payload = action in self.protocol.payload_actions
        framing.after(payload, sizes)
        if payload and manifest.slots and framing.steady:
            framing.ahead = manifest
        if head_free:
            framing.keep_spare(head, self._frame0_device)
        journal = self.journal
        segments: list[bytes] | None = None
        if journal is not None and journal.full and journal.active:
            segments = [
                _journal.tensor_bytes(buffers[i], offsets[i], n) for i, n in enumerate(sizes)
            ]
        if problem is not None:
            # frame 1 is drained, so the sender is not stranded; this rank stops here
            if journal is not None:
                journal.envelope(
                    header, raw, sent=False, state="received", error=f"ordering: {problem}",
                    segments=segments,
                )  # fmt: skip
            self._poison(header, f"ordering: {problem}")
        self._recv_order.commit(header)
        self.last_header = header
        try:
            # the buffers are this channel's own, sized from the checked manifest
            header, msg = manifest.assemble(
                buffers, offsets, ahead.views if ahead is not None else None
            )
        except WireError as exc:
            self._journal_refused(header, raw, exc, segments)
            self._poison(header, f"frame 1 refused: {exc}")
        except EnvelopeInvalid as exc:
            self._journal_refused(header, raw, exc, segments)
            _log(
                f"tpwire[rank {self.rank}]: envelope refused after receive {self._ids(header)}: "
                f"{len(exc.violations)} violation(s), first: {exc.violations[0]}"
            )
            raise
        try:
            msg, kept = self._accept_cached(msg, header)
        except EnvelopeInvalid as exc:
            self._journal_refused(header, raw, exc, segments)
            raise
        if journal is not None:
            journal.envelope(header, raw, sent=False, state="validated", segments=segments)
            if action in self._terminal:
                reason = str(manifest.reason) if manifest.reason is not None else None
                self._journal_end(action.name, reason, header)
        if action in self._terminal:
            self.closed = True  # terminal actions: no further frame will come
        if action is self.protocol.error:
            # the peer's text, escaped: a newline in it would forge a log line
            why = printable(manifest.reason) if manifest.reason is not None else "no reason given"
            _log(
                f"tpwire[rank {self.rank}]: {action.name} from the source {self._ids(header)}: "
                f"{why}; stopping for the source's reason"
            )
        return Received(action, header, msg, manifest.reason, kept)

    def _journal_refused(
        self, header: H, raw: bytes, exc: BaseException, segments: list[bytes] | None
    ) -> None:
        """Journal an envelope received whole and refused (when a journal is on)."""
        if self.journal is not None:
            self.journal.envelope(
                header, raw, sent=False, state="refused", error=describe(exc), segments=segments
            )

    def _accept_cached(self, msg: M | None, header: H) -> tuple[M | None, frozenset[str]]:
        """The rules across envelopes (fields ``cached_by`` an epoch) against this end's
        cache, after the whole envelope arrived (refusing it keeps the channel in lockstep):
        ``EnvelopeInvalid``, or the message with the kept values filled in and their names."""
        cache = self._recv_cache
        if cache is None:
            return msg, frozenset()
        across = cache.check(msg, header)
        if across:
            _log(
                f"tpwire[rank {self.rank}]: envelope refused after receive "
                f"{self._ids(header)}: {len(across)} violation(s), first: {across[0]}"
            )
            raise EnvelopeInvalid(across)
        kept = cache.kept(msg)
        return cache.commit(msg, header), kept

    def forget_cached(self) -> None:
        """Empty this end's cache of fields cached by an epoch (both directions): what a
        restarted process starts with. The next envelope must carry every cached field."""
        for cache in (self._sent_cache, self._recv_cache):
            if cache is not None:
                cache.forget()

    # -- drift tripwires (bringup) ----------------------------------------------------

    def check_inputs(self, msg: M | None, header: H) -> None:
        """Every rank compares the digest of the envelope it is about to run (OM-11)."""
        self._tripwire_ready()
        value, failure = tripwire.safely(
            lambda: tripwire.digest_envelope(self.protocol, msg, header)
        )
        if self.journal is not None:
            self.journal.observe(header, {"what": "tripwire", "inputs": _journal.hex64(value)})
        self._compare(value, f"the inputs of {self._ids(header)}", failure)

    def check_same(self, tensor: torch.Tensor, what: str) -> None:
        """Every rank compares a tensor that must be identical (an output, a replicated weight)."""
        self._tripwire_ready()
        value, failure = tripwire.safely(lambda: tripwire.digest_tensors([tensor]))
        if self.journal is not None:
            self.journal.observe(
                self.last_sent if self.last_sent is not None else self.last_header,
                {"what": "tripwire", "outputs": {what: _journal.hex64(value)}},
            )
        self._compare(value, what, failure)

    def _tripwire_ready(self) -> None:
        if not self.tripwires:
            raise RuntimeError("open the channel with tripwires=True (a parity-checked flag)")
        if not self.opened or self.poisoned:
            raise RuntimeError("the channel is not open")

    def _compare(self, value: int, what: str, failure: BaseException | None = None) -> None:
        # every rank enters the collective, even one whose digest failed: no peer strands
        self._collective(
            f"the digest check of {what}",
            lambda: tripwire.compare(value, what, self._compare_group()),
            agreed=(tripwire.DriftDetected,),
        )
        if failure is not None:
            raise failure

    # -- guards -------------------------------------------------------------------------

    @contextmanager
    def guard(self, what: str, *, header: H | None = None) -> Iterator[None]:
        """Run the block's collectives (a TP all_reduce, the model's own) under the
        channel's policy: a failure in the block (a dead peer, a broken group, any
        exception) is one poison line with the ids (``header``'s, else the last envelope's)
        and ``what``, then exit 86 (``ChannelPoisoned`` under ``poison="raise"``); a block
        still running after ``watchdog_s`` exits 87 naming ``what``. Every rank runs the
        same guarded steps, so no peer is left waiting in a collective this rank skips."""
        if self.poisoned:
            raise ChannelPoisoned("the channel is poisoned")
        with self._policy(what, header, ()):
            yield

    def _collective(
        self,
        what: str,
        run: Callable[[], T],
        *,
        header: Any = None,
        agreed: tuple[type[BaseException], ...] = (),
    ) -> T:
        """``run``, collectives every rank enters, under the channel's policy."""
        with self._policy(what, header, agreed):
            return run()

    @contextmanager
    def _policy(
        self, what: str, header: Any, agreed: tuple[type[BaseException], ...]
    ) -> Iterator[None]:
        """The block runs within ``watchdog_s`` (else exit 87); an ``agreed`` exception (the
        answer every rank reaches, such as a parity mismatch) passes through; any other
        failure poisons, naming ``what``."""
        with self._deadline(what, header=header):
            try:
                yield
            except agreed:
                raise
            except ChannelPoisoned:
                raise
            except BaseException as exc:
                self._poison(header, f"{what} failed: {describe(exc)}")

    # -- shared -------------------------------------------------------------------------

    def _ready(self, *, sender: bool) -> None:
        if self.poisoned:
            raise ChannelPoisoned("the channel is poisoned")
        if not self.opened:
            raise RuntimeError("call open() first (the parity handshake)")
        if self.closed:
            raise RuntimeError("the channel is closed")
        self._check_role(sender)

    def _compare_group(self) -> dist.ProcessGroup | None:
        return self.group

    def _deadline(
        self,
        what: str | Callable[[], str],
        *,
        armed: bool = True,
        header: Any = None,
        waiting: Callable[[], str] | None = None,
    ) -> AbstractContextManager[None]:
        """Around every collective: exit if the block does not finish within ``watchdog_s``,
        and print the poison line if the transport aborts the process inside it
        (``abort_guard``). ``what``, a text or a function making it, is formatted only then:
        the hot path pays nothing for it. ``header``: the envelope in flight, for the ids
        of the poison line (the last one sent or received when not given). ``waiting``: what
        a TERMINATED line says the rank was doing (``terminate``; "in ``what``" if not given)."""
        guard = abort_guard.armed(lambda: self._abort_line(what, header))
        inner: AbstractContextManager[None] = guard
        if self.watchdog_s and armed:
            inner = self._watch(what, self.watchdog_s, guard)
        if waiting is None:
            waiting = lambda: f"in {what() if callable(what) else what}"  # noqa: E731
        return terminate.doing(self._activity, waiting, inner)

    def _abort_line(self, what: str | Callable[[], str], header: Any) -> str:
        text = what() if callable(what) else what
        ids = self._ids(header if header is not None else self.last_sent or self.last_header)
        return (
            f"tpwire[rank {self.rank}]: POISONED {ids}: the transport aborted during "
            f"{printable(text)}: "
            "gloo::EnforceNotMet (gloo's I/O thread refuses a message longer than this "
            "rank's receive buffer: a peer on another layout or protocol, or a bug)"
        )

    @contextmanager
    def _watch(
        self, what: str | Callable[[], str], seconds: float, guard: abort_guard.armed
    ) -> Iterator[None]:
        def fire() -> None:
            try:
                text = what() if callable(what) else what
            except BaseException as exc:  # the exit comes whatever describing it runs into
                text = f"a collective ({type(exc).__name__} describing it)"
            self._watchdog_exit(text, seconds)

        token = self._watchdog.arm(seconds, fire)
        try:
            with guard:
                yield
        finally:
            self._watchdog.disarm(token)

    def _locked(self) -> _SendLock:
        """The send lock, for the caller's thread (``_SendLock``)."""
        return self._send_lock

    def _watchdog_exit(self, what: str, seconds: float | None, header: Any = None) -> NoReturn:
        try:  # the exit comes whatever the line or the journal run into
            if header is None:
                header = self.last_sent or self.last_header
            _log(
                f"tpwire[rank {self.rank}]: WATCHDOG: {printable(what)} not done within "
                f"{seconds:g} s; last ids {self._ids(header)}; exiting {EXIT_WATCHDOG}"
            )
            self._journal_end("watchdog", f"{what} not done within {seconds:g} s", header)
        finally:
            os._exit(EXIT_WATCHDOG)

    def _poison(self, header: Any, reason: str) -> NoReturn:
        """One poison line, then exit 86 (``ChannelPoisoned`` under ``poison="raise"``).
        ``reason`` is raw text (it may quote a peer, an exception, the caller's step name):
        the line escapes it; the journal keeps it as it is."""
        self.poisoned = True
        if header is None:  # the last envelope this rank took part in
            header = self.last_sent if self.last_sent is not None else self.last_header
        line = f"tpwire[rank {self.rank}]: POISONED {self._ids(header)}: {printable(reason)}"
        self._journal_end("poisoned", reason, header)
        if self.poison == "raise":
            _log(line)
            raise ChannelPoisoned(line)
        _log(f"{line}; exiting {EXIT_POISONED}")
        os._exit(EXIT_POISONED)


class BroadcastChannel(_Channel[H, M, A]):
    """Envelopes of one generated ``protocol`` from rank ``src`` to every rank of ``group``."""

    def __init__(
        self,
        protocol: Bindings[H, M, A] | GeneratedModule[H, M, A],
        group: dist.ProcessGroup | None = None,
        src: int = 0,
        device: torch.device | str | None = None,
        cpu_group: dist.ProcessGroup | None = None,
        parity_env: Sequence[str] = (),
        parity_flags: Mapping[str, object] | None = None,
        watchdog_s: float | None = None,
        heartbeat_s: float | None = None,
        poison: str = "exit",
        tripwires: bool = False,
        steady_state: bool = True,
        carry_limit: int | None = None,
        journal: _journal.JournalArg = None,
        arena: bool = False,
    ) -> None:
        super().__init__(
            protocol, group, device, cpu_group, parity_env, parity_flags, watchdog_s,
            heartbeat_s, poison, tripwires, steady_state, carry_limit, journal,
            arena=arena,
        )  # fmt: skip
        self.src = src
        self.is_sender = self.rank == src
        self.parity_flags["tpwire.src"] = src

    def _may_send(self) -> bool:
        return self.is_sender

    def _journal_source(self) -> int | None:
        return self.src

    def _check_role(self, sender: bool) -> None:
        if sender != self.is_sender:
            role = "the source rank" if sender else "a receiving rank"
            raise RuntimeError(f"only {role} may call this (rank {self.rank}, src {self.src})")

    def _put(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        group = self.cpu_group if frame0 and self.cpu_group is not None else self.group
        dist.broadcast(tensor, src=self.src, group=group)

    _get = _put  # a broadcast is the same call on every rank


class P2PChannel(_Channel[H, M, A]):
    """Envelopes and results between this rank and one ``peer`` (pipeline stages).

    Both ends send and receive; a send waits until the peer receives (gloo), so a stage that
    keeps several envelopes in flight sends and receives from separate threads, or drains
    results before sending more. Segment tags derive from ``(epoch, sequence, index)`` (roles)
    so a stale or misordered frame cannot be taken for the current one (refs/20). The
    handshake and the tripwires run on ``group``, which must be exactly the two ends
    (``dist.new_group([a, b])``, or the world when it has two ranks).
    """

    def __init__(
        self,
        protocol: Bindings[H, M, A] | GeneratedModule[H, M, A],
        peer: int,
        group: dist.ProcessGroup | None = None,
        device: torch.device | str | None = None,
        cpu_group: dist.ProcessGroup | None = None,
        parity_env: Sequence[str] = (),
        parity_flags: Mapping[str, object] | None = None,
        watchdog_s: float | None = None,
        heartbeat_s: float | None = None,
        poison: str = "exit",
        tripwires: bool = False,
        steady_state: bool = True,
        carry_limit: int | None = None,
        journal: _journal.JournalArg = None,
        arena: bool = False,
    ) -> None:
        super().__init__(
            protocol, group, device, cpu_group, parity_env, parity_flags, watchdog_s,
            heartbeat_s, poison, tripwires, steady_state, carry_limit, journal,
            arena=arena,
        )  # fmt: skip
        if peer == self.rank:
            raise ValueError("a p2p channel needs another rank as its peer")
        if heartbeat_s:
            # both ends send on a p2p link and a RESULT carries its envelope's ids: a NOOP
            # from either end would break ordering or block on a peer that stopped receiving
            raise ValueError("p2p channels have no heartbeat; use watchdog_s on both ends")
        if (
            dist.get_world_size(group) != 2
            or self.rank not in _members(group)
            or peer not in _members(group)
        ):
            # the handshake and tripwires are collectives on this group: only the two ends
            # call them, so a larger group would hang
            raise ValueError("a p2p channel needs a group of exactly its two ends")
        self.peer = peer

    def _journal_name(self) -> str:
        return f"rank{self.rank}-peer{self.peer}"

    def _journal_source(self) -> int | None:
        return self.peer

    def _sends_on_exit(self) -> bool:
        # both ends send on a p2p link, and a send waits for the peer's receive: two ends
        # leaving their blocks at once would each wait for the other. Shut down explicitly
        # (one end sends SHUTDOWN, the other sees it in recv); watchdogs catch a dead peer.
        return False

    def _put(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        group = self.cpu_group if frame0 and self.cpu_group is not None else self.group
        dist.send(tensor, dst=self.peer, group=group, tag=tag)

    def _get(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        group = self.cpu_group if frame0 and self.cpu_group is not None else self.group
        dist.recv(tensor, src=self.peer, group=group, tag=tag)


FRAME0_TAG = 0


class _SendLock:
    """``with channel._locked():`` (a class rather than a generator: every send takes it).

    A heartbeat holds the lock while its NOOP is in flight, and a NOOP to a wedged worker
    never completes: waiting for the lock is a step like any other, bounded by
    ``watchdog_s``."""

    __slots__ = ("_channel",)

    def __init__(self, channel: _Channel[Any, Any]) -> None:
        self._channel = channel

    def __enter__(self) -> None:
        ch = self._channel
        if not ch._lock.acquire(timeout=ch.watchdog_s or -1):
            ch._watchdog_exit(
                "waiting for the send lock (a heartbeat's or another thread's send holds it)",
                ch.watchdog_s,
                ch._in_flight,
            )

    def __exit__(self, *exc: object) -> None:
        self._channel._lock.release()


def _members(group: dist.ProcessGroup | None) -> list[int]:
    if group is None:
        return list(range(dist.get_world_size()))
    return sorted(dist.get_process_group_ranks(group))


def _frame0_bytes(head: torch.Tensor, nbytes: int) -> bytes:
    """Frame 0's bytes from the head buffer (a copy: the buffer may be reused)."""
    if not head.is_cpu:
        head = head[:nbytes].cpu()
    return ctypes.string_at(head.data_ptr(), nbytes)
