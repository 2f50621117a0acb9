"""The envelope journal's writer: one background thread per journaled channel frames,
checksums and appends the records (the file format and its reader: ``journal_format``;
docs/journal.md).

Writing never rewrites: a file is opened ``O_APPEND`` and each record is one ``writev``.
Records are built and written by a background thread; the collective path only hands over
frame 0's bytes (and, in full mode, a copy of frame 1). A file rotates when it passes
``max_bytes`` and when the epoch role changes (a hard cut empties the caches: a natural
replay start); at most ``keep`` files per rank and channel are kept.

This module is what channels use: the configuration (``JournalConfig``, ``resolve``), the
digests and copies they hand over (``field_digests``, ``tensor_bytes``) and
``JournalWriter``, which puts together the file set (``journal_files``), the records
(``journal_records``) and the background thread (``journal_thread``).
"""

from __future__ import annotations

import atexit
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import tripwire
from .bindings import Bindings
from .escape import printable
from .journal_files import JournalFiles, JournalUnavailable, write_all
from .journal_format import (
    _NAME,
    CHECKSUM,
    END,
    ENV_DIR,
    ENV_MODE,
    ENVELOPE,
    FLAG_FULL,
    FLAG_SENT,
    FORMAT_VERSION,
    HEAD,
    HEADER_NBYTES,
    KIND_NAMES,
    MAGIC,
    MAX_BODY,
    MODES,
    NONE,
    OBSERVE,
    OPEN,
    SUFFIX,
    BodyError,
    Problem,
    Record,
    Scan,
    encode_record,
    hex64,
    journal_files,
    scan,
    scan_bytes,
)
from .journal_records import Item, RecordWriter, end_meta, envelope_meta, observe_meta
from .journal_thread import WriterThread
from .recorder import tensor_bytes  # re-exported: the journal's copies are an event's

# the writer's names, and the format and reader names importable from here too
# (``jr.scan``, ``jr.Record``...)
__all__ = [
    "CHECKSUM",
    "END",
    "ENVELOPE",
    "ENV_DIR",
    "ENV_MODE",
    "FLAG_FULL",
    "FLAG_SENT",
    "FORMAT_VERSION",
    "HEAD",
    "HEADER_NBYTES",
    "KIND_NAMES",
    "MAGIC",
    "MAX_BODY",
    "MODES",
    "NONE",
    "OBSERVE",
    "OPEN",
    "SUFFIX",
    "_NAME",
    "BodyError",
    "JournalArg",
    "JournalConfig",
    "JournalUnavailable",
    "JournalWriter",
    "Problem",
    "Record",
    "Scan",
    "encode_record",
    "field_digests",
    "hex64",
    "journal_files",
    "resolve",
    "scan",
    "scan_bytes",
    "tensor_bytes",
]

# --- writing ---------------------------------------------------------------------------

#: ``JournalConfig.handover``: return once a record is queued, or once it is written
HANDOVERS = ("queued", "written")
#: the launcher's choice of ``handover`` for a journal set by ``TPWIRE_JOURNAL``
ENV_HANDOVER = "TPWIRE_JOURNAL_HANDOVER"


@dataclass(frozen=True)
class JournalConfig:
    """How a channel journals: the folder, the mode (``digest``: tensors by their digest;
    ``full``: their bytes, for reproduction), rotation and retention."""

    dir: str
    mode: str = "digest"
    #: a file rotates once it holds this many bytes
    max_bytes: int = 256 << 20
    #: at most this many files per rank and channel are kept (the oldest are removed)
    keep: int = 16
    #: records waiting for the writer thread, in bytes; past it ``put`` waits up to
    #: ``max_wait_s`` and then drops the record (counted in the next one written)
    max_pending_bytes: int = 256 << 20
    max_wait_s: float = 1.0
    #: a tag in the file names, for a rank with several journaled channels of one protocol
    #: (each writer needs files of its own)
    tag: str = ""
    #: when the channel call that makes a record returns: ``queued`` (the record is handed
    #: to the writer thread; a SIGKILL can lose what is still queued) or ``written`` (the
    #: writer thread has written it, ``write(2)`` returned: a SIGKILL right after ``recv``
    #: returns keeps its record; waits at most ``max_wait_s``). Neither calls ``fsync``: a
    #: power loss can still lose what the kernel did not write out (docs/journal.md)
    handover: str = "queued"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"journal mode must be one of {MODES}, not {self.mode!r}")
        if self.handover not in HANDOVERS:
            raise ValueError(f"journal handover must be one of {HANDOVERS}, not {self.handover!r}")
        if self.max_bytes < 1 or self.keep < 1:
            raise ValueError("journal max_bytes and keep must be at least 1")
        if self.tag and not re.fullmatch(r"[A-Za-z0-9_-]+", self.tag):
            raise ValueError(f"journal tag {self.tag!r}: letters, digits, '_' and '-' only")


JournalArg = str | os.PathLike[str] | JournalConfig | None


def resolve(arg: JournalArg) -> JournalConfig | None:
    """A channel's ``journal=`` argument, else ``TPWIRE_JOURNAL`` (and
    ``TPWIRE_JOURNAL_MODE``, ``TPWIRE_JOURNAL_HANDOVER``)."""
    if isinstance(arg, JournalConfig):
        return arg
    mode = os.environ.get(ENV_MODE) or "digest"
    handover = os.environ.get(ENV_HANDOVER) or "queued"
    if arg is not None:
        return JournalConfig(os.fspath(arg), mode, handover=handover)
    env = os.environ.get(ENV_DIR)
    return JournalConfig(env, mode, handover=handover) if env else None


