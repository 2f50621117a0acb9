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
    """Ranks disagree on something that must be identical; ``diff`` has one line per key."""

    def __init__(self, diff: Sequence[str]) -> None:
        self.diff = tuple(diff)
        super().__init__("rank parity mismatch:\n" + "\n".join(f"  {line}" for line in diff))


#: the part of a record each rank reports to every other one without comparing it: how
#: this rank's setup went (``status.journal``: None, or why its journal cannot be created)
STATUS = "status"


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
    if status is not None:
        rec[STATUS] = {k: status[k] for k in sorted(status)}
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
    """Exchange records and raise ``ParityMismatch`` (on every rank) if they differ."""
    records = exchange(rec, group)
    lines = diff(records)
    if lines:
        raise ParityMismatch(lines)
    return records
