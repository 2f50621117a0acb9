"""``ChannelOptions``: every knob of a channel in one frozen, documented place
(docs/runtime.md, options; docs/architecture.md).

The public constructors take them as keyword arguments (``BroadcastChannel(tc,
watchdog_s=30)``, typed by ``ChannelKnobs``) or whole (``options=ChannelOptions(...)``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

import torch

from . import journal as _journal
from .framing import CPU_CARRY_LIMIT

if TYPE_CHECKING:
    from .recorder import Recorder


@dataclass(frozen=True)
class ChannelOptions:
    """How a channel behaves; every field has the default a channel gets without it."""

    #: where frame 1 and the received tensors live (None: the CPU)
    device: torch.device | str | None = None
    #: environment variables every rank must agree on (the open handshake compares them)
    parity_env: Sequence[str] = ()
    #: more values every rank must agree on (a plan, a model revision)
    parity_flags: Mapping[str, object] | None = None
    #: a collective not done within this many seconds ends the process (exit 87)
    watchdog_s: float | None = None
    #: a sender idle this long sends a NOOP (needs a ``cpu_group`` used only by the channel)
    heartbeat_s: float | None = None
    #: what poison does: "exit" (one line, exit 86) or "raise" (``ChannelPoisoned``)
    poison: str = "exit"
    #: the drift tripwires (``check_inputs``, ``check_same``) may run: a parity-checked flag
    tripwires: bool = False
    #: one head collective per envelope once two payload envelopes in a row agree on layout
    steady_state: bool = True
    #: the largest segment the head carries (bytes; None: 1 MiB on the CPU, all on a device)
    carry_limit: int | None = None
    #: the envelope journal: a folder, a ``JournalConfig``, or None (``TPWIRE_JOURNAL``)
    journal: _journal.JournalArg = None
    #: copy-free sends: ``alloc`` hands out views of the next head buffer
    arena: bool = False
    #: more recorders (``runtime/recorder.py``), after the journal
    recorders: Sequence[Recorder] = field(default=())

    def __post_init__(self) -> None:
        if self.poison not in ("exit", "raise"):
            raise ValueError("poison must be 'exit' or 'raise'")
        w = self.watchdog_s
        if w is not None and not (
            isinstance(w, int | float)
            and not isinstance(w, bool)
            and 0 < w <= threading.TIMEOUT_MAX
        ):
            raise ValueError(
                f"watchdog_s must be a number of seconds in (0, {threading.TIMEOUT_MAX:g}], "
                f"or None for no watchdog; got {w!r}"
            )

    def head_carry_limit(self, device: torch.device | None) -> int:
        """The largest segment the head carries on ``device`` (``carry_limit`` or its default)."""
        if self.carry_limit is not None:
            return self.carry_limit
        if self.arena:
            return 1 << 62  # the head carries every segment: alloc places them there
        # a device copy is nearly free next to a collective; a host copy is not
        on_device = device is not None and device.type != "cpu"
        return 1 << 62 if on_device else CPU_CARRY_LIMIT

    def replace(self, **changes: object) -> ChannelOptions:
        """These options with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class ChannelKnobs(TypedDict, total=False):
    """``ChannelOptions``' fields as keyword arguments of the channel constructors."""

    device: torch.device | str | None
    parity_env: Sequence[str]
    parity_flags: Mapping[str, object] | None
    watchdog_s: float | None
    heartbeat_s: float | None
    poison: str
    tripwires: bool
    steady_state: bool
    carry_limit: int | None
    journal: _journal.JournalArg
    arena: bool
    recorders: Sequence[Recorder]


def options_of(options: ChannelOptions | None, knobs: Mapping[str, object]) -> ChannelOptions:
    """The options a constructor was given: ``options`` with ``knobs`` over them."""
    unknown = sorted(set(knobs) - {f.name for f in dataclasses.fields(ChannelOptions)})
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    base = options if options is not None else ChannelOptions()
    return base.replace(**knobs) if knobs else base
