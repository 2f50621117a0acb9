"""The journal reader under hostile files (docs/journal.md, "Reading bad input"), and the
escaping of peer-supplied text before it reaches a terminal, a log or a table
(``tpwire.runtime.escape``)."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tpwire.runtime import journal_format as jf
from tpwire.runtime.escape import printable

pytestmark = pytest.mark.timeout(120)


# --- escape.printable --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, 1-2 ünïcode ✓ 漢字", "plain text, 1-2 ünïcode ✓ 漢字"),
        ("two\nlines", "two\\nlines"),
        ("cr\rlf\r\n", "cr\\rlf\\r\\n"),
        ("tab\there", "tab\\there"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("c1 \x85 \x9b31m", "c1 \\x85 \\x9b31m"),
        ("bidi \u202eevil\u202c \u2066x\u2069", "bidi \\u202eevil\\u202c \\u2066x\\u2069"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("zw\u200bj\ufeff", "zw\\u200bj\\ufeff"),
        ("a\\nb", "a\\\\nb"),  # a literal backslash-n is not shown as an escaped newline
        ("surrogate \udcff", "surrogate \\udcff"),
        ("tag \U000e0041", "tag \\U000e0041"),
        ("nbsp\xa0", "nbsp\\xa0"),
    ],
)
def test_printable_escapes_every_invisible_character(raw: str, shown: str) -> None:
    out = printable(raw)
    assert out == shown
    assert out.isprintable()
    assert len(out.splitlines()) <= 1


def test_printable_takes_any_object_and_keeps_one_line() -> None:
    assert printable(None) == "None"
    assert printable(3) == "3"
    assert printable(b"a\nb") == "b'a\\\\nb'"  # str(bytes) already escapes; the \ is kept visible
    every = "".join(map(chr, range(0x2100))) + "\U0010ffff"
    out = printable(every)
    assert out.isprintable()
    assert "\n" not in out and "\x1b" not in out and "\u2028" not in out


def test_printable_limit_cuts_between_escapes() -> None:
    assert printable("abcdef", 10) == "abcdef"
    assert printable("abcdefghijkl", 8) == "abcde..."
    # "\x1b" is four characters: cut before it, never inside it
    assert printable("ab\x1bcdef", 8) == "ab..."
    assert printable("abc", 0) == ""
    assert printable("a" * 100, 2) == ".."
    for limit in range(0, 20):
        out = printable("x\n\x1b[2J\u202e" * 5, limit)
        assert len(out) <= limit
        assert "\x1b" not in out and "\n" not in out
    with pytest.raises(ValueError, match="limit"):
        printable("abc", -1)


# --- a real journal to spoil -------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
KINDS = {jf.OPEN: "OPEN", jf.ENVELOPE: "ENVELOPE", jf.OBSERVE: "OBSERVE", jf.END: "END"}


def _write_journal(folder: Path, n: int = 4, end_reason: str | None = None) -> Path:
    """A sender's full-mode journal of ``n`` envelopes, each with an observation, then END."""
    from journal_scenarios import plan

    from tpwire.generated import tp_control as tc
    from tpwire.runtime import journal as jr
    from tpwire.runtime.wire import seal_words

    w = jr.JournalWriter(
        jr.JournalConfig(str(folder), "full"), tc.BINDINGS, rank=0, world=1, name="rank0",
        source=0,
    )  # fmt: skip
    for i in range(n):
        msg, h = plan(i)
        prep = tc.BINDINGS.prepare(msg, h)
        segments = [jr.tensor_bytes(s.contiguous()) for s in prep.frames().segments]
        w.envelope(h, seal_words(prep.words).tobytes(), sent=True, state="sent", segments=segments)
        w.observe(h, {
            "what": "observed", "state": "completed", "inputs": jf.hex64(i),
            "fields": {"latents": jf.hex64(7)}, "outputs": {"latents out": jf.hex64(8)},
            "counts": {"generator_calls": 2}, "ledger": {"expected": 2, "observed": 2},
        })  # fmt: skip
    w.end("SHUTDOWN", end_reason)
    w.close()
    (path,) = folder.glob("*.tpj")
    return path


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _write_journal(tmp_path_factory.mktemp("j")).read_bytes()


