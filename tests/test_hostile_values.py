"""validate/encode/decode never raise anything but their typed errors, whatever they are fed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from envelopes import HEADER, v1_message

from tpwire.codegen import compile as compile_spec
from tpwire.generated import tp_control
from tpwire.runtime import wire
from tpwire.runtime.errors import WireError

GOLDEN = Path(__file__).parent / "golden"


def codes(msg: Any, header: Any = HEADER) -> set[str]:
    return {v.code for v in tp_control.validate(msg, header)}


@pytest.mark.parametrize("field", ["height", "base_seed", "tp_num_denoise_steps"])
@pytest.mark.parametrize("value", [10**5000, -(10**400), 2**63], ids=["huge", "-huge", "2**63"])
def test_huge_ints_are_range_violations(field: str, value: int) -> None:
    msg = dataclasses.replace(v1_message(), **{field: value})
    assert "range" in codes(msg)
    with pytest.raises(tp_control.EnvelopeInvalid):
        tp_control.encode(msg, HEADER)


def test_huge_header_ids_are_range_violations() -> None:
    header = dataclasses.replace(HEADER, call_id=10**5000)
    assert codes(v1_message(), header) == {"range"}


def _neg_view() -> torch.Tensor:
    z = torch.zeros(1, 3, 16, 40, 72, dtype=torch.complex64)
    return z.conj().imag  # a negative-bit view: not plain storage


@pytest.mark.parametrize(
    "tensor",
    [
        pytest.param(lambda: torch.zeros(4, dtype=torch.int64).to_sparse(), id="sparse"),
        pytest.param(lambda: torch.empty(4, dtype=torch.int64, device="meta"), id="meta"),
        pytest.param(
            lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(2)]), id="nested"
        ),
        pytest.param(lambda: [1, 2, 3, 4], id="list"),
    ],
)
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_tensors_the_wire_cannot_carry_are_type_violations(tensor: Any) -> None:
    msg = v1_message(denoising_step_list=tensor())
    assert "type" in codes(msg)
    with pytest.raises(tp_control.EnvelopeInvalid):
        tp_control.encode(msg, HEADER)


def test_negative_bit_views_are_refused() -> None:
    assert "type" in codes(v1_message(latents=_neg_view()))


def test_a_foreign_header_is_a_violation_not_a_crash() -> None:
    from tpwire.generated import pp_contract

    other = pp_contract.Header(call_id=1, cache_epoch=0, action=pp_contract.PPAction.NOOP)
    for header in (other, {"call_id": 1}, "x"):
        (v,) = tp_control.validate(None, header)  # type: ignore[arg-type]
        assert (v.code, v.field) == ("type", "header")
        assert [x.code for x in tp_control.validate_header(header)] == ["type"]  # type: ignore[arg-type]
    with pytest.raises(tp_control.EnvelopeInvalid):
        tp_control.encode(v1_message(), None)  # type: ignore[arg-type]


def test_payload_free_frames_get_their_header_validated() -> None:
    noop = tp_control.Header(
        call_id=1, control_epoch=0, cache_epoch=0, action=tp_control.TPAction.NOOP
    )
    words = tp_control.encode(None, noop).frame0.tolist()
    words[2] = -5  # call_id: range min 0
    with pytest.raises(tp_control.EnvelopeInvalid) as err:
        tp_control.decode(wire.Frames(wire.seal(words), ()))
    assert [(v.code, v.field) for v in err.value.violations] == [("range", "header.call_id")]


def test_misaligned_or_strided_segments_are_wire_errors() -> None:
    frames = tp_control.encode(v1_message(), HEADER)
    manifest = tp_control.read_frame0(frames.frame0)
    first = frames.segments[0]
    shifted = torch.zeros(first.numel() + 1, dtype=torch.uint8)[1:]
    shifted.copy_(first)
    strided = torch.zeros(first.numel() * 2, dtype=torch.uint8)[::2]
    for bad in (shifted, strided):
        with pytest.raises(WireError) as err:
            manifest.finish((bad, *frames.segments[1:]))
        assert err.value.code == "frame1"


def test_non_canonical_bool_bytes_are_refused() -> None:
    mini = compile_spec(GOLDEN / "odd.yaml")
    header = mini.Header(act=mini.Act.GO, seq=0)
    msg = mini.Go(flags=torch.tensor([True, False, True]), label="ok", count=None, scaled=None)
    frames = mini.encode(msg, header)
    assert mini.decode(frames) == (header, msg)
    seg = frames.segments[0].clone()
    seg[0] = 2
    with pytest.raises(WireError):
        mini.decode(wire.Frames(frames.frame0, (seg,)))


@pytest.mark.parametrize("text", ["\ud800", "x" * 13, "é" * 7])
def test_strings_that_cannot_travel_are_range_violations(text: str) -> None:
    odd = compile_spec(GOLDEN / "odd.yaml")
    header = odd.Header(act=odd.Act.GO, seq=0)
    msg = odd.Go(flags=torch.tensor([True]), label=text, count=None, scaled=None)
    assert [v.code for v in odd.validate(msg, header)] == ["range"]
    with pytest.raises(odd.EnvelopeInvalid):
        odd.encode(msg, header)


def test_arithmetic_on_out_of_range_values_is_not_evaluated() -> None:
    odd = compile_spec(GOLDEN / "odd.yaml")
    header = odd.Header(act=odd.Act.GO, seq=0)
    msg = odd.Go(flags=torch.tensor([True]), label="a", count=10**400, scaled=1.0)
    assert [v.code for v in odd.validate(msg, header)] == ["range"]
