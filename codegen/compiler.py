"""The compiler driver: load -> check -> IR -> render, and the files it writes
(docs/architecture.md, the compiler's stages)."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.abc
import importlib.util
import os
import re
import stat
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tpwire.extras import require

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


def project_root(path: str | Path) -> Path | None:
    """The nearest folder above ``path`` holding ``pyproject.toml`` or ``.git``."""
    for folder in Path(path).resolve().parents:
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return None


def project_name(path: str | Path) -> str:
    """The project a spec belongs to, as the headers of ``gen``'s output record it (whose
    output a run may replace or remove): the ``[project] name`` of its root's
    pyproject.toml (else ``[tool.poetry] name``, else the root folder's name; the spec's
    folder's name when it has no root), lowercase, each run of other characters than
    letters and digits one ``-``. A name, not a path: the same from any clone when the
    project declares it (the folder's name changes with a clone's folder)."""
    root = project_root(path)
    folder = root if root is not None else Path(path).resolve().parent
    name: object = None
    if root is not None:
        try:
            data = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}
        tool = data.get("tool")
        for table in (data.get("project"), tool.get("poetry") if isinstance(tool, dict) else None):
            if isinstance(table, dict) and isinstance(table.get("name"), str):
                name = table["name"]
                break
    text = name if isinstance(name, str) else folder.name
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unnamed"


def source_name(path: str | Path) -> str:
    """The spec's name in generated headers and docs: relative to its project's root (the
    nearest folder with ``pyproject.toml`` or ``.git``), else its file name, so the same
    spec compiles to the same bytes from any working directory."""
    p = Path(path)
    root = project_root(p)
    name = p.resolve().relative_to(root).as_posix() if root is not None else p.name
    return printable_name(name)


@dataclass(frozen=True)
class SpecIR(ProtocolIR):
    """The IR of a spec file and the project it belongs to (``project_name``), which the
    headers rendered from it record."""

    project: str | None = None
    #: the project's root folder (``project_root``), where ``gen`` takes a file made from a
    #: spec of this name for this project's, whatever the name its header records
    root: Path | None = dataclasses.field(default=None, compare=False)


def protocol_ir(path: str | Path) -> SpecIR:
    """Load, check and lower one spec file (``SpecErrors`` on any problem). Errors name
    the spec as given (relative to the working directory); the output, by ``source_name``
    and ``project_name``."""
    ir = build(check(load_path(path, display_path(path))), source_name(path))
    fields = {f.name: getattr(ir, f.name) for f in dataclasses.fields(ir)}
    return SpecIR(**fields, project=project_name(path), root=project_root(path))


def protocol_ir_from_text(text: str | bytes, name: str = "<spec>") -> ProtocolIR:
    name = printable_name(name)
    return build(check(load_text(text, name)), name)


class OutputError(Exception):
    """What ``gen`` must not or cannot write, in one line: a file of an output's name that
    tpwire did not write, another project's output or a folder that is a file (refused
    before anything is written), or a write that failed (naming the file)."""


@dataclass(frozen=True)
class Output:
    path: Path
    text: str
    project: str | None = None  # the owner its header records (None: __init__.py)
    source: str | None = None  # the spec it is made from, as its header names it
    root: Path | None = None  # that spec's project root


def outputs(irs: list[SpecIR], out: Path, docs: Path | None) -> list[Output]:
    """Every file ``gen`` writes for these protocols, in a fixed order."""
    files: list[Output] = []
    for p in irs:
        named = [(out / f"{p.module}.py", render.render_module(p))]
        named.append((out / f"{p.module}_strategies.py", render.render_strategies(p)))
        if docs is not None:
            named.append((docs / f"{p.module}.md", render.render_doc_page(p, out)))
            named.append((docs / f"{p.module}.schema.json", render.render_schema(p)))
        files += [Output(path, text, p.project, p.source, p.root) for path, text in named]
    return files


def package_init(irs: Sequence[ProtocolIR], out: Path, stale: list[Path]) -> list[Output]:
    """The package's ``__init__.py``, listing every module it holds after this run (the
    ones compiled and the other specs' it keeps); none when a hand-written one is there."""
    init_path = out / "__init__.py"
    if init_path.exists() and not _is_generated(init_path):
        return []
    gone = {p.resolve() for p in stale}
    kept = [f for f in _generated_in(out) if f.resolve() not in gone] if out.is_dir() else []
    names = {p.module for p in irs} | {
        f.stem for f in kept if f.suffix == ".py" and f.stem != "__init__"
    }
    names = {n for n in names if not n.endswith("_strategies")}
    text = render.format_python(
        render.environment()
        .get_template("package_init.py.j2")
        .render(version=GENERATOR_VERSION, modules=sorted(names)),
        "__init__.py",
    )
    return [Output(init_path, text)]


