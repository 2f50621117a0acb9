"""``tpwire journal trace`` (docs/journal.md "Timeline"): the ranks' journals as a Chrome
trace-event / Perfetto file. Every document written here is checked against the format (the
keys and types each phase needs, one named track per rank, slices that never overlap on a
track, every flow start with its finish inside a slice); the instants sit on the rank
``journal diff`` names and where the journals put the ends."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from journal_scenarios import plan
from mp import run_ranks
from test_journal_diff_replay import Journal, _killed, _prefetching

from tpwire.cli import main
from tpwire.runtime import journal as jr
from tpwire.runtime.journal_diff import diff
from tpwire.runtime.journal_trace import NO_TIME_US, dumps, trace
from tpwire.runtime.replay import load

pytestmark = pytest.mark.timeout(120)

_NEEDS = {
    "X": {"name": str, "cat": str, "ts": int, "dur": int, "pid": int, "tid": int, "args": dict},
    "i": {"name": str, "cat": str, "ts": int, "s": str, "pid": int, "tid": int, "args": dict},
    "s": {"name": str, "cat": str, "ts": int, "id": int, "pid": int, "tid": int},
    "f": {"name": str, "cat": str, "ts": int, "id": int, "bp": str, "pid": int, "tid": int},
    "M": {"name": str, "pid": int, "tid": int, "args": dict},
}


def check_trace(doc: Any) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Assert ``doc`` is a valid trace-event document; return its events by track."""
    assert isinstance(doc, dict) and doc["displayTimeUnit"] == "ms"
    events = doc["traceEvents"]
    assert isinstance(events, list) and events
    tracks: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for ev in events:
        needs = _NEEDS[ev["ph"]]
        for key, typ in needs.items():
            assert isinstance(ev.get(key), typ), (key, ev)
        if ev["ph"] != "M":
            assert ev["ts"] >= 0, ev
        tracks.setdefault((ev["pid"], ev["tid"]), []).append(ev)
    for key, evs in tracks.items():
        names = [e["args"]["name"] for e in evs if e["name"] == "thread_name"]
        assert names == [f"rank {key[1]}"], (key, names)
        timed = [e for e in evs if e["ph"] != "M"]
        assert [e["ts"] for e in timed] == sorted(e["ts"] for e in timed), key  # monotonic
        slices = [e for e in timed if e["ph"] == "X"]
        for a, b in itertools.pairwise(slices):
            assert a["dur"] >= 1 and a["ts"] + a["dur"] <= b["ts"], (a, b)  # no overlap
        for e in timed:
            if e["ph"] == "i":
                assert e["s"] == "t"
            if e["ph"] in "sf":  # bound to the slice that encloses it
                assert any(x["ts"] <= e["ts"] < x["ts"] + x["dur"] for x in slices), e
    starts = Counter(e["id"] for e in events if e["ph"] == "s")
    ends = Counter(e["id"] for e in events if e["ph"] == "f")
    assert starts == ends and set(starts.values()) <= {1}, (starts, ends)
    assert all(e["bp"] == "e" for e in events if e["ph"] == "f")
    processes = Counter(e["pid"] for e in events if e["name"] == "process_name")
    assert set(processes.values()) == {1} and set(processes) == {p for p, _ in tracks}
    return tracks


def _instants(tracks: dict[tuple[int, int], list[dict[str, Any]]], cat: str) -> list[Any]:
    return [(tid, e) for (_, tid), evs in tracks.items() for e in evs if e.get("cat") == cat]


