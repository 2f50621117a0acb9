"""The envelope journal (issue 16): 3-rank gloo streams journaled and diffed, OM-11 found by
``journal diff``, a worker SIGKILLed mid-write, full-mode replay bit for bit and into a fresh
group, and corrupted records reported with their offset (docs/journal.md)."""

from __future__ import annotations

import json
import os
import shutil
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
from tpwire.runtime import tripwire
from tpwire.runtime.channel import BroadcastChannel
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
        first_of_cut = [r for r in j.envelopes() if r.epoch == 1][0]
        assert first_of_cut.chunk == CUT_AT and first_of_cut.path == j.files[1]
        seqs = [r.seq for r in j.envelopes()]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        ledgers = [r.meta["ledger"] for r in j.records if r.kind == jr.OBSERVE and "ledger" in r.meta]
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
    msg17, h17 = plan(17)
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
