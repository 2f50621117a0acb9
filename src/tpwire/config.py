"""A project's ``[tool.tpwire]`` table in pyproject.toml: what bare ``tpwire gen``,
``tpwire check``, ``tpwire docs --splice`` and ``tpwire breaking`` work on.

    [tool.tpwire]
    specs = ["spec/*.yaml"]          # files or globs, relative to pyproject.toml
    out = "generated"                # the bindings package
    docs = "docs/spec"               # markdown tables and JSON Schemas (optional)
    splice = [                       # operator manuals holding a marked block (optional)
        { spec = "spec/tp_control.yaml", file = "docs/manual.md", name = "tp_control" },
    ]

    [tool.tpwire.breaking]
    ignore = []                      # rules allowed on purpose
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """An unreadable or malformed ``[tool.tpwire]`` table (one line, exit 2)."""


@dataclass(frozen=True)
class SpliceTarget:
    spec: Path
    file: Path
    name: str | None


@dataclass(frozen=True)
class ProjectConfig:
    path: Path  # the pyproject.toml
    specs: tuple[str, ...]  # relative to the project root, globs expanded, sorted
    out: Path | None
    docs: Path | None
    splice: tuple[SpliceTarget, ...]
    breaking_ignore: tuple[str, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    def spec_paths(self) -> list[Path]:
        return [self.root / s for s in self.specs]


def _strings(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return list(value)


def _path(table: dict[str, Any], key: str, root: Path, where: str) -> Path | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a path (a string)")
    return root / value


def _expand(patterns: list[str], root: Path, where: str) -> tuple[str, ...]:
    found: set[str] = set()
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            matches = [p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file()]
            if not matches:
                raise ConfigError(f"{where}: specs: {pattern!r} matches no file")
            found.update(matches)
        else:
            found.add(Path(pattern).as_posix())
    return tuple(sorted(found))


def _splice(table: dict[str, Any], root: Path, where: str) -> tuple[SpliceTarget, ...]:
    entries = table.get("splice", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: splice must be a list of tables")
    targets = []
    for i, entry in enumerate(entries):
        at = f"{where}: splice[{i}]"
        if not isinstance(entry, dict) or not {"spec", "file"} <= entry.keys():
            raise ConfigError(f"{at} needs spec = ... and file = ...")
        unknown = sorted(entry.keys() - {"spec", "file", "name"})
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {', '.join(unknown)}")
        name = entry.get("name")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{at}: name must be a string")
        spec, file = _path(entry, "spec", root, at), _path(entry, "file", root, at)
        assert spec is not None and file is not None
        targets.append(SpliceTarget(spec, file, name))
    return tuple(targets)


KNOWN_KEYS = frozenset({"specs", "out", "docs", "splice", "breaking"})


def load(path: Path) -> ProjectConfig:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    table = data.get("tool", {}).get("tpwire", {})
    where = f"{path} [tool.tpwire]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(table.keys() - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    root = path.parent
    breaking = table.get("breaking", {})
    if not isinstance(breaking, dict):
        raise ConfigError(f"{path} [tool.tpwire.breaking] must be a table")
    return ProjectConfig(
        path=path,
        specs=_expand(_strings(table, "specs", where), root, where),
        out=_path(table, "out", root, where),
        docs=_path(table, "docs", root, where),
        splice=_splice(table, root, where),
        breaking_ignore=tuple(_strings(breaking, "ignore", f"{path} [tool.tpwire.breaking]")),
    )


def find(start: Path | None = None) -> ProjectConfig | None:
    """The nearest pyproject.toml at or above ``start`` (the cwd), read."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            return load(candidate)
    return None
