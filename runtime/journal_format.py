"""The envelope journal's file format and its reader: each rank appends one checksummed record per envelope it sends or
receives, and what it observed running it (docs/journal.md).

Under tpwire's v1 contract a worker's inputs are exactly its envelopes, so a journal of
envelopes is a complete record of what each rank was asked to do: ``tpwire journal diff``
aligns the ranks' journals by the binding coordinate (the spec's sequence, chunk and epoch
roles, never field names) and reports the first record where they differ; ``tpwire replay``
pushes a recorded stream back through the receive path.

Format (little-endian; every record is self-delimiting and checksummed):

====== ==== =============================================================================
offset size field
====== ==== =============================================================================
0      4    magic ``b"TPJR"``
4      2    format version (1)
6      1    kind: 1 OPEN, 2 ENVELOPE, 3 OBSERVE, 4 END
7      1    flags: bit 0 frame 1 bytes follow (full mode), bit 1 this rank sent it
8      8    protocol fingerprint (int64, as frame 0 word 1)
16     8    sequence id (the spec's sequence role; ``NONE`` = -2**63 where absent)
24     8    chunk id (chunk role) or ``NONE``
32     8    epoch (epoch role) or ``NONE``
40     4    body length N (uint32, at most ``MAX_BODY``)
44     4    reserved, 0
48     8    checksum: xxh3-64 of bytes 0..47 and the N body bytes
56     N    body
====== ==== =============================================================================

Body: ``u32 L`` + L bytes of UTF-8 JSON (the record's metadata), ``u32 W`` + W int64 words
(frame 0 exactly as on the wire; W = 0 except for ENVELOPE), ``u32 S`` + S ``u64`` segment
lengths + the segments' bytes (frame 1 as on the wire, full mode only; S = 0 otherwise).
No pickle anywhere: the reader parses JSON and integers and never evaluates anything.

The writer (``journal``) never rewrites: a file is opened ``O_APPEND`` and each record is
one ``writev``.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

MAGIC = b"TPJR"
FORMAT_VERSION = 1
#: magic, version, kind, flags, fingerprint, sequence, chunk, epoch, body length, reserved
HEAD = struct.Struct("<4sHBBqqqqII")
CHECKSUM = struct.Struct("<Q")
HEADER_NBYTES = HEAD.size + CHECKSUM.size  # 56
#: an id the header does not have (the spec has no such role, or the record no header)
NONE = -(2**63)
#: the largest record body a reader accepts (and a writer writes): 1 GiB
MAX_BODY = 1 << 30

OPEN, ENVELOPE, OBSERVE, END = 1, 2, 3, 4
KIND_NAMES = {OPEN: "OPEN", ENVELOPE: "ENVELOPE", OBSERVE: "OBSERVE", END: "END"}
FLAG_FULL = 1
FLAG_SENT = 2

MODES = ("digest", "full")
ENV_DIR = "TPWIRE_JOURNAL"
ENV_MODE = "TPWIRE_JOURNAL_MODE"
SUFFIX = ".tpj"

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def hex64(value: int) -> str:
    """An int64 digest or fingerprint as the 18-character hex a log line shows."""
    return f"{value & ((1 << 64) - 1):#018x}"


# --- encoding --------------------------------------------------------------------------


def _checksum(head: bytes, body: Sequence[bytes | memoryview]) -> int:
    h = xxhash.xxh3_64()
    h.update(head)
    for part in body:
        h.update(part)
    return h.intdigest()


def encode_record(
    kind: int,
    *,
    fingerprint: int,
    seq: int | None = None,
    chunk: int | None = None,
    epoch: int | None = None,
    meta: Mapping[str, Any] | None = None,
    words: bytes = b"",
    segments: Sequence[bytes | memoryview] | None = None,
    sent: bool = False,
) -> list[bytes | memoryview]:
    """One record as the parts ``writev`` writes (header, body pieces)."""
    meta_bytes = json.dumps(meta or {}, sort_keys=True, separators=(",", ":")).encode()
    segs = list(segments) if segments is not None else []
    body: list[bytes | memoryview] = [
        _U32.pack(len(meta_bytes)),
        meta_bytes,
        _U32.pack(len(words) // 8),
        words,
        _U32.pack(len(segs)),
        b"".join(_U64.pack(len(s)) for s in segs),
        *segs,
    ]
    n = sum(len(p) for p in body)
    if n > MAX_BODY:
        raise ValueError(f"a journal record of {n} bytes is over the {MAX_BODY}-byte bound")
    flags = (FLAG_FULL if segments is not None else 0) | (FLAG_SENT if sent else 0)
    head = HEAD.pack(
        MAGIC,
        FORMAT_VERSION,
        kind,
        flags,
        fingerprint,
        NONE if seq is None else seq,
        NONE if chunk is None else chunk,
        NONE if epoch is None else epoch,
        n,
        0,
    )
    return [head, CHECKSUM.pack(_checksum(head, body)), *body]


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record read back (checksum verified)."""

    path: str
    offset: int
    kind: int
    flags: int
    fingerprint: int
    seq: int | None
    chunk: int | None
    epoch: int | None
    meta: dict[str, Any]
    words: tuple[int, ...]
    segments: tuple[bytes, ...] | None
    nbytes: int

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, str(self.kind))

    @property
    def full(self) -> bool:
        return self.segments is not None

    @property
    def sent(self) -> bool:
        return bool(self.flags & FLAG_SENT)

    @property
    def frame0(self) -> bytes:
        return struct.pack(f"<{len(self.words)}q", *self.words)


