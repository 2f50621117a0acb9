"""The journal's background writer: the queue between the collective path and the thread
that writes records, and the bounds on how long a hand-over waits (docs/journal.md).

A hand-over (``put``) queues an ``Item`` and returns: at once (``handover="queued"``), or
once the thread has written it (``"written"``), waiting at most ``max_wait_s`` either way.
Past ``max_pending_bytes`` queued it waits for room, then drops the record (the next
record written says how many were dropped before it). Any failure of the thread stops
journaling: one line on stderr, ``failed`` says why, and hand-overs return at once.
"""

from __future__ import annotations

import queue
import sys
import threading
import time

from .escape import printable
from .journal_files import JournalFault
from .journal_records import Item, RecordWriter

_STOP = object()


class WriterThread:
    """One journal's queue and the thread that empties it into a ``RecordWriter``."""

    def __init__(
        self,
        records: RecordWriter,
        *,
        rank: int,
        max_pending_bytes: int,
        max_wait_s: float,
        wait_written: bool,
    ) -> None:
        self.records = records
        self.rank = rank
        self.max_pending_bytes = max_pending_bytes
        self.max_wait_s = max_wait_s
        #: ``handover="written"``: a hand-over returns once its record is written
        self.wait_written = wait_written
        self._queue: queue.Queue[object] = queue.Queue()
        #: bytes queued and not yet done with (``Item.nbytes``)
        self._pending = 0
        #: records queued and records the thread is done with (written, or passed over
        #: after a failure), in queue order: a record is written once ``_done`` reaches
        #: its number
        self._queued = 0
        self._done = 0
        #: records a ``written`` hand-over stopped waiting for (``max_wait_s`` passed; each
        #: was written later, as a queued one is)
        self.late = 0
        #: records dropped for want of room since the last one queued
        self._dropped = 0
        self._room = threading.Condition()
        self.stopped = False
        #: why journaling stopped (None while it runs)
        self.failed: str | None = None
        #: seconds the thread spent framing and writing records
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name="tpwire-journal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def active(self) -> bool:
        """Records handed over are written (False once journaling failed or stopped)."""
        return self.failed is None and not self.stopped

    # -- the collective path: hand over, never wait long ----------------------------------

    def put(self, item: Item) -> None:
        """Hand one record to the thread (dropped when no room is made in time)."""
        if not self.active:
            return
        with self._room:
            if not self._make_room(item.nbytes):
                self._dropped += 1
                return
            self._pending += item.nbytes
            if self._dropped:
                item.meta["dropped_before"] = self._dropped
                self._dropped = 0
            if self.wait_written:
                # numbered in queue order (put under the lock): the thread takes records
                # in that order, so ``_done`` reaching this number means it is written
                self._queue.put(item)
                self._queued += 1
                self._await_written(self._queued)
                return
        self._queue.put(item)

    def _full(self, nbytes: int) -> bool:
        return self._pending + nbytes > self.max_pending_bytes and self._pending > 0

    def _make_room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit in the queue, waiting up to ``max_wait_s`` for the
        thread to make room (one record always fits an empty queue). Holds ``_room``."""
        if self._full(nbytes):
            self._room.wait_for(lambda: not self._full(nbytes), timeout=self.max_wait_s)
        return not self._full(nbytes)

    def _await_written(self, number: int) -> None:
        """Wait until record ``number`` is written (or journaling failed), at most
        ``max_wait_s``; past that it counts as ``late``. Holds ``_room``."""
        if not self._room.wait_for(
            lambda: self._done >= number or self.failed is not None or not self._thread.is_alive(),
            timeout=self.max_wait_s,
        ):
            self.late += 1

    def drain(self, timeout: float) -> bool:
        """Wait until every record handed over is written (False: not within ``timeout``)."""
        with self._room:
            return self._room.wait_for(
                lambda: not self._pending or not self._thread.is_alive(), timeout=timeout
            )

    def stop(self, timeout: float) -> bool:
        """Write what is queued, close the file and end the thread (waits at most
        ``timeout`` seconds); whether the thread ended."""
        if not self.stopped:
            self.stopped = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                assert isinstance(item, Item)
                self._write(item)
        finally:
            try:
                self.records.files.close()
            except JournalFault as exc:  # the last records may not have reached the disk
                if self.failed is None:
                    self._fail(str(exc))

    def _write(self, item: Item) -> None:
        started = time.perf_counter()
        try:
            if self.failed is None:  # after a failure: drained, not written
                self.records.write(item)
        except JournalFault as exc:
            self._fail(str(exc))
        except Exception as exc:  # a bug or a record past the format's bounds
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            self.busy_s += time.perf_counter() - started
            with self._room:
                self._pending -= item.nbytes
                self._done += 1
                self._room.notify_all()

    def _fail(self, why: str) -> None:
        """Journaling stops here: one line (what and where), the file closed; the stream
        goes on without it."""
        self.failed = printable(why)
        self.records.files.abort()
        sys.stderr.write(
            f"tpwire[rank {self.rank}]: journal off (the stream goes on): {self.failed}; "
            f"{self.records.files.written} record(s) written before\n"
        )
        sys.stderr.flush()
