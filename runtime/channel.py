"""Generated bindings over a ``torch.distributed`` group: the anti-stranding channels.

One envelope's life (docs/architecture.md walks through it):

1. ``open``: every rank sets up its recorders, then the parity handshake (spec, plan,
   environment keys, flags; each recorder's readiness), on the transport's group.
2. ``send`` (``runtime/sender.py``): the preflight (the rules across envelopes, validation,
   every byte) before any collective; then, under the send lock, the ordering check and
   the commitment: the head (frame 0 and the segments that fit) and the other segments.
3. ``recv`` (``runtime/receiver.py``): the head, frame 0 checked against the spec and its
   trailer; the other segments into buffers sized from the checked manifest; the ordering
   rules, the full validation, the rules across envelopes.
4. Every collective runs under the policy (``runtime/policy.py``): the watchdog, the
   abort guard, poison; a failure after frame 0 is one line with the ids, then exit 86 (or
   ``ChannelPoisoned``), because a peer may already be committed. Crash, never hang.
5. Recorders (``runtime/recorder.py``; the journal is one) hear of each step.

How the bytes move is the transport's (``runtime/transport.py``): ``BroadcastChannel``
(TP: one source rank to every rank of a group) and ``P2PChannel`` (PP: stage to stage)
are this channel over a broadcast and a point-to-point transport.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import ClassVar, Generic, Self

import torch
import torch.distributed as dist
from typing_extensions import Unpack

from . import handshake, terminate, tripwire
from .arena import ArenaError, ArenaStats
from .bindings import A, Bindings, GeneratedModule, H, M, bindings_of
from .escape import printable
from .framing import CPU_CARRY_LIMIT, FRAME0_TAG, TRAILER_NBYTES, Framing
from .journal import JournalWriter
from .journal_recorder import journal_recorder
from .options import ChannelKnobs, ChannelOptions, options_of
from .ordering import Ordering, OrderingError
from .policy import (
    EXIT_POISONED,
    EXIT_WATCHDOG,
    ChannelPoisoned,
    Policy,
    describe,
    error_code,
    log,
)
from .receiver import Received, Receiver
from .recorder import Observation, Recorders
from .sender import Sender
from .transport import BroadcastTransport, Carrier, P2PTransport, Transport
from .wire import ErrorCode, Reason

__all__ = [
    "CPU_CARRY_LIMIT",
    "EXIT_POISONED",
    "EXIT_WATCHDOG",
    "FRAME0_TAG",
    "TRAILER_NBYTES",
    "BroadcastChannel",
    "Channel",
    "ChannelOptions",
    "ChannelPoisoned",
    "Framing",
    "Ordering",
    "OrderingError",
    "P2PChannel",
    "Received",
    "describe",
    "error_code",
]


class Channel(Generic[H, M, A]):
    """Envelopes of one generated ``protocol`` over one ``transport``."""

    def __init__(
        self,
        protocol: Bindings[H, M, A] | GeneratedModule[H, M, A],
        transport: Transport,
        options: ChannelOptions | None = None,
    ) -> None:
        self.protocol: Bindings[H, M, A] = bindings_of(protocol)
        self.transport = transport
        self.options = opts = options if options is not None else ChannelOptions()
        self.rank = transport.rank
        self.device = torch.device(opts.device) if opts.device is not None else None
        self._check_options()
        self.carrier: Carrier | None = transport.carrier(self.protocol, self.device)
        self.opened = self.closed = self._told_closed = False
        #: the last header sent and the last one received (ids for logs and heartbeats)
        self.last_sent: H | None = None
        self.last_header: H | None = None
        self._journal = journal_recorder(opts.journal)
        # a journal that is off records nothing: not a recorder the hot path calls
        journaling = [self._journal] if self._journal.config is not None else []
        self.recorders = Recorders([*journaling, *opts.recorders], self.rank)
        self.policy = Policy(self)
        self.terminate_token: int | None = None
        for action in (self.protocol.noop, self.protocol.shutdown, self.protocol.error):
            if action is not None:  # a control frame the spec cannot express: say so now
                self.protocol.control_header(None, action)
        # frame 0 travels apart (a CPU group) when the transport says so: it cannot share a
        # collective with frame 1 then, so there is no steady state
        apart = transport.frame0_apart()
        self.frame0_device = torch.device("cpu") if apart or self.device is None else self.device
        steady, carry = opts.steady_state and not apart, opts.head_carry_limit(self.device)
        self.parity_flags: dict[str, object] = {
            **dict(opts.parity_flags or {}),
            "tpwire.tripwires": opts.tripwires,  # the tripwires run only if every rank agrees
            **self._journal.parity(),  # "off" too: every rank should agree
            **self.recorders.parity(),
            "tpwire.steady_state": steady,
            "tpwire.carry_limit": carry,
            **transport.parity(),
        }
        n = self.protocol.frame0_len
        self.sender = Sender(self, Framing(n, steady=steady, carry_limit=carry))
        self.receiver = Receiver(self, Framing(n, steady=steady, carry_limit=carry))

    def _check_options(self) -> None:
        opts, transport = self.options, self.transport
        if opts.heartbeat_s and not transport.heartbeats:
            raise ValueError(
                f"{transport.label} channels have no heartbeat; use watchdog_s on both ends"
            )
        if opts.arena and transport.carrier(self.protocol, self.device) is not None:
            raise ValueError(
                "arena=True needs tpwire's frames; this transport has a wire of its own"
            )

    # -- what the parts share -----------------------------------------------------------

    @property
    def poisoned(self) -> bool:
        return self.policy.poisoned

    @property
    def journal(self) -> JournalWriter | None:
        """This rank's journal writer (``runtime/journal.py``); None when not journaling."""
        return self._journal.writer

    def ids(self, header: object) -> str:
        """The envelope's ids for a log line, by the spec's own field names."""
        return self.protocol.ids_text(header)

    def segment_tag(self, header: H, index: int) -> int:
        """Tags of frame 1 segments, derived from the ids frame 0 announced (epoch and
        sequence roles), so a stale or misordered frame cannot be taken for the current one."""
        ids = self.protocol.role_ids(header)
        epoch, seq = ids.epoch or 0, ids.sequence or 0
        return 1 + ((epoch * 1_000_003 + seq) * 16 + index) % (1 << 24)

    def ready(self, *, sender: bool) -> None:
        if self.policy.poisoned:
            raise ChannelPoisoned("the channel is poisoned")
        if not self.opened:
            raise RuntimeError("call open() first (the parity handshake)")
        if self.closed:
            raise RuntimeError("the channel is closed")
        self.transport.check_role(sender)

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> Self:
        """The handshake: parity of spec, plan, env keys and flags on every rank."""
        heartbeat = self.options.heartbeat_s
        if heartbeat and not self.transport.frame0_apart():
            # a heartbeat on the data group would take the slot of whatever collective the
            # workers run next on it (tripwires, the model's own): give frame 0 its own group
            raise ValueError("heartbeat_s needs a cpu_group used only by this channel")
        refused = handshake.shake(self)
        if refused is not None:
            raise refused from None
        self.opened = True
        if heartbeat and self.transport.sends():
            self.sender.start_heartbeat(heartbeat)
        return self

    def not_opened(self) -> None:
        self.recorders.abandon()
        self._terminate_release()

    def close(self, *, destroy_group: bool = False) -> None:
        """Stop using the channel (after SHUTDOWN); optionally destroy its process group.

        Never call it on a poisoned channel with ``destroy_group``: a peer may still be
        blocked in a collective of that group (docs/runtime.md, crash > hang)."""
        self.closed = True
        self._terminate_release()
        self.recorders.abandon()  # set up for a handshake that never ran
        if not self._told_closed:  # closing twice (a block's exit after close()) tells once
            self._told_closed = True
            self.recorders.emit("closed")
        if destroy_group and not self.poisoned:
            dist.destroy_process_group(self.transport.group)

    def _terminate_release(self) -> None:
        token, self.terminate_token = self.terminate_token, None
        terminate.unregister(token)

    def terminated(self, what: str) -> None:
        # the reason's class is "SIGTERM", whatever each rank was doing, so ranks all stopped
        # by the launcher agree in ``journal diff``
        self.recorders.abandon()  # set up for a handshake that did not finish: no file left
        self.recorders.emit("terminated", f"SIGTERM: while {what}")

    def __enter__(self) -> Self:
        return self if self.opened else self.open()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if isinstance(exc, BaseException) and not isinstance(exc, ChannelPoisoned):
            self.policy.root_cause(exc)  # first, before anything else can fail
        # a sender leaving the block never strands its workers: SHUTDOWN, or ERROR on failure
        if self.opened and not self.closed and not self.poisoned and self.transport.sends_on_exit():
            if not isinstance(exc, BaseException):
                self.shutdown()
            else:
                self.error(describe(exc), error_code(exc))
        self.close()

    # -- envelopes ----------------------------------------------------------------------

    def send(self, msg: M | None, header: H) -> None:
        """Preflight everything, then commit: frame 0, frame 1."""
        self.sender.send(msg, header)

    def recv(self) -> Received[H, M, A]:
        """The next envelope: frame 0 checked against the spec and the ordering rules, frame 1
        into buffers sized from the checked manifest, then the full validation.

        ``EnvelopeInvalid`` is raised after the whole envelope has been received, so the
        channel stays in lockstep and the caller decides (a relay broadcasts ERROR)."""
        return self.receiver.recv()

    def noop(self) -> None:
        """A heartbeat: frame 0 only (the spec's noop control action)."""
        self.sender.send_action(self.sender.noop_action())

    def shutdown(self) -> None:
        """Tell every rank to leave its receive loop; the channel is closed afterwards."""
        self.sender.send_action(self.protocol.shutdown)

    def error(self, reason: str, code: ErrorCode = ErrorCode.USER) -> None:
        """A terminal error frame, so peers exit cleanly instead of being stranded. It
        carries ``code`` and ``reason`` (cut to 64 bytes of UTF-8): every worker logs them
        and ``recv`` hands them over as ``Received.reason``."""
        header = self.sender.send_action(self.protocol.error, Reason(code, reason))
        log(
            f"tpwire[rank {self.rank}]: {self.protocol.error.name} sent {self.ids(header)}: "
            f"{printable(f'{code.name}: {reason}')}"
        )

    def next_sequence(self) -> int:
        """The smallest sequence id (the spec's sequence role) the next send may use
        (heartbeats consume ids too)."""
        with self.policy.locked():
            return self.sender.order.next_sequence()

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
        return self.sender.alloc(field, shape, dtype)

    @property
    def arena_stats(self) -> ArenaStats:
        """What ``alloc`` and the sends did with the arena (``arena=True`` channels)."""
        if self.sender.arena is None:
            raise ArenaError("the channel was opened without arena=True")
        return self.sender.arena.stats

    def forget_cached(self) -> None:
        """Empty this end's cache of fields cached by an epoch (both directions): what a
        restarted process starts with. The next envelope must carry every cached field."""
        for cache in (self.sender.cache, self.receiver.cache):
            if cache is not None:
                cache.forget()

    def observe(
        self,
        header: H,
        *,
        inputs: M | None = None,
        outputs: Mapping[str, torch.Tensor] | None = None,
        state: str = "completed",
        **counts: int,
    ) -> None:
        """Record what this rank did with the envelope of ``header`` (no collective; a
        no-op without recorders): the journal keeps the digest of the ``inputs`` it ran (and
        of each of their fields), of each of its ``outputs``, integer ``counts`` and its
        commit ``state``. ``tpwire journal diff`` compares them across ranks."""
        if not self.recorders.active:
            return
        seen = Observation.of(self.protocol, header, inputs, outputs, state, counts)
        self.recorders.emit("observed", header, seen)

    # -- drift tripwires (bringup) and guards --------------------------------------------

    def check_inputs(self, msg: M | None, header: H) -> None:
        """Every rank compares the digest of the envelope it is about to run (OM-11)."""
        self._tripwire_ready()
        value, failure = tripwire.safely(
            lambda: tripwire.digest_envelope(self.protocol, msg, header)
        )
        if self.recorders.active:
            self.recorders.emit("observed", header, Observation("tripwire", input_digest=value))
        self._compare(value, f"the inputs of {self.ids(header)}", failure)

    def check_same(self, tensor: torch.Tensor, what: str) -> None:
        """Every rank compares a tensor that must be identical (an output, a replicated weight)."""
        self._tripwire_ready()
        value, failure = tripwire.safely(lambda: tripwire.digest_tensors([tensor]))
        if self.recorders.active:
            header = self.last_sent if self.last_sent is not None else self.last_header
            seen = Observation("tripwire", output_digests={what: value})
            self.recorders.emit("observed", header, seen)
        self._compare(value, what, failure)

    def _tripwire_ready(self) -> None:
        if not self.options.tripwires:
            raise RuntimeError("open the channel with tripwires=True (a parity-checked flag)")
        if not self.opened or self.poisoned:
            raise RuntimeError("the channel is not open")

    def _compare(self, value: int, what: str, failure: BaseException | None = None) -> None:
        # every rank enters the collective, even one whose digest failed: no peer strands
        self.policy.collective(
            f"the digest check of {what}",
            lambda: tripwire.compare(value, what, self.transport.compare_group()),
            agreed=(tripwire.DriftDetected,),
        )
        if failure is not None:
            raise failure

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
        with self.policy.run(what, header):
            yield


