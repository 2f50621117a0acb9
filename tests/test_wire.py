"""The decoder refuses bad frames with a typed WireError before allocating (docs/wire-format.md)."""

from __future__ import annotations

from array import array

import pytest
import torch
from envelopes import HEADER, v1_message

from tpwire.generated import pp_contract, tp_control
from tpwire.runtime import wire
from tpwire.runtime.errors import ProtocolMismatch, WireError


def frames_with(words_change: dict[int, int], *, reseal: bool = True) -> wire.Frames:
    frames = tp_control.encode(v1_message(), HEADER)
    words = frames.frame0.tolist()
    for i, v in words_change.items():
        words[i] = v
    f0 = wire.seal(words) if reseal else torch.tensor(words, dtype=torch.int64)
    return wire.Frames(f0, frames.segments)


def test_scope_sized_round_trip_is_zero_copy_for_large_tensors() -> None:
    msg = v1_message()
    frames = tp_control.encode(msg, HEADER)
    assert frames.frame0.numel() == tp_control.FRAME0_LEN
    # latents and context frames travel in place; small tensors share one packed segment
    assert frames.segments[1].data_ptr() == msg.context_frames_override.data_ptr()  # type: ignore[union-attr]
    header, back = tp_control.decode(frames)
    assert header == HEADER and back == msg


def test_noop_is_frame0_only() -> None:
    h = tp_control.Header(
        call_id=1, control_epoch=0, cache_epoch=0, action=tp_control.TPAction.NOOP
    )
    frames = tp_control.encode(None, h)
    assert frames.segments == ()
    assert tp_control.decode(frames) == (h, None)


@pytest.mark.parametrize(
    ("change", "code", "kind"),
    [
        ({0: 0x1234}, "magic", ProtocolMismatch),
        ({0: (wire.MAGIC << 16) | 9}, "wire-version", ProtocolMismatch),
        ({1: 12345}, "fingerprint", ProtocolMismatch),
        ({tp_control.W_MESSAGE_VERSION: 2}, "message-version", ProtocolMismatch),
        ({tp_control.W_MESSAGE_ID: 99}, "message-id", WireError),
        ({6: 77}, "action", WireError),
        ({tp_control.W_HEADER_PRESENCE: 0xFF}, "presence", WireError),
        ({tp_control.W_PRESENCE: 1 << 40}, "presence", WireError),
        ({tp_control.W_FRAME1: 10**12}, "frame1", WireError),
    ],
)
def test_bad_frame0_is_refused(change: dict[int, int], code: str, kind: type[WireError]) -> None:
    with pytest.raises(kind) as err:
        tp_control.decode(frames_with(change))
    assert err.value.code == code


def test_flipped_bit_fails_the_checksum() -> None:
    frames = tp_control.encode(v1_message(), HEADER)
    words = frames.frame0.tolist()
    words[5] ^= 1 << 17
    with pytest.raises(WireError) as err:
        tp_control.decode(wire.Frames(torch.tensor(words), frames.segments))
    assert err.value.code == "checksum"


@pytest.mark.parametrize("bad_dim", [0, -1, 513, 2**62, -(2**63)])
def test_dims_beyond_spec_bounds_are_refused_before_allocation(bad_dim: int) -> None:
    words = tp_control.encode(v1_message(), HEADER).frame0.tolist()
    # the latents manifest entry: dtype code 3 (bfloat16), then [1, F, C, LH, LW]
    at = next(
        i
        for i in range(tp_control.W_MANIFEST, tp_control.W_FRAME1)
        if words[i : i + 6] == [3, 1, 3, 16, 40, 72]
    )
    words[at + 4] = bad_dim  # LH
    with pytest.raises(WireError) as err:
        tp_control.read_frame0(wire.seal(words))
    assert err.value.code == "dim"
    assert "LH" in str(err.value)


def test_frame0_shape_and_type_are_checked() -> None:
    for bad in (torch.zeros(52, dtype=torch.int32), "x", None, torch.zeros(1, dtype=torch.int64)):
        with pytest.raises(WireError) as err:
            tp_control.read_frame0(bad)  # type: ignore[arg-type]
        assert err.value.code == "frame0"
    with pytest.raises(WireError) as err:
        tp_control.read_frame0(torch.zeros(3, dtype=torch.int64))
    assert err.value.code == "magic"  # not tpwire's frame 0 at all


def test_a_peer_compiled_from_another_spec_gets_protocol_mismatch_not_a_length_error() -> None:
    """One field more changes frame 0's length and the fingerprint: the fingerprint speaks."""
    words = tp_control.encode(v1_message(), HEADER).frame0.tolist()
    for other in ([*words, 0], words[:-3]):
        other[1] ^= 0x5A5A  # another spec's fingerprint
        for read in (
            lambda w: tp_control.read_frame0(torch.tensor(w, dtype=torch.int64)),
            lambda w: tp_control.read_frame0_bytes(torch.tensor(w).numpy().tobytes()),
        ):
            with pytest.raises(ProtocolMismatch) as err:
                read(other)
            assert err.value.code == "fingerprint"
    same_spec_longer = torch.tensor([*words, 0], dtype=torch.int64)
    with pytest.raises(WireError) as err2:
        tp_control.read_frame0(same_spec_longer)
    assert err2.value.code == "frame0"


def test_segments_must_match_the_manifest() -> None:
    frames = tp_control.encode(v1_message(), HEADER)
    manifest = tp_control.read_frame0(frames.frame0)
    assert manifest.segment_nbytes == tuple(s.numel() for s in frames.segments)
    with pytest.raises(WireError):
        manifest.finish(frames.segments[:-1])
    short = (*frames.segments[:-1], frames.segments[-1][:-1])
    with pytest.raises(WireError):
        manifest.finish(short)
    with pytest.raises(WireError):
        manifest.finish((*frames.segments[:-1], frames.segments[-1].view(torch.int8)))


