"""``journal diff`` and replay on journals a real stream rarely writes (docs/journal.md):
observations written after the next envelope or after SHUTDOWN, heads cut unevenly by
retention, END reasons that embed ports, a killed rank among poisoned survivors, damaged and
incomplete sources a ``ReplaySource`` must refuse. The journals are built record by record
(``encode_record``), so each ordering is exact."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from journal_scenarios import CUT_AT, plan
from mp import run_ranks

from tpwire.cli import main
from tpwire.generated import tp_control as tc
from tpwire.runtime import journal as jr
from tpwire.runtime import replay as rp
from tpwire.runtime.journal_diff import diff
from tpwire.runtime.replay import ReplayError, ReplaySource, load
from tpwire.runtime.wire import seal_words

pytestmark = pytest.mark.timeout(120)

FP = tc.BINDINGS.fingerprint
ROLES = {"sequence": "call_id", "chunk": "chunk_index", "epoch": "cache_epoch"}


def _cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _bytes(parts: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(p) for p in parts)


class Journal:
    """One rank's journal, written record by record in exactly the order asked for."""

    def __init__(self, folder: Path, rank: int, *, mode: str = "full", world: int = 3) -> None:
        self.folder = folder
        self.rank = rank
        self.mode = mode
        self.world = world
        self.files: list[tuple[int, bytearray]] = []
        self.index = 0
        self.last: Any = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def stem(self) -> str:
        return f"tp_control.rank{self.rank}"

    def open(self, opened: str = "start", epoch: int | None = 0) -> Journal:
        meta = {
            "protocol": "tp_control", "fingerprint": jr.hex64(FP), "roles": ROLES,
            "rank": self.rank, "world": self.world, "source": 0, "mode": self.mode,
            "stem": self.stem, "opened": opened, "pid": 1,
        }  # fmt: skip
        self.files.append((self.index, bytearray()))
        self.index += 1
        return self._add(_bytes(jr.encode_record(jr.OPEN, fingerprint=FP, epoch=epoch, meta=meta)))

    def skip_file(self) -> Journal:
        """A file index that is not there (removed, or not given)."""
        self.index += 1
        return self

    def _add(self, data: bytes) -> Journal:
        self.files[-1][1].extend(data)
        return self

    def envelope(self, msg: Any, h: Any, *, meta: dict[str, Any] | None = None) -> Journal:
        prep = tc.BINDINGS.prepare(msg, h)
        frame0 = seal_words(prep.words).tobytes()
        segments = None
        if self.mode == "full":
            segments = [jr.tensor_bytes(s.contiguous()) for s in prep.frames().segments]
        sent = self.rank == 0
        m = {
            "dir": "send" if sent else "recv", "src": 0, "state": "sent" if sent else "validated",
            "action": tc.BINDINGS.action_of(h).name, "segments": list(prep.sizes),
            **(meta or {}),
        }  # fmt: skip
        self.last = h
        return self._add(
            _bytes(
                jr.encode_record(
                    jr.ENVELOPE,
                    fingerprint=FP,
                    seq=h.call_id,
                    chunk=h.chunk_index,
                    epoch=h.cache_epoch,
                    meta=m,
                    words=frame0,
                    segments=segments,
                    sent=sent,
                )
            )
        )

    def chunk(self, i: int) -> Journal:
        return self.envelope(*plan(i))

    def shutdown(self) -> Journal:
        h = tc.BINDINGS.control_header(self.last, tc.TPAction.SHUTDOWN)
        return self.envelope(None, h)

    def observe(self, i: int, inputs: int | None = None, **extra: Any) -> Journal:
        """What the rank ran for chunk ``i``: its inputs' digest (``i`` unless given)."""
        _, h = plan(i)
        digest = jr.hex64(i if inputs is None else inputs)
        meta = {"what": "observed", "state": "completed", "inputs": digest, **extra}
        return self._add(
            _bytes(
                jr.encode_record(
                    jr.OBSERVE,
                    fingerprint=FP,
                    seq=h.call_id,
                    chunk=h.chunk_index,
                    epoch=h.cache_epoch,
                    meta=meta,
                )
            )
        )

    def end(self, how: str = "SHUTDOWN", reason: str | None = None) -> Journal:
        meta = {"how": how, "reason": reason}
        return self._add(_bytes(jr.encode_record(jr.END, fingerprint=FP, meta=meta)))

    def save(self) -> list[Path]:
        out = []
        for index, data in self.files:
            path = self.folder / f"{self.stem}.{index:06d}.tpj"
            path.write_bytes(bytes(data))
            out.append(path)
        return out


