"""The journal's readers and writer as a restarted process, a careless operator and a
read-only disk meet them (review of issue 25): a folder holding two runs of one stem, a file
named twice, an empty first file, folders and files the reader may not open, and journal
folders a rank may not write (as an unprivileged user, so the checks hold when the suite
runs as root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from journal_scenarios import plan
from test_journal_diff_replay import Journal, _cli

from tpwire.generated import tp_control as tc
from tpwire.runtime import replay as rp
from tpwire.runtime.journal_diff import diff
from tpwire.runtime.replay import ReplaySource, load

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534


def _two_runs(folder: Path, *, perturb_first: bool) -> None:
    """Each of three ranks journals a run (rank 2 ran other inputs at chunk 2 when
    ``perturb_first``), then the job restarts on the same folder and runs the same
    stream again, healthy: every stem's second run continues at the next file index."""
    for rank in range(3):
        j = Journal(folder, rank).open()
        for i in range(5):
            odd = perturb_first and rank == 2 and i == 2
            j.chunk(i).observe(i, 1000 if odd else None)
        j.shutdown().end()
        j.open()  # the restarted process: a file opened with a new stream
        for i in range(5):
            j.chunk(i).observe(i)
        j.shutdown().end()
        j.save()


def test_diff_compares_a_restarted_runs_streams_one_by_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first run's divergence is found although the second run agrees (it took the
    place of the first run's observations: `no divergence`, exit 0)."""
    _two_runs(tmp_path, perturb_first=True)
    report = diff(load([tmp_path]))
    div = report.divergence
    assert div is not None, "the first run's divergence was hidden by the second run"
    _, h = plan(2)
    assert div.coordinate.startswith(f"call_id={h.call_id} chunk_index=2 cache_epoch=0 in stream 1")
    assert div.odd == ["tp_control.rank2"]
    assert any("several streams" in n for n in report.notes)
    assert [len(rp.streams(j)) for j in load([tmp_path])] == [2, 2, 2]
    code, out, _ = _cli("journal", "diff", str(tmp_path), capsys=capsys)
    assert code == 1 and "differs: tp_control.rank2" in out
    # both runs healthy: no divergence, every envelope of both compared
    healthy = tmp_path / "healthy"
    _two_runs(healthy, perturb_first=False)
    report = diff(load([healthy]))
    assert report.divergence is None and report.compared == 12


def test_diff_pairs_the_latest_streams_where_retention_removed_an_old_run(tmp_path: Path) -> None:
    _two_runs(tmp_path, perturb_first=True)
    (tmp_path / "tp_control.rank1.000000.tpj").unlink()  # rank 1's first run is gone
    report = diff(load([tmp_path]))
    assert report.divergence is None  # the runs every rank holds agree
    assert any("tp_control.rank0: its first 1 stream(s)" in n for n in report.notes)


def test_replay_holds_each_stream_to_the_ordering_on_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A restarted process starts its ids over: not `regressing call_id 1 after 6`."""
    _two_runs(tmp_path, perturb_first=False)
    files = sorted(str(p) for p in tmp_path.glob("tp_control.rank0.*.tpj"))
    code, out, _ = _cli("replay", *files, capsys=capsys)
    assert code == 0, out
    assert "12 envelopes replayed, accepted" in out and "REFUSED" not in out


def test_a_replay_source_never_splices_two_runs(tmp_path: Path) -> None:
    """Run 1 was killed after chunk 2 (no SHUTDOWN); the restarted run 2 went further. The
    source feeds run 1 alone (and then SHUTDOWN), never run 1's ids and then run 2's."""
    j = Journal(tmp_path, 1).open()
    for i in range(3):
        j.chunk(i)
    j.open()
    for i in range(6):
        j.chunk(i)
    j.shutdown().end().save()
    source = ReplaySource([tmp_path], tc)
    assert source.streams == 2
    fed = [item.header.call_id for item in source]
    assert fed == [plan(i)[1].call_id for i in range(3)], fed
    assert sorted(source.skipped) == sorted(
        [plan(i)[1].call_id for i in range(6)] + [plan(5)[1].call_id + 1]
    )


def test_a_file_named_twice_is_read_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    j = Journal(tmp_path, 0).open()
    for i in range(3):
        j.chunk(i)
    (path,) = j.shutdown().end().save()
    (journal,) = load([tmp_path, path])
    assert journal.files == [str(path)] and len(journal.envelopes()) == 4
    code, out, _ = _cli("replay", str(tmp_path), str(path), capsys=capsys)
    assert code == 0 and "4 envelopes replayed, accepted" in out, out


def test_an_empty_first_file_is_not_a_head_cut_by_retention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer killed before its first record leaves an empty file; the next run's first
    file opens its stream: nothing was cut."""
    for rank in range(2):
        (tmp_path / f"tp_control.rank{rank}.000000.tpj").write_bytes(b"")
        j = Journal(tmp_path, rank)
        j.index = 1
        j.open()
        for i in range(3):
            j.chunk(i)
        j.shutdown().end().save()
    report = diff(load([tmp_path]))
    assert report.divergence is None and report.notes == [], report.notes
    files = [str(p) for p in sorted(tmp_path.glob("tp_control.rank0.*"))]
    code, out, _ = _cli("replay", *files, capsys=capsys)
    assert code == 0 and "starts after its stream" not in out, out


