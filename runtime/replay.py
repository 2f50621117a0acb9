"""Replay a journal: push a recorded stream through the receive path without a process
group (``replay``), or feed it into a fresh channel group in place of rank 0
(``ReplaySource``), so a worker's code runs on exactly the recorded inputs.

A replay reapplies *inputs*. What a rank did with them (cache updates, frames emitted, files
written) is never replayed: side effects belong to the caller (docs/journal.md).
"""

from __future__ import annotations

import bisect
import ctypes
import enum
import importlib
import itertools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Generic

import torch

from . import journal as jr
from .bindings import Bindings, H, M, bindings_of
from .epochs import EpochCache
from .errors import EnvelopeInvalid, ProtocolMismatch, WireError
from .escape import printable
from .wire import W_FINGERPRINT, Manifest, Reason, seal_words


class ReplayError(RuntimeError):
    """A journal cannot be replayed as asked (not full mode, no start of that epoch, ...)."""


@dataclass
class Journal:
    """One rank's journal of one channel: its files' records in writing order."""

    name: str
    opening: dict[str, Any]
    records: list[jr.Record] = field(default_factory=list)
    problems: list[jr.Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    #: problems past the first ``MAX_PROBLEMS`` of a file, counted and not kept, by file
    unlisted: dict[str, int] = field(default_factory=dict)

    @property
    def torn_tail(self) -> jr.Problem | None:
        torn = [p for p in self.problems if p.torn]
        return torn[-1] if torn else None

    def envelopes(self) -> list[jr.Record]:
        return [r for r in self.records if r.kind == jr.ENVELOPE]


def load(paths: Iterable[str | os.PathLike[str]]) -> list[Journal]:
    """The journals in ``paths`` (files or folders), one per rank and channel (the files of
    a rotated journal joined in writing order). Problems stay with their journal. A journal
    is named by its stem (``tp_control.rank1``), and by its folder too where two folders
    hold the same stem."""
    by_key: dict[tuple[str, str], Journal] = {}
    seen: set[str] = set()
    for path in jr.journal_files(paths):
        real = os.path.realpath(path)
        if real in seen:  # one file named twice (a folder and a file in it): read once
            continue
        seen.add(real)
        found = jr.scan(path)
        opening = found.opening
        m = jr._NAME.match(path.name)
        stem = m.group("stem") if m is not None else path.name
        name = str(opening.get("stem", stem)) if opening is not None else stem
        key = (str(path.parent), name)
        journal = by_key.get(key)
        if journal is None:
            journal = by_key[key] = Journal(name, dict(opening or {}))
        elif not journal.opening and opening is not None:
            journal.opening = dict(opening)
        journal.records.extend(found.records)
        journal.problems.extend(found.problems)
        if found.unlisted:
            journal.unlisted[str(path)] = found.unlisted
        journal.files.append(str(path))
    stems = [name for _, name in by_key]
    for (folder, name), journal in by_key.items():
        if stems.count(name) > 1:
            journal.name = f"{Path(folder).name}/{name}"
    return sorted(by_key.values(), key=lambda j: _rank_order(j.name))


_RANK = re.compile(r"\.rank(\d+)")


def _rank_order(name: str) -> tuple[str, int, str]:
    m = _RANK.search(name)
    return (name[: m.start()], int(m.group(1)), name) if m else (name, -1, name)


def bindings_for(
    opening: dict[str, Any], protocol: Bindings[Any, Any] | ModuleType | None = None
) -> Bindings[Any, Any] | None:
    """The current build's bindings of a journal's protocol (``protocol`` when given, else
    ``tpwire.generated.<name>``); None when there are none."""
    if protocol is not None:
        return bindings_of(protocol)
    name = opening.get("protocol")
    if not isinstance(name, str) or not name.isidentifier():
        return None
    try:
        module = importlib.import_module(f"tpwire.generated.{name}")
    except ImportError:
        return None
    found = getattr(module, "BINDINGS", None)
    return found if isinstance(found, Bindings) else None


def segment_tensors(segments: Sequence[bytes]) -> tuple[torch.Tensor, ...]:
    """Recorded frame 1 segments as fresh, aligned uint8 tensors (writable copies)."""
    out = []
    for data in segments:
        t = torch.empty(len(data), dtype=torch.uint8)
        if data:
            ctypes.memmove(t.data_ptr(), data, len(data))
        out.append(t)
    return tuple(out)


def rekeyed(raw: bytes, fingerprint: int) -> bytes:
    """Frame 0 with the fingerprint word replaced and the checksum resealed (replaying a
    journal recorded under another spec against this one)."""
    words = list(memoryview(raw).cast("q")) if len(raw) % 8 == 0 else []
    if len(words) < 3:
        return raw
    words[W_FINGERPRINT] = fingerprint
    return seal_words(words).tobytes()


# --- where a journal is damaged or incomplete ---------------------------------------------


def _opened(journal: Journal, path: str) -> str | None:
    """Why the file at ``path`` was opened (``start``, ``epoch``, ``size``), from its OPEN
    record; None when it has none the reader could read."""
    for r in journal.records:
        if r.kind == jr.OPEN and r.path == path:
            opened = r.meta.get("opened")
            return opened if isinstance(opened, str) else None
    return None


def holds_start(journal: Journal) -> bool:
    """Whether the journal begins where its stream began: its first file was opened with
    the channel (not by rotation after files that retention removed or that were not
    given). An empty first file (a writer that was killed before its first record) is
    passed over."""
    used = {r.path for r in journal.records} | {p.path for p in journal.problems}
    first = next((p for p in journal.files if p in used), None)
    if first is None and journal.records:
        first = journal.records[0].path
    return first is not None and _opened(journal, first) == "start"


def _openings(journal: Journal) -> dict[str, dict[str, Any]]:
    """Each file's OPEN record (its first readable one), by path."""
    out: dict[str, dict[str, Any]] = {}
    for r in journal.records:
        if r.kind == jr.OPEN:
            out.setdefault(r.path, r.meta)
    return out


def streams(journal: Journal) -> list[Journal]:
    """The journal split into the streams it holds, oldest first: a file opened with its
    channel (an OPEN record saying ``start``) after the journal's first file begins another
    stream (a process restarted on the same folder, a channel of the same name opened
    again: its sequence ids start over). Each part holds its files, their records and their
    problems; a journal of one stream is returned as it is."""
    openings = _openings(journal)
    used = {r.path for r in journal.records} | {p.path for p in journal.problems}
    first = next((i for i, p in enumerate(journal.files) if p in used), 0)
    starts = [
        i
        for i, p in enumerate(journal.files)
        if i > first and openings.get(p, {}).get("opened") == "start"
    ]
    if not starts:
        return [journal]
    out = []
    for a, b in itertools.pairwise([0, *starts, len(journal.files)]):
        files = journal.files[a:b]
        keep = set(files)
        opening = next((openings[p] for p in files if p in openings), journal.opening)
        out.append(
            Journal(
                journal.name,
                dict(opening),
                [r for r in journal.records if r.path in keep],
                [p for p in journal.problems if p.path in keep],
                files,
                {f: n for f, n in journal.unlisted.items() if f in keep},
            )
        )
    return out


@dataclass(frozen=True)
class Gap:
    """A place where a journal is damaged or incomplete: the file and offset, what is
    wrong, and which sequence ids are not there."""

    path: str
    offset: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}: offset {self.offset}: {self.what}"


