"""Rules that read a field cached by an epoch (``cached_by``) are refused by ``check``.

The sender and every receiver check an envelope as it travels, where a cached field is
absent while its epoch holds, and the receiver hands it over with the kept value filled
in. A rule that reads the cached field (its value, its presence, or a dimension only it
binds) would be checked on one message and hold or fail on the other: the receiver would
hand over a message its own module's ``validate()`` refuses (``expected brush <= K, got
brush = 3, K = 2``). So such specs are located compiler errors (``bad-cached-by``), as are
specs that could never carry a stream (a cached field with ``forbidden_when``, a derived
sequence role). What ``check`` accepts, every end hands over as valid: on 2-rank gloo
streams (the scenarios below, run by ``run_ranks``) and in-process.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tpwire.codegen import SpecErrors
from tpwire.codegen import compile as compile_spec
from tpwire.generated import tp_control_v2 as t2
from tpwire.testing.streams import Step, run_stream

TESTS = Path(__file__).parent
REPO = TESTS.parent
PAINT = TESTS / "specs" / "paint.yaml"

#: the issue's rule: the brush (cached by brush_rev) fits the canvas (K, sent every time)
BRUSH_FITS = """    invariants:
      - id: brush-fits
        expr: brush <= K
        message: the brush fits the canvas
"""


def brush_spec() -> str:
    """tests/specs/paint.yaml with the issue's invariant on Stroke."""
    return PAINT.read_text("utf-8") + BRUSH_FITS


def brush_line() -> int:
    """The 1-based line of ``expr: brush <= K`` in ``brush_spec()``."""
    return brush_spec().splitlines().index("        expr: brush <= K") + 1


# -- 2-rank gloo scenarios (run_ranks imports this module in each rank) --------------------


def paint_steps(proto: Any, *, swatch: bool = False) -> list[tuple[Any, Any]]:
    """The brush is set once (3) on a 3-wide canvas and kept while the canvas shrinks to 2
    (``swatch``: a second tensor cached by palette_rev travels with the palette)."""
    pal = torch.ones(2, 3)
    out = []
    for i, width in enumerate((3, 2, 2)):
        extra = {"swatch": torch.ones(2) if i == 0 else None} if swatch else {}
        out.append(
            (
                proto.Stroke(
                    canvas=torch.zeros(width),
                    palette_rev=0,
                    palette=pal if i == 0 else None,
                    brush_rev=0,
                    brush=3 if i == 0 else None,
                    **extra,
                ),
                proto.Header(seq=i + 1, frame=i, world=0, op=proto.Op.PAINT),
            )
        )
    return out


def v2_steps() -> list[tuple[Any, Any]]:
    """tp_control_v2's optimize mode: the conditioning on chunks 0, 3 and the hard cut (5)."""
    import mp_epochs as S

    out = []
    for i in range(7):
        send = i in (0, 3, 5)
        msg = S.v2_envelope(i, send=send, epoch=int(i >= 3))
        out.append((msg, dataclasses.replace(S.header(t2, i), cache_epoch=int(i >= 5))))
    return out


def handed_over(rank: int, world: int, spec: str | None = None) -> Any:
    """Rank 0 sends a stream; rank 1 records, for each envelope it hands over, what its own
    module's ``validate`` says of it. ``spec``: the text of a spec to compile in each rank
    (a refusal is the result, the same at both ranks); else tp_control_v2."""
    from tpwire.runtime.channel import BroadcastChannel
    from tpwire.runtime.errors import EnvelopeInvalid

    if spec is not None:
        try:
            proto: Any = compile_spec(spec)
        except SpecErrors as exc:
            return {"spec_refused": [str(e) for e in exc.errors]}
        steps = paint_steps(proto)
    else:
        proto, steps = t2, v2_steps()
    if rank == 0:
        with BroadcastChannel(proto, poison="raise", watchdog_s=60) as ch:
            for msg, header in steps:
                ch.send(msg, header)
        return {"sent": len(steps)}
    out: dict[str, Any] = {"validated": [], "refused": [], "kept": []}
    ch = BroadcastChannel(proto, poison="raise", watchdog_s=60).open()
    while True:
        try:
            got = ch.recv()
        except EnvelopeInvalid as exc:
            out["refused"].append([v.message for v in exc.violations])
            continue
        if got.action in (ch.protocol.shutdown, ch.protocol.error):
            out["end"] = got.action.name
            return out
        if got.msg is None:
            continue
        out["kept"].append(sorted(got.kept))
        out["validated"].append([str(v) for v in proto.validate(got.msg, got.header)])