def test_receiver_validates_after_decoding() -> None:
    # a peer with the same fingerprint that skipped validation cannot smuggle a bad plan
    good = tp_control.encode(v1_message(), HEADER)
    words = good.frame0.tolist()
    steps_word = next(
        i for i in range(tp_control.W_SCALARS, tp_control.W_MANIFEST) if words[i] == 4
    )
    words[steps_word] = 3
    with pytest.raises(tp_control.EnvelopeInvalid) as err:
        tp_control.decode(wire.Frames(wire.seal(words), good.segments))
    assert "invariant" in err.value.codes


def test_protocols_do_not_accept_each_other() -> None:
    h = pp_contract.Header(call_id=1, cache_epoch=0, action=pp_contract.PPAction.NOOP)
    frames = pp_contract.encode(None, h)
    with pytest.raises(WireError):
        tp_control.decode(frames)


def test_unsupported_dtype_fails_in_encode_before_any_byte() -> None:
    with pytest.raises(tp_control.EnvelopeInvalid) as err:
        tp_control.encode(
            v1_message(latents=torch.zeros(1, 3, 16, 40, 72, dtype=torch.bool)), HEADER
        )
    (v,) = err.value.violations
    assert (v.code, v.field, v.actual) == ("dtype", "latents", "bool")
    assert v.ids == (("call_id", 7), ("chunk_index", 3), ("cache_epoch", 2))


def test_string_and_scalar_helpers() -> None:
    assert wire.words_to_str(wire.str_to_words("héllo", 2), 12, 0) == "héllo"
    with pytest.raises(WireError):
        wire.words_to_str([99, 0, 0], 12, 0)
    with pytest.raises(WireError):
        wire.word_to_bool(2, 0)
    assert wire.word_to_float(wire.float_to_word(-0.0)) == 0.0
    assert array("q", [wire.float_to_word(1.5)])[0] == wire.float_to_word(1.5)


def test_encode_materializes_contiguous_tensors_on_the_device() -> None:
    strided = torch.randn(1, 3, 40, 16, 72).to(torch.bfloat16).transpose(2, 3)
    assert not strided.is_contiguous()
    frames = tp_control.encode(v1_message(latents=strided), HEADER, device="cpu")
    _, back = tp_control.decode(frames)
    assert isinstance(back, tp_control.InferV1GeneratorOnly)
    assert back.latents.is_contiguous()
    assert torch.equal(back.latents, strided)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_materialization_round_trip() -> None:
    msg = v1_message()
    frames = tp_control.encode(msg, HEADER, device="cuda")
    assert all(s.is_cuda for s in frames.segments)
    manifest = tp_control.read_frame0(frames.frame0)
    buffers = manifest.allocate("cuda")
    for dst, src in zip(buffers, frames.segments, strict=True):
        dst.copy_(src)
    header, back = manifest.finish(buffers)
    assert header == HEADER
    assert back.latents.is_cuda and back.latents.dtype == torch.bfloat16
    assert torch.equal(back.latents.cpu(), msg.latents)


def test_words_a_message_does_not_use_must_be_zero() -> None:
    header = pp_contract.Header(
        call_id=3, chunk_index=1, cache_epoch=0, action=pp_contract.PPAction.RESULT
    )
    result = pp_contract.PPResult(
        pp_result_version=1,
        latents_out=torch.zeros(1, 1, 4, 2, 2, dtype=torch.float16),
        observed_generator_calls=5,
        output_digest=None,
    )
    frames = pp_contract.encode(result, header)
    assert pp_contract.decode(frames) == (header, result)
    words = frames.frame0.tolist()
    unused = next(
        i for i in range(pp_contract.W_SCALARS, pp_contract.W_FRAME1) if words[i] == 0 and i > 20
    )
    words[unused] = 1
    with pytest.raises(WireError) as err:
        pp_contract.decode(wire.Frames(wire.seal(words), frames.segments))
    assert err.value.code == "presence" and err.value.word == unused


def test_frames_do_not_change_when_the_callers_small_tensors_do() -> None:
    """One small tensor alone in the packed segment is still copied, like several are."""
    msg = v1_message(context_frames_override=None, tp_do_kv_recompute=False,
                     tp_expected_generator_calls=4,
                     conditioning_embeds=torch.randn(1, 512, 64).to(torch.bfloat16))  # fmt: skip
    frames = tp_control.encode(msg, HEADER)
    before = [bytes(s.numpy().tobytes()) for s in frames.segments]
    msg.denoising_step_list[0] = 999
    assert [bytes(s.numpy().tobytes()) for s in frames.segments] == before
    assert tp_control.decode(frames)[1].denoising_step_list.tolist() == [1000, 750, 500, 250]


def test_the_tripwire_digest_reads_zero_tensors_as_zeros_and_refuses_no_bytes() -> None:
    """``check_same`` digests what the model produced: a zero tensor (autograd's) is its
    zeros, and a tensor with no bytes (meta) is an error ``safely`` reports, not a read of
    address 0."""
    from tpwire.runtime import tripwire

    zero = torch._efficientzerotensor((2, 3))
    assert tripwire.digest_tensors([zero]) == tripwire.digest_tensors([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="cannot digest"):
        tripwire.digest_tensors([torch.empty(2, 3, device="meta")])
    _, failure = tripwire.safely(
        lambda: tripwire.digest_tensors([torch.empty(2, 3, device="meta")])
    )
    assert isinstance(failure, ValueError)