def _file_rank(journal: Journal) -> dict[str, int]:
    """Each of the journal's files by its place in writing order."""
    rank = {p: i for i, p in enumerate(journal.files)}
    for path in [*(r.path for r in journal.records), *(p.path for p in journal.problems)]:
        rank.setdefault(path, len(rank))
    return rank


def _seq_name(journal: Journal) -> str:
    roles = journal.opening.get("roles")
    name = roles.get("sequence") if isinstance(roles, dict) else None
    return name if isinstance(name, str) and name else "sequence"


def _ids(name: str, before: int | None, after: int | None) -> str:
    """The sequence ids strictly between two envelopes, in words."""
    if before is None and after is None:
        return "no envelope around it is readable"
    if before is None:
        return f"the envelopes before {name}={after} are not there"
    if after is None:
        return f"the envelopes after {name}={before} are not there"
    if after - before <= 1:
        return f"no {name} is missing between {name}={before} and {name}={after}"
    ids = f"{before + 1}" if after - before == 2 else f"{before + 1}..{after - 1}"
    return f"{name} {ids} missing (between {name}={before} and {name}={after})"


def gaps(journal: Journal) -> list[Gap]:
    """Every place ``journal`` is damaged or incomplete, in writing order, each with its
    file and offset and the sequence ids missing there: the problems the reader reported
    (a changed record, garbage, a torn tail), files missing between two of its rotated
    files, and records its writer dropped (``dropped_before``)."""
    rank = _file_rank(journal)
    seqs = sorted(
        (rank[r.path], r.offset, r.seq)
        for r in journal.records
        if r.kind == jr.ENVELOPE and r.seq is not None
    )
    where = [(f, o) for f, o, _ in seqs]
    name = _seq_name(journal)

    def around(path: str, offset: int) -> tuple[int | None, int | None]:
        at = bisect.bisect_left(where, (rank[path], offset))
        before = seqs[at - 1][2] if at else None
        after = seqs[at][2] if at < len(seqs) else None
        return before, after

    found: list[tuple[int, int, Gap]] = []
    for p in journal.problems:
        before, after = around(p.path, p.offset)
        if p.torn:
            after = None
        what = f"{p.message}; {_ids(name, before, after)}"
        found.append((rank[p.path], p.offset, Gap(p.path, p.offset, what)))
    indexed = sorted(
        ((m, p) for p in journal.files if (m := jr._NAME.match(Path(p).name)) is not None),
        key=lambda mp: int(mp[0].group("index")),
    )
    for (m0, p0), (m1, p1) in itertools.pairwise(indexed):
        i0, i1 = int(m0.group("index")), int(m1.group("index"))
        if m0.group("stem") != m1.group("stem") or i1 - i0 <= 1:
            continue
        stem = m1.group("stem")
        absent = (
            f"the file {stem}.{i0 + 1:06d}{jr.SUFFIX} is missing"
            if i1 - i0 == 2
            else f"the files {stem}.{i0 + 1:06d}..{i1 - 1:06d}{jr.SUFFIX} are missing"
        )
        before, after = around(p1, 0)
        what = (
            f"{absent} (between {Path(p0).name} and {Path(p1).name}); {_ids(name, before, after)}"
        )
        found.append((rank[p1], 0, Gap(p1, 0, what)))
    for r in journal.records:
        dropped = r.meta.get("dropped_before")
        if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0:
            before, after = around(r.path, r.offset)
            if r.kind == jr.ENVELOPE:
                after = r.seq
            what = (
                f"its writer dropped {dropped} record(s) before this one (the queue was "
                f"full); {_ids(name, before, after)}"
            )
            found.append((rank[r.path], r.offset, Gap(r.path, r.offset, what)))
    return [g for _, _, g in sorted(found, key=lambda x: (x[0], x[1]))]


