"""The journal's file set: one rank's files of one channel in one folder (docs/journal.md).

It owns the names (``<stem>.<index>.tpj``, the index only grows), creating each file
exclusively, appending records to the open one, rotating to the next, retention (at most
``keep`` files) and noticing an open file that was removed. It knows nothing of records:
what goes in them and when to rotate is ``journal_records``; the thread that calls it is
``journal_thread``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .escape import printable
from .journal_format import _NAME, SUFFIX

#: names a writer tries past one that is taken (created by someone else since it listed them)
NAME_TRIES = 64

#: how a record's parts reach a descriptor: bytes written (``write_all``, or a test's stand-in)
WriteParts = Callable[[int, list[bytes | memoryview]], int]


class JournalUnavailable(Exception):
    """This rank cannot journal: its folder or its first file cannot be created (one line,
    the path and the system's reason). A channel reports it in its open handshake, so every
    rank runs without a journal together (docs/journal.md, "When the disk fails")."""


class JournalFault(Exception):
    """The writer thread cannot go on: the one line it says before journaling stops."""


def reason(exc: OSError) -> str:
    """An ``OSError`` as one line: ``[Errno 28] No space left on device``."""
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else str(exc)


def write_all(fd: int, parts: list[bytes | memoryview]) -> int:
    """Append one record (one ``writev``; a short write continues where it stopped)."""
    total = sum(len(p) for p in parts)
    done = os.writev(fd, parts)
    if done < total:
        rest = b"".join(bytes(p) for p in parts)[done:]
        while rest:
            k = os.write(fd, rest)
            rest = rest[k:]
    return total


class JournalFiles:
    """The files of one stem in one folder, and the one open for appending.

    ``create`` makes the folder and the first file (``JournalUnavailable`` when it cannot);
    every later failure (a rotation's open, a write, a close, the file removed while open)
    is a ``JournalFault`` for the writer thread to report."""

    def __init__(self, folder: Path, stem: str, keep: int, write: WriteParts) -> None:
        self.dir = folder
        self.stem = stem
        self.keep = keep
        self._write = write
        self._fd: int | None = None
        #: the open file (the last one created)
        self.path: Path | None = None
        #: bytes appended to the open file
        self.size = 0
        #: records appended, over all files
        self.written = 0
        #: whether the open file's link count says it is still in its folder
        self._links = False
        self._index = 0

    def create(self) -> None:
        """The folder and the first file, past every index already there (a restarted
        process never reopens an older file)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalUnavailable(
                printable(f"cannot create the journal folder {self.dir}: {reason(exc)}")
            ) from None
        existing = self.listing()
        self._index = existing[-1][0] + 1 if existing else 0
        try:
            self.open_next()
        except JournalFault as exc:
            raise JournalUnavailable(str(exc)) from None

    def listing(self) -> list[tuple[int, Path]]:
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

    def open_next(self) -> None:
        """Close the open file and create the next one. The old descriptor is forgotten
        before it is closed, so no path closes its number twice (another thread may be
        given it at once); the new name is created exclusively (``O_EXCL``: never an
        existing file, a FIFO or a link), the index only grows (``{index:06d}`` takes a
        seventh digit past 999,999; it never wraps). Then the oldest files past ``keep``
        are removed."""
        self.close()
        for _ in range(NAME_TRIES):
            path = self.dir / f"{self.stem}.{self._index:06d}{SUFFIX}"
            self._index += 1
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            except FileExistsError:
                continue  # someone else's name now: the next index
            except OSError as exc:
                raise JournalFault(f"cannot create {path}: {reason(exc)}") from None
            self._fd, self.path, self.size = fd, path, 0
            # a file system that reports no links for a live file cannot tell a removal
            self._links = os.fstat(fd).st_nlink > 0
            break
        else:
            raise JournalFault(f"{NAME_TRIES} file names past {self.path} are taken in {self.dir}")
        files = self.listing()
        for _, old in files[: max(0, len(files) - self.keep)]:
            try:
                old.unlink()
            except OSError:
                pass

    def append(self, parts: list[bytes | memoryview]) -> None:
        """One record at the end of the open file."""
        fd = self._fd
        assert fd is not None
        try:
            # a file removed while open (its folder removed, or by hand) takes every later
            # write without an error and keeps none of it: notice, rather than write nowhere
            if self._links and os.fstat(fd).st_nlink == 0:
                raise JournalFault(f"{self.path} was removed while open (its records went with it)")
            n = self._write(fd, parts)
        except OSError as exc:
            raise JournalFault(f"cannot write to {self.path}: {reason(exc)}") from None
        self.size += n
        self.written += 1

    def close(self) -> None:
        """Close the open file (``JournalFault``: the last records may not have reached
        the disk)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                raise JournalFault(f"cannot close {self.path}: {reason(exc)}") from None

    def abort(self) -> None:
        """Close the open file after a failure (the failure is what gets reported)."""
        try:
            self.close()
        except JournalFault:
            pass

    def discard(self) -> None:
        """Close the open file, and remove it when no record was written: a writer that
        stops before its first record leaves no empty file behind."""
        self.abort()
        if self.path is not None and not self.written:
            try:
                self.path.unlink()
            except OSError:
                pass
