"""Nothing is handed over unless every byte was verified; nothing the preflight accepts fails
after commit. Raw peers on real gloo groups (short, long, corrupted frames), hostile parity
records, and the unit-level checks behind them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from mp import run_ranks

from tpwire.generated import tp_control as tc
from tpwire.runtime import wire
from tpwire.runtime.channel import EXIT_POISONED, Framing
from tpwire.runtime.errors import EnvelopeInvalid, Violation, WireError
from tpwire.runtime.plain import from_plain

# --- a raw peer on rank 0, two workers -------------------------------------------------------

RAW_PEER = {
    # kind: what the poison line must name
    "short-packed": "[digest]",
    "short-large": "[digest]",
    "flipped": "[digest]",
    "padding": "[padding]",
    "long-packed": "the transport aborted during frame 1",
    "long-large": "the transport aborted during frame 1",
    "head-long": "the transport aborted during a header",
    "head-short": "head refused: wire error [length]",
}


@pytest.mark.parametrize("kind", list(RAW_PEER))
def test_workers_refuse_what_a_raw_peer_sends(tmp_path: Path, kind: str) -> None:
    results = run_ranks("raw_peer", tmp_path, world=3, timeout=60, kind=kind)
    for worker in results[1:]:
        assert worker.exitcode == EXIT_POISONED, worker.log
        assert worker.result is None, worker.log  # recv() never returned
        assert "HANDED OVER" not in worker.log
        (line,) = [x for x in worker.log.splitlines() if "POISONED" in x]
        assert f"tpwire[rank {worker.rank}]: POISONED call_id=" in line, line
        assert RAW_PEER[kind] in line, line
        assert line.endswith(f"exiting {EXIT_POISONED}"), line
        assert "Traceback" not in worker.log


def test_a_shutdown_sent_with_send_closes_the_sender(tmp_path: Path) -> None:
    r0, r1 = run_ranks("shutdown_through_send", tmp_path, timeout=60)
    assert r1.result == {"actions": ["INFER", "SHUTDOWN"]}
    assert r0.result["closed"] is True
    assert "closed" in r0.result["refused"]


HOSTILE_RECORDS = {
    "128MiB": "rank 2: a parity record of 134217728 bytes",
    "2**40": "rank 2: a parity record of 1099511627776 bytes",
    "-1": "rank 2: a parity record of -1 bytes",
    "deep-json": "rank 2: a parity record of 400000 bytes",
    "deep-json-in-bound": "rank 2: the parity record is not a JSON object: RecursionError",
    "not-utf8": "rank 2: the parity record is not a JSON object: UnicodeDecodeError",
    "list": "rank 2: the parity record is not a JSON object: ValueError: a JSON list",
}


@pytest.mark.parametrize("kind", list(HOSTILE_RECORDS))
def test_hostile_parity_records_are_a_mismatch_naming_the_rank(tmp_path: Path, kind: str) -> None:
    results = run_ranks("hostile_record", tmp_path, world=3, timeout=60, kind=kind)
    for honest in results[:2]:
        assert honest.exitcode == 0, honest.log
        (line,) = honest.result["mismatch"]
        assert line.startswith(HOSTILE_RECORDS[kind]), line
        # nothing was sized from the claimed length: the peak grew by less than 32 MiB
        assert honest.result["grew_mib"] < 32, honest.result


# --- the frame 1 digest ----------------------------------------------------------------------


def _envelope(**changes: Any) -> tuple[tc.Header, Any]:
    from mp_scenarios import _big_envelope, header

    return header(3), dataclasses.replace(_big_envelope(), **changes)


def test_frame0_carries_the_digest_of_frame1() -> None:
    hdr, msg = _envelope()
    frames = tc.encode(msg, hdr)
    sizes = [s.numel() for s in frames.segments]
    assert len(sizes) == 2 and sizes[1] == 131072
    digest = int(frames.frame0[tc.W_FRAME1_DIGEST])
    assert digest != 0
    assert digest == wire.buffers_digest(frames.segments, None, sizes)
    assert digest == wire.bytes_digest([bytes(s.numpy()) for s in frames.segments])
    noop = tc.encode(None, _noop())
    assert int(noop.frame0[tc.W_FRAME1_DIGEST]) == 0


def _noop() -> tc.Header:
    return tc.Header(
        call_id=4, chunk_index=0, control_epoch=0, cache_epoch=0, action=tc.TPAction.NOOP
    )


def _reseal(frames: wire.Frames, segments: tuple[torch.Tensor, ...]) -> wire.Frames:
    """Frames whose frame 0 attests ``segments`` (a sender that hashed what it sent)."""
    words = frames.frame0.tolist()
    words[tc.W_FRAME1_DIGEST] = wire.buffers_digest(segments, None, [len(s) for s in segments])
    return wire.Frames(wire.seal(words), segments)


@pytest.mark.parametrize("segment", [0, 1])
@pytest.mark.parametrize("at", [0, -1])
def test_one_flipped_frame1_byte_is_a_digest_error(segment: int, at: int) -> None:
    hdr, msg = _envelope()
    frames = tc.encode(msg, hdr)
    segments = list(frames.segments)
    seg = segments[segment].clone()
    seg[at] ^= 1
    segments[segment] = seg
    with pytest.raises(WireError) as err:
        tc.decode(wire.Frames(frames.frame0, tuple(segments)))
    assert err.value.code == "digest"


def test_set_padding_is_refused_even_under_a_matching_digest() -> None:
    hdr, msg = _envelope()
    frames = tc.encode(msg, hdr)
    manifest = tc.read_frame0(frames.frame0)
    slot = next(s for s in manifest.slots if s.segment == 0 and s.nbytes % wire.ALIGN)
    packed = frames.segments[0].clone()
    packed[slot.offset + slot.nbytes] = 0x5A
    with pytest.raises(WireError) as err:
        tc.decode(_reseal(frames, (packed, frames.segments[1])))
    assert err.value.code == "padding"
    assert slot.field in str(err.value)


def test_an_empty_frame1_must_announce_digest_zero() -> None:
    noop = tc.encode(None, _noop())
    words = noop.frame0.tolist()
    words[tc.W_FRAME1_DIGEST] = 12345
    with pytest.raises(WireError) as err:
        tc.decode(wire.Frames(wire.seal(words), ()))
    assert err.value.code == "presence"  # a payload-free frame: every unused word is zero
    # a payload whose tensors are all empty: frame 1 has 0 bytes, so its digest is 0
    from tpwire.codegen import compile as compile_spec

    proto = compile_spec(Path(__file__).parent / "specs" / "codec.yaml")
    header, msg = _codec_envelope(proto, None)
    msg = dataclasses.replace(msg, samples=torch.zeros(1, 0, 3), num_samples=0, has_mask=False)
    frames = proto.encode(msg, header)
    assert sum(s.numel() for s in frames.segments) == 0
    assert int(frames.frame0[proto.W_FRAME1_DIGEST]) == 0
    words = frames.frame0.tolist()
    words[proto.W_FRAME1_DIGEST] = 12345
    with pytest.raises(WireError) as err:
        proto.decode(wire.Frames(wire.seal(words), frames.segments))
    assert err.value.code == "frame1" and "an empty frame 1 has digest 0" in str(err.value)


# --- the head's trailer ----------------------------------------------------------------------


@pytest.mark.parametrize("steady", [False, True])
def test_a_head_that_arrives_short_is_told_by_its_trailer(steady: bool) -> None:
    hdr, msg = _envelope()
    framing_tx = Framing(tc.FRAME0_LEN, steady=steady, carry_limit=1 << 20)
    framing_rx = Framing(tc.FRAME0_LEN, steady=steady, carry_limit=1 << 20)
    for f in (framing_tx, framing_rx):  # two payload envelopes agree a layout
        prepared = tc.prepare(msg, hdr)
        f.after(True, prepared.sizes)
        f.after(True, prepared.sizes)
    prepared = tc.prepare(msg, hdr)
    carried = framing_tx.carried(prepared.sizes)
    sent = framing_tx.head_to_send(prepared, carried, torch.device("cpu"))
    n0 = framing_rx.frame0_nbytes
    for received in sorted({len(sent), len(sent) - 8, n0}, reverse=True):
        head = framing_rx.head_to_receive(torch.device("cpu"))
        assert head.numel() == len(sent)
        head[:received] = sent[:received]  # gloo: a shorter message leaves the rest alone
        raw = bytes(head[:n0].numpy())
        tc.read_frame0_bytes(raw)  # frame 0 itself arrived whole every time
        if received == len(sent):
            framing_rx.check_trailer(head, raw)
        else:
            with pytest.raises(WireError) as err:
                framing_rx.check_trailer(head, raw)
            assert err.value.code == "length"
        framing_rx.keep_spare(
            head, torch.device("cpu")
        )  # a reused buffer gets its trailer zeroed again


# --- what the preflight accepts, the receiver accepts ----------------------------------------


def test_bool_bytes_other_than_0_or_1_are_refused_before_frame0() -> None:
    from tpwire.codegen import compile as compile_spec

    proto = compile_spec(Path(__file__).parent / "specs" / "codec.yaml")
    mask = torch.tensor([[2, 1, 0]], dtype=torch.uint8).view(torch.bool)
    found = _codec_violations(proto, mask)
    assert [(v.code, v.field) for v in found] == [("range", "mask")], found
    assert "holds 2" in found[0].actual
    ok = torch.tensor([[1, 1, 0]], dtype=torch.uint8).view(torch.bool)
    assert _codec_violations(proto, ok) == []


def _codec_envelope(proto: Any, mask: torch.Tensor | None) -> tuple[Any, Any]:
    header = proto.Header(seq=1, op=proto.Op.ENCODE, epoch=0, urgent=False)
    msg = proto.EncodeRaw(
        plan=proto.Plan.raw, wire_version=4, codec=None, codec_name=None, level=None,
        quality=1.0, gain=None, samples=torch.zeros(1, 3, 2), base=None, mask=mask,
        thumbnail=None, has_mask=True, num_samples=3, checksum=None,
    )  # fmt: skip
    return header, msg


def _codec_violations(proto: Any, mask: torch.Tensor) -> list[Violation]:
    header, msg = _codec_envelope(proto, mask)
    return list(proto.validate(msg, header))


def test_bool_bytes_on_the_wire_are_refused_behind_a_matching_digest() -> None:
    from tpwire.codegen import compile as compile_spec

    proto = compile_spec(Path(__file__).parent / "specs" / "codec.yaml")
    ok = torch.tensor([[1, 1, 0]], dtype=torch.uint8).view(torch.bool)
    header, msg = _codec_envelope(proto, ok)
    frames = proto.encode(msg, header)
    slot = next(s for s in proto.read_frame0(frames.frame0).slots if s.field == "mask")
    packed = frames.segments[slot.segment].clone()
    packed[slot.offset] = 2
    words = frames.frame0.tolist()
    words[proto.W_FRAME1_DIGEST] = wire.buffers_digest((packed,), None, [len(packed)])
    with pytest.raises(WireError) as err:
        proto.decode(wire.Frames(wire.seal(words), (packed,)))
    assert "mask: a bool tensor byte is not 0 or 1" in str(err.value)


def test_huge_header_ids_print_and_raise_typed_errors() -> None:
    from envelopes import HEADER, v1_message

    header = dataclasses.replace(HEADER, call_id=10**5000, chunk_index=-(10**4400))
    violations = tc.validate(v1_message(), header)
    assert {v.code for v in violations} == {"range"}
    assert "call_id=<int of 16610 bits>" in str(violations[0])
    with pytest.raises(EnvelopeInvalid) as err:
        tc.encode(v1_message(), header)
    assert "<int of" in str(err.value)


@pytest.mark.parametrize("data", [None, [], "x", 3])
def test_plain_envelopes_that_are_not_mappings_are_violations(data: object) -> None:
    _, msg, found = from_plain(tc, data)
    assert msg is None
    assert (found[0].code, found[0].field) == ("type", "envelope")
