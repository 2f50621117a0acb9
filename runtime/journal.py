"""The envelope journal's writer: one background thread per journaled channel frames,
checksums and appends the records (the file format and its reader: ``journal_format``;
docs/journal.md).

Writing never rewrites: a file is opened ``O_APPEND`` and each record is one ``writev``.
Records are built and written by a background thread; the collective path only hands over
frame 0's bytes (and, in full mode, a copy of frame 1). A file rotates when it passes
``max_bytes`` and when the epoch role changes (a hard cut empties the caches: a natural
replay start); at most ``keep`` files per rank and channel are kept.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import xxhash

from . import tripwire, wire
from .bindings import Bindings
from .escape import printable
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
from .wire import Manifest

# the format and reader names stay importable from here (``jr.scan``, ``jr.Record``...)
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
    "Problem",
    "Record",
    "Scan",
    "encode_record",
    "hex64",
    "journal_files",
    "scan",
    "scan_bytes",
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
    """Each field of a message: the digest of a tensor's dtype, shape and bytes, or of a
    scalar's ``repr`` (so ``journal diff`` can say which field of an input differs)."""
    out: dict[str, str] = {}
    if not dataclasses.is_dataclass(msg):
        return out
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, torch.Tensor):
            d = tripwire.digest_tensors([value])
        else:
            d = wire.signed64(xxhash.xxh3_64_intdigest(repr(value).encode()))
        out[f.name] = hex64(d)
    return out


def tensor_bytes(t: torch.Tensor, start: int = 0, nbytes: int | None = None) -> bytes:
    """A copy of a contiguous uint8 tensor's bytes (``start``, ``nbytes``)."""
    n = t.numel() - start if nbytes is None else nbytes
    if not n:
        return b""
    if t.is_cpu:
        return ctypes.string_at(t.data_ptr() + start, n)
    host = t[start : start + n].cpu()
    return ctypes.string_at(host.data_ptr(), n)


class _Item:
    __slots__ = ("frame0", "header", "kind", "meta", "nbytes", "segments", "sent")

    def __init__(
        self,
        kind: int,
        header: Any,
        meta: dict[str, Any],
        frame0: bytes = b"",
        segments: list[bytes] | None = None,
        sent: bool = False,
    ) -> None:
        self.kind = kind
        self.header = header
        self.meta = meta
        self.frame0 = frame0
        self.segments = segments
        self.sent = sent
        self.nbytes = len(frame0) + sum(len(s) for s in segments or ()) + 256


_STOP = object()

#: names a writer tries past one that is taken (created by someone else since it listed them)
_NAME_TRIES = 64


class JournalUnavailable(Exception):
    """This rank cannot journal: its folder or its first file cannot be created (one line,
    the path and the system's reason). A channel reports it in its open handshake, so every
    rank runs without a journal together (docs/journal.md, "When the disk fails")."""


class _Fault(Exception):
    """The writer thread cannot go on: the one line it says before journaling stops."""