def _offsets(path: Path) -> list[tuple[int, int | None]]:
    return [(r.offset, r.seq) for r in jr.scan(path).records if r.kind == jr.ENVELOPE]


# --- item 1: observations attached by sequence id wherever they are ---------------------------


def _prefetching(folder: Path, n: int = 6, perturb: int = 2) -> None:
    """Ranks 0 and 1 observe each envelope right after it; rank 2 prefetches: it records its
    observation of envelope k after receiving k+1 (and of the last one after SHUTDOWN).
    Rank 2 ran other inputs at chunk ``perturb``."""
    for rank in range(3):
        j = Journal(folder, rank).open()
        if rank < 2:
            for i in range(n):
                j.chunk(i).observe(i)
            j.shutdown().end()
        else:
            j.chunk(0)
            for i in range(1, n):
                j.chunk(i).observe(i - 1, 1000 if i - 1 == perturb else None)
            j.shutdown().observe(n - 1).end()
        j.save()


def test_diff_finds_a_prefetching_workers_divergence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _prefetching(tmp_path)
    div = diff(load([tmp_path])).divergence
    assert div is not None, "the perturbed observation of chunk 2 was not compared"
    _, h = plan(2)
    assert div.coordinate == f"call_id={h.call_id} chunk_index=2 cache_epoch=0"
    assert div.odd == ["tp_control.rank2"]
    two, other = jr.hex64(2), jr.hex64(1000)
    assert div.lines == [
        f"inputs: tp_control.rank0={two}, tp_control.rank1={two}, tp_control.rank2={other}"
    ]
    code, out, _ = _cli("journal", "diff", str(tmp_path), capsys=capsys)
    assert code == 1 and "differs: tp_control.rank2" in out


def test_diff_attaches_an_observation_written_after_shutdown_and_end(tmp_path: Path) -> None:
    """Every rank observes its last envelope after the SHUTDOWN record and the END record
    (a writer kept open for observations until the channel is closed); rank 1's differs."""
    for rank in range(3):
        j = Journal(tmp_path, rank).open()
        for i in range(4):
            j.chunk(i)
            if i < 3:
                j.observe(i)
        j.shutdown().end().observe(3, 1000 if rank == 1 else None)
        j.save()
    report = diff(load([tmp_path]))
    div = report.divergence
    assert div is not None and div.coordinate.startswith("call_id=4 chunk_index=3 ")
    assert div.odd == ["tp_control.rank1"] and div.lines[0].startswith("inputs: ")
    assert report.notes == []


def test_diff_reports_an_observation_it_cannot_attach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for rank in range(2):
        j = Journal(tmp_path, rank).open()
        for i in range(3):
            j.chunk(i).observe(i)
        if rank == 1:
            j.observe(8)  # call_id 9: no envelope of that id in this journal
        j.shutdown().end()
        j.save()
    (path,) = tmp_path.glob("tp_control.rank1.*.tpj")
    stray = [r for r in jr.scan(path).records if r.kind == jr.OBSERVE and r.seq == 9]
    assert len(stray) == 1
    report = diff(load([tmp_path]))
    assert report.divergence is None
    (note,) = [n for n in report.notes if "OBSERVE" in n]
    assert f"offset {stray[0].offset}" in note and "call_id=9" in note
    assert "no envelope record" in note
    code, out, _ = _cli("journal", "diff", str(tmp_path), capsys=capsys)
    assert code == 0 and "note: tp_control.rank1: an OBSERVE record" in out


