"""Fields cached by an epoch (``cached_by``): the compiler's output and the rules across
envelopes of ``runtime.epochs``, on Scope's optimize mode (tp_control_v2) and on a protocol
of its own names that caches a tensor and a scalar by two epochs (tests/specs/paint.yaml)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from tpwire.codegen import compile as compile_spec
from tpwire.generated import tp_control as tc
from tpwire.generated import tp_control_v2 as t2
from tpwire.runtime.bindings import Cached
from tpwire.runtime.epochs import EpochCache
from tpwire.testing.streams import Step, intended, run_stream

ROOT = Path(__file__).parent.parent
PAINT = Path(__file__).parent / "specs" / "paint.yaml"


def v2_header(i: int, cut: int = 0) -> t2.Header:
    return t2.Header(
        call_id=i + 1, chunk_index=i, control_epoch=0, cache_epoch=cut, action=t2.TPAction.INFER
    )


def v2_envelope(i: int, epoch: int, cond: torch.Tensor | None) -> t2.InferV1GeneratorOnly:
    g = torch.Generator().manual_seed(i)
    return t2.InferV1GeneratorOnly(
        tp_envelope_version=2,
        height=16,
        width=24,
        current_start_frame=i,
        init_cache=i == 0,
        manage_cache=True,
        tp_reset_kv_cache=i == 0,
        tp_reset_crossattn_cache=cond is not None,
        conditioning_embeds_updated=cond is not None,
        kv_cache_attention_bias=0.25,
        tp_do_kv_recompute=False,
        tp_num_denoise_steps=2,
        denoising_step_list=torch.tensor([1000, 500]),
        latents=torch.randn(1, 1, 4, 2, 3, generator=g).to(torch.bfloat16),
        conditioning_epoch=epoch,
        conditioning_embeds=cond,
        context_frames_override=None,
        base_seed=i,
    )


def cond(k: int) -> torch.Tensor:
    return torch.full((1, 2, 8), float(k), dtype=torch.float16)


def test_v1_is_unchanged_and_caches_nothing() -> None:
    # the bringup-safe contract keeps its fingerprint (old peers still talk to it)
    assert tc.FINGERPRINT == 0x04FD521BFF3559AD
    assert tc.BINDINGS.cached == {}
    assert "cached" not in (ROOT / "generated" / "tp_control.py").read_text()


def test_v2_bindings_declare_the_cached_field() -> None:
    want = (Cached("Infer", "conditioning_embeds", "conditioning_epoch", "FM-17"),)
    assert t2.BINDINGS.cached == {t2.InferV0FullPipeline: want, t2.InferV1GeneratorOnly: want}
    # the sender may omit it: the variant's field is optional, its epoch is not
    fields = {f.name: f.type for f in dataclasses.fields(t2.InferV1GeneratorOnly)}
    assert fields["conditioning_embeds"] == "torch.Tensor | None"
    assert fields["conditioning_epoch"] == "int"


def test_docs_table_says_the_rule_in_words() -> None:
    page = (ROOT / "docs" / "spec" / "tp_control_v2.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `conditioning_embeds`"))
    assert "cached by conditioning_epoch: sent exactly when conditioning_epoch increments" in row
    assert "the receiver keeps the last one" in row


def test_a_held_envelope_round_trips_without_the_tensor() -> None:
    msg = v2_envelope(3, 1, None)
    frames = t2.encode(msg, v2_header(3))
    _, got = t2.decode(frames)
    assert got == msg and got is not None and got.conditioning_embeds is None
    full = t2.encode(v2_envelope(3, 2, cond(2)), v2_header(3))
    assert sum(s.numel() for s in full.segments) - sum(s.numel() for s in frames.segments) == 32


def test_the_cached_field_is_absent_while_its_epoch_is() -> None:
    msg = t2.InferV0FullPipeline(context_frames_override=None, conditioning_embeds=cond(0))
    (v,) = t2.validate(msg, v2_header(0))
    assert (v.code, v.field, v.rule) == (
        "must_be_none",
        "conditioning_embeds",
        "none_unless: conditioning_epoch is not None",
    )


def stream_v2(events: list[str]) -> list[Step]:
    """update: a new conditioning (epoch + 1); hold: none; cut: a hard cut (resent)."""
    steps, epoch, cut = [], 0, 0
    for i, event in enumerate(events):
        if event == "update" and i > 0:
            epoch += 1
        cut += event == "cut"
        sent = cond(epoch) if event in ("update", "cut") else None
        steps.append(Step(v2_header(i, cut), v2_envelope(i, epoch, sent), event))
    return steps


def test_receiver_hands_over_exactly_the_intended_value() -> None:
    events = ["update", "hold", "hold", "update", "hold", "cut", "hold", "update", "hold"]
    steps = stream_v2(events)
    played = run_stream(t2.BINDINGS, steps)
    assert not any(played.sender) and not any(played.receiver)
    for got, want, step in zip(played.delivered, intended(t2.BINDINGS, steps), steps, strict=True):
        assert torch.equal(got.conditioning_embeds, want["conditioning_embeds"])
        assert got.conditioning_epoch == step.msg.conditioning_epoch
    assert [bool(k) for k in played.kept] == [e == "hold" for e in events]


def codes(found: Any) -> list[tuple[str, str, str | None]]:
    return [(v.code, v.field, v.fm) for v in found]


def test_epoch_bump_without_the_tensor_is_stale_at_both_ends() -> None:
    steps = stream_v2(["update", "hold", "update"])
    bad = steps[2].msg
    steps[2] = Step(steps[2].header, dataclasses.replace(bad, conditioning_embeds=None), "bad")
    played = run_stream(t2.BINDINGS, steps)
    for found in (played.sender[2], played.receiver[2]):
        assert codes(found) == [("stale", "conditioning_embeds", "FM-17")]
        (v,) = found
        assert v.expected == "conditioning_embeds of conditioning_epoch 1"
        assert v.actual == "absent (kept value of conditioning_epoch 0 is stale)"
        assert v.ids == (("call_id", 3), ("chunk_index", 2), ("cache_epoch", 0))
        assert "conditioning_epoch incremented (0 -> 1)" in v.message


def test_a_restarted_receiver_demands_the_tensor() -> None:
    steps = stream_v2(["update", "hold", "hold", "update"])
    played = run_stream(t2.BINDINGS, steps, restart_at=2)
    assert not played.sender[2]
    (v,) = played.receiver[2]
    assert (v.code, v.actual) == ("stale", "absent (nothing kept)")
    assert "the cache is empty" in v.message
    # refused, so nothing stale was delivered; the next update heals the receiver
    assert played.delivered[2] is None and not played.receiver[3]


def test_a_hard_cut_resets_the_cache() -> None:
    steps = stream_v2(["update", "hold", "cut"])
    steps[2] = Step(
        steps[2].header, dataclasses.replace(steps[2].msg, conditioning_embeds=None), "bad"
    )
    played = run_stream(t2.BINDINGS, steps)
    for found in (played.sender[2], played.receiver[2]):
        (v,) = found
        assert v.code == "stale" and "a hard cut (cache_epoch 0 -> 1)" in v.message


def test_resent_without_a_bump_and_epoch_backwards() -> None:
    steps = stream_v2(["update", "update", "hold"])
    same = dataclasses.replace(steps[2].msg, conditioning_embeds=cond(9))
    back = dataclasses.replace(steps[2].msg, conditioning_epoch=0)
    for msg, want in ((same, "not_bumped"), (back, "epoch_backwards")):
        played = run_stream(t2.BINDINGS, [*steps[:2], Step(steps[2].header, msg, "bad")])
        assert [v.code for v in played.sender[2]] == [want]
        assert [v.code for v in played.receiver[2]] == [want]


def test_a_refused_envelope_changes_nothing() -> None:
    cache: EpochCache[Any, Any] = EpochCache(t2.BINDINGS, keep_values=True)
    first = v2_envelope(0, 0, cond(0))
    cache.commit(first, v2_header(0))
    stale = v2_envelope(1, 1, None)
    assert cache.check(stale, v2_header(1))
    assert cache.check(stale, v2_header(1))  # still refused: the check changed nothing
    held = cache.commit(v2_envelope(1, 0, None), v2_header(1))
    assert held is not None and held.conditioning_embeds is first.conditioning_embeds


# -- a protocol of its own names: two cached fields, two epochs, a scalar among them -----


def paint_stream(proto: Any) -> list[Step]:
    def header(i: int, world: int = 0) -> Any:
        return proto.Header(seq=i + 1, frame=i, world=world, op=proto.Op.PAINT)

    def stroke(i: int, prev: int, brev: int, palette: Any = None, brush: Any = None) -> Any:
        return proto.Stroke(
            canvas=torch.zeros(2),
            palette_rev=prev,
            palette=palette,
            brush_rev=brev,
            brush=brush,
        )

    pal = torch.ones(2, 3)
    return [
        Step(header(0), stroke(0, 5, 1, pal, 3), "update"),
        Step(header(1), stroke(1, 5, 2, None, 4), "update"),  # the brush only
        Step(header(2), stroke(2, 5, 2), "hold"),
        Step(header(3, 1), stroke(3, 5, 2, pal * 2, 4), "cut"),  # a hard cut: both again
        Step(header(4, 1), stroke(4, 6, 2, pal * 3), "update"),  # the palette only
        Step(header(5, 1), stroke(5, 6, 2), "hold"),
    ]


def test_any_protocol_by_its_own_names() -> None:
    proto = compile_spec(PAINT)
    steps = paint_stream(proto)
    played = run_stream(proto.BINDINGS, steps)
    assert not any(played.sender) and not any(played.receiver)
    got = [(torch.equal(d.palette, w["palette"]), d.brush) for d, w in zip(
        played.delivered, intended(proto.BINDINGS, steps), strict=True
    )]  # fmt: skip
    assert got == [(True, 3), (True, 4), (True, 4), (True, 4), (True, 4), (True, 4)]
    assert played.kept[1] == {"palette"} and played.kept[4] == {"brush"}
    assert played.kept[5] == {"palette", "brush"}
    # the cut without the brush: stale, named by this spec's fields and ids
    cut = steps[3]
    steps[3] = Step(cut.header, dataclasses.replace(cut.msg, brush=None), "bad")
    (v,) = run_stream(proto.BINDINGS, steps).receiver[3]
    assert (v.code, v.field) == ("stale", "brush")
    assert "a hard cut (world 0 -> 1)" in v.message
    assert v.ids == (("seq", 4), ("frame", 3), ("world", 1))


@pytest.mark.parametrize("field", ["palette", "brush"])
def test_each_epoch_rules_its_own_field(field: str) -> None:
    proto = compile_spec(PAINT)
    steps = paint_stream(proto)
    hold = steps[2]
    value = steps[1].msg.brush if field == "brush" else steps[0].msg.palette
    steps[2] = Step(hold.header, dataclasses.replace(hold.msg, **{field: value}), "bad")
    (v,) = run_stream(proto.BINDINGS, steps).sender[2]
    assert (v.code, v.field) == ("not_bumped", field)


def test_docs_show_the_real_v1_to_v2_findings() -> None:
    from tpwire.codegen import breaking

    report = breaking.breaking(
        breaking.load_side((ROOT / "spec" / "tp_control.yaml").read_text(), "spec/tp_control.yaml"),
        breaking.load_side(
            (ROOT / "spec" / "tp_control_v2.yaml").read_text(), "spec/tp_control_v2.yaml"
        ),
    )
    doc = (ROOT / "docs" / "evolution.md").read_text()
    lines = [str(f) for f in report.findings]
    assert {f.rule for f in report.findings} >= {"FIELD_CACHED", "MESSAGE_VERSION_CHANGED"}
    for line in lines:
        assert line in doc, line
