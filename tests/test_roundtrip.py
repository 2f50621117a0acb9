"""Properties of the generated bindings of every shipped spec, from their own strategies."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tpwire.generated import pp_contract, pp_contract_strategies, tp_control, tp_control_strategies

PROTOCOLS = [
    pytest.param(tp_control, tp_control_strategies, id="tp_control"),
    pytest.param(pp_contract, pp_contract_strategies, id="pp_contract"),
]


def _frame_bytes(frames: object) -> tuple[bytes, ...]:
    f0 = frames.frame0  # type: ignore[attr-defined]
    segs = frames.segments  # type: ignore[attr-defined]
    return (bytes(f0.numpy().tobytes()), *(bytes(s.numpy().tobytes()) for s in segs))


@pytest.mark.parametrize(("proto", "strategies"), PROTOCOLS)
def test_round_trip_is_bit_exact(proto: ModuleType, strategies: ModuleType) -> None:
    @given(strategies.valid_envelopes())
    def check(envelope: tuple[object, object]) -> None:
        header, msg = envelope
        assert proto.validate(msg, header) == []
        frames = proto.encode(msg, header)
        header2, msg2 = proto.decode(frames)
        assert header2 == header
        assert msg2 == msg
        assert type(msg2) is type(msg)
        if msg is not None:
            for name in type(msg).__dataclass_fields__:
                a, b = getattr(msg, name), getattr(msg2, name)
                if isinstance(a, torch.Tensor):
                    assert b.dtype == a.dtype and b.shape == a.shape
                    assert b.is_contiguous()

    check()


@pytest.mark.parametrize(("proto", "strategies"), PROTOCOLS)
def test_encoding_is_deterministic(proto: ModuleType, strategies: ModuleType) -> None:
    @given(strategies.valid_envelopes())
    def check(envelope: tuple[object, object]) -> None:
        header, msg = envelope
        assert _frame_bytes(proto.encode(msg, header)) == _frame_bytes(proto.encode(msg, header))

    check()


@pytest.mark.parametrize(("proto", "strategies"), PROTOCOLS)
def test_every_mutant_is_rejected_with_its_code(proto: ModuleType, strategies: ModuleType) -> None:
    seen: set[str] = set()

    @settings(max_examples=400)
    @given(strategies.invalid_envelopes())
    def check(mutant: tuple[object, object, frozenset[str]]) -> None:
        header, msg, expected = mutant
        violations = proto.validate(msg, header)
        codes = {v.code for v in violations}
        assert expected <= codes, (expected, violations)
        for v in violations:
            assert v.call_id == header.call_id  # type: ignore[attr-defined]
            assert v.field and v.rule and v.expected
        first = proto.validate(msg, header, fail_fast=True)
        assert len(first) == 1 and first[0] == violations[0]
        with pytest.raises(proto.EnvelopeInvalid) as err:
            proto.encode(msg, header)
        assert err.value.violations == tuple(violations)
        seen.update(expected)

    check()
    # the strategies reach every rule kind the spec has
    assert {"missing", "type", "range", "dtype", "shape", "invariant", "version"} <= seen


def test_strategies_reach_every_kind_and_branch() -> None:
    kinds: set[str] = set()
    branches: set[tuple[object, ...]] = set()

    @settings(max_examples=300)
    @given(tp_control_strategies.valid_envelopes())
    def check(envelope: tuple[object, object]) -> None:
        header, msg = envelope
        kinds.add(type(msg).__name__ if msg is not None else header.action.name)  # type: ignore[attr-defined]
        if isinstance(msg, tp_control.InferV1GeneratorOnly):
            branches.add(
                (
                    msg.tp_do_kv_recompute,
                    msg.init_cache,
                    msg.latents.dtype,
                )
            )

    check()
    assert kinds == set(tp_control_strategies.ENVELOPE_KINDS)
    assert {b[0] for b in branches} == {True, False}
    assert {b[2] for b in branches} == {torch.bfloat16, torch.float16}


@given(st.data())
def test_header_action_must_match_message(data: st.DataObject) -> None:
    header, msg = data.draw(tp_control_strategies._valid_InferV1GeneratorOnly())
    noop = tp_control.Header(
        call_id=header.call_id,
        chunk_index=header.chunk_index,
        control_epoch=header.control_epoch,
        cache_epoch=header.cache_epoch,
        action=tp_control.TPAction.NOOP,
    )
    assert [v.code for v in tp_control.validate(msg, noop)] == ["invariant"]
    assert [v.field for v in tp_control.validate(None, header)] == ["header.action"]