# --- item 4: the range every rank holds, reasons by code, the rank that stopped first ---------


def test_diff_compares_only_the_range_every_rank_still_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Retention removed each rank's oldest files at other points: rank 0 holds from chunk 2,
    rank 1 from chunk 5 (its first file opened by size rotation), rank 2 from the start.
    The common range agrees; what retention cut is said, and it is no divergence."""
    starts = {0: 2, 1: 5, 2: 0}
    for rank, first in starts.items():
        j = Journal(tmp_path, rank)
        if first:
            j.skip_file().open("size")
            j.observe(first - 1)  # the observation of an envelope in a removed file
        else:
            j.open()
        for i in range(first, 9):
            j.chunk(i).observe(i)
        j.shutdown().end()
        j.save()
    report = diff(load([tmp_path]))
    assert report.divergence is None, report.divergence and report.divergence.text()
    _, h5 = plan(5)
    assert report.compared == 9 - 5 + 1  # chunks 5..8 and SHUTDOWN
    (note,) = [n for n in report.notes if "retention" in n]
    assert f"compared from call_id={h5.call_id} on" in note
    assert (
        "tp_control.rank1 from call_id=6" in note and "5 earlier envelope(s) not compared" in note
    )
    code, out, _ = _cli("journal", "diff", str(tmp_path), capsys=capsys)
    assert code == 0 and "no divergence: 5 envelopes agree on every rank" in out
    # a real difference inside the common range is still found
    j = Journal(tmp_path / "b", 1).skip_file().open("size")
    for i in range(5, 9):
        j.chunk(i).observe(i, 1000 if i == 7 else None)
    j.shutdown().end().save()
    for p in tmp_path.glob("tp_control.rank[02].*"):
        (tmp_path / "b" / p.name).write_bytes(p.read_bytes())
    div = diff(load([tmp_path / "b"])).divergence
    assert div is not None and div.coordinate.startswith("call_id=8 chunk_index=7 ")


def test_diff_with_an_uneven_retention_by_the_writer(tmp_path: Path) -> None:
    """The writer itself: the same stream on three ranks, size rotation at 3,000 bytes and
    three files kept; rank 1 observes more per envelope, so its files rotate elsewhere."""
    for rank in range(3):
        w = jr.JournalWriter(
            jr.JournalConfig(str(tmp_path), "digest", max_bytes=3000, keep=3), tc.BINDINGS,
            rank=rank, world=3, name=f"rank{rank}", source=0,
        )  # fmt: skip
        last = None
        for i in range(12):
            msg, h = plan(i)
            prep = tc.BINDINGS.prepare(msg, h)
            sent = rank == 0
            w.envelope(
                h, seal_words(prep.words).tobytes(), sent=sent,
                state="sent" if sent else "validated",
            )  # fmt: skip
            extra = {"pad": "x" * 700} if rank == 1 else {}
            w.observe(h, {"what": "observed", "inputs": jr.hex64(i), **extra})
            last = h
        sh = tc.BINDINGS.control_header(last, tc.TPAction.SHUTDOWN)
        w.envelope(sh, seal_words(tc.BINDINGS.prepare(None, sh).words).tobytes(), sent=rank == 0,
                   state="sent" if rank == 0 else "validated")  # fmt: skip
        w.end("SHUTDOWN", None)
        w.close()
    journals = load([tmp_path])
    firsts = [j.envelopes()[0].seq for j in journals]
    assert len(set(firsts)) > 1, firsts  # the heads were cut unevenly
    report = diff(journals)
    assert report.divergence is None, report.divergence and report.divergence.text()
    ids = [*range(1, 11), 12, 13, 14]  # call_id 11 was never used; 14 is SHUTDOWN
    assert report.compared == len([i for i in ids if i >= max(firsts)])
    assert any("retention" in n for n in report.notes)


PORT_A = "waiting for frame 0 failed: DistBackendError: Connection closed by peer [127.0.0.1]:41234"
PORT_B = "waiting for frame 0 failed: DistBackendError: Connection closed by peer [127.0.0.1]:55321"


def test_end_reasons_are_compared_by_their_code(tmp_path: Path) -> None:
    for rank, reason in ((1, PORT_A), (2, PORT_B)):
        j = Journal(tmp_path / "same", rank).open()
        for i in range(3):
            j.chunk(i)
        j.end("poisoned", reason).save()
    assert diff(load([tmp_path / "same"])).divergence is None
    # another category of reason still differs
    for rank, reason in ((1, PORT_A), (2, "frame 1 refused: digest mismatch")):
        j = Journal(tmp_path / "other", rank).open()
        for i in range(3):
            j.chunk(i)
        j.end("poisoned", reason).save()
    div = diff(load([tmp_path / "other"])).divergence
    assert div is not None and div.coordinate == "the end of the stream"
    assert "frame 1 refused: digest mismatch" in div.lines[0]


def test_ranks_the_launcher_stopped_agree_and_the_one_that_died_is_named(tmp_path: Path) -> None:
    """SIGTERM's END (runtime/terminate.py): the reason's class is "SIGTERM" whatever each
    rank was doing, so a job the launcher stopped whole is no divergence; a rank with no END
    beside them (SIGKILLed) is the one named."""
    doing = {0: "between envelopes, after sending call_id=3", 1: "waiting for frame 0 after x"}
    for rank in (0, 1):
        j = Journal(tmp_path / "all", rank).open()
        for i in range(3):
            j.chunk(i)
        j.end("terminated", f"SIGTERM: while {doing[rank]}").save()
    assert diff(load([tmp_path / "all"])).divergence is None
    for rank in (0, 1, 2):
        j = Journal(tmp_path / "one", rank).open()
        for i in range(3):
            j.chunk(i)
        if rank != 2:
            j.end("terminated", f"SIGTERM: while {doing[rank]}")
        j.save()
    div = diff(load([tmp_path / "one"])).divergence
    assert div is not None and div.coordinate == "the end of the stream"
    assert div.odd == ["tp_control.rank2"], (div.odd, div.lines)


def _killed(folder: Path, *, victim_holds: int, survivor_holds: int) -> None:
    """Rank 1 SIGKILLed (no END record); ranks 0 and 2 poisoned on the dead peer, with
    reasons that name socket ports. Each rank holds the chunks below its number."""
    holds = {0: victim_holds, 1: victim_holds, 2: survivor_holds}
    reasons = {
        0: "frame 0 send of INFER failed: DistBackendError: Connection reset by peer [127.0.0.1]:39001",
        2: PORT_B,
    }
    for rank in range(3):
        j = Journal(folder, rank).open()
        for i in range(holds[rank]):
            j.chunk(i).observe(i)
        if rank != 1:
            j.end("poisoned", reasons[rank])
        j.save()


def test_diff_names_the_rank_that_stopped_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the victim and rank 0 hold chunk 4, the survivor rank 2 never received it
    _killed(tmp_path / "a", victim_holds=5, survivor_holds=4)
    div = diff(load([tmp_path / "a"])).divergence
    assert div is not None and div.coordinate.startswith("call_id=5 chunk_index=4 ")
    assert div.odd == ["tp_control.rank1"], div.text()
    text = div.text()
    assert "missing record: tp_control.rank2" in text
    assert "stopped first: tp_control.rank1" in text and "no end" in text
    # every rank holds the same envelopes; only the ends differ
    _killed(tmp_path / "b", victim_holds=5, survivor_holds=5)
    div = diff(load([tmp_path / "b"])).divergence
    assert div is not None and div.coordinate == "the end of the stream"
    assert div.odd == ["tp_control.rank1"], div.text()
    code, out, _ = _cli("journal", "diff", str(tmp_path / "b"), capsys=capsys)
    assert code == 1 and "differs: tp_control.rank1\n" in out


@pytest.mark.timeout(240)
def test_diff_names_a_rank_sigkilled_at_world_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real kill: rank 0 SIGKILLs rank 1 after envelope 12, at whatever moment rank 1 is
    in; the survivors poison on the dead peer, each with a reason of its own (and its own
    socket address). The diff names rank 1, wherever the first difference falls."""
    results = run_ranks(
        "killed_from_outside", tmp_path, world=3, timeout=150, module="journal_scenarios",
        journal=str(tmp_path / "journal"),
    )  # fmt: skip
    assert results[1].exitcode == -9, [r.log for r in results]
    journals = load([tmp_path / "journal"])
    ends = [[r.meta["how"] for r in j.records if r.kind == jr.END] for j in journals]
    assert ends[1] == [] and ends[0] == ends[2] == ["poisoned"], ends
    div = diff(journals).divergence
    assert div is not None and div.odd == ["tp_control.rank1"], div.text()
    code, out, _ = _cli("journal", "diff", str(tmp_path / "journal"), capsys=capsys)
    assert code == 1 and out.rstrip().endswith("differs: tp_control.rank1"), out


