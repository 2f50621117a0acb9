"""Properties of the generated bindings, from their own strategies, for every spec: the
shipped ones and the extra corpus (``specs/corpus.py``).

- valid envelopes pass ``validate``, round-trip bit for bit and encode deterministically;
- every labelled mutant is rejected with exactly the violations it carries, by
  ``validate``, ``validate(fail_fast=True)`` and ``encode``;
- every plain-form mutant (unknown key, key left out) is reported exactly by ``from_plain``.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from specs import corpus

from tpwire.generated import tp_control, tp_control_strategies
from tpwire.runtime.plain import from_plain, to_plain

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _frame_bytes(frames: Any) -> tuple[bytes, ...]:
    return (frames.frame0.numpy().tobytes(), *(s.numpy().tobytes() for s in frames.segments))


def _bits(x: object) -> object:
    """A value as its exact bits: floats by their IEEE pattern (-0.0 != 0.0, NaN payloads),
    tensors by dtype, shape and bytes."""
    if isinstance(x, torch.Tensor):
        return (
            x.dtype,
            tuple(x.shape),
            x.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(),
        )
    if type(x) is float:
        return struct.pack("<d", x)
    return (type(x), x)


def _fields(obj: Any) -> dict[str, object]:
    return {f.name: _bits(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


@pytest.mark.parametrize("name", corpus.params())
def test_valid_envelopes_round_trip_bit_exact_and_encode_deterministically(name: str) -> None:
    spec = corpus.load(name)
    proto = spec.module

    @settings(SETTINGS, max_examples=corpus.examples(name, 150, 60))
    @given(spec.strategies.valid_envelopes())
    def check(envelope: tuple[Any, Any]) -> None:
        header, msg = envelope
        assert proto.validate(msg, header) == []
        frames = proto.encode(msg, header)
        assert _frame_bytes(frames) == _frame_bytes(proto.encode(msg, header))
        header2, msg2 = proto.decode(frames)
        assert _fields(header2) == _fields(header)
        assert type(msg2) is type(msg)
        if msg is not None:
            assert msg2 == msg
            assert _fields(msg2) == _fields(msg)
            for f in dataclasses.fields(msg2):
                value = getattr(msg2, f.name)
                assert not isinstance(value, torch.Tensor) or value.is_contiguous()
        # what was received encodes to the same bytes again
        assert _frame_bytes(proto.encode(msg2, header2)) == _frame_bytes(frames)

    check()


@pytest.mark.parametrize("name", corpus.params())
def test_every_mutant_is_rejected_with_exactly_its_violations(name: str) -> None:
    spec = corpus.load(name)
    proto = spec.module

    @settings(SETTINGS, max_examples=corpus.examples(name, 300, 120))
    @given(spec.strategies.mutants())
    def check(m: Any) -> None:
        violations = proto.validate(m.msg, m.header)
        assert {(v.code, v.field) for v in violations} == m.violations, (m.kind, m.field)
        assert {v.code for v in violations} == m.codes
        # the role ids that are well-typed ints, by the spec's field names, for the log line
        fields = proto.BINDINGS.roles.fields
        ids = tuple(
            (n, x if type(x := getattr(m.header, n, None)) is int else None) for n in fields
        )
        for v in violations:
            assert v.ids == ids
            assert v.field and v.rule and v.expected
        first = proto.validate(m.msg, m.header, fail_fast=True)
        assert first == violations[:1]
        with pytest.raises(proto.EnvelopeInvalid) as err:
            proto.encode(m.msg, m.header)
        assert err.value.violations == tuple(violations)

    check()


@pytest.mark.parametrize("name", corpus.params())
def test_plain_form_round_trips_and_plain_mutants_are_reported_exactly(name: str) -> None:
    spec = corpus.load(name)
    proto = spec.module

    @settings(SETTINGS, max_examples=corpus.examples(name, 100, 50))
    @given(spec.strategies.valid_envelopes(), spec.strategies.plain_mutants())
    def check(envelope: tuple[Any, Any], m: Any) -> None:
        header, msg = envelope
        header2, msg2, violations = from_plain(proto, to_plain(header, msg))
        assert violations == []
        assert header2 == header and type(msg2) is type(msg)
        _, _, violations = from_plain(proto, m.data)
        assert {(v.code, v.field) for v in violations} == m.violations, (m.kind, m.field)

    check()


def test_header_action_must_match_message() -> None:
    @settings(SETTINGS, max_examples=20)
    @given(tp_control_strategies.valid_envelopes(kinds=["InferV1GeneratorOnly"]))
    def check(envelope: tuple[Any, Any]) -> None:
        header, msg = envelope
        noop = dataclasses.replace(header, action=tp_control.TPAction.NOOP)
        assert [v.code for v in tp_control.validate(msg, noop)] == ["invariant"]
        assert [v.field for v in tp_control.validate(None, header)] == ["header.action"]

    check()


def test_strategies_refuse_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown envelope kinds"):
        tp_control_strategies.valid_envelopes(kinds=["InferV2"])
    with pytest.raises(ValueError, match="no mutant"):
        tp_control_strategies.mutants(mutant_kinds=["too_long_utf8"])  # tp_control has no str
