"""CUDA: materialization (host -> device ``encode``, decode into CUDA buffers, a side
stream), a device channel of two processes on one GPU over gloo, and ``make gpu-check``.

The CUDA tests skip without a CUDA device (CPU CI); ``make gpu-check`` runs this file on a
GPU machine and fails on any skip there. The tests of the check itself (the no-GPU path,
the report, the result checks, the channel scenario on CPU tensors) run everywhere.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import mp_scenarios as S
import pytest
import torch
from envelopes import HEADER, v1_message
from mp import run_ranks

from tpwire.generated import pp_contract, tp_control
from tpwire.runtime.errors import WireError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gpu_check

pytestmark = pytest.mark.timeout(120)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _tensors(msg: Any) -> dict[str, torch.Tensor]:
    return {
        f.name: v
        for f in dataclasses.fields(msg)
        if isinstance(v := getattr(msg, f.name), torch.Tensor)
    }


def _assert_same_on(got: Any, want: Any, device_type: str) -> None:
    """Every tensor of ``got`` on ``device_type``, every field equal to ``want``'s (bit for
    bit, compared on the host)."""
    assert type(got) is type(want)
    tensors = _tensors(got)
    assert tensors and all(t.device.type == device_type for t in tensors.values())
    for f in dataclasses.fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape, f.name
            assert torch.equal(
                a.cpu().reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)
            ), f.name
        else:
            assert a == b, f.name


# --- CUDA materialization -------------------------------------------------------------------


@cuda
def test_cuda_encode_from_host_tensors_round_trips_on_the_device() -> None:
    host = v1_message()
    frames = tp_control.encode(host, HEADER, device="cuda")
    assert frames.segments and all(s.is_cuda for s in frames.segments)
    # the same frame 0, digest included: the device bytes hash as the host bytes do
    assert torch.equal(frames.frame0, tp_control.encode(host, HEADER).frame0)
    header, back = tp_control.decode(frames)
    assert header == HEADER
    _assert_same_on(back, host, "cuda")


@cuda
def test_cuda_device_tensors_travel_in_place() -> None:
    host = v1_message()
    on_dev = S.on_device(host, torch.device("cuda"))
    frames = tp_control.encode(on_dev, HEADER)  # device=None: the tensors stay where they are
    assert all(s.is_cuda for s in frames.segments)
    # large tensors are their own segments, sent from their own (device) storage
    assert frames.segments[1].data_ptr() == on_dev.context_frames_override.data_ptr()  # type: ignore[union-attr]
    assert torch.equal(frames.frame0, tp_control.encode(host, HEADER).frame0)
    _, back = tp_control.decode(frames)
    _assert_same_on(back, host, "cuda")


@cuda
def test_cuda_decode_into_cuda_buffers() -> None:
    host = v1_message()
    frames = tp_control.encode(host, HEADER)  # host frames, as a CPU peer would send them
    manifest = tp_control.read_frame0(frames.frame0)
    buffers = manifest.allocate("cuda")
    assert all(b.is_cuda for b in buffers)
    assert [b.numel() for b in buffers] == list(manifest.segment_nbytes)
    for dst, src in zip(buffers, frames.segments, strict=True):
        dst.copy_(src)
    header, back = manifest.finish(buffers)
    assert header == HEADER
    _assert_same_on(back, host, "cuda")


@cuda
def test_cuda_encode_and_decode_on_a_side_stream() -> None:
    """Everything on a non-default stream that is still busy when ``encode`` runs: the
    device tensors are written by an asynchronous copy queued behind a sleep kernel, so a
    digest (or pack) that did not follow the current stream would read stale bytes."""
    host = v1_message()
    pinned = {name: t.pin_memory() for name, t in _tensors(host).items()}
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    assert side != torch.cuda.default_stream()
    sleep = getattr(torch.cuda, "_sleep", None)
    with torch.cuda.stream(side):
        assert torch.cuda.current_stream() == side
        if sleep is not None:
            sleep(100_000_000)  # on the order of 50 ms of a busy stream
        moved = {
            name: torch.empty_like(t, device="cuda").copy_(t, non_blocking=True)
            for name, t in pinned.items()
        }
        on_dev = dataclasses.replace(host, **moved)  # type: ignore[arg-type]
        frames = tp_control.encode(on_dev, HEADER)
        manifest = tp_control.read_frame0(frames.frame0)
        buffers = manifest.allocate("cuda")
        for dst, src in zip(buffers, frames.segments, strict=True):
            dst.copy_(src)
        header, back = manifest.finish(buffers)
        from_host = tp_control.encode(host, HEADER, device="cuda")
        _, back_from_host = tp_control.decode(from_host)
    side.synchronize()
    assert torch.equal(frames.frame0, tp_control.encode(host, HEADER).frame0)
    assert header == HEADER
    _assert_same_on(back, host, "cuda")
    _assert_same_on(back_from_host, host, "cuda")


@cuda
def test_cuda_corrupted_frame1_is_refused() -> None:
    frames = tp_control.encode(v1_message(), HEADER, device="cuda")
    segments = list(frames.segments)
    flipped = segments[1].clone()
    flipped[100] = flipped[100] ^ 1
    segments[1] = flipped
    with pytest.raises(WireError) as info:
        tp_control.decode(type(frames)(frames.frame0, tuple(segments)))
    assert info.value.code == "digest"


@cuda
def test_cuda_envelope_validation_refuses_an_inconsistent_plan() -> None:
    bad = S.on_device(S.envelope(1, tp_num_denoise_steps=5), torch.device("cuda"))
    codes = {(v.code, v.field) for v in tp_control.validate(bad, S.header(1))}
    assert ("invariant", "denoising_step_list, tp_num_denoise_steps") in codes


@cuda
def test_cuda_pp_contract_round_trip() -> None:
    host = S.pp_envelope(3, init=True)
    header = S.pp_header(1, 0, 0, "INFER")
    frames = pp_contract.encode(host, header, device="cuda")
    got_header, back = pp_contract.decode(frames)
    assert got_header == header
    _assert_same_on(back, host, "cuda")


# --- two processes, one GPU, gloo -----------------------------------------------------------


@cuda
@pytest.mark.timeout(150)
def test_cuda_channel_two_processes_one_gpu(tmp_path: Path) -> None:
    ranks = run_ranks("cuda_channel", tmp_path, world=2, timeout=120, small=4, scope=3, warmup=1)
    assert [r.exitcode for r in ranks] == [0, 0], "\n".join(r.log for r in ranks)
    results = [r.result for r in ranks]
    assert gpu_check.channel_problems(results, expected=(4 + 3 + 2) * 3) == []
    sender, worker = results
    assert ["invariant", "denoising_step_list, tp_num_denoise_steps"] in sender["sender_refused"]
    assert ["invariant", "denoising_step_list, tp_num_denoise_steps"] in worker["worker_refused"]
    assert {row["variant"] for row in worker["received"]} == {"cuda", "cuda-host", "cpu"}


# --- the check itself (everywhere) ----------------------------------------------------------


def test_channel_scenario_runs_on_cpu_tensors(tmp_path: Path) -> None:
    """The scenario behind the device channel test, with the device set to the CPU."""
    ranks = run_ranks(
        "cuda_channel", tmp_path, world=2, timeout=90, small=2, scope=1, warmup=1, device="cpu"
    )
    assert [r.exitcode for r in ranks] == [0, 0], "\n".join(r.log for r in ranks)
    results = [r.result for r in ranks]
    assert gpu_check.channel_problems(results, expected=(2 + 1 + 2) * 3) == []
    stats = gpu_check.channel_stats(results)
    assert set(stats) == {f"{k}/{v}" for k in ("small", "scope") for v in S.CUDA_VARIANTS}
    table = gpu_check.channel_table(stats)
    assert [row[0] for row in table.rows] == ["small v1 INFER", "Scope v1 INFER 320x576"]


def test_channel_problems_name_what_went_wrong() -> None:
    good_worker: dict[str, Any] = {
        "received": [{"kind": "small", "variant": "cuda", "call_id": 1, "equal": True,
                      "on_device": True}],
        "worker_refused": [["invariant", "x"]],
        "after_refusal": {"action": "INFER", "equal": True, "on_device": True},
        "last": ["SHUTDOWN", "SHUTDOWN"],
        "problems": [],
    }  # fmt: skip
    sender = {"sender_refused": [["invariant", "x"]], "problems": []}
    assert gpu_check.channel_problems([sender, good_worker], expected=1) == []
    bad_row = {**good_worker["received"][0], "equal": False}
    bad = {**good_worker, "received": [bad_row], "worker_refused": []}
    problems = gpu_check.channel_problems([sender, bad], expected=2)
    assert any("received 1 envelopes, expected 2" in p for p in problems)
    assert any("equal=False" in p for p in problems)
    assert any("did not refuse the forged envelope" in p for p in problems)
    assert gpu_check.channel_problems([sender, None], expected=1) == ["a rank returned no result"]
    # the scenario's own comparison sees a changed tensor and a tensor on the wrong device
    want = S.envelope(1)
    assert S.received_as_sent(want, want, "cpu") == {"on_device": True, "equal": True}
    changed = dataclasses.replace(want, latents=want.latents + 1)
    assert S.received_as_sent(changed, want, "cpu")["equal"] is False
    assert S.received_as_sent(want, want, "cuda")["on_device"] is False


def test_without_cuda_the_check_says_so_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = tmp_path / "benchmarks-gpu.md"
    assert gpu_check.main(["--out", str(report)]) == 0
    assert capsys.readouterr().out.strip() == gpu_check.NO_CUDA
    assert not report.exists()  # no GPU, no report: nothing was measured


def test_nccl_section_is_skipped_below_two_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    run = gpu_check.Run(budget=60, report=tmp_path / "r.md", logs=tmp_path, out=None)
    sec = gpu_check.Section("nccl", "NCCL transport tables", 10)
    gpu_check.run_section(run, sec, gpu_check.section_nccl)
    assert (sec.status, sec.summary) == ("skipped", "skipped: 1 GPU")


def test_a_failing_section_is_recorded_and_the_next_still_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = gpu_check.Run(budget=60, report=tmp_path / "docs" / "r.md", logs=tmp_path, out=out)
    run.info = {"torch": "x", "gpus": [{"name": "Fake GPU", "memory_gib": 80.0,
                                       "capability": "90", "index": 0, "multiprocessors": 1}]}  # fmt: skip
    run.sections = [gpu_check.Section("a", "Broken", 10), gpu_check.Section("b", "Fine", 10)]

    def broken(run: gpu_check.Run, sec: gpu_check.Section, timeout: float) -> None:
        raise ZeroDivisionError("the device said no")

    def fine(run: gpu_check.Run, sec: gpu_check.Section, timeout: float) -> None:
        sec.summary = "all good"
        sec.tables.append(gpu_check.Table("numbers", ["what", "us"], [["x", "1.0"]], "lr"))

    gpu_check.run_section(run, run.sections[0], broken)
    gpu_check.run_section(run, run.sections[1], fine)
    run.finished = True
    written = gpu_check.write_report(run)
    assert [s.status for s in run.sections] == ["fail", "pass"]
    assert run.sections[0].summary == "ZeroDivisionError: the device said no"
    assert {p.name for p in written} >= {"r.md", "benchmarks-gpu.md", "gpu-check.json"}
    text = (tmp_path / "docs" / "r.md").read_text()
    assert text == (out / "benchmarks-gpu.md").read_text()
    assert "Overall: **FAIL** (1 section(s))" in text
    assert "| Broken | **FAIL** |" in text and "| Fine | pass |" in text
    assert "ZeroDivisionError: the device said no" in text  # the traceback, in the section
    assert "| what | us |\n|---|---:|\n| x | 1.0 |" in text
    assert "Fake GPU (80 GiB, sm_90)" in text


def test_report_of_a_passing_run_and_of_an_unfinished_one() -> None:
    result = {
        "command": "make gpu-check", "date": "2026-01-01 00:00 UTC", "budget_s": 300,
        "seconds": 42.0, "finished": True, "info": {},
        "sections": [
            {"key": "nccl", "title": "NCCL", "status": "skipped", "seconds": 0.0,
             "summary": "skipped: 1 GPU", "error": None, "tables": [], "notes": ["a note"]},
        ],
    }  # fmt: skip
    text = gpu_check.render(result)
    assert "Overall: **pass**." in text and "| NCCL | skipped | 0.0 | skipped: 1 GPU |" in text
    assert "\na note\n" in text
    result["finished"] = False
    assert "Overall: **incomplete**" in gpu_check.render(result)


def test_pytest_results_are_read_from_junit_xml(tmp_path: Path) -> None:
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_gpu" name="test_a" time="0.5"/>'
        '<testcase classname="tests.test_gpu" name="test_b" time="0.1">'
        '<failure message="assert 1 == 2">trace</failure></testcase>'
        '<testcase classname="tests.test_gpu" name="test_c" time="0">'
        '<skipped message="needs a CUDA device"/></testcase>'
        "</testsuite></testsuites>"
    )
    cases = gpu_check.junit_cases(xml)
    assert [(c["name"], c["outcome"]) for c in cases] == [
        ("test_gpu::test_a", "passed"),
        ("test_gpu::test_b", "failed"),
        ("test_gpu::test_c", "skipped"),
    ]
    assert gpu_check.pytest_counts(cases, "") == {"passed": 1, "failed": 1, "skipped": 1}
    summary = "== 3 passed, 1 skipped, 2 deselected in 1.2s =="
    assert gpu_check.pytest_counts([], summary) == {"passed": 3, "skipped": 1, "deselected": 2}