# --- as an unprivileged user: the reader, and the writer under a read-only folder ----------


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's own is private to its user)."""
    folder = Path(tempfile.mkdtemp(prefix="tpwire-review-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_user(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``argv`` run as this user, or as nobody when this is root (root ignores modes);
    skipped where root cannot become nobody (no ``setpriv``)."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file modes cannot be tested")
        argv = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=90, env=env, cwd=cwd or REPO
    )


def _tpwire(*args: str) -> subprocess.CompletedProcess[str]:
    return _as_user([sys.executable, "-c", "import sys; from tpwire.cli import main; "
                     "sys.exit(main(sys.argv[1:]))", *args])  # fmt: skip


def test_the_cli_on_folders_and_files_it_may_not_read(shared: Path) -> None:
    """A folder that cannot be listed is a problem (it printed nothing and exited 0), a
    file under a folder that cannot be searched is one line (it was an internal error,
    exit 70), a link loop is said as such; never a traceback."""
    j = Journal(shared / "closed", 0).open()
    (path,) = j.chunk(0).shutdown().end().save()
    (shared / "closed").chmod(0o700)
    if os.geteuid() != 0:
        (shared / "closed").chmod(0o000)
    (shared / "loop1.tpj").symlink_to("loop2.tpj")
    (shared / "loop2.tpj").symlink_to("loop1.tpj")
    runs = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        runs.append(_tpwire(*args))
        return runs[-1]

    res = run("journal", "show", str(shared / "closed"))
    assert res.returncode == 1, res
    assert "a folder that cannot be listed: Permission denied" in res.stdout
    res = run("journal", "show", str(path))
    assert res.returncode == 1 and "cannot read: Permission denied" in res.stdout, res
    res = run("replay", str(path))
    assert res.returncode == 2 and "cannot read: Permission denied" in res.stderr, res
    res = run("journal", "show", str(shared / "loop1.tpj"))
    assert res.returncode == 1 and "Too many levels of symbolic links" in res.stdout, res
    res = run("journal", "diff", str(shared / "closed"), str(shared / "loop1.tpj"))
    assert res.returncode == 2 and "cannot be listed" in res.stderr, res
    for r in runs:
        assert "Traceback" not in r.stdout + r.stderr and "internal error" not in r.stderr


_WRITER = textwrap.dedent(
    """
    import os, sys
    from journal_scenarios import plan
    from tpwire.generated import tp_control as tc
    from tpwire.runtime import journal as jr
    from tpwire.runtime.wire import seal_words

    def writer(folder, **kw):
        return jr.JournalWriter(jr.JournalConfig(folder, **kw), tc.BINDINGS, rank=0, world=1,
                                name="rank0", source=0)

    def feed(w, indexes):
        for i in indexes:
            msg, h = plan(i)
            w.envelope(h, seal_words(tc.BINDINGS.prepare(msg, h).words).tobytes(), sent=True,
                       state="sent")

    closed, rotating = sys.argv[1], sys.argv[2]
    try:  # an existing folder this user may not write
        writer(closed)
    except jr.JournalUnavailable as exc:
        print("setup:", exc)
    w = writer(rotating, max_bytes=600)
    feed(w, range(3))
    assert w.drain()
    os.chmod(rotating, 0o555)  # read-only from now on: the next rotation cannot create
    feed(w, range(3, 12))
    assert w.drain()
    print("failed:", w.failed)
    print("written:", w.written)
    w.close()
    """
)


