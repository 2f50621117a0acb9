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


def _encode_after(msg: Any, header: Any, change: Any) -> list[Any]:
    """``prepare`` with ``change(msg)`` run between its validation and its encoder (what
    another thread touching the tensors meanwhile does): the violations it raised."""
    check = tc._CODEC.check

    def racing(m: Any, h: Any, fail_fast: bool) -> Any:
        report = check(m, h, fail_fast)
        change(m)
        return report

    tc._CODEC.check = racing  # type: ignore[method-assign]
    try:
        with pytest.raises(tc.EnvelopeInvalid) as caught:
            tc.prepare(msg, header)
    finally:
        tc._CODEC.check = check  # type: ignore[method-assign]
    return caught.value.violations


@pytest.mark.parametrize("planned", [False, True], ids=["fresh plan", "kept plan"])
def _retyped(t: torch.Tensor, dtype: torch.dtype) -> None:
    t.data = t.data.to(dtype)  # the same tensor object, another dtype


@pytest.mark.parametrize("planned", [False, True], ids=["fresh plan", "kept plan"])
@pytest.mark.parametrize(
    "change, field, code, now",
    [
        (lambda m: m.conditioning_embeds.resize_(1, 16, 32), "conditioning_embeds", "shape",
         "bfloat16[1, 16, 32]"),  # as many bytes as before
        (lambda m: m.conditioning_embeds.unsqueeze_(0), "conditioning_embeds", "shape",
         "bfloat16[1, 1, 8, 64]"),  # another rank
        (lambda m: m.denoising_step_list.resize_(3), "denoising_step_list", "shape", "int64[3]"),
        (lambda m: m.denoising_step_list.resize_(1), "denoising_step_list", "shape", "int64[1]"),
        (lambda m: _retyped(m.latents, torch.float32), "latents", "dtype",
         "float32[1, 3, 16, 4, 4]"),
        (lambda m: _retyped(m.latents, torch.complex64), "latents", "dtype",
         "complex64[1, 3, 16, 4, 4]"),  # a dtype the wire does not carry
    ],
    ids=["reshaped", "rank", "grown", "shrunk", "retyped", "off the wire"],
)  # fmt: skip
def test_a_tensor_changed_in_place_after_validation_is_refused_before_frame0(
    planned: bool, change: Any, field: str, code: str, now: str
) -> None:
    """Frame 0 is written from the tensors as the encoder finds them: one changed in place
    since ``validate`` checked it (another thread, a hook) would be announced with a dtype,
    shape or rank nobody checked (an extra dimension even spilled into the next field's
    manifest words, and a receiver accepted the result). So it is refused, whether the
    signature's plan was kept before or not, and the plan stays right for the next one."""
    msg, header = _infer()
    if planned:
        tc.encode(*_infer())  # the signature's plan is kept from here on
    violations = _encode_after(msg, header, change)
    assert len(violations) == 1
    (v,) = violations
    assert (v.code, v.field, v.actual) == (code, field, now)
    assert v.expected.endswith("as validate checked it") and v.id("call_id") == 1
    fresh, _ = _infer()
    _, got = tc.decode(tc.encode(fresh, header))
    assert got == fresh


def test_a_zero_tensor_is_refused_as_not_dense() -> None:
    """``torch._efficientzerotensor`` is strided but has no storage (``data_ptr()`` is 0):
    reading its bytes would crash the process."""
    msg, header = _infer()
    zero = torch._efficientzerotensor((1, 8, 64), dtype=torch.bfloat16)
    bad = dataclasses.replace(msg, conditioning_embeds=zero)
    for _ in range(2):  # the signature of the valid envelope is kept: refused all the same
        assert ("type", "conditioning_embeds") in _codes(tc.validate(bad, header))
        with pytest.raises(tc.EnvelopeInvalid):
            tc.encode(bad, header)
        assert tc.validate(msg, header) == []
