"""Lockstep and replay primitives: the result gate (refs/21) and the call-count ledger.

``ResultGate``: rank 0 accepts a pipeline result only when its ``(cache_epoch, call_id,
chunk_index)`` is the next one expected; stale epochs and duplicates are dropped and logged,
anything else (a result from the future, one that skips ahead) is a crash. Pending
envelopes live in a bounded queue that a hard cut flushes.

``Ledger``: counts generator calls against the plan's expected count and raises before the
call that would go one too far, or at the end when one is missing (FM-02).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from .groups import all_gather_ints


class LockstepError(RuntimeError):
    """The ranks' plans or ids no longer agree; continuing would hang or corrupt."""


@dataclass(frozen=True)
class Ids:
    cache_epoch: int
    call_id: int
    chunk_index: int

    @classmethod
    def of(cls, header: Any) -> Ids:
        return cls(header.cache_epoch, header.call_id, header.chunk_index)

    def __str__(self) -> str:
        return (
            f"call_id={self.call_id} chunk_index={self.chunk_index} cache_epoch={self.cache_epoch}"
        )


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class ResultGate:
    """Which pipeline results rank 0 may use (refs/21 acceptance rules)."""

    def __init__(self, max_pending: int = 2, log: Callable[[str], None] = _stderr) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.max_pending = max_pending
        self.log = log
        self.epoch = 0
        self.pending: deque[Ids] = deque()
        self.last_accepted: Ids | None = None
        self.dropped: list[tuple[Ids, str]] = []

    def expect(self, envelope_header: Any) -> None:
        """An envelope was sent; its result is now expected (in order)."""
        ids = Ids.of(envelope_header)
        if ids.cache_epoch != self.epoch:
            raise LockstepError(f"envelope {ids} sent in epoch {self.epoch}: bump with hard_cut()")
        last = self.pending[-1] if self.pending else self.last_accepted
        if last is not None and ids.call_id <= last.call_id:
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
            raise LockstepError(f"hard cut must bump cache_epoch: {new_epoch} <= {self.epoch}")
        flushed = list(self.pending)
        self.pending.clear()
        self.epoch = new_epoch
        for ids in flushed:
            self.log(f"tpwire: hard cut to epoch {new_epoch} flushed pending {ids}")
        return flushed

    def accept(self, result_header: Any) -> bool:
        """True: use the result. False: dropped (logged). Raises on a regression."""
        ids = Ids.of(result_header)
        if ids.cache_epoch < self.epoch:
            return self._drop(ids, f"stale epoch {ids.cache_epoch} < {self.epoch}")
        if ids.cache_epoch > self.epoch:
            raise LockstepError(f"result {ids} is from a future epoch (current {self.epoch})")
        if ids == self.last_accepted:
            return self._drop(ids, "duplicate")
        if self.last_accepted is not None and ids.call_id <= self.last_accepted.call_id:
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

    def __init__(self) -> None:
        self.expected: int | None = None
        self.observed = 0
        self.ids = ""

    def begin(self, expected_calls: int, header: Any = None) -> None:
        if self.expected is not None:
            raise LockstepError(f"ledger of {self.ids} not ended before the next chunk")
        self.expected = expected_calls
        self.observed = 0
        self.ids = str(Ids.of(header)) if header is not None else ""

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
        if observed != expected:
            raise LockstepError(
                f"{self.ids}: observed {observed} generator calls, expected {expected}"
            )

    def check_ranks(self, group: dist.ProcessGroup | None = None) -> None:
        """Optional: all-gather the counts of this chunk and compare them across ranks.

        Call it before ``end()``: ``end`` raises on one rank only, and a peer waiting in
        this collective would be stranded.
        """
        values = [v for (v,) in all_gather_ints([self.observed], group)]
        if len(set(values)) > 1:
            shown = ", ".join(f"rank{i}={v}" for i, v in enumerate(values))
            raise LockstepError(f"{self.ids}: generator call counts differ: {shown}")
