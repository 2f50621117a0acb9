"""The result gate (refs/21 acceptance rules, OM-09) and the call-count ledger (FM-02)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tpwire.generated import pp_contract as pp
from tpwire.runtime.lockstep import Ids, Ledger, LockstepError, ResultGate


def hdr(call_id: int, chunk: int, epoch: int, action: str = "RESULT") -> pp.Header:
    return pp.Header(
        call_id=call_id, chunk_index=chunk, cache_epoch=epoch, action=pp.PPAction[action]
    )


def test_om09_delayed_result_across_a_hard_cut_is_dropped_by_epoch() -> None:
    logged: list[str] = []
    gate = ResultGate(pp, max_pending=2, log=logged.append)
    gate.expect(hdr(1, 0, 0, "INFER"))
    gate.expect(hdr(2, 1, 0, "INFER"))
    assert gate.accept(hdr(1, 0, 0))
    assert gate.hard_cut(1) == [Ids(0, 2, 1)]  # the in-flight envelope is flushed
    gate.expect(hdr(3, 2, 1, "INFER"))
    assert gate.accept(hdr(2, 1, 0)) is False  # the delayed result of the old world
    assert gate.accept(hdr(3, 2, 1))
    assert gate.dropped == [(Ids(0, 2, 1), "stale cache_epoch 0 < 1")]
    assert any("dropped result call_id=2 chunk_index=1 cache_epoch=0" in line for line in logged)


def test_duplicates_are_dropped_and_regressions_crash() -> None:
    gate = ResultGate(pp, log=lambda _: None)
    gate.expect(hdr(4, 0, 0, "INFER"))
    assert gate.accept(hdr(4, 0, 0))
    assert gate.accept(hdr(4, 0, 0)) is False  # duplicate
    gate.expect(hdr(5, 1, 0, "INFER"))
    with pytest.raises(LockstepError, match="out of order: expected call_id=5"):
        gate.accept(hdr(6, 2, 0))  # ahead of time
    with pytest.raises(LockstepError, match="future epoch"):
        gate.accept(hdr(5, 1, 3))
    with pytest.raises(LockstepError, match="out of order"):
        gate.accept(hdr(5, 7, 0))  # right call_id, wrong chunk
    with pytest.raises(LockstepError, match="regresses behind call_id=4"):
        gate.accept(hdr(3, 0, 0))  # lower call_id in the same epoch: never legitimate
    fresh = ResultGate(pp, log=lambda _: None)
    fresh.expect(hdr(4, 0, 0, "INFER"))
    assert fresh.accept(hdr(4, 0, 0))
    with pytest.raises(LockstepError, match="does not follow call_id=4"):
        fresh.expect(hdr(3, 1, 0, "INFER"))  # behind what was already accepted


def test_pending_results_are_bounded_and_ordered() -> None:
    gate = ResultGate(pp, max_pending=1, log=lambda _: None)
    gate.expect(hdr(1, 0, 0, "INFER"))
    with pytest.raises(LockstepError, match="already pending"):
        gate.expect(hdr(2, 1, 0, "INFER"))
    with pytest.raises(LockstepError, match="hard_cut"):
        ResultGate(pp).expect(hdr(1, 0, 5, "INFER"))
    with pytest.raises(LockstepError, match="must bump"):
        gate.hard_cut(0)
    with pytest.raises(LockstepError, match="no envelope is pending"):
        ResultGate(pp).accept(hdr(1, 0, 0))


def test_ledger_refuses_the_extra_call_and_reports_a_missing_one() -> None:
    ledger = Ledger(pp)
    ledger.begin(5, hdr(9, 3, 1, "INFER"))
    for _ in range(5):
        ledger.call()
    with pytest.raises(LockstepError, match="generator call 6 exceeds the plan's expected 5"):
        ledger.call()
    ledger.end()
    ledger.begin(5, hdr(10, 4, 1, "INFER"))
    for _ in range(4):
        ledger.call()
    with pytest.raises(LockstepError, match=r"call_id=10 .*observed 4 generator calls, expected 5"):
        ledger.end()
    with pytest.raises(LockstepError, match="outside a planned chunk"):
        ledger.call()


def test_small_collectives_follow_the_backend(monkeypatch: Any) -> None:
    """NCCL moves only CUDA tensors: the handshake, tripwire and ledger words go there."""
    from tpwire.runtime import groups

    monkeypatch.setattr(groups.dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(groups.torch.cuda, "current_device", lambda: 3)
    assert groups.device_for(None) == torch.device("cuda", 3)
    monkeypatch.setattr(groups.dist, "get_backend", lambda group=None: "gloo")
    assert groups.device_for(None) == torch.device("cpu")
