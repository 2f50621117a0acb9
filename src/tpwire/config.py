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

Every path is relative to pyproject.toml's folder (the project root). ``out``, ``docs`` and
the splice ``file`` targets are written, so they must lie inside the project root (symbolic
links followed); a folder elsewhere is the operator's to name on the command line (``--out``,
``--docs``, ``--splice FILE``). A malformed table is one ``ConfigError`` line.
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

    def inside(self, path: Path, key: str) -> Path:
        """``path`` (``key`` of the table, for the message) once it lies inside the project
        root, symbolic links followed: the table never sends a write out of its project."""
        try:
            path.resolve().relative_to(self.root.resolve())
        except ValueError:
            raise ConfigError(
                f"{self.path} [tool.tpwire]: {key} = {_show(path, self.root)} is outside the "
                f"project {self.root}; name a folder outside on the command line instead"
            ) from None
        return path


def _show(path: Path, root: Path) -> str:
    """A configured path as the table spells it (relative to the root where it was)."""
    try:
        return repr(path.relative_to(root).as_posix())
    except ValueError:
        return repr(path.as_posix())


def _no_nul(value: str, key: str, where: str) -> str:
    if "\0" in value:
        raise ConfigError(f"{where}: {key} {value!r} holds a NUL byte, which no path can")
    return value


def _strings(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings (none empty)")
    return [_no_nul(v, key, where) for v in value]


def _path(table: dict[str, Any], key: str, root: Path, where: str) -> Path | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a path (a string)")
    return root / _no_nul(value, key, where)


def _expand(patterns: list[str], root: Path, where: str) -> tuple[str, ...]:
    found: set[str] = set()
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            if Path(pattern).is_absolute():
                raise ConfigError(
                    f"{where}: specs: {pattern!r} is an absolute glob; "
                    "a glob is relative to the project root"
                )
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
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{path}: [tool] must be a table (tool = {type(tool).__name__})")
    table = tool.get("tpwire", {})
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
    unknown = sorted(breaking.keys() - {"ignore"})
    if unknown:
        raise ConfigError(f"{path} [tool.tpwire.breaking]: unknown key(s) {', '.join(unknown)}")
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
