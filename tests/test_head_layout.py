"""A channel lays an envelope straight into its head buffer (``Prepared.write_into``) and
reads frame 0 back from raw bytes (``read_frame0_bytes``). Both must give exactly the bytes
and the verdicts of the ``encode`` / ``read_frame0`` pair that the golden files and the
conformance corpus pin down."""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

import pytest
import torch
from envelopes import HEADER, v1_message
from hypothesis import given
from hypothesis import strategies as st

from tpwire.generated import pp_contract, pp_contract_strategies, tp_control, tp_control_strategies
from tpwire.runtime import wire
from tpwire.runtime.channel import Framing
from tpwire.runtime.errors import ProtocolMismatch, WireError

PROTOCOLS = [
    pytest.param(tp_control, tp_control_strategies, id="tp_control"),
    pytest.param(pp_contract, pp_contract_strategies, id="pp_contract"),
]
STALE = 0xAB  # what a reused head holds where this envelope writes nothing


def agreed(proto: ModuleType, sizes: tuple[int, ...], limit: int = 1 << 62) -> Framing:
    framing = Framing(proto.FRAME0_LEN, steady=True, carry_limit=limit)
    framing.after(True, sizes)
    framing.after(True, sizes)  # two in a row: the layout is agreed
    return framing


def raw(t: torch.Tensor) -> bytes:
    return bytes(t.contiguous().view(torch.uint8).reshape(-1).tolist())


@pytest.mark.parametrize(("proto", "strategies"), PROTOCOLS)
def test_written_head_holds_the_bytes_of_encode(proto: ModuleType, strategies: ModuleType) -> None:
    @given(strategies.valid_envelopes(), st.data())
    def check(envelope: tuple[Any, Any], data: st.DataObject) -> None:
        header, msg = envelope
        prepared = proto.prepare(msg, header)
        frames = proto.encode(msg, header)
        assert raw(prepared.frames().frame0) == raw(frames.frame0)
        sizes = prepared.sizes
        framing = agreed(proto, sizes)
        carried = tuple(
            data.draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
        )
        buf = torch.full((framing.head_nbytes,), STALE, dtype=torch.uint8)
        prepared.write_into(buf, framing.offsets, carried)
        f0 = framing.frame0_nbytes
        assert raw(buf[:f0]) == raw(frames.frame0)
        for i, (seg, here) in enumerate(zip(frames.segments, carried, strict=True)):
            off = framing.offsets[i]
            got = raw(buf[off : off + seg.numel()])
            # a carried segment is byte for byte what encode sends (zero padding included);
            # a segment that travels on its own leaves its slot untouched
            assert got == (raw(seg) if here else bytes([STALE]) * seg.numel()), i
            assert raw(prepared.segment(i)) == raw(seg)

    check()


def test_a_slot_larger_than_its_segment_keeps_its_stale_tail() -> None:
    prepared = tp_control.prepare(v1_message(), HEADER)
    framing = agreed(tp_control, tuple(n + 64 for n in prepared.sizes))
    buf = torch.full((framing.head_nbytes,), STALE, dtype=torch.uint8)
    carried = framing.carried(prepared.sizes)
    assert all(carried)
    prepared.write_into(buf, framing.offsets, carried)
    frames = prepared.frames()
    for i, seg in enumerate(frames.segments):
        off = framing.offsets[i]
        assert raw(buf[off : off + seg.numel()]) == raw(seg)
        assert raw(buf[off + seg.numel() : off + seg.numel() + 64]) == bytes([STALE]) * 64


def test_write_into_reads_noncontiguous_and_offset_tensors_through_materialize() -> None:
    msg = v1_message()
    wide = torch.zeros(2, *msg.latents.shape, dtype=msg.latents.dtype)
    wide[1] = msg.latents
    steps = torch.stack([msg.denoising_step_list, msg.denoising_step_list], 1)[:, 0]
    assert not steps.is_contiguous()
    # a view with a storage offset, and a strided one
    odd = dataclasses.replace(msg, latents=wide[1], denoising_step_list=steps)
    prepared = tp_control.prepare(odd, HEADER)
    framing = agreed(tp_control, prepared.sizes)
    buf = torch.full((framing.head_nbytes,), STALE, dtype=torch.uint8)
    prepared.write_into(buf, framing.offsets, (True,) * len(prepared.sizes))
    expected = tp_control.encode(msg, HEADER)
    for i, seg in enumerate(expected.segments):
        off = framing.offsets[i]
        assert raw(buf[off : off + seg.numel()]) == raw(seg)


