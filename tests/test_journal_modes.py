"""The journal's hand-over modes (issue 29 item 9, docs/journal.md "After a SIGKILL"):
``handover="queued"`` (the default) returns once a record is queued for the writer thread,
``handover="written"`` once the writer thread has written it. A worker that SIGKILLs itself
right after ``recv`` returns keeps that envelope's record under ``written``; under
``queued`` a slow writer loses it. Multi-process on real gloo groups."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from journal_scenarios import plan
from mp import run_ranks

from tpwire.generated import tp_control as tc
from tpwire.runtime import journal as jr
from tpwire.runtime.channel import BroadcastChannel
from tpwire.runtime.replay import load

pytestmark = pytest.mark.timeout(180)

#: the worker kills itself right after ``recv`` returns the envelope of this chunk index
KILL_AT = 5
#: seconds the writer thread of the killed worker takes for that envelope's record (a slow
#: disk), below ``max_wait_s``: a ``written`` hand-over waits it out, a queued one does not
SLOW_WRITE_S = 0.3
#: the same under ``queued``: long, so that the worker's kill comes first even on a loaded
#: machine
SLOW_QUEUED_S = 3.0


def _slow_write_of(chunk: int, seconds: float) -> None:
    """This process's journal writer takes ``seconds`` before writing the envelope record
    of ``chunk`` (then writes it whole)."""
    original = jr.JournalWriter._write

    def slow(fd: int, parts: list[bytes | memoryview]) -> int:
        head = jr.HEAD.unpack_from(b"".join(bytes(p) for p in parts), 0)
        if head[2] == jr.ENVELOPE and head[6] == chunk:
            time.sleep(seconds)
        return original(fd, parts)

    jr.JournalWriter._write = staticmethod(slow)  # type: ignore[method-assign]


def killed_after_recv(
    rank: int, world: int, journal: str, handover: str | None, slow_s: float
) -> Any:
    """Rank 0 sends envelopes 0..KILL_AT; rank 1 SIGKILLs itself as soon as ``recv``
    returns the envelope of chunk ``KILL_AT``. ``handover`` None: the launcher's
    ``TPWIRE_JOURNAL_HANDOVER`` (with ``TPWIRE_JOURNAL``) decides."""
    cfg = None if handover is None else jr.JournalConfig(journal, handover=handover)
    ch = BroadcastChannel(tc, poison="raise", journal=cfg).open()
    if rank == 0:
        for i in range(KILL_AT + 1):
            msg, h = plan(i)
            ch.send(msg, h)
        try:  # the worker is gone (or about to be): this may fail, or not
            time.sleep(1.0)
            ch.shutdown()
        except Exception as exc:
            return {"sent": KILL_AT + 1, "after": type(exc).__name__}
        return {"sent": KILL_AT + 1}
    _slow_write_of(KILL_AT, slow_s)
    while True:
        got = ch.recv()
        if got.header is not None and got.header.chunk_index == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)


def _worker_chunks(
    tmp_path: Path,
    handover: str | None,
    env: dict[str, str] | None = None,
    slow_s: float = SLOW_WRITE_S,
) -> list[int]:
    results = run_ranks(
        "killed_after_recv", tmp_path, world=2, timeout=120, module="test_journal_modes",
        env={r: env for r in range(2)} if env else None,
        journal=str(tmp_path / "journal"), handover=handover, slow_s=slow_s,
    )  # fmt: skip
    assert results[1].exitcode == -signal.SIGKILL, [r.log for r in results]
    (worker,) = [j for j in load([tmp_path / "journal"]) if j.opening.get("rank") == 1]
    assert not worker.problems, worker.problems  # every record written whole
    return [r.chunk for r in worker.envelopes() if r.meta.get("dir") == "recv"]


def test_written_keeps_the_record_of_the_envelope_recv_returned(tmp_path: Path) -> None:
    chunks = _worker_chunks(tmp_path, "written")
    assert chunks == list(range(KILL_AT + 1)), chunks


def test_written_from_the_launchers_environment(tmp_path: Path) -> None:
    env = {"TPWIRE_JOURNAL": str(tmp_path / "journal"), "TPWIRE_JOURNAL_HANDOVER": "written"}
    chunks = _worker_chunks(tmp_path, None, env)
    assert chunks == list(range(KILL_AT + 1)), chunks


def test_queued_can_lose_the_last_record_to_a_sigkill(tmp_path: Path) -> None:
    """What the default does not promise: with a slow writer the record is still queued
    when the worker dies (the records before it were written)."""
    chunks = _worker_chunks(tmp_path, "queued", slow_s=SLOW_QUEUED_S)
    assert chunks == list(range(KILL_AT)), chunks


# --- the writer alone ----------------------------------------------------------------------


def _writer(folder: Path, handover: str, **kwargs: Any) -> jr.JournalWriter:
    return jr.JournalWriter(
        jr.JournalConfig(str(folder), handover=handover, **kwargs), tc.BINDINGS, rank=1,
        world=2, name="rank1", source=0,
    )  # fmt: skip


def _recv_record(w: jr.JournalWriter, i: int) -> None:
    msg, h = plan(i)
    frame0 = tc.BINDINGS.prepare(msg, h).words
    from tpwire.runtime.wire import seal_words

    w.envelope(h, seal_words(frame0).tobytes(), sent=False, state="validated")


def test_written_returns_once_the_record_is_in_the_file(tmp_path: Path) -> None:
    gate = threading.Event()
    original = jr.JournalWriter._write

    def gated(fd: int, parts: list[bytes | memoryview]) -> int:
        gate.wait(5.0)
        return original(fd, parts)

    w = _writer(tmp_path, "written")
    try:
        w._write = gated  # type: ignore[method-assign]
        threading.Timer(0.2, gate.set).start()
        t0 = time.monotonic()
        _recv_record(w, 0)
        assert time.monotonic() - t0 >= 0.15  # it waited for the write
        found = jr.scan(w.path)  # type: ignore[arg-type]
        assert [r.chunk for r in found.records if r.kind == jr.ENVELOPE] == [0]
        assert w.late == 0
    finally:
        gate.set()
        w.close()


def test_written_waits_at_most_max_wait_s(tmp_path: Path) -> None:
    """A write slower than ``max_wait_s`` (a stuck disk) does not hold the stream: the call
    returns, the record is written later, and ``late`` counts it."""
    gate = threading.Event()
    original = jr.JournalWriter._write

    def stuck(fd: int, parts: list[bytes | memoryview]) -> int:
        gate.wait(5.0)
        return original(fd, parts)

    w = _writer(tmp_path, "written", max_wait_s=0.2)
    try:
        w._write = stuck  # type: ignore[method-assign]
        t0 = time.monotonic()
        _recv_record(w, 0)
        assert time.monotonic() - t0 < 3.0 and w.late == 1
        gate.set()
        assert w.drain(5.0)
        found = jr.scan(w.path)  # type: ignore[arg-type]
        assert [r.chunk for r in found.records if r.kind == jr.ENVELOPE] == [0]
    finally:
        gate.set()
        w.close()


def test_queued_returns_before_the_write(tmp_path: Path) -> None:
    gate = threading.Event()
    original = jr.JournalWriter._write

    def gated(fd: int, parts: list[bytes | memoryview]) -> int:
        gate.wait(5.0)
        return original(fd, parts)

    w = _writer(tmp_path, "queued")
    try:
        w._write = gated  # type: ignore[method-assign]
        t0 = time.monotonic()
        _recv_record(w, 0)
        assert time.monotonic() - t0 < 1.0
        assert not [r for r in jr.scan(w.path).records if r.kind == jr.ENVELOPE]  # type: ignore[arg-type]
    finally:
        gate.set()
        w.close()


def test_handover_is_checked_and_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="handover must be one of"):
        jr.JournalConfig(str(tmp_path), handover="fsync")
    monkeypatch.setenv("TPWIRE_JOURNAL", str(tmp_path))
    monkeypatch.setenv("TPWIRE_JOURNAL_HANDOVER", "written")
    cfg = jr.resolve(None)
    assert cfg is not None and cfg.handover == "written"
    cfg = jr.resolve(str(tmp_path / "x"))
    assert cfg is not None and cfg.handover == "written"
    monkeypatch.delenv("TPWIRE_JOURNAL_HANDOVER")
    cfg = jr.resolve(None)
    assert cfg is not None and cfg.handover == "queued"
