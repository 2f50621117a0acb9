"""BroadcastChannel on real gloo process groups: the operator test matrix rows that apply.

Every scenario runs under a hard timeout (tests/mp.py): a hang is a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mp import run_ranks

from tpwire.runtime.channel import EXIT_POISONED, EXIT_WATCHDOG

pytestmark = pytest.mark.timeout(90)


def test_stream_round_trips_every_envelope(tmp_path: Path) -> None:
    r0, r1 = run_ranks("stream", tmp_path)
    assert (r0.exitcode, r1.exitcode) == (0, 0), r1.log
    assert r1.result == [
        {"action": "INFER", "call_id": 1, "equal": True},
        {"action": "INFER", "call_id": 2, "equal": True},
        {"action": "INFER", "call_id": 3, "equal": True},
        {"action": "INFER", "call_id": 4, "equal": True},
        {"action": "NOOP", "call_id": 5},
        {"action": "SHUTDOWN", "call_id": 6},
    ]


@pytest.fixture(scope="module")
def preflight(tmp_path_factory: pytest.TempPathFactory) -> list:  # type: ignore[type-arg]
    return run_ranks("preflight", tmp_path_factory.mktemp("preflight"))


def test_om01_unserializable_meta_fails_before_frame0(preflight: list) -> None:  # type: ignore[type-arg]
    r0, r1 = preflight
    assert r0.result["OM-01"] == [["type", "base_seed"]]
    # the worker was not stranded: the next header it saw is the next valid envelope
    assert r1.result["received"][0] == ["INFER", 1]
    assert "refused before frame 0 call_id=1 chunk_index=1 cache_epoch=0" in r0.log
    assert "base_seed" in r0.log


def test_om02_unsupported_dtype_fails_before_frame0(preflight: list) -> None:  # type: ignore[type-arg]
    assert preflight[0].result["OM-02"] == [["dtype", "latents"]]


def test_om03_inconsistent_plan_rejected_on_both_sides(preflight: list) -> None:  # type: ignore[type-arg]
    r0, r1 = preflight
    assert ["invariant", "denoising_step_list, tp_num_denoise_steps"] in r0.result["OM-03"]
    # forged frames from a rank 0 that skipped validation: refused by the worker after the
    # full receive (lockstep intact), before any generator call, with both numbers and ids
    assert ["invariant", "denoising_step_list, tp_num_denoise_steps"] in r1.result["worker_refused"]
    assert r1.result["refused_ids"] == [2, 2]
    assert "2 violation(s)" in r1.log and "expected 5, got 4" in r1.log
    assert r1.result["received"] == [["INFER", 1], ["INFER", 3], ["SHUTDOWN", 4]]


def test_om10_recompute_without_context_frames(preflight: list) -> None:  # type: ignore[type-arg]
    assert ["missing", "context_frames_override"] in preflight[0].result["OM-10"]


def test_om04_plan_mismatch_fails_the_handshake_on_every_rank(tmp_path: Path) -> None:
    results = run_ranks("parity_flags", tmp_path)
    for r in results:
        assert r.exitcode == 0, r.log
        assert r.result["diff"] == [
            "flags.tp_plan: rank0='v1_generator_only', rank1='v0_full_pipeline'"
        ]


def test_om05_gating_flag_on_one_rank_only(tmp_path: Path) -> None:
    results = run_ranks(
        "parity_env",
        tmp_path,
        env={0: {"SCOPE_TP_INPUT_DIGEST": "1", "SCOPE_KV_BIAS_BACKEND": "fa4"},
             1: {"SCOPE_KV_BIAS_BACKEND": "fa4"}},
    )  # fmt: skip
    for r in results:
        assert r.result["diff"] == ["env.SCOPE_TP_INPUT_DIGEST: rank0='1', rank1=None"]


def test_om13_workers_exit_when_rank0_dies(tmp_path: Path) -> None:
    r0, r1 = run_ranks("sender_dies", tmp_path, watchdog_s=3.0, timeout=30)
    assert r0.exitcode == 9
    assert r1.exitcode in (EXIT_POISONED, EXIT_WATCHDOG), r1.log
    assert r1.seconds < r0.seconds + 3.0 + 2.0  # within the watchdog window (+ slack)
    assert "call_id=2 chunk_index=1 cache_epoch=0" in r1.log  # the last ids it saw


def test_rank0_exits_when_a_worker_dies(tmp_path: Path) -> None:
    r0, r1 = run_ranks("worker_dies", tmp_path, watchdog_s=3.0, timeout=30)
    assert r1.exitcode == 9
    assert r0.exitcode in (EXIT_POISONED, EXIT_WATCHDOG), r0.log
    assert r0.result is None
    assert "POISONED" in r0.log or "WATCHDOG" in r0.log


@pytest.mark.parametrize(("call_id", "kind"), [(5, "duplicate"), (3, "regressing")])
def test_duplicate_and_regressing_call_ids_crash_the_worker(
    tmp_path: Path, call_id: int, kind: str
) -> None:
    _, r1 = run_ranks("bad_order", tmp_path, call_id=call_id)
    assert r1.result["first"] == 5
    assert f"ordering: {kind} call_id {call_id} after 5" in r1.result["poisoned"]
    assert f"call_id={call_id}" in r1.result["poisoned"]


def test_wrong_fingerprint_is_a_clear_protocol_mismatch(tmp_path: Path) -> None:
    _, r1 = run_ranks("bad_fingerprint", tmp_path)
    poisoned = r1.result["poisoned"]
    assert "frame 0 refused" in poisoned and "[fingerprint]" in poisoned
    assert "different spec revisions" in poisoned


def test_heartbeat_keeps_an_idle_stream_alive(tmp_path: Path) -> None:
    r0, r1 = run_ranks("heartbeat", tmp_path)
    assert (r0.exitcode, r1.exitcode) == (0, 0), r1.log
    assert "needs a cpu_group" in r0.result["refused"]
    actions = r1.result["actions"]
    assert actions.count("NOOP") >= 3
    assert actions[-2:] == ["INFER", "SHUTDOWN"]


def test_watchdog_exits_a_worker_whose_rank0_is_wedged(tmp_path: Path) -> None:
    r0, r1 = run_ranks("sender_hangs", tmp_path, watchdog_s=1.0, timeout=30)
    assert r1.exitcode == EXIT_WATCHDOG, r1.log
    assert r1.seconds < r0.seconds - 1.0  # it did not wait for rank 0
    assert "WATCHDOG: a header after call_id=1 chunk_index=0 cache_epoch=0" in r1.log


def test_om11_perturbed_input_is_a_digest_mismatch_on_every_rank(tmp_path: Path) -> None:
    r0, r1 = run_ranks("drift", tmp_path)
    for r in (r0, r1):
        assert r.exitcode == 0, r.log
        assert "drift in the inputs of call_id=1 chunk_index=0 cache_epoch=0" in r.result["drift"]
        assert "ranks [1] differ from rank 0" in r.result["drift"]
    assert r0.result == r1.result


def test_ledger_counts_are_compared_across_ranks(tmp_path: Path) -> None:
    for r in run_ranks("ledger_counts", tmp_path):
        assert "generator call counts differ: rank0=5, rank1=4" in r.result["error"]


def test_tripwire_flag_on_one_rank_fails_the_handshake(tmp_path: Path) -> None:
    for r in run_ranks("tripwire_on_one_rank", tmp_path):
        assert r.result["diff"] == ["flags.tpwire.tripwires: rank0=True, rank1=False"]


def test_om09_p2p_results_of_an_old_epoch_are_dropped(tmp_path: Path) -> None:
    r0, r1 = run_ranks("pp_hard_cut", tmp_path)
    assert (r0.exitcode, r1.exitcode) == (0, 0), r0.log + r1.log
    assert r0.result == {
        "flushed": [1, 2],
        "dropped": [[1, "stale cache_epoch 0 < 1"], [2, "stale cache_epoch 0 < 1"]],
        "used": [3],
    }
    assert "dropped result call_id=1 chunk_index=0 cache_epoch=0" in r0.log


def test_om07_leader_broadcasts_error_instead_of_stranding_its_mesh(tmp_path: Path) -> None:
    r0, r1, r2 = run_ranks("relay_error", tmp_path, world=3)
    assert [r.exitcode for r in (r0, r1, r2)] == [0, 0, 0], r1.log + r2.log
    assert "version" in r1.result["relayed"] and "call_id=1" in r1.result["relayed"]
    assert r2.result == {"action": "ERROR"}
    assert r2.seconds < 10  # no watchdog needed: the mesh was told


def test_compat_transport_carries_the_same_envelopes(tmp_path: Path) -> None:
    r0, r1 = run_ranks("stream", tmp_path, compat=True)
    assert (r0.exitcode, r1.exitcode) == (0, 0), r1.log
    assert [row.get("equal", True) for row in r1.result] == [True] * 6
    assert [row["action"] for row in r1.result][-2:] == ["NOOP", "SHUTDOWN"]


def test_a_rank_whose_digest_fails_still_joins_the_check(tmp_path: Path) -> None:
    for r in run_ranks("drift_invalid", tmp_path):
        assert r.exitcode == 0, r.log
        assert "ranks [1] differ from rank 0" in r.result["drift"]


def test_a_sender_failing_inside_with_sends_error(tmp_path: Path) -> None:
    r0, r1 = run_ranks("with_block", tmp_path)
    assert (r0.exitcode, r1.exitcode) == (0, 0), r0.log + r1.log
    assert r1.result == {"actions": ["INFER", "ERROR"], "closed": True}
    assert "ERROR sent call_id=2" in r0.log and "the model crashed" in r0.log
    cause = "FAILED after sending call_id=1 chunk_index=0 cache_epoch=0: RuntimeError: the model"
    assert cause in r0.log and r0.log.index(cause) < r0.log.index("ERROR sent"), r0.log
    assert "FAILED while sending" not in r0.log, r0.log


@pytest.mark.parametrize("world", [2, 3])
def test_steady_state_is_one_collective_per_envelope(tmp_path: Path, world: int) -> None:
    """docs/wire-format.md: once two envelopes in a row share a layout, each envelope of that
    layout is one collective; a one-off layout costs only the segments the head cannot hold."""
    results = run_ranks("steady", tmp_path, world=world)
    assert all(r.exitcode == 0 for r in results), [r.log for r in results]
    # A A A B A A NOOP A SHUTDOWN: A has one packed segment; B a smaller packed one (its
    # conditioning left the pack), which rides in A's slot, and a large one, which follows
    expected = [2, 2, 1, 2, 1, 1, 1, 1, 1]
    assert [r.result["counts"] for r in results] == [expected] * world
    for r in results[1:]:
        assert r.result["equal"] == [True] * 7


def test_segments_over_the_carry_limit_keep_their_own_collective(tmp_path: Path) -> None:
    # A's packed segment (112 bytes) is over a 16-byte limit: the head never carries it
    r0, r1 = run_ranks("steady", tmp_path, carry_limit=16)
    assert (r0.exitcode, r1.exitcode) == (0, 0), r1.log
    assert r0.result["counts"] == r1.result["counts"] == [2, 2, 2, 3, 2, 2, 1, 2, 1]
    assert r1.result["equal"] == [True] * 7


def test_buffers_made_ahead_that_cannot_be_allocated_are_only_a_guess(tmp_path: Path) -> None:
    """A worker makes the buffers of the last layout before the next head arrives; when
    that fails (out of memory) it joins the head all the same and sizes its buffers from
    the manifest, as without the guess: nothing is left waiting in a collective."""
    r0, r1 = run_ranks("steady", tmp_path, carry_limit=16, guess_fails=True)
    assert (r0.exitcode, r1.exitcode) == (0, 0), r1.log
    assert r1.result["guesses_failed"] >= 4
    assert r0.result["counts"] == r1.result["counts"] == [2, 2, 2, 3, 2, 2, 1, 2, 1]
    assert r1.result["equal"] == [True] * 7


def test_without_steady_state_frame1_always_follows(tmp_path: Path) -> None:
    r0, r1 = run_ranks("steady", tmp_path, steady_state=False)
    assert (r0.exitcode, r1.exitcode) == (0, 0), r1.log
    assert r0.result["counts"] == r1.result["counts"] == [2, 2, 2, 3, 2, 2, 1, 2, 1]
    assert r1.result["equal"] == [True] * 7


def test_steady_state_on_one_rank_only_is_a_handshake_diff(tmp_path: Path) -> None:
    for r in run_ranks("steady_on_one_rank", tmp_path):
        assert r.exitcode == 0, r.log
        assert r.result["diff"] == ["flags.tpwire.steady_state: rank0=True, rank1=False"]


def test_p2p_ends_leaving_their_blocks_do_not_wait_on_each_other(tmp_path: Path) -> None:
    results = run_ranks("p2p_with_block", tmp_path)
    assert [r.exitcode for r in results] == [0, 0], [r.log for r in results]
    assert [r.result for r in results] == [{"closed": True}] * 2
    assert all(r.seconds < 15 for r in results), [r.seconds for r in results]
