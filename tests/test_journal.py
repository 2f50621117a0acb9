"""The envelope journal (issue 16): 3-rank gloo streams journaled and diffed, OM-11 found by
``journal diff``, a worker SIGKILLed mid-write, full-mode replay bit for bit and into a fresh
group, and corrupted records reported with their offset (docs/journal.md)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from journal_scenarios import CUT_AT, plan
from mp import RankResult, run_ranks

from tpwire.cli import main
from tpwire.generated import pp_contract as pp
from tpwire.generated import tp_control as tc
from tpwire.runtime import journal as jr
from tpwire.runtime import journal_format as jf
from tpwire.runtime import tripwire
from tpwire.runtime.journal_diff import diff
from tpwire.runtime.replay import ReplayError, ReplaySource, load, replay
from tpwire.runtime.wire import seal_words

pytestmark = pytest.mark.timeout(180)

N = 30


def _stream(tmp: Path, mode: str = "digest", **kwargs: Any) -> list[RankResult]:
    return run_ranks(
        "stream",
        tmp,
        world=3,
        timeout=150,
        module="journal_scenarios",
        journal=str(tmp / "journal"),
        mode=mode,
        n=N,
        **kwargs,
    )


def _cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 3-rank stream, journaled in full mode (every tensor byte recorded)."""
    tmp = tmp_path_factory.mktemp("full")
    results = _stream(tmp, "full")
    assert [r.exitcode for r in results] == [0, 0, 0], [r.log for r in results]
    return tmp / "journal"


# --- acceptance: 3 ranks, 30 envelopes ------------------------------------------------------


def test_three_rank_stream_diffs_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = _stream(tmp_path)
    assert [r.exitcode for r in results] == [0, 0, 0], [r.log for r in results]
    assert [r.result for r in results] == [{"sent": N}, {"received": N}, {"received": N}]
    folder = tmp_path / "journal"
    journals = load([folder])
    assert [j.name for j in journals] == [f"tp_control.rank{r}" for r in range(3)]
    for j in journals:
        assert not j.problems
        # 30 envelopes, a NOOP and SHUTDOWN; the hard cut opened a second file
        assert len(j.envelopes()) == N + 2
        assert len(j.files) == 2
        assert [r.epoch for r in j.records if r.kind == jr.OPEN] == [0, 1]
        first_of_cut = next(r for r in j.envelopes() if r.epoch == 1)
        assert first_of_cut.chunk == CUT_AT and first_of_cut.path == j.files[1]
        seqs = [r.seq for r in j.envelopes()]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        ledgers = [
            r.meta["ledger"] for r in j.records if r.kind == jr.OBSERVE and "ledger" in r.meta
        ]
        assert len(ledgers) == N and all(x["expected"] == x["observed"] for x in ledgers)
        assert [r.meta["how"] for r in j.records if r.kind == jr.END] == ["SHUTDOWN"]
    report = diff(journals)
    assert report.divergence is None and report.compared == N + 2
    code, out, _ = _cli("journal", "diff", str(folder), capsys=capsys)
    assert code == 0, out
    assert f"no divergence: {N + 2} envelopes agree on every rank" in out