# --- tpwire replay: the receive path, no process group ------------------------------------


@dataclass
class Outcome:
    """One recorded envelope through the receive path."""

    record: jr.Record
    ids: str
    action: str
    #: None: accepted; else why the current build refuses it
    refused: str | None = None
    #: full mode: re-encoding gave the recorded frame 0 and frame 1 bit for bit
    reproduced: bool | None = None


@dataclass
class ReplayReport:
    journal: Journal
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def first_refused(self) -> Outcome | None:
        return next((o for o in self.outcomes if o.refused is not None), None)


def replay(journal: Journal, bindings: Bindings[Any, Any], *, stop: bool = True) -> ReplayReport:
    """Push every recorded envelope of ``journal`` through this build's receive path: frame
    0 checks, the ordering rules (the spec's roles), in full mode frame 1's digest, decode
    and validation and a re-encode compared bit for bit; then each recorded ledger count
    against its plan. Each stream the journal holds (``streams``: a restarted process
    starts its ids over) is held to the ordering rules on its own. ``stop``: stop at the
    first refused envelope."""
    from .ordering import Ordering

    report = ReplayReport(journal)
    orderings: dict[object, Ordering] = {}  # per direction: the rank the envelopes came from
    caches: dict[object, EpochCache[Any, Any]] = {}  # fields cached by an epoch, per direction
    recorded_fp = journal.opening.get("fingerprint")
    if recorded_fp is not None and recorded_fp != jr.hex64(bindings.fingerprint):
        report.notes.append(
            f"recorded under fingerprint {recorded_fp} (spec sha256 "
            f"{str(journal.opening.get('spec_sha256', '?'))[:12]}), this build speaks "
            f"{jr.hex64(bindings.fingerprint)}: replayed with this build's fingerprint "
            "(`tpwire breaking` says which changes to expect to be refused)"
        )
    # a later stream (a restarted process) starts its ids over: its own ordering and caches
    starts = {part.files[0] for part in streams(journal)[1:]}
    for rec in journal.records:
        if rec.kind == jr.OPEN and rec.path in starts:
            starts.discard(rec.path)
            orderings.clear()
            caches.clear()
        ledger = rec.meta.get("ledger") if rec.kind == jr.OBSERVE else None
        if isinstance(ledger, dict):
            expected, observed = ledger.get("expected"), ledger.get("observed")
            if expected != observed and report.outcomes:
                last = report.outcomes[-1]
                if last.refused is None:
                    last.refused = (
                        f"the ledger's plan: {observed} generator calls observed, "
                        f"{expected} planned"
                    )
            continue
        if rec.kind != jr.ENVELOPE:
            continue
        src = rec.meta.get("src")
        ordering = orderings.get(src)
        if ordering is None:
            ordering = orderings[src] = Ordering(bindings)
        cache = caches.get(src)
        if cache is None and bindings.cached:
            cache = caches[src] = EpochCache(bindings, keep_values=False)
        outcome = _replay_one(rec, bindings, ordering, cache)
        report.outcomes.append(outcome)
        if stop and outcome.refused is not None:
            break
    return report


