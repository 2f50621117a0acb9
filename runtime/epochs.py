"""Fields cached by an epoch (``cached_by``): the rules across envelopes, at one end.

A spec may declare a message field cached by an int field of the same message, its epoch
(``conditioning_embeds: {cached_by: conditioning_epoch}``, seed 004's optimize mode). The
epoch never decreases; the field is sent exactly when the epoch increments, on the first
envelope a receiver sees, and after a hard cut (the header's epoch role increments), and is
absent otherwise. A receiver keeps the last value and hands it over as if it had been sent,
so worker code reads one field either way.

One envelope cannot tell whether its epoch incremented, so these rules are checked here,
against what this end saw before: by the sender before frame 0 (nothing reaches a peer)
and by each receiver against its cache after the whole envelope arrived (lockstep intact).
A violation is data like every other rule's, with a code and the FM id of the field:

- ``stale``: the field is absent where it must be sent (the epoch incremented, the cache
  is empty after a restart, or a hard cut reset it). Reusing the kept value would run on
  stale data (FM-17), so the envelope is refused;
- ``not_bumped``: the field is sent but its epoch did not increment (a new value must
  announce itself, or peers that kept the old one and peers that restarted diverge);
- ``epoch_backwards``: the epoch is lower than the last one this end saw.

Everything is read from the bindings (``Bindings.cached``, the header's epoch role): no
protocol's field names are known here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic

from .bindings import Bindings, Cached, H, M
from .errors import Ids, Violation, show_id

#: the violation codes of the rules across envelopes
CACHE_CODES = ("stale", "not_bumped", "epoch_backwards")


class _Held:
    """What a sender keeps instead of a value: that one was sent (not the tensor itself)."""

    def __repr__(self) -> str:
        return "<held>"


_HELD = _Held()


@dataclasses.dataclass(slots=True)
class _Entry:
    epoch: int  # the last epoch seen for the field (kept across hard cuts)
    value: object  # the kept value, _HELD on a sender, None once a hard cut reset it


class EpochCache(Generic[H, M]):
    """One end's view of a stream's cached fields: the last epoch of each, the value it
    kept (a receiver; a sender keeps only that one was sent) and the last value of the
    header's epoch role (a hard cut resets every kept value).

    ``check`` says what is wrong with the next envelope (nothing changes); ``commit``
    records an envelope that went out or was accepted and returns it with each absent
    cached field filled in from the cache (receivers)."""

    def __init__(self, bindings: Bindings[H, M], *, keep_values: bool) -> None:
        self.bindings = bindings
        self.keep_values = keep_values
        self.role = bindings.roles.epoch
        self.cut: int | None = None  # the header's epoch role, last seen
        self.entries: dict[tuple[str, str], _Entry] = {}

    def forget(self) -> None:
        """Empty the cache: what a restarted process starts with."""
        self.cut = None
        self.entries.clear()

    def _role_epoch(self, header: Any) -> int | None:
        return self.bindings.role_ids(header).epoch

    def _cut_now(self, header: Any) -> int | None:
        """The header's epoch role value when it is a hard cut after what this end saw."""
        h = self._role_epoch(header)
        return h if h is not None and self.cut is not None and h > self.cut else None

    def check(self, msg: M | None, header: H) -> list[Violation]:
        """The cross-envelope violations of ``(msg, header)`` after what this end saw."""
        fields = self.bindings.cached.get(type(msg)) if msg is not None else None
        if not fields:
            return []
        out: list[Violation] = []
        cut = self._cut_now(header)
        ids = self.bindings.ids(header)
        for c in fields:
            epoch = getattr(msg, c.epoch, None)
            if type(epoch) is not int:
                continue  # absent (another plan) or ill-typed: single-envelope rules say so
            found = self._check_field(c, epoch, getattr(msg, c.field, None) is not None, cut, ids)
            if found is not None:
                out.append(found)
        return out

    def _check_field(
        self, c: Cached, epoch: int, sent: bool, cut: int | None, ids: Ids
    ) -> Violation | None:
        """What is wrong with one cached field of an envelope whose ``c.epoch`` is ``epoch``."""
        entry = self.entries.get((c.message, c.field))
        rule = self._rule_text(c)
        if entry is not None and epoch < entry.epoch:
            return Violation(
                "epoch_backwards",
                c.epoch,
                f">= {entry.epoch} (never decreases)",
                show_id(epoch),
                rule,
                c.fm,
                f"{c.epoch} went back from {entry.epoch} to {show_id(epoch)}",
                ids,
            )
        why = self._why_sent(c, epoch, entry, cut)
        if why and not sent:
            kept = (
                "nothing kept"
                if entry is None or entry.value is None or cut is not None
                else f"kept value of {c.epoch} {entry.epoch} is stale"
            )
            return Violation(
                "stale",
                c.field,
                f"{c.field} of {c.epoch} {epoch}",
                f"absent ({kept})",
                rule,
                c.fm,
                f"stale {c.field}: {why}, but the envelope does not carry it",
                ids,
            )
        if sent and not why:
            return Violation(
                "not_bumped",
                c.field,
                f"{c.epoch} > {entry.epoch if entry is not None else '?'} "
                f"(a new {c.field} increments it)",
                f"{c.field} sent with {c.epoch} {epoch} (unchanged)",
                rule,
                c.fm,
                f"a new {c.field} without a new {c.epoch}: receivers that kept the "
                "old value could not tell",
                ids,
            )
        return None

    def _why_sent(self, c: Cached, epoch: int, entry: _Entry | None, cut: int | None) -> str:
        """Why the envelope must carry the field ("": it must not)."""
        if entry is None:
            return "the cache is empty (first envelope, or this end restarted)"
        if cut is not None:
            return f"a hard cut ({self.role} {self.cut} -> {cut}) resets the cache"
        if entry.value is None:
            return f"a hard cut ({self.role} {self.cut}) reset the cache"
        if epoch > entry.epoch:
            return f"{c.epoch} incremented ({entry.epoch} -> {epoch})"
        return ""

    def _rule_text(self, c: Cached) -> str:
        cut = f" and after a hard cut of {self.role}" if self.role is not None else ""
        return (
            f"cached_by {c.epoch}: {c.field} is sent exactly when {c.epoch} increments "
            f"(and on the first envelope{cut}), kept by the receiver otherwise"
        )

    def commit(self, msg: M | None, header: H) -> M | None:
        """Record an envelope this end sent or accepted (``check`` found nothing); return
        it with every absent cached field holding the kept value (receivers)."""
        h = self._role_epoch(header)
        if self._cut_now(header) is not None:
            for entry in self.entries.values():
                entry.value = None  # a hard cut: nothing kept may be reused
        if h is not None:
            self.cut = h
        fields = self.bindings.cached.get(type(msg)) if msg is not None else None
        if not fields:
            return msg
        fill: dict[str, object] = {}
        for c in fields:
            epoch = getattr(msg, c.epoch, None)
            if type(epoch) is not int:
                continue
            value = getattr(msg, c.field, None)
            key = (c.message, c.field)
            if value is not None:
                self.entries[key] = _Entry(epoch, value if self.keep_values else _HELD)
                continue
            kept = self.entries.get(key)
            if kept is None:
                continue  # check() refuses this envelope: nothing to keep or fill
            kept.epoch = epoch
            if self.keep_values:
                fill[c.field] = kept.value
        if not fill:
            return msg
        return dataclasses.replace(msg, **fill)  # type: ignore[type-var]

    def kept(self, msg: M | None) -> frozenset[str]:
        """The cached fields ``msg`` (as received, before ``commit``) does not carry."""
        fields = self.bindings.cached.get(type(msg)) if msg is not None else None
        if not fields:
            return frozenset()
        return frozenset(
            c.field
            for c in fields
            if type(getattr(msg, c.epoch, None)) is int and getattr(msg, c.field, None) is None
        )