def field_digests(msg: Any) -> dict[str, str]:
    """Each field of a message: its digest (``tripwire.digest_fields``) as the journal
    writes it."""
    return {k: hex64(d) for k, d in tripwire.digest_fields(msg).items()}


class JournalWriter:
    """One rank's journal of one channel: records go to a background thread that frames,
    checksums and appends them. The collective path pays for handing them over.

    The folder and the first file are created by the constructor (``JournalUnavailable``
    when they cannot be); any failure after that (a rotation's open, a write, the file
    removed while open) is one line on stderr, then journaling stops and ``failed`` says
    why: hand-overs return at once from then on, and the stream goes on.

    Its parts: the file set (``journal_files.JournalFiles``), the records and when a file
    rotates (``journal_records.RecordWriter``), the queue and its thread
    (``journal_thread.WriterThread``)."""

    def __init__(
        self,
        config: JournalConfig,
        bindings: Bindings[Any, Any],
        *,
        rank: int,
        world: int,
        name: str,
        source: int | None,
    ) -> None:
        self.config = config
        self.bindings = bindings
        self.rank = rank
        self.world = world
        self.full = config.mode == "full"
        #: the rank envelopes received here come from (broadcast: src; p2p: the peer)
        self.source = source
        self.dir = Path(config.dir)
        tag = f"{config.tag}." if config.tag else ""
        self.stem = f"{bindings.protocol}.{tag}{name}"
        self.ended = False
        self._files = JournalFiles(self.dir, self.stem, config.keep, self._write_parts)
        self._files.create()
        records = RecordWriter(
            self._files,
            bindings,
            rank=rank,
            world=world,
            source=source,
            mode=config.mode,
            max_bytes=config.max_bytes,
        )
        self._thread = WriterThread(
            records,
            rank=rank,
            max_pending_bytes=config.max_pending_bytes,
            max_wait_s=config.max_wait_s,
            wait_written=config.handover == "written",
        )
        try:
            self._thread.start()
        except Exception as exc:  # no thread left (RuntimeError), no memory: no journal,
            self._files.discard()  # and no empty file or descriptor left behind
            raise JournalUnavailable(
                printable(f"cannot start the journal writer thread: {type(exc).__name__}: {exc}")
            ) from None
        # a process that ends without closing its channel still writes what is queued
        # (``os._exit`` skips this: the channel's poison and watchdog paths close first)
        atexit.register(self.close, 2.0)

    #: how a record's parts are written (tests replace it to fail or tear a write)
    _write = staticmethod(write_all)

    def _write_parts(self, fd: int, parts: list[bytes | memoryview]) -> int:
        return self._write(fd, parts)  # looked up per write: a replacement takes effect

    @property
    def active(self) -> bool:
        """Records handed over are written (False once journaling stopped or was closed)."""
        return self._thread.active

    @property
    def failed(self) -> str | None:
        """Why journaling stopped (None while it runs)."""
        return self._thread.failed

    @property
    def path(self) -> Path | None:
        """The file records go to now."""
        return self._files.path

    @property
    def written(self) -> int:
        """Records written, over all files."""
        return self._files.written

    @property
    def late(self) -> int:
        """Records a ``written`` hand-over stopped waiting for (``max_wait_s`` passed)."""
        return self._thread.late

    @property
    def busy_s(self) -> float:
        """Seconds the writer thread spent framing and writing records."""
        return self._thread.busy_s

    # -- the collective path: hand over, never wait long ----------------------------------

    def envelope(
        self,
        header: Any,
        frame0: bytes,
        *,
        sent: bool,
        state: str,
        error: str | None = None,
        segments: list[bytes] | None = None,
    ) -> None:
        """An envelope this rank sent (``state`` "sent") or received ("validated", "refused",
        "received"), frame 0 exactly as on the wire; ``segments``: frame 1 (full mode)."""
        src = self.rank if sent else self.source
        meta = envelope_meta(sent=sent, src=src, state=state, error=error)
        self._thread.put(
            Item(ENVELOPE, header, meta, frame0, segments if self.full else None, sent)
        )

    def observe(self, header: Any, meta: dict[str, Any]) -> None:
        """What this rank observed running the envelope of ``header`` (digests, counts)."""
        self._thread.put(Item(OBSERVE, header, observe_meta(meta)))

    def end(self, how: str, reason: str | None, header: Any = None) -> None:
        """The stream ended: ``how`` (shutdown, error, poisoned, watchdog, terminated,
        closed) and why. Observations may follow until ``close``."""
        if self.ended:
            return
        self.ended = True
        self._thread.put(Item(END, header, end_meta(how, reason)))

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every record handed over is written (False: not within ``timeout``)."""
        return self._thread.drain(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and close the file (waits at most ``timeout`` seconds)."""
        if self._thread.stop(timeout):  # nothing left for the exit to write: a process
            atexit.unregister(self.close)  # that opens channel after channel keeps none

    def abandon(self) -> None:
        """Stop before the first record (the ranks agreed not to journal): the thread ends,
        the file is closed, and removed when nothing was written to it."""
        self.close()
        atexit.unregister(self.close)
        self._files.discard()
