"""The ranks' envelope journals as a timeline (``tpwire journal trace``, docs/journal.md
"Timeline"): a Chrome trace-event / Perfetto JSON document.

One process (``pid``) per channel and stream (``replay.streams``: a process restarted on the
same folder starts another), one track (``tid``) per rank, named ``rank N``. Each ENVELOPE
record is a complete slice (``"ph": "X"``) named by its direction and action, each OBSERVE
record one named ``observe``; refusals, ends (poison, the watchdog, SIGTERM, SHUTDOWN),
reader problems (a torn tail) and the first divergence ``journal_diff.diff`` finds are
instant events on their rank's track; a flow arrow runs from the source rank's send of a
sequence id to each worker's receive of it.

Time: a record carries one timestamp, ``t`` (wall-clock seconds, taken when the channel hands
the record over: after the envelope was sent or received, after the rank ran it). A slice
covers the gap from the rank's previous record to this one: a receive slice is the wait
for the envelope, an observe slice the time the rank ran it. Times are microseconds from
the earliest record of the document. A record without ``t`` is placed ``NO_TIME_US`` after
the one before it, and a record whose ``t`` is not after the previous one's 1 µs after it,
so the slices of a track never overlap and never have zero length. A ``t`` so far from the
others that its microseconds leave the range a viewer reads exactly (``MAX_T``) is placed
as if it had none, and said by a ``problem`` instant.

The ends of point-to-point channels (``.rank1-peer0``) that one rank holds in a stream each
get a track of their own: the rank's number where it is free, else one from
``EXTRA_TIDS`` on; their flows join a send to the receive of the peer it went to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import journal as jr
from .escape import printable
from .journal_diff import Divergence, diff
from .journal_format import EndMeta, EnvelopeMeta, ObserveMeta
from .replay import Journal, streams

#: where a record has no timestamp, it is placed this many microseconds after the previous one
NO_TIME_US = 1000
#: the largest ``|t|`` in seconds that is placed: the microseconds between two such times stay
#: below 2**53, the integers a viewer's JSON numbers (doubles) hold exactly
MAX_T = 2**52 / 1e6
#: the first ``tid`` of a track whose rank's number another track of its stream holds already
EXTRA_TIDS = 1_000_000
#: a journal's stem past its channel: ``.rank1`` (broadcast), ``.rank0-peer1`` (p2p)
_RANK_PART = re.compile(r"\.rank(\d+)(?:-peer(\d+))?$")
_STREAM = re.compile(r" in stream (\d+) of (\d+) \(from .*\)$")
#: the END records whose ``how`` is a failure, each an instant of its own category
_FAILED = {"poisoned": "poison", "watchdog": "watchdog", "terminated": "terminated"}
#: phases in the order a viewer wants them at one timestamp (metadata first)
_PHASE_ORDER = {"M": 0, "X": 1, "s": 2, "f": 3, "i": 4}


def channel_of(name: str) -> str:
    """The channel a journal named ``name`` belongs to: its stem without the rank part ("" for
    a journal not named by its rank)."""
    stem = name.rsplit("/", 1)[-1]
    return _RANK_PART.sub("", stem) if _RANK_PART.search(stem) else ""


def rank_of(journal: Journal, fallback: int) -> int:
    """The rank that wrote ``journal``: its OPEN record's, else its name's, else ``fallback``."""
    rank = journal.opening.get("rank")
    if type(rank) is int:
        return rank
    m = _RANK_PART.search(journal.name)
    return int(m.group(1)) if m else fallback


def peer_of(journal: Journal) -> int | None:
    """The peer of a point-to-point end (``.rank0-peer1``: 1), None for a broadcast one."""
    m = _RANK_PART.search(journal.name)
    return int(m.group(2)) if m and m.group(2) is not None else None


def time_of(rec: jr.Record) -> float | None:
    """The record's ``t`` in seconds where it has one a viewer can place (``MAX_T``)."""
    t = rec.meta.get("t")
    if isinstance(t, int | float) and not isinstance(t, bool) and abs(t) <= MAX_T:
        return float(t)
    return None


