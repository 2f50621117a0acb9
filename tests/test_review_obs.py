"""Hostile and edge inputs of the observability tools: ``tpwire journal trace`` on journals
whose times a viewer cannot place, an output path that names an input journal, the ends of
point-to-point channels one rank holds (docs/journal.md "Timeline"); the metrics recorder's
help texts (docs/runtime.md, Metrics)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from journal_scenarios import plan
from test_journal_diff_replay import Journal, _prefetching
from test_journal_trace import check_trace

from tpwire.cli import main

pytestmark = pytest.mark.timeout(120)


def _trace(folder: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["journal", "trace", str(folder), "-o", str(out)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("far", [1e303, -1e303, 2**62])
def test_a_time_out_of_a_viewer_s_range_is_a_problem_instant_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], far: float
) -> None:
    """Two resealed records whose ``t`` are valid JSON numbers far apart: their microseconds
    overflowed (an internal error, exit 70) or left the integers a double holds exactly."""
    folder = tmp_path / "far"
    for rank in range(2):
        j = Journal(folder, rank, world=2).open()
        j.envelope(*plan(1), meta={"t": 0.5})
        j.envelope(*plan(2), meta={"t": far if rank == 1 else 1.5})
        j.end().save()
    out = tmp_path / "far.json"
    code, err = _trace(folder, out, capsys)
    assert code == 0, err
    doc = json.loads(out.read_text("utf-8"))
    tracks = check_trace(doc)
    ts = [e["ts"] for e in doc["traceEvents"]]
    assert max(ts) < 2**53 and min(ts) > -(2**53)
    (problem,) = [e for e in tracks[(1, 1)] if e.get("cat") == "problem"]
    assert problem["name"] == "unplaceable time" and "out of range" in problem["args"]["message"]
    # the good times keep their place: rank 0's second envelope 1 s after the earliest time
    sends = [e for e in tracks[(1, 0)] if e["ph"] == "X"]
    assert sends[1]["ts"] + sends[1]["dur"] == 1_000_000


def test_a_journal_whose_first_record_is_the_earliest_starts_at_0_not_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rank's journal whose OPEN record is gone (its file rotated away) and whose first
    envelope holds the earliest time: its slice started at ts -1."""
    j = Journal(tmp_path / "n", 0, world=1).open()
    j.files[-1] = (j.files[-1][0], bytearray())  # no OPEN record
    j.envelope(*plan(1), meta={"t": 5.0}).envelope(*plan(2), meta={"t": 5.5}).save()
    out = tmp_path / "n.json"
    code, err = _trace(tmp_path / "n", out, capsys)
    assert code == 0, err
    tracks = check_trace(json.loads(out.read_text("utf-8")))  # every ts >= 0
    slices = [(e["ts"], e["dur"]) for e in tracks[(1, 0)] if e["ph"] == "X"]
    assert slices == [(0, 1), (1, 499_999)]


def test_the_output_may_not_overwrite_an_input_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _prefetching(tmp_path / "p")
    victim = sorted((tmp_path / "p").iterdir())[0]
    before = victim.read_bytes()
    code, err = _trace(tmp_path / "p", victim, capsys)
    assert code == 2 and err.count("\n") == 1 and "is one of the journals read" in err
    assert victim.read_bytes() == before
    link = tmp_path / "link.json"
    link.symlink_to(victim)  # a link to one is the same file
    code, err = _trace(tmp_path / "p", link, capsys)
    assert code == 2 and victim.read_bytes() == before
    code, err = _trace(tmp_path / "p", tmp_path / "p", capsys)  # a folder: cannot write
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err


class _P2P(Journal):
    """A point-to-point end: ``tp_control.rank{rank}-peer{peer}``."""

    peer = 0

    @property
    def stem(self) -> str:
        return f"tp_control.rank{self.rank}-peer{self.peer}"