def test_diff_escapes_what_a_journal_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for rank, reason in (
        (1, "frame 1 refused: x"),
        (2, "frame 0 refused: \x1b[31mred\nforged line"),
    ):
        j = Journal(tmp_path, rank).open()
        j.chunk(0)
        j.end("poisoned", reason).save()
    code, out, _ = _cli("journal", "diff", str(tmp_path), capsys=capsys)
    assert code == 1
    assert "\x1b" not in out and "\nforged line" not in out and "\\x1b[31mred\\nforged" in out


# --- item 2: a replay source refuses a damaged or incomplete journal ----------------------------


def _five(folder: Path) -> Path:
    j = Journal(folder, 0).open()
    for i in range(5):
        j.chunk(i)
    (path,) = j.shutdown().end().save()
    return path


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at + jr.HEADER_NBYTES + 20] ^= 0x40
    path.write_bytes(bytes(data))


def test_replay_source_refuses_a_damaged_journal(tmp_path: Path) -> None:
    path = _five(tmp_path)
    offsets = _offsets(path)
    at, _ = offsets[3]  # call_id 4
    _flip(path, at)
    with pytest.raises(ReplayError) as exc:
        ReplaySource([str(path)], tc)
    text = str(exc.value)
    assert f"offset {at}" in text and "call_id 4" in text and "lenient=True" in text
    # lenient: what is readable, and where it is not
    source = ReplaySource([str(path)], tc, lenient=True)
    fed = [item.header.call_id for item in source]
    assert fed == [1, 2, 3, 5, 6]  # 5 chunks, chunk 3 (call_id 4) lost; then SHUTDOWN
    assert [g.offset for g in source.gaps] == [at]


