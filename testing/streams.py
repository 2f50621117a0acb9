"""Streams of envelopes for the rules across envelopes (fields ``cached_by`` an epoch).

Test tooling, like ``strategies``: hypothesis strategies for **valid streams** (a sequence
of envelopes in which every cached field is sent exactly when its epoch increments, on the
first envelope and after a hard cut of the header's epoch role) and **labelled stream
mutants** (one step of a valid stream changed so that one rule across envelopes breaks,
carrying the violation codes it must produce and the end that must see it), plus
:func:`run_stream`, which plays a stream through a sender's and a receiver's
``EpochCache`` the way a channel does (a refused envelope changes nothing).

Everything is read from the bindings (``Bindings.cached``, the header roles): any
protocol's cached fields, never Scope's names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from tpwire.runtime.bindings import Bindings, Cached
from tpwire.runtime.epochs import EpochCache
from tpwire.runtime.errors import Violation

#: What happens at a step of a valid stream: a new value (its epochs increment), nothing
#: new (the receiver reuses what it kept), a hard cut (the header's epoch role increments:
#: every cached field is sent again).
EVENTS = ("update", "hold", "cut")

#: Envelopes drawn for one step of a stream before the example is given up
ATTEMPTS = 12

#: Every stream mutant kind, with the violation code it must produce, and the end that
#: detects it ("both": the sender before frame 0 and every receiver; "receiver": only a
#: receiver, the sender did nothing wrong).
STREAM_MUTANT_KINDS: dict[str, tuple[str, str]] = {
    "drop_on_bump": ("stale", "both"),  # the epoch increments, the value is left out
    "drop_after_cut": ("stale", "both"),  # a hard cut, the value is left out
    "resend_unbumped": ("not_bumped", "both"),  # a value sent without an increment
    "epoch_backwards": ("epoch_backwards", "both"),  # the epoch goes down
    "restart": ("stale", "receiver"),  # the receiver lost its cache; the value is not sent
}


@dataclass(frozen=True)
class Step:
    header: Any
    msg: Any
    event: str


@dataclass(frozen=True)
class StreamMutant:
    """A valid stream with step ``at`` changed (``kind``): the end(s) ``end`` must refuse
    that step with exactly ``codes``, after accepting every step before it."""

    steps: tuple[Step, ...]
    at: int
    kind: str
    codes: frozenset[str]
    end: str
    #: ``restart``: the receiver's cache is emptied just before step ``at``
    restart: bool = False


def cached_classes(bindings: Bindings[Any, Any]) -> list[str]:
    """The names of the message classes that carry fields cached by an epoch."""
    return sorted(cls.__name__ for cls in bindings.cached)


def _role_values(bindings: Bindings[Any, Any], i: int, cut: int) -> dict[str, Any]:
    roles = bindings.roles
    values: dict[str, Any] = {roles.sequence: i + 1}
    if roles.chunk is not None:
        values[roles.chunk] = i
    if roles.epoch is not None:
        values[roles.epoch] = cut
    return values


@st.composite
def valid_streams(
    draw: st.DrawFn,
    bindings: Bindings[Any, Any],
    envelopes: Any,
    min_size: int = 2,
    max_size: int = 8,
) -> tuple[Step, ...]:
    """A valid stream of payload envelopes of the classes with cached fields.

    ``envelopes(kinds)`` is the generated ``valid_envelopes`` of the protocol (a function
    of the class names to draw). Each step draws a valid envelope whose cached fields are
    present exactly where the step's event (``EVENTS``) sends them, then sets the epochs
    and the header's roles (sequence and chunk counting up, the epoch role bumped on a cut).
    """
    kinds = cached_classes(bindings)
    if not kinds:
        raise ValueError(f"protocol {bindings.protocol} declares no field cached_by an epoch")
    n = draw(st.integers(min_size, max_size))
    epochs: dict[str, int] = {}
    cut = 0
    steps: list[Step] = []
    for i in range(n):
        event = "update" if i == 0 else draw(st.sampled_from(EVENTS))
        cut += event == "cut" and i > 0
        found = None
        for _ in range(ATTEMPTS):
            # a valid envelope that carries the fields this step must send; those it must
            # not send are left out (unless that breaks one of its own rules: draw again)
            header, msg = draw(envelopes(kinds).filter(_not_none))
            fields = bindings.cached[type(msg)]
            names = sorted({c.epoch for c in fields})
            renew = {c.field for c in fields}  # the first envelope and a cut: every field
            if event == "update" and i > 0 and len(names) > 1:
                bumped = draw(st.sets(st.sampled_from(names), min_size=1))
                renew = {c.field for c in fields if c.epoch in bumped}
            elif event == "hold":
                renew = set()
            if any(getattr(msg, f) is None for f in renew):
                continue
            changes: dict[str, Any] = {c.field: None for c in fields if c.field not in renew}
            for key in names:
                if key not in epochs:
                    epochs[key] = draw(st.integers(0, 3))
                elif event == "update" and any(c.field in renew for c in fields if c.epoch == key):
                    epochs[key] += 1
                changes[key] = epochs[key]
            msg = dataclasses.replace(msg, **changes)
            header = dataclasses.replace(header, **_role_values(bindings, i, cut))
            if not bindings.validate(msg, header):
                found = (header, msg)
                break
        assume(found is not None)
        assert found is not None
        header, msg = found
        steps.append(Step(header, msg, event))
    return tuple(steps)


def _not_none(env: tuple[Any, Any]) -> bool:
    return env[1] is not None


def _fields_of(bindings: Bindings[Any, Any], msg: Any) -> tuple[Cached, ...]:
    return tuple(bindings.cached.get(type(msg), ()))


@st.composite
def stream_mutants(
    draw: st.DrawFn,
    bindings: Bindings[Any, Any],
    envelopes: Any,
    kinds: Sequence[str] | None = None,
    max_size: int = 8,
) -> StreamMutant:
    """A valid stream with one step changed so that one rule across envelopes breaks."""
    kind = draw(st.sampled_from(sorted(kinds if kinds is not None else STREAM_MUTANT_KINDS)))
    steps = list(draw(valid_streams(bindings, envelopes, 3, max_size)))
    code, end = STREAM_MUTANT_KINDS[kind]
    candidates: list[int]
    if kind == "drop_on_bump":
        candidates = [i for i, s in enumerate(steps) if s.event == "update" and i > 0]
    elif kind == "drop_after_cut":
        candidates = [i for i, s in enumerate(steps) if s.event == "cut"]
    elif kind in ("resend_unbumped", "restart"):
        candidates = [i for i, s in enumerate(steps) if s.event == "hold"]
    else:
        candidates = [i for i in range(1, len(steps))]
    assume(candidates)
    at = draw(st.sampled_from(candidates))
    step = steps[at]
    fields = _fields_of(bindings, step.msg)
    changes: dict[str, Any] = {}
    if kind in ("drop_on_bump", "drop_after_cut"):
        changes = {c.field: None for c in fields}
    elif kind == "resend_unbumped":
        # the value the receiver kept, sent again under the same epoch
        c = draw(st.sampled_from(fields))
        last = next(
            getattr(s.msg, c.field)
            for s in reversed(steps[:at])
            if getattr(s.msg, c.field) is not None
        )
        changes = {c.field: last}
    elif kind == "epoch_backwards":
        c = draw(st.sampled_from(fields))
        before = getattr(steps[at - 1].msg, c.epoch)
        assume(before > 0)
        changes = {c.epoch: before - 1}
    msg = dataclasses.replace(step.msg, **changes)
    steps[at] = Step(step.header, msg, f"{step.event}+{kind}")
    return StreamMutant(tuple(steps), at, kind, frozenset({code}), end, kind == "restart")


@dataclass(frozen=True)
class Played:
    """What each end made of each step of a stream: the violations across envelopes (empty
    where accepted) and, at the receiver, the message handed over and the fields taken
    from its cache."""

    sender: tuple[tuple[Violation, ...], ...]
    receiver: tuple[tuple[Violation, ...], ...]
    delivered: tuple[Any, ...]
    kept: tuple[frozenset[str], ...]


def run_stream(
    bindings: Bindings[Any, Any], steps: Sequence[Step], *, restart_at: int | None = None
) -> Played:
    """Play ``steps`` through a sender's and a receiver's ``EpochCache`` as a channel does:
    check each envelope, commit it where the check found nothing (a refused envelope
    changes neither end). The receiver's cache is emptied before step ``restart_at``."""
    tx: EpochCache[Any, Any] = EpochCache(bindings, keep_values=False)
    rx: EpochCache[Any, Any] = EpochCache(bindings, keep_values=True)
    sent: list[tuple[Violation, ...]] = []
    received: list[tuple[Violation, ...]] = []
    delivered: list[Any] = []
    kept: list[frozenset[str]] = []
    for i, s in enumerate(steps):
        if i == restart_at:
            rx.forget()
        found = tuple(tx.check(s.msg, s.header))
        sent.append(found)
        if not found:
            tx.commit(s.msg, s.header)
        found = tuple(rx.check(s.msg, s.header))
        received.append(found)
        if found:
            delivered.append(None)
            kept.append(frozenset())
        else:
            kept.append(rx.kept(s.msg))
            delivered.append(rx.commit(s.msg, s.header))
    return Played(tuple(sent), tuple(received), tuple(delivered), tuple(kept))


def intended(bindings: Bindings[Any, Any], steps: Sequence[Step]) -> list[dict[str, Any]]:
    """For each step, the value of every cached field the sender meant: the last one sent."""
    last: dict[str, Any] = {}
    out = []
    for s in steps:
        for c in _fields_of(bindings, s.msg):
            value = getattr(s.msg, c.field)
            if value is not None:
                last[c.field] = value
        out.append({c.field: last.get(c.field) for c in _fields_of(bindings, s.msg)})
    return out
