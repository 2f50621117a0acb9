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

The reader opens regular files only (never blocking on a FIFO), reads them in bounded
chunks, checks each record's metadata against its kind's schema (``SCHEMAS``; ``Record.info``
is it typed) and reports whatever it cannot use as a ``Problem`` at its offset, keeping the
first ``MAX_PROBLEMS`` of a file and counting the rest.

The writer (``journal``) never rewrites: a file is opened ``O_APPEND`` and each record is
one ``writev``.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from .escape import printable

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

#: a reader keeps the first this many problems of a file and counts the rest
MAX_PROBLEMS = 100
#: the deepest nesting of a record's metadata a reader accepts (the writer's is 3 deep)
MAX_META_DEPTH = 16
#: a file is read this many bytes at a time; a longer record body is checksummed chunk by
#: chunk and read whole only when its checksum is right
CHUNK = 1 << 20

#: where a record can start: the magic, format version 1, a known kind, known flags, a body
#: length of at most about ``MAX_BODY`` and the reserved bytes 0. Resynchronizing looks for
#: this in one pass, so magic bytes that cannot start a record are skipped as garbage.
_PLAUSIBLE = re.compile(
    re.escape(MAGIC) + rb"\x01\x00[\x01-\x04][\x00-\x03].{35}[\x00-\x40]\x00\x00\x00\x00",
    re.DOTALL,
)


def _header_prefix(head: bytes) -> bool:
    """Whether ``head`` (shorter than a header) can begin a record ``_PLAUSIBLE`` takes."""
    head = head[: HEAD.size]
    padded = head + bytes(HEAD.size - len(head))
    if len(head) <= 6:
        padded = padded[:6] + b"\x01" + padded[7:]  # a kind still to come
    if len(head) <= 4:
        padded = padded[:4] + b"\x01" + padded[5:]  # a version still to come
    return _PLAUSIBLE.match(padded) is not None


# -- typed metadata: each record kind's schema ------------------------------------------

_Check = Callable[[Any], bool]


def _int(lo: int = NONE, hi: int = 2**63 - 1) -> _Check:
    return lambda v: type(v) is int and lo <= v <= hi


def _opt(check: _Check) -> _Check:
    return lambda v: v is None or check(v)


def _list_of(check: _Check, n: int | None = None) -> _Check:
    return lambda v: type(v) is list and (n is None or len(v) == n) and all(map(check, v))


def _map_of(check: _Check) -> _Check:
    return lambda v: type(v) is dict and all(map(check, v.values()))


def _one_of(*values: str) -> _Check:
    return lambda v: type(v) is str and v in values


def _number(v: Any) -> bool:
    return (type(v) is int and NONE <= v < 2**63) or (type(v) is float and math.isfinite(v))


def _str(v: Any) -> bool:
    return type(v) is str


def _ident(v: Any) -> bool:
    return type(v) is str and v.isidentifier()