@pytest.mark.timeout(180)
def test_every_message_a_v2_worker_hands_over_passes_its_own_validate(tmp_path: Path) -> None:
    from mp import run_ranks

    r0, r1 = run_ranks("handed_over", tmp_path, module="test_cached_rules", timeout=150)
    assert [r0.exitcode, r1.exitcode] == [0, 0], r0.log + r1.log
    got = r1.result
    assert got["refused"] == [] and got["end"] == "SHUTDOWN"
    # the conditioning came from the cache on the held chunks, and the messages handed
    # over with it are the ones tp_control_v2.validate accepts
    c = ["conditioning_embeds"]
    assert got["kept"] == [[], c, c, [], c, [], c]
    assert got["validated"] == [[]] * 7


@pytest.mark.timeout(180)
def test_the_issues_brush_rule_never_reaches_a_stream(tmp_path: Path) -> None:
    from mp import run_ranks

    r0, r1 = run_ranks(
        "handed_over", tmp_path, module="test_cached_rules", timeout=150, spec=brush_spec()
    )
    assert [r0.exitcode, r1.exitcode] == [0, 0], r0.log + r1.log
    # no rank hands over a message validate refuses: the spec is refused at both ranks,
    # at the invariant's read of the cached brush
    for r in (r0, r1):
        assert "validated" not in r.result, r.result
        (line,) = r.result["spec_refused"]
        assert f":{brush_line()}:15: error[bad-cached-by]: " in line
        assert "invariant 'brush-fits' reads 'brush', which is cached_by 'brush_rev'" in line


# -- in-process ------------------------------------------------------------------------------


def test_in_process_v2_stream_hands_over_only_valid_messages() -> None:
    steps = [Step(h, m, "") for m, h in v2_steps()]
    for s in steps:
        assert t2.validate(s.msg, s.header) == []  # what the sender checks
    played = run_stream(t2.BINDINGS, steps)
    assert not any(played.sender) and not any(played.receiver)
    for d, s in zip(played.delivered, steps, strict=True):
        assert t2.validate(d, s.header) == [], s.header