def _record(
    kind: int, meta: bytes | dict[str, Any], fingerprint: int, *, words: bytes = b""
) -> bytes:
    """One record with exactly these metadata bytes, checksummed as the writer does."""
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    body = struct.pack("<I", len(raw)) + raw + struct.pack("<I", len(words) // 8) + words
    body += struct.pack("<I", 0)
    head = jf.HEAD.pack(jf.MAGIC, 1, kind, 0, fingerprint, 5, 4, 0, len(body), 0)
    return head + jf.CHECKSUM.pack(jf._checksum(head, [body])) + body


def _replace(data: bytes, rec: jf.Record, new: bytes) -> bytes:
    return data[: rec.offset] + new + data[rec.offset + rec.nbytes :]


def _cli(*argv: str) -> tuple[int, str, str]:
    """The command line as a user runs it (its own process: a hang is a timeout)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tpwire", *argv], capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr


def _clean(code: int, out: str, err: str) -> None:
    assert code in (0, 1, 2), (code, out, err)
    assert "Traceback" not in out + err and "internal error" not in err, (out, err)


# --- item: readers open regular files only, read in chunks, keep a bounded list of problems


def _in_child(script: str, *, limit_as: int | None = None, timeout: float = 120) -> Any:
    """Run ``script`` in a child Python (a hang is a timeout there, never here); it prints
    one JSON document as its last line."""

    def limits() -> None:
        if limit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
        preexec_fn=limits, cwd=REPO / "tests",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.timeout(300)
def test_a_fifo_named_tpj_is_refused_by_every_reader_without_blocking(
    tmp_path: Path, journal: bytes
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "tp_control.rank0.000000.tpj").write_bytes(journal)
    (b / "tp_control.rank0.000000.tpj").write_bytes(journal)
    fifo = a / "tp_control.rank0.000001.tpj"
    os.mkfifo(fifo)
    script = f"""
import contextlib, io, json, sys
from tpwire.cli import main
from tpwire.generated import tp_control as tc
from tpwire.runtime import journal_format as jf
from tpwire.runtime.replay import ReplayError, ReplaySource, load
out = {{}}
found = jf.scan({str(fifo)!r})
out["scan"] = [str(p) for p in found.problems]
out["load"] = [[len(j.records), [str(p) for p in j.problems]] for j in load([{str(a)!r}])]
try:
    out["source"] = sum(1 for _ in ReplaySource([{str(a)!r}], tc))
except ReplayError as exc:  # a damaged journal may be refused as a whole: said, not hung
    out["source"] = str(exc)
for argv in (["journal", "show", {str(a)!r}], ["journal", "diff", {str(a)!r}, {str(b)!r}],
             ["replay", {str(a)!r}], ["journal", "show", {str(fifo)!r}]):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        code = main(argv)
    out.setdefault("cli", []).append([code, o.getvalue(), e.getvalue()])
print(json.dumps(out))
"""
    t0 = time.monotonic()
    out = _in_child(script, timeout=240)
    assert time.monotonic() - t0 < 240
    refused = f"{fifo}: offset 0: not a regular file (a FIFO); not read"
    assert out["scan"] == [refused]
    ((records, problems),) = out["load"]
    assert records > 0 and problems == [refused]
    # the regular file's envelopes are fed, or the journal refused for its unread file
    assert out["source"] == 4 or "not a regular file (a FIFO)" in out["source"], out["source"]
    show, diff, replay, show_fifo = out["cli"]
    assert show[0] == 1 and "PROBLEM: not a regular file (a FIFO)" in show[1], show
    assert diff[0] in (0, 1) and "not a regular file (a FIFO)" in diff[1], diff
    assert replay[0] in (0, 1) and "not a regular file (a FIFO)" in replay[1], replay
    assert show_fifo[0] == 1 and "0 records, 1 problem(s)" in show_fifo[1], show_fifo
    for _, text, err in out["cli"]:
        assert "Traceback" not in text + err and "internal error" not in err


def test_a_symlink_to_dev_zero_is_refused_and_one_to_a_journal_is_followed(
    tmp_path: Path, journal: bytes
) -> None:
    zero = tmp_path / "zero.tpj"
    zero.symlink_to("/dev/zero")
    script = f"""
import json
from tpwire.runtime import journal_format as jf
print(json.dumps([str(p) for p in jf.scan({str(zero)!r}).problems]))
"""
    # 1 GiB of address space: reading /dev/zero to its end would end in MemoryError
    out = _in_child(script, limit_as=1 << 30, timeout=60)
    assert out == [f"{zero}: offset 0: not a regular file (a character device); not read"]
    real = tmp_path / "real.tpj"
    real.write_bytes(journal)
    link = tmp_path / "link.tpj"
    link.symlink_to(real)
    via_link, direct = jf.scan(link), jf.scan(real)
    assert not via_link.problems and via_link.records
    assert [r.meta for r in via_link.records] == [r.meta for r in direct.records]
    # a folder named like a journal, a dangling link, a path through a regular file
    (tmp_path / "folder.tpj").mkdir()
    assert (
        "not a regular file (a directory)" in jf.scan(tmp_path / "folder.tpj").problems[0].message
    )
    (tmp_path / "dangling.tpj").symlink_to(tmp_path / "gone")
    for bad in (tmp_path / "dangling.tpj", real / "x.tpj"):
        (p,) = jf.scan(bad).problems
        assert p.offset == 0 and p.message.startswith("cannot read: ")


@pytest.mark.timeout(300)
def test_sixteen_mib_of_magic_scans_in_seconds_with_bounded_memory(tmp_path: Path) -> None:
    """16 MiB of ``TPJR`` (before: one problem per 4 bytes, 17 s and 1.2 GB for ``scan``,
    48 s and 3 GB for ``journal show``), and 4 MiB of headers that look like records but
    fail their checksum: the first ``MAX_PROBLEMS`` problems kept, the rest counted."""
    magic = tmp_path / "magic.tpj"
    magic.write_bytes(jf.MAGIC * (4 << 20))
    head = jf.HEAD.pack(jf.MAGIC, 1, jf.ENVELOPE, 0, 1, 2, 3, 4, 0, 0) + b"\0" * 8
    fakes = tmp_path / "fakes.tpj"
    fakes.write_bytes(head * ((4 << 20) // len(head)))
    script = f"""
import json, resource, time
from tpwire.runtime import journal_format as jf
out = {{"base_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}
for name in ({str(magic)!r}, {str(fakes)!r}):
    t0 = time.process_time()
    found = jf.scan(name)
    out[name] = [time.process_time() - t0, len(found.problems), getattr(found, "unlisted", 0),
                 [p.offset for p in found.problems[:3]], found.problems[0].message]
out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""
    out = _in_child(script, timeout=240)
    cpu_s, kept, unlisted, offsets, first = out[str(magic)]
    assert cpu_s < 10, out  # CPU seconds, so a loaded machine does not fail it
    assert kept + unlisted <= 2 and offsets[0] == 0, out
    # the first magic is no record and the rest is garbage (its last 4 bytes, a magic,
    # could be a torn header: the second problem)
    assert "format version 20564" in first and "skipped 16777212 bytes" in first
    cpu_s, kept, unlisted, offsets, first = out[str(fakes)]
    n = (4 << 20) // len(head)
    assert cpu_s < 20, out
    assert kept == jf.MAX_PROBLEMS and kept + unlisted == n, out
    assert offsets == [0, 56, 112] and "checksum mismatch" in first
    # a chunk at a time (before: 1.2 GB); the peak over what the imports took (torch's
    # import alone is 200 to 300 MB, depending on the machine)
    assert out["maxrss_kib"] - out["base_kib"] < 100 << 10, out


@pytest.mark.timeout(300)
def test_show_lists_the_first_problems_and_counts_the_rest(tmp_path: Path) -> None:
    head = jf.HEAD.pack(jf.MAGIC, 1, jf.ENVELOPE, 0, 1, 2, 3, 4, 0, 0) + b"\0" * 8
    fakes = tmp_path / "fakes.tpj"
    fakes.write_bytes(head * 1000)
    code, out, err = _cli("journal", "show", str(fakes))
    _clean(code, out, err)
    lines = out.splitlines()
    assert code == 1 and lines[0] == f"{fakes}: 0 records, 1000 problem(s)"
    assert jf.MAX_PROBLEMS == 100
    assert sum("PROBLEM: " in line for line in lines) == 100
    assert lines[-1] == "  ... 900 more problem(s) not listed"
    code, out, err = _cli("journal", "show", "--format", "json", str(fakes))
    (doc,) = json.loads(out)
    assert len(doc["problems"]) == 100 and doc["problems_unlisted"] == 900


# --- item: typed records (a checksum is not a signature) --------------------------------


def _with_meta(data: bytes, rec: jf.Record, raw: bytes) -> bytes:
    """``data`` with ``rec``'s metadata replaced by ``raw`` and the record resealed."""
    at = rec.offset
    body = data[at + jf.HEADER_NBYTES : at + rec.nbytes]
    (n,) = struct.unpack_from("<I", body)
    body = struct.pack("<I", len(raw)) + raw + body[4 + n :]
    head = data[at : at + 40] + struct.pack("<I", len(body)) + data[at + 44 : at + jf.HEAD.size]
    new = head + jf.CHECKSUM.pack(jf._checksum(head, [body])) + body
    return data[:at] + new + data[at + rec.nbytes :]


def _deep(n: int, leaf: str = "1") -> str:
    return "[" * n + leaf + "]" * n


def _meta_text(meta: dict[str, Any], **raw: str) -> bytes:
    """``meta`` as JSON with the keys of ``raw`` set to raw JSON text (NaN, 1e999, deep)."""
    parts = [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in meta.items() if k not in raw]
    parts += [f"{json.dumps(k)}:{v}" for k, v in raw.items()]
    return ("{" + ",".join(parts) + "}").encode()


# kind, keys changed (None: removed), raw JSON keys, what the problem says
BAD_META: dict[str, tuple[int, dict[str, Any], dict[str, str], str]] = {
    "action an object": (jf.ENVELOPE, {"action": {"a": 1}}, {}, "'action' is an object"),
    "segments a string": (jf.ENVELOPE, {"segments": "abc"}, {}, "'segments' is a string"),
    "src an array": (jf.ENVELOPE, {"src": [0]}, {}, "'src' is an array"),
    "src a boolean": (jf.ENVELOPE, {"src": True}, {}, "'src' is a boolean"),
    "dir unknown": (jf.ENVELOPE, {"dir": "sideways"}, {}, "expected send or recv"),
    "state missing": (jf.ENVELOPE, {"state": None}, {}, "'state' is missing"),
    "manifest shape": (jf.ENVELOPE, {"manifest": [["a", "uint8", [-1], 1, 0, 0]]}, {},
                       "'manifest' is an array, expected a list of [field"),
    "digest not hex": (jf.ENVELOPE, {"frame1_digest": "0x12\n"}, {}, "'frame1_digest'"),
    "rank a string": (jf.OPEN, {"rank": "0"}, {}, "'rank' is a string"),
    "role not a name": (jf.OPEN, {"roles": {"sequence": "a\nb"}}, {}, "'roles' is an object"),
    "fingerprint a number": (jf.OPEN, {"fingerprint": 5}, {}, "'fingerprint' is an integer"),
    "protocol missing": (jf.OPEN, {"protocol": None}, {}, "'protocol' is missing"),
    "counts of strings": (jf.OBSERVE, {"counts": {"a": "1"}}, {}, "'counts' is an object"),
    "ledger half": (jf.OBSERVE, {"ledger": {"expected": 2}}, {}, "'ledger' is an object"),
    "what null": (jf.OBSERVE, {"what": None}, {}, "'what' is missing"),
    "how a number": (jf.END, {"how": 3}, {}, "'how' is an integer"),
    "reason an array": (jf.END, {"reason": ["x"]}, {}, "'reason' is an array"),
    "t infinite": (jf.END, {}, {"t": "1e999"}, "'t' is a number, expected a finite number"),
    "t NaN": (jf.OBSERVE, {}, {"t": "NaN"}, "the metadata is not JSON"),
    "900 deep, unknown key": (jf.OBSERVE, {}, {"x": _deep(900)}, "'x' nests deeper than 16"),
    "900 deep, known key": (jf.OBSERVE, {}, {"ledger": _deep(900)}, "'ledger' is an array"),
    "900 deep in a digest": (jf.ENVELOPE, {}, {"action": _deep(900)}, "'action' is an array"),
    "100000 deep": (jf.END, {}, {"reason": _deep(100_000)}, "the metadata is not JSON"),
    "a huge integer": (jf.ENVELOPE, {}, {"src": "9" * 5000}, "the metadata is not JSON"),
    "rank past int64": (jf.OPEN, {"rank": 2**64}, {}, "'rank' is an integer"),
}  # fmt: skip


def _spoil(data: bytes, kind: int, changes: dict[str, Any], raw: dict[str, str]) -> tuple[
    bytes, jf.Record, list[jf.Record]
]:  # fmt: skip
    records = jf.scan_bytes(data).records
    target = [r for r in records if r.kind == kind][-1]
    meta = {k: v for k, v in {**target.meta, **changes}.items() if v is not None}
    return _with_meta(data, target, _meta_text(meta, **raw)), target, records


@pytest.mark.parametrize("case", list(BAD_META))
def test_wrong_typed_metadata_is_a_problem_at_its_offset(
    case: str, journal: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tpwire.cli import main

    kind, changes, raw, says = BAD_META[case]
    data, target, before = _spoil(journal, kind, changes, raw)
    found = jf.scan_bytes(data, "x")
    assert [p.offset for p in found.problems] == [target.offset], found.problems
    assert says in found.problems[0].message, found.problems[0].message
    assert found.problems[0].message.startswith(f"{KINDS[kind]}: ")
    assert found.problems[0].message.isprintable()
    # every other record reads, and reads typed
    assert [(r.kind, r.seq, r.meta) for r in found.records] == [
        (r.kind, r.seq, r.meta) for r in before if r is not target
    ]
    assert len(found.records) == len(before) - 1
    for r in found.records:
        assert r.info.t is not None
    # the commands: one line per problem, never an internal error; show goes on to the next file
    bad, good = tmp_path / "a" / "tp_control.rank0.000000.tpj", tmp_path / "b"
    bad.parent.mkdir()
    good.mkdir()
    bad.write_bytes(data)
    (good / "tp_control.rank0.000000.tpj").write_bytes(journal)
    code = main(["journal", "show", str(bad.parent), str(good)])
    out, err = capsys.readouterr()
    _clean(code, out, err)
    assert code == 1 and f"  @{target.offset:<8} PROBLEM: {KINDS[kind]}: " in out, out
    assert out.count(" records, ") == 2 and len(out.splitlines()) == 2 + len(before) * 2
    for argv in (["replay", str(bad)], ["journal", "diff", str(bad.parent), str(good)]):
        code = main(argv)
        _clean(code, *capsys.readouterr())


def test_unknown_metadata_keys_are_kept_and_never_take_a_rows_place(
    journal: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A later writer's keys are read (forward compatible), typed as ``extra``; ``show`` lists
    them under ``extra`` (before: ``"offset": "x"`` or ``"kind": 3`` replaced the row's own
    and ended in an internal error)."""
    from tpwire.cli import main

    data = journal
    hostile = {"offset": "x", "kind": 3, "bytes": [1, {"a": None}], "fields": 7}
    for kind in KINDS:
        data, _, _ = _spoil(data, kind, {k: v for k, v in hostile.items() if k != "fields"}, {})
    found = jf.scan_bytes(data, "x")
    assert found.problems == []
    path = tmp_path / "x.tpj"
    path.write_bytes(data)
    for fmt in ("text", "json"):
        code = main(["journal", "show", "--format", fmt, str(path)])
        out, err = capsys.readouterr()
        _clean(code, out, err)
        assert code == 0
        if fmt == "json":
            (doc,) = json.loads(out)
            offsets = [r.offset for r in found.records]
            assert [row["offset"] for row in doc["records"]] == offsets
            assert [row["kind"] for row in doc["records"]] == [r.kind_name for r in found.records]
            assert sum(row.get("extra", {}).get("offset") == "x" for row in doc["records"]) == 4
        else:
            assert out.count("extra={offset:x,kind:3,bytes:[1,{a:None}]}") == 4, out
    extra = {k: v for k, v in hostile.items() if k != "fields"}
    assert sum(r.info.extra == extra for r in found.records) == 4


def test_typed_accessors_of_each_kind(journal: bytes) -> None:
    records = jf.scan_bytes(journal).records
    by_kind = {r.kind: r.info for r in records}
    opening = by_kind[jf.OPEN]
    assert isinstance(opening, jf.OpenMeta)
    assert opening.protocol == "tp_control" and opening.rank == 0 and opening.mode == "full"
    assert opening.roles == {"sequence": "call_id", "chunk": "chunk_index", "epoch": "cache_epoch"}
    env = by_kind[jf.ENVELOPE]
    assert isinstance(env, jf.EnvelopeMeta)
    assert env.dir == "send" and env.state == "sent" and env.action == "INFER"
    assert env.frame1_nbytes == sum(env.segments) > 0 and env.manifest[0][2] == tuple(
        env.manifest[0][2]
    )
    obs = by_kind[jf.OBSERVE]
    assert isinstance(obs, jf.ObserveMeta)
    assert obs.ledger == {"expected": 2, "observed": 2} and obs.counts == {"generator_calls": 2}
    end = by_kind[jf.END]
    assert isinstance(end, jf.EndMeta) and end.how == "SHUTDOWN" and end.reason is None
    assert all(r.info.extra == {} for r in records)


# --- item: show escapes every string it read from a journal -----------------------------

FORGED = "x\n  @0        recv INFER     forged=1\x1b[2J\x1b]0;title\x07\u202eevil\u2028\x85"


def test_show_escapes_every_string_so_no_record_forges_a_row(
    journal: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tpwire.cli import main

    data = journal
    records = jf.scan_bytes(data).records
    for kind, changes in (
        (jf.END, {"reason": FORGED, "how": FORGED}),
        (jf.ENVELOPE, {"error": FORGED, "state": FORGED, "reason": FORGED}),
        (jf.OBSERVE, {"state": FORGED, "what": FORGED, "counts": {FORGED: 1},
                      "outputs": {FORGED: jf.hex64(1)}, FORGED: [FORGED]}),
        (jf.OPEN, {"stem": FORGED, "opened": FORGED, FORGED: {FORGED: FORGED}}),
    ):  # fmt: skip
        data, _, _ = _spoil(data, kind, changes, {})
    folder = tmp_path / "f"
    folder.mkdir()
    path = folder / "odd\nname\x1b[31m.tpj"
    path.write_bytes(data)
    code = main(["journal", "show", str(folder)])
    out, err = capsys.readouterr()
    _clean(code, out, err)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1 + len(records), out  # the file's line and one per record
    assert lines[0].startswith(f"{printable(folder)}/odd\\nname\\x1b[31m.tpj: ")
    assert all(line.startswith("  @") for line in lines[1:])
    assert all(line.isprintable() for line in lines)
    for c in ("\x1b", "\x07", "\u202e", "\u2028", "\x85", "\r"):
        assert c not in out
    assert out.count(printable(FORGED)) >= 10
    # json: the strings as they were, escaped by JSON itself
    code = main(["journal", "show", "--format", "json", str(folder)])
    out, err = capsys.readouterr()
    assert code == 0 and "\x1b" not in out and "\u202e" not in out and out.isascii()
    (doc,) = json.loads(out)
    assert doc["records"][-1]["reason"] == FORGED
