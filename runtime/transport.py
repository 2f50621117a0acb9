"""Transports: how a channel's tensors move between ranks (docs/architecture.md, transports).

A channel (``runtime/channel.py``) owns everything that is the same for every transport:
the preflight, the framing (one head collective, then the segments that did not fit),
ordering, the epoch cache, the guard and watchdog, poison, and its recorders. A transport
owns only what differs: which call moves one tensor, on which group, who may send, and
what its peers are called. ``tpwire.testing.check_transport`` is the conformance kit every
transport passes.

A vanished peer looks like this to a channel: ``put`` or ``get`` raises (any exception;
the channel poisons, naming the step), or blocks until the channel's watchdog fires. A
transport never returns from ``get`` with fewer bytes than asked for without saying so,
unless the shortfall is in the head: the head's trailer word catches a short head.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from .bindings import Bindings


class Carrier(Protocol):
    """A wire of its own for whole envelopes (``Transport.carrier``), in place of tpwire's
    frames: the compat wire is one. ``stage`` builds everything before the commitment (an
    exception there refuses the envelope; nothing was sent); the sends and receives run
    inside the channel's deadline, and an exception from them poisons the channel."""

    def stage(self, msg: Any, header: Any) -> Any: ...

    def send_header(self, staged: Any) -> None: ...

    def send_payload(self, staged: Any) -> None: ...

    def receive_header(self) -> Any: ...

    def receive_payload(self, header: Any) -> Any: ...


class Transport(abc.ABC):
    """How one channel's collectives move tensors, and between which ranks.

    Implement ``put`` and ``get``; the defaults of the rest fit a transport whose every
    rank both sends and receives on ``group``. ``frame0=True`` marks the head collective
    (frame 0 and the segments it carries); ``tag`` is 0 for it and, for a frame 1
    segment, a number derived from the envelope's ids (``Channel`` makes it), which a
    point-to-point transport passes on so a stale frame cannot be taken for the current one.
    """

    #: the parity flag ``tpwire.transport``: ranks on different transports refuse each other
    kind: ClassVar[str] = "custom"
    #: whether a sender may fill idle time with NOOP heartbeats (``heartbeat_s``)
    heartbeats: ClassVar[bool] = True
    #: what its channels are called in messages ("p2p channels have no heartbeat")
    label: ClassVar[str] = "custom"

    def __init__(
        self,
        group: dist.ProcessGroup | None = None,
        cpu_group: dist.ProcessGroup | None = None,
    ) -> None:
        if cpu_group is not None and members(cpu_group) != members(group):
            raise ValueError("cpu_group must hold exactly the ranks of group")
        self.group = group
        #: a group of the same ranks for frame 0 alone (a CPU group beside a device group)
        self.cpu_group = cpu_group
        self.rank = dist.get_rank()

    @abc.abstractmethod
    def put(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        """Send ``tensor``'s bytes to the peers."""

    @abc.abstractmethod
    def get(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        """Receive a peer's ``put`` into ``tensor`` (its size: what this rank expects)."""

    def sends(self) -> bool:
        """Whether this rank sends envelopes."""
        return True

    def check_role(self, sender: bool) -> None:
        """Raise ``RuntimeError`` when this rank may not send (``sender``) or receive."""
        return None

    def sends_on_exit(self) -> bool:
        """Whether leaving the channel's ``with`` block sends SHUTDOWN (or ERROR)."""
        return self.sends()

    def frame0_apart(self) -> bool:
        """Whether frame 0 travels on a group of its own (then there is no steady state)."""
        return self.cpu_group is not None

    def handshake_group(self) -> dist.ProcessGroup | None:
        """The group the open handshake runs on (every rank of the channel, only them)."""
        return self.cpu_group if self.cpu_group is not None else self.group

    def compare_group(self) -> dist.ProcessGroup | None:
        """The group the drift tripwires compare digests on."""
        return self.group

    def world(self) -> int:
        """How many ranks the channel links."""
        return dist.get_world_size(self.handshake_group())

    def name(self) -> str:
        """This end's name in file names (its journal's)."""
        return f"rank{self.rank}"

    def source(self) -> int | None:
        """The rank this end hears from (a journal records it), None when there is none."""
        return None

    def parity(self) -> Mapping[str, object]:
        """Flags every rank of the channel must agree on (the open handshake compares them)."""
        return {"tpwire.transport": self.kind} if self.kind != "tpwire" else {}

    def carrier(self, bindings: Bindings[Any, Any], device: torch.device | None) -> Carrier | None:
        """A wire of its own for whole envelopes, or None for tpwire's frames."""
        return None


class BroadcastTransport(Transport):
    """One source rank ``src`` to every rank of ``group`` (tensor parallelism)."""

    kind = "tpwire"
    label = "broadcast"

    def __init__(
        self,
        group: dist.ProcessGroup | None = None,
        src: int = 0,
        cpu_group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(group, cpu_group)
        self.src = src
        self.is_source = self.rank == src

    def put(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        group = self.cpu_group if frame0 and self.cpu_group is not None else self.group
        dist.broadcast(tensor, src=self.src, group=group)

    get = put  # a broadcast is the same call on every rank

    def sends(self) -> bool:
        return self.is_source

    def check_role(self, sender: bool) -> None:
        if sender != self.is_source:
            role = "the source rank" if sender else "a receiving rank"
            raise RuntimeError(f"only {role} may call this (rank {self.rank}, src {self.src})")

    def source(self) -> int | None:
        return self.src

    def parity(self) -> Mapping[str, object]:
        return {**super().parity(), "tpwire.src": self.src}


class P2PTransport(Transport):
    """This rank and one ``peer`` (pipeline stages): both ends send and receive.

    The handshake and the tripwires run on ``group``, which must be exactly the two ends
    (``dist.new_group([a, b])``, or the world when it has two ranks): only the two ends
    call them, so a larger group would hang."""

    kind = "tpwire"
    label = "p2p"
    # both ends send on a p2p link and a RESULT carries its envelope's ids: a NOOP from
    # either end would break ordering or block on a peer that stopped receiving
    heartbeats = False

    def __init__(
        self,
        peer: int,
        group: dist.ProcessGroup | None = None,
        cpu_group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(group, cpu_group)
        if peer == self.rank:
            raise ValueError("a p2p channel needs another rank as its peer")
        ends = members(group)
        if len(ends) != 2 or self.rank not in ends or peer not in ends:
            raise ValueError("a p2p channel needs a group of exactly its two ends")
        self.peer = peer

    def put(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        group = self.cpu_group if frame0 and self.cpu_group is not None else self.group
        dist.send(tensor, dst=self.peer, group=group, tag=tag)

    def get(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        group = self.cpu_group if frame0 and self.cpu_group is not None else self.group
        dist.recv(tensor, src=self.peer, group=group, tag=tag)

    def sends_on_exit(self) -> bool:
        # both ends send, and a send waits for the peer's receive: two ends leaving their
        # blocks at once would each wait for the other. One end sends SHUTDOWN explicitly.
        return False

    def name(self) -> str:
        return f"rank{self.rank}-peer{self.peer}"

    def source(self) -> int | None:
        return self.peer


def members(group: dist.ProcessGroup | None) -> list[int]:
    """The global ranks of ``group`` (the world when None), sorted."""
    if group is None:
        return list(range(dist.get_world_size()))
    return sorted(dist.get_process_group_ranks(group))