_HEX64 = re.compile(r"0x[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _hex64(v: Any) -> bool:
    return type(v) is str and _HEX64.fullmatch(v) is not None


def _sha256(v: Any) -> bool:
    return type(v) is str and _SHA256.fullmatch(v) is not None


_INT = _int()
_NONNEG = _int(0)


def _roles(v: Any) -> bool:
    return (
        type(v) is dict
        and set(v) <= {"sequence", "chunk", "epoch"}
        and all(x is None or _ident(x) for x in v.values())
    )


def _ledger(v: Any) -> bool:
    return type(v) is dict and {"expected", "observed"} <= set(v) and all(map(_INT, v.values()))


def _slot(v: Any) -> bool:
    """One manifest entry: field, dtype, shape, bytes, segment, offset."""
    if type(v) is not list or len(v) != 6 or type(v[2]) is not list:
        return False
    counts = (*v[2], *v[3:])
    return _ident(v[0]) and _ident(v[1]) and all(type(x) is int and 0 <= x < 2**63 for x in counts)


#: key: (check, what it must be, required)
_Schema = dict[str, tuple[_Check, str, bool]]
_COMMON: _Schema = {
    "t": (_number, "a finite number (seconds)", False),
    "dropped_before": (_NONNEG, "a count", False),
}
SCHEMAS: dict[int, _Schema] = {
    OPEN: {
        "protocol": (_ident, "an identifier", True),
        "fingerprint": (_hex64, "a 0x-prefixed 16-digit hex string", True),
        "spec_sha256": (_sha256, "64 hex digits", False),
        "frame0_len": (_int(1), "a positive integer", False),
        "roles": (_roles, "an object of sequence, chunk, epoch: a field name or null", False),
        "rank": (_NONNEG, "a rank", False),
        "world": (_int(1), "a positive integer", False),
        "source": (_opt(_NONNEG), "a rank or null", False),
        "mode": (_one_of(*MODES), f"one of {', '.join(MODES)}", False),
        "stem": (_str, "a string", False),
        "opened": (_str, "a string", False),
        "pid": (_NONNEG, "a process id", False),
        **_COMMON,
    },
    ENVELOPE: {
        "dir": (_one_of("send", "recv"), "send or recv", True),
        "state": (_str, "a string", True),
        "src": (_opt(_NONNEG), "a rank or null", False),
        "action": (_opt(_ident), "an action name or null", False),
        "error": (_str, "a string", False),
        "frame0_error": (_str, "a string", False),
        "manifest": (
            _list_of(_slot),
            "a list of [field, dtype, shape, bytes, segment, offset]",
            False,
        ),
        "segments": (_list_of(_NONNEG), "a list of byte counts", False),
        "frame1_digest": (_hex64, "a 0x-prefixed 16-digit hex string", False),
        "reason": (_str, "a string", False),
        **_COMMON,
    },
    OBSERVE: {
        "what": (_str, "a string", True),
        "state": (_str, "a string", False),
        "inputs": (_hex64, "a 0x-prefixed 16-digit hex string", False),
        "fields": (_map_of(_hex64), "an object of hex digests", False),
        "outputs": (_map_of(_hex64), "an object of hex digests", False),
        "counts": (_map_of(_INT), "an object of integers", False),
        "ledger": (_ledger, "an object with integers expected and observed", False),
        **_COMMON,
    },
    END: {
        "how": (_str, "a string", True),
        "reason": (_opt(_str), "a string or null", False),
        **_COMMON,
    },
}


def _json_kind(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(v), type(v).__name__)  # fmt: skip


def _depth(v: Any) -> int:
    """How deep ``v`` nests (1: a scalar), without recursion, stopping past the bound."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(v, 1)]
    while stack:
        x, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_META_DEPTH:
            break
        if type(x) is dict:
            stack.extend((y, d + 1) for y in x.values())
        elif type(x) is list:
            stack.extend((y, d + 1) for y in x)
    return deepest


def check_meta(kind: int, meta: dict[str, Any]) -> str | None:
    """What is wrong with a record's metadata for its kind, or None: each known key of the
    kind's schema has its type, the required ones are there; a key a later writer may add is
    kept, nested at most ``MAX_META_DEPTH`` deep."""
    schema = SCHEMAS.get(kind, _COMMON)
    for key, (check, what, required) in schema.items():
        if key not in meta:
            if required:
                return f"'{key}' is missing ({what})"
        elif not check(meta[key]):
            return f"'{key}' is {_json_kind(meta[key])}, expected {what}"
    for key, value in meta.items():
        if key not in schema and _depth(value) >= MAX_META_DEPTH:
            return f"'{printable(key, 40)}' nests deeper than {MAX_META_DEPTH} levels"
    return None


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if type(v) is list else v


@dataclass(frozen=True)
class _Meta:
    t: float | None = None
    dropped_before: int = 0
    #: keys this reader does not know (a later writer's), as read
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, kind: int, meta: Mapping[str, Any]) -> Any:
        schema = SCHEMAS.get(kind, _COMMON)
        known = {k: _freeze(v) for k, v in meta.items() if k in schema}
        return cls(**known, extra={k: v for k, v in meta.items() if k not in schema})


@dataclass(frozen=True)
class OpenMeta(_Meta):
    """An OPEN record's metadata: who wrote the file, for which protocol."""

    protocol: str = ""
    fingerprint: str = ""
    spec_sha256: str | None = None
    frame0_len: int | None = None
    roles: Mapping[str, str | None] = field(default_factory=dict)
    rank: int | None = None
    world: int | None = None
    source: int | None = None
    mode: str | None = None
    stem: str | None = None
    opened: str | None = None
    pid: int | None = None


@dataclass(frozen=True)
class EnvelopeMeta(_Meta):
    """An ENVELOPE record's metadata: direction, outcome, frame 0 read back."""

    dir: str = ""
    state: str = ""
    src: int | None = None
    action: str | None = None
    error: str | None = None
    frame0_error: str | None = None
    #: (field, dtype, shape, bytes, segment, offset) per tensor
    manifest: tuple[tuple[str, str, tuple[int, ...], int, int, int], ...] = ()
    segments: tuple[int, ...] = ()
    frame1_digest: str | None = None
    reason: str | None = None

    @property
    def frame1_nbytes(self) -> int:
        return sum(self.segments)


@dataclass(frozen=True)
class ObserveMeta(_Meta):
    """An OBSERVE record's metadata: what the rank did with the envelope before it."""

    what: str = ""
    state: str | None = None
    inputs: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)
    ledger: Mapping[str, int] | None = None


