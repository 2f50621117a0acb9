"""The journal writer under disk faults (docs/journal.md, "When the disk fails"): a rotation
whose open fails, a journal folder removed mid-stream, a full disk, a file too large, a
folder a rank cannot create, file indexes past 999,999, and observations made after the
stream's terminal action. Journaling failures never block, crash or silently empty the
stream: a rank says so in one line and goes on without its journal.

The multi-process cases run on real gloo groups (tests/mp.py) with hard timeouts; the
scenarios are the functions at the end of this module (each rank imports it)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from mp import run_ranks

from tpwire.generated import tp_control as tc
from tpwire.runtime import journal as jr
from tpwire.runtime import journal_format as jf
from tpwire.runtime.replay import load
from tpwire.runtime.wire import seal_words

pytestmark = [
    pytest.mark.timeout(180),
    # an exception that ends the writer thread fails the test (not a warning in passing)
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

REPO = Path(__file__).resolve().parents[1]


def _plan(i: int) -> tuple[Any, Any]:
    from journal_scenarios import plan

    return plan(i)


def _writer(folder: Path, **config: Any) -> jr.JournalWriter:
    return jr.JournalWriter(
        jr.JournalConfig(str(folder), **config), tc.BINDINGS, rank=0, world=1, name="rank0",
        source=0,
    )  # fmt: skip


def _feed(w: jr.JournalWriter, indexes: range) -> None:
    """Hand the writer the envelopes of ``indexes`` as a sender would."""
    for i in indexes:
        msg, h = _plan(i)
        prep = tc.BINDINGS.prepare(msg, h)
        segments = [jr.tensor_bytes(s.contiguous()) for s in prep.frames().segments]
        w.envelope(h, seal_words(prep.words).tobytes(), sent=True, state="sent", segments=segments)


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "journal" in line]


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and "Exception in thread" not in text, text
    assert "Bad file descriptor" not in text, text


# --- rotation: the new file cannot be opened ------------------------------------------------


def test_a_rotation_whose_open_fails_closes_no_fd_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """EMFILE at a rotation's open: one line, journaling off, and the old file's descriptor
    is closed exactly once: the number another thread is given right after stays its own."""
    real_open = os.open
    given: list[int] = []
    victims: list[int] = []

    def open_(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if str(path).endswith(jr.SUFFIX):
            if given:  # the rotation: the old file is closed; another thread opens a file
                victims.append(real_open(os.devnull, os.O_RDONLY))
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            given.append(real_open(path, flags, mode, **kw))
            return given[-1]
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", open_)
    w = _writer(tmp_path, max_bytes=1500)
    _feed(w, range(6))
    w.close()
    monkeypatch.undo()
    _, err = capfd.readouterr()
    assert given and victims and victims[0] == given[0]  # the number was handed on
    try:  # still open: the writer did not close that number a second time
        os.fstat(victims[0])
        closed_twice = False
        os.close(victims[0])
    except OSError:
        closed_twice = True
    assert not closed_twice, "the writer closed the old file's descriptor twice"
    _no_traceback(err)
    (line,) = _lines(err)
    assert line.startswith("tpwire[rank 0]: journal off") and "Too many open files" in line
    assert w.failed is not None and "Too many open files" in w.failed
    (path,) = tmp_path.glob("*.tpj")  # the records before the rotation are intact
    found = jf.scan(path)
    assert not found.problems and len(found.records) >= 2


@pytest.mark.parametrize("fault", ["removed", "a regular file"])
def test_a_rotation_into_a_removed_folder_says_so_once(
    fault: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The folder is removed (ENOENT) or replaced by a regular file (ENOTDIR) before the
    next rotation: one line, the writer stops, the caller's hand-overs go on returning."""
    folder = tmp_path / "j"
    w = _writer(folder, max_bytes=1500)
    _feed(w, range(3))
    assert w.drain(30)
    shutil.rmtree(folder)
    if fault == "a regular file":
        folder.write_bytes(b"not a folder")
    _feed(w, range(3, 12))
    w.end("SHUTDOWN", None)
    w.close()
    _, err = capfd.readouterr()
    _no_traceback(err)
    (line,) = _lines(err)
    assert line.startswith("tpwire[rank 0]: journal off")
    assert w.failed is not None and str(folder) in w.failed


