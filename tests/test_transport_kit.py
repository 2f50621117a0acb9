"""The transport conformance kit (``tpwire.testing.check_transport``) on every shipped
transport, and on a loopback transport written here in a few lines (docs/runtime.md,
writing a transport)."""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener

import pytest
import torch
import torch.distributed as dist

from tpwire.runtime.compat import CompatTransport
from tpwire.runtime.transport import BroadcastTransport, P2PTransport, Transport
from tpwire.testing import check_transport


class LoopbackTransport(Transport):
    """Rank 0 to rank 1 over one ``multiprocessing.connection`` socket; the handshake
    and the tripwires run on the gloo world group (the defaults)."""

    kind = "loopback"
    heartbeats = False  # frame 0 shares the socket: no NOOP may cut into an envelope

    def __init__(self) -> None:
        super().__init__()
        port = torch.zeros(1, dtype=torch.int64)
        if self.rank == 0:
            listener = Listener(("127.0.0.1", 0))
            port[0] = listener.address[1]
        dist.broadcast(port, src=0)  # the world group tells rank 1 where to connect
        if self.rank == 0:
            self.conn: Connection = listener.accept()
            listener.close()
        else:
            self.conn = Client(("127.0.0.1", int(port)))

    def put(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        self.conn.send_bytes(_raw(tensor))

    def get(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        n = self.conn.recv_bytes_into(_raw(tensor))  # raises when the message is longer
        if n != tensor.nbytes:
            raise ConnectionError(f"received {n} bytes, expected {tensor.nbytes}")

    def sends(self) -> bool:
        return self.rank == 0

    def check_role(self, sender: bool) -> None:
        if sender != self.sends():
            raise RuntimeError(f"rank {self.rank} may not {'send' if sender else 'receive'}")

    def source(self) -> int | None:
        return 0


def _raw(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes, shared (a CPU tensor: the channel hands over contiguous ones)."""
    return tensor.view(torch.uint8).numpy().data


# make_pair callables: top level, so the kit's spawned ranks can unpickle them


def loopback(rank: int, world: int) -> Transport:
    return LoopbackTransport()


def broadcast(rank: int, world: int) -> Transport:
    return BroadcastTransport()


def p2p(rank: int, world: int) -> Transport:
    return P2PTransport(peer=1 - rank)


def compat(rank: int, world: int) -> Transport:
    return CompatTransport()


def _check(make_pair: Callable[[int, int], Transport]) -> None:
    report = check_transport(make_pair)
    print(report)
    assert not report.failed
    assert "stream" in report.passed


@pytest.mark.timeout(300)
def test_loopback_transport_passes_the_kit() -> None:
    _check(loopback)


@pytest.mark.timeout(300)
def test_broadcast_transport_passes_the_kit() -> None:
    _check(broadcast)


@pytest.mark.timeout(300)
def test_p2p_transport_passes_the_kit() -> None:
    _check(p2p)


@pytest.mark.timeout(300)
def test_compat_transport_passes_the_kit() -> None:
    report = check_transport(compat)
    print(report)
    # a wire of its own (pickled metadata): no tpwire frame 0 to forge
    assert report.skipped == ["integrity-checksum", "integrity-fingerprint"]
    assert not report.failed


class CorruptingLoopback(LoopbackTransport):
    """A buggy transport: the first byte of every frame 1 segment arrives flipped."""

    def get(self, tensor: torch.Tensor, tag: int, *, frame0: bool) -> None:
        super().get(tensor, tag, frame0=frame0)
        if not frame0 and tensor.numel():
            tensor.view(torch.uint8)[0] ^= 0xFF


def corrupting(rank: int, world: int) -> Transport:
    return CorruptingLoopback()


@pytest.mark.timeout(120)
def test_the_kit_names_the_case_a_broken_transport_fails() -> None:
    with pytest.raises(AssertionError) as failed:
        check_transport(corrupting, cases=["stream", "error"])
    text = str(failed.value)
    assert "failed case(s) 'stream'\n" in text
    assert "not run  error: stream failed first in its run" in text
    assert "frame 1" in text and "stderr tail" in text  # the ranks' own lines