@dataclass
class _Placed:
    """One record on its track: when it ends (``t_us``) and its slice's start."""

    record: jr.Record
    start_us: int
    t_us: int


@dataclass
class _Track:
    """One rank's records of one stream, placed in time."""

    pid: int
    tid: int
    journal: Journal
    #: the rank that wrote it, and its peer where it is a point-to-point end
    rank: int = 0
    peer: int | None = None
    placed: list[_Placed] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"rank {self.rank}" + (f" (peer {self.peer})" if self.peer is not None else "")


def _origin(journals: Sequence[Journal]) -> float:
    times = [t for j in journals for r in j.records if (t := time_of(r)) is not None]
    return min(times, default=0.0)


def _place(track: _Track, origin: float) -> None:
    """Each record's time on the track: its own ``t`` where it has one, strictly increasing."""
    prev: int | None = None
    for rec in track.journal.records:
        t = time_of(rec)
        if t is not None:
            at = round((t - origin) * 1e6)
        else:
            at = NO_TIME_US if prev is None else prev + NO_TIME_US
        if prev is not None:
            at = max(at, prev + 1)
        start = prev if prev is not None else max(at - 1, 0)
        at = max(at, start + 1)  # (the earliest record of all: from 0 to 1, not from -1)
        track.placed.append(_Placed(rec, start, at))
        prev = at


def _ids(rec: jr.Record, opening: dict[str, Any]) -> dict[str, int]:
    """The record's ids by the spec's role names (``call_id``, ``chunk_index``, ...)."""
    roles = opening.get("roles") if isinstance(opening.get("roles"), dict) else {}
    assert isinstance(roles, dict)
    out = {}
    for role, value in (("sequence", rec.seq), ("chunk", rec.chunk), ("epoch", rec.epoch)):
        if value is not None:
            out[str(roles.get(role) or role)] = value
    return out


def _slice(track: _Track, p: _Placed) -> dict[str, Any]:
    """An ENVELOPE or OBSERVE record as a complete slice with what it holds."""
    rec, opening = p.record, track.journal.opening
    args: dict[str, Any] = {"ids": _ids(rec, opening), "record": f"{rec.path}@{rec.offset}"}
    info = rec.info
    if isinstance(info, EnvelopeMeta):
        name = f"{info.dir} {info.action or '?'}"
        args.update(action=info.action, dir=info.dir, state=info.state, src=info.src)
        args.update(frame0_bytes=8 * len(rec.words), frame1_bytes=info.frame1_nbytes)
        args.update(record_bytes=rec.nbytes, frame1_digest=info.frame1_digest)
        for key in ("error", "frame0_error", "reason"):
            if getattr(info, key):
                args[key] = getattr(info, key)
        cat = "envelope"
    else:
        assert isinstance(info, ObserveMeta)
        name, cat = "observe", "observe"
        args.update(what=info.what, state=info.state, inputs=info.inputs)
        if info.ledger is not None:
            args["ledger"] = dict(info.ledger)
        if info.counts:
            args["counts"] = dict(info.counts)
    return _event("X", name, cat, track, p.start_us, dur=p.t_us - p.start_us, args=args)