def test_replay_source_refuses_a_torn_tail_a_missing_file_and_dropped_records(
    tmp_path: Path,
) -> None:
    # a torn tail
    path = _five(tmp_path / "torn")
    at, _ = _offsets(path)[-1]
    path.write_bytes(path.read_bytes()[: at + 70])
    with pytest.raises(ReplayError, match=f"offset {at}"):
        ReplaySource([str(path)], tc)
    assert ReplaySource([str(path)], tc, lenient=True).gaps[0].offset == at
    # a file missing from the middle of the rotation (epoch files 0 and 2 are there)
    j = Journal(tmp_path / "hole", 0).open()
    for i in range(CUT_AT - 2, CUT_AT):
        j.chunk(i)
    j.skip_file().open("epoch", 1)
    for i in range(CUT_AT + 3, CUT_AT + 5):
        j.chunk(i)
    j.save()
    with pytest.raises(ReplayError, match=r"tp_control\.rank0\.000001\.tpj.*missing") as exc:
        ReplaySource([str(tmp_path / "hole")], tc, start_epoch=0, lenient=False)
    _, last = plan(CUT_AT - 1)
    _, nxt = plan(CUT_AT + 3)
    assert f"call_id {last.call_id + 1}..{nxt.call_id - 1}" in str(exc.value)
    # records the writer dropped (the queue was full)
    j = Journal(tmp_path / "dropped", 0).open()
    j.chunk(0).chunk(1).envelope(*plan(3), meta={"dropped_before": 1}).save()
    with pytest.raises(ReplayError, match="dropped 1 record"):
        ReplaySource([str(tmp_path / "dropped")], tc)


