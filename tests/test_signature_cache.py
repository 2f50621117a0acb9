"""What a message's tensor signature (each tensor field's dtype and shape) keeps once seen
(``checks.TensorGroup``): ``validate`` binds the dimensions of a signature that passed
without checking it again, and ``prepare`` reuses its manifest words and segment plan. Every
check that depends on more than the signature still runs for every envelope."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from tpwire.codegen import compile as compile_spec
from tpwire.generated import tp_control as tc

SPECS = Path(__file__).parent / "specs"


def _infer(**changes: Any) -> tuple[Any, Any]:
    msg = tc.InferV1GeneratorOnly(
        tp_envelope_version=1, height=32, width=32, current_start_frame=0, init_cache=False,
        manage_cache=True, tp_reset_kv_cache=False, tp_reset_crossattn_cache=False,
        conditioning_embeds_updated=False, kv_cache_attention_bias=0.3,
        tp_do_kv_recompute=False, tp_num_denoise_steps=2,
        denoising_step_list=torch.tensor([1000, 500]),
        latents=torch.zeros(1, 3, 16, 4, 4, dtype=torch.bfloat16),
        conditioning_embeds=torch.zeros(1, 8, 64, dtype=torch.bfloat16),
        context_frames_override=None, base_seed=7,
    )  # fmt: skip
    header = tc.Header(call_id=1, chunk_index=0, control_epoch=0, cache_epoch=0,
                       action=tc.TPAction.INFER)  # fmt: skip
    return dataclasses.replace(msg, **changes), header


def _codes(violations: list[Any]) -> set[tuple[str, str]]:
    return {(v.code, v.field) for v in violations}


def test_a_kept_signature_still_binds_the_dimensions_the_rules_read() -> None:
    msg, header = _infer()
    assert tc.validate(msg, header) == []  # the signature is kept from here on
    # the same tensors, a height the latents' geometry (LH = 4) contradicts
    bad = dataclasses.replace(msg, height=40)
    assert _codes(tc.validate(bad, header)) == {("invariant", "height, width")}
    assert tc.validate(msg, header) == []


def test_a_tensor_that_is_not_dense_is_refused_whatever_its_signature() -> None:
    msg, header = _infer()
    assert tc.validate(msg, header) == []
    shape = (1, 3, 16, 4, 4)
    for odd in (
        torch.empty(shape, dtype=torch.bfloat16, device="meta"),
        torch._neg_view(torch.zeros(shape, dtype=torch.bfloat16)),
        torch.zeros(shape, dtype=torch.bfloat16).to_sparse(),
    ):
        found = _codes(tc.validate(dataclasses.replace(msg, latents=odd), header))
        assert ("type", "latents") in found, odd
    assert tc.validate(msg, header) == []


def test_bool_bytes_are_checked_every_time() -> None:
    proto = compile_spec(SPECS / "codec.yaml")
    header = proto.Header(seq=1, op=proto.Op.ENCODE, epoch=0, urgent=False)

    def msg(mask: torch.Tensor) -> Any:
        return proto.EncodeRaw(
            wire_version=4, quality=1.0, gain=None, samples=torch.zeros(1, 2, 3),
            mask=mask, thumbnail=None, checksum=None,
        )  # fmt: skip

    good = torch.tensor([[True, False]])
    assert proto.validate(msg(good), header) == []
    assert proto.validate(msg(good), header) == []
    forged = torch.tensor([[1, 7]], dtype=torch.uint8).view(torch.bool)
    assert ("range", "mask") in _codes(proto.validate(msg(forged), header))  # bool bytes


def test_a_kept_plan_gives_the_frames_a_fresh_one_gives() -> None:
    msg, header = _infer()
    first = tc.encode(msg, header)  # plans the layout and keeps it
    again = tc.encode(msg, header)
    assert torch.equal(first.frame0, again.frame0)
    assert [s.tolist() for s in first.segments] == [s.tolist() for s in again.segments]
    # another signature (context frames) takes its own plan; the first is still right
    ctx = dataclasses.replace(
        msg, tp_do_kv_recompute=True, tp_expected_generator_calls=3,
        context_frames_override=torch.ones(1, 2, 16, 4, 4, dtype=torch.bfloat16),
    )  # fmt: skip
    _, got = tc.decode(tc.encode(ctx, header))
    assert got == ctx
    _, got = tc.decode(tc.encode(msg, header))
    assert got == msg


def test_a_kept_plan_is_never_taken_from_tensors_changed_since_validation() -> None:
    """A tensor reshaped in place between ``validate`` and the encoder (same byte count) is
    laid out as it is now, and its plan is not kept under the signature ``validate`` saw:
    the next envelope with that signature still gets its own shapes."""
    msg, header = _infer()
    report = tc._CODEC.check(msg, header, False)
    assert report.out == [] and report.signature is not None
    msg.conditioning_embeds.resize_(1, 16, 32)  # 512 elements, as (1, 8, 64) had
    words = [0] * tc.FRAME0_LEN
    _, slots, _ = tc._encode_Infer(msg, words, None, report.signature)
    cond = next(s for s in slots if s.field == "conditioning_embeds")
    assert cond.shape == (1, 16, 32)
    fresh, _ = _infer()
    _, got = tc.decode(tc.encode(fresh, header))
    assert got.conditioning_embeds.shape == (1, 8, 64)
    # and with the plan kept first, the same change is caught on the kept path
    tc.encode(fresh, header)
    report = tc._CODEC.check(fresh, header, False)
    fresh.conditioning_embeds.resize_(1, 16, 32)
    _, slots, _ = tc._encode_Infer(fresh, [0] * tc.FRAME0_LEN, None, report.signature)
    assert next(s for s in slots if s.field == "conditioning_embeds").shape == (1, 16, 32)


@pytest.mark.parametrize("grow", [True, False])
def test_a_tensor_resized_after_validation_is_planned_again(grow: bool) -> None:
    """The plan kept for a signature is used only while the tensors still have its sizes:
    ``TensorGroup.put`` is handed the signature ``validate`` saw, and a tensor changed in
    place since (another thread, a hook) is laid out from what it is now, never copied
    with the byte count of what it was."""
    msg, header = _infer()
    tc.encode(msg, header)
    report = tc._CODEC.check(msg, header, False)
    assert report.out == [] and report.signature is not None
    msg.denoising_step_list.resize_(3 if grow else 1)
    words = [0] * tc.FRAME0_LEN
    tensors, slots, _ = tc._encode_Infer(msg, words, None, report.signature)
    steps = next(s for s in slots if s.field == "denoising_step_list")
    assert steps.shape == ((3,) if grow else (1,))
    assert steps.nbytes == msg.denoising_step_list.nbytes
    assert any(t is msg.denoising_step_list for t in tensors)
