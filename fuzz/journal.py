"""The journal reader campaign: mutated journal files through ``scan``, ``replay`` and
``diff`` (docs/journal.md).

Seeds are real journals: each target's valid envelopes (strategies) written by the runtime's
own ``JournalWriter`` in full and digest mode, without a process group. Each input is a seed
mutated by 1-4 byte-level operators (bit flips, truncation, a changed length, checksum or
version field, garbage, a record duplicated, dropped or moved, a record of another protocol
spliced in) or by a record-level operator that rewrites a record's body (metadata, frame 0
words, segment lengths and bytes) and reseals its checksum, so mutations reach past the
checksum into the body parser, the frame 0 checks, decode and validation. The typed-metadata
operator sets a key of the record's kind's schema (or a key no schema knows) to a value of
another type, a hostile string or deep JSON, and reseals: a checksum is not a signature.

The oracle: the reader never raises and reports every problem at an offset inside the file;
the records it returns do not overlap, lie in file order, re-verify and hold metadata that
fits their kind's schema (typed accessors included); ``journal show`` renders each as one
printable line; ``replay`` and ``diff`` over them never raise (a refusal is a typed
outcome); nothing takes over ``SLOW_S``.
"""

from __future__ import annotations

import json
import random
import struct
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpwire.journal_cli import _record_row, _row_text
from tpwire.runtime import journal as jr
from tpwire.runtime import journal_format as jf
from tpwire.runtime.journal_diff import diff
from tpwire.runtime.replay import Journal, replay
from tpwire.runtime.wire import seal_words

from .campaign import draw
from .targets import Target

SLOW_S = 2.0


@dataclass
class JournalTotals:
    inputs: int = 0
    seconds: float = 0.0
    labels: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)
    slowest: float = 0.0


def seed_journals(targets: list[Target], n: int = 6, seed: int = 0) -> list[tuple[Target, bytes]]:
    """One full-mode and one digest-mode journal per target, written by ``JournalWriter``."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in targets:
            b = t.module.BINDINGS
            envelopes = draw(t.strategies.valid_envelopes(), n, seed)
            for mode in ("full", "digest"):
                folder = Path(tmp) / f"{t.name.replace('/', '_')}-{mode}"
                w = jr.JournalWriter(
                    jr.JournalConfig(str(folder), mode), b, rank=0, world=1, name="r", source=0
                )
                seq = 0
                for header, msg in envelopes:
                    # the ordering rules want a strictly increasing sequence id
                    header = _with_seq(b, header, seq)
                    seq += 1
                    try:
                        prep = b.prepare(msg, header)
                    except Exception:
                        continue
                    segments = [jr.tensor_bytes(s.contiguous()) for s in prep.frames().segments]
                    frame0 = seal_words(prep.words).tobytes()
                    w.envelope(header, frame0, sent=True, state="sent", segments=segments)
                    w.observe(header, {"what": "ledger", "ledger": {"expected": 2, "observed": 2}})
                w.end("STOP", None)
                w.close()
                for path in sorted(folder.glob("*.tpj")):
                    out.append((t, path.read_bytes()))
    return out


def _with_seq(b: Any, header: Any, seq: int) -> Any:
    import dataclasses

    try:
        return dataclasses.replace(header, **{b.roles.sequence: seq})
    except Exception:
        return header


def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, end) of each well-formed record of ``data`` (the seed's, before mutation)."""
    return [(r.offset, r.offset + r.nbytes) for r in jr.scan_bytes(data).records]


def _reseal(rec: bytearray) -> bytes:
    head = bytes(rec[: jr.HEAD.size])
    body = bytes(rec[jr.HEADER_NBYTES :])
    head = head[:40] + struct.pack("<I", len(body)) + head[44:]
    return head + jr.CHECKSUM.pack(jf._checksum(head, [body])) + body


