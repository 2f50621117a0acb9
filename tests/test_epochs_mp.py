"""Issue 17's acceptance on real 3-rank gloo groups (tests/mp_epochs.py): the optimize mode
(conditioning cached by conditioning_epoch) delivers to every worker exactly the
conditioning rank 0 meant for every chunk, equal to a v1 stream of the same inputs; a
sender that bumps the epoch without the tensor, frames forged past that check, and a
worker whose cache is empty mid-stream fail before any generator call with a named
stale-conditioning violation (FM-17), never a hang, never a silent reuse."""

from __future__ import annotations

from pathlib import Path

import mp_epochs as S
from mp import run_ranks


def test_updates_every_5_chunks_and_a_hard_cut_deliver_the_intended_conditioning(
    tmp_path: Path,
) -> None:
    r0, r1, r2 = run_ranks("stream", tmp_path, world=3, module="mp_epochs", timeout=120)
    assert [r.exitcode for r in (r0, r1, r2)] == [0, 0, 0], r1.log + r2.log
    meant = r0.result["meant"]
    assert len(meant) == S.CHUNKS
    # the conditioning travelled only on the first chunk, the updates and the hard cut
    assert [i for i, s in enumerate(r0.result["sent_conditioning"]) if s] == [0, 5, 8, 10, 15]
    for r in (r1, r2):
        v1, v2, compat = r.result["v1"], r.result["v2"], r.result["compat"]
        assert v1["calls"] == meant  # the v1 stream: every chunk carries it
        assert v2["calls"] == meant  # the optimize mode: the same inputs per chunk
        assert compat["calls"] == meant  # ... also over Scope's current (pickle) wire
        assert v2["kept"] == compat["kept"] == [1, 2, 3, 4, 6, 7, 9, 11, 12, 13, 14]
        assert v1["refused"] == v2["refused"] == compat["refused"] == []
        assert v2["end"] == compat["end"] == "SHUTDOWN"


def test_sender_bumping_the_epoch_without_the_tensor_is_refused_before_frame_0(
    tmp_path: Path,
) -> None:
    r0, r1, r2 = run_ranks("refusals", tmp_path, world=3, module="mp_epochs", case="sender")
    assert [r.exitcode for r in (r0, r1, r2)] == [0, 0, 0], r0.log + r1.log
    ((code, field, fm, message),) = r0.result["refused"]
    assert (code, field, fm) == ("stale", "conditioning_embeds", "FM-17")
    assert "conditioning_epoch incremented (0 -> 1)" in message
    assert "refused before frame 0 call_id=4 chunk_index=3 cache_epoch=0" in r0.log
    for r in (r1, r2):
        # nothing of chunk 3 reached a worker: the generator ran chunks 0-2, then ERROR
        assert sorted(r.result["calls"]) == ["0", "1", "2"]
        assert r.result["end"] == "ERROR"
        assert "first: stale conditioning_em" in r.result["reason"]  # 64 bytes of reason
        assert r.seconds < 30  # told, not left to a watchdog


def test_frames_forged_past_the_sender_check_are_refused_by_every_worker(
    tmp_path: Path,
) -> None:
    r0, r1, r2 = run_ranks("refusals", tmp_path, world=3, module="mp_epochs", case="forged")
    assert [r.exitcode for r in (r0, r1, r2)] == [0, 0, 0], r1.log
    for r in (r1, r2):
        (refused,) = r.result["refused"]
        assert refused["chunk"] == 3
        ((code, field, fm, expected, actual, _),) = refused["violations"]
        assert (code, field, fm) == ("stale", "conditioning_embeds", "FM-17")
        assert (expected, actual) == (
            "conditioning_embeds of conditioning_epoch 1",
            "absent (kept value of conditioning_epoch 0 is stale)",
        )
        # no generator call for chunk 3, and the stream went on in lockstep
        assert sorted(r.result["calls"], key=int) == ["0", "1", "2", "4", "5", "6"]
        assert r.result["calls"]["5"] == S.digest(S.v1_envelope(5))
        assert "envelope refused after receive call_id=4 chunk_index=3" in r.log


def test_worker_with_an_empty_cache_mid_stream_demands_the_tensor(tmp_path: Path) -> None:
    r0, r1, r2 = run_ranks("refusals", tmp_path, world=3, module="mp_epochs", case="restart")
    assert [r.exitcode for r in (r0, r1, r2)] == [0, 0, 0], r2.log
    assert r1.result["refused"] == []
    assert [x["chunk"] for x in r2.result["refused"]] == [3, 4]
    for x in r2.result["refused"]:
        ((code, field, fm, _, actual, message),) = x["violations"]
        assert (code, field, fm, actual) == (
            "stale",
            "conditioning_embeds",
            "FM-17",
            "absent (nothing kept)",
        )
        assert "the cache is empty" in message
    # never a silent reuse: chunks 3 and 4 never ran on rank 2; chunk 5's update healed it
    assert sorted(r2.result["calls"], key=int) == ["0", "1", "2", "5", "6"]
    for i in ("0", "1", "2", "5", "6"):
        assert r2.result["calls"][i] == r1.result["calls"][i] == S.digest(S.v1_envelope(int(i)))