def test_perturbed_worker_is_the_first_divergence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OM-11: rank 2 perturbs its latents of chunk 17 after the broadcast."""
    results = _stream(tmp_path, perturb=(2, 17))
    assert [r.exitcode for r in results] == [0, 0, 0], [r.log for r in results]
    folder = tmp_path / "journal"
    _, h17 = plan(17)
    report = diff(load([folder]))
    div = report.divergence
    assert div is not None
    assert div.coordinate == f"call_id={h17.call_id} chunk_index=17 cache_epoch=1"
    assert div.odd == ["tp_control.rank2"]
    text = "\n".join(div.lines)
    assert "fields.latents:" in text and "inputs:" in text and "outputs.latents_out:" in text
    # the envelope itself arrived identical everywhere, and nothing else of the inputs differs
    assert "frame" not in text and "fields.conditioning_embeds" not in text
    code, out, _ = _cli("journal", "diff", str(folder), capsys=capsys)
    assert code == 1
    assert f"first divergence at call_id={h17.call_id} chunk_index=17 cache_epoch=1 (INFER):" in out
    assert "differs: tp_control.rank2" in out
    code, out, _ = _cli("journal", "diff", str(folder), "--format", "json", capsys=capsys)
    assert code == 1 and json.loads(out)["divergence"]["odd"] == ["tp_control.rank2"]


def test_sigkilled_worker_leaves_a_torn_tail_and_intact_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 1 is SIGKILLed halfway through writing the record of chunk 12."""
    results = _stream(tmp_path, kill_at=12)
    assert results[1].exitcode == -9, results[1].log
    assert results[0].exitcode != 0 and results[2].exitcode != 0  # the survivors poisoned
    folder = tmp_path / "journal"
    (dead,) = [j for j in load([folder]) if j.name == "tp_control.rank1"]
    tail = dead.torn_tail
    assert tail is not None and tail.torn
    assert "torn last record" in tail.message and "intact" in tail.message
    assert dead.problems == [tail]  # nothing else is wrong with the file
    assert [r.chunk for r in dead.envelopes() if r.meta["action"] == "INFER"] == list(range(12))
    assert os.path.getsize(tail.path) > tail.offset  # half a record is there
    code, out, _ = _cli("journal", "show", tail.path, capsys=capsys)
    assert code == 1
    assert f"@{tail.offset:<8} PROBLEM: a torn last record" in out
    code, out, _ = _cli("journal", "diff", str(folder), capsys=capsys)
    assert code == 1
    assert "missing record: tp_control.rank1 holds no record of it after sequence 13" in out
    assert f"torn record at offset {tail.offset}" in out
    # the survivors journaled why their stream ended
    survivors = [j for j in load([folder]) if j.name != "tp_control.rank1"]
    for j in survivors:
        ends = [r.meta for r in j.records if r.kind == jr.END]
        assert ends and ends[-1]["how"] == "poisoned", ends


