"""The benchmark harness runs end to end on a tiny plan (no timings are asserted: speed
targets live in `make bench`, never in tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import codec, cpu_path, handwritten, report, transports
from bench.__main__ import nccl_worlds, run_world
from bench.transports import Plan

pytestmark = pytest.mark.timeout(120)


def test_tiny_run_reports_every_series_and_target(tmp_path: Path) -> None:
    kinds = ("noop", "small", "scope", "cond_on_update")
    stats = run_world(2, Plan(kinds, rounds=1, iters=3, warmup=2, pp=True), timeout=90)
    expected = {f"{k}/{t}" for k in kinds for t in transports.BROADCAST_TRANSPORTS}
    expected |= {f"{k}/{t}" for k, extra in transports.EXTRA_TRANSPORTS.items() for t in extra}
    journaled = {(k, t) for k, extra in transports.EXTRA_TRANSPORTS.items() for t in extra
                 if t in transports.JOURNAL_TRANSPORTS}  # fmt: skip
    assert {k for k, _ in journaled} == {"scope", "cond_on_update"}
    expected |= {f"{k}/{t}:writer" for k, t in journaled}
    expected |= {"pp/tpwire", "pp/vllm", "pp/floor"}
    # the CPU path inside the stream, per side, of the channels that record it (the
    # journaled channels are tpwire's, journaling)
    recorded = {(k, t) for k in kinds for t in ("tpwire", "tpwire-arena")} | journaled
    expected |= {f"{k}/{t}:cpu-{side}" for k, t in recorded for side in ("source", "worker")}
    # the Scope stream's steady chunks apart (its recompute chunks need two iterations)
    assert {"scope/tpwire-arena@steady", "scope/floor@steady"} <= set(stats)
    assert {k for k in stats if "@" not in k} == expected
    assert all(s["n"] == 3 and s["median_us"] > 0 for k, s in stats.items() if "@" not in k)
    result = {
        "command": "test",
        "machine": report.machine(),
        "codec": codec.measure(kinds, 20),
        "cpu_path": cpu_path.measure(kinds, 20),
        "cuda": None,
        "transports": {"2": stats},
        "plan": {"rounds": 1, "iters": 3, "warmup": 2},
        "seconds": 1.0,
    }
    text = report.markdown(result)
    assert "## Targets" in text
    assert "world 2: Scope INFER built in the arena (tpwire-arena) within 1.15x" in text
    assert "Skipped: no CUDA device" in text or "encode, device tensors" in text
    # per world: Scope, journaling, small x2, NOOP x2; then the codec against the hand-written
    # path and validate against pydantic (with the bench extra), encode, the frame 1 check,
    # the input tripwire, jsonschema
    baselines = handwritten.MISSING is None
    assert len(report.targets(result)) == 6 + 4 + (2 if baselines else 0)
    names = [t.name for t in report.targets(result)]
    assert any(n.startswith("codec: tpwire encode + decode") for n in names) == baselines
    assert ("| tpwire / hand-written |" in text) == baselines
    assert "## Isolating the machine" in text and "| 2 | small v1 INFER |" in text
    journaling = report.targets(result)[1]
    assert journaling.name.startswith("world 2: journaling (digest mode) adds at most 5%")
    assert "full mode" in journaling.beside and "writer per record" in journaling.beside
    assert "## Journaling overhead" in text
    assert any(t.name.startswith("input tripwire digest") for t in report.targets(result))
    assert "carry-all" in report.targets(result)[0].beside  # why, measured beside it
    assert "## Copy or collective" in text and "| 2 | Scope v1 INFER 320x576" in text
    paths = {row["kind"]: row for row in result["cpu_path"]}
    assert set(paths) == set(kinds)
    for row in paths.values():
        for condition in cpu_path.CONDITIONS:
            assert all(row[condition][part][0] > 0 for part in cpu_path.PARTS)
    assert "## tpwire's CPU path per envelope" in text
    # v1 next to the optimize mode (tp_control_v2): bytes and time per chunk
    assert "## Conditioning: v1 (every chunk) vs the optimize mode" in text
    rows = [ln for ln in text.splitlines() if ln.startswith(("| 2 | v1 |", "| 2 | optimize |"))]
    assert len(rows) == 2
    v1_bytes, opt_bytes = (int(r.split("|")[3].strip().replace(",", "")) for r in rows)
    assert opt_bytes < v1_bytes - 3 * (1 << 20)  # 4 MiB of conditioning on 1 chunk of 8
    assert "## Transports over NCCL\n\nSkipped: this machine has 0 GPUs" in text
    # an NCCL run renders its own tables and verdicts (the gloo series stand in for it here)
    with_nccl = report.markdown({**result, "gpus": 2, "nccl": {"2": stats}})
    assert "## Transports over NCCL, world size 2 (a GPU per rank)" in with_nccl
    assert "| NCCL world 2: Scope INFER built in the arena (tpwire-arena) within 1.15x" in with_nccl
    assert "Skipped: this machine has" not in with_nccl
    pytest.importorskip("matplotlib")
    report.plot(result, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_the_hand_written_baseline_round_trips_and_refuses_what_it_checks() -> None:
    """The baseline is a working codec (else its cost would mean nothing): what it sends
    comes back bit for bit, and it refuses a broken invariant or a value out of range."""
    pytest.importorskip("msgspec")
    pytest.importorskip("pydantic")
    import dataclasses

    import msgspec
    import pydantic

    from bench import envelopes as E
    from tpwire.generated import tp_control as tc

    header = E.header(tc, 1, 0)
    for i in range(3):  # chunk 2 recomputes: context frames travel too
        msg = E.scope(tc, i)
        raw, buf = handwritten.send(header, msg)
        env, views = handwritten.receive(raw, buf)
        assert env.msg.height == msg.height and env.header.call_id == 1
        for name, attr, _, _ in handwritten.TENSORS:
            sent = getattr(msg, attr)
            assert (sent is None) == (name not in views)
            assert sent is None or torch.equal(views[name], sent)
    msg = E.small(tc, 0)
    broken = dataclasses.replace(msg, tp_num_denoise_steps=3, tp_expected_generator_calls=3)
    with pytest.raises(handwritten.Invalid, match="tp_num_denoise_steps"):
        handwritten.send(header, broken)
    with pytest.raises(msgspec.ValidationError, match=r">= 8 - at `\$\[2\]`"):  # height
        handwritten.send(header, dataclasses.replace(msg, height=4))
    raw, buf = handwritten.send(header, msg)
    with pytest.raises(handwritten.Invalid, match="bytes"):
        handwritten.receive(raw, buf[:-16])
    handwritten.pydantic_validate(handwritten.scalars(msg))
    with pytest.raises(pydantic.ValidationError):
        handwritten.pydantic_validate({**handwritten.scalars(msg), "height": 4})
    with pytest.raises(pydantic.ValidationError):  # strict: no bool for an int
        handwritten.pydantic_validate({**handwritten.scalars(msg), "base_seed": True})


def test_nccl_runs_where_there_is_a_gpu_per_rank() -> None:
    assert nccl_worlds(0, quick=False) == [] and nccl_worlds(1, quick=False) == []
    assert nccl_worlds(2, quick=False) == [2] and nccl_worlds(3, quick=False) == [2]
    assert nccl_worlds(8, quick=False) == [2, 4] and nccl_worlds(8, quick=True) == [2]


def test_profile_attributes_samples_to_the_innermost_tpwire_line() -> None:
    from bench.profile import attribute

    raw = "\n".join(
        [
            "main (x.py:1);Receiver.recv (tpwire/runtime/receiver.py:10);"
            "read_frame0_bytes (tpwire/generated/tp_control.py:5);len (builtins) 7",
            "main (x.py:1);Receiver.recv (tpwire/runtime/receiver.py:12);"
            "BroadcastTransport.put (tpwire/runtime/transport.py:60);broadcast (c10d.py:3) 5",
            "main (x.py:1);barrier (c10d.py:9) 11",
            "main (x.py:1);Receiver.recv (tpwire/runtime/receiver.py:20) 2",
        ]
    )
    total, ours, collective, lines = attribute(raw, "Receiver.recv")
    assert (total, ours, collective) == (25, 9, 5)
    assert lines == {
        "read_frame0_bytes (tpwire/generated/tp_control.py:5)": 7,
        "Receiver.recv (tpwire/runtime/receiver.py:20)": 2,
    }