def test_replay_source_starts_only_at_an_epoch_boundary(tmp_path: Path) -> None:
    # retention removed the first files: the journal starts in the middle of epoch 0
    j = Journal(tmp_path / "cut", 0).skip_file().skip_file().open("size")
    for i in range(6, CUT_AT + 3):
        j.chunk(i)
    j.save()
    with pytest.raises(ReplayError, match="does not hold the start of the stream") as exc:
        ReplaySource([str(tmp_path / "cut")], tc)
    assert "start_epoch=1" in str(exc.value)  # where it may start instead
    source = ReplaySource([str(tmp_path / "cut")], tc, start_epoch=1)
    assert [item.header.chunk_index for item in source][:3] == [CUT_AT, CUT_AT + 1, CUT_AT + 2]
    # a size-rotated file alone
    alone = tmp_path / "alone"
    alone.mkdir()
    (src,) = (tmp_path / "cut").glob("*.tpj")
    (alone / "tp_control.rank0.000000.tpj").write_bytes(src.read_bytes())
    with pytest.raises(ReplayError, match="does not hold the start of the stream"):
        ReplaySource([str(alone)], tc)
    with pytest.raises(ReplayError, match="does not hold the start of epoch 0"):
        ReplaySource([str(alone)], tc, start_epoch=0, lenient=True)


def test_replay_cli_on_a_damaged_journal_is_incomplete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _five(tmp_path)
    at, _ = _offsets(path)[3]
    _flip(path, at)
    code, out, err = _cli("replay", str(path), capsys=capsys)
    assert code == 1, out
    assert "incomplete" in out and "accepted;" not in out and "Traceback" not in out + err
    assert f"offset {at}" in out and "call_id 4" in out
    assert len(rp.gaps(load([path])[0])) == 1
    # an intact journal still ends accepted
    clean = _five(tmp_path / "clean")
    code, out, _ = _cli("replay", str(clean), capsys=capsys)
    assert code == 0 and "accepted" in out and "incomplete" not in out


def test_gaps_name_the_offsets_of_every_reader_problem(tmp_path: Path) -> None:
    path = _five(tmp_path)
    offsets = _offsets(path)
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack_from("<I", data, offsets[1][0] + 40)
    struct.pack_into("<I", data, offsets[1][0] + 40, n + 24)  # a changed length
    path.write_bytes(bytes(data))
    _flip(path, offsets[3][0])
    (journal,) = load([path])
    found = rp.gaps(journal)
    assert [g.offset for g in found] == [p.offset for p in journal.problems]
    assert "call_id 2" in str(found[0]) and "call_id 4" in str(found[1])


def test_diff_notes_a_repeated_coordinate_with_other_bytes(tmp_path: Path) -> None:
    """The first record of a coordinate counts; a later one with other bytes is a note."""
    for rank in range(2):
        j = Journal(tmp_path, rank).open()
        for i in range(3):
            j.chunk(i)
        if rank == 1:
            j.envelope(plan(9)[0], plan(1)[1])  # call_id 2 again, another envelope's bytes
            j.last = plan(2)[1]
        j.shutdown().end().save()
    report = diff(load([tmp_path]))
    assert report.divergence is None
    (note,) = report.notes
    assert note.startswith("tp_control.rank1: a second record of call_id=2 chunk_index=1 ")
    assert "holds other bytes than the first" in note


def test_replay_cli_notes_a_journal_that_starts_after_its_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    j = Journal(tmp_path, 0).skip_file().open("size")
    for i in range(3, 6):
        j.chunk(i)
    j.shutdown().end().save()
    code, out, _ = _cli("replay", str(tmp_path), capsys=capsys)
    assert code == 0, out
    assert "note: the journal starts after its stream did" in out
    assert "4 envelopes replayed, accepted" in out
