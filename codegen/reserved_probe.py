"""The names the generated modules bind, learned by rendering a probe spec.

A spec may not name an enum, message or variant class after something the generated
bindings or strategies module binds itself (``codegen/check_names.py`` refuses it). Those
names are the templates', so they are read off the templates' output: ``probe()`` checks,
lowers and renders ``PROBE_SPEC`` and collects what the modules bind at module scope.
The checker does not render (stages import downward only: load < check < ir < render,
docs/architecture.md);
it reads the result as data, ``codegen/reserved_names.py``, which
``python -m tpwire.codegen.reserved_probe`` (part of ``make gen``) writes and
tests/test_stage_imports.py holds fresh.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from .check import check_with
from .check_names import GeneratedNames
from .ir import build
from .load import load_text
from .render import render_module, render_strategies
from .splice import refresh

#: A spec that reaches every construct the templates spell (discriminated and plain messages,
#: derived fields, tensors, invariants, every role and control action). Its enum and message
#: names occur nowhere in the templates, so every other name its generated modules bind at
#: module scope is the templates' own, and every name containing one of them is spelled
#: from that enum or message (``_validate_<Message>``, the strategies' ``_<Message>``).
PROBE_ENUMS = ("Zqaction", "Zqenum")
PROBE_MESSAGES = ("Zqmessage", "Zqplain")
#: A field name (the probe's own, where a generated class body binds it).
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")
PROBE_SPEC = """\
tpwire: 1
protocol: zqprobe
doc: probe
enums:
  Zqaction:
    doc: probe
    values: {IDLE: 0, RUN: 1, STOP: 2, FAIL: 3, PLAIN: 4}
  Zqenum:
    doc: probe
    values: {fast: 0, careful: 1}
header:
  doc: probe
  slots: [seq, act, step, epoch]
  action: act
  roles: {sequence: seq, chunk: step, epoch: epoch}
  control: {noop: IDLE, shutdown: STOP, error: FAIL}
  fields:
    seq: {type: int, range: {min: 0}}
    act: {type: Zqaction}
    step: {type: int, range: {min: 0, max: 1000}, required_when: act == Zqaction.RUN}
    epoch: {type: int, range: {min: 0}}
messages:
  Zqmessage:
    id: 1
    version: 2
    action: RUN
    doc: probe
    discriminator: mode
    version_field: v
    dims:
      N: {min: 1, max: 16}
      K: {min: 2, max: 4}
    fields:
      mode: {type: Zqenum}
      v: {type: int}
      name: {type: str, max_len: 12, required_when: mode == Zqenum.careful}
      scale: {type: float, range: {min: 0.0, max: 2.0}}
      count: {type: int, range: {min: 1, max: 16}}
      total: {type: int, derived: count * 2 + 1}
      rows: {type: int | None, derived: N * K}
      check: {type: bool, none_unless: mode == Zqenum.careful}
      data: {type: tensor, dtypes: [float32, bool], shape: [N, K]}
      extra: {type: tensor | None, dtypes: [int32], shape: [N], required_when: check == True}
      legacy: {type: tensor, dtypes: [uint8], shape: [3], forbidden_when: mode == Zqenum.careful}
    invariants:
      - {id: count-matches, expr: count == len(data), message: rows, fm: FM-01}
  Zqplain:
    id: 2
    version: 1
    action: PLAIN
    fields:
      flag: {type: bool}
      ratio: {type: float | None, derived: int(flag) * 0.5}
"""
#: The data module ``write`` keeps fresh.
DATA_MODULE = Path(__file__).with_name("reserved_names.py")


def _module_names(body: list[ast.stmt]) -> Iterator[str]:
    """Every name a module body binds at module scope."""
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield stmt.name
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                yield alias.asname or alias.name.split(".")[0]
        elif isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        yield node.id
        elif isinstance(stmt, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for part in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(stmt, part, [])
                if part == "handlers":
                    inner = [s for h in inner for s in h.body]
                yield from _module_names(inner)


def probe() -> GeneratedNames:
    """The module-scope names of the generated bindings and strategies modules, derived by
    rendering ``PROBE_SPEC`` through the templates (so a new template name is covered)."""
    p = build(check_with(load_text(PROBE_SPEC, "<probe>"), None))
    chosen = {*PROBE_ENUMS, *PROBE_MESSAGES, *p.all_classes}
    fixed: dict[str, frozenset[str]] = {}
    patterns: set[tuple[str, str, str]] = set()
    probes = [("enum", n) for n in PROBE_ENUMS] + [("message", n) for n in PROBE_MESSAGES]
    module = ast.parse(render_module(p, fmt=False))
    for where, tree in (
        ("the generated module", module),
        ("the generated strategies module", ast.parse(render_strategies(p, fmt=False))),
    ):
        bound = set(_module_names(tree.body)) - chosen
        spelled = {n for n in bound if any(probe in n for _, probe in probes)}
        fixed[where] = frozenset(bound - spelled)
        patterns |= {
            (where, kind, n.replace(probe, "{}"))
            for n in spelled
            for kind, probe in probes
            if probe in n
        }
    # A class body that binds ``VERSION`` and then reads an enum named ``VERSION`` reads its
    # own int. Field names (lowercase) and enum members are the spec's, not the templates'.
    fixed["the generated message classes"] = frozenset(
        n
        for c in module.body
        if isinstance(c, ast.ClassDef) and c.name not in PROBE_ENUMS
        for n in _module_names(c.body)
        if not _FIELD_NAME.fullmatch(n)
    )
    return GeneratedNames(fixed, frozenset(patterns))


def _strings(names: list[str], indent: str) -> str:
    return "".join(f'{indent}"{n}",\n' for n in names)


def render(names: GeneratedNames) -> str:
    """The text of codegen/reserved_names.py for ``names`` (ruff-formatted as it stands)."""
    fixed = "".join(
        f'    "{where}": frozenset(\n        {{\n'
        + _strings(sorted(group), " " * 12)
        + "        }\n    ),\n"
        for where, group in names.fixed.items()
    )
    patterns = "".join(
        "        (" + ", ".join(f'"{part}"' for part in p) + "),\n" for p in sorted(names.patterns)
    )
    return (
        '"""The names the generated modules bind, by module: written by\n'
        "``python -m tpwire.codegen.reserved_probe`` (``make gen``) from the templates' output;\n"
        'do not edit (tests/test_stage_imports.py checks it is fresh)."""\n\n'
        "from __future__ import annotations\n\n"
        "from collections.abc import Mapping\n\n"
        "#: module -> the names it binds itself, in the order a clash names them\n"
        f"FIXED: Mapping[str, frozenset[str]] = {{\n{fixed}}}\n"
        "#: (module, 'enum' or 'message', pattern): a name it spells from that name ({})\n"
        f"PATTERNS: frozenset[tuple[str, str, str]] = frozenset(\n    {{\n{patterns}    }}\n)\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Write codegen/reserved_names.py (``--check``: exit 1 where it is stale)."""
    args = sys.argv[1:] if argv is None else argv
    text = render(probe())
    return refresh(DATA_MODULE, lambda old: text, args, f"{DATA_MODULE} is stale: run make gen")


if __name__ == "__main__":
    sys.exit(main())
