"""Hypothesis properties over a ``Target``: the bounded profile of the fuzzing campaigns.

``tests/test_fuzz_decoder.py`` runs them on every shipped and golden protocol under the
active profile (``ci`` by default); ``tests/test_seeded_bugs.py`` runs the very same
functions on deliberately broken bindings and checks that they fail. Each factory returns
a zero-argument hypothesis test; call it to run (``config``: a ``settings`` to run it under
instead of the active profile).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from . import mutators
from .campaign import raw_encode
from .cases import build, from_frames
from .oracle import Outcome, run_decoder
from .targets import Target

#: What a peer controls: frame 0 words and shape, frame 1 segments. (The ``objects``
#: family, Python objects that are not frames at all, is exercised by the campaigns.)
PEER_FAMILIES = ("words", "frame0", "frame1")
#: Operators aimed at the manifest: dimensions, element bound, dtype codes, frame 1 length.
MANIFEST_OPS = ("w_dim", "w_dims_max", "w_dtype", "w_frame1", "w_field_present")


def ops_of(families: Sequence[str]) -> list[str]:
    return [name for fam in families for name in mutators.OPS[fam]]


def explain(out: Outcome, plan: Sequence[str]) -> str:
    return (
        f"{out.finding}: {out.detail}\n  operators: {list(plan)}"
        + (f"\n  at {out.where}" if out.where else "")
        + (f"\n{out.tb}" if out.tb else "")
    )


def mutated_frames_property(
    t: Target,
    ops: Sequence[str] | None = None,
    max_ops: int = 4,
    config: settings | None = None,
) -> Callable[[], None]:
    """A valid envelope validates clean and round-trips canonically; its frames, mutated
    and re-sealed, decode only to typed outcomes, never announce more than the spec
    bounds, and finish in bounded time."""
    names = sorted(ops if ops is not None else ops_of(PEER_FAMILIES))

    @given(
        envelope=t.strategies.valid_envelopes(),
        plan=st.lists(st.sampled_from(names), min_size=1, max_size=max_ops),
        r=st.randoms(use_true_random=False),
    )
    def prop(envelope: tuple[Any, Any], plan: list[str], r: mutators.Rand) -> None:
        header, msg = envelope
        violations = t.module.validate(msg, header)
        assert violations == [], "a valid envelope fails validate:\n" + "\n".join(
            map(str, violations)
        )
        frames = t.module.encode(msg, header)
        clean = run_decoder(t, frames)
        assert clean.label == "ok", explain(clean, [])
        case = from_frames(t.name, frames, t.module.read_frame0(frames.frame0))
        mutators.apply(case, t, r, plan)
        out = run_decoder(t, build(case))
        assert out.finding is None, explain(out, plan)

    return config(prop) if config is not None else prop


def mutant_property(t: Target, config: settings | None = None) -> Callable[[], None]:
    """Every labelled mutant is refused by ``validate`` with its code, and, sent by a peer
    that skipped validation, refused again by the receiver - unless the wire cannot tell
    it from a valid envelope: a ``type`` mutant ``1`` of a bool field travels as ``True``,
    a ``shape`` mutant with an extra trailing dimension of 1 as the tensor it extends."""

    @given(t.strategies.invalid_envelopes())
    def prop(mutant: tuple[Any, Any, frozenset[str]]) -> None:
        header, msg, expected = mutant
        violations = t.module.validate(msg, header)
        codes = {v.code for v in violations}
        assert expected <= codes, f"expected {set(expected)}, validate said {violations}"
        frames = raw_encode(t, msg, header)
        if frames is None:
            return
        out = run_decoder(t, frames)
        assert out.finding is None, explain(out, [])
        if not expected <= {"type", "shape"}:
            assert out.label != "ok", f"the receiver accepted a mutant breaking {set(expected)}"

    # a third of the profile's examples: the sender side also runs in test_roundtrip.py
    return (config or settings(max_examples=max(10, settings().max_examples // 3)))(prop)
