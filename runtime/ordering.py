"""The ordering rules over a stream, from the spec's header roles (docs/spec-language.md,
roles): what a channel checks before frame 0 leaves and after it arrives."""

from __future__ import annotations

from typing import Any

from .bindings import Bindings


class OrderingError(RuntimeError):
    """A header broke the ordering rules (the spec's sequence, chunk and epoch roles)."""


class Ordering:
    """The spec's roles over a stream: the sequence id strictly increasing over all
    actions, the chunk id increasing over payload actions, the epoch never decreasing (it
    is bumped on hard cuts). Problems name the spec's own fields."""

    def __init__(self, bindings: Bindings[Any, Any]) -> None:
        self.bindings = bindings
        self.payload_actions = bindings.payload_actions
        self._checked: tuple[Any, Any] = (None, None)
        roles = bindings.roles
        self.seq_field, self.chunk_field, self.epoch_field = (
            roles.sequence,
            roles.chunk,
            roles.epoch,
        )
        self.seq: int | None = None
        self.chunk: int | None = None
        self.epoch: int | None = None

    def problem(self, header: Any) -> str | None:
        """What is wrong with ``header`` after the headers committed so far (None: nothing)."""
        ids = self.bindings.role_ids(header)
        self._checked = (header, ids)  # commit() of the same header reads them again
        seq, chunk, epoch = ids
        if self.seq is not None and seq is not None and seq <= self.seq:
            kind = "duplicate" if seq == self.seq else "regressing"
            return f"{kind} {self.seq_field} {seq} after {self.seq}"
        if self.epoch is not None and epoch is not None and epoch < self.epoch:
            return f"{self.epoch_field} went back from {self.epoch} to {epoch}"
        if (
            self.chunk is not None
            and chunk is not None
            and chunk <= self.chunk
            and self.bindings.action_of(header) in self.payload_actions
        ):
            return f"{self.chunk_field} {chunk} after {self.chunk}"
        return None

    def commit(self, header: Any) -> None:
        """``header`` went out (or was accepted): later ones are ordered after it."""
        checked = self._checked
        ids = checked[1] if checked[0] is header else self.bindings.role_ids(header)
        self._checked = (None, None)
        seq, chunk, epoch = ids
        self.seq = seq if seq is not None else self.seq
        self.epoch = epoch if epoch is not None else self.epoch
        if chunk is not None and self.bindings.action_of(header) in self.payload_actions:
            self.chunk = chunk

    def next_sequence(self) -> int:
        """The smallest sequence id the next header may use."""
        return 0 if self.seq is None else self.seq + 1