def test_a_read_only_journal_folder_as_an_unprivileged_rank(shared: Path) -> None:
    """EACCES on an existing folder at setup is one clear error (the channel turns it into
    every rank's agreement); a folder made read-only mid-stream stops the journal at the
    next rotation with one line, the records before it intact."""
    closed, rotating = shared / "closed", shared / "rotating"
    closed.mkdir(mode=0o555)
    rotating.mkdir()
    if os.geteuid() == 0:
        os.chown(rotating, NOBODY, NOBODY)
    closed.chmod(0o555)
    res = _as_user([sys.executable, "-c", _WRITER, str(closed), str(rotating)], cwd=REPO / "tests")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "Bad file descriptor" not in res.stderr
    out = dict(line.split(": ", 1) for line in res.stdout.splitlines())
    assert f"cannot create {closed}" in out["setup"] and "Permission denied" in out["setup"]
    assert "cannot create" in out["failed"] and "Permission denied" in out["failed"]
    lines = [line for line in res.stderr.splitlines() if "journal off" in line]
    assert len(lines) == 1 and lines[0].startswith("tpwire[rank 0]: journal off"), res.stderr
    (journal,) = load([rotating])
    assert not journal.problems
    chunks = [r.chunk for r in journal.envelopes()]
    assert chunks == list(range(len(chunks))) and 3 <= len(chunks) < 12
    assert int(out["written"]) == len(journal.records)


# --- a file that shrinks while it is read; a writer whose thread cannot start --------------