@dataclass(frozen=True)
class Problem:
    """A stretch of a journal file the reader could not use, at ``offset``."""

    path: str
    offset: int
    message: str
    #: the file ends inside this record (a writer killed mid-write)
    torn: bool = False

    def __str__(self) -> str:
        return f"{self.path}: offset {self.offset}: {self.message}"


@dataclass
class Scan:
    """What a journal file holds: its good records and every problem, in file order."""

    path: str
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def opening(self) -> dict[str, Any] | None:
        """The OPEN record's metadata (who wrote the file, for which protocol)."""
        for r in self.records:
            if r.kind == OPEN:
                return r.meta
        return None

    @property
    def torn_tail(self) -> Problem | None:
        return self.problems[-1] if self.problems and self.problems[-1].torn else None


class BodyError(ValueError):
    pass


def _parse_body(body: bytes) -> tuple[dict[str, Any], tuple[int, ...], tuple[bytes, ...]]:
    at = 0

    def take(n: int, what: str) -> bytes:
        nonlocal at
        if n < 0 or at + n > len(body):
            raise BodyError(f"{what} runs past the body ({n} bytes at body offset {at})")
        out = body[at : at + n]
        at += n
        return out

    (n_meta,) = _U32.unpack(take(4, "the metadata length"))
    raw_meta = take(n_meta, "the metadata")
    try:
        meta = json.loads(raw_meta.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BodyError(f"the metadata is not JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise BodyError("the metadata is not a JSON object")
    (n_words,) = _U32.unpack(take(4, "the frame 0 length"))
    raw_words = take(n_words * 8, "frame 0")
    words = struct.unpack(f"<{n_words}q", raw_words)
    (n_seg,) = _U32.unpack(take(4, "the segment count"))
    lengths = struct.unpack(f"<{n_seg}Q", take(n_seg * 8, "the segment lengths"))
    segments = tuple(take(n, f"segment {i}") for i, n in enumerate(lengths))
    if at != len(body):
        raise BodyError(f"{len(body) - at} bytes after the last segment")
    return meta, words, segments


def scan_bytes(data: bytes, path: str = "<bytes>") -> Scan:
    """Every record of a journal file's bytes; problems (corruption, a torn tail) are
    reported with their offset and skipped, never raised."""
    out = Scan(path)
    fingerprint: int | None = None
    at = 0
    size = len(data)
    while at < size:
        if size - at < HEADER_NBYTES:
            if data[at : at + 4] == MAGIC[: min(4, size - at)]:
                out.problems.append(
                    Problem(
                        path,
                        at,
                        f"a torn last record: {size - at} bytes of a "
                        f"{HEADER_NBYTES}-byte record header (the writer stopped mid-write)",
                        torn=True,
                    )
                )
            else:
                out.problems.append(Problem(path, at, f"{size - at} trailing bytes, not a record"))
            break
        magic, version, kind, flags, fp, seq, chunk, epoch, n, reserved = HEAD.unpack_from(data, at)
        if magic != MAGIC:
            nxt = data.find(MAGIC, at + 1)
            skip_to = nxt if nxt >= 0 else size
            out.problems.append(
                Problem(
                    path,
                    at,
                    f"no record here (bad magic {magic!r}); skipped "
                    f"{skip_to - at} bytes" + (f" to the next record at {nxt}" if nxt >= 0 else ""),
                )
            )
            at = skip_to
            continue
        end = at + HEADER_NBYTES + n
        if version != FORMAT_VERSION:
            problem = f"format version {version}, this reader reads {FORMAT_VERSION}"
        elif n > MAX_BODY:
            problem = f"a body length of {n} bytes (the bound is {MAX_BODY})"
        elif end > size:
            nxt = data.find(MAGIC, at + HEADER_NBYTES)
            if nxt < 0:
                out.problems.append(
                    Problem(
                        path,
                        at,
                        f"a torn last record: {KIND_NAMES.get(kind, kind)} "
                        f"announces {n} body bytes, {size - at - HEADER_NBYTES} are there "
                        "(the writer stopped mid-write); the records before it are intact",
                        torn=True,
                    )
                )
                break
            out.problems.append(
                Problem(
                    path,
                    at,
                    f"wrong length: {n} body bytes would run past the end of "
                    f"the file; skipped to the next record at {nxt}",
                )
            )
            at = nxt
            continue
        else:
            problem = None
        if problem is None:
            head = data[at : at + HEAD.size]
            (stored,) = CHECKSUM.unpack_from(data, at + HEAD.size)
            body = data[at + HEADER_NBYTES : end]
            if _checksum(head, [body]) != stored:
                problem = "checksum mismatch (the record's bytes were changed)"
            elif kind not in KIND_NAMES:
                problem = f"unknown record kind {kind}"
            elif reserved != 0:
                problem = f"reserved header bytes hold {reserved:#x}, not 0"
        if problem is None:
            try:
                meta, words, segments = _parse_body(body)
            except (BodyError, struct.error) as exc:
                problem = f"malformed body: {exc}"
        if problem is None and fingerprint is not None and fp != fingerprint:
            problem = (
                f"a record of another protocol (fingerprint {hex64(fp)}, this file's is "
                f"{hex64(fingerprint)}); refused"
            )
        if problem is not None:
            # skip by the length when the next record starts there, else resynchronize
            if end <= size and (end == size or data[end : end + 4] == MAGIC):
                skip_to = end
            else:
                nxt = data.find(MAGIC, at + 1)
                skip_to = nxt if nxt >= 0 else size
            out.problems.append(
                Problem(
                    path,
                    at,
                    f"{KIND_NAMES.get(kind, 'record')}: {problem}; skipped {skip_to - at} bytes",
                )
            )
            at = skip_to
            continue
        if kind == OPEN and fingerprint is None:
            fingerprint = fp
        out.records.append(
            Record(
                path,
                at,
                kind,
                flags,
                fp,
                None if seq == NONE else seq,
                None if chunk == NONE else chunk,
                None if epoch == NONE else epoch,
                meta,
                words,
                segments if flags & FLAG_FULL else None,
                end - at,
            )
        )
        at = end
    return out


def scan(path: str | os.PathLike[str]) -> Scan:
    """``scan_bytes`` of a file; an unreadable file is one problem at offset 0."""
    p = str(path)
    try:
        data = Path(p).read_bytes()
    except OSError as exc:
        return Scan(p, [], [Problem(p, 0, f"cannot read: {exc.strerror or exc}")])
    return scan_bytes(data, p)


_NAME = re.compile(r"^(?P<stem>.+)\.(?P<index>\d{6})" + re.escape(SUFFIX) + "$")


def journal_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The journal files named by ``paths`` (files, or folders searched for ``*.tpj``),
    in name order (a stem's files in their writing order)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.glob(f"*{SUFFIX}")))
        else:
            out.append(p)
    return out
