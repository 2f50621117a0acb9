"""The receive side validates with a shorter first pass: the decoder has already fixed every
type, dtype and shape, so only ranges, presence rules, derived fields and invariants are
checked again. These properties hold it to the full ``validate``: a sender that skips its
preflight (a buggy or hostile peer) must get exactly the verdict ``validate`` would give."""

from __future__ import annotations

from struct import error as struct_error
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given

from tpwire.generated import pp_contract, pp_contract_strategies, tp_control, tp_control_strategies
from tpwire.runtime import wire as _w
from tpwire.runtime.errors import EnvelopeInvalid, WireError
from tpwire.runtime.wire import Frames

PROTOCOLS = [
    pytest.param(tp_control, tp_control_strategies, id="tp_control"),
    pytest.param(pp_contract, pp_contract_strategies, id="pp_contract"),
]
#: Codes of rules the decoder itself enforces: such a mutant cannot cross the wire as-is.
STRUCTURAL = {"type", "dtype", "shape"}


def encode_unchecked(proto: ModuleType, msg: Any, header: Any) -> Frames:
    """What ``encode`` builds, without its preflight (a peer that skipped validation)."""
    words = [0] * proto.FRAME0_LEN
    words[0] = _w.MAGIC_WORD
    words[1] = proto.FINGERPRINT
    proto._write_header(header, words)
    tensors, slots, sizes = proto._ENCODERS[type(msg)](msg, words, None, None)
    words[proto.W_FRAME1] = sum(sizes)
    words[proto.W_FRAME1_DIGEST] = _w.frame1_digest(tensors, slots, sizes)
    return Frames(_w.seal(words), _w.pack_segments(tensors, slots, sizes))


def verdict(violations: list[Any]) -> set[tuple[str, str]]:
    return {(v.code, v.field) for v in violations}


@pytest.mark.parametrize(("proto", "strategies"), PROTOCOLS)
def test_decoded_verdict_equals_validate(proto: ModuleType, strategies: ModuleType) -> None:
    seen: dict[str, int] = {"refused": 0, "structural": 0}

    @given(strategies.invalid_envelopes())
    def check(mutant: tuple[Any, Any, frozenset[str]]) -> None:
        header, msg, codes = mutant
        violations = proto.validate(msg, header)
        expected = verdict(violations)
        assert expected, codes
        # a wrong type/dtype/shape, a field the frame always carries left out, or a message
        # the action does not carry: frame 0 cannot say these, the decoder refuses the frame
        action = f"header.{proto.ACTION_FIELD}"
        if any(
            v.code in STRUCTURAL or v.rule == "required: always" or v.field == action
            for v in violations
        ):
            seen["structural"] += 1
            return
        try:
            frames = encode_unchecked(proto, msg, header)
        except (TypeError, ValueError, KeyError, OverflowError, struct_error):
            seen["structural"] += 1  # a value no frame can carry (e.g. a 65-bit int)
            return
        try:
            proto.decode(frames)
        except EnvelopeInvalid as exc:
            assert verdict(exc.violations) == expected, (codes, exc.violations)
            seen["refused"] += 1
        except WireError as exc:
            raise AssertionError(
                f"{codes}: the decoder refused a well-formed frame: {exc}"
            ) from exc
        else:
            raise AssertionError(f"{codes}: decoded without a violation: {expected}")

    check()
    assert seen["refused"] >= 20, seen


@pytest.mark.parametrize(("proto", "strategies"), PROTOCOLS)
def test_valid_envelopes_decode_clean(proto: ModuleType, strategies: ModuleType) -> None:
    @given(strategies.valid_envelopes())
    def check(envelope: tuple[Any, Any]) -> None:
        header, msg = envelope
        frames = proto.encode(msg, header)
        manifest = proto.read_frame0(frames.frame0)
        decoded_header, decoded = manifest.finish(frames.segments)
        assert proto.validate(decoded, decoded_header) == []
        assert decoded_header == header

    check()
