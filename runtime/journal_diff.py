"""Find the first divergence across the ranks' journals (``tpwire journal diff``).

The journals are aligned by the binding coordinate: the rank an envelope came from and its
sequence id (the spec's sequence role; the chunk and epoch roles are shown). An observation
belongs to the envelope of its sequence id wherever it lies in the file (a prefetching worker
records it after the next envelope; a last one may follow SHUTDOWN); one that matches no
envelope is reported. Only the coordinates every journal still holds are compared: where
retention removed a journal's first files, the comparison starts at the first coordinate all
of them hold, and says so. For each coordinate in order, every journal must hold the
envelope with the same frame 0 (and frame 1, in full mode), the same outcome (sent or
validated, or the same refusal) and the same observations (input and output digests,
counts); at the end, the same way of ending, compared by its code (how, and the reason's
category: socket ports and paths differ between ranks). The first coordinate where they
differ is the divergence, with the field-level difference where the records decode with this
build; where a rank stopped without a word (killed: no END record) or on a failure, the rank
that stopped first is named, not the survivors that lost their peer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import xxhash

from . import journal as jr
from .bindings import Bindings
from .errors import EnvelopeInvalid, ProtocolMismatch, WireError
from .escape import printable
from .replay import Journal, bindings_for, holds_start, streams
from .wire import signed64

#: observation keys that say when, not what: never compared
_TIMES = ("t",)
_OK_STATES = ("sent", "validated")


@dataclass
class Entry:
    """What one journal holds for one coordinate."""

    envelope: jr.Record
    observed: dict[str, Any] = field(default_factory=dict)


@dataclass
class Divergence:
    coordinate: str
    action: str
    #: one line per difference
    lines: list[str]
    #: the journals (labels) that differ from the first one
    odd: list[str]

    def text(self) -> str:
        head = f"first divergence at {self.coordinate}"
        head += f" ({self.action})" if self.action else ""
        return "\n".join([head + ":", *(f"  {line}" for line in self.lines)])


@dataclass
class DiffReport:
    journals: list[Journal]
    compared: int = 0
    divergence: Divergence | None = None
    notes: list[str] = field(default_factory=list)
    #: the stretches of the journals the reader could not use (a changed record, garbage, a
    #: torn tail): what they held was not compared, so no divergence is then incomplete
    unread: int = 0


#: how a journal's stream stopped, the least orderly first: no END record (killed, or it
#: stopped without a word), a failure it recorded (poison, the watchdog, SIGTERM), an orderly end
_SILENT, _FAILED, _ORDERLY = 0, 1, 2
_FAILURES = ("poisoned", "watchdog", "terminated")
#: notes of one kind per journal, at most (the rest are counted)
_MAX_NOTES = 5

Key = tuple[int, int]


def _order(key: Key) -> tuple[int, int]:
    """Coordinates in stream order: by sequence id, then by the rank they came from."""
    return key[1], key[0]


@dataclass
class _Indexed:
    """One journal's envelopes by coordinate, with their observations."""

    entries: dict[Key, Entry] = field(default_factory=dict)
    #: the coordinates in the order of the journal's records
    order: list[Key] = field(default_factory=list)
    #: observations that match no envelope record of the journal
    stray: list[jr.Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _key(rec: jr.Record) -> Key:
    src = rec.meta.get("src")
    return (src if type(src) is int else -1, rec.seq if rec.seq is not None else -1)


def _attach(entry: Entry, rec: jr.Record) -> None:
    for k, v in rec.meta.items():
        if k in _TIMES or k == "what":
            continue
        if isinstance(v, dict) and isinstance(entry.observed.get(k), dict):
            entry.observed[k] = {**entry.observed[k], **v}
        else:
            entry.observed[k] = v


def _index(journal: Journal, label: str, opening: dict[str, Any]) -> _Indexed:
    """Envelopes by coordinate (the first record of a coordinate counts) and each
    observation attached to the envelope of its sequence id: the envelope record right
    before it when that one has its id, else the last record of that id before it (one
    this rank received before one it sent), else the first of that id after it."""
    out = _Indexed()
    by_seq: dict[int, list[tuple[int, Entry]]] = {}
    elsewhere: list[tuple[int, jr.Record]] = []
    last: Entry | None = None
    for pos, rec in enumerate(journal.records):
        if rec.kind == jr.ENVELOPE:
            key = _key(rec)
            first = out.entries.get(key)
            if first is not None:  # a duplicate: the first record of a coordinate counts
                if rec.words != first.envelope.words or (
                    rec.segments is not None
                    and first.envelope.segments is not None
                    and rec.segments != first.envelope.segments
                ):
                    out.notes.append(
                        f"{label}: a second record of {_coordinate(rec, opening)} at offset "
                        f"{rec.offset} ({printable(rec.path)}) holds other bytes than the "
                        f"first (offset {first.envelope.offset}); the first is compared"
                    )
                last = first
                continue
            last = out.entries[key] = Entry(rec)
            out.order.append(key)
            if rec.seq is not None:
                by_seq.setdefault(rec.seq, []).append((pos, last))
        elif rec.kind == jr.OBSERVE:
            if last is not None and rec.seq is not None and rec.seq == last.envelope.seq:
                _attach(last, rec)
            else:  # written later (a prefetching rank, after SHUTDOWN), or stray
                elsewhere.append((pos, rec))
    for pos, rec in elsewhere:
        found = by_seq.get(rec.seq) if rec.seq is not None else None
        if not found:
            out.stray.append(rec)
            continue
        before = [e for p, e in found if p < pos]
        received = [e for e in before if not e.envelope.sent]
        _attach(received[-1] if received else before[-1] if before else found[0][1], rec)
    return out


def _end(journal: Journal) -> dict[str, Any] | None:
    ends = [r for r in journal.records if r.kind == jr.END]
    if not ends:
        return None
    meta = ends[-1].meta
    return {"how": meta.get("how"), "reason": meta.get("reason")}


_IDS = re.compile(r"\b\w+=\S+")
_NUMBERS = re.compile(r"\d+\.\d+|\d{2,}")


def end_code(how: object, reason: object) -> str:
    """How a stream ended as a stable category: ``how`` and the reason's class, its text up
    to the first ``": "`` with ids and numbers left out (``poisoned: waiting for frame 0
    failed``; ``ERROR: USER``). What follows (a socket address, a path, a backend's words)
    differs between ranks that ended the same way."""
    if reason is None or reason == "":
        return str(how)
    head = str(reason).split(": ", 1)[0]
    return f"{how}: {_NUMBERS.sub('N', _IDS.sub('<id>', head))}"


def _end_text(end: dict[str, Any] | None) -> str | None:
    if end is None:
        return None
    return f"{end['how']}: {end['reason']}" if end.get("reason") else str(end["how"])


def _stop(journal: Journal) -> tuple[int, str]:
    """How the journal's stream stopped (``_SILENT``, ``_FAILED``, ``_ORDERLY``), and why,
    in words."""
    end = _end(journal)
    if end is None:
        cls = _SILENT
    elif end["how"] in _FAILURES:
        cls = _FAILED
    else:
        cls = _ORDERLY
    tail = journal.torn_tail
    if tail is not None:
        why = f"its file ends in a torn record at offset {tail.offset} ({tail.path})"
    elif end is None:
        why = "it recorded no end (killed, or it stopped without a word)"
    else:
        why = f"it ended: {_end_text(end)}"
    dropped = sum(
        int(r.meta.get("dropped_before") or 0)
        for r in journal.records
        if isinstance(r.meta.get("dropped_before"), int)
    )
    if dropped:
        why += f"; its writer dropped {dropped} record(s) (the queue was full)"
    return cls, printable(why)


def _seq_text(rec: jr.Record, opening: dict[str, Any]) -> str:
    return _coordinate(rec, opening).split(" ")[0]


def _coordinate(rec: jr.Record, opening: dict[str, Any]) -> str:
    roles = opening.get("roles") if isinstance(opening.get("roles"), dict) else {}
    assert isinstance(roles, dict)
    parts = []
    for role, value in (("sequence", rec.seq), ("chunk", rec.chunk), ("epoch", rec.epoch)):
        name = roles.get(role) or (role if role == "sequence" else None)
        if name and value is not None:
            parts.append(f"{name}={value}")
    return " ".join(parts)


def _shown(values: Sequence[object], labels: Sequence[str]) -> str:
    return ", ".join(f"{lab}={_value(v)}" for lab, v in zip(labels, values, strict=True))


def _value(v: object) -> str:
    if v is None:
        return "<none>"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{printable(k)}: {_value(x)}" for k, x in v.items()) + "}"
    return printable(v)