@dataclass(frozen=True)
class EndMeta(_Meta):
    """An END record's metadata: how the stream ended and why."""

    how: str = ""
    reason: str | None = None


_TYPED: dict[int, type[_Meta]] = {
    OPEN: OpenMeta, ENVELOPE: EnvelopeMeta, OBSERVE: ObserveMeta, END: EndMeta
}  # fmt: skip

TypedMeta = OpenMeta | EnvelopeMeta | ObserveMeta | EndMeta


# -- records and problems ---------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record read back (checksum verified, metadata checked against its kind's
    schema)."""

    path: str
    offset: int
    kind: int
    flags: int
    fingerprint: int
    seq: int | None
    chunk: int | None
    epoch: int | None
    #: the metadata as read (valid for its kind: ``info`` is it typed)
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

    @property
    def info(self) -> TypedMeta:
        """The metadata typed by the record's kind (``OpenMeta``, ``EnvelopeMeta``,
        ``ObserveMeta``, ``EndMeta``)."""
        out: TypedMeta = _TYPED[self.kind].of(self.kind, self.meta)
        return out


@dataclass(frozen=True)
class Problem:
    """A stretch of a journal file the reader could not use, at ``offset``."""

    path: str
    offset: int
    message: str
    #: the file ends inside this record (a writer killed mid-write)
    torn: bool = False

    def __str__(self) -> str:
        return f"{printable(self.path)}: offset {self.offset}: {self.message}"


@dataclass
class Scan:
    """What a journal file holds: its good records and its problems, in file order (the
    first ``MAX_PROBLEMS`` and a torn tail; ``unlisted`` counts the others)."""

    path: str
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: problems past the first ``MAX_PROBLEMS``, counted and not kept
    unlisted: int = 0

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

    @property
    def problem_count(self) -> int:
        return len(self.problems) + self.unlisted

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS or problem.torn:
            self.problems.append(problem)
        else:
            self.unlisted += 1


class BodyError(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: JSON as the writer writes it: ``NaN`` and ``Infinity`` are refused
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


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
        meta = _DECODER.decode(raw_meta.decode("utf-8"))
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


# -- where the bytes come from: memory, or a file read in chunks ------------------------


class _Unreadable(Exception):
    """The file cannot be read on (an I/O error, or it shrank while it was read)."""


class _Source:
    """The bytes of one journal file, read ``CHUNK`` at a time."""

    size: int

    def read(self, at: int, n: int) -> bytes:
        """Bytes ``at`` .. ``at + n`` (cut at the end of the file)."""
        raise NotImplementedError

    def checksum(self, head: bytes, at: int, n: int) -> int:
        h = xxhash.xxh3_64()
        h.update(head)
        end = at + n
        while at < end:
            k = min(CHUNK, end - at)
            h.update(self.read(at, k))
            at += k
        return h.intdigest()

    def find(self, start: int) -> int:
        """Where the next record can start at or after ``start`` (or a record header torn
        by the end of the file), else -1."""
        at = start
        while at < self.size:
            window = self.read(at, CHUNK + HEAD.size - 1)
            m = _PLAUSIBLE.search(window)
            if m is not None:
                return at + m.start()
            at += CHUNK
        tail_at = max(start, self.size - HEADER_NBYTES + 1)
        tail = self.read(tail_at, self.size - tail_at)
        i = tail.find(MAGIC)
        while i >= 0 and not _header_prefix(tail[i:]):
            i = tail.find(MAGIC, i + 1)
        return tail_at + i if i >= 0 else -1


class _Bytes(_Source):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, at: int, n: int) -> bytes:
        return self.data[at : at + n]

    def checksum(self, head: bytes, at: int, n: int) -> int:
        return _checksum(head, [memoryview(self.data)[at : at + n]])


class _File(_Source):
    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._at = 0
        self._window = b""

    def read(self, at: int, n: int) -> bytes:
        n = max(0, min(n, self.size - at))
        i = at - self._at
        if 0 <= i and i + n <= len(self._window):
            return self._window[i : i + n]
        if n > CHUNK:
            return self._pread(at, n)
        try:
            self._window = self._pread(at, min(CHUNK, self.size - at))
        except _Unreadable:  # the file shrank, or a read failed, within the window: the
            self._window = b""  # records before that place still read, one at a time
            return self._pread(at, n)
        self._at = at
        return self._window[:n]

    def _pread(self, at: int, n: int) -> bytes:
        parts = []
        got = 0
        while got < n:
            try:
                part = os.pread(self.fd, n - got, at + got)
            except OSError as exc:
                raise _Unreadable(f"cannot read at offset {at + got}: {_why(exc)}") from None
            if not part:
                raise _Unreadable(
                    f"the file ends at offset {at + got}: it held {self.size} bytes when "
                    "opened (it shrank while it was read)"
                )
            parts.append(part)
            got += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    what = next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")
    return f"not a regular file ({what}); not read"


# -- the scan ---------------------------------------------------------------------------


def _scan(src: _Source, path: str) -> Scan:
    out = Scan(path)
    fingerprint: int | None = None
    at = 0
    size = src.size
    try:
        while at < size:
            if size - at < HEADER_NBYTES:
                if src.read(at, 4) == MAGIC[: min(4, size - at)]:
                    out.add(
                        Problem(
                            path,
                            at,
                            f"a torn last record: {size - at} bytes of a "
                            f"{HEADER_NBYTES}-byte record header (the writer stopped mid-write)",
                            torn=True,
                        )
                    )
                else:
                    out.add(Problem(path, at, f"{size - at} trailing bytes, not a record"))
                break
            head = src.read(at, HEAD.size)
            magic, version, kind, flags, fp, seq, chunk, epoch, n, reserved = HEAD.unpack(head)
            if magic != MAGIC:
                nxt = src.find(at + 1)
                skip_to = nxt if nxt >= 0 else size
                out.add(
                    Problem(
                        path,
                        at,
                        f"no record here (bad magic {magic!r}); skipped {skip_to - at} bytes"
                        + (f" to the next record at {nxt}" if nxt >= 0 else ""),
                    )
                )
                at = skip_to
                continue
            end = at + HEADER_NBYTES + n
            problem: str | None = None
            if version != FORMAT_VERSION:
                problem = f"format version {version}, this reader reads {FORMAT_VERSION}"
            elif n > MAX_BODY:
                problem = f"a body length of {n} bytes (the bound is {MAX_BODY})"
            elif end > size:
                nxt = src.find(at + HEADER_NBYTES)
                if nxt < 0:
                    out.add(
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
                out.add(
                    Problem(
                        path,
                        at,
                        f"wrong length: {n} body bytes would run past the end of "
                        f"the file; skipped to the next record at {nxt}",
                    )
                )
                at = nxt
                continue
            body = b""
            if problem is None:
                (stored,) = CHECKSUM.unpack(src.read(at + HEAD.size, CHECKSUM.size))
                if n <= CHUNK:
                    body = src.read(at + HEADER_NBYTES, n)
                    good = _checksum(head, [body]) == stored
                else:  # checksummed chunk by chunk before the body is held whole
                    good = src.checksum(head, at + HEADER_NBYTES, n) == stored
                    body = src.read(at + HEADER_NBYTES, n) if good else b""
                if not good:
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
                else:
                    wrong = check_meta(kind, meta)
                    if wrong is not None:
                        problem = f"wrong-typed metadata: {wrong}"
            if problem is None and fingerprint is not None and fp != fingerprint:
                problem = (
                    f"a record of another protocol (fingerprint {hex64(fp)}, this file's is "
                    f"{hex64(fingerprint)}); refused"
                )
            if problem is not None:
                # skip by the length when the next record starts there, else resynchronize
                if end <= size and (end == size or src.read(end, 4) == MAGIC):
                    skip_to = end
                else:
                    nxt = src.find(at + 1)
                    skip_to = nxt if nxt >= 0 else size
                out.add(
                    Problem(
                        path,
                        at,
                        f"{KIND_NAMES.get(kind, 'record')}: {problem}; skipped {skip_to - at} "
                        "bytes",
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
    except _Unreadable as exc:
        out.add(Problem(path, at, str(exc)))
    return out


def scan_bytes(data: bytes, path: str = "<bytes>") -> Scan:
    """Every record of a journal file's bytes; problems (corruption, a torn tail, wrong-typed
    metadata) are reported with their offset and skipped, never raised."""
    return _scan(_Bytes(data if isinstance(data, bytes) else bytes(data)), path)


def scan(path: str | os.PathLike[str]) -> Scan:
    """``scan_bytes`` of a file, read ``CHUNK`` bytes at a time. Only a regular file is read
    (a symbolic link is followed to one): a FIFO, a device, a socket or a directory is one
    problem at offset 0, and so is a file that cannot be opened. The file is read up to the
    size it had when it was opened (a journal still being written ends where it was)."""
    p = str(path)
    try:
        st = os.stat(p)
    except (OSError, ValueError) as exc:
        why = _why(exc) if isinstance(exc, OSError) else str(exc)
        return Scan(p, [], [Problem(p, 0, f"cannot read: {why}")])
    refused = _not_regular(st.st_mode)
    if refused is not None:
        if stat.S_ISDIR(st.st_mode):
            try:
                os.listdir(p)
            except OSError as exc:  # named as a folder of journals, it could not be listed
                refused = f"a folder that cannot be listed: {_why(exc)}; not read"
        return Scan(p, [], [Problem(p, 0, refused)])
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        return Scan(p, [], [Problem(p, 0, f"cannot read: {_why(exc)}")])
    try:
        st = os.fstat(fd)  # the path may have been replaced since the stat
        refused = _not_regular(st.st_mode)
        if refused is not None:
            return Scan(p, [], [Problem(p, 0, refused)])
        return _scan(_File(fd, st.st_size), p)
    finally:
        os.close(fd)


_NAME = re.compile(r"^(?P<stem>.+)\.(?P<index>\d{6,})" + re.escape(SUFFIX) + "$")


def journal_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The journal files named by ``paths`` (files, or folders searched for ``*.tpj``, in
    name order), each stem's files in their writing order: by numeric index, at the place
    of the stem's first file (past index 999,999 name order is not writing order)."""
    out: list[Path] = []
    for p in map(Path, paths):
        try:
            folder = stat.S_ISDIR(os.stat(p).st_mode)
        except (OSError, ValueError):  # scan says why it cannot be read
            folder = False
        if not folder:
            out.append(p)
            continue
        try:
            names = os.listdir(p)
        except OSError:  # a folder that cannot be listed: scan says why, never nothing
            out.append(p)
            continue
        out.extend(sorted(p / n for n in names if n.endswith(SUFFIX)))
    first: dict[object, int] = {}
    keys: list[tuple[int, int, int]] = []
    for i, p in enumerate(out):
        m = _NAME.match(p.name)
        group: object = (str(p.parent), m.group("stem")) if m is not None else i
        keys.append((first.setdefault(group, i), int(m.group("index")) if m else -1, i))
    return [out[k[2]] for k in sorted(keys)]