def _body_mutation(rng: random.Random, body: bytearray) -> bytearray:
    """Rewrite a record body: metadata JSON, frame 0 words, segment table or bytes."""
    choice = rng.randrange(7)
    if choice == 0 and len(body) > 8:  # flip bytes anywhere
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    elif choice == 1:  # metadata replaced by hostile JSON
        meta = rng.choice(
            [b"[]", b"{", b'{"action": 1e999}', b'{"src": "x", "state": []}', b"\xff\xfe",
             b'{"a":' * 200 + b"1" + b"}" * 200, b'{"segments": [-1, 1e30], "ledger": 5}']
        )  # fmt: skip
        (n,) = struct.unpack_from("<I", body, 0)
        body[: 4 + n] = struct.pack("<I", len(meta)) + meta
    elif choice == 2:  # a length field of the body lies
        at = rng.choice([0, rng.randrange(max(1, len(body) - 4))])
        struct.pack_into("<I", body, at, rng.choice([0, 1, 7, 1 << 31, len(body), 0xFFFFFFFF]))
    elif choice == 3:  # frame 0 word changed (then the frame's own checksum may refuse it)
        (n,) = struct.unpack_from("<I", body, 0)
        at = 4 + n
        (w,) = struct.unpack_from("<I", body, at)
        if w:
            i = rng.randrange(w)
            struct.pack_into("<q", body, at + 4 + 8 * i, rng.choice([0, -1, 2**63 - 1, 1 << 40]))
    elif choice == 4:  # frame 0 changed and resealed: the reader's checks behind the seal
        (n,) = struct.unpack_from("<I", body, 0)
        at = 4 + n
        (w,) = struct.unpack_from("<I", body, at)
        if w > 2:
            words = list(struct.unpack_from(f"<{w}q", body, at + 4))
            i = rng.randrange(2, w - 1)
            words[i] = rng.choice([0, -1, 1, 2**31, -(2**63), words[i] + 1, words[i] ^ 1])
            body[at + 4 : at + 4 + 8 * w] = seal_words(words).tobytes()
    elif choice == 5:  # truncated or extended body
        if rng.random() < 0.5:
            del body[rng.randrange(len(body) + 1) :]
        else:
            body.extend(rng.randbytes(rng.randint(1, 64)))
    else:  # segment bytes changed
        if len(body) > 16:
            start = rng.randrange(len(body) // 2, len(body))
            body[start : start + 8] = rng.randbytes(8)
    return body


#: values a typed-metadata mutation gives a key: other types, edges, hostile text, depth
HOSTILE_VALUES: list[Any] = [
    "x", "", 3, -1, 0, 2**63, -(2**63) - 1, True, False, None, 1.5, float("inf"), [], [0],
    ["a", "uint8", [1], 1, 0, 0], {}, {"a": "b"}, {"expected": "2", "observed": 2},
    {"sequence": "a b"}, "a\nb\x1b[2J\u202e", "0x" + "g" * 16, "0x" + "0" * 16,
    "f" * 64, "send", "recv", "digest",
]  # fmt: skip


def _deep(n: int) -> Any:
    out: Any = 1
    for _ in range(n):
        out = [out]
    return out


def _typed_mutation(rng: random.Random, kind: int, body: bytearray) -> bytearray:
    """A key of the record kind's schema (or an unknown one) set to a hostile value."""
    (n,) = struct.unpack_from("<I", body, 0)
    try:
        meta = json.loads(bytes(body[4 : 4 + n]))
    except ValueError:
        return body
    if not isinstance(meta, dict):
        return body
    schema = jf.SCHEMAS.get(kind, {})
    key = rng.choice([*schema, "extra_key", "offset", "kind"]) if schema else "t"
    if rng.random() < 0.15 and key in meta and key not in ("extra_key", "offset", "kind"):
        del meta[key]  # a required key missing
    else:
        meta[key] = (
            _deep(rng.choice([15, 16, 17, 900]))
            if rng.random() < 0.1
            else rng.choice(HOSTILE_VALUES)
        )
    try:
        raw = json.dumps(meta).encode()
    except (ValueError, RecursionError):
        return body
    body[: 4 + n] = struct.pack("<I", len(raw)) + raw
    return body


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    buf = bytearray(data)
    spans = _records(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(12)
        if op == 0 and buf:  # bit flips
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # a torn tail
            del buf[rng.randrange(len(buf)) :]
        elif op == 2 and spans:  # a header field changed
            at, _ = rng.choice(spans)
            field_at = rng.choice([4, 6, 7, 8, 16, 24, 32, 40, 44, 48])
            if at + field_at + 4 <= len(buf):
                struct.pack_into("<I", buf, at + field_at, rng.getrandbits(32))
        elif op == 3:  # garbage inserted
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.choice([rng.randbytes(rng.randint(1, 80)), jr.MAGIC * 3, jr.MAGIC])
        elif op in (4, 5) and spans:  # a record duplicated or dropped
            at, end = rng.choice(spans)
            if end <= len(buf):
                chunk = bytes(buf[at:end])
                if op == 4:
                    where = rng.choice([s for s, _ in spans] + [len(buf)])
                    buf[where:where] = chunk
                else:
                    del buf[at:end]
            spans = _records(bytes(buf))
        elif op == 6 and others:  # a record of another protocol (or mode) spliced in
            other = rng.choice(others)
            ospans = _records(other)
            if ospans:
                s, e = rng.choice(ospans)
                where = rng.choice([a for a, _ in spans] + [len(buf)]) if spans else 0
                buf[where:where] = other[s:e]
                spans = _records(bytes(buf))
        elif op in (7, 8, 9) and spans:  # a body rewritten, checksum resealed
            at, end = rng.choice(spans)
            if end <= len(buf):
                rec = bytearray(buf[at:end])
                body = bytearray(rec[jr.HEADER_NBYTES :])
                try:
                    body = _body_mutation(rng, body)
                except (struct.error, OverflowError):  # an earlier operator broke the layout
                    pass
                buf[at:end] = _reseal(rec[: jr.HEADER_NBYTES] + body)
                spans = _records(bytes(buf))
        elif op == 10 and spans:  # fixed header ids rewritten and resealed
            at, end = rng.choice(spans)
            if end <= len(buf):
                rec = bytearray(buf[at:end])
                struct.pack_into(
                    "<q", rec, rng.choice([8, 16, 24, 32]), rng.choice([0, -1, -(2**63), 5])
                )
                buf[at:end] = _reseal(rec)
                spans = _records(bytes(buf))
        elif op == 11 and spans:  # typed metadata of a record's kind rewritten and resealed
            at, end = rng.choice(spans)
            if end <= len(buf):
                rec = bytearray(buf[at:end])
                body = bytearray(rec[jr.HEADER_NBYTES :])
                try:
                    body = _typed_mutation(rng, rec[6], body)
                except (struct.error, OverflowError):
                    pass
                buf[at:end] = _reseal(rec[: jr.HEADER_NBYTES] + body)
                spans = _records(bytes(buf))
    return bytes(buf)


def judge(t: Target, data: bytes, seed_journal: Journal | None) -> tuple[str, str | None]:
    """Run the reader, replay and diff on ``data``: (outcome label, finding or None)."""
    found = jr.scan_bytes(data, "fuzz.tpj")
    size = len(data)
    last_end = 0
    for p in found.problems:
        if not 0 <= p.offset <= size:
            return "bad-offset", f"problem offset {p.offset} outside 0..{size}: {p.message}"
    for r in found.records:
        if r.offset < last_end or r.offset + r.nbytes > size:
            return "overlap", f"record at {r.offset} overlaps or runs past the file"
        last_end = r.offset + r.nbytes
        again = jr.scan_bytes(data[r.offset : r.offset + r.nbytes], "one")
        if again.problems and "another protocol" not in again.problems[0].message:
            return "unverified", f"record at {r.offset} does not re-verify: {again.problems}"
        wrong = jf.check_meta(r.kind, r.meta)
        if wrong is not None:
            return "untyped", f"record at {r.offset} holds wrong-typed metadata: {wrong}"
        info = r.info
        if info.extra.keys() & jf.SCHEMAS[r.kind].keys():
            return "untyped", f"record at {r.offset}: a known key among the extra ones"
        for everything in (False, True):
            line = _row_text(_record_row(r, (found.opening or {}).get("roles") or {},
                                         everything=everything))  # fmt: skip
            if not line.isprintable():
                return "unescaped", f"record at {r.offset} shows as {line!r}"
    journal = Journal("fuzz", found.opening or {}, found.records, found.problems, ["fuzz.tpj"])
    rep = replay(journal, t.module.BINDINGS, stop=False)
    if seed_journal is not None:
        diff([seed_journal, journal], t.module.BINDINGS)
    if found.torn_tail is not None:
        label = "torn"
    elif found.problems:
        text = found.problems[0].message
        kind, sep, rest = text.partition(": ")
        text = rest if (sep and kind in jr.KIND_NAMES.values()) or kind == "record" else text
        label = text.split("(")[0].split(";")[0].split(":")[0].strip()[:40]
    elif rep.first_refused is not None:
        label = "replay refused"
    else:
        label = "clean"
    return label, None


def run_journal_campaign(
    targets: list[Target],
    *,
    seconds: float = 30.0,
    min_inputs: int = 0,
    max_inputs: int | None = None,
    seed: int = 0,
    on_finding: Callable[[str], None] | None = None,
) -> JournalTotals:
    rng = random.Random(seed)
    seeds = seed_journals(targets, seed=seed)
    raw = [d for _, d in seeds]
    parsed = {
        id(d): Journal("seed", (s := jr.scan_bytes(d)).opening or {}, s.records, s.problems)
        for _, d in seeds
    }
    totals = JournalTotals()
    start = time.monotonic()
    while True:
        spent = time.monotonic() - start
        if max_inputs is not None and totals.inputs >= max_inputs:
            break
        if spent >= seconds and totals.inputs >= min_inputs:
            break
        t, data = rng.choice(seeds)
        mutated = mutate(rng, data, raw)
        t0 = time.perf_counter()
        try:
            label, finding = judge(t, mutated, parsed[id(data)])
        except Exception as exc:  # the reader, replay or diff raised: a finding
            label = "exception"
            tb = traceback.extract_tb(exc.__traceback__)
            where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
            finding = f"{type(exc).__name__}: {exc} at {where}"
        took = time.perf_counter() - t0
        totals.slowest = max(totals.slowest, took)
        if took > SLOW_S and finding is None:
            finding = f"slow: {took:.2f} s"
        totals.inputs += 1
        totals.labels[label] += 1
        if finding is not None:
            totals.findings.append(f"{t.name}: {finding}")
            if on_finding is not None:
                on_finding(finding)
    totals.seconds = time.monotonic() - start
    return totals


def summary(totals: JournalTotals) -> list[str]:
    lines = [
        f"{'journal inputs':<26}{totals.inputs:>12,}  (in {totals.seconds:.0f} s)",
        f"{'journal findings':<26}{len(totals.findings):>12,}",
        f"{'slowest journal read':<26}{totals.slowest * 1000:>12.1f} ms",
        "journal outcomes (first problem):",
        *(f"  {k:<40}{v:>10,}" for k, v in totals.labels.most_common(12)),
    ]
    lines += [f"  FINDING {f[:150]}" for f in totals.findings[:10]]
    return lines