def _odd(values: Sequence[object], labels: Sequence[str]) -> list[str]:
    """The journals whose value differs from the most common one (ties: the first's)."""
    counts: dict[str, int] = {}
    for v in values:
        counts[repr(v)] = counts.get(repr(v), 0) + 1
    best = max(counts.values())
    common = next(repr(v) for v in values if counts[repr(v)] == best)
    return [lab for lab, v in zip(labels, values, strict=True) if repr(v) != common]


def _decoded(rec: jr.Record, bindings: Bindings[Any, Any] | None) -> dict[str, object] | None:
    """A record's frame 0 as field values (header fields, scalars, each tensor's dtype and
    shape, the frame 1 digest), when it decodes with this build."""
    if bindings is None or rec.fingerprint != bindings.fingerprint:
        return None
    try:
        manifest = bindings.read_frame0_bytes(rec.frame0)
    except (WireError, ProtocolMismatch, EnvelopeInvalid):
        return None
    out: dict[str, object] = {}
    header = manifest.header
    if dataclasses.is_dataclass(header):
        for f in dataclasses.fields(header):
            v = getattr(header, f.name)
            out[f"header.{f.name}"] = getattr(v, "name", v)
    for k, v in manifest.scalars.items():
        out[k] = getattr(v, "name", v)
    for slot in manifest.slots:
        out[f"{slot.field} (dtype, shape)"] = f"{slot.dtype.name}{list(slot.shape)}"
    out["frame 1 digest"] = jr.hex64(manifest.digest)
    if manifest.reason is not None:
        out["reason"] = str(manifest.reason)
    if rec.segments is not None:
        for slot in manifest.slots:
            seg = rec.segments[slot.segment] if slot.segment < len(rec.segments) else b""
            data = seg[slot.offset : slot.offset + slot.nbytes]
            out[f"{slot.field} (bytes)"] = jr.hex64(signed64(xxhash.xxh3_64_intdigest(data)))
    return out


