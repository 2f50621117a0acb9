"""Seeded bugs: the bounded properties CI runs must catch deliberately broken bindings.

Each test compiles ``spec/tp_control.yaml`` into a private module with one bug planted
(in the IR handed to the templates, or in a copy of a runtime helper), runs the very
property ``tests/test_fuzz_decoder.py`` runs on the real bindings (``fuzz.properties``)
under the ``ci`` profile, and asserts that it fails with the expected falsifying example.
If a refactor moved the code a patch targets, the patch asserts it still applies, so these
checks fail loudly instead of silently testing nothing. ``-s`` prints the examples.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.reporting import with_reporter

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fuzz package lives at the repository root
    sys.path.insert(0, str(ROOT))

from fuzz import properties, targets  # noqa: E402
from tpwire.codegen import compiler, render  # noqa: E402
from tpwire.codegen.ir import ProtocolIR  # noqa: E402
from tpwire.runtime import checks, wire  # noqa: E402

SPEC = ROOT / "spec" / "tp_control.yaml"
PACKAGE = "tpwire_seeded"
#: The ci profile, single-failure for a stable report (ci is derandomized already) and
#: without the explain phase, which only annotates the example and costs seconds here.
CI = settings(
    settings.get_profile("ci"),
    database=None,
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)

#: How hypothesis introduces the example it reports (the wording varies across versions).
FALSIFYING = re.compile(r"Falsifying example|Failing test case")

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


def _import(name: str, source: str) -> ModuleType:
    if PACKAGE not in sys.modules:
        pkg = ModuleType(PACKAGE)
        pkg.__path__ = []
        sys.modules[PACKAGE] = pkg
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def seeded_target(
    tag: str, module_ir: ProtocolIR, source_patch: Callable[[str], str] | None = None
) -> targets.Target:
    """Bindings rendered from ``module_ir`` (patched), strategies from the true spec."""
    ir = compiler.protocol_ir(SPEC)
    name = f"{PACKAGE}.{ir.module}_{tag}"
    source = render.render_module(module_ir, fmt=False)
    if source_patch is not None:
        source = source_patch(source)
    module = _import(name, source)
    strategies = _import(
        f"{name}_strategies", render.render_strategies(ir, bindings=name, fmt=False)
    )
    return targets.make_target(f"seeded/{tag}", ir, module, strategies)


def must_fail(prop: Callable[[], None]) -> tuple[str, str]:
    """Run a property that must fail: (its assertion message, the falsifying example)."""
    report: list[str] = []
    with with_reporter(report.append), pytest.raises(AssertionError) as err:
        prop()
    example = "\n".join([*map(str, report), *getattr(err.value, "__notes__", [])])
    print(f"\n--- falsifying example ---\n{example}\n--- assertion ---\n{err.value}")
    return str(err.value), example


def _replace_everywhere(
    obj: Any, match: Callable[[Any], bool], change: Callable[[Any], Any]
) -> Any:
    """A copy of a tree of frozen dataclasses/tuples with every node that ``match``es changed."""
    if match(obj):
        return change(obj)
    if isinstance(obj, tuple):
        return tuple(_replace_everywhere(x, match, change) for x in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        updates = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            new = _replace_everywhere(value, match, change)
            if new is not value:
                updates[f.name] = new
        return dataclasses.replace(obj, **updates) if updates else obj
    return obj


# --- 1. an off-by-one in an invariant ------------------------------------------------------------


def test_off_by_one_invariant_is_caught() -> None:
    """The validator wants ``calls == int(recompute) + steps + 1`` instead of the spec's
    derived ``calls == int(recompute) + steps`` (FM-02): valid envelopes are refused."""
    ir = compiler.protocol_ir(SPEC)
    patched = 0

    def is_target(x: Any) -> bool:
        return getattr(x, "name", None) == "tp_expected_generator_calls" and (
            getattr(x, "derived", None) is not None
        )

    def plant(f: Any) -> Any:
        nonlocal patched
        patched += 1
        return dataclasses.replace(
            f, derived=dataclasses.replace(f.derived, py=f"({f.derived.py}) + 1")
        )

    bad = _replace_everywhere(ir, is_target, plant)
    assert patched >= 1, "the derived rule to break is gone from the IR"
    t = seeded_target("invariant_off_by_one", bad)
    message, example = must_fail(properties.mutated_frames_property(t, config=CI))
    assert "a valid envelope fails validate" in message
    assert "derived: tp_expected_generator_calls ==" in message
    assert FALSIFYING.search(example) and "tp_expected_generator_calls" in example


# --- 2. a decoder that skips the dimension bound check --------------------------------------------


def _read_tensor_without_bound_check() -> ModuleType:
    """``tpwire.runtime.checks`` whose tensor fields read manifests with a ``read_tensor``
    that never tests ``lo <= d <= hi``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(wire.read_tensor)))
    removed = 0

    class Drop(ast.NodeTransformer):
        def visit_If(self, node: ast.If) -> Any:
            nonlocal removed
            self.generic_visit(node)
            if "lo <= d <= hi" in ast.unparse(node.test):
                removed += 1
                return node.orelse or ast.Pass()
            return node

    tree = ast.fix_missing_locations(Drop().visit(tree))
    assert removed == 1, "read_tensor no longer has the dimension bound check this patch removes"
    module = ModuleType(f"{PACKAGE}.checks_no_dim_bound")
    module.__dict__.update({k: v for k, v in vars(wire).items() if not k.startswith("__")})
    module.__package__ = checks.__package__
    # the classes are defined again here, so ``TensorField.read`` finds the seeded reader
    exec(compile(inspect.getsource(checks), "<seeded checks>", "exec"), module.__dict__)
    exec(compile(tree, "<seeded read_tensor>", "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    return module


def test_decoder_without_dim_bound_check_is_caught() -> None:
    lax = _read_tensor_without_bound_check()
    line = "from tpwire.runtime import checks as _v"

    def use_lax_checks(source: str) -> str:
        assert source.count(line) == 1, "the bindings no longer import the check helpers as _v"
        return source.replace(line, f"import {lax.__name__} as _v")

    t = seeded_target("no_dim_bound", compiler.protocol_ir(SPEC), use_lax_checks)
    message, example = must_fail(
        properties.mutated_frames_property(t, properties.MANIFEST_OPS, max_ops=2, config=CI)
    )
    assert message.startswith("over-bound") and "outside" in message
    assert FALSIFYING.search(example)


def test_the_same_properties_pass_on_the_real_bindings() -> None:
    """The control: unpatched bindings rendered the same way pass the same properties."""
    t = seeded_target("control", compiler.protocol_ir(SPEC))
    quick = settings(CI, max_examples=40)
    properties.mutated_frames_property(t, config=quick)()
    properties.mutated_frames_property(t, properties.MANIFEST_OPS, max_ops=2, config=quick)()