def _event(
    ph: str,
    name: str,
    cat: str,
    track: _Track,
    ts: int,
    *,
    dur: int | None = None,
    args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ev: dict[str, Any] = {"ph": ph, "name": name, "cat": cat, "pid": track.pid, "tid": track.tid}
    ev["ts"] = ts
    if dur is not None:
        ev["dur"] = dur
    if ph == "i":
        ev["s"] = "t"
    if args is not None:
        ev["args"] = args
    return ev


def _instants(track: _Track) -> list[dict[str, Any]]:
    """Refusals, ends and reader problems on the track, each at its record's time (a problem
    at the time of the last record before it in its file)."""
    out = []
    args: dict[str, Any]
    for p in track.placed:
        rec, info = p.record, p.record.info
        if isinstance(info, EnvelopeMeta) and (info.error or info.frame0_error):
            args = {"ids": _ids(rec, track.journal.opening), "state": info.state}
            args["error"] = info.error or info.frame0_error
            out.append(_event("i", f"refused {info.action or '?'}", "refusal", track, p.t_us,
                              args=args))  # fmt: skip
        elif isinstance(info, EndMeta):
            cat = _FAILED.get(info.how, "end")
            args = {"how": info.how, "reason": info.reason}
            out.append(_event("i", f"END {info.how}", cat, track, p.t_us, args=args))
        if "t" in rec.meta and time_of(rec) is None:
            message = f"t={rec.meta['t']!r} is out of range; placed after the record before it"
            args = {"offset": rec.offset, "file": rec.path, "message": message}
            out.append(_event("i", "unplaceable time", "problem", track, p.t_us, args=args))
    for problem in track.journal.problems:
        before = [
            p
            for p in track.placed
            if p.record.path == problem.path and p.record.offset < problem.offset
        ]
        at = before[-1].t_us if before else (track.placed[0].t_us if track.placed else 0)
        args = {"offset": problem.offset, "file": problem.path, "message": problem.message}
        name = "torn tail" if problem.torn else "unreadable"
        out.append(_event("i", name, "problem", track, at, args=args))
    return out


def _flows(tracks: Sequence[_Track], first_id: int) -> list[dict[str, Any]]:
    """An arrow from each send to each receive of the same (source rank, sequence id) on the
    other tracks of the process: ``s`` and ``f`` share an id, one pair per receive."""
    # (source rank, the peer it sent to or None for a broadcast, sequence id)
    sends: dict[tuple[int, int | None, int], tuple[_Track, _Placed]] = {}
    for track in tracks:
        for p in track.placed:
            rec = p.record
            if rec.kind == jr.ENVELOPE and rec.meta.get("dir") == "send" and rec.seq is not None:
                sends.setdefault((track.rank, track.peer, rec.seq), (track, p))
    out = []
    n = first_id
    for track in tracks:
        for p in track.placed:
            rec = p.record
            src = rec.meta.get("src")
            if rec.kind != jr.ENVELOPE or rec.meta.get("dir") != "recv" or type(src) is not int:
                continue
            to = track.rank if track.peer is not None else None
            found = sends.get((src, to, rec.seq if rec.seq is not None else -1))
            if found is None:
                continue
            s_track, s = found
            args = {"ids": _ids(rec, track.journal.opening)}
            # bound to the enclosing slice ("bp": "e"): each end at its slice's last microsecond
            out.append(_event("s", "envelope", "flow", s_track, s.t_us - 1, args=args) | {"id": n})
            out.append(
                _event("f", "envelope", "flow", track, p.t_us - 1, args=args) | {"id": n, "bp": "e"}
            )
            n += 1
    return out


def _divergence_event(
    div: Divergence, tracks: Sequence[_Track], labels: Sequence[str]
) -> dict[str, Any] | None:
    """The first divergence as an instant on the track of the rank ``diff`` names first: at
    its record of the coordinate, at the journals' start (OPEN) or at its end (END, or its
    last record where it recorded none)."""
    if not div.odd or div.odd[0] not in labels:
        return None
    track = tracks[labels.index(div.odd[0])]
    coordinate = _STREAM.sub("", div.coordinate)
    placed = track.placed
    if not placed:
        return None
    at = placed[-1]
    if coordinate == "the journals' start":
        at = placed[0]
    elif coordinate != "the end of the stream":
        opening = track.journal.opening
        for p in placed:
            ids = " ".join(f"{k}={v}" for k, v in _ids(p.record, opening).items())
            if p.record.kind == jr.ENVELOPE and ids == coordinate:
                at = p
                break
    args = {"at": div.coordinate, "action": div.action, "differences": div.lines, "odd": div.odd}
    return _event("i", "first divergence", "divergence", track, at.t_us, args=args)


def _stream_tracks(group: Sequence[Journal], pid0: int) -> list[list[_Track]]:
    """The tracks of one channel's journals, one list per stream (aligned from each rank's
    latest stream, as ``diff`` pairs them), each stream its own ``pid``."""
    parts = [streams(j) for j in group]
    n = max(len(p) for p in parts)
    out: list[list[_Track]] = [[] for _ in range(n)]
    for i, (journal, p) in enumerate(zip(group, parts, strict=True)):
        rank, peer = rank_of(journal, i), peer_of(journal)
        for k, part in enumerate(p):
            stream = n - len(p) + k
            taken = {t.tid for t in out[stream]}
            tid = rank if rank not in taken else max(EXTRA_TIDS - 1, *taken) + 1
            out[stream].append(_Track(pid0 + stream, tid, part, rank, peer))
    return out


def trace(journals: Sequence[Journal]) -> dict[str, Any]:
    """The trace-event document of ``journals`` (``replay.load``'s, one per rank and
    channel): deterministic for given journals (events sorted, keys sorted when dumped)."""
    origin = _origin(journals)
    channels: dict[str, list[Journal]] = {}
    for j in journals:
        channels.setdefault(channel_of(j.name), []).append(j)
    events: list[dict[str, Any]] = []
    pid = 1
    for channel, group in sorted(channels.items()):
        per_stream = _stream_tracks(group, pid)
        for k, tracks in enumerate(per_stream):
            events += _process(channel, k, len(per_stream), tracks, origin, len(events))
        if len(group) >= 2:
            events += _divergence(group, per_stream)
        pid += len(per_stream)
    events.sort(key=_sort_key)
    return {"displayTimeUnit": "ms", "traceEvents": events}


def _process(
    channel: str, k: int, n: int, tracks: Sequence[_Track], origin: float, first_id: int
) -> list[dict[str, Any]]:
    """The events of one stream of a channel: names, slices, instants, flows."""
    events = []
    name = channel or "journals"
    name += f" (stream {k + 1} of {n})" if n > 1 else ""
    for i, track in enumerate(tracks):
        _place(track, origin)
        if i == 0:  # one name per process
            events.append(_event("M", "process_name", "", track, 0, args={"name": name}))
        events.append(_event("M", "thread_name", "", track, 0, args={"name": track.label}))
        events.append(
            _event("M", "thread_sort_index", "", track, 0, args={"sort_index": track.rank})
        )
        for p in track.placed:
            if p.record.kind in (jr.ENVELOPE, jr.OBSERVE):
                events.append(_slice(track, p))
        events += _instants(track)
    return events + _flows(tracks, first_id)


def _divergence(group: Sequence[Journal], per_stream: list[list[_Track]]) -> list[dict[str, Any]]:
    """The first divergence of a channel (as ``journal diff`` finds it) as an instant event
    in the stream it lies in."""
    div = diff(group).divergence
    if div is None:
        return []
    m = _STREAM.search(div.coordinate)
    tracks = per_stream[-1]
    if m is not None:  # stream k of the n that every rank holds: counted from the latest
        k, n = int(m.group(1)), int(m.group(2))
        tracks = per_stream[len(per_stream) - n + k - 1]
    labels = [printable(t.journal.name) for t in tracks]
    ev = _divergence_event(div, tracks, labels)
    return [] if ev is None else [ev]


def _sort_key(ev: dict[str, Any]) -> tuple[Any, ...]:
    return (
        ev["pid"],
        ev["ph"] != "M",
        ev["tid"],
        ev["ts"],
        _PHASE_ORDER.get(ev["ph"], 9),
        ev["name"],
        ev.get("id", 0),
        json.dumps(ev.get("args"), sort_keys=True),
    )


def dumps(doc: dict[str, Any]) -> str:
    """The document as the file holds it: one event a line, keys sorted (byte-identical for
    the same journals)."""
    events = ",\n".join(json.dumps(ev, sort_keys=True) for ev in doc["traceEvents"])
    return f'{{"displayTimeUnit": "ms", "traceEvents": [\n{events}\n]}}\n'