def test_a_folder_removed_mid_stream_is_noticed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """With the default rotation nothing reopens a file: a write to a file whose folder was
    removed would succeed and reach nothing. The writer notices the file is gone."""
    folder = tmp_path / "j"
    w = _writer(folder)
    _feed(w, range(3))
    assert w.drain(30)
    shutil.rmtree(folder)
    _feed(w, range(3, 8))
    w.close()
    _, err = capfd.readouterr()
    _no_traceback(err)
    (line,) = _lines(err)
    assert "was removed" in line and "journal off" in line
    assert w.failed is not None
    assert not folder.exists()


def test_a_file_system_without_link_counts_is_not_taken_for_a_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Some file systems report no links for a live file: the check is off for a file that
    had none when it was created, so journaling goes on there."""
    real_fstat = os.fstat

    def fstat(fd: int) -> Any:
        st = real_fstat(fd)
        return os.stat_result((*st[:3], 0, *st[4:]))

    monkeypatch.setattr(os, "fstat", fstat)
    w = _writer(tmp_path)
    _feed(w, range(3))
    w.close()
    monkeypatch.undo()
    _, err = capfd.readouterr()
    assert not _lines(err) and w.failed is None
    (path,) = tmp_path.glob("*.tpj")
    assert len(jf.scan(path).records) == 4


# --- a full disk, a file too large -----------------------------------------------------------


def test_a_full_disk_is_one_line_and_the_records_before_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    original = jr.JournalWriter._write
    calls = [0]

    def full(fd: int, parts: list[bytes | memoryview]) -> int:
        calls[0] += 1
        if calls[0] > 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(fd, parts)

    monkeypatch.setattr(jr.JournalWriter, "_write", staticmethod(full))
    w = _writer(tmp_path)
    _feed(w, range(10))
    w.end("SHUTDOWN", None)
    w.close()
    _, err = capfd.readouterr()
    _no_traceback(err)
    (line,) = _lines(err)
    assert "No space left on device" in line and "journal off" in line
    (path,) = tmp_path.glob("*.tpj")
    found = jf.scan(path)
    assert not found.problems and len(found.records) == 4  # OPEN and three envelopes


EFBIG_SCRIPT = """
import resource, sys
sys.path[:0] = [{tests!r}]
resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))
from test_journal_faults import _feed, _writer
from pathlib import Path
w = _writer(Path({folder!r}))
_feed(w, range(20))
w.end("SHUTDOWN", None)
w.close()
print("written", w.written)
"""


@pytest.mark.timeout(120)
def test_a_file_too_large_is_one_line_and_the_records_before_stay(tmp_path: Path) -> None:
    """EFBIG from RLIMIT_FSIZE (works as root): one line, the process goes on and exits 0,
    every record before the limit reads back whole (the cut one is a torn tail)."""
    folder = tmp_path / "j"
    script = EFBIG_SCRIPT.format(tests=str(REPO / "tests"), folder=str(folder))
    got = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=100, cwd=REPO
    )
    assert got.returncode == 0, got.stderr
    _no_traceback(got.stderr)
    (line,) = _lines(got.stderr)
    assert "File too large" in line and "journal off" in line
    (path,) = folder.glob("*.tpj")
    found = jf.scan(path)
    assert found.records and found.records[0].kind == jr.OPEN
    assert all(p.torn for p in found.problems)
    assert len(found.problems) <= 1


# --- a folder that cannot be created --------------------------------------------------------


def test_a_folder_that_cannot_be_created_is_one_clear_error(tmp_path: Path) -> None:
    """The writer's setup fails as ``JournalUnavailable`` with one line (a channel turns it
    into its ranks' agreement, below); nothing is left behind."""
    parent = tmp_path / "file"
    parent.write_bytes(b"")
    with pytest.raises(jr.JournalUnavailable) as info:
        _writer(parent / "j")
    text = str(info.value)
    assert "\n" not in text and str(parent / "j") in text and "Not a directory" in text