def test_cli_check_refuses_the_issues_spec_in_one_located_line(tmp_path: Path) -> None:
    spec = tmp_path / "brush.yaml"
    spec.write_text(brush_spec())
    proc = subprocess.run(
        [sys.executable, "-m", "tpwire", "check", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if "error[" in x]
    assert lines == [
        f"{spec}:{brush_line()}:15: error[bad-cached-by]: invariant 'brush-fits' reads "
        "'brush', which is cached_by 'brush_rev': the envelope is checked as it travels "
        "(without 'brush' while 'brush_rev' holds) and handed over with the kept value, so "
        "the two could disagree; a rule cannot read a cached field"
    ], proc.stderr


#: rules over paint.yaml's Stroke: those check accepts read no cached field (or only what
#: travels every time); each refused one reads brush or palette (or P, bound by palette)
RULES = {
    "brush_rev >= 0": True,
    "len(canvas) >= 1": True,
    "K >= 1 and palette_rev <= 1000": True,
    "brush <= K": False,
    "brush is not None": False,
    "brush_rev == 0 or brush is None": False,
    "len(palette) <= 4": False,
    "P <= K": False,
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_rule_check_accepts_holds_alike_on_the_wire_and_handed_over(rule: str) -> None:
    text = PAINT.read_text("utf-8") + BRUSH_FITS.replace("brush <= K", rule)
    try:
        proto = compile_spec(text)
    except SpecErrors as exc:
        assert not RULES[rule], exc
        assert [e.code for e in exc.errors] == ["bad-cached-by"]
        return
    assert RULES[rule], f"{rule!r} reads a cached field and was accepted"
    steps = [Step(h, m, "") for m, h in paint_steps(proto)]
    played = run_stream(proto.BINDINGS, steps)
    assert not any(played.sender) and not any(played.receiver)
    for d, s in zip(played.delivered, steps, strict=True):
        assert proto.validate(s.msg, s.header) == proto.validate(d, s.header) == []


def test_a_derived_field_reading_a_cached_one_is_refused() -> None:
    text = PAINT.read_text("utf-8").replace(
        "      brush: {type: int, range: {min: 1, max: 9}, cached_by: brush_rev}\n",
        "      brush: {type: int, range: {min: 1, max: 9}, cached_by: brush_rev}\n"
        "      reach: {type: int, derived: K + brush}\n",
    )
    with pytest.raises(SpecErrors) as info:
        compile_spec(text)
    (e,) = info.value.errors
    assert e.code == "bad-cached-by" and "derived of 'reach' reads 'brush'" in e.message


def test_the_shipped_v2_spec_ties_the_reset_to_the_update_flag() -> None:
    msg, header = v2_steps()[1]
    bad = dataclasses.replace(msg, tp_reset_crossattn_cache=True)
    (v,) = t2.validate(bad, header)
    assert (v.code, v.fm) == ("invariant", "FM-17")
    assert "tp_reset_crossattn_cache == conditioning_embeds_updated" in v.rule


def test_fields_cached_by_one_epoch_may_share_a_dimension() -> None:
    # they travel together, so the dimension is checked on both or on neither
    text = PAINT.read_text("utf-8").replace(
        "cached_by: palette_rev}\n",
        "cached_by: palette_rev}\n"
        "      swatch: {type: tensor, dtypes: [float32], shape: [P], cached_by: palette_rev}\n",
    )
    proto = compile_spec(text)
    steps = [Step(h, m, "") for m, h in paint_steps(proto, swatch=True)]
    played = run_stream(proto.BINDINGS, steps)
    assert not any(played.sender) and not any(played.receiver)
    assert played.kept[1] == {"palette", "swatch", "brush"}
    for d, s in zip(played.delivered, steps, strict=True):
        assert proto.validate(d, s.header) == []
    # a field cached by another epoch may not share it
    other = text.replace("shape: [P], cached_by: palette_rev}", "shape: [P], cached_by: brush_rev}")
    with pytest.raises(SpecErrors) as info:
        compile_spec(other)
    assert {e.code for e in info.value.errors} == {"bad-cached-by"}
    assert "which is cached_by 'brush_rev'" in info.value.errors[0].message


def test_breaking_compares_with_an_old_spec_that_reads_a_cached_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A spec committed before ``check`` refused rules that read a cached field is what old
    peers ran: ``breaking`` compares the fixed spec with it (the pre-commit hook compared
    nothing and failed on HEAD's spec, exit 1, until the fix was committed without it). The
    new side is held to every rule."""
    from tpwire.cli import main
    from tpwire.codegen import breaking

    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(brush_spec(), "utf-8")
    new.write_text(PAINT.read_text("utf-8"), "utf-8")
    report = breaking.compare_texts(old.read_text(), new.read_text(), "old.yaml", "new.yaml")
    assert "INVARIANT_REMOVED" in {f.rule for f in report.findings}
    rc, out, err = run_cli(capsys, main, "breaking", str(new), "--against", str(old))
    assert rc == 1 and "INVARIANT_REMOVED" in out and "bad-cached-by" not in out + err
    # the other way round, the new spec is refused where it reads the cached brush
    with pytest.raises(SpecErrors) as info:
        breaking.compare_texts(new.read_text(), old.read_text(), "new.yaml", "old.yaml")
    (e,) = info.value.errors
    assert (e.file, e.line, e.code) == ("old.yaml", brush_line(), "bad-cached-by")
    # and the shipped v2 against its form before the fix: the change itself is found
    v2 = (REPO / "spec" / "tp_control_v2.yaml").read_text("utf-8")
    v2_before = v2.replace(
        "expr: tp_reset_crossattn_cache == conditioning_embeds_updated",
        "expr: tp_reset_crossattn_cache == (conditioning_embeds is not None)",
    )
    assert v2_before != v2
    report = breaking.compare_texts(v2_before, v2, "before.yaml", "spec/tp_control_v2.yaml")
    assert {"INVARIANT_STRENGTHENED", "INVARIANT_WEAKENED"} <= {f.rule for f in report.findings}


def run_cli(capsys: pytest.CaptureFixture[str], main: Any, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err