def _head(path: Path) -> str | None:
    """The first two lines of a regular file (never a FIFO, a device or a symbolic link,
    which are nobody's output and may block a reader), or None."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        with path.open(encoding="utf-8", errors="replace") as fh:
            return fh.readline(4096) + fh.readline(4096)
    except (OSError, ValueError):
        return None


def _is_generated(path: Path) -> bool:
    """Whether tpwire wrote this file: its mark is in the first two lines."""
    head = _head(path)
    return head is not None and GENERATED_MARK in head


def _generated_in(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.iterdir()) if _is_generated(f)]


#: ``@generated by tpwire 0.1.0 (ruff 0.17.6) from spec/x.yaml (sha256 ..., project P) -
#: do not edit`` and the shorter forms of the JSON schema (``(project P)``) and the markdown
#: pages; output of tpwire before the project was recorded has ``(sha256 ...)`` alone
_MADE_FROM = re.compile(
    re.escape(GENERATED_MARK)
    + r" \S+(?: \([^)]*\))? from (.+?)"
    + r"(?: \((?:sha256 [0-9a-f]*)?(?:, )?(?:project ([a-z0-9-]+))?\))?"
    + r"(?: - do not edit| -->|\"|$)",
    re.MULTILINE,
)


def _made_from(path: Path) -> tuple[str, str | None] | None:
    """The spec and project a generated file names in its first line (``from <source>
    (sha256 ..., project <name>)``); the project is None in older output."""
    head = _head(path)
    found = _MADE_FROM.search(head) if head is not None else None
    return (found.group(1), found.group(2)) if found else None


def _owns(owners: set[tuple[str, str]], made: tuple[str, str | None] | None) -> bool:
    """Whether a file made from ``made`` is this run's: the same spec of the same project.
    Output older than the recorded project is nobody's: its spec name alone (``spec/a.yaml``)
    is shared by every project that has one, so it is never removed."""
    if made is None or made[1] is None:
        return False
    return (made[0], made[1]) in owners


def _unowned_old(owners: set[tuple[str, str]], made: tuple[str, str | None] | None) -> bool:
    """Output from before the project was recorded, made from a spec of this run's name:
    this project's leftover or another's, which its header cannot tell apart."""
    return made is not None and made[1] is None and any(made[0] == s for s, _ in owners)


def stale_files(
    files: list[Output],
    dirs: list[Path],
    owners: set[tuple[str, str]],
    kept: list[tuple[Path, str]] | None = None,
) -> list[Path]:
    """Generated files in the output folders that this run would not write, made from one
    of the specs it compiles (``owners``: each one's name and project, as the headers record
    them): a spec whose protocol was renamed leaves its old module behind. Any other file,
    another spec's or another project's output included, is left alone; ``kept``, when
    given, receives the output older than the recorded project that names one of these
    specs (left alone: it may be another project's)."""
    wanted = {f.path.resolve() for f in files}
    stale = []
    seen: set[Path] = set()
    for d in dirs:
        if not d.is_dir() or d.resolve() in seen:
            continue  # out and docs may be one folder: each file once
        seen.add(d.resolve())
        for candidate in _generated_in(d):
            if candidate.resolve() in wanted or candidate.name == "__init__.py":
                continue
            made = _made_from(candidate)
            if _owns(owners, made):
                stale.append(candidate)
            elif kept is not None and made is not None and _unowned_old(owners, made):
                kept.append((candidate, made[0]))
    return stale


def _folder_problem(folder: Path, what: str) -> str | None:
    """Why ``folder`` cannot hold ``gen``'s output (it, or the first of its parents that
    exists, is no folder), or None."""
    for at in (folder, *folder.parents):
        try:
            st = at.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"{what} {folder.as_posix()}: cannot use {at.as_posix()}: {exc.strerror}"
        if stat.S_ISDIR(st.st_mode):
            return None
        return f"{what} {folder.as_posix()}: {at.as_posix()} is a file, not a folder"
    return None


def _conflict(f: Output) -> str | None:
    """Why ``gen`` must not write ``f`` over what is at its path now, or None: only a file
    tpwire wrote, and no other project's, is replaced."""
    try:
        mode = f.path.lstat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{f.path.as_posix()}: {exc.strerror}"
    if stat.S_ISLNK(mode):
        return f"{f.path.as_posix()} is a symbolic link"
    if stat.S_ISDIR(mode):
        return f"{f.path.as_posix()} is a folder"
    if not stat.S_ISREG(mode):
        return f"{f.path.as_posix()} is not a regular file"
    if f.project is None:  # __init__.py: package_init leaves a hand-written one alone
        return None
    if not _is_generated(f.path):
        return f"{f.path.as_posix()} exists and was not written by tpwire (no '{GENERATED_MARK}' header)"
    made = _made_from(f.path)
    if made is None:  # the mark in a sentence of someone's file, or a header cut short
        return (
            f"{f.path.as_posix()} mentions '{GENERATED_MARK}' but its header names no spec "
            "it was made from"
        )
    if made[1] is not None and made[1] != f.project:
        if made[0] == f.source and _below(f.path, f.root):
            # this project's own file, made under another name: a project without a
            # [project] name is named after its folder, which a rename or clone changes
            return None
        return f"{f.path.as_posix()} is project {made[1]}'s output (from {made[0]})"
    return None


def _below(path: Path, root: Path | None) -> bool:
    """Whether ``path`` lies inside ``root`` (symbolic links followed)."""
    if root is None:
        return False
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def _refuse_conflicts(files: list[Output], out: Path, docs: Path | None) -> None:
    problems = [_folder_problem(out, "out")]
    if docs is not None:
        problems.append(_folder_problem(docs, "docs"))
    problems += [_conflict(f) for f in files]
    found = [p for p in problems if p is not None]
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise OutputError(
            f"refusing to write: {found[0]}{more}; nothing written (move it, or choose "
            "another out or docs folder)"
        )


def generate(
    specs: list[str | Path],
    out: Path,
    docs: Path | None,
    *,
    check_only: bool = False,
    diffs: list[str] | None = None,
    notes: list[str] | None = None,
) -> list[str]:
    """Compile ``specs``; write (or, with ``check_only``, compare) every output.

    Returns the list of changes (written, removed, or that would be); ``diffs``, when
    given, receives a unified diff per change; ``notes``, a line per file left alone that
    the operator may want to remove (output from before headers recorded the project,
    made from a spec of the same name). All specs are checked before anything is written,
    so a bad spec leaves the tree untouched.
    """
    irs: list[SpecIR] = []
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
    owners = {(p.source, p.project) for p in irs if p.project is not None}
    kept: list[tuple[Path, str]] = []
    stale = stale_files(files, [out] + ([docs] if docs else []), owners, kept)
    if notes is not None:
        notes += [
            f"kept {path.as_posix()}: an older tpwire made it from a spec named {source!r} "
            "and recorded no project, so it may be another project's; remove it by hand "
            "if it is this one's"
            for path, source in kept
        ]
    files += package_init(irs, out, stale)
    _refuse_conflicts(files, out, docs)
    changes: list[str] = []
    try:
        for f in files:
            old = f.path.read_bytes().decode("utf-8", "replace") if f.path.is_file() else None
            if old != f.text:
                changes.append(f"{'would write' if check_only else 'wrote'} {f.path.as_posix()}")
                if diffs is not None:
                    diffs.append(_diff(f.path, old or "", f.text))
                if not check_only:
                    f.path.parent.mkdir(parents=True, exist_ok=True)
                    _replace(f.path, f.text)
        for path in stale:
            verb = "would remove" if check_only else "removed"
            changes.append(f"{verb} stale {path.as_posix()}")
            if diffs is not None:
                diffs.append(_diff(path, path.read_text("utf-8", errors="replace"), ""))
            if not check_only:
                path.unlink()
    except OSError as exc:
        where = exc.filename if exc.filename is not None else out
        done = f" after {len(changes) - 1} change(s)" if len(changes) > 1 else ""
        raise OutputError(
            f"cannot write {Path(where).as_posix()}: {exc.strerror or exc}{done}"
        ) from None
    return changes


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a full disk or a failed write leaves the old file
    as it was (a cut-short module broke imports until the next run), and a hard link in the
    output's place is replaced, not written through."""
    replace_file(path, text.encode("utf-8"))


def replace_file(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: the
    old file stays whole if the write fails (``OSError`` naming ``path``). ``mode``: the
    permission bits the new file gets (a hand-written file's own)."""
    tmp = path.with_name(f".{path.name}.tpwire-tmp")
    try:
        tmp.unlink(missing_ok=True)  # left by a run that was killed; "x" never follows a link
        with open(tmp, "xb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        exc.filename = str(path)  # the message names the output, not the temporary file
        raise


def _diff(path: Path, old: str, new: str) -> str:
    name = path.as_posix().lstrip("/")
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{name}", f"b/{name}"
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


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
    ``strategies`` attribute holds the hypothesis strategies module, compiled on first use
    (it needs the ``testing`` extra).
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

    def strategies_on_first_use(name: str) -> ModuleType:
        if name != "strategies":
            raise AttributeError(f"module {base!r} has no attribute {name!r}")
        require("testing", "the strategies of tpwire.codegen.compile()")
        strategies = _import_source(
            f"{base}_strategies",
            render.render_strategies(p, bindings=base),
            f"<tpwire {p.source} strategies>",
        )
        module.__dict__["strategies"] = strategies
        return strategies

    module.__dict__["__getattr__"] = strategies_on_first_use
    return module
