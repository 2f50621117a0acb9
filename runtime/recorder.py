"""Recorders: what a channel tells the outside about its life (docs/architecture.md,
recorders).

A channel calls its recorders at fixed points (opened, sent, received, refused,
observed, poisoned, watchdog, terminated, closed) and knows nothing of what they do with
it. The envelope journal is one recorder (``runtime/journal_recorder.py``). A recorder
that raises is switched off with one line; the stream goes on.
"""

from __future__ import annotations

import ctypes
import enum
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .escape import printable

if TYPE_CHECKING:
    from .bindings import Bindings


def tensor_bytes(t: torch.Tensor, start: int = 0, nbytes: int | None = None) -> bytes:
    """A copy of a contiguous uint8 tensor's bytes (``start``, ``nbytes``), for an event."""
    n = t.numel() - start if nbytes is None else nbytes
    if not n:
        return b""
    if t.is_cpu:
        return ctypes.string_at(t.data_ptr() + start, n)
    host = t[start : start + n].cpu()
    return ctypes.string_at(host.data_ptr(), n)


@dataclass(frozen=True)
class ChannelInfo:
    """What a recorder learns of its channel when it is set up."""

    bindings: Bindings[Any, Any]
    rank: int
    world: int
    #: this end's name in file names (``rank0``, ``rank1-peer0``)
    name: str
    #: the rank this end hears from, None when there is none
    source: int | None
    #: the channel's poison policy ("exit": a poisoned rank exits right after the event)
    poison: str


@dataclass(frozen=True)
class EnvelopeEvent:
    """One envelope that went out or came in."""

    header: Any  # None when frame 0 itself was refused
    action: enum.IntEnum | None
    #: "sent", "validated" (received and accepted), "refused", "received" (taken off the
    #: wire, then refused by the ordering rules), or "unsent" (refused by the sending rank
    #: before frame 0: no bytes)
    state: str
    #: frame 0's bytes (empty for a wire without frames, such as compat)
    frame0: bytes
    #: bytes put or got for it, frame 0 and frame 1 together
    nbytes: int
    #: seconds from its first collective's start to its last one's end (a received one's:
    #: from when this rank started waiting for its head, ``waited`` included)
    seconds: float
    #: each frame 1 segment's bytes, when a recorder asked for them (``wants_segments``)
    segments: list[bytes] | None = None
    #: an ERROR frame's reason text, or why the envelope was refused
    reason: str | None = None
    error: str | None = None
    #: why a refused envelope was refused, as a bounded class: the first violation's code,
    #: or "ordering", "wire" (frame 1), "frame0"
    code: str | None = None
    #: the first violation's failure-mode id, where its rule names one (the spec's ``fm``)
    fm: str | None = None
    #: a received envelope: seconds blocked before its head arrived (the source preparing
    #: it, or a peer late); 0 for a sent one
    waited: float = 0.0
    #: seconds of tpwire's own work on it outside the collectives (the CPU path): a sender's
    #: preflight and layout, a receiver's checks, buffers, views and validation
    cpu: float = 0.0

    @property
    def sent(self) -> bool:
        return self.state == "sent"


@dataclass(frozen=True)
class Observation:
    """What a rank did with an envelope (``Channel.observe``) or a tripwire's digests:
    digests (``runtime/tripwire.py``) and counts, made by the channel, so a caller's
    mistake (a count that is no integer) raises to the caller, not in a recorder."""

    what: str  # "observed" or "tripwire"
    state: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    #: the digest of the envelope the rank ran, and of each of its fields
    input_digest: int | None = None
    field_digests: Mapping[str, int] | None = None
    #: the digest of each named output
    output_digests: Mapping[str, int] | None = None

    @classmethod
    def of(
        cls,
        bindings: Bindings[Any, Any],
        header: Any,
        inputs: Any,
        outputs: Mapping[str, torch.Tensor] | None,
        state: str,
        counts: Mapping[str, Any],
    ) -> Observation:
        """What ``Channel.observe`` was told, as digests (the caller's mistakes raise here)."""
        from . import tripwire  # the digests need torch.distributed: not for every recorder

        ran = inputs is not None
        return cls(
            "observed",
            state,
            {k: int(v) for k, v in sorted(counts.items())},
            tripwire.digest_envelope(bindings, inputs, header) if ran else None,
            tripwire.digest_fields(inputs) if ran else None,
            {k: tripwire.digest_tensors([t]) for k, t in sorted((outputs or {}).items())},
        )


