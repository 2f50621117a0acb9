"""The journal writer's parts on their own, without a channel or a process group: the file
set (names, ``O_EXCL``, retention, a file removed while open), the record ids, and the
background thread's bounds (a full queue drops and says so, a ``written`` hand-over that
waits too long counts as late) (docs/journal.md)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tpwire.generated import tp_control as tc
from tpwire.runtime import journal as jr
from tpwire.runtime import journal_format as jf
from tpwire.runtime.journal_files import JournalFault, JournalFiles, write_all
from tpwire.runtime.journal_records import Item, RecordWriter, end_meta, envelope_meta
from tpwire.runtime.journal_thread import WriterThread

pytestmark = pytest.mark.timeout(60)

STEM = "tp_control.rank0"


def _files(folder: Path, keep: int = 16) -> JournalFiles:
    files = JournalFiles(folder, STEM, keep, write_all)
    files.create()
    return files


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.tpj"))


def test_the_first_file_comes_after_every_index_there(tmp_path: Path) -> None:
    (tmp_path / f"{STEM}.000007.tpj").write_bytes(b"")
    (tmp_path / "tp_control.rank1.000042.tpj").write_bytes(b"")  # another stem: not counted
    files = _files(tmp_path)
    assert files.path == tmp_path / f"{STEM}.000008.tpj"
    files.close()


def test_a_taken_name_is_passed_over_and_retention_keeps_the_newest(tmp_path: Path) -> None:
    files = _files(tmp_path, keep=2)
    (tmp_path / f"{STEM}.000001.tpj").write_bytes(b"someone else's")
    files.open_next()
    assert files.path == tmp_path / f"{STEM}.000002.tpj"
    files.open_next()
    files.close()
    assert _names(tmp_path) == [f"{STEM}.000002.tpj", f"{STEM}.000003.tpj"]


def test_a_file_removed_while_open_is_a_fault_not_a_silent_write(tmp_path: Path) -> None:
    files = _files(tmp_path)
    files.append([b"x" * 10])
    assert files.path is not None
    files.path.unlink()
    with pytest.raises(JournalFault, match="was removed while open"):
        files.append([b"y"])
    files.abort()
    assert files.written == 1 and files.size == 10


def test_discard_removes_only_a_file_nothing_was_written_to(tmp_path: Path) -> None:
    _files(tmp_path).discard()
    assert _names(tmp_path) == []
    files = _files(tmp_path / "kept")
    files.append([b"record"])
    files.discard()
    assert len(_names(tmp_path / "kept")) == 1


def test_an_uncreatable_folder_is_journal_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(jr.JournalUnavailable, match="cannot create the journal folder"):
        _files(tmp_path / "file" / "journal")


def _records(tmp_path: Path) -> RecordWriter:
    return RecordWriter(
        _files(tmp_path), tc.BINDINGS, rank=0, world=1, source=0, mode="digest", max_bytes=1 << 20
    )


def test_ids_are_the_role_ids_within_the_record_fields(tmp_path: Path) -> None:
    records = _records(tmp_path)
    roles = tc.BINDINGS.roles
    assert roles.chunk is not None and roles.epoch is not None
    header = SimpleNamespace(**{roles.sequence: 4, roles.chunk: jf.NONE, roles.epoch: True})
    # NONE is the format's "absent"; a bool is not an id
    assert records.ids(header) == (4, None, None)
    assert records.ids(None) == (None, None, None)
    records.files.close()


def test_the_first_record_opens_the_file_and_an_end_follows(tmp_path: Path) -> None:
    records = _records(tmp_path)
    records.write(Item(jf.END, None, end_meta("shutdown", None)))
    records.files.close()
    (path,) = tmp_path.glob("*.tpj")
    found = jf.scan(path)
    assert not found.problems
    assert [r.kind for r in found.records] == [jf.OPEN, jf.END]
    assert found.records[0].meta["opened"] == "start" and found.records[0].meta["stem"] == STEM


class _Stalled:
    """A record writer whose writes wait for ``go`` (the thread stays busy)."""

    def __init__(self, folder: Path) -> None:
        self.files = _files(folder)
        self.go = threading.Event()
        self.metas: list[dict[str, Any]] = []

    def write(self, item: Item) -> None:
        self.go.wait(10)
        self.metas.append(item.meta)


def _thread(sink: _Stalled, **kw: Any) -> WriterThread:
    t = WriterThread(cast(RecordWriter, sink), rank=0, **kw)
    t.start()
    return t


def _envelope() -> Item:
    meta = envelope_meta(sent=True, src=0, state="sent", error=None)
    return Item(jf.ENVELOPE, None, meta, b"\0" * 100)


def test_a_full_queue_drops_and_the_next_record_says_how_many(tmp_path: Path) -> None:
    sink = _Stalled(tmp_path)
    t = _thread(sink, max_pending_bytes=400, max_wait_s=0.05, wait_written=False)
    t.put(_envelope())  # taken by the thread, which stalls: its bytes stay pending
    t.put(_envelope())  # no room within max_wait_s: dropped
    sink.go.set()
    assert t.drain(5.0)
    t.put(_envelope())
    assert t.stop(5.0) and not t.active
    assert [m.get("dropped_before") for m in sink.metas] == [None, 1]


def test_a_written_handover_waits_at_most_max_wait_s(tmp_path: Path) -> None:
    sink = _Stalled(tmp_path)
    t = _thread(sink, max_pending_bytes=1 << 20, max_wait_s=0.05, wait_written=True)
    t.put(_envelope())
    assert t.late == 1
    sink.go.set()
    t.put(_envelope())
    assert t.late == 1
    assert t.stop(5.0) and len(sink.metas) == 2 and t.failed is None
