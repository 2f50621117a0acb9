"""The compiler's stages import downward only (docs/architecture.md): load < check < ir <
schema/render < compiler, with breaking on top and shared modules below them all.

Every import of every ``codegen/*.py`` counts, a lazy one inside a function and a
``TYPE_CHECKING`` one too: a stage that needs a later stage's result takes it as data
(``codegen/reserved_names.py``, which the last test holds fresh).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tpwire.codegen import reserved_probe

CODEGEN = Path(__file__).resolve().parents[1] / "codegen"

#: module (or ``prefix_*``, the modules a stage is split into) -> its rank; a module may
#: import only modules of its own rank or below
RANKS: dict[str, int] = {
    # shared: diagnostics, the expression language, codes, data, small helpers
    **dict.fromkeys(("errors", "expr", "codes", "stamp", "modpath", "splice", "reserved_names"), 0),
    **dict.fromkeys(("load", "load_*"), 1),
    # the checked model and what reads only it
    **dict.fromkeys(("model", "domains", "field_rules", "constraints"), 2),
    "check": 3,
    "check_*": 3,
    # ir spells its rules through rules.py, which names ir's types only for typing
    **dict.fromkeys(("ir", "ir_*", "rules"), 4),
    **dict.fromkeys(("schema", "schema_*", "render", "render_*"), 5),
    **dict.fromkeys(("compiler", "compiler_*", "reserved_probe"), 6),
    **dict.fromkeys(("breaking", "breaking_*", "__init__"), 7),
}


def rank(module: str) -> int | None:
    if module in RANKS:
        return RANKS[module]
    prefix = module.split("_")[0] + "_*"
    return RANKS.get(prefix)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, codegen module) of every import of ``path`` that names a codegen module."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 and base:
                out.append((node.lineno, base.split(".")[0]))
            elif node.level == 1:  # from . import x, y
                out += [(node.lineno, a.name) for a in node.names]
            elif base.startswith("tpwire.codegen."):
                out.append((node.lineno, base.split(".")[2]))
            elif base == "tpwire.codegen":
                out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [
                (node.lineno, a.name.split(".")[2])
                for a in node.names
                if a.name.startswith("tpwire.codegen.")
            ]
    return [(line, m) for line, m in out if (CODEGEN / f"{m}.py").exists()]


MODULES = sorted(p.stem for p in CODEGEN.glob("*.py"))


def test_every_module_has_a_stage() -> None:
    missing = [m for m in MODULES if rank(m) is None]
    assert not missing, f"add these codegen modules to RANKS in {__file__}: {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_imports_go_downward(module: str) -> None:
    own = rank(module)
    if own is None:
        pytest.skip("no stage (test_every_module_has_a_stage names it)")
    upward = [
        f"codegen/{module}.py:{line} imports {m} (rank {rank(m)} > {own})"
        for line, m in imports(CODEGEN / f"{module}.py")
        if (r := rank(m)) is not None and r > own
    ]
    assert not upward, "\n".join(upward)


def test_the_checker_does_not_render() -> None:
    """The case this test exists for: stage 2 learns the generated names as data."""
    for path in [CODEGEN / "check.py", *CODEGEN.glob("check_*.py")]:
        names = {m for _, m in imports(path)}
        assert not names & {"ir", "render", "schema", "compiler"}, path.name


def test_the_reserved_names_are_fresh() -> None:
    """codegen/reserved_names.py is what the templates bind now (``make gen`` rewrites it)."""
    fresh = reserved_probe.render(reserved_probe.probe())
    assert reserved_probe.DATA_MODULE.read_text("utf-8") == fresh, (
        "codegen/reserved_names.py is stale: run make gen (python -m tpwire.codegen.reserved_probe)"
    )
