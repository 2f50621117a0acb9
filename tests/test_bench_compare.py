"""``make bench`` against the run before it (bench/compare.py): which of tpwire's figures
moved beyond run-to-run noise. No timing is measured here: the runs are made up."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import compare, report
from bench.__main__ import main

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def _stat(median: float) -> dict[str, float]:
    return {"median_us": median, "mean_us": median, "p10_us": median, "p90_us": median, "n": 300}


def _run(
    encode: float = 20.0, tpwire: float = 300.0, floor: float = 200.0, scope_decode: float = 100.0
) -> dict[str, Any]:
    return {
        "command": "make bench",
        "revision": "abc1234",
        "codec": [
            {
                "kind": "small",
                "tensor_bytes": 2592,
                "validate": [4.0, 3.9, 4.1],
                "encode": [encode, 19, 21],
                "pickle": [9.0, 9, 9],
            },
            {"kind": "scope", "tensor_bytes": 4 << 20, "decode": [scope_decode, 99, 140]},
        ],
        "cpu_path": [{"kind": "small", "tight": {"source": [30.0, 29, 31]}}],  # not compared
        "transports": {
            "2": {
                "small/floor": _stat(floor),
                "small/tpwire": _stat(tpwire),
                "small/compat": _stat(5000.0),  # a baseline: never compared
                "small/floor+path": _stat(250.0),
            }
        },
    }


def test_figures_are_tpwire_s_own_and_channels_are_ratios_to_the_floor() -> None:
    figs = compare.figures(_run())
    scope = "decode, Scope v1 INFER 320x576, context frames every 3rd chunk"
    assert set(figs) == {
        "validate, small v1 INFER",
        "encode, small v1 INFER",
        scope,
        "world 2: tpwire / floor, small v1 INFER",
    }
    # MiB of tensors: timed as the memory moves, with that noise
    assert figs[scope].family == "codec, MiB of tensors"
    assert figs["world 2: tpwire / floor, small v1 INFER"].value == pytest.approx(1.5)
    assert figs["encode, small v1 INFER"] == compare.Figure(
        "codec", "encode, small v1 INFER", 20.0, "us"
    )


def test_a_change_beyond_its_family_s_noise_has_a_verdict() -> None:
    noise = compare.NOISE
    before = compare.figures(_run())
    slower_codec = 20.0 * (1 + noise["codec"] + 0.02)
    faster_channel = 200.0 * 1.5 * (1 - noise["channel"] - 0.02)
    after = compare.figures(_run(encode=slower_codec, tpwire=faster_channel))
    verdicts = {c.figure.name: c.verdict for c in compare.compare(before, after)}
    assert verdicts["encode, small v1 INFER"] == "slower"
    assert verdicts["world 2: tpwire / floor, small v1 INFER"] == "faster"
    assert verdicts["validate, small v1 INFER"] == "within noise"
    # what is noise for an envelope of MiB is a change for a small one
    scope = "decode, Scope v1 INFER 320x576, context frames every 3rd chunk"
    bimodal = compare.figures(_run(encode=20.0 * 1.3, scope_decode=100.0 * 1.3))
    verdicts = {c.figure.name: c.verdict for c in compare.compare(before, bimodal)}
    assert verdicts[scope] == "within noise" and verdicts["encode, small v1 INFER"] == "slower"
    # the floor moving alone is the machine, not tpwire: the ratio is what is compared
    drift = compare.figures(_run(tpwire=300.0 * 1.4, floor=200.0 * 1.4))
    assert {c.verdict for c in compare.compare(before, drift)} == {"within noise"}
    # a change just inside the noise is noise
    inside = compare.figures(_run(encode=20.0 * (1 + noise["codec"] - 0.02)))
    assert {c.verdict for c in compare.compare(before, inside)} == {"within noise"}


def test_figures_only_one_run_has_are_not_compared_and_the_report_says_so() -> None:
    quick = _run()
    quick["command"] = "make bench ARGS=--quick"
    newer = _run()
    newer["transports"]["4"] = copy.deepcopy(newer["transports"]["2"])
    newer["against"] = compare.against(quick, "quick.json")
    changes = compare.changes_of(newer)
    assert changes is not None
    assert {c.figure.name for c in changes} == set(compare.figures(quick))
    text = "\n".join(compare.markdown(newer))
    assert "different commands (`make bench ARGS=--quick` before, `make bench` now)" in text
    assert "1 figures of this run and 0 of the previous one have no counterpart" in text
    assert "different commands" in compare.summary(newer)


def test_validate_and_older_runs_get_the_noise_of_what_they_time() -> None:
    """``validate`` reads no tensor bytes: held to the small envelopes' noise whatever the
    envelope; a run recorded before tensor sizes were (every envelope counted as small) is
    held to the larger noise of either run."""
    figs = compare.figures(_run())
    assert figs["validate, small v1 INFER"].family == "codec"
    scope = {"kind": "scope", "tensor_bytes": 4 << 20, "validate": [4.0, 3.9, 4.1],
             "decode": [100.0, 99, 140]}  # fmt: skip
    big = compare.figures({"codec": [scope]})
    assert big["validate, Scope v1 INFER 320x576, context frames every 3rd chunk"].family == (
        "codec"
    )
    older = copy.deepcopy(scope)
    del older["tensor_bytes"]
    older["decode"][0] = 130.0  # +30%: beyond small noise, within the MiB envelopes'
    (change,) = [
        c
        for c in compare.compare(big, compare.figures({"codec": [older]}))
        if c.figure.name.startswith("decode")
    ]
    assert change.figure.family == "codec" and change.verdict == "within noise"


def _full_run(tmp_path: Path) -> Path:
    """The committed report's run, in a folder of its own (``--render`` rewrites it)."""
    out = tmp_path / "docs"
    out.mkdir()
    (out / "benchmarks.json").write_text((ROOT / "docs" / "benchmarks.json").read_text())
    return out