def _frame_lines(
    entries: Sequence[Entry], labels: Sequence[str], bindings: Bindings[Any, Any] | None
) -> tuple[list[str], list[str]]:
    """The field-level difference of differing frames (else word by word)."""
    recs = [e.envelope for e in entries]
    decoded = [_decoded(r, bindings) for r in recs]
    lines: list[str] = []
    if all(d is not None for d in decoded):
        ds = [d for d in decoded if d is not None]
        keys = sorted({k for d in ds for k in d}, key=lambda k: (k == "frame 1 digest", k))
        for k in keys:
            values = [d.get(k) for d in ds]
            if any(v != values[0] for v in values[1:]):
                lines.append(f"{k}: {_shown(values, labels)}")
        return lines, _odd([r.frame0 + b"".join(r.segments or ()) for r in recs], labels)
    words = [r.words for r in recs]
    n = max(len(w) for w in words)
    for i in range(n):
        values = [w[i] if i < len(w) else None for w in words]
        if any(v != values[0] for v in values[1:]):
            lines.append(f"frame 0 word {i}: {_shown(values, labels)}")
            if len(lines) >= 8:
                lines.append("... (frame 0 does not decode with this build: words shown)")
                break
    return lines, _odd([r.frame0 for r in recs], labels)


def diff(journals: Sequence[Journal], protocol: Bindings[Any, Any] | None = None) -> DiffReport:
    """The first divergence across ``journals`` (one per rank), or none.

    A journal that holds several streams (``replay.streams``: a process restarted on the
    same folder starts its ids over) is compared stream by stream: each rank's latest
    stream with every other rank's latest, the one before with the one before, and so on,
    oldest first; a stream that has no counterpart on every rank (retention removed it) is
    said and not compared."""
    report = DiffReport(list(journals))
    parts = [streams(j) for j in journals]
    counts = [len(p) for p in parts]
    if max(counts) == 1:
        _diff_stream(journals, protocol, report)
        return report
    labels = [printable(j.name) for j in journals]
    paired = min(counts)
    report.notes.append(
        f"several streams in one journal (a process restarted on the same folder, or a "
        f"channel opened again: a file opened with a new stream): {_shown(counts, labels)}; "
        f"each rank's latest {paired} compared with the same stream of every rank, oldest first"
    )
    for lab, p in zip(labels, parts, strict=True):
        if len(p) > paired:
            files = [f for part in p[: len(p) - paired] for f in part.files]
            report.notes.append(
                f"{lab}: its first {len(p) - paired} stream(s) ({printable(files[0])} .. "
                f"{printable(files[-1])}) have no counterpart on every rank; not compared"
            )
    for k in range(paired):
        group = [p[len(p) - paired + k] for p in parts]
        sub = DiffReport(group)
        _diff_stream(group, protocol, sub)
        report.compared += sub.compared
        report.unread += sub.unread
        where = f"stream {k + 1} of {paired}"
        report.notes.extend(f"{where}: {note}" for note in sub.notes)
        if sub.divergence is not None:
            div = sub.divergence
            div.coordinate = f"{div.coordinate} in {where} (from {printable(group[0].files[0])})"
            report.divergence = div
            return report
    return report


