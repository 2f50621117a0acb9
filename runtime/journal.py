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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import xxhash

from . import tripwire, wire
from .bindings import Bindings
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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"journal mode must be one of {MODES}, not {self.mode!r}")
        if self.max_bytes < 1 or self.keep < 1:
            raise ValueError("journal max_bytes and keep must be at least 1")
        if self.tag and not re.fullmatch(r"[A-Za-z0-9_-]+", self.tag):
            raise ValueError(f"journal tag {self.tag!r}: letters, digits, '_' and '-' only")


JournalArg = str | os.PathLike[str] | JournalConfig | None


def resolve(arg: JournalArg) -> JournalConfig | None:
    """A channel's ``journal=`` argument, else ``TPWIRE_JOURNAL`` (and ``TPWIRE_JOURNAL_MODE``)."""
    if isinstance(arg, JournalConfig):
        return arg
    mode = os.environ.get(ENV_MODE) or "digest"
    if arg is not None:
        return JournalConfig(os.fspath(arg), mode)
    env = os.environ.get(ENV_DIR)
    return JournalConfig(env, mode) if env else None


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


class JournalWriter:
    """One rank's journal of one channel: records go to a background thread that frames,
    checksums and appends them. The collective path pays for handing them over."""

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
        self.dir.mkdir(parents=True, exist_ok=True)
        tag = f"{config.tag}." if config.tag else ""
        self.stem = f"{bindings.protocol}.{tag}{name}"
        existing = self._files()
        self._index = existing[-1][0] + 1 if existing else 0
        self._fd: int | None = None
        self._size = 0
        self._epoch: int | None = None
        self._file_epoch: int | None = None
        self._queue: queue.Queue[object] = queue.Queue()
        self._pending = 0
        self._room = threading.Condition()
        self._dropped = 0
        self.ended = False
        self._stopped = False
        self.failed: str | None = None
        self.written = 0
        #: seconds the writer thread spent framing and writing records
        self.busy_s = 0.0
        self.path: Path | None = None
        self._thread = threading.Thread(target=self._run, name="tpwire-journal", daemon=True)
        self._thread.start()
        # a process that ends without closing its channel still writes what is queued
        # (``os._exit`` skips this: the channel's poison and watchdog paths close first)
        atexit.register(self.close, 2.0)

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
        """The stream ended: ``how`` (shutdown, error, poisoned, watchdog, closed) and why."""
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

    # -- the writer thread ----------------------------------------------------------------

    def _files(self) -> list[tuple[int, Path]]:
        """This rank's files of this channel: (index, path) in writing order."""
        out = []
        for p in self.dir.glob(f"{self.stem}.*{SUFFIX}"):
            m = _NAME.match(p.name)
            if m is not None and m.group("stem") == self.stem:
                out.append((int(m.group("index")), p))
        return sorted(out)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, _Item)
            started = time.perf_counter()
            try:
                self._write_item(item)
            except OSError as exc:
                self.failed = f"journal write failed: {exc}"
                import sys

                sys.stderr.write(f"tpwire[rank {self.rank}]: {self.failed}; journaling stops\n")
                break
            finally:
                self.busy_s += time.perf_counter() - started
                with self._room:
                    self._pending -= item.nbytes
                    self._room.notify_all()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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
        if self._fd is not None and self._file_epoch is None:
            self._file_epoch = epoch  # the file's first envelope names its epoch
        if self._fd is None:
            self._rotate(epoch if epoch is not None else self._epoch, "start")
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

    def _rotate(self, epoch: int | None, why: str) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self.path = self.dir / f"{self.stem}.{self._index:06d}{SUFFIX}"
        self._index += 1
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
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
        files = self._files()
        for _, old in files[: max(0, len(files) - self.config.keep)]:
            try:
                old.unlink()
            except OSError:
                pass

    def _append(self, parts: list[bytes | memoryview]) -> None:
        assert self._fd is not None
        n = self._write(self._fd, parts)
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
