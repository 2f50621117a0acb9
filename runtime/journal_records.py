"""The journal's records as this build writes them: what each record's metadata holds, and
when a record starts a new file (docs/journal.md; the byte layout and the reader:
``journal_format``).

The collective path only builds an ``Item`` (``envelope_meta``, ``observe_meta``,
``end_meta``: cheap dicts). ``RecordWriter.write`` runs on the writer thread: it reads the
role ids, reads frame 0 back for the metadata the journal shows without the spec
(``describe``), writes each file's OPEN record (``opening_meta``), rotates the file set at
a new epoch and past ``max_bytes``, and appends the framed record.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .bindings import Bindings
from .journal_files import JournalFiles
from .journal_format import ENVELOPE, NONE, OPEN, encode_record, hex64
from .wire import Manifest


def _now() -> float:
    return round(time.time(), 6)


class Item:
    """One record handed to the writer thread: its kind, the header its ids come from, its
    metadata and (envelopes) frame 0 and, in full mode, frame 1's segments."""

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
        #: what the record holds while queued (``max_pending_bytes`` counts it)
        self.nbytes = len(frame0) + sum(len(s) for s in segments or ()) + 256


# --- metadata built on the collective path ----------------------------------------------


def envelope_meta(*, sent: bool, src: int | None, state: str, error: str | None) -> dict[str, Any]:
    """An ENVELOPE record's metadata as handed over (``describe`` adds the rest)."""
    meta: dict[str, Any] = {
        "dir": "send" if sent else "recv",
        "src": src,
        "state": state,
        "t": _now(),
    }
    if error is not None:
        meta["error"] = error
    return meta


def observe_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """An OBSERVE record's metadata: what the channel observed, and when."""
    return {**meta, "t": _now()}


def end_meta(how: str, reason: str | None) -> dict[str, Any]:
    """An END record's metadata: how the stream ended, why, and when."""
    return {"how": how, "reason": reason, "t": _now()}


# --- the writer thread's side -----------------------------------------------------------


class RecordWriter:
    """Frames the items of one channel's journal into the records of its file set."""

    def __init__(
        self,
        files: JournalFiles,
        bindings: Bindings[Any, Any],
        *,
        rank: int,
        world: int,
        source: int | None,
        mode: str,
        max_bytes: int,
    ) -> None:
        self.files = files
        self.bindings = bindings
        self.rank = rank
        self.world = world
        self.source = source
        self.mode = mode
        self.max_bytes = max_bytes
        #: whether the open file holds its OPEN record yet (written with the first record,
        #: which names the file's epoch)
        self._opened = False
        #: the last epoch seen, and the epoch the open file holds
        self._epoch: int | None = None
        self._file_epoch: int | None = None

    def ids(self, header: Any) -> tuple[int | None, int | None, int | None]:
        """The record's sequence, chunk and epoch ids: the header's role ids, None where
        absent or outside what the record's signed 64-bit fields hold besides ``NONE``."""
        if header is None:
            return None, None, None
        seq, chunk, epoch = self.bindings.role_ids(header)

        def fits(v: int | None) -> int | None:
            return v if v is not None and NONE < v < 2**63 else None

        return fits(seq), fits(chunk), fits(epoch)

    def write(self, item: Item) -> None:
        """Frame and append one record: first the open file's OPEN record, or a rotation
        (a new epoch, or the file past ``max_bytes``)."""
        seq, chunk, epoch = self.ids(item.header)
        meta = item.meta
        if item.kind == ENVELOPE:
            meta["action"] = self.describe(item.frame0, meta)
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
        elif self.files.size >= self.max_bytes:
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
        self.files.append(parts)

    def describe(self, frame0: bytes, meta: dict[str, Any]) -> str | None:
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

    def opening_meta(self, why: str) -> dict[str, Any]:
        """A file's OPEN record: what a reader needs of the build, the rank and the file."""
        b = self.bindings
        return {
            "protocol": b.protocol,
            "fingerprint": hex64(b.fingerprint),
            "spec_sha256": b.spec_sha256,
            "frame0_len": b.frame0_len,
            "roles": {"sequence": b.roles.sequence, "chunk": b.roles.chunk, "epoch": b.roles.epoch},
            "rank": self.rank,
            "world": self.world,
            "source": self.source,
            "mode": self.mode,
            "stem": self.files.stem,
            "opened": why,
            "pid": os.getpid(),
            "t": _now(),
        }

    def _rotate(self, epoch: int | None, why: str) -> None:
        self._opened = False
        self.files.open_next()
        self._write_opening(epoch, why)

    def _write_opening(self, epoch: int | None, why: str) -> None:
        self._file_epoch = epoch
        fingerprint = self.bindings.fingerprint
        meta = self.opening_meta(why)
        self.files.append(encode_record(OPEN, fingerprint=fingerprint, epoch=epoch, meta=meta))
        self._opened = True