def test_render_reports_and_strict_fails_on_a_slower_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "plot", lambda result, path: None)  # matplotlib: bench extra
    out = _full_run(tmp_path)
    before = json.loads((out / "benchmarks.json").read_text())
    for row in before["codec"]:
        row["encode"][0] /= 2  # the run before encoded faster: this one is slower
    before_path = tmp_path / "before.json"
    before_path.write_text(json.dumps(before))
    assert main(["--render", "--out", str(out), "--against", str(before_path)]) == 0
    # the comparison is kept with the run: rendering again shows it without --against
    kept = json.loads((out / "benchmarks.json").read_text())["against"]
    assert kept["source"] == str(before_path.resolve())
    assert main(["--render", "--out", str(out), "--strict"]) == 1
    printed = capsys.readouterr().out
    assert "SLOWER codec: encode, small v1 INFER" in printed
    text = (out / "benchmarks.md").read_text()
    assert "## Against the previous run" in text
    n = len(before["codec"])
    assert f"{n} slower beyond noise, 0 faster beyond noise" in text
    assert "| codec: encode, small v1 INFER |" in text and "| +100% | slower |" in text


def test_a_run_against_itself_moves_nothing(tmp_path: Path) -> None:
    out = _full_run(tmp_path)
    result = json.loads((out / "benchmarks.json").read_text())
    result["against"] = compare.against(result, "itself")
    changes = compare.changes_of(result)
    assert changes and {c.verdict for c in changes} == {"within noise"}
    assert not compare.regressed(result)


def test_an_unreadable_against_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    for text in (
        '{"codec": [{"kind": "small", "encode": "fast"}]}',
        '{"codec": [{"kind": "small", "encode": ["20"]}]}',  # a number as a string
        '{"codec": [{"kind": "small", "encode": [true]}]}',
        '{"codec": [{"kind": "small", "encode": [NaN]}]}',
        "{}",  # another tool's json: nothing to compare with
        "[1, 2]",
        "[" * 100_000,  # deeper than the parser goes
    ):
        bad.write_text(text)
        with pytest.raises(compare.Unreadable, match="not a make bench result"):
            compare.load(bad)
    assert main(["--against", str(bad), "--out", str(tmp_path)]) == 2
    assert "bench: --against" in capsys.readouterr().err
    assert main(["--against", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