def _reason(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else str(exc)


class JournalWriter:
    """One rank's journal of one channel: records go to a background thread that frames,
    checksums and appends them. The collective path pays for handing them over.

    The folder and the first file are created by the constructor (``JournalUnavailable``
    when they cannot be); any failure after that (a rotation's open, a write, the file
    removed while open) is one line on stderr, then journaling stops and ``failed`` says
    why: hand-overs return at once from then on, and the stream goes on."""

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
        self._fd: int | None = None
        #: whether the open file holds its OPEN record yet (written with the first record,
        #: which names the file's epoch)
        self._opened = False
        self._size = 0
        #: whether the open file's link count says it is still in its folder
        self._links = False
        self._epoch: int | None = None
        self._file_epoch: int | None = None
        self.path: Path | None = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalUnavailable(
                printable(f"cannot create the journal folder {self.dir}: {_reason(exc)}")
            ) from None
        existing = self._files()
        # after the highest index: a restarted process never reopens an older file
        self._index = existing[-1][0] + 1 if existing else 0
        try:
            self._open_next()
        except _Fault as exc:
            raise JournalUnavailable(str(exc)) from None
        self._queue: queue.Queue[object] = queue.Queue()
        self._pending = 0
        #: ``handover="written"``: a call returns once its record is written
        self._wait_written = config.handover == "written"
        #: records queued and records the thread is done with (written, or passed over
        #: after a failure), in queue order: a record is written once ``_done`` reaches
        #: its number
        self._queued = 0
        self._done = 0
        #: records a ``written`` hand-over stopped waiting for (``max_wait_s`` passed; each
        #: was written later, as a queued one is)
        self.late = 0
        self._room = threading.Condition()
        self._dropped = 0
        self.ended = False
        self._stopped = False
        #: why journaling stopped (None while it runs)
        self.failed: str | None = None
        self.written = 0
        #: seconds the writer thread spent framing and writing records
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name="tpwire-journal", daemon=True)
        try:
            self._thread.start()
        except Exception as exc:  # no thread left (RuntimeError), no memory: no journal,
            self._discard()  # and no empty file or descriptor left behind
            raise JournalUnavailable(
                printable(f"cannot start the journal writer thread: {type(exc).__name__}: {exc}")
            ) from None
        # a process that ends without closing its channel still writes what is queued
        # (``os._exit`` skips this: the channel's poison and watchdog paths close first)
        atexit.register(self.close, 2.0)

    @property
    def active(self) -> bool:
        """Records handed over are written (False once journaling stopped or was closed)."""
        return self.failed is None and not self._stopped

    # -- the collective path: hand over, never wait long ----------------------------------

    def _put(self, item: _Item) -> None:
        if self.failed is not None or self._stopped:
            return
        with self._room:
            if self._pending + item.nbytes > self.config.max_pending_bytes and self._pending:
                self._room.wait_for(
                    lambda: (
                        self._pending + item.nbytes <= self.config.max_pending_bytes
                        or not self._pending
                    ),
                    timeout=self.config.max_wait_s,
                )
                if self._pending + item.nbytes > self.config.max_pending_bytes and self._pending:
                    self._dropped += 1
                    return
            self._pending += item.nbytes
            if self._dropped:
                item.meta["dropped_before"] = self._dropped
                self._dropped = 0
            if self._wait_written:
                # numbered in queue order (put under the lock): the thread takes records
                # in that order, so ``_done`` reaching this number means it is written
                self._queue.put(item)
                self._queued += 1
                number = self._queued
                if not self._room.wait_for(
                    lambda: (
                        self._done >= number
                        or self.failed is not None
                        or not self._thread.is_alive()
                    ),
                    timeout=self.config.max_wait_s,
                ):
                    self.late += 1
                return
        self._queue.put(item)

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
        meta: dict[str, Any] = {
            "dir": "send" if sent else "recv",
            "src": self.rank if sent else self.source,
            "state": state,
            "t": round(time.time(), 6),
        }
        if error is not None:
            meta["error"] = error
        self._put(_Item(ENVELOPE, header, meta, frame0, segments if self.full else None, sent))

    def observe(self, header: Any, meta: dict[str, Any]) -> None:
        """What this rank observed running the envelope of ``header`` (digests, counts)."""
        meta = {**meta, "t": round(time.time(), 6)}
        self._put(_Item(OBSERVE, header, meta))

    def end(self, how: str, reason: str | None, header: Any = None) -> None:
        """The stream ended: ``how`` (shutdown, error, poisoned, watchdog, terminated,
        closed) and why. Observations may follow until ``close``."""
        if self.ended:
            return
        self.ended = True
        self._put(_Item(END, header, {"how": how, "reason": reason, "t": round(time.time(), 6)}))

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every record handed over is written (False: not within ``timeout``)."""
        with self._room:
            return self._room.wait_for(
                lambda: not self._pending or not self._thread.is_alive(), timeout=timeout
            )

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and close the file (waits at most ``timeout`` seconds)."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        if not self._thread.is_alive():  # nothing left for the exit to write: a process
            atexit.unregister(self.close)  # that opens channel after channel keeps none

    def abandon(self) -> None:
        """Stop before the first record (the ranks agreed not to journal): the thread ends,
        the file is closed, and removed when nothing was written to it."""
        self.close()
        atexit.unregister(self.close)
        self._discard()

    def _discard(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:  # the thread ended without reaching its close (a timeout)
            try:
                os.close(fd)
            except OSError:
                pass
        if self.path is not None and not self.written:
            try:
                self.path.unlink()
            except OSError:
                pass

    # -- the writer thread ----------------------------------------------------------------

    def _files(self) -> list[tuple[int, Path]]:
        """This rank's files of this channel: (index, path) in writing order."""
        out = []
        try:
            for p in self.dir.glob(f"{self.stem}.*{SUFFIX}"):
                m = _NAME.match(p.name)
                if m is not None and m.group("stem") == self.stem:
                    out.append((int(m.group("index")), p))
        except OSError:  # the folder is gone: nothing to keep or remove
            return []
        return sorted(out)

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                assert isinstance(item, _Item)
                started = time.perf_counter()
                try:
                    if self.failed is None:  # after a failure: drained, not written
                        self._write_item(item)
                except _Fault as exc:
                    self._fail(str(exc))
                except Exception as exc:  # a bug or a record past the format's bounds
                    self._fail(f"{type(exc).__name__}: {exc}")
                finally:
                    self.busy_s += time.perf_counter() - started
                    with self._room:
                        self._pending -= item.nbytes
                        self._done += 1
                        self._room.notify_all()
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    os.close(fd)
                except OSError as exc:  # the last records may not have reached the disk
                    if self.failed is None:
                        self._fail(f"cannot close {self.path}: {_reason(exc)}")

    def _fail(self, why: str) -> None:
        """Journaling stops here: one line (what and where), the file closed; the stream
        goes on without it."""
        self.failed = printable(why)
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        sys.stderr.write(
            f"tpwire[rank {self.rank}]: journal off (the stream goes on): {self.failed}; "
            f"{self.written} record(s) written before\n"
        )
        sys.stderr.flush()

    def _ids(self, header: Any) -> tuple[int | None, int | None, int | None]:
        if header is None:
            return None, None, None
        roles = self.bindings.roles

        def get(name: str | None) -> int | None:
            v = getattr(header, name, None) if name is not None else None
            return v if type(v) is int and NONE < v < 2**63 else None

        return get(roles.sequence), get(roles.chunk), get(roles.epoch)

    def _write_item(self, item: _Item) -> None:
        seq, chunk, epoch = self._ids(item.header)
        meta = item.meta
        if item.kind == ENVELOPE:
            meta["action"] = self._describe(item.frame0, meta)
        if epoch is not None:
            self._epoch = epoch
        if self._opened and self._file_epoch is None:
            self._file_epoch = epoch  # the file's first envelope names its epoch
        if not self._opened:  # the file the constructor created
            self._write_opening(epoch if epoch is not None else self._epoch, "start")
        elif (
            item.kind == ENVELOPE
            and epoch is not None
            and (self._file_epoch is None or epoch > self._file_epoch)
        ):  # a new epoch (a late record of an older one stays in the current file)
            self._rotate(epoch, "epoch")
        elif self._size >= self.config.max_bytes:
            self._rotate(epoch if epoch is not None else self._epoch, "size")
        parts = encode_record(
            item.kind,
            fingerprint=self.bindings.fingerprint,
            seq=seq,
            chunk=chunk,
            epoch=epoch,
            meta=meta,
            words=item.frame0,
            segments=item.segments,
            sent=item.sent,
        )
        self._append(parts)

    def _describe(self, frame0: bytes, meta: dict[str, Any]) -> str | None:
        """Frame 0 read back with this build (off the collective path): the action, the
        tensor manifest and the frame 1 digest, so the journal reads without the spec."""
        try:
            manifest: Manifest = self.bindings.read_frame0_bytes(frame0)
        except Exception as exc:  # a refused frame 0 is journaled as it came
            meta["frame0_error"] = f"{type(exc).__name__}: {exc}"
            return None
        meta["manifest"] = [
            [s.field, s.dtype.name, list(s.shape), s.nbytes, s.segment, s.offset]
            for s in manifest.slots
        ]
        meta["segments"] = list(manifest.segment_nbytes)
        meta["frame1_digest"] = hex64(manifest.digest)
        if manifest.reason is not None:
            meta["reason"] = str(manifest.reason)
        return str(self.bindings.action_of(manifest.header).name)

    def _open_next(self) -> None:
        """Close the open file and create the next one. The old descriptor is forgotten
        before it is closed, so no path closes its number twice (another thread may be
        given it at once); the new name is created exclusively (``O_EXCL``: never an
        existing file, a FIFO or a link), the index only grows (``{index:06d}`` takes a
        seventh digit past 999,999; it never wraps). Then the oldest files past ``keep``
        are removed."""
        fd, self._fd = self._fd, None
        self._opened = False
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                raise _Fault(f"cannot close {self.path}: {_reason(exc)}") from None
        for _ in range(_NAME_TRIES):
            path = self.dir / f"{self.stem}.{self._index:06d}{SUFFIX}"
            self._index += 1
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            except FileExistsError:
                continue  # someone else's name now: the next index
            except OSError as exc:
                raise _Fault(f"cannot create {path}: {_reason(exc)}") from None
            self.path = path
            self._size = 0
            # a file system that reports no links for a live file cannot tell a removal
            self._links = os.fstat(self._fd).st_nlink > 0
            break
        else:
            raise _Fault(f"{_NAME_TRIES} file names past {self.path} are taken in {self.dir}")
        files = self._files()
        for _, old in files[: max(0, len(files) - self.config.keep)]:
            try:
                old.unlink()
            except OSError:
                pass

    def _rotate(self, epoch: int | None, why: str) -> None:
        self._open_next()
        self._write_opening(epoch, why)

    def _write_opening(self, epoch: int | None, why: str) -> None:
        self._file_epoch = epoch
        b = self.bindings
        opening = {
            "protocol": b.protocol,
            "fingerprint": hex64(b.fingerprint),
            "spec_sha256": b.spec_sha256,
            "frame0_len": b.frame0_len,
            "roles": {"sequence": b.roles.sequence, "chunk": b.roles.chunk, "epoch": b.roles.epoch},
            "rank": self.rank,
            "world": self.world,
            "source": self.source,
            "mode": self.config.mode,
            "stem": self.stem,
            "opened": why,
            "pid": os.getpid(),
            "t": round(time.time(), 6),
        }
        self._append(encode_record(OPEN, fingerprint=b.fingerprint, epoch=epoch, meta=opening))
        self._opened = True

    def _append(self, parts: list[bytes | memoryview]) -> None:
        fd = self._fd
        assert fd is not None
        try:
            # a file removed while open (its folder removed, or by hand) takes every later
            # write without an error and keeps none of it: notice, rather than write nowhere
            if self._links and os.fstat(fd).st_nlink == 0:
                raise _Fault(f"{self.path} was removed while open (its records went with it)")
            n = self._write(fd, parts)
        except OSError as exc:
            raise _Fault(f"cannot write to {self.path}: {_reason(exc)}") from None
        self._size += n
        self.written += 1

    @staticmethod
    def _write(fd: int, parts: list[bytes | memoryview]) -> int:
        """Append one record (one ``writev``; a short write continues where it stopped)."""
        total = sum(len(p) for p in parts)
        done = os.writev(fd, parts)
        if done < total:
            rest = b"".join(bytes(p) for p in parts)[done:]
            while rest:
                k = os.write(fd, rest)
                rest = rest[k:]
        return total