def test_full_mode_replay_reproduces_every_envelope_bit_for_bit(
    full_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for rank in range(3):
        files = sorted(str(p) for p in full_run.glob(f"tp_control.rank{rank}.*.tpj"))
        (journal,) = load(files)
        report = replay(journal, tc.BINDINGS)
        assert report.first_refused is None
        assert len(report.outcomes) == N + 2
        assert all(o.reproduced for o in report.outcomes)
        # the recorded frame 1 digests are the digests of the replayed bytes
        for rec in journal.envelopes():
            assert jr.hex64(tripwire_bytes_digest(rec)) == rec.meta["frame1_digest"]
        code, out, _ = _cli("replay", *files, capsys=capsys)
        assert code == 0, out
        assert (
            f"{N + 2} envelopes replayed, accepted; {N + 2} of {N + 2} full-mode envelopes "
            "reproduced bit for bit" in out
        )


def tripwire_bytes_digest(rec: jr.Record) -> int:
    from tpwire.runtime.wire import bytes_digest

    return bytes_digest(list(rec.segments or ()))


def test_replay_source_feeds_a_fresh_group_exactly_the_recorded_envelopes(
    full_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(str(p) for p in full_run.glob("tp_control.rank1.*.tpj"))
    r0, r1 = run_ranks(
        "replay_feed",
        tmp_path,
        world=2,
        timeout=150,
        module="journal_scenarios",
        files=files,
        journal=str(tmp_path / "journal"),
        start_epoch=None,
    )
    assert (r0.exitcode, r1.exitcode) == (0, 0), r1.log
    (journal,) = load(files)
    recorded = []
    for rec in journal.envelopes():
        if rec.meta["action"] == "INFER":
            manifest = tc.BINDINGS.read_frame0_bytes(rec.frame0)
            header, msg = manifest.finish(_segments(rec))
            recorded.append([header.call_id, jr.hex64(tripwire.digest_envelope(tc, msg, header))])
    assert r1.result["seen"] == recorded and len(recorded) == N
    # the worker's journal of the replay and the original worker's agree record for record
    original = tmp_path / "original"
    shutil.copytree(full_run, original, ignore=shutil.ignore_patterns("*rank0*", "*rank2*"))
    code, out, _ = _cli(
        "journal", "diff", str(original), *map(str, (tmp_path / "journal").glob("*rank1*")),
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, out
    assert "journals: journal/tp_control.rank1, original/tp_control.rank1" in out


def _segments(rec: jr.Record) -> Any:
    from tpwire.runtime.replay import segment_tensors

    return segment_tensors(rec.segments or ())


def test_replay_source_starts_at_an_epoch_and_dedupes(full_run: Path, tmp_path: Path) -> None:
    files = sorted(full_run.glob("tp_control.rank0.*.tpj"))
    source = ReplaySource([str(p) for p in files], tc, start_epoch=1)
    chunks = [item.header.chunk_index for item in source if item.msg is not None]
    assert chunks == list(range(CUT_AT, N))
    assert source.skipped and max(source.skipped) < plan(CUT_AT)[1].call_id
    with pytest.raises(ReplayError, match="does not hold the start of epoch 2"):
        list(ReplaySource([str(p) for p in files], tc, start_epoch=2))
    # the same file given twice: every sequence id is fed once
    doubled = tmp_path / "doubled"
    doubled.mkdir()
    data = files[0].read_bytes()
    (doubled / "tp_control.rank0.000000.tpj").write_bytes(data)
    (doubled / "tp_control.rank0.000001.tpj").write_bytes(data)
    twice = ReplaySource([str(doubled)], tc)
    seqs = [item.header.call_id for item in twice]
    assert len(seqs) == len(set(seqs)) == CUT_AT + 1  # chunks 0..14 and the NOOP, once
    assert len(twice.skipped) == CUT_AT + 1


# --- any protocol: pp_contract over p2p --------------------------------------------------


def test_pp_contract_p2p_journals_diff_clean_and_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r0, r1 = run_ranks(
        "pp_stream", tmp_path, timeout=150, module="journal_scenarios",
        journal=str(tmp_path / "journal"),
    )  # fmt: skip
    assert (r0.exitcode, r1.exitcode) == (0, 0), r1.log
    journals = load([tmp_path / "journal"])
    assert [j.name for j in journals] == ["pp_contract.rank0-peer1", "pp_contract.rank1-peer0"]
    for j in journals:
        assert not j.problems and len(j.files) == 2  # the hard cut rotated
        # 6 envelopes and 6 results on both ends (and SHUTDOWN)
        assert len(j.envelopes()) == 13
        sent = [(r.meta["action"], r.seq) for r in j.envelopes() if r.sent]
        assert sent and all(a == ("INFER" if "rank0" in j.name else "RESULT") for a, _ in sent[:6])
    report = diff(journals)
    assert report.divergence is None and report.compared == 13
    for j in journals:
        rep = replay(j, pp.BINDINGS)
        assert rep.first_refused is None and all(o.reproduced for o in rep.outcomes)
    code, out, _ = _cli("journal", "diff", str(tmp_path / "journal"), capsys=capsys)
    assert code == 0 and "no divergence: 13 envelopes agree" in out


def test_journaling_is_part_of_the_parity_record(tmp_path: Path) -> None:
    env = {0: {jr.ENV_DIR: str(tmp_path / "j")}}
    r0, r1 = run_ranks("parity_one_rank", tmp_path, module="journal_scenarios", env=env)
    assert r0.result == r1.result
    assert r0.result["diff"] == ["flags.tpwire.journal: rank0='digest', rank1='off'"]


# --- in-process: the format, corruption, rotation, any protocol -----------------------------


def _write(
    folder: Path,
    items: list[tuple[Any, Any]],
    bindings: Any = tc.BINDINGS,
    *,
    mode: str = "full",
    name: str = "rank0",
    end: tuple[str, str | None] = ("SHUTDOWN", None),
    **config: Any,
) -> jr.JournalWriter:
    """A sender's journal of ``items`` (message, header), written without a process group."""
    w = jr.JournalWriter(
        jr.JournalConfig(str(folder), mode, **config), bindings, rank=0, world=1, name=name,
        source=0,
    )  # fmt: skip
    for msg, h in items:
        prep = bindings.prepare(msg, h)
        segments = [jr.tensor_bytes(s.contiguous()) for s in prep.frames().segments]
        w.envelope(h, seal_words(prep.words).tobytes(), sent=True, state="sent", segments=segments)
    w.end(*end)
    w.close()
    return w


def _five(folder: Path) -> Path:
    _write(folder, [plan(i) for i in range(5)])
    (path,) = folder.glob("*.tpj")
    return path


def _offsets(path: Path) -> list[int]:
    return [r.offset for r in jr.scan(path).records]


def _flip_body(data: bytearray, at: int) -> None:
    data[at + jr.HEADER_NBYTES + 20] ^= 0x40


def _length(delta: int) -> Any:
    def change(data: bytearray, at: int) -> None:
        (n,) = struct.unpack_from("<I", data, at + 40)
        struct.pack_into("<I", data, at + 40, n + delta)

    return change


def _checksum(data: bytearray, at: int) -> None:
    data[at + 50] ^= 0x01


def _version(data: bytearray, at: int) -> None:
    struct.pack_into("<H", data, at + 4, 2)
    head = bytes(data[at : at + jr.HEAD.size])
    (n,) = struct.unpack_from("<I", data, at + 40)
    body = bytes(data[at + jr.HEADER_NBYTES : at + jr.HEADER_NBYTES + n])
    jr.CHECKSUM.pack_into(data, at + jr.HEAD.size, jf._checksum(head, [body]))


def _bad_json(data: bytearray, at: int) -> None:
    """A well-checksummed record whose metadata is not JSON."""
    (n,) = struct.unpack_from("<I", data, at + 40)
    data[at + jr.HEADER_NBYTES + 4] = ord("{") ^ 0xFF
    head = bytes(data[at : at + jr.HEAD.size])
    body = bytes(data[at + jr.HEADER_NBYTES : at + jr.HEADER_NBYTES + n])
    jr.CHECKSUM.pack_into(data, at + jr.HEAD.size, jf._checksum(head, [body]))


CORRUPTIONS = {
    # name: (change record 3 of the file, what the reader says, how it goes on)
    "flipped byte": (_flip_body, "checksum mismatch", "skipped"),
    "wrong length (inside the file)": (_length(24), "checksum mismatch", "skipped"),
    "wrong length (past the end)": (_length(1 << 24), "wrong length", "skipped to the next"),
    "wrong checksum": (_checksum, "checksum mismatch", "skipped"),
    "unsupported format version": (_version, "format version 2", "skipped"),
    "malformed body": (_bad_json, "malformed body: the metadata is not JSON", "skipped"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupted_record_is_reported_with_its_offset_and_skipped(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _five(tmp_path)
    offsets = _offsets(path)
    change, says, then = CORRUPTIONS[name]
    data = bytearray(path.read_bytes())
    change(data, offsets[3])
    path.write_bytes(bytes(data))
    found = jr.scan(path)
    assert [(p.offset, says in p.message, then in p.message) for p in found.problems] == [
        (offsets[3], True, True)
    ], found.problems
    assert [r.offset for r in found.records] == offsets[:3] + offsets[4:]
    for argv in (["journal", "show", str(path)], ["replay", str(path)]):
        code, out, err = _cli(*argv, capsys=capsys)
        assert code in (0, 1) and "Traceback" not in out + err
    code, out, _ = _cli("journal", "show", str(path), capsys=capsys)
    assert code == 1 and f"@{offsets[3]:<8} PROBLEM: " in out


def test_garbage_torn_tails_and_foreign_records(tmp_path: Path) -> None:
    path = _five(tmp_path)
    offsets = _offsets(path)
    data = path.read_bytes()
    # garbage between records: resynchronized at the next record
    spliced = data[: offsets[2]] + b"garbage!" * 5 + data[offsets[2] :]
    found = jr.scan_bytes(spliced, "x")
    assert [p.offset for p in found.problems] == [offsets[2]]
    assert "bad magic" in found.problems[0].message and len(found.records) == len(offsets)
    # torn inside a body and inside a header: the tail is reported, the rest intact
    for cut in (offsets[-1] + 70, offsets[-1] + 10):
        found = jr.scan_bytes(data[:cut], "x")
        assert found.torn_tail is not None and found.torn_tail.offset == offsets[-1]
        assert [r.offset for r in found.records] == offsets[:-1]
    # a record of another protocol spliced in: refused, with its offset
    other = tmp_path / "pp"
    _write(other, [(_pp(0), _pp_header(0))], pp.BINDINGS)
    pp_data = next(other.glob("*.tpj")).read_bytes()
    pp_offsets = _offsets(next(other.glob("*.tpj")))
    foreign = pp_data[pp_offsets[1] : pp_offsets[2]]
    mixed = data[: offsets[3]] + foreign + data[offsets[3] :]
    found = jr.scan_bytes(mixed, "x")
    assert [p.offset for p in found.problems] == [offsets[3]]
    assert "a record of another protocol" in found.problems[0].message
    assert len(found.records) == len(offsets)
    # not a journal at all, and an empty file
    assert jr.scan_bytes(b"\x00" * 100, "x").problems[0].offset == 0
    assert jr.scan_bytes(b"", "x").records == []


def _pp(i: int) -> Any:
    from mp_scenarios import pp_envelope

    return pp_envelope(i, init=i == 0)


def _pp_header(i: int) -> Any:
    from mp_scenarios import pp_header

    return pp_header(i + 1, i, 0, "INFER")


def test_cli_errors_are_one_line_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli("journal", "show", str(tmp_path / "nope.tpj"), capsys=capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "no such file" in err
    code, _, err = _cli("journal", "diff", str(tmp_path), capsys=capsys)
    assert code == 2 and "at least two ranks" in err
    junk = tmp_path / "junk.tpj"
    junk.write_bytes(os.urandom(4096))
    code, out, err = _cli("journal", "show", str(junk), capsys=capsys)
    assert code == 1 and "Traceback" not in out + err
    code, out, err = _cli("replay", str(junk), capsys=capsys)
    assert code == 2 and "Traceback" not in out + err
    # the command line itself, as a user runs it
    proc = subprocess.run(
        [sys.executable, "-m", "tpwire", "journal", "show", "--format", "json", str(junk)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (doc,) = json.loads(proc.stdout)
    assert doc["records"] == [] and doc["problems"][0]["offset"] == 0


def test_rotation_by_size_and_retention(tmp_path: Path) -> None:
    w = _write(tmp_path, [plan(i) for i in range(12)], max_bytes=4000, keep=3)
    files = sorted(tmp_path.glob("*.tpj"))
    assert len(files) == 3 and w.written > 12
    (journal,) = load([tmp_path])
    assert not journal.problems
    chunks = [r.chunk for r in journal.envelopes()]
    assert chunks == list(range(chunks[0], 12)) and chunks[0] > 0  # the oldest were removed
    openings = [r.meta["opened"] for r in journal.records if r.kind == jr.OPEN]
    assert set(openings) <= {"size", "epoch"}
    # a replay may not start in the middle of an epoch whose start was removed
    with pytest.raises(ReplayError, match="does not hold the start of epoch 0"):
        list(ReplaySource([str(tmp_path)], tc, start_epoch=0))


def test_a_protocol_with_other_role_names(tmp_path: Path) -> None:
    """golden/odd: its only role is ``seq``; nothing in the journal reads Scope's names."""
    from fuzz import targets

    t = targets.load("golden/odd")
    b = t.module.BINDINGS
    noop = b.noop
    assert noop is not None and b.roles.sequence == "seq" and b.roles.epoch is None
    headers = [b.control_header(None, noop)]
    for _ in range(3):
        headers.append(b.control_header(headers[-1], noop))
    _write(tmp_path / "a", [(None, h) for h in headers], b)
    _write(tmp_path / "b", [(None, h) for h in headers[:2]], b)
    (a,) = load([tmp_path / "a"])
    assert [r.seq for r in a.envelopes()] == [0, 1, 2, 3]
    assert all(r.epoch is None and r.chunk is None for r in a.envelopes())
    rep = replay(a, b)
    assert rep.first_refused is None and all(o.reproduced for o in rep.outcomes)
    report = diff(load([tmp_path / "a", tmp_path / "b"]), b)
    assert report.divergence is not None and report.divergence.coordinate == "seq=2"
    assert "missing record: b/" in report.divergence.lines[0]


def test_replay_against_a_changed_spec_reports_the_first_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal recorded under the shipped spec, replayed against a spec that tightened a
    bound: the first envelope the new build refuses is named (tpwire breaking agrees)."""
    _write(tmp_path / "j", [plan(i) for i in range(5)])
    spec = Path(__file__).resolve().parents[1] / "spec" / "tp_control.yaml"
    text = spec.read_text()
    assert "current_start_frame:" in text
    changed = tmp_path / "tp_control.yaml"
    changed.write_text(_tighten_start_frame(text))
    code, out, _ = _cli("replay", str(tmp_path / "j"), "--spec", str(changed), capsys=capsys)
    assert code == 1, out
    assert "recorded under fingerprint" in out
    assert (
        "REFUSED at call_id=4 chunk_index=3 cache_epoch=0" in out and "current_start_frame" in out
    )
    code, out, _ = _cli("breaking", str(changed), "--against", str(spec), capsys=capsys)
    assert code == 1 and "current_start_frame" in out + _


def _tighten_start_frame(text: str) -> str:
    """current_start_frame's range tightened to 0..2 (the stream's frames are 0..4)."""
    old = "current_start_frame:\n        type: int\n        range: {min: 0}\n"
    assert old in text
    return text.replace(old, old.replace("{min: 0}", "{min: 0, max: 2}"))


def test_digest_mode_replay_checks_frame0_and_refuses_to_feed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path, [plan(i) for i in range(4)], mode="digest")
    code, out, _ = _cli("replay", str(tmp_path), capsys=capsys)
    assert code == 0 and "digest mode: frame 0 and ordering checked" in out
    with pytest.raises(ReplayError, match="only a full-mode journal"):
        list(ReplaySource([str(tmp_path)], tc))


def test_journal_env_and_argument() -> None:
    env = {jr.ENV_DIR: "/x", jr.ENV_MODE: "full"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert jr.resolve(None) == jr.JournalConfig("/x", "full")
        assert jr.resolve("/y") == jr.JournalConfig("/y", "full")
        mp.delenv(jr.ENV_DIR)
        assert jr.resolve(None) is None
    with pytest.raises(ValueError, match="journal mode"):
        jr.JournalConfig("/x", "everything")


# --- the worked incident of docs/journal.md ------------------------------------------------


def test_docs_incident_is_what_the_example_prints(tmp_path: Path) -> None:
    """docs/journal.md pastes `tpwire journal diff` of examples/journal_incident.py: rerun
    the example under torchrun with the launcher's TPWIRE_JOURNAL and compare, line for line."""
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "journal.md").read_text()
    block = text.split("<!-- journal-incident: begin")[1].split("<!-- journal-incident: end")[0]
    lines = block.split("```console\n")[1].split("```")[0].splitlines()
    assert lines[0] == "$ tpwire journal diff /tmp/incident"
    env = {**os.environ, jr.ENV_DIR: str(tmp_path / "incident")}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
         "examples/journal_incident.py", "--perturb", "2:17"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    got = subprocess.run(
        [sys.executable, "-m", "tpwire", "journal", "diff", str(tmp_path / "incident")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert got.returncode == 1
    assert got.stdout.splitlines() == lines[1:]


def test_a_full_queue_drops_records_after_a_bounded_wait_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writer never holds the collective path for long: with its queue full (a disk that
    stalls), a hand-over waits at most max_wait_s, then the record is dropped and counted."""
    import threading
    import time

    gate = threading.Event()
    original = jr.JournalWriter._write

    def stalled(fd: int, parts: list[bytes | memoryview]) -> int:
        gate.wait(30)
        return original(fd, parts)

    monkeypatch.setattr(jr.JournalWriter, "_write", staticmethod(stalled))
    w = jr.JournalWriter(
        jr.JournalConfig(str(tmp_path), "full", max_pending_bytes=1, max_wait_s=0.05),
        tc.BINDINGS, rank=0, world=1, name="rank0", source=0,
    )  # fmt: skip
    started = time.monotonic()
    for i in range(4):
        msg, h = plan(i)
        prep = tc.BINDINGS.prepare(msg, h)
        w.envelope(h, seal_words(prep.words).tobytes(), sent=True, state="sent", segments=[])
    assert time.monotonic() - started < 5  # three bounded waits, not a stall
    gate.set()
    msg, h = plan(4)
    w.drain()
    prep = tc.BINDINGS.prepare(msg, h)
    w.envelope(h, seal_words(prep.words).tobytes(), sent=True, state="sent", segments=[])
    w.close()
    (journal,) = load([tmp_path])
    assert [r.chunk for r in journal.envelopes()] == [0, 4]
    assert journal.envelopes()[1].meta["dropped_before"] == 3
    code, out, _ = _cli("journal", "show", str(tmp_path), capsys=capsys)
    assert code == 0 and "dropped_before=3" in out


def test_a_tag_keeps_two_channels_of_one_rank_apart(tmp_path: Path) -> None:
    for tag in ("tp", "relay"):
        _write(tmp_path, [plan(i) for i in range(2)], tag=tag)
    names = sorted(j.name for j in load([tmp_path]))
    assert names == ["tp_control.relay.rank0", "tp_control.tp.rank0"]
    with pytest.raises(ValueError, match="journal tag"):
        jr.JournalConfig(str(tmp_path), tag="a/b")


@pytest.mark.parametrize("mode", ["full", "digest"])
def test_diff_names_the_fields_of_a_different_envelope(mode: str, tmp_path: Path) -> None:
    """Two ranks' journals where the envelope of chunk 3 differs (another attention bias
    and other latents): the difference, field by field, from the records alone."""
    same = [plan(i) for i in range(6)]
    other = list(same)
    msg, h = same[3]
    latents = msg.latents.clone()
    latents.view(-1)[0] += 1
    other[3] = (dataclasses_replace(msg, kv_cache_attention_bias=0.5, latents=latents), h)
    _write(tmp_path / "a", same, mode=mode)
    _write(tmp_path / "b", other, mode=mode)
    div = diff(load([tmp_path / "a", tmp_path / "b"])).divergence
    assert div is not None and div.coordinate == "call_id=4 chunk_index=3 cache_epoch=0"
    text = "\n".join(div.lines)
    assert "kv_cache_attention_bias: a/tp_control.rank0=0.25, b/tp_control.rank0=0.5" in text
    assert "frame 1 digest:" in text
    assert ("latents (bytes):" in text) == (mode == "full")
    assert "conditioning_embeds (bytes)" not in text and "height" not in text


def dataclasses_replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_diff_reports_a_different_end(tmp_path: Path) -> None:
    items = [plan(i) for i in range(3)]
    _write(tmp_path / "a", items)
    _write(tmp_path / "b", items, end=("poisoned", "frame 1 refused: digest"))
    div = diff(load([tmp_path / "a", tmp_path / "b"])).divergence
    assert div is not None and div.coordinate == "the end of the stream"
    assert div.odd == ["b/tp_control.rank0"]  # a tie: the first journal is the reference
    assert "poisoned" in div.lines[0] and "frame 1 refused: digest" in div.lines[0]


def test_a_worker_killed_from_outside_leaves_every_written_record_intact(tmp_path: Path) -> None:
    """SIGKILL at an arbitrary moment (rank 0 kills rank 1 after envelope 12): the file ends
    cleanly or in a torn record the reader reports; every record before reads back whole."""
    results = run_ranks(
        "killed_from_outside", tmp_path, world=3, timeout=150, module="journal_scenarios",
        journal=str(tmp_path / "journal"),
    )  # fmt: skip
    assert results[1].exitcode == -9, [r.log for r in results]
    (dead,) = [j for j in load([tmp_path / "journal"]) if j.name == "tp_control.rank1"]
    assert all(p.torn for p in dead.problems) and len(dead.problems) <= 1
    chunks = [r.chunk for r in dead.envelopes() if r.meta["action"] == "INFER"]
    assert chunks == list(range(len(chunks))) and 1 <= len(chunks) <= 13
    rep = replay(dead, tc.BINDINGS)
    assert rep.first_refused is None and all(o.reproduced for o in rep.outcomes)


def _observed_journal(folder: Path, observed: int, refuse_at: int | None = None) -> None:
    """A worker's journal of 4 envelopes with a ledger count each (and one refusal)."""
    w = jr.JournalWriter(
        jr.JournalConfig(str(folder), "full"), tc.BINDINGS, rank=1, world=2, name="rank1",
        source=0,
    )  # fmt: skip
    for i in range(4):
        msg, h = plan(i)
        prep = tc.BINDINGS.prepare(msg, h)
        segments = [jr.tensor_bytes(s.contiguous()) for s in prep.frames().segments]
        refused = i == refuse_at
        w.envelope(
            h, seal_words(prep.words).tobytes(), sent=False,
            state="refused" if refused else "validated",
            error="EnvelopeInvalid: 1 violation(s), first: range height" if refused else None,
            segments=segments,
        )  # fmt: skip
        expected = msg.tp_expected_generator_calls
        count = observed if i == 2 else expected
        w.observe(h, {"what": "ledger", "ledger": {"expected": expected, "observed": count}})
    w.end("SHUTDOWN", None)
    w.close()


def test_diff_reports_a_different_ledger_count_and_a_different_outcome(tmp_path: Path) -> None:
    _observed_journal(tmp_path / "a", observed=5)  # chunk 2 recomputes: 5 calls planned
    _observed_journal(tmp_path / "b", observed=3)
    div = diff(load([tmp_path / "a", tmp_path / "b"])).divergence
    assert div is not None and div.coordinate == "call_id=3 chunk_index=2 cache_epoch=0"
    assert div.lines == ["ledger.observed: a/tp_control.rank1=5, b/tp_control.rank1=3"]
    _observed_journal(tmp_path / "c", observed=5, refuse_at=1)
    div = diff(load([tmp_path / "a", tmp_path / "c"])).divergence
    assert div is not None and div.coordinate == "call_id=2 chunk_index=1 cache_epoch=0"
    assert div.lines[0].startswith("outcome: a/tp_control.rank1=ok, c/tp_control.rank1=refused:")


def test_replay_checks_the_ledger_plan_and_the_ordering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _observed_journal(tmp_path / "ledger", observed=3)
    code, out, _ = _cli("replay", str(tmp_path / "ledger"), capsys=capsys)
    assert code == 1
    assert "REFUSED at call_id=3 chunk_index=2 cache_epoch=0" in out
    assert "the ledger's plan: 3 generator calls observed, 5 planned" in out
    # a stream that repeats a sequence id: the ordering rules refuse the repeat
    _write(tmp_path / "order", [plan(0), plan(1), plan(1), plan(2)])
    code, out, _ = _cli("replay", str(tmp_path / "order"), capsys=capsys)
    assert code == 1
    assert "REFUSED at call_id=2 chunk_index=1 cache_epoch=0" in out
    assert "ordering: duplicate call_id 2 after 2" in out


def test_show_lists_each_record_and_json_holds_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _five(tmp_path)
    code, out, _ = _cli("journal", "show", str(path), capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{path}: 7 records, 0 problem(s)"  # OPEN, 5 envelopes, END
    assert lines[2].split()[1:5] == ["send", "INFER", "call_id=1", "chunk_index=0"]
    assert "state=sent" in lines[2] and "+bytes" in lines[2] and "digest=0x" in lines[2]
    code, out, _ = _cli("journal", "show", "--format", "json", str(path), capsys=capsys)
    (doc,) = json.loads(out)
    env = doc["records"][1]
    assert env["kind"] == "ENVELOPE" and env["call_id"] == 1 and env["full"] is True
    # chunk 0 carries no context frames: three tensors, by field, dtype and shape
    assert {m[0] for m in env["manifest"]} == {
        "denoising_step_list", "latents", "conditioning_embeds",
    }  # fmt: skip
    assert ["latents", "bfloat16", [1, 1, 4, 2, 3]] == next(
        m[:3] for m in env["manifest"] if m[0] == "latents"
    )
    assert doc["records"][-1]["kind"] == "END" and doc["records"][-1]["how"] == "SHUTDOWN"


def test_replay_applies_the_rules_across_envelopes(tmp_path: Path) -> None:
    """A full-mode journal of the optimize mode (tp_control_v2) whose chunk 2 bumps the
    conditioning epoch without the tensor (forged: written past the sender's cache check):
    replay refuses it by the receiver's cache rule, and the stream before it replays clean."""
    from test_epochs import cond, v2_envelope, v2_header

    from tpwire.generated import tp_control_v2 as t2

    items = [
        (v2_envelope(0, 0, cond(0)), v2_header(0)),
        (v2_envelope(1, 0, None), v2_header(1)),
        (v2_envelope(2, 1, None), v2_header(2)),  # epoch 0 -> 1 without the tensor
        (v2_envelope(3, 1, cond(1)), v2_header(3)),
    ]
    _write(tmp_path / "j", items, t2.BINDINGS)
    (journal,) = load([tmp_path / "j"])
    report = replay(journal, t2.BINDINGS)
    first, second, third = report.outcomes
    assert first.refused is None and second.refused is None and first.reproduced
    assert third.ids.startswith("call_id=3 ") and third.refused is not None
    assert "stale" in third.refused and "conditioning_embeds" in third.refused
