"""Differential: whatever ``encode`` accepts, ``decode`` of its frames accepts, and gives the
same envelope back bit for bit. A value the sender lets through and every receiver refuses
would kill the whole group after commit (a bool tensor holding byte 2 did).

Envelopes come from each spec's strategies (valid ones and labelled mutants), then one field
at a time is pushed to an edge of its kind: ints at and past the int64 bounds, NaN and
infinite floats, -0.0, odd strings, bool tensors with any byte, NaN-filled and strided
tensors, a foreign dtype."""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specs import corpus

from tpwire.runtime.errors import EnvelopeInvalid

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

INTS = [0, 1, -1, 2**31, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**30]
FLOATS = [math.nan, -math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
STRS = ["", "\x00", "é" * 9, "\U0001f600", "\ud800", "a" * 300]


def _tensor_edges(t: torch.Tensor) -> list[torch.Tensor]:
    out = []
    raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
    if t.dtype is torch.bool and raw.numel():
        for byte in (2, 255):
            bad = raw.clone()
            bad[0] = byte
            out.append(bad.view(torch.bool).reshape(t.shape))
    if t.dtype.is_floating_point and t.numel():
        out.append(torch.full_like(t, math.nan))
        out.append(torch.full_like(t, -0.0))
    if t.dim() >= 2:
        out.append(t.transpose(0, 1).contiguous().transpose(0, 1))  # same values, strided
    if t.numel():
        out.append(t.to(torch.float64 if t.dtype is not torch.float64 else torch.int64))
        out.append(raw[: t.numel()].view(torch.bool).reshape(t.shape))  # any byte as bool
    return out


def _edges(value: object) -> list[object]:
    if isinstance(value, torch.Tensor):
        return list(_tensor_edges(value))
    if isinstance(value, bool):
        return [not value, 0, 1, 2]
    if isinstance(value, int):
        return INTS
    if isinstance(value, float):
        return FLOATS
    if isinstance(value, str):
        return STRS
    return []


def _bits(x: object) -> object:
    if isinstance(x, torch.Tensor):
        raw = x.contiguous().reshape(-1).view(torch.uint8)
        return (x.dtype, tuple(x.shape), bytes(raw.numpy()))
    if type(x) is float:
        return struct.pack("<d", x)
    return (type(x), x)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and all(
        _bits(getattr(a, f.name)) == _bits(getattr(b, f.name)) for f in dataclasses.fields(a)
    )


@st.composite
def pushed(draw: st.DrawFn, spec: corpus.Spec) -> tuple[Any, Any]:
    """A valid envelope or a mutant, then (most of the time) one field pushed to an edge."""
    if draw(st.booleans()):
        header, msg = draw(spec.strategies.valid_envelopes())
    else:
        m = draw(spec.strategies.mutants())
        header, msg = m.header, m.msg
    targets = [("header", f.name) for f in dataclasses.fields(header)]
    if msg is not None and dataclasses.is_dataclass(msg):
        targets += [("msg", f.name) for f in dataclasses.fields(msg)]
    if not draw(st.integers(0, 3)):
        return header, msg
    where, name = draw(st.sampled_from(targets))
    owner = header if where == "header" else msg
    edges = _edges(getattr(owner, name))
    if not edges:
        return header, msg
    changed = dataclasses.replace(owner, **{name: draw(st.sampled_from(edges))})
    return (changed, msg) if where == "header" else (header, changed)


@pytest.mark.parametrize("name", corpus.params())
def test_what_encode_accepts_decode_accepts_unchanged(name: str) -> None:
    spec = corpus.load(name)
    proto = spec.module
    seen = {"encoded": 0, "refused": 0}

    @settings(SETTINGS, max_examples=corpus.examples(name, 300, 120))
    @given(pushed(spec))
    def check(envelope: tuple[Any, Any]) -> None:
        header, msg = envelope
        try:
            frames = proto.encode(msg, header)
        except EnvelopeInvalid:
            seen["refused"] += 1
            return
        seen["encoded"] += 1
        header2, msg2 = proto.decode(frames)  # no WireError, no EnvelopeInvalid
        assert _same(header2, header)
        assert _same(msg2, msg)

    check()
    assert seen["encoded"] and seen["refused"], seen
