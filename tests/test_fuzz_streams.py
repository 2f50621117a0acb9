"""Properties of the rules across envelopes (fields ``cached_by`` an epoch), from the
stream strategies of ``tpwire.testing.streams`` over the generated envelope strategies: Scope's
optimize mode (tp_control_v2) and a protocol of its own names (tests/specs/paint.yaml).

- a valid stream passes both ends at every step, and the receiver hands over, at every
  step, exactly the value the sender meant (the last one it sent), through the real codec;
- a labelled stream mutant is accepted up to its step, then refused there with exactly
  its codes, by the end(s) its label names, each violation naming the field, its FM id
  and the step's ids.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings

from tpwire.codegen import compile as compile_spec
from tpwire.generated import tp_control_v2 as t2
from tpwire.generated import tp_control_v2_strategies as s2
from tpwire.runtime.epochs import EpochCache
from tpwire.testing.streams import (
    STREAM_MUTANT_KINDS,
    Step,
    StreamMutant,
    intended,
    run_stream,
    stream_mutants,
    valid_streams,
)

PAINT = Path(__file__).parent / "specs" / "paint.yaml"
# drawing a stream filters envelopes by the presence each step wants. No shrinking: a
# stream of Scope envelopes is slow to shrink and hypothesis reports the replay of its
# nested draws as flaky (FlakyStrategyDefinition); a failure prints the stream as drawn.
SETTINGS = settings(
    max_examples=30,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


@functools.cache
def paint() -> Any:
    return compile_spec(PAINT)


def protocols() -> dict[str, tuple[Any, Any]]:
    return {
        "tp_control_v2": (t2, lambda kinds: s2.valid_envelopes(kinds=kinds)),
        "paint": (paint(), lambda kinds: paint().strategies.valid_envelopes(kinds=kinds)),
    }


def through_the_wire(proto: Any, steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """Each envelope as a receiver decodes it (an absent cached field stays absent)."""
    out = []
    for s in steps:
        header, msg = proto.decode(proto.encode(s.msg, s.header))
        out.append(Step(header, msg, s.event))
    return tuple(out)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
        )
    return bool(a == b)


@pytest.mark.parametrize("name", ["tp_control_v2", "paint"])
def test_valid_streams_deliver_the_intended_values(name: str) -> None:
    proto, envelopes = protocols()[name]
    b = proto.BINDINGS

    @SETTINGS
    @given(valid_streams(b, envelopes))
    def prop(steps: tuple[Step, ...]) -> None:
        received = through_the_wire(proto, steps)
        played = run_stream(b, received)
        assert not any(played.sender), played.sender
        assert not any(played.receiver), played.receiver
        for got, want, step in zip(played.delivered, intended(b, steps), steps, strict=True):
            for field, value in want.items():
                assert same(getattr(got, field), value), (step.event, field)
        # the kept fields are exactly the ones the envelope left out
        for kept, step in zip(played.kept, steps, strict=True):
            absent = {
                c.field for c in b.cached[type(step.msg)] if getattr(step.msg, c.field) is None
            }
            assert kept == absent

    prop()


def mutant_property(name: str, kind: str, max_examples: int = 10) -> Any:
    proto, envelopes = protocols()[name]
    b = proto.BINDINGS

    @settings(SETTINGS, max_examples=max_examples)
    @given(stream_mutants(b, envelopes, kinds=[kind]))
    def prop(m: StreamMutant) -> None:
        # the steps before the mutant through the codec; the mutant itself may break a rule
        # of its own envelope too (an iff invariant), which encode would refuse first
        steps = (*through_the_wire(proto, m.steps[: m.at]), *m.steps[m.at :])
        played = run_stream(b, steps, restart_at=m.at if m.restart else None)
        assert not any(played.sender[: m.at]) and not any(played.receiver[: m.at])
        found = played.receiver[m.at]
        assert {v.code for v in found} == m.codes, found
        sent = played.sender[m.at]
        assert {v.code for v in sent} == (m.codes if m.end == "both" else set()), sent
        header = m.steps[m.at].header
        for v in (*found, *sent):
            assert v.fm == next(
                c.fm for c in b.cached[type(m.steps[m.at].msg)] if v.field in (c.field, c.epoch)
            )
            assert v.ids == b.ids(header)
        # nothing stale was handed over: the refused step delivers nothing
        assert played.delivered[m.at] is None

    return prop


@pytest.mark.parametrize("name", ["tp_control_v2", "paint"])
@pytest.mark.parametrize("kind", sorted(STREAM_MUTANT_KINDS))
def test_stream_mutants_are_refused_with_their_codes(name: str, kind: str) -> None:
    mutant_property(name, kind)()


@pytest.mark.parametrize("kind", sorted(STREAM_MUTANT_KINDS))
def test_the_property_fails_on_a_receiver_that_trusts_its_cache(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seeded bug: a receiver whose cache never refuses (a silent reuse). Every mutant
    kind must catch it, or its property could not fail."""
    real = EpochCache.check

    def trusting(self: EpochCache[Any, Any], msg: Any, header: Any) -> list[Any]:
        return real(self, msg, header) if not self.keep_values else []

    monkeypatch.setattr(EpochCache, "check", trusting)
    with pytest.raises(AssertionError):
        mutant_property("paint", kind, max_examples=5)()