@pytest.mark.parametrize(("proto", "strategies"), PROTOCOLS)
def test_read_frame0_bytes_agrees_with_read_frame0(
    proto: ModuleType, strategies: ModuleType
) -> None:
    @given(strategies.valid_envelopes())
    def check(envelope: tuple[Any, Any]) -> None:
        header, msg = envelope
        frames = proto.encode(msg, header)
        a = proto.read_frame0(frames.frame0)
        b = proto.read_frame0_bytes(raw(frames.frame0))
        assert (a.header, a.message, a.slots, a.segment_nbytes) == (
            b.header,
            b.message,
            b.slots,
            b.segment_nbytes,
        )
        assert dict(a.scalars) == dict(b.scalars)

    check()


def test_read_frame0_bytes_refuses_what_read_frame0_refuses() -> None:
    good = raw(tp_control.encode(v1_message(), HEADER).frame0)
    with pytest.raises(WireError, match="frame 0 has 8 bytes") as short:
        tp_control.read_frame0_bytes(good[:8])
    assert short.value.code == "frame0"
    flipped = bytearray(good)
    flipped[100] ^= 1
    with pytest.raises(WireError) as bad:
        tp_control.read_frame0_bytes(bytes(flipped))
    assert bad.value.code == "checksum"
    words = tp_control.encode(v1_message(), HEADER).frame0.tolist()
    words[wire.W_FINGERPRINT] ^= 1
    with pytest.raises(ProtocolMismatch) as other:
        tp_control.read_frame0_bytes(wire.seal_words(words).tobytes())
    assert other.value.code == "fingerprint"


def test_a_receive_buffer_is_reused_only_when_nothing_views_it() -> None:
    framing = agreed(tp_control, (16,))
    cpu = torch.device("cpu")
    first = framing.head_to_receive(cpu)
    assert framing.head_to_receive(cpu).data_ptr() != first.data_ptr()  # not given back
    framing.keep_spare(first, cpu)
    assert framing.head_to_receive(cpu) is first
    framing.keep_spare(first, cpu)
    framing.after(True, (32,))
    framing.after(True, (32,))  # a new layout: a spare of the old size is dropped
    again = framing.head_to_receive(cpu)
    assert again is not first and again.numel() == framing.head_nbytes


@pytest.mark.parametrize("limit", [1 << 62, 0], ids=["all-in-head", "own-buffers"])
def test_views_made_ahead_see_the_bytes_that_arrive_later(limit: int) -> None:
    first, second = v1_message(), v1_message()
    assert first != second  # other tensor bytes, the same layout
    sizes = tp_control.prepare(first, HEADER).sizes
    framing = agreed(tp_control, sizes, limit)
    carried = framing.carried(sizes)
    assert all(carried) == (limit > 0)
    cpu = torch.device("cpu")
    sent = framing.head_to_send(tp_control.prepare(first, HEADER), carried, cpu)
    framing.ahead = tp_control.read_frame0_bytes(raw(sent[: framing.frame0_nbytes]))
    head = framing.head_to_receive(cpu)
    ahead = framing.views_ahead(head, cpu)  # before the bytes of the second envelope are there
    assert ahead is not None
    prepared = tp_control.prepare(second, HEADER)
    prepared.write_into(head, framing.offsets, carried)
    for i, here in enumerate(carried):
        if here:
            assert ahead.buffers[i] is head
        else:  # a segment that follows on its own lands in the buffer made for it
            assert ahead.buffers[i] is not head and ahead.offsets[i] == 0
            ahead.buffers[i].copy_(prepared.segment(i))
    manifest = tp_control.read_frame0_bytes(raw(head[: framing.frame0_nbytes]))
    assert manifest.slots is ahead.slots  # the same checked layout
    _, msg = manifest.assemble(ahead.buffers, ahead.offsets, ahead.views)
    assert msg == second


def test_which_segments_ride_in_the_head_follows_the_agreed_layout() -> None:
    framing = agreed(tp_control, (16,))
    assert framing.carried((16,)) == (True,)
    assert framing.carried((32,)) == (False,)  # over its slot
    assert framing.carried((32,)) == (False,)  # asked again: the same answer
    framing.after(True, (32,))
    framing.after(True, (32,))  # a new agreed layout: the answer for (32,) changes
    assert framing.carried((32,)) == (True,)
    assert framing.carried((8, 8)) == (True, False)  # a segment with no slot follows