def _diff_stream(
    journals: Sequence[Journal], protocol: Bindings[Any, Any] | None, report: DiffReport
) -> None:
    """``diff`` of one stream per journal: the first divergence goes to ``report``."""
    labels = [printable(j.name) for j in journals]
    opening = next((j.opening for j in journals if j.opening), {})
    bindings = bindings_for(opening, protocol)
    fingerprints = [j.opening.get("fingerprint") for j in journals]
    report.divergence = _disagree(
        fingerprints, labels, "the journals' start", "protocol fingerprint"
    )
    if report.divergence is not None:
        return
    for j, lab in zip(journals, labels, strict=True):
        report.unread += len(j.problems) + sum(j.unlisted.values())
        for p in j.problems:
            report.notes.append(f"{lab}: {printable(p)}")
        for path, n in j.unlisted.items():
            report.notes.append(f"{lab}: {printable(path)}: {n} more problem(s) not listed")
    indexed = [_index(j, lab, opening) for j, lab in zip(journals, labels, strict=True)]
    keys = sorted({k for ix in indexed for k in ix.entries}, key=_order)
    start = _common_start(journals, labels, indexed, keys, opening, report)
    if start is not None:
        keys = [k for k in keys if _order(k) >= _order(start)]
    for j, lab, ix in zip(journals, labels, indexed, strict=True):
        report.notes.extend(ix.notes)
        # an observation of an envelope that retention removed is part of the cut
        before = start[1] if start is not None else None
        if not holds_start(j) and ix.order:
            own = min(ix.order, key=_order)[1]
            before = own if before is None else max(before, own)
        stray = [r for r in ix.stray if r.seq is None or before is None or r.seq >= before]
        for rec in stray[:_MAX_NOTES]:
            where = _coordinate(rec, opening) or "no sequence id"
            report.notes.append(
                f"{lab}: an OBSERVE record of {where} at offset {rec.offset} "
                f"({printable(rec.path)}) matches no envelope record of this journal; "
                "not compared"
            )
        if len(stray) > _MAX_NOTES:
            report.notes.append(
                f"{lab}: {len(stray) - _MAX_NOTES} more OBSERVE record(s) match no envelope"
            )
    position = {k: i for i, k in enumerate(keys)}
    for key in keys:
        present = [ix.entries.get(key) for ix in indexed]
        rec = next(e.envelope for e in present if e is not None)
        where = _coordinate(rec, opening)
        action = printable(rec.meta.get("action") or "")
        missing = [i for i, e in enumerate(present) if e is None]
        if missing:
            stops = [_stop(j) for j in journals]
            lines = []
            for i in missing:
                held = [k for k in indexed[i].order if _order(k) < _order(key)]
                after = f" after sequence {max(held, key=_order)[1]}" if held else ""
                lines.append(
                    f"missing record: {labels[i]} holds no record of it{after}; {stops[i][1]}"
                )
            first = _first_to_stop(stops, indexed, position)
            if first is not None and first != missing:
                lines += _stopped_lines(first, stops, labels, indexed, position, opening)
            odd = first if first is not None else missing
            report.divergence = Divergence(where, action, lines, [labels[i] for i in odd])
            return
        entries = [e for e in present if e is not None]
        report.compared += 1
        lines, odd_labels = _compare(entries, labels, bindings)
        if lines:
            report.divergence = Divergence(where, action, lines, odd_labels)
            return
    ends = [_end(j) for j in journals]
    codes = [None if e is None else end_code(e["how"], e["reason"]) for e in ends]
    if all(c == codes[0] for c in codes[1:]):
        return
    texts = [_end_text(e) for e in ends]
    lines = [f"how the stream ended: {_shown(texts, labels)}"]
    stops = [_stop(j) for j in journals]
    first = _first_to_stop(stops, indexed, position)
    if first is not None:
        lines += _stopped_lines(first, stops, labels, indexed, position, opening)
        odd_labels = [labels[i] for i in first]
    else:
        odd_labels = _odd(codes, labels)
    report.divergence = Divergence("the end of the stream", "", lines, odd_labels)
    return


