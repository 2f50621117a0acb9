"""Deterministic sweeps that complement the random campaigns.

Random mutation reaches a given field's rare branch only by luck in a bounded run; these
sweeps take every field of every message class and header of every target and try each
hostile value on it - in ``validate``/``encode`` (the sender) and through frame 0 into
``decode`` (the receiver, whose first validation pass is a different code path) - plus the
corners of the wire API the campaigns never touch (receive buffers, Frames helpers).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fuzz package lives at the repository root
    sys.path.insert(0, str(ROOT))

from fuzz import campaign, mutators, oracle, targets  # noqa: E402
from fuzz.cases import from_frames  # noqa: E402
from tpwire.codegen.ir import FieldIR  # noqa: E402
from tpwire.runtime import wire  # noqa: E402
from tpwire.runtime.errors import EnvelopeInvalid  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


def one_per_class(t: targets.Target) -> dict[str, tuple[Any, Any]]:
    """A valid envelope of every message class and payload-free action of ``t``."""
    return _one_per_class(t.name)


@functools.cache
def _one_per_class(name: str) -> dict[str, tuple[Any, Any]]:
    t = targets.load(name)
    want = set(t.strategies.ENVELOPE_KINDS)
    found: dict[str, tuple[Any, Any]] = {}
    for seed in range(20):
        for header, msg in campaign.draw(t.strategies.valid_envelopes(), 30, seed):
            action = getattr(header, t.ir.header.action)
            found.setdefault(type(msg).__name__ if msg is not None else action.name, (header, msg))
        if set(found) >= want:
            return found
    raise AssertionError(f"{name}: never drew {want - set(found)}")


def field_ir(t: targets.Target, msg: Any, name: str) -> FieldIR:
    return next(f for f in t.by_class[type(msg).__name__].ir.fields if f.name == name)


def _int(lit: str | None) -> int | None:
    return int(lit) if lit is not None else None


def hostile(f: FieldIR) -> list[Any]:
    """Values ``f`` must refuse: wrong types, and just past each of its bounds."""
    wrong: dict[str, list[Any]] = {
        "int": ["1", 1.0, True],
        "float": ["1.0", 1, True],
        "bool": [1, "True"],
        "str": [1, b"x"],
        "enum": [0, "x"],
        "tensor": [[1, 2], torch.zeros(2, dtype=torch.int64).to_sparse()],
    }
    out = list(wrong[f.kind])
    if f.kind == "int":
        lo, hi = _int(f.range_min), _int(f.range_max)
        out += [x for x in (lo - 1 if lo is not None else None, hi + 1 if hi is not None else None)]
        out += [2**63, -(2**63) - 1]
    elif f.kind == "float":
        out += [math.nan, math.inf, -math.inf]
        out += [float(x) + d for x, d in ((f.range_min, -1.0), (f.range_max, 1.0)) if x is not None]
    elif f.kind == "str":
        out += ["x" * ((f.max_len or 0) + 1), "\ud800"]
    elif f.kind == "tensor":
        bad_dtype = next(d for d in ("float64", "int8", "float32") if d not in f.dtypes)
        shape = tuple(d.const if d.const is not None else d.lo for d in f.dims)
        out += [
            torch.zeros(shape, dtype=getattr(torch, bad_dtype)),
            torch.zeros((*shape, 1), dtype=getattr(torch, f.dtypes[0])),
            torch.zeros(shape, dtype=getattr(torch, f.dtypes[0]), device="meta"),
        ]
    return [v for v in out if v is not None]


@pytest.mark.parametrize("name", targets.ALL)
def test_every_message_field_refuses_every_hostile_value(name: str) -> None:
    t = targets.load(name)
    checked = 0
    for header, msg in one_per_class(t).values():
        if msg is None:
            continue
        for f in dataclasses.fields(msg):
            fir = field_ir(t, msg, f.name)
            for bad in [None, *hostile(fir)] if fir.always_required else hostile(fir):
                changed = dataclasses.replace(msg, **{f.name: bad})
                violations = t.module.validate(changed, header)
                assert any(f.name in v.field for v in violations), (f.name, bad, violations)
                first = t.module.validate(changed, header, fail_fast=True)
                assert first == violations[:1]
                with pytest.raises(EnvelopeInvalid):
                    t.module.encode(changed, header)
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("name", targets.ALL)
def test_every_header_field_refuses_every_hostile_value(name: str) -> None:
    t = targets.load(name)
    for header, msg in one_per_class(t).values():
        for f in t.ir.header.fields:
            if getattr(header, f.name) is None:
                continue
            for bad in [None, *hostile(f)]:
                changed = dataclasses.replace(header, **{f.name: bad})
                if bad is None and not f.always_required:
                    continue  # absent is fine unless a condition requires it
                violations = t.module.validate(msg, changed)
                assert violations, (f.name, bad)
                alone = t.module.validate_header(changed)
                assert alone or f.name == t.ir.header.action
                assert t.module.validate_header(changed, fail_fast=True) == alone[:1]
                with pytest.raises(EnvelopeInvalid):
                    t.module.check(msg, changed)
                with pytest.raises(EnvelopeInvalid):
                    t.module.encode(msg, changed)
    assert [v.code for v in t.module.validate_header("not a header")] == ["type"]
    header, msg = next(hm for hm in one_per_class(t).values() if hm[1] is not None)
    for foreign_header, foreign_msg in (("x", msg), (header, "x"), (header, header)):
        violations = t.module.validate(foreign_msg, foreign_header)
        assert "type" in {v.code for v in violations}, violations


def _decode_case(t: targets.Target, case: Any) -> oracle.Outcome:
    case.seal()
    from fuzz.cases import build

    return oracle.run_decoder(t, build(case))


@pytest.mark.parametrize("name", targets.ALL)
def test_every_scalar_word_out_of_range_is_refused_by_the_receiver(name: str) -> None:
    t = targets.load(name)
    for header, msg in one_per_class(t).values():
        if msg is None:
            continue
        frames = t.module.encode(msg, header)
        base = from_frames(t.name, frames, t.module.read_frame0(frames.frame0))
        for f in t.by_class[type(msg).__name__].ir.scalars:
            if getattr(msg, f.name) is None:
                continue
            values: list[int] = []
            if f.kind == "int":
                lo, hi = _int(f.range_min), _int(f.range_max)
                values = [x for x in (lo, hi) if x is not None and abs(x) < 2**63 - 1]
                values = [v - 1 if v == lo else v + 1 for v in values]
            elif f.kind == "float":
                values = list(mutators.FLOAT_WORDS[:4])
            for value in values:
                case = base.copy()
                case.words[f.word] = value
                out = _decode_case(t, case)
                assert out.finding is None, out
                assert out.label == "invalid" and "range" in out.violations, (f.name, value, out)


@pytest.mark.parametrize("name", targets.ALL)
def test_every_field_absent_or_added_on_the_wire_decodes_to_a_typed_outcome(name: str) -> None:
    t = targets.load(name)
    r = __import__("random").Random(0)
    for header, msg in one_per_class(t).values():
        if msg is None:
            continue
        frames = t.module.encode(msg, header)
        base = from_frames(t.name, frames, t.module.read_frame0(frames.frame0))
        info = t.by_class[type(msg).__name__]
        for f in info.ir.fields:
            case = base.copy()
            presence = case.words[t.ir.layout.presence]
            if presence & f.bit:  # a consistent absence: bit clear, words zero, frame 1 refitted
                case.words[t.ir.layout.presence] = presence & ~f.bit
                case.words[f.word : f.word + f.width] = [0] * f.width
                mutators.fix_frame1(case, t, r, resize=True)
                out = _decode_case(t, case)
                want = {"presence"} if f.always_required else {"ok", "invalid"}
            else:  # a present field the sender left out, zero words: a typed refusal or ok
                case.words[t.ir.layout.presence] = presence | f.bit
                out = _decode_case(t, case)
                want = {"ok", "invalid", "dtype", "dim", "scalar", "frame1"}
            assert out.finding is None and out.label in want, (f.name, out)


def _present_fields(obj: Any) -> int:
    return sum(getattr(obj, f.name) is not None for f in dataclasses.fields(obj))


@pytest.mark.parametrize("name", targets.ALL)
def test_header_words_out_of_range_are_refused_by_the_receiver(name: str) -> None:
    t = targets.load(name)
    header, msg = max(one_per_class(t).values(), key=lambda hm: _present_fields(hm[0]))
    base = from_frames(t.name, t.module.encode(msg, header))
    checked = 0
    for i, f in enumerate(t.ir.header.fields):
        if f.kind != "int" or _int(f.range_min) is None or getattr(header, f.name) is None:
            continue
        case = base.copy()
        case.words[t.ir.layout.header + i] = int(f.range_min or 0) - 1
        out = _decode_case(t, case)
        assert (out.label, out.violations) == ("invalid", ("range",)), (f.name, out)
        checked += 1
    if not checked:
        pytest.skip(f"{name}: no header int with a minimum")


# --- corners of the wire API ---------------------------------------------------------------------


def test_frames_and_manifest_helpers() -> None:
    t = targets.load("tp_control")
    classes = one_per_class(t)
    header, msg = classes["InferV1GeneratorOnly"]
    frames = t.module.encode(msg, header)
    manifest = t.module.read_frame0(frames.frame0)
    assert manifest.frame1_nbytes == frames.frame1_nbytes == sum(manifest.segment_nbytes)
    buffers = manifest.allocate()
    assert [b.numel() for b in buffers] == list(manifest.segment_nbytes)
    for dst, src in zip(buffers, frames.segments, strict=True):
        dst.copy_(src)
    assert manifest.finish(buffers) == (header, msg)
    whole = frames.frame1()
    assert whole.numel() == frames.frame1_nbytes
    assert torch.equal(whole[: frames.segments[0].numel()], frames.segments[0])
    single = wire.Frames(frames.frame0, frames.segments[:1])
    assert single.frame1() is frames.segments[0]
    assert wire.Frames(frames.frame0).frame1().numel() == 0
    seg = frames.segments[0]
    both = wire.Frames(frames.frame0, (seg, seg)).frame1()
    assert both.numel() == 2 * seg.numel() and torch.equal(both[seg.numel() :], seg)


def test_tensor_equality_and_materialize() -> None:
    a = torch.tensor([1.0, math.nan])
    assert wire.tensors_identical(a, a.clone())
    assert not wire.tensors_identical(a, a.to(torch.float64))
    assert not wire.tensors_identical(a, torch.tensor([1.0, 2.0]))
    assert wire.tensors_identical(None, None) and not wire.tensors_identical(a, None)
    assert wire.materialize(a, "meta").device.type == "meta"
    t = targets.load("tp_control")
    _, msg = one_per_class(t)["InferV1GeneratorOnly"]
    assert msg != dataclasses.replace(msg, base_seed=msg.base_seed + 1)
    assert msg != dataclasses.replace(msg, latents=msg.latents + 1)
