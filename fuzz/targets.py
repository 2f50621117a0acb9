"""The protocols under test, and the bounds their specs put on everything a peer sends.

A ``Target`` pairs a generated module (``encode``/``decode``/``read_frame0``) and its
hypothesis strategies with the compiler's IR of the same spec. The oracle checks decoder
outcomes against bounds recomputed here from the IR, independently of the decoder's own
checks: a decoder that skips a bound is caught, not trusted.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from tpwire.codegen import compiler
from tpwire.codegen.ir import FieldIR, MessageIR, ProtocolIR

ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = ROOT / "spec"
GOLDEN_DIR = ROOT / "tests" / "golden"
SHIPPED = ("tp_control", "pp_contract")
GOLDEN = ("mini", "odd")
#: Every target a campaign runs by default: the shipped protocols, then the golden specs.
ALL = (*SHIPPED, *(f"golden/{g}" for g in GOLDEN))
ALIGN = 16  # frame 1 packing alignment (docs/wire-format.md)


def itemsize(dtype_name: str) -> int:
    return int(torch.empty((), dtype=getattr(torch, dtype_name)).element_size())


@dataclass(frozen=True)
class TensorBound:
    """What the spec allows for one tensor field: dtype codes, dims, element bound."""

    field: str
    word: int
    codes: tuple[int, ...]
    #: per dimension: (symbol or None for a constant, lo, hi)
    dims: tuple[tuple[str | None, int, int], ...]
    max_elements: int
    max_nbytes: int  # with the packing alignment


@dataclass(frozen=True)
class MessageInfo:
    ir: MessageIR
    tensors: tuple[TensorBound, ...]
    #: upper bound on frame 1 bytes for this message, from the spec alone
    max_frame1_nbytes: int

    @property
    def id(self) -> int:
        return self.ir.id

    def tensor(self, field: str) -> TensorBound | None:
        return next((t for t in self.tensors if t.field == field), None)


def _tensor_bound(f: FieldIR) -> TensorBound:
    dims = tuple(
        (None, d.const, d.const) if d.const is not None else (d.symbol, d.lo, d.hi) for d in f.dims
    )
    by_dims = math.prod(hi for _, _, hi in dims)
    elements = min(by_dims, f.max_elements) if f.max_elements is not None else by_dims
    widest = max(itemsize(name) for name in f.dtypes)
    nbytes = -(-(elements * widest) // ALIGN) * ALIGN
    return TensorBound(f.name, f.word, tuple(f.dtype_codes), dims, elements, nbytes)


def _message_info(m: MessageIR) -> MessageInfo:
    tensors = tuple(_tensor_bound(f) for f in m.tensors)
    return MessageInfo(m, tensors, sum(t.max_nbytes for t in tensors))


@dataclass(frozen=True)
class Target:
    """One protocol: its bindings, strategies, IR and derived bounds."""

    name: str
    module: ModuleType
    strategies: ModuleType
    ir: ProtocolIR
    messages: dict[int, MessageInfo]  # by message id
    by_class: dict[str, MessageInfo]  # by generated class name
    interesting: tuple[int, ...]  # spec-derived word values worth trying

    @property
    def frame0_len(self) -> int:
        return int(self.module.FRAME0_LEN)

    @property
    def max_frame1_nbytes(self) -> int:
        return max((m.max_frame1_nbytes for m in self.messages.values()), default=0)


def _interesting(ir: ProtocolIR) -> tuple[int, ...]:
    vals: set[int] = {ir.fingerprint, ir.fingerprint ^ 1}
    for e in ir.enums:
        for _, v in e.members:
            vals.update((v - 1, v, v + 1))
    for m in ir.messages:
        vals.update((m.id, m.id + 1, m.version - 1, m.version + 1, m.presence_mask))
        for f in m.fields:
            vals.update(f.dtype_codes)
            for d in f.dims:
                vals.update((d.lo - 1, d.lo, d.hi, d.hi + 1))
            if f.max_elements is not None:
                vals.update((f.max_elements, f.max_elements + 1))
            if f.max_len is not None:
                vals.update((f.max_len, f.max_len + 1))
    vals.add(ir.header.presence_mask)
    return tuple(sorted(vals))


def make_target(name: str, ir: ProtocolIR, module: ModuleType, strategies: ModuleType) -> Target:
    if int(module.FINGERPRINT) != ir.fingerprint:
        raise RuntimeError(
            f"{name}: the bindings' fingerprint {int(module.FINGERPRINT):#x} is not the spec's "
            f"{ir.fingerprint:#x}; run `make gen`"
        )
    infos = {m.id: _message_info(m) for m in ir.messages}
    by_class = {v.class_name: infos[m.id] for m in ir.messages for v in m.variants}
    return Target(name, module, strategies, ir, infos, by_class, _interesting(ir))


@functools.cache
def load(name: str) -> Target:
    """``tp_control``/``pp_contract`` (shipped, generated/) or ``golden/<stem>`` (compiled)."""
    if name.startswith("golden/"):
        path = GOLDEN_DIR / f"{name.removeprefix('golden/')}.yaml"
        module = compiler.compile(path)
        strategies = module.strategies
    else:
        path = SPEC_DIR / f"{name}.yaml"
        module = importlib.import_module(f"tpwire.generated.{name}")
        strategies = importlib.import_module(f"tpwire.generated.{name}_strategies")
    return make_target(name, compiler.protocol_ir(path), module, strategies)


def load_all(names: Iterable[str] = ALL) -> list[Target]:
    return [load(n) for n in names]