def _common_start(
    journals: Sequence[Journal],
    labels: Sequence[str],
    indexed: Sequence[_Indexed],
    keys: Sequence[Key],
    opening: dict[str, Any],
    report: DiffReport,
) -> Key | None:
    """The first coordinate every journal still holds, where retention (or files not given)
    cut the head of some: a journal whose first file was not opened with its stream holds
    from its first envelope on. None: every journal holds the start. Says what was cut."""
    start: Key | None = None
    cut: list[str] = []
    for j, lab, ix in zip(journals, labels, indexed, strict=True):
        if not ix.order or holds_start(j):
            continue
        first = min(ix.order, key=_order)
        cut.append(f"{lab} from {_seq_text(ix.entries[first].envelope, opening)}")
        if start is None or _order(first) > _order(start):
            start = first
    if start is None:
        return None
    left_out = sum(1 for k in keys if _order(k) < _order(start))
    rec = next(ix.entries[start].envelope for ix in indexed if start in ix.entries)
    report.notes.append(
        f"retention cut the head of {', '.join(cut)} (a first file not opened with the "
        "stream: the files before it were removed or not given); compared from "
        f"{_seq_text(rec, opening)} on, the range every journal still holds; "
        f"{left_out} earlier envelope(s) not compared"
    )
    return start


def _last_position(ix: _Indexed, position: dict[Key, int]) -> int:
    return max((position[k] for k in ix.order if k in position), default=-1)


def _first_to_stop(
    stops: Sequence[tuple[int, str]], indexed: Sequence[_Indexed], position: dict[Key, int]
) -> list[int] | None:
    """The journals of the ranks that stopped first, where one stopped other than in order:
    those that recorded no end (killed) before those that recorded a failure, and of them
    the ones whose last envelope comes first. None: every rank ended in order."""
    worst = min(c for c, _ in stops)
    if worst == _ORDERLY:
        return None
    candidates = [i for i, (c, _) in enumerate(stops) if c == worst]
    last = {i: _last_position(indexed[i], position) for i in candidates}
    earliest = min(last.values())
    return [i for i in candidates if last[i] == earliest]


def _stopped_lines(
    first: Sequence[int],
    stops: Sequence[tuple[int, str]],
    labels: Sequence[str],
    indexed: Sequence[_Indexed],
    position: dict[Key, int],
    opening: dict[str, Any],
) -> list[str]:
    lines = []
    for i in first:
        ix = indexed[i]
        held = [k for k in ix.order if k in position]
        last = max(held, key=_order) if held else None
        tail = (
            f"; its last envelope record: {_coordinate(ix.entries[last].envelope, opening)}"
            if last is not None
            else ""
        )
        lines.append(f"stopped first: {labels[i]}: {stops[i][1]}{tail}")
    return lines


def _disagree(
    values: Sequence[object], labels: Sequence[str], where: str, what: str
) -> Divergence | None:
    """The divergence when the journals do not all hold the same ``what``."""
    if all(v == values[0] for v in values[1:]):
        return None
    return Divergence(where, "", [f"{what}: {_shown(values, labels)}"], _odd(values, labels))


def _compare(
    entries: Sequence[Entry], labels: Sequence[str], bindings: Bindings[Any, Any] | None
) -> tuple[list[str], list[str]]:
    recs = [e.envelope for e in entries]
    lines: list[str] = []
    odd: list[str] = []
    if any(r.frame0 != recs[0].frame0 for r in recs[1:]) or (
        all(r.segments is not None for r in recs)
        and any(r.segments != recs[0].segments for r in recs[1:])
    ):
        lines, odd = _frame_lines(entries, labels, bindings)
        if not lines:
            lines = ["the envelope bytes differ"]
    outcome = [
        "ok"
        if r.meta.get("state") in _OK_STATES
        else f"{r.meta.get('state')}: {r.meta.get('error')}"
        for r in recs
    ]
    if any(o != outcome[0] for o in outcome[1:]):
        lines.append(f"outcome: {_shown(outcome, labels)}")
        odd = odd or _odd(outcome, labels)
    # observations are compared among the journals that hold them: a rank that does not
    # run an envelope (a pipeline's source) observes nothing; one that stopped mid-way misses
    # the next record, or ends differently
    observed = [e.observed for e in entries]
    for k in sorted({k for o in observed for k in o}):
        held = [(lab, o[k]) for lab, o in zip(labels, observed, strict=True) if k in o]
        labs = [lab for lab, _ in held]
        values = [v for _, v in held]
        if all(v == values[0] for v in values[1:]):
            continue
        if all(isinstance(v, dict) for v in values):
            dicts = [v for v in values if isinstance(v, dict)]
            for sub in sorted({s for d in dicts for s in d}):
                subs = [d.get(sub) for d in dicts]
                if any(v != subs[0] for v in subs[1:]):
                    lines.append(f"{printable(k)}.{printable(sub)}: {_shown(subs, labs)}")
        else:
            lines.append(f"{printable(k)}: {_shown(values, labs)}")
        odd = odd or _odd(values, labs)
    return lines, odd