def _cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _traced(folder: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    out_file = folder.parent / f"{folder.name}.json"
    code, out, err = _cli("journal", "trace", str(folder), "-o", str(out_file), capsys=capsys)
    assert code == 0, (out, err)
    assert out.startswith(f"{out_file}: ") and "ui.perfetto.dev" in out
    return check_trace(json.loads(out_file.read_text("utf-8")))


# --- journals built record by record ---------------------------------------------------------


def test_a_track_per_rank_slices_flows_and_the_divergence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _prefetching(tmp_path / "p")  # rank 2 ran other inputs at chunk 2
    tracks = _traced(tmp_path / "p", capsys)
    assert sorted(tracks) == [(1, 0), (1, 1), (1, 2)]
    sends = [e for e in tracks[(1, 0)] if e["ph"] == "X" and e["name"] == "send INFER"]
    assert len(sends) == 6
    args = sends[2]["args"]
    _, h = plan(2)
    assert args["ids"] == {"call_id": h.call_id, "chunk_index": 2, "cache_epoch": 0}
    assert args["action"] == "INFER" and args["state"] == "sent" and args["frame1_bytes"] > 0
    recvs = [e for e in tracks[(1, 1)] if e["ph"] == "X" and e["name"].startswith("recv")]
    assert [e["args"]["state"] for e in recvs] == ["validated"] * 7  # 6 chunks and SHUTDOWN
    # an arrow from rank 0's send to each worker's receive: 7 envelopes, 2 workers
    assert sum(1 for evs in tracks.values() for e in evs if e["ph"] == "f") == 14
    (div,) = _instants(tracks, "divergence")
    assert div[0] == 2 and div[1]["args"]["odd"] == ["tp_control.rank2"]
    assert div[1]["args"]["at"] == f"call_id={h.call_id} chunk_index=2 cache_epoch=0"
    ends = _instants(tracks, "end")
    assert sorted(tid for tid, _ in ends) == [0, 1, 2]
    assert all(e["name"] == "END SHUTDOWN" for _, e in ends)


def test_records_without_a_time_are_spaced_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The builder writes no ``t``: each record NO_TIME_US after the one before it."""
    _prefetching(tmp_path / "p")
    tracks = _traced(tmp_path / "p", capsys)
    slices = [e for e in tracks[(1, 0)] if e["ph"] == "X"]
    assert {e["dur"] for e in slices} == {NO_TIME_US}


def test_a_killed_rank_is_named_and_the_survivors_end_poisoned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _killed(tmp_path / "a", victim_holds=5, survivor_holds=4)
    tracks = _traced(tmp_path / "a", capsys)
    poison = _instants(tracks, "poison")
    assert sorted(tid for tid, _ in poison) == [0, 2]
    for tid, ev in poison:  # the last thing on the survivor's track
        assert ev["ts"] == max(e["ts"] for e in tracks[(1, tid)] if e["ph"] != "M")
    (div,) = _instants(tracks, "divergence")
    assert div[0] == 1 and div[1]["args"]["odd"] == ["tp_control.rank1"]
    assert not [e for e in tracks[(1, 1)] if e.get("cat") in ("end", "poison")]


def test_the_same_journals_give_the_same_bytes(tmp_path: Path) -> None:
    _killed(tmp_path / "a", victim_holds=5, survivor_holds=5)
    first = dumps(trace(load([tmp_path / "a"])))
    second = dumps(trace(load([tmp_path / "a"])))
    assert first == second
    json.loads(first)


def test_refusals_and_damage_are_instants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "r"
    for rank in range(2):
        j = Journal(folder, rank, world=2).open()
        j.chunk(0)
        if rank == 1:
            j.chunk(1)
            j.envelope(*plan(2), meta={"state": "refused", "error": "ordering: a gap"})
        paths = j.end().save()
    # a torn tail on rank 1: half a record past its end
    record = b"".join(bytes(p) for p in jr.encode_record(jr.END, fingerprint=1, meta={"how": "x"}))
    with open(paths[-1], "ab") as f:
        f.write(record[: len(record) // 2])
    tracks = _traced(folder, capsys)
    (refused,) = _instants(tracks, "refusal")
    assert refused[0] == 1 and refused[1]["args"]["error"] == "ordering: a gap"
    (torn,) = _instants(tracks, "problem")
    assert torn[0] == 1 and torn[1]["name"] == "torn tail"


def test_cli_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli("journal", "trace", str(tmp_path / "nope"), "-o", "x.json", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _cli("journal", "trace", str(tmp_path / "empty"), "-o", "x.json", capsys=capsys)
    assert code == 2 and "no journal" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tp_control.rank0.000000.tpj").write_bytes(b"garbage, no record" * 10)
    code, _, err = _cli("journal", "trace", str(bad), "-o", "x.json", capsys=capsys)
    assert code == 2 and "nothing read from it" in err
    _prefetching(tmp_path / "p")
    out = tmp_path / "no" / "such" / "dir.json"
    code, _, err = _cli("journal", "trace", str(tmp_path / "p"), "-o", str(out), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err


def test_help_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["journal", "trace", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "trace-event" in out and "ui.perfetto.dev" in out and "-o FILE" in out


# --- real streams on gloo ---------------------------------------------------------------------


def _stream(tmp: Path, **kwargs: Any) -> Any:
    return run_ranks(
        "stream", tmp, world=3, timeout=150, module="journal_scenarios",
        journal=str(tmp / "journal"), n=30, **kwargs,
    )  # fmt: skip


@pytest.mark.timeout(240)
def test_the_incident_divergence_sits_on_the_rank_diff_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OM-11 (the incident of docs/journal.md): rank 2 perturbs its latents of chunk 17."""
    results = _stream(tmp_path, perturb=(2, 17))
    assert [r.exitcode for r in results] == [0, 0, 0], [r.log for r in results]
    folder = tmp_path / "journal"
    div = diff(load([folder])).divergence
    assert div is not None and div.odd == ["tp_control.rank2"]
    tracks = _traced(folder, capsys)
    # the hard cut opened a second file, not a second stream: one process, three tracks
    assert sorted(tracks) == [(1, 0), (1, 1), (1, 2)]
    (ev,) = _instants(tracks, "divergence")
    assert ev[0] == 2 and ev[1]["args"]["at"] == div.coordinate
    _, h17 = plan(17)
    (slice17,) = [
        e for e in tracks[(1, 2)]
        if e["ph"] == "X" and e["cat"] == "envelope" and e["args"]["ids"]["call_id"] == h17.call_id
    ]  # fmt: skip
    assert ev[1]["ts"] == slice17["ts"] + slice17["dur"]  # at rank 2's receive of chunk 17
    # the slices keep the records' own times: microseconds of wall clock
    recvs = [e for e in tracks[(1, 1)] if e["ph"] == "X" and e["cat"] == "envelope"]
    assert len(recvs) == 32 and len({e["dur"] for e in recvs}) > 1


@pytest.mark.timeout(240)
def test_a_sigkilled_worker_s_end_and_the_poison_sit_where_the_journals_put_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 1 SIGKILLs itself halfway through writing its record of chunk 12."""
    results = _stream(tmp_path, kill_at=12)
    assert results[1].exitcode == -9, results[1].log
    folder = tmp_path / "journal"
    journals = load([folder])
    tracks = _traced(folder, capsys)
    origin = min(r.meta["t"] for j in journals for r in j.records if "t" in r.meta)
    for rank, j in enumerate(journals):
        ends = [r for r in j.records if r.kind == jr.END]
        got = [e for _, e in _instants(tracks, "poison") + _instants(tracks, "end") if _ == rank]
        assert [e["name"] for e in got] == [f"END {r.meta['how']}" for r in ends]
        for e, r in zip(got, ends, strict=True):  # at the END record's own time
            assert abs(e["ts"] - round((r.meta["t"] - origin) * 1e6)) <= len(j.records)
    poisoned = sorted(t for t, e in _instants(tracks, "poison") if e["name"] == "END poisoned")
    assert poisoned == [0, 2]  # the survivors poison on the dead peer; rank 1 has no END
    (torn,) = _instants(tracks, "problem")
    dead = journals[1]
    last = max(e["ts"] + e["dur"] for e in tracks[(1, 1)] if e["ph"] == "X")
    assert torn[0] == 1 and torn[1]["name"] == "torn tail" and torn[1]["ts"] == last
    assert torn[1]["args"]["offset"] == dead.torn_tail.offset  # type: ignore[union-attr]
    (div,) = _instants(tracks, "divergence")
    assert div[0] == 1 and div[1]["args"]["odd"] == ["tp_control.rank1"]


def test_a_process_per_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each rank restarted on the same folder: two streams, two processes; the divergence
    (rank 1 got one more chunk in the second stream) sits in the second."""
    for rank in range(2):
        j = Journal(tmp_path / "s", rank, world=2).open()
        for i in range(3):
            j.chunk(i)
        j.shutdown().end().open()
        for i in range(2 + rank):
            j.chunk(i)
        j.shutdown().end().save()
    tracks = _traced(tmp_path / "s", capsys)
    assert sorted(tracks) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    names = [
        e["args"]["name"] for evs in tracks.values() for e in evs if e["name"] == "process_name"
    ]
    assert names == ["tp_control (stream 1 of 2)", "tp_control (stream 2 of 2)"]
    (div,) = [(key, e) for key, evs in tracks.items() for e in evs if e["cat"] == "divergence"]
    assert div[0] == (2, 1) and "in stream 2 of 2" in div[1]["args"]["at"]
