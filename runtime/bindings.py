"""The contract between a generated protocol module and the runtime: one ``Bindings``.

Every generated module exports ``BINDINGS``, an instance of this class carrying what the
runtime needs to run any protocol: its identity (name, fingerprint, frame 0 length), the
header class and action enum, the header *roles* (which field is the sequence id, the chunk
id, the epoch; which action members are the control actions) and the codec callables. The
runtime reads roles, never field or member names, so a protocol whose header says ``seq``
and ``generation`` and whose actions are ``IDLE``/``RUN``/``HALT``/``FAIL`` runs over a
channel exactly as Scope's does.

``Bindings`` is generic in the header, message and action types: a channel built on
``tp_control.BINDINGS`` (or on the module ``tp_control`` itself, a ``GeneratedModule``) sends
and receives ``tp_control``'s classes, and its ``recv().action`` is a ``TPAction``, under
``mypy --strict``. The action type defaults to ``IntEnum``: ``Bindings[H, M]`` and the
channels' two-parameter forms still check.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol

import torch
from typing_extensions import TypeVar  # a TypeVar with a default (PEP 696) before 3.13

from .errors import Ids, Violation, ids_text
from .wire import Frames, Manifest, Prepared

H = TypeVar("H")
M = TypeVar("M")
H_contra = TypeVar("H_contra", contravariant=True)
M_contra = TypeVar("M_contra", contravariant=True)
H_co = TypeVar("H_co", covariant=True)
M_co = TypeVar("M_co", covariant=True)
#: the protocol's action enum; covariant, so a channel of ``TPAction`` is one of ``IntEnum``
A = TypeVar("A", bound=enum.IntEnum, default=enum.IntEnum, covariant=True)

Device = torch.device | str | None


class PrepareFn(Protocol[H_contra, M_contra]):
    def __call__(
        self, msg: M_contra | None, header: H_contra, *, device: Device = None
    ) -> Prepared: ...


class EncodeFn(Protocol[H_contra, M_contra]):
    def __call__(
        self, msg: M_contra | None, header: H_contra, *, device: Device = None
    ) -> Frames: ...


class DecodeFn(Protocol[H_co, M_co]):
    def __call__(self, frames: Frames) -> tuple[H_co, M_co | None]: ...


class ValidateFn(Protocol[H_contra, M_contra]):
    def __call__(
        self, msg: M_contra | None, header: H_contra | None = None, *, fail_fast: bool = False
    ) -> list[Violation]: ...


class ReadFrame0Fn(Protocol):
    def __call__(self, frame0: torch.Tensor) -> Manifest: ...


class ReadFrame0BytesFn(Protocol):
    def __call__(self, raw: bytes) -> Manifest: ...


#: The header roles, in the order ids are shown (docs/spec-language.md, roles).
ROLE_NAMES = ("sequence", "chunk", "epoch")


@dataclass(frozen=True, slots=True)
class Roles:
    """Which header field plays which role (field names; None where the spec has none).

    ``sequence``: strictly increasing over all actions (ordering, dedup, heartbeats take
    one too). ``chunk``: increasing over payload actions. ``epoch``: never decreasing,
    bumped on a hard cut."""

    sequence: str
    chunk: str | None = None
    epoch: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        """The role fields in role order (sequence, chunk, epoch), those the spec has."""
        return tuple(f for f in (self.sequence, self.chunk, self.epoch) if f is not None)


class RoleIds(NamedTuple):
    """One header's role coordinates by role (``Bindings.role_ids``): None where the spec has
    no such role, or the header holds no integer there."""

    sequence: int | None
    chunk: int | None
    epoch: int | None


@dataclass(frozen=True, slots=True)
class Cached:
    """A message field cached by an epoch field of the same message (``cached_by``): sent
    exactly when the epoch increments (and on a stream's first envelope, and after a hard
    cut of the header's epoch role), absent otherwise; the receiver keeps the last value
    and hands it over as if sent (``runtime.epochs``)."""

    message: str
    field: str
    epoch: str
    fm: str | None = None


@dataclass(frozen=True, eq=False)
class Bindings(Generic[H, M, A]):
    """Everything the runtime needs of one generated protocol (its module's ``BINDINGS``)."""

    protocol: str
    fingerprint: int
    spec_sha256: str
    frame0_len: int
    header: type[H]
    messages: Mapping[str, type[M]]
    action_field: str
    #: a legal value of each header field (None where it may be absent): control headers
    #: built before anything was sent start from these
    header_defaults: Mapping[str, object]
    action_enum: type[A]
    payload_actions: frozenset[A]
    roles: Roles
    #: the control actions a channel sends on its own (noop: heartbeats; None when the spec
    #: declares none)
    noop: A | None
    shutdown: A
    error: A
    enums: Mapping[str, type[enum.IntEnum]]
    #: message class -> the classes of the same message (its plan variants), itself included
    variants: Mapping[type, tuple[type, ...]]
    prepare: PrepareFn[H, M]
    encode: EncodeFn[H, M]
    decode: DecodeFn[H, M]
    validate: ValidateFn[H, M]
    read_frame0: ReadFrame0Fn
    read_frame0_bytes: ReadFrame0BytesFn
    #: frame 0's first word of an ERROR frame's reason (``wire.put_reason``)
    w_reason: int
    #: message class -> its fields cached by an epoch (``cached_by``); empty for most specs
    cached: Mapping[type, tuple[Cached, ...]] = field(default_factory=dict)

    @property
    def terminal(self) -> frozenset[A]:
        """Actions after which no further frame comes."""
        return frozenset((self.shutdown, self.error))

    def action_of(self, header: H) -> A:
        action: A = getattr(header, self.action_field)
        return action

    def role_ids(self, header: object) -> RoleIds:
        """The header's sequence, chunk and epoch ids: the one place the runtime reads a
        role's field by its name (docs/architecture.md, roles)."""
        roles = self.roles
        seq = getattr(header, roles.sequence, None)
        chunk = getattr(header, roles.chunk, None) if roles.chunk is not None else None
        epoch = getattr(header, roles.epoch, None) if roles.epoch is not None else None
        # tuple.__new__: a NamedTuple's own __new__ is a Python call, and this runs on both
        # ends of every envelope
        return tuple.__new__(
            RoleIds,
            (
                seq if type(seq) is int else None,
                chunk if type(chunk) is int else None,
                epoch if type(epoch) is int else None,
            ),
        )

    def ids(self, header: object) -> Ids:
        """The header's role ids by the spec's field names (None where absent or ill-typed)."""
        out = []
        for name in self.roles.fields:
            value = getattr(header, name, None)
            out.append((name, value if type(value) is int else None))
        return tuple(out)

    def ids_text(self, header: object) -> str:
        """``seq=4 batch=2 generation=1``: the ids a log line names."""
        return ids_text(self.ids(header))

    def control_header(self, last: H | None, action: enum.IntEnum, *, checked: bool = True) -> H:
        """The header of a control frame (``action``) the sender sends on its own after
        ``last``: the next sequence id, the other fields as in ``last`` (their defaults
        before it), each field the header's rules refuse for this action reset (to None,
        then to its default). Raises ``ValueError`` when no valid header can be made.

        ``checked=False`` skips the validation (a heartbeat's hot path: ``prepare``
        validates the header anyway, and the caller falls back to the checked build)."""
        seq = self.roles.sequence
        values: dict[str, Any] = {
            name: getattr(last, name) if last is not None else default
            for name, default in self.header_defaults.items()
        }
        values[seq] = getattr(last, seq) + 1 if last is not None else 0
        values[self.action_field] = action
        if not checked:
            return self.header(**values)
        fixed = {seq, self.action_field}
        for _ in range(3):
            header = self.header(**values)
            problems = self.validate(None, header)
            bad = {v.field.removeprefix("header.") for v in problems} - fixed
            if not problems:
                return header
            if not bad:
                break
            for name in bad:
                default = self.header_defaults.get(name)
                values[name] = (
                    None if values[name] is not None and values[name] != default else default
                )
        raise ValueError(
            f"{self.protocol}: no valid {action.name} header after {self.ids_text(last)}: "
            + "; ".join(str(v) for v in problems)
        )


class GeneratedModule(Protocol[H, M, A]):
    """A generated protocol module, as ``mypy`` sees one: a module whose ``BINDINGS`` is a
    ``Bindings[H, M, A]`` matches (PEP 544, modules as protocol implementations), so
    ``BroadcastChannel(tp_control)`` is typed from the module as from its ``BINDINGS``."""

    @property
    def BINDINGS(self) -> Bindings[H, M, A]: ...


def bindings_of(protocol: Bindings[H, M, A] | GeneratedModule[H, M, A]) -> Bindings[H, M, A]:
    """A protocol's ``Bindings``: itself, or a generated module's ``BINDINGS``."""
    if isinstance(protocol, Bindings):
        return protocol
    found = getattr(protocol, "BINDINGS", None)
    if not isinstance(found, Bindings):
        name = getattr(protocol, "__name__", type(protocol).__name__)
        raise TypeError(
            f"{name} is not a generated tpwire protocol (no BINDINGS): pass a generated "
            "module or its BINDINGS (regenerate it with `make gen` / `tpwire gen`)"
        )
    return found
