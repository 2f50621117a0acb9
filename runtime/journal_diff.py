"""Find the first divergence across the ranks' journals (``tpwire journal diff``).

The journals are aligned by the binding coordinate: the rank an envelope came from and its
sequence id (the spec's sequence role; the chunk and epoch roles are shown). For each
coordinate in order, every journal must hold the envelope with the same frame 0 (and frame
1, in full mode), the same outcome (sent or validated, or the same refusal) and the same
observations (input and output digests, counts); at the end, the same way of ending. The
first coordinate where they differ is the divergence, with the field-level difference where
the records decode with this build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import xxhash

from . import journal as jr
from .bindings import Bindings
from .errors import EnvelopeInvalid, ProtocolMismatch, WireError
from .replay import Journal, bindings_for
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


def _index(journal: Journal) -> tuple[dict[tuple[int, int], Entry], list[tuple[int, int]]]:
    entries: dict[tuple[int, int], Entry] = {}
    order: list[tuple[int, int]] = []
    last: Entry | None = None
    for rec in journal.records:
        if rec.kind == jr.ENVELOPE:
            src = rec.meta.get("src")
            key = (src if isinstance(src, int) else -1, rec.seq if rec.seq is not None else -1)
            if key in entries:
                last = None  # a duplicate: the first record of a coordinate counts
                continue
            last = entries[key] = Entry(rec)
            order.append(key)
        elif rec.kind == jr.OBSERVE and last is not None and rec.seq == last.envelope.seq:
            for k, v in rec.meta.items():
                if k in _TIMES or k == "what":
                    continue
                if isinstance(v, dict) and isinstance(last.observed.get(k), dict):
                    last.observed[k] = {**last.observed[k], **v}
                else:
                    last.observed[k] = v
    return entries, order


def _end(journal: Journal) -> dict[str, Any] | None:
    ends = [r for r in journal.records if r.kind == jr.END]
    if not ends:
        return None
    meta = ends[-1].meta
    return {"how": meta.get("how"), "reason": meta.get("reason")}


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
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


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
    """The first divergence across ``journals`` (one per rank), or none."""
    report = DiffReport(list(journals))
    labels = [j.name for j in journals]
    indexed = [_index(j) for j in journals]
    opening = next((j.opening for j in journals if j.opening), {})
    bindings = bindings_for(opening, protocol)
    fingerprints = [j.opening.get("fingerprint") for j in journals]
    report.divergence = _disagree(
        fingerprints, labels, "the journals' start", "protocol fingerprint"
    )
    if report.divergence is not None:
        return report
    for j in journals:
        for p in j.problems:
            report.notes.append(f"{j.name}: {p}")
    keys = sorted({k for entries, _ in indexed for k in entries}, key=lambda k: (k[1], k[0]))
    for key in keys:
        present = [entries.get(key) for entries, _ in indexed]
        rec = next(e.envelope for e in present if e is not None)
        where = _coordinate(rec, opening)
        action = str(rec.meta.get("action") or "")
        missing = [lab for lab, e in zip(labels, present, strict=True) if e is None]
        if missing:
            lines = []
            for lab, j in zip(labels, journals, strict=True):
                if lab not in missing:
                    continue
                last = [k for k in indexed[labels.index(lab)][1] if k < key]
                tail = j.torn_tail
                end = _end(j)
                why = (
                    f"its file ends in a torn record at offset {tail.offset} ({tail.path})"
                    if tail is not None
                    else f"it ended: {end['how']}: {end['reason']}"
                    if end is not None and end.get("reason")
                    else f"it ended: {end['how']}"
                    if end is not None
                    else "no end recorded"
                )
                after = f" after sequence {last[-1][1]}" if last else ""
                dropped = sum(
                    int(r.meta.get("dropped_before") or 0)
                    for r in j.records
                    if r.kind == jr.ENVELOPE
                )
                if dropped:
                    why += f"; its writer dropped {dropped} record(s) (the queue was full)"
                lines.append(f"missing record: {lab} holds no record of it{after}; {why}")
            report.divergence = Divergence(where, action, lines, missing)
            return report
        entries = [e for e in present if e is not None]
        report.compared += 1
        lines, odd = _compare(entries, labels, bindings)
        if lines:
            report.divergence = Divergence(where, action, lines, odd)
            return report
    ends = [_end(j) for j in journals]
    report.divergence = _disagree(ends, labels, "the end of the stream", "how the stream ended")
    return report


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
                    lines.append(f"{k}.{sub}: {_shown(subs, labs)}")
        else:
            lines.append(f"{k}: {_shown(values, labs)}")
        odd = odd or _odd(values, labs)
    return lines, odd