def _replay_one(
    rec: jr.Record,
    bindings: Bindings[Any, Any],
    ordering: Any,
    cache: EpochCache[Any, Any] | None = None,
) -> Outcome:
    action = str(rec.meta.get("action") or "?")
    out = Outcome(rec, f"seq={rec.seq}", action)
    raw = rec.frame0
    if rec.fingerprint != bindings.fingerprint:
        raw = rekeyed(raw, bindings.fingerprint)
    try:
        manifest: Manifest = bindings.read_frame0_bytes(raw)
    except (WireError, ProtocolMismatch, EnvelopeInvalid) as exc:
        out.refused = f"frame 0 refused: {exc}"
        return out
    header = manifest.header
    out.ids = bindings.ids_text(header)
    out.action = bindings.action_of(header).name
    problem = ordering.problem(header)
    if problem is not None:
        out.refused = f"ordering: {problem}"
        return out
    ordering.commit(header)
    if rec.segments is None:
        if manifest.frame1_nbytes == 0:
            try:
                manifest.finish(())
            except (WireError, EnvelopeInvalid) as exc:
                out.refused = _short(exc)
                return out
        return out  # digest mode: frame 0 and ordering checked; the bytes are not there
    try:
        header, msg = manifest.finish(segment_tensors(rec.segments))
    except (WireError, EnvelopeInvalid) as exc:
        out.refused = _short(exc)
        return out
    out.reproduced = _reproduces(bindings, msg, header, manifest.reason, raw, rec.segments)
    if not out.reproduced:
        out.refused = "re-encoding does not reproduce the recorded bytes"
        return out
    if cache is not None:  # the rules across envelopes, as the receiver's cache applies them
        across = cache.check(msg, header)
        if across:
            out.refused = _short(EnvelopeInvalid(across))
            return out
        cache.commit(msg, header)
    return out


def _short(exc: BaseException) -> str:
    if isinstance(exc, EnvelopeInvalid) and exc.violations:
        first = exc.violations[0]
        return f"{len(exc.violations)} violation(s), first: {first}"
    return f"{type(exc).__name__}: {exc}"


def _reproduces(
    bindings: Bindings[Any, Any],
    msg: Any,
    header: Any,
    reason: Reason | None,
    raw: bytes,
    segments: Sequence[bytes],
) -> bool:
    """Re-encode the decoded envelope; True when frame 0 and frame 1 are the recorded bytes."""
    from .wire import put_reason

    prepared = bindings.prepare(msg, header)
    if reason is not None:
        put_reason(prepared.words, bindings.w_reason, reason.code, reason.text)
    frames = prepared.frames()
    if seal_words(prepared.words).tobytes() != raw:
        return False
    got = [jr.tensor_bytes(s.contiguous()) for s in frames.segments]
    return got == list(segments)


# --- a replay source in place of rank 0 ---------------------------------------------------


