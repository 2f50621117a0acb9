"""The compiler driver: load -> check -> IR -> render, and the files it writes."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from . import render
from .check import check
from .errors import SpecError, SpecErrors
from .ir import ProtocolIR, build
from .load import load_path, load_text, printable_name
from .stamp import GENERATED_MARK, GENERATOR_VERSION


def display_path(path: str | Path) -> str:
    """The spec's name in outputs: relative to the working directory when inside it, with
    unprintable characters escaped (a newline in it must not end a generated comment)."""
    p = Path(path)
    try:
        return printable_name(p.resolve().relative_to(Path.cwd().resolve()).as_posix())
    except ValueError:
        return printable_name(p.as_posix())


def protocol_ir(path: str | Path) -> ProtocolIR:
    """Load, check and lower one spec file (``SpecErrors`` on any problem)."""
    name = display_path(path)
    return build(check(load_path(path, name)), name)


def protocol_ir_from_text(text: str | bytes, name: str = "<spec>") -> ProtocolIR:
    name = printable_name(name)
    return build(check(load_text(text, name)), name)


@dataclass(frozen=True)
class Output:
    path: Path
    text: str


def outputs(irs: list[ProtocolIR], out: Path, docs: Path | None) -> list[Output]:
    """Every file ``gen`` writes for these protocols, in a fixed order."""
    files: list[Output] = []
    for p in irs:
        files.append(Output(out / f"{p.module}.py", render.render_module(p)))
        files.append(Output(out / f"{p.module}_strategies.py", render.render_strategies(p)))
        if docs is not None:
            files.append(Output(docs / f"{p.module}.md", render.render_doc_page(p)))
            files.append(Output(docs / f"{p.module}.schema.json", render.render_schema(p)))
    modules = sorted(p.module for p in irs)
    init = render.format_python(
        render.environment()
        .get_template("package_init.py.j2")
        .render(version=GENERATOR_VERSION, modules=modules),
        "__init__.py",
    )
    files.append(Output(out / "__init__.py", init))
    return files


def _is_generated(path: Path) -> bool:
    """Whether tpwire wrote this file: its mark is in the first two lines."""
    try:
        with path.open(encoding="utf-8") as fh:
            head = [fh.readline(), fh.readline()]
    except (OSError, UnicodeDecodeError):
        return False
    return any(GENERATED_MARK in line for line in head)


def stale_files(files: list[Output], dirs: list[Path]) -> list[Path]:
    """Generated files in the output folders that this run would not write."""
    wanted = {f.path.resolve() for f in files}
    stale = []
    for d in dirs:
        if not d.is_dir():
            continue
        for candidate in sorted(d.iterdir()):
            if (
                candidate.is_file()
                and candidate.resolve() not in wanted
                and _is_generated(candidate)
            ):
                stale.append(candidate)
    return stale


def generate(
    specs: list[str | Path], out: Path, docs: Path | None, *, check_only: bool = False
) -> list[str]:
    """Compile ``specs``; write (or, with ``check_only``, compare) every output.

    Returns the list of changes (written, removed, or that would be). All specs are
    checked before anything is written, so a bad spec leaves the tree untouched.
    """
    irs: list[ProtocolIR] = []
    errors: list[SpecError] = []
    for spec in specs:
        try:
            irs.append(protocol_ir(spec))
        except SpecErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise SpecErrors(errors)
    seen: dict[str, str] = {}
    for p in irs:
        if p.module in seen:
            raise SpecErrors(
                [
                    SpecError(
                        p.source,
                        1,
                        1,
                        "duplicate-protocol",
                        f"protocol {p.module!r} is also defined by {seen[p.module]}",
                    )
                ]
            )
        seen[p.module] = p.source
    files = outputs(irs, out, docs)
    changes: list[str] = []
    for f in files:
        old = f.path.read_text("utf-8") if f.path.is_file() else None
        if old != f.text:
            changes.append(f"{'would write' if check_only else 'wrote'} {f.path.as_posix()}")
            if not check_only:
                f.path.parent.mkdir(parents=True, exist_ok=True)
                f.path.write_text(f.text, "utf-8")
    for path in stale_files(files, [out] + ([docs] if docs else [])):
        changes.append(f"{'would remove' if check_only else 'removed'} stale {path.as_posix()}")
        if not check_only:
            path.unlink()
    return changes


# --- in-process compilation ----------------------------------------------------------------


class _SourceLoader(importlib.abc.SourceLoader):
    def __init__(self, source: str, origin: str) -> None:
        self.source = source
        self.origin = origin

    def get_filename(self, fullname: str) -> str:
        return self.origin

    def get_data(self, path: str) -> bytes:
        return self.source.encode("utf-8")


def _import_source(name: str, source: str, origin: str) -> ModuleType:
    spec = importlib.util.spec_from_loader(name, _SourceLoader(source, origin), origin=origin)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations (ClassVar) through sys.modules
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compile(path_or_text: str | os.PathLike[str] | bytes) -> ModuleType:
    """Render a spec's bindings and import them in-process.

    ``path_or_text`` is a path to a spec file, or the spec text itself (a string with a
    newline, or bytes). The module is the same code ``tpwire gen`` writes; its
    ``strategies`` attribute holds the hypothesis strategies module.
    """
    if isinstance(path_or_text, bytes) or (isinstance(path_or_text, str) and "\n" in path_or_text):
        p = protocol_ir_from_text(path_or_text)
    else:
        p = protocol_ir(Path(path_or_text))
    source = render.render_module(p)
    tag = hashlib.sha256(source.encode()).hexdigest()[:12]
    base = f"tpwire_compiled.{p.module}_{tag}"
    if "tpwire_compiled" not in sys.modules:
        pkg = ModuleType("tpwire_compiled")
        pkg.__path__ = []
        sys.modules["tpwire_compiled"] = pkg
    module = _import_source(base, source, f"<tpwire {p.source}>")
    strategies_source = render.render_strategies(p, bindings=base)
    strategies = _import_source(
        f"{base}_strategies", strategies_source, f"<tpwire {p.source} strategies>"
    )
    module.__dict__["strategies"] = strategies
    return module