class Recorder:
    """The events of one channel; every method is a no-op unless overridden.

    ``setup`` runs before the open handshake; what it returns (None, or why this rank cannot
    record) is shown to every rank in the handshake, so the ranks decide together: all
    record, or none does (``opened`` gets every rank's problem, ``abandoned`` follows when
    there is one or the handshake fails)."""

    #: the recorder's key in the handshake's status and its log lines
    name: str = "recorder"

    @property
    def wants_segments(self) -> bool:
        """Whether ``sent``/``received`` events should carry each segment's bytes (a copy)."""
        return False

    def parity(self) -> Mapping[str, object]:
        """Flags every rank must agree on."""
        return {}

    def setup(self, channel: ChannelInfo) -> str | None:
        return None

    def opened(self) -> None:
        """Every rank set up its recorder: recording starts."""

    def abandoned(self) -> None:
        """The channel did not open, or a rank could not record: nothing is recorded."""

    def sent(self, event: EnvelopeEvent) -> None: ...

    def received(self, event: EnvelopeEvent) -> None: ...

    def refused(self, event: EnvelopeEvent) -> None: ...

    def observed(self, header: Any, observation: Observation) -> None: ...

    def poisoned(self, header: Any, reason: str, *, exiting: bool) -> None: ...

    def watchdog(self, header: Any, reason: str) -> None: ...

    def terminated(self, reason: str) -> None: ...

    def closed(self) -> None: ...


def _log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Recorders:
    """A channel's recorders, called in order. One that raises is dropped with one line."""

    __slots__ = ("active", "pending", "rank")

    def __init__(self, recorders: Sequence[Recorder], rank: int) -> None:
        names = [r.name for r in recorders]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # the handshake tells the ranks' set-up problems apart by name
            raise ValueError(f"two recorders named {', '.join(map(repr, twice))}")
        self.pending = list(recorders)  # set up, waiting for the handshake's verdict
        self.active: list[Recorder] = []
        self.rank = rank

    def __bool__(self) -> bool:
        return bool(self.active)

    def parity(self) -> dict[str, object]:
        flags: dict[str, object] = {}
        for r in self.pending:
            flags.update(r.parity())
        return flags

    def setup(self, info: ChannelInfo) -> dict[str, str | None]:
        """Each recorder's setup problem (None: ready), by name, for the handshake."""
        problems: dict[str, str | None] = {}
        for r in self.pending:
            try:
                problems[r.name] = r.setup(info)
            except Exception as exc:  # never out of open() on one rank alone (its peers
                # would wait in the handshake): shown in it like any other setup problem
                problems[r.name] = printable(f"cannot set up: {type(exc).__name__}: {exc}", 300)
        return problems

    def agree(self, problems: Mapping[str, Sequence[str]]) -> None:
        """``problems``: per recorder name, each rank's problem as "rank N: text"."""
        for r in self.pending:
            theirs = problems.get(r.name, ())
            if theirs:
                self._call(r, "abandoned")
                _log(
                    f"tpwire[rank {self.rank}]: {r.name} off on every rank (the stream goes "
                    "on): " + "; ".join(theirs)
                )
            elif self._call(r, "opened"):
                self.active.append(r)
        self.pending = []

    @property
    def wants_segments(self) -> bool:
        """Whether an event should carry each segment's bytes (asked per envelope: a journal
        that stopped wants no copies). A recorder whose answer raises is switched off."""
        wanted = False
        for r in list(self.active):
            try:
                wanted = r.wants_segments or wanted
            except Exception as exc:
                self._off(r, "wants_segments", exc)
        return wanted

    def abandon(self) -> None:
        # taken first: SIGTERM's reader thread and the main thread may both get here
        pending, self.pending = self.pending, []
        for r in pending:
            self._call(r, "abandoned")

    def _call(self, r: Recorder, event: str, *args: Any, **kwargs: Any) -> bool:
        try:
            getattr(r, event)(*args, **kwargs)
        except Exception as exc:
            self._off(r, event, exc)
            return False
        return True

    def _off(self, r: Recorder, event: str, exc: Exception) -> None:
        if r in self.active:
            try:  # a heartbeat's thread and the caller's may both get here
                self.active.remove(r)
            except ValueError:
                return
        elif event not in ("opened", "abandoned"):
            return  # switched off already, by another thread's event
        _log(
            f"tpwire[rank {self.rank}]: {r.name} off (the stream goes on): {event} "
            f"raised {printable(f'{type(exc).__name__}: {exc}', 300)}"
        )

    def emit(self, event: str, *args: Any, **kwargs: Any) -> None:
        """Call ``event`` on every active recorder."""
        for r in list(self.active):
            self._call(r, event, *args, **kwargs)