def test_an_abandoned_writer_leaves_no_file(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    w.abandon()
    assert not list(tmp_path.glob("*.tpj"))


# --- file indexes past 999,999 --------------------------------------------------------------


def test_an_index_past_999999_never_wraps(tmp_path: Path) -> None:
    """Retention still removes the oldest, a restarted writer starts after the highest
    index, and the reader orders a stem's files by their numeric index."""
    first = _writer(tmp_path)
    _feed(first, range(2))
    first.close()
    (only,) = tmp_path.glob("*.tpj")
    only.rename(tmp_path / "tp_control.rank0.999998.tpj")
    w = _writer(tmp_path, max_bytes=1500, keep=3)
    _feed(w, range(2, 12))
    w.close()
    names = sorted(p.name for p in tmp_path.glob("*.tpj"))
    indexes = sorted(int(n.split(".")[2]) for n in names)
    assert len(names) == 3 and indexes[0] > 999_999, names  # 999,998 and 999,999 removed
    (journal,) = load([tmp_path])
    assert not journal.problems
    chunks = [r.chunk for r in journal.envelopes()]
    assert chunks == list(range(chunks[0], 12))
    restarted = _writer(tmp_path)
    _feed(restarted, range(12, 13))
    restarted.close()
    assert restarted.path is not None
    assert int(restarted.path.name.split(".")[2]) == indexes[-1] + 1
    assert [r.kind for r in jf.scan(restarted.path).records] == [jr.OPEN, jr.ENVELOPE]
    paths = [str(p) for p in jf.journal_files([tmp_path])]
    assert paths == sorted(paths, key=lambda p: int(p.split(".")[-2]))
    (journal,) = load([tmp_path])
    assert [r.chunk for r in journal.envelopes()][-1] == 12


def test_a_name_taken_by_something_else_is_skipped(tmp_path: Path) -> None:
    """A file name the writer would take (a FIFO placed by someone, another writer's file
    appearing at that index) is never opened: the writer creates a file of its own."""
    w = _writer(tmp_path)
    assert w.path is not None
    name = w.path.name
    w.abandon()
    os.mkfifo(tmp_path / name)
    done = threading.Event()
    holder: list[jr.JournalWriter] = []

    def make() -> None:
        holder.append(_writer(tmp_path))
        done.set()

    threading.Thread(target=make, daemon=True).start()
    assert done.wait(30), "the writer blocked opening a FIFO"
    (w2,) = holder
    _feed(w2, range(2))
    w2.close()
    assert w2.path is not None and w2.path.name != name
    assert [r.kind for r in jf.scan(w2.path).records] == [jr.OPEN, jr.ENVELOPE, jr.ENVELOPE]


# --- ranks together (real gloo) -------------------------------------------------------------


def _run(tmp_path: Path, **kwargs: Any) -> list[Any]:
    return run_ranks(
        "fault_stream", tmp_path, world=2, timeout=150, module="test_journal_faults", **kwargs
    )


@pytest.mark.timeout(180)
def test_a_rank_that_cannot_create_its_folder_turns_journaling_off_on_every_rank(
    tmp_path: Path,
) -> None:
    """Rank 1's folder lies under a regular file: the ranks learn it in the open handshake
    and all run without a journal, one line each; nobody raises or blames a peer."""
    results = _run(tmp_path, journal=str(tmp_path / "journal"), bad_rank=1, n=6)
    for r in results:
        assert r.exitcode == 0, r.log
        _no_traceback(r.log)
        assert "Connection closed" not in r.log
        (line,) = _lines(r.log)
        assert line.startswith(f"tpwire[rank {r.rank}]: journal off on every rank")
        assert "rank 1" in line and "Not a directory" in line
        assert r.result["journal"] is False
    assert results[1].result["received"] == 6
    assert not list((tmp_path / "journal").glob("*.tpj"))  # rank 0 left no empty file


@pytest.mark.timeout(180)
@pytest.mark.parametrize("max_bytes", [None, 2000])
def test_a_folder_removed_mid_stream_is_one_line_per_rank(
    max_bytes: int | None, tmp_path: Path
) -> None:
    """Rank 0 removes the shared journal folder after envelope 3: with the default rotation
    (the open files vanish) and with a small one (a rotation's open fails), every rank says
    so once and the stream goes on to its end."""
    results = _run(
        tmp_path, journal=str(tmp_path / "journal"), remove_at=3, n=10, max_bytes=max_bytes
    )
    for r in results:
        assert r.exitcode == 0, r.log
        _no_traceback(r.log)
        (line,) = _lines(r.log)
        assert line.startswith(f"tpwire[rank {r.rank}]: journal off"), line
        assert r.result["failed"] is not None
    assert results[1].result["received"] == 10


@pytest.mark.timeout(180)
def test_observations_after_the_terminal_action_reach_the_disk(tmp_path: Path) -> None:
    """The writer stays open for observations until the channel is closed: each rank
    observes the last envelope after SHUTDOWN was sent or received."""
    results = _run(tmp_path, journal=str(tmp_path / "journal"), n=4, observe_late=True)
    for r in results:
        assert r.exitcode == 0, r.log
        _no_traceback(r.log)
    journals = load([tmp_path / "journal"])
    assert len(journals) == 2
    for journal in journals:
        late = [
            r
            for r in journal.records
            if r.kind == jr.OBSERVE and "late" in r.meta.get("counts", {})
        ]
        assert [r.seq for r in late] == [4], journal.name
        ends = [r for r in journal.records if r.kind == jr.END]
        assert [e.meta["how"] for e in ends] == ["SHUTDOWN"], journal.name


# --- the scenario (each rank runs it) -------------------------------------------------------


def fault_stream(
    rank: int,
    world: int,
    journal: str,
    n: int = 8,
    bad_rank: int | None = None,
    remove_at: int | None = None,
    max_bytes: int | None = None,
    observe_late: bool = False,
) -> Any:
    """``n`` envelopes from rank 0, then SHUTDOWN. ``bad_rank``: that rank's journal folder
    lies under a regular file. ``remove_at``: rank 0 removes the folder after sending that
    envelope. ``observe_late``: each rank observes the last envelope after SHUTDOWN."""
    from journal_scenarios import plan

    from tpwire.runtime.channel import BroadcastChannel

    folder = journal
    if rank == bad_rank:
        blocker = Path(journal).parent / "blocker"
        blocker.write_bytes(b"")
        folder = str(blocker / "journal")
    extra = {"max_bytes": max_bytes} if max_bytes is not None else {}
    ch = BroadcastChannel(tc, poison="raise", journal=jr.JournalConfig(folder, **extra)).open()
    received = 0
    last: Any = None
    if rank == 0:
        for i in range(n):
            msg, h = plan(i)
            ch.send(msg, h)
            ch.observe(h, inputs=msg)
            last = h
            if i == remove_at:
                assert ch.journal is not None
                ch.journal.drain()
                shutil.rmtree(journal)
        ch.shutdown()
    else:
        while True:
            got = ch.recv()
            if got.action is tc.TPAction.SHUTDOWN:
                break
            if got.msg is not None:
                received += 1
                last = got.header
                ch.observe(got.header, inputs=got.msg)
    if observe_late and last is not None:
        ch.observe(last, late=1)
    failed = ch.journal.failed if ch.journal is not None else None
    ch.close()
    return {"received": received, "failed": failed, "journal": ch.journal is not None}
