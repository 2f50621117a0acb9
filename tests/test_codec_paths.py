"""The per-envelope shortcuts of the codec give exactly what the long way gives: frame 0
sealed with ``struct`` as with an array, shape checks kept per pattern and shape, tensors
set on a buffer's storage as typed views of it."""

from __future__ import annotations

import random

import pytest
import torch

from tpwire.generated import tp_control as tc
from tpwire.runtime import wire
from tpwire.runtime.errors import WireError


def test_sealed_bytes_are_the_array_seal() -> None:
    rng = random.Random(5)
    for _ in range(50):
        words = [rng.randint(wire.INT64_MIN, wire.INT64_MAX) for _ in range(tc.FRAME0_LEN)]
        raw, checksum = wire.seal_bytes(words)
        sealed = wire.seal_words(words)
        assert raw == sealed.tobytes() and checksum == sealed[-1]
        assert wire.seal(words).tolist() == sealed.tolist()


PATTERN: tuple[wire.DimPattern, ...] = (1, ("F", 1, 64), ("F", 1, 64), ("W", 2, 8))


@pytest.mark.parametrize(
    ("shape", "dims", "problem"),
    [
        ((1, 3, 3, 4), {}, None),
        ((1, 3, 3, 4), {"F": 3, "W": 4}, None),
        ((1, 3, 3, 4), {"F": 2}, "[1, 3, 3, 4]: dim 1 (F) = 3, but F = 2 elsewhere"),
        ((1, 3, 4, 4), {}, "[1, 3, 4, 4]: dim 2 (F) = 4, but F = 3 elsewhere"),
        # a binding conflict before a range problem is the one reported, as it comes first
        ((1, 3, 3, 9), {"F": 2}, "[1, 3, 3, 9]: dim 1 (F) = 3, but F = 2 elsewhere"),
        ((1, 3, 3, 9), {}, "[1, 3, 3, 9]: dim 3 (W) = 9 outside 2..8"),
        ((2, 3, 3, 4), {"F": 2}, "[2, 3, 3, 4]: dim 0 is 2, not 1"),
        ((1, 3, 3), {}, "rank 3 [1, 3, 3]"),
        ((1, 8, 8, 8), {}, "[1, 8, 8, 8]: 512 elements exceed 100"),
        ((1, 8, 8, 8), {"W": 7}, "[1, 8, 8, 8]: dim 3 (W) = 8, but W = 7 elsewhere"),
    ],
)
def test_shape_checks_kept_per_shape_answer_as_checked_afresh(
    shape: tuple[int, ...], dims: dict[str, int], problem: str | None
) -> None:
    t = torch.zeros(shape)
    for _ in range(2):  # the second call answers from what the first kept
        bound = dict(dims)
        assert wire.shape_problem(t, PATTERN, bound, 100) == problem
        if problem is None:
            assert bound == {**dims, "F": shape[1], "W": shape[3]}
        else:
            assert bound == dims  # nothing bound from a refused shape


def test_views_read_their_place_and_share_the_buffer() -> None:
    msg = tc.InferV1GeneratorOnly(
        tp_envelope_version=1, height=16, width=24, current_start_frame=0, init_cache=True,
        manage_cache=True, tp_reset_kv_cache=True, tp_reset_crossattn_cache=False,
        conditioning_embeds_updated=False, kv_cache_attention_bias=0.5,
        tp_do_kv_recompute=False, tp_num_denoise_steps=2,
        denoising_step_list=torch.tensor([9, 7]),
        latents=torch.randn(1, 1, 4, 2, 3).to(torch.bfloat16),
        conditioning_embeds=torch.randn(1, 2, 8).to(torch.float16),
        context_frames_override=None, base_seed=3,
    )  # fmt: skip
    header = tc.Header(
        call_id=1, chunk_index=0, control_epoch=0, cache_epoch=0, action=tc.TPAction.INFER
    )
    frames = tc.encode(msg, header)
    manifest = tc.read_frame0(frames.frame0)
    # the segment at an offset of a larger buffer, as a channel's head holds it
    head = torch.zeros(64 + frames.segments[0].numel(), dtype=torch.uint8)
    head[64:].copy_(frames.segments[0])
    views = manifest.views([head], [64])
    for name in ("denoising_step_list", "latents", "conditioning_embeds"):
        assert torch.equal(views[name], getattr(msg, name)), name
        assert views[name].untyped_storage().data_ptr() == head.untyped_storage().data_ptr()
    at = 64 + next(s.offset for s in manifest.slots if s.field == "denoising_step_list")
    head[at : at + 8].fill_(0)  # a view reads the buffer: its bytes, not a copy
    assert views["denoising_step_list"].tolist() == [0, 7]
    # a place no tensor of its dtype can start at is refused, never read askew
    with pytest.raises(WireError, match="misaligned"):
        manifest.views([head], [65])
