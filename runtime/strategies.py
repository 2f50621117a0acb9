"""Support for the generated hypothesis strategies (``*_strategies`` modules).

The generated module draws candidate values field by field; the logic shared by every
protocol lives here: presence from the rules, solving ``field == expr`` invariants and
derived fields, and the labelled mutations that each break exactly one named rule.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

from .wire import INT64_MAX, INT64_MIN, WIRE_DTYPES

Fields = dict[str, Any]
Dims = dict[str, Any]  # a dimension is None when no present tensor binds it
Cond = Callable[[Fields, Dims], bool]
Solver = Callable[[Fields, Dims], Any]


@dataclass(frozen=True)
class Rule:
    """What a strategy needs to know about one field."""

    name: str
    kind: str  # int | float | bool | str | enum | tensor
    always: bool = False
    required: Cond | None = None
    forbidden: Cond | None = None
    none_unless: Cond | None = None
    lo: float | None = None
    hi: float | None = None
    max_len: int | None = None
    dtypes: tuple[torch.dtype, ...] = ()
    sample: Any = None  # a legal present value for enum fields


@dataclass(frozen=True)
class Solve:
    """Make ``field == expr`` hold: used for derived fields and equality invariants."""

    field: str
    value: Solver
    ready: Cond


def dim(lo: int, hi: int, max_extra: int) -> st.SearchStrategy[int]:
    """A dimension near its minimum (tests stay small), sometimes at an edge."""
    top = min(hi, lo + max_extra)
    return st.integers(lo, top)


def text(max_len: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_len).filter(lambda s: len(s.encode("utf-8")) <= max_len)


@st.composite
def tensors(draw: st.DrawFn, dtypes: Sequence[torch.dtype], shape: Sequence[int]) -> torch.Tensor:
    """A tensor of one of ``dtypes`` with arbitrary bit patterns (NaNs included)."""
    dtype = draw(st.sampled_from(list(dtypes)))
    seed = draw(st.integers(0, 2**32 - 1))
    itemsize = torch.empty((), dtype=dtype).element_size()
    n = math.prod(shape) * itemsize
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=gen)
    if dtype == torch.bool:
        raw = raw & 1
    return raw.view(dtype).reshape(tuple(shape))


def _holds(cond: Cond | None, f: Fields, d: Dims) -> bool | None:
    return None if cond is None else bool(cond(f, d))


def apply_presence(draw: st.DrawFn, f: Fields, d: Dims, rules: Sequence[Rule]) -> None:
    """Set each field present or None as its rules demand (free ones by a coin flip)."""
    for r in rules:
        required = r.always or _holds(r.required, f, d) is True
        forbidden = _holds(r.forbidden, f, d) is True or _holds(r.none_unless, f, d) is False
        if required:
            continue
        if forbidden or not draw(st.booleans()):
            f[r.name] = None


def keep_bound_dims(f: Fields, d: Dims, binders: dict[str, tuple[str, ...]]) -> None:
    """Forget dimensions that no present tensor binds (as the validator sees them)."""
    for name, tensors in binders.items():
        if all(f.get(t) is None for t in tensors):
            d[name] = None


def solve(f: Fields, d: Dims, solvers: Sequence[Solve]) -> None:
    # twice: a solved field may feed the next equation (steps -> expected calls)
    for _ in range(2):
        for s in solvers:
            if f.get(s.field) is not None and s.ready(f, d):
                f[s.field] = s.value(f, d)


def _bad_dtype(allowed: Sequence[torch.dtype]) -> torch.dtype:
    return next(w.torch_dtype for w in WIRE_DTYPES if w.torch_dtype not in allowed)


_WRONG_TYPE: dict[str, Any] = {
    "int": "1",
    "float": "1.0",
    "bool": 1,
    "str": 1,
    "enum": "?",
    "tensor": [1, 2, 3],
}


def mutations(
    f: Fields,
    d: Dims,
    rules: Sequence[Rule],
    solvers: Sequence[Solve],
    version_field: str | None,
    version: int,
    discriminator: str | None,
    other_member: Any,
) -> list[tuple[str, str, Any]]:
    """Every (code, field, new value) that breaks exactly one named rule of ``f``."""
    out: list[tuple[str, str, Any]] = []
    for r in rules:
        v = f.get(r.name)
        if v is None:
            if _holds(r.forbidden, f, d) is True:
                out.append(("forbidden", r.name, _sample(r)))
            elif r.none_unless is not None and _holds(r.none_unless, f, d) is False:
                out.append(("must_be_none", r.name, _sample(r)))
            continue
        if r.always or _holds(r.required, f, d) is True:
            out.append(("missing", r.name, None))
        out.append(("type", r.name, _WRONG_TYPE[r.kind]))
        if r.kind == "int":
            lo = int(r.lo) if r.lo is not None else INT64_MIN
            hi = int(r.hi) if r.hi is not None else INT64_MAX
            out.append(("range", r.name, lo - 1 if lo > INT64_MIN or hi == INT64_MAX else hi + 1))
        elif r.kind == "float":
            out.append(("range", r.name, math.nan))
            if r.hi is not None:
                out.append(("range", r.name, float(r.hi) + 1.0))
        elif r.kind == "str" and r.max_len is not None:
            out.append(("range", r.name, "x" * (r.max_len + 1)))
        elif r.kind == "tensor" and isinstance(v, torch.Tensor):
            out.append(("dtype", r.name, torch.zeros(v.shape, dtype=_bad_dtype(r.dtypes))))
            out.append(("shape", r.name, v.unsqueeze(-1)))
    for s in solvers:
        v = f.get(s.field)
        if type(v) is int and s.ready(f, d):
            out.append(("invariant", s.field, v + 1))
        elif type(v) is bool and s.ready(f, d):
            out.append(("invariant", s.field, not v))
    if version_field is not None and f.get(version_field) is not None:
        out.append(("version", version_field, version + 1))
    if discriminator is not None and other_member is not None:
        out.append(("type", discriminator, other_member))
    return out


def _sample(r: Rule) -> Any:
    """Some present value for a field that must stay absent."""
    if r.kind == "tensor":
        return torch.zeros((1,), dtype=r.dtypes[0] if r.dtypes else torch.float32)
    return {"int": 1, "float": 0.5, "bool": True, "str": "x", "enum": r.sample}.get(r.kind)


def mutate(msg: Any, name: str, value: Any) -> Any:
    return dataclasses.replace(msg, **{name: value})