def _tracks_by_name(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    names = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in doc["traceEvents"]
        if e["name"] == "thread_name"
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for e in doc["traceEvents"]:
        if e["ph"] != "M":
            out.setdefault(names[(e["pid"], e["tid"])], []).append(e)
    return out


def test_the_p2p_ends_one_rank_holds_get_a_track_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 0 sends to ranks 1 and 2 on two channels of one protocol: its two ends were one
    track (two thread names on it, overlapping slices) and the arrows of both peers left
    whichever send came first."""
    folder = tmp_path / "pp"
    for rank, peer in ((0, 1), (0, 2), (1, 0), (2, 0)):
        j = _P2P(folder, rank, world=3)
        j.peer = peer
        j.open()
        for i in range(2 if peer != 2 and rank != 2 else 3):
            j.chunk(i)
        j.end().save()
    out = tmp_path / "pp.json"
    code, err = _trace(folder, out, capsys)
    assert code == 0, err
    doc = json.loads(out.read_text("utf-8"))
    names = [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"]
    keys = [(e["pid"], e["tid"]) for e in doc["traceEvents"] if e["name"] == "thread_name"]
    assert len(keys) == len(set(keys)) == 4
    assert sorted(names) == ["rank 0 (peer 1)", "rank 0 (peer 2)", "rank 1 (peer 0)",
                             "rank 2 (peer 0)"]  # fmt: skip
    by_name = _tracks_by_name(doc)
    for evs in by_name.values():
        slices = [e for e in evs if e["ph"] == "X"]
        for a, b in itertools.pairwise(slices):
            assert a["ts"] + a["dur"] <= b["ts"], (a, b)  # no overlap on a track
    # each receive's arrow starts on the end that sent to that peer
    starts = {e["id"]: e for e in doc["traceEvents"] if e["ph"] == "s"}
    tid_name = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in doc["traceEvents"]
        if e["name"] == "thread_name"
    }
    pairs = sorted(
        (tid_name[(starts[e["id"]]["pid"], starts[e["id"]]["tid"])], tid_name[(e["pid"], e["tid"])])
        for e in doc["traceEvents"]
        if e["ph"] == "f"
    )
    assert set(pairs) == {("rank 0 (peer 1)", "rank 1 (peer 0)"),
                          ("rank 0 (peer 2)", "rank 2 (peer 0)")}  # fmt: skip
    assert len(pairs) == 2 + 3


def test_the_picture_labels_rows_by_their_track_names() -> None:
    from tools.trace_picture import _rows

    def named(kind: str, tid: int, name: str) -> dict[str, Any]:
        return {"ph": "M", "name": kind, "pid": 1, "tid": tid, "args": {"name": name}}

    events = [
        named("process_name", 0, "pp"),
        named("thread_name", 0, "rank 0 (peer 1)"),
        named("thread_name", 1_000_000, "rank 0 (peer 2)"),
    ]
    assert list(_rows(events).values()) == ["rank 0 (peer 1)", "rank 0 (peer 2)"]


def test_the_metrics_help_says_what_is_counted() -> None:
    """A received envelope's seconds include the wait for its head, and what moved beyond
    frame 0 includes the head's slots and trailer: the help texts say so."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest

    from tpwire.runtime.metrics import MetricsRecorder

    text = generate_latest(MetricsRecorder().registry).decode()
    helps = {
        line.split()[2]: line.split(None, 3)[3]
        for line in text.splitlines()
        if line.startswith("# HELP")
    }
    assert "waited for its head" in helps["tpwire_envelope_seconds"]
    assert "trailer" in helps["tpwire_frame1_bytes_total"]


def test_a_wire_of_its_own_counts_no_frame_bytes() -> None:
    """Compat moves an envelope with collectives of its own (``nbytes`` 0); the frame 0 its
    events carry is rebuilt for the recorders and was never sent: not counted as sent."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from tests.envelopes import HEADER
    from tpwire.generated import tp_control
    from tpwire.runtime.metrics import MetricsRecorder
    from tpwire.runtime.recorder import ChannelInfo, EnvelopeEvent

    rec = MetricsRecorder(CollectorRegistry())
    rec.setup(ChannelInfo(tp_control.BINDINGS, 0, 2, "rank0", None, "raise"))  # type: ignore[arg-type]
    rec.sent(EnvelopeEvent(HEADER, HEADER.action, "sent", b"x" * 64, 0, 0.001))
    rec.sent(EnvelopeEvent(HEADER, HEADER.action, "sent", b"x" * 64, 96, 0.001))
    text = generate_latest(rec.registry).decode()
    labels = '{direction="sent",protocol="tp_control"}'
    assert f"tpwire_frame0_bytes_total{labels} 64.0" in text
    assert f"tpwire_frame1_bytes_total{labels} 32.0" in text
    assert (
        'tpwire_envelopes_total{action="INFER",direction="sent",protocol="tp_control"} 2.0' in text
    )


def raced_heartbeat(rank: int, world: int) -> Any:
    """Rank 0's heartbeat NOOP is in flight (its put held 1.2 s, as a NOOP waits while the
    workers compute) when the main thread's send starts and waits for the send lock (the
    NOOP took the id the send was given: refused by the ordering rules, then sent again)."""
    import threading
    import time

    import torch.distributed as dist

    from tests.mp_scenarios import envelope, header
    from tpwire.generated import tp_control as tc
    from tpwire.runtime.channel import BroadcastChannel
    from tpwire.runtime.ordering import OrderingError
    from tpwire.runtime.recorder import EnvelopeEvent, Recorder

    class Cpu(Recorder):
        name = "cpu"

        def __init__(self) -> None:
            self.seen: list[tuple[str, float]] = []

        def sent(self, event: EnvelopeEvent) -> None:
            self.seen.append((event.action.name if event.action is not None else "?", event.cpu))

    cpu = dist.new_group(backend="gloo")
    rec = Cpu()
    ch = BroadcastChannel(tc, cpu_group=cpu, heartbeat_s=0.2, recorders=[rec]).open()
    if rank == 0:
        put = ch.transport.put

        def slow(tensor: Any, tag: int, *, frame0: bool) -> None:
            if frame0 and threading.current_thread().name == "tpwire-heartbeat":
                time.sleep(1.2)
            put(tensor, tag, frame0=frame0)

        ch.transport.put = slow  # type: ignore[method-assign]
        ch.send(envelope(0), header(ch.next_call_id(), chunk=0))
        call_id = ch.next_call_id()
        time.sleep(0.6)  # idle: a NOOP goes out (after 0.2 s) and is held
        try:
            ch.send(envelope(1), header(call_id, chunk=1))  # waits for the send lock
        except OrderingError:
            ch.send(envelope(1), header(ch.next_call_id(), chunk=1))
        ch.shutdown()
        return {"seen": rec.seen}
    actions = []
    while True:
        got = ch.recv()
        actions.append(got.action.name)
        if got.action is tc.TPAction.SHUTDOWN:
            return {"actions": actions}


@pytest.mark.timeout(150)
def test_a_heartbeat_in_flight_keeps_its_own_cpu_path(tmp_path: Path) -> None:
    from tests.mp import run_ranks

    results = run_ranks("raced_heartbeat", tmp_path, world=2, timeout=120,
                        module="test_review_obs")  # fmt: skip
    src = results[0].result
    assert src is not None, results[0].log
    actions = [a for a, _ in src["seen"]]
    assert "NOOP" in actions and actions.count("INFER") == 2, src
    assert all(c >= 0 for _, c in src["seen"]), src["seen"]  # a duration is never negative