@dataclass(frozen=True)
class Replayed(Generic[H, M]):
    """One recorded envelope, decoded with this build."""

    action: enum.IntEnum
    header: H
    msg: M | None
    reason: Reason | None


class ReplaySource(Generic[H, M]):
    """A recorded full-mode journal as a stream of envelopes, for a fresh channel group:
    ``feed(channel)`` sends them in place of the source rank, so the workers run on exactly
    the recorded inputs. Envelopes are deduplicated by sequence id (a record whose id is not
    past the last one fed is skipped).

    A replay starts at the first envelope of the stream or of an epoch, never in the middle
    of one (a hard cut empties the caches, so only there may a replay start): without
    ``start_epoch`` the journal's first envelope must be one of those, with it that epoch's
    first envelope, which the journal must hold. A source that is damaged or incomplete from
    its start on (a record the reader could not read, a torn tail, a rotated file missing,
    records the writer dropped) is refused with the offsets and the missing ids;
    ``lenient=True`` feeds what is readable instead and lists each gap in ``gaps``. All of
    it is checked when the source is made, before anything is sent.

    A source feeds one stream: the one its start lies in. Where the journal holds several
    (``streams``: a process restarted on the same folder starts its ids over), the
    envelopes of the later ones are not fed (their ids go to ``skipped``; ``streams`` counts
    them), so two runs are never spliced into one stream."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]] | Journal,
        protocol: Bindings[H, M] | ModuleType,
        *,
        start_epoch: int | None = None,
        lenient: bool = False,
    ) -> None:
        self.bindings: Bindings[H, M] = bindings_of(protocol)
        if isinstance(paths, Journal):
            journals = [paths]
        else:
            journals = load(paths)
        if len(journals) != 1:
            names = ", ".join(printable(j.name) for j in journals) or "none"
            raise ReplayError(f"a replay source reads one rank's journal, found: {names}")
        self.journal = journals[0]
        self.name = printable(self.journal.name)
        self.start_epoch = start_epoch
        self.lenient = lenient
        #: sequence ids skipped as duplicates or before the start
        self.skipped: list[int] = []
        envelopes = self.journal.envelopes()
        if not envelopes:
            raise ReplayError(f"{self.name}: the journal holds no envelope to replay")
        if start_epoch is not None:
            self._start = self._epoch_start(envelopes, start_epoch)
        else:
            self._start = self._stream_start(envelopes)
        parts = streams(self.journal)
        #: how many streams the journal holds (one is fed: the one the start lies in)
        self.streams = len(parts)
        part_of = {path: k for k, part in enumerate(parts) for path in part.files}
        fed = part_of.get(envelopes[self._start].path, 0)
        #: the envelopes fed are ``envelopes[_start:_stop]``: the start's stream ends there
        self._stop = next(
            (
                i
                for i in range(self._start, len(envelopes))
                if part_of.get(envelopes[i].path, fed) != fed
            ),
            len(envelopes),
        )
        #: where the journal is damaged or incomplete from the start on (``lenient``)
        self.gaps: list[Gap] = self._gaps(envelopes, set(parts[fed].files))
        if self.gaps and not lenient:
            shown = "; ".join(printable(g) for g in self.gaps[:3])
            more = f"; and {len(self.gaps) - 3} more" if len(self.gaps) > 3 else ""
            raise ReplayError(
                f"{self.name}: the journal is damaged or incomplete at {len(self.gaps)} "
                f"place(s): {shown}{more}; a replay source feeds a whole stream "
                "(ReplaySource(..., lenient=True) feeds what is readable and lists the gaps)"
            )
        for rec in envelopes[self._start : self._stop]:
            if rec.meta.get("state") in ("sent", "validated"):
                self._frame0(rec)  # refused before anything is sent

    def __iter__(self) -> Iterator[Replayed[H, M]]:
        envelopes = self.journal.envelopes()
        start, stop = self._start, self._stop
        self.skipped = [r.seq for r in envelopes[:start] if r.seq is not None]
        self.skipped += [r.seq for r in envelopes[stop:] if r.seq is not None]
        last: int | None = None
        for rec in envelopes[start:stop]:
            if rec.seq is not None and last is not None and rec.seq <= last:
                self.skipped.append(rec.seq)  # dedupe: this sequence id was fed already
                continue
            if rec.meta.get("state") not in ("sent", "validated"):
                continue  # what the rank refused was never run
            yield self._decode(rec)
            last = rec.seq

    def _gaps(self, envelopes: list[jr.Record], files: set[str]) -> list[Gap]:
        """The journal's gaps from the replay's start on, in the stream it feeds (those
        before it, or in another stream, do not count)."""
        found = [g for g in gaps(self.journal) if g.path in files]
        if not self._start:
            return found
        rank = _file_rank(self.journal)
        prev = envelopes[self._start - 1]
        after = (rank[prev.path], prev.offset)
        return [g for g in found if (rank[g.path], g.offset) > after]

    def _stream_start(self, envelopes: list[jr.Record]) -> int:
        first = envelopes[0]
        opened = _opened(self.journal, first.path)
        if opened in ("start", "epoch"):
            return 0
        seq = _seq_name(self.journal)
        roles = self.journal.opening.get("roles")
        epoch_name = roles.get("epoch") if isinstance(roles, dict) else None
        inside = (
            f" lies in the middle of {printable(epoch_name or 'epoch')}={first.epoch}"
            if first.epoch is not None
            else " is not the first of the stream"
        )
        how = f"was opened by {printable(opened)} rotation" if opened else "has no readable OPEN"
        starts = [
            rec.epoch
            for prev, rec in itertools.pairwise(envelopes)
            if rec.epoch is not None and prev.epoch is not None and rec.epoch > prev.epoch
        ]
        instead = (
            "; it holds the start of " + ", ".join(f"start_epoch={e}" for e in starts)
            if starts
            else ""
        )
        raise ReplayError(
            f"{self.name}: the journal does not hold the start of the stream: its first "
            f"envelope ({seq}={first.seq}, offset {first.offset} of {printable(first.path)})"
            f"{inside} (its file {how}: the files before it were removed or not given); a "
            f"replay starts at the first envelope of the stream or of an epoch{instead}"
        )

    def _epoch_start(self, envelopes: list[jr.Record], epoch: int) -> int:
        for i, rec in enumerate(envelopes):
            if rec.epoch is None or rec.epoch < epoch:
                continue
            if rec.epoch == epoch:
                before = envelopes[i - 1].epoch if i else None
                if before is not None and before < epoch:
                    return i  # the journal holds the envelope before the cut too
                if not i and _opened(self.journal, rec.path) in ("start", "epoch"):
                    return i  # the journal's first file opens the stream or the epoch
            break
        raise ReplayError(
            f"{self.name}: the journal does not hold the start of epoch {epoch} "
            "(a replay starts at an epoch's first envelope; retention may have removed it)"
        )

    def _frame0(self, rec: jr.Record) -> Manifest:
        where = f"{printable(rec.path)}: offset {rec.offset}"
        try:
            manifest: Manifest = self.bindings.read_frame0_bytes(rec.frame0)
        except (WireError, ProtocolMismatch) as exc:
            raise ReplayError(f"{where}: frame 0 refused: {printable(exc)}") from None
        if manifest.frame1_nbytes and rec.segments is None:
            raise ReplayError(
                f"{where}: a digest-mode record (seq {rec.seq}): only a full-mode journal "
                "(journal mode 'full') holds the tensors to replay"
            )
        return manifest

    def _decode(self, rec: jr.Record) -> Replayed[H, M]:
        manifest = self._frame0(rec)
        action = self.bindings.action_of(manifest.header)
        try:
            header, msg = manifest.finish(segment_tensors(rec.segments or ()))
        except (WireError, EnvelopeInvalid) as exc:
            where = f"{printable(rec.path)}: offset {rec.offset}"
            raise ReplayError(f"{where}: refused: {printable(_short(exc))}") from None
        return Replayed(action, header, msg, manifest.reason)

    def feed(self, channel: Any) -> int:
        """Send every envelope on ``channel`` (an open channel whose source is this rank),
        ending with the recorded terminal action (SHUTDOWN when the journal has none).
        Returns how many envelopes were sent."""
        n = 0
        for item in self:
            if item.action is self.bindings.error:  # the recorded reason, as it was sent
                if item.reason is not None:
                    channel.error(item.reason.text, item.reason.code)
                else:
                    channel.error("replayed")
            else:
                channel.send(item.msg, item.header)
            n += 1
            if item.action in self.bindings.terminal:
                return n
        channel.shutdown()
        return n + 1
