"""Lockstep and replay primitives: the result gate (refs/21) and the call-count ledger.

``ResultGate``: rank 0 accepts a pipeline result only when its ids (the spec's epoch,
sequence and chunk roles) are the next ones expected; stale epochs and duplicates are
dropped and logged, anything else (a result from the future, one that skips ahead) is a
crash. Pending envelopes live in a bounded queue that a hard cut flushes.

``Ledger``: counts generator calls against the plan's expected count and raises before the
call that would go one too far, or at the end when one is missing (FM-02).

Both read the spec's roles from a protocol's ``BINDINGS`` and name ids by the spec's own
field names.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import torch.distributed as dist

from .bindings import Bindings, bindings_of
from .errors import show_id
from .groups import all_gather_ints

if TYPE_CHECKING:
    from .channel import Channel


class LockstepError(RuntimeError):
    """The ranks' plans or ids no longer agree; continuing would hang or corrupt."""


@dataclass(frozen=True)
class Ids:
    """One envelope's role ids (0 for the epoch of a spec without an epoch role); compared
    by value, shown by the spec's names."""

    epoch: int
    seq: int
    chunk: int | None
    names: tuple[str, str | None, str | None] = field(
        default=("sequence", "chunk", "epoch"), compare=False
    )

    @classmethod
    def of(cls, bindings: Bindings[Any, Any], header: Any) -> Ids:
        roles = bindings.roles
        ids = bindings.role_ids(header)
        names = (roles.sequence, roles.chunk, roles.epoch)
        seq = cast(int, ids.sequence)  # None where a header has none: shown as None
        return cls(ids.epoch if ids.epoch is not None else 0, seq, ids.chunk, names)

    def __str__(self) -> str:
        seq_name, chunk_name, epoch_name = self.names
        parts = [f"{seq_name}={show_id(self.seq)}"]
        if chunk_name is not None:
            parts.append(f"{chunk_name}={show_id(self.chunk)}")
        if epoch_name is not None:
            parts.append(f"{epoch_name}={show_id(self.epoch)}")
        return " ".join(parts)


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class ResultGate:
    """Which pipeline results rank 0 may use (refs/21 acceptance rules)."""

    def __init__(
        self,
        protocol: Bindings[Any, Any] | ModuleType,
        max_pending: int = 2,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.bindings = bindings_of(protocol)
        self.epoch_name = self.bindings.roles.epoch or "epoch"
        self.max_pending = max_pending
        self.log = log
        self.epoch = 0
        self.pending: deque[Ids] = deque()
        self.last_accepted: Ids | None = None
        self.dropped: list[tuple[Ids, str]] = []

    def expect(self, envelope_header: Any) -> None:
        """An envelope was sent; its result is now expected (in order)."""
        ids = Ids.of(self.bindings, envelope_header)
        if ids.epoch != self.epoch:
            raise LockstepError(f"envelope {ids} sent in epoch {self.epoch}: bump with hard_cut()")
        last = self.pending[-1] if self.pending else self.last_accepted
        if last is not None and ids.seq <= last.seq:
            raise LockstepError(f"envelope {ids} does not follow {last}")
        if len(self.pending) >= self.max_pending:
            raise LockstepError(
                f"{len(self.pending)} results already pending (max {self.max_pending}): "
                "wait for one before sending more"
            )
        self.pending.append(ids)

    def hard_cut(self, new_epoch: int) -> list[Ids]:
        """A hard cut: bump the epoch and flush what is pending (their results become stale)."""
        if new_epoch <= self.epoch:
            raise LockstepError(
                f"hard cut must bump {self.epoch_name}: {new_epoch} <= {self.epoch}"
            )
        flushed = list(self.pending)
        self.pending.clear()
        self.epoch = new_epoch
        for ids in flushed:
            self.log(f"tpwire: hard cut to epoch {new_epoch} flushed pending {ids}")
        return flushed

    def accept(self, result_header: Any) -> bool:
        """True: use the result. False: dropped (logged). Raises on a regression."""
        ids = Ids.of(self.bindings, result_header)
        if ids.epoch < self.epoch:
            return self._drop(ids, f"stale {self.epoch_name} {ids.epoch} < {self.epoch}")
        if ids.epoch > self.epoch:
            raise LockstepError(f"result {ids} is from a future epoch (current {self.epoch})")
        if ids == self.last_accepted:
            return self._drop(ids, "duplicate")
        if self.last_accepted is not None and ids.seq <= self.last_accepted.seq:
            raise LockstepError(f"result {ids} regresses behind {self.last_accepted}")
        if not self.pending:
            raise LockstepError(f"result {ids} arrived but no envelope is pending")
        want = self.pending[0]
        if ids != want:
            raise LockstepError(f"result {ids} out of order: expected {want}")
        self.pending.popleft()
        self.last_accepted = ids
        return True

    def _drop(self, ids: Ids, why: str) -> bool:
        self.dropped.append((ids, why))
        self.log(f"tpwire: dropped result {ids}: {why}")
        return False


class Ledger:
    """Generator calls observed on this rank against the plan's expected count."""

    def __init__(
        self,
        protocol: Bindings[Any, Any] | ModuleType | None = None,
        *,
        channel: Channel[Any, Any, Any] | None = None,
    ) -> None:
        if protocol is None and channel is not None:
            protocol = channel.protocol
        #: names the chunk's ids in errors (by the spec's field names) when given
        self.bindings = bindings_of(protocol) if protocol is not None else None
        #: ``check_ranks`` runs under this channel's poison and watchdog policy
        self.channel = channel
        self.expected: int | None = None
        self.observed = 0
        self.ids = ""
        self.header: Any = None

    def begin(self, expected_calls: int, header: Any = None) -> None:
        if self.expected is not None:
            raise LockstepError(f"ledger of {self.ids} not ended before the next chunk")
        self.expected = expected_calls
        self.observed = 0
        self.header = header
        self.ids = (
            self.bindings.ids_text(header)
            if header is not None and self.bindings is not None
            else "the chunk"
        )

    def call(self) -> None:
        """Before each generator call: refuse the call that would break the plan."""
        if self.expected is None:
            raise LockstepError("generator call outside a planned chunk")
        if self.observed + 1 > self.expected:
            raise LockstepError(
                f"{self.ids}: generator call {self.observed + 1} exceeds the plan's "
                f"expected {self.expected} calls"
            )
        self.observed += 1

    def end(self) -> None:
        expected, observed = self.expected, self.observed
        self.expected = None
        journal = self.channel.journal if self.channel is not None else None
        if journal is not None and self.header is not None:  # the channel's journal
            journal.observe(
                self.header,
                {"what": "ledger", "ledger": {"expected": expected, "observed": observed}},
            )
        if observed != expected:
            raise LockstepError(
                f"{self.ids}: observed {observed} generator calls, expected {expected}"
            )

    def check_ranks(self, group: dist.ProcessGroup | None = None) -> None:
        """Optional: all-gather the counts of this chunk and compare them across ranks.

        Call it before ``end()``: ``end`` raises on one rank only, and a peer waiting in
        this collective would be stranded. With a ``channel``, the collective runs under its
        policy (a dead peer poisons with the chunk's ids; ``watchdog_s`` bounds it) on the
        channel's group unless ``group`` is given.
        """
        if self.channel is None:
            self._compare_counts(group)
            return
        ch = self.channel
        ch.policy.collective(
            f"the ledger check of {self.ids}",
            lambda: self._compare_counts(
                group if group is not None else ch.transport.compare_group()
            ),
            agreed=(LockstepError,),
        )

    def _compare_counts(self, group: dist.ProcessGroup | None) -> None:
        values = [v for (v,) in all_gather_ints([self.observed], group)]
        if len(set(values)) > 1:
            shown = ", ".join(f"rank{i}={v}" for i, v in enumerate(values))
            raise LockstepError(f"{self.ids}: generator call counts differ: {shown}")