def test_a_file_that_shrinks_while_read_keeps_the_records_before_the_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Truncated right after the reader opened it (a log tool's copytruncate): every record
    before the new end reads back, and the cut is one problem at the record it crosses
    (the 1 MiB read-ahead failed as a whole: 0 records)."""
    from tpwire.runtime import journal_format as jf

    j = Journal(tmp_path, 0).open()
    for i in range(6):
        j.chunk(i)
    (path,) = j.shutdown().end().save()
    whole = jf.scan(path)
    cut = whole.records[4].offset + 10  # inside the fourth envelope record
    opened = jf._File.__init__

    def shrink_after_open(self: Any, fd: int, size: int) -> None:
        opened(self, fd, size)
        os.truncate(path, cut)

    monkeypatch.setattr(jf._File, "__init__", shrink_after_open)
    found = jf.scan(path)
    assert [r.offset for r in found.records] == [r.offset for r in whole.records[:4]]
    (problem,) = found.problems
    assert problem.offset == whole.records[4].offset and "shrank while it was read" in str(problem)


def test_a_writer_whose_thread_cannot_start_is_unavailable_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from tpwire.runtime import journal as jr

    start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        if self.name == "tpwire-journal":
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(jr.JournalUnavailable, match="cannot start the journal writer thread"):
        jr.JournalWriter(
            jr.JournalConfig(str(tmp_path)), tc.BINDINGS, rank=0, world=1, name="rank0",
            source=0,
        )  # fmt: skip
    assert not list(tmp_path.glob("*.tpj"))
    assert set(os.listdir("/proc/self/fd")) <= before


def setup_fails_on_one_rank(rank: int, world: int, journal: str, bad: str | None = None) -> Any:
    """Rank 1's journal setup fails: in ``bad`` (a read-only folder), else by what is not an
    OSError (a NUL byte in its folder's name: ValueError). Every rank opens without a
    journal, the stream goes on."""
    from tpwire.runtime import journal as jr
    from tpwire.runtime.channel import BroadcastChannel

    folder = journal if rank != 1 else bad if bad is not None else journal + "\0"
    ch = BroadcastChannel(tc, poison="raise", journal=jr.JournalConfig(folder)).open()
    received = 0
    if rank == 0:
        for i in range(3):
            ch.send(*plan(i))
        ch.shutdown()
    else:
        while ch.recv().action is not tc.TPAction.SHUTDOWN:
            received += 1
    ch.close()
    return {"received": received, "journal": ch.journal is not None}


@pytest.mark.timeout(180)
def test_a_journal_setup_that_raises_on_one_rank_turns_journaling_off_on_all(
    tmp_path: Path,
) -> None:
    from mp import run_ranks

    results = run_ranks(
        "setup_fails_on_one_rank", tmp_path, world=2, timeout=150, module="test_review_journal",
        journal=str(tmp_path / "journal"),
    )  # fmt: skip
    for r in results:
        assert r.exitcode == 0, r.log
        assert "Traceback" not in r.log and "Connection closed" not in r.log, r.log
        (line,) = [x for x in r.log.splitlines() if "journal off" in x]
        assert line.startswith(f"tpwire[rank {r.rank}]: journal off on every rank")
        assert "rank 1: cannot set up the journal: ValueError" in line
        assert r.result["journal"] is False
    assert results[1].result["received"] == 3
    assert not list((tmp_path / "journal").glob("*.tpj"))


# --- diff over a record it could not read; a peer's parity status -------------------------


def test_diff_over_an_unreadable_record_is_incomplete_never_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 2 ran other inputs at chunk 2 and the record saying so has one flipped bit: the
    remaining observations agree, and diff said `no divergence`, exit 0."""
    from tpwire.runtime import journal as jr

    for rank in range(3):
        j = Journal(tmp_path, rank).open()
        for i in range(5):
            j.chunk(i).observe(i, 1000 if (rank == 2 and i == 2) else None)
        j.shutdown().end().save()
    path = tmp_path / "tp_control.rank2.000000.tpj"
    (obs,) = [r for r in jr.scan(path).records if r.kind == jr.OBSERVE and r.chunk == 2]
    data = bytearray(path.read_bytes())
    data[obs.offset + jr.HEADER_NBYTES + 10] ^= 1
    path.write_bytes(bytes(data))
    report = diff(load([tmp_path]))
    assert report.divergence is None and report.unread == 1
    code, out, _ = _cli("journal", "diff", str(tmp_path), capsys=capsys)
    assert code == 1, out
    assert "incomplete: no divergence in what was read" in out and "no divergence:" not in out
    assert f"offset {obs.offset}" in out
    code, out, _ = _cli("journal", "diff", "--format", "json", str(tmp_path), capsys=capsys)
    assert code == 1 and '"unread": 1' in out


def test_a_peers_journal_status_is_one_escaped_line_and_every_rank_decides_alike(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The open handshake's journal statuses are a peer's text: a newline, an escape
    sequence or a non-string cannot forge a log line or raise, and every rank, holding the
    same records, turns journaling off."""
    from tpwire.runtime.handshake import agree
    from tpwire.runtime.recorder import Recorder, Recorders

    forged = "x\ntpwire[rank 1]: POISONED call_id=7: forged; exiting 86\x1b[2J"
    records = [
        {"status": {"recorders": {"journal": None}, "rank": 0}},
        {"status": {"recorders": {"journal": forged}, "rank": "1\nforged"}},
        {"status": {"recorders": {"journal": {"nested": [1, "\x1b"]}}, "rank": None}},
        {"status": {"recorders": "not an object"}},
        {"status": "not an object"},
    ]

    class Journal(Recorder):
        name = "journal"

        def __init__(self) -> None:
            self.calls: list[str] = []

        def abandoned(self) -> None:
            self.calls.append("abandoned")

    for rank in range(4):
        journal = Journal()
        recorders = Recorders([journal], rank)
        agree(recorders, records)
        err = capsys.readouterr().err
        (line,) = err.splitlines()
        assert line.startswith(f"tpwire[rank {rank}]: journal off on every rank")
        assert "\x1b" not in line and "\\n" in line and "\\x1b" in line
        assert "rank 1\\nforged: x\\ntpwire[rank 1]: POISONED" in line and "rank 2: {" in line
        assert journal.calls == ["abandoned"] and not recorders


@pytest.mark.timeout(180)
def test_a_read_only_mounted_journal_folder_on_one_rank(tmp_path: Path) -> None:
    """Rank 1's journal folder is a read-only file system (EROFS, whoever runs it): the
    ranks agree in the handshake and open without a journal, one line each."""
    from mp import run_ranks

    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only file system here")
    try:
        results = run_ranks(
            "setup_fails_on_one_rank", tmp_path, world=2, timeout=150,
            module="test_review_journal", journal=str(tmp_path / "journal"), bad=str(ro),
        )  # fmt: skip
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
    for r in results:
        assert r.exitcode == 0, r.log
        assert "Traceback" not in r.log, r.log
        (line,) = [x for x in r.log.splitlines() if "journal off" in x]
        assert f"rank 1: cannot create {ro}/tp_control.rank1." in line
        assert "Read-only file system" in line
        assert r.result["journal"] is False
    assert results[1].result["received"] == 3
    assert not list((tmp_path / "journal").glob("*.tpj"))


def test_diff_and_replay_count_the_problems_a_file_does_not_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file keeps its first 100 problems and counts the rest: `diff` and `replay` said
    only the 100 (and `diff` counted 100 unread stretches)."""
    from tpwire.runtime import journal_format as jf

    for rank in range(2):
        j = Journal(tmp_path, rank).open()
        for i in range(3):
            j.chunk(i)
        j.shutdown().end().save()
    path = tmp_path / "tp_control.rank1.000000.tpj"
    fake = jf.HEAD.pack(jf.MAGIC, 1, jf.OBSERVE, 0, 1, 2, 3, 4, 0, 0) + b"\0" * 8
    path.write_bytes(path.read_bytes() + fake * 150)
    report = diff(load([tmp_path]))
    assert report.unread == 150
    assert f"tp_control.rank1: {path}: 50 more problem(s) not listed" in report.notes
    code, out, _ = _cli("replay", str(path), capsys=capsys)
    assert code == 1 and f"note: {path}: 50 more problem(s) not listed" in out, out


def test_show_on_a_folder_without_journals_is_no_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The wrong folder printed nothing and exited 0."""
    for fmt in ("text", "json"):
        code, out, err = _cli("journal", "show", "--format", fmt, str(tmp_path), capsys=capsys)
        assert code == 2 and out == "" and "no journal files (*.tpj) in" in err


def test_a_spec_that_does_not_compile_is_unusable_input_not_a_divergence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--spec` with an error exited 1, which `diff` documents as a divergence."""
    for rank in range(2):
        j = Journal(tmp_path, rank).open()
        j.chunk(0).shutdown().end().save()
    bad = tmp_path / "bad.yaml"
    bad.write_text("x: [\n")
    for argv in (["journal", "diff"], ["replay"]):
        code, out, err = _cli(*argv, str(tmp_path), "--spec", str(bad), capsys=capsys)
        assert code == 2, (argv, out, err)
        assert f"--spec {bad}: 1 error" in err and "yaml-syntax" in err


class _Tagged(Journal):
    """A rank's journal of a second channel of the same protocol (tag ``side``)."""

    @property
    def stem(self) -> str:
        return f"tp_control.side.rank{self.rank}"


def test_diff_compares_each_channel_of_a_folder_on_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A launcher's TPWIRE_JOURNAL puts every journaled channel of a process in one folder:
    two channels, each healthy, were compared as four ranks of one (a false divergence)."""
    for rank in range(2):
        j = Journal(tmp_path, rank).open()
        for i in range(3):
            j.chunk(i).observe(i)
        j.shutdown().end().save()
        side = _Tagged(tmp_path, rank).open()
        for i in range(5, 9):
            side.chunk(i).observe(i)
        side.shutdown().end().save()
    code, out, err = _cli("journal", "diff", str(tmp_path), capsys=capsys)
    assert code == 0, out + err
    assert "channel tp_control:" in out and "channel tp_control.side:" in out
    assert out.count("no divergence") == 2
    # a divergence in one channel is that channel's, and the exit status says so
    odd = _Tagged(tmp_path / "odd", 1).open()
    j = _Tagged(tmp_path / "odd", 0).open()
    for i in range(3):
        j.chunk(i).observe(i)
        odd.chunk(i).observe(i, 1000 if i == 1 else None)
    j.shutdown().end().save()
    odd.shutdown().end().save()
    for rank in range(2):
        Journal(tmp_path / "odd", rank).open().chunk(0).shutdown().end().save()
    code, out, _ = _cli("journal", "diff", "--format", "json", str(tmp_path / "odd"), capsys=capsys)
    assert code == 1
    docs = {d["channel"]: d for d in json.loads(out)}
    assert docs["tp_control"]["divergence"] is None
    assert docs["tp_control.side"]["divergence"]["odd"] == ["tp_control.side.rank1"]


def test_a_closed_writer_is_not_kept_for_the_exit(tmp_path: Path) -> None:
    """Each writer registered its close to run at exit and kept it there once closed: a
    process opening channel after channel kept every writer it ever had."""
    import gc
    import weakref

    from tpwire.runtime import journal as jr

    kept = []
    for i in range(3):
        w = jr.JournalWriter(
            jr.JournalConfig(str(tmp_path), tag=f"t{i}"), tc.BINDINGS, rank=0, world=1,
            name="rank0", source=0,
        )  # fmt: skip
        w.end("closed", None)
        w.close()
        kept.append(weakref.ref(w))
        del w
    gc.collect()
    assert [ref() for ref in kept] == [None, None, None]
