"""The specs every generated-bindings property runs for.

Shipped specs (``spec/*.yaml``) are tested through their checked-in generated modules;
the extra corpus (``tests/specs/*.yaml`` and the golden specs) is compiled in-process with
``tpwire.codegen.compile``. Each spec file's stem is its protocol name.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import settings

from tpwire.codegen import compiler
from tpwire.codegen.ir import ProtocolIR

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "spec").glob("*.yaml"))
GOLDEN = [ROOT / "tests" / "golden" / "mini.yaml", ROOT / "tests" / "golden" / "odd.yaml"]
EXTRA = [*sorted((ROOT / "tests" / "specs").glob("*.yaml")), *GOLDEN]
PATHS = {p.stem: p for p in SHIPPED + EXTRA}
NAMES = list(PATHS)


@dataclass(frozen=True)
class Spec:
    name: str
    path: Path
    shipped: bool
    module: ModuleType  # the bindings
    strategies: ModuleType  # their hypothesis strategies


@functools.cache
def load(name: str) -> Spec:
    path = PATHS[name]
    if path in SHIPPED:
        module = importlib.import_module(f"tpwire.generated.{name}")
        strategies = importlib.import_module(f"tpwire.generated.{name}_strategies")
        return Spec(name, path, True, module, strategies)
    module = compiler.compile(path)
    return Spec(name, path, False, module, module.strategies)


@functools.cache
def ir(name: str) -> ProtocolIR:
    return compiler.protocol_ir(PATHS[name])


def params() -> list[object]:
    """``pytest.param`` per spec (shipped first), for ``parametrize("name", ...)``."""
    return [pytest.param(name, id=name) for name in NAMES]


def examples(name: str, shipped: int, extra: int) -> int:
    """How many examples a property draws: more for the shipped specs; counts are for the
    ``ci`` profile's 150 and scale with the loaded profile (``long`` runs 5000)."""
    scale = settings().max_examples / 150
    return max(10, round((shipped if PATHS[name] in SHIPPED else extra) * scale))