class BroadcastChannel(Channel[H, M, A]):
    """Envelopes of one generated ``protocol`` from rank ``src`` to every rank of ``group``
    (a ``cpu_group`` of the same ranks carries frame 0 apart, e.g. beside an NCCL group).
    The knobs are ``ChannelOptions``' fields, as keywords or as ``options``."""

    #: the transport it builds (``CompatBroadcastChannel``: the compat one)
    transport_class: ClassVar[type[BroadcastTransport]] = BroadcastTransport

    def __init__(
        self,
        protocol: Bindings[H, M, A] | GeneratedModule[H, M, A],
        group: dist.ProcessGroup | None = None,
        src: int = 0,
        *,
        cpu_group: dist.ProcessGroup | None = None,
        options: ChannelOptions | None = None,
        **knobs: Unpack[ChannelKnobs],
    ) -> None:
        opts = options_of(options, knobs)  # checked before anything touches the group
        transport = self.transport_class(group, src, cpu_group)
        super().__init__(protocol, transport, opts)
        self.src = src
        self.is_sender = transport.sends()


class P2PChannel(Channel[H, M, A]):
    """Envelopes and results between this rank and one ``peer`` (pipeline stages).

    Both ends send and receive; a send waits until the peer receives (gloo), so a stage that
    keeps several envelopes in flight sends and receives from separate threads, or drains
    results before sending more. Segment tags derive from ``(epoch, sequence, index)``
    (roles) so a stale or misordered frame cannot be taken for the current one. The
    handshake and the tripwires run on ``group``, which must be exactly the two ends
    (``dist.new_group([a, b])``, or the world when it has two ranks). No heartbeats: use
    ``watchdog_s`` on both ends."""

    def __init__(
        self,
        protocol: Bindings[H, M, A] | GeneratedModule[H, M, A],
        peer: int,
        group: dist.ProcessGroup | None = None,
        *,
        cpu_group: dist.ProcessGroup | None = None,
        options: ChannelOptions | None = None,
        **knobs: Unpack[ChannelKnobs],
    ) -> None:
        opts = options_of(options, knobs)  # checked before anything touches the group
        super().__init__(protocol, P2PTransport(peer, group, cpu_group), opts)
        self.peer = peer
