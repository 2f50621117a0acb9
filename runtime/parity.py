"""The open handshake: every rank shows its parity record, every rank sees every diff.

A record holds what must be identical on all ranks before the first message (spec
fingerprint, plan, chosen environment keys, flags that gate collectives, compile on/off).
Records travel as canonical JSON bytes through two all-gathers (lengths, then padded
bytes): no pickle. Every rank computes the same diff from the same records, so a mismatch
fails on all ranks at once instead of hanging the first gated collective.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch.distributed as dist

from .bindings import bindings_of
from .escape import printable
from .groups import LengthsRefused, all_gather_bytes

Record = dict[str, Any]


class ParityMismatch(RuntimeError):
    """Ranks disagree on something that must be identical; ``diff`` has one line per key.

    ``words``: what differs, in words on one line (``explain``); with ``rank`` (a channel's
    ``open()`` sets it) the message is that rank's line, ``tpwire[rank N]: PARITY MISMATCH,
    the channel did not open: ...``, the line the channel prints."""

    def __init__(
        self, diff: Sequence[str], words: str | None = None, *, rank: int | None = None
    ) -> None:
        self.diff = tuple(diff)
        self.words = words if words is not None else "; ".join(self.diff)
        self.rank = rank
        if rank is not None:
            message = (
                f"tpwire[rank {rank}]: PARITY MISMATCH, the channel did not open: {self.words}"
            )
        elif words is not None:
            message = f"rank parity mismatch: {words}"
        else:
            message = "rank parity mismatch:\n" + "\n".join(f"  {line}" for line in diff)
        super().__init__(message)


#: the part of a record each rank reports to every other one without comparing it: how
#: this rank's setup went (``status.journal``: None, or why its journal cannot be created),
#: and what ``explain`` names when fingerprints differ (``spec_sha256``, the messages'
#: ``versions``: the fingerprint covers both)
STATUS = "status"
#: the most a record spends on its messages' versions (bytes of JSON; beyond, none are shown)
MAX_VERSIONS_BYTES = 2048


def record(
    protocol: Any,
    env_keys: Iterable[str] = (),
    flags: Mapping[str, object] | None = None,
    status: Mapping[str, object] | None = None,
) -> Record:
    """This rank's parity record; ``status``: what it reports without it being compared."""
    flags = flags or {}
    bindings = bindings_of(protocol)
    rec: Record = {
        "protocol": bindings.protocol,
        "fingerprint": f"{bindings.fingerprint:#018x}",
        "env": {k: os.environ.get(k) for k in sorted(env_keys)},
        "flags": {k: flags[k] for k in sorted(flags)},
    }
    versions = {name: getattr(cls, "VERSION", None) for name, cls in bindings.messages.items()}
    if len(json.dumps(versions, default=str)) > MAX_VERSIONS_BYTES:
        versions = {}  # a protocol of many messages: the record stays within its bound
    about = {"spec_sha256": bindings.spec_sha256, "versions": versions, **dict(status or {})}
    rec[STATUS] = {k: about[k] for k in sorted(about)}
    return rec


def statuses(records: Sequence[Mapping[str, Any]], key: str) -> list[object]:
    """Each rank's ``status`` entry ``key`` (None where a record has none)."""
    out: list[object] = []
    for r in records:
        status = r.get(STATUS)
        out.append(status.get(key) if isinstance(status, Mapping) else None)
    return out


