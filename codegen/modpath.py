"""The import path of generated bindings, which the operator-manual page names.

``gen`` writes a protocol's module into the ``out`` folder; the page says how to import it:
``tpwire.generated.tp_control`` for tpwire's own ``out = "generated"`` (its setuptools
``package-dir`` maps ``tpwire.generated`` there), ``preview_wire.preview`` for
``out = "preview_wire"`` in examples/preview_protocol. The path is derived from the folder
relative to the project root (never an absolute path, so any clone gives the same bytes):

- a ``[tool.setuptools.package-dir]`` entry of the root's pyproject.toml whose folder holds
  ``out`` names its package (the longest such folder wins; ``""`` is the root package);
- else a first ``src`` folder is the src layout's, not part of the name;
- the rest of the folder's parts, dotted, when each is a Python identifier.

In a project with ``[tool.tpwire] out``, that folder names the bindings even when a run
writes them elsewhere (``--out``): the page documents the project's package. Without one, the
folder of the run counts; outside the project, or not a package path, it gives None: the page
then names the module alone.
"""

from __future__ import annotations

import keyword
import tomllib
from pathlib import Path
from typing import Any


def _pyproject(root: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return data


def _table(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        value = data.get(key)
        if not isinstance(value, dict):
            return {}
        data = value
    return data


def configured_out(root: Path) -> Path | None:
    """``[tool.tpwire] out`` of the project at ``root``, or None."""
    out = _table(_pyproject(root), "tool", "tpwire").get("out")
    return root / out if isinstance(out, str) and out and "\0" not in out else None


def package_of(folder: Path, root: Path | None) -> str | None:
    """The dotted import path of the package folder ``folder`` in the project at ``root``
    (module docstring), or None."""
    if root is None:
        return None
    try:
        parts = folder.resolve().relative_to(root.resolve()).parts
    except (ValueError, OSError):
        return None
    prefix: list[str] = []
    mapped: tuple[str, ...] | None = None
    package_dir = _table(_pyproject(root), "tool", "setuptools", "package-dir")
    for package, where in sorted(package_dir.items()):
        if not isinstance(package, str) or not isinstance(where, str):
            continue
        at = tuple(p for p in Path(where).parts if p != ".")
        if parts[: len(at)] == at and (mapped is None or len(at) > len(mapped)):
            mapped, prefix = at, [p for p in package.split(".") if p]
    if mapped is not None:
        names = [*prefix, *parts[len(mapped) :]]
    else:
        names = list(parts[1:] if len(parts) > 1 and parts[0] == "src" else parts)
    if not names or not all(n.isidentifier() and not keyword.iskeyword(n) for n in names):
        return None
    return ".".join(names)


def module_path(module: str, out: Path | None, root: Path | None) -> str:
    """How to import the bindings ``module`` of the project at ``root``: where its
    ``[tool.tpwire] out`` puts them, else where this run writes them (``out``): a scratch
    ``--out`` of a configured project (a check, another working copy) documents the same
    import path, so the page's bytes do not depend on it. ``package.module``, or the module
    alone."""
    configured = configured_out(root) if root is not None else None
    if configured is not None:
        out = configured
    package = package_of(out, root) if out is not None else None
    return f"{package}.{module}" if package else module
