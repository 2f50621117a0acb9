"""Stage 4 - render: IR -> files, through jinja2 templates that only print.

Output is deterministic (no timestamps, no hash-order dependence) and Python output is
normalised with ``ruff format`` so the checked-in bindings are lint- and format-clean.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from typing import Any

import jinja2

from .ir import ProtocolIR
from .schema import json_schema
from .stamp import GENERATOR_VERSION


def _py(value: object) -> str:
    """A Python literal for a str/int/float/None/tuple value."""
    return repr(value)


def _docstring(text: str) -> str:
    """Spec prose made safe inside a triple-quoted docstring."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return text[:-1] + '\\"' if text.endswith('"') else text


def _md(text: str) -> str:
    """Spec prose made safe inside a markdown table cell (and a spliced block)."""
    return text.replace("|", "\\|").replace("\n", " ").replace("<!--", "&lt;!--")


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tpwire.codegen", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["py"] = _py
    env.filters["hex"] = hex
    env.filters["docstring"] = _docstring
    env.filters["md"] = _md
    return env


def _render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(version=GENERATOR_VERSION, **context)


#: Independent of whatever ruff configuration surrounds the caller; matches pyproject.toml.
_RUFF_ARGS = ("--isolated", "--line-length", "100", "--target-version", "py311")


def _ruff() -> str:
    """The ruff binary of the installed ``ruff`` package (a dependency: output depends on it)."""
    try:
        from ruff.__main__ import find_ruff_bin  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError("tpwire needs the 'ruff' package to format generated code") from None
    return str(find_ruff_bin())


def _run_ruff(args: list[str], source: str, filename: str) -> str:
    done = subprocess.run(
        [_ruff(), *args, *_RUFF_ARGS, "--quiet", "--stdin-filename", filename, "-"],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ruff {args[0]} failed on generated {filename}: {done.stderr.strip()}")
    return done.stdout


def format_python(source: str, filename: str = "generated.py") -> str:
    """Drop unused imports and ``ruff format``: the same bytes on every machine."""
    source = _run_ruff(["check", "--select", "F401", "--fix-only", "--exit-zero"], source, filename)
    return _run_ruff(["format"], source, filename)


def render_module(p: ProtocolIR, *, fmt: bool = True) -> str:
    text = _render("module.py.j2", p=p)
    return format_python(text, f"{p.module}.py") if fmt else text


def render_strategies(p: ProtocolIR, *, bindings: str | None = None, fmt: bool = True) -> str:
    """The hypothesis strategies module. It tests the bindings beside it in its package
    (a relative import), or the module ``bindings`` names (in-process compilation)."""
    text = _render("strategies.py.j2", p=p, bindings=bindings)
    return format_python(text, f"{p.module}_strategies.py") if fmt else text


def render_tables(p: ProtocolIR) -> str:
    """The markdown operator-manual tables (the block `docs --splice` maintains)."""
    return _render("tables.md.j2", p=p)


def render_doc_page(p: ProtocolIR) -> str:
    return _render("page.md.j2", p=p, tables=render_tables(p))


def render_schema(p: ProtocolIR) -> str:
    return json.dumps(json_schema(p), indent=2, sort_keys=True) + "\n"