def _flatten(rec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in rec.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def diff(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per key whose value is not the same on every rank (``status`` aside).

    A key is a peer's text (any JSON string): it is shown escaped (``printable``), so a
    newline or a terminal escape in it cannot forge a line of the mismatch; values are
    shown by ``repr``, which escapes them too."""
    flat = [_flatten({k: v for k, v in r.items() if k != STATUS}) for r in records]
    keys = sorted({k for f in flat for k in f})
    lines = []
    for key in keys:
        values = [f.get(key, "<missing>") for f in flat]
        if any(v != values[0] for v in values[1:]):
            shown = ", ".join(f"rank{i}={v!r}" for i, v in enumerate(values))
            lines.append(f"{printable(key)}: {shown}")
    return lines


#: The largest parity record a rank may show (bytes of canonical JSON). A record is a few
#: hundred bytes; the bound keeps a peer's length from sizing this rank's allocation.
MAX_RECORD_BYTES = 8192


def exchange(rec: Record, group: dist.ProcessGroup | None = None) -> list[Record]:
    """All-gather every rank's record (canonical JSON bytes; parsed, never unpickled).

    Raises ``ParityMismatch`` naming the rank, on every rank, when a record is longer than
    ``MAX_RECORD_BYTES`` or is not a JSON object (each rank judges the same bytes, so every
    rank raises)."""
    raw = json.dumps(rec, sort_keys=True, separators=(",", ":"), default=str).encode()
    try:
        gathered = all_gather_bytes(raw, group, limit=MAX_RECORD_BYTES)
    except LengthsRefused as exc:
        raise ParityMismatch(
            [
                f"rank {r}: a parity record of {n} bytes (the bound is 0..{exc.limit})"
                for r, n in exc.bad.items()
            ]
        ) from None
    records: list[Record] = []
    problems: list[str] = []
    for r, b in enumerate(gathered):
        try:
            parsed = json.loads(b.decode("utf-8"))
            if not isinstance(parsed, dict):
                raise ValueError(f"a JSON {type(parsed).__name__}, not an object")
            _flatten(parsed)  # nesting must be shallow enough to compare
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError too
            problems.append(f"rank {r}: the parity record is not a JSON object: {_short(exc)}")
            continue
        records.append(parsed)
    if problems:
        raise ParityMismatch(problems)
    return records


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 120 else text[:117] + "..."


def check(rec: Record, group: dist.ProcessGroup | None = None) -> list[Record]:
    """Exchange records and raise ``ParityMismatch`` (on every rank) if they differ, with
    what differs in words (``explain``)."""
    records = exchange(rec, group)
    lines = diff(records)
    if lines:
        try:
            words = explain(records)
        except Exception:  # a peer's record: the mismatch is raised whatever wording it defeats
            words = None
        raise ParityMismatch(lines, words)
    return records


def _ranks(records: Sequence[Mapping[str, Any]]) -> list[int]:
    """Each record's rank: the global rank it reports (``status.rank``), else its index."""
    out = []
    for i, r in enumerate(statuses(records, "rank")):
        out.append(r if type(r) is int else i)
    return out


def _by_value(values: Sequence[object], ranks: Sequence[int], show: Any = None) -> str:
    """``'a' on ranks 0, 2 vs 'b' on rank 1``: the ranks of each value, in order of the first
    rank that holds it (``show`` makes a value's text; ``repr`` by default)."""
    groups: list[tuple[object, list[int]]] = []
    for value, rank in zip(values, ranks, strict=True):
        for held, members in groups:
            if held == value and type(held) is type(value):
                members.append(rank)
                break
        else:
            groups.append((value, [rank]))
    parts = []
    for value, members in groups:
        text = show(value) if show is not None else _value(value)
        where = "rank" if len(members) == 1 else "ranks"
        parts.append(f"{text} on {where} {', '.join(str(m) for m in members)}")
    return " vs ".join(parts)


_ABSENT = object()


def _value(value: object) -> str:
    if value is _ABSENT:
        return "absent"
    return printable(repr(value))


def _sha(value: object) -> str:
    return printable(value[:12]) if isinstance(value, str) and value else "unknown"


def _versions(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, Mapping) else {}


def _spec_words(protocol: object, sha: object, versions: object) -> str:
    """``tp_control (spec sha256 71742581f3e6, messages A v1, B v1)``: what is known of it."""
    name = printable(protocol if isinstance(protocol, str) else repr(protocol))
    about = []
    if isinstance(sha, str) and sha:
        about.append(f"spec sha256 {_sha(sha)}")
    known = _versions(versions)
    if known:
        about.append(
            "messages "
            + ", ".join(f"{printable(m)} v{printable(v)}" for m, v in sorted(known.items()))
        )
    return f"{name} ({', '.join(about)})" if about else name


def explain(records: Sequence[Mapping[str, Any]]) -> str:
    """What differs between the ranks' records, in words, on one line: the protocol (with each
    one's spec sha256 and message versions), else the spec of the one protocol (the sha256s,
    the message versions that differ) when the fingerprints do, then each environment key and
    flag that differs with every rank's value. A peer's text is escaped (``printable``)."""
    ranks = _ranks(records)
    flat = [_flatten({k: v for k, v in r.items() if k != STATUS}) for r in records]
    shas = statuses(records, "spec_sha256")
    versions = statuses(records, "versions")
    items: list[str] = []
    protocols = [f.get("protocol", _ABSENT) for f in flat]
    prints = [f.get("fingerprint", _ABSENT) for f in flat]
    if any(p != protocols[0] for p in protocols):
        shown = [_spec_words(p, s, v) for p, s, v in zip(protocols, shas, versions, strict=True)]
        items.append(f"the protocol differs: {_by_value(shown, ranks, show=str)}")
    elif any(f != prints[0] for f in prints):
        name = printable(protocols[0] if isinstance(protocols[0], str) else repr(protocols[0]))
        if any(s != shas[0] for s in shas):
            parts = [f"sha256 {_by_value([_sha(s) for s in shas], ranks, show=str)}"]
            tables = [_versions(v) for v in versions]
            for message in sorted({m for t in tables for m in t}):
                held = [t.get(message, _ABSENT) for t in tables]
                if any(h != held[0] for h in held):
                    shown = [f"v{printable(h)}" if h is not _ABSENT else "absent" for h in held]
                    parts.append(
                        f"message {printable(message)} {_by_value(shown, ranks, show=str)}"
                    )
            items.append(f"the spec of {name} differs: " + ", ".join(parts))
        else:
            items.append(
                f"the wire layout of {name} differs: fingerprint "
                f"{_by_value([printable(p) for p in prints], ranks, show=str)}, from the same "
                f"spec (sha256 {_sha(shas[0])}): bindings generated by different tpwire versions"
            )
    keys = sorted({k for f in flat for k in f} - {"protocol", "fingerprint"})
    for key in keys:
        values = [f.get(key, _ABSENT) for f in flat]
        if all(v == values[0] for v in values[1:]):  # as ``diff`` compares
            continue
        if key.startswith("env."):
            what = f"environment variable {printable(key[4:])}"
            show = lambda v: "unset" if v is None else _value(v)  # noqa: E731
            items.append(f"{what} differs: {_by_value(values, ranks, show=show)}")
        elif key.startswith("flags."):
            items.append(f"flag {printable(key[6:])} differs: {_by_value(values, ranks)}")
        else:
            items.append(f"{printable(key)} differs: {_by_value(values, ranks)}")
    return "; ".join(items) or "; ".join(diff(records))
