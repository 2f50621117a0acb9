"""Stage 4 - render: IR -> files, through jinja2 templates that only print.

Output is deterministic (no timestamps, no hash-order dependence) and Python output is
normalised with ``ruff format`` so the checked-in bindings are lint- and format-clean.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from typing import Any

import jinja2

from .ir import ProtocolIR
from .schema import json_schema
from .stamp import GENERATOR_VERSION


def _py(value: object) -> str:
    """A Python literal for a str/int/float/None/tuple value."""
    return repr(value)


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
    return env


def _render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(version=GENERATOR_VERSION, **context)


#: Independent of whatever ruff configuration surrounds the caller; matches pyproject.toml.
_RUFF_ARGS = ("--isolated", "--line-length", "100", "--target-version", "py311")


def _ruff_command() -> list[str] | None:
    try:
        from ruff.__main__ import find_ruff_bin  # type: ignore[import-untyped]

        return [str(find_ruff_bin())]
    except (ImportError, FileNotFoundError):
        found = shutil.which("ruff")
        return [found] if found else None


def format_python(source: str, filename: str = "generated.py") -> str:
    """``ruff format`` the source (identity when ruff is not installed)."""
    cmd = _ruff_command()
    if cmd is None:
        return source
    fix = subprocess.run(
        [
            *cmd,
            "check",
            *_RUFF_ARGS,
            "--select",
            "F401",
            "--fix-only",
            "--quiet",
            "--stdin-filename",
            filename,
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if fix.returncode == 0:
        source = fix.stdout
    done = subprocess.run(
        [*cmd, "format", *_RUFF_ARGS, "--quiet", "--stdin-filename", filename, "-"],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"ruff format failed on generated {filename}")
    return done.stdout


def render_module(p: ProtocolIR, *, fmt: bool = True) -> str:
    text = _render("module.py.j2", p=p)
    return format_python(text, f"{p.module}.py") if fmt else text


def render_strategies(p: ProtocolIR, *, bindings: str | None = None, fmt: bool = True) -> str:
    """The hypothesis strategies module; ``bindings`` names the module it tests."""
    text = _render("strategies.py.j2", p=p, bindings=bindings or f"tpwire.generated.{p.module}")
    return format_python(text, f"{p.module}_strategies.py") if fmt else text


def render_tables(p: ProtocolIR) -> str:
    """The markdown operator-manual tables (the block `docs --splice` maintains)."""
    return _render("tables.md.j2", p=p)


def render_doc_page(p: ProtocolIR) -> str:
    return _render("page.md.j2", p=p, tables=render_tables(p))


def render_schema(p: ProtocolIR) -> str:
    return json.dumps(json_schema(p), indent=2, sort_keys=True) + "\n"
